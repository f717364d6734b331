"""Hostile photos made in memory, shared by the hostile tests and `benchmarks/reconstruction_check.py`: a drawn
smiley (a cartoon Face Mesh takes for a face) and a crop so tight that the face fills the frame."""

from __future__ import annotations

import numpy as np
from PIL import Image, ImageDraw

#: The tight crop's side as a fraction of the face box: the face covers ~98 % of the image.
TIGHT = 0.88


def smiley(size: int = 512, background=(255, 255, 255)) -> np.ndarray:  # -> [size, size, 3] uint8
    """A drawn smiley: a yellow disc, two black oval eyes, a black arc for a mouth (Face Mesh finds a face in it)."""
    image = Image.new("RGB", (size, size), tuple(background))
    draw, s = ImageDraw.Draw(image), size
    draw.ellipse([0.15 * s, 0.15 * s, 0.85 * s, 0.85 * s], fill=(255, 215, 0), outline=(0, 0, 0), width=max(2, s // 100))
    draw.ellipse([0.35 * s, 0.33 * s, 0.43 * s, 0.47 * s], fill=(0, 0, 0))
    draw.ellipse([0.57 * s, 0.33 * s, 0.65 * s, 0.47 * s], fill=(0, 0, 0))
    draw.arc([0.3 * s, 0.4 * s, 0.7 * s, 0.72 * s], 20, 160, fill=(0, 0, 0), width=max(3, s // 60))
    return np.asarray(image)


def tight_crop(photo: np.ndarray, fraction: float = TIGHT) -> np.ndarray:  # [H, W, 3] -> [h, w, 3]
    """The photo cropped to `fraction` of its face landmarks' bounding box, about the same centre."""
    from fhavatar.tracking import FaceLandmarker  # lazy: MediaPipe loads its models

    with FaceLandmarker() as landmarker:
        x0, y0, x1, y1 = landmarker.detect(photo).face_box
    cx, cy, hw, hh = (x0 + x1) / 2, (y0 + y1) / 2, (x1 - x0) * fraction / 2, (y1 - y0) * fraction / 2
    return np.ascontiguousarray(photo[max(0, round(cy - hh)):round(cy + hh), max(0, round(cx - hw)):round(cx + hw)])
