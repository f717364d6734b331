"""PanoHead-style full-head crops: a similarity transform from a photo to a square (512²) crop.

Framing. PanoHead frames its training images from a 3D face fit: the crop is centred on the projection of the
head's 3D centre and its size follows the fitted face scale, so the whole head with hair, the neck and a little
of the shoulders are visible and the head sits in the same place whatever its yaw (PanoHead's
`recrop_images.py`: a quad 4.8x the eye distance, enlarged by 10 % with the extra at the top). We do the same
with MediaPipe's landmarks: a rigid + scale (Umeyama) fit of MediaPipe's canonical face (centimetres) to the
expression-stable landmarks (forehead, brows, nose, cheeks, upper face oval — not lips, jaw or eyelids) gives
the face's scale in pixels per centimetre, its 3D rotation and the image position of any point of the head.

- Centre: the projection of `CROP_CENTRE_CM`, a point on the head's mid-plane between the ears, 1.5 cm below
  the eye line. Frontal faces come out centred horizontally with the eyes a little above the middle (at 41-48 %
  of the height on the test photos); turned heads (3/4, profile) are centred on the head, not on the face, as
  PanoHead does.
- Size: the crop side spans `CROP_SIDE_CM` = 36 cm at the depth of that point. PanoHead's recipe gives ~34 cm
  (1.1 x 4.8 x a 6.45 cm eye distance); 2 cm more keep voluminous hair and hats inside the frame. That is 3.1x the
  canonical eye-to-chin distance (11.6 cm), 2.9-3.3x measured on real photos: the head (crown to chin ~22.5 cm)
  fills ~62 % of the height, the crown ~15 % below the top edge (room for hair), the chin at ~78 % (72-82 % on
  the test photos, leaving the neck visible).
  Tighter crops (2.2-2.6x eye-to-chin) leave only 3-7 cm for hair and neck together and cut curly hair or hats.
- Roll: by default the crop is rotated so the head's fitted up axis points up ("head"); that equals the
  eye-line roll for frontal faces and stays right for turned heads, where the image eye line tilts with yaw
  and pitch. "eyes" (the iris line level) and "none" (no rotation) are available.

Pixel coordinates are continuous with the top-left image corner at (0, 0) (pixel centres at integer + 0.5), as
in `Camera.project` and `LandmarkResult`. Images are warped bilinearly with OpenCV; outside the photo the
border is replicated by default (`border="constant"` fills a colour instead).
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass
from typing import Literal

import numpy as np

from ..head.canonical_face import canonical_face
from ..rendering.cameras import PANOHEAD_FOCAL, PANOHEAD_RADIUS
from ..rotations import similarity_fit_np

__all__ = [
    "CROP_CENTRE_CM",
    "CROP_SIDE_CM",
    "CropTransform",
    "DEFAULT_CROP_SIZE",
    "IMPLIED_HEAD_UNITS_PER_METRE",
    "compute_crop",
    "fit_canonical_face",
]

#: Output side of crops, in pixels (PanoHead's resolution).
DEFAULT_CROP_SIZE = 512
#: Crop centre: a point of MediaPipe's canonical face frame (cm; +x the subject's left, +y up, +z out of the
#: face; eyes at y = 2.5, z = 3.6; chin at y = -9.0): on the mid-plane, 1.5 cm below the eye line and 6.5 cm
#: behind the eyes, near the head's centre. (OpenHead's head-space origin, the middle of its crown-to-chin and
#: nose-to-back extent, is at y ≈ 2.2, z ≈ -2.9: it lands 1.2 cm, ~17 px of 512, above the crop centre.)
CROP_CENTRE_CM = (0.0, 1.0, -2.9)
#: Crop side, in cm at the depth of `CROP_CENTRE_CM` (PanoHead: 1.1 x 4.8 x eye distance = 34 cm, + 2 cm for hair).
CROP_SIDE_CM = 36.0
#: Head-space units per metre implied by this framing and PanoHead's camera (radius 2.7, focal 4.2647): the
#: frame spans `PANOHEAD_RADIUS / PANOHEAD_FOCAL` = 0.633 units at the head centre.
IMPLIED_HEAD_UNITS_PER_METRE = PANOHEAD_RADIUS / PANOHEAD_FOCAL / (CROP_SIDE_CM / 100.0)
#: Canonical landmarks used by the fit: those above this height (cm), i.e. above the upper lip ...
_FIT_MIN_Y_CM = -2.6
#: ... except the eyelids (MediaPipe's eye contours), which move when the eyes blink.
_EYE_CONTOURS = (
    249, 263, 362, 373, 374, 380, 381, 382, 384, 385, 386, 387, 388, 390, 398, 466,
    7, 33, 133, 144, 145, 153, 154, 155, 157, 158, 159, 160, 161, 163, 173, 246,
)  # fmt: skip
_RIGHT_IRIS, _LEFT_IRIS = 468, 473  # iris centres (subject's right eye is on the image left)
#: Below this length of the projected up axis (head pitched ~70° toward or away from the camera), "head" roll
#: falls back to the eye line.
_MIN_UP_PROJECTION = 0.35
#: OpenCV border modes by name.
_BORDERS = ("replicate", "constant", "reflect")


@functools.lru_cache(maxsize=1)
def _canonical_fit_points() -> tuple[np.ndarray, np.ndarray]:
    """(indices [K], canonical points [K, 3] in camera axes: x right, y down, z away from the viewer)."""
    vertices = canonical_face()[0]  # [468, 3] cm, landmark order
    keep = np.array([i for i in range(len(vertices)) if vertices[i, 1] > _FIT_MIN_Y_CM and i not in _EYE_CONTOURS])
    return keep, vertices[keep] * np.array([1.0, -1.0, -1.0])


def fit_canonical_face(landmarks: np.ndarray) -> tuple[float, np.ndarray, np.ndarray, float]:
    """Similarity fit (Umeyama) of MediaPipe's canonical face to landmarks: `x_px ≈ s R c + t`.

    Args:
        landmarks (`np.ndarray` of shape `[478, 3]` or `[468, 3]`): pixels, z scaled like x (`LandmarkResult`).

    Returns:
        `(scale, rotation [3, 3], translation [3], rms_cm)`: pixels per cm, the rotation from the canonical frame
        in camera axes (x right, y down, z into the image) to the image, the translation in pixels, and the fit's
        RMS residual in cm (about 0.4-0.5 on real photos; much larger means the landmarks are not a face).
    """
    keep, canon = _canonical_fit_points()
    pts = np.asarray(landmarks, dtype=np.float64)[keep]
    scale, rot, trans = similarity_fit_np(canon, pts)
    resid = pts - (scale * canon @ rot.T + trans)
    rms_cm = float(np.sqrt((resid**2).sum(1).mean()) / max(scale, 1e-12))
    return scale, rot, trans, rms_cm


@dataclass
class CropTransform:
    """A similarity transform from a photo to a square crop, and its inverse.

    Attributes:
        matrix (`np.ndarray` of shape `[2, 3]`): original pixels -> crop pixels (`[x', y'] = M @ [x, y, 1]`).
        inverse (`np.ndarray` of shape `[2, 3]`): crop pixels -> original pixels.
        output_size (`int`): side of the crop in pixels.
        image_size (`tuple` of 2 ints): `(width, height)` of the original image.
        centre (`tuple` of 2 floats): crop centre in original pixels.
        side (`float`): crop side in original pixels.
        roll (`float`): the head's tilt in the photo (radians, clockwise on screen); the crop turns it back.
    """

    matrix: np.ndarray  # [2, 3]
    inverse: np.ndarray  # [2, 3]
    output_size: int
    image_size: tuple[int, int]
    centre: tuple[float, float]
    side: float
    roll: float

    @classmethod
    def from_params(
        cls,
        centre: tuple[float, float],
        side: float,
        roll: float,
        image_size: tuple[int, int],
        output_size: int = DEFAULT_CROP_SIZE,
    ) -> CropTransform:
        """The crop of side `side` (original px) centred on `centre`, rotated by `roll` radians (e.g. smoothed
        values over video frames)."""
        if not (math.isfinite(side) and side > 0):
            raise ValueError(f"`side` must be a positive crop side in pixels, got {side!r}.")
        if not (np.isfinite(centre).all() and math.isfinite(roll)):
            raise ValueError(f"`centre` and `roll` must be finite, got {centre!r} and {roll!r}.")
        if not isinstance(output_size, int) or output_size < 8:
            raise ValueError(f"`output_size` must be an int >= 8, got {output_size!r}.")
        k = output_size / side
        c, s = math.cos(roll), math.sin(roll)
        lin = k * np.array([[c, s], [-s, c]])  # rotates image content by -roll (undoes the head's roll)
        cx, cy = float(centre[0]), float(centre[1])
        half = np.array([output_size / 2, output_size / 2])
        matrix = np.concatenate([lin, (half - lin @ [cx, cy])[:, None]], 1)
        inv_lin = lin.T / k**2
        inverse = np.concatenate([inv_lin, (np.array([cx, cy]) - inv_lin @ half)[:, None]], 1)
        return cls(matrix, inverse, output_size, (int(image_size[0]), int(image_size[1])), (cx, cy), float(side), float(roll))

    @property
    def scale(self) -> float:
        """Crop pixels per original pixel."""
        return self.output_size / self.side

    @staticmethod
    def _affine(m: np.ndarray, points: np.ndarray) -> np.ndarray:
        p = np.asarray(points, dtype=np.float64)
        if p.ndim < 1 or p.shape[-1] < 2:
            raise ValueError(f"`points` must have shape [..., 2] or [..., 3], got {p.shape}.")
        out = p.copy()
        out[..., :2] = p[..., :2] @ m[:, :2].T + m[:, 2]
        if p.shape[-1] >= 3:  # depth scales like x
            out[..., 2] = p[..., 2] * math.sqrt(abs(np.linalg.det(m[:, :2])))
        return out.astype(np.result_type(points, np.float32)) if isinstance(points, np.ndarray) else out

    def apply(self, points: np.ndarray) -> np.ndarray:  # [..., 2|3] original px -> crop px
        """Map points (x, y[, z]) from the original image to the crop; z is scaled like x."""
        return self._affine(self.matrix, points)

    def invert(self, points: np.ndarray) -> np.ndarray:  # [..., 2|3] crop px -> original px
        """Map points (x, y[, z]) from the crop back to the original image."""
        return self._affine(self.inverse, points)

    @staticmethod
    def _cv_matrix(m: np.ndarray) -> np.ndarray:
        """Continuous-coordinate affine -> OpenCV's pixel-index convention (pixel centres at integers)."""
        out = m.copy()
        out[:, 2] = m[:, 2] + m[:, :2] @ [0.5, 0.5] - 0.5
        return out

    def warp(
        self,
        image: np.ndarray,  # [H, W, C] or [H, W]
        border: Literal["replicate", "constant", "reflect"] = "replicate",
        border_value: float | tuple[float, ...] = 0,
    ) -> np.ndarray:  # [output_size, output_size, C] or [output_size, output_size]
        """Crop `image` (the original, `image_size`) bilinearly; `border` fills what lies outside the photo.

        Strong downscaling (crop side > 2x the output) is done in two steps (area-average to twice the output,
        then the warp) so the crop does not alias.
        """
        import cv2

        if not isinstance(image, np.ndarray) or image.ndim not in (2, 3):
            raise ValueError(
                f"`image` must be an [H, W] or [H, W, C] array, got {getattr(image, 'shape', type(image).__name__)}."
            )
        if (image.shape[1], image.shape[0]) != self.image_size:
            got, want = f"{image.shape[1]}x{image.shape[0]}", f"{self.image_size[0]}x{self.image_size[1]}"
            raise ValueError(f"`image` is {got}, but this crop was computed for a {want} image.")
        if border not in _BORDERS:
            raise ValueError(f"`border` must be one of {_BORDERS}, got {border!r}.")
        mode = {"replicate": cv2.BORDER_REPLICATE, "constant": cv2.BORDER_CONSTANT, "reflect": cv2.BORDER_REFLECT_101}[border]
        m = self.matrix
        if self.scale < 0.5:  # pre-shrink so bilinear sampling sees about 2 source pixels per output pixel
            f = 2.0 * self.scale
            small = (max(1, round(image.shape[1] * f)), max(1, round(image.shape[0] * f)))
            fx, fy = small[0] / image.shape[1], small[1] / image.shape[0]
            image = cv2.resize(image, small, interpolation=cv2.INTER_AREA)
            m = m @ np.diag([1.0 / fx, 1.0 / fy, 1.0])
        value = border_value if isinstance(border_value, tuple) else (border_value,) * 4
        size = (self.output_size, self.output_size)
        return cv2.warpAffine(image, self._cv_matrix(m), size, flags=cv2.INTER_LINEAR, borderMode=mode, borderValue=value)

    def paste_back(
        self,
        crop_image: np.ndarray,  # [S, S, C] or [S, S]
        original: np.ndarray,  # [H, W, C] or [H, W]
        mask: np.ndarray | None = None,  # [S, S] in [0, 1]
    ) -> np.ndarray:  # like `original`
        """Put a (possibly edited) crop back into the original image.

        Args:
            crop_image: an image in crop space (`output_size` square), same dtype and channels as `original`.
            original: the original image (`image_size`).
            mask (*optional*): per-crop-pixel blend weight (e.g. a foreground mask); by default the crop's whole
                footprint inside the photo is replaced.

        Returns:
            A copy of `original` with the crop's footprint replaced (blended by `mask`).
        """
        import cv2

        s = self.output_size
        if crop_image.shape[:2] != (s, s):
            raise ValueError(f"`crop_image` must be {s}x{s} (the crop size), got {crop_image.shape[:2]}.")
        if (original.shape[1], original.shape[0]) != self.image_size or original.shape[2:] != crop_image.shape[2:]:
            raise ValueError(
                f"`original` must be {self.image_size[0]}x{self.image_size[1]} with the crop's channels, got shape "
                f"{original.shape} for a crop of shape {crop_image.shape}."
            )
        w, h = self.image_size
        m = self._cv_matrix(self.inverse)
        back = cv2.warpAffine(crop_image, m, (w, h), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
        weight = np.ones((s, s), np.float32) if mask is None else np.clip(np.asarray(mask, np.float32), 0.0, 1.0)
        if weight.shape != (s, s):
            raise ValueError(f"`mask` must be {s}x{s}, got {weight.shape}.")
        alpha = cv2.warpAffine(weight, m, (w, h), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT, borderValue=0)
        if original.ndim == 3:
            alpha = alpha[..., None]
        out = alpha * back.astype(np.float32) + (1.0 - alpha) * original.astype(np.float32)
        if np.issubdtype(original.dtype, np.integer):
            out = np.clip(np.rint(out), np.iinfo(original.dtype).min, np.iinfo(original.dtype).max)
        return out.astype(original.dtype)


def compute_crop(
    landmarks: np.ndarray,  # [478, 3] or [468, 3] px
    image_size: tuple[int, int],
    output_size: int = DEFAULT_CROP_SIZE,
    roll: Literal["head", "eyes", "none"] = "head",
) -> CropTransform:
    """The PanoHead-style full-head crop of a face (see the module docstring for the framing).

    Args:
        landmarks (`np.ndarray` of shape `[478, 3]` or `[468, 3]`): Face Mesh landmarks in pixels of the image,
            z scaled like x (`LandmarkResult.landmarks`). `roll="eyes"` needs the 478 (iris) landmarks.
        image_size (`tuple` of 2 ints): `(width, height)` of that image.
        output_size (`int`, *optional*, defaults to 512): side of the crop in pixels.
        roll (`str`, *optional*, defaults to `"head"`): `"head"` levels the head's fitted up axis, `"eyes"` the
            line through the irises, `"none"` keeps the photo's orientation.

    Returns:
        `CropTransform` mapping the image to the `output_size` square crop.

    Raises:
        ValueError: landmarks of the wrong shape, non-finite, or not face-shaped; an invalid `image_size`.
    """
    lm = np.asarray(landmarks, dtype=np.float64)
    if lm.ndim != 2 or lm.shape[0] not in (468, 478) or lm.shape[1] != 3:
        raise ValueError(f"`landmarks` must be Face Mesh landmarks of shape [478, 3] (or [468, 3]), got {lm.shape}.")
    if not np.isfinite(lm).all():
        raise ValueError("`landmarks` hold NaN/inf values.")
    if len(image_size) != 2 or min(image_size) < 1:
        raise ValueError(f"`image_size` must be (width, height) in pixels, got {image_size!r}.")
    if roll not in ("head", "eyes", "none"):
        raise ValueError(f"`roll` must be 'head', 'eyes' or 'none', got {roll!r}.")
    if roll == "eyes" and lm.shape[0] != 478:
        raise ValueError("`roll='eyes'` needs the 478 landmarks with irises (refine_landmarks=True).")
    scale, rot, trans, rms_cm = fit_canonical_face(lm)
    if not scale > 0 or rms_cm > 2.0:
        raise ValueError(
            f"`landmarks` do not look like a face (canonical-face fit residual {rms_cm:.1f} cm, scale {scale:.3g} px/cm)."
        )
    centre = scale * rot @ (np.array(CROP_CENTRE_CM) * [1.0, -1.0, -1.0]) + trans
    up = rot @ np.array([0.0, -1.0, 0.0])  # the head's up axis in image axes (y down)
    if roll == "head" and math.hypot(up[0], up[1]) >= _MIN_UP_PROJECTION:
        angle = math.atan2(up[0], -up[1])
    elif roll == "none":
        angle = 0.0
    else:
        eyes = lm[_LEFT_IRIS, :2] - lm[_RIGHT_IRIS, :2] if lm.shape[0] == 478 else lm[263, :2] - lm[33, :2]
        angle = math.atan2(eyes[1], eyes[0])
    return CropTransform.from_params((centre[0], centre[1]), scale * CROP_SIDE_CM, angle, tuple(image_size), output_size)
