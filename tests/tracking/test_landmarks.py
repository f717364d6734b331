"""FaceLandmarker on the real photos and videos, and on inputs with no usable face."""

import logging
import math
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

pytest.importorskip("mediapipe", reason="face tracking needs mediapipe==0.10.21")

from fhavatar.io import load_image, read_video  # noqa: E402
from fhavatar.tracking import FaceLandmarker, FaceTooSmallError, NoFaceError, segment_foreground  # noqa: E402
from fhavatar.tracking.landmarks import NUM_LANDMARKS  # noqa: E402

REALFACES = Path(__file__).resolve().parents[2].parent / "shared" / "data" / "realfaces"
needs_realfaces = pytest.mark.skipif(not REALFACES.is_dir(), reason=f"real test photos/videos not found at {REALFACES}")
PHOTOS = sorted(REALFACES.glob("p0*")) if REALFACES.is_dir() else []


@pytest.fixture(scope="module")
def landmarker():
    with FaceLandmarker() as lm:
        yield lm


@pytest.fixture(scope="module")
def p07():
    return load_image(REALFACES / "p07_frontal_woman-smiling-aligned_p4d-zoe.jpg")


@needs_realfaces
@pytest.mark.parametrize("path", PHOTOS, ids=[p.name[:3] for p in PHOTOS])
def test_every_real_photo_gets_landmarks(landmarker, path):
    image = load_image(path)
    result = landmarker.detect(image)
    h, w = image.shape[:2]
    assert result.landmarks.shape == (NUM_LANDMARKS, 3) and result.landmarks.dtype == np.float32
    assert np.isfinite(result.landmarks).all()
    assert result.num_faces == 1 and result.attempt == "full" and result.image_size == (w, h)
    assert 0.5 <= result.score <= 1.0
    x0, y0, x1, y1 = result.face_box
    assert -0.05 * w <= x0 < x1 <= 1.05 * w and -0.05 * h <= y0 < y1 <= 1.05 * h
    assert result.face_size >= 80
    # Irises sit inside their eyes: each iris centre lies between the corners of its eye.
    for iris, (a, b) in ((468, (33, 133)), (473, (362, 263))):
        lo, hi = sorted((result.landmarks[a, 0], result.landmarks[b, 0]))
        assert lo - 2 <= result.landmarks[iris, 0] <= hi + 2


@needs_realfaces
def test_full_profile_is_found(landmarker):
    image = load_image(REALFACES / "p02_side_young-man_aflw00475.jpg")
    result = landmarker.detect(image)
    # The man faces left: his nose tip (landmark 1) is the left-most point of the central profile line.
    assert result.landmarks[1, 0] < result.landmarks[168, 0]


@needs_realfaces
def test_two_faces_largest_is_chosen(landmarker, p07, caplog):
    p05 = load_image(REALFACES / "p05_frontal_glasses-curly-hair-grimace_lp-d8.jpg", max_side=512)
    tiled = np.concatenate([p05, p07], axis=1)  # p07's face (~245 px) is larger than p05's (~160 px)
    with caplog.at_level(logging.INFO, logger="fhavatar.tracking.landmarks"):
        result = landmarker.detect(tiled)
    assert result.num_faces == 2
    assert result.face_box[0] > 512  # the right half: p07
    assert "2 faces found" in caplog.text


@pytest.mark.parametrize(
    "name, image",
    [
        ("blank", np.zeros((480, 640, 3), np.uint8)),
        ("white", np.full((300, 300, 3), 255, np.uint8)),
        ("noise", np.random.default_rng(0).integers(0, 256, (300, 400, 3), dtype=np.uint8)),
    ],
)
def test_no_face_raises_a_helpful_error(landmarker, name, image):
    with pytest.raises(NoFaceError, match="No face found.*one clearly visible face"):
        landmarker.detect(image)


def test_landscape_without_a_face(landmarker):
    y, x = np.mgrid[0:400, 0:640] / 400.0
    sky = np.stack([0.4 + 0.3 * y, 0.6 + 0.2 * y, 0.95 - 0.3 * y], -1)
    hills = (y > 0.6 + 0.1 * np.sin(6 * x))[..., None]
    image = (np.where(hills, [0.2, 0.5, 0.15], sky) * 255).astype(np.uint8)
    with pytest.raises(NoFaceError):
        landmarker.detect(image)
    assert issubclass(NoFaceError, ValueError)


@needs_realfaces
def test_tiny_face_is_refused(landmarker, p07):
    canvas = np.full((600, 800, 3), 200, np.uint8)
    canvas[300:364, 500:564] = np.asarray(Image.fromarray(p07).resize((64, 64)))  # a ~35 px face
    with pytest.raises(FaceTooSmallError, match="pixels across.*at least 40"):
        landmarker.detect(canvas)


@needs_realfaces
def test_small_face_in_a_large_image_is_found_by_the_retries(landmarker, p07):
    canvas = np.full((1500, 2000, 3), 120, np.uint8)
    canvas[900:1028, 1500:1628] = np.asarray(Image.fromarray(p07).resize((128, 128)))
    result = landmarker.detect(canvas)
    assert result.attempt in ("detector-crop", "tiles")
    x0, y0, x1, y1 = result.face_box
    assert 1500 <= x0 < x1 <= 1628 and 900 <= y0 < y1 <= 1028


@needs_realfaces
def test_face_cut_by_the_border(landmarker, p07):
    result = landmarker.detect(np.ascontiguousarray(p07[260:]))  # the top of the head is cut off
    assert result.face_box[1] < 0  # landmarks extend above the image


@needs_realfaces
def test_huge_photo_is_downscaled_and_its_face_found(landmarker, tmp_path, p07):
    big = Image.new("RGB", (8000, 6000), (60, 110, 70))
    big.paste(Image.fromarray(p07).resize((1600, 1600)), (5000, 3500))
    big.save(tmp_path / "huge.jpg", quality=80)
    image = load_image(tmp_path / "huge.jpg")
    assert image.shape == (1536, 2048, 3)
    result = landmarker.detect(image)
    x0, y0, x1, y1 = result.face_box
    assert 5000 * 0.256 < x0 < x1 < 6600 * 0.256 and 3500 * 0.256 < y0 < y1 < 5100 * 0.256


def test_bad_inputs(landmarker, tmp_path):
    with pytest.raises(TypeError, match="load_image"):
        landmarker.detect(str(tmp_path / "photo.jpg"))
    with pytest.raises(ValueError, match="uint8"):
        landmarker.detect(np.zeros((64, 64, 3), np.float32))
    with pytest.raises(ValueError, match="uint8"):
        landmarker.detect(np.zeros((64, 64), np.uint8))
    with pytest.raises(ValueError, match="pixels"):
        landmarker.detect(np.zeros((4, 64, 3), np.uint8))
    with pytest.raises(ValueError, match="mode"):
        FaceLandmarker(mode="webcam")
    with pytest.raises(ValueError, match="max_num_faces"):
        FaceLandmarker(max_num_faces=0)


@needs_realfaces
def test_segment_foreground(landmarker, p07):
    mask = landmarker.segment_foreground(p07)
    assert mask.shape == p07.shape[:2] and mask.dtype == np.float32
    assert 0.0 <= mask.min() and mask.max() <= 1.0
    assert mask[200:350, 200:320].mean() > 0.9  # the face
    assert mask[:60, :60].mean() < 0.3  # background corner
    np.testing.assert_allclose(segment_foreground(p07), mask, atol=1e-5)


@needs_realfaces
def test_video_mode_tracks_frames():
    frames, _ = read_video(REALFACES / "v01_man-expressions-greenscreen_lp-d0.mp4", max_frames=12)
    with FaceLandmarker(mode="video") as tracker, FaceLandmarker(mode="image") as photo:
        results = [tracker.detect(f) for f in frames]
        first_static = photo.detect(frames[0])
        tracker.reset()
        again = tracker.detect(frames[0])
    centres = np.array([r.landmarks[:468, :2].mean(0) for r in results])
    assert np.abs(np.diff(centres, axis=0)).max() < 10  # little head motion in v01
    np.testing.assert_allclose(results[0].landmarks[:, :2], first_static.landmarks[:, :2], atol=3)
    assert all(0.5 <= r.score <= 1 for r in results)  # tracked frames carry the score of the detection
    assert not math.isnan(again.score)


def test_resources_are_lazy_and_released():
    lm = FaceLandmarker()
    assert not lm._graphs  # nothing is created before the first call
    with pytest.raises(NoFaceError):
        lm.detect(np.zeros((64, 64, 3), np.uint8))
    assert lm._graphs
    lm.close()
    assert not lm._graphs
