"""Kernel launches of one decode step on the (emulated) CUDA backend: per llama layer, eager, and
per token with CUDA graphs (the numbers docs/CUDA.md quotes).

    python -m tools.conformance.cuda_launch_counts        # sets GGUFKIT_CUDA_EMULATE=1 itself

Models: ggufkit.synthetic tiny llamas (3 layers, n_embd 256, head_dim 64) in F16, Q8_0 and
llama.cpp's Q4_K_M mixture (attn_v and ffn_down Q6_K in some layers). A launch is one of our
kernels launched from Python (runtime.cuda.module.LAUNCHES; CuPy's own copies are not counted).
Per layer: the launches inside ``block`` (a layer's residual add is fused into the next
layer's first norm, so it counts there). Graphs: ``bench``'s tg, launches per token.
"""
from __future__ import annotations

import os
import tempfile
from pathlib import Path

def step_launches(m, numerics: str) -> tuple[list[int], int]:
    """(launches inside each block, launches of the whole step) for one eager decode step."""
    from runtime.cuda import module as M
    from runtime.device import DeviceOptions
    from runtime.plan import place_model
    place_model(m, DeviceOptions("cuda", "all", numerics=numerics), 16)
    cache = m.new_cache(16)
    m.forward([256, 5, 17], cache)
    per_layer, block = [], m.block

    def counted(il, x, pos, c):
        n0 = M.LAUNCHES["kernel"]
        y = block(il, x, pos, c)
        per_layer.append(M.LAUNCHES["kernel"] - n0)
        return y
    m.block = counted
    n0 = M.LAUNCHES["kernel"]
    m.logits(m.forward([42], cache, out_rows=-1), host=False)
    del m.block
    return per_layer, M.LAUNCHES["kernel"] - n0


def main() -> None:
    os.environ["GGUFKIT_CUDA_EMULATE"] = "1"      # before anything of runtime.cuda is imported
    from runtime.bench import bench
    from runtime.device import DeviceOptions
    from runtime.loader import load
    from tests.helpers import tiny_models as T
    d = Path(tempfile.mkdtemp())
    print("| weights | numerics | eager launches per layer | eager per token (3 layers + head) "
          "| graphs: kernel / graph launches per token |\n|---|---|---|---:|---|")
    for types in ("F16", "Q8_0", "Q4_K_M"):
        path = T.write_tiny(d / f"llama-{types}.gguf", "llama", T.LLAMA_BLOCKS, types)
        for numerics in ("fast", "exact"):
            m = load(str(path), with_tokenizer=False)
            os.environ["GGUFKIT_CUDA_GRAPHS"] = "0"
            per_layer, total = step_launches(m, numerics)
            os.environ.pop("GGUFKIT_CUDA_GRAPHS")
            r = bench(m, n_prompt=0, n_gen=4, reps=1, dev=DeviceOptions("cuda", "all", numerics=numerics))[0]
            print(f"| {types} | {numerics} | {', '.join(map(str, per_layer))} | {total} "
                  f"| {r.kernel_launches_per_token:g} / {r.graph_launches_per_token:g} |")


if __name__ == "__main__":
    main()
