"""`FaceTrack`: the record of one tracked image (a photo or a video frame), made by the fit (`fit.py`,
`video.py`) and read by motion transfer (`fhavatar.animation`), the pipeline and the evaluation.

Conventions (ARCHITECTURE.md): world = head space; the head stays canonical and the crop's PanoHead camera moves around
it, so the head's rigid pose in the crop's OpenCV camera is `world2cam = [head_rotation | head_translation]`.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..head.open_head import OpenHeadParams
from ..rendering.cameras import Camera
from ..rotations import axis_rotation_np
from .align import CropTransform

__all__ = ["FaceTrack"]


@dataclass
class FaceTrack:
    """One tracked image (a photo or a video frame).

    Attributes:
        image (`np.ndarray` of shape `[512, 512, 3]`, uint8): the aligned PanoHead-style crop.
        mask (`np.ndarray` of shape `[512, 512]`, float32, or `None`): foreground probability of the crop
            (MediaPipe selfie segmentation); `None` when not computed (driving videos by default).
        crop (`CropTransform`): original image -> crop.
        landmarks (`np.ndarray` of shape `[478, 3]`, float32): Face Mesh landmarks in crop pixels, z scaled like x.
        camera (`Camera`, batch 1): PanoHead intrinsics; `cam2world` places the camera around the canonical head.
        params (`OpenHeadParams`, batch 1): expression residuals and eye rotations; zero jaw, neck, global
            rotation and translation (the head is canonical; the camera carries the pose).
        head_rotation (`np.ndarray` of shape `[3, 3]`): head space -> crop camera rotation (`world2cam[:3, :3]`).
        head_translation (`np.ndarray` of shape `[3]`): `world2cam[:3, 3]`, head units.
        reprojection_error (`float`): mean landmark reprojection error of the fitted model / face box size.
        rigid_error (`float`): the same for the rigidly posed template (expression zero): how well the pose fits.
        has_face (`bool`): False for video frames without a detected face (filled by interpolation).
    """

    image: np.ndarray  # [512, 512, 3] uint8
    mask: np.ndarray | None  # [512, 512] float32
    crop: CropTransform
    landmarks: np.ndarray  # [478, 3]
    camera: Camera
    params: OpenHeadParams
    head_rotation: np.ndarray  # [3, 3]
    head_translation: np.ndarray  # [3]
    reprojection_error: float
    rigid_error: float
    has_face: bool = True

    @property
    def world2cam(self) -> np.ndarray:  # [4, 4]
        """Head space -> crop camera rigid transform."""
        out = np.eye(4)
        out[:3, :3], out[:3, 3] = self.head_rotation, self.head_translation
        return out

    @property
    def frame_rotation(self) -> np.ndarray:  # [3, 3]
        """The head's rotation in the original image's camera axes: the crop's roll undone (head roll kept)."""
        return axis_rotation_np(2, self.crop.roll) @ self.head_rotation
