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
    devices: list = field(default_factory=list)   # the GPUs in order ([device] for one)
    budgets: list = field(default_factory=list)   # bytes allowed on each of them
    gpu_of: list = field(default_factory=list)    # per layer: its GPU's index in devices, -1 on the CPU
    output_gpu: int = -1                          # the output head's GPU, -1 on the CPU
    tensor_split: list | None = None              # the proportions asked for (None: by free memory)

    def __post_init__(self):
        self.devices = list(self.devices) or [self.device]
        self.budgets = list(self.budgets) or [self.budget]

    def gpu_index(self, il: int | None) -> int:
        """The GPU (index in ``devices``) of layer il, or of the output head for None; -1: the CPU."""
        if il is None:
            return (self.output_gpu if len(self.devices) > 1 else 0) if self.output_on_gpu else -1
        if not self.on_gpu[il]:
            return -1
        return self.gpu_of[il] if len(self.devices) > 1 else 0

    @property
    def output_device(self) -> str:
        g = self.gpu_index(None)
        return "cpu" if g < 0 else self.devices[g]

    @property
    def n_gpu_layers(self) -> int:
        """Layers on the GPU, counted as llama.cpp's n_gpu_layers (the output head counts one)."""
        return sum(self.on_gpu) + int(self.output_on_gpu)

    @property
    def uses_gpu(self) -> bool:
        return any(self.on_gpu) or self.output_on_gpu

    def layer_device(self, il: int) -> str:
        g = self.gpu_index(il)
        return "cpu" if g < 0 else self.devices[g]

    def totals(self) -> dict:
        """Per device: tensor bytes (each file tensor counted once), KV bytes, and on each GPU the
        extra resident bytes (a tied output's copy of token_embd, scratch, CUDA context)."""
        cpu = dict(tensors=self.embd_bytes + self.other_bytes, kv=0)
        gpus = [dict(tensors=0, kv=0, copies=0, scratch=0, context=0) for _ in self.devices]
        for lc in self.layers:
            g = self.gpu_index(lc.il)
            d = cpu if g < 0 else gpus[g]
            d["tensors"] += lc.weight_bytes
            d["kv"] += lc.kv_bytes
        g = self.gpu_index(None)
        (cpu if g < 0 else gpus[g])["tensors"] += self.output_bytes
        if g >= 0 and self.tied_output:
            gpus[g]["copies"] += self.embd_bytes
        used = {self.gpu_index(il) for il in range(len(self.layers))} | {g}
        for i, d in enumerate(gpus):
            if i in used:
                d["scratch"], d["context"] = self.scratch, self.context_bytes
        cpu["total"] = sum(cpu.values())
        for d in gpus:
            d["total"] = sum(d.values())
        return {"cpu": cpu, **dict(zip(self.devices, gpus))}

    @property
    def head_read_bytes(self) -> int:
        """What the output head reads per token: output.weight, or token_embd when tied."""
        return self.output_bytes + (self.embd_bytes if self.tied_output else 0)

    def crossings(self) -> int:
        """Device changes along a token's way: embedding (CPU), layers, output head (GPU to GPU too)."""
        devs = [-1] + [self.gpu_index(il) for il in range(len(self.layers))] + [self.gpu_index(None)]
        return sum(a != b for a, b in zip(devs, devs[1:]))

    def seconds_per_token(self) -> float:
        devs = [False] + list(self.on_gpu) + [self.output_on_gpu]
        gpu_to_gpu = self.crossings() - sum(a != b for a, b in zip(devs, devs[1:]))
        return _time(self.layers, self.on_gpu, self.output_on_gpu, self.head_read_bytes, self.cpu_bw, self.gpu_bw,
                     self.t_cross) + gpu_to_gpu * self.t_cross

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
            "devices": list(self.devices), "budgets": list(self.budgets), "tensor_split": self.tensor_split,
            "n_gpu_layers": self.n_gpu_layers, "budget": self.budget,
            "cpu_bw": self.cpu_bw, "gpu_bw": self.gpu_bw,
            "layers": [dict(asdict(lc), device=self.layer_device(lc.il)) for lc in self.layers],
            "token_embd": {"bytes": self.embd_bytes, "device": "cpu"},
            "output": {"bytes": self.output_bytes, "device": self.output_device,
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


def plan_header(fields: dict, tensors: dict, n_ctx: int, gpu_memory, gpu_layers="auto",
                n_batch: int = 512, cpu_bw: float | None = None, gpu_bw: float | None = None,
                t_cross: float = T_CROSS_DEFAULT, device="cuda:0", measured_free: bool = False,
                tensor_split=None) -> Plan:
    """The placement for a model given by its GGUF header (``fields``; ``tensors``: name -> info with
    ``shape`` in ne order and ``qtype``) at context n_ctx within gpu_memory bytes of the card
    (None: CPU only; 0 or less: an error). gpu_layers: "auto" (fastest that fits), "all", or N (llama.cpp -ngl).
    measured_free: gpu_memory comes from the free memory ``probe`` measured after creating the
    CUDA context, so only cuBLAS's part of the context is still to come.

    Several GPUs: ``device`` a list ("cuda:0", "cuda:1", ...) and gpu_memory one budget per GPU
    (a list; one value for all; a list alone names cuda:0..N-1). The layers (and the head) chosen
    for the GPUs as if one card held the sum of the budgets less a context and scratch each are
    then split over the GPUs in order as llama.cpp's --tensor-split does (``tensor_split``:
    proportions; None: by each GPU's budget), and must fit each GPU's budget (by budget: moved
    on to the next GPU where they don't)."""
    if n_ctx <= 0:
        raise ModelError(f"context size must be positive, got {n_ctx}")
    devices = [d.strip() for d in device.split(",")] if isinstance(device, str) else list(device)
    if isinstance(gpu_memory, (list, tuple)):
        budgets = [int(b) for b in gpu_memory]
        if len(budgets) > 1 and len(devices) == 1:
            devices = [f"cuda:{i}" for i in range(len(budgets))]
        if len(budgets) == 1:
            budgets = budgets * len(devices)
        if len(budgets) != len(devices):
            raise ModelError(f"{len(budgets)} GPU memory budgets for {len(devices)} GPUs ({', '.join(devices)})")
        gpu_memory = sum(budgets)
        if min(budgets) <= 0:
            raise ModelError(f"no GPU memory to place layers in on {devices[budgets.index(min(budgets))]}")
    else:
        budgets = None if len(devices) == 1 or gpu_memory is None else [int(gpu_memory)] * len(devices)
        gpu_memory = None if gpu_memory is None else (budgets and sum(budgets)) or gpu_memory
    tensor_split = parse_split(tensor_split)
    if tensor_split is not None:
        if len(tensor_split) != len(devices) or min(tensor_split) < 0 or not sum(tensor_split) > 0:
            raise ModelError(f"tensor split {','.join(f'{v:g}' for v in tensor_split)}: one proportion >= 0 per GPU "
                             f"({len(devices)}), not all 0")
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
             device=devices[0], gpu_layers=str(gpu_layers), budget_measured=measured_free, devices=devices,
             budgets=budgets or [budget], tensor_split=tensor_split if len(devices) > 1 else None)
    if not budget:
        return p
    fixed = p.context_bytes + p.scratch
    avails = [b - fixed for b in p.budgets]
    avail = sum(max(0, a) for a in avails)
    smallest = min((lc.gpu_bytes for lc in layers if lc.gpu_bytes), default=0)
    if max(avails) < smallest:
        raise ModelError(f"GPU memory budget {fmt_bytes(max(p.budgets))} is too small for even one layer: the smallest "
                         f"needs {fmt_bytes(smallest)} after {fmt_bytes(fixed)} of CUDA "
                         f"context and scratch")
    g = str(gpu_layers).strip().lower()
    if g == "auto":
        for _ in range(len(devices)):
            p.on_gpu, p.output_on_gpu = _best(layers, out_gpu_bytes, p.head_read_bytes, avail, p.cpu_bw, p.gpu_bw,
                                              t_cross)
            if len(devices) == 1 or _split_gpus(p, out_gpu_bytes, avails, explicit=tensor_split is not None,
                                                  fail=False):
                return p
            # the split left a layer's worth unused on some GPU: plan for less
            avail -= max(lc.gpu_bytes for lc in layers)
        _split_gpus(p, out_gpu_bytes, avails, explicit=tensor_split is not None)
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
    if len(devices) > 1:
        _split_gpus(p, out_gpu_bytes, avails, explicit=tensor_split is not None)
    return p


def _split_gpus(p: Plan, out_bytes: int, avails: list, explicit: bool, fail: bool = True) -> bool:
    """Spread the GPU items (layers on a GPU in order, then the head) over ``p.devices`` as
    llama.cpp's --tensor-split: item j of n goes to the first GPU whose cumulative share of the
    split exceeds j / n (std::upper_bound in llama_model::load_tensors). Without an asked-for
    split the shares are each GPU's room (``avails``) and an item's place is its middle byte's
    fraction of the GPU bytes (layers differ in size: DeciLM). An asked-for split that overfills a
    GPU is an error; the automatic one then fills the GPUs in order instead.
    Sets p.gpu_of / p.output_gpu; False (fail=False) or ModelError when the items do not fit."""
    n_dev = len(p.devices)
    items = [(il, lc.gpu_bytes) for il, lc in enumerate(p.layers) if p.on_gpu[il]]
    if p.output_on_gpu:
        items.append((None, out_bytes))
    w = p.tensor_split or [max(0, a) for a in avails]
    cum = np.cumsum(np.asarray(w, np.float64)) / float(sum(w))
    if p.tensor_split:                       # llama.cpp: by count, item j at j / n
        n = max(1, len(items))
        at = [j / n for j in range(len(items))]
    else:                                    # by room: by bytes, each item at its middle byte
        sizes = np.asarray([b for _, b in items], np.float64)
        tot = float(sizes.sum()) or 1.0
        at = list((np.cumsum(sizes) - sizes / 2) / tot)
    gpu = [min(n_dev - 1, int(np.searchsorted(cum, x, side="right"))) for x in at]
    used = [0] * n_dev
    for (_, b), d in zip(items, gpu):
        used[d] += b
    over = [d for d in range(n_dev) if used[d] > avails[d]]
    if over and explicit:
        d = over[0]
        raise ModelError(f"tensor split {','.join(f'{v:g}' for v in p.tensor_split)} puts "
                         f"{fmt_bytes(used[d] + p.context_bytes + p.scratch)} on {p.devices[d]} (with context and "
                         f"scratch), more than its budget of {fmt_bytes(p.budgets[d])}")
    if over:                                 # by room: fill the GPUs in order
        gpu, used, d = [], [0] * n_dev, 0
        for _, b in items:
            while d < n_dev and used[d] + b > avails[d]:
                d += 1
            if d == n_dev:
                if not fail:
                    return False
                raise ModelError(f"{p.n_gpu_layers} GPU layers do not fit the budgets of "
                                 f"{', '.join(p.devices)} ({', '.join(fmt_bytes(b) for b in p.budgets)})")
            gpu.append(d)
            used[d] += b
    p.gpu_of = [-1] * len(p.layers)
    p.output_gpu = -1
    for (il, _), d in zip(items, gpu):
        if il is None:
            p.output_gpu = d
        else:
            p.gpu_of[il] = d
    return True


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


def parse_budgets(gpu_memory):
    """A budget ("8GiB", bytes) or one per GPU ("16GiB,16GiB", a list): bytes, or a list of them."""
    if gpu_memory is None:
        return None
    if isinstance(gpu_memory, (list, tuple)) or (isinstance(gpu_memory, str) and "," in gpu_memory):
        parts = gpu_memory.split(",") if isinstance(gpu_memory, str) else gpu_memory
        return [parse_size(v.strip() if isinstance(v, str) else v) for v in parts]
    return parse_size(gpu_memory)


def parse_split(tensor_split) -> list[float] | None:
    """--tensor-split "3,1" (llama.cpp's proportions per GPU) -> [3.0, 1.0]; None stays None."""
    if tensor_split is None or isinstance(tensor_split, (list, tuple)):
        return None if tensor_split is None else [float(v) for v in tensor_split]
    try:
        return [float(v) for v in str(tensor_split).replace("/", ",").split(",")]
    except ValueError:
        raise ModelError(f"tensor split {tensor_split!r}: expected proportions like 3,1") from None


def plan_file(path: str, n_ctx: int, gpu_memory=None, gpu_layers="auto", **kw) -> Plan:
    """``plan_header`` for a GGUF file; reads only its header (the tensor data may be absent)."""
    fields, tensors = read_header(path)
    return plan_header(fields, tensors, n_ctx, parse_budgets(gpu_memory), gpu_layers, **kw)


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
                  device: str = "cuda:0", tensor_split=None) -> Plan:
    """``ggufkit plan``: the budget and bandwidth from the options, a named card (``card``) or the
    GPU present; works without a GPU when the budget or the card is given. Bandwidths in GB/s.
    Several GPUs: ``device`` "cuda:0,cuda:1" and/or ``gpu_memory`` "16GiB,16GiB" (one per GPU:
    cuda:0.. when no device is named), ``tensor_split`` "3,1" (see ``plan_header``)."""
    from runtime.device import parse_devices
    devices = [f"{k}:{i}" for k, i in parse_devices(device)]
    budgets = parse_budgets(gpu_memory)
    if len(devices) > 1 or isinstance(budgets, list):
        if any(not d.startswith("cuda") for d in devices):
            raise ModelError(f"device {device!r}: several devices must all be GPUs (cuda:N)")
        if budgets is None:
            from runtime.cuda.backend import probe
            budgets, measured = [], True
            for d in devices:
                try:
                    budgets.append(max(0, probe(_device_index(d))[1] - SAFETY_MARGIN))
                except ModelError as e:
                    raise ModelError(f"{e} (give a GPU memory budget per GPU to plan without them)") from None
        else:
            measured = False
        fields, tensors = read_header(path)
        p = plan_header(fields, tensors, n_ctx, budgets if isinstance(budgets, list) else [budgets], gpu_layers,
                        n_batch=n_batch, cpu_bw=cpu_bw * 1e9 if cpu_bw else None, gpu_bw=gpu_bw * 1e9 if gpu_bw else None,
                        device=devices, measured_free=measured, tensor_split=parse_split(tensor_split))
        if cpu_bw is None:
            p.notes.append(f"CPU bandwidth: default {CPU_BW_DEFAULT / 1e9:.0f} GB/s (give the measured one)")
        return p
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
    from runtime.device import DeviceOptions, parse_devices
    dev = dev or DeviceOptions()
    devs = parse_devices(dev.device)
    kind, index = devs[0]
    if kind == "cpu":
        if str(dev.gpu_layers).strip().lower() not in ("auto", "0"):
            raise ModelError(f"GPU layers ({dev.gpu_layers}) asked for with device cpu")
        if dev.numerics == "fast":
            raise ModelError("numerics fast is for a GPU device (cuda); the CPU runs exact")
        if dev.tensor_split is not None:
            raise ModelError("a tensor split is for several GPUs (cuda:0,cuda:1,...)")
        return None
    from runtime.cuda.backend import probe
    probed = [probe(i) for _, i in devs]              # one clear line if there is no usable GPU
    budgets = parse_budgets(dev.gpu_memory)
    if budgets is None:
        budgets = [max(0, free - SAFETY_MARGIN) for _, free, _ in probed]
    elif not isinstance(budgets, list):
        budgets = [budgets] * len(devs)
    if len(budgets) != len(devs):
        raise ModelError(f"{len(budgets)} GPU memory budgets for {len(devs)} GPUs")
    infos = [card_info(name) for name, _, _ in probed]
    bw = min((i[1] for i in infos if i), default=None)
    names = [f"cuda:{i}" for _, i in devs]
    if dev.tensor_split is not None and len(devs) == 1:
        raise ModelError("a tensor split is for several GPUs (cuda:0,cuda:1,...)")
    p = plan_header(model.gguf.fields, model.gguf.tensors, n_ctx, budgets if len(devs) > 1 else budgets[0],
                    dev.gpu_layers, n_batch=n_batch, gpu_bw=bw, device=names if len(devs) > 1 else names[0],
                    measured_free=dev.gpu_memory is None, tensor_split=parse_split(dev.tensor_split))
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
        bes = [CUDABackend(parse_device(d)[1], numerics) for d in p.devices]
        for be, b in zip(bes, p.budgets):
            if b:
                be.limit_memory(b - p.context_bytes, p.budget_measured)   # CuPy's pool may not outgrow the plan
        at = [bes[p.gpu_index(il)] if p.on_gpu[il] else CPU for il in range(len(p.on_gpu))]
        out = bes[p.gpu_index(None)] if p.output_on_gpu else CPU
        model.place(at, out)
        attach(model, bes[0] if len(bes) == 1 else out)   # decode-step CUDA graphs (one GPU: all on it)
    else:
        model.place([CPU] * len(p.on_gpu), CPU)
        model.decode_graph = None
    model.plan = p
    return p
