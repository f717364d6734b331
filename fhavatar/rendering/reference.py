"""Readable PyTorch reference of the CPU projection step (kept apart from the compiled kernels).

`project_gaussians` is differentiable through autograd and mirrors gsplat's pinhole `fully_fused_projection`;
the tests check `_cpu_projection` (values and gradients) against it, and the benchmark times it next to
gsplat's own PyTorch reference.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from ._cpu_kernels import ALPHA_THRESHOLD as _ALPHA_THRESHOLD
from ._cpu_projection import EPS2D, FAR_PLANE, MAX_EXTENT_SIGMA, NEAR_PLANE

__all__ = ["ProjectedGaussians", "project_gaussians"]


@dataclass
class ProjectedGaussians:
    """Screen-space Gaussians of one batch of cameras (all `[B, N, ...]`)."""

    means2d: Tensor  # [B, N, 2] pixel coordinates
    conics: Tensor  # [B, N, 3] inverse 2D covariance (a, b, c) of [[a, b], [b, c]]
    depths: Tensor  # [B, N] camera-space z
    radii: Tensor  # [B, N, 2] int32 bounding-box half-extents, 0 = culled


def project_gaussians(
    means: Tensor,  # [N, 3]
    covars: Tensor,  # [N, 3, 3]
    opacities: Tensor,  # [N]
    viewmats: Tensor,  # [B, 4, 4] world-to-camera
    Ks: Tensor,  # [B, 3, 3] intrinsics in pixels
    width: int,
    height: int,
) -> ProjectedGaussians:
    """EWA projection of 3D Gaussians (differentiable), with gsplat's culling and opacity-aware boxes.

    Mirrors gsplat's `fully_fused_projection` for pinhole cameras: the Jacobian is evaluated at the centre
    clamped to 1.3x the field of view (so Gaussians far off-screen do not explode), 0.3 px² of blur is
    added, and boxes extend `min(3.33, sqrt(2 ln(o / (1/255))))` standard deviations along each axis.
    """
    rot = viewmats[:, None, :3, :3]  # [B, 1, 3, 3]
    means_c = (rot @ means[None, :, :, None])[..., 0] + viewmats[:, None, :3, 3]  # [B, N, 3]
    covars_c = rot @ covars[None] @ rot.transpose(-1, -2)  # [B, N, 3, 3]

    fx, fy = Ks[:, 0, 0, None], Ks[:, 1, 1, None]  # [B, 1]
    cx, cy = Ks[:, 0, 2, None], Ks[:, 1, 2, None]
    tx, ty, tz = means_c.unbind(-1)
    # Culled Gaussians (z <= near) still need finite maths so that gradients stay finite.
    tz_safe = torch.where(tz > NEAR_PLANE, tz, torch.full_like(tz, 1.0))
    tan_fovx, tan_fovy = 0.5 * width / fx, 0.5 * height / fy
    lim_x_pos, lim_x_neg = (width - cx) / fx + 0.3 * tan_fovx, cx / fx + 0.3 * tan_fovx
    lim_y_pos, lim_y_neg = (height - cy) / fy + 0.3 * tan_fovy, cy / fy + 0.3 * tan_fovy
    tx_c = tz_safe * torch.maximum(torch.minimum(tx / tz_safe, lim_x_pos), -lim_x_neg)
    ty_c = tz_safe * torch.maximum(torch.minimum(ty / tz_safe, lim_y_pos), -lim_y_neg)
    zeros = torch.zeros_like(tz)
    jac = torch.stack(
        [fx / tz_safe, zeros, -fx * tx_c / tz_safe**2, zeros, fy / tz_safe, -fy * ty_c / tz_safe**2], dim=-1
    ).reshape(*tz.shape, 2, 3)
    cov2d = jac @ covars_c @ jac.transpose(-1, -2)  # [B, N, 2, 2]
    a = cov2d[..., 0, 0] + EPS2D
    b = 0.5 * (cov2d[..., 0, 1] + cov2d[..., 1, 0])
    c = cov2d[..., 1, 1] + EPS2D
    det = (a * c - b * b).clamp(min=1e-10)
    conics = torch.stack([c / det, -b / det, a / det], dim=-1)
    means2d = torch.stack([fx * tx / tz_safe + cx, fy * ty / tz_safe + cy], dim=-1)

    with torch.no_grad():
        valid = (tz > NEAR_PLANE) & (tz < FAR_PLANE) & (opacities[None] >= _ALPHA_THRESHOLD)
        extent = torch.sqrt(2.0 * torch.log(opacities.clamp(min=_ALPHA_THRESHOLD) / _ALPHA_THRESHOLD))
        extent = extent.clamp(max=MAX_EXTENT_SIGMA)[None]
        rx = torch.ceil(extent * a.sqrt())
        ry = torch.ceil(extent * c.sqrt())
        mx, my = means2d[..., 0], means2d[..., 1]
        inside = (mx + rx > 0) & (mx - rx < width) & (my + ry > 0) & (my - ry < height)
        keep = valid & inside & torch.isfinite(rx) & torch.isfinite(ry)
        radii = torch.stack([rx, ry], dim=-1).where(keep[..., None], torch.zeros_like(means2d)).to(torch.int32)
    return ProjectedGaussians(means2d=means2d, conics=conics, depths=tz, radii=radii)
