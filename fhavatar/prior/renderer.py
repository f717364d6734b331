"""Volume rendering of a tri-grid: ray sampling, stratified + importance sampling, MipNeRF-style ray marching.

Follows EG3D/PanoHead's `volumetric_rendering` (ray_sampler.py, renderer.py, ray_marcher.py):

- Rays: one per pixel centre `((j + 0.5) / n, (i + 0.5) / n)` of an `n x n` image (row-major), lifted with the
  normalised intrinsics (skew included) and rotated by `cam2world` (OpenCV axes); directions are unit length.
- Coarse pass: `depth_resolution` depths evenly spaced in `[ray_start, ray_end]`, each jittered by up to one
  spacing (official training/inference) — here only when a `generator` is given; without one the samples sit
  on the evenly spaced depths, so renders are deterministic.
- `triplane_crop`: samples with `|x|` or `|z|` beyond `box_warp / 2 - triplane_crop` get density -1000.
- Importance pass: the coarse weights are max-pooled and averaged (window 2), +0.01, and
  `depth_resolution_importance` depths are drawn from that piecewise-constant pdf over the mid-points (inverse
  CDF; random with a `generator`, evenly spaced quantiles without); the two sample sets are merged by depth.
- Ray marcher: mid-point colours/densities between consecutive samples, density activation
  `softplus(sigma - 1)`, `alpha = 1 - exp(-density * delta)`, transmittance `cumprod(1 - alpha + 1e-10)`;
  depth = weighted mean depth clamped to the sampled range; alpha = the sum of the weights.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

from .triplane import Triplane, sample_triplane

__all__ = ["RenderingOptions", "march_rays", "render_triplane", "sample_pdf", "sample_rays"]

#: Raw density written where the tri-grid is cropped (PanoHead's `triplane_crop_mask` value).
CROPPED_DENSITY = -1e3


@dataclass(frozen=True)
class RenderingOptions:
    """Ray-marching settings (PanoHead's `rendering_kwargs`, FFHQ/head configuration by default).

    Args:
        ray_start (`float`): near depth of every ray (PanoHead: 2.25).
        ray_end (`float`): far depth (PanoHead: 3.3).
        box_warp (`float`): side of the cube spanned by the tri-grid, centred at the origin (PanoHead: 1).
        depth_resolution (`int`): coarse samples per ray (PanoHead: 48).
        depth_resolution_importance (`int`): importance samples per ray, 0 = none (PanoHead: 48).
        triplane_crop (`float`): margin inside the box beyond which |x| or |z| samples are emptied (0.1; 0 = off).
    """

    ray_start: float = 2.25
    ray_end: float = 3.3
    box_warp: float = 1.0
    depth_resolution: int = 48
    depth_resolution_importance: int = 48
    triplane_crop: float = 0.1

    def __post_init__(self) -> None:
        if not 0 <= self.ray_start < self.ray_end:
            raise ValueError(f"`ray_start` and `ray_end` must satisfy 0 <= start < end, got {self.ray_start}, {self.ray_end}.")
        if self.box_warp <= 0:
            raise ValueError(f"`box_warp` must be positive, got {self.box_warp}.")
        if self.depth_resolution < 2 or self.depth_resolution_importance < 0:
            raise ValueError(
                "`depth_resolution` must be >= 2 and `depth_resolution_importance` >= 0, got "
                f"{self.depth_resolution} and {self.depth_resolution_importance}."
            )
        if not 0 <= self.triplane_crop < self.box_warp / 2:
            raise ValueError(f"`triplane_crop` must lie in [0, box_warp / 2), got {self.triplane_crop}.")


def sample_rays(
    cam2world: Tensor,  # [B, 4, 4] OpenCV camera-to-world
    intrinsics: Tensor,  # [B, 3, 3] normalised
    resolution: int,
) -> tuple[Tensor, Tensor]:  # origins [B, n², 3], unit directions [B, n², 3]
    """One ray per pixel centre of an `resolution x resolution` image, row-major."""
    dtype, device = cam2world.dtype, cam2world.device
    centres = (torch.arange(resolution, dtype=dtype, device=device) + 0.5) / resolution
    y, x = torch.meshgrid(centres, centres, indexing="ij")
    x, y = x.reshape(1, -1), y.reshape(1, -1)
    fx, fy = intrinsics[:, 0, 0, None], intrinsics[:, 1, 1, None]
    cx, cy, sk = intrinsics[:, 0, 2, None], intrinsics[:, 1, 2, None], intrinsics[:, 0, 1, None]
    y_lift = (y - cy) / fy
    x_lift = (x - cx - sk * y_lift) / fx  # undo the skew term of the pinhole model
    cam_dirs = torch.stack([x_lift, y_lift, torch.ones_like(x_lift)], dim=-1)  # [B, n², 3]
    dirs = F.normalize(cam_dirs @ cam2world[:, :3, :3].transpose(1, 2), dim=-1)
    origins = cam2world[:, None, :3, 3].expand_as(dirs)
    return origins, dirs


def march_rays(
    colors: Tensor,  # [B, M, S, C]
    densities: Tensor,  # [B, M, S, 1] raw
    depths: Tensor,  # [B, M, S, 1] sorted along S
) -> tuple[Tensor, Tensor, Tensor]:  # rgb [B, M, C], depth [B, M, 1], weights [B, M, S-1, 1]
    """Composite samples front to back (EG3D's `MipRayMarcher2`): mid-point quadrature with softplus densities."""
    deltas = depths[:, :, 1:] - depths[:, :, :-1]
    colors_mid = (colors[:, :, :-1] + colors[:, :, 1:]) / 2
    densities_mid = F.softplus((densities[:, :, :-1] + densities[:, :, 1:]) / 2 - 1)  # bias -1: EG3D's init choice
    depths_mid = (depths[:, :, :-1] + depths[:, :, 1:]) / 2
    alpha = 1 - torch.exp(-densities_mid * deltas)
    shifted = torch.cat([torch.ones_like(alpha[:, :, :1]), 1 - alpha + 1e-10], dim=-2)
    weights = alpha * torch.cumprod(shifted, dim=-2)[:, :, :-1]
    rgb = (weights * colors_mid).sum(dim=-2)
    total = weights.sum(dim=2)
    depth = torch.nan_to_num((weights * depths_mid).sum(dim=-2) / total, float("inf"))
    depth = torch.clamp(depth, depths.min(), depths.max())
    return rgb, depth, weights


def sample_pdf(
    bins: Tensor,  # [R, N + 1] (extra trailing entries are ignored, as officially)
    weights: Tensor,  # [R, N]
    num_samples: int,
    generator: torch.Generator | None = None,
    eps: float = 1e-5,
) -> Tensor:  # [R, num_samples]
    """Inverse-transform samples of the piecewise-linear CDF of `weights` over `bins` (NeRF's `sample_pdf`).

    With a `generator` the quantiles are uniform random; without one they are `linspace(0, 1, num_samples)`.
    """
    rays, n = weights.shape
    weights = weights + eps
    cdf = torch.cumsum(weights / weights.sum(-1, keepdim=True), dim=-1)
    cdf = torch.cat([torch.zeros_like(cdf[:, :1]), cdf], dim=-1)  # [R, N + 1]
    if generator is None:
        u = torch.linspace(0, 1, num_samples, dtype=bins.dtype, device=bins.device).expand(rays, num_samples)
    else:
        u = torch.rand(rays, num_samples, generator=generator, device=generator.device, dtype=bins.dtype).to(bins.device)
    u = u.contiguous()
    inds = torch.searchsorted(cdf, u, right=True)
    below, above = (inds - 1).clamp(min=0), inds.clamp(max=n)
    idx = torch.stack([below, above], dim=-1).view(rays, 2 * num_samples)
    cdf_g = cdf.gather(1, idx).view(rays, num_samples, 2)
    bins_g = bins.gather(1, idx).view(rays, num_samples, 2)
    denom = cdf_g[..., 1] - cdf_g[..., 0]
    denom = torch.where(denom < eps, torch.ones_like(denom), denom)  # empty bin: never sampled, any value works
    return bins_g[..., 0] + (u - cdf_g[..., 0]) / denom * (bins_g[..., 1] - bins_g[..., 0])


def _importance_depths(depths: Tensor, weights: Tensor, num: int, generator: torch.Generator | None) -> Tensor:
    """PanoHead's `sample_importance`: smooth the coarse weights, then draw `num` depths per ray."""
    with torch.no_grad():
        b, m, s, _ = depths.shape
        z = depths.reshape(b * m, s)
        w = weights.reshape(b * m, -1).unsqueeze(1).float()  # [R, 1, S-1]
        w = F.avg_pool1d(F.max_pool1d(w, 2, 1, padding=1), 2, 1).squeeze(1) + 0.01  # [R, S-1]
        mids = 0.5 * (z[:, :-1] + z[:, 1:])
        return sample_pdf(mids, w[:, 1:-1], num, generator=generator).reshape(b, m, num, 1)


def _evaluate(
    triplane: Triplane,
    decoder: Callable[[Tensor], tuple[Tensor, Tensor]],
    points: Tensor,  # [B, M, S, 3]
    options: RenderingOptions,
) -> tuple[Tensor, Tensor]:  # colours [B, M, S, C], raw densities [B, M, S, 1]
    b, m, s, _ = points.shape
    rgb, sigma = decoder(sample_triplane(triplane, points.reshape(b, m * s, 3), box_warp=options.box_warp))
    if options.triplane_crop > 0:
        limit = options.box_warp / 2 - options.triplane_crop
        outside = (points[..., [0, 2]].abs() > limit).any(dim=-1, keepdim=True).reshape(b, m * s, 1)
        sigma = torch.where(outside, torch.full_like(sigma, CROPPED_DENSITY), sigma)
    return rgb.reshape(b, m, s, -1), sigma.reshape(b, m, s, 1)


def render_triplane(
    triplane: Triplane,
    decoder: Callable[[Tensor], tuple[Tensor, Tensor]],  # features [B, P, C] -> (rgb [B, P, C'], sigma [B, P, 1])
    origins: Tensor,  # [B, M, 3]
    directions: Tensor,  # [B, M, 3] unit
    options: RenderingOptions,
    generator: torch.Generator | None = None,
) -> tuple[Tensor, Tensor, Tensor]:  # features [B, M, C'], depth [B, M, 1], alpha [B, M, 1]
    """Render rays through a tri-grid with a coarse and an importance pass (see the module docstring)."""
    b, m, _ = origins.shape
    n = options.depth_resolution
    t = torch.linspace(options.ray_start, options.ray_end, n, dtype=origins.dtype, device=origins.device)
    depths = t.reshape(1, 1, n, 1).repeat(b, m, 1, 1)
    if generator is not None:
        jitter = torch.rand(depths.shape, generator=generator, device=generator.device, dtype=depths.dtype)
        depths = depths + jitter.to(depths.device) * (options.ray_end - options.ray_start) / (n - 1)

    def points_at(d: Tensor) -> Tensor:
        return origins.unsqueeze(-2) + d * directions.unsqueeze(-2)

    colors, densities = _evaluate(triplane, decoder, points_at(depths), options)
    if options.depth_resolution_importance > 0:
        _, _, weights = march_rays(colors, densities, depths)
        fine = _importance_depths(depths, weights, options.depth_resolution_importance, generator)
        colors_f, densities_f = _evaluate(triplane, decoder, points_at(fine), options)
        depths = torch.cat([depths, fine], dim=-2)
        order = torch.argsort(depths, dim=-2)
        depths = depths.gather(-2, order)
        colors = torch.cat([colors, colors_f], dim=-2).gather(-2, order.expand(-1, -1, -1, colors.shape[-1]))
        densities = torch.cat([densities, densities_f], dim=-2).gather(-2, order)
    rgb, depth, weights = march_rays(colors, densities, depths)
    return rgb, depth, weights.sum(dim=2)
