"""Compiled (numba) kernels of the CPU rasterizer: depth sort, tile binning, forward and backward compositing.

They follow gsplat's tile rasterizer (`RasterizeToPixels3DGSFwd.cu` / `...Bwd.cu`) step for step so a model
trained with gsplat on a GPU renders the same here: 16x16 tiles, Gaussians sorted front to back per tile,
pixel centres at (x + 0.5, y + 0.5), alpha = min(0.999, o * exp(-sigma)), Gaussians with alpha < 1/255
(or sigma < 0) skipped, and a pixel stops *before* the Gaussian that would bring its transmittance to
1e-4 or below. Every pixel sees the same Gaussians in the same order with the same tests as in gsplat.

Why the code looks the way it does (each point measured, see `benchmarks/render_bench.py`):

- Work is SIMD over pixels: a tile walks its Gaussians once and, for each pixel row the Gaussian's ellipse
  reaches, updates a window of `LANES` = 8 neighbouring pixels at a time. The windows start at the ellipse's
  first column, so tile rows are padded to `_ROW_STRIDE` floats; padding pixels look finished.
- The pixel loops are branch-free (tests become 0/1 factors, selects become arithmetic, a finished pixel has
  a negative transmittance) and index a single per-tile buffer at constant row offsets, so LLVM vectorises
  them (8 floats per AVX2 instruction) with no run-time alias checks. The first `FUSED_CHANNELS` channels
  (RGB + depth in a plain render) live in that buffer too; extra feature channels take a second loop.
- `exp(-s)` is a polynomial times 2^-k built from exponent bits (`_pow2_neg`), which vectorises; a
  libm call or a table lookup does not. `error_model="numpy"` drops the division-by-zero checks that
  would also block vectorisation (divisors here are >= 0.001).
- A tile is one `@njit` function called from the `prange` loop instead of the loop body itself: numba's
  parfor lowering of such a body did not vectorise the pixel loops (2x slower).
- Gaussian parameters are packed once per Gaussian (`pack_gaussians`) and copied into tile order
  (`gather_rows`), so the compositing loops read memory sequentially.

The depth sort and the tile binning live in `_cpu_binning` (re-exported here). Everything works on float32 numpy
arrays; `rasterize.py` owns validation and autograd.
"""

from __future__ import annotations

import math

import numpy as np
from llvmlite import ir
from numba import njit, prange, types
from numba.extending import intrinsic

from ._cpu_binning import (
    TILE_SIZE,
    bin_gaussians_parallel,
    bin_gaussians_to_tiles,
    count_tiles_parallel,
    fill_tiles_parallel,
    sort_and_bound,
    sort_by_depth,
)

__all__ = [
    "TILE_SIZE", "bin_gaussians_parallel", "bin_gaussians_to_tiles", "count_tiles_parallel", "fill_tiles_parallel",
    "gather_rows", "pack_gaussians", "pack_gaussians_with_depth", "rasterize_backward", "rasterize_forward",
    "scatter_add_rows", "sort_and_bound", "sort_by_depth",
]

ALPHA_THRESHOLD = 1.0 / 255.0
MAX_ALPHA = 0.999
TRANSMITTANCE_EPS = 1e-4
LANES = 8  # pixels per vector step (AVX2, float32)
FUSED_CHANNELS = 4  # channels composited inside the main pixel loop (RGB + depth)

# Per-Gaussian parameter columns written by `pack_gaussians`; the channels follow from `PARAM_FIELDS` on.
P_MX, P_MY, P_A, P_B, P_C, P_OPACITY, P_MAX_SIGMA, P_EX, P_EY = range(9)
PARAM_FIELDS = 9

_ROW_STRIDE = TILE_SIZE + LANES  # a window of LANES pixels starting at any column stays inside the padded row
_TILE_BUF = TILE_SIZE * _ROW_STRIDE
_SIGMA_CLAMP = 30.0  # exp(-30) * 255 << 1: beyond it alpha is below threshold anyway; keeps 2^-k in range
# Ellipse extents are supersets (every pixel inside is still tested exactly); the margin, in pixels, only
# absorbs float32 rounding.
_EXTENT_MARGIN = 0.05
_REFRESH = 16  # the forward pass re-checks which tile rows are finished every this many Gaussians
f32 = np.float32


@intrinsic
def _pow2_neg(typingctx, k):
    """2^-k as float32 for an int32 0 <= k < 127, written straight into the exponent bits."""
    if not (isinstance(k, types.Integer) and k.bitwidth == 32):
        return None

    def codegen(context, builder, signature, args):
        i32 = ir.IntType(32)
        bits = builder.shl(builder.sub(ir.Constant(i32, 127), args[0]), ir.Constant(i32, 23))
        return builder.bitcast(bits, ir.FloatType())

    return types.float32(k), codegen


@njit(inline="always", fastmath=True)
def _exp_neg(s):
    """exp(-s) for 0 <= s <= 30 with a relative error below 3e-7 (gsplat's __expf is ~2 ulp).

    exp(-s) = 2^-k exp(-r) with k = round(s / ln 2), |r| <= ln(2) / 2, and exp(-r) by its degree-6 series.
    """
    k = np.int32(s * f32(1.4426950408889634) + f32(0.5))
    r = s - f32(k) * f32(0.6931471805599453)
    poly = f32(1.0) - r * (f32(1.0) - r * (f32(0.5) - r * (f32(1 / 6) - r * (
        f32(1 / 24) - r * (f32(1 / 120) - r * f32(1 / 720))))))
    return poly * _pow2_neg(k)


@njit(inline="always")
def _pack_geometry(means2d, conics, opacities, g, out):
    """Columns P_MX .. P_EY of Gaussian g's row (see `pack_gaussians`)."""
    o = opacities[g]
    a, b, c = np.float64(conics[g, 0]), np.float64(conics[g, 1]), np.float64(conics[g, 2])
    out[g, P_MX], out[g, P_MY] = means2d[g, 0], means2d[g, 1]
    out[g, P_A], out[g, P_B], out[g, P_C], out[g, P_OPACITY] = a, b, c, o
    max_sigma = math.log(o / ALPHA_THRESHOLD) if o >= ALPHA_THRESHOLD else -1.0
    out[g, P_MAX_SIGMA] = max_sigma  # < 0: the Gaussian never reaches 1/255
    det = a * c - b * b
    if det > 0.0 and a > 0.0 and max_sigma >= 0.0:
        out[g, P_EX] = math.sqrt(2.0 * max_sigma * c / det) + _EXTENT_MARGIN
        out[g, P_EY] = math.sqrt(2.0 * max_sigma * a / det) + _EXTENT_MARGIN
    else:
        out[g, P_EX] = out[g, P_EY] = -1.0


@njit(parallel=True, cache=True, nogil=True)
def pack_gaussians(
    means2d,  # [N, 2]
    conics,  # [N, 3]
    opacities,  # [N]
    channels,  # [N, C] values to composite
    out,  # [N, PARAM_FIELDS + max(C, FUSED_CHANNELS)] written (channel columns beyond C zero)
):
    """One row per Gaussian with everything the compositing loops read, including the ellipse extents.

    The extents are the half-widths (in pixels) of {sigma <= log(255 o)}, where alpha can reach 1/255:
    sqrt(2 S c / det) in x and sqrt(2 S a / det) in y for the conic [[a, b], [b, c]]. Computed in float64;
    -1 marks a conic that is not positive definite, for which every pixel of a tile is tested.
    """
    n_channels = channels.shape[1]
    for g in prange(means2d.shape[0]):
        _pack_geometry(means2d, conics, opacities, g, out)
        for ch in range(out.shape[1] - PARAM_FIELDS):
            out[g, PARAM_FIELDS + ch] = channels[g, ch] if ch < n_channels else 0.0


@njit(parallel=True, cache=True, nogil=True)
def pack_gaussians_with_depth(means2d, conics, opacities, channels, depths, out):  # depths [N]
    """`pack_gaussians` of the channels followed by the depths, without building that `[N, C + 1]` array."""
    n_channels = channels.shape[1]
    for g in prange(means2d.shape[0]):
        _pack_geometry(means2d, conics, opacities, g, out)
        for ch in range(out.shape[1] - PARAM_FIELDS):
            out[g, PARAM_FIELDS + ch] = channels[g, ch] if ch < n_channels else (depths[g] if ch == n_channels else 0.0)


@njit(parallel=True, cache=True, nogil=True)
def gather_rows(params, ids, out):  # params [N, D], ids [K], out [K, D]: out[k] = params[ids[k]]
    """Copy the packed parameters into tile order so the compositing loops read them sequentially."""
    for k in prange(ids.shape[0]):
        g = ids[k]
        for f in range(params.shape[1]):
            out[k, f] = params[g, f]


@njit(inline="always")
def _tile_window(rec, k, x0, y0, tile_w, tile_h):
    """Rows [r0, r1] and columns [lo, lo + count) of the tile that the ellipse of intersection k can reach.

    count <= 0: nothing to composite (the ellipse misses the tile, or the Gaussian never reaches 1/255).
    """
    if rec[k, P_MAX_SIGMA] < 0.0:
        return 0, 0, 0, 0
    ey = rec[k, P_EY]
    if ey < 0.0:
        return 0, tile_h - 1, 0, tile_w
    mx, my, ex = np.float64(rec[k, P_MX]), np.float64(rec[k, P_MY]), np.float64(rec[k, P_EX])
    # pixel centres y + 0.5 within [my - ey, my + ey] (float64: numba's float32 ceil is a libm call)
    r0 = max(int(math.ceil(my - ey - 0.5)) - y0, 0)
    r1 = min(int(math.floor(my + ey - 0.5)) - y0, tile_h - 1)
    lo = max(int(math.ceil(mx - ex - 0.5)) - x0, 0)
    hi = min(int(math.floor(mx + ex - 0.5)) - x0, tile_w - 1)
    return r0, r1, lo, hi - lo + 1


@njit(inline="always")
def _gaussian_params(rec, k):
    """What the pixel loops read of intersection k: opacity, 2D mean, conic [[a, b], [b, c]], fused channels."""
    return (rec[k, P_OPACITY], rec[k, P_MX], rec[k, P_MY], rec[k, P_A], rec[k, P_B], rec[k, P_C],
            rec[k, PARAM_FIELDS], rec[k, PARAM_FIELDS + 1], rec[k, PARAM_FIELDS + 2], rec[k, PARAM_FIELDS + 3])


# Rows of the forward tile buffer (each `_TILE_BUF` floats, pixel (r, q) at r * _ROW_STRIDE + q).
_F_TRANS, _F_LAST, _F_WEIGHT, _F_XC, _F_ACC = 0, 1, 2, 3, 4


@njit(fastmath=True, error_model="numpy", cache=True, nogil=True)
def _forward_tile(t, rec, offsets, width, height, tiles_x, out_render, out_transmittance, out_last):
    n_channels = out_render.shape[0]
    start, end = offsets[t], offsets[t + 1]
    ty = t // tiles_x
    x0, y0 = (t - ty * tiles_x) * TILE_SIZE, ty * TILE_SIZE
    tile_w, tile_h = min(TILE_SIZE, width - x0), min(TILE_SIZE, height - y0)
    buf = np.zeros((_F_ACC + FUSED_CHANNELS, _TILE_BUF), dtype=f32)
    extra = np.zeros((max(n_channels - FUSED_CHANNELS, 0), _TILE_BUF), dtype=f32)
    for p in range(_TILE_BUF):
        buf[_F_TRANS, p] = -1.0  # negative transmittance: finished (here: padding or outside the image)
        buf[_F_LAST, p] = -1.0  # last composited intersection, relative to `start` (exact in float32 below 2^24)
        buf[_F_XC, p] = f32(x0 + p % _ROW_STRIDE) + f32(0.5)
    for r in range(tile_h):
        for q in range(tile_w):
            buf[_F_TRANS, r * _ROW_STRIDE + q] = 1.0
    row_live = np.zeros(TILE_SIZE, dtype=np.bool_)
    row_live[:tile_h] = True
    for k in range(start, end):
        if k > start and (k - start) % _REFRESH == 0:
            # Rows whose pixels all stopped are skipped from now on; the tile stops when every row has.
            # Checking every few Gaussians costs far less than counting finished pixels in the pixel loop.
            n_live = 0
            for r in range(tile_h):
                if row_live[r]:
                    most = f32(-1.0)
                    for q in range(_ROW_STRIDE):
                        most = max(most, buf[_F_TRANS, np.uintp(r * _ROW_STRIDE + q)])
                    row_live[r] = most > 0.0
                    n_live += row_live[r]
            if n_live == 0:
                break
        r0, r1, lo, count = _tile_window(rec, k, x0, y0, tile_w, tile_h)
        if count <= 0:
            continue
        width8 = np.uintp(((count + LANES - 1) // LANES) * LANES)
        opac, mx, my, ca, cb, cc, col0, col1, col2, col3 = _gaussian_params(rec, k)
        k_rel = f32(k - start)
        for r in range(r0, r1 + 1):
            if not row_live[r]:
                continue
            dy = my - f32(y0 + r + 0.5)
            quad_y, cross_y = f32(0.5) * cc * dy * dy, cb * dy
            p0 = np.uintp(r * _ROW_STRIDE + lo)
            for p in range(p0, p0 + width8):
                dx = mx - buf[_F_XC, p]
                sigma = f32(0.5) * ca * dx * dx + cross_y * dx + quad_y
                alpha = min(f32(MAX_ALPHA), opac * _exp_neg(min(max(sigma, f32(0.0)), f32(_SIGMA_CLAMP))))
                alpha *= f32((sigma >= f32(0.0)) & (alpha >= f32(ALPHA_THRESHOLD)))  # 0 = skipped
                trans = buf[_F_TRANS, p]
                next_trans = trans * (f32(1.0) - alpha)
                stop = f32(next_trans <= f32(TRANSMITTANCE_EPS))  # also true for finished pixels (trans < 0)
                keep = f32(1.0) - stop
                weight = alpha * trans * keep
                buf[_F_WEIGHT, p] = weight
                buf[_F_ACC, p] += weight * col0
                buf[_F_ACC + 1, p] += weight * col1
                buf[_F_ACC + 2, p] += weight * col2
                buf[_F_ACC + 3, p] += weight * col3
                buf[_F_TRANS, p] = next_trans * keep - abs(trans) * stop  # stopping keeps T, negated
                took = keep * f32(alpha > f32(0.0))
                last = buf[_F_LAST, p]
                buf[_F_LAST, p] = last + took * (k_rel - last)
            for c in range(FUSED_CHANNELS, n_channels):
                col = rec[k, PARAM_FIELDS + c]
                for p in range(p0, p0 + width8):
                    extra[c - FUSED_CHANNELS, p] += buf[_F_WEIGHT, p] * col
    for r in range(tile_h):
        for q in range(tile_w):
            p = r * _ROW_STRIDE + q
            for c in range(n_channels):
                out_render[c, y0 + r, x0 + q] = buf[_F_ACC + c, p] if c < FUSED_CHANNELS else extra[c - FUSED_CHANNELS, p]
            out_transmittance[y0 + r, x0 + q] = abs(buf[_F_TRANS, p])
            out_last[y0 + r, x0 + q] = start + np.int64(buf[_F_LAST, p])


@njit(parallel=True, cache=True, nogil=True)
def rasterize_forward(
    rec,  # [K, PARAM_FIELDS + C'] packed parameters in tile order (`gather_rows`), C' >= FUSED_CHANNELS
    offsets,  # [T + 1] tile t owns intersections offsets[t]:offsets[t + 1]
    width,
    height,
    tiles_x,
    out_render,  # [C, H, W] written: composited channels (C <= C')
    out_transmittance,  # [H, W] written: final T of each pixel
    out_last,  # [H, W] int64 written: last composited intersection index (offsets[t] - 1 when none)
):
    """Front-to-back compositing of every tile (tiles in parallel; see the module docstring)."""
    for t in prange(offsets.shape[0] - 1):
        _forward_tile(t, rec, offsets, width, height, tiles_x, out_render, out_transmittance, out_last)


# Rows of the backward tile buffer: per-pixel state, per-step scratch, then per fused channel the colour
# already composited behind the current Gaussian and the incoming gradient.
(_B_TRANS, _B_VA_OUT, _B_LAST, _B_XC, _B_INV, _B_WEIGHT, _B_TI, _B_VIS, _B_MASK, _B_VALPHA,
 _B_BEHIND, _B_GRAD) = 0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 10 + FUSED_CHANNELS
_B_ROWS = 10 + 2 * FUSED_CHANNELS


@njit(fastmath=True, error_model="numpy", cache=True, nogil=True)
def _backward_tile(t, rec, offsets, width, height, tiles_x, transmittance, last_index, grad_render, grad_alpha, out):
    n_channels = grad_render.shape[0]
    n_extra = max(n_channels - FUSED_CHANNELS, 0)
    start = offsets[t]
    ty = t // tiles_x
    x0, y0 = (t - ty * tiles_x) * TILE_SIZE, ty * TILE_SIZE
    tile_w, tile_h = min(TILE_SIZE, width - x0), min(TILE_SIZE, height - y0)
    buf = np.zeros((_B_ROWS, _TILE_BUF), dtype=f32)
    behind = np.zeros((n_extra, _TILE_BUF), dtype=f32)
    grads = np.zeros((n_extra, _TILE_BUF), dtype=f32)
    v_col = np.zeros(max(n_channels, FUSED_CHANNELS), dtype=f32)
    row_last = np.full(TILE_SIZE, -1, dtype=np.int64)  # rows whose pixels all stopped before k are skipped
    for p in range(_TILE_BUF):
        buf[_B_LAST, p] = -1.0
        buf[_B_XC, p] = f32(x0 + p % _ROW_STRIDE) + f32(0.5)
    for r in range(tile_h):
        for q in range(tile_w):
            p = r * _ROW_STRIDE + q
            trans = transmittance[y0 + r, x0 + q]
            buf[_B_TRANS, p] = trans
            buf[_B_VA_OUT, p] = grad_alpha[y0 + r, x0 + q] * trans  # dA/d(alpha_i) = T_final / (1 - alpha_i)
            last = last_index[y0 + r, x0 + q] - start
            buf[_B_LAST, p] = f32(last)
            row_last[r] = max(row_last[r], last)
            for c in range(n_channels):
                if c < FUSED_CHANNELS:
                    buf[_B_GRAD + c, p] = grad_render[c, y0 + r, x0 + q]
                else:
                    grads[c - FUSED_CHANNELS, p] = grad_render[c, y0 + r, x0 + q]
    for k_rel in range(row_last.max(), -1, -1):
        k = start + k_rel
        r0, r1, lo, count = _tile_window(rec, k, x0, y0, tile_w, tile_h)
        if count <= 0:
            continue
        width8 = np.uintp(((count + LANES - 1) // LANES) * LANES)
        opac, mx, my, ca, cb, cc, col0, col1, col2, col3 = _gaussian_params(rec, k)
        fk = f32(k_rel)
        touched = False
        g_mx = g_my = g_a = g_b = g_c = g_o = vc0 = vc1 = vc2 = vc3 = f32(0.0)
        v_col[:] = 0.0
        for r in range(r0, r1 + 1):
            if k_rel > row_last[r]:
                continue
            touched = True
            dy = my - f32(y0 + r + 0.5)
            quad_y, cross_y = f32(0.5) * cc * dy * dy, cb * dy
            p0 = np.uintp(r * _ROW_STRIDE + lo)
            # 1. alpha and the transmittance in front of the Gaussian (undoing the forward step), fused channels
            for p in range(p0, p0 + width8):
                dx = mx - buf[_B_XC, p]
                sigma = f32(0.5) * ca * dx * dx + cross_y * dx + quad_y
                vis = _exp_neg(min(max(sigma, f32(0.0)), f32(_SIGMA_CLAMP)))
                alpha = min(f32(MAX_ALPHA), opac * vis)
                # composited in the forward pass: same tests, and not after the pixel stopped
                mask = f32((sigma >= f32(0.0)) & (alpha >= f32(ALPHA_THRESHOLD)) & (fk <= buf[_B_LAST, p]))
                alpha *= mask
                inv = f32(1.0) / (f32(1.0) - alpha)
                t_i = buf[_B_TRANS, p] * inv  # T_i = T_(i+1) / (1 - alpha_i)
                weight = alpha * t_i
                buf[_B_TRANS, p] = t_i
                buf[_B_INV, p], buf[_B_TI, p], buf[_B_WEIGHT, p], buf[_B_MASK, p] = inv, t_i, weight, mask
                buf[_B_VIS, p] = vis * mask * f32(opac * vis < f32(MAX_ALPHA))  # no gradient through the clamp
                g0, g1, g2, g3 = buf[_B_GRAD, p], buf[_B_GRAD + 1, p], buf[_B_GRAD + 2, p], buf[_B_GRAD + 3, p]
                vc0 += weight * g0
                vc1 += weight * g1
                vc2 += weight * g2
                vc3 += weight * g3
                # dC/d(alpha_i) = c_i T_i - (sum of what lies behind) / (1 - alpha_i), plus the alpha output
                behind_dot = (buf[_B_BEHIND, p] * g0 + buf[_B_BEHIND + 1, p] * g1
                              + buf[_B_BEHIND + 2, p] * g2 + buf[_B_BEHIND + 3, p] * g3)
                colour_dot = col0 * g0 + col1 * g1 + col2 * g2 + col3 * g3
                buf[_B_VALPHA, p] = (inv * (buf[_B_VA_OUT, p] - behind_dot) + t_i * colour_dot) * mask
                buf[_B_BEHIND, p] += col0 * weight
                buf[_B_BEHIND + 1, p] += col1 * weight
                buf[_B_BEHIND + 2, p] += col2 * weight
                buf[_B_BEHIND + 3, p] += col3 * weight
            # 2. channels beyond the fused ones (features)
            for c in range(FUSED_CHANNELS, n_channels):
                col, e = rec[k, PARAM_FIELDS + c], c - FUSED_CHANNELS
                vc = f32(0.0)
                for p in range(p0, p0 + width8):
                    g, weight = grads[e, p], buf[_B_WEIGHT, p]
                    vc += weight * g
                    buf[_B_VALPHA, p] += (col * buf[_B_TI, p] - behind[e, p] * buf[_B_INV, p]) * g * buf[_B_MASK, p]
                    behind[e, p] += col * weight
                v_col[c] += vc
            # 3. alpha = o exp(-sigma): to sigma, then to the 2D mean and the conic
            for p in range(p0, p0 + width8):
                dx = mx - buf[_B_XC, p]
                vis, v_alpha = buf[_B_VIS, p], buf[_B_VALPHA, p]
                v_sigma = -opac * vis * v_alpha
                g_mx += v_sigma * (ca * dx + cb * dy)
                g_my += v_sigma * (cb * dx + cc * dy)
                g_a += f32(0.5) * dx * dx * v_sigma
                g_b += dx * dy * v_sigma
                g_c += f32(0.5) * dy * dy * v_sigma
                g_o += vis * v_alpha
        if touched:
            v_col[0], v_col[1], v_col[2], v_col[3] = vc0, vc1, vc2, vc3
            out[k, 0], out[k, 1], out[k, 2], out[k, 3], out[k, 4], out[k, 5] = g_mx, g_my, g_a, g_b, g_c, g_o
            for c in range(n_channels):
                out[k, 6 + c] = v_col[c]


@njit(parallel=True, cache=True, nogil=True)
def rasterize_backward(
    rec,  # [K, PARAM_FIELDS + C'] as for `rasterize_forward`
    offsets,  # [T + 1]
    width,
    height,
    tiles_x,
    transmittance,  # [H, W] final T from the forward pass
    last_index,  # [H, W] from the forward pass
    grad_render,  # [C, H, W] dL/d(rendered channels)
    grad_alpha,  # [H, W] dL/d(alpha), alpha = 1 - T_final
    out,  # [K, 6 + C] zero-initialised; per intersection dL/d(mean2d x, y, conic a, b, c, opacity, channels)
):
    """Reverse-mode pass of `rasterize_forward`, walking each tile's Gaussians back to front.

    With C = Σ c_i α_i T_i and A = 1 - Π(1 - α_i): dC/dc_i = α_i T_i,
    dC/dα_i = c_i T_i - (Σ_{j>i} c_j α_j T_j) / (1 - α_i) and dA/dα_i = T_final / (1 - α_i).
    Each intersection row belongs to one tile, so tiles write disjoint rows (summed by `scatter_add_rows`).
    """
    for t in prange(offsets.shape[0] - 1):
        _backward_tile(t, rec, offsets, width, height, tiles_x, transmittance, last_index, grad_render, grad_alpha, out)


@njit(cache=True, nogil=True)
def scatter_add_rows(ids, rows, out):  # ids [K], rows [K, D], out [N, D]: out[ids[k]] += rows[k]
    """Sum per-intersection gradient rows into per-Gaussian rows (serial: rows of one Gaussian collide)."""
    for k in range(ids.shape[0]):
        g = ids[k]
        for d in range(rows.shape[1]):
            out[g, d] += rows[k, d]
