"""Peak memory of the built-in default pipeline, stage by stage: build, photo -> avatar, re-enactment, orbit.

Prints the process's peak resident memory (RSS) after each stage and how much each stage added to the peak, the
avatar's own size (its Gaussian tensors and its .ply), and on CUDA the peak allocated GPU memory. RSS peaks only
grow, so each stage's figure includes everything before it; the increments are what a stage costs on top.

    PYTHONPATH=. .venv/bin/python benchmarks/memory_bench.py [--frames 25] [--orbit 24] [--size 512] [--device cpu]
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import torch
from _timing import current_rss_mb, default_clip, default_photo, driving_frames, peak_rss_mb

from fhavatar import FHAvatarPipeline


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--photo", type=Path, default=default_photo())
    parser.add_argument("--clip", type=Path, default=default_clip())
    parser.add_argument("--frames", type=int, default=25, help="driving frames re-enacted")
    parser.add_argument("--orbit", type=int, default=24, help="orbit frames")
    parser.add_argument("--size", type=int, default=512)
    parser.add_argument("--resolution", type=int, default=256)
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()
    cuda = args.device.startswith("cuda")
    print(f"memory benchmark: {args.device}, K={args.resolution}, {args.size}² renders, {args.frames} driving frames, "
          f"{args.orbit} orbit frames")
    rows = [("imports (torch, diffusers, fhavatar)", peak_rss_mb())]

    pipe = FHAvatarPipeline.default(resolution=args.resolution).to(args.device)
    pipe.set_progress_bar_config(disable=True)
    _ = pipe.layout
    rows.append(("pipeline + UV layout", peak_rss_mb()))
    avatar = pipe.reconstruct(args.photo)
    rows.append(("photo -> avatar (tracking, MediaPipe)", peak_rss_mb()))
    frames = driving_frames(args.clip, args.photo, args.frames)
    pipe.animate(avatar, frames, height=args.size, width=args.size)
    rows.append((f"re-enact {len(frames)} frames", peak_rss_mb()))
    pipe.orbit(avatar, args.orbit, height=args.size, width=args.size)
    rows.append((f"orbit {args.orbit} frames", peak_rss_mb()))

    previous = 0.0
    print("peak resident memory after each stage (process):")
    for label, peak in rows:
        print(f"  {label:40s} {peak:8.0f} MB   (+{peak - previous:.0f} MB)")
        previous = peak
    print(f"  resident now                             {current_rss_mb():8.0f} MB")
    gaussians = avatar.gaussians()
    tensor_mb = sum(t.numel() * t.element_size() for t in vars(gaussians).values() if isinstance(t, torch.Tensor)) / 2**20
    with tempfile.TemporaryDirectory() as tmp:
        ply_mb = Path(avatar.save_ply(Path(tmp) / "avatar.ply")).stat().st_size / 2**20
    total = len(avatar) + (0 if avatar.bust is None else len(avatar.bust))
    print(f"avatar: {total} Gaussians, {tensor_mb:.1f} MB of posed Gaussian tensors, {ply_mb:.1f} MB as .ply")
    print(f"peak resident memory (whole run): {peak_rss_mb():.0f} MB")
    if cuda:
        print(f"peak CUDA memory allocated: {torch.cuda.max_memory_allocated() / 2**20:.0f} MB")


if __name__ == "__main__":
    main()
