"""The reconstruction self-check: a success means the avatar shows the person in the photo (issue 18, item 1).

`FHAvatarPipeline.reconstruct` tracks the photo, calls `check_track`, and builds the avatar through `checked_avatar`.
Three kinds of photo used to give a wrong avatar with success and no warning:

- **a photo turned upside down**: Face Mesh fits an *upright* face onto the inverted one, so the landmarks themselves
  look upright (eyes above the mouth; the crop levels them) while the pixels stay inverted, and the avatar wears an
  upside-down face. The landmarks' own orientation shows nothing; the pixels must be asked;
- **a face that fills the frame**: the PanoHead crop around the head is mostly padding (the photo's border pixels
  smeared outward), the selfie segmenter finds no person in it, the matte drops the whole face and a blank template
  head comes back;
- **a drawn cartoon**: Face Mesh places a face on it, the segmenter (rightly) finds no person, and again a blank head.

The checks, in order. Figures: the 7 shared photos and examples/astronaut.png, each as given, turned 90°, 180° and
270°, and cropped to 88 % of its face landmarks' box (the face fills the frame), and two drawn smileys; reproduce with
`benchmarks/reconstruction_check.py` (it prints every figure below).

1. **A person where the face is** (`check_track`). The crop's matte must cover the face: at least
   `MIN_MATTE_COVERAGE` (0.7) of the 468 face landmarks on its foreground, the tracker's own rule for trusting a matte
   (`fhavatar.tracking.silhouette.MAX_OUTSIDE_FRACTION`: below it the head fit already ignored the matte, and only the
   avatar model still read it). Photos as given and turned: 0.79-1.00 (the profile p02 lowest); tight crops 0.83-0.94,
   but 0.21 and 0.00 for two of them; smileys 0.00. When it fails, the photo itself is segmented (no padding there):
   if that matte covers the landmarks that lie inside the photo (same bound; the two tight crops 0.96 and 1.00, the
   smileys 0.00), it replaces the crop's, warped into the crop with zero outside the photo (nothing is painted from
   the padding), and the head's outline is not fitted to it (its edge is the photo's border, not the person's: no hair
   shell, no bust). If neither matte covers the face, the matte is dropped when dlib's CNN face detector finds a face
   in the crop (either way up); otherwise no person detector sees a face there: refused ("not a real person's face").
2. **Which way up** (`check_track`). MediaPipe's face detector scores the crop (`DETECT_SIDE` px) and the crop turned
   180° (`upright_score`, `turned_score`). Every upright crop: turned minus upright -0.92 to -0.13, and 0.00 for one
   tight crop (no face found either way); the six upside-down photos Face Mesh finds a face in: +0.10 to +0.36. So the
   crop is upright when `turned_score < upright_score`; otherwise dlib's CNN detector (`DLIB_SIDE` px) decides: on
   these crops it found every upright face only upright (or, for the tightest crops, nowhere) and every upside-down
   face only turned. Where it finds no face either way (or dlib is not installed) the scores decide: upside down when
   `turned_score - upright_score >= TURNED_MARGIN` (0.05). An upside-down photo is tracked again turned 180° and
   checked again; refused when no face is found in it then or it does not come out upright either. (Two of the shared
   photos upside down give no face at all: "No face found", as before.)
3. **The face is textured** (`checked_avatar`). The avatar's source-view render (`BUST_RESOLUTION` px, the render the
   bust is built from) against the crop where the avatar covers the hull of the face landmarks: PSNR at least
   `MIN_FACE_PSNR` (14 dB) and luminance correlation at least `MIN_FACE_CORRELATION` (0.55). Every avatar built above:
   17.8-22.7 dB and 0.66-0.90 at K = 32, 19.7-29.4 dB and 0.80-0.99 at K = 256; the blank heads the old code returned
   for the tight crops and smileys: 8.4-12.9 dB and -0.15-0.15, and 17.1-17.4 dB and 0.31-0.46 for the tight crop whose
   matte left a fifth of the face's texture. Below a bound the avatar is rebuilt without a matte (when it had one), and
   below again refused. The bounds are those of the training-free `ProjectionAvatarModel`; a learned model's fidelity
   is its training's (a test's random weights paint noise), so for one a miss is logged, not refused.

Time per reconstruct: the two 256-px detector runs (~25 ms) and the texture figures (~5 ms) on the render the bust
needs anyway (cProfile over the shared photos on a loaded 2-core CPU, where a reconstruct took 2.1 s). The segmenter
(~10 ms) and dlib (~0.2-0.4 s) run only for photos that fail the cheap tests; an upside-down photo is tracked twice.
"""

from __future__ import annotations

import dataclasses
import functools
import logging
import math
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch import Tensor

from .metrics.full_head import face_hull
from .tracking.face_track import FaceTrack
from .tracking.landmarks import FaceLandmarker, NoFaceError
from .tracking.silhouette import MAX_OUTSIDE_FRACTION, on_background

__all__ = [
    "DETECT_SIDE",
    "DLIB_SIDE",
    "MIN_FACE_CORRELATION",
    "MIN_FACE_PSNR",
    "MIN_MATTE_COVERAGE",
    "TURNED_MARGIN",
    "CheckFigures",
    "CheckedTrack",
    "UnusablePhotoError",
    "checked_avatar",
    "check_track",
    "face_agreement",
    "landmark_coverage",
    "looks_upside_down",
    "photo_landmark_coverage",
    "texture_problem",
]

logger = logging.getLogger(__name__)

#: A matte covers the face when at least this fraction of the 468 face landmarks lies on its foreground (> 0.5): the
#: tracker's own rule for trusting a matte. Shared photos as given and turned 0.79-1.00; tight crops down to 0.00;
#: smileys 0.00.
MIN_MATTE_COVERAGE = 1.0 - MAX_OUTSIDE_FRACTION
#: Side (px) of the crop the face detector scores, upright and turned 180°.
DETECT_SIDE = 256
#: Side (px) of the crop dlib's CNN face detector looks at (~0.1-0.2 s per orientation on a CPU; it found every face
#: of the shared photos' crops at 160 px and missed some at 128).
DLIB_SIDE = 160
#: Without dlib's verdict, the crop is upside down when the turned crop scores this much above the upright one
#: (upright crops of the shared photos, turned or tightly cropped: at most 0.00; upside-down: at least +0.10).
TURNED_MARGIN = 0.05
#: Least PSNR (dB) of the source-view render against the photo on the face: its colours. Shared photos, turned
#: 90/180/270° and tightly cropped, at K = 32 and 256: 17.8-29.4 dB; the blank heads of the old failures: 8.4-12.9 dB
#: (a blank head in the subject's skin tone reaches 17.4 dB: the correlation catches it).
MIN_FACE_PSNR = 14.0
#: Least correlation of the render's and the photo's luminance on the face: its features where the photo's are. The
#: same photos: 0.66-0.99 (the lowest: tight crops at K = 32); blank heads: -0.15-0.15, and 0.31-0.46 for the one whose
#: matte left a fifth of the face's texture.
MIN_FACE_CORRELATION = 0.55
#: Fewest face-hull pixels of the render the texture figures are computed from.
_MIN_HULL_PIXELS = 16
#: Luminance variance below which a face counts as flat (correlation 0): a spread of 1/1000 of the range.
_FLAT_VARIANCE = 1e-6

_NOT_A_FACE = ("`image` does not show a real person's face: a face shape was found in it, but neither a person "
               "segmenter nor a face detector sees a person there (a drawing, cartoon, emoji or mask?). Use a photo of "
               "a real face.")
_UPSIDE_DOWN = ("`image` shows its face upside down, and {detail}. Turn the photo upright (rotate it 180°) and try "
                "again.")
_UNTEXTURED = ("`image` gave an avatar whose face does not match the face in the photo (render against photo on the "
               "face: {psnr:.1f} dB PSNR, correlation {corr:.2f}; at least {min_psnr:g} dB and {min_corr:g} are "
               "needed): the photo's face could not be put on the head. Use a photo where the face is sharp, evenly "
               "lit, not covered and not cut by the photo's border.")


class UnusablePhotoError(ValueError):
    """The photo cannot give an avatar that shows the person; the message says what is wrong with it.

    `figures` holds the self-check's `CheckFigures` when they were measured (None otherwise).
    """

    def __init__(self, message: str, figures: CheckFigures | None = None) -> None:
        super().__init__(message)
        self.figures = figures


@dataclass(frozen=True)
class CheckFigures:
    """What the self-check measured (module docstring); `nan` / None where a figure was not needed.

    Attributes:
        matte_coverage (`float` or None): fraction of the face landmarks on the crop matte's foreground (None: no
            matte asked for, `use_mask=False`).
        photo_matte_coverage (`float` or None): the same for the photo's own matte (measured only when needed).
        matte (`str`): the matte the avatar was built with: "crop", "photo" (the photo's, warped) or "none".
        upright_score, turned_score (`float`): face-detector scores of the crop and of the crop turned 180°.
        dlib_upright, dlib_turned (`bool` or None): whether dlib's CNN detector finds a face in the crop upright /
            turned (None: not asked, or dlib not installed).
        turned (`bool`): the photo was upside down and the avatar was built from it turned 180°.
        face_psnr (`float`): dB, the avatar's source-view render against the crop inside the face hull.
        face_correlation (`float`): correlation of their luminance there.
        before_turn (`CheckFigures` or None): when `turned`, the figures of the photo as it was given.
    """

    matte_coverage: float | None = None
    photo_matte_coverage: float | None = None
    matte: str = "none"
    upright_score: float = math.nan
    turned_score: float = math.nan
    dlib_upright: bool | None = None
    dlib_turned: bool | None = None
    turned: bool = False
    face_psnr: float = math.nan
    face_correlation: float = math.nan
    before_turn: CheckFigures | None = None


@dataclass(frozen=True)
class CheckedTrack:
    """A track that passed `check_track`: the one to build from (its matte possibly replaced or dropped).

    Attributes:
        track (`FaceTrack`): the photo's track (of the photo turned 180° when `figures.turned`).
        fit_outline (`bool`): whether the head's outline may be fitted to `track.mask` (hair shell, bust); False
            when the matte is the photo's, whose edge is the photo's border.
        figures (`CheckFigures`).
    """

    track: FaceTrack
    fit_outline: bool
    figures: CheckFigures


# ---------------------------------------------------------------------------------------------- figures
def landmark_coverage(landmarks: np.ndarray, matte: np.ndarray) -> float:  # [478|468, >=2] crop px, [S, S] in [0, 1]
    """Fraction of the 468 face landmarks lying on the foreground (> 0.5) of a square crop matte."""
    return float(1.0 - on_background(np.asarray(landmarks), np.asarray(matte) > 0.5).mean())


def photo_landmark_coverage(landmarks: np.ndarray, matte: np.ndarray) -> float:  # [N, >=2] photo px, [H, W]
    """Fraction of the face landmarks inside the photo that lie on the foreground (> 0.5) of the photo's matte
    (0 when none is inside)."""
    points = np.asarray(landmarks, dtype=np.float64)[:468, :2]
    h, w = matte.shape
    cols, rows = np.floor(points[:, 0]), np.floor(points[:, 1])
    inside = (cols >= 0) & (cols < w) & (rows >= 0) & (rows < h)
    if not inside.any():
        return 0.0
    return float((matte[rows[inside].astype(int), cols[inside].astype(int)] > 0.5).mean())


def looks_upside_down(upright_score: float, turned_score: float, dlib_upright: bool | None = None,
                      dlib_turned: bool | None = None) -> bool:
    """The orientation rule of the module docstring (step 2) on a crop's detector scores and dlib's findings."""
    upright_score = 0.0 if math.isnan(upright_score) else upright_score
    turned_score = 0.0 if math.isnan(turned_score) else turned_score
    if turned_score < upright_score:
        return False
    if dlib_upright or dlib_turned:
        return bool(dlib_turned and not dlib_upright)
    return turned_score - upright_score >= TURNED_MARGIN


def face_agreement(
    render: Tensor,  # [3, S, S] the source-view render in [0, 1]
    alpha: Tensor,  # [S, S] its alpha
    crop: np.ndarray,  # [C, C, 3] uint8, the tracked crop
    landmarks: np.ndarray,  # [478|468, >=2] crop pixels
) -> tuple[float, float]:
    """(PSNR dB, luminance correlation) of `render` against `crop` (area-resized to S) where the avatar covers
    (alpha > 0.5) the face landmarks' hull (a turned face's hull reaches past its outline: the background is not
    the avatar's to match). `(nan, nan)` when the avatar covers less than half the hull or under 16 pixels of it."""
    size = render.shape[-1]
    photo = torch.from_numpy(np.ascontiguousarray(crop)).permute(2, 0, 1).float()[None] / 255.0
    photo = F.interpolate(photo, size=(size, size), mode="area")[0]
    hull = face_hull(np.asarray(landmarks, dtype=np.float64)[:468, :2] * size / crop.shape[0], size)
    face = hull & (alpha.reshape(size, size).cpu() > 0.5)
    if int(face.sum()) < max(_MIN_HULL_PIXELS, 0.5 * int(hull.sum())):
        return math.nan, math.nan
    a, b = render.float().clamp(0, 1)[:, face], photo[:, face]  # [3, N]
    mse = float((a - b).pow(2).mean())
    psnr = math.inf if mse == 0 else 10.0 * math.log10(1.0 / mse)
    la, lb = a.mean(0), b.mean(0)
    la, lb = la - la.mean(), lb - lb.mean()
    flat = min(float(la.pow(2).mean()), float(lb.pow(2).mean())) < _FLAT_VARIANCE  # a flat face has no features
    correlation = 0.0 if flat else float((la * lb).sum() / (la.norm() * lb.norm()))
    return psnr, correlation


def texture_problem(psnr: float, correlation: float) -> bool:
    """Whether the texture figures fall below the bounds (NaN, from a face too small to measure, counts as below)."""
    return not (psnr >= MIN_FACE_PSNR and correlation >= MIN_FACE_CORRELATION)


# ---------------------------------------------------------------------------------------------- detectors
_LOCK = threading.Lock()  # MediaPipe graphs and dlib's detector are not safe to share between threads


@functools.lru_cache(maxsize=1)
def _landmarker() -> FaceLandmarker:
    """One landmarker for the check's detector scores and photo mattes (graphs made on first use, kept)."""
    return FaceLandmarker(min_detection_confidence=0.05, retry=False, min_face_size=8, max_num_faces=1)


@functools.lru_cache(maxsize=1)
def _dlib_detector() -> Any:
    """dlib's CNN face detector (`mmod_human_face_detector`, the identity measure's), or None without dlib."""
    try:
        import dlib

        from .metrics.identity import dlib_model_files

        return dlib.cnn_face_detection_model_v1(str(dlib_model_files()["detector"]))
    except (ImportError, OSError, ValueError) as error:  # not installed, or its model file missing / not the one
        logger.info("reconstruction check: dlib's face detector is unavailable (%s); the detector scores decide", error)
        return None


def _resized(image: np.ndarray, side: int) -> np.ndarray:
    return np.asarray(Image.fromarray(image).resize((side, side), Image.BILINEAR))


def _detector_score(image: np.ndarray) -> float:
    try:
        score = _landmarker().detect(image).score
    except NoFaceError:
        return 0.0
    return 0.0 if math.isnan(score) else float(score)


def detector_scores(crop: np.ndarray) -> tuple[float, float]:
    """MediaPipe face-detector scores of the crop and of the crop turned 180° (0 where it finds no face)."""
    small = _resized(crop, DETECT_SIDE)
    with _LOCK:
        return _detector_score(small), _detector_score(np.ascontiguousarray(small[::-1, ::-1]))


def dlib_faces(crop: np.ndarray) -> tuple[bool | None, bool | None]:
    """Whether dlib's CNN detector finds a face in the crop upright and turned 180° ((None, None) without dlib)."""
    detector = _dlib_detector()
    if detector is None:
        return None, None
    small = _resized(crop, DLIB_SIDE)
    with _LOCK:
        return len(detector(small, 0)) > 0, len(detector(np.ascontiguousarray(small[::-1, ::-1]), 0)) > 0


def _photo_matte(photo: np.ndarray) -> np.ndarray:
    with _LOCK:
        return _landmarker().segment_foreground(photo)


# ---------------------------------------------------------------------------------------------- the checks
def _checked(photo: np.ndarray, track: FaceTrack, turned: bool) -> CheckedTrack:
    """Steps 1 and 2 of the module docstring on one track (no retry); raises `UnusablePhotoError` for no person."""
    figures = CheckFigures(turned=turned)
    fit_outline, person = True, False
    if track.mask is not None:
        coverage = landmark_coverage(track.landmarks, track.mask)
        figures = dataclasses.replace(figures, matte_coverage=coverage, matte="crop")
        person = coverage >= MIN_MATTE_COVERAGE
    if not person:
        matte = _photo_matte(photo)
        coverage = photo_landmark_coverage(track.crop.invert(track.landmarks[:468, :2].astype(np.float64)), matte)
        figures = dataclasses.replace(figures, photo_matte_coverage=coverage)
        person = coverage >= MIN_MATTE_COVERAGE
        if track.mask is not None:  # a matte was asked for: the photo's if it covers the face, else none
            if person:
                warped = track.crop.warp(matte, border="constant", border_value=0.0).astype(np.float32)
                track, fit_outline = dataclasses.replace(track, mask=np.clip(warped, 0.0, 1.0)), False
                figures = dataclasses.replace(figures, matte="photo")
            else:
                track = dataclasses.replace(track, mask=None)
                figures = dataclasses.replace(figures, matte="none")
    if not person:
        upright, down = dlib_faces(track.image)
        figures = dataclasses.replace(figures, dlib_upright=upright, dlib_turned=down)
        if not (upright or down):
            raise UnusablePhotoError(_NOT_A_FACE, figures)
    if figures.matte_coverage is not None and figures.matte != "crop":
        logger.warning("The person matte of the face crop covers only %.0f%% of the face (the face fills the frame, or "
                       "no person is seen there); the avatar is built with %s.", 100 * figures.matte_coverage,
                       "the photo's own matte, its outline not fitted" if figures.matte == "photo" else "no matte")
    upright_score, turned_score = detector_scores(track.image)
    figures = dataclasses.replace(figures, upright_score=upright_score, turned_score=turned_score)
    if turned_score >= upright_score and figures.dlib_upright is None:  # ambiguous: ask dlib
        upright, down = dlib_faces(track.image)
        figures = dataclasses.replace(figures, dlib_upright=upright, dlib_turned=down)
    return CheckedTrack(track, fit_outline, figures)


def _upside_down(checked: CheckedTrack) -> bool:
    f = checked.figures
    return looks_upside_down(f.upright_score, f.turned_score, f.dlib_upright, f.dlib_turned)


def check_track(photo: np.ndarray, track: FaceTrack, retrack: Callable[[np.ndarray], FaceTrack]) -> CheckedTrack:
    """Steps 1 and 2 of the module docstring: the track to build from, or `UnusablePhotoError`.

    Args:
        photo (`np.ndarray` `[H, W, 3]` uint8): the photo as tracked (`fhavatar.io.load_image`).
        track (`FaceTrack`): its track (`track_image`).
        retrack (callable): tracks other pixels the same way (`[H, W, 3]` uint8 -> `FaceTrack`); called with the
            photo turned 180° when the face is upside down.
    """
    checked = _checked(photo, track, turned=False)
    if not _upside_down(checked):
        return checked
    turned = np.ascontiguousarray(photo[::-1, ::-1])
    try:
        again = _checked(turned, retrack(turned), turned=True)
    except NoFaceError as error:
        raise UnusablePhotoError(_UPSIDE_DOWN.format(detail="turned upright no usable face is found in it"),
                                 checked.figures) from error
    if _upside_down(again):
        raise UnusablePhotoError(_UPSIDE_DOWN.format(detail="its face does not come out upright when it is turned "
                                                     "180° either, so which way is up cannot be told"), again.figures)
    logger.warning("The photo is upside down: the avatar is built from it turned 180°.")
    return dataclasses.replace(again, figures=dataclasses.replace(again.figures, before_turn=checked.figures))


def checked_avatar(checked: CheckedTrack, build: Callable[[FaceTrack, bool], tuple[Any, Tensor, Tensor]],
                   strict: bool = True) -> tuple[Any, CheckFigures]:
    """Step 3 of the module docstring: build the avatar and check its face's texture; `(avatar, figures)`.

    Args:
        checked (`CheckedTrack`): from `check_track`.
        build (callable): `(track, fit_outline) -> (avatar, image, alpha)`, the avatar and its source-view render
            (`[3, S, S]` in [0, 1] and `[S, S]`).
        strict (`bool`, *optional*, defaults to True): refuse (`UnusablePhotoError`) when the texture stays below
            the bounds; False only logs it (learned models, whose fidelity the bounds do not describe).
    """
    track, fit_outline = checked.track, checked.fit_outline
    avatar, *render = build(track, fit_outline)
    figures = dataclasses.replace(checked.figures, **_texture(*render, track))
    if texture_problem(figures.face_psnr, figures.face_correlation) and track.mask is not None and strict:
        logger.warning("The avatar's face does not match the photo (%.1f dB, correlation %.2f); rebuilding it without "
                       "the person matte.", figures.face_psnr, figures.face_correlation)
        avatar, *render = build(dataclasses.replace(track, mask=None), False)
        figures = dataclasses.replace(figures, matte="none", **_texture(*render, track))
    if texture_problem(figures.face_psnr, figures.face_correlation):
        message = _UNTEXTURED.format(psnr=figures.face_psnr, corr=figures.face_correlation, min_psnr=MIN_FACE_PSNR,
                                     min_corr=MIN_FACE_CORRELATION)
        if strict:
            raise UnusablePhotoError(message, figures)
        logger.warning("%s", message.replace("`image`", "The photo", 1))
    return avatar, figures


def _texture(image: Tensor, alpha: Tensor, track: FaceTrack) -> dict[str, float]:
    psnr, correlation = face_agreement(image, alpha, track.image, track.landmarks)
    return {"face_psnr": psnr, "face_correlation": correlation}
