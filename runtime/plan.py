"""Placement: which layers run on the GPU, chosen from the GGUF header alone.

    p = plan_header(fields, tensors, n_ctx=8192, gpu_memory=8 << 30)       # a Plan
    p.on_gpu[il], p.output_on_gpu, p.totals(), p.tok_s

What is counted (bytes):
    weights     each layer's tensors (``blk.N.*``) as stored: different for every DeciLM layer; a
                no-op layer has none, a linear-attention layer only attn_norm/attn_output;
                token_embd stays on the CPU (llama.cpp looks embeddings up in host memory);
                output.weight and output_norm go with the output head; other globals
                (rope_freqs) stay on the CPU (the device keeps a tiny copy, counted in scratch)
    kv          per attention layer 2 * n_ctx * n_head_kv(il) * head_dim * 2 (f16 K and V)
    scratch     what a run allocates besides weights and caches (``scratch_parts``): activations
                of one n_batch-token batch and their q8 copies, the exact numerics' f32 copies
                of a prefill matmul's input, one dequantized weight tile, the logits of every
                row of a batch (perplexity; twice with a final softcap), flash-decoding partials
                at the full context, the decode graph's pool, and 16 MiB of slack
    context     the CUDA context with the cuBLAS handle and workspace (``CUDA_CONTEXT_BYTES``);
                only cuBLAS's part (``CUBLAS_BYTES``) when the budget is the free memory measured
                by ``probe``, which already excludes the context it created. The budget less the
                context is enforced on CuPy's memory pool (``set_limit``, runtime.cuda.backend)

Speed model (decode, one token): every byte a layer reads is read once per token, so
    t = sum(read_cpu) / bw_cpu + sum(read_gpu) / bw_gpu + n_crossings * t_cross
with read = weights + half the KV cache (its average fill over a generation that fills the
context) and a crossing each time consecutive items (embedding on the CPU, the layers, the output
head) sit on different devices. ``auto`` minimises t within the budget exactly by dynamic
programming over the layers (the budget in 16384 units, each item's bytes rounded up, so the
chosen placement always fits); placements need not be contiguous, and zero-byte layers follow
their neighbours. ``--gpu-layers N`` is llama.cpp's ``-ngl N``: the last N layers, and the
output head when N > n_layer; ``all`` is every layer and the output head.
"""
from __future__ import annotations

import math
import re
from dataclasses import asdict, dataclass, field

import numpy as np

from quant.types import get_type
from quant.units import GIB, MIB, fmt_bytes, parse_size
from runtime.errors import ModelError

CUDA_CONTEXT_BYTES = 384 * MIB       # context + cuBLAS handle/workspace (CUDA 12: ~300-450 MiB)
CUBLAS_BYTES = 40 * MIB              # cuBLAS handle + workspace (32 MiB on Hopper), created at the first GEMM
SAFETY_MARGIN = 512 * MIB            # default budget = free VRAM - this
CPU_BW_DEFAULT = 50e9                # bytes/s: dual-channel DDR5 desktop, measured STREAM-copy class
GPU_BW_DEFAULT = 448e9               # bytes/s: a mid-range card (RTX 3070 / 4060 Ti 16GB class: 288-448)
T_CROSS_DEFAULT = 10e-6              # s per device crossing (a sync and a small PCIe copy)
DP_UNITS = 16384

# card name (lower case, as CuPy reports it, substring match) -> (memory GiB, bandwidth GB/s)
# bandwidths: the vendors' spec sheets
CARDS = {
    "h200": (141, 4800), "h100 sxm": (80, 3350), "h100 pcie": (80, 2000), "h100": (80, 3350),
    "a100-sxm4-80gb": (80, 2039), "a100 80gb": (80, 1935), "a100": (40, 1555),
    "l40s": (48, 864), "l4": (24, 300), "a10": (24, 600), "t4": (16, 320), "v100": (16, 900),
    "rtx 4090": (24, 1008), "rtx 4080": (16, 717), "rtx 4070 ti": (12, 504), "rtx 4070": (12, 504),
    "rtx 4060 ti": (16, 288), "rtx 4060": (8, 272),
    "rtx 3090": (24, 936), "rtx 3080": (10, 760), "rtx 3070": (8, 448), "rtx 3060": (12, 360),
    "rtx 2080 ti": (11, 616), "rtx 2070": (8, 448), "rtx 2060": (6, 336),
    "gtx 1080 ti": (11, 484), "gtx 1080": (8, 320), "gtx 1070": (8, 256), "gtx 1060": (6, 192),
    "p40": (24, 347), "p100": (16, 732),
}


def card_info(name: str | None) -> tuple[int, float] | None:
    """(memory bytes, bandwidth bytes/s) of a card by (part of) its name, longest match first."""
    if not name:
        return None
    n = name.lower()
    for key in sorted(CARDS, key=len, reverse=True):
        if key in n:
            gib, gbs = CARDS[key]
            return gib * GIB, gbs * 1e9
    return None


# ---------------------------------------------------------------- what each item costs

@dataclass(frozen=True)
class LayerCost:
    il: int
    kind: str              # "attn kv8 + ffn 28672", "linear + ffn 7168", "ffn 5632", "no-op", ...
    weight_bytes: int
    kv_bytes: int          # at the plan's n_ctx, f16

    @property
    def gpu_bytes(self) -> int:
        return self.weight_bytes + self.kv_bytes

    @property
    def read_bytes(self) -> float:
        return self.weight_bytes + self.kv_bytes / 2


def layer_kind(spec) -> str:
    """A LayerSpec in a few words: "attn kv8 + ffn 28672", "linear + ffn 7168", "no-op", ..."""
    attn = {"none": None, "linear": "linear",
            "gqa": f"attn kv{spec.n_head_kv}" + (f" swa{spec.window}" if spec.window else "")}[spec.attn]
    ffn = f"ffn {spec.n_ff}" if spec.ffn == "dense" else None
    return " + ".join(p for p in (attn, ffn) if p) or "no-op"


DECODE_MAX_TOK, SPLIT_KEYS = 8, 256   # runtime.cuda.ops: decode attention up to 8 tokens, keys per split
SCRATCH_SLACK = 16 * MIB


def scratch_parts(hp, n_ctx: int, n_batch: int, tensors: dict, softcap: bool = False) -> dict:
    """Device bytes a run allocates besides weights and KV caches, by what they are for (the
    CUDA backend's allocations at their largest; ``scratch_bytes`` adds the slack)."""
    nb = max(1, min(n_batch, n_ctx))
    hd = hp.head_dim
    heads = max((s.n_head for s in hp.layers), default=0)
    q = heads * hd
    kv = max((s.n_head_kv for s in hp.layers), default=0) * hd
    ff = max((s.n_ff for s in hp.layers), default=0)
    widest = max(hp.n_embd, q, ff)
    row = (4 * hp.n_embd + q + 2 * kv + 3 * ff) * 4            # f32 activations of one token
    biggest = max((t.n_bytes // get_type(t.qtype).type_size * get_type(t.qtype).block_size * 2
                   for n, t in tensors.items() if len(t.shape) > 1 and n != "token_embd.weight"), default=0)
    n_split = -(-n_ctx // SPLIT_KEYS)
    return {
        "activations": nb * row,
        "q8": nb * row * 36 // (32 * 4),
        "prefill_f32": 3 * nb * widest * 4,                    # exact numerics: int8 blocks -> f32 copies of x
        "tile": min(biggest, 64 * MIB),
        "logits": nb * hp.n_vocab * 4 * (2 if softcap else 1),  # every row of a batch (perplexity)
        "attention": DECODE_MAX_TOK * heads * n_split * (hd + 2) * 8,   # f64 partials at the full context
        "graph_pool": 2 * len(hp.layers) * row + 2 * hp.n_vocab * 4,     # one captured decode step, kept
    }


def scratch_bytes(hp, n_ctx: int, n_batch: int, tensors: dict, softcap: bool = False) -> int:
    """Device scratch: ``scratch_parts`` plus SCRATCH_SLACK."""
    return int(sum(scratch_parts(hp, n_ctx, n_batch, tensors, softcap).values()) + SCRATCH_SLACK)


@dataclass
class Plan:
    arch: str
    n_ctx: int
    layers: list                 # LayerCost per layer
    on_gpu: list                 # bool per layer
    output_on_gpu: bool
    embd_bytes: int              # token_embd (always on the CPU)
    output_bytes: int            # output.weight (or 0 when tied) + output_norm
    other_bytes: int             # other global tensors (rope_freqs ...), on the CPU
    tied_output: bool
    budget: int                  # GPU bytes allowed (0: CPU only)
    context_bytes: int
    scratch: int
    cpu_bw: float
    gpu_bw: float
    t_cross: float
    device: str = "cuda:0"
    gpu_layers: str = "auto"     # what was asked: auto | all | N
    budget_measured: bool = False  # budget = free memory measured with the context (and other live arrays) excluded
    notes: list = field(default_factory=list)

    @property
    def n_gpu_layers(self) -> int:
        """Layers on the GPU, counted as llama.cpp's n_gpu_layers (the output head counts one)."""
        return sum(self.on_gpu) + int(self.output_on_gpu)

    @property
    def uses_gpu(self) -> bool:
        return any(self.on_gpu) or self.output_on_gpu

    def layer_device(self, il: int) -> str:
        return self.device if self.on_gpu[il] else "cpu"

    def totals(self) -> dict:
        """Per device: tensor bytes (each file tensor counted once), KV bytes, and on the GPU the
        extra resident bytes (a tied output's copy of token_embd, scratch, CUDA context)."""
        cpu = dict(tensors=self.embd_bytes + self.other_bytes, kv=0)
        gpu = dict(tensors=0, kv=0, copies=0, scratch=0, context=0)
        for lc, g in zip(self.layers, self.on_gpu):
            d = gpu if g else cpu
            d["tensors"] += lc.weight_bytes
            d["kv"] += lc.kv_bytes
        (gpu if self.output_on_gpu else cpu)["tensors"] += self.output_bytes
        if self.output_on_gpu and self.tied_output:
            gpu["copies"] += self.embd_bytes
        if self.uses_gpu:
            gpu["scratch"], gpu["context"] = self.scratch, self.context_bytes
        cpu["total"] = sum(cpu.values())
        gpu["total"] = sum(gpu.values())
        return {"cpu": cpu, self.device: gpu}

    @property
    def head_read_bytes(self) -> int:
        """What the output head reads per token: output.weight, or token_embd when tied."""
        return self.output_bytes + (self.embd_bytes if self.tied_output else 0)

    def crossings(self) -> int:
        devs = [False] + list(self.on_gpu) + [self.output_on_gpu]
        return sum(a != b for a, b in zip(devs, devs[1:]))

    def seconds_per_token(self) -> float:
        return _time(self.layers, self.on_gpu, self.output_on_gpu, self.head_read_bytes, self.cpu_bw, self.gpu_bw,
                     self.t_cross)

    @property
    def tok_s(self) -> float:
        return 1.0 / self.seconds_per_token()

    @property
    def cpu_only_tok_s(self) -> float:
        n = len(self.layers)
        return 1.0 / _time(self.layers, [False] * n, False, self.head_read_bytes, self.cpu_bw, self.gpu_bw,
                           self.t_cross)

    def to_dict(self) -> dict:
        return {
            "arch": self.arch, "n_ctx": self.n_ctx, "device": self.device, "gpu_layers": self.gpu_layers,
            "n_gpu_layers": self.n_gpu_layers, "budget": self.budget,
            "cpu_bw": self.cpu_bw, "gpu_bw": self.gpu_bw,
            "layers": [dict(asdict(lc), device=self.layer_device(lc.il)) for lc in self.layers],
            "token_embd": {"bytes": self.embd_bytes, "device": "cpu"},
            "output": {"bytes": self.output_bytes, "device": self.device if self.output_on_gpu else "cpu",
                       "tied": self.tied_output},
            "other": {"bytes": self.other_bytes, "device": "cpu"},
            "totals": self.totals(), "crossings": self.crossings(),
            "predicted_tok_s": self.tok_s, "cpu_only_tok_s": self.cpu_only_tok_s, "notes": list(self.notes),
        }


def _time(layers, on_gpu, out_gpu, out_bytes, bw_c, bw_g, t_cross) -> float:
    t = sum(lc.read_bytes / (bw_g if g else bw_c) for lc, g in zip(layers, on_gpu))
    t += out_bytes / (bw_g if out_gpu else bw_c)
    devs = [False] + list(on_gpu) + [out_gpu]
    return t + t_cross * sum(a != b for a, b in zip(devs, devs[1:]))


# ---------------------------------------------------------------- planning

def read_hparams(fields: dict, tensors: dict):
    from runtime.models import ARCHS
    arch = fields.get("general.architecture")
    if arch not in ARCHS:
        raise ModelError(f"unsupported architecture {arch!r} (supported: {', '.join(ARCHS)})")
    return ARCHS[arch].read_hparams(fields, tensors)


def plan_header(fields: dict, tensors: dict, n_ctx: int, gpu_memory: int | None, gpu_layers="auto",
                n_batch: int = 512, cpu_bw: float | None = None, gpu_bw: float | None = None,
                t_cross: float = T_CROSS_DEFAULT, device: str = "cuda:0", measured_free: bool = False) -> Plan:
    """The placement for a model given by its GGUF header (``fields``; ``tensors``: name -> info with
    ``shape`` in ne order and ``qtype``) at context n_ctx within gpu_memory bytes of the card
    (None: CPU only; 0 or less: an error). gpu_layers: "auto" (fastest that fits), "all", or N (llama.cpp -ngl).
    measured_free: gpu_memory comes from the free memory ``probe`` measured after creating the
    CUDA context, so only cuBLAS's part of the context is still to come."""
    if n_ctx <= 0:
        raise ModelError(f"context size must be positive, got {n_ctx}")
    hp = read_hparams(fields, tensors)
    n = hp.n_layer
    weights = [0] * n
    embd = out = other = 0
    for name, t in tensors.items():
        b = t.n_bytes
        m = re.match(r"blk\.(\d+)\.", name)
        if m and int(m.group(1)) < n:
            weights[int(m.group(1))] += b
        elif name == "token_embd.weight":
            embd += b
        elif name in ("output.weight", "output_norm.weight"):
            out += b
        else:
            other += b
    tied = "output.weight" not in tensors
    layers = [LayerCost(il, layer_kind(s), weights[il],
                        2 * n_ctx * s.n_head_kv * hp.head_dim * 2 if s.has_kv else 0)
              for il, s in enumerate(hp.layers)]
    out_gpu_bytes = out + (embd if tied else 0)          # the head's resident bytes on the GPU
    if gpu_memory is not None and int(gpu_memory) <= 0 and str(gpu_layers).strip().lower() != "0":
        raise ModelError(f"no GPU memory to place layers in (budget {int(gpu_memory)} bytes)")
    budget = int(gpu_memory or 0)
    p = Plan(arch=hp.arch, n_ctx=n_ctx, layers=layers, on_gpu=[False] * n, output_on_gpu=False,
             embd_bytes=embd, output_bytes=out, other_bytes=other, tied_output=tied, budget=budget,
             context_bytes=CUBLAS_BYTES if measured_free else CUDA_CONTEXT_BYTES,
             scratch=scratch_bytes(hp, n_ctx, n_batch, tensors, bool(getattr(hp, "final_softcap", 0))),
             cpu_bw=cpu_bw or CPU_BW_DEFAULT, gpu_bw=gpu_bw or GPU_BW_DEFAULT, t_cross=t_cross,
             device=device, gpu_layers=str(gpu_layers), budget_measured=measured_free)
    if not budget:
        return p
    avail = budget - p.context_bytes - p.scratch
    smallest = min((lc.gpu_bytes for lc in layers if lc.gpu_bytes), default=0)
    if avail < smallest:
        raise ModelError(f"GPU memory budget {fmt_bytes(budget)} is too small for even one layer: the smallest "
                         f"needs {fmt_bytes(smallest)} after {fmt_bytes(p.context_bytes + p.scratch)} of CUDA "
                         f"context and scratch")
    g = str(gpu_layers).strip().lower()
    if g == "auto":
        p.on_gpu, p.output_on_gpu = _best(layers, out_gpu_bytes, p.head_read_bytes, avail, p.cpu_bw, p.gpu_bw, t_cross)
        return p
    if g == "all":
        k = n + 1
    else:
        try:
            k = int(g)
        except ValueError:
            raise ModelError(f"gpu layers must be a number, 'all' or 'auto', not {gpu_layers!r}") from None
        if k < 0:
            raise ModelError(f"gpu layers must not be negative, got {k}")
    p.on_gpu = [il >= n - k for il in range(n)]
    p.output_on_gpu = k > n
    need = sum(lc.gpu_bytes for lc, on in zip(layers, p.on_gpu) if on) + (out_gpu_bytes if p.output_on_gpu else 0)
    if need > avail:
        raise ModelError(f"{p.n_gpu_layers} GPU layers need {fmt_bytes(need + p.context_bytes + p.scratch)} "
                         f"(with context and scratch), more than the budget of {fmt_bytes(budget)}")
    return p


def _best(layers, out_mem, out_read, avail, bw_c, bw_g, t_cross):
    """Minimum-time placement of [layers..., output head] within avail bytes (exact DP over
    memory units; item bytes rounded up, so the result fits). Returns (on_gpu, output_on_gpu)."""
    mems = [lc.gpu_bytes for lc in layers] + [out_mem]
    reads = [lc.read_bytes for lc in layers] + [out_read]
    unit = max(1, math.ceil(avail / DP_UNITS))
    U = avail // unit
    inf = np.inf
    f_c = np.full(U + 1, inf)
    f_c[0] = 0.0                                  # the embedding lookup is on the CPU
    f_g = np.full(U + 1, inf)
    choice = []                                   # per item: (prev_on_gpu if now cpu, prev_on_gpu if now gpu)
    for mem, rd in zip(mems, reads):
        m = math.ceil(mem / unit)
        # now on the CPU
        from_g = f_g + t_cross
        pc = from_g < f_c
        n_c = np.where(pc, from_g, f_c) + rd / bw_c
        # now on the GPU: shift by m units
        n_g = np.full(U + 1, inf)
        pg = np.zeros(U + 1, bool)
        if m <= U:
            a, b = f_c[:U + 1 - m] + t_cross, f_g[:U + 1 - m]
            pg[m:] = b <= a
            n_g[m:] = np.minimum(a, b) + rd / bw_g
        choice.append((pc, pg, m))
        f_c, f_g = n_c, n_g
    # best end state; among equal times the one with less GPU memory
    tc, tg = f_c.min(), f_g.min()
    gpu = bool(tg < tc)
    u = int(np.argmin(f_g if gpu else f_c))
    on = []
    for pc, pg, m in reversed(choice):
        on.append(gpu)
        if gpu:
            gpu, u = bool(pg[u]), u - m
        else:
            gpu = bool(pc[u])
    on.reverse()
    return on[:-1], on[-1]


def plan_file(path: str, n_ctx: int, gpu_memory=None, gpu_layers="auto", **kw) -> Plan:
    """``plan_header`` for a GGUF file; reads only its header (the tensor data may be absent)."""
    fields, tensors = read_header(path)
    return plan_header(fields, tensors, n_ctx, parse_size(gpu_memory) if gpu_memory is not None else None,
                       gpu_layers, **kw)


def read_header(path: str) -> tuple[dict, dict]:
    """(fields, tensor infos) of a GGUF, header only."""
    import os
    if not os.path.isfile(path):
        raise ModelError(f"{path}: no such file")
    from quant.gguf import GGUFReader
    g = GGUFReader(path, header_only=True)
    return g.fields, g.tensors


# ---------------------------------------------------------------- a real (or emulated) card

def plan_for_file(path: str, n_ctx: int, gpu_memory=None, gpu_layers="auto", card: str | None = None,
                  cpu_bw: float | None = None, gpu_bw: float | None = None, n_batch: int = 512,
                  device: str = "cuda:0") -> Plan:
    """``ggufkit plan``: the budget and bandwidth from the options, a named card (``card``) or the
    GPU present; works without a GPU when the budget or the card is given. Bandwidths in GB/s."""
    notes = []
    bw, measured = None, False
    if card:
        info = card_info(card)
        if info is None:
            raise ModelError(f"unknown card {card!r} (known: {', '.join(sorted(CARDS))})")
        mem, bw = info
        if gpu_memory is None:
            gpu_memory = mem
            notes.append(f"budget: the card's {fmt_bytes(mem)}")
    elif gpu_memory is None:
        from runtime.cuda.backend import probe
        try:
            name, free, _total = probe(_device_index(device))
        except ModelError as e:
            raise ModelError(f"{e} (give a GPU memory budget or a card to plan without one)") from None
        gpu_memory, measured = max(0, free - SAFETY_MARGIN), True
        notes.append(f"budget: free memory of {name} less {fmt_bytes(SAFETY_MARGIN)}")
        info = card_info(name)
        bw = info[1] if info else None
    if gpu_bw is None and bw is None:
        notes.append(f"GPU bandwidth: default {GPU_BW_DEFAULT / 1e9:.0f} GB/s (give the card or a bandwidth)")
    if cpu_bw is None:
        notes.append(f"CPU bandwidth: default {CPU_BW_DEFAULT / 1e9:.0f} GB/s (give the measured one)")
    p = plan_file(path, n_ctx, gpu_memory, gpu_layers, n_batch=n_batch,
                  cpu_bw=cpu_bw * 1e9 if cpu_bw else None, gpu_bw=gpu_bw * 1e9 if gpu_bw else bw, device=device,
                  measured_free=measured)
    p.notes[:0] = notes
    return p


def _device_index(device: str) -> int:
    from runtime.device import parse_device
    kind, index = parse_device(device)
    if kind != "cuda":
        raise ModelError(f"device {device!r} is not a GPU")
    return index


def place_model(model, dev=None, n_ctx: int = 4096, n_batch: int = 512) -> Plan | None:
    """Put a loaded model's layers where ``dev`` (runtime.device.DeviceOptions) asks, as planned
    from its GGUF header for a context of n_ctx (``ggufkit plan`` shows the same plan); None when
    everything stays on the CPU."""
    from runtime.device import DeviceOptions, parse_device
    dev = dev or DeviceOptions()
    kind, index = parse_device(dev.device)
    if kind == "cpu":
        if str(dev.gpu_layers).strip().lower() not in ("auto", "0"):
            raise ModelError(f"GPU layers ({dev.gpu_layers}) asked for with device cpu")
        if dev.numerics == "fast":
            raise ModelError("numerics fast is for a GPU device (cuda); the CPU runs exact")
        return None
    from runtime.cuda.backend import probe
    name, free, _total = probe(index)                 # one clear line if there is no usable GPU
    budget = parse_size(dev.gpu_memory) if dev.gpu_memory is not None else max(0, free - SAFETY_MARGIN)
    info = card_info(name)
    p = plan_header(model.gguf.fields, model.gguf.tensors, n_ctx, budget, dev.gpu_layers, n_batch=n_batch,
                    gpu_bw=info[1] if info else None, device=f"cuda:{index}", measured_free=dev.gpu_memory is None)
    return apply_plan(model, p, numerics=dev.numerics)


def apply_plan(model, p: Plan, cpu=None, numerics: str | None = None) -> Plan:
    """Place a loaded model's layers as plan ``p`` says: one CUDABackend for its device, with
    ``numerics`` (None: its default, "fast"), and ``cpu`` (default: runtime.backend.CPU) for
    the rest."""
    from runtime.backend import CPU
    from runtime.device import parse_device
    CPU = cpu or CPU  # noqa: N806
    if p.uses_gpu:
        from runtime.cuda.backend import CUDABackend
        from runtime.cuda.graph import attach
        be = CUDABackend(parse_device(p.device)[1], numerics)
        if p.budget:
            be.limit_memory(p.budget - p.context_bytes, p.budget_measured)   # CuPy's pool may not outgrow the plan
        model.place([be if g else CPU for g in p.on_gpu], be if p.output_on_gpu else CPU)
        attach(model, be)                     # decode-step CUDA graphs when enabled
    else:
        model.place([CPU] * len(p.on_gpu), CPU)
        model.decode_graph = None
    model.plan = p
    return p
