"""Peak memory of the built-in default pipeline, stage by stage: build, photo -> avatar, re-enactment, orbit; and
with `--cli`, the peak memory of the command line (`python -m fhavatar`) at its documented maximum orbit.

Stages: prints the process's peak resident memory (RSS) after each stage and how much each stage added to the peak,
the avatar's own size (its Gaussian tensors and its .ply), and on CUDA the peak allocated GPU memory. RSS peaks
only grow, so each stage's figure includes everything before it; the increments are what a stage costs on top.

`--cli`: runs `python -m fhavatar PHOTO --frames F --size S` in a subprocess (defaults: the CLI's maxima, 3600
frames of 4096², which takes hours on a CPU; `--cli-frames 8` measures the same peak in minutes, since frames are
streamed to the encoder and the peak does not grow with the frame count) and prints the CLI process's peak RSS
(getrusage), the peak of the CLI and its ffmpeg encoder together (sampled every 50 ms), the CLI's own estimate
(`fhavatar.pipeline_inputs.stream_memory`) and whether the total stayed under 4 GB.

    PYTHONPATH=. .venv/bin/python benchmarks/memory_bench.py [--frames 25] [--orbit 24] [--size 512] [--device cpu]
    PYTHONPATH=. .venv/bin/python benchmarks/memory_bench.py --cli [--cli-frames 3600] [--cli-size 4096]
"""

from __future__ import annotations

import argparse
import os
import resource
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import psutil
import torch
from _timing import ROOT, current_rss_mb, default_clip, default_photo, driving_frames, peak_rss_mb

from fhavatar import FHAvatarPipeline
from fhavatar.io import video_info
from fhavatar.pipeline_inputs import MAX_ORBIT_FRAMES, MAX_RENDER_SIDE, stream_memory

#: The bound the CLI keeps at its maximum orbit settings (issue 18).
CLI_LIMIT_MB = 4096


def measure_cli(photo: Path, frames: int, size: int, resolution: int, device: str) -> int:
    """Run the CLI's orbit in a subprocess; print its peak memory (alone and with its encoder). Returns its status."""
    with tempfile.TemporaryDirectory() as out:
        cmd = [sys.executable, "-m", "fhavatar", str(photo), "--out", out, "--frames", str(frames), "--size", str(size),
               "--resolution", str(resolution), "--device", device, "--quiet"]
        print("CLI memory benchmark:", " ".join(cmd[1:]))
        peaks = {"tree": 0, "encoder": 0}
        start = time.perf_counter()
        proc = subprocess.Popen(cmd, cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)}, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True)
        done = threading.Event()

        def sample() -> None:
            cli = psutil.Process(proc.pid)
            while not done.wait(0.05):
                try:
                    children = sum(c.memory_info().rss for c in cli.children(recursive=True))
                    peaks["encoder"] = max(peaks["encoder"], children)
                    peaks["tree"] = max(peaks["tree"], cli.memory_info().rss + children)
                except psutil.Error:
                    pass

        sampler = threading.Thread(target=sample, daemon=True)
        sampler.start()
        stdout, stderr = proc.communicate()
        done.set()
        sampler.join()
        seconds = time.perf_counter() - start
        if proc.returncode != 0:
            print(f"  the CLI failed (status {proc.returncode}): {stderr.strip()[-500:]}")
            return proc.returncode
        written = video_info(Path(out) / "orbit.mp4").num_frames
    cli_mb = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024  # the CLI's own peak (kB on Linux)
    tree_mb = max(peaks["tree"] / 2**20, cli_mb)
    print(f"  CLI process peak RSS (getrusage)          {cli_mb:8.0f} MB")
    print(f"  CLI + ffmpeg encoder peak RSS (sampled)   {tree_mb:8.0f} MB   (encoder alone: {peaks['encoder'] / 2**20:.0f} MB)")
    print(f"  the CLI's estimate of what the run adds   {stream_memory(size, size) / 2**20:8.0f} MB   "
          "(stream_memory: compared with the free memory before the pipeline is built)")
    print(f"  {written} orbit frames of {size}² written in {seconds:.0f} s "
          f"({seconds / max(written, 1):.2f} s per frame, imports and reconstruction included)")
    print(f"  under {CLI_LIMIT_MB / 1024:.0f} GB: {'yes' if tree_mb < CLI_LIMIT_MB else 'NO'}")
    return 0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--photo", type=Path, default=default_photo())
    parser.add_argument("--clip", type=Path, default=default_clip())
    parser.add_argument("--frames", type=int, default=25, help="driving frames re-enacted")
    parser.add_argument("--orbit", type=int, default=24, help="orbit frames")
    parser.add_argument("--size", type=int, default=512)
    parser.add_argument("--resolution", type=int, default=256)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--cli", action="store_true", help="measure the CLI's orbit instead of the stages")
    parser.add_argument("--cli-frames", type=int, default=MAX_ORBIT_FRAMES, help="orbit frames of the CLI run")
    parser.add_argument("--cli-size", type=int, default=MAX_RENDER_SIDE, help="render size of the CLI run")
    args = parser.parse_args()
    if args.cli:
        raise SystemExit(measure_cli(args.photo, args.cli_frames, args.cli_size, args.resolution, args.device))
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
