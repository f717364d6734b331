"""Tracking: face landmarks (MediaPipe), PanoHead-style crops and, on top of them, head-model fitting."""

from .align import CropTransform, compute_crop
from .fit import FaceTrack, fit_flame, fit_open_head, head_angles, track_image
from .landmarks import FaceLandmarker, FaceTooSmallError, LandmarkResult, NoFaceError, segment_foreground
from .motion import transfer_motion
from .video import track_video

__all__ = [
    "CropTransform",
    "FaceLandmarker",
    "FaceTooSmallError",
    "FaceTrack",
    "LandmarkResult",
    "NoFaceError",
    "compute_crop",
    "fit_flame",
    "fit_open_head",
    "head_angles",
    "segment_foreground",
    "track_image",
    "track_video",
    "transfer_motion",
]
