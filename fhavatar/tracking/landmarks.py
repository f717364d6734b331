"""Face landmarks (MediaPipe Face Mesh, 478 points with irises) and foreground masks (selfie segmentation).

MediaPipe 0.10.21 carries its models inside the wheel, so everything here runs offline. MediaPipe is imported
when a graph is first needed, never at import time; graphs are created lazily, reused, and released by
`FaceLandmarker.close()` (or a `with` block).

Coordinates: landmarks are in pixels of the image passed in, continuous, with the image's top-left corner at
(0, 0) — the top-left pixel's centre is at (0.5, 0.5), as in `Camera.project`. The third column is MediaPipe's
relative depth (origin near the head's centre, smaller = closer to the camera) scaled like x, i.e. in pixels.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np

__all__ = [
    "FaceLandmarker",
    "FaceTooSmallError",
    "LandmarkResult",
    "MIN_FACE_SIZE_PX",
    "NUM_LANDMARKS",
    "NoFaceError",
    "segment_foreground",
]

logger = logging.getLogger(__name__)

#: Face Mesh landmarks with `refine_landmarks=True`: 468 face points + 5 per iris (468-472 right, 473-477 left).
NUM_LANDMARKS = 478
#: Faces Face Mesh looks for per image; the largest one is used and the count is reported.
DEFAULT_MAX_NUM_FACES = 4
#: Smallest usable face: the longer side of the landmarks' bounding box, in pixels of the given image.
MIN_FACE_SIZE_PX = 40
#: Retry 1 (small or distant faces): a square crop this many times the side of a full-range detection box,
#: resized to `RETRY_CROP_PX`, is given to Face Mesh, whose own detector only sees faces near the camera.
RETRY_CROP_SCALE = 2.5
RETRY_CROP_PX = 512
#: Retry 2 (faces cut by the border): the image is padded by this fraction of its longer side on every side.
RETRY_PAD_FRACTION = 0.25
#: Retry 3 (tiny faces in large images): a 3 x 3 grid of overlapping tiles, each this fraction of the image's
#: longer side, is searched with the full-range detector, then zoomed on like retry 1.
RETRY_TILE_FRACTION = 0.5
#: Face Mesh's graph inside the mediapipe 0.10.21 wheel (the one `mp.solutions.face_mesh.FaceMesh` runs); we run
#: it directly to also read its `face_detections` output stream, whose scores become `LandmarkResult.score`.
_FACE_MESH_GRAPH = "mediapipe/modules/face_landmark/face_landmark_front_cpu.binarypb"
_FACE_DETECTION_SCORE_STREAM = "face_detections"


class NoFaceError(ValueError):
    """No usable face in the image (the message says why and what to do)."""


class FaceTooSmallError(NoFaceError):
    """A face was found but is too small (in pixels) to build an avatar from."""


@dataclass
class LandmarkResult:
    """The landmarks of the largest face in one image.

    Attributes:
        landmarks (`np.ndarray` of shape `[478, 3]`, float32): x, y in pixels of the given image (continuous, the
            top-left corner at (0, 0)) and MediaPipe's relative depth z scaled like x (pixels, smaller = closer).
        num_faces (`int`): faces found in the image (the largest one is returned).
        face_box (`tuple` of 4 floats): `(x0, y0, x1, y1)`, the bounding box of the landmarks' x, y.
        score (`float`): the face detector's confidence in [0, 1] for this face; `nan` when the face was tracked
            from the previous video frame without a new detection.
        image_size (`tuple` of 2 ints): `(width, height)` of the image the landmarks refer to.
        attempt (`str`): the pass that found the face: "full", "detector-crop", "padded" or "tiles".
    """

    landmarks: np.ndarray  # [478, 3]
    num_faces: int
    face_box: tuple[float, float, float, float]
    score: float
    image_size: tuple[int, int]
    attempt: str = "full"

    @property
    def face_size(self) -> float:
        """Longer side of `face_box`, in pixels."""
        x0, y0, x1, y1 = self.face_box
        return max(x1 - x0, y1 - y0)


def _check_image(image: Any, name: str = "image") -> np.ndarray:  # -> [H, W, 3] uint8, C-contiguous
    if not isinstance(image, np.ndarray):
        raise TypeError(
            f"`{name}` must be an [H, W, 3] uint8 RGB numpy array, got {type(image).__name__}; "
            "load files, PIL images and tensors with `fhavatar.io.load_image` first."
        )
    if image.dtype != np.uint8 or image.ndim != 3 or image.shape[-1] != 3:
        raise ValueError(
            f"`{name}` must be an [H, W, 3] uint8 RGB array, got shape {image.shape} and dtype {image.dtype}; "
            "`fhavatar.io.load_image` converts other formats."
        )
    if min(image.shape[:2]) < 8:
        raise ValueError(f"`{name}` is only {image.shape[1]}x{image.shape[0]} pixels; a photo of a face is needed.")
    return np.ascontiguousarray(image)


def _box(points: np.ndarray) -> tuple[float, float, float, float]:  # [N, >=2] -> (x0, y0, x1, y1)
    return (float(points[:, 0].min()), float(points[:, 1].min()), float(points[:, 0].max()), float(points[:, 1].max()))


def _resize(image: np.ndarray, width: int, height: int) -> np.ndarray:
    import cv2

    shrink = width < image.shape[1]
    return cv2.resize(image, (width, height), interpolation=cv2.INTER_AREA if shrink else cv2.INTER_CUBIC)


def _crop_resized(image: np.ndarray, x0: int, y0: int, side: int, out: int) -> np.ndarray:
    """Square window `[y0, y0 + side) x [x0, x0 + side)` (zero-padded outside the image) resized to `out`."""
    h, w = image.shape[:2]
    window = np.zeros((side, side, 3), np.uint8)
    sx0, sy0, sx1, sy1 = max(x0, 0), max(y0, 0), min(x0 + side, w), min(y0 + side, h)
    if sx1 > sx0 and sy1 > sy0:
        window[sy0 - y0 : sy1 - y0, sx0 - x0 : sx1 - x0] = image[sy0:sy1, sx0:sx1]
    return _resize(window, out, out)


class FaceLandmarker:
    """MediaPipe Face Mesh with `refine_landmarks=True` (478 landmarks), for photos or video frames.

    Args:
        mode (`"image"` or `"video"`, *optional*, defaults to `"image"`): `"image"` runs detection on every call
            (`static_image_mode=True`); `"video"` tracks the face from frame to frame, which is faster and
            steadier; call `reset()` between clips.
        max_num_faces (`int`, *optional*, defaults to 4): faces looked for; the largest one is returned.
        min_detection_confidence (`float`, *optional*, defaults to 0.5): face detector threshold.
        min_tracking_confidence (`float`, *optional*, defaults to 0.5): landmark presence threshold.
        min_face_size (`int`, *optional*, defaults to `MIN_FACE_SIZE_PX`): smaller faces raise `FaceTooSmallError`.
        retry (`bool`, *optional*, defaults to True): when the full image gives nothing, try a zoomed crop around a
            full-range detection, a padded image and overlapping tiles before giving up.

    Example:
        ```py
        >>> from fhavatar.io import load_image
        >>> from fhavatar.tracking import FaceLandmarker
        >>> with FaceLandmarker() as landmarker:
        ...     result = landmarker.detect(load_image("photo.jpg"))
        >>> result.landmarks.shape
        (478, 3)
        ```
    """

    def __init__(
        self,
        mode: Literal["image", "video"] = "image",
        max_num_faces: int = DEFAULT_MAX_NUM_FACES,
        min_detection_confidence: float = 0.5,
        min_tracking_confidence: float = 0.5,
        min_face_size: int = MIN_FACE_SIZE_PX,
        retry: bool = True,
    ) -> None:
        if mode not in ("image", "video"):
            raise ValueError(f"`mode` must be 'image' or 'video', got {mode!r}.")
        if not isinstance(max_num_faces, int) or not 1 <= max_num_faces <= 16:
            raise ValueError(f"`max_num_faces` must be an int in [1, 16], got {max_num_faces!r}.")
        for name, value in (
            ("min_detection_confidence", min_detection_confidence),
            ("min_tracking_confidence", min_tracking_confidence),
        ):
            if not 0.0 <= float(value) <= 1.0:
                raise ValueError(f"`{name}` must lie in [0, 1], got {value!r}.")
        if not isinstance(min_face_size, int) or min_face_size < 1:
            raise ValueError(f"`min_face_size` must be a positive int (pixels), got {min_face_size!r}.")
        self.mode = mode
        self.max_num_faces = max_num_faces
        self.min_detection_confidence = float(min_detection_confidence)
        self.min_tracking_confidence = float(min_tracking_confidence)
        self.min_face_size = min_face_size
        self.retry = retry
        self._graphs: dict[str, Any] = {}
        self._track_score = math.nan

    # ------------------------------------------------------------------ resources
    def _graph(self, kind: Literal["static", "video", "detector", "segmenter"]):
        """The MediaPipe graph of `kind`, created on first use and kept until `close()`."""
        graph = self._graphs.get(kind)
        if graph is not None:
            return graph
        try:
            import mediapipe as mp
            from mediapipe.python.solution_base import SolutionBase
        except ImportError as err:  # pragma: no cover - depends on the environment
            raise ImportError("Face tracking needs MediaPipe: `pip install mediapipe==0.10.21`.") from err
        if kind in ("static", "video"):
            # Face Mesh's own graph and settings, also asked for its face detections (see `_FACE_MESH_GRAPH`).
            graph = SolutionBase(
                binary_graph_path=_FACE_MESH_GRAPH,
                side_inputs={"num_faces": self.max_num_faces, "with_attention": True, "use_prev_landmarks": kind == "video"},
                calculator_params={
                    "facedetectionshortrangecpu__facedetectionshortrange__facedetection__TensorsToDetectionsCalculator"
                    ".min_score_thresh": self.min_detection_confidence,
                    "facelandmarkcpu__ThresholdingCalculator.threshold": self.min_tracking_confidence,
                },
                outputs=["multi_face_landmarks", _FACE_DETECTION_SCORE_STREAM],
            )
        elif kind == "detector":
            graph = mp.solutions.face_detection.FaceDetection(
                model_selection=1, min_detection_confidence=self.min_detection_confidence
            )
        else:
            graph = mp.solutions.selfie_segmentation.SelfieSegmentation(model_selection=0)
        self._graphs[kind] = graph
        return graph

    def reset(self) -> None:
        """Forget the tracked face (start of a new video clip)."""
        graph = self._graphs.pop("video", None)
        if graph is not None:
            graph.close()
        self._track_score = math.nan

    def close(self) -> None:
        """Release every MediaPipe graph (they are re-created if the landmarker is used again)."""
        for graph in self._graphs.values():
            graph.close()
        self._graphs.clear()
        self._track_score = math.nan

    def __enter__(self) -> FaceLandmarker:
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()

    def __del__(self) -> None:
        try:
            self.close()
        except Exception:  # noqa: BLE001 - interpreter shutdown: MediaPipe may already be gone
            pass

    # ------------------------------------------------------------------ passes
    def _mesh(self, image: np.ndarray, kind: str) -> list[tuple[np.ndarray, float]]:
        """Run Face Mesh once: `[(landmarks [478, 3] px of `image`, detection score or nan), ...]`."""
        h, w = image.shape[:2]
        out = self._graph(kind).process({"image": np.ascontiguousarray(image)})
        faces = []
        for face in out.multi_face_landmarks or []:
            lm = np.array([(p.x * w, p.y * h, p.z * w) for p in face.landmark], dtype=np.float32)
            if lm.shape == (NUM_LANDMARKS, 3):
                faces.append((lm, math.nan))
        for det in getattr(out, _FACE_DETECTION_SCORE_STREAM, None) or []:
            # Match detections to faces by the detection box centre falling inside the landmarks' box.
            box = det.location_data.relative_bounding_box
            cx, cy = (box.xmin + box.width / 2) * w, (box.ymin + box.height / 2) * h
            for i, (lm, score) in enumerate(faces):
                x0, y0, x1, y1 = _box(lm)
                if x0 <= cx <= x1 and y0 <= cy <= y1 and math.isnan(score):
                    faces[i] = (lm, float(det.score[0]))
                    break
        return faces

    def _detect_boxes(self, image: np.ndarray) -> list[tuple[np.ndarray, float]]:
        """Full-range face detector (faces up to ~5 m away): `[(box [x0, y0, x1, y1] px, score), ...]`."""
        h, w = image.shape[:2]
        boxes = []
        for det in self._graph("detector").process(np.ascontiguousarray(image)).detections or []:
            b = det.location_data.relative_bounding_box
            boxes.append(
                (np.array([b.xmin * w, b.ymin * h, (b.xmin + b.width) * w, (b.ymin + b.height) * h]), float(det.score[0]))
            )
        return boxes

    def _zoom(self, image: np.ndarray, box: np.ndarray, score: float) -> list[tuple[np.ndarray, float]]:
        """Face Mesh on a square window around a detection box, resized to `RETRY_CROP_PX`; original pixels."""
        side = max(int(math.ceil(RETRY_CROP_SCALE * max(box[2] - box[0], box[3] - box[1]))), 8)
        x0 = int(round((box[0] + box[2]) / 2 - side / 2))
        y0 = int(round((box[1] + box[3]) / 2 - side / 2))
        factor = RETRY_CROP_PX / side
        faces = self._mesh(_crop_resized(image, x0, y0, side, RETRY_CROP_PX), "static")
        return [(lm / factor + np.array([x0, y0, 0], np.float32), score) for lm, _ in faces]

    def _retries(self, image: np.ndarray, boxes: list[tuple[np.ndarray, float]]):
        """Yield `(attempt, faces in original pixels)` for the fallback passes, cheapest first."""
        h, w = image.shape[:2]
        if boxes:  # 1. zoom on the largest full-range detection (small or distant faces)
            box, score = max(boxes, key=lambda b: (b[0][2] - b[0][0]) * (b[0][3] - b[0][1]))
            yield "detector-crop", self._zoom(image, box, score)
        pad = int(round(RETRY_PAD_FRACTION * max(h, w)))  # 2. faces cut by the border
        padded = np.pad(image, ((pad, pad), (pad, pad), (0, 0)), mode="edge")
        yield "padded", [(lm - np.array([pad, pad, 0], np.float32), s) for lm, s in self._mesh(padded, "static")]
        side = int(round(RETRY_TILE_FRACTION * max(h, w)))  # 3. tiny faces in large images: detect per tile
        for ty in np.linspace(0, max(h - side, 0), 3).round().astype(int):
            for tx in np.linspace(0, max(w - side, 0), 3).round().astype(int):
                tile = image[ty : ty + side, tx : tx + side]
                tile_boxes = self._detect_boxes(tile)
                if tile_boxes:
                    box, score = max(tile_boxes, key=lambda b: (b[0][2] - b[0][0]) * (b[0][3] - b[0][1]))
                    yield "tiles", self._zoom(image, box + np.array([tx, ty, tx, ty]), score)

    # ------------------------------------------------------------------ public API
    def detect(self, image: np.ndarray) -> LandmarkResult:  # image: [H, W, 3] uint8 RGB
        """Landmarks of the largest face in `image`.

        Args:
            image (`np.ndarray` of shape `[H, W, 3]`, uint8 RGB): a photo or a video frame
                (`fhavatar.io.load_image` / `read_video` give this format).

        Returns:
            `LandmarkResult` with `landmarks [478, 3]` in pixels of `image`.

        Raises:
            NoFaceError: no face was found, even after the retries.
            FaceTooSmallError: the largest face is smaller than `min_face_size` pixels.
            TypeError, ValueError: `image` is not an `[H, W, 3]` uint8 array.
        """
        image = _check_image(image)
        h, w = image.shape[:2]
        kind = "video" if self.mode == "video" else "static"
        faces, attempt = self._mesh(image, kind), "full"
        # Photos: the full-range detector also counts faces the mesh's short-range detector misses.
        boxes = self._detect_boxes(image) if kind == "static" or not faces else []
        count = max(len(faces), len(boxes))
        if kind == "video" and faces:
            if not math.isnan(faces[0][1]):
                self._track_score = faces[0][1]  # a new detection started (or restarted) the track
            faces = [(lm, self._track_score if math.isnan(s) else s) for lm, s in faces]
        if not faces and self.retry:
            for attempt, faces in self._retries(image, boxes):  # noqa: B007 - `attempt` is reported below
                if faces:
                    break
        if not faces:
            raise NoFaceError(
                f"No face found in the {w}x{h} image, even after zoomed, padded and tiled retries. Use a photo with "
                "one clearly visible face (not covered, not too dark or blurred, and not tiny in the frame)."
            )
        areas = [(b[2] - b[0]) * (b[3] - b[1]) for b in (_box(lm) for lm, _ in faces)]
        best = int(np.argmax(areas))
        landmarks, score = faces[best]
        count = max(count, len(faces))
        box = _box(landmarks)
        result = LandmarkResult(landmarks.astype(np.float32), count, box, float(score), (w, h), attempt)
        if count > 1:
            logger.info("%d faces found; using the largest (box %s).", count, tuple(round(v) for v in box))
        if attempt != "full":
            logger.info("face found by the %r retry pass", attempt)
        if result.face_size < self.min_face_size:
            raise FaceTooSmallError(
                f"The face found is only {result.face_size:.0f} pixels across (box {tuple(round(v) for v in box)} in a "
                f"{w}x{h} image); at least {self.min_face_size} are needed. Use a larger photo or one taken closer."
            )
        return result

    def segment_foreground(self, image: np.ndarray) -> np.ndarray:  # [H, W, 3] uint8 -> [H, W] float32
        """Person/foreground probability per pixel (MediaPipe selfie segmentation, portrait model).

        Args:
            image (`np.ndarray` of shape `[H, W, 3]`, uint8 RGB).

        Returns:
            `np.ndarray` of shape `[H, W]`, float32 in [0, 1] (1 = person).
        """
        image = _check_image(image)
        mask = self._graph("segmenter").process(image).segmentation_mask
        if mask is None:  # pragma: no cover - MediaPipe always returns a mask for a valid image
            raise RuntimeError("MediaPipe selfie segmentation returned no mask.")
        return np.clip(np.asarray(mask, dtype=np.float32), 0.0, 1.0)


def segment_foreground(image: np.ndarray) -> np.ndarray:  # [H, W, 3] uint8 -> [H, W] float32
    """One-off `FaceLandmarker.segment_foreground` (creates and closes the graph; reuse a landmarker for many)."""
    with FaceLandmarker() as landmarker:
        return landmarker.segment_foreground(image)
