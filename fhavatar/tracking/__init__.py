"""Tracking: face landmarks (MediaPipe), PanoHead-style crops and, on top of them, head-model fitting."""

from .align import CropTransform, compute_crop
from .landmarks import FaceLandmarker, FaceTooSmallError, LandmarkResult, NoFaceError, segment_foreground

__all__ = [
    "CropTransform",
    "FaceLandmarker",
    "FaceTooSmallError",
    "LandmarkResult",
    "NoFaceError",
    "compute_crop",
    "segment_foreground",
]
