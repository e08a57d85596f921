"""Devices: where a layer runs, and moving activations between backends.

The ``Backend`` interface and ``CPUBackend`` are in ``runtime.backend``; ``runtime.cuda.backend``
has ``CUDABackend``. ``move(x, src, dst)`` is the only place activations cross devices: the model
calls it where two consecutive layers sit on different devices (and before the output head).
``parse_device`` reads "cpu" | "cuda" | "cuda:N", ``parse_devices`` also "cuda:0,cuda:1" (layers
split over several GPUs, activations crossing at layer boundaries); ``DeviceOptions`` carries a placement request
and the GPU layers' numerics (``NUMERICS_OPTIONS``, ``--numerics`` on the command line).
"""
from __future__ import annotations

from dataclasses import dataclass

from runtime.backend import Backend
from runtime.errors import ModelError


def move(x, src: Backend, dst: Backend):
    """Activations of ``src``'s device as arrays of ``dst``'s device (no copy when they share one)."""
    if src is dst or src.device == dst.device:
        return x
    return dst.from_host(src.to_host(x))


def parse_device(device: str | None) -> tuple[str, int]:
    """"cpu" | "cuda" | "cuda:N" -> (kind, index)."""
    d = (device or "cpu").strip().lower()
    if d == "cpu":
        return "cpu", 0
    if d == "cuda" or d == "gpu":
        return "cuda", 0
    if d.startswith("cuda:") and d[5:].isdigit():
        return "cuda", int(d[5:])
    raise ModelError(f"unknown device {device!r} (expected cpu, cuda or cuda:N)")


def parse_devices(device: str | None) -> list[tuple[str, int]]:
    """"cuda:0,cuda:1" (several GPUs, each once) or one ``parse_device`` name -> [(kind, index), ...]."""
    parts = [p for p in (device or "cpu").split(",")]
    devs = [parse_device(p) for p in parts]
    if len(devs) > 1 and (any(k != "cuda" for k, _ in devs) or len(set(devs)) != len(devs)):
        raise ModelError(f"device {device!r}: several devices must be distinct GPUs (cuda:0,cuda:1,...)")
    return devs


# --numerics: how the GPU layers round (runtime.backend.NUMERICS); the CPU layers run "exact"
NUMERICS_OPTIONS = ("exact", "fast")


@dataclass(frozen=True)
class DeviceOptions:
    """Where to run: ``device`` cpu | cuda | cuda:N | cuda:0,cuda:1,... (several GPUs);
    ``gpu_layers`` auto | all | N (llama.cpp's -ngl: the last N layers, the output head too when
    N > n_layer); ``gpu_memory`` the budget in bytes or as "8GiB", or one per GPU "16GiB,16GiB"
    (None: each card's free memory less a safety margin); ``numerics`` the GPU layers'
    numerics, exact | fast (None: the CUDA backend's default, fast; "fast" with device cpu is
    refused, runtime.plan.place_model); ``tensor_split`` llama.cpp's proportions of the GPU
    layers per GPU, "3,1" (None: by free memory)."""
    device: str = "cpu"
    gpu_layers: str = "auto"
    gpu_memory: str | int | None = None
    numerics: str | None = None
    tensor_split: str | None = None

    def __post_init__(self):
        if self.numerics is not None and self.numerics not in NUMERICS_OPTIONS:
            raise ModelError(f"unknown numerics {self.numerics!r} (expected {' or '.join(NUMERICS_OPTIONS)})")
