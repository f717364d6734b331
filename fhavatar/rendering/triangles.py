"""Vectorised enumeration of the pixel centres covered by 2D triangles (shared by the UV atlas rasteriser and
the mesh z-buffer of the visibility test)."""

from __future__ import annotations

from collections.abc import Iterator

import torch
from torch import Tensor

__all__ = ["covered_pixels"]


def covered_pixels(
    tri_pix: Tensor,  # [F, 3, 2] float, vertex positions in pixel units (pixel centres at integers)
    width: int,
    height: int,
    usable: Tensor | None = None,  # [F] bool, triangles to skip when False
    chunk: int = 1 << 20,
    tolerance: float = 1e-9,
) -> Iterator[tuple[Tensor, Tensor, Tensor, Tensor]]:
    """Yield `(face [M], row [M], col [M], barycentrics [M, 3])` for every pixel centre inside a triangle.

    Each triangle enumerates the integer points of its clipped bounding box; a point counts as inside when its
    smallest barycentric is ≥ `-tolerance` (barycentrics are returned as computed: slightly negative values
    possible). Degenerate triangles (|area| ≤ 1e-12 px²) are skipped. Work goes in chunks of about `chunk`
    candidates, in face order, so memory stays bounded for any mesh and resolution.
    """
    device = tri_pix.device
    e1, e2 = tri_pix[:, 1] - tri_pix[:, 0], tri_pix[:, 2] - tri_pix[:, 0]
    area2 = e1[:, 0] * e2[:, 1] - e1[:, 1] * e2[:, 0]  # twice the signed area, in pixels²
    lo = (tri_pix.amin(1) - 1e-7).ceil().long()
    hi = (tri_pix.amax(1) + 1e-7).floor().long()
    lo[:, 0].clamp_(min=0)
    lo[:, 1].clamp_(min=0)
    hi[:, 0].clamp_(max=width - 1)
    hi[:, 1].clamp_(max=height - 1)
    size = (hi - lo + 1).clamp(min=0)
    keep = area2.abs() > 1e-12
    if usable is not None:
        keep = keep & usable
    count = size[:, 0] * size[:, 1] * keep
    ends = count.cumsum(0)
    start = 0
    while start < tri_pix.shape[0]:
        # Faces [start, stop): at least one, at most `chunk` candidates unless one face alone has more.
        base = int(ends[start - 1]) if start else 0
        stop = max(start + 1, int(torch.searchsorted(ends, base + chunk, right=True)))
        f = torch.arange(start, stop, device=device).repeat_interleave(count[start:stop])
        start = stop
        if f.numel() == 0:
            continue
        offset = torch.arange(f.numel(), device=device) + base - (ends[f] - count[f])  # pixel within the box
        col = lo[f, 0] + offset % size[f, 0]
        row = lo[f, 1] + offset // size[f, 0]
        d = torch.stack([col, row], -1).to(tri_pix.dtype) - tri_pix[f, 0]
        b1 = (d[:, 0] * e2[f, 1] - d[:, 1] * e2[f, 0]) / area2[f]
        b2 = (e1[f, 0] * d[:, 1] - e1[f, 1] * d[:, 0]) / area2[f]
        bary = torch.stack([1 - b1 - b2, b1, b2], -1)
        inside = bary.amin(-1) >= -tolerance
        yield f[inside], row[inside], col[inside], bary[inside]
