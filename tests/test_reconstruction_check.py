"""The reconstruction self-check (`fhavatar.reconstruction_check`) on small synthetic cases: its figures, its rules,
and the order of its retries and refusals (the detectors are stood in for; the real photos are tried in
`tests/hostile/test_reconstruction_check.py`)."""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from fhavatar import reconstruction_check as rc
from fhavatar.tracking import CropTransform, FaceTrack, NoFaceError

SIZE = 64  # crop side of the synthetic tracks


def _landmarks(size: int = SIZE, centre=(0.5, 0.5), radius: float = 0.25) -> np.ndarray:  # [478, 3] crop pixels
    """478 points filling a disc (a stand-in for a face's landmarks): a sunflower spiral, deterministic."""
    i = np.arange(478) + 0.5
    r = radius * size * np.sqrt(i / 478)
    angle = i * math.pi * (3 - math.sqrt(5))
    return np.stack([centre[0] * size + r * np.cos(angle), centre[1] * size + r * np.sin(angle), np.zeros(478)], 1)


def _texture(size: int = SIZE) -> np.ndarray:  # [S, S, 3] uint8, smooth but with features everywhere
    y, x = np.mgrid[0:size, 0:size] / size
    rgb = np.stack([np.sin(9 * x) * np.cos(7 * y), np.cos(11 * x + 3 * y), np.sin(5 * x * y * 8)], -1)
    return ((rgb * 0.4 + 0.5) * 255).astype(np.uint8)


def _track(mask: np.ndarray | None, image: np.ndarray | None = None) -> FaceTrack:
    """A FaceTrack whose crop is the whole (square) photo: only the fields the check reads are real."""
    crop = CropTransform.from_params((SIZE / 2, SIZE / 2), SIZE, 0.0, (SIZE, SIZE), SIZE)
    image = _texture() if image is None else image
    return FaceTrack(image=image, mask=mask, crop=crop, landmarks=_landmarks().astype(np.float32), camera=None,
                     params=None, head_rotation=np.eye(3), head_translation=np.zeros(3), reprojection_error=0.0,
                     rigid_error=0.0)


@pytest.fixture
def detectors(monkeypatch):
    """Stand-ins for the detectors: set `scores`, `photo_matte`, `dlib` (crop -> (upright, turned)) per test."""
    state = {"scores": lambda crop: (0.9, 0.6), "photo_matte": lambda photo: np.ones(photo.shape[:2], np.float32),
             "dlib": lambda crop: (True, False), "calls": []}

    def record(name, fn):
        def wrapped(arg):
            state["calls"].append(name)
            return state[fn](arg)
        return wrapped

    monkeypatch.setattr(rc, "detector_scores", record("scores", "scores"))
    monkeypatch.setattr(rc, "_photo_matte", record("photo_matte", "photo_matte"))
    monkeypatch.setattr(rc, "dlib_faces", record("dlib", "dlib"))
    return state


# ---------------------------------------------------------------------------------------------- figures
def test_landmark_coverage_counts_face_landmarks_on_the_foreground():
    lm = _landmarks()
    assert rc.landmark_coverage(lm, np.ones((SIZE, SIZE), np.float32)) == 1.0
    assert rc.landmark_coverage(lm, np.zeros((SIZE, SIZE), np.float32)) == 0.0
    left = np.zeros((SIZE, SIZE), np.float32)
    left[:, : SIZE // 2] = 0.9
    assert 0.4 < rc.landmark_coverage(lm, left) < 0.6
    assert rc.MIN_MATTE_COVERAGE == pytest.approx(0.7)  # the tracker's own rule for trusting a matte


def test_photo_landmark_coverage_ignores_landmarks_outside_the_photo():
    matte = np.zeros((40, 30), np.float32)
    matte[:, :15] = 1.0
    inside_left = np.array([[5.0, 5.0], [10.0, 30.0]])
    outside = np.array([[-3.0, 5.0], [5.0, 45.0], [31.0, 2.0]])
    assert rc.photo_landmark_coverage(np.concatenate([inside_left, outside]), matte) == 1.0
    assert rc.photo_landmark_coverage(np.array([[20.0, 5.0], [5.0, 5.0]]), matte) == 0.5
    assert rc.photo_landmark_coverage(outside, matte) == 0.0


@pytest.mark.parametrize(("scores", "dlib", "upside_down"), [
    ((0.94, 0.72), (None, None), False),  # the upright crop scores higher: dlib is not asked
    ((0.94, 0.72), (False, True), False),
    ((0.65, 0.91), (None, None), True),  # no dlib: the scores decide with TURNED_MARGIN
    ((0.80, 0.83), (None, None), False),
    ((0.81, 0.91), (False, True), True),  # dlib finds the face only turned
    ((0.81, 0.91), (True, False), False),  # dlib finds it upright
    ((0.81, 0.91), (True, True), False),
    ((0.0, 0.0), (False, False), False),  # nothing anywhere: keep the photo as it is
    ((math.nan, 0.9), (False, False), True),
])
def test_orientation_rule(scores, dlib, upside_down):
    assert rc.looks_upside_down(*scores, *dlib) is upside_down


def test_face_agreement_of_a_faithful_a_blank_and_an_upside_down_render():
    crop = _texture(128)
    lm = _landmarks(128)
    faithful = F.interpolate(torch.from_numpy(crop).permute(2, 0, 1).float()[None] / 255, size=(32, 32), mode="area")[0]
    covered = torch.ones(32, 32)
    psnr, corr = rc.face_agreement(faithful, covered, crop, lm)
    assert psnr > 40 and corr > 0.99 and not rc.texture_problem(psnr, corr)
    blank = torch.full_like(faithful, 0.0) + faithful.mean((1, 2), keepdim=True)  # the template head's flat skin
    psnr, corr = rc.face_agreement(blank, covered, crop, lm)
    assert corr == 0.0 and rc.texture_problem(psnr, corr)
    psnr, corr = rc.face_agreement(faithful.flip(-1, -2), covered, crop, lm)
    assert corr < rc.MIN_FACE_CORRELATION and rc.texture_problem(psnr, corr)
    tiny = _landmarks(128, radius=0.01)  # a face too small to measure counts as a miss
    assert all(math.isnan(v) for v in rc.face_agreement(faithful, covered, crop, tiny))
    assert rc.texture_problem(math.nan, math.nan)


def test_face_agreement_counts_only_where_the_avatar_covers_the_face():
    crop = _texture(128)
    lm = _landmarks(128)
    faithful = F.interpolate(torch.from_numpy(crop).permute(2, 0, 1).float()[None] / 255, size=(32, 32), mode="area")[0]
    half = torch.ones(32, 32)
    half[:, 17:] = 0.0  # a turned head: the hull reaches past its outline, where the render shows the background
    wrong_background = faithful.clone()
    wrong_background[:, :, 17:] = 1.0
    psnr, corr = rc.face_agreement(wrong_background, half, crop, lm)
    assert psnr > 40 and corr > 0.99
    none = torch.zeros(32, 32)
    none[:, :12] = 1.0  # the avatar covers under half the face: a miss
    assert all(math.isnan(v) for v in rc.face_agreement(faithful, none, crop, lm))


def test_texture_bounds():
    assert not rc.texture_problem(rc.MIN_FACE_PSNR, rc.MIN_FACE_CORRELATION)
    assert rc.texture_problem(rc.MIN_FACE_PSNR - 0.1, 0.99)
    assert rc.texture_problem(30.0, rc.MIN_FACE_CORRELATION - 0.01)


# ---------------------------------------------------------------------------------------------- check_track
def _no_retrack(pixels):
    raise AssertionError("retrack must not be called")


def test_an_upright_photo_with_a_good_matte_passes_unchanged(detectors):
    track = _track(np.ones((SIZE, SIZE), np.float32))
    checked = rc.check_track(track.image, track, _no_retrack)
    assert checked.track is track and checked.fit_outline
    f = checked.figures
    assert (f.matte_coverage, f.matte, f.turned, f.photo_matte_coverage, f.dlib_upright) == (1.0, "crop", False, None, None)
    assert detectors["calls"] == ["scores"]  # the cheap path: no segmenter, no dlib


def test_a_matte_that_misses_the_face_is_replaced_by_the_photos(detectors):
    track = _track(np.zeros((SIZE, SIZE), np.float32))  # a tight crop's matte: no person in the padded crop
    checked = rc.check_track(track.image, track, _no_retrack)
    assert checked.figures.matte == "photo" and not checked.fit_outline
    assert checked.figures.matte_coverage == 0.0 and checked.figures.photo_matte_coverage == 1.0
    assert checked.track.mask is not None and checked.track.mask.min() > 0.99  # the photo's matte, warped into the crop


def test_no_matte_when_neither_covers_the_face_but_dlib_sees_one(detectors):
    detectors["photo_matte"] = lambda photo: np.zeros(photo.shape[:2], np.float32)
    track = _track(np.zeros((SIZE, SIZE), np.float32))
    checked = rc.check_track(track.image, track, _no_retrack)
    assert checked.track.mask is None and checked.figures.matte == "none" and checked.figures.dlib_upright


@pytest.mark.parametrize("mask", [np.zeros((SIZE, SIZE), np.float32), None])
def test_no_person_and_no_face_is_refused(detectors, mask):
    detectors["photo_matte"] = lambda photo: np.zeros(photo.shape[:2], np.float32)
    detectors["dlib"] = lambda crop: (False, False)
    track = _track(mask)
    with pytest.raises(rc.UnusablePhotoError, match=r"`image` does not show a real person's face") as error:
        rc.check_track(track.image, track, _no_retrack)
    assert isinstance(error.value, ValueError) and error.value.figures.photo_matte_coverage == 0.0


def test_use_mask_false_asks_the_photos_matte_but_builds_without(detectors):
    track = _track(None)
    checked = rc.check_track(track.image, track, _no_retrack)
    assert checked.track.mask is None and checked.figures.matte == "none" and checked.figures.photo_matte_coverage == 1.0


def test_an_upside_down_photo_is_tracked_again_turned(detectors):
    detectors["scores"] = lambda crop: (0.6, 0.9) if crop[0, 0, 0] == 1 else (0.9, 0.6)
    detectors["dlib"] = lambda crop: (False, True)
    photo = np.zeros((SIZE, SIZE, 3), np.uint8)
    photo[:4] = 1  # marks the photo's top: the first track's crop shows it first
    turned_seen = []

    def retrack(pixels):
        turned_seen.append(pixels)
        return _track(np.ones((SIZE, SIZE), np.float32), image=np.zeros((SIZE, SIZE, 3), np.uint8))

    first = _track(np.ones((SIZE, SIZE), np.float32), image=photo)
    checked = rc.check_track(photo, first, retrack)
    assert len(turned_seen) == 1 and np.array_equal(turned_seen[0], photo[::-1, ::-1])
    assert checked.figures.turned and checked.track is not first


def test_an_upside_down_photo_that_does_not_turn_upright_is_refused(detectors):
    detectors["scores"] = lambda crop: (0.6, 0.9)
    detectors["dlib"] = lambda crop: (False, True)
    track = _track(np.ones((SIZE, SIZE), np.float32))
    with pytest.raises(rc.UnusablePhotoError, match=r"upside down.*cannot be told.*Turn the photo upright"):
        rc.check_track(track.image, track, lambda pixels: _track(np.ones((SIZE, SIZE), np.float32)))

    def no_face(pixels):
        raise NoFaceError("No face found in the 64x64 image")

    with pytest.raises(rc.UnusablePhotoError, match=r"upside down, and turned upright no usable face is found in it\. "
                                                     r"Turn the photo upright") as error:
        rc.check_track(track.image, track, no_face)
    assert isinstance(error.value.__cause__, NoFaceError)


# ---------------------------------------------------------------------------------------------- checked_avatar
def _render_of(track: FaceTrack, blank: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    render = F.interpolate(torch.from_numpy(track.image).permute(2, 0, 1).float()[None] / 255, size=(32, 32),
                           mode="area")[0]
    return render.mean((1, 2), keepdim=True).expand_as(render).clone() if blank else render, torch.ones(32, 32)


def test_a_textured_avatar_passes_and_a_blank_one_is_rebuilt_without_the_matte():
    track = _track(np.ones((SIZE, SIZE), np.float32))
    checked = rc.CheckedTrack(track, True, rc.CheckFigures(matte="crop"))
    built = []

    def build(t, fit_outline):
        built.append((t.mask is not None, fit_outline))
        return "avatar", *_render_of(t, blank=t.mask is not None)  # the matte drops the face's texture

    avatar, figures = rc.checked_avatar(checked, build)
    assert avatar == "avatar" and built == [(True, True), (False, False)]
    assert figures.matte == "none" and figures.face_psnr > 40 and figures.face_correlation > 0.99


def test_a_blank_avatar_is_refused_or_only_logged_for_a_learned_model(caplog):
    track = _track(None)
    checked = rc.CheckedTrack(track, True, rc.CheckFigures())

    def build(t, fit_outline):
        return "avatar", *_render_of(t, blank=True)

    with pytest.raises(rc.UnusablePhotoError, match=r"`image` gave an avatar whose face does not match .* correlation "
                                                     r"0\.00; at least 14 dB and 0\.55 are needed") as error:
        rc.checked_avatar(checked, build)
    assert error.value.figures.face_correlation == 0.0
    avatar, figures = rc.checked_avatar(checked, build, strict=False)
    assert avatar == "avatar" and figures.face_correlation == 0.0
    assert "The photo gave an avatar whose face does not match" in caplog.text


def test_figures_are_frozen_records():
    figures = rc.CheckFigures(matte="crop")
    with pytest.raises(dataclasses.FrozenInstanceError):
        figures.matte = "none"


@pytest.mark.parametrize("message", [rc._NOT_A_FACE, rc._UPSIDE_DOWN.format(detail="turned upright no usable face is "
                                     "found in it"), rc._UNTEXTURED.format(psnr=9.0, corr=0.1, min_psnr=14, min_corr=0.55)])
def test_refusals_read_well_in_the_cli_and_the_app(message):
    """Each refusal names the photo as each interface does: "photo" in the CLI, "The photo" in the app."""
    from fhavatar.__main__ import CLI_NAMES
    from fhavatar.pipeline_inputs import reword

    assert message.startswith("`image` ") and message.count("`") == 2
    cli = reword(message, CLI_NAMES)
    assert cli.startswith("photo ") and "`" not in cli
    pytest.importorskip("gradio")
    from fhavatar.app_service import AvatarService

    app = AvatarService.user_error(rc.UnusablePhotoError(message)).message
    assert app.startswith("The photo ") and "`" not in app and app.endswith(".")
