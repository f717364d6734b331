"""Patch-based texture for the unseen texels: image quilting in UV space, guided by the row synthesis.

`uv_synthesis.synthesize_unseen` gives every unseen scalp and neck texel a plausible colour from its own row (the
guide: which colour goes where, darker hair low on the nape, skin on a bare neck), but a texel-by-texel copy smears
what it copies: the rows it reads near the crown are seen at a glancing angle, and one row repeated down a region
reads as streaks. This module re-draws those texels from whole patches of the photo's own confidently seen texels
(Efros & Freeman's image quilting, 2001): the unseen area is covered in raster order by `P×P` patches stepping
`P - O`; each patch is picked among the seen ones by how well it continues what is already there (squared
difference over the texels already known inside its window: seen texels and earlier patches) and how well its mean
colour matches the guide's there; neighbouring patches cross-fade over their overlap. Patches keep their
orientation: in OpenHead's atlas v is height on the head, so strands that fall down beside the face fall down on
the back too.

The cranium's atlas wraps around the head (u = 0 and u = 1 are both the back midline): the maps are rolled by half a
width first, so the back is one contiguous area without a seam down its middle.
"""

from __future__ import annotations

import numpy as np
import torch
from scipy.ndimage import gaussian_filter, gaussian_filter1d
from torch import Tensor

__all__ = ["quilt_unseen"]

#: Patch side as a fraction of the atlas size K (13 texels at K = 256), and the smallest allowed.
PATCH_FRACTION = 0.05
MIN_PATCH = 5
#: At most this many candidate patches are compared at each step (a fixed random subset of all seen windows).
MAX_CANDIDATES = 2048
#: Weight of the guide's colour against the continuation of the known texels (both mean squared RGB differences).
GUIDE_WEIGHT = 2.0
#: Any candidate within this relative margin of the best error may be drawn (variety instead of one repeated patch).
TOLERANCE = 0.15
#: Fewer seen windows than this and quilting is skipped (the guide stays): too little to draw from.
MIN_WINDOWS = 8
#: Standard deviation, in texels, of the blur whose residue is the texel-scale detail that `sharpen` amplifies.
SHARPEN_SIGMA = 1.0


def _full_windows(mask: np.ndarray, p: int) -> np.ndarray:  # [H, W] bool -> [N, 2] (row, col) of top-left corners
    """Top-left corners of the `p×p` windows that lie entirely inside `mask`."""
    integral = np.pad(mask.astype(np.int32).cumsum(0).cumsum(1), ((1, 0), (1, 0)))
    counts = integral[p:, p:] - integral[:-p, p:] - integral[p:, :-p] + integral[:-p, :-p]
    return np.argwhere(counts == p * p)


def _ramp(p: int, o: int) -> np.ndarray:  # [p] in (0, 1]
    """1-D cross-fade weight of a patch: rising over its first `o` texels, falling over its last `o`."""
    t = np.ones(p, dtype=np.float32)
    edge = (np.arange(o, dtype=np.float32) + 1) / (o + 1)
    t[:o], t[p - o :] = edge, edge[::-1]
    return t


def _positions(lo: int, hi: int, p: int, step: int, size: int) -> list[int]:
    """Window starts covering rows (or columns) `lo..hi` inclusive, inside `[0, size - p]`."""
    starts = list(range(max(0, lo - p // 2), max(0, hi - p + 1) + 1, step)) or [max(0, min(lo, size - p))]
    last = min(size - p, max(starts[-1], hi - p + 1))
    if last > starts[-1]:
        starts.append(last)
    return [min(s, size - p) for s in starts]


def _quilt_one(detail: np.ndarray, mean: np.ndarray, known: np.ndarray, target: np.ndarray, source: np.ndarray,
               guide: np.ndarray, p: int, o: int, rng: np.random.Generator) -> np.ndarray | None:
    """One atlas: `detail`, its local `mean` and the `guide`'s mean [K, K, 3]; masks [K, K] bool.

    Returns the quilted detail (the known detail elsewhere), or None when `source` holds too few whole windows."""
    corners = _full_windows(source, p)
    if len(corners) < MIN_WINDOWS:
        return None
    if len(corners) > MAX_CANDIDATES:
        corners = corners[np.sort(rng.choice(len(corners), MAX_CANDIDATES, replace=False))]
    offsets = np.arange(p)
    at_rows, at_cols = corners[:, 0, None, None] + offsets[:, None], corners[:, 1, None, None] + offsets[None, :]
    patches = detail[at_rows, at_cols]  # [N, P, P, 3]
    flat = patches.reshape(len(corners), -1)  # [N, P*P*3]
    squares = flat**2
    means = mean[at_rows, at_cols].mean((1, 2))  # [N, 3] the seen mean colour where each patch comes from

    canvas = np.where(known[..., None], detail, 0).astype(np.float32)
    weight_sum = np.zeros(target.shape, dtype=np.float32)
    accum = np.zeros(detail.shape, dtype=np.float32)
    window = _ramp(p, o)[:, None] * _ramp(p, o)[None, :]
    known = known.copy()
    rows, cols = np.nonzero(target)
    step = p - o
    for r in _positions(rows.min(), rows.max(), p, step, target.shape[0]):
        band = target[r : r + p]
        if not band.any():
            continue
        band_cols = np.flatnonzero(band.any(0))
        for c in _positions(band_cols.min(), band_cols.max(), p, step, target.shape[1]):
            here = target[r : r + p, c : c + p]
            if not here.any():
                continue
            mask = np.repeat(known[r : r + p, c : c + p].astype(np.float32)[..., None], 3, -1).reshape(-1)
            seen = canvas[r : r + p, c : c + p].reshape(-1)
            # Masked squared difference Σ m (x - y)² = Σ m x² - 2 Σ m x y + Σ m y², as matrix-vector products.
            count = max(float(mask.sum()), 1.0)
            overlap = (squares @ mask - 2 * flat @ (mask * seen) + float((mask * seen**2).sum())) / count
            wanted = guide[r : r + p, c : c + p][here].mean(0)
            error = overlap + GUIDE_WEIGHT * ((means - wanted) ** 2).mean(1)
            pool = np.flatnonzero(error <= error.min() * (1 + TOLERANCE) + 1e-8)
            patch = patches[rng.choice(pool)]
            w = window * here
            accum[r : r + p, c : c + p] += w[..., None] * patch
            weight_sum[r : r + p, c : c + p] += w
            done = here & (weight_sum[r : r + p, c : c + p] > 0)
            canvas[r : r + p, c : c + p][done] = (accum[r : r + p, c : c + p][done]
                                                  / weight_sum[r : r + p, c : c + p][done, None])
            known[r : r + p, c : c + p] |= done
    return canvas


def _lowpass(picture: np.ndarray, mask: np.ndarray, radius: int) -> np.ndarray:  # [K, K, 3], [K, K] -> [K, K, 3]
    """Box blur of `picture` over the texels of `mask` only (normalised), with the u-wrap of the rolled atlas."""
    weights = torch.from_numpy(mask.astype(np.float32))[None, None]
    values = torch.from_numpy(picture).permute(2, 0, 1)[None] * weights
    both = torch.cat([values, weights], 1)
    both = torch.nn.functional.pad(both, (radius, radius, 0, 0), mode="circular")
    both = torch.nn.functional.avg_pool2d(both, 2 * radius + 1, 1, (radius, 0), count_include_pad=False)
    return (both[0, :3] / both[0, 3:].clamp(min=1e-6)).permute(1, 2, 0).numpy()


def _along_flow(detail: np.ndarray, target: np.ndarray, sigma: float) -> np.ndarray:  # [K, K, 3], [K, K] bool
    """`detail` on `target` smoothed along the rows' axis (v), rescaled to its former standard deviation there."""
    weights = gaussian_filter1d(target.astype(np.float32), sigma, axis=0, mode="nearest")
    smooth = gaussian_filter1d(detail * target[..., None], sigma, axis=0, mode="nearest")
    smooth = np.where(target[..., None], smooth / np.maximum(weights, 1e-6)[..., None], detail)
    before, after = detail[target].std(0), smooth[target].std(0)
    return np.where(target[..., None], smooth * (before / np.maximum(after, 1e-6)), detail).astype(np.float32)


@torch.no_grad()
def quilt_unseen(
    colors: Tensor,  # [B, 3, K, K] projected photo colours (read where `known`)
    known: Tensor,  # [B, 1, K, K] bool, confidently seen texels: the patches' sources and the fixed surroundings
    targets: Tensor,  # [K, K] or [B, 1, K, K] bool, the texels to re-draw
    sources: Tensor,  # [K, K] or [B, 1, K, K] bool, the texels patches may be taken from (where also `known`)
    guide: Tensor,  # [B, 3, K, K] the colour each target should have on average (e.g. `synthesize_unseen`'s)
    flow: float = 0.0,
    gain: float = 1.0,
    sharpen: float = 0.0,
    seed: int = 0,
) -> tuple[Tensor, Tensor]:  # -> [B, 3, K, K], [B, 1, K, K] bool
    """Re-draw the `targets` texels: the guide's local mean colour plus quilted detail of the seen texture.

    The seen texels are split into a local mean (a box blur over `P` texels) and detail (the rest); the detail is
    quilted (see the module docstring: patches chosen to continue the detail already there and to come from where
    the seen mean colour is like the guide's), and added to the guide's own local mean. Deterministic for a given
    `seed`. Atlases with fewer than `MIN_WINDOWS` fully seen source windows are left as `guide`.

    Args:
        flow (`float`, *optional*, defaults to 0): if positive, the quilted detail is smoothed along v (atlas rows)
            with a Gaussian of this standard deviation in texels and brought back to its former spread: strands.
            OpenHead's cranium rows are circles of latitude around the crown, so v is the direction of hair combed
            down from the crown everywhere on the head.
        gain (`float`, *optional*, defaults to 1): the quilted detail is multiplied by this before it is added.
        sharpen (`float`, *optional*, defaults to 0): the quilted detail's texel-scale part (the detail minus its
            Gaussian blur of `SHARPEN_SIGMA` texels) is amplified by `1 + sharpen` on top of `gain`: the splats that
            draw the atlas render a 2-texel pattern at about a third of its contrast and a 4-texel one at two thirds,
            so the finest quilted strands need more contrast in the atlas to show in a render.

    Returns:
        `(colours [B, 3, K, K], quilted [B, 1, K, K])`: `guide` with the quilted texels replaced, and where that was.
    """
    batch, _, k, _ = colors.shape
    if targets.dim() == 2:
        targets = targets[None, None].expand(batch, 1, k, k)
    p = max(MIN_PATCH, round(PATCH_FRACTION * k))
    o = max(1, p // 3)
    radius = max(1, p // 2)
    half = k // 2
    out, quilted = guide.clone(), torch.zeros(batch, 1, k, k, dtype=torch.bool, device=colors.device)
    roll = lambda a: np.roll(a, half, axis=1)  # noqa: E731  (u -> u + 1/2: the back midline to the middle)
    if sources.dim() == 2:
        sources = sources[None, None].expand(batch, 1, k, k)
    for b in range(batch):
        allowed = roll(sources[b, 0].cpu().numpy().astype(bool))
        target = roll(targets[b, 0].cpu().numpy().astype(bool))
        seen = roll(known[b, 0].cpu().numpy().astype(bool)) & ~target
        if not target.any():
            continue
        picture = roll(colors[b].permute(1, 2, 0).float().cpu().numpy())
        wanted = roll(guide[b].permute(1, 2, 0).float().cpu().numpy())
        seen_mean = _lowpass(picture, seen, radius)
        detail = np.where(seen[..., None], picture - seen_mean, 0).astype(np.float32)
        guide_mean = _lowpass(np.where(seen[..., None], picture, wanted), seen | target, radius)
        result = _quilt_one(detail, seen_mean, seen, target, seen & allowed, guide_mean, p, o,
                            np.random.default_rng(seed))
        if result is None:
            continue
        done = np.roll(target, -half, axis=1)
        if flow > 0:
            result = _along_flow(result, target, flow)
        if sharpen > 0:  # unsharp masking of the quilted detail alone (the guide's mean colour is left as it is)
            result = result + sharpen * (result - gaussian_filter(result, (SHARPEN_SIGMA, SHARPEN_SIGMA, 0)))
        values = np.clip(guide_mean + gain * result, 0, 1)
        out[b, :, torch.from_numpy(done)] = torch.from_numpy(np.roll(values, -half, axis=1)[done]).T.to(out)
        quilted[b, 0] = torch.from_numpy(done)
    return out, quilted
