"""The checks that need a GPU, as one prepared run (under 5 minutes on an H100/H200).

    pip install -e '.[dev,cuda]'
    python tools/gpu_check.py [--out gpu_check.json] [--dir /tmp/ggufkit-gpu-check] [--skip-tests]
    GGUFKIT_CUDA_EMULATE=1 python tools/gpu_check.py --quick       # the same steps, tiny, on the CPU

Steps (each timed; a step that fails is recorded with its error and the next one runs):
  1 device    name, compute capability, memory, driver/runtime, the card's bandwidth
              (runtime.plan.CARDS; --gpu-bw overrides)
  2 kernels   the CUDA kernel tests on the GPU side: pytest -k gpu tests/test_cuda_kernels.py
              tests/test_cuda_quant.py (each kernel against its numpy reference with CuPy arrays)
  3 models    synthetic llama-shaped GGUFs (ggufkit.synthetic, rows tiled): Q4_K_M (llama.cpp's
              mixture) and an IQ2_XXS/IQ3_S/IQ4_XS mix, each at ~2.2 GB (n_embd 4096, n_ff 14336,
              16 layers, GQA 32/8) and ~0.8B parameters (2048/8192, 13 layers, GQA 16/4)
  4 ppl       perplexity GPU vs CPU on the two 0.8B files (n_ctx 128, 2 chunks of the fixture
              text): fully offloaded and half offloaded; target |PPL_gpu/PPL_cpu - 1| <= 1e-3
  5 graphs    decode with CUDA graphs (GGUFKIT_CUDA_GRAPHS=1) on the 0.8B Q4_K_M file: the same
              greedy tokens as without, and tg128 with and without
  6 speed     pp512 and tg128 fully offloaded (runtime.bench, like llama-bench); effective GB/s =
              weight bytes read per token (every GPU-resident tensor) x the better tg tok/s (eager
              or CUDA graphs, both reported), against the
              card's bandwidth; targets 60% (files >= 2 GB) and 40% (0.8B); the first file again
              with act="q8_1" (float attention and silu: what the default FP64 numerics cost)

Prints a markdown summary (for docs/PERFORMANCE.md) and writes every number to --out (JSON).
Exit status 0 when every step ran and met its target, 1 otherwise.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
import traceback
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

TEXT = REPO / "tests" / "golden" / "runtime" / "fixture-text.txt"
# name: (n_embd, head_dim, (n_head, n_head_kv, n_ff), n_layer, target fraction of the bandwidth)
SHAPES = {"2.2GB": (4096, 128, (32, 8, 14336), 16, 0.60), "0.8B": (2048, 128, (16, 4, 8192), 13, 0.40)}
QUICK = {"2.2GB": (512, 64, (8, 2, 1024), 2, 0.60), "0.8B": (256, 64, (4, 1, 512), 2, 0.40)}
MIXES = ("Q4_K_M", "IQ")


WARM = r"""
import numpy as np
from quant.api import quantize
from runtime import backend as B
from runtime.qtensor import QTensor
x = np.random.default_rng(0).standard_normal((4, 256)).astype(np.float32)
for t in ("Q4_K", "Q5_K", "Q6_K", "IQ2_XXS", "IQ3_S", "IQ4_XS", "Q8_0"):
    q = quantize(x, t, np.ones(256, np.float32))
    w = QTensor(q, t, (4, 256))
    B.CPU.matmul(w, x[:1]), B.CPU.matmul(w, x), B.CPU.get_rows(w, np.array([1]))
"""


def warm_cpu_kernels():
    """Compile the CPU (Numba) quantizers and matmuls the later steps use, in a background
    process while the GPU kernel tests run (Numba caches them on disk for this process)."""
    return subprocess.Popen([sys.executable, "-c", WARM], cwd=REPO, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)


def step(results: dict, name: str):
    """step(results, name)(fn, *args): run fn, record its result (or its error) and time in results[name]."""
    def run(fn, *a, **kw):
        t0 = time.perf_counter()
        print(f"== {name}", flush=True)
        try:
            out = fn(*a, **kw)
            results[name] = {"ok": True, "seconds": round(time.perf_counter() - t0, 2), **(out or {})}
        except Exception as e:  # noqa: BLE001 - record and go on to the next step
            results[name] = {"ok": False, "seconds": round(time.perf_counter() - t0, 2),
                             "error": f"{type(e).__name__}: {e}", "trace": traceback.format_exc()[-2000:]}
            print(f"   FAILED: {type(e).__name__}: {e}", flush=True)
        return results[name]
    return run


def device_info(gpu_bw: float | None) -> dict:
    from runtime.cuda.backend import probe
    from runtime.cuda.module import emulating
    from runtime.plan import card_info
    name, free, total = probe(0)
    info = {"name": name, "free": free, "total": total, "emulated": emulating()}
    if not emulating():
        import cupy
        rt = cupy.cuda.runtime
        props = rt.getDeviceProperties(0)
        info.update(cc=f"{props['major']}.{props['minor']}", driver=rt.driverGetVersion(),
                    runtime=rt.runtimeGetVersion(), cupy=cupy.__version__)
    card = card_info(name)
    info["bandwidth"] = gpu_bw * 1e9 if gpu_bw else (card[1] if card else None)
    print(f"   {name}: {free / 2**30:.1f} of {total / 2**30:.1f} GiB free, bandwidth "
          f"{info['bandwidth'] / 1e9 if info['bandwidth'] else float('nan'):.0f} GB/s", flush=True)
    return info


def kernel_tests(timeout: int) -> dict:
    from runtime.cuda.module import emulating
    if emulating():
        print("   skipped: emulating (the emulated kernel tests are CI's)", flush=True)
        return {"skipped": "emulating"}
    cmd = [sys.executable, "-m", "pytest", "-q", "-x", "-p", "no:cacheprovider", "-k", "gpu",
           "tests/test_cuda_kernels.py", "tests/test_cuda_quant.py"]
    env = {k: v for k, v in os.environ.items() if k != "GGUFKIT_CUDA_EMULATE"}
    r = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=timeout, env=env)
    tail = (r.stdout + r.stderr).strip().splitlines()[-15:]
    print("   " + (tail[-1] if tail else "(no output)"), flush=True)
    if r.returncode not in (0, 5):          # 5: nothing selected (no GPU side: emulating)
        raise RuntimeError("kernel tests failed:\n" + "\n".join(tail))
    return {"returncode": r.returncode, "summary": tail[-1] if tail else ""}


def make_models(d: Path, quick: bool) -> dict:
    from ggufkit.synthetic import iq_mix, write_model
    d.mkdir(parents=True, exist_ok=True)
    files = {}
    for size, (n_embd, hd, block, n_layer, _) in (QUICK if quick else SHAPES).items():
        for mix in MIXES:
            p = d / f"llama-{size}-{mix}.gguf"
            if not p.exists():
                t0 = time.perf_counter()
                write_model(p.with_suffix(".tmp"), "llama", [block] * n_layer, n_embd=n_embd, head_dim=hd,
                            types=iq_mix if mix == "IQ" else mix, tile_rows=None if quick else 64,
                            out_std=0.04)
                os.replace(p.with_suffix(".tmp"), p)
                print(f"   wrote {p.name}: {p.stat().st_size / 1e9:.2f} GB in {time.perf_counter() - t0:.1f} s",
                      flush=True)
            files[f"{size}-{mix}"] = str(p)
    return {"files": files}


def ppl_check(files: dict, quick: bool) -> dict:
    from runtime.device import DeviceOptions
    from runtime.loader import load
    from runtime.perplexity import perplexity, read_text_file
    from runtime.plan import apply_plan, place_model, plan_header
    text = read_text_file(str(TEXT))
    n_ctx, chunks = (32, 1) if quick else (128, 2)
    out, worst = {}, 0.0
    for key in ("0.8B-Q4_K_M", "0.8B-IQ"):
        m = load(files[key])
        cpu = perplexity(m, text, n_ctx, chunks).ppl
        place_model(m, DeviceOptions("cuda", "all"), n_ctx)
        full = perplexity(m, text, n_ctx, chunks).ppl
        p = plan_header(m.gguf.fields, m.gguf.tensors, n_ctx, 1 << 40, str(m.hp.n_layer // 2))
        apply_plan(m, p)
        half = perplexity(m, text, n_ctx, chunks).ppl
        rel = [abs(full / cpu - 1), abs(half / cpu - 1)]
        worst = max(worst, *rel)
        out[key] = {"cpu": cpu, "gpu_all": full, "gpu_half": half, "rel_all": rel[0], "rel_half": rel[1]}
        print(f"   {key}: CPU {cpu:.4f}  GPU all {full:.4f} ({rel[0]:.1e})  half {half:.4f} ({rel[1]:.1e})",
              flush=True)
    if worst > 1e-3:
        raise AssertionError(f"GPU perplexity differs from the CPU's by {worst:.2e} > 1e-3: {out}")
    return {"results": out, "worst_rel": worst}


def speed(files: dict, bandwidth: float | None, quick: bool) -> dict:
    from runtime.bench import bench
    from runtime.device import DeviceOptions
    from runtime.loader import load
    n_p, n_g, reps = (16, 4, 1) if quick else (512, 128, 2)
    rows, short = {}, []
    for key, path in files.items():
        size = key.split("-")[0]
        target = (QUICK if quick else SHAPES)[size][4]
        m = load(path, with_tokenizer=False)
        os.environ["GGUFKIT_CUDA_GRAPHS"] = "0"
        res = bench(m, n_p, n_g, reps, dev=DeviceOptions("cuda", "all"))
        os.environ["GGUFKIT_CUDA_GRAPHS"] = "1"
        tg_graph = bench(m, 0, n_g, reps, dev=DeviceOptions("cuda", "all"))[0].avg_ts
        graph_err = m.decode_graph.error if m.decode_graph is not None else "not attached"
        os.environ.pop("GGUFKIT_CUDA_GRAPHS", None)
        totals = m.plan.totals()[m.plan.device]
        read = totals["tensors"] + totals.get("copies", 0)           # weights read per token
        pp, tg = res[0].avg_ts, max(res[1].avg_ts, tg_graph if not graph_err else 0.0)
        gbs = read * tg
        frac = gbs / bandwidth if bandwidth else None
        rows[key] = {"file_bytes": os.path.getsize(path), "gpu_weight_bytes": read, "pp_tok_s": pp, "tg_tok_s": tg,
                     "tg_eager_tok_s": res[1].avg_ts, "tg_graph_tok_s": tg_graph, "graph_error": graph_err,
                     "effective_GBps": gbs / 1e9, "fraction_of_bandwidth": frac, "target": target,
                     "backend": res[1].backend, "n_gpu_layers": res[1].n_gpu_layers}
        print(f"   {key}: pp{n_p} {pp:.1f} tok/s, tg{n_g} {res[1].avg_ts:.1f} (graphs {tg_graph:.1f}) tok/s, "
              f"{gbs / 1e9:.1f} GB/s"
              + (f" = {100 * frac:.0f}% of {bandwidth / 1e9:.0f} GB/s (target {100 * target:.0f}%)" if frac else ""),
              flush=True)
        if frac is not None and frac < target:
            short.append(f"{key}: {100 * frac:.0f}% < {100 * target:.0f}%")
        if key == next(iter(files)):       # what the default numerics' FP64 attention and silu cost
            from runtime.cuda import qmatmul
            act, qmatmul.DEFAULT_ACT = qmatmul.DEFAULT_ACT, "q8_1"
            try:
                os.environ["GGUFKIT_CUDA_GRAPHS"] = "0"
                r81 = bench(m, n_p, n_g, reps, dev=DeviceOptions("cuda", "all"))
            finally:
                qmatmul.DEFAULT_ACT = act
                os.environ.pop("GGUFKIT_CUDA_GRAPHS", None)
            rows[key]["q8_1_pp_tok_s"], rows[key]["q8_1_tg_eager_tok_s"] = r81[0].avg_ts, r81[1].avg_ts
            print(f"   {key} with act=q8_1 (float attention, no FP64): pp{n_p} {r81[0].avg_ts:.1f} tok/s, "
                  f"tg{n_g} {r81[1].avg_ts:.1f} tok/s eager", flush=True)
        del m
    if short:
        raise AssertionError("decode below its bandwidth target: " + "; ".join(short) + f" ({rows})")
    return {"results": rows}


def graphs(files: dict, quick: bool) -> dict:
    from runtime.bench import bench
    from runtime.device import DeviceOptions
    from runtime.generate import generate
    from runtime.loader import load
    from runtime.plan import place_model
    n = 4 if quick else 128
    out = {}
    for on in ("0", "1"):
        os.environ["GGUFKIT_CUDA_GRAPHS"] = on
        m = load(files["0.8B-Q4_K_M"])
        place_model(m, DeviceOptions("cuda", "all"), 64)
        toks = list(generate(m, [256, 72, 101, 108], 24, n_ctx=64))
        g = getattr(m, "decode_graph", None)
        tg = bench(m, 0, n, 1 if quick else 2)[0].avg_ts
        out[on] = {"tokens": toks, "tg_tok_s": tg, "graph": g is not None, "error": g.error if g else None}
        print(f"   graphs={on}: tg{n} {tg:.1f} tok/s, graph {'on' if g else 'off'}"
              + (f", capture failed: {g.error}" if g is not None and g.error else ""), flush=True)
    os.environ.pop("GGUFKIT_CUDA_GRAPHS", None)
    if out["0"]["tokens"] != out["1"]["tokens"]:
        raise AssertionError(f"graph tokens {out['1']['tokens']} differ from eager {out['0']['tokens']}")
    return {"results": out, "speedup": out["1"]["tg_tok_s"] / out["0"]["tg_tok_s"]}


def summary(results: dict) -> str:
    dev = results.get("device", {})
    lines = [f"GPU check on {dev.get('name', '?')} (`python tools/gpu_check.py`, "
             f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())})", ""]
    for name, r in results.items():
        lines.append(f"- {name}: {'ok' if r.get('ok') else 'FAILED ' + r.get('error', '')} ({r.get('seconds', 0)} s)")
    gr = results.get("graphs", {})
    if gr.get("ok"):
        r = gr["results"]
        lines.append(f"- CUDA graphs: tg {r['0']['tg_tok_s']:.1f} -> {r['1']['tg_tok_s']:.1f} tok/s "
                     f"(x{gr['speedup']:.2f}), same greedy tokens" + (f"; capture failed: {r['1']['error']}"
                                                                       if r['1']['error'] else ""))
    ppl = results.get("ppl", {}).get("results", {})
    if ppl:
        lines += ["", "| file | PPL CPU | PPL GPU (all) | rel | PPL GPU (half) | rel |", "|---|---:|---:|---:|---:|---:|"]
        for k, v in ppl.items():
            lines.append(f"| {k} | {v['cpu']:.4f} | {v['gpu_all']:.4f} | {v['rel_all']:.1e} | {v['gpu_half']:.4f} "
                         f"| {v['rel_half']:.1e} |")
    sp = results.get("speed", {}).get("results", {})
    if sp:
        lines += ["", "| file | GB | pp tok/s | tg tok/s eager | tg tok/s graphs | GB/s | of card | target |",
                  "|---|---:|---:|---:|---:|---:|---:|---:|"]
        for k, v in sp.items():
            f = v["fraction_of_bandwidth"]
            lines.append(f"| {k} | {v['file_bytes'] / 1e9:.2f} | {v['pp_tok_s']:.1f} | {v['tg_eager_tok_s']:.1f} | "
                         f"{v['tg_graph_tok_s']:.1f} | "
                         f"{v['effective_GBps']:.1f} | {'%.0f%%' % (100 * f) if f else '-'} | {100 * v['target']:.0f}% |")
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default="gpu_check.json")
    ap.add_argument("--dir", default="/tmp/ggufkit-gpu-check", help="where the synthetic models are written")
    ap.add_argument("--quick", action="store_true", help="tiny models (for emulation or a smoke test)")
    ap.add_argument("--skip-tests", action="store_true", help="skip the kernel tests")
    ap.add_argument("--gpu-bw", type=float, help="the card's memory bandwidth in GB/s (default: runtime.plan.CARDS)")
    ap.add_argument("--test-timeout", type=int, default=150)
    a = ap.parse_args(argv)
    results: dict = {}
    dev = step(results, "device")(device_info, a.gpu_bw)
    if not dev["ok"]:
        print(summary(results))
        Path(a.out).write_text(json.dumps(results, indent=2, default=str))
        return 1
    warm = warm_cpu_kernels()
    if not a.skip_tests:
        step(results, "kernels")(kernel_tests, a.test_timeout)
    try:
        warm.wait(timeout=240)
    except subprocess.TimeoutExpired:
        warm.kill()
    models = step(results, "models")(make_models, Path(a.dir), a.quick)
    if models["ok"]:
        step(results, "ppl")(ppl_check, models["files"], a.quick)
        step(results, "graphs")(graphs, models["files"], a.quick)
        step(results, "speed")(speed, models["files"], dev.get("bandwidth"), a.quick)
    text = summary(results)
    print("\n" + text)
    Path(a.out).write_text(json.dumps(results, indent=2, default=str))
    return 0 if all(r.get("ok") for r in results.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
