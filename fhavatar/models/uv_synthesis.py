"""Texture for what the photo cannot show, synthesised from what it does show (the back of the head, the nape).

OpenHead's atlas lays the cranium out by angle: u = 0.5 + azimuth / 2π around the head (the back seam at u = 0 and
1), v by arc length from the crown down. A row of the atlas is one height on the head, and hair falls along the rows'
perpendicular, so a row's seen texels are the exemplar for its unseen ones: each unseen texel copies a confidently
seen texel of its own row (or of the nearest row that has some), reflected back and forth across the seen span
(a mirror tiling: neighbours stay neighbours, so strands and curls continue instead of breaking into noise). Only
texels of the given source regions (scalp and neck; ears are too distinctive to repeat) are sources: the face is
never copied onto the back; and given the
photo's hair and skin colours, only texels closer to the hair colour (the forehead's skin above a low template
hairline is not hair).
"""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor

__all__ = ["MIN_SOURCE_CONFIDENCE", "hair_like", "synthesize_unseen"]

#: Projected colours at least this confident are exemplars (grazing and rim texels are not).
MIN_SOURCE_CONFIDENCE = 0.6
#: A row needs at least this many seen texels to be an exemplar of its own.
MIN_ROW_SOURCES = 4
#: Hair and skin colours closer than this (RGB distance) cannot be told apart: every seen texel is a source.
MIN_HAIR_SKIN_DISTANCE = 0.1


def hair_like(
    colors: Tensor,  # [B, 3, K, K]
    hair: Tensor,  # [B, 3] the photo's hair colour
    skin: Tensor,  # [B, 3] the photo's skin colour
) -> Tensor:  # -> [B, 1, K, K] bool
    """Texels whose colour is nearer the hair's than the skin's; all of them where the two cannot be told apart."""
    to_hair = (colors - hair[:, :, None, None]).norm(dim=1, keepdim=True)
    to_skin = (colors - skin[:, :, None, None]).norm(dim=1, keepdim=True)
    distinct = (hair - skin).norm(dim=1) > MIN_HAIR_SKIN_DISTANCE
    return (to_hair < to_skin) | ~distinct[:, None, None, None]


def _row_sources(source: np.ndarray) -> tuple[list[np.ndarray], np.ndarray]:
    """Per row, the sorted columns of its sources; and for every row, the nearest row with enough of them."""
    k = source.shape[0]
    columns = [np.flatnonzero(row) for row in source]
    rich = np.array([len(c) >= MIN_ROW_SOURCES for c in columns])
    if not rich.any():
        return columns, np.full(k, -1)
    rich_rows = np.flatnonzero(rich)
    nearest = rich_rows[np.abs(np.arange(k)[:, None] - rich_rows[None]).argmin(1)]
    return columns, nearest


def _reflect(distance: np.ndarray, count: int) -> np.ndarray:  # [N] >= 1 -> [N] in [0, count)
    """Mirror tiling: 1, 2, ... steps beyond one end of a span of `count` texels walk back into it and out again."""
    period = 2 * count
    k = (distance - 1) % period
    return np.where(k < count, k, period - 1 - k)


@torch.no_grad()
def synthesize_unseen(
    colors: Tensor,  # [B, 3, K, K] projected photo colours
    confidence: Tensor,  # [B, 1, K, K] in [0, 1], 0 where unseen
    regions: Tensor,  # [K, K] bool, the texels to fill (scalp, ears, neck)
    sources: Tensor | None = None,  # [K, K] bool, the texels that may be copied (default: `regions`)
    hair: Tensor | None = None,  # [B, 3] the photo's hair colour
    skin: Tensor | None = None,  # [B, 3] the photo's skin colour
) -> tuple[Tensor, Tensor]:  # -> [B, 3, K, K], [B, 1, K, K] bool
    """Colours for the texels of `regions` the photo does not show confidently, copied from those it does.

    A source is a confidently seen texel of `sources`; with `hair` and `skin` (distinct enough), only if its colour
    is nearer the hair's.

    Returns:
        `(synthesised [B, 3, K, K], filled [B, 1, K, K])`: `filled` marks the texels that received a colour (unseen
        texels of `regions` in a photo with any confident source there); elsewhere `synthesised` is `colors`.
    """
    batch, _, k, _ = colors.shape
    out = colors.clone()
    filled = torch.zeros(batch, 1, k, k, dtype=torch.bool, device=colors.device)
    region = regions.cpu().numpy().astype(bool)
    allowed = region if sources is None else sources.cpu().numpy().astype(bool)
    for b in range(batch):
        source = (confidence[b, 0].cpu().numpy() >= MIN_SOURCE_CONFIDENCE) & allowed
        if hair is not None and skin is not None:
            source &= hair_like(colors[b : b + 1], hair[b : b + 1], skin[b : b + 1])[0, 0].cpu().numpy()
        columns, nearest = _row_sources(source)
        if (nearest < 0).all():
            continue
        target = region & ~(confidence[b, 0].cpu().numpy() >= MIN_SOURCE_CONFIDENCE)
        rows_t, cols_t = np.nonzero(target)
        src_rows = nearest[rows_t]
        src_cols = np.empty_like(cols_t)
        for row in np.unique(src_rows):
            pick = src_rows == row
            span, c = columns[row], cols_t[pick]
            # Beyond the seen span: reflected back into it from the end it left; inside a gap: the nearest source.
            after, before = c > span[-1], c < span[0]
            chosen = span[np.abs(c[:, None] - span[None]).argmin(1)]
            chosen[after] = span[::-1][_reflect(c[after] - span[-1], len(span))]
            chosen[before] = span[_reflect(span[0] - c[before], len(span))]
            src_cols[pick] = chosen
        rows_t_, cols_t_ = torch.from_numpy(rows_t), torch.from_numpy(cols_t)
        out[b, :, rows_t_, cols_t_] = colors[b, :, torch.from_numpy(src_rows), torch.from_numpy(src_cols)]
        filled[b, 0, rows_t_, cols_t_] = True
    return out, filled
