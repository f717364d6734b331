"""Renderer benchmark: a head-sized scene of 78K Gaussians at 512x512.

Prints median milliseconds / FPS for forward and forward+backward renders on the CPU (and on CUDA when
present), the peak resident memory, and gsplat's pure-PyTorch reference projection path
(`gsplat.cuda._torch_impl`, the only part of gsplat that runs on a CPU) as the baseline ratio.

Wall-clock times swing with whatever else runs on the machine, so the load average is printed with them,
and the CPU path is also timed on one thread with `time.process_time` (CPU time of this process, the
fastest of the repeats): that figure hardly moves with other processes and is the one to compare changes by.

    make bench        # or: PYTHONPATH=. .venv/bin/python benchmarks/render_bench.py [--gaussians 78000] [--size 512]
                      #     [--threads 2] [--repeats 7]
"""

from __future__ import annotations

import argparse
import os
import statistics
import time

import numba
import torch
from _timing import current_rss_mb, peak_rss_mb

from fhavatar.rendering import Camera, Gaussians, render_gaussians
from fhavatar.rendering.synthetic import synthetic_head


class Timing(float):
    """Median milliseconds (the float value), with the fastest run kept as `.best` (robust on a busy machine)."""

    best: float


def _median_ms(fn, repeats: int, sync=lambda: None) -> Timing:
    fn()
    sync()  # warm-up (numba compilation, allocator)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        sync()
        times.append((time.perf_counter() - start) * 1000)
    timing = Timing(statistics.median(times))
    timing.best = min(times)
    return timing


def _min_cpu_ms(fn, repeats: int) -> float:
    """Fastest single run in CPU time of this process (all its threads), after a warm-up run."""
    fn()
    times = []
    for _ in range(repeats):
        start = time.process_time()
        fn()
        times.append((time.process_time() - start) * 1000)
    return min(times)


def _set_threads(n: int) -> None:
    numba.set_num_threads(n)
    torch.set_num_threads(n)


def _row(name: str, ms: float, baseline: float | None = None) -> str:
    ratio = f"  ({baseline / ms:5.1f}x faster than baseline)" if baseline else ""
    best = f"  (best {ms.best:.1f} ms)" if isinstance(ms, Timing) else ""
    return f"  {name:<36s} median {ms:8.1f} ms  {1000 / ms:7.1f} FPS{best}{ratio}"


def _render_fns(head: Gaussians, camera: Camera, size: int, device: str):
    """`forward()` (no grad) and `forward_backward()` closures rendering `head` from `camera`."""
    bg = torch.ones(3, device=device)

    def forward():
        with torch.no_grad():
            render_gaussians(head, camera, size, size, background=bg)

    leaves = {k: getattr(head, k).clone().requires_grad_() for k in ("means", "quats", "scales", "opacities", "colors")}

    def forward_backward():
        out = render_gaussians(Gaussians(**leaves), camera, size, size, background=bg)
        (out.image.mean() + out.alpha.mean()).backward()
        for v in leaves.values():
            v.grad = None

    def forward_autograd():  # the forward as every render ran before issue 20: fresh arrays, serial binning
        render_gaussians(Gaussians(**leaves), camera, size, size, background=bg)

    return forward, forward_backward, forward_autograd


def bench_device(head: Gaussians, camera: Camera, size: int, repeats: int, device: str) -> dict[str, float]:
    sync = torch.cuda.synchronize if device == "cuda" else (lambda: None)
    forward, forward_backward, forward_autograd = _render_fns(head.to(device), camera.to(device), size, device)
    timings = {"forward": _median_ms(forward, repeats, sync), "forward+backward": _median_ms(forward_backward, repeats, sync)}
    if device == "cpu":
        timings["forward, autograd path (pre-issue-20 forward)"] = _median_ms(forward_autograd, repeats, sync)
    return timings


def bench_cpu_time(head: Gaussians, camera: Camera, size: int, repeats: int) -> dict[str, float]:
    """Single-thread CPU time of the CPU path (robust to other processes; the figure to compare changes by)."""
    threads = numba.get_num_threads(), torch.get_num_threads()
    _set_threads(1)
    try:
        forward, forward_backward, _ = _render_fns(head, camera, size, "cpu")
        return {"forward": _min_cpu_ms(forward, repeats), "forward+backward": _min_cpu_ms(forward_backward, repeats)}
    finally:
        numba.set_num_threads(threads[0])
        torch.set_num_threads(threads[1])


def bench_projection(head: Gaussians, camera: Camera, size: int, repeats: int) -> dict[str, float]:
    """Projection alone: our compiled CPU kernels and gsplat's pure-torch reference implementation."""
    import numpy as np
    from gsplat.cuda._torch_impl import _fully_fused_projection, _quat_scale_to_covar_preci

    from fhavatar.rendering import _cpu_projection as kernels

    k = camera.pixel_intrinsics(size, size)
    viewmats = camera.world2cam

    def gsplat_ref(requires_grad: bool):
        means = head.means.clone().requires_grad_(requires_grad)
        covars, _ = _quat_scale_to_covar_preci(head.quats, head.scales, compute_preci=False, triu=False)
        radii, means2d, depths, conics, _ = _fully_fused_projection(means, covars, viewmats, k, size, size)
        if requires_grad:
            (means2d.sum() + conics.sum() + depths.sum()).backward()

    n = len(head)
    arrays = [np.ascontiguousarray(t.numpy()) for t in (head.means, head.quats, head.scales, head.opacities)]
    view, kk = viewmats[0].double().numpy(), k[0].double().numpy()
    intr = (kk[0, 0], kk[1, 1], kk[0, 2], kk[1, 2])
    out = (np.empty((n, 2), np.float32), np.empty((n, 3), np.float32), np.empty(n, np.float32), np.empty((n, 2), np.int32))
    ones = (np.ones((n, 2), np.float32), np.ones((n, 3), np.float32), np.ones(n, np.float32))

    def ours(requires_grad: bool):
        kernels.project_forward(*arrays, view, *intr, size, size, *out)
        if requires_grad:
            grads = (np.zeros((n, 3), np.float32), np.zeros((n, 4), np.float32), np.zeros((n, 3), np.float32))
            kernels.project_backward(*arrays[:3], out[3], view, *intr, size, size, *ones, *grads)

    return {
        "gsplat torch projection": _median_ms(lambda: gsplat_ref(False), repeats),
        "gsplat torch projection fwd+bwd": _median_ms(lambda: gsplat_ref(True), repeats),
        "ours projection": _median_ms(lambda: ours(False), repeats),
        "ours projection fwd+bwd": _median_ms(lambda: ours(True), repeats),
    }


def _numba_started() -> bool:
    try:
        numba.threading_layer()
    except ValueError:  # raised until a parallel kernel has run
        return False
    return True


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--gaussians", type=int, default=78_000)
    parser.add_argument("--size", type=int, default=512)
    parser.add_argument("--repeats", "--repeat", type=int, default=7, help="timed runs per figure")
    parser.add_argument("--threads", type=int, default=None, help="CPU threads (numba and torch); default: all cores")
    args = parser.parse_args()
    if args.threads is not None:
        if not 1 <= args.threads <= numba.config.NUMBA_NUM_THREADS:
            parser.error(f"--threads must be between 1 and {numba.config.NUMBA_NUM_THREADS} here, got {args.threads}")
        _set_threads(args.threads)

    head = synthetic_head(args.gaussians, generator=torch.Generator().manual_seed(0))
    camera = Camera.orbit(8, elevation_deg=10.0)[1:2]  # a three-quarter view: face, hair and neck visible
    rss_before, peak_before = current_rss_mb(), peak_rss_mb()
    print(
        f"scene: {len(head)} Gaussians, {args.size}x{args.size}, threads: numba={numba.get_num_threads()} "
        f"({numba.threading_layer() if _numba_started() else 'layer chosen at first use'}) torch={torch.get_num_threads()}, "
        f"{os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.2f}"
    )

    cpu = bench_device(head, camera, args.size, args.repeats, "cpu")
    proj = bench_projection(head, camera, args.size, args.repeats)
    n_threads = numba.get_num_threads()
    print(f"CPU (fhavatar rasterizer, wall clock, {n_threads} thread{'s' * (n_threads != 1)}, {numba.threading_layer()} layer):")
    for name, ms in cpu.items():
        print(_row(name, ms))
    print(f"  no-gradient forward (scratch arrays, parallel binning) vs the autograd path's forward: "
          f"{cpu['forward, autograd path (pre-issue-20 forward)'] / cpu['forward']:.2f}x faster")
    cpu_time = bench_cpu_time(head, camera, args.size, args.repeats)
    print("CPU time on one thread (process_time, fastest run; hardly affected by other processes):")
    for name, ms in cpu_time.items():
        print(f"  {name:<36s} {ms:8.1f} ms")
    print("CPU projection step (baseline: gsplat's pure-torch reference path):")
    print(_row("gsplat torch projection", proj["gsplat torch projection"]))
    print(_row("ours projection", proj["ours projection"], proj["gsplat torch projection"]))
    print(_row("gsplat torch projection fwd+bwd", proj["gsplat torch projection fwd+bwd"]))
    print(_row("ours projection fwd+bwd", proj["ours projection fwd+bwd"], proj["gsplat torch projection fwd+bwd"]))
    print(
        f"  full CPU render forward / gsplat torch projection alone: "
        f"{cpu['forward'] / proj['gsplat torch projection']:.2f}x"
    )
    # The rise is exact when rendering set the process's peak; otherwise it is an upper bound.
    bound = "" if peak_rss_mb() > peak_before else " at most"
    print(
        f"peak resident memory: {peak_rss_mb():.0f} MB (process), +{peak_rss_mb() - rss_before:.0f} MB{bound} "
        f"above the {rss_before:.0f} MB resident before rendering"
    )
    print(f"load average after the CPU runs: {os.getloadavg()[0]:.2f}")

    if torch.cuda.is_available():
        torch.cuda.reset_peak_memory_stats()
        gpu = bench_device(head, camera, args.size, args.repeats, "cuda")
        print(f"CUDA (gsplat) on {torch.cuda.get_device_name()}:")
        for name, ms in gpu.items():
            print(_row(name, ms))
        print(f"  peak CUDA memory: {torch.cuda.max_memory_allocated() / 2**20:.0f} MB")
    else:
        print("CUDA: not available on this machine (skipped)")


if __name__ == "__main__":
    main()
