"""`fhavatar.rotations`: the conversions invert each other, the numpy twins match the torch functions, and the
one-axis and head-pose rotations follow their documented conventions."""

import math

import numpy as np
import pytest
import torch

from fhavatar.rotations import (
    HEAD_TO_CAMERA,
    axis_angle_to_matrix,
    axis_angle_to_matrix_np,
    axis_rotation,
    axis_rotation_np,
    head_angles,
    matrix_to_axis_angle,
    nearest_rotation_np,
    quat_from_z_to,
    quat_multiply,
    quat_to_axis_angle,
    quat_to_rotmat,
    rotation_from_angles,
    rotmat_to_quat,
    similarity_fit_np,
    skew,
    skew_np,
)


def _random_axis_angles(count: int, seed: int = 0) -> torch.Tensor:  # [count, 3] float64, angles in [0, pi)
    g = torch.Generator().manual_seed(seed)
    axes = torch.nn.functional.normalize(torch.randn(count, 3, generator=g, dtype=torch.float64), dim=-1)
    return axes * torch.rand(count, 1, generator=g, dtype=torch.float64) * math.pi


def test_axis_angle_inverts_rodrigues_also_near_pi():
    rng = np.random.default_rng(0)
    for angle in (0.0, 1e-7, 0.3, 2.0, math.pi - 1e-4, math.pi):
        axis = rng.standard_normal(3)
        w = torch.tensor(axis / np.linalg.norm(axis) * angle)
        r = axis_angle_to_matrix(w)
        torch.testing.assert_close(axis_angle_to_matrix(matrix_to_axis_angle(r)), r, atol=1e-6, rtol=0)
    w = _random_axis_angles(50)
    torch.testing.assert_close(matrix_to_axis_angle(axis_angle_to_matrix(w)), w, atol=1e-9, rtol=0)  # batched


def test_quaternion_conversions_agree():
    w = _random_axis_angles(50, seed=1)
    matrices = axis_angle_to_matrix(w)
    quats = rotmat_to_quat(matrices)
    assert (quats[:, 0] >= 0).all()
    torch.testing.assert_close(quat_to_rotmat(quats), matrices, atol=1e-12, rtol=0)
    torch.testing.assert_close(quat_to_axis_angle(quats), w, atol=1e-9, rtol=0)
    torch.testing.assert_close(quat_to_axis_angle(-quats), w, atol=1e-9, rtol=0)  # q and -q: one rotation
    torch.testing.assert_close(quat_to_rotmat(quat_multiply(quats, quats.flip(0))), matrices @ matrices.flip(0),
                               atol=1e-12, rtol=0)
    assert not quat_to_axis_angle(torch.tensor([1.0, 0.0, 0.0, 0.0])).any()


def test_numpy_twins_match_the_torch_functions():
    w = _random_axis_angles(20, seed=2).numpy()
    np.testing.assert_array_equal(skew_np(w), skew(torch.from_numpy(w)).numpy())
    for v in [*w, np.zeros(3), np.array([1e-10, 0.0, 0.0]), np.array([0.0, 3e-5, 0.0])]:
        # A few float64 ulps apart, not bit-equal: libm vs SLEEF sin/cos, OpenBLAS vs MKL for k @ k, and |w|² vs
        # norm(w)² differ by ulps that depend on the CPU (measured 2e-16 here, 4e-16 with AVX2 kernels).
        np.testing.assert_allclose(axis_angle_to_matrix_np(v), axis_angle_to_matrix(torch.from_numpy(v)).numpy(),
                                   atol=1e-14, rtol=0)
    u = np.array([0.3, -0.2, 0.9])
    np.testing.assert_allclose(skew_np(w[0]) @ u, np.cross(w[0], u), atol=1e-15)


@pytest.mark.parametrize("axis", [0, 1, 2])
def test_axis_rotation_is_the_axis_angle_rotation(axis):
    angles = torch.tensor([[-2.0, 0.0], [0.4, math.pi]], dtype=torch.float64)
    unit = torch.zeros(3, dtype=torch.float64)
    unit[axis] = 1.0
    torch.testing.assert_close(axis_rotation(axis, angles), axis_angle_to_matrix(angles[..., None] * unit),
                               atol=1e-12, rtol=0)
    np.testing.assert_allclose(axis_rotation_np(axis, 0.4), axis_rotation(axis, angles[1, 0]).numpy(), atol=0)
    with pytest.raises(ValueError, match="axis"):
        axis_rotation(3, angles)


def test_about_z_x_turns_toward_y():
    np.testing.assert_allclose(axis_rotation_np(2, math.pi / 2) @ [1.0, 0.0, 0.0], [0.0, 1.0, 0.0], atol=1e-15)


def test_head_angles_invert_rotation_from_angles():
    for angles in [(0.0, 0.0, 0.0), (30.0, -10.0, 5.0), (-70.0, 25.0, -15.0)]:
        assert head_angles(HEAD_TO_CAMERA @ rotation_from_angles(*angles)) == pytest.approx(angles, abs=1e-9)
    # yaw > 0 turns the face (+z) toward +x
    assert (rotation_from_angles(30.0, 0.0, 0.0) @ [0.0, 0.0, 1.0])[0] > 0.4


def test_quat_from_z_to_takes_z_onto_each_direction():
    g = torch.Generator().manual_seed(3)
    directions = torch.nn.functional.normalize(torch.randn(100, 3, generator=g, dtype=torch.float64), dim=-1)
    directions[0] = torch.tensor([0.0, 0.0, 1.0], dtype=torch.float64)
    quats = quat_from_z_to(directions)
    torch.testing.assert_close(quats[0], torch.tensor([1.0, 0.0, 0.0, 0.0], dtype=torch.float64))
    moved = quat_to_rotmat(quats) @ torch.tensor([0.0, 0.0, 1.0], dtype=torch.float64)
    torch.testing.assert_close(moved, directions, atol=1e-9, rtol=0)


def test_nearest_rotation_projects_averages_back_onto_rotations():
    rotations = axis_angle_to_matrix(_random_axis_angles(8)).numpy()  # [8, 3, 3]
    np.testing.assert_allclose(nearest_rotation_np(rotations), rotations, atol=1e-12)  # a rotation is its own
    mean = (rotations[:-1] + rotations[1:]) / 2  # chordal means: not rotations
    assert np.abs(np.linalg.det(mean) - 1).max() > 1e-3
    nearest = nearest_rotation_np(mean)
    np.testing.assert_allclose(nearest @ np.swapaxes(nearest, -1, -2), np.broadcast_to(np.eye(3), (7, 3, 3)), atol=1e-12)
    np.testing.assert_allclose(np.linalg.det(nearest), 1.0, atol=1e-12)
    # the mean of two rotations projects onto the midway rotation (same axis, half the relative angle)
    a, b = rotations[0], rotations[1]
    half = axis_angle_to_matrix(matrix_to_axis_angle(torch.from_numpy(a.T @ b)) / 2).numpy()
    np.testing.assert_allclose(nearest_rotation_np((a + b) / 2), a @ half, atol=1e-9)
    flip = np.diag([1.0, 1.0, -1.0])  # a reflection: the nearest proper rotation, never a reflection
    assert np.linalg.det(nearest_rotation_np(flip)) > 0


def test_similarity_fit_recovers_a_known_similarity():
    rng = np.random.default_rng(3)
    source = rng.normal(size=(40, 3))
    rotation = axis_angle_to_matrix_np(np.array([0.3, -0.7, 0.2]))
    target = 2.5 * source @ rotation.T + np.array([4.0, -1.0, 0.5])
    scale, fitted, translation = similarity_fit_np(source, target)
    assert scale == pytest.approx(2.5, abs=1e-12)
    np.testing.assert_allclose(fitted, rotation, atol=1e-12)
    np.testing.assert_allclose(translation, [4.0, -1.0, 0.5], atol=1e-12)
    mirrored = target * np.array([-1.0, 1.0, 1.0])  # a mirror image is fitted by a rotation, not a reflection
    assert np.linalg.det(similarity_fit_np(source, mirrored)[1]) > 0
