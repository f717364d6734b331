"""`render_gaussians`: the one rasterizer entry point (gsplat on CUDA, the project's own kernels on CPU)."""

from __future__ import annotations

import math
import threading
from contextlib import contextmanager
from dataclasses import dataclass

import numba
import numpy as np
import torch
from torch import Tensor

from ._cpu_projection import EPS2D, FAR_PLANE, NEAR_PLANE
from .cameras import Camera
from .gaussians import Gaussians

__all__ = ["MAX_RENDER_PIXELS", "RenderOutput", "render_gaussians"]

#: Most pixels (cameras x width x height) one `render_gaussians` call renders: its output buffers (image, alpha,
#: depth, float32) are allocated up front, so larger requests are refused instead of exhausting memory.
MAX_RENDER_PIXELS = 16 * 4096 * 4096

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
    features: Tensor | None = None


def _np32(t: Tensor) -> np.ndarray:
    return np.ascontiguousarray(t.detach().to(torch.float32).numpy())


# Tiles handed to a thread at a time: dynamic scheduling keeps both cores busy although tile costs vary
# by orders of magnitude (face vs background) and other processes may hold a core.
_TILE_CHUNK = 4
#: Largest scratch array (bytes) kept between no-gradient renders; larger ones are allocated per call.
_KEEP_BYTES = 64 * 2**20
#: Idle scratch sets kept (one per render running at once is in use; more idle ones would only hold memory).
_KEEP_SETS = 2


class _Scratch:
    """Arrays reused by no-gradient renders (a video loop renders the same sizes every frame: fresh arrays would
    cost their page faults each time). One render uses a set at a time (`_scratch()`); nothing handed back to a
    caller points into it."""

    def __init__(self):
        self.arrays: dict[str, np.ndarray] = {}

    def get(self, name: str, shape: tuple, dtype) -> np.ndarray:
        size = math.prod(shape)
        kept = self.arrays.get(name)
        if kept is None or kept.dtype != dtype or kept.size < size:
            kept = np.empty(size + size // 4, dtype)  # headroom: the intersection count varies per frame
            if kept.nbytes <= _KEEP_BYTES:
                self.arrays[name] = kept
        return kept[:size].reshape(shape)


_IDLE_SCRATCH: list[_Scratch] = []
_SCRATCH_LOCK = threading.Lock()


@contextmanager
def _scratch():
    """A scratch set for one render: an idle one if any (renders running at once get one each), kept afterwards
    while fewer than `_KEEP_SETS` are idle, so memory follows concurrent renders, not threads."""
    with _SCRATCH_LOCK:
        scratch = _IDLE_SCRATCH.pop() if _IDLE_SCRATCH else _Scratch()
    try:
        yield scratch
    finally:
        with _SCRATCH_LOCK:
            if len(_IDLE_SCRATCH) < _KEEP_SETS:
                _IDLE_SCRATCH.append(scratch)


def _fresh(name: str, shape: tuple, dtype) -> np.ndarray:
    return np.empty(shape, dtype)


def _forward_cpu(arrays, views, ks, width, height, scratch: _Scratch | None):
    """The forward pass for every camera: project, sort, bin, pack, gather and composite (numba kernels).

    `arrays`: float32 means, quats, scales, opacities, colours. `scratch=None` (a backward pass follows): fresh
    arrays, kept per camera, and the plain serial sort and binning. With a scratch set (no gradient): its arrays
    for everything, and the faster sort and parallel binning. Same output either way. Returns
    `(render [B, C + 1, H, W], transmittance [B, H, W], last [B, H, W], per_camera)`.
    """
    from . import _cpu_kernels as kern
    from . import _cpu_projection as proj

    alloc = _fresh if scratch is None else scratch.get
    tiles_x, tiles_y = math.ceil(width / kern.TILE_SIZE), math.ceil(height / kern.TILE_SIZE)
    batch, n, n_channels = views.shape[0], arrays[0].shape[0], arrays[4].shape[1] + 1
    out_render = alloc("render", (batch, n_channels, height, width), np.float32)
    out_trans = alloc("trans", (batch, height, width), np.float32)
    out_last = alloc("last", (batch, height, width), np.int64)
    if scratch is None:  # colours + depth: one compositing pass
        channels = alloc("channels", (n, n_channels), np.float32)
        channels[:, :-1] = arrays[4]
    params = alloc("params", (n, kern.PARAM_FIELDS + max(n_channels, kern.FUSED_CHANNELS)), np.float32)
    per_camera = []
    for i in range(batch):
        m2d, conics = alloc("means2d", (n, 2), np.float32), alloc("conics", (n, 3), np.float32)
        depths, radii = alloc("depths", (n,), np.float32), alloc("radii", (n, 2), np.int32)
        fx, fy, cx, cy = ks[i, 0, 0], ks[i, 1, 1], ks[i, 0, 2], ks[i, 1, 2]
        proj.project_forward(*arrays[:4], views[i], fx, fy, cx, cy, width, height, m2d, conics, depths, radii)
        if scratch is not None:
            offsets, ids = _sort_and_bin(depths, radii, m2d, tiles_x, tiles_y, scratch)
        else:
            order = kern.sort_by_depth(depths, radii)  # front to back: the order of every tile's list
            offsets, ids = kern.bin_gaussians_to_tiles(m2d, radii, order, tiles_x, tiles_y)
        _check_tile_load(offsets)
        if scratch is None:
            channels[:, -1] = depths
            kern.pack_gaussians(m2d, conics, arrays[3], channels, params)
        else:
            kern.pack_gaussians_with_depth(m2d, conics, arrays[3], arrays[4], depths, params)
        rec = alloc("rows", (ids.shape[0], params.shape[1]), np.float32)
        kern.gather_rows(params, ids, rec)
        with numba.parallel_chunksize(_TILE_CHUNK):
            kern.rasterize_forward(rec, offsets, width, height, tiles_x, out_render[i], out_trans[i], out_last[i])
        per_camera.append((radii, ids, offsets, rec, (fx, fy, cx, cy)))
    return out_render, out_trans, out_last, per_camera


def _sort_and_bin(depths, radii, m2d, tiles_x, tiles_y, scratch: _Scratch):
    """`sort_by_depth` + `bin_gaussians_to_tiles`'s lists, in scratch arrays, the binning on all numba threads
    (`_cpu_binning.sort_and_bound`, `count_tiles_parallel`, `fill_tiles_parallel`)."""
    from . import _cpu_kernels as kern

    n, n_tiles, get = depths.shape[0], tiles_x * tiles_y, scratch.get
    threads = numba.get_num_threads()
    runs = 1 if threads == 1 else 2 * threads  # the sort's runs cost alike
    order, rects = kern.sort_and_bound(
        depths, radii, m2d, tiles_x, tiles_y, get("keys", (n,), np.uint32), get("keys_tmp", (n,), np.uint32),
        get("order", (n,), np.int64), get("order_tmp", (n,), np.int64), get("rects", (n, 4), np.int32),
        get("rects_tmp", (n, 4), np.int32), get("digit_counts", (runs, 2048), np.int64))
    runs = 1 if threads == 1 else max(1, min(4 * threads, order.shape[0]))  # the binning's: a few per thread
    counts, offsets = get("tile_counts", (runs, n_tiles), np.int64), get("offsets", (n_tiles + 1,), np.int64)
    ids = get("ids", (kern.count_tiles_parallel(rects, tiles_x, counts, offsets),), np.int64)
    kern.fill_tiles_parallel(order, rects, tiles_x, counts, ids)
    return offsets, ids


def _render_cpu_no_grad(means, quats, scales, opacities, colors, viewmats, Ks, width, height, scratch: _Scratch):
    """`_RenderCPU.forward` for a caller that needs no gradient: scratch arrays, faster sort, parallel binning.

    Returns `render [B, C + 1, H, W]`, a view of `scratch` (the caller copies what it hands out before the set is
    used again), and a new `alpha [B, 1, H, W]`."""
    arrays = [_np32(t) for t in (means, quats, scales, opacities, colors)]
    views, ks = viewmats.detach().double().numpy(), Ks.detach().double().numpy()
    render, trans, _, _ = _forward_cpu(arrays, views, ks, width, height, scratch)
    return torch.from_numpy(render).to(colors.dtype), torch.from_numpy(1.0 - trans).to(colors.dtype)[:, None]


class _RenderCPU(torch.autograd.Function):
    """Project, sort, bin and composite on the CPU (numba kernels), with an exact hand-written backward.

    Returns `render [B, C + 1, H, W]` (the last channel is depth-weighted, divided by alpha by the caller)
    and `alpha [B, 1, H, W]`.
    """

    @staticmethod
    def forward(ctx, means, quats, scales, opacities, colors, viewmats, Ks, width, height):
        # means [N,3], quats [N,4], scales [N,3], opacities [N], colors [N,C], viewmats [B,4,4], Ks [B,3,3] (pixels)
        from . import _cpu_kernels as kern

        arrays = [_np32(t) for t in (means, quats, scales, opacities, colors)]
        views, ks = viewmats.detach().double().numpy(), Ks.detach().double().numpy()
        out_render, out_trans, out_last, per_camera = _forward_cpu(arrays, views, ks, width, height, None)
        tiles_x = math.ceil(width / kern.TILE_SIZE)
        ctx.per_camera, ctx.arrays, ctx.views = per_camera, arrays, views
        ctx.trans, ctx.last, ctx.size = out_trans, out_last, (width, height, tiles_x)
        render = torch.from_numpy(out_render).to(colors.dtype)
        alpha = torch.from_numpy(1.0 - out_trans).to(colors.dtype)[:, None]
        return render, alpha

    @staticmethod
    def backward(ctx, grad_render, grad_alpha):
        from . import _cpu_kernels as kern
        from . import _cpu_projection as proj

        width, height, tiles_x = ctx.size
        means, quats, scales, opacities, colors = ctx.arrays
        n, n_channels = colors.shape[0], colors.shape[1] + 1
        batch = len(ctx.per_camera)
        dtype = grad_render.dtype if grad_render is not None else grad_alpha.dtype
        g_render = _np32(grad_render) if grad_render is not None else np.zeros((batch, n_channels, height, width), np.float32)
        g_alpha = _np32(grad_alpha[:, 0]) if grad_alpha is not None else np.zeros((batch, height, width), np.float32)
        v_means, v_quats, v_scales = np.zeros((n, 3), np.float32), np.zeros((n, 4), np.float32), np.zeros((n, 3), np.float32)
        # per Gaussian: dL/d(mean2d x, y, conic a, b, c, opacity, channels...)
        v_gauss = np.zeros((n, 6 + n_channels), np.float32)
        v_opacities, v_colors = np.zeros(n, np.float32), np.zeros((n, n_channels - 1), np.float32)
        for i, (radii, ids, offsets, rec, intr) in enumerate(ctx.per_camera):
            rows = np.zeros((ids.shape[0], 6 + n_channels), np.float32)
            with numba.parallel_chunksize(_TILE_CHUNK):
                kern.rasterize_backward(
                    rec, offsets, width, height, tiles_x, ctx.trans[i], ctx.last[i], g_render[i], g_alpha[i], rows
                )
            v_gauss[:] = 0.0
            kern.scatter_add_rows(ids, rows, v_gauss)
            v_opacities += v_gauss[:, 5]
            v_colors += v_gauss[:, 6:-1]
            v_m2d, v_conics, v_depths = (np.ascontiguousarray(v_gauss[:, cols]) for cols in (slice(0, 2), slice(2, 5), -1))
            proj.project_backward(
                means, quats, scales, radii, ctx.views[i], *intr, width, height,
                v_m2d, v_conics, v_depths, v_means, v_quats, v_scales,
            )
        as_t = lambda a: torch.from_numpy(np.ascontiguousarray(a)).to(dtype)  # noqa: E731
        return as_t(v_means), as_t(v_quats), as_t(v_scales), as_t(v_opacities), as_t(v_colors), None, None, None, None


def _check_tile_load(offsets: np.ndarray) -> None:
    # The kernels keep each pixel's last composited Gaussian as a float32 offset into its tile's list.
    most = int(np.diff(offsets).max(initial=0))
    if most >= 2**24:
        raise ValueError(
            f"{most} Gaussians overlap one 16x16 tile, more than the CPU rasterizer supports (2^24); "
            "render at a higher resolution or with fewer, smaller Gaussians."
        )


def _check_render_inputs(gaussians, camera, width, height, background, features) -> Tensor | None:
    if not isinstance(gaussians, Gaussians):
        raise TypeError(f"`gaussians` must be a fhavatar.rendering.Gaussians, got {type(gaussians).__name__}.")
    if not isinstance(camera, Camera):
        raise TypeError(f"`camera` must be a fhavatar.rendering.Camera, got {type(camera).__name__}.")
    for name, value in (("width", width), ("height", height)):
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
            raise ValueError(f"`{name}` must be a positive int (pixels), got {value!r}.")
    if len(camera) * width * height > MAX_RENDER_PIXELS:
        raise ValueError(f"{len(camera)} camera(s) of {width}x{height} pixels are more than the {MAX_RENDER_PIXELS:,} pixels "
                         "one render_gaussians call draws; render fewer cameras per call or a smaller image.")
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
    background: Tensor | None = None,  # [C] or [B, C]
    features: Tensor | None = None,  # [N, F]
) -> RenderOutput:
    """Render one set of Gaussians from B cameras.

    CUDA tensors go through `gsplat.rasterization`; CPU tensors through FHAvatar's own tile rasterizer,
    which follows gsplat's maths (EWA projection with 0.3 px² blur, opacity-aware 3.33σ boxes, 16x16
    tiles, front-to-back compositing, alpha ≤ 0.999, alpha < 1/255 skipped, stop at T < 1e-4, near plane
    0.01) and is differentiable with respect to every Gaussian attribute and `features`. A CPU render that needs no
    gradient (under `torch.no_grad()`, or no input requires one) reuses scratch arrays between calls and sorts and
    bins faster, with the same output.

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
    stacked = channels[0] if features is None else torch.cat(channels, dim=-1)  # [N, C + F]

    if n == 0:
        render = torch.zeros(batch, stacked.shape[1], height, width, dtype=gaussians.dtype, device=gaussians.device)
        alpha = torch.zeros(batch, 1, height, width, dtype=gaussians.dtype, device=gaussians.device)
        depth = torch.zeros_like(alpha)
    elif gaussians.device.type == "cuda":
        render, alpha = _render_gsplat(gaussians, camera, width, height, stacked)
        render, alpha = render.permute(0, 3, 1, 2), alpha.permute(0, 3, 1, 2)
        depth = render[:, -1:]  # gsplat's "ED" mode already divides by alpha
    else:
        # [B, C + F + 1, H, W] written channel-first by the kernels: no layout copies afterwards
        inputs = (gaussians.means, gaussians.quats, gaussians.scales, gaussians.opacities, stacked)
        args = (camera.world2cam, camera.pixel_intrinsics(width, height), width, height)
        if torch.is_grad_enabled() and any(t.requires_grad for t in inputs):
            render, alpha = _RenderCPU.apply(*inputs, *args)
        else:  # the outputs are copied out of the scratch set before it is given back
            with _scratch() as scratch:
                render, alpha = _render_cpu_no_grad(*inputs, *args, scratch)
                return _outputs(render, alpha, render[:, -1:] / alpha.clamp(min=1e-10), c, bg, features, True)
        depth = render[:, -1:] / alpha.clamp(min=1e-10)
    return _outputs(render, alpha, depth, c, bg, features, False)


def _outputs(render, alpha, depth, c: int, bg, features, scratch: bool) -> RenderOutput:
    """Image over the background, alpha, depth and features as contiguous tensors of their own (copies where
    `render` is a view of scratch arrays)."""
    image = render[:, :c]
    if bg is not None:
        image = image + bg[:, :, None, None] * (1.0 - alpha)
    elif scratch:
        image = image.clone()
    if features is not None:
        features = render[:, c : c + features.shape[1]]
        features = features.clone() if scratch else features.contiguous()
    return RenderOutput(image=image.contiguous(), alpha=alpha.contiguous(), depth=depth.contiguous(), features=features)


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
