"""Compiled (numba) z-buffer of a triangle mesh: the CPU kernel behind `visibility.mesh_depth`.

It does exactly what the vectorised torch reference (`visibility._rasterize_depth_reference`, over
`triangles.covered_pixels`) does, triangle by triangle instead of over a list of candidate pixels: the same bounding
boxes, the same barycentric inside test with the same tolerance, the same perspective-correct depth (1/z linear in
the image), the nearest depth kept. The reference builds every (triangle, pixel) candidate as tensors, which costs
a hair-shell fit (five silhouettes) and the visibility test of every photo about a second on a small CPU; this loop
needs no memory beyond the output.
"""

from __future__ import annotations

import math

from numba import njit

__all__ = ["zbuffer_triangles"]


@njit(cache=True, nogil=True)
def zbuffer_triangles(tri_pix, tri_z, width, height, near, tolerance, out):
    """Keep in `out` ([H * W] float64, `inf` where empty) the nearest depth of every triangle at each pixel centre.

    Args:
        tri_pix: [F, 3, 2] float64 corner positions in pixel-index units (pixel centres at integers).
        tri_z: [F, 3] float64 camera-space depths of the corners; a triangle with a corner at or before `near` is
            skipped, as is a degenerate one (twice its area at most 1e-12 px²).
        tolerance: a pixel centre is inside when its smallest barycentric is at least `-tolerance`.
    """
    for f in range(tri_pix.shape[0]):
        z0, z1, z2 = tri_z[f, 0], tri_z[f, 1], tri_z[f, 2]
        if min(z0, min(z1, z2)) <= near:
            continue
        x0, y0 = tri_pix[f, 0, 0], tri_pix[f, 0, 1]
        e1x, e1y = tri_pix[f, 1, 0] - x0, tri_pix[f, 1, 1] - y0
        e2x, e2y = tri_pix[f, 2, 0] - x0, tri_pix[f, 2, 1] - y0
        area2 = e1x * e2y - e1y * e2x
        if abs(area2) <= 1e-12:
            continue
        lo_x = max(0, int(math.ceil(min(x0, min(tri_pix[f, 1, 0], tri_pix[f, 2, 0])) - 1e-7)))
        lo_y = max(0, int(math.ceil(min(y0, min(tri_pix[f, 1, 1], tri_pix[f, 2, 1])) - 1e-7)))
        hi_x = min(width - 1, int(math.floor(max(x0, max(tri_pix[f, 1, 0], tri_pix[f, 2, 0])) + 1e-7)))
        hi_y = min(height - 1, int(math.floor(max(y0, max(tri_pix[f, 1, 1], tri_pix[f, 2, 1])) + 1e-7)))
        for row in range(lo_y, hi_y + 1):
            dy = row - y0
            for col in range(lo_x, hi_x + 1):
                dx = col - x0
                b1 = (dx * e2y - dy * e2x) / area2
                b2 = (e1x * dy - e1y * dx) / area2
                b0 = 1.0 - b1 - b2
                if min(b0, min(b1, b2)) < -tolerance:
                    continue
                b0, b1, b2 = max(b0, 0.0), max(b1, 0.0), max(b2, 0.0)
                inv_z = (b0 / z0 + b1 / z1 + b2 / z2) / (b0 + b1 + b2)
                depth = 1.0 / inv_z
                pixel = row * width + col
                if depth < out[pixel]:
                    out[pixel] = depth
