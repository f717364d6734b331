"""Tracking: face landmarks (MediaPipe), PanoHead-style crops and, on top of them, head-model fitting.

Motion transfer lives in `fhavatar.animation`; `fhavatar.tracking.transfer_motion` still works for one release (with
a `DeprecationWarning`).
"""

from __future__ import annotations

import importlib
import warnings
from typing import Any

from ..rotations import head_angles
from .align import CropTransform, compute_crop
from .face_track import FaceTrack
from .fit import fit_flame, fit_open_head, track_image
from .landmarks import FaceLandmarker, FaceTooSmallError, LandmarkResult, NoFaceError, segment_foreground
from .shell import fit_hair_shell
from .video import LiveTracker, track_video

__all__ = [
    "CropTransform",
    "FaceLandmarker",
    "FaceTooSmallError",
    "FaceTrack",
    "LandmarkResult",
    "LiveTracker",
    "NoFaceError",
    "compute_crop",
    "fit_flame",
    "fit_hair_shell",
    "fit_open_head",
    "head_angles",
    "segment_foreground",
    "track_image",
    "track_video",
]

#: Names that moved out of this package: name -> the module that holds it now (deprecated here).
_MOVED = {"transfer_motion": "fhavatar.animation"}


def __getattr__(name: str) -> Any:
    if name in _MOVED:
        warnings.warn(f"`fhavatar.tracking.{name}` moved to `{_MOVED[name]}.{name}`; the old path will be removed in "
                      "the next release.", DeprecationWarning, stacklevel=2)
        return getattr(importlib.import_module(_MOVED[name]), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
