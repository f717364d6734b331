"""Motion: temporal filters for tracked signals, head-pose helpers (angles, axis-angle, a video frame's pose)
and the transfer of a driving video's motion onto a source avatar.

Per frame, motion is the OpenHead non-rigid parameters (`expression`, `jaw`, `neck`, `eyes`) plus the head's rigid
pose relative to the camera (DESIGN.md, "Motion"). `transfer_motion` turns a source `FaceTrack` (the photo the
avatar was built from) and driving `FaceTrack`s into per-frame `OpenHeadParams` and cameras for
`Avatar.animate` / rendering:

- `mode="relative"` (default): the avatar keeps its own identity and starting expression and pose, and only the
  driver's *changes* are applied: `expression_t = source + (driving_t - driving_0)` (likewise jaw, neck, eyes);
  the head turns by the driver's rotation since frame 0, `global_rotation_t = R_s^T dR_t R_s` (`dR_t` measured in
  the driving video's camera, the crops' roll, shift and zoom undone, then seen from the source camera, `R_s` the
  source's head rotation), and moves by the driver's displacement since frame 0, `translation_t = R_s^T d_t` (head
  units; small for a talking head). The source camera stays.
- `mode="absolute"`: the driver's parameters replace the source's: `expression_t = driving_t` (identity
  included), and the head takes the driver's pose as seen by the source camera: `R_s G_t = R_t` with `R_t` the
  driver's head rotation in its video frame (roll kept) and `R_s T_t + t_s = t_t` (the driver's crop-camera
  position).
- `use_driving_camera=True`: each frame is seen from the driving frame's own camera (its crop camera around the
  canonical head), which already carries the driver's head pose, so `global_rotation` and `translation` are zero;
  the non-rigid parameters still follow `mode`.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import TYPE_CHECKING, Literal

import numpy as np
import torch

from ..head.open_head import OpenHeadParams
from ..rendering.cameras import PANOHEAD_FOCAL, Camera

if TYPE_CHECKING:
    from .fit import FaceTrack

__all__ = [
    "HEAD_TO_CAMERA",
    "frame_pose",
    "head_angles",
    "interpolate_missing",
    "rotation_from_angles",
    "smooth_sequence",
    "transfer_motion",
]

_NON_RIGID = ("expression", "jaw", "neck", "eyes")
#: Head-space axes (+y up, face toward +z) -> OpenCV camera axes of a camera looking at the face.
HEAD_TO_CAMERA = np.diag([1.0, -1.0, -1.0])


# ---------------------------------------------------------------------------------------------- temporal filters
def smooth_sequence(
    x: np.ndarray,  # [T, ..., C]
    sigma: float,
    range_scale: np.ndarray | None = None,  # broadcastable to [T, ...]
) -> np.ndarray:  # [T, ..., C]
    """Centred Gaussian smoothing along time (axis 0), truncated at 2.5 sigma and renormalised at the ends.

    Args:
        x (`np.ndarray` of shape `[T, ..., C]`): the signal (e.g. landmarks `[T, 478, 3]`, poses `[T, 9]`).
        sigma (`float`): Gaussian sigma in frames; `<= 0` returns a copy.
        range_scale (`np.ndarray`, *optional*): makes the filter edge-preserving (temporal bilateral): each
            neighbour is also weighted by `exp(-|x_s - x_t|^2 / (2 range_scale^2))`, the distance taken over the last
            axis, so motions larger than `range_scale` are kept while smaller jitter is averaged out.
    """
    x = np.asarray(x, dtype=np.float64)
    steps = len(x)
    if sigma <= 0 or steps < 2:
        return x.copy()
    radius = max(1, math.ceil(2.5 * sigma))
    num = np.zeros_like(x)
    den = np.zeros(x.shape[:-1])  # [T, ...]
    t = np.arange(steps)
    for offset in range(-radius, radius + 1):
        src = t + offset
        valid = ((src >= 0) & (src < steps)).astype(np.float64)
        shifted = x[np.clip(src, 0, steps - 1)]
        w = (math.exp(-0.5 * (offset / sigma) ** 2) * valid).reshape((-1,) + (1,) * (x.ndim - 2))
        if range_scale is not None:
            w = w * np.exp(-0.5 * (np.linalg.norm(shifted - x, axis=-1) / range_scale) ** 2)
        w = np.broadcast_to(w, den.shape)
        num += w[..., None] * shifted
        den += w
    return num / den[..., None]


def interpolate_missing(values: np.ndarray, present: np.ndarray) -> np.ndarray:  # [T, ...], [T] bool -> [T, ...]
    """Fill the rows of `values` where `present` is False, linearly in time between the nearest present rows
    (the nearest one before the first / after the last)."""
    values, present = np.asarray(values, dtype=np.float64), np.asarray(present, dtype=bool)
    if present.shape != values.shape[:1] or not present.any():
        raise ValueError(f"`present` must be a [T={len(values)}] bool mask with at least one True, got "
                         f"shape {present.shape} with {int(present.sum())} True.")
    idx, t = np.flatnonzero(present), np.arange(len(values))
    flat = values.reshape(len(values), -1)
    return np.stack([np.interp(t, idx, flat[idx, k]) for k in range(flat.shape[1])], 1).reshape(values.shape)


# ---------------------------------------------------------------------------------------------- rotations
def _skew(v: np.ndarray) -> np.ndarray:  # [..., 3] -> [..., 3, 3]
    x, y, z = v[..., 0], v[..., 1], v[..., 2]
    o = np.zeros_like(x)
    return np.stack([o, -z, y, z, o, -x, -y, x, o], -1).reshape(v.shape[:-1] + (3, 3))


def _rodrigues(w: np.ndarray) -> np.ndarray:  # [3] axis-angle -> [3, 3]
    theta = float(np.linalg.norm(w))
    k = _skew(w)
    if theta < 1e-9:
        return np.eye(3) + k
    return np.eye(3) + math.sin(theta) / theta * k + (1 - math.cos(theta)) / theta**2 * (k @ k)


def rotation_from_angles(yaw: float, pitch: float, roll: float) -> np.ndarray:  # degrees -> [3, 3]
    """Head-space rotation `Ry(yaw) @ Rx(pitch) @ Rz(roll)` (degrees; yaw > 0 turns the face toward +x, the
    subject's left; pitch > 0 tips it down; roll > 0 lifts its left side)."""
    a, b, c = (math.radians(v) for v in (yaw, pitch, roll))
    ry = np.array([[math.cos(a), 0, math.sin(a)], [0, 1, 0], [-math.sin(a), 0, math.cos(a)]])
    rx = np.array([[1, 0, 0], [0, math.cos(b), -math.sin(b)], [0, math.sin(b), math.cos(b)]])
    rz = np.array([[math.cos(c), -math.sin(c), 0], [math.sin(c), math.cos(c), 0], [0, 0, 1]])
    return ry @ rx @ rz


def head_angles(world2cam_rotation: np.ndarray) -> tuple[float, float, float]:  # [3, 3] -> degrees
    """(yaw, pitch, roll) in degrees of a head pose relative to a frontal camera (inverse of
    `HEAD_TO_CAMERA @ rotation_from_angles(...)`)."""
    m = HEAD_TO_CAMERA @ np.asarray(world2cam_rotation, dtype=np.float64)
    pitch = math.asin(float(np.clip(-m[1, 2], -1.0, 1.0)))
    return math.degrees(math.atan2(m[0, 2], m[2, 2])), math.degrees(pitch), math.degrees(math.atan2(m[1, 0], m[1, 1]))


def _rz(angle: float) -> np.ndarray:  # rotation about the camera's optical axis, OpenCV axes
    c, s = math.cos(angle), math.sin(angle)
    return np.array([[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]])


def _axis_angle(rotation: np.ndarray) -> np.ndarray:  # [3, 3] -> [3], via a unit quaternion (stable near pi)
    m = rotation
    tr = np.trace(m)
    candidates = [tr, m[0, 0], m[1, 1], m[2, 2]]
    k = int(np.argmax(candidates))
    if k == 0:
        w = math.sqrt(max(1.0 + tr, 0.0)) / 2
        v = np.array([m[2, 1] - m[1, 2], m[0, 2] - m[2, 0], m[1, 0] - m[0, 1]]) / (4 * w)
    else:
        i, j, n = k - 1, k % 3, (k + 1) % 3
        v = np.zeros(3)
        v[i] = math.sqrt(max(1.0 + m[i, i] - m[j, j] - m[n, n], 0.0)) / 2
        v[j], v[n] = (m[j, i] + m[i, j]) / (4 * v[i]), (m[n, i] + m[i, n]) / (4 * v[i])
        w = (m[n, j] - m[j, n]) / (4 * v[i])
    if w < 0:
        w, v = -w, -v
    norm = float(np.linalg.norm(v))
    return np.zeros(3) if norm < 1e-12 else v / norm * 2 * math.atan2(norm, w)


def frame_pose(track: FaceTrack, focal_px: float) -> tuple[np.ndarray, np.ndarray]:  # -> [3, 3], [3]
    """The head's pose in a fixed camera of the original frame (focal `focal_px` original pixels, principal point
    at the frame centre): the crop's roll, shift and zoom undone.

    The rotation is exact about the optical axis (roll); an off-centre crop is treated as a shifted view, not as a
    camera pan (a small error for the narrow PanoHead field of view).
    """
    crop = track.crop
    rotation = _rz(crop.roll) @ track.head_rotation
    t = np.asarray(track.head_translation, dtype=np.float64)
    f_crop = PANOHEAD_FOCAL * crop.output_size  # crop pixels
    uv = crop.invert(f_crop * t[:2] / t[2] + crop.output_size / 2.0)  # head origin in original pixels
    depth = t[2] * focal_px / (f_crop / crop.scale)
    centre = np.array(crop.image_size, dtype=np.float64) / 2.0
    return rotation, np.array([*((uv - centre) * depth / focal_px), depth])


# ---------------------------------------------------------------------------------------------- transfer
def transfer_motion(
    source: FaceTrack,
    driving: Sequence[FaceTrack],
    mode: Literal["relative", "absolute"] = "relative",
    use_driving_camera: bool = False,
) -> tuple[OpenHeadParams, Camera]:
    """Per-frame avatar parameters and cameras that re-enact `driving` with the `source` avatar (module docstring).

    Args:
        source (`FaceTrack`): the photo the avatar was built from (`track_image`).
        driving (sequence of `FaceTrack`, length T): the driving video (`track_video`).
        mode (`"relative"` or `"absolute"`, *optional*, defaults to `"relative"`): transfer changes since the
            first driving frame, or the driving parameters and pose themselves.
        use_driving_camera (`bool`, *optional*, defaults to False): return the driving frames' cameras (the rigid
            motion then lives in the camera; `global_rotation`/`translation` are zero) instead of the source camera.

    Returns:
        `(params, cameras)`: `OpenHeadParams` with batch T (head space; `global_rotation` axis-angle about the head
        origin, `translation` in head units) and a `Camera` with batch T.

    Example:
        ```py
        >>> from fhavatar.tracking import track_image, track_video, transfer_motion
        >>> source, driving = track_image("photo.jpg"), track_video("clip.mp4")  # doctest: +SKIP
        >>> params, cameras = transfer_motion(source, driving)  # doctest: +SKIP
        >>> params.batch_size == len(cameras) == len(driving)  # doctest: +SKIP
        True
        ```
    """
    from .fit import FaceTrack

    if not isinstance(source, FaceTrack):
        raise TypeError(f"`source` must be a FaceTrack (from track_image), got {type(source).__name__}.")
    driving = list(driving) if not isinstance(driving, FaceTrack) else [driving]
    if not driving or not all(isinstance(d, FaceTrack) for d in driving):
        raise ValueError("`driving` must be a non-empty sequence of FaceTrack (from track_video), got "
                         f"{len(driving)} item(s) of types {sorted({type(d).__name__ for d in driving})}.")
    if mode not in ("relative", "absolute"):
        raise ValueError(f"`mode` must be 'relative' or 'absolute', got {mode!r}.")
    count = len(driving)
    like = source.params.expression
    fields = {}
    for name in _NON_RIGID:
        drv = torch.cat([getattr(d.params, name).to(like) for d in driving])  # [T, ...]
        if mode == "relative":
            drv = getattr(source.params, name).to(like) + (drv - drv[:1])
        fields[name] = drv
    rotations, translations = np.zeros((count, 3)), np.zeros((count, 3))
    if use_driving_camera:
        cameras = Camera.cat([d.camera.to(like.device) for d in driving])
    else:
        rs, ts = source.head_rotation, source.head_translation
        to_source = _rz(source.crop.roll).T  # original-frame axes -> source crop-camera axes
        focal = PANOHEAD_FOCAL * driving[0].crop.side  # the driving video's camera, in its pixels
        r0, o0 = frame_pose(driving[0], focal)
        for i, d in enumerate(driving):
            if mode == "relative":
                r, o = frame_pose(d, focal)
                delta, shift = to_source @ (r @ r0.T) @ to_source.T, to_source @ (o - o0)
                rotations[i], translations[i] = _axis_angle(rs.T @ delta @ rs), rs.T @ shift
            else:
                rotations[i] = _axis_angle(rs.T @ d.frame_rotation)
                translations[i] = rs.T @ (d.head_translation - ts)
        cameras = Camera(cam2world=source.camera.cam2world.expand(count, 4, 4).clone(),
                         intrinsics=source.camera.intrinsics.expand(count, 3, 3).clone())
    params = OpenHeadParams(global_rotation=torch.tensor(rotations).to(like),
                            translation=torch.tensor(translations).to(like), **fields)
    return params, cameras
