"""Hostile app requests between sessions (`fhavatar.app_service.AvatarService`, called directly): a session holding
one photo's avatar asks to animate another photo, colours outside [0, 1] in disguise, one visitor's colour in
another's result, and messages in plain words. The served two-client version is `tests/test_app.py`."""

from __future__ import annotations

from pathlib import Path

import imageio_ffmpeg
import numpy as np
import pytest
from PIL import Image

from .catalogue import handled, refused

gr = pytest.importorskip("gradio")

ROOT = Path(__file__).resolve().parents[2]
PHOTO = ROOT / "examples" / "astronaut.png"


@pytest.fixture(scope="module")
def service():
    from fhavatar.app_service import AvatarService

    return AvatarService(resolution=32)


@pytest.fixture(scope="module")
def photos(tmp_path_factory) -> dict[str, Path]:
    """A: the colour example photo; B: the same person in gray (another photo, another avatar)."""
    d = tmp_path_factory.mktemp("photos")
    Image.open(PHOTO).convert("RGB").save(d / "a.png")
    Image.open(PHOTO).convert("L").convert("RGB").save(d / "b.png")
    return {"a": d / "a.png", "b": d / "b.png"}


@pytest.fixture(scope="module")
def clip(tmp_path_factory) -> Path:
    from fhavatar.io import load_image, write_video

    image = load_image(PHOTO)
    return write_video(tmp_path_factory.mktemp("clip") / "clip.mp4", [np.roll(image, s, axis=1) for s in (0, 3, 6)], fps=10)


def _left_frames(path) -> np.ndarray:  # the avatar half of a re-enactment, [T, H, H, 3] float
    reader = imageio_ffmpeg.read_frames(str(path))
    meta = next(reader)
    w, h = meta["size"]
    frames = np.stack([np.frombuffer(f, np.uint8).reshape(h, w, 3) for f in reader]).astype(np.float32)
    return frames[:, :, :h]


def _saturation(frames: np.ndarray) -> float:
    return float((frames.max(-1) - frames.min(-1)).mean())


def test_animate_uses_the_photo_it_is_given(service, photos, clip):
    """After `create` with photo A, `animate` with photo B must show B, never the session's A."""
    session_a = service.create(str(photos["a"]), frames=1, size=64, background="#ffffff")[3]
    own_b = _left_frames(service.animate(str(photos["b"]), str(clip), "relative", 64, None))
    own_a = _left_frames(service.animate(str(photos["a"]), str(clip), "relative", 64, None))

    def shows_b(path):
        frames = _left_frames(path)
        assert np.abs(frames - own_b).mean() < 1.0, "the re-enactment is not photo B's avatar"
        assert np.abs(frames - own_a).mean() > 3.0, "the re-enactment shows the session's photo A"
        assert _saturation(frames) < _saturation(own_a) - 3, "the gray photo's avatar is not gray"

    handled("animate(photo B) in a session holding photo A's avatar",
            lambda: service.animate(str(photos["b"]), str(clip), "relative", 64, session_a), shows_b, limit_s=180)
    handled("animate(photo A) in its own session re-uses the session's avatar",
            lambda: service.animate(str(photos["a"]), str(clip), "relative", 64, session_a),
            lambda path: np.abs(_left_frames(path) - own_a).mean() < 1.0 or pytest.fail(), limit_s=180)


@pytest.mark.parametrize("colour", ["#-1-1-1", "#+1+1+1", "# ff ff ff", "rgb(0,0,0)", "#fff", "#ffffff00", "-1", 0,
                                    ["#000000"], "#ff\u0660\u0660ff"])
def test_colours_outside_six_hex_digits_are_refused(service, colour):
    refused(f"background colour {colour!r}", lambda: service.create(str(PHOTO), frames=1, size=64, background=colour),
            r"Background colour must look like #ffffff", errors=(gr.Error,), limit_s=10)


@pytest.mark.parametrize("colour, rgb", [("#1e91e9", [0x1E, 0x91, 0xE9]), (" #FFFFFF\n", [255, 255, 255])])
def test_six_hex_digits_are_read_exactly(colour, rgb):
    from fhavatar.app_service import parse_color

    handled(f"background colour {colour!r}", lambda: parse_color(colour),
            lambda value: value == [c / 255 for c in rgb] or pytest.fail(str(value)))


def test_one_sessions_colour_never_reaches_another(service, photos, clip):
    black = service.create(str(photos["a"]), frames=1, size=64, background="#000000")
    config_before = dict(service.pipe.config)

    def corner(path) -> np.ndarray:
        return _left_frames(path)[:, :4, :4].mean((0, 1, 2))

    handled("the shared config after a black request", lambda: dict(service.pipe.config),
            lambda config: config == config_before and config["background"] == [1.0, 1.0, 1.0] or pytest.fail(str(config)))
    handled("another session's re-enactment after a black request",
            lambda: service.animate(str(photos["a"]), str(clip), "relative", 64, None),
            lambda path: (corner(path) > 240).all() or pytest.fail(str(corner(path))), limit_s=180)
    handled("the black session's own re-enactment",
            lambda: service.animate(str(photos["a"]), str(clip), "relative", 64, black[3]),
            lambda path: (corner(path) < 15).all() or pytest.fail(str(corner(path))), limit_s=180)


def test_app_messages_are_plain_words(service, tmp_path):
    from fhavatar.io import write_video

    blank = write_video(tmp_path / "blank.mp4", [np.full((64, 64, 3), 128, np.uint8)] * 3, fps=10)
    err = refused("driving clip without a face (app)",
                  lambda: service.animate(str(PHOTO), str(blank), "relative", 64, None),
                  r"^'?The driving video: only 0 of 3 frames show a face", errors=(gr.Error,), limit_s=180)
    assert "`" not in str(err)
    refused("elevation 1000 through the API", lambda: service.create(str(PHOTO), frames=1, size=64, elevation=1000),
            r"^'?The elevation must be a number of degrees in \[-89, 89\]", errors=(gr.Error,), limit_s=60)
