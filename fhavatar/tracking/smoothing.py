"""Temporal filters for tracked signals (landmarks, crops, poses) of a video: Gaussian / edge-preserving smoothing
along time and the filling of frames without a face (`track_video`)."""

from __future__ import annotations

import math

import numpy as np

__all__ = ["interpolate_missing", "smooth_sequence"]


def smooth_sequence(
    x: np.ndarray,  # [T, ..., C]
    sigma: float,
    range_scale: np.ndarray | None = None,  # broadcastable to [T, ...]
) -> np.ndarray:  # [T, ..., C]
    """Centred Gaussian smoothing along time (axis 0), truncated at 2.5 sigma and renormalised at the ends.

    Args:
        x (`np.ndarray` of shape `[T, ..., C]`): the signal (e.g. landmarks `[T, 478, 3]`, poses `[T, 9]`).
        sigma (`float`): Gaussian sigma in frames; `<= 0` returns a copy.
        range_scale (`np.ndarray`, *optional*): makes the filter edge-preserving (temporal bilateral): each
            neighbour is also weighted by `exp(-|x_s - x_t|^2 / (2 range_scale^2))`, the distance taken over the last
            axis, so motions larger than `range_scale` are kept while smaller jitter is averaged out.
    """
    x = np.asarray(x, dtype=np.float64)
    steps = len(x)
    if sigma <= 0 or steps < 2:
        return x.copy()
    radius = max(1, math.ceil(2.5 * sigma))
    num = np.zeros_like(x)
    den = np.zeros(x.shape[:-1])  # [T, ...]
    t = np.arange(steps)
    for offset in range(-radius, radius + 1):
        src = t + offset
        valid = ((src >= 0) & (src < steps)).astype(np.float64)
        shifted = x[np.clip(src, 0, steps - 1)]
        w = (math.exp(-0.5 * (offset / sigma) ** 2) * valid).reshape((-1,) + (1,) * (x.ndim - 2))
        if range_scale is not None:
            w = w * np.exp(-0.5 * (np.linalg.norm(shifted - x, axis=-1) / range_scale) ** 2)
        w = np.broadcast_to(w, den.shape)
        num += w[..., None] * shifted
        den += w
    return num / den[..., None]


def interpolate_missing(values: np.ndarray, present: np.ndarray) -> np.ndarray:  # [T, ...], [T] bool -> [T, ...]
    """Fill the rows of `values` where `present` is False, linearly in time between the nearest present rows
    (the nearest one before the first / after the last)."""
    values, present = np.asarray(values, dtype=np.float64), np.asarray(present, dtype=bool)
    if present.shape != values.shape[:1] or not present.any():
        raise ValueError(f"`present` must be a [T={len(values)}] bool mask with at least one True, got "
                         f"shape {present.shape} with {int(present.sum())} True.")
    idx, t = np.flatnonzero(present), np.arange(len(values))
    flat = values.reshape(len(values), -1)
    return np.stack([np.interp(t, idx, flat[idx, k]) for k in range(flat.shape[1])], 1).reshape(values.shape)
