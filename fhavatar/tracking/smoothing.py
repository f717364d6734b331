"""Temporal filters for tracked signals (landmarks, crops, poses) of a video: Gaussian / edge-preserving smoothing
along time and the filling of frames without a face (`track_video`), and their causal counterpart for a live stream,
where no later frame is known yet (`OnlineSmoother`, used by `LiveTracker`)."""

from __future__ import annotations

import math

import numpy as np

__all__ = ["OnlineSmoother", "interpolate_missing", "smooth_sequence"]


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


class OnlineSmoother:
    """Causal exponential smoothing, frame by frame: the live counterpart of `smooth_sequence`.

    `y_t = x_t + (1 - alpha) w_t (y_{t-1} - x_t)`, with `alpha` chosen so that the filter's impulse response has the
    variance of a Gaussian of `sigma` frames (`(1 - alpha) / alpha^2 = sigma^2`: alpha 0.62 at sigma 1, a lag of
    0.6 frames), and `w_t = exp(-|y_{t-1} - x_t|^2 / (2 range_scale^2))` (1 without `range_scale`): as in
    `smooth_sequence`, a change larger than `range_scale` goes through at once while smaller jitter is averaged out.

    Args:
        sigma (`float`): the smoothing strength in frames, as `smooth_sequence`'s; `<= 0` passes values through.

    Example:
        ```py
        >>> import numpy as np
        >>> from fhavatar.tracking.smoothing import OnlineSmoother
        >>> smoother = OnlineSmoother(1.0)
        >>> [round(float(smoother(np.array([x]))[0]), 2) for x in (0.0, 1.0, 1.0)]
        [0.0, 0.62, 0.85]

        ```
    """

    def __init__(self, sigma: float):
        if not (isinstance(sigma, (int, float)) and math.isfinite(sigma)):
            raise ValueError(f"`sigma` must be a finite number of frames, got {sigma!r}.")
        self.alpha = 1.0 if sigma <= 0 else (math.sqrt(1.0 + 4.0 * sigma**2) - 1.0) / (2.0 * sigma**2)
        self.state: np.ndarray | None = None

    def reset(self) -> None:
        """Forget the past (the next value passes through)."""
        self.state = None

    def __call__(
        self,
        x: np.ndarray,  # [..., C]
        range_scale: np.ndarray | float | None = None,  # broadcastable to [...]
    ) -> np.ndarray:  # [..., C]
        x = np.asarray(x, dtype=np.float64)
        if self.state is None or self.state.shape != x.shape:
            self.state = x.copy()
            return x.copy()
        keep = np.full(x.shape[:-1], 1.0 - self.alpha)
        if range_scale is not None:
            keep = keep * np.exp(-0.5 * (np.linalg.norm(self.state - x, axis=-1) / range_scale) ** 2)
        self.state = x + keep[..., None] * (self.state - x)
        return self.state.copy()
