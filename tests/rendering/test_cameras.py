import math

import pytest
import torch

from fhavatar.rendering import PANOHEAD_FOCAL, Camera


def test_look_at_front_camera_follows_opencv_and_head_space():
    cam = Camera.look_at((0.0, 0.0, 2.7))
    c2w = cam.cam2world[0]
    # x right = +x (subject's left appears on the image right), y down = -y (head space +y is up), z forward = -z
    torch.testing.assert_close(c2w[:3, :3], torch.tensor([[1.0, 0, 0], [0, -1, 0], [0, 0, -1]]))
    uv, depth = cam.project(torch.tensor([[0.0, 0.0, 0.0], [0.1, 0.2, 0.0]]), 512, 256)
    torch.testing.assert_close(uv[0, 0], torch.tensor([256.0, 128.0]))
    # +x lands right of centre, +y above centre; focal is a fraction of each image side
    torch.testing.assert_close(uv[0, 1], torch.tensor([256 + PANOHEAD_FOCAL * 512 * 0.1 / 2.7, 128 - PANOHEAD_FOCAL * 256 * 0.2 / 2.7]))
    torch.testing.assert_close(depth[0], torch.tensor([2.7, 2.7]))


def test_world2cam_inverts_cam2world():
    cams = Camera.orbit(7, elevation_deg=25.0, target=(0.1, 0.2, -0.1))
    eye = torch.eye(4).expand(7, 4, 4)
    torch.testing.assert_close(cams.world2cam @ cams.cam2world, eye, atol=1e-6, rtol=0)
    # every orbit camera sees its target at the image centre
    uv, depth = cams.project(torch.tensor([[0.1, 0.2, -0.1]]), 100, 80)
    torch.testing.assert_close(uv[:, 0], torch.tensor([[50.0, 40.0]] * 7), atol=1e-4, rtol=0)
    torch.testing.assert_close(depth[:, 0], torch.full((7,), 2.7), atol=1e-5, rtol=0)


def test_orbit_is_a_closed_yaw_loop_starting_in_front():
    cams = Camera.orbit(8, radius=2.7, elevation_deg=0.0)
    pos = cams.position
    torch.testing.assert_close(pos[0], torch.tensor([0.0, 0.0, 2.7]))
    torch.testing.assert_close(pos[2], torch.tensor([2.7, 0.0, 0.0]), atol=1e-5, rtol=0)  # yaw +90° toward +x
    torch.testing.assert_close(pos[4], torch.tensor([0.0, 0.0, -2.7]), atol=1e-5, rtol=0)  # back of the head
    steps = torch.atan2(pos[:, 0], pos[:, 2]).diff() % (2 * math.pi)
    torch.testing.assert_close(steps, torch.full((7,), 2 * math.pi / 8), atol=1e-5, rtol=0)
    high = Camera.orbit(4, elevation_deg=30.0)
    torch.testing.assert_close(high.position[:, 1], torch.full((4,), 2.7 * math.sin(math.radians(30))), atol=1e-5, rtol=0)


def test_label_round_trip_and_layout():
    cams = Camera.orbit(3, elevation_deg=-10.0, focal=3.5)
    label = cams.to_label()
    assert label.shape == (3, 25)
    torch.testing.assert_close(label[:, :16].reshape(3, 4, 4), cams.cam2world)
    torch.testing.assert_close(label[:, 16:], torch.tensor([3.5, 0, 0.5, 0, 3.5, 0.5, 0, 0, 1.0]).expand(3, 9))
    back = Camera.from_label(label)
    torch.testing.assert_close(back.cam2world, cams.cam2world)
    torch.testing.assert_close(back.intrinsics, cams.intrinsics)
    single = Camera.from_label(label[1].tolist())
    assert len(single) == 1
    torch.testing.assert_close(single.cam2world[0], cams.cam2world[1])


def test_pixel_intrinsics_scale_with_resolution():
    cam = Camera.look_at((0.0, 0.0, 2.7), focal=4.0)
    k = cam.pixel_intrinsics(640, 480)[0]
    torch.testing.assert_close(k, torch.tensor([[2560.0, 0, 320], [0, 1920, 240], [0, 0, 1]]))


def test_indexing_cat_and_to():
    cams = Camera.orbit(5)
    assert len(cams[1:3]) == 2 and len(cams[4]) == 1
    both = Camera.cat([cams[0], cams[4]])
    torch.testing.assert_close(both.cam2world[1], cams.cam2world[4])
    assert cams.to(torch.float64).cam2world.dtype == torch.float64


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"intrinsics": torch.tensor([[0.0, 0, 0.5], [0, 4, 0.5], [0, 0, 1]])}, "positive focal"),
        ({"intrinsics": torch.tensor([[4.0, 0.2, 0.5], [0, 4, 0.5], [0, 0, 1]])}, "no skew"),
        ({"intrinsics": torch.tensor([[4.0, 0, float("nan")], [0, 4, 0.5], [0, 0, 1]])}, "NaN"),
        ({"intrinsics": torch.eye(2)}, r"shape \[B, 3, 3\]"),
        ({"cam2world": torch.eye(4) * 2}, "rigid"),
        ({"cam2world": torch.ones(2, 3, 4)}, r"shape \[B, 4, 4\]"),
    ],
)
def test_invalid_cameras_raise(kwargs, message):
    args = {"cam2world": torch.eye(4), "intrinsics": Camera.make_intrinsics()[0]}
    args.update(kwargs)
    with pytest.raises(ValueError, match=message):
        Camera(**args)


def test_invalid_constructor_arguments_raise():
    with pytest.raises(ValueError, match="num_frames"):
        Camera.orbit(0)
    with pytest.raises(ValueError, match="elevation_deg"):
        Camera.orbit(4, elevation_deg=90)
    with pytest.raises(ValueError, match="parallel"):
        Camera.look_at((0.0, 3.0, 0.0))
    with pytest.raises(ValueError, match="coincide"):
        Camera.look_at((0.0, 0.0, 0.0))
    with pytest.raises(ValueError, match="PanoHead camera label"):
        Camera.from_label(torch.zeros(3, 24))


def test_unproject_inverts_project():
    cameras = Camera.cat([Camera.look_at([0.4, 0.3, 2.7]), Camera.look_at([-2.0, 0.5, 1.5])]).to(torch.float64)
    points = torch.randn(2, 50, 3, generator=torch.Generator().manual_seed(0), dtype=torch.float64) * 0.2
    uv, depth = cameras.project(points, 320, 240)
    # (1e-6: the look-at rotations are orthonormal to float32 precision; world2cam uses their transpose)
    torch.testing.assert_close(cameras.unproject(uv, depth, 320, 240), points, atol=1e-6, rtol=0)
    # a pixel's centre ray: the principal point at depth d lies on the optical axis, d in front of the camera
    centre = cameras.unproject(torch.tensor([[[160.0, 120.0]]] * 2, dtype=torch.float64),
                               torch.full((2, 1), 2.0, dtype=torch.float64), 320, 240)
    axis = cameras.cam2world[:, :3, 2]
    torch.testing.assert_close(centre[:, 0], cameras.position + 2.0 * axis)
