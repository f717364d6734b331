"""`quilt_unseen`: the unseen texels get the guide's mean colour plus detail drawn in patches from seen texels."""

import numpy as np
import torch

from fhavatar.models.uv_quilting import MIN_WINDOWS, quilt_unseen

K = 64


def _scene(seed: int = 0):
    """Seen: the atlas' middle half (u in [1/4, 3/4]), vertical 'strands' (stripes of random brightness) on brown,
    with a bright 'face' block that is not a source. Unseen: the two outer quarters (the back, around u = 0 = 1)."""
    g = torch.Generator().manual_seed(seed)
    strands = torch.rand(1, 1, 1, K, generator=g).expand(1, 1, K, K) * 0.2
    colors = (torch.tensor([0.30, 0.20, 0.15])[None, :, None, None] + strands - 0.1).clone()
    known = torch.zeros(1, 1, K, K, dtype=torch.bool)
    known[..., K // 4 : 3 * K // 4] = True
    face = torch.zeros(K, K, dtype=torch.bool)
    face[20:44, 26:38] = True
    colors[0, :, face] = torch.tensor([1.0, 0.0, 0.0])[:, None]  # a colour no source has
    targets = ~known[0, 0]
    guide = torch.full((1, 3, K, K), 0.5)
    guide[:, :, : K // 2] = 0.4  # a darker guide in the upper half
    return colors, known, targets, ~face, guide


def test_targets_take_the_guides_mean_and_the_seen_detail():
    colors, known, targets, sources, guide = _scene()
    out, quilted = quilt_unseen(colors, known, targets, sources, guide)
    assert bool(quilted[0, 0].eq(targets).all())
    torch.testing.assert_close(out[..., ~targets], guide[..., ~targets])  # only the targets change
    inner = targets.clone()
    inner[:, K // 8 : 7 * K // 8] = False  # well inside the unseen band, away from the guide's step
    inner[K // 2 - 6 : K // 2 + 6] = False
    upper, lower = inner.clone(), inner.clone()
    upper[K // 2 :], lower[: K // 2] = False, False
    assert abs(float(out[0, :, upper].mean()) - 0.4) < 0.03
    assert abs(float(out[0, :, lower].mean()) - 0.5) < 0.03
    # the strands' detail came along: the spread across u is that of the seen stripes (std of U(0, 0.2) ≈ 0.058)
    spread = float(out[0, 0, lower].std())
    assert 0.03 < spread < 0.09


def test_the_face_is_never_drawn_from():
    colors, known, targets, sources, guide = _scene()
    out, _ = quilt_unseen(colors, known, targets, sources, guide)
    # red minus green would be about 0.1 in brown hair; a copied face patch would reach ~1
    assert float((out[0, 0] - out[0, 1])[targets].max()) < 0.3


def test_deterministic_for_a_seed_and_varied_across_seeds():
    colors, known, targets, sources, guide = _scene()
    a, _ = quilt_unseen(colors, known, targets, sources, guide, seed=3)
    b, _ = quilt_unseen(colors, known, targets, sources, guide, seed=3)
    c, _ = quilt_unseen(colors, known, targets, sources, guide, seed=4)
    assert torch.equal(a, b)
    assert not torch.equal(a, c)


def test_flow_makes_strands_along_v_and_gain_scales_the_detail():
    g = torch.Generator().manual_seed(1)
    colors = 0.4 + 0.1 * torch.rand(1, 3, K, K, generator=g)  # isotropic noise: no direction of its own
    known = torch.zeros(1, 1, K, K, dtype=torch.bool)
    known[..., K // 4 : 3 * K // 4] = True
    targets, sources, guide = ~known[0, 0], torch.ones(K, K, dtype=torch.bool), torch.full((1, 3, K, K), 0.45)

    def correlation(out, axis):  # neighbour correlation of the detail on the unseen band, along rows (v) or u
        d = (out[0, 0] - 0.45).numpy()
        band = d[:, : K // 4 - 2]
        x, y = (band[:-1], band[1:]) if axis == "v" else (band[:, :-1], band[:, 1:])
        return float(np.corrcoef(x.ravel(), y.ravel())[0, 1])

    plain, _ = quilt_unseen(colors, known, targets, sources, guide)
    strands, _ = quilt_unseen(colors, known, targets, sources, guide, flow=3.0)
    assert correlation(strands, "v") > correlation(plain, "v") + 0.3
    assert correlation(strands, "v") > correlation(strands, "u") + 0.3
    band = targets.clone()
    spread = float((strands[0, 0][band] - 0.45).std())
    doubled, _ = quilt_unseen(colors, known, targets, sources, guide, flow=3.0, gain=2.0)
    assert abs(float((doubled[0, 0][band] - 0.45).std()) / spread - 2.0) < 0.1


def test_too_few_seen_windows_leave_the_guide():
    colors, known, targets, sources, guide = _scene()
    sparse = torch.zeros_like(known)
    sparse[..., 10:14, 20 : 20 + MIN_WINDOWS] = True  # a 4-texel strip: no whole patch fits
    out, quilted = quilt_unseen(colors, sparse, targets, sources, guide)
    assert not quilted.any()
    torch.testing.assert_close(out, guide)


def test_sharpen_boosts_the_finest_detail_and_keeps_the_mean_and_coarse_detail():
    g = torch.Generator().manual_seed(2)
    colors = 0.4 + 0.1 * torch.rand(1, 3, K, K, generator=g)
    known = torch.zeros(1, 1, K, K, dtype=torch.bool)
    known[..., K // 4 : 3 * K // 4] = True
    targets, sources, guide = ~known[0, 0], torch.ones(K, K, dtype=torch.bool), torch.full((1, 3, K, K), 0.45)
    plain, _ = quilt_unseen(colors, known, targets, sources, guide, flow=3.0)
    sharp, _ = quilt_unseen(colors, known, targets, sources, guide, flow=3.0, sharpen=2.0)
    band = (slice(None), slice(2, K // 4 - 2))  # inside the unseen band at u < 1/4

    def fine(out):  # neighbour differences across u: texel-scale contrast
        d = out[0, 0][band]
        return float((d[:, 1:] - d[:, :-1]).abs().mean())

    def coarse(out):  # 8x8 block means: the detail a splat's blur keeps anyway
        d = (out[0, 0][band] - 0.45)[:, : (K // 4 - 4) // 8 * 8]
        return float(d.reshape(K // 8, 8, -1, 8).mean((1, 3)).std())

    assert torch.equal(sharp[..., ~targets], plain[..., ~targets])
    assert abs(float(sharp[0, :, targets].mean()) - float(plain[0, :, targets].mean())) < 0.01
    fine_gain, coarse_gain = fine(sharp) / fine(plain), coarse(sharp) / coarse(plain)
    assert fine_gain > 2.0  # 1 + sharpen = 3 at the finest scale (less the blur's own share)
    assert coarse_gain < fine_gain - 0.5, (fine_gain, coarse_gain)
