"""Animation: the transfer of a driving video's motion onto a source avatar.

Per frame, motion is the OpenHead non-rigid parameters (`expression`, `jaw`, `neck`, `eyes`) plus the head's rigid
pose relative to the camera (ARCHITECTURE.md, "Conventions"). `transfer_motion` turns a source `FaceTrack` (the photo the
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

from collections.abc import Sequence
from typing import Literal

import numpy as np
import torch

from .head.open_head import OpenHeadParams
from .rendering.cameras import PANOHEAD_FOCAL, Camera
from .rotations import axis_rotation_np, matrix_to_axis_angle
from .tracking.face_track import FaceTrack

__all__ = ["frame_pose", "transfer_motion"]

_NON_RIGID = ("expression", "jaw", "neck", "eyes")


def frame_pose(track: FaceTrack, focal_px: float) -> tuple[np.ndarray, np.ndarray]:  # -> [3, 3], [3]
    """The head's pose in a fixed camera of the original frame (focal `focal_px` original pixels, principal point
    at the frame centre): the crop's roll, shift and zoom undone.

    The rotation is exact about the optical axis (roll); an off-centre crop is treated as a shifted view, not as a
    camera pan (a small error for the narrow PanoHead field of view).
    """
    crop = track.crop
    rotation = axis_rotation_np(2, crop.roll) @ track.head_rotation
    t = np.asarray(track.head_translation, dtype=np.float64)
    f_crop = PANOHEAD_FOCAL * crop.output_size  # crop pixels
    uv = crop.invert(f_crop * t[:2] / t[2] + crop.output_size / 2.0)  # head origin in original pixels
    depth = t[2] * focal_px / (f_crop / crop.scale)
    centre = np.array(crop.image_size, dtype=np.float64) / 2.0
    return rotation, np.array([*((uv - centre) * depth / focal_px), depth])


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
        >>> from fhavatar.animation import transfer_motion
        >>> from fhavatar.tracking import track_image, track_video
        >>> source, driving = track_image("photo.jpg"), track_video("clip.mp4")  # doctest: +SKIP
        >>> params, cameras = transfer_motion(source, driving)  # doctest: +SKIP
        >>> params.batch_size == len(cameras) == len(driving)  # doctest: +SKIP
        True
        ```
    """
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
    rotations, translations = np.tile(np.eye(3), (count, 1, 1)), np.zeros((count, 3))  # [T, 3, 3], [T, 3]
    if use_driving_camera:
        cameras = Camera.cat([d.camera.to(like.device) for d in driving])
    else:
        rs, ts = source.head_rotation, source.head_translation
        to_source = axis_rotation_np(2, source.crop.roll).T  # original-frame axes -> source crop-camera axes
        focal = PANOHEAD_FOCAL * driving[0].crop.side  # the driving video's camera, in its pixels
        r0, o0 = frame_pose(driving[0], focal)
        for i, d in enumerate(driving):
            if mode == "relative":
                r, o = frame_pose(d, focal)
                delta, shift = to_source @ (r @ r0.T) @ to_source.T, to_source @ (o - o0)
                rotations[i], translations[i] = rs.T @ delta @ rs, rs.T @ shift
            else:
                rotations[i] = rs.T @ d.frame_rotation
                translations[i] = rs.T @ (d.head_translation - ts)
        cameras = Camera(cam2world=source.camera.cam2world.expand(count, 4, 4).clone(),
                         intrinsics=source.camera.intrinsics.expand(count, 3, 3).clone())
    params = OpenHeadParams(global_rotation=matrix_to_axis_angle(torch.from_numpy(rotations)).to(like),
                            translation=torch.tensor(translations).to(like), **fields)
    return params, cameras
