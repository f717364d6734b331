"""PanoHead-style crops: transform algebra, framing on real photos, roll alignment, borders and errors."""

import math
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

pytest.importorskip("mediapipe", reason="face tracking needs mediapipe==0.10.21")

from fhavatar.io import load_image  # noqa: E402
from fhavatar.tracking import CropTransform, FaceLandmarker, compute_crop  # noqa: E402
from fhavatar.tracking.align import CROP_SIDE_CM, fit_canonical_face  # noqa: E402

REALFACES = Path(__file__).resolve().parents[2].parent / "shared" / "data" / "realfaces"
needs_realfaces = pytest.mark.skipif(not REALFACES.is_dir(), reason=f"real test photos/videos not found at {REALFACES}")
PHOTOS = sorted(REALFACES.glob("p0*")) if REALFACES.is_dir() else []
IRIS_R, IRIS_L, CHIN, FOREHEAD = 468, 473, 152, 10


@pytest.fixture(scope="module")
def landmarker():
    with FaceLandmarker() as lm:
        yield lm


@pytest.fixture(scope="module")
def photos(landmarker):
    """name prefix ("p01") -> (image [H, W, 3] uint8, landmarks [478, 3])."""
    return {p.name[:3]: (im := load_image(p), landmarker.detect(im).landmarks) for p in PHOTOS}


def _eye_angle(landmarks: np.ndarray) -> float:
    d = landmarks[IRIS_L, :2] - landmarks[IRIS_R, :2]
    return math.degrees(math.atan2(d[1], d[0]))


def test_apply_invert_round_trip():
    crop = CropTransform.from_params((310.5, 207.25), 377.0, math.radians(23.0), (640, 480), 512)
    pts = np.random.default_rng(0).uniform(-100, 700, (50, 3)).astype(np.float32)
    np.testing.assert_allclose(crop.invert(crop.apply(pts)), pts, atol=1e-3)
    np.testing.assert_allclose(crop.apply(np.array([[310.5, 207.25]])), [[256.0, 256.0]], atol=1e-9)
    assert crop.apply(pts).dtype == np.float32
    np.testing.assert_allclose(crop.apply(pts)[:, 2], pts[:, 2] * 512 / 377.0, rtol=1e-5)  # z scales like x
    full = np.vstack([crop.matrix, [0, 0, 1]]) @ np.vstack([crop.inverse, [0, 0, 1]])
    np.testing.assert_allclose(full, np.eye(3), atol=1e-9)
    assert crop.scale == pytest.approx(512 / 377.0)


def test_warp_follows_the_continuous_pixel_convention():
    image = np.zeros((100, 120, 3), np.uint8)
    image[40, 70] = 255  # pixel centre at (70.5, 40.5)
    crop = CropTransform.from_params((60.0, 50.0), 50.0, 0.0, (120, 100), 100)  # 2x zoom
    out = crop.warp(image)
    x, y = crop.apply(np.array([[70.5, 40.5]]))[0]
    peak = np.unravel_index(out[..., 0].argmax(), out.shape[:2])
    assert (peak[1] + 0.5, peak[0] + 0.5) == pytest.approx((x, y), abs=1.0)


@needs_realfaces
def test_warp_then_paste_back_restores_the_region(photos):
    image = photos["p07"][0]
    crop = CropTransform.from_params((250.0, 280.0), 300.0, math.radians(12.0), (512, 512), 512)  # upsampling
    restored = crop.paste_back(crop.warp(image), image)
    yy, xx = np.mgrid[0:512, 0:512] + 0.5
    uv = crop.apply(np.stack([xx.ravel(), yy.ravel()], -1)).reshape(512, 512, 2)
    inside = (uv > 4).all(-1) & (uv < 508).all(-1)
    err = np.abs(restored.astype(int) - image.astype(int))[inside]
    assert err.mean() < 2.5 and inside.mean() > 0.25
    outside = ((uv < -8) | (uv > 520)).any(-1)  # well outside the crop's footprint: untouched
    np.testing.assert_array_equal(restored[outside], image[outside])
    mask = np.zeros((512, 512), np.float32)
    unchanged = crop.paste_back(np.zeros_like(crop.warp(image)), image, mask=mask)
    np.testing.assert_array_equal(unchanged, image)


@needs_realfaces
@pytest.mark.parametrize("name", ["p01", "p05", "p07"])
def test_frontal_framing(photos, name):
    image, landmarks = photos[name]
    crop = compute_crop(landmarks, (image.shape[1], image.shape[0]))
    lm = crop.apply(landmarks)
    eyes = (lm[IRIS_R, :2] + lm[IRIS_L, :2]) / 2
    assert abs(eyes[0] - 256) < 0.06 * 512  # face centred horizontally
    assert 0.38 * 512 < eyes[1] < 0.5 * 512  # eyes a little above the middle
    assert lm[CHIN, 1] < 0.83 * 512  # room below the chin for the neck
    assert lm[FOREHEAD, 1] > 0.22 * 512  # room above the brow line for the skull and hair
    eye_to_chin = np.linalg.norm(lm[CHIN, :2] - eyes)
    assert 512 / 3.4 < eye_to_chin < 512 / 2.7  # the crop is 2.7-3.4x the eye-to-chin distance
    assert abs(_eye_angle(lm)) < 3.0


@needs_realfaces
def test_every_photo_gives_a_sane_crop(photos):
    for name, (image, landmarks) in photos.items():
        crop = compute_crop(landmarks, (image.shape[1], image.shape[0]))
        lm = crop.apply(landmarks)
        assert ((lm[:, :2] > 0) & (lm[:, :2] < 512)).all(), name  # the whole face is inside the crop
        box = lm[:, :2].max(0) - lm[:, :2].min(0)
        assert 0.2 * 512 < box.max() < 0.6 * 512, name
        assert crop.warp(image).shape == (512, 512, 3)


@needs_realfaces
def test_already_aligned_photo_is_nearly_identity(photos):
    image, landmarks = photos["p07"]
    crop = compute_crop(landmarks, (512, 512))
    assert 0.8 < crop.scale < 1.25
    assert abs(math.degrees(crop.roll)) < 8
    assert np.hypot(crop.centre[0] - 256, crop.centre[1] - 256) < 0.08 * 512


@needs_realfaces
def test_rotated_photo_is_levelled(landmarker, photos):
    image, landmarks = photos["p07"]
    rotated = np.asarray(
        Image.fromarray(image).rotate(20, resample=Image.Resampling.BICUBIC, expand=True, fillcolor=(128, 128, 128))
    )
    result = landmarker.detect(rotated)
    assert abs(_eye_angle(result.landmarks) + 20 - _eye_angle(landmarks)) < 3  # the photo turned 20° counter-clockwise
    for mode in ("head", "eyes"):
        crop = compute_crop(result.landmarks, result.image_size, roll=mode)
        assert abs(_eye_angle(crop.apply(result.landmarks))) < 3.0, mode
    reference = compute_crop(landmarks, (512, 512))
    crop = compute_crop(result.landmarks, result.image_size)
    assert math.degrees(reference.roll - crop.roll) == pytest.approx(20, abs=2.5)
    assert crop.side == pytest.approx(reference.side, rel=0.05)  # rotation does not change the framing size
    # The two crops show the same thing.
    a, b = crop.warp(rotated).astype(float), reference.warp(image).astype(float)
    assert np.abs(a - b)[128:384, 128:384].mean() < 20


@needs_realfaces
def test_head_near_the_border_is_padded(photos):
    image, landmarks = photos["p06"]  # 200x250, the hat leaves the frame: the crop reaches outside the photo
    crop = compute_crop(landmarks, (200, 250))
    corners = crop.invert(np.array([[0.0, 0.0], [512.0, 0.0], [0.0, 512.0], [512.0, 512.0]]))
    assert corners[:, 0].min() < 0  # part of the crop lies outside the photo
    replicated = crop.warp(image)
    constant = crop.warp(image, border="constant", border_value=(255, 0, 255))
    assert replicated.shape == constant.shape == (512, 512, 3)
    magenta = (constant == [255, 0, 255]).all(-1)
    assert magenta.mean() > 0.02 and not (replicated == [255, 0, 255]).all(-1).any()
    assert (constant[~magenta] == replicated[~magenta]).mean() > 0.95


@needs_realfaces
def test_scale_from_the_canonical_fit_matches_the_eye_distance(photos):
    _, landmarks = photos["p07"]
    scale, rot, _, rms_cm = fit_canonical_face(landmarks)
    assert rms_cm < 1.0
    np.testing.assert_allclose(rot @ rot.T, np.eye(3), atol=1e-9)
    eye_distance_px = np.linalg.norm(landmarks[IRIS_L, :2] - landmarks[IRIS_R, :2])
    assert 5.5 < eye_distance_px / scale < 7.5  # adult interpupillary distance, cm
    assert compute_crop(landmarks, (512, 512)).side == pytest.approx(scale * CROP_SIDE_CM)


def test_errors():
    with pytest.raises(ValueError, match=r"\[478, 3\]"):
        compute_crop(np.zeros((68, 2)), (100, 100))
    with pytest.raises(ValueError, match="NaN"):
        compute_crop(np.full((478, 3), np.nan), (100, 100))
    with pytest.raises(ValueError, match="do not look like a face"):
        compute_crop(np.random.default_rng(0).uniform(0, 500, (478, 3)), (500, 500))
    with pytest.raises(ValueError, match="roll"):
        compute_crop(np.zeros((478, 3)), (100, 100), roll="level")
    crop = CropTransform.from_params((50.0, 50.0), 80.0, 0.0, (100, 100), 64)
    with pytest.raises(ValueError, match="100x100"):
        crop.warp(np.zeros((90, 100, 3), np.uint8))
    with pytest.raises(ValueError, match="border"):
        crop.warp(np.zeros((100, 100, 3), np.uint8), border="wrap")
    with pytest.raises(ValueError, match="64x64"):
        crop.paste_back(np.zeros((32, 32, 3), np.uint8), np.zeros((100, 100, 3), np.uint8))
    with pytest.raises(ValueError, match="side"):
        CropTransform.from_params((0.0, 0.0), -1.0, 0.0, (10, 10))
