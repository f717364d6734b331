"""Compiled (numba) depth sort and tile binning of the CPU rasterizer (re-exported by `_cpu_kernels`).

`sort_by_depth` orders the visible Gaussians front to back as gsplat's radix sort does; `bin_gaussians_to_tiles`
lists, per 16x16 tile, the Gaussians whose box touches it, in that order (the plain serial form), and
the renderer's no-gradient path builds the same order and lists faster: `sort_and_bound` (the order, with each
Gaussian's tile rectangle carried along), then `count_tiles_parallel` + `fill_tiles_parallel` on several threads,
all in arrays it reuses from frame to frame (`bin_gaussians_parallel` is that binning in fresh arrays).
"""

from __future__ import annotations

import math

import numpy as np
from numba import njit, prange

TILE_SIZE = 16


@njit(cache=True, nogil=True)
def sort_by_depth(depths, radii):  # depths [N] float32, radii [N, 2] int32 -> [M] int64
    """Indices of the visible Gaussians (both radii > 0), front to back; ties keep index order.

    A stable LSD radix sort on the depth's bits (3 passes of 11 bits): the order gsplat's radix sort gives.
    """
    n = depths.shape[0]
    keys = np.empty(n, dtype=np.uint32)
    idx = np.empty(n, dtype=np.int64)
    m = 0
    bits = depths.view(np.uint32)
    for g in range(n):
        if radii[g, 0] > 0 and radii[g, 1] > 0:
            b = bits[g]  # IEEE bits -> an unsigned key with the same order (negative floats flipped)
            keys[m] = ~b if b >> np.uint32(31) else b | np.uint32(0x80000000)
            idx[m] = g
            m += 1
    keys, idx = keys[:m], idx[:m]
    keys_tmp, idx_tmp = np.empty_like(keys), np.empty_like(idx)
    for shift in range(0, 32, 11):
        counts = np.zeros(2049, dtype=np.int64)
        for i in range(m):
            counts[((keys[i] >> np.uint32(shift)) & np.uint32(2047)) + 1] += 1
        for j in range(2048):
            counts[j + 1] += counts[j]
        for i in range(m):
            digit = (keys[i] >> np.uint32(shift)) & np.uint32(2047)
            pos = counts[digit]
            counts[digit] = pos + 1
            keys_tmp[pos], idx_tmp[pos] = keys[i], idx[i]
        keys, keys_tmp, idx, idx_tmp = keys_tmp, keys, idx_tmp, idx
    return idx


@njit(inline="always")
def _tile_bounds(means2d, radii, g, tiles_x, tiles_y):
    """Tiles [x0, x1) x [y0, y1) that the box of Gaussian g touches."""
    cx = means2d[g, 0] / TILE_SIZE
    cy = means2d[g, 1] / TILE_SIZE
    rx = radii[g, 0] / TILE_SIZE
    ry = radii[g, 1] / TILE_SIZE
    x0 = min(max(0, int(math.floor(cx - rx))), tiles_x)
    y0 = min(max(0, int(math.floor(cy - ry))), tiles_y)
    x1 = min(max(0, int(math.ceil(cx + rx))), tiles_x)
    y1 = min(max(0, int(math.ceil(cy + ry))), tiles_y)
    return x0, y0, x1, y1


@njit(cache=True, nogil=True)
def bin_gaussians_to_tiles(
    means2d,  # [N, 2] float32 pixel coordinates
    radii,  # [N, 2] int32 half-extents in pixels (0 = culled)
    order,  # [M] int64 indices of the Gaussians to bin, sorted front to back
    tiles_x,
    tiles_y,
):
    """Counting sort of (tile, depth) intersections; returns `(tile_offsets [T+1], gaussian_ids [K])`.

    Because `order` is already sorted by depth and the sort is stable, every tile's list is front to back.
    The plain serial form: `bin_gaussians_parallel` gives the same arrays.
    """
    n_tiles = tiles_x * tiles_y
    counts = np.zeros(n_tiles + 1, dtype=np.int64)
    bounds = np.empty((order.shape[0], 4), dtype=np.int64)
    for k in range(order.shape[0]):
        x0, y0, x1, y1 = _tile_bounds(means2d, radii, order[k], tiles_x, tiles_y)
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


@njit(cache=True, nogil=True)
def _visible_run(radii, start, end):
    count = 0
    for g in range(start, end):
        count += radii[g, 0] > 0 and radii[g, 1] > 0
    return count


@njit(cache=True, nogil=True)
def _gather_run(depths, radii, means2d, tiles_x, tiles_y, start, end, at, keys, idx, rects, bounds):
    """The visible Gaussians of start:end, in index order, from slot `at` on: their depth keys (IEEE bits made an
    unsigned key of the same order, negative floats flipped), indices and tile rectangles; `bounds` gets the
    smallest and largest key."""
    lowest, highest = np.uint32(0xFFFFFFFF), np.uint32(0)
    bits = depths.view(np.uint32)
    for g in range(start, end):
        if radii[g, 0] > 0 and radii[g, 1] > 0:
            b = bits[g]
            key = ~b if b >> np.uint32(31) else b | np.uint32(0x80000000)
            keys[at], idx[at] = key, g
            lowest, highest = min(lowest, key), max(highest, key)
            x0, y0, x1, y1 = _tile_bounds(means2d, radii, g, tiles_x, tiles_y)
            rects[at, 0], rects[at, 1], rects[at, 2], rects[at, 3] = x0, y0, x1, y1
            at += 1
    bounds[0], bounds[1] = lowest, highest


@njit(cache=True, nogil=True)
def _digit_run(keys, start, end, lowest, shift, counts):
    """Subtract `lowest` from keys start:end on the first pass; count their digits at `shift` into `counts`."""
    counts[:] = 0
    for i in range(start, end):
        if shift == 0:
            keys[i] -= lowest
        counts[(keys[i] >> np.uint32(shift)) & np.uint32(2047)] += 1


@njit(cache=True, nogil=True)
def _scatter_run(keys, idx, rects, start, end, shift, slots, keys_out, idx_out, rects_out):
    """Move keys start:end (with their indices and rectangles) to their digit's next slot, in order (stable)."""
    for i in range(start, end):
        digit = (keys[i] >> np.uint32(shift)) & np.uint32(2047)
        pos = slots[digit]
        slots[digit] = pos + 1
        keys_out[pos], idx_out[pos] = keys[i], idx[i]
        for c in range(4):
            rects_out[pos, c] = rects[i, c]


@njit(parallel=True, cache=True, nogil=True)
def sort_and_bound(
    depths,  # [N] float32
    radii,  # [N, 2] int32
    means2d,  # [N, 2] float32
    tiles_x,
    tiles_y,
    keys, keys_tmp,  # [N] uint32 work arrays
    idx, idx_tmp,  # [N] int64 work arrays
    rects, rects_tmp,  # [N, 4] int32 work arrays
    counts,  # [R, 2048] int64 work array: R runs (one: serial)
):
    """`sort_by_depth`'s order (the same indices) and, in that order, each Gaussian's tiles `[x0, y0, x1, y1)`:
    returns views `(order [M], rects [M, 4])` of the work arrays (a video loop reuses them).

    Faster than the plain sort followed by the binning's reads: the tile rectangles are computed while the visible
    Gaussians are gathered (in index order: sequential reads) and travel with the keys, so the binning reads them in
    depth order, sequentially; the radix passes only cover the bits in which the keys differ (their minimum
    subtracted: two 11-bit passes instead of three for a head's depth range); and every step runs on R runs of the
    arrays in parallel (per-run digit counts, a prefix sum over (digit, run), a stable scatter per run).
    """
    n, runs = depths.shape[0], counts.shape[0]
    step = (n + runs - 1) // runs
    starts = np.zeros(runs + 1, np.int64)
    for r in prange(runs):
        starts[r + 1] = _visible_run(radii, r * step, min(n, (r + 1) * step))
    for r in range(runs):
        starts[r + 1] += starts[r]
    m = starts[runs]
    bounds = np.empty((runs, 2), np.uint32)
    for r in prange(runs):
        _gather_run(depths, radii, means2d, tiles_x, tiles_y, r * step, min(n, (r + 1) * step), starts[r], keys, idx,
                    rects, bounds[r])
    lowest, highest = np.uint32(0xFFFFFFFF), np.uint32(0)
    for r in range(runs):
        if starts[r + 1] > starts[r]:
            lowest, highest = min(lowest, bounds[r, 0]), max(highest, bounds[r, 1])
    keys, keys_tmp, idx, idx_tmp = keys[:m], keys_tmp[:m], idx[:m], idx_tmp[:m]
    rects, rects_tmp = rects[:m], rects_tmp[:m]
    span = highest - lowest if m else np.uint32(0)
    step = (m + runs - 1) // runs
    shift = 0
    while shift == 0 or (shift < 32 and (span >> np.uint32(shift)) > 0):  # stable LSD passes of 11 bits
        for r in prange(runs):
            _digit_run(keys, r * step, min(m, (r + 1) * step), lowest, shift, counts[r])
        total = 0
        for d in range(2048):  # each run's first slot for each digit: digit-major, then run order
            for r in range(runs):
                here = counts[r, d]
                counts[r, d] = total
                total += here
        for r in prange(runs):
            _scatter_run(keys, idx, rects, r * step, min(m, (r + 1) * step), shift, counts[r], keys_tmp, idx_tmp,
                         rects_tmp)
        keys, keys_tmp, idx, idx_tmp, rects, rects_tmp = keys_tmp, keys, idx_tmp, idx, rects_tmp, rects
        shift += 11
    return idx, rects


@njit(cache=True, nogil=True)
def _count_run(rects, start, end, tiles_x, counts):
    """Tiles of the Gaussians start:end of the depth order counted into `counts [T]`."""
    counts[:] = 0
    for k in range(start, end):
        for ty in range(rects[k, 1], rects[k, 3]):
            for tx in range(rects[k, 0], rects[k, 2]):
                counts[ty * tiles_x + tx] += 1


@njit(cache=True, nogil=True)
def _fill_run(order, rects, start, end, tiles_x, slots, ids):
    """Write order[start:end] into the tile lists at `slots [T]` (each tile's next free slot for this run)."""
    for k in range(start, end):
        g = order[k]
        for ty in range(rects[k, 1], rects[k, 3]):
            for tx in range(rects[k, 0], rects[k, 2]):
                t = ty * tiles_x + tx
                ids[slots[t]] = g
                slots[t] += 1


@njit(cache=True, nogil=True)
def _rects_of(means2d, radii, order, tiles_x, tiles_y):
    rects = np.empty((order.shape[0], 4), np.int32)
    for k in range(order.shape[0]):
        rects[k, 0], rects[k, 1], rects[k, 2], rects[k, 3] = _tile_bounds(means2d, radii, order[k], tiles_x, tiles_y)
    return rects


def bin_gaussians_parallel(means2d, radii, order, tiles_x, tiles_y, chunks):
    """`bin_gaussians_to_tiles` on several threads (same output): `count_tiles_parallel`, then
    `fill_tiles_parallel`, in fresh arrays (the renderer passes reused ones, and rectangles from `sort_and_bound`)."""
    m, n_tiles = order.shape[0], tiles_x * tiles_y
    rects = _rects_of(means2d, radii, order, tiles_x, tiles_y)
    counts, offsets = np.empty((max(1, min(chunks, m)), n_tiles), np.int64), np.empty(n_tiles + 1, np.int64)
    ids = np.empty(count_tiles_parallel(rects, tiles_x, counts, offsets), np.int64)
    fill_tiles_parallel(order, rects, tiles_x, counts, ids)
    return offsets, ids


@njit(parallel=True, cache=True, nogil=True)
def count_tiles_parallel(
    rects,  # [M, 4] int32 tiles of the Gaussians in depth order (`sort_and_bound`)
    tiles_x,
    counts,  # [R, T] int64 written: R runs of the order; on return each run's first slot in each tile's list
    offsets,  # [T + 1] int64 written: tile t lists intersections offsets[t]:offsets[t + 1]
):
    """First half of the parallel binning: the depth order cut into R runs that count their tiles in parallel, and
    a prefix sum over (tile, run) that gives every run its slots in every tile's list (a tile lists run 0's
    Gaussians, then run 1's, ...: still front to back). Returns the number of intersections.
    """
    m, chunks, n_tiles = rects.shape[0], counts.shape[0], counts.shape[1]
    step = (m + chunks - 1) // chunks
    for c in prange(chunks):  # each run is one @njit call, as in `rasterize_forward`: faster than a parfor body
        _count_run(rects, c * step, min(m, (c + 1) * step), tiles_x, counts[c])
    total = 0
    for t in range(n_tiles):
        offsets[t] = total
        for c in range(chunks):
            here = counts[c, t]
            counts[c, t] = total
            total += here
    offsets[n_tiles] = total
    return total


@njit(parallel=True, cache=True, nogil=True)
def fill_tiles_parallel(order, rects, tiles_x, counts, ids):  # ids [K] written
    """Second half of the parallel binning: every run writes its Gaussians into its slots of the tile lists."""
    m, chunks = order.shape[0], counts.shape[0]
    step = (m + chunks - 1) // chunks
    for c in prange(chunks):
        _fill_run(order, rects, c * step, min(m, (c + 1) * step), tiles_x, counts[c], ids)
