"""Letterbox bars: found at the edges, filled with the picture's edge line; dark backdrops are left alone."""

from pathlib import Path

import numpy as np
import pytest

from fhavatar.tracking import track_image
from fhavatar.tracking.letterbox import BAR_LEVEL, fill_bars, find_bars, remove_bars

REALFACES = Path(__file__).resolve().parents[2].parent / "shared" / "data" / "realfaces"


def _picture(seed: int = 0, size: tuple[int, int] = (60, 80)) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return rng.integers(60, 220, (*size, 3), dtype=np.uint8)


def test_bars_at_each_edge_are_found_and_filled_with_the_edge_line():
    image = _picture()
    framed = image.copy()
    framed[:5] = 0  # top
    framed[-9:] = np.random.default_rng(1).integers(0, BAR_LEVEL + 1, (9, 80, 3), dtype=np.uint8)  # noisy black
    framed[:, :3] = 2  # left
    assert find_bars(framed) == (5, 9, 3, 0)
    filled = fill_bars(framed, find_bars(framed))
    np.testing.assert_array_equal(filled[5:-9, 3:], framed[5:-9, 3:])  # the picture is untouched
    np.testing.assert_array_equal(filled[:5, 3:], np.broadcast_to(framed[5, 3:], (5, 77, 3)))
    np.testing.assert_array_equal(filled[-9:, 3:], np.broadcast_to(framed[-10, 3:], (9, 77, 3)))
    np.testing.assert_array_equal(filled[5:-9, :3], np.broadcast_to(framed[5:-9, 3:4], (46, 3, 3)))
    np.testing.assert_array_equal(filled[0, 0], framed[5, 3])  # corners take the picture's corner


def test_no_bars_and_dark_backdrops_are_left_alone():
    image = _picture()
    assert find_bars(image) == (0, 0, 0, 0)
    assert fill_bars(image, (0, 0, 0, 0)) is image
    dark = image.copy()
    dark[:20] = np.linspace(0, 30, 20, dtype=np.uint8)[:, None, None]  # a backdrop fading to black at the top
    assert find_bars(dark)[0] == 0
    thin = image.copy()
    thin[:1] = 0  # one black line is no bar
    assert find_bars(thin)[0] == 0
    black_half = image.copy()
    black_half[:40] = 0  # two thirds black: a dark picture, not a bar
    assert find_bars(black_half)[0] == 0


def test_a_clips_bar_must_be_dark_in_every_frame():
    frames = [_picture(seed) for seed in range(3)]
    for frame in frames:
        frame[-6:] = 0
    assert find_bars(frames) == (0, 6, 0, 0)
    assert find_bars(np.stack(frames)) == (0, 6, 0, 0)
    assert find_bars(iter(frames)) == (0, 6, 0, 0)  # frames as they are decoded, read once
    dark = np.zeros((60, 80, 3), np.uint8)
    dark[:, 20] = 255  # a black frame with one bright column: the columns left of it are a bar, whatever the input
    assert find_bars(iter([dark])) == find_bars([dark]) == (0, 0, 20, 0)
    frames[1][-6:, 40] = 200  # something crosses the band in one frame: not a bar
    assert find_bars(frames) == (0, 0, 0, 0)
    for frame in remove_bars([f.copy() for f in frames]):
        assert frame.shape == frames[0].shape


def test_bad_frames_are_refused():
    with pytest.raises(ValueError, match="one size"):
        find_bars([_picture(0), _picture(1, (40, 80))])
    with pytest.raises(ValueError, match=r"\[H, W, 3\]"):
        find_bars([np.zeros((10, 10), np.uint8)])
    with pytest.raises(ValueError, match="empty"):
        find_bars([])
    assert find_bars(np.zeros((1, 1, 3), np.uint8)) == (0, 0, 0, 0)  # too small for bars: left to the tracker


@pytest.mark.skipif(not REALFACES.is_dir(), reason=f"real test videos not found at {REALFACES}")
def test_a_letterboxed_frame_gives_a_crop_without_the_band():
    from fhavatar.io import read_video

    frames, _ = read_video(next(REALFACES.glob("v01*.mp4")), max_frames=1)
    assert find_bars(frames[0])[1] > 10  # this clip has a black band under the shoulders
    track = track_image(frames[0])
    bottom = track.image[-20:]  # the crop's bottom rows: the jacket continued, not black
    assert bottom.mean() > 40
