"""Driving-accuracy metrics: AKD (keypoints), AED (expression) and APD (pose), and how we measure their inputs.

The paper (§4.1) computes AKD with FAN landmarks [4], AED with SMIRK expression parameters [33] and APD with
MediaPipe-based head pose [26]. None of those exact protocols can be reproduced here (no FAN or SMIRK weights, and
the pose protocol is not published), so `MotionAnalyzer` offers **substitutes**, labelled as such in every table:

- AKD: mean L2 distance, in pixels of a 512² frame, between MediaPipe Face Mesh landmarks (the 468 mesh points,
  irises excluded) of the generated and the reference image.
- AED: mean L1 distance, in millimetres, between OpenHead expression *changes since the clip's first frame*
  (`fhavatar.tracking.fit_open_head`: per-vertex head-space displacement of the 468 face points). Using changes
  makes the number identity-free: OpenHead's expression residual also holds the person's face shape, which would
  dominate a cross-identity comparison.
- APD: mean L1 distance, in degrees, between (yaw, pitch, roll) head angles (`fhavatar.rotations.head_angles` of
  the fitted rotation, crop roll undone).

The distance functions themselves (`akd`, `aed`, `apd`) are plain and exact; only their inputs are substitutes.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from PIL import Image, ImageDraw
from torch import Tensor

from ..rotations import axis_rotation_np, head_angles
from .identity import five_points_from_mediapipe

__all__ = [
    "AKD_LANDMARKS", "AKD_REFERENCE_SIZE", "ANALYSIS_MIN_SIDE", "FaceMotion", "MotionAnalyzer", "aed", "akd", "apd",
    "face_oval_loop", "face_region_mask",
]

#: Landmarks used by the AKD substitute: Face Mesh's 468 mesh points (the 10 iris points are left out).
AKD_LANDMARKS = 468
#: AKD is reported in pixels of a frame of this side, whatever the evaluation resolution.
AKD_REFERENCE_SIZE = 512
#: Images with a shorter side are upsampled to it before landmark detection (Face Mesh wants faces >= 40 px).
ANALYSIS_MIN_SIDE = 256


def _as_tensor(value, name: str) -> Tensor:
    if isinstance(value, Tensor):
        return value.double()
    if isinstance(value, (np.ndarray, list, tuple)):
        return torch.as_tensor(np.asarray(value, dtype=np.float64))
    raise TypeError(f"{name} must be a Tensor or array, got {type(value).__name__}")


def _pair(a, b, names: tuple[str, str], min_ndim: int) -> tuple[Tensor, Tensor]:
    a, b = _as_tensor(a, names[0]), _as_tensor(b, names[1])
    if a.shape != b.shape:
        raise ValueError(f"{names[0]} and {names[1]} must have the same shape, got {tuple(a.shape)} and {tuple(b.shape)}")
    if a.ndim < min_ndim:
        raise ValueError(f"{names[0]} must have at least {min_ndim} dims (frames first), got shape {tuple(a.shape)}")
    return a, b


def akd(
    keypoints: Tensor | np.ndarray,  # [N, K, 2]
    reference: Tensor | np.ndarray,  # [N, K, 2]
) -> Tensor:  # [N]
    """Average keypoint distance per frame: the mean over K keypoints of the L2 distance (units of the input)."""
    a, b = _pair(keypoints, reference, ("keypoints", "reference"), 3)
    if a.shape[-1] != 2:
        raise ValueError(f"keypoints must have shape [N, K, 2], got {tuple(a.shape)}")
    return (a - b).norm(dim=-1).mean(-1)


def aed(
    expression: Tensor | np.ndarray,  # [N, ...]
    reference: Tensor | np.ndarray,  # [N, ...]
) -> Tensor:  # [N]
    """Average expression distance per frame: the mean absolute difference of all expression values (L1 / count)."""
    a, b = _pair(expression, reference, ("expression", "reference"), 2)
    return (a - b).abs().flatten(1).mean(1)


def apd(
    pose: Tensor | np.ndarray,  # [N, P]
    reference: Tensor | np.ndarray,  # [N, P]
) -> Tensor:  # [N]
    """Average pose distance per frame: the mean absolute difference of the pose values (e.g. yaw, pitch, roll)."""
    a, b = _pair(pose, reference, ("pose", "reference"), 2)
    return (a - b).abs().flatten(1).mean(1)


@dataclass
class FaceMotion:
    """What `MotionAnalyzer` measures on one image.

    Attributes:
        landmarks (`np.ndarray` of shape `[478, 2]`): Face Mesh landmarks in pixels of the analysed image.
        expression (`np.ndarray` of shape `[468, 3]`): OpenHead expression residual (head units).
        angles (`np.ndarray` of shape `[3]`): yaw, pitch, roll in degrees, in the image's axes.
        image_size (`tuple` of 2 ints): `(width, height)` of the analysed image.
    """

    landmarks: np.ndarray
    expression: np.ndarray
    angles: np.ndarray
    image_size: tuple[int, int]

    @property
    def five_points(self) -> np.ndarray:  # [5, 2]
        """ArcFace's five alignment points (for `IdentityNetwork(images, landmarks5=...)`)."""
        return five_points_from_mediapipe(self.landmarks).numpy()


def face_oval_loop() -> list[int]:
    """Face Mesh indices of the face's outer contour (forehead, temples, jaw, chin) in order around the face."""
    from mediapipe.python.solutions.face_mesh_connections import FACEMESH_FACE_OVAL

    neighbours: dict[int, list[int]] = {}
    for a, b in FACEMESH_FACE_OVAL:
        neighbours.setdefault(a, []).append(b)
        neighbours.setdefault(b, []).append(a)
    start = min(neighbours)
    loop, previous = [start], None
    while True:
        step = next(n for n in neighbours[loop[-1]] if n != previous)
        if step == start:
            return loop
        previous = loop[-1]
        loop.append(step)


def face_region_mask(
    landmarks: np.ndarray,  # [478|468, >=2] pixels
    width: int,
    height: int,
) -> np.ndarray:  # [height, width] float32 in {0, 1}
    """The inside of the face oval of Face Mesh `landmarks` (skin, eyes, mouth; no hair, ears, neck)."""
    points = [tuple(map(float, landmarks[i, :2])) for i in face_oval_loop()]
    canvas = Image.new("L", (int(width), int(height)), 0)
    ImageDraw.Draw(canvas).polygon(points, fill=255)
    return np.asarray(canvas, dtype=np.float32) / 255.0


class MotionAnalyzer:
    """Face Mesh landmarks + OpenHead fit of single images, for the AKD/AED/APD substitutes.

    `analyzer(image)` returns a `FaceMotion`, or None when no usable face is found (a generated frame may show
    none; the evaluation counts such frames). Use as a context manager or call `close()` to free MediaPipe.

    Args:
        head (`OpenHead`, *optional*): the model fitted (default: the packaged OpenHead).
        min_side (`int`, *optional*, defaults to `ANALYSIS_MIN_SIDE`): smaller images are upsampled (bicubic) to
            this side before landmark detection, since Face Mesh rejects faces under 40 px; landmarks are mapped
            back to the input's pixels.
    """

    def __init__(self, head=None, min_side: int = ANALYSIS_MIN_SIDE) -> None:
        from ..head import OpenHead
        from ..tracking import FaceLandmarker

        self.head = head if head is not None else OpenHead()
        self.landmarker = FaceLandmarker(mode="image")
        self.min_side = int(min_side)

    def __enter__(self) -> MotionAnalyzer:
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()

    def close(self) -> None:
        self.landmarker.close()

    def __call__(self, image) -> FaceMotion | None:
        """Measure `image`: `[H, W, 3]` uint8 RGB, or a `[3, H, W]` float tensor in [0, 1]."""
        from ..tracking import NoFaceError, compute_crop, fit_open_head

        if isinstance(image, Tensor):
            if image.ndim != 3 or image.shape[0] != 3:
                raise ValueError(f"image tensors must have shape [3, H, W], got {tuple(image.shape)}")
            image = (image.detach().clamp(0, 1).permute(1, 2, 0).cpu().numpy() * 255.0 + 0.5).astype(np.uint8)
        height, width = image.shape[:2]
        zoom = max(1.0, self.min_side / min(height, width))
        if zoom > 1.0:
            size = (round(width * zoom), round(height * zoom))
            image = np.asarray(Image.fromarray(image).resize(size, Image.Resampling.BICUBIC))
        try:
            result = self.landmarker.detect(np.ascontiguousarray(image))
            crop = compute_crop(result.landmarks, result.image_size)
            fit = fit_open_head(crop.apply(result.landmarks.astype(np.float64)), self.head, crop.output_size)
        except (NoFaceError, ValueError):
            return None
        # The fit lives in the crop camera, which is rolled by crop.roll: undo it to get the image's axes.
        angles = np.array(head_angles(axis_rotation_np(2, crop.roll) @ fit.rotation))
        # Pixel coordinates are continuous (corner at 0), so undoing the zoom is a plain division.
        landmarks = result.landmarks[:, :2].astype(np.float64) * np.array([width / image.shape[1], height / image.shape[0]])
        return FaceMotion(landmarks, fit.expression.copy(), angles, (width, height))
