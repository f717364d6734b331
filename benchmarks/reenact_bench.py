"""Re-enactment speed: photo -> avatar latency, and per-frame animation + render (+ tracking) against today's path.

Built-in default pipeline (OpenHead + training-free ProjectionAvatarModel, K=256, full head: hair shell and bust), on
the CPU (or `--device cuda`). The shared photo p07 is reconstructed once and the shared clip v01 tracked once
(`pipe.track_driving`); then, per render size, every round runs each of these over the whole clip, one after the
other (interleaved, so a busy machine slows them alike):

- today's path: the per-frame loop before issue 20, kept readable here (`todays_path`): the head posed for the
  whole clip, `Avatar.reference_gaussians` per frame (a triangle frame per Gaussian, a dozen [N, ...] tensors), the
  torch value checks, and the renderer's autograd path (fresh arrays, serial sort and tile binning), PyTorch's
  thread settings left alone (it shares the compiled projection and compositing kernels with the new path);
- animate: `pipe.animate(avatar, tracks)` (transfer, the head posed 16 frames per call (`ClipVertices`) and the
  avatar re-posed by compiled kernels, no-gradient render with reused arrays and parallel binning; per frame one
  torch thread and the numba thread count that renders faster, timed: `fhavatar.animation.FrameThreads`);
- render only: the same Gaussians posed beforehand, rendered by the same loop (the floor animate can reach);
- tracking + animation + render: `pipe.animate(avatar, frames)` on the decoded frames (`track_video` runs first:
  it smooths over the whole clip, so tracking cannot overlap the renders), and tracking alone.

Figures are per frame: the median over `--repeats` rounds with min, max and (n >= 4) the interquartile range; the
ratios are taken within each round, then their median and range printed. The images of animate and today's path
are compared (max abs difference). `--profile` adds a cProfile of one un-overlapped pass per size: where the time
goes.

    PYTHONPATH=. .venv/bin/python benchmarks/reenact_bench.py [--repeats 5] [--frames 48] [--sizes 512 256] [--profile]
"""

from __future__ import annotations

import argparse
import cProfile
import os
import pstats
import statistics
import time
from contextlib import contextmanager
from pathlib import Path

import numba
import torch
from _timing import Stats, default_clip, default_photo, driving_frames, repeat

from fhavatar import FHAvatarPipeline
from fhavatar.animation import ClipVertices, FrameThreads, frame_params, single_torch_thread, transfer_motion
from fhavatar.head import _kernels as head_kernels
from fhavatar.pipeline_inputs import square_pixels
from fhavatar.rendering import gaussians as gaussians_module
from fhavatar.rendering import render_gaussians
from fhavatar.rendering.rasterize import _check_render_inputs, _RenderCPU

TARGETS = {512: 25.0, 256: 50.0}  # FPS of animation + render on a 2-core CPU (issue 20)
MAX_OVERHEAD = 1.15  # animate / render-only at 256²
TRACKED_TARGET = 20.0  # FPS of tracking + animation + render at 256²


def todays_render(gaussians, camera, size: int, background) -> torch.Tensor:  # -> [3, H, W]
    """`render_gaussians` as it ran before issue 20: checks, the autograd function's forward (fresh arrays for a
    backward pass, serial binning), depth, composite, copies."""
    bg = _check_render_inputs(gaussians, camera, size, size, background, None)
    camera = camera.to(gaussians.dtype)
    stacked = torch.cat([gaussians.colors], dim=-1)
    render, alpha = _RenderCPU.apply(gaussians.means, gaussians.quats, gaussians.scales, gaussians.opacities, stacked,
                                     camera.world2cam, camera.pixel_intrinsics(size, size), size, size)
    depth = render[:, -1:] / alpha.clamp(min=1e-10)
    image = render[:, :3] + bg[:, :, None, None] * (1.0 - alpha)
    _ = image.contiguous(), alpha.contiguous(), depth.contiguous()
    return image[0].cpu()


@contextmanager
def torch_value_checks():
    """`Gaussians.validate` as before issue 20: the torch checks only (a dozen passes), not the compiled one, on every
    call (not once per set of Gaussians); OpenHead's expression offsets by the torch formula (same bits)."""
    compiled, unchanged = gaussians_module.values_look_valid, gaussians_module.Gaussians._values_unchanged
    expression_kernel = head_kernels.matches_torch
    gaussians_module.values_look_valid = lambda *arrays: False
    gaussians_module.Gaussians._values_unchanged = lambda self: False
    head_kernels.matches_torch = lambda width: False  # the head's expression offsets by the torch formula, as before
    try:
        yield
    finally:
        gaussians_module.values_look_valid, gaussians_module.Gaussians._values_unchanged = compiled, unchanged
        head_kernels.matches_torch = expression_kernel


@torch.no_grad()
def todays_path(pipe, avatar, tracks, size: int) -> torch.Tensor:  # -> [T, 3, H, W]
    """Transfer + animation + render per frame as the pipeline did before issue 20 (the readable reference)."""
    with torch_value_checks():
        params, cameras = transfer_motion(avatar.source_track, tracks)
        cameras = square_pixels(cameras, size, size)
        vertices = avatar.pose(params)  # [T, V, 3]
        background = torch.tensor(pipe.config.background)
        return torch.stack([todays_render(avatar.reference_gaussians(vertices=vertices[t]), cameras[t], size,
                                          background) for t in range(len(cameras))])


@torch.no_grad()
def render_only(posed, cameras, size: int, background) -> torch.Tensor:
    """The animate loop's render step alone (same thread settings, same final copies), on Gaussians posed
    beforehand."""
    frames, threads = [], FrameThreads()
    for t, gaussians in enumerate(posed):
        with threads.frame():
            frame = render_gaussians(gaussians, cameras[t], size, size, background=background)
        frames.append(frame.image[0].cpu())
    with single_torch_thread():  # as `pipe.animate` stacks them
        return torch.stack(frames).clamp(0, 1)


def spread(values: list[float]) -> str:
    return f"median {statistics.median(values):.2f}, min {min(values):.2f}, max {max(values):.2f}; n={len(values)}"


def per_frame(label: str, stats: Stats, n: int) -> str:
    ms = 1000 * stats.median / n
    runs = sorted(1000 * r / n for r in stats.runs)
    extra = ""
    if len(runs) >= 4:
        q1, _, q3 = statistics.quantiles(runs, n=4)
        extra = f", IQR {q3 - q1:.1f}"
    return (f"  {label:44s} median {ms:7.1f} ms = {1000 / ms:6.1f} FPS  "
            f"(min {runs[0]:.1f}, max {runs[-1]:.1f}{extra}; n={len(runs)})")


def profile_pass(pipe, avatar, tracks, size: int, top: int = 14) -> None:
    """cProfile of one pass of the new loop (own time of each function per frame: numba kernels are single entries)."""
    params, cameras = transfer_motion(avatar.source_track, tracks)
    cameras = square_pixels(cameras, size, size)
    background = torch.tensor(pipe.config.background)
    profiler, threads, vertices = cProfile.Profile(), FrameThreads(), ClipVertices(avatar.pose, params)
    with torch.no_grad():
        profiler.enable()
        for t in range(len(cameras)):
            with threads.frame():
                gaussians = avatar.gaussians(vertices=vertices(t))
                render_gaussians(gaussians, cameras[t], size, size, background=background).image[0].cpu()
        profiler.disable()
    stats = pstats.Stats(profiler)
    rows = sorted(stats.stats.items(), key=lambda kv: -kv[1][2])[:top]  # by own time
    n = len(cameras)
    print(f"  where the time goes at {size}² (one pass; own time per frame):")
    for (path, line, name), (_, calls, own, cumulative, _) in rows:
        where = f"{Path(path).name}:{line}({name})" if line else name
        print(f"    {1000 * own / n:7.2f} ms own  {1000 * cumulative / n:7.2f} ms with callees  {calls // n:4d}x  {where}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--photo", type=Path, default=default_photo())
    parser.add_argument("--clip", type=Path, default=default_clip())
    parser.add_argument("--frames", type=int, default=48, help="driving frames re-enacted per run")
    parser.add_argument("--repeats", type=int, default=5, help="interleaved rounds")
    parser.add_argument("--recon-repeats", type=int, default=1, help="timed reconstructions")
    parser.add_argument("--sizes", type=int, nargs="+", default=[512, 256], help="render sides in pixels")
    parser.add_argument("--resolution", type=int, default=256, help="UV atlas K")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--profile", action="store_true", help="print where the time goes per size")
    args = parser.parse_args()
    cpu = args.device == "cpu"
    print(f"re-enactment benchmark: {args.device}, torch threads {torch.get_num_threads()}, numba threads "
          f"{numba.get_num_threads()}, {os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.2f}, K={args.resolution}, "
          f"photo {args.photo.name}, clip {args.clip.name if args.clip else '(photo drift)'}")

    start = time.perf_counter()
    pipe = FHAvatarPipeline.default(resolution=args.resolution).to(args.device)
    pipe.set_progress_bar_config(disable=True)
    _ = pipe.layout
    print(f"  pipeline + UV layout build (once)      {time.perf_counter() - start:8.3f} s")
    recon, avatar = repeat(lambda: pipe.reconstruct(args.photo), args.recon_repeats)
    print("photo -> avatar (track + avatar model):")
    print(recon.line("reconstruction latency"))
    bust = 0 if avatar.bust is None else len(avatar.bust)
    print(f"  avatar: {len(avatar) + bust} Gaussians ({len(avatar)} bound to the head, {bust} in the bust)")

    frames = driving_frames(args.clip, args.photo, args.frames)
    n = len(frames)
    tracks, _ = pipe.track_driving(frames)
    params, cameras = transfer_motion(avatar.source_track, tracks)
    background = torch.tensor(pipe.config.background, device=args.device)
    with torch.no_grad():
        posed = [avatar.gaussians(frame_params(params.to(args.device), t)) for t in range(n)]

    results = {}
    for size in args.sizes:
        sized = square_pixels(cameras, size, size).to(args.device)
        variants = {
            "animate": lambda size=size: pipe.animate(avatar, tracks, height=size, width=size),
            "render only": lambda size=size, sized=sized: render_only(posed, sized, size, background),
            "tracking + animation + render": lambda size=size: pipe.animate(avatar, frames, height=size, width=size),
        }
        if cpu:
            variants["today's path"] = lambda size=size: todays_path(pipe, avatar, tracks, size)
        runs = {name: [] for name in variants}
        outputs = {name: fn() for name, fn in variants.items()}  # warm-up: numba compilation, caches
        for _ in range(args.repeats):
            for name, fn in variants.items():
                t0 = time.perf_counter()
                fn()
                runs[name].append(time.perf_counter() - t0)
        results[size] = ({k: Stats(v) for k, v in runs.items()}, outputs)
    track, _ = repeat(lambda: pipe.track_driving(frames), args.repeats)

    print(f"re-enactment of {n} frames of the clip, per frame ({args.repeats} interleaved rounds; load average now "
          f"{os.getloadavg()[0]:.2f}):")
    print(per_frame("tracking (track_video)", track, n))
    met = []
    for size, (stats, outputs) in results.items():
        print(f"{size}²:")
        if "today's path" in stats:
            print(per_frame("today's path: transfer + animation + render", stats["today's path"], n))
        print(per_frame("animate: transfer + animation + render", stats["animate"], n))
        print(per_frame("render only (Gaussians posed beforehand)", stats["render only"], n))
        print(per_frame("tracking + animation + render", stats["tracking + animation + render"], n))
        overhead = [a / r for a, r in zip(stats["animate"].runs, stats["render only"].runs)]
        print(f"  animate / render only                        {spread(overhead)}")
        if "today's path" in stats:
            speedup = [b / a for a, b in zip(stats["animate"].runs, stats["today's path"].runs)]
            print(f"  speed-up over today's path (same rounds)     {spread(speedup)}")
            diff = (outputs["animate"] - outputs["today's path"]).abs().max().item()
            print(f"  images: max |animate - today's path| over the clip = {diff:.3g}")
        fps = n / stats["animate"].median
        if size in TARGETS:
            met.append(f"{size}² animation + render {fps:.1f} FPS (target >= {TARGETS[size]:.0f}: "
                       f"{'met' if fps >= TARGETS[size] else 'missed'})")
        if size == 256:
            ratio = statistics.median(overhead)
            met.append(f"256² animate / render only {ratio:.2f} (target <= {MAX_OVERHEAD}: "
                       f"{'met' if ratio <= MAX_OVERHEAD else 'missed'})")
            tracked = n / stats["tracking + animation + render"].median
            met.append(f"256² tracking + animation + render {tracked:.1f} FPS (target >= {TRACKED_TARGET:.0f}: "
                       f"{'met' if tracked >= TRACKED_TARGET else 'missed'})")
        if args.profile:
            profile_pass(pipe, avatar, tracks, size)
    if met:
        print("issue 20 targets (2-core CPU, medians of this run):")
        for line in met:
            print(f"  {line}")


if __name__ == "__main__":
    main()
