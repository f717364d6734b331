"""Driving videos: `track_video` tracks a clip frame by frame and fits OpenHead to every frame; `LiveTracker` does the
same for a live stream (a webcam), one frame at a time.

Face Mesh runs in tracking mode; frames without a face are filled by interpolation; landmarks (edge-preserving),
crops and poses are smoothed over time; then every frame gets the OpenHead fit of `fhavatar.tracking.fit` under
its smoothed pose. Driving frames are fitted without a matte (their hidden side is never shown). `LiveTracker` takes
the same steps with causal smoothing (`OnlineSmoother`: past frames only), since later frames are not known yet.
"""

from __future__ import annotations

import logging
import math
import os

import numpy as np

from ..head.open_head import OpenHead
from ..io import read_video, to_uint8_frames
from ..rotations import nearest_rotation_np
from .align import DEFAULT_CROP_SIZE, CropTransform, compute_crop
from .face_track import FaceTrack
from .fit import _arrays, _rigid, fit_open_head, make_track
from .landmarks import FaceLandmarker, NoFaceError
from .letterbox import remove_bars
from .smoothing import OnlineSmoother, interpolate_missing, smooth_sequence

__all__ = ["CROP_SMOOTHING_FACTOR", "DEFAULT_SMOOTHING", "LANDMARK_RANGE", "TRACK_PRIMING", "LiveTracker",
           "track_video"]

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


def _frame_landmarks(landmarker: FaceLandmarker, frame: np.ndarray, new_track: bool) -> np.ndarray | None:
    """Face Mesh landmarks `[478, 3]` of one frame (its pixels), or None when it shows no face-shaped face. On a new
    track (the first frame, or the first after frames without a face) the landmark ROI first settles on the frame."""
    try:
        if landmarker.mode == "video" and new_track:
            for _ in range(TRACK_PRIMING):
                landmarker.detect(frame)
        landmarks = landmarker.detect(frame).landmarks
        compute_crop(landmarks, (frame.shape[1], frame.shape[0]))  # rejects landmarks that are not face-shaped
        return landmarks
    except NoFaceError:
        return None
    except ValueError as err:
        logger.debug("frame without a usable face: %s", err)
        return None


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
            landmarks = _frame_landmarks(landmarker, frame, new_track=i == 0 or not present[i - 1])
            if landmarks is not None:
                raw[i], present[i] = landmarks, True
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
        rotations = nearest_rotation_np(rotations)  # back onto SO(3) (chordal mean)
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


class LiveTracker:
    """`track_video` for a live stream: each frame in, its `FaceTrack` out at once (None when it shows no face).

    The steps are `track_video`'s, with causal smoothing of the same strength (`OnlineSmoother`; a live frame has no
    later neighbours): Face Mesh in tracking mode (primed on a new track) -> landmarks smoothed, edge-preserving
    (`LANDMARK_RANGE`) -> the crop from them, its centre, side and roll smoothed `CROP_SMOOTHING_FACTOR` times more
    -> rigid fit warm-started from the previous frame -> pose smoothed (rotations back onto SO(3)) -> expression and
    eyes under the smoothed pose. A frame without a face returns None and starts a new track: the next face is
    neither blended with the last one nor warm-started from it. `track_video`'s letterbox fill (`remove_bars`) is
    left out: it serves the crops' pixels (an avatar's texture, comparisons), not the motion, and costs ~9 ms a frame.

    Args:
        head (`OpenHead`, *optional*): the model (default: the packaged OpenHead).
        smoothing (`float`, *optional*, defaults to 1.0): smoothing strength in frames, as `track_video`'s; 0: none.
        landmarker (`FaceLandmarker`, *optional*): a video-mode landmarker to use (and `reset()`); by default one of
            its own (closed by `close()`) that follows one face and makes no retries: a frame costs one Face Mesh
            pass (~3 ms at 256², the face detector only when the face was lost), a frame without a face ~17 ms.

    Example:
        ```py
        >>> from fhavatar.tracking import LiveTracker
        >>> with LiveTracker() as tracker:  # doctest: +SKIP
        ...     tracks = [tracker(frame) for frame in webcam_frames]  # FaceTrack, or None without a face
        ```
    """

    def __init__(self, head: OpenHead | None = None, smoothing: float = DEFAULT_SMOOTHING,
                 landmarker: FaceLandmarker | None = None):
        if not (isinstance(smoothing, (int, float)) and math.isfinite(smoothing) and smoothing >= 0):
            raise ValueError(f"`smoothing` must be a non-negative number of frames, got {smoothing!r}.")
        if landmarker is not None and landmarker.mode != "video":
            raise ValueError(f"`landmarker` must be in video mode (tracking from frame to frame), got {landmarker.mode!r}.")
        self.head = head if head is not None else OpenHead()
        self._arrays = _arrays(self.head)
        self._own = landmarker is None
        self.landmarker = FaceLandmarker(mode="video", max_num_faces=1, retry=False) if self._own else landmarker
        self.landmarker.reset()
        self._landmarks, self._pose = OnlineSmoother(smoothing), OnlineSmoother(smoothing)
        self._crop = OnlineSmoother(CROP_SMOOTHING_FACTOR * smoothing)
        self._rigid: tuple[np.ndarray, np.ndarray] | None = None  # the last frame's raw pose (warm start)

    def reset(self) -> None:
        """Start a new track: the next face is tracked afresh (ROI primed, smoothing and warm start forgotten)."""
        for smoother in (self._landmarks, self._pose, self._crop):
            smoother.reset()
        self._rigid = None

    def __call__(self, frame: np.ndarray) -> FaceTrack | None:  # [H, W, 3] uint8 RGB
        frame = to_uint8_frames([frame])[0]
        height, width = frame.shape[:2]
        raw = _frame_landmarks(self.landmarker, frame, new_track=self._rigid is None)
        if raw is None:
            self.reset()
            return None
        face_size = np.ptp(raw[:, :2], axis=0).max()
        landmarks = self._landmarks(raw, LANDMARK_RANGE * face_size)
        crop = compute_crop(landmarks, (width, height))
        params = np.array([crop.centre[0], crop.centre[1], crop.side, crop.roll])
        if self._crop.state is not None:  # roll: unwrapped against the last frame's
            params[3] = self._crop.state[3] + (params[3] - self._crop.state[3] + math.pi) % (2 * math.pi) - math.pi
        params = self._crop(params)
        crop = CropTransform.from_params((params[0], params[1]), params[2], params[3], (width, height))
        crop_landmarks = crop.apply(landmarks)
        self._rigid = _rigid(crop_landmarks, self._arrays, DEFAULT_CROP_SIZE, self._rigid)
        pose = self._pose(np.concatenate([self._rigid[0].reshape(9), self._rigid[1]]))
        rotation = nearest_rotation_np(pose[:9].reshape(3, 3))  # back onto SO(3) (chordal mean)
        fit = fit_open_head(crop_landmarks, self.head, DEFAULT_CROP_SIZE, pose=(rotation, pose[9:]))
        return make_track(crop.warp(frame), None, crop, crop_landmarks, fit)

    def close(self) -> None:
        """Release the landmarker's MediaPipe graphs when the tracker made it."""
        if self._own:
            self.landmarker.close()

    def __enter__(self) -> LiveTracker:
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()
