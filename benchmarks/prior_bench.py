"""PanoHead prior benchmark: the `official` architecture (random weights) on one image.

Prints the generator's parameter count next to the count derived independently from PanoHead's released
configuration (train.py defaults + its README command: cbase 32768, cmax 512, map depth 2, tri-grid 3 x 32 x 256²,
background network at half channel base, SuperresolutionHybrid8XDC, ToRGB raw head), then times
`mapping`, `synthesize` (latents -> tri-grid) and `render` (volume rendering + super-resolution) with median and
spread, and the peak memory (resident set on CPU, allocator peak on CUDA).

    PYTHONPATH=. .venv/bin/python benchmarks/prior_bench.py [--resolution 512] [--repeats 3] [--device cpu]
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
from _timing import peak_rss_mb

from fhavatar.prior import PanoHeadPrior
from fhavatar.rendering import Camera


# ------------------------------------------------------------------------------------ independent parameter count
def _fc(n_in: int, n_out: int) -> int:  # FullyConnectedLayer: weight + bias
    return n_in * n_out + n_out


def _layer(n_in: int, n_out: int, w_dim: int, k: int = 3) -> int:  # SynthesisLayer: affine, weight, bias, noise strength
    return _fc(w_dim, n_in) + n_out * n_in * k * k + n_out + 1


def _torgb(n_in: int, n_out: int, w_dim: int) -> int:  # ToRGBLayer: affine, 1x1 weight, bias
    return _fc(w_dim, n_in) + n_out * n_in + n_out


def _synthesis(resolution: int, img_channels: int, channel_base: int, channel_max: int, w_dim: int) -> int:
    """StyleGAN2 'skip' synthesis: const + conv1 + torgb at 4², then conv0 (up) + conv1 + torgb per doubling."""
    channels = lambda r: min(channel_base // r, channel_max)  # noqa: E731
    total = channels(4) * 16 + _layer(channels(4), channels(4), w_dim) + _torgb(channels(4), img_channels, w_dim)
    r = 8
    while r <= resolution:
        c_in, c_out = channels(r // 2), channels(r)
        total += _layer(c_in, c_out, w_dim) + _layer(c_out, c_out, w_dim) + _torgb(c_out, img_channels, w_dim)
        r *= 2
    return total


def _mapping(z_dim: int, c_dim: int, w_dim: int, layers: int) -> int:  # label embedding + `layers` FC layers
    return _fc(c_dim, w_dim) + _fc(z_dim + w_dim, w_dim) + (layers - 1) * _fc(w_dim, w_dim)


def official_parameter_count() -> dict[str, int]:
    """PanoHead's generator parameters, from its released configuration (not from our modules)."""
    z, c, w, base, cmax, depth, feat = 512, 25, 512, 32768, 512, 3, 32
    parts = {
        "backbone.mapping": _mapping(z, c, w, 2),
        "backbone.synthesis": _synthesis(256, 3 * feat * depth, base, cmax, w),
        "bcg_synthesis": _synthesis(128, feat, base // 2, cmax, w),
        # SuperresolutionHybrid8XDC: 32 -> 256 channels at 256², 256 -> 128 at 512², each conv0 + conv1 + torgb.
        "superresolution": sum(_layer(i, o, w) + _layer(o, o, w) + _torgb(o, 3, w) for i, o in ((feat, 256), (256, 128))),
        "decoder": _fc(feat, 64) + _fc(64, 1 + feat),  # OSGDecoder: 32 -> 64 -> 1 + 32
        "torgb": _torgb(feat, 3, w),  # use_torgb_raw
        # t_mapping: MappingNetwork(w_dim=3, 2 layers): embed 25 -> 3, fc0 (512 + 3) -> 3, fc1 3 -> 3.
        "t_mapping": _fc(c, 3) + _fc(z + 3, 3) + _fc(3, 3),
    }
    parts["total"] = sum(parts.values())
    return parts


# ------------------------------------------------------------------------------------ timing
def _timed(fn, repeats: int, sync) -> tuple[list[float], object]:
    out = fn()  # warm-up
    sync()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        out = fn()
        sync()
        times.append(time.perf_counter() - start)
    return times, out


def _row(name: str, times: list[float]) -> str:
    med = statistics.median(times)
    spread = f"[{min(times) * 1000:.1f}, {max(times) * 1000:.1f}]"
    return f"  {name:<30s} median {med * 1000:9.1f} ms   spread {spread} ms  (n={len(times)})"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--resolution", type=int, default=512, help="output image size (the SR network makes 512²)")
    parser.add_argument("--neural-resolution", type=int, default=None, help="volume-rendering size (default: 64, official)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--device", default="cpu", help="cpu or cuda")
    parser.add_argument("--threads", type=int, default=None, help="torch intra-op threads (default: torch's)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    cuda = device.type == "cuda"
    sync = torch.cuda.synchronize if cuda else (lambda: None)

    rss_start = peak_rss_mb()
    torch.manual_seed(0)
    prior = PanoHeadPrior.from_preset("official").to(device)
    gen = prior.generator
    expected = official_parameter_count()
    print("PanoHead prior, `official` preset (random weights)")
    print(f"  device: {device}  threads: {torch.get_num_threads()}  torch {torch.__version__}")
    ours = {name: sum(p.numel() for p in gen.get_submodule(name).parameters()) for name in expected if name != "total"}
    ours["total"] = sum(p.numel() for p in gen.parameters())
    for name, count in expected.items():
        mark = "ok" if ours[name] == count else "MISMATCH"
        print(f"  params {name:<20s} ours {ours[name]:>12,d}   official config {count:>12,d}   {mark}")
    if prior.inversion is not None:
        print(f"  params inversion (dual encoder)   {sum(p.numel() for p in prior.inversion.parameters()):>12,d}")
    print(f"  peak RSS after construction: {peak_rss_mb():.0f} MB (process start {rss_start:.0f} MB)")

    camera = Camera.orbit(1, elevation_deg=10).to(device)
    label = camera.to_label()
    z = torch.randn(1, gen.z_dim, generator=torch.Generator().manual_seed(0)).to(device)
    if cuda:
        torch.cuda.reset_peak_memory_stats()
    with torch.no_grad():
        t_map, ws = _timed(lambda: gen.mapping(z, label), args.repeats, sync)
        t_syn, tri = _timed(lambda: gen.synthesize(ws), args.repeats, sync)
        t_ren, out = _timed(
            lambda: gen.render(tri, ws, label, resolution=args.resolution, neural_rendering_resolution=args.neural_resolution),
            args.repeats, sync,
        )
    image, depth, alpha = out
    n = args.neural_resolution or gen.neural_rendering_resolution
    print(f"one image: tri-grid {list(tri.planes.shape)}, rays {n}x{n} x ({gen.rendering.depth_resolution} + "
          f"{gen.rendering.depth_resolution_importance}) samples, image {list(image.shape)}")
    print(_row("mapping", t_map))
    print(_row("synthesize (tri-grid)", t_syn))
    print(_row(f"render (volume + SR -> {args.resolution}²)", t_ren))
    total = [a + b for a, b in zip(t_syn, t_ren)]
    print(_row("synthesize + render", total))
    if cuda:
        print(f"  peak CUDA memory: {torch.cuda.max_memory_allocated() / 2**20:.0f} MB")
    print(f"  peak RSS: {peak_rss_mb():.0f} MB")


if __name__ == "__main__":
    main()
