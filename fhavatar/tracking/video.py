"""Driving videos: `track_video` tracks a clip frame by frame and fits OpenHead to every frame.

Face Mesh runs in tracking mode; frames without a face are filled by interpolation; landmarks (edge-preserving),
crops and poses are smoothed over time; then every frame gets the OpenHead fit of `fhavatar.tracking.fit` under
its smoothed pose. Driving frames are fitted without a matte (their hidden side is never shown).
"""

from __future__ import annotations

import logging
import math
import os

import numpy as np

from ..head.open_head import OpenHead
from ..io import read_video, to_uint8_frames
from .align import DEFAULT_CROP_SIZE, CropTransform, compute_crop
from .face_track import FaceTrack
from .fit import _arrays, _rigid, fit_open_head, make_track
from .landmarks import FaceLandmarker, NoFaceError
from .letterbox import remove_bars
from .smoothing import interpolate_missing, smooth_sequence

__all__ = ["CROP_SMOOTHING_FACTOR", "DEFAULT_SMOOTHING", "LANDMARK_RANGE", "TRACK_PRIMING", "track_video"]

logger = logging.getLogger(__name__)

#: Default temporal smoothing (Gaussian sigma, in frames) of `track_video`.
DEFAULT_SMOOTHING = 1.0
#: Landmark smoothing is edge-preserving: a neighbour frame counts less when the landmark moved by more than this
#: fraction of the face size (so blinks and mouth motion survive while still-subject jitter is averaged out).
LANDMARK_RANGE = 0.01
#: Extra Face Mesh passes over the first frame of a track: in tracking mode the landmarks' region of interest comes
#: from the previous frame, so a new track settles over ~6 frames (about 1 px mean shift on a repeated frame).
TRACK_PRIMING = 6
#: Crop parameters are smoothed this many times more strongly than landmarks and pose.
CROP_SMOOTHING_FACTOR = 2.0


def _as_frames(frames_or_path) -> list[np.ndarray]:
    if isinstance(frames_or_path, (str, os.PathLike)):
        return read_video(frames_or_path)[0]
    if isinstance(frames_or_path, np.ndarray) and frames_or_path.ndim == 4:
        frames_or_path = list(frames_or_path)
    try:
        return to_uint8_frames(frames_or_path)
    except TypeError as err:
        raise TypeError(f"`frames_or_path` must be a video path or a sequence of frames: {err}") from err


def track_video(
    frames_or_path,
    landmarker: FaceLandmarker | None = None,
    head: OpenHead | None = None,
    smoothing: float = DEFAULT_SMOOTHING,
    mask: bool = False,
    min_face_fraction: float = 0.5,
) -> list[FaceTrack]:
    """Track a driving video frame by frame (Face Mesh in tracking mode), smooth it and fit OpenHead per frame.

    Steps: landmarks per frame -> frames without a face get landmarks interpolated from their neighbours
    (`has_face=False`) -> landmarks smoothed over time (edge-preserving, `LANDMARK_RANGE`) -> crops from them,
    their centre/side/roll smoothed again (`CROP_SMOOTHING_FACTOR`) -> rigid fit per frame (warm-started from the
    previous frame) -> poses smoothed -> expression and eyes per frame under the smoothed pose.

    Args:
        frames_or_path: a video file (read with `fhavatar.io.read_video`), a `[T, 3, H, W]` tensor in [0, 1], a
            `[T, H, W, 3]` uint8 array or a sequence of frames.
        landmarker (`FaceLandmarker`, *optional*): reused (and `reset()`) if given; by default a video-mode one.
        head (`OpenHead`, *optional*): the model (default: the packaged OpenHead).
        smoothing (`float`, *optional*, defaults to 1.0): temporal Gaussian sigma in frames; 0 disables smoothing.
        mask (`bool`, *optional*, defaults to False): also segment each crop's foreground (slower).
        min_face_fraction (`float`, *optional*, defaults to 0.5): fewer frames with a face raise `ValueError`.

    Returns:
        `list[FaceTrack]`, one per frame.

    Raises:
        ValueError: too few frames show a face, or invalid arguments.
    """
    if not (isinstance(smoothing, (int, float)) and math.isfinite(smoothing) and smoothing >= 0):
        raise ValueError(f"`smoothing` must be a non-negative number of frames, got {smoothing!r}.")
    if not 0.0 < float(min_face_fraction) <= 1.0:
        raise ValueError(f"`min_face_fraction` must lie in (0, 1], got {min_face_fraction!r}.")
    frames = remove_bars(_as_frames(frames_or_path))  # a letterbox is not the person's body
    head = head if head is not None else OpenHead()
    own = landmarker is None
    landmarker = FaceLandmarker(mode="video") if own else landmarker
    landmarker.reset()
    num = len(frames)
    raw = np.zeros((num, 478, 3))
    present = np.zeros(num, dtype=bool)
    height, width = frames[0].shape[:2]
    try:
        for i, frame in enumerate(frames):
            try:
                if landmarker.mode == "video" and (i == 0 or not present[i - 1]):
                    for _ in range(TRACK_PRIMING):  # a new track: let the landmark ROI settle on this frame
                        landmarker.detect(frame)
                raw[i] = landmarker.detect(frame).landmarks
                compute_crop(raw[i], (width, height))  # rejects landmarks that are not face-shaped
                present[i] = True
            except NoFaceError:
                continue
            except ValueError as err:
                logger.debug("frame %d: %s", i, err)
        count = int(present.sum())
        if count < min_face_fraction * num or count == 0:
            raise ValueError(f"`frames_or_path`: only {count} of {num} frames show a face; at least "
                             f"{math.ceil(min_face_fraction * num)} must. Use a video where the face stays visible.")
        logger.info("track_video: %d frames, %d with a face, %d interpolated", num, count, num - count)
        landmarks = interpolate_missing(raw, present)
        size = np.ptp(landmarks[..., :2], axis=1).max(-1)  # [T] face box side
        landmarks = smooth_sequence(landmarks, smoothing, LANDMARK_RANGE * size[:, None])
        crops = [compute_crop(lm, (width, height)) for lm in landmarks]
        crop_params = np.array([(c.centre[0], c.centre[1], c.side, c.roll) for c in crops])
        crop_params[:, 3] = np.unwrap(crop_params[:, 3])
        crop_params = smooth_sequence(crop_params, CROP_SMOOTHING_FACTOR * smoothing)
        crops = [CropTransform.from_params((p[0], p[1]), p[2], p[3], (width, height)) for p in crop_params]
        crop_lms = [c.apply(lm) for c, lm in zip(crops, landmarks)]
        arrays, pose = _arrays(head), None
        rotations, translations = np.zeros((num, 3, 3)), np.zeros((num, 3))
        for i, lm in enumerate(crop_lms):
            pose = _rigid(lm, arrays, DEFAULT_CROP_SIZE, pose)
            rotations[i], translations[i] = pose
        rotations = smooth_sequence(rotations.reshape(num, 9), smoothing).reshape(num, 3, 3)
        u, _, vt = np.linalg.svd(rotations)  # back onto SO(3) (chordal mean)
        u[:, :, 2] *= np.sign(np.linalg.det(u @ vt))[:, None]
        rotations = u @ vt
        translations = smooth_sequence(translations, smoothing)
        tracks = []
        for i in range(num):
            crop_image = crops[i].warp(frames[i])
            fg = landmarker.segment_foreground(crop_image) if mask else None
            fit = fit_open_head(crop_lms[i], head, DEFAULT_CROP_SIZE, pose=(rotations[i], translations[i]))
            tracks.append(make_track(crop_image, fg, crops[i], crop_lms[i], fit, bool(present[i])))
    finally:
        if own:
            landmarker.close()
    return tracks
