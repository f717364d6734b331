import subprocess

import imageio_ffmpeg
import numpy as np
import pytest
import torch
from PIL import Image

from fhavatar.io import save_image, to_uint8_frames, write_video


def _probe(path):
    return subprocess.run([imageio_ffmpeg.get_ffmpeg_exe(), "-i", str(path)], capture_output=True, text=True).stderr


def test_write_video_is_h264_yuv420p_and_round_trips(tmp_path):
    t = torch.linspace(0, 1, 5)[:, None, None, None].expand(5, 3, 33, 47)  # odd size: padded to even
    path = write_video(tmp_path / "clip.mp4", t, fps=10)
    info = _probe(path)
    assert "h264" in info and "yuv420p" in info and "48x34" in info
    reader = imageio_ffmpeg.read_frames(str(path))
    meta = reader.__next__()
    frames = [np.frombuffer(f, np.uint8).reshape(meta["size"][1], meta["size"][0], 3) for f in reader]
    assert len(frames) == 5
    means = [f[:33, :47].mean() for f in frames]
    np.testing.assert_allclose(means, np.linspace(0, 255, 5), atol=3)
    assert not list(tmp_path.glob(".*partial*"))


def test_frame_conversion_and_errors(tmp_path):
    pil = Image.new("RGB", (4, 3), (10, 20, 30))
    frames = to_uint8_frames([pil, np.full((3, 4, 3), 0.5, np.float32), torch.ones(3, 3, 4)])
    assert [f[0, 0].tolist() for f in frames] == [[10, 20, 30], [128, 128, 128], [255, 255, 255]]
    with pytest.raises(ValueError, match="one size"):
        to_uint8_frames([np.zeros((3, 4, 3), np.uint8), np.zeros((4, 4, 3), np.uint8)])
    with pytest.raises(ValueError, match="empty"):
        write_video(tmp_path / "x.mp4", [])
    with pytest.raises(ValueError, match=".mp4"):
        write_video(tmp_path / "x.avi", [pil])
    with pytest.raises(ValueError, match="NaN"):
        save_image(torch.full((3, 2, 2), float("nan")), tmp_path / "x.png")
    out = save_image(torch.zeros(3, 5, 6), tmp_path / "sub" / "x.png")
    assert Image.open(out).size == (6, 5)
