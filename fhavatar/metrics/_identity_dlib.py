"""CSIM (dlib): dlib's face-recognition ResNet as an identity measure that needs no user file.

`fhavatar.metrics.identity` documents it (the distance -> similarity mapping, the labelling) and re-exports every
public name; this module holds the implementation.
"""

from __future__ import annotations

import functools
import hashlib
import importlib.util
import logging
import threading
from pathlib import Path
from typing import NamedTuple

import numpy as np
import torch
from PIL import Image
from torch import Tensor

from ..tracking.landmarks import NoFaceError
from ._common import check_images

logger = logging.getLogger(__name__)

__all__ = [
    "DLIB_CSIM_LABEL",
    "DLIB_DISTANCE_SCALE",
    "DLIB_MODEL_FILES",
    "DLIB_SAME_PERSON_DISTANCE",
    "DlibFaceEmbedder",
    "FaceNotFoundError",
    "IdentityMatch",
    "dlib_model_files",
    "dlib_similarity",
    "identity_match",
    "load_dlib_embedder",
]

#: dlib's own rule: descriptors at most this far apart (Euclidean) belong to the same person (its LFW protocol).
DLIB_SAME_PERSON_DISTANCE = 0.6
#: CSIM (dlib) = 1 - d / DLIB_DISTANCE_SCALE, so dlib's threshold lands at 0.5 and identical faces at 1.
DLIB_DISTANCE_SCALE = 2 * DLIB_SAME_PERSON_DISTANCE
DLIB_CSIM_LABEL = "CSIM (dlib)"
#: The `face-recognition-models` 0.3.0 files loaded (role -> file name, sha256). All three are Davis King's, released
#: into the public domain (dlib-models README; the package's LICENSE is CC0 1.0). The package also holds
#: shape_predictor_68_face_landmarks.dat, trained on iBUG 300-W whose licence excludes commercial use: never opened.
DLIB_MODEL_FILES = {
    "detector": ("mmod_human_face_detector.dat", "4cb19393e2fbaf2b1609a9319ad5386618c886a6234ec1b971f3e87c85d87fe6"),
    "landmarks": ("shape_predictor_5_face_landmarks.dat", "c4b1e9804792707d3a405c2c16a80a20269e6675021f64a41d30fffafbc41888"),
    "descriptor": ("dlib_face_recognition_resnet_model_v1.dat",
                   "55533b28a95800a551ba546ba62fe69625c7e95a7061c338adffead08719da30"),
}
_DLIB_PACKAGE = "face_recognition_models"  # the import name of face-recognition-models (and of its -ng fork)
_INSTALL_HINT = "install the pinned dlib-bin and face-recognition-models (pip install -r requirements.txt)"
#: Images are downscaled to at most this longer side first (the descriptor reads a 150² face chip anyway).
DLIB_MAX_SIDE = 512
#: The CNN detector, tried when the HOG detector finds no face, sees the image at most this large (~1 s on a CPU).
_DLIB_CNN_SIDE = 384


class FaceNotFoundError(NoFaceError):
    """dlib found no face in an image given to the identity measure; `argument` names which one."""

    def __init__(self, message: str, argument: str = "image") -> None:
        super().__init__(message)
        self.argument = argument


class IdentityMatch(NamedTuple):
    """The result of `identity_match`: CSIM (dlib) and dlib's same-person verdict (`distance` <= 0.6)."""

    similarity: float  # 1 - distance / 1.2
    same_person: bool

    @property
    def distance(self) -> float:
        """dlib's Euclidean descriptor distance."""
        return (1.0 - self.similarity) * DLIB_DISTANCE_SCALE


def dlib_similarity(distance):  # float | np.ndarray | Tensor -> same type
    """CSIM (dlib) from dlib's descriptor distance: `1 - d / 1.2` (0.5 at dlib's same-person threshold 0.6)."""
    return 1.0 - distance / DLIB_DISTANCE_SCALE


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


@functools.lru_cache(maxsize=4)
def dlib_model_files(models_dir: str | Path | None = None) -> dict[str, Path]:
    """The three dlib model files (`DLIB_MODEL_FILES`), checked by sha256.

    Args:
        models_dir (`str` or `Path`, *optional*): a folder holding them; by default the `models/` folder of the
            installed `face-recognition-models` package, found without importing it (its `__init__` needs
            `pkg_resources`, which recent setuptools no longer ships).
    """
    if models_dir is None:
        spec = importlib.util.find_spec(_DLIB_PACKAGE)
        if spec is None or not spec.submodule_search_locations:
            raise FileNotFoundError(f"dlib's face-recognition model files are not installed: {_INSTALL_HINT}")
        folder = Path(next(iter(spec.submodule_search_locations))) / "models"
    else:
        folder = Path(models_dir).expanduser()
    paths = {}
    for role, (name, sha256) in DLIB_MODEL_FILES.items():
        path = folder / name
        if not path.is_file():
            raise FileNotFoundError(f"models_dir {str(folder)!r} lacks dlib's {name}: {_INSTALL_HINT}")
        if _sha256(path) != sha256:
            raise ValueError(f"{path} is not the public-domain {name} of face-recognition-models 0.3.0 "
                             f"(sha256 differs): reinstall it ({_INSTALL_HINT})")
        paths[role] = path
    return paths


def _uint8_images(images, name: str) -> list[np.ndarray]:
    """PIL image, HWC uint8 array or `[B, 3, H, W]` float tensor in [0, 1] -> list of contiguous HWC uint8 RGB."""
    if isinstance(images, Image.Image):
        return [np.asarray(images.convert("RGB"))]
    if isinstance(images, np.ndarray):
        if images.dtype != np.uint8 or images.ndim != 3 or images.shape[2] != 3:
            raise ValueError(f"{name} as a numpy array must be an RGB image [H, W, 3] of uint8, "
                             f"got shape {images.shape} dtype {images.dtype}")
        return [np.ascontiguousarray(images)]
    if isinstance(images, Tensor):
        check_images(images, name)
        if not torch.isfinite(images).all():
            raise ValueError(f"{name} must be finite, got NaN or infinite values")
        pixels = (images.detach().float().clamp(0, 1) * 255 + 0.5).to(torch.uint8).permute(0, 2, 3, 1).cpu().numpy()
        return [np.ascontiguousarray(image) for image in pixels]
    raise TypeError(f"{name} must be a PIL image, a numpy RGB image [H, W, 3] uint8 or a tensor [B, 3, H, W] in "
                    f"[0, 1], got {type(images).__name__}")


def _resized(image: np.ndarray, side: int) -> tuple[np.ndarray, float]:
    """`image` downscaled so its longer side is at most `side` (antialiased), and the factor applied."""
    scale = min(1.0, side / max(image.shape[:2]))
    if scale == 1.0:
        return image, 1.0
    size = (max(1, round(image.shape[1] * scale)), max(1, round(image.shape[0] * scale)))
    return np.ascontiguousarray(Image.fromarray(image).resize(size, Image.BILINEAR)), scale


class DlibFaceEmbedder:
    """dlib's face-recognition ResNet: RGB image -> 128-d descriptor of its largest face (Euclidean metric).

    Faces are found by dlib's HOG frontal detector (one 2x upsampling: faces from ~40 px), or, when it finds none,
    by its CNN detector (`mmod_human_face_detector`); the 5-point predictor aligns the face and the network
    describes a 150² chip (dlib's `compute_face_descriptor`, padding 0.25, no jitter). Inputs: a PIL image, an
    `[H, W, 3]` uint8 array, or a `[B, 3, H, W]` float tensor in [0, 1]. Thread-safe (one lock). Build with
    `load_dlib_embedder()`.
    """

    def __init__(self, models_dir: str | Path | None = None) -> None:
        try:
            import dlib
        except ImportError as error:
            raise ModuleNotFoundError(f"CSIM (dlib) needs dlib: {_INSTALL_HINT}") from error
        paths = dlib_model_files(models_dir)
        self.source = str(paths["descriptor"].parent)
        self._hog = dlib.get_frontal_face_detector()
        self._cnn = dlib.cnn_face_detection_model_v1(str(paths["detector"]))
        self._landmarks = dlib.shape_predictor(str(paths["landmarks"]))
        self._network = dlib.face_recognition_model_v1(str(paths["descriptor"]))
        self._rectangle = dlib.rectangle
        self._lock = threading.Lock()
        logger.info("CSIM (dlib): dlib %s, model files from %s", dlib.__version__, self.source)

    def _describe(self, image: np.ndarray) -> np.ndarray | None:  # [H, W, 3] uint8 -> [128] float64 or None
        image, _ = _resized(image, DLIB_MAX_SIDE)
        with self._lock:
            boxes = list(self._hog(image, 1))
            if not boxes:
                small, scale = _resized(image, _DLIB_CNN_SIDE)
                boxes = [self._rectangle(*(round(v / scale) for v in (d.rect.left(), d.rect.top(), d.rect.right(),
                                                                      d.rect.bottom()))) for d in self._cnn(small, 0)]
            if not boxes:
                return None
            box = max(boxes, key=lambda r: r.area())
            return np.asarray(self._network.compute_face_descriptor(image, self._landmarks(image, box), 0, 0.25))

    def embed_each(self, images, name: str = "images") -> list[np.ndarray | None]:
        """One descriptor `[128]` per image, None where dlib finds no face (for metrics over many frames)."""
        return [self._describe(image) for image in _uint8_images(images, name)]

    def embed(self, images, name: str = "images") -> Tensor:  # -> [B, 128] float32
        """Descriptors of every image; `FaceNotFoundError` (a `NoFaceError`) names the first image without a face."""
        frames = _uint8_images(images, name)
        out = []
        for i, (frame, descriptor) in enumerate(zip(frames, (self._describe(f) for f in frames))):
            if descriptor is None:
                which = name if len(frames) == 1 else f"{name}[{i}]"
                raise FaceNotFoundError(
                    f"{which}: dlib found no face in the {frame.shape[1]}x{frame.shape[0]} image (it needs a face of "
                    "at least ~40 px, roughly upright, with its eyes, nose and mouth visible)", argument=name)
            out.append(descriptor)
        return torch.from_numpy(np.stack(out)).float()

    def distance(self, x, y) -> Tensor:  # -> [B]
        """dlib's Euclidean descriptor distance per image pair (`y` may hold one image for all of `x`)."""
        a, b = self.embed(x, "x"), self.embed(y, "y")
        if len(b) != len(a) and len(b) != 1:
            raise ValueError(f"x and y must hold the same number of images (or y one), got {len(a)} and {len(b)}")
        return (a - b).norm(dim=-1)

    def similarity(self, x, y) -> Tensor:  # -> [B]
        """CSIM (dlib) per image pair: `1 - d / 1.2` (see `dlib_similarity`)."""
        return dlib_similarity(self.distance(x, y))


@functools.lru_cache(maxsize=2)
def _cached_embedder(models_dir: str | None) -> DlibFaceEmbedder:
    return DlibFaceEmbedder(models_dir)


def load_dlib_embedder(models_dir: str | Path | None = None) -> DlibFaceEmbedder:
    r"""The dlib identity embedder (built once per process; ~0.5 s).

    Raises `ModuleNotFoundError` without dlib, `FileNotFoundError` without the model files, and `ValueError` when
    a file is not the expected one.

    Example:
        ```py
        >>> from fhavatar.metrics.identity import load_dlib_embedder
        >>> load_dlib_embedder().similarity(render, photo)  # [B] CSIM (dlib)  # doctest: +SKIP
        ```
    """
    return _cached_embedder(None if models_dir is None else str(Path(models_dir).expanduser().resolve()))


def identity_match(render, photo, embedder: DlibFaceEmbedder | None = None) -> IdentityMatch:
    """Does `render` show the person in `photo`? CSIM (dlib) and dlib's verdict (distance <= 0.6).

    Args:
        render, photo: one image each (PIL, `[H, W, 3]` uint8, or a `[1, 3, H, W]` tensor in [0, 1]), e.g. an
            avatar's source-view render and the tracked photo crop at the same framing (~256-512 px).
        embedder (`DlibFaceEmbedder`, *optional*): defaults to `load_dlib_embedder()`.

    Raises:
        FaceNotFoundError: dlib finds no face in one of them; its `argument` is "render" or "photo".
    """
    embedder = embedder or load_dlib_embedder()
    for value, name in ((render, "render"), (photo, "photo")):
        if isinstance(value, Tensor) and value.ndim == 4 and value.shape[0] != 1:
            raise ValueError(f"{name} must be one image, got a batch of {value.shape[0]}")
    distance = float((embedder.embed(render, "render")[0] - embedder.embed(photo, "photo")[0]).norm())
    return IdentityMatch(float(dlib_similarity(distance)), distance <= DLIB_SAME_PERSON_DISTANCE)
