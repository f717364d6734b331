"""Rotation maths, in one place: axis-angle vectors, unit quaternions `(w, x, y, z)`, rotation matrices, rotations
about one axis, and the head-pose angles of the tracking conventions.

Torch functions work on any leading batch shape `[...]`, any dtype and device, and are differentiable. Numpy callers
get float64 versions suffixed `_np`: written in numpy where the tracking fit calls them in its inner loops
(`skew_np`, `axis_angle_to_matrix_np`), a float64 call of the torch function elsewhere (`axis_rotation_np`); other
numpy code converts with `torch.from_numpy`. `rotation_from_angles` / `head_angles` (numpy, degrees) are the
head-pose angles of the tracking conventions (`HEAD_TO_CAMERA`).

Conventions: a rotation matrix acts on column vectors (`p' = R @ p`); quaternions are Hamilton's, scalar first;
an axis-angle vector is `angle * unit_axis` (radians, right-handed).
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = [
    "HEAD_TO_CAMERA",
    "axis_angle_to_matrix",
    "axis_angle_to_matrix_np",
    "axis_rotation",
    "axis_rotation_np",
    "head_angles",
    "matrix_to_axis_angle",
    "nearest_rotation_np",
    "quat_from_z_to",
    "quat_multiply",
    "quat_to_axis_angle",
    "quat_to_rotmat",
    "rotation_from_angles",
    "rotmat_to_quat",
    "similarity_fit_np",
    "skew",
    "skew_np",
]

#: Head-space axes (+y up, face toward +z) -> OpenCV camera axes of a camera looking at the face.
HEAD_TO_CAMERA = np.diag([1.0, -1.0, -1.0])
#: Below this squared angle, `axis_angle_to_matrix` uses Taylor terms (exact at zero, finite gradients).
_SMALL_ANGLE2 = 1e-8
#: The pair of axes a rotation about axis 0 (x), 1 (y) or 2 (z) turns, in the right-handed order.
_AXIS_PLANES = ((1, 2), (2, 0), (0, 1))


# ---------------------------------------------------------------------------------------------- axis-angle
def skew(
    v: Tensor,  # [..., 3]
) -> Tensor:  # [..., 3, 3]
    """Cross-product matrices: `skew(v) @ u == cross(v, u)`."""
    x, y, z = v.unbind(-1)
    o = torch.zeros_like(x)
    return torch.stack([o, -z, y, z, o, -x, -y, x, o], -1).reshape(v.shape[:-1] + (3, 3))


def axis_angle_to_matrix(
    axis_angle: Tensor,  # [..., 3]
) -> Tensor:  # [..., 3, 3]
    """Rodrigues' formula, differentiable and exact at zero (Taylor terms below 1e-4 rad)."""
    theta2 = (axis_angle * axis_angle).sum(-1, keepdim=True)[..., None]  # [..., 1, 1]
    theta = theta2.clamp(min=1e-16).sqrt()
    small = theta2 < _SMALL_ANGLE2
    # sin(θ)/θ and (1 - cos θ)/θ², with series expansions near zero to keep gradients finite.
    a = torch.where(small, 1 - theta2 / 6, torch.sin(theta) / theta)
    b = torch.where(small, 0.5 - theta2 / 24, (1 - torch.cos(theta)) / theta2.clamp(min=1e-16))
    k = skew(axis_angle)
    eye = torch.eye(3, dtype=axis_angle.dtype, device=axis_angle.device).expand_as(k)
    return eye + a * k + b * (k @ k)


def matrix_to_axis_angle(
    matrix: Tensor,  # [..., 3, 3]
) -> Tensor:  # [..., 3]
    """Axis-angle vectors (angle in [0, pi]) of rotation matrices, through the unit quaternion (stable near pi)."""
    return quat_to_axis_angle(rotmat_to_quat(matrix))


def skew_np(
    v: np.ndarray,  # [..., 3]
) -> np.ndarray:  # [..., 3, 3]
    """`skew` for numpy arrays."""
    x, y, z = v[..., 0], v[..., 1], v[..., 2]
    o = np.zeros_like(x)
    return np.stack([o, -z, y, z, o, -x, -y, x, o], -1).reshape(v.shape[:-1] + (3, 3))


def axis_angle_to_matrix_np(
    axis_angle: np.ndarray,  # [3]
) -> np.ndarray:  # [3, 3] float64
    """`axis_angle_to_matrix` of one float64 vector, in numpy (the tracking fit calls it in its inner loops)."""
    w = np.asarray(axis_angle, dtype=np.float64)
    theta = float(np.linalg.norm(w))
    k = skew_np(w)
    if theta < 1e-9:
        return np.eye(3) + k
    return np.eye(3) + math.sin(theta) / theta * k + (1 - math.cos(theta)) / theta**2 * (k @ k)


# ---------------------------------------------------------------------------------------------- quaternions
def quat_to_rotmat(
    quats: Tensor,  # [..., 4] (w, x, y, z), not necessarily normalised
) -> Tensor:  # [..., 3, 3]
    """Rotation matrices from (not necessarily normalised) quaternions `(w, x, y, z)`."""
    q = quats / quats.norm(dim=-1, keepdim=True)
    w, x, y, z = q.unbind(-1)
    return torch.stack(
        [
            1 - 2 * (y * y + z * z), 2 * (x * y - w * z), 2 * (x * z + w * y),
            2 * (x * y + w * z), 1 - 2 * (x * x + z * z), 2 * (y * z - w * x),
            2 * (x * z - w * y), 2 * (y * z + w * x), 1 - 2 * (x * x + y * y),
        ],
        dim=-1,
    ).reshape(quats.shape[:-1] + (3, 3))


def rotmat_to_quat(
    matrix: Tensor,  # [..., 3, 3]
) -> Tensor:  # [..., 4] (w, x, y, z), unit, w >= 0
    """Unit quaternions of rotation matrices (the numerically stable branch per element)."""
    m = matrix
    m00, m11, m22 = m[..., 0, 0], m[..., 1, 1], m[..., 2, 2]
    # 4 q_i^2 for i = w, x, y, z, and the candidates built from the largest one.
    sq = torch.stack([1 + m00 + m11 + m22, 1 + m00 - m11 - m22, 1 - m00 + m11 - m22, 1 - m00 - m11 + m22], -1)
    r = sq.clamp(min=1e-12).sqrt()  # 2 |q_i|
    d21, d02, d10 = m[..., 2, 1] - m[..., 1, 2], m[..., 0, 2] - m[..., 2, 0], m[..., 1, 0] - m[..., 0, 1]
    s21, s02, s10 = m[..., 2, 1] + m[..., 1, 2], m[..., 0, 2] + m[..., 2, 0], m[..., 1, 0] + m[..., 0, 1]
    candidates = torch.stack([
        torch.stack([r[..., 0] ** 2, d21, d02, d10], -1) / (2 * r[..., 0:1]),
        torch.stack([d21, r[..., 1] ** 2, s10, s02], -1) / (2 * r[..., 1:2]),
        torch.stack([d02, s10, r[..., 2] ** 2, s21], -1) / (2 * r[..., 2:3]),
        torch.stack([d10, s02, s21, r[..., 3] ** 2], -1) / (2 * r[..., 3:4]),
    ], -2)  # [..., 4, 4]
    best = sq.argmax(-1)[..., None, None].expand(*sq.shape[:-1], 1, 4)
    q = F.normalize(candidates.gather(-2, best)[..., 0, :], dim=-1)
    return torch.where(q[..., :1] < 0, -q, q)


def quat_multiply(
    a: Tensor,  # [..., 4] (w, x, y, z)
    b: Tensor,  # [..., 4] (w, x, y, z)
) -> Tensor:  # [..., 4]
    """Hamilton product `a ⊗ b` (the rotation `b` first, then `a`)."""
    aw, ax, ay, az = a.unbind(-1)
    bw, bx, by, bz = b.unbind(-1)
    return torch.stack([
        aw * bw - ax * bx - ay * by - az * bz,
        aw * bx + ax * bw + ay * bz - az * by,
        aw * by - ax * bz + ay * bw + az * bx,
        aw * bz + ax * by - ay * bx + az * bw,
    ], -1)


def quat_to_axis_angle(
    quats: Tensor,  # [..., 4] (w, x, y, z), not necessarily normalised
) -> Tensor:  # [..., 3]
    """Axis-angle vectors (angle in [0, pi]: `q` and `-q` give the same) of quaternions; zero for the identity."""
    q = torch.where(quats[..., :1] < 0, -quats, quats)
    w, v = q[..., 0], q[..., 1:]
    norm = v.norm(dim=-1)
    angle = 2 * torch.atan2(norm, w)
    out = v / norm.clamp(min=1e-12)[..., None] * angle[..., None]
    return torch.where((norm < 1e-12)[..., None], torch.zeros_like(out), out)


def quat_from_z_to(
    directions: Tensor,  # [..., 3] unit vectors, not -z
) -> Tensor:  # [..., 4] (w, x, y, z)
    """Quaternions of the shortest rotations taking the z axis onto each unit vector (e.g. a surface normal)."""
    z = torch.tensor([0.0, 0.0, 1.0], dtype=directions.dtype, device=directions.device)
    axis = torch.cross(z.expand_as(directions), directions, dim=-1)
    cos = directions[..., 2].clamp(-1.0, 1.0)
    half = torch.acos(cos) / 2
    sin_axis = axis / axis.norm(dim=-1, keepdim=True).clamp(min=1e-12)
    q = torch.cat([torch.cos(half)[..., None], torch.sin(half)[..., None] * sin_axis], dim=-1)
    identity = torch.tensor([1.0, 0.0, 0.0, 0.0], dtype=directions.dtype, device=directions.device)
    return torch.where(cos[..., None] > 1 - 1e-9, identity, q)


# ---------------------------------------------------------------------------------------------- one axis
def axis_rotation(
    axis: int,  # 0 (x), 1 (y) or 2 (z)
    angle: Tensor,  # [...] radians
) -> Tensor:  # [..., 3, 3]
    """Rotations by `angle` about one coordinate axis (right-handed: about z, +x turns toward +y)."""
    if axis not in (0, 1, 2):
        raise ValueError(f"`axis` must be 0 (x), 1 (y) or 2 (z), got {axis!r}.")
    c, s = torch.cos(angle), torch.sin(angle)
    out = torch.zeros(angle.shape + (3, 3), dtype=angle.dtype, device=angle.device)
    i, j = _AXIS_PLANES[axis]
    out[..., axis, axis] = 1
    out[..., i, i], out[..., i, j], out[..., j, i], out[..., j, j] = c, -s, s, c
    return out


def axis_rotation_np(axis: int, angle: float) -> np.ndarray:  # [3, 3] float64
    """`axis_rotation` of one angle (radians), as a float64 numpy matrix."""
    return axis_rotation(axis, torch.tensor(float(angle), dtype=torch.float64)).numpy()


def nearest_rotation_np(matrices: np.ndarray) -> np.ndarray:  # [..., 3, 3] -> [..., 3, 3] float64
    """The rotation nearest each matrix (Frobenius; SVD, reflections excluded): an average of rotation matrices
    (smoothed poses: the chordal mean) projected back onto SO(3)."""
    u, _, vt = np.linalg.svd(np.asarray(matrices, dtype=np.float64))
    u[..., :, 2] *= np.sign(np.linalg.det(u @ vt))[..., None]
    return u @ vt


def similarity_fit_np(
    source: np.ndarray,  # [N, 3]
    target: np.ndarray,  # [N, 3]
) -> tuple[float, np.ndarray, np.ndarray]:  # scale, rotation [3, 3], translation [3] (float64)
    """Least-squares similarity `target ≈ scale * rotation @ source + translation` (Umeyama, no reflection)."""
    source, target = np.asarray(source, dtype=np.float64), np.asarray(target, dtype=np.float64)
    mean_source, mean_target = source.mean(0), target.mean(0)
    a, b = source - mean_source, target - mean_target
    u, sig, vt = np.linalg.svd(b.T @ a)
    d = np.array([1.0, 1.0, np.sign(np.linalg.det(u @ vt))])
    rotation = (u * d) @ vt
    scale = float((sig * d).sum() / (a**2).sum())
    return scale, rotation, mean_target - scale * rotation @ mean_source


# ---------------------------------------------------------------------------------------------- head pose
def rotation_from_angles(yaw: float, pitch: float, roll: float) -> np.ndarray:  # degrees -> [3, 3] float64
    """Head-space rotation `Ry(yaw) @ Rx(pitch) @ Rz(roll)` (degrees; yaw > 0 turns the face toward +x, the
    subject's left; pitch > 0 tips it down; roll > 0 lifts its left side)."""
    a, b, c = (math.radians(v) for v in (yaw, pitch, roll))
    return axis_rotation_np(1, a) @ axis_rotation_np(0, b) @ axis_rotation_np(2, c)


def head_angles(world2cam_rotation: np.ndarray) -> tuple[float, float, float]:  # [3, 3] -> degrees
    """(yaw, pitch, roll) in degrees of a head pose relative to a frontal camera (inverse of
    `HEAD_TO_CAMERA @ rotation_from_angles(...)`)."""
    m = HEAD_TO_CAMERA @ np.asarray(world2cam_rotation, dtype=np.float64)
    pitch = math.asin(float(np.clip(-m[1, 2], -1.0, 1.0)))
    return math.degrees(math.atan2(m[0, 2], m[2, 2])), math.degrees(pitch), math.degrees(math.atan2(m[1, 0], m[1, 1]))
