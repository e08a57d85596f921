"""``ggufkit quantize IN OUT --target-bpw B | --target-size S [--imatrix F] [--candidates T,...]``:
choose one type per tensor minimising the estimated KL divergence under an exact file-size budget.

Steps (``docs/ALLOCATION.md``):

1. measure (cached as JSON next to the output, keyed by input file, imatrix, candidates, probe):
   - ``e_t(type)``: importance-weighted relative error of every candidate type on sampled rows
     (``quant.allocate.relative_error``); types whose block does not divide the row length are
     not candidates for that tensor (K-/IQ-types on 640-wide rows, ...), types that need an
     imatrix only where the imatrix has the tensor;
   - ``alpha_t``: KLD of the model with only tensor t quantized to a reference type, over
     ``e_t(reference)`` (``runtime.sensitivity.Probe`` on calibration text);
2. allocate (``quant.allocate.allocate``): exact bytes = the header (computed as
   ``ggufkit.quantize`` writes it) + every tensor padded to 32 bytes;
3. check: the chosen mix and llama.cpp's standard mix of the nearest size not above the budget are
   both written (each quantized once) and measured on the probe from their dequantized tensors;
   if the standard mix is better its file is kept instead (and said);
4. write: the file (``quantize_file`` with one ``--tensor-type`` pattern per tensor), the same
   patterns as a ``--tensor-type-file`` (``OUT.tensor-types.txt``: llama-quantize rebuilds the
   file byte for byte with it) and a per-tensor JSON report (``OUT.alloc.json``).
"""
from __future__ import annotations

import hashlib
import json
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np

import quant
from ggufkit.errors import GGUFKitError
from ggufkit.quantize import pad
from quant.allocate import Choice, TensorOptions, allocate, relative_error
from quant.errors import QuantError
from quant.recipes import IMATRIX_TYPES
from quant.units import parse_size

# types stock llama.cpp (CPU and GPU back ends) runs and llama-quantize writes, by rough bits/weight
DEFAULT_CANDIDATES = ("IQ2_XXS", "IQ2_XS", "IQ2_S", "Q2_K", "IQ3_XXS", "IQ3_S", "Q3_K", "IQ4_XS", "IQ4_NL",
                      "Q4_0", "Q4_K", "Q4_1", "Q5_0", "Q5_K", "Q5_1", "Q6_K", "Q8_0", "F16")
STOCK_TYPES = frozenset(DEFAULT_CANDIDATES) | {"IQ1_S", "IQ1_M", "BF16", "F32"}
# llama.cpp's standard mixes, for the "never worse" check
STANDARD_FTYPES = ("IQ2_XXS", "IQ2_XS", "IQ2_S", "IQ2_M", "Q2_K", "IQ3_XXS", "IQ3_XS", "Q3_K_S", "IQ3_S", "IQ3_M",
                   "Q3_K_M", "Q3_K_L", "IQ4_XS", "Q4_0", "Q4_K_S", "Q4_K_M", "Q5_K_S", "Q5_K_M", "Q6_K", "Q8_0")
CACHE_VERSION = 1


@dataclass
class TensorMeasure:
    name: str
    shape: list
    n_rows: int
    src_type: str
    errors: dict           # type -> relative error on the sampled rows
    nbytes: dict           # type -> padded bytes
    ref_type: str = ""
    ref_kld: float = 0.0
    alpha: float = 0.0


@dataclass
class Measurement:
    src: str
    header_bytes: int
    fixed_bytes: int       # tensors that are not quantized (norms, 1-D), padded
    n_params: int
    tensors: list[TensorMeasure] = field(default_factory=list)
    probe: dict = field(default_factory=dict)
    seconds: dict = field(default_factory=dict)

    def to_json(self) -> dict:
        d = dict(self.__dict__)
        d["tensors"] = [t.__dict__ for t in self.tensors]
        d["version"] = CACHE_VERSION
        return d

    @classmethod
    def from_json(cls, d: dict) -> "Measurement":
        d = dict(d)
        d.pop("version", None)
        d["tensors"] = [TensorMeasure(**t) for t in d["tensors"]]
        return cls(**d)


def _source(src):
    from ggufkit.quantize import _open
    return _open(src)


def _rows(s, t, rows: np.ndarray | None = None) -> np.ndarray:
    """f32 rows of an input tensor (all rows, or the given indices); ``s`` is the opened input."""
    from ggufkit.quantize import _to_f32
    ne0 = t.shape[0]
    raw = t.data.reshape(t.n_rows, quant.row_size(t.qtype, ne0))
    if rows is not None:
        raw = raw[rows]
    return np.array(_to_f32(np.ascontiguousarray(raw), t.qtype, ne0, "numba", None), np.float32)


def _imatrix_row(im, name: str, ne0: int):
    if im is None:
        return None
    v = im.entries.get(name)
    return v[:ne0] if v is not None and v.size >= ne0 else None


def candidate_types(ne0: int, has_imatrix: bool, candidates: Sequence[str]) -> list[str]:
    out = []
    for c in candidates:
        qt = quant.get_type(c)
        if ne0 % qt.block_size:
            continue                      # K/IQ types on rows not a multiple of 256: not possible
        if c in IMATRIX_TYPES and not has_imatrix:     # llama-quantize would refuse it
            continue
        out.append(c)
    return out


def _quant_dequant(x: np.ndarray, typ: str, imrow) -> np.ndarray:
    if typ in ("F32",):
        return x
    if typ == "F16":
        return x.astype(np.float16).astype(np.float32)
    q = quant.quantize(x, typ, imrow)
    return np.asarray(quant.dequantize(q, typ), np.float32).reshape(x.shape)


def _plans(s, ftype: str = "Q8_0", tensor_types=(), im=None):
    from quant.recipes import QuantOptions, model_info, parse_ftype, parse_tensor_type, plan_types
    model = model_info(s.kv, has_imatrix=im is not None)
    opts = QuantOptions(pure=not tensor_types, tensor_types=tuple(parse_tensor_type(t) for t in tensor_types))
    return plan_types(s.infos, model, parse_ftype(ftype), opts)


def header_bytes(s, plans, ftype: str, im, imatrix_path) -> int:
    """The exact size of what ``ggufkit.quantize`` (and llama-quantize) writes before the data."""
    from ggufkit.quantize import _metadata
    from quant.recipes import parse_ftype
    return len(_metadata(s, plans, parse_ftype(ftype), im, imatrix_path))


def measure(src: str, imatrix: str | None, calib_text: str | None, *, candidates: Sequence[str] = DEFAULT_CANDIDATES,
            n_seq: int = 1, seq_len: int = 128, sample_rows: int = 256, cache: str | None = None,
            progress: bool = True, workers: int = 2) -> Measurement:
    """Per-tensor errors for every candidate type and per-tensor sensitivities (cached in ``cache``)."""
    import time

    from tqdm import tqdm

    from quant.imatrix import load_imatrix

    for c in candidates:
        if c not in STOCK_TYPES:
            raise GGUFKitError(f"candidate type {c} is not one stock llama.cpp runs "
                               f"(allowed: {', '.join(sorted(STOCK_TYPES))})")
    st = os.stat(src)
    key_err = dict(src=os.path.abspath(src), size=st.st_size, mtime=int(st.st_mtime), imatrix=_digest(imatrix),
                   candidates=list(candidates), sample_rows=sample_rows, version=CACHE_VERSION)
    key_sens = dict(text=_digest(calib_text), n_seq=n_seq, seq_len=seq_len, groups="block")
    cached = None
    if cache and Path(cache).is_file():
        try:
            d = json.loads(Path(cache).read_text())
            if d.get("key_err") == key_err:
                cached = Measurement.from_json(d["measurement"])
                if d.get("key_sens") == key_sens or not calib_text:
                    return cached
        except (ValueError, KeyError, TypeError):
            cached = None

    def save(m, with_sens):
        if cache:
            tmp = f"{cache}.tmp{os.getpid()}"
            Path(tmp).write_text(json.dumps({"key_err": key_err, "key_sens": key_sens if with_sens else None,
                                             "measurement": m.to_json()}))
            os.replace(tmp, cache)

    im = load_imatrix(imatrix) if imatrix else None
    s = _source(src)
    if cached is not None:
        _sensitivities(cached, s, src, im, calib_text, n_seq, seq_len, progress, workers=workers)
        save(cached, True)
        return cached
    plans = _plans(s)
    hdr = header_bytes(s, plans, "Q8_0", im, imatrix)
    fixed = 0
    n_params = 0
    meas = Measurement(str(src), hdr, 0, 0, probe=dict(n_seq=n_seq, seq_len=seq_len))
    t0 = time.time()
    todo = []
    for t, p in zip(s.tensors, plans):
        n_params += int(np.prod(p.shape))
        if p.dst_type == p.src_type or not p.allows_quantization:
            fixed += pad(t.n_bytes)
            continue
        todo.append((t, p))
    meas.fixed_bytes, meas.n_params = fixed, n_params
    rng = np.random.default_rng(0)
    for t, p in tqdm(todo, desc="errors", unit="tensor", disable=not progress):
        ne0 = p.shape[0]
        n_rows = int(np.prod(p.shape[1:]))
        imrow = _imatrix_row(im, p.name, ne0)
        types = candidate_types(ne0, imrow is not None, candidates)
        rows = np.sort(rng.choice(n_rows, min(sample_rows, n_rows), replace=False))
        x = _rows(s, t, rows)
        errs, nb = {}, {}
        for typ in types:
            q = _quant_dequant(x, typ, imrow)
            errs[typ] = relative_error(x, q, imrow)
            nb[typ] = pad(n_rows * quant.row_size(typ, ne0))
        meas.tensors.append(TensorMeasure(p.name, list(p.shape), n_rows, p.src_type, errs, nb))
    meas.seconds["errors"] = time.time() - t0
    save(meas, False)
    if calib_text:
        _sensitivities(meas, s, src, im, calib_text, n_seq, seq_len, progress, workers=workers)
        save(meas, True)
    return meas


def _digest(path: str | None) -> str | None:
    if not path:
        return None
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for b in iter(lambda: f.read(1 << 20), b""):
            h.update(b)
    return h.hexdigest()[:16]


def _ref_type(tm: TensorMeasure) -> str:
    """The type whose error is used to measure a tensor's sensitivity: Q3_K where possible, else the
    candidate with the error nearest to Q3_K's typical one (the low end for 32-block-only rows)."""
    for pref in ("Q3_K", "Q4_0", "IQ4_NL"):
        if pref in tm.errors:
            return pref
    return sorted(tm.errors, key=lambda k: tm.errors[k])[len(tm.errors) // 2]


def probe_tokens(model, text: str, n_seq: int, seq_len: int) -> list[np.ndarray]:
    """n_seq windows of seq_len tokens of the calibration text (``runtime.perplexity.chunks``)."""
    from runtime.perplexity import chunks
    return chunks(model.tokenizer, text, seq_len, n_seq, f"in the calibration text for {n_seq} sequences "
                  f"of {seq_len}", min_tokens=n_seq * seq_len)[1]


_ATTN = ("attn_q", "attn_k", "attn_v", "attn_qkv", "attn_output", "attn_q_a", "attn_q_b", "attn_kv_a_mqa",
         "attn_kv_b")


def sensitivity_groups(names: Sequence[str], per: str = "block") -> list[list[str]]:
    """Tensors measured together: one per tensor (``per="tensor"``), or per block and kind
    (``"block"``: a block's attention weights, its FFN weights; every tensor outside blocks alone).
    Works for any layer structure (DeciLM blocks without attention or FFN simply have fewer groups)."""
    if per == "tensor":
        return [[n] for n in names]
    groups: dict[tuple, list[str]] = {}
    for n in names:
        m = re.match(r"^blk\.(\d+)\.([^.]+)", n)
        if not m:
            key = (n,)
        else:
            key = (int(m.group(1)), "attn" if m.group(2) in _ATTN or m.group(2).startswith("attn") else "ffn")
        groups.setdefault(key, []).append(n)
    return list(groups.values())


def _measure_groups(src, im, text_path, n_seq, seq_len, groups, refs, shapes, queue=None):
    """KLD of the model with each group of tensors quantized to its reference types."""
    from runtime.loader import load
    from runtime.perplexity import read_text_file
    from runtime.sensitivity import Probe

    s = _source(src)
    model = load(src)
    probe = Probe(model, probe_tokens(model, read_text_file(text_path), n_seq, seq_len))
    by = {t.name: t for t in s.tensors}
    out = []
    for g in groups:
        rep = {}
        for n in g:
            w = _rows(s, by[n])
            rep[n] = _quant_dequant(w, refs[n], _imatrix_row(im, n, shapes[n][0])).reshape(-1, shapes[n][0])
        out.append(probe.kld(rep))
        if queue is not None:
            queue.put(1)
    return out, probe.n_rows


def _sensitivities(meas, s, src, im, text_path, n_seq, seq_len, progress, per: str = "block", workers: int = 2):
    import multiprocessing as mp
    import time
    from concurrent.futures import ProcessPoolExecutor

    from tqdm import tqdm

    t0 = time.time()
    by = {tm.name: tm for tm in meas.tensors}
    for tm in meas.tensors:
        tm.ref_type = _ref_type(tm)
    refs = {n: tm.ref_type for n, tm in by.items()}
    shapes = {n: tm.shape for n, tm in by.items()}
    groups = sensitivity_groups(list(by), per)
    parts = [groups[i::workers] for i in range(workers)] if workers > 1 else [groups]
    bar = tqdm(total=len(groups), desc="sensitivity", unit="group", disable=not progress)
    if workers > 1:
        ctx = mp.get_context("spawn")
        with ctx.Manager() as man, ProcessPoolExecutor(workers, mp_context=ctx) as ex:
            q = man.Queue()
            futs = [ex.submit(_measure_groups, src, im, text_path, n_seq, seq_len, p, refs, shapes, q) for p in parts]
            done = 0
            while done < len(groups):
                q.get()
                done += 1
                bar.update(1)
            res = [f.result() for f in futs]
    else:
        res = [_measure_groups(src, im, text_path, n_seq, seq_len, groups, refs, shapes)]
        bar.update(len(groups))
    bar.close()
    klds = {}
    for part, (vals, n_rows) in zip(parts, res):
        for g, v in zip(part, vals):
            klds[tuple(g)] = v
        meas.probe["rows"] = n_rows
    for g, v in klds.items():
        e = sum(by[n].errors[by[n].ref_type] for n in g)
        for n in g:
            by[n].ref_kld = v
            by[n].alpha = max(v, 0.0) / e if e > 0 else 0.0
    meas.seconds["sensitivity"] = time.time() - t0
    meas.probe["groups"] = per


# ---------------------------------------------------------------- allocation

def options(meas: Measurement) -> list[TensorOptions]:
    opts = []
    for tm in meas.tensors:
        a = tm.alpha if tm.alpha > 0 else 1e-12
        opts.append(TensorOptions(tm.name, [Choice(k, tm.nbytes[k], a * tm.errors[k]) for k in tm.errors]))
    return opts


def budget_bytes(meas: Measurement, target_bpw: float | None, target_size: str | int | None) -> int:
    """Whole-file bytes allowed: SIZE, or bpw x parameters / 8 (bpw of the whole file, header included)."""
    if (target_bpw is None) == (target_size is None):
        raise GGUFKitError("give exactly one of --target-bpw and --target-size")
    if target_size is not None:
        return parse_size(target_size)
    if not target_bpw > 0:
        raise GGUFKitError(f"invalid target bpw {target_bpw}")
    return int(target_bpw * meas.n_params / 8)


def choose(meas: Measurement, budget: int) -> tuple[dict, int, float]:
    """(types by tensor, exact file bytes, estimated KLD) for a whole-file byte budget."""
    avail = budget - meas.header_bytes - meas.fixed_bytes
    try:
        a = allocate(options(meas), avail)
    except QuantError as e:
        raise GGUFKitError(f"{e} (file budget {budget} bytes, header and unquantized tensors "
                           f"{meas.header_bytes + meas.fixed_bytes})") from None
    return a.types, meas.header_bytes + meas.fixed_bytes + a.nbytes, a.error


def tensor_type_lines(types: dict) -> list[str]:
    """One anchored llama-quantize ``--tensor-type`` pattern per tensor."""
    return [f"^{re.escape(n).replace(chr(92) + '_', '_')}$={t.lower()}" for n, t in types.items()]


def standard_sizes(src: str, imatrix: str | None) -> dict:
    """File bytes of each llama.cpp standard mix (dry runs; an imatrix enables the IQ mixes)."""
    from ggufkit.quantize import quantize_file
    out = {}
    for ft in STANDARD_FTYPES:
        try:
            rep = quantize_file(src, None, ft, imatrix=imatrix, dry_run=True, allow_requantize=True)
        except (QuantError, GGUFKitError):
            continue
        if any("require an importance matrix" in w for w in rep.warnings):
            continue
        out[ft] = rep
    return out


def _file_weights(path: str, types: dict) -> dict:
    """The f32 weights [n_rows, ne0] of the named tensors of a written file (dequantized)."""
    s = _source(path)
    by = {t.name: t for t in s.tensors}
    return {name: _rows(s, by[name]).reshape(-1, by[name].shape[0]) for name in types}


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


def quantize_budget(src: str, dst: str, *, target_bpw: float | None = None, target_size=None,
                    imatrix: str | None = None, calib_text: str | None = None,
                    candidates: Sequence[str] = DEFAULT_CANDIDATES, ftype: str = "Q4_K_M", check: bool = True,
                    n_seq: int = 1, seq_len: int = 128, cache: str | None = None, progress: bool = True,
                    nthreads: int | None = None, sample_rows: int = 256, workers: int = 2) -> BudgetResult:
    from ggufkit.atomic import check_output
    from ggufkit.quantize import quantize_file
    from quant.imatrix import load_imatrix

    if calib_text is None:
        raise GGUFKitError("budgeted allocation needs calibration text (--calib-file) to measure sensitivities")
    cache = cache or f"{src}.alloc-measure.json"      # one measurement per input serves every budget
    meas = measure(src, imatrix, calib_text, candidates=candidates, n_seq=n_seq, seq_len=seq_len, cache=cache,
                   progress=progress, sample_rows=sample_rows, workers=workers)
    im = load_imatrix(imatrix) if imatrix else None
    s = _source(src)
    meas.header_bytes = header_bytes(s, _plans(s), ftype, im, imatrix)   # the imatrix path is in the header
    budget = budget_bytes(meas, target_bpw, target_size)
    types, nbytes, est = choose(meas, budget)
    by = {t.name: t for t in meas.tensors}
    res = BudgetResult(types, nbytes, est, budget)
    for n, typ in types.items():
        tm = by[n]
        res.report.append(dict(name=n, type=typ, bytes=tm.nbytes[typ], rel_error=tm.errors[typ],
                               alpha=tm.alpha, est_kld=tm.alpha * tm.errors[typ]))
    lines = tensor_type_lines(types)
    write_ftype = ftype
    std_ft = None
    if check:
        std = standard_sizes(src, imatrix)
        fitting = [(ft, _file_bytes(meas, r)) for ft, r in std.items()]
        fitting = [(ft, b) for ft, b in fitting if b <= budget]
        if fitting:
            std_ft, b = max(fitting, key=lambda x: x[1])
            res.standard, res.standard_bytes = std_ft, b
            write_ftype = std_ft
            std_types = {t.name: t.dst_type for t in std[std_ft].tensors if t.dst_type != t.src_type}
    import shutil
    import tempfile
    check_output(dst)
    Path(dst).resolve().parent.mkdir(parents=True, exist_ok=True)
    tmpdir = tempfile.mkdtemp(prefix=f".{Path(dst).name}.", dir=Path(dst).resolve().parent)
    try:
        # each candidate file is quantized once: the check dequantizes the written tensors (the
        # same values the probe would get from quantizing them again) and the winner is renamed
        mix_path = os.path.join(tmpdir, "alloc.gguf")
        quantize_file(src, mix_path, write_ftype, nthreads, imatrix=imatrix, tensor_types=lines,
                      allow_requantize=True, progress=progress)
        keep = mix_path
        if std_ft is not None:
            from runtime.loader import load
            from runtime.perplexity import read_text_file
            from runtime.sensitivity import Probe
            model = load(src)
            probe = Probe(model, probe_tokens(model, read_text_file(calib_text), n_seq, seq_len))
            res.probe_kld = probe.kld(_file_weights(mix_path, types))
            std_lines = tensor_type_lines(std_types)
            std_path = os.path.join(tmpdir, "standard.gguf")
            quantize_file(src, std_path, std_ft, nthreads, imatrix=imatrix, tensor_types=std_lines,
                          allow_requantize=True, progress=progress)
            res.standard_probe_kld = probe.kld(_file_weights(std_path, std_types))
            del model, probe
            if res.standard_probe_kld < res.probe_kld:
                res.fell_back = True
                res.message = (f"the allocated mix measures worse than the standard {std_ft} mix of "
                               f"{res.standard_bytes} bytes (probe KLD {res.probe_kld:.5f} vs "
                               f"{res.standard_probe_kld:.5f}): writing {std_ft}")
                res.types = std_types
                res.file_bytes = res.standard_bytes
                lines = std_lines
                keep = std_path
        real = os.path.getsize(keep)
        if real != res.file_bytes:
            raise GGUFKitError(f"internal: planned {res.file_bytes} bytes, wrote {real}")
        os.replace(keep, dst)
    finally:
        shutil.rmtree(tmpdir, ignore_errors=True)
    from ggufkit.atomic import atomic_path
    with atomic_path(f"{dst}.tensor-types.txt") as tmp:
        Path(tmp).write_text("\n".join(lines) + "\n")
    with atomic_path(f"{dst}.alloc.json") as tmp:
        Path(tmp).write_text(json.dumps({k: v for k, v in res.__dict__.items()}, indent=1))
    return res


def _file_bytes(meas: Measurement, rep) -> int:
    return meas.header_bytes + sum(pad(t.dst_bytes) for t in rep.tensors)


def budget_cmd(inp: str, args: Sequence[str], target_bpw, target_size, candidates, calib_file, opts: dict) -> None:
    """The ``ggufkit quantize IN OUT --target-bpw/--target-size`` path of the CLI (prints its report)."""
    import click

    args = list(args)
    if not args:
        raise GGUFKitError("an output file is required with --target-bpw/--target-size")
    out, ftype = args[0], (args[1] if len(args) > 1 else "Q4_K_M")
    cands = tuple(c.strip().upper() for c in candidates.split(",")) if candidates else DEFAULT_CANDIDATES
    res = quantize_budget(inp, out, target_bpw=target_bpw, target_size=target_size, imatrix=opts.get("imatrix"),
                          calib_text=calib_file, candidates=cands, ftype=ftype)
    for r in res.report:
        click.echo(f"{r['name']:<36s} {r['type']:>8s} {r['bytes']:>12d} B  rel.err {r['rel_error']:.3e}  "
                   f"est. KLD {r['est_kld']:.3e}")
    click.echo(f"budget {res.budget} bytes; file {res.file_bytes} bytes; estimated KLD {res.est_kld:.5f}")
    if res.standard:
        click.echo(f"probe KLD {res.probe_kld:.5f} vs standard {res.standard} ({res.standard_bytes} bytes) "
                   f"{res.standard_probe_kld:.5f}")
    if res.fell_back:
        click.echo(f"warning: {res.message}", err=True)
    click.echo(f"tensor types: {out}.tensor-types.txt; report: {out}.alloc.json")
