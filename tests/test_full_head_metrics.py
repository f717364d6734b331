"""`fhavatar.metrics.full_head`: head rows, head IoU, matte PSNR, back texture and the face hull."""

import math

import numpy as np
import pytest
import torch

from fhavatar.metrics import psnr
from fhavatar.metrics.full_head import (
    back_texture,
    face_hull,
    head_iou,
    head_rows,
    laplacian_spread,
    luminance,
    matte_psnr,
)

S = 64


def _disc(cx, cy, r, size=S):
    ys, xs = torch.meshgrid(torch.arange(size) + 0.5, torch.arange(size) + 0.5, indexing="ij")
    return ((xs - cx) ** 2 + (ys - cy) ** 2 < r * r).float()


def test_head_rows_end_below_the_chin():
    rows = head_rows(chin_y=40.0, size=S)  # 40 + 0.1 * 64 = 46.4: rows 0..45 (centres < 46.4)
    assert rows.shape == (S, S) and rows[:, 0].sum() == 46 and rows[45].all() and not rows[46].any()


def test_head_iou_counts_only_the_head_rows():
    rows = head_rows(30.0, S)
    matte = _disc(32, 24, 14)
    assert head_iou(matte, matte, rows) == 1.0
    assert head_iou(torch.zeros(S, S), matte, rows) == 0.0
    assert head_iou(torch.zeros(S, S), torch.zeros(S, S), rows) == 1.0
    torso = matte.clone()
    torso[50:] = 1.0  # the torso, below the head rows, does not count
    assert head_iou(matte, torso, rows) == 1.0
    half = matte.clone()
    half[:, 32:] = 0
    expected = float(((half > 0.5) & rows).sum() / ((matte > 0.5) & rows).sum())
    assert head_iou(half, matte, rows) == pytest.approx(expected)
    with pytest.raises(ValueError, match="alpha"):
        head_iou(torch.zeros(S, S + 1), matte, rows)


def test_matte_psnr_charges_gaps_with_the_complementary_colour():
    g = torch.Generator().manual_seed(0)
    photo = torch.rand(3, S, S, generator=g)
    matte, rows = _disc(32, 24, 14), head_rows(40.0, S)
    region = ((matte > 0.5) & rows).float()
    # a full-coverage render that is off by 0.05 everywhere: 26.0 dB
    alpha = torch.ones(S, S)
    assert matte_psnr((photo + 0.05).clamp(0, 1), alpha, photo, matte, rows) == pytest.approx(
        float(psnr((photo + 0.05).clamp(0, 1)[None], photo[None], mask=region[None, None])), abs=1e-4)
    # nothing rendered: every matte pixel shows 1 - photo
    empty = matte_psnr(torch.zeros(3, S, S), torch.zeros(S, S), photo, matte, rows)
    reference = float(psnr((1 - photo)[None], photo[None], mask=region[None, None]))
    assert empty == pytest.approx(reference, abs=1e-4) and empty < 10
    # covering half the head with the exact photo lands in between
    half = alpha.clone()
    half[:, 32:] = 0
    partial = matte_psnr(photo * half, half, photo, matte, rows)
    assert empty < partial < 40 and not math.isinf(partial)
    with pytest.raises(ValueError, match="no pixel"):
        matte_psnr(photo, alpha, photo, torch.zeros(S, S), rows)


def test_back_texture_is_zero_when_flat_and_one_for_the_photos_own_texture():
    g = torch.Generator().manual_seed(1)
    photo = torch.rand(3, S, S, generator=g)
    matte, rows = torch.ones(S, S), head_rows(50.0, S)
    face = face_hull(np.array([[24.0, 16.0], [40.0, 16.0], [40.0, 40.0], [24.0, 40.0]]), S)
    silhouette = _disc(32, 32, 28)
    flat = torch.full((3, S, S), 0.3) * silhouette
    assert back_texture(flat, silhouette, photo, matte, face, rows) < 0.05
    same = photo * silhouette
    assert back_texture(same, silhouette, photo, matte, face, rows) == pytest.approx(1.0, abs=0.15)
    # one sharp edge across a flat back is not texture
    edged = flat.clone()
    edged[:, 40:] = 0.8 * silhouette[40:]
    assert back_texture(edged, silhouette, photo, matte, face, rows) < 0.15
    assert back_texture(flat, torch.zeros(S, S), photo, matte, face, rows) == 0.0
    with pytest.raises(ValueError, match="no texture"):
        back_texture(same, silhouette, torch.full((3, S, S), 0.5), matte, face, rows)


def test_laplacian_spread_and_luminance():
    ramp = torch.linspace(0, 1, S)[None].expand(S, S).contiguous()  # linear: zero Laplacian inside
    inner = torch.zeros(S, S, dtype=torch.bool)
    inner[2:-2, 2:-2] = True
    assert laplacian_spread(ramp, inner) == pytest.approx(0.0, abs=1e-6)
    assert laplacian_spread(ramp, torch.zeros(S, S, dtype=torch.bool)) == 0.0
    torch.testing.assert_close(luminance(torch.ones(3, 2, 2)), torch.ones(2, 2))


def test_face_hull_fills_the_landmarks_convex_hull():
    square = np.array([[10.0, 10.0], [30.0, 10.0], [30.0, 30.0], [10.0, 30.0], [20.0, 20.0]])
    hull = face_hull(square, S)
    assert hull.dtype == torch.bool and hull.sum() == 400 and hull[20, 20] and not hull[5, 5]
