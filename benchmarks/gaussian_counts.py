"""Gaussian counts of the UV-sampled avatar per head model (paper §B reports ≈78K for FLAME at K=256).

    PYTHONPATH=. .venv/bin/python benchmarks/gaussian_counts.py [--resolution 256] [--flame flame.safetensors]

OpenHead ships with the package; FLAME needs the file made by `python -m fhavatar.tools.convert_flame` from the
official (licensed) FLAME files, so it is counted only when `--flame` is given.
"""

from __future__ import annotations

import argparse
import time

import torch

from fhavatar.head.open_head import OpenHead
from fhavatar.head.uv import UVLayout


def report(name: str, head, resolution: int) -> None:
    start = time.perf_counter()
    layout = UVLayout(head, resolution=resolution)
    elapsed = time.perf_counter() - start
    positions = layout.position_map(head.template_vertices[None])
    mirrored = layout.flip(positions)
    reflected = positions * torch.tensor([-1.0, 1.0, 1.0])[None, :, None, None]
    exact = layout.valid & layout.mirror_exact
    err = (mirrored - reflected).norm(dim=1)[0][exact]
    print(
        f"{name}: {head.num_vertices} vertices, {head.num_faces} faces; K={resolution}: "
        f"{int(layout.valid.sum())} valid texels, {layout.num_samples} Gaussians; "
        f"mirror-map error max {err.max():.2e} mean {err.mean():.2e} head units; precompute {elapsed:.2f} s"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--resolution", type=int, default=256)
    parser.add_argument("--flame", default=None, help="a converted FLAME .safetensors file (optional)")
    args = parser.parse_args()
    report("OpenHead", OpenHead(), args.resolution)
    if args.flame:
        from fhavatar.head.flame import FLAME

        report("FLAME", FLAME.from_file(args.flame), args.resolution)
    else:
        # Without the licensed file: a closed, mirror-symmetric ellipsoid head with FLAME's size (~5K vertices,
        # ~10K faces) and a full-sphere atlas, the test suite's stand-in. Its count bounds FLAME's from above:
        # FLAME's atlas leaves more of the square empty.
        from tests.head.symmetric_head import SymmetricHead

        report("FLAME-sized stand-in (ellipsoid, 100x50 grid)", SymmetricHead(num_columns=100, num_rings=50), args.resolution)
        print("FLAME itself: pass --flame flame.safetensors (made by fhavatar.tools.convert_flame)")


if __name__ == "__main__":
    main()
