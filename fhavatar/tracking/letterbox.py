"""Letterbox and pillarbox bars: the black bands a video or photo was padded with, which show nothing of the scene.

Person segmentation calls a black band under a body part of the person (it touches the shoulders), so the avatar's
bust would take the band's black and a re-enactment would be compared with it. The trackers (`track_image`,
`track_video`) replace every bar by the picture's own edge line next to it, repeated outward: what the PanoHead crop
already does with the area outside the photo (`CropTransform.warp`'s replicated border), so a band and the outside
look alike and the body simply continues to the crop's edge.

A bar is a run of whole rows (top or bottom) or whole columns (left or right), starting at the image's edge, in which
no pixel of any frame is brighter than `BAR_LEVEL`, that ends at a line clearly brighter on average
(`MIN_CONTENT_MEAN`): a dark backdrop fading out toward the edge is not a bar. Bars take at most `MAX_BAR_FRACTION` of
the image's height or width.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

import numpy as np

__all__ = ["BAR_LEVEL", "Bars", "fill_bars", "find_bars", "remove_bars"]

logger = logging.getLogger(__name__)

#: The brightest value (of 255) any pixel of a bar may have in any frame (encoded black is 0-5; noise and ringing).
BAR_LEVEL = 16
#: The line next to a bar must be at least this bright on average (of 255).
MIN_CONTENT_MEAN = 40
#: A bar is at least this many lines thick.
MIN_BAR_LINES = 2
#: At most this fraction of the height (top and bottom bars each) or of the width (left and right).
MAX_BAR_FRACTION = 0.25

#: Lines of bars at each edge: `(top, bottom, left, right)`.
Bars = tuple[int, int, int, int]


def _edge_run(line_max: np.ndarray, line_mean) -> int:  # [L] from the edge inward, (index -> mean) -> bar lines
    limit = int(MAX_BAR_FRACTION * len(line_max))
    dark = line_max[: limit + 1] <= BAR_LEVEL
    run = len(dark) if dark.all() else int(np.argmin(dark))
    if run < MIN_BAR_LINES or run > limit or line_mean(run) < MIN_CONTENT_MEAN:
        return 0
    return run


def find_bars(frames: Sequence[np.ndarray] | np.ndarray) -> Bars:  # [T, H, W, 3] or [H, W, 3] uint8
    """The bars of a photo (`[H, W, 3]`) or of a whole clip (`[T, H, W, 3]` or a list of frames of one size: a line
    is a bar only if it is dark in every frame), as line counts `(top, bottom, left, right)`; zeros when none."""
    if isinstance(frames, np.ndarray) and frames.ndim == 3:
        frames = [frames]
    elif not isinstance(frames, (np.ndarray, Sequence)):  # an iterator: read twice below (maxima, then line means)
        frames = list(frames)
    rows_max, cols_max = None, None
    for frame in frames:  # frame by frame (a long clip is never stacked), with reductions over contiguous memory
        if frame.ndim != 3 or frame.shape[-1] != 3:  # (too small a picture is the caller's to refuse)
            raise ValueError(f"`frames` must be uint8 [H, W, 3] images, got shape {frame.shape}.")
        flat = np.ascontiguousarray(frame).reshape(frame.shape[0], -1)
        row, col = flat.max(1), flat.max(0).reshape(frame.shape[1], 3).max(1)
        if rows_max is None:
            rows_max, cols_max = row, col
        elif (len(row), len(col)) != (len(rows_max), len(cols_max)):
            raise ValueError(f"`frames` must all have one size, got {(len(rows_max), len(cols_max))} and "
                             f"{frame.shape[:2]}.")
        else:
            rows_max, cols_max = np.maximum(rows_max, row), np.maximum(cols_max, col)
    if rows_max is None:
        raise ValueError("`frames` is empty.")
    height, width = len(rows_max), len(cols_max)

    def row_mean(index: int) -> float:  # the mean brightness of one row over all frames
        return float(np.mean([frame[index].mean() for frame in frames]))

    def col_mean(index: int) -> float:
        return float(np.mean([frame[:, index].mean() for frame in frames]))

    return (_edge_run(rows_max, row_mean), _edge_run(rows_max[::-1], lambda i: row_mean(height - 1 - i)),
            _edge_run(cols_max, col_mean), _edge_run(cols_max[::-1], lambda i: col_mean(width - 1 - i)))


def fill_bars(image: np.ndarray, bars: Bars) -> np.ndarray:  # [H, W, 3] -> [H, W, 3]
    """`image` with each bar replaced by the edge line next to it, repeated outward (a copy; `image` itself when
    there are no bars)."""
    top, bottom, left, right = bars
    if not any(bars):
        return image
    height, width = image.shape[:2]
    out = image.copy()
    out[:top] = out[top]  # rows first, so the corners take the picture's corner once the columns follow
    out[height - bottom :] = out[height - 1 - bottom]
    out[:, :left] = out[:, left : left + 1]
    out[:, width - right :] = out[:, width - 1 - right : width - right]
    return out


def remove_bars(frames: list[np.ndarray]) -> list[np.ndarray]:
    """`frames` (one photo or a clip's frames, uint8 `[H, W, 3]` of one size) with the bars they share filled in."""
    bars = find_bars(frames)
    if any(bars):
        logger.info("letterbox bars (top, bottom, left, right) = %s lines: filled with the picture's edge", bars)
    return [fill_bars(frame, bars) for frame in frames]
