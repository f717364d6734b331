"""Hostile photos: for `fhavatar.io.load_image` and `FHAvatarPipeline.reconstruct`, every file is made here."""

from __future__ import annotations

import io
import os
import struct
import subprocess
import sys
import textwrap
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from fhavatar.io import MAX_IMAGE_PIXELS, image_size, load_image

from .catalogue import handled, refused, write

ROOT = Path(__file__).resolve().parents[2]
PHOTO = ROOT / "examples" / "astronaut.png"  # public domain (skimage), one frontal face


@pytest.fixture(scope="module")
def face() -> Image.Image:
    return Image.open(PHOTO).convert("RGB")


def _encode(image: Image.Image, fmt: str, **options) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, fmt, **options)
    return buffer.getvalue()


def _png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)


# ---------------------------------------------------------------------------------------------- faces
def test_photo_without_a_face(pipe, tmp_path):
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 256, (160, 200, 3), dtype=np.uint8)).save(tmp_path / "noise.png")
    refused("no face (noise)", lambda: pipe.reconstruct(tmp_path / "noise.png"), r"No face found in the 200x160 image")


def test_no_face_message_gives_the_photos_own_size(pipe, tmp_path):
    """A large photo is searched downscaled (at most 2048 a side); the message names the size the user knows."""
    ramp = np.linspace(0, 255, 4000, dtype=np.uint8)[None, :, None].repeat(3000, 0).repeat(3, 2)
    Image.fromarray(ramp).save(tmp_path / "big.png")
    refused("no face (4000x3000 photo)", lambda: pipe.reconstruct(tmp_path / "big.png"),
            r"No face found in the 4000x3000 photo \(searched at 2048x1536\)", limit_s=120)


def test_photo_with_several_faces_uses_the_largest(pipe, face):
    canvas = Image.new("RGB", (900, 600), (90, 120, 160))
    canvas.paste(face.resize((400, 400)), (20, 100))  # the large face: x in [20, 420]
    canvas.paste(face.resize((200, 200)), (620, 40))

    def check(avatar):
        cx, cy = avatar.source_track.crop.centre
        assert 20 < cx < 420 and 100 < cy < 500, f"the crop is centred on ({cx:.0f}, {cy:.0f}), not on the larger face"

    handled("several faces", lambda: pipe.reconstruct(np.asarray(canvas)), check)


def test_tiny_face_is_refused_with_its_size(pipe, face):
    canvas = Image.new("RGB", (640, 480), (90, 120, 160))
    canvas.paste(face.resize((48, 48)), (300, 200))
    refused("tiny face", lambda: pipe.reconstruct(np.asarray(canvas)), r"(only \d+ pixels across|No face found)")


def test_one_pixel_image(pipe, tmp_path):
    Image.new("RGB", (1, 1), (200, 150, 100)).save(tmp_path / "1x1.png")
    handled("1x1 image (load_image)", lambda: load_image(tmp_path / "1x1.png"),
            lambda a: np.testing.assert_array_equal(a, [[[200, 150, 100]]]))
    refused("1x1 image (reconstruct)", lambda: pipe.reconstruct(tmp_path / "1x1.png"), r"1x1")


def test_exif_rotated_photo_comes_out_upright(pipe, face, tmp_path):
    upright = np.asarray(face)
    exif = Image.Exif()
    exif[0x0112] = 6  # stored turned 90° counter-clockwise: "rotate 90° clockwise to display"
    Image.fromarray(np.rot90(upright, 1)).save(tmp_path / "rotated.jpg", exif=exif, quality=95)

    def same_as_upright(a):
        assert a.shape == upright.shape
        assert np.abs(a.astype(int) - upright).mean() < 6, "the pixels are not the upright photo"

    handled("EXIF-rotated (pixels)", lambda: load_image(tmp_path / "rotated.jpg"), same_as_upright)

    def head_upright(avatar):
        roll = np.degrees(avatar.source_track.crop.roll)
        assert abs(roll) < 15, f"the tracked head is rolled by {roll:.0f}°: the EXIF rotation was not applied"

    handled("EXIF-rotated (tracked)", lambda: pipe.reconstruct(tmp_path / "rotated.jpg"), head_upright)


# ---------------------------------------------------------------------------------------------- sizes
def test_8k_photo_is_downscaled(tmp_path):
    Image.new("RGB", (7680, 4320), (40, 90, 160)).save(tmp_path / "8k.jpg", quality=80)

    def check(a):
        assert a.shape == (1152, 2048, 3)
        assert np.abs(a.reshape(-1, 3).mean(0) - [40, 90, 160]).max() < 3

    handled("8K JPEG", lambda: load_image(tmp_path / "8k.jpg"), check)
    handled("8K JPEG header size", lambda: image_size(tmp_path / "8k.jpg"), lambda s: s == (7680, 4320) or pytest.fail(s))


def _huge_headers(tmp_path: Path) -> dict[str, Path]:
    """Small files whose headers claim 65000 x 65000-ish pixels (gigabytes if decoded)."""
    files = {}
    ihdr = struct.pack(">IIBBBBB", 65000, 65000, 8, 2, 0, 0, 0)
    files["png"] = write(tmp_path / "bomb.png", b"\x89PNG\r\n\x1a\n" + _png_chunk(b"IHDR", ihdr)
                         + _png_chunk(b"IDAT", zlib.compress(b"\0" * 64)) + _png_chunk(b"IEND", b""))
    small = Image.new("RGB", (8, 8), (10, 20, 30))
    jpeg = bytearray(_encode(small, "JPEG"))
    sof = jpeg.find(b"\xff\xc0")
    struct.pack_into(">HH", jpeg, sof + 5, 65000, 65000)
    files["jpeg"] = write(tmp_path / "bomb.jpg", bytes(jpeg))
    gif = bytearray(_encode(small, "GIF"))
    struct.pack_into("<HH", gif, 6, 65535, 65535)
    descriptor = gif.find(b",", 13)
    struct.pack_into("<HH", gif, descriptor + 5, 65535, 65535)
    files["gif"] = write(tmp_path / "bomb.gif", bytes(gif))
    bmp = bytearray(_encode(small, "BMP"))
    struct.pack_into("<ii", bmp, 18, 60000, 60000)
    files["bmp"] = write(tmp_path / "bomb.bmp", bytes(bmp))
    tiff = bytearray(_encode(small, "TIFF"))
    for tag in (256, 257):  # ImageWidth, ImageLength (LONG, one value)
        entry = tiff.find(struct.pack("<HHI", tag, 4, 1))
        struct.pack_into("<I", tiff, entry + 8, 60000)
    files["tiff"] = write(tmp_path / "bomb.tiff", bytes(tiff))
    webp = bytearray(_encode(small, "WEBP", lossless=True))
    struct.pack_into("<I", webp, 21, (16383 | 16383 << 14) | (webp[24] >> 4 & 0xF) << 28)  # VP8L: 16384 x 16384
    files["webp"] = write(tmp_path / "bomb.webp", bytes(webp))
    return files


@pytest.mark.parametrize("kind", ["png", "jpeg", "gif", "bmp", "tiff", "webp"])
def test_huge_dimension_headers_are_refused_before_decoding(tmp_path, kind):
    path = _huge_headers(tmp_path)[kind]
    refused(f"huge-dimension {kind} header", lambda: load_image(path), r"(\d+ Mpx|too large|not a readable image)",
            limit_s=5)


def test_decompression_bomb_message_quotes_the_projects_limit(tmp_path):
    """PIL refuses a 65000² header itself (its own limit is ~179 Mpx); the message quotes FHAvatar's 100 Mpx."""
    path = _huge_headers(tmp_path)["png"]
    refused("65000x65000 PNG header: the limit quoted", lambda: load_image(path),
            rf"bomb\.png' is too large \(4225 Mpx\); at most {MAX_IMAGE_PIXELS / 1e6:.0f} Mpx is accepted", limit_s=5)


def test_decoding_bombs_stay_within_bounded_memory(tmp_path):
    """In a fresh process (peak RSS measures these loads alone): huge headers are refused without allocating, and a
    real zlib bomb under the pixel limit (a 9000 x 9000 PNG of 100 KB) decodes within a bounded peak."""
    files = _huge_headers(tmp_path)
    Image.new("L", (9000, 9000), 128).save(tmp_path / "zlib_bomb.png", compress_level=9)
    assert (tmp_path / "zlib_bomb.png").stat().st_size < 200_000
    code = textwrap.dedent(f"""
        import resource
        from fhavatar.io import load_image
        def peak(): return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss // 1024
        base = peak()
        for path in {[str(p) for p in files.values()]!r}:
            try:
                load_image(path)
                print("accepted", path)
            except ValueError:
                pass
        print("refused", peak() - base)
        a = load_image({str(tmp_path / 'zlib_bomb.png')!r})
        print("bomb", a.shape[0], a.shape[1], int(a[0, 0, 0]), peak() - base)
    """)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, cwd=ROOT,
                         env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert out.returncode == 0, out.stderr[-2000:]
    lines = dict(line.split(" ", 1) for line in out.stdout.strip().splitlines())
    assert "accepted" not in lines, out.stdout
    grown_refused = int(lines["refused"])
    height, width, value, grown_bomb = (int(v) for v in lines["bomb"].split())

    def check_refused(mb):
        assert mb < 30, f"refusing six huge headers grew the peak RSS by {mb} MB: something was allocated"

    def check_bomb(_):
        assert (height, width, value) == (2048, 2048, 128)
        assert grown_bomb < 400, f"a 9000x9000 gray PNG peaked {grown_bomb} MB above the baseline"

    handled("huge headers: memory", lambda: grown_refused, check_refused)
    handled("PNG zlib bomb under the pixel limit", lambda: grown_bomb, check_bomb)
    assert 9000 * 9000 <= MAX_IMAGE_PIXELS


# ---------------------------------------------------------------------------------------------- broken files
def test_truncated_and_corrupt_files(face, tmp_path):
    jpeg, png = _encode(face, "JPEG", quality=90), _encode(face, "PNG")
    refused("truncated JPEG", lambda: load_image(write(tmp_path / "cut.jpg", jpeg[: len(jpeg) // 3])),
            r"cut\.jpg.*(corrupt|truncated)")
    refused("truncated PNG", lambda: load_image(write(tmp_path / "cut.png", png[: len(png) // 3])),
            r"cut\.png.*(corrupt|truncated)")
    refused("JPEG header only", lambda: load_image(write(tmp_path / "head.jpg", jpeg[:200])), r"head\.jpg")
    broken = bytearray(png)
    idat = broken.find(b"IDAT")
    broken[idat + 200: idat + 260] = bytes(60)  # the CRC no longer matches the data
    refused("corrupt PNG data", lambda: load_image(write(tmp_path / "crc.png", bytes(broken))),
            r"crc\.png.*(corrupt|truncated|not a readable)")
    # Damaged JPEG entropy data decodes to a damaged picture (libjpeg resynchronises): a result, not a crash.
    damaged = bytearray(jpeg)
    start = damaged.find(b"\xff\xda") + 400
    damaged[start: start + 300] = bytes((i * 37) % 255 for i in range(300))  # no 0xFF: no fake markers
    handled("corrupt JPEG data", lambda: load_image(write(tmp_path / "noisy.jpg", bytes(damaged))),
            lambda a: (a.shape == (512, 512, 3) and a.dtype == np.uint8) or pytest.fail(str(a.shape)))
    refused("empty file", lambda: load_image(write(tmp_path / "empty.png", b"")), r"empty\.png.*not a readable image")
    refused("text named .jpg", lambda: load_image(write(tmp_path / "notes.jpg", b"this is not a photo\n" * 20)),
            r"notes\.jpg.*not a readable image")


def test_formats_outside_the_allow_list_are_refused(tmp_path):
    eps = b"%!PS-Adobe-3.0 EPSF-3.0\n%%BoundingBox: 0 0 10 10\nnewpath 0 0 moveto 10 10 lineto stroke\nshowpage\n"
    refused("EPS named .jpg (would run Ghostscript)", lambda: load_image(write(tmp_path / "ps.jpg", eps)),
            r"ps\.jpg.*supported formats: JPEG")
    ico = _encode(Image.new("RGB", (16, 16), (1, 2, 3)), "ICO")
    refused("ICO named .png", lambda: load_image(write(tmp_path / "icon.png", ico)), r"icon\.png.*not a readable image")


def test_paths_that_are_not_files(tmp_path):
    fifo = tmp_path / "pipe.jpg"
    os.mkfifo(fifo)  # opening it for reading would block forever
    refused("named pipe .jpg", lambda: load_image(fifo), r"pipe\.jpg.*not a regular file", limit_s=5)
    refused("directory", lambda: load_image(tmp_path), r"directory")
    refused("missing file", lambda: load_image(tmp_path / "nope.png"), r"nope\.png.*does not exist")
    refused("path too long", lambda: load_image(tmp_path / ("a" * 5000 + ".png")), r"not a usable path")


# ---------------------------------------------------------------------------------------------- pixel formats
def test_pixel_formats_become_rgb(face, tmp_path):
    red = Image.new("RGB", (6, 4), (255, 0, 0))
    cmyk = write(tmp_path / "cmyk.jpg", _encode(red.convert("CMYK"), "JPEG", quality=95))
    handled("CMYK JPEG", lambda: load_image(cmyk),
            lambda a: (a[..., 0].min() > 220 and a[..., 1:].max() < 40) or pytest.fail(str(a[0, 0])))
    gray16 = write(tmp_path / "g16.png", _encode(Image.fromarray(np.full((4, 6), 65535 // 4, np.uint16)), "PNG"))
    handled("16-bit grayscale PNG", lambda: load_image(gray16), lambda a: abs(int(a[0, 0, 0]) - 64) <= 1 or pytest.fail(a[0, 0]))
    palette = Image.new("P", (6, 4), 1)
    palette.putpalette([0, 0, 0, 10, 200, 30] + [0] * 762)
    handled("palette PNG", lambda: load_image(write(tmp_path / "p.png", _encode(palette, "PNG"))),
            lambda a: a[0, 0].tolist() == [10, 200, 30] or pytest.fail(a[0, 0]))
    palette.info["transparency"] = 1
    handled("palette PNG, transparent index", lambda: load_image(write(tmp_path / "pt.png", _encode(palette, "PNG"))),
            lambda a: a[0, 0].tolist() == [255, 255, 255] or pytest.fail(a[0, 0]))
    rgba = Image.new("RGBA", (6, 4), (0, 0, 255, 0))
    handled("RGBA PNG (transparent on white)", lambda: load_image(write(tmp_path / "a.png", _encode(rgba, "PNG"))),
            lambda a: (a == 255).all() or pytest.fail(a[0, 0]))
    gray = face.convert("L")
    handled("grayscale JPEG", lambda: load_image(write(tmp_path / "g.jpg", _encode(gray, "JPEG"))),
            lambda a: (a.shape == (512, 512, 3) and (a[..., 0] == a[..., 2]).all()) or pytest.fail(a.shape))
    handled("1-bit PNG", lambda: load_image(write(tmp_path / "bw.png", _encode(Image.new("1", (5, 5), 1), "PNG"))),
            lambda a: (a == 255).all() or pytest.fail(a[0, 0]))


@pytest.mark.parametrize("fmt", ["GIF", "WEBP"])
def test_animated_images_give_their_first_frame(tmp_path, fmt):
    colours = [(250, 10, 10), (10, 250, 10), (10, 10, 250)]
    frames = [Image.new("RGB", (32, 24), c) for c in colours]
    options = {"lossless": True} if fmt == "WEBP" else {}
    path = write(tmp_path / f"anim.{fmt.lower()}",
                 _encode(frames[0], fmt, save_all=True, append_images=frames[1:], duration=100, loop=0, **options))
    assert Image.open(path).n_frames == 3

    def first_frame(a):
        assert a.shape == (24, 32, 3)
        assert np.abs(a.reshape(-1, 3).mean(0) - colours[0]).max() < 8, a[0, 0]

    handled(f"animated {fmt}", lambda: load_image(path), first_frame)
