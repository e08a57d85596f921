#!/usr/bin/env python3
"""Time and peak memory of ``ggufkit convert`` vs llama.cpp's convert_hf_to_gguf.py on one checkpoint.

Each run is ``/usr/bin/time -v <converter> MODEL -> OUT``; reported: wall time, peak RSS ("Maximum
resident set size"), throughput = checkpoint safetensors bytes / wall time (GB = 1e9 bytes), and
whether the two outputs are byte-identical. Outputs are deleted after each run (they are as big
as the model).

    python3 -m ggufkit fixture /scratch/super49b --preset super49b-4layer --shards 4
    python3 -m tools.bench.bench_convert /scratch/super49b --outtype auto --out-dir /scratch \\
        --oracle-src /work/oracle/llama_cpp_python-0.3.36 --venv /work/oracle/venv
The oracle runs on a copy of the checkpoint (symlinks) whose config.json has no auto_map.
"""
from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
from pathlib import Path

from tools.conformance.compare_convert import oracle_copy, sha256


def timed(cmd: list[str], env=None) -> dict:
    res = subprocess.run(["/usr/bin/time", "-v", *cmd], capture_output=True, text=True, env=env)
    if res.returncode != 0:
        sys.exit(f"failed ({res.returncode}): {' '.join(cmd)}\n{res.stderr[-3000:]}")
    rss_kb = int(re.search(r"Maximum resident set size \(kbytes\): (\d+)", res.stderr).group(1))
    wall = re.search(r"Elapsed \(wall clock\) time \(h:mm:ss or m:ss\): (\S+)", res.stderr).group(1)
    secs = sum(float(x) * 60 ** i for i, x in enumerate(reversed(wall.split(":"))))
    user = float(re.search(r"User time \(seconds\): (\S+)", res.stderr).group(1))
    sys_t = float(re.search(r"System time \(seconds\): (\S+)", res.stderr).group(1))
    return {"wall_s": secs, "rss_mb": rss_kb / 1024, "cpu_s": user + sys_t}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("model", type=Path)
    ap.add_argument("--outtype", default="auto", choices=["f32", "f16", "bf16", "q8_0", "auto"])
    ap.add_argument("--out-dir", type=Path, default=Path("."))
    ap.add_argument("--oracle-src", default=os.environ.get("GGUFKIT_ORACLE_SRC"),
                    help="unpacked llama_cpp_python-0.3.36 (omit to skip the oracle)")
    ap.add_argument("--venv", default=os.environ.get("GGUFKIT_ORACLE_VENV"), help="venv with torch + transformers")
    ap.add_argument("--repeats", type=int, default=1)
    args = ap.parse_args()

    model = args.model.resolve()
    in_bytes = sum(f.stat().st_size for f in model.glob("*.safetensors"))
    # the copy keeps the model's directory name, so general.name (and so the file) can be identical
    runs = {"ggufkit": [sys.executable, "-m", "ggufkit", "convert", str(model), "-o", "{out}", "--outtype", args.outtype]}
    env = None
    if args.oracle_src:
        src = Path(args.oracle_src)
        llama = src / "vendor" / "llama.cpp" if (src / "vendor").is_dir() else src
        copy = oracle_copy(model, args.out_dir / "oracle-ckpt" / model.name)
        runs["llama.cpp convert_hf_to_gguf.py"] = [str(Path(args.venv) / "bin" / "python"), str(llama / "convert_hf_to_gguf.py"),
                                                   str(copy), "--outfile", "{out}", "--outtype", args.outtype]
        env = dict(os.environ, PYTHONPATH=str(llama / "gguf-py"))
    rows, hashes = [], {}
    for name, cmd in runs.items():
        for rep in range(args.repeats):
            out = args.out_dir / f"bench-{name.split()[0]}.gguf"
            r = timed([c.replace("{out}", str(out)) for c in cmd], env=env)
            r["out_bytes"] = out.stat().st_size
            if rep == 0:
                hashes[name] = sha256(out)
            out.unlink()
            rows.append((name, r))
            print(f"{name}: {r}", file=sys.stderr, flush=True)

    print(f"input: {model.name}, {in_bytes / 1e9:.2f} GB of safetensors, --outtype {args.outtype}, "
          f"{args.repeats} run(s) each")
    print()
    print("| converter | wall time (s) | CPU time (s) | peak RSS (MiB) | throughput (GB/s of input) | output (GB) |")
    print("|---|---|---|---|---|---|")
    for name, r in rows:
        print(f"| {name} | {r['wall_s']:.1f} | {r['cpu_s']:.1f} | {r['rss_mb']:.0f} | "
              f"{in_bytes / 1e9 / r['wall_s']:.3f} | {r['out_bytes'] / 1e9:.2f} |")
    if len(hashes) == 2:
        a, b = hashes.values()
        print(f"\noutputs byte-identical: {'yes' if a == b else 'NO'} (sha256 {b[:16]}...)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
