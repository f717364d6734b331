"""`fit_hair_shell`: the head's outline fitted to the photo's matte (issue 17, part 1)."""

import dataclasses
import logging

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from fhavatar.avatar import Avatar
from fhavatar.head.open_head import OpenHead
from fhavatar.rendering.visibility import mesh_depth
from fhavatar.tracking import fit_hair_shell, track_image
from fhavatar.tracking.shell import MAX_GROWTH, shell_weights
from tests.training import ASTRONAUT

VOLUME = 0.05  # head units (~2.8 cm) of hair all around the skull


@pytest.fixture(scope="module")
def head():
    return OpenHead()


@pytest.fixture(scope="module")
def track(head):
    return track_image(ASTRONAUT, head=head)


def _smoothed_normals(head):
    faces, normals = head.faces, head.vertex_normals(head.template_vertices[None])[0]
    for _ in range(3):
        total, count = normals.clone(), torch.ones(len(normals), 1)
        for a in range(3):
            for b in range(3):
                if a != b:
                    total.index_add_(0, faces[:, a], normals[faces[:, b]])
                    count.index_add_(0, faces[:, a], torch.ones(len(faces), 1))
        normals = F.normalize(total / count, dim=-1)
    return normals


def _matte_of(head, track, rest_offsets):
    """The silhouette of the head with `rest_offsets`, as the photo's matte (512², float32)."""
    vertices = head(track.params, rest_offsets=rest_offsets)
    depth = mesh_depth(vertices, head.faces, track.camera, 512, 512)[0, 0]
    return torch.isfinite(depth).numpy().astype(np.float32)


def _head_rows_iou(head, track, offsets, matte):
    ours = _matte_of(head, track, offsets) > 0.5
    rows = (np.arange(512) + 0.5 < track.landmarks[152, 1] + 51.2)[:, None]
    theirs = matte > 0.5
    return ((ours & theirs) & rows).sum() / ((ours | theirs) & rows).sum()


def test_a_known_extra_volume_is_recovered(head, track):
    weight = shell_weights(head)
    truth = VOLUME * _smoothed_normals(head) * weight[:, None]
    matte = _matte_of(head, track, truth)
    hairy = dataclasses.replace(track, mask=matte)
    offsets = fit_hair_shell(hairy, head)
    assert offsets is not None and offsets.shape == (head.num_vertices, 3)
    bare = _head_rows_iou(head, track, None, matte)
    fitted = _head_rows_iou(head, track, offsets, matte)
    assert bare < 0.9 and fitted > 0.96, (bare, fitted)
    # the volume itself: vertices well away from the face moved outward by about VOLUME
    normals = _smoothed_normals(head)
    far = weight > 0.99
    outward = (offsets * normals).sum(-1)[far]
    assert 0.6 * VOLUME < float(outward.median()) < 1.4 * VOLUME
    # the back, which the camera cannot see, continues the sides' volume
    behind = far & (head.template_vertices[:, 2] < -0.15)
    assert float((offsets * normals).sum(-1)[behind].median()) > 0.4 * VOLUME
    # the face the tracker fitted does not move
    assert torch.equal(offsets[weight == 0], torch.zeros_like(offsets[weight == 0]))


def test_the_shell_follows_the_head_and_survives_save_and_load(head, track, tmp_path):
    offsets = VOLUME * _smoothed_normals(head) * shell_weights(head)[:, None]
    params = track.params
    turned = dataclasses.replace(params, global_rotation=torch.tensor([[0.0, 0.6, 0.0]]))
    shelled, bare = head(turned, rest_offsets=offsets), head(turned)
    rotation = torch.linalg.matrix_exp(torch.tensor([[0.0, 0.0, 0.6], [0.0, 0.0, 0.0], [-0.6, 0.0, 0.0]]))
    rest_shelled, rest_bare = head(params, rest_offsets=offsets), head(params)
    # rigid turn: the displacement turns with the head
    torch.testing.assert_close(shelled - bare, (rest_shelled - rest_bare) @ rotation.T, atol=1e-5, rtol=0)
    n = 5
    avatar = Avatar(head, params, rest_shelled[0], torch.zeros(n, dtype=torch.long), torch.full((n, 3), 1 / 3),
                    torch.zeros(n, 3), torch.tensor([[1.0, 0, 0, 0]]).repeat(n, 1), torch.ones(n, 3),
                    torch.rand(n, 3), torch.ones(n), vertex_offsets=offsets)
    torch.testing.assert_close(avatar.posed_vertices(turned), shelled[0])
    loaded = Avatar.load(avatar.save(tmp_path / "a.safetensors"), head)
    torch.testing.assert_close(loaded.vertex_offsets, avatar.vertex_offsets)
    torch.testing.assert_close(loaded.pose(turned), shelled)
    with pytest.raises(ValueError, match="vertex_offsets must be finite"):
        Avatar(head, params, rest_shelled[0], torch.zeros(n, dtype=torch.long), torch.full((n, 3), 1 / 3),
               torch.zeros(n, 3), torch.tensor([[1.0, 0, 0, 0]]).repeat(n, 1), torch.ones(n, 3),
               torch.rand(n, 3), torch.ones(n), vertex_offsets=offsets * float("nan"))
    with pytest.raises(ValueError, match="rest_offsets"):
        head(params, rest_offsets=torch.zeros(10, 3))


def test_unreliable_mattes_fall_back_to_the_bare_head(head, track, caplog):
    assert fit_hair_shell(dataclasses.replace(track, mask=None), head) is None
    with caplog.at_level(logging.WARNING, logger="fhavatar.tracking.shell"):
        # a matte that misses the face (the landmarks lie on its background) is not trusted
        empty_face = np.zeros((512, 512), np.float32)
        empty_face[:40] = 1.0
        assert fit_hair_shell(dataclasses.replace(track, mask=empty_face), head) is None
    assert "contradicts the face landmarks" in caplog.text


def test_a_spike_in_the_matte_cannot_pull_geometry_to_the_border(head, track):
    matte = _matte_of(head, track, VOLUME * _smoothed_normals(head) * shell_weights(head)[:, None])
    spiked = matte.copy()
    spiked[100:104, :] = 1.0  # a thin bar (a raised arm, a fence) through the head to both borders
    offsets = fit_hair_shell(dataclasses.replace(track, mask=spiked), head)
    assert offsets is not None
    assert float(offsets.norm(dim=-1).max()) <= MAX_GROWTH + 1e-6
    vertices = head(track.params, rest_offsets=offsets)[0]
    pixels, _ = track.camera.project(vertices[None], 512, 512)
    assert float(pixels[0, :, 0].min()) > 20 and float(pixels[0, :, 0].max()) < 492  # nowhere near the borders


def test_argument_checks(head, track):
    with pytest.raises(TypeError, match="FaceTrack"):
        fit_hair_shell("photo.jpg", head)
    with pytest.raises(ValueError, match="resolution"):
        fit_hair_shell(track, head, resolution=8)
    with pytest.raises(ValueError, match="iterations"):
        fit_hair_shell(track, head, iterations=0)
