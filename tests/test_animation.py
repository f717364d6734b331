"""Motion transfer (relative / absolute / driving camera), on synthetic tracks."""

import math

import numpy as np
import pytest
import torch

from fhavatar.animation import frame_pose, transfer_motion
from fhavatar.rotations import HEAD_TO_CAMERA, axis_angle_to_matrix, rotation_from_angles
from fhavatar.tracking import CropTransform, FaceTrack
from fhavatar.tracking.fit import OpenHeadFit, make_track


def _track(yaw=0.0, pitch=0.0, roll=0.0, translation=(0.0, 0.02, 2.7), expression=0.0, eyes=0.0, crop_roll=0.0,
           seed=0) -> FaceTrack:
    """A FaceTrack without MediaPipe: the head posed by (yaw, pitch, roll) degrees in a 512² crop camera."""
    rng = np.random.default_rng(seed)
    fit = OpenHeadFit(HEAD_TO_CAMERA @ rotation_from_angles(yaw, pitch, roll), np.array(translation, float),
                      expression * rng.standard_normal((468, 3)), np.full((2, 3), eyes) * [1, 1, 0], 0.001, 0.02)
    crop = CropTransform.from_params((320.0, 240.0), 400.0, math.radians(crop_roll), (640, 480))
    image = np.zeros((512, 512, 3), np.uint8)
    return make_track(image, None, crop, np.zeros((478, 3)), fit)


def _matrix(axis_angle: torch.Tensor) -> np.ndarray:
    return axis_angle_to_matrix(axis_angle.double()).numpy()


def test_relative_with_the_source_as_driver_gives_the_source_exactly():
    source = _track(25, -8, 4, expression=0.01, eyes=0.1, crop_roll=7)
    params, cameras = transfer_motion(source, [source] * 5)
    assert params.batch_size == len(cameras) == 5
    for name in ("expression", "jaw", "neck", "eyes"):
        torch.testing.assert_close(getattr(params, name), getattr(source.params, name).expand_as(getattr(params, name)),
                                   rtol=0, atol=0)
    assert not params.global_rotation.any() and not params.translation.any()
    torch.testing.assert_close(cameras.cam2world, source.camera.cam2world.expand(5, 4, 4), rtol=0, atol=0)


def test_relative_turns_the_avatar_as_the_driver_turned_in_the_source_view():
    source = _track(30, 5, -3, expression=0.01, seed=1)
    driving = [_track(0, 0, 0, expression=0.005, seed=2), _track(20, 0, 0, expression=0.005, seed=3),
               _track(-10, 12, 0, translation=(0.05, 0.02, 2.6), expression=0.005, seed=4)]
    params, cameras = transfer_motion(source, driving)
    rs = source.head_rotation
    for t, d in enumerate(driving):
        delta = d.head_rotation @ driving[0].head_rotation.T  # the driver's turn in camera axes
        np.testing.assert_allclose(rs @ _matrix(params.global_rotation[t]), delta @ rs, atol=1e-5)
        expected = source.params.expression + d.params.expression - driving[0].params.expression
        torch.testing.assert_close(params.expression[t : t + 1], expected)
    # A 20-degree yaw of the driver is a 20-degree rotation of the avatar (about the head's own vertical axis
    # here, as source and driver share it).
    assert math.degrees(float(params.global_rotation[1].norm())) == pytest.approx(20.0, abs=1e-4)
    # The driver moved 5 cm right and 10 cm closer (head units): so does the avatar in the source camera.
    np.testing.assert_allclose(rs @ params.translation[2].double().numpy(), [0.05, 0.0, -0.1], atol=1e-6)
    torch.testing.assert_close(cameras.cam2world, source.camera.cam2world.expand(3, 4, 4))


def test_relative_motion_undoes_the_driving_crops_roll():
    """A driver whose crop rotates with it: the crop camera sees no roll, the video frame does."""
    driving = [_track(0, 0, 0, crop_roll=0), _track(0, 0, 0, crop_roll=15)]
    params, _ = transfer_motion(_track(), driving)
    rotation = HEAD_TO_CAMERA @ _matrix(params.global_rotation[1]) @ HEAD_TO_CAMERA
    assert math.degrees(math.atan2(rotation[1, 0], rotation[0, 0])) == pytest.approx(15.0, abs=1e-4)  # in-image roll
    pose0 = frame_pose(driving[0], 3.0 * driving[0].crop.side)
    assert pose0[1][2] == pytest.approx(driving[0].head_translation[2] * 3.0 / 4.2647, rel=1e-6)


def test_absolute_uses_the_driving_parameters_and_pose():
    source = _track(30, 5, 0, expression=0.01, eyes=0.1, seed=1)
    driving = [_track(-15, 10, 5, translation=(0.01, 0.0, 2.8), expression=0.01, seed=5),
               _track(10, -5, 0, expression=0.01, seed=6)]
    absolute, cam_a = transfer_motion(source, driving, mode="absolute")
    relative, _ = transfer_motion(source, driving, mode="relative")
    for t, d in enumerate(driving):
        torch.testing.assert_close(absolute.expression[t : t + 1], d.params.expression)
        torch.testing.assert_close(absolute.eyes[t : t + 1], d.params.eyes)
        # The source camera sees the avatar in the driver's pose: R_s G = R_t, R_s T + t_s = t_t.
        np.testing.assert_allclose(source.head_rotation @ _matrix(absolute.global_rotation[t]), d.frame_rotation,
                                   atol=1e-5)
        np.testing.assert_allclose(source.head_rotation @ absolute.translation[t].double().numpy()
                                   + source.head_translation, d.head_translation, atol=1e-6)
    assert not torch.allclose(absolute.expression, relative.expression)  # identity: driver's vs source's
    assert not torch.allclose(absolute.global_rotation[0], relative.global_rotation[0])  # relative starts at 0
    assert not relative.global_rotation[0].any()
    torch.testing.assert_close(cam_a.cam2world, source.camera.cam2world.expand(2, 4, 4))


@pytest.mark.parametrize("mode", ["relative", "absolute"])
def test_driving_camera_carries_the_rigid_motion(mode):
    source = _track(30, expression=0.01)
    driving = [_track(0, expression=0.01, seed=7), _track(20, 5, 0, expression=0.01, seed=8)]
    params, cameras = transfer_motion(source, driving, mode=mode, use_driving_camera=True)
    torch.testing.assert_close(cameras.cam2world, torch.cat([d.camera.cam2world for d in driving]))
    assert not params.global_rotation.any() and not params.translation.any()
    expected = driving[1].params.expression if mode == "absolute" else (
        source.params.expression + driving[1].params.expression - driving[0].params.expression)
    torch.testing.assert_close(params.expression[1:], expected)


def test_transfer_motion_errors():
    source = _track()
    with pytest.raises(ValueError, match="mode"):
        transfer_motion(source, [source], mode="mirror")
    with pytest.raises(ValueError, match="non-empty"):
        transfer_motion(source, [])
    with pytest.raises(TypeError, match="source"):
        transfer_motion("photo.jpg", [source])


def test_the_old_tracking_path_still_works_with_a_deprecation_warning():
    import fhavatar.tracking

    with pytest.warns(DeprecationWarning, match="fhavatar.animation.transfer_motion"):
        assert fhavatar.tracking.transfer_motion is transfer_motion
    with pytest.raises(AttributeError, match="no attribute 'nothing_here'"):
        fhavatar.tracking.nothing_here  # noqa: B018
