"""Compiled (numba) kernels of the CPU rasterizer: tile binning, forward and backward compositing.

They follow gsplat's tile rasterizer (`RasterizeToPixels3DGSFwd.cu` / `...Bwd.cu`) step for step so a model
trained with gsplat on a GPU renders the same here: 16x16 tiles, Gaussians sorted front to back per tile,
pixel centres at (x + 0.5, y + 0.5), alpha = min(0.999, o * exp(-sigma)), Gaussians with alpha < 1/255
(or sigma < 0) skipped, and a pixel stops *before* the Gaussian that would bring its transmittance to
1e-4 or below. Tiles are independent, so the tile loop runs in parallel (`prange`); the backward pass writes
one gradient row per tile/Gaussian intersection, which makes it race-free and deterministic.

Unlike the CUDA kernel (one thread per pixel walking the whole tile list), each tile walks its Gaussians
once and, per pixel row, solves the quadratic `sigma(x) = log(255 o)` for the exact span of pixels where
alpha can reach 1/255: the work becomes proportional to the (pixel, Gaussian) pairs that matter. Every pixel
still sees the same Gaussians in the same order with the same tests, so the result is the same.

Everything here works on float32 numpy arrays; `rasterize.py` owns validation and autograd.
"""

from __future__ import annotations

import math

import numpy as np
from numba import njit, prange

TILE_SIZE = 16
ALPHA_THRESHOLD = 1.0 / 255.0
MAX_ALPHA = 0.999
TRANSMITTANCE_EPS = 1e-4
# 2^-k for the range reduction of `_exp_neg` (sigma is clamped to 30, so k <= 44).
_POW2_NEG = np.array([2.0**-k for k in range(64)], dtype=np.float32)
_SIGMA_CLAMP = 30.0
# Spans are supersets (every pixel in them is still tested exactly); the margin, in pixels, only absorbs
# float32 rounding of the quadratic's roots.
_SPAN_MARGIN = 0.05


def balanced_tile_order(n_tiles: int, n_threads: int) -> np.ndarray:  # -> [n_tiles] int64
    """A tile permutation that deals tiles round-robin to the threads.

    `prange` hands each thread one contiguous block of iterations; in image order that would give one
    thread the busy face and another the empty border, so thread j instead gets tiles j, j + n, j + 2n, ...
    """
    return np.concatenate([np.arange(j, n_tiles, n_threads) for j in range(max(1, n_threads))]).astype(np.int64)


@njit(cache=True)
def bin_gaussians_to_tiles(
    means2d,  # [N, 2] float32 pixel coordinates
    radii,  # [N, 2] int32 half-extents in pixels (0 = culled)
    order,  # [M] int64 indices of the Gaussians to bin, sorted front to back
    tiles_x,
    tiles_y,
):
    """Counting sort of (tile, depth) intersections; returns `(tile_offsets [T+1], gaussian_ids [K])`.

    Because `order` is already sorted by depth and the sort is stable, every tile's list is front to back.
    """
    n_tiles = tiles_x * tiles_y
    counts = np.zeros(n_tiles + 1, dtype=np.int64)
    bounds = np.empty((order.shape[0], 4), dtype=np.int64)
    for k in range(order.shape[0]):
        g = order[k]
        cx = means2d[g, 0] / TILE_SIZE
        cy = means2d[g, 1] / TILE_SIZE
        rx = radii[g, 0] / TILE_SIZE
        ry = radii[g, 1] / TILE_SIZE
        x0 = min(max(0, int(math.floor(cx - rx))), tiles_x)
        y0 = min(max(0, int(math.floor(cy - ry))), tiles_y)
        x1 = min(max(0, int(math.ceil(cx + rx))), tiles_x)
        y1 = min(max(0, int(math.ceil(cy + ry))), tiles_y)
        bounds[k, 0], bounds[k, 1], bounds[k, 2], bounds[k, 3] = x0, y0, x1, y1
        for ty in range(y0, y1):
            for tx in range(x0, x1):
                counts[ty * tiles_x + tx + 1] += 1
    offsets = np.cumsum(counts)
    ids = np.empty(offsets[-1], dtype=np.int64)
    fill = offsets[:-1].copy()
    for k in range(order.shape[0]):
        g = order[k]
        for ty in range(bounds[k, 1], bounds[k, 3]):
            for tx in range(bounds[k, 0], bounds[k, 2]):
                t = ty * tiles_x + tx
                ids[fill[t]] = g
                fill[t] += 1
    return offsets, ids


@njit(inline="always")
def _row_span(mx, my, a, b, c, max_sigma, row_y, x_first, x_last):
    """Pixel columns [lo, hi] of row `row_y` where sigma <= max_sigma (lo > hi if none).

    With dx = mx - x and dy = my - y, sigma = a dx²/2 + b dx dy + c dy²/2 <= S holds for dx between the
    roots of that quadratic: dx = (-b dy ± sqrt(2 a S - (a c - b²) dy²)) / a.
    """
    dy = my - (row_y + 0.5)
    disc = 2.0 * a * max_sigma - (a * c - b * b) * dy * dy
    if not disc >= 0.0 or a <= 0.0:
        return 1, 0
    root = math.sqrt(disc)
    x_lo = mx - (-b * dy + root) / a - 0.5 - _SPAN_MARGIN
    x_hi = mx - (-b * dy - root) / a - 0.5 + _SPAN_MARGIN
    if x_hi < x_first or x_lo > x_last:
        return 1, 0
    lo = x_first if x_lo <= x_first else int(math.ceil(x_lo))
    hi = x_last if x_hi >= x_last else int(math.floor(x_hi))
    return lo, hi


@njit(inline="always", fastmath=True)
def _exp_neg(s):
    """exp(-s) for 0 <= s <= 30 with a relative error below 3e-7 (gsplat's __expf is ~2 ulp).

    Branch-free polynomial arithmetic, so LLVM vectorises the loops that call it (libm's exp is scalar):
    exp(-s) = 2^-k exp(-r) with k = round(s / ln 2), |r| <= ln(2) / 2, and exp(-r) by its degree-6 series.
    """
    k = np.int32(s * np.float32(1.4426950408889634) + np.float32(0.5))
    r = s - np.float32(k) * np.float32(0.6931471805599453)
    poly = np.float32(1.0) - r * (
        np.float32(1.0) - r * (np.float32(0.5) - r * (np.float32(1 / 6) - r * (
            np.float32(1 / 24) - r * (np.float32(1 / 120) - r * np.float32(1 / 720)))))
    )
    return poly * _POW2_NEG[k]


@njit(inline="always", fastmath=True)
def _span_alphas(mx, dy, ca, cb, cc, opac, max_sigma, lo, count, out):
    """Alpha of one Gaussian at pixels lo..lo+count-1 of a row (0 where sigma < 0, sigma > max_sigma or alpha < 1/255).

    Branch-free so that it vectorises; the compositing loop then only touches pixels with alpha > 0.
    """
    quad_y = np.float32(0.5) * cc * dy * dy
    for j in range(count):
        dx = mx - np.float32(lo + j + 0.5)
        sigma = np.float32(0.5) * ca * dx * dx + quad_y + cb * dx * dy
        clamped = min(max(sigma, np.float32(0.0)), np.float32(_SIGMA_CLAMP))
        alpha = min(np.float32(MAX_ALPHA), opac * _exp_neg(clamped))
        # the same tests, in the same order of precision, as the forward compositing loop
        keep = sigma >= 0.0 and sigma <= max_sigma and alpha >= ALPHA_THRESHOLD
        out[j] = alpha if keep else np.float32(0.0)


@njit(inline="always")
def _row_range(my, a, b, c, max_sigma, y_first, y_last):
    """Pixel rows [lo, hi] where some x has sigma <= max_sigma (lo > hi if none).

    The minimum of sigma over x at offset dy is dy² (a c - b²) / (2 a), so rows need
    dy² <= 2 a S / (a c - b²).
    """
    det = a * c - b * b
    if not det > 0.0 or not a > 0.0:
        return y_first, y_last
    reach = math.sqrt(2.0 * a * max_sigma / det) + _SPAN_MARGIN
    y_lo = my - reach - 0.5
    y_hi = my + reach - 0.5
    if y_hi < y_first or y_lo > y_last:
        return 1, 0
    lo = y_first if y_lo <= y_first else int(math.ceil(y_lo))
    hi = y_last if y_hi >= y_last else int(math.floor(y_hi))
    return lo, hi


@njit(parallel=True, fastmath=True, cache=True)
def rasterize_forward(
    means2d,  # [N, 2] per Gaussian
    conics,  # [N, 3]
    opacities,  # [N]
    colors,  # [N, C]
    ids,  # [K] Gaussian of each intersection, grouped by tile, front to back
    offsets,  # [T + 1] tile t owns intersections offsets[t]:offsets[t + 1]
    tile_order,  # [T] processing order of the tiles (see `balanced_tile_order`)
    width,
    height,
    tiles_x,
    out_colors,  # [H, W, C] written
    out_transmittance,  # [H, W] written: final T of each pixel
    out_last,  # [H, W] int64 written: last composited intersection index (offsets[t] - 1 when none)
):
    n_tiles = offsets.shape[0] - 1
    n_channels = colors.shape[1]
    for i in prange(n_tiles):
        t = tile_order[i]
        start = offsets[t]
        end = offsets[t + 1]
        ty = t // tiles_x
        tx = t - ty * tiles_x
        x0, y0 = tx * TILE_SIZE, ty * TILE_SIZE
        tile_w = min(TILE_SIZE, width - x0)
        tile_h = min(TILE_SIZE, height - y0)
        n_pix = tile_w * tile_h
        trans = np.ones(TILE_SIZE * TILE_SIZE, dtype=np.float32)
        acc = np.zeros((TILE_SIZE * TILE_SIZE, n_channels), dtype=np.float32)
        last = np.full(TILE_SIZE * TILE_SIZE, start - 1, dtype=np.int64)
        done = np.zeros(TILE_SIZE * TILE_SIZE, dtype=np.bool_)
        row_done = np.zeros(TILE_SIZE, dtype=np.int64)  # finished pixels per row: full rows are skipped
        n_done = 0
        for k in range(start, end):
            if n_done == n_pix:
                break
            gid = ids[k]
            opac = opacities[gid]
            if opac < ALPHA_THRESHOLD:
                continue
            max_sigma = math.log(opac / ALPHA_THRESHOLD)  # alpha >= 1/255 needs sigma <= log(255 o)
            mx, my = means2d[gid, 0], means2d[gid, 1]
            ca, cb, cc = conics[gid, 0], conics[gid, 1], conics[gid, 2]
            row_lo, row_hi = _row_range(my, ca, cb, cc, max_sigma, y0, y0 + tile_h - 1)
            for r in range(row_lo - y0, row_hi - y0 + 1):
                if row_done[r] == tile_w:
                    continue
                lo, hi = _row_span(mx, my, ca, cb, cc, max_sigma, y0 + r, x0, x0 + tile_w - 1)
                if hi < lo:
                    continue
                dy = my - np.float32(y0 + r + 0.5)
                quad_y = np.float32(0.5) * cc * dy * dy
                for px in range(lo, hi + 1):
                    p = r * TILE_SIZE + px - x0
                    if done[p]:
                        continue
                    dx = mx - np.float32(px + 0.5)
                    sigma = np.float32(0.5) * ca * dx * dx + quad_y + cb * dx * dy
                    if sigma < 0.0 or sigma > max_sigma:  # alpha < 1/255 for sure: skip the exp
                        continue
                    alpha = min(np.float32(MAX_ALPHA), opac * _exp_neg(sigma))
                    if alpha < ALPHA_THRESHOLD:
                        continue
                    next_trans = trans[p] * (np.float32(1.0) - alpha)
                    if next_trans <= TRANSMITTANCE_EPS:  # done, exclusive of this Gaussian (as gsplat)
                        done[p] = True
                        row_done[r] += 1
                        n_done += 1
                        continue
                    weight = alpha * trans[p]
                    for c in range(n_channels):
                        acc[p, c] += colors[gid, c] * weight
                    trans[p] = next_trans
                    last[p] = k
        for r in range(tile_h):
            for q in range(tile_w):
                p = r * TILE_SIZE + q
                for c in range(n_channels):
                    out_colors[y0 + r, x0 + q, c] = acc[p, c]
                out_transmittance[y0 + r, x0 + q] = trans[p]
                out_last[y0 + r, x0 + q] = last[p]


@njit(parallel=True, fastmath=True, cache=True)
def rasterize_backward(
    means2d,  # [N, 2]
    conics,  # [N, 3]
    opacities,  # [N]
    colors,  # [N, C]
    ids,  # [K]
    offsets,  # [T + 1]
    tile_order,  # [T]
    width,
    height,
    tiles_x,
    transmittance,  # [H, W] final T from the forward pass
    last_index,  # [H, W] from the forward pass
    grad_colors,  # [H, W, C] dL/d(rendered channels)
    grad_alphas,  # [H, W] dL/d(alpha), alpha = 1 - T_final
    v_means2d,  # [K, 2] zero-initialised; one row per intersection (summed per Gaussian by `scatter_add_rows`)
    v_conics,  # [K, 3]
    v_opacities,  # [K]
    v_colors,  # [K, C]
):
    """Reverse-mode pass of `rasterize_forward`, walking each tile's Gaussians back to front.

    With C = Σ c_i α_i T_i and A = 1 - Π(1 - α_i): dC/dc_i = α_i T_i,
    dC/dα_i = c_i T_i - (Σ_{j>i} c_j α_j T_j) / (1 - α_i) and dA/dα_i = T_final / (1 - α_i).
    Each intersection row k belongs to one tile, so tiles write disjoint rows.
    """
    n_tiles = offsets.shape[0] - 1
    n_channels = colors.shape[1]
    for i in prange(n_tiles):
        t = tile_order[i]
        start = offsets[t]
        ty = t // tiles_x
        tx = t - ty * tiles_x
        x0, y0 = tx * TILE_SIZE, ty * TILE_SIZE
        tile_w = min(TILE_SIZE, width - x0)
        tile_h = min(TILE_SIZE, height - y0)
        trans = np.empty(TILE_SIZE * TILE_SIZE, dtype=np.float32)
        v_alpha_a = np.empty(TILE_SIZE * TILE_SIZE, dtype=np.float32)
        last = np.empty(TILE_SIZE * TILE_SIZE, dtype=np.int64)
        behind = np.zeros((TILE_SIZE * TILE_SIZE, n_channels), dtype=np.float32)
        v_col = np.empty(n_channels, dtype=np.float32)
        alphas = np.empty(TILE_SIZE, dtype=np.float32)
        max_last = start - 1
        row_last = np.full(TILE_SIZE, start - 1, dtype=np.int64)  # rows whose pixels all stopped before k are skipped
        for r in range(tile_h):
            for q in range(tile_w):
                p = r * TILE_SIZE + q
                trans[p] = transmittance[y0 + r, x0 + q]
                v_alpha_a[p] = grad_alphas[y0 + r, x0 + q] * trans[p]
                last[p] = last_index[y0 + r, x0 + q]
                row_last[r] = max(row_last[r], last[p])
            max_last = max(max_last, row_last[r])
        for k in range(max_last, start - 1, -1):
            gid = ids[k]
            opac = opacities[gid]
            if opac < ALPHA_THRESHOLD:
                continue
            max_sigma = math.log(opac / ALPHA_THRESHOLD)
            mx, my = means2d[gid, 0], means2d[gid, 1]
            ca, cb, cc = conics[gid, 0], conics[gid, 1], conics[gid, 2]
            g_mx = g_my = g_a = g_b = g_c = g_o = np.float32(0.0)
            for c in range(n_channels):
                v_col[c] = 0.0
            row_lo, row_hi = _row_range(my, ca, cb, cc, max_sigma, y0, y0 + tile_h - 1)
            for r in range(row_lo - y0, row_hi - y0 + 1):
                if k > row_last[r]:
                    continue
                lo, hi = _row_span(mx, my, ca, cb, cc, max_sigma, y0 + r, x0, x0 + tile_w - 1)
                if hi < lo:
                    continue
                dy = my - np.float32(y0 + r + 0.5)
                _span_alphas(mx, dy, ca, cb, cc, opac, max_sigma, lo, hi - lo + 1, alphas)
                for j in range(hi - lo + 1):
                    alpha = alphas[j]
                    px = lo + j
                    p = r * TILE_SIZE + px - x0
                    if alpha == 0.0 or k > last[p]:
                        continue
                    dx = mx - np.float32(px + 0.5)
                    vis = alpha / opac if alpha < MAX_ALPHA else np.float32(2.0)  # exp(-sigma); >1 marks the clamp
                    inv_one_minus = np.float32(1.0) / (np.float32(1.0) - alpha)
                    trans[p] *= inv_one_minus  # T_i, the transmittance in front of this Gaussian
                    weight = alpha * trans[p]
                    v_alpha = v_alpha_a[p] * inv_one_minus
                    for c in range(n_channels):
                        g = grad_colors[y0 + r, px, c]
                        v_col[c] += weight * g
                        v_alpha += (colors[gid, c] * trans[p] - behind[p, c] * inv_one_minus) * g
                        behind[p, c] += colors[gid, c] * weight
                    if alpha < MAX_ALPHA:  # no gradient through the clamp
                        v_sigma = -opac * vis * v_alpha
                        g_a += 0.5 * dx * dx * v_sigma
                        g_b += dx * dy * v_sigma
                        g_c += 0.5 * dy * dy * v_sigma
                        g_mx += v_sigma * (ca * dx + cb * dy)
                        g_my += v_sigma * (cb * dx + cc * dy)
                        g_o += vis * v_alpha
            v_means2d[k, 0], v_means2d[k, 1] = g_mx, g_my
            v_conics[k, 0], v_conics[k, 1], v_conics[k, 2] = g_a, g_b, g_c
            v_opacities[k] = g_o
            for c in range(n_channels):
                v_colors[k, c] = v_col[c]


@njit(cache=True)
def scatter_add_rows(ids, rows, out):  # ids [K], rows [K, D], out [N, D]: out[ids[k]] += rows[k]
    """Sum per-intersection gradient rows into per-Gaussian rows (serial: rows of one Gaussian collide)."""
    for k in range(ids.shape[0]):
        g = ids[k]
        for d in range(rows.shape[1]):
            out[g, d] += rows[k, d]
