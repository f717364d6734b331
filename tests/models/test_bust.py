"""The bust (issue 17, part 3): neck, shoulders and chest from the photo, fixed while the head moves."""

import dataclasses
import math

import numpy as np
import pytest
import torch

from fhavatar import FHAvatarPipeline
from fhavatar.avatar import Avatar
from fhavatar.io.ply import load_gaussians_ply
from fhavatar.models.bust import _even_angles, build_bust
from fhavatar.rendering import Camera, render_gaussians
from fhavatar.rotations import quat_to_rotmat
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


def test_points_are_spaced_evenly_along_each_ring():
    """Neighbours along a ring lie about one footprint apart everywhere: on a wide, flat front too (even angles
    left 1.2-1.5 footprints there and the chest showed stripes of lower alpha)."""
    semi_x = torch.tensor([0.3, 0.1])
    depth = 0.6 * semi_x
    front = torch.tensor([0.3, 1.0])  # a shallow front half, and a full ellipse
    footprint = 0.004
    ring, angle = _even_angles(semi_x, depth, front, footprint)
    for k in range(2):
        a = angle[ring == k]
        d = depth[k] * torch.where(torch.sin(a) > 0, front[k], 1.0)
        points = torch.stack([semi_x[k] * torch.cos(a), d * torch.sin(a)], -1)
        gaps = (points - points.roll(1, 0)).norm(dim=-1)
        assert float(gaps.max()) <= footprint * 1.01
        assert float(gaps.min()) >= footprint * 0.85
        assert bool((a.diff() > 0).all()) and float(a.min()) > 0 and float(a.max()) < 2 * math.pi


def _eroded_min_alpha(alpha: torch.Tensor, pixels: int = 2) -> float:  # [H, W] -> lowest alpha well inside
    inside = torch.nn.functional.pad((alpha > 0.5).float()[None, None], (pixels,) * 4)
    eroded = -torch.nn.functional.max_pool2d(-inside, 2 * pixels + 1, 1)[0, 0] > 0.5
    return float(alpha[eroded].min())


def test_the_bust_is_closed_seen_close_up_from_front_above_and_behind(avatar):
    """Rendered at twice the photo's scale (the splats' own width, not the renderer's pixel blur, must close the
    surface), the bust of a block-shaped body with a step at the shoulders has no see-through pixel inside its
    outline from the front, from above or from behind the side."""
    _, avatar = avatar
    track = avatar.source_track
    chin = float(track.landmarks[152, 1])
    matte = np.zeros((512, 512), dtype=np.float32)
    matte[int(chin) - 10 :, 200:320] = 1.0  # hair beside the neck
    matte[int(chin) + 40 :, 110:400] = 1.0  # the shoulders: a step out
    image = torch.full((3, 512, 512), 0.5)
    bust = build_bust(image, torch.from_numpy(matte), torch.zeros(128, 128), track.camera, chin,
                      torch.tensor([0.0, -0.2, -0.05]))
    orbit = Camera.orbit(8, radius=float(track.camera.position.norm()), elevation_deg=30.0)
    for view in (track.camera, orbit[3], orbit[4], orbit[5]):
        alpha = render_gaussians(bust, view, 256, 256).alpha[0, 0]  # R = 128: footprints of two pixels
        assert _eroded_min_alpha(alpha) >= 0.99


def test_a_body_cut_by_the_photos_bottom_edge_goes_on_below_it(avatar):
    _, avatar = avatar
    track = avatar.source_track
    chin = float(track.landmarks[152, 1])
    image = torch.full((3, 512, 512), 0.5)
    centre = torch.tensor([0.0, -0.2, -0.05])
    lowest = []
    for end in (512, 440):  # to the bottom edge, and ending inside the picture
        matte = np.zeros((512, 512), dtype=np.float32)
        matte[int(chin) + 10 : end, 150:360] = 1.0
        bust = build_bust(image, torch.from_numpy(matte), torch.zeros(128, 128), track.camera, chin, centre)
        pixels, _ = track.camera.project(bust.means[None], 512, 512)
        lowest.append(float(pixels[0, :, 1].max()))
    # (the rings' fronts project a few pixels below their rows: compare the two)
    assert (lowest[0] - 512) - (lowest[1] - 440) > 0.015 * 512  # beyond the edge: no lower end seen from above
    assert lowest[1] < 440 + 12  # a body that ends in the picture ends where it does


def test_the_lid_slopes_up_toward_the_neck(avatar):
    _, avatar = avatar
    bust = avatar.bust
    up = torch.tensor([0.0, 1.0, 0.0])
    normals = torch.nn.functional.normalize(quat_to_rotmat(bust.quats)[:, :, 2], dim=-1)
    lid = (normals * up).sum(-1).abs() > 0.8  # the upward-facing Gaussians
    offset = bust.means[lid][:, [0, 2]] - bust.means[lid][:, [0, 2]].mean(0)
    sides = offset[:, 1].abs() < 0.2 * offset[:, 0].abs()  # left and right of the neck: the run is along x
    run, height = offset[sides, 0].abs(), bust.means[lid][sides, 1]
    slope = float(((run - run.mean()) * (height - height.mean())).sum() / ((run - run.mean()) ** 2).sum())
    assert -0.45 < slope < -0.15  # rising toward the neck by about LID_SLOPE (0.3)
    upward = normals[lid][sides] * normals[lid][sides, 1:2].sign()  # (a disc's normal may point either way)
    assert float((upward[:, 0] * offset[sides, 0] > 0).float().mean()) > 0.9  # tilted outward, as the slope is


def test_a_step_in_the_outline_becomes_a_slope(avatar):
    """Long hair ending on the shoulders steps the outline out by 30 pixels from one row to the next: the bust's
    side follows it over several rows (no concave corner for the head's edge to cross)."""
    _, avatar = avatar
    track = avatar.source_track
    chin = float(track.landmarks[152, 1])
    matte = np.zeros((512, 512), dtype=np.float32)
    matte[int(chin) - 10 :, 200:320] = 1.0
    matte[int(chin) + 40 :, 170:350] = 1.0  # the step: 30 pixels out on each side
    image = torch.full((3, 512, 512), 0.5)
    bust = build_bust(image, torch.from_numpy(matte), torch.zeros(128, 128), track.camera, chin,
                      torch.tensor([0.0, -0.2, -0.05]))
    pixels, _ = track.camera.project(bust.means[None], 512, 512)
    rows = (pixels[0, :, 1] / 4).floor().long()  # rows of R = 128
    # (the top and bottom rows hold only part of a ring's projection: left out)
    right = torch.tensor([float(pixels[0, rows == r, 0].max()) for r in range(int(chin) // 4, 500 // 4)])
    assert float(right.max() - right.min()) > 20  # the step is there
    assert float(right.diff().abs().max()) < 10  # but spread over rows: no jump of 30 pixels from one to the next


def test_a_body_one_pixel_wide_builds_a_thin_finite_bust(avatar):
    """A row one pixel wide at the bust's resolution has no width between its pixel centres: it still gets a ring
    (half a footprint across), not a degenerate one whose normals are NaN."""
    _, avatar = avatar
    track = avatar.source_track
    chin = float(track.landmarks[152, 1])
    matte = np.zeros((512, 512), dtype=np.float32)
    matte[int(chin) + 10 :, 252:256] = 1.0  # 4 pixels of 512: one of R = 128
    matte[int(chin) + 60 :, 200:320] = 1.0  # and a body below it
    image = torch.full((3, 512, 512), 0.5)
    bust = build_bust(image, torch.from_numpy(matte), torch.zeros(128, 128), track.camera, chin,
                      torch.tensor([0.0, -0.2, -0.05]))
    assert bust is not None
    for name in ("means", "quats", "scales", "colors"):
        assert bool(torch.isfinite(getattr(bust, name)).all()), name
    pixels, _ = track.camera.project(bust.means[None], 512, 512)
    thin = pixels[0, :, 1] < chin + 40  # the one-pixel rows
    assert bool(thin.any()) and float(pixels[0, thin, 0].max() - pixels[0, thin, 0].min()) < 16


def _lid_seen_from_above(avatar, head_alpha, head_depth):
    """A bust seen by a camera 40° above the face, built from a photo whose body has a red left side, a blue right
    side and between them a green that changes with every row."""
    _, avatar = avatar
    track = avatar.source_track
    chin = float(track.landmarks[152, 1])
    camera = Camera.orbit(1, radius=float(track.camera.position.norm()), elevation_deg=40.0)
    matte = np.zeros((512, 512), dtype=np.float32)
    matte[int(chin) + 10 :, 150:360] = 1.0
    image = torch.zeros(3, 512, 512)
    image[0, :, 150:175] = 1.0
    image[2, :, 335:360] = 1.0
    image[1, :, 175:335] = torch.linspace(0.2, 1, 512)[:, None]
    bust = build_bust(image, torch.from_numpy(matte), head_alpha, camera, chin, torch.tensor([0.0, -0.2, -0.05]),
                      head_depth=head_depth)
    normals = torch.nn.functional.normalize(quat_to_rotmat(bust.quats)[:, :, 2], dim=-1)
    lid = normals[:, 1].abs() > 0.8  # the upward-facing Gaussians
    pixels, _ = camera.project(bust.means[None], 128, 128)
    photo = torch.nn.functional.interpolate(image[None], size=(128, 128), mode="area")[0]
    at_pixel = photo[:, pixels[0, :, 1].floor().long().clamp(0, 127), pixels[0, :, 0].floor().long().clamp(0, 127)].T
    on_matte = torch.from_numpy(matte[::4, ::4] > 0.5)[pixels[0, :, 1].floor().long().clamp(0, 127),
                                                         pixels[0, :, 0].floor().long().clamp(0, 127)]
    return bust, lid & on_matte, at_pixel, pixels[0]


def test_a_lid_the_photos_camera_looks_down_on_takes_the_photos_colour(avatar):
    """A camera above the shoulders sees the lid: the source view must show the photo there (a jacket's colour
    drawn over the jaw of a photo taken from above was a wrong avatar), so the lid takes the photo's pixel."""
    bust, lid, at_pixel, _ = _lid_seen_from_above(avatar, torch.zeros(128, 128), None)
    assert int(lid.sum()) > 100
    torch.testing.assert_close(bust.colors[lid], at_pixel[lid], rtol=0, atol=1e-5)
    # Where the head is in front of the lid (it covers the picture down to the lid's middle, nearer the camera), the lid keeps the
    # colour of the outline's side instead.
    head = torch.zeros(128, 128)
    head[:112] = 1.0
    hidden, lid, at_pixel, pixels = _lid_seen_from_above(avatar, head, torch.full((128, 128), 1e-3))
    under_head = lid & (pixels[:, 1] < 112) & (at_pixel[:, 1] > 0.1)  # the photo: green there
    assert int(under_head.sum()) > 10
    assert float(hidden.colors[under_head, 1].max()) < 0.05  # the lid: red or blue
