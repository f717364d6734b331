"""`render_gaussians`: the one rasterizer entry point (gsplat on CUDA, the project's own kernels on CPU)."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Optional

import numpy as np
import torch
from torch import Tensor

from .cameras import Camera
from .gaussians import Gaussians, quat_to_rotmat

__all__ = ["RenderOutput", "render_gaussians", "project_gaussians", "EPS2D", "NEAR_PLANE", "FAR_PLANE"]

#: Screen-space dilation added to every projected covariance, in pixels² (gsplat's `eps2d`).
EPS2D = 0.3
#: Gaussians whose centre is closer to the camera than this (camera-space z) are culled.
NEAR_PLANE = 0.01
FAR_PLANE = 1e10
#: Bounding boxes span at most this many standard deviations (gsplat's opacity-aware 3.33σ boxes).
MAX_EXTENT_SIGMA = 3.33
_ALPHA_THRESHOLD = 1.0 / 255.0


@dataclass
class RenderOutput:
    """What `render_gaussians` returns.

    Attributes:
        image (`Tensor` of shape `[B, 3, H, W]` or `[B, C, H, W]`): composited colour over `background`.
        alpha (`Tensor` of shape `[B, 1, H, W]`): accumulated opacity `1 - T`.
        depth (`Tensor` of shape `[B, 1, H, W]`): expected camera-space depth (`Σ w_i z_i / alpha`, 0 where
            nothing was drawn).
        features (`Tensor` of shape `[B, F, H, W]` or `None`): composited per-Gaussian features (no background).
    """

    image: Tensor
    alpha: Tensor
    depth: Tensor
    features: Optional[Tensor] = None


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


class _RasterizeToPixelsCPU(torch.autograd.Function):
    """Tile compositing of projected Gaussians on the CPU (numba kernels), with an exact backward."""

    @staticmethod
    def forward(ctx, means2d, conics, opacities, colors, radii, depths, width, height):
        # means2d [B,N,2], conics [B,N,3], opacities [N], colors [B,N,C], radii [B,N,2], depths [B,N]
        from . import _cpu_kernels as kern

        tiles_x = math.ceil(width / kern.TILE_SIZE)
        tiles_y = math.ceil(height / kern.TILE_SIZE)
        batch, _, n_channels = colors.shape
        out_colors = np.zeros((batch, height, width, n_channels), dtype=np.float32)
        out_trans = np.ones((batch, height, width), dtype=np.float32)
        out_last = np.empty((batch, height, width), dtype=np.int64)
        saved = []
        opac_np = opacities.detach().float().numpy()
        for i in range(batch):
            m2d = means2d[i].detach().float().contiguous().numpy()
            rad = radii[i].numpy()
            visible = np.nonzero((rad[:, 0] > 0) & (rad[:, 1] > 0))[0]
            # Stable sort by depth, ties by index: the front-to-back order of every tile.
            order = visible[np.argsort(depths[i].detach().numpy()[visible], kind="stable")].astype(np.int64)
            offsets, ids = kern.bin_gaussians_to_tiles(m2d, rad, order, tiles_x, tiles_y)
            isect = (
                np.ascontiguousarray(m2d[ids]),
                np.ascontiguousarray(conics[i].detach().float().numpy()[ids]),
                np.ascontiguousarray(opac_np[ids]),
                np.ascontiguousarray(colors[i].detach().float().numpy()[ids]),
            )
            kern.rasterize_forward(
                *isect, offsets, width, height, tiles_x, out_colors[i], out_trans[i], out_last[i]
            )
            saved.append((ids, offsets, isect))
        ctx.saved = saved
        ctx.shapes = (width, height, tiles_x, means2d.shape, colors.shape)
        ctx.trans, ctx.last = out_trans, out_last
        render = torch.from_numpy(out_colors).to(colors.dtype)
        alpha = torch.from_numpy(1.0 - out_trans).to(colors.dtype)[..., None]
        return render, alpha

    @staticmethod
    def backward(ctx, grad_render, grad_alpha):
        from . import _cpu_kernels as kern

        width, height, tiles_x, m_shape, c_shape = ctx.shapes
        batch, n, n_channels = c_shape
        v_means2d = torch.zeros(m_shape, dtype=torch.float32)
        v_conics = torch.zeros(batch, n, 3, dtype=torch.float32)
        v_opacities = torch.zeros(n, dtype=torch.float32)
        v_colors = torch.zeros(c_shape, dtype=torch.float32)
        g_render = grad_render.detach().float().contiguous().numpy() if grad_render is not None else None
        g_alpha = grad_alpha.detach().float().contiguous().numpy() if grad_alpha is not None else None
        for i, (ids, offsets, isect) in enumerate(ctx.saved):
            k = ids.shape[0]
            outs = (
                np.zeros((k, 2), np.float32), np.zeros((k, 3), np.float32),
                np.zeros(k, np.float32), np.zeros((k, n_channels), np.float32),
            )
            gr = g_render[i] if g_render is not None else np.zeros((height, width, n_channels), np.float32)
            ga = g_alpha[i, ..., 0] if g_alpha is not None else np.zeros((height, width), np.float32)
            kern.rasterize_backward(
                *isect, offsets, width, height, tiles_x, ctx.trans[i], ctx.last[i],
                np.ascontiguousarray(gr), np.ascontiguousarray(ga), *outs,
            )
            idx = torch.from_numpy(ids)
            v_means2d[i].index_add_(0, idx, torch.from_numpy(outs[0]))
            v_conics[i].index_add_(0, idx, torch.from_numpy(outs[1]))
            v_opacities.index_add_(0, idx, torch.from_numpy(outs[2]))
            v_colors[i].index_add_(0, idx, torch.from_numpy(outs[3]))
        return v_means2d, v_conics, v_opacities, v_colors, None, None, None, None


def _check_render_inputs(gaussians, camera, width, height, background, features) -> Optional[Tensor]:
    if not isinstance(gaussians, Gaussians):
        raise TypeError(f"`gaussians` must be a fhavatar.rendering.Gaussians, got {type(gaussians).__name__}.")
    if not isinstance(camera, Camera):
        raise TypeError(f"`camera` must be a fhavatar.rendering.Camera, got {type(camera).__name__}.")
    for name, value in (("width", width), ("height", height)):
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
            raise ValueError(f"`{name}` must be a positive int (pixels), got {value!r}.")
    gaussians.validate()
    if camera.device != gaussians.device:
        raise ValueError(f"`camera` is on {camera.device} but `gaussians` on {gaussians.device}; move them together.")
    n = len(gaussians)
    if features is not None:
        if not isinstance(features, Tensor) or features.dim() != 2 or features.shape[0] != n:
            shape = list(features.shape) if isinstance(features, Tensor) else type(features).__name__
            raise ValueError(f"`features` must be a tensor of shape [N, F] with N={n}, got {shape}.")
        if not torch.isfinite(features).all():
            raise ValueError("`features` holds NaN/inf values.")
    if background is None:
        return None
    bg = torch.as_tensor(background, dtype=gaussians.dtype, device=gaussians.device)
    c = gaussians.num_channels
    if bg.dim() == 1:
        bg = bg[None].expand(len(camera), -1)
    if bg.shape != (len(camera), c):
        raise ValueError(
            f"`background` must have shape [{c}] or [B, {c}] with B={len(camera)} cameras, got {list(bg.shape)}."
        )
    if not torch.isfinite(bg).all():
        raise ValueError("`background` holds NaN/inf values.")
    return bg


def render_gaussians(
    gaussians: Gaussians,
    camera: Camera,
    width: int,
    height: int,
    background: Optional[Tensor] = None,  # [C] or [B, C]
    features: Optional[Tensor] = None,  # [N, F]
) -> RenderOutput:
    """Render one set of Gaussians from B cameras.

    CUDA tensors go through `gsplat.rasterization`; CPU tensors through FHAvatar's own tile rasterizer,
    which follows gsplat's maths (EWA projection with 0.3 px² blur, opacity-aware 3.33σ boxes, 16x16
    tiles, front-to-back compositing, alpha ≤ 0.999, alpha < 1/255 skipped, stop at T < 1e-4, near plane
    0.01) and is differentiable with respect to every Gaussian attribute and `features`.

    Args:
        gaussians (`Gaussians`): N Gaussians in world (head) space.
        camera (`Camera`): B cameras; their normalised intrinsics are scaled to `width` x `height`.
        width, height (`int`): output size in pixels.
        background (`Tensor` of shape `[C]` or `[B, C]`, *optional*): colour behind the Gaussians; black if None.
        features (`Tensor` of shape `[N, F]`, *optional*): extra per-Gaussian channels to composite (e.g.
            positions for the 3D TV loss), returned without background.

    Returns:
        `RenderOutput` with `image [B, C, H, W]`, `alpha [B, 1, H, W]`, `depth [B, 1, H, W]` and
        `features [B, F, H, W]` (or None).

    Example:
        ```py
        >>> import torch
        >>> from fhavatar.rendering import Camera, Gaussians, render_gaussians
        >>> g = Gaussians(means=torch.zeros(1, 3), quats=torch.tensor([[1.0, 0, 0, 0]]),
        ...               scales=torch.full((1, 3), 0.1), opacities=torch.ones(1), colors=torch.ones(1, 3))
        >>> out = render_gaussians(g, Camera.orbit(2), 64, 64)
        >>> out.image.shape, out.alpha.shape
        (torch.Size([2, 3, 64, 64]), torch.Size([2, 1, 64, 64]))
        ```
    """
    bg = _check_render_inputs(gaussians, camera, width, height, background, features)
    width, height = int(width), int(height)
    n, c = len(gaussians), gaussians.num_channels
    batch = len(camera)
    camera = camera.to(gaussians.dtype)
    # One compositing pass renders colour, depth and features together: they share every weight.
    channels = [gaussians.colors]
    if features is not None:
        channels.append(features.to(gaussians.dtype))
    stacked = torch.cat(channels, dim=-1)  # [N, C + F]

    if n == 0:
        render = torch.zeros(batch, height, width, stacked.shape[1] + 1, dtype=gaussians.dtype, device=gaussians.device)
        alpha = torch.zeros(batch, height, width, 1, dtype=gaussians.dtype, device=gaussians.device)
    elif gaussians.device.type == "cuda":
        render, alpha = _render_gsplat(gaussians, camera, width, height, stacked)
    else:
        proj = project_gaussians(
            gaussians.means, gaussians.covariances(), gaussians.opacities,
            camera.world2cam, camera.pixel_intrinsics(width, height), width, height,
        )
        with_depth = torch.cat([stacked[None].expand(batch, -1, -1), proj.depths[..., None]], dim=-1)
        render, alpha = _RasterizeToPixelsCPU.apply(
            proj.means2d, proj.conics, gaussians.opacities, with_depth, proj.radii, proj.depths.detach(), width, height
        )
        depth = render[..., -1:] / alpha.clamp(min=1e-10)
        render = torch.cat([render[..., :-1], depth], dim=-1)
    image = render[..., :c]
    if bg is not None:
        image = image + bg[:, None, None, :] * (1.0 - alpha)
    to_nchw = lambda t: t.permute(0, 3, 1, 2).contiguous()  # noqa: E731
    return RenderOutput(
        image=to_nchw(image),
        alpha=to_nchw(alpha),
        depth=to_nchw(render[..., -1:]),
        features=to_nchw(render[..., c:-1]) if features is not None else None,
    )


def _render_gsplat(gaussians: Gaussians, camera: Camera, width: int, height: int, stacked: Tensor):
    """CUDA path: gsplat's fused kernels, returning `[B,H,W,C+F+1]` (expected depth last) and alpha."""
    import gsplat

    render, alpha, _ = gsplat.rasterization(
        means=gaussians.means,
        quats=gaussians.quats,
        scales=gaussians.scales,
        opacities=gaussians.opacities,
        colors=stacked,
        viewmats=camera.world2cam,
        Ks=camera.pixel_intrinsics(width, height),
        width=width,
        height=height,
        near_plane=NEAR_PLANE,
        far_plane=FAR_PLANE,
        eps2d=EPS2D,
        render_mode="RGB+ED",
        rasterize_mode="classic",
    )
    return render, alpha
