"""The bust (issue 17, part 3): neck, shoulders and chest from the photo, fixed while the head moves."""

import dataclasses

import numpy as np
import pytest
import torch

from fhavatar import FHAvatarPipeline
from fhavatar.avatar import Avatar
from fhavatar.io.ply import load_gaussians_ply
from fhavatar.models.bust import build_bust
from fhavatar.rendering import render_gaussians
from tests.training import ASTRONAUT


@pytest.fixture(scope="module")
def avatar():
    pipe = FHAvatarPipeline.default(resolution=64)
    pipe.set_progress_bar_config(disable=True)
    return pipe, pipe.reconstruct(ASTRONAUT)


def test_the_bust_covers_the_photos_torso(avatar):
    pipe, avatar = avatar
    track = avatar.source_track
    assert avatar.bust is not None and len(avatar.bust.means) > 1000
    out = render_gaussians(avatar.gaussians(), track.camera, 128, 128)
    matte = torch.nn.functional.interpolate(torch.from_numpy(track.mask)[None, None], size=(128, 128),
                                            mode="area")[0, 0] > 0.5
    below_chin = (torch.arange(128) + 0.5)[:, None] > track.landmarks[152, 1] / 4 + 8
    covered = out.alpha[0, 0] > 0.5
    torso = matte & below_chin
    assert float((covered & torso).sum() / torso.sum()) > 0.9
    # its colours are the photo's there
    photo = torch.nn.functional.interpolate(torch.from_numpy(track.image).permute(2, 0, 1)[None].float() / 255,
                                            size=(128, 128), mode="area")[0]
    inner = torso & (out.alpha[0, 0] > 0.99)
    assert float((out.image[0][:, inner] - photo[:, inner]).abs().mean()) < 0.12  # splats blur; a wrong colour is ~0.3


def test_the_bust_stays_put_when_the_head_turns_and_is_saved_with_the_avatar(avatar, tmp_path):
    pipe, avatar = avatar
    n_head, n_bust = len(avatar), len(avatar.bust.means)
    params = avatar.source_params
    turned = dataclasses.replace(params, global_rotation=torch.tensor([[0.0, 0.5, 0.0]]), jaw=torch.tensor([[0.2, 0, 0]]))
    still, moved = avatar.gaussians(), avatar.gaussians(turned)
    assert len(still.means) == n_head + n_bust
    torch.testing.assert_close(moved.means[n_head:], still.means[n_head:], rtol=0, atol=0)  # the bust: fixed
    assert float((moved.means[:n_head] - still.means[:n_head]).norm(dim=-1).max()) > 0.05  # the head: turned
    ply = load_gaussians_ply(avatar.save_ply(tmp_path / "avatar.ply"))
    assert len(ply.means) == n_head + n_bust  # the export holds everything
    loaded = Avatar.load(avatar.save(tmp_path / "avatar.safetensors"), pipe.head_model)
    torch.testing.assert_close(loaded.bust.means, avatar.bust.means)
    torch.testing.assert_close(loaded.gaussians(turned).colors, moved.colors)


def test_no_torso_no_bust(avatar):
    _, avatar = avatar
    track = avatar.source_track
    head_only = np.zeros_like(track.mask)
    head_only[: int(track.landmarks[152, 1] - 0.12 * 512)] = 1.0  # the matte ends well above the chin (a tight crop)
    image = torch.from_numpy(track.image).permute(2, 0, 1).float() / 255
    alpha = torch.zeros(128, 128)
    assert build_bust(image, torch.from_numpy(head_only), alpha, track.camera, float(track.landmarks[152, 1]),
                      torch.tensor([0.0, -0.2, -0.05])) is None


def test_a_raised_hand_is_not_part_of_the_bust(avatar):
    _, avatar = avatar
    track = avatar.source_track
    chin = float(track.landmarks[152, 1])
    matte = np.zeros_like(track.mask)
    matte[int(chin) + 10 :, 150:360] = 1.0  # the body
    matte[int(chin) + 10 :, 5:40] = 1.0  # a separate raised arm at the side
    image = torch.from_numpy(track.image).permute(2, 0, 1).float() / 255
    bust = build_bust(image, torch.from_numpy(matte), torch.zeros(128, 128), track.camera, chin,
                      torch.tensor([0.0, -0.2, -0.05]))
    pixels, _ = track.camera.project(bust.means[None], 512, 512)
    assert float(pixels[0, :, 0].min()) > 100  # nothing out at the arm (columns 5-40)


def test_the_shoulders_have_a_lid(avatar):
    """Seen from above, the bust is closed: its top ring is narrowed toward the neck by upward-facing Gaussians."""
    _, avatar = avatar
    bust = avatar.bust
    top = bust.means[:, 1].max()
    near_top = (bust.means[:, 1] > top - 1e-4)
    radius = (bust.means[near_top][:, [0, 2]] - bust.means[near_top][:, [0, 2]].mean(0)).norm(dim=-1)
    assert float(radius.min()) < 0.5 * float(radius.max())  # rings inside the outermost one: a lid, not a rim


def test_what_the_photo_cannot_show_takes_the_outline_sides_colour(avatar):
    """The bust's back shows what wraps around the body at its sides (hair, a collar), not the front's colours."""
    _, avatar = avatar
    track = avatar.source_track
    chin = float(track.landmarks[152, 1])
    matte = np.zeros((512, 512), dtype=np.float32)
    matte[int(chin) + 10 :, 150:360] = 1.0
    image = torch.zeros(3, 512, 512)
    image[0, :, 150:190] = 1.0  # red at the left side of the body
    image[2, :, 320:360] = 1.0  # blue at its right side
    image[1, :, 190:320] = 1.0  # green in the middle
    bust = build_bust(image, torch.from_numpy(matte), torch.zeros(128, 128), track.camera, chin,
                      torch.tensor([0.0, -0.2, -0.05]))
    facing = (bust.means - track.camera.position[0]).norm(dim=-1)
    back = facing > facing.median()  # the far half
    assert float(bust.colors[back, 1].max()) < 0.5  # no front (green) colour on the back
    assert float(bust.colors[back, 0].mean()) > 0.3 and float(bust.colors[back, 2].mean()) > 0.3  # both sides'


def test_the_body_under_the_neck_is_chosen_over_a_bigger_neighbour(avatar):
    """A second, larger person beside the subject does not become the bust."""
    _, avatar = avatar
    track = avatar.source_track
    chin = float(track.landmarks[152, 1])
    neck = avatar.source_vertices[avatar.head_model.region("neck")].mean(0)
    pixel, _ = track.camera.project(neck[None, None], 512, 512)
    x = float(pixel[0, 0, 0])
    matte = np.zeros_like(track.mask)
    left = int(x) - 60
    matte[int(chin) - 10 :, left : left + 120] = 1.0  # the subject's body under its neck
    matte[int(chin) - 10 :, left + 140 :] = 1.0  # someone bigger at the side, apart from it
    image = torch.from_numpy(track.image).permute(2, 0, 1).float() / 255
    bust = build_bust(image, torch.from_numpy(matte), torch.zeros(128, 128), track.camera, chin, neck)
    pixels, _ = track.camera.project(bust.means[None], 512, 512)
    assert float(pixels[0, :, 0].max()) < left + 140  # nothing on the neighbour


def test_rows_the_head_covers_have_no_shelf_in_front_of_the_neck(avatar):
    """Where the head covers a row's middle (hair falling beside the neck), the ring's front half hugs its axis: no
    shelf stands out under the chin; the chest below, which the head leaves free, keeps its full depth."""
    _, avatar = avatar
    track = avatar.source_track
    chin = float(track.landmarks[152, 1])
    matte = np.zeros((512, 512), dtype=np.float32)
    matte[int(chin) - 10 :, 120:390] = 1.0  # one wide block: hair beside the neck above, shoulders below
    image = torch.full((3, 512, 512), 0.5)
    neck_end = int(chin) + 50  # the head covers the middle of the rows above this one
    head = torch.zeros(128, 128)
    head[: neck_end // 4, 54:74] = 1.0
    centre = torch.tensor([0.0, -0.2, -0.05])
    bust = build_bust(image, torch.from_numpy(matte), head, track.camera, chin, centre)
    plain = build_bust(image, torch.from_numpy(matte), torch.zeros(128, 128), track.camera, chin, centre)
    pixels, _ = track.camera.project(bust.means[None], 512, 512)
    rows = pixels[0, :, 1]

    def front_depth(g, upper):  # how far the ring's front reaches ahead of the body's axis (+z), per band of rows
        px, _ = track.camera.project(g.means[None], 512, 512)
        band = (px[0, :, 1] < neck_end - 20) if upper else (px[0, :, 1] > neck_end + 25)
        return float(g.means[band, 2].max() - centre[2])

    assert rows.min() < neck_end - 20 and rows.max() > neck_end + 25
    assert front_depth(bust, upper=True) < 0.5 * front_depth(plain, upper=True)  # the neck rows: shallow in front
    assert front_depth(bust, upper=False) == pytest.approx(front_depth(plain, upper=False), rel=0.05)  # the chest
