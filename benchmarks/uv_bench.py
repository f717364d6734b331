"""UV layout benchmark on the synthetic symmetric test head (tests/head/symmetric_head.py).

Prints the `UVLayout` precompute time, median milliseconds of `position_map`, `scale_map`, `flip` and `sample`
on the CPU, the number of valid texels and Gaussian samples, and the mirror-map symmetry error (head units).

    PYTHONPATH=. .venv/bin/python benchmarks/uv_bench.py [--resolution 256] [--threads N]
"""

from __future__ import annotations

import argparse
import time

import torch
from _timing import repeat

from fhavatar.head.uv import UVLayout
from tests.head.symmetric_head import SymmetricHead


def _median_ms(fn, repeats: int) -> float:
    return repeat(fn, repeats)[0].median * 1000  # after one untimed warm-up


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--resolution", type=int, default=256, help="UV map size K")
    parser.add_argument("--repeats", type=int, default=20, help="timed runs per operation (median reported)")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    k = args.resolution
    head = SymmetricHead(num_columns=64, num_rings=32)
    vertices = head.template_vertices[None]
    print(
        f"symmetric head: {head.num_vertices} vertices, {head.num_faces} faces; K={k}; "
        f"{torch.get_num_threads()} CPU thread(s)"
    )

    start = time.perf_counter()
    layout = UVLayout(head, resolution=k)
    first = (time.perf_counter() - start) * 1000
    precompute = _median_ms(lambda: UVLayout(head, resolution=k), repeats=3)
    print(f"precompute          first {first:8.1f} ms   median {precompute:8.1f} ms")

    maps = torch.randn(1, 14, k, k)
    for batch in (1, 4):
        verts = vertices.expand(batch, -1, -1).contiguous()
        ms = _median_ms(lambda v=verts: layout.position_map(v), args.repeats)
        print(f"position_map B={batch}    {ms:8.2f} ms")
    print(f"scale_map B=1       {_median_ms(lambda: layout.scale_map(vertices), args.repeats):8.2f} ms")
    print(f"flip [1,14,K,K]     {_median_ms(lambda: layout.flip(maps), args.repeats):8.2f} ms")
    print(f"sample [1,14,K,K]   {_median_ms(lambda: layout.sample(maps), args.repeats):8.2f} ms  (at X)")

    valid = int(layout.valid.sum())
    dense = int(layout.region("scalp").sum())
    print(f"valid texels        {valid} / {k * k} ({100 * valid / k**2:.1f}%), dense (scalp) texels {dense}")
    n_centre = valid - dense
    n_vertex = head.num_vertices
    print(
        f"Gaussian samples    {layout.num_samples} = {n_centre} texel centres + "
        f"{layout.num_samples - n_centre - n_vertex} dense-grid {layout.dense_grid} + {n_vertex} vertices"
    )

    p = layout.position_map(vertices)
    reflected = p * torch.tensor([-1.0, 1.0, 1.0])[None, :, None, None]
    err = (layout.flip(p) - reflected).norm(dim=1)[0][layout.valid]
    print(
        f"mirror symmetry     max {err.max().item():.3e}  mean {err.mean().item():.3e} head units "
        f"({int(layout.mirror_exact.sum())} exact mirrors of {valid} valid texels)"
    )


if __name__ == "__main__":
    main()
