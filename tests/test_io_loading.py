"""`fhavatar.io.load_image`, `read_video` and `video_info`: formats, limits and errors."""

import os
import struct
import subprocess
import sys
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from fhavatar import io as fio
from fhavatar.io import load_image, read_video, video_info
from fhavatar.io import video as fio_video

REALFACES = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "realfaces"
needs_realfaces = pytest.mark.skipif(not REALFACES.is_dir(), reason=f"real test photos/videos not found at {REALFACES}")
V01 = REALFACES / "v01_man-expressions-greenscreen_lp-d0.mp4"
V02 = REALFACES / "v02_man-mouth-expressions_lp-d18.mp4"
P07 = REALFACES / "p07_frontal_woman-smiling-aligned_p4d-zoe.jpg"


def _png_header_only(path: Path, width: int, height: int) -> Path:
    """A PNG whose header claims `width` x `height` (8-bit RGB) but holds almost no data."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    path.write_bytes(
        b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 16)) + chunk(b"IEND", b"")
    )
    return path


# ---------------------------------------------------------------------------------------------------- images
def test_modes_become_rgb_uint8(tmp_path):
    Image.new("L", (6, 4), 90).save(tmp_path / "gray.png")
    rgba = Image.new("RGBA", (6, 4), (255, 0, 0, 0))
    rgba.putpixel((0, 0), (255, 0, 0, 128))
    rgba.save(tmp_path / "rgba.png")
    Image.new("CMYK", (6, 4), (0, 255, 255, 0)).save(tmp_path / "cmyk.jpg", quality=95)
    Image.fromarray(np.full((4, 6), 32768, np.uint16)).save(tmp_path / "gray16.png")
    pal = Image.new("P", (6, 4), 1)
    pal.putpalette([0, 0, 0, 0, 0, 255] + [0] * 762)
    pal.save(tmp_path / "palette.png")
    Image.new("1", (6, 4), 1).save(tmp_path / "bw.png")

    gray = load_image(tmp_path / "gray.png")
    assert gray.shape == (4, 6, 3) and gray.dtype == np.uint8 and (gray == 90).all()
    rgba_out = load_image(str(tmp_path / "rgba.png"))
    assert rgba_out[1, 1].tolist() == [255, 255, 255]  # fully transparent -> white
    assert rgba_out[0, 0].tolist() == [255, 127, 127] or rgba_out[0, 0].tolist() == [255, 128, 128]
    cmyk = load_image(tmp_path / "cmyk.jpg").astype(int)
    assert cmyk[..., 0].min() > 220 and cmyk[..., 1:].max() < 40  # red
    gray16 = load_image(tmp_path / "gray16.png")  # scaled, not clipped to 255
    assert abs(int(gray16[0, 0, 0]) - 128) <= 1
    assert load_image(tmp_path / "palette.png")[0, 0].tolist() == [0, 0, 255]
    cv2 = pytest.importorskip("cv2")  # PIL cannot write 48-bit RGB PNGs
    cv2.imwrite(
        str(tmp_path / "rgb16.png"),
        np.stack([np.zeros((4, 6)), np.full((4, 6), 32768), np.full((4, 6), 65535)], -1).astype(np.uint16),
    )
    assert load_image(tmp_path / "rgb16.png")[0, 0].tolist() == [255, 128, 0]
    assert (load_image(tmp_path / "bw.png") == 255).all()


def test_exif_orientation_is_applied(tmp_path):
    a = np.zeros((200, 300, 3), np.uint8)
    a[:20, :20] = (255, 0, 0)  # marker in the stored top-left corner
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90° clockwise to display"
    Image.fromarray(a).save(tmp_path / "rotated.jpg", exif=exif, quality=95)
    out = load_image(tmp_path / "rotated.jpg")
    assert out.shape == (300, 200, 3)
    assert out[5, -5, 0] > 200 and out[5, 5, 0] < 50  # the marker is now top-right


def test_arrays_tensors_and_pil_inputs():
    f = np.full((5, 7, 3), 0.5, np.float32)
    assert (load_image(f) == 128).all()
    assert load_image(np.full((5, 7), 65535, np.uint16)).max() == 255
    t = torch.zeros(3, 5, 7)
    t[0] = 1.0
    out = load_image(t)
    assert out.shape == (5, 7, 3) and out[0, 0].tolist() == [255, 0, 0]
    assert load_image(t[None]).shape == (5, 7, 3)
    assert load_image(Image.new("LA", (7, 5), (0, 0)))[0, 0].tolist() == [255, 255, 255]
    src = np.arange(5 * 7 * 3, dtype=np.uint8).reshape(5, 7, 3)
    np.testing.assert_array_equal(load_image(src), src)


def test_downscale_to_max_side():
    out = load_image(np.zeros((300, 1000, 3), np.uint8), max_side=100)
    assert out.shape == (30, 100, 3)
    assert load_image(np.zeros((300, 1000, 3), np.uint8), max_side=None).shape == (300, 1000, 3)


@needs_realfaces
def test_huge_jpeg_is_downscaled_with_bounded_memory(tmp_path):
    big = Image.new("RGB", (8000, 6000), (40, 90, 160))
    face = Image.open(P07).convert("RGB").resize((1600, 1600))
    big.paste(face, (3000, 2000))
    big.save(tmp_path / "huge.jpg", quality=85)
    del big
    # In a fresh process, so the peak resident memory measures this load alone: a full decode holds 192 MB of
    # pixels (PIL stores RGB in 4 bytes) and peaks near 460 MB; the reduced-scale JPEG decode stays near 85 MB.
    code = (
        "import resource, sys; from fhavatar.io import load_image;"
        "before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss;"
        f"a = load_image({str(tmp_path / 'huge.jpg')!r});"
        "grown = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before;"
        "print(a.shape, grown // 1024)"
    )
    root = Path(__file__).resolve().parents[1]
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, cwd=root, env={**os.environ, "PYTHONPATH": str(root)}
    )
    assert out.returncode == 0, out.stderr
    shape, grown_mb = out.stdout.rsplit(" ", 1)
    assert shape == "(1536, 2048, 3)"
    assert int(grown_mb) < 150, f"loading an 8000x6000 JPEG grew the resident memory by {grown_mb} MB"


def test_too_many_pixels_are_refused_before_decoding(tmp_path):
    with pytest.raises(ValueError, match="Mpx"):  # over our limit, under PIL's bomb error
        load_image(_png_header_only(tmp_path / "108mpx.png", 12000, 9000))
    with pytest.raises(ValueError, match="too large"):  # over PIL's decompression-bomb error limit
        load_image(_png_header_only(tmp_path / "200mpx.png", 20000, 10000))
    with pytest.raises(ValueError, match="Mpx"):
        load_image(Image.new("1", (12000, 9000)))


@needs_realfaces
def test_unreadable_missing_and_wrong_inputs(tmp_path):
    (tmp_path / "text.jpg").write_bytes(b"this is not an image")
    with pytest.raises(ValueError, match="text.jpg"):
        load_image(tmp_path / "text.jpg")
    (tmp_path / "cut.jpg").write_bytes(P07.read_bytes()[:5000])
    with pytest.raises(ValueError, match="cut.jpg"):
        load_image(tmp_path / "cut.jpg")
    with pytest.raises(FileNotFoundError, match="nope.png"):
        load_image(tmp_path / "nope.png")
    with pytest.raises(ValueError, match="directory"):
        load_image(tmp_path)
    with pytest.raises(TypeError, match="list"):
        load_image([[0, 0, 0]])
    with pytest.raises(TypeError, match="complex"):
        load_image(np.zeros((4, 4, 3), np.complex64))
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        load_image(np.full((4, 4, 3), 255.0))
    with pytest.raises(ValueError, match="shape"):
        load_image(np.zeros((4, 4, 5), np.uint8))
    with pytest.raises(ValueError, match="NaN"):
        load_image(torch.full((3, 4, 4), float("nan")))
    with pytest.raises(ValueError, match="max_side"):
        load_image(np.zeros((4, 4, 3), np.uint8), max_side=0)


# ---------------------------------------------------------------------------------------------------- videos
@needs_realfaces
@pytest.mark.parametrize("path, frames, fps, size", [(V01, 78, 25.0, 512), (V02, 216, 30.0, 480)])
def test_read_real_videos(path, frames, fps, size):
    info = video_info(path)
    assert (info.num_frames, info.fps, info.width, info.height) == (frames, fps, size, size)
    assert info.duration == pytest.approx(frames / fps)
    video, rate = read_video(path)
    assert rate == fps and len(video) == frames
    assert video[0].shape == (size, size, 3) and video[0].dtype == np.uint8 and video[0].flags.writeable
    assert len(read_video(path, max_seconds=1.0)[0]) == int(fps)
    short, _ = read_video(path, max_frames=3, max_side=128)
    assert len(short) == 3 and short[0].shape == (128, 128, 3)
    np.testing.assert_allclose(short[0].mean(), video[0].mean(), atol=2)


@needs_realfaces
def test_bad_videos(tmp_path, monkeypatch):
    with pytest.raises(FileNotFoundError, match="missing.mp4"):
        read_video(tmp_path / "missing.mp4")
    with pytest.raises(FileNotFoundError):
        video_info(tmp_path / "missing.mp4")
    (tmp_path / "noise.mp4").write_bytes(np.random.default_rng(0).integers(0, 256, 20000, dtype=np.uint8).tobytes())
    with pytest.raises(ValueError, match="noise.mp4"):
        read_video(tmp_path / "noise.mp4")
    with pytest.raises(ValueError, match="directory"):
        read_video(tmp_path)
    (tmp_path / "cut.mp4").write_bytes(V02.read_bytes()[:30000])  # its index (moov) is at the end: lost
    with pytest.raises(ValueError, match="cut.mp4"):
        read_video(tmp_path / "cut.mp4")
    with pytest.raises(ValueError, match="max_frames"):
        read_video(V01, max_frames=0)
    monkeypatch.setattr(fio_video, "MAX_VIDEO_SECONDS", 2.0)
    with pytest.raises(ValueError, match="max_seconds"):
        read_video(V01)  # 3.12 s > 2 s
    assert len(read_video(V01, max_seconds=1.5)[0]) == 37
    monkeypatch.setattr(fio_video, "MAX_VIDEO_BYTES", 10 * 512 * 512 * 3)
    with pytest.raises(ValueError, match="GiB"):
        read_video(V01, max_frames=20)


# ---------------------------------------------------------------------------------------------------- safety
def test_image_size_and_the_format_allow_list(tmp_path):
    Image.new("RGB", (37, 21)).save(tmp_path / "a.webp")
    assert fio.image_size(tmp_path / "a.webp") == (37, 21)
    assert fio.image_size(_png_header_only(tmp_path / "big.png", 12000, 9000)) == (12000, 9000)  # header only
    with pytest.raises(ValueError, match="too large"):  # beyond PIL's own bomb limit, refused when opened
        fio.image_size(_png_header_only(tmp_path / "huge.png", 40000, 30000))
    Image.new("RGB", (16, 16)).save(tmp_path / "icon.ico")
    (tmp_path / "icon.png").write_bytes((tmp_path / "icon.ico").read_bytes())  # an ICO under a PNG name
    with pytest.raises(ValueError, match="supported formats: JPEG, PNG"):
        load_image(tmp_path / "icon.png")
    os.mkfifo(tmp_path / "fifo.jpg")
    with pytest.raises(ValueError, match="not a regular file"):
        fio.image_size(tmp_path / "fifo.jpg")


def test_videos_are_opened_only_as_local_containers(tmp_path):
    clip = fio.write_video(tmp_path / "clip.mp4", [np.full((16, 16, 3), v, np.uint8) for v in (0, 128, 255)], fps=3)
    info = video_info(clip)
    assert (info.num_frames, info.fps, info.width, info.height, info.codec) == (3, 3.0, 16, 16, "h264")
    frames, fps = read_video(clip, timeout=30)
    assert [int(f.mean()) for f in frames] == pytest.approx([0, 128, 255], abs=3)
    # a concat list names another file: ffmpeg would read it in; only container demuxers are allowed
    (tmp_path / "list.mp4").write_text(f"ffconcat version 1.0\nfile '{clip}'\n")
    with pytest.raises(ValueError, match="list.mp4.*not a readable video file"):
        video_info(tmp_path / "list.mp4")
    with pytest.raises(ValueError, match="`timeout` must be a positive"):
        read_video(clip, timeout=0)
    with pytest.raises(ValueError, match=r"took more than 1e-06 s"):  # the probe shares the time limit
        read_video(clip, timeout=1e-6)
