"""Compiled (numba) per-frame work of the head models: what a video loop runs once per frame for ~5K vertices.

`expression_offsets` is `OpenHead.expression_offsets` without its `[B, V, K, 3]` intermediate: the readable torch
formula gathers K face-vertex displacements per vertex, multiplies them by their weights and sums over K (four
passes over ~120K values, ~0.5 ms a frame); the kernel does the same products and the same sum in one pass (~20 us).

Same bits, not nearly the same numbers: a Gaussian splatting image is not continuous in the vertices (a last-bit
change of one vertex can move a pixel by 1e-3), and video loops are compared with the torch formulas. Each product
is rounded on its own (torch multiplies, then sums: no fused multiply-add) and the K products are added in the
order PyTorch's CPU sum adds a short strided dimension. `matches_torch(K)` checks that once per process against the
torch formula, and `OpenHead` uses the formula when it fails (another PyTorch build may reduce differently).
"""

from __future__ import annotations

import logging

import numpy as np
import torch
from numba import njit

logger = logging.getLogger(__name__)


@njit(cache=True, nogil=True)
def expression_offsets(
    expression,  # [B, S, 3] float32 displacements of the S source (face) vertices
    sources,  # [V, K] int64: vertex v blends expression[:, sources[v, k]]; K < 64
    weights,  # [V, K] float32
    out,  # [B, V, 3] float32 written: sum_k weights[v, k] * expression[b, sources[v, k]]
):
    """`(expression[:, sources] * weights[None, :, :, None]).sum(2)`, bit for bit (module docstring): each product
    rounded, then PyTorch's order for a short strided sum (`row_sum` in ATen's SumKernel.cpp): four partial sums of
    every fourth product, then ((p0 + p1) + p2) + p3."""
    n_src, width = expression.shape[1], sources.shape[1]
    rows = width // 4
    partial = np.empty((4, 3), np.float32)
    for b in range(expression.shape[0]):
        for v in range(sources.shape[0]):
            partial[:] = 0.0
            for k in range(width):
                s, w = sources[v, k], weights[v, k]
                if s < 0 or s >= n_src:  # an asset error (torch would raise past the end; no bounds checks here)
                    raise IndexError("expression_sources holds an index outside the face vertices")
                lane = k % 4 if k < 4 * rows else 0  # the products past the last full group of four go to p0
                for d in range(3):
                    partial[lane, d] += expression[b, s, d] * w
            for d in range(3):
                out[b, v, d] = ((partial[0, d] + partial[1, d]) + partial[2, d]) + partial[3, d]


def expression_offsets_torch(expression: torch.Tensor, sources: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """The readable formula (any device, dtype, autograd): `[B, S, 3]`, `[V, K]`, `[V, K]` -> `[B, V, 3]`."""
    gathered = expression[:, sources]  # [B, V, K, 3]
    return (gathered * weights[None, :, :, None].to(expression.dtype)).sum(2)


_MATCHES: dict[int, bool] = {}
#: Widest K the kernel takes: from 64 on, PyTorch's sum adds the groups of four in a cascade of levels.
MAX_WIDTH = 63


def _reproduces_torch(width: int) -> bool:
    g = torch.Generator().manual_seed(0)
    expression = torch.randn(2, 468, 3, generator=g) * torch.rand(2, 468, 1, generator=g)
    sources = torch.randint(0, 468, (4096, width), generator=g)
    weights = torch.rand(4096, width, generator=g) * (torch.rand(4096, width, generator=g) < 0.7)
    out = torch.empty(2, 4096, 3)
    expression_offsets(expression.numpy(), sources.numpy(), weights.numpy(), out.numpy())
    return torch.equal(out, expression_offsets_torch(expression, sources, weights))


def matches_torch(width: int) -> bool:
    """Whether `expression_offsets` reproduces `expression_offsets_torch` bit for bit here for K = `width` (checked
    once per process and width, on random values with OpenHead's sizes, zero weights among them)."""
    if width not in _MATCHES:
        try:
            _MATCHES[width] = 0 < width <= MAX_WIDTH and _reproduces_torch(width)
        except Exception:  # noqa: BLE001 - any failure means "use the torch formula"
            logger.exception("compiled expression offsets failed their self-check")
            _MATCHES[width] = False
        if not _MATCHES[width]:
            logger.warning("compiled expression offsets do not reproduce this PyTorch build's rounding for K=%d; "
                           "OpenHead uses the (slower) torch formula", width)
    return _MATCHES[width]
