"""`synthesize_unseen`: unseen cranium texels copy seen texels of their own row, never the face."""

import torch

from fhavatar.models.uv_synthesis import synthesize_unseen

K = 32


def _scene():
    """Left half of the atlas seen (random 'hair'), right half unseen; a 'face' block in the seen half."""
    g = torch.Generator().manual_seed(0)
    colors = torch.rand(1, 3, K, K, generator=g) * 0.3  # dark hair
    confidence = torch.zeros(1, 1, K, K)
    confidence[..., : K // 2] = 1.0
    face = torch.zeros(K, K, dtype=torch.bool)
    face[8:20, 4:12] = True
    colors[0, :, face] = 0.9  # bright skin, seen
    cranium = ~face
    return colors, confidence, cranium, face


def test_unseen_texels_copy_seen_texels_of_their_row():
    colors, confidence, cranium, face = _scene()
    out, filled = synthesize_unseen(colors, confidence, cranium)
    assert filled[0, 0, :, K // 2 :].all() and not filled[0, 0, :, : K // 2].any()
    for row in range(K):
        seen = {tuple(c) for c in colors[0, :, row, : K // 2].T.tolist()}
        for col in range(K // 2, K):
            assert tuple(out[0, :, row, col].tolist()) in seen  # a copy from the same row
    # seen texels are untouched; the reflection keeps neighbours: the first unseen texel copies the last seen one
    torch.testing.assert_close(out[..., : K // 2], colors[..., : K // 2])
    torch.testing.assert_close(out[0, :, 0, K // 2], colors[0, :, 0, K // 2 - 1])


def test_the_face_is_never_copied():
    colors, confidence, cranium, face = _scene()
    out, _ = synthesize_unseen(colors, confidence, cranium)
    assert float(out[0, :, :, K // 2 :].max()) < 0.3 + 1e-6  # no bright face texel reached the unseen half


def test_skin_coloured_sources_are_skipped_given_hair_and_skin():
    colors, confidence, cranium, _ = _scene()
    colors[0, :, 25:, : K // 2] = 0.85  # skin shows on the seen part of these rows (a forehead band)
    colors[0, :, 25:, 2] = 0.1  # one hair texel per row
    out, _ = synthesize_unseen(colors, confidence, cranium, hair=torch.full((1, 3), 0.15),
                               skin=torch.full((1, 3), 0.85))
    # too few hair texels in those rows: the nearest row with enough hair lends its texture, never the skin
    assert float(out[0, :, 25:, K // 2 :].max()) < 0.3 + 1e-6
    plain, _ = synthesize_unseen(colors, confidence, cranium)  # without the colours, skin is copied
    assert float(plain[0, :, 25:, K // 2 :].max()) > 0.8


def test_rows_without_sources_take_the_nearest_row_and_no_sources_leave_everything():
    colors, confidence, cranium, _ = _scene()
    confidence[..., :10, :] = 0.0  # the top rows are not seen at all
    out, filled = synthesize_unseen(colors, confidence, cranium)
    assert filled[0, 0, :10][cranium[:10]].all()
    row10 = {tuple(c) for c in colors[0, :, 10, : K // 2].T.tolist()}
    assert all(tuple(c) in row10 for c in out[0, :, 3].T.tolist())
    out, filled = synthesize_unseen(colors, torch.zeros_like(confidence), cranium)
    assert not filled.any() and torch.equal(out, colors)
