"""``ggufkit quantize IN OUT --target-bpw B | --target-size S``: choose one type per tensor
minimising the estimated KL divergence under an exact file-size budget (``docs/ALLOCATION.md``).

1. measure (``ggufkit.measure``; cached, so another budget costs only what follows);
2. allocate (``quant.allocate.allocate``): exact bytes = the header (``Source.header``, what
   ``ggufkit.quantize`` writes) + every tensor padded to 32 bytes;
3. check: the chosen mix and llama.cpp's standard mix of the nearest size not above the budget are
   both written (each quantized once) and measured on the probe from their dequantized tensors;
   if the standard mix is better its file is kept instead (and said);
4. write: the file (``quantize_file`` with the allocation as a ``quant.recipes.FixedRecipe``), its
   ``--tensor-type-file`` export (``OUT.tensor-types.txt``: llama-quantize rebuilds the file byte
   for byte with it) and a per-tensor JSON report (``OUT.alloc.json``).

Printing is the CLI's (``ggufkit.commands.quantize``).
"""
from __future__ import annotations

import json
import os
import shutil
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

from ggufkit.errors import GGUFKitError
from ggufkit.measure import DEFAULT_CANDIDATES, Measurement, check_imatrix, measure, probe_tokens, smallest_mix
from ggufkit.quantize import Source, open_source, pad, quantize_file
from quant.allocate import Choice, TensorOptions, allocate
from quant.errors import QuantError
from quant.recipes import fixed
from quant.units import parse_size

# llama.cpp's standard mixes, for the "never worse" check
STANDARD_FTYPES = ("IQ2_XXS", "IQ2_XS", "IQ2_S", "IQ2_M", "Q2_K", "IQ3_XXS", "IQ3_XS", "Q3_K_S", "IQ3_S", "IQ3_M",
                   "Q3_K_M", "Q3_K_L", "IQ4_XS", "Q4_0", "Q4_K_S", "Q4_K_M", "Q5_K_S", "Q5_K_M", "Q6_K", "Q8_0")



def options(meas: Measurement) -> list[TensorOptions]:
    opts = []
    for tm in meas.tensors:
        a = tm.alpha if tm.alpha > 0 else 1e-12
        opts.append(TensorOptions(tm.name, [Choice(k, tm.nbytes[k], a * tm.errors[k]) for k in tm.errors]))
    return opts


def budget_bytes(n_params: int | None, target_bpw: float | None, target_size: str | int | None) -> int:
    """Whole-file bytes allowed: SIZE, or bpw x parameters / 8 (bpw of the whole file, header included)."""
    if (target_bpw is None) == (target_size is None):
        raise GGUFKitError("give exactly one of --target-bpw and --target-size")
    if target_size is not None:
        return parse_size(target_size)
    if not target_bpw > 0:
        raise GGUFKitError(f"invalid target bpw {target_bpw}")
    return int(target_bpw * n_params / 8)


def choose(meas: Measurement, budget: int) -> tuple[dict, int, float]:
    """(types by tensor, exact file bytes, estimated KLD) for a whole-file byte budget."""
    avail = budget - meas.header_bytes - meas.fixed_bytes
    try:
        a = allocate(options(meas), avail)
    except QuantError as e:
        raise GGUFKitError(f"{e} (file budget {budget} bytes, header and unquantized tensors "
                           f"{meas.header_bytes + meas.fixed_bytes})") from None
    return a.types, meas.header_bytes + meas.fixed_bytes + a.nbytes, a.error


def standard_sizes(s: Source, imatrix: str | None) -> dict:
    """Planned tensors of each llama.cpp standard mix (dry runs; an imatrix enables the IQ mixes)."""
    out = {}
    for ft in STANDARD_FTYPES:
        try:
            rep = quantize_file(s, None, ft, imatrix=imatrix, dry_run=True, allow_requantize=True)
        except (QuantError, GGUFKitError):
            continue
        if any("require an importance matrix" in w for w in rep.warnings):
            continue
        out[ft] = rep
    return out


def file_weights(path: str, names) -> dict:
    """The named tensors of a written file, each a function returning its f32 weights [n_rows, ne0]
    (dequantized when called: ``Probe.kld`` calls it when it reaches the tensor's layer)."""
    s = open_source(path)
    return {name: (lambda name=name: s.rows(name)) for name in names}


@dataclass
class BudgetResult:
    types: dict
    file_bytes: int
    est_kld: float
    budget: int
    report: list = field(default_factory=list)
    standard: str | None = None
    standard_bytes: int | None = None
    probe_kld: float | None = None
    standard_probe_kld: float | None = None
    fell_back: bool = False
    message: str = ""
    units: dict = field(default_factory=dict)     # measurement units computed / reused from the cache
    seconds: dict = field(default_factory=dict)   # wall time per phase (hash + errors, sensitivity, check + write)


def quantize_budget(src: str | Source, dst: str, *, target_bpw: float | None = None, target_size=None,
                    imatrix: str | None = None, calib_text: str | None = None,
                    candidates: Sequence[str] = DEFAULT_CANDIDATES, ftype: str = "Q4_K_M", check: bool = True,
                    n_seq: int = 1, seq_len: int = 128, cache_dir: str | os.PathLike | None = None,
                    progress: bool = True, nthreads: int | None = None, sample_rows: int = 256, workers: int = 2,
                    ray=None) -> BudgetResult:
    """Write the mix of least estimated KLD within the budget (``target_bpw`` or ``target_size``) to
    ``dst``; the measurement's units come from / go to ``cache_dir`` (``ggufkit.measure.Cache``) and
    run in ``workers`` local processes or on ``ray`` (a ``ggufkit.fanout.RayRunner``)."""
    from ggufkit.atomic import atomic_path, check_output
    from quant.imatrix import load_imatrix

    if calib_text is None:
        raise GGUFKitError("budgeted allocation needs calibration text (--calib-file) to measure sensitivities")
    s = open_source(src)                             # opened once, passed down
    src = str(s.path)
    check_output(dst)
    im = load_imatrix(imatrix) if imatrix else None
    if im is not None:
        check_imatrix(s, im, imatrix)
    # refuse an impossible budget before hours of measuring
    n_params, fixed_bytes, least = smallest_mix(s, im, candidates)
    head = len(s.header(s.plans(), ftype, im, imatrix))
    budget = budget_bytes(n_params, target_bpw, target_size)
    if budget < head + fixed_bytes + least:
        raise GGUFKitError(f"the budget of {budget} bytes is below the smallest file the candidate types can make "
                           f"({head + fixed_bytes + least} bytes: every tensor at its smallest type, plus the "
                           f"header and unquantized tensors, {head + fixed_bytes})")
    meas = measure(s, imatrix, calib_text, candidates=candidates, n_seq=n_seq, seq_len=seq_len, cache_dir=cache_dir,
                   progress=progress, sample_rows=sample_rows, workers=workers, ray=ray)
    meas.header_bytes = head                         # the imatrix path and file type are in the header
    types, nbytes, est = choose(meas, budget)
    by = {t.name: t for t in meas.tensors}
    res = BudgetResult(types, nbytes, est, budget, units=dict(meas.units), seconds=dict(meas.seconds))
    t0 = time.time()
    for n, typ in types.items():
        tm = by[n]
        res.report.append(dict(name=n, type=typ, bytes=tm.nbytes[typ], rel_error=tm.errors[typ],
                               alpha=tm.alpha, est_kld=tm.alpha * tm.errors[typ]))
    recipe = fixed(types)
    write_ftype = ftype
    std_ft = None
    if check:
        std = standard_sizes(s, imatrix)
        fitting = [(ft, _file_bytes(meas, r)) for ft, r in std.items()]
        fitting = [(ft, b) for ft, b in fitting if b <= budget]
        if fitting:
            std_ft, b = max(fitting, key=lambda x: x[1])
            res.standard, res.standard_bytes = std_ft, b
            write_ftype = std_ft
            std_types = {t.name: t.dst_type for t in std[std_ft].tensors if t.dst_type != t.src_type}
    check_output(dst)
    Path(dst).resolve().parent.mkdir(parents=True, exist_ok=True)
    tmpdir = tempfile.mkdtemp(prefix=f".{Path(dst).name}.", dir=Path(dst).resolve().parent)
    try:
        # each candidate file is quantized once: the check dequantizes the written tensors (the
        # same values the probe would get from quantizing them again) and the winner is renamed
        mix_path = os.path.join(tmpdir, "alloc.gguf")
        quantize_file(s, mix_path, write_ftype, nthreads, imatrix=imatrix, recipe=recipe,
                      allow_requantize=True, progress=progress)
        keep = mix_path
        if std_ft is not None:
            from runtime.loader import load
            from runtime.perplexity import read_text_file
            from runtime.sensitivity import Probe
            model = load(src, reader=s.gguf)
            probe = Probe(model, probe_tokens(model, read_text_file(calib_text), n_seq, seq_len), spill=True)
            res.probe_kld = probe.kld(file_weights(mix_path, types))
            std_path = os.path.join(tmpdir, "standard.gguf")
            quantize_file(s, std_path, std_ft, nthreads, imatrix=imatrix, allow_requantize=True, progress=progress)
            res.standard_probe_kld = probe.kld(file_weights(std_path, std_types))
            del model, probe
            if res.standard_probe_kld < res.probe_kld:
                res.fell_back = True
                res.message = (f"the allocated mix measures worse than the standard {std_ft} mix of "
                               f"{res.standard_bytes} bytes (probe KLD {res.probe_kld:.5f} vs "
                               f"{res.standard_probe_kld:.5f}): writing {std_ft}")
                res.types = std_types
                res.file_bytes = res.standard_bytes
                recipe = fixed(std_types, std_ft)
                keep = std_path
        real = os.path.getsize(keep)
        if real != res.file_bytes:
            raise GGUFKitError(f"internal: planned {res.file_bytes} bytes, wrote {real}")
        os.replace(keep, dst)
        res.seconds["check and write"] = time.time() - t0
    finally:
        shutil.rmtree(tmpdir, ignore_errors=True)
    with atomic_path(f"{dst}.tensor-types.txt") as tmp:
        Path(tmp).write_text("\n".join(recipe.tensor_type_lines()) + "\n")
    with atomic_path(f"{dst}.alloc.json") as tmp:
        Path(tmp).write_text(json.dumps({k: v for k, v in res.__dict__.items()}, indent=1))
    return res


def _file_bytes(meas: Measurement, rep) -> int:
    return meas.header_bytes + sum(pad(t.dst_bytes) for t in rep.tensors)
