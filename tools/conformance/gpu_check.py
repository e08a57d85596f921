"""The checks that need a GPU, as one prepared run: a complete verdict within about 6 minutes on
an H100/H200 (``tools/gpu_check.sh`` wraps it for a lent machine: carried wheels, $OUT).

    python -m tools.conformance.gpu_check [--out $OUT/gpu_check.json] [--deadline 360] [--skip STEP,...]
    python -m tools.conformance.gpu_check --emulate        # every step on the CPU (GGUFKIT_CUDA_EMULATE=1), tiny shapes

Steps, each with its own deadline (seconds, ``BUDGET``); the JSON is rewritten after every step,
so a run cut short still reports what it reached; a step that fails is recorded with its error
and the next one runs; steps are skipped when the global deadline is near:

  preflight   imports (gguf, cupy, numba, pytest, g++), CuPy / NVRTC / driver versions, device,
              compute capability, FP32:FP64 ratio, free memory after the context exists, and a
              device-to-device copy's bandwidth (the 100% every GB/s below is compared with)
  kernels     the kernel tests' GPU side (pytest -k gpu, no -x, a timeout per test, junit XML next
              to the JSON); emulated: the CuPy-free hazard tests
  large       one F16 tensor over 2^31 bytes (262144 x 8192): mmv and the dequantization of its
              last rows against numpy (64-bit offsets); emulated: a small one
  sanitizer   compute-sanitizer memcheck and racecheck on a short run (2 prefill + 3 decode
              tokens, both numerics) when the tool is there
  mmvq        per weight type, matvec GB/s at [14336 x 4096] (20 launches in a CUDA graph,
              timed by events) against the measured copy bandwidth
  decode      a model decoded past 600 positions, teacher-forced with the CPU's greedy tokens:
              per-step logits error against the CPU and the argmax the same up to near-ties,
              eager and with CUDA graphs; perplexity fully and half offloaded (target 1e-3), all
              in --numerics exact; the default (fast) numerics' perplexity too (fails beyond 1e-2)
  speed       pp512 and tg128 (eager and graphs) with host us and GPU us per decode token
              (events around a step: host > GPU means launch-bound); effective GB/s against
              the copy bandwidth; the plan's GPU bytes against CuPy's pool after the runs

Exit status: 0 every step ran and passed; 1 a correctness failure (or a step that crashed);
2 only speed shortfalls (targets are reported, not asserted, but say so in the status);
3 the run could not start (missing imports, no device).
"""
from __future__ import annotations

import argparse
import faulthandler
import json
import os
import shutil
import subprocess
import sys
import threading
import time
import traceback
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]

TEXT = REPO / "tests" / "golden" / "runtime" / "fixture-text.txt"
BUDGET = {"preflight": 20, "kernels": 100, "large": 40, "sanitizer": 60, "mmvq": 45, "models": 40,
          "decode": 90, "speed": 75}
STEPS = tuple(BUDGET)
# name: n_embd, head_dim, (n_head, n_head_kv, n_ff), n_layer, target fraction of the copy bandwidth
SHAPES = {"gpu": (2048, 128, (16, 4, 8192), 13, 0.60), "emu": (256, 64, (4, 1, 512), 2, 0.60)}
MMVQ_TYPES = ("Q4_0", "Q8_0", "Q4_K", "Q5_K", "Q6_K", "IQ2_XXS", "IQ3_S", "IQ4_XS", "MXFP4", "F16")
EXIT_OK, EXIT_WRONG, EXIT_SLOW, EXIT_SETUP = 0, 1, 2, 3


class Check:
    """The results so far, written to ``out`` after every step."""

    def __init__(self, out: Path, deadline: float, emulate: bool):
        self.out, self.t0, self.deadline, self.emulate = out, time.monotonic(), deadline, emulate
        self.results: dict = {"started": time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime()),
                              "emulated": emulate, "steps": {}}
        self.slow: list = []
        self.save()

    def left(self) -> float:
        return self.deadline - (time.monotonic() - self.t0)

    def save(self) -> None:
        self.results["elapsed"] = round(time.monotonic() - self.t0, 1)
        self.out.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.out.with_suffix(".tmp")
        tmp.write_text(json.dumps(self.results, indent=2, default=str))
        os.replace(tmp, self.out)

    def step(self, name: str, fn, *a, **kw) -> dict:
        budget = BUDGET[name] * (0.5 if self.emulate else 1)
        if self.left() < min(budget, 15):
            r = {"ok": None, "skipped": f"global deadline: {self.left():.0f} s left"}
        else:
            print(f"== {name} (budget {budget:.0f} s)", flush=True)
            t0 = time.perf_counter()
            faulthandler.dump_traceback_later(budget * 1.5 + 5, exit=False)
            try:
                r = {"ok": True, **(fn(*a, **kw) or {})}
            except Skip as e:
                r = {"ok": None, "skipped": str(e)}
            except Exception as e:  # noqa: BLE001 - record and go on to the next step
                r = {"ok": False, "error": f"{type(e).__name__}: {e}"[:4000], "trace": traceback.format_exc()[-3000:]}
            finally:
                faulthandler.cancel_dump_traceback_later()
            r["seconds"] = round(time.perf_counter() - t0, 2)
            if r["seconds"] > budget:
                r["over_budget"] = True
            print(f"   {'ok' if r['ok'] else 'skipped: ' + r['skipped'] if r['ok'] is None else 'FAILED: ' + r['error'][:300]}"
                  f" ({r['seconds']} s)", flush=True)
        self.results["steps"][name] = r
        self.save()
        return r

    def target(self, what: str, value: float, want: float) -> None:
        """A speed target: reported, and exit status 2 when missed (not a correctness failure)."""
        self.results.setdefault("targets", []).append({"what": what, "value": value, "target": want,
                                                       "met": value >= want})
        if value < want:
            self.slow.append(what)


class Skip(Exception):
    pass


def watchdog(check: Check, grace: float = 20.0) -> None:
    """Past the global deadline plus a grace, write what there is and end the process (a hung
    kernel or driver call cannot be interrupted from Python)."""
    def run():
        while check.left() > -grace:
            time.sleep(1)
        check.results["watchdog"] = f"killed at {check.deadline + grace:.0f} s: a step hung"
        check.save()
        faulthandler.dump_traceback(all_threads=True)
        os._exit(EXIT_WRONG)
    threading.Thread(target=run, daemon=True).start()


WARM = r"""
import numpy as np
from quant.api import quantize
from runtime import backend as B
from runtime.qtensor import QTensor
x = np.random.default_rng(0).standard_normal((4, 256)).astype(np.float32)
for t in ("Q4_K", "Q5_K", "Q6_K", "Q8_0"):
    q = quantize(x, t, np.ones(256, np.float32))
    w = QTensor(q, t, (4, 256))
    B.CPU.matmul(w, x[:1]), B.CPU.matmul(w, x), B.CPU.get_rows(w, np.array([1]))
"""


def warm_cpu_kernels():
    """Compile the CPU (Numba) quantizers and matmuls the model steps use, in a background
    process while the kernel tests run (Numba caches them on disk for this process)."""
    return subprocess.Popen([sys.executable, "-c", WARM], cwd=REPO, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)


# ---------------------------------------------------------------- steps

def preflight(check: Check) -> dict:
    info: dict = {"python": sys.version.split()[0]}
    missing = []
    for mod in ("numpy", "numba", "gguf", "pytest") + (() if check.emulate else ("cupy",)):
        try:
            m = __import__(mod)
            info[mod] = getattr(m, "__version__", "?")
        except Exception as e:  # noqa: BLE001
            why = f"{mod} ({type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''})"
            if mod == "gguf":       # only the model steps need it (ggufkit.synthetic writes with gguf-py)
                info["warning"] = f"missing {why}: the model steps will fail; carry .whl/ (tools/gpu_check.sh)"
                print("   " + info["warning"], flush=True)
            else:
                missing.append(why)
    gxx = shutil.which(os.environ.get("CXX", "g++"))
    info["g++"] = gxx
    if check.emulate and not gxx:
        missing.append("g++ (the emulator compiles the kernels with it)")
    if missing:
        raise SetupError("missing: " + "; ".join(missing) + " (tools/gpu_check.sh installs carried wheels from .whl/)")
    from runtime.cuda.backend import probe
    name, free, total = probe(0)
    info.update(name=name, free=free, total=total)
    if check.emulate:
        import numpy as np
        a = np.ones(64 << 20, np.uint8)
        t0 = time.perf_counter()
        a.copy()
        info["copy_GBps"] = 2 * a.nbytes / (time.perf_counter() - t0) / 1e9
        return info
    import cupy
    from cupy.cuda import nvrtc
    rt = cupy.cuda.runtime
    props = rt.getDeviceProperties(0)
    cc = (int(props["major"]), int(props["minor"]))
    info.update(cc=f"{cc[0]}.{cc[1]}", driver=rt.driverGetVersion(), runtime=rt.runtimeGetVersion(),
                nvrtc=".".join(map(str, nvrtc.getVersion())), sms=int(props["multiProcessorCount"]))
    try:
        info["fp32_fp64_ratio"] = rt.deviceGetAttribute(rt.cudaDevAttrSingleToDoublePrecisionPerfRatio, 0)
    except Exception:  # noqa: BLE001
        pass
    from runtime.plan import CUDA_CONTEXT_BYTES
    info["context_bytes_assumed"] = CUDA_CONTEXT_BYTES
    info["used_after_context"] = total - free           # the context and whatever else holds memory
    n = 1 << 30
    a, b = cupy.empty(n, cupy.uint8), cupy.empty(n, cupy.uint8)
    a.fill(1)
    b[...] = a
    e0, e1 = cupy.cuda.Event(), cupy.cuda.Event()
    e0.record()
    for _ in range(10):
        b[...] = a
    e1.record()
    e1.synchronize()
    ms = cupy.cuda.get_elapsed_time(e0, e1)
    info["copy_GBps"] = 10 * 2 * n / (ms / 1e3) / 1e9       # read + write bytes
    del a, b
    cupy.get_default_memory_pool().free_all_blocks()
    print(f"   {name} cc {info['cc']}, {free / 2**30:.1f}/{total / 2**30:.1f} GiB free, copy "
          f"{info['copy_GBps']:.0f} GB/s, CuPy {info['cupy']}, NVRTC {info['nvrtc']}", flush=True)
    return info


class SetupError(Exception):
    pass


def kernels(check: Check, out_dir: Path) -> dict:
    env = dict(os.environ)
    if check.emulate:
        cmd = ["tests/runtime/cuda/test_cuda_hazards.py"]
    else:
        env.pop("GGUFKIT_CUDA_EMULATE", None)
        cmd = ["-k", "gpu", "tests/runtime/cuda/test_cuda_kernels.py", "tests/runtime/cuda/test_cuda_quant.py"]
    xml = out_dir / "kernels.xml"
    cmd = [sys.executable, "-m", "pytest", "-q", "-rf", "-p", "no:cacheprovider", "--timeout=30",
           f"--junitxml={xml}", *cmd]
    budget = BUDGET["kernels"] * (0.5 if check.emulate else 1)
    try:
        r = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=budget, env=env)
        text, rc = r.stdout + r.stderr, r.returncode
    except subprocess.TimeoutExpired as e:
        text = (e.stdout or b"").decode(errors="replace") if isinstance(e.stdout, bytes) else (e.stdout or "")
        text, rc = text + f"\n(timed out after {budget:.0f} s)", -1
    lines = text.strip().splitlines()
    failed = [ln for ln in lines if ln.startswith(("FAILED", "ERROR"))]
    res = {"returncode": rc, "summary": lines[-1] if lines else "", "failed": failed, "junit": str(xml)}
    print("   " + res["summary"], flush=True)
    if rc not in (0, 5):
        raise AssertionError(f"kernel tests: {res['summary']}; " + "; ".join(failed[:20]))
    return res


def large(check: Check) -> dict:
    """mmv_f16 and the F16 dequantization over a tensor past 2^31 bytes (offsets need 64 bits)."""
    import numpy as np
    from runtime.cuda import qmatmul as Q
    from runtime.cuda.xp import device
    dev = device()
    rows, n_in = (262144, 8192) if not check.emulate else (512, 256)
    xp = dev.xp
    if check.emulate:
        w = np.random.default_rng(0).standard_normal((rows, n_in)).astype(np.float16)
    else:
        w = xp.random.standard_normal((rows, n_in), dtype=xp.float32).astype(xp.float16)
    nbytes = int(w.nbytes)
    wb = w.view(np.uint8).reshape(rows, n_in * 2)
    x = dev.asarray(np.random.default_rng(1).standard_normal((1, n_in)).astype(np.float32))
    y = dev.asnumpy(Q.matvec(wb, "F16", rows, n_in, x, numerics="exact"))      # x rounded to f16, as the CPU
    tail = 64
    wt = dev.asnumpy(w[rows - tail:]).astype(np.float64)
    want = wt @ dev.asnumpy(x)[0].astype(np.float16).astype(np.float64)   # the exact numerics round x to f16
    err = float(np.max(np.abs(y[0, rows - tail:] - want)) / (np.max(np.abs(want)) + 1e-30))
    deq = dev.asnumpy(Q.dequantize(wb, "F16", n_in, row0=rows - tail, n_rows=tail, dtype=np.float32))
    exact = bool(np.array_equal(deq, wt.astype(np.float32)))
    res = {"bytes": nbytes, "over_2_31": nbytes > 2**31, "mmv_rel_err": err, "dequant_exact": exact}
    del w, wb
    if not check.emulate:
        xp.get_default_memory_pool().free_all_blocks()
    if err > 1e-4 or not exact:
        raise AssertionError(f"large tensor: {res}")
    return res


SANITIZE = r"""
import sys, numpy as np
sys.path.insert(0, %r)
from runtime.device import DeviceOptions
from runtime.loader import load
from runtime.plan import place_model
from runtime.generate import prefill, decode_one
for numerics in ("exact", "fast"):
    m = load(%r, with_tokenizer=False)
    place_model(m, DeviceOptions("cuda", "all", numerics=numerics), 16)
    c = m.new_cache(16)
    prefill(m, c, [1, 2])
    for t in (3, 4, 5):
        decode_one(m, c, t)
print("sanitized run done")
"""


def sanitizer(check: Check, model: str | None) -> dict:
    if check.emulate:
        raise Skip("emulated (no device to sanitize)")
    tool = shutil.which("compute-sanitizer") or next(
        (p for p in ("/usr/local/cuda/bin/compute-sanitizer",) if os.path.exists(p)), None)
    if tool is None:
        raise Skip("compute-sanitizer not found")
    if model is None:
        raise Skip("no model (the models step failed)")
    out, bad = {}, []
    for t in ("memcheck", "racecheck"):
        cmd = [tool, "--tool", t, "--error-exitcode", "99", sys.executable, "-c", SANITIZE % (str(REPO), model)]
        try:
            r = subprocess.run(cmd, capture_output=True, text=True, timeout=BUDGET["sanitizer"] / 2)
            tail = (r.stdout + r.stderr).strip().splitlines()[-12:]
            out[t] = {"returncode": r.returncode, "tail": tail}
            if r.returncode != 0:
                bad.append(f"{t}: rc {r.returncode}: " + " | ".join(tail[-4:]))
        except subprocess.TimeoutExpired:
            out[t] = {"returncode": None, "tail": ["timed out"]}
    if bad:
        raise AssertionError("; ".join(bad) + f" ({out})")
    return out


def mmvq(check: Check, copy_gbps: float | None) -> dict:
    """GB/s of one matvec per weight type, 20 launches replayed from a CUDA graph."""
    import numpy as np
    from quant.types import get_type
    from runtime.cuda import qmatmul as Q
    from runtime.cuda.xp import device
    dev = device()
    n_out, n_in = (14336, 4096) if not check.emulate else (64, 256)
    reps = 20 if not check.emulate else 2
    x = dev.asarray(np.random.default_rng(0).standard_normal((1, n_in)).astype(np.float32))
    rows = {}
    for t in MMVQ_TYPES:
        if t not in Q.TYPES_SUPPORTED:
            continue
        ti = get_type(t)
        rb = n_in // ti.block_size * ti.type_size
        try:
            if check.emulate:
                w = np.random.default_rng(1).integers(0, 256, (n_out, rb), dtype=np.uint8)
            else:
                w = dev.xp.random.randint(0, 256, (n_out, rb), dtype=np.uint8)
            Q.matvec(w, t, n_out, n_in, x)                      # warm: compile, pool blocks
            if check.emulate:
                t0 = time.perf_counter()
                for _ in range(reps):
                    Q.matvec(w, t, n_out, n_in, x)
                sec = (time.perf_counter() - t0) / reps
            else:
                cp = dev.xp
                s = cp.cuda.Stream(non_blocking=True)
                with s:
                    Q.matvec(w, t, n_out, n_in, x)
                    s.synchronize()
                    s.begin_capture()
                    for _ in range(reps):
                        Q.matvec(w, t, n_out, n_in, x)
                    g = s.end_capture()
                    g.launch(s)
                    e0, e1 = cp.cuda.Event(), cp.cuda.Event()
                    e0.record(s)
                    g.launch(s)
                    e1.record(s)
                    e1.synchronize()
                sec = cp.cuda.get_elapsed_time(e0, e1) / 1e3 / reps
            gbps = (w.nbytes + x.nbytes) / sec / 1e9
            rows[t] = {"us": sec * 1e6, "GBps": gbps, "of_copy": gbps / copy_gbps if copy_gbps else None}
            print(f"   {t:8s} {sec * 1e6:8.1f} us  {gbps:7.1f} GB/s"
                  + (f"  {100 * gbps / copy_gbps:4.0f}% of copy" if copy_gbps else ""), flush=True)
        except Exception as e:  # noqa: BLE001 - one type failing does not hide the others
            rows[t] = {"error": f"{type(e).__name__}: {e}"[:500]}
        finally:
            w = None
    errors = {t: r["error"] for t, r in rows.items() if "error" in r}
    if errors:
        raise AssertionError(f"mmvq failed for {sorted(errors)}: {errors} (results {rows})")
    return {"shape": [n_out, n_in], "results": rows}


def make_models(check: Check, d: Path) -> dict:
    """Synthetic llama-shaped Q4_K_M files (ggufkit.synthetic, needs gguf): the check model
    (~0.8B parameters, rows tiled so it is written in seconds; tiny when emulating) and a tiny
    one for the sanitizer."""
    from ggufkit.synthetic import write_model
    d.mkdir(parents=True, exist_ok=True)
    files = {}
    for key, shape in (("Q4_K_M", SHAPES["emu" if check.emulate else "gpu"]), ("tiny", SHAPES["emu"])):
        n_embd, hd, block, n_layer, _ = shape
        p = d / f"llama-{n_embd}x{n_layer}-Q4_K_M.gguf"
        if not p.exists():
            write_model(p.with_suffix(".tmp"), "llama", [block] * n_layer, n_embd=n_embd, head_dim=hd,
                        types="Q4_K_M", tile_rows=64 if n_embd > 1024 else None, out_std=0.04)
            os.replace(p.with_suffix(".tmp"), p)
        files[key] = str(p)
        print(f"   {key}: {p.name} {p.stat().st_size / 1e6:.1f} MB", flush=True)
    return {"files": files}


def _near_tie(cpu_logits, i_gpu) -> bool:
    """The GPU's argmax is within 1e-3 of the logit range of the CPU's best (a near-tie)."""
    import numpy as np
    scale = float(np.max(cpu_logits) - np.min(cpu_logits)) or 1.0
    return float(np.max(cpu_logits) - cpu_logits[i_gpu]) <= 1e-3 * scale


def decode(check: Check, files: dict) -> dict:
    """Teacher-forced decode past 600 positions: the CPU's greedy tokens fed to the GPU eagerly
    and with CUDA graphs; per-step logits compared. Then perplexity, fully and half offloaded.
    All in the exact numerics (the CPU's arithmetic: a difference is a bug); the default (fast)
    numerics' perplexity is reported, and fails only beyond 1e-2 (docs/CUDA.md, "numerics")."""
    import numpy as np
    from runtime.backend import CPU
    from runtime.device import DeviceOptions
    from runtime.generate import decode_one, prefill
    from runtime.loader import load
    from runtime.perplexity import perplexity, read_text_file
    from runtime.plan import apply_plan, place_model, plan_header
    n_prompt, n_gen = (596, 8) if check.emulate else (560, 64)
    n_ctx = n_prompt + n_gen + 8
    m = load(files["Q4_K_M"])
    m.place([CPU] * m.hp.n_layer, CPU)
    ids = [int(t) for t in np.random.default_rng(0).integers(1, min(m.hp.n_vocab, 30000), n_prompt)]
    cache = m.new_cache(n_ctx)
    logits = [prefill(m, cache, ids)]
    toks = []
    for _ in range(n_gen):
        toks.append(int(np.argmax(logits[-1])))
        logits.append(decode_one(m, cache, toks[-1]))
    res: dict = {"n_prompt": n_prompt, "n_gen": n_gen, "last_position": n_prompt + n_gen}
    bad = []
    for mode in ("eager", "graphs"):
        os.environ["GGUFKIT_CUDA_GRAPHS"] = "1" if mode == "graphs" else "0"
        place_model(m, DeviceOptions("cuda", "all", numerics="exact"), n_ctx)
        cache = m.new_cache(n_ctx)
        got = [prefill(m, cache, ids)]
        for t in toks:
            got.append(decode_one(m, cache, t))
        errs, flips, ties = [], 0, 0
        for lc, lg in zip(logits, got):
            scale = float(np.max(lc) - np.min(lc)) or 1.0
            errs.append(float(np.max(np.abs(lg - lc)) / scale))
            if int(np.argmax(lg)) != int(np.argmax(lc)):
                if _near_tie(lc, int(np.argmax(lg))):
                    ties += 1
                else:
                    flips += 1
        g = m.decode_graph
        r = {"max_rel_err": max(errs), "mean_rel_err": float(np.mean(errs)), "argmax_flips": flips,
             "near_ties": ties, "graph_replays": g.replays if g else None, "graph_error": g.error if g else None,
             "graph_captures": g.captures if g else None}
        res[mode] = r
        print(f"   {mode}: logits error max {r['max_rel_err']:.1e} of the range, {flips} argmax flips, "
              f"{ties} near-ties" + (f", {g.replays} replays, {g.captures} captures" if g else ""), flush=True)
        if flips or r["max_rel_err"] > 2e-2:
            bad.append(f"{mode}: {r}")
        if mode == "graphs" and (g is None or g.error or not g.replays):
            bad.append(f"graphs did not run: {r}")
    os.environ.pop("GGUFKIT_CUDA_GRAPHS", None)
    text = read_text_file(str(TEXT))
    pn, chunks = (32, 1) if check.emulate else (128, 2)
    m.place([CPU] * m.hp.n_layer, CPU)
    cpu = perplexity(m, text, pn, chunks).ppl
    place_model(m, DeviceOptions("cuda", "all", numerics="exact"), pn)
    full = perplexity(m, text, pn, chunks).ppl
    apply_plan(m, plan_header(m.gguf.fields, m.gguf.tensors, pn, 1 << 40, str(m.hp.n_layer // 2)), numerics="exact")
    half = perplexity(m, text, pn, chunks).ppl
    rel = max(abs(full / cpu - 1), abs(half / cpu - 1))
    place_model(m, DeviceOptions("cuda", "all", numerics="fast"), pn)
    fast = perplexity(m, text, pn, chunks).ppl
    res["ppl"] = {"cpu": cpu, "gpu_all": full, "gpu_half": half, "worst_rel": rel, "gpu_all_fast": fast,
                  "fast_rel": abs(fast / cpu - 1)}
    print(f"   ppl CPU {cpu:.4f} GPU exact all {full:.4f} half {half:.4f} (worst {rel:.1e}), "
          f"fast all {fast:.4f} ({abs(fast / cpu - 1):.1e})", flush=True)
    if rel > 1e-3:
        bad.append(f"perplexity {rel:.2e} > 1e-3")
    if abs(fast / cpu - 1) > 1e-2:
        bad.append(f"perplexity in the fast numerics {abs(fast / cpu - 1):.2e} > 1e-2")
    if bad:
        raise AssertionError("; ".join(bad))
    return res


def _step_times(m, n_ctx: int, n: int) -> tuple[float, float]:
    """Median host and GPU microseconds per decode token (host: until the step's launches are
    queued; GPU: events around the step on its stream)."""
    import numpy as np
    from runtime.cuda.module import emulating
    from runtime.generate import decode_one
    be = m.out_backend
    cache = m.new_cache(n_ctx)
    host, gpu = [], []
    for i in range(n):
        if emulating():
            t0 = time.perf_counter()
            decode_one(m, cache, 1 + i % 200, host=False)
            host.append(time.perf_counter() - t0)
            gpu.append(float("nan"))
            continue
        cp = be.xp
        stream = be.stream if m.decode_graph is not None and m.decode_graph.error is None else \
            cp.cuda.get_current_stream()
        e0, e1 = cp.cuda.Event(), cp.cuda.Event()
        be.synchronize()
        e0.record(stream)
        t0 = time.perf_counter()
        decode_one(m, cache, 1 + i % 200, host=False)
        host.append(time.perf_counter() - t0)
        e1.record(stream)
        e1.synchronize()
        gpu.append(cp.cuda.get_elapsed_time(e0, e1) / 1e3)
    return float(np.median(host)) * 1e6, float(np.nanmedian(gpu)) * 1e6 if not emulating() else float("nan")


def speed(check: Check, files: dict, copy_gbps: float | None) -> dict:
    from runtime.bench import bench
    from runtime.device import DeviceOptions
    from runtime.loader import load
    n_p, n_g, reps = (16, 4, 1) if check.emulate else (512, 128, 2)
    m = load(files["Q4_K_M"], with_tokenizer=False)
    res: dict = {}
    for mode in ("eager", "graphs"):
        os.environ["GGUFKIT_CUDA_GRAPHS"] = "1" if mode == "graphs" else "0"
        r = bench(m, n_p if mode == "eager" else 0, n_g, reps, dev=DeviceOptions("cuda", "all"))
        host_us, gpu_us = _step_times(m, n_g + 8, 8 if check.emulate else 32)
        res[mode] = {"tg_tok_s": r[-1].avg_ts, "host_us_per_token": host_us, "gpu_us_per_token": gpu_us,
                     "kernel_launches_per_token": r[-1].kernel_launches_per_token,
                     "graph_launches_per_token": r[-1].graph_launches_per_token,
                     "graph_error": m.decode_graph.error if m.decode_graph is not None else None}
        if mode == "eager":
            res["pp_tok_s"] = r[0].avg_ts
    os.environ.pop("GGUFKIT_CUDA_GRAPHS", None)
    try:                                             # what the exact numerics (f32 GEMM, FP64 attention) cost
        os.environ["GGUFKIT_CUDA_GRAPHS"] = "0"
        r = bench(m, n_p, n_g, 1, dev=DeviceOptions("cuda", "all", numerics="exact"))
        res["exact_numerics"] = {"pp_tok_s": r[0].avg_ts, "tg_tok_s": r[1].avg_ts}
    finally:
        os.environ.pop("GGUFKIT_CUDA_GRAPHS", None)
    p = m.plan
    totals = p.totals()[p.device]
    read = totals["tensors"] + totals.get("copies", 0)
    tg = max(res["eager"]["tg_tok_s"], res["graphs"]["tg_tok_s"] if not res["graphs"]["graph_error"] else 0.0)
    gbps = read * tg / 1e9
    res.update(gpu_weight_bytes=read, effective_GBps=gbps, of_copy=gbps / copy_gbps if copy_gbps else None)
    mem = {"planned_total": totals["total"], "planned_scratch": totals["scratch"], "planned_kv": totals["kv"],
           "budget": p.budget, "pool_limit": getattr(m.out_backend, "memory_limit", None)}
    if not check.emulate:
        import gc
        gc.collect()                        # backends of the earlier placements (cycles through their graphs)
        pool = m.out_backend.xp.get_default_memory_pool()
        mem.update(pool_used=pool.used_bytes(), pool_total=pool.total_bytes(),
                   graph_pool_total=m.out_backend.graph_pool.total_bytes() if m.out_backend._graph_pool else 0)
        # live bytes (weights, the last cache, workspaces) against the plan; the pool's cached
        # total is reported, and CuPy's limit (pool_limit) keeps it within the budget
        mem["within_plan"] = mem["pool_used"] + mem["graph_pool_total"] <= totals["total"]
    res["memory"] = mem
    print(f"   pp{n_p} {res['pp_tok_s']:.1f} tok/s; tg{n_g} eager {res['eager']['tg_tok_s']:.1f} "
          f"(host {res['eager']['host_us_per_token']:.0f} us, GPU {res['eager']['gpu_us_per_token']:.0f} us/token), "
          f"graphs {res['graphs']['tg_tok_s']:.1f} (host {res['graphs']['host_us_per_token']:.0f} us, "
          f"GPU {res['graphs']['gpu_us_per_token']:.0f} us/token); {gbps:.1f} GB/s"
          + (f" = {100 * gbps / copy_gbps:.0f}% of copy" if copy_gbps else ""), flush=True)
    if copy_gbps and not check.emulate:
        check.target("decode GB/s of the copy bandwidth", gbps / copy_gbps, SHAPES["gpu"][4])
    if mem.get("within_plan") is False:
        raise AssertionError(f"CuPy's pools hold more than the plan: {mem}")
    return res


# ---------------------------------------------------------------- main

def verdict(check: Check) -> int:
    steps = check.results["steps"]
    if steps.get("preflight", {}).get("ok") is False:
        return EXIT_SETUP
    if any(r.get("ok") is False for r in steps.values()) or "watchdog" in check.results:
        return EXIT_WRONG
    return EXIT_SLOW if check.slow else EXIT_OK


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default=os.path.join(os.environ.get("OUT", "."), "gpu_check.json"))
    ap.add_argument("--dir", default="/tmp/ggufkit-gpu-check", help="where the synthetic models are written")
    ap.add_argument("--emulate", action="store_true", help="every step on the CPU (GGUFKIT_CUDA_EMULATE=1), tiny")
    ap.add_argument("--deadline", type=float, default=360.0, help="seconds for the whole run")
    ap.add_argument("--skip", default="", help=f"comma-separated steps to skip ({', '.join(STEPS)})")
    a = ap.parse_args(argv)
    if a.emulate:
        os.environ["GGUFKIT_CUDA_EMULATE"] = "1"
        from runtime.cuda.module import set_emulation
        set_emulation(True)
    skip = {s.strip() for s in a.skip.split(",") if s.strip()}
    check = Check(Path(a.out), a.deadline, a.emulate)
    watchdog(check)
    pre = check.step("preflight", preflight, check)
    if pre.get("ok") is False:
        print(f"cannot start: {pre['error']}", flush=True)
        return EXIT_SETUP
    copy = pre.get("copy_GBps")
    run = {
        "kernels": lambda: check.step("kernels", kernels, check, Path(a.out).parent),
        "large": lambda: check.step("large", large, check),
        "models": lambda: check.step("models", make_models, check, Path(a.dir)),
    }
    warm = warm_cpu_kernels()
    for name in ("kernels", "large", "models"):
        if name == "models":
            try:
                warm.wait(timeout=max(1.0, min(120.0, check.left() - 120)))
            except subprocess.TimeoutExpired:
                warm.kill()
        if name not in skip:
            run[name]()
    files = check.results["steps"].get("models", {}).get("files")
    if "mmvq" not in skip:
        check.step("mmvq", mmvq, check, copy)
    if "sanitizer" not in skip:
        check.step("sanitizer", sanitizer, check, files["tiny"] if files else None)
    for name, fn in (("decode", decode), ("speed", speed)):
        if name in skip:
            continue
        if not files:
            check.results["steps"][name] = {"ok": None, "skipped": "no models"}
            check.save()
            continue
        check.step(name, fn, check, files, *((copy,) if name == "speed" else ()))
    code = verdict(check)
    check.results["exit_status"] = code
    check.results["slow"] = check.slow
    check.save()
    print(f"\nverdict: {['ok', 'CORRECTNESS FAILURE', 'speed below target', 'could not start'][code]} "
          f"(exit {code}); results in {a.out}", flush=True)
    return code


if __name__ == "__main__":
    sys.exit(main())
