"""Reconstruction latency (photo -> avatar) and re-enactment FPS (tracking + animation + render per frame).

Built-in default pipeline (OpenHead + training-free ProjectionAvatarModel, K=256), on the CPU (or `--device cuda`).
Every figure is the median of `--repeats` timed runs after one untimed warm-up (numba compilation), with its
spread. Re-enactment covers `--frames` frames of the shared clip v01 (or the photo drifting sideways when the
shared data is absent): per-frame tracking (`track_video`: Face Mesh + smoothing + OpenHead fit), motion transfer
and the render at `--size`², measured separately and together.

    PYTHONPATH=. .venv/bin/python benchmarks/reenact_bench.py [--repeats 3] [--frames 25] [--size 512] [--device cpu]
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch
from _timing import Stats, default_clip, default_photo, driving_frames, repeat

from fhavatar import FHAvatarPipeline


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--photo", type=Path, default=default_photo())
    parser.add_argument("--clip", type=Path, default=default_clip())
    parser.add_argument("--frames", type=int, default=25, help="driving frames re-enacted per run")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--size", type=int, default=512, help="render side in pixels")
    parser.add_argument("--resolution", type=int, default=256, help="UV atlas K")
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()
    print(f"re-enactment benchmark: {args.device}, {torch.get_num_threads()} torch threads, K={args.resolution}, "
          f"{args.size}² renders, photo {args.photo.name}, clip {args.clip.name if args.clip else '(photo drift)'}")

    start = time.perf_counter()
    pipe = FHAvatarPipeline.default(resolution=args.resolution).to(args.device)
    pipe.set_progress_bar_config(disable=True)
    _ = pipe.layout
    print(f"  pipeline + UV layout build (once)      {time.perf_counter() - start:8.3f} s")

    recon, avatar = repeat(lambda: pipe.reconstruct(args.photo), args.repeats)
    print("photo -> avatar (track + avatar model):")
    print(recon.line("reconstruction latency"))
    bust = 0 if avatar.bust is None else len(avatar.bust)
    print(f"  avatar: {len(avatar) + bust} Gaussians ({len(avatar)} bound to the head, {bust} in the bust)")

    frames = driving_frames(args.clip, args.photo, args.frames)
    n = len(frames)
    track, tracks = repeat(lambda: pipe.track_driving(frames)[0], args.repeats)
    render, _ = repeat(lambda: pipe.animate(avatar, tracks, height=args.size, width=args.size), args.repeats)
    whole = Stats([a + b for a, b in zip(track.runs, render.runs)])
    print(f"re-enactment of {n} frames ({args.size}²):")
    print(track.line("tracking (track_video)", per=n, per_unit="frames/s"))
    print(render.line("transfer + animation + render", per=n, per_unit="frames/s"))
    print(whole.line("tracking + animation + render", per=n, per_unit="frames/s"))
    print(f"re-enactment FPS (tracking + animation + render): {n / whole.median:.2f} frames/s "
          f"({1000 * whole.median / n:.0f} ms per frame)")


if __name__ == "__main__":
    main()
