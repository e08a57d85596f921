"""What ``ggufkit quantize IN OUT --target-bpw/--target-size`` prints (``ggufkit.budget`` does the work)."""
from __future__ import annotations

from typing import Sequence

import click

from ggufkit.errors import GGUFKitError


def budget_cmd(inp: str, args: Sequence[str], target_bpw, target_size, candidates, calib_file, opts: dict, *,
               cache_dir=None, workers: int = 2, ray_address: str | None = None) -> None:
    """The budgeted path of ``ggufkit quantize``: allocate, write, print the per-tensor report.
    ``ray_address``: None (a local process pool), "local" (a new local Ray) or a cluster's address."""
    from ggufkit.budget import quantize_budget
    from ggufkit.measure import DEFAULT_CANDIDATES

    args = list(args)
    if not args:
        raise GGUFKitError("an output file is required with --target-bpw/--target-size")
    out, ftype = args[0], (args[1] if len(args) > 1 else "Q4_K_M")
    cands = tuple(c.strip().upper() for c in candidates.split(",")) if candidates else DEFAULT_CANDIDATES
    ray = None
    if ray_address is not None:
        from ggufkit.fanout import RayRunner
        ray = RayRunner(None if ray_address == "local" else ray_address)
    try:
        res = quantize_budget(inp, out, target_bpw=target_bpw, target_size=target_size, imatrix=opts.get("imatrix"),
                              calib_text=calib_file, candidates=cands, ftype=ftype, cache_dir=cache_dir,
                              workers=workers, ray=ray)
    finally:
        if ray is not None:
            ray.close()
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
