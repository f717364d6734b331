"""Pipeline benchmark: photo -> avatar + 72-frame 512² orbit, and a 5 s 25 fps clip re-enacted.

Prints seconds for each stage with the built-in default pipeline (OpenHead + ProjectionAvatarModel, K=256) on the
CPU (or `--device cuda`). Targets on a laptop-class CPU: < 30 s for photo -> avatar + orbit, < 60 s for the clip.
The clip is v01 (78 frames, 25 fps) looped to 125 frames (`--clip-frames`), so tracking covers 5 s of video.
Without the shared data, the packaged example photo is used, drifting sideways as the clip.

    PYTHONPATH=. .venv/bin/python benchmarks/pipeline_bench.py [--size 512] [--frames 72] [--device cpu]
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch
from _timing import default_clip, default_photo, driving_frames

from fhavatar import FHAvatarPipeline

PHOTO = default_photo()
CLIP = default_clip()
FPS = 25.0


def _timed(label: str, fn, results: dict):
    start = time.perf_counter()
    value = fn()
    results[label] = time.perf_counter() - start
    print(f"  {label:34s} {results[label]:7.2f} s", flush=True)
    return value


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--photo", type=Path, default=PHOTO)
    parser.add_argument("--clip", type=Path, default=CLIP)
    parser.add_argument("--clip-frames", type=int, default=125, help="frames re-enacted (the clip is looped)")
    parser.add_argument("--size", type=int, default=512)
    parser.add_argument("--frames", type=int, default=72, help="orbit frames")
    parser.add_argument("--resolution", type=int, default=256)
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()
    print(f"FHAvatar pipeline benchmark: {args.device}, {torch.get_num_threads()} torch threads, K={args.resolution}, "
          f"{args.size}² renders")
    results: dict[str, float] = {}
    def build() -> FHAvatarPipeline:
        pipe = FHAvatarPipeline.default(resolution=args.resolution).to(args.device)
        pipe.set_progress_bar_config(disable=True)
        _ = pipe.layout  # the UV layout is built once per pipeline: set-up, not per photo
        return pipe

    pipe = _timed("build pipeline + UV layout (once)", build, results)

    print("photo -> avatar + orbit")
    avatar = _timed("reconstruct (track + avatar model)", lambda: pipe.reconstruct(args.photo), results)
    _timed(f"orbit ({args.frames} frames)", lambda: pipe.orbit(avatar, args.frames, height=args.size,
                                                                 width=args.size), results)
    first = results["reconstruct (track + avatar model)"] + results[f"orbit ({args.frames} frames)"]

    print(f"re-enactment ({args.clip_frames} frames at 25 fps = {args.clip_frames / 25:.1f} s of video)")
    frames = _timed("read clip", lambda: driving_frames(args.clip, args.photo, args.clip_frames), results)
    fps = FPS
    tracks, _ = _timed("track driving video", lambda: pipe.track_driving(frames), results)
    _timed("transfer + render", lambda: pipe.animate(avatar, tracks, height=args.size, width=args.size), results)
    second = results["read clip"] + results["track driving video"] + results["transfer + render"]

    print(f"photo -> avatar + {args.frames}-frame orbit: {first:.1f} s (target < 30 s)")
    print(f"{args.clip_frames / fps:.1f} s clip re-enacted:          {second:.1f} s (target < 60 s), "
          f"{args.clip_frames / second:.1f} frames/s")


if __name__ == "__main__":
    main()
