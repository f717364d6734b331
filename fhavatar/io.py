"""Image and video files: loading with limits and clear errors, conversions at the package edges and H.264 mp4
writing, all without a system ffmpeg (the ffmpeg binary shipped by `imageio-ffmpeg` is used)."""

from __future__ import annotations

import logging
import math
import os
import re
import struct
import subprocess
import tempfile
import threading
import warnings
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Union

import numpy as np
import torch
from PIL import Image, ImageOps
from torch import Tensor

__all__ = ["DEFAULT_MAX_SIDE", "IMAGE_FORMATS", "MAX_IMAGE_PIXELS", "MAX_VIDEO_BYTES", "MAX_VIDEO_SECONDS",
           "VIDEO_DECODE_TIMEOUT", "VIDEO_DEMUXERS", "VIDEO_PROBE_TIMEOUT", "VideoInfo", "checked_file", "image_size",
           "load_image", "read_safetensors", "read_video", "save_image", "to_uint8_frames", "video_info", "write_video"]

logger = logging.getLogger(__name__)

FrameLike = Union[Tensor, np.ndarray, Image.Image]
ImageLike = Union[str, os.PathLike, Image.Image, np.ndarray, Tensor]

#: Image formats `load_image` opens (PIL format names). Others (EPS, which runs Ghostscript, PSD, ICO, ...) are
#: refused whatever the file name says.
IMAGE_FORMATS = ("JPEG", "PNG", "WEBP", "GIF", "BMP", "TIFF")  # JPEG includes MPO (phone cameras)
#: Longest side (pixels) of the images `load_image` returns by default; larger ones are downscaled.
DEFAULT_MAX_SIDE = 2048
#: Largest image (width x height) `load_image` accepts; bigger files are refused from their header, before decoding.
MAX_IMAGE_PIXELS = 100_000_000
#: Longest video (seconds) `read_video` decodes when neither `max_frames` nor `max_seconds` limits it.
MAX_VIDEO_SECONDS = 600.0
#: Most bytes of decoded frames (`frames x height x width x 3`) `read_video` holds in memory.
MAX_VIDEO_BYTES = 4 * 1024**3
#: ffmpeg demuxers a video file may be opened with: containers only (no playlists, concat lists, image sequences);
#: mp3/wav are opened only to say "no video stream" rather than "not a video".
VIDEO_DEMUXERS = ("mov", "mp4", "matroska", "webm", "avi", "gif", "mpegts", "mpeg", "flv", "ogg", "asf", "mp3", "wav")
#: Default seconds `video_info` may take (header + packet count by stream copy, no decoding).
VIDEO_PROBE_TIMEOUT = 60.0
#: Default seconds `read_video` lets ffmpeg decode before stopping it.
VIDEO_DECODE_TIMEOUT = 600.0


def _frame_to_uint8(frame: FrameLike, index: int) -> np.ndarray:  # -> [H, W, 3] uint8
    if isinstance(frame, Image.Image):
        return np.asarray(frame.convert("RGB"))
    if isinstance(frame, Tensor):
        t = frame.detach().float().cpu()
        if t.dim() != 3 or t.shape[0] not in (1, 3):
            raise ValueError(f"frame {index}: a tensor frame must be [3, H, W] (or [1, H, W]) in [0, 1], got {list(t.shape)}.")
        if not torch.isfinite(t).all():
            raise ValueError(f"frame {index}: the tensor holds NaN/inf values.")
        t = t.expand(3, -1, -1).clamp(0, 1)
        return (t.permute(1, 2, 0).numpy() * 255.0 + 0.5).astype(np.uint8)
    if isinstance(frame, np.ndarray):
        a = frame
        if a.ndim == 2:
            a = np.repeat(a[..., None], 3, axis=-1)
        if a.ndim != 3 or a.shape[-1] not in (3, 4):
            raise ValueError(f"frame {index}: an array frame must be [H, W, 3], got shape {a.shape}.")
        a = a[..., :3]
        if a.dtype == np.uint8:
            return a
        if np.issubdtype(a.dtype, np.floating):
            if not np.isfinite(a).all():
                raise ValueError(f"frame {index}: the array holds NaN/inf values.")
            return (np.clip(a, 0, 1) * 255.0 + 0.5).astype(np.uint8)
        raise ValueError(f"frame {index}: arrays must be uint8 or float in [0, 1], got dtype {a.dtype}.")
    raise TypeError(f"frame {index}: expected a tensor, numpy array or PIL image, got {type(frame).__name__}.")


def to_uint8_frames(frames: Tensor | Iterable[FrameLike]) -> list[np.ndarray]:
    """Convert frames (`[T, 3, H, W]` tensor in [0, 1], or a sequence of tensors/arrays/PIL images) to uint8 HWC."""
    if isinstance(frames, Tensor) and frames.dim() == 4:
        frames = list(frames)
    out = [_frame_to_uint8(f, i) for i, f in enumerate(frames)]
    if not out:
        raise ValueError("`frames` is empty: a video needs at least one frame.")
    shapes = {f.shape for f in out}
    if len(shapes) != 1:
        raise ValueError(f"All frames must have one size, got {sorted(shapes)}.")
    return out


def save_image(image: FrameLike, path: str | os.PathLike) -> Path:
    """Save one image (`[3, H, W]` tensor in [0, 1], HWC array or PIL image) as PNG/JPEG by extension."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(_frame_to_uint8(image, 0)).save(path)
    return path


def write_video(
    path: str | os.PathLike,
    frames: Tensor | Iterable[FrameLike],
    fps: float = 25.0,
    quality: int = 20,
) -> Path:
    """Write an H.264 / yuv420p mp4 that browsers (and Gradio) play without transcoding.

    Uses the ffmpeg binary shipped by `imageio-ffmpeg`, so no system ffmpeg is needed. Odd frame sizes are
    padded by one pixel (yuv420p needs even sizes). The file is written next to `path` and moved into place
    when complete, so an interrupted run never leaves a truncated video under the final name.

    Args:
        path (`str` or `os.PathLike`): output `.mp4` file.
        frames: `[T, 3, H, W]` tensor in [0, 1], or a sequence of `[3, H, W]` tensors, HWC arrays or PIL images.
        fps (`float`, *optional*, defaults to 25): frame rate.
        quality (`int`, *optional*, defaults to 20): x264 CRF (0 = lossless, 51 = worst).
    """
    import imageio_ffmpeg

    if not (0 < fps <= 240):
        raise ValueError(f"`fps` must lie in (0, 240], got {fps}.")
    if not (0 <= quality <= 51):
        raise ValueError(f"`quality` is an x264 CRF in [0, 51], got {quality}.")
    path = Path(path)
    if path.suffix.lower() != ".mp4":
        raise ValueError(f"`path` must end in .mp4, got {str(path)!r}.")
    arrays = to_uint8_frames(frames)
    h, w = arrays[0].shape[:2]
    pad_h, pad_w = h % 2, w % 2
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(f".{path.stem}.partial.mp4")
    writer = imageio_ffmpeg.write_frames(
        str(partial),
        (w + pad_w, h + pad_h),
        fps=fps,
        codec="libx264",
        pix_fmt_out="yuv420p",
        output_params=["-crf", str(quality), "-movflags", "+faststart"],
        macro_block_size=1,
        ffmpeg_log_level="error",
    )
    try:
        writer.send(None)
        for a in arrays:
            if pad_h or pad_w:
                a = np.pad(a, ((0, pad_h), (0, pad_w), (0, 0)), mode="edge")
            writer.send(np.ascontiguousarray(a))
    except BaseException:
        writer.close()
        partial.unlink(missing_ok=True)
        raise
    writer.close()
    os.replace(partial, path)
    logger.info("wrote %d frames (%dx%d, %.3g fps) to %s", len(arrays), w, h, fps, path)
    return path


# ---------------------------------------------------------------------------------------------------- images
def _target_size(width: int, height: int, max_side: int | None) -> tuple[int, int]:
    if max_side is None or max(width, height) <= max_side:
        return width, height
    scale = max_side / max(width, height)
    return max(1, round(width * scale)), max(1, round(height * scale))


#: What PIL raises on broken image data (its plugins use all of these).
_DECODE_ERRORS = (OSError, SyntaxError, ValueError, EOFError, IndexError, struct.error)


def _check_pixels(width: int, height: int, what: str) -> None:
    if width * height > MAX_IMAGE_PIXELS:
        raise ValueError(
            f"{what} is {width}x{height} ({width * height / 1e6:.0f} Mpx); at most {MAX_IMAGE_PIXELS / 1e6:.0f} Mpx "
            "is accepted. Downscale it first."
        )


def checked_file(path: Path, name: str) -> Path:
    """`path` if it is a regular file; clear errors (naming the argument `name`) for missing paths, folders,
    pipes/devices and names the file system cannot hold. Every reader and `check_inputs` check paths with it."""
    try:
        exists, is_file, is_dir = path.exists(), path.is_file(), path.is_dir()
    except OSError as err:  # e.g. a name longer than the file system allows
        raise ValueError(f"{name} {str(path)[:200]!r} is not a usable path ({err.strerror or err}).") from err
    if not exists:
        raise FileNotFoundError(f"{name} {str(path)!r} does not exist.")
    if is_dir:
        raise ValueError(f"{name} {str(path)!r} is a directory, expected a file.")
    if not is_file:  # a named pipe or a device would block or never end
        raise ValueError(f"{name} {str(path)!r} is not a regular file (a pipe, socket or device?).")
    return path


def _open_image_header(path: Path) -> Image.Image:
    """Open `path` with PIL (header only, allowed formats only); nothing is decoded yet."""
    checked_file(path, "`image`")
    try:
        with warnings.catch_warnings(record=True) as caught:  # PIL warns about damaged metadata: logged below
            warnings.simplefilter("always")
            im = Image.open(path, formats=IMAGE_FORMATS)
    except Image.DecompressionBombError as err:
        raise ValueError(f"`image` {str(path)!r} is too large to decode safely ({err}).") from err
    except _DECODE_ERRORS as err:
        raise ValueError(f"`image` {str(path)!r} is not a readable image file ({type(err).__name__}: {err}); "
                         f"supported formats: {', '.join(IMAGE_FORMATS)}.") from err
    _log_warnings(caught, path)
    return im


def _log_warnings(caught: list, path: Path) -> None:
    for warning in caught:
        if not issubclass(warning.category, Image.DecompressionBombWarning):  # our own pixel limit applies instead
            logger.warning("`image` %s: %s", path, warning.message)


def image_size(path: str | os.PathLike) -> tuple[int, int]:
    """`(width, height)` of an image file, read from its header (nothing is decoded; EXIF rotation not applied).

    Raises:
        FileNotFoundError: `path` does not exist.
        ValueError: not a regular file, or not an image of `IMAGE_FORMATS`.
    """
    with _open_image_header(Path(path)) as im:
        return im.width, im.height


def _open_image_file(path: Path, max_side: int | None) -> Image.Image:
    """Open, check the size from the header, decode (JPEGs at a reduced scale when possible) and apply EXIF."""
    im = _open_image_header(path)
    _check_pixels(im.width, im.height, f"`image` {str(path)!r}")
    if im.format in ("JPEG", "MPO") and max_side is not None and max(im.size) > max_side:
        im.draft(None, _target_size(im.width, im.height, max_side))  # DCT-domain 1/2, 1/4, 1/8 decoding
    try:
        with warnings.catch_warnings(record=True) as caught:  # PIL warns about damaged metadata: log it instead
            warnings.simplefilter("always")
            im.load()
            ImageOps.exif_transpose(im, in_place=True)  # in place: no second full-size copy
    except _DECODE_ERRORS as err:
        raise ValueError(f"`image` {str(path)!r} is corrupt or truncated ({type(err).__name__}: {err}).") from err
    _log_warnings(caught, path)
    return im


def _pil_working_mode(im: Image.Image) -> Image.Image:
    """Convert any PIL mode to one of L, LA, RGB, RGBA, I, F (all resizable, values kept)."""
    mode = im.mode
    has_transparency = "transparency" in im.info
    if mode in ("RGB", "RGBA", "L", "LA", "I", "F") and not (has_transparency and mode in ("RGB", "L")):
        return im
    if mode.startswith("I;16"):
        return im.convert("I")
    if mode in ("P", "PA", "RGBa", "La") or has_transparency:
        return im.convert("RGBA")
    if mode == "1":
        return im.convert("L")
    return im.convert("RGB")  # CMYK, YCbCr, LAB, HSV


def _pil_to_rgb(im: Image.Image, max_side: int | None) -> np.ndarray:  # -> [H, W, 3] uint8
    im = _pil_working_mode(im)
    size = _target_size(im.width, im.height, max_side)
    if size != im.size:
        logger.info("downscaling a %dx%d image to %dx%d (max_side=%d)", im.width, im.height, *size, max_side)
        im = im.resize(size, Image.Resampling.LANCZOS, reducing_gap=3.0)
    return _array_to_rgb(np.asarray(im), "`image`", max_side=None, mode=im.mode)


def _array_to_rgb(a: np.ndarray, name: str, max_side: int | None, mode: str | None = None) -> np.ndarray:
    """`[H, W]`, `[H, W, C]` (C: 1 gray, 2 gray+alpha, 3 RGB, 4 RGBA) uint8/uint16/int/float array -> `[H, W, 3]`
    uint8, alpha composited on white."""
    if a.ndim == 2:
        a = a[..., None]
    if a.ndim != 3 or a.shape[-1] not in (1, 2, 3, 4) or a.shape[0] == 0 or a.shape[1] == 0:
        raise ValueError(f"{name} must be an [H, W], [H, W, 3] or [H, W, 4] image array, got shape {a.shape}.")
    _check_pixels(a.shape[1], a.shape[0], name)
    if a.dtype == np.uint8:
        f = None
    elif a.dtype == np.uint16 or (mode == "I" and a.size and a.max() > 255):
        f = a.astype(np.float32) / 65535.0
    elif np.issubdtype(a.dtype, np.integer) or a.dtype == np.bool_:
        if a.dtype != np.bool_ and (a.min() < 0 or a.max() > 255):
            raise ValueError(f"{name}: integer images must hold values in [0, 255], got [{a.min()}, {a.max()}].")
        f = a.astype(np.float32) / (1.0 if a.dtype == np.bool_ else 255.0)
    elif np.issubdtype(a.dtype, np.floating):
        f = a.astype(np.float32)
        if not np.isfinite(f).all():
            raise ValueError(f"{name} holds NaN/inf values.")
        if mode == "F" and f.max() > 1.0:
            f = f / 255.0
        elif f.min() < -1e-3 or f.max() > 1.0 + 1e-3:
            raise ValueError(
                f"{name}: float images must lie in [0, 1], got values in [{f.min():.3g}, {f.max():.3g}] "
                "(divide 0-255 data by 255)."
            )
    else:
        raise TypeError(f"{name}: unsupported array dtype {a.dtype}; use uint8, uint16 or float in [0, 1].")
    if f is None and a.shape[-1] == 3:
        out = a
    else:
        f = a.astype(np.float32) / 255.0 if f is None else np.clip(f, 0.0, 1.0)
        if f.shape[-1] in (2, 4):
            alpha = f[..., -1:]
            f = f[..., :-1] * alpha + (1.0 - alpha)  # composite on white
        out = (np.broadcast_to(f, f.shape[:2] + (3,)) * 255.0 + 0.5).astype(np.uint8)
    size = _target_size(out.shape[1], out.shape[0], max_side)
    if size != (out.shape[1], out.shape[0]):
        out = np.asarray(Image.fromarray(out).resize(size, Image.Resampling.LANCZOS, reducing_gap=3.0))
    return np.ascontiguousarray(out)


def load_image(image: ImageLike, max_side: int | None = DEFAULT_MAX_SIDE) -> np.ndarray:  # -> [H, W, 3] uint8
    """Load a photo as an RGB uint8 array, whatever its source, format or mode.

    Files are opened with PIL: the size is checked from the header before decoding (at most `MAX_IMAGE_PIXELS`),
    large JPEGs decode directly at a reduced scale, EXIF orientation is applied, and grayscale, palette, CMYK,
    16-bit and images with alpha (composited on white) all become RGB. Images whose longest side exceeds
    `max_side` are downscaled (Lanczos, aspect ratio kept).

    Args:
        image (`str`, `os.PathLike`, `PIL.Image.Image`, `np.ndarray` or `Tensor`): a path to an image file, a PIL
            image, an `[H, W]` / `[H, W, 3]` / `[H, W, 4]` array (uint8, uint16, or float in [0, 1]), or a
            `[3, H, W]` / `[1, H, W]` / `[1, 3, H, W]` tensor in [0, 1].
        max_side (`int`, *optional*, defaults to `DEFAULT_MAX_SIDE` = 2048): longest side of the result; `None`
            keeps the full resolution.

    Returns:
        `np.ndarray` of shape `[H, W, 3]`, dtype uint8, RGB, C-contiguous.

    Raises:
        FileNotFoundError: the path does not exist.
        ValueError: the file is not a readable image (the message names the path), is too large, or an array /
            tensor has the wrong shape or value range.
        TypeError: `image` is of an unsupported type or dtype.
    """
    if max_side is not None and (not isinstance(max_side, int) or isinstance(max_side, bool) or max_side < 1):
        raise ValueError(f"`max_side` must be a positive int or None, got {max_side!r}.")
    if isinstance(image, (str, os.PathLike)):
        return _pil_to_rgb(_open_image_file(Path(image), max_side), max_side)
    if isinstance(image, Image.Image):
        _check_pixels(image.width, image.height, "`image`")
        try:
            image = ImageOps.exif_transpose(image)
        except _DECODE_ERRORS as err:
            raise ValueError(f"`image`: cannot read the PIL image's data ({type(err).__name__}: {err}).") from err
        return _pil_to_rgb(image, max_side)
    if isinstance(image, Tensor):
        t = image.detach().cpu()
        if t.dim() == 4 and t.shape[0] == 1:
            t = t[0]
        if t.dim() != 3 or t.shape[0] not in (1, 3, 4):
            raise ValueError(
                f"`image` tensors must be [3, H, W] (or [1, H, W], [1, 3, H, W]) in [0, 1], got {list(image.shape)}."
            )
        if t.dtype != torch.uint8:
            t = t.float()
        return _array_to_rgb(t.permute(1, 2, 0).numpy(), "`image`", max_side)
    if isinstance(image, np.ndarray):
        return _array_to_rgb(image, "`image`", max_side)
    raise TypeError(f"`image` must be a path, a PIL image, an HWC numpy array or a [3, H, W] tensor, got {type(image).__name__}.")


# ---------------------------------------------------------------------------------------------------- videos
@dataclass(frozen=True)
class VideoInfo:
    """What `video_info` reads from a video's header and packets (nothing is decoded)."""

    fps: float  # nominal frame rate
    num_frames: int  # video packets (= frames) in the first video stream
    duration: float  # seconds, num_frames / fps
    width: int  # frame size as decoded (after the container's rotation, if any)
    height: int
    codec: str


def _ffmpeg_input(path: Path) -> list[str]:
    # Local files only (no URLs, no other protocols) and container demuxers only: playlists (HLS), concat lists and
    # image sequences would let a crafted upload make ffmpeg read other files or URLs into the frames we return.
    return ["-hide_banner", "-nostdin", "-protocol_whitelist", "file", "-format_whitelist", ",".join(VIDEO_DEMUXERS),
            "-i", str(path.resolve())]


def _check_timeout(timeout: float | None, name: str = "timeout") -> None:
    if timeout is not None and not (isinstance(timeout, (int, float)) and not isinstance(timeout, bool) and timeout > 0):
        raise ValueError(f"`{name}` must be a positive number of seconds or None, got {timeout!r}.")


def _ffmpeg_reason(log: str) -> str:
    """The last few meaningful ffmpeg log lines, for error messages."""
    lines = [re.sub(r"^\[[^\]]*\]\s*", "", ln.strip()) for ln in log.splitlines()]  # drop "[in#0 @ 0x...]"
    return " | ".join([ln for ln in lines if ln][-3:])[-300:]


_STREAM = re.compile(r"^\s*Stream #0:(\d+)[^:]*: Video: (\w+)(.*)$", re.MULTILINE)
_SIZE = re.compile(r",\s(\d{1,6})x(\d{1,6})[\s,\[]")
_RATE = re.compile(r"(\d+(?:\.\d+)?)(k?) (fps|tbr)")
_MAPPED = re.compile(r"Stream #0:(\d+) -> #0:0")
_ROTATION = re.compile(r"rotation of (-?\d+(?:\.\d+)?) degrees", re.IGNORECASE)


def video_info(path: str | os.PathLike, timeout: float | None = VIDEO_PROBE_TIMEOUT) -> VideoInfo:
    """Frame rate, frame count, duration and size of a video, without decoding its frames.

    The first real video stream is used (audio, cover pictures and thumbnails are skipped, wherever they are in
    the file); its frames are counted from its packets by stream copy, so a header that lies about the duration
    cannot slip a long video past the limits.

    Args:
        path (`str` or `os.PathLike`): a video file in a container of `VIDEO_DEMUXERS` (mp4, mov, mkv, webm, avi, ...).
        timeout (`float`, *optional*, defaults to `VIDEO_PROBE_TIMEOUT`): seconds allowed; None waits as long as it takes.

    Raises:
        FileNotFoundError: `path` does not exist.
        ValueError: the file is not a readable video, has no video stream or no frame, or took too long to read (the
            message names the path and quotes ffmpeg).
    """
    import imageio_ffmpeg

    _check_timeout(timeout)
    if not isinstance(path, (str, os.PathLike)):
        raise TypeError(f"`path` must be a str or os.PathLike to a video file, got {type(path).__name__}.")
    path = checked_file(Path(path), "video")
    cmd = [imageio_ffmpeg.get_ffmpeg_exe(), *_ffmpeg_input(path), "-map", "0:V:0", "-c", "copy", "-f", "null", "-"]
    try:
        log = subprocess.run(cmd, capture_output=True, text=True, errors="replace", timeout=timeout).stderr
    except subprocess.TimeoutExpired as err:
        raise ValueError(f"video {str(path)!r}: reading its header and counting its frames took more than {timeout:g} s; "
                         "is it a real video file?") from err
    mapped = _MAPPED.search(log)
    if "Error opening input" in log or "Format not on whitelist" in log:
        raise ValueError(f"video {str(path)!r} is not a readable video file (allowed containers: "
                         f"{', '.join(VIDEO_DEMUXERS)}; ffmpeg: {_ffmpeg_reason(log)}).")
    if mapped is None:
        raise ValueError(f"video {str(path)!r} has no video stream (an audio-only or empty file?).")
    stream = next((m for m in _STREAM.finditer(log) if m.group(1) == mapped.group(1)), None)
    counts = re.findall(r"frame=\s*(\d+)", log)
    size = _SIZE.search(stream.group(3)) if stream else None
    if stream is None or size is None or not counts:
        raise ValueError(f"video {str(path)!r}: ffmpeg cannot read its video stream ({_ffmpeg_reason(log)}).")
    num_frames, width, height = int(counts[-1]), int(size.group(1)), int(size.group(2))
    if num_frames == 0:
        raise ValueError(f"video {str(path)!r} has no video frames.")
    if width < 1 or height < 1 or width * height > MAX_IMAGE_PIXELS:
        raise ValueError(f"video {str(path)!r}: its {width}x{height} frames are outside 1 px to "
                         f"{MAX_IMAGE_PIXELS / 1e6:.0f} Mpx.")
    # The side data after the stream line: ffmpeg turns the frames upright when decoding, so report that size.
    following = log[stream.end():]
    nxt = re.search(r"^\s*(Stream #|Stream mapping)", following, re.MULTILINE)
    rotation = _ROTATION.search(following[: nxt.start() if nxt else len(following)])
    if rotation and round(float(rotation.group(1)) / 90) % 2:
        width, height = height, width
    rates = {unit: float(v) * (1000 if k else 1) for v, k, unit in _RATE.findall(stream.group(3))}
    fps = rates.get("fps") or rates.get("tbr") or 0.0
    if fps <= 0:
        duration = re.search(r"Duration: (\d+):(\d\d):(\d\d(?:\.\d+)?)", log)
        seconds = 3600 * int(duration.group(1)) + 60 * int(duration.group(2)) + float(duration.group(3)) if duration else 0
        if seconds <= 0:
            raise ValueError(f"video {str(path)!r}: neither its frame rate nor its duration can be read.")
        fps = num_frames / seconds
    return VideoInfo(fps, num_frames, num_frames / fps, width, height, stream.group(2))


def _read_exact(stream, size: int) -> bytearray | None:
    """`size` bytes from a pipe (fewer only at its end; None when nothing is left)."""
    buffer = bytearray(size)
    view, got = memoryview(buffer), 0
    while got < size:
        n = stream.readinto(view[got:])
        if not n:
            break
        got += n
    return buffer if got == size else None


def read_video(
    path: str | os.PathLike,
    max_frames: int | None = None,
    max_seconds: float | None = None,
    max_side: int | None = None,
    timeout: float | None = VIDEO_DECODE_TIMEOUT,
) -> tuple[list[np.ndarray], float]:
    """Decode a video into RGB uint8 frames with the ffmpeg binary shipped by `imageio-ffmpeg`.

    Every decoded frame is returned once (`-fps_mode passthrough`: nothing is duplicated or dropped to force a
    constant rate, so variable-frame-rate clips keep all their frames). Without `max_frames` / `max_seconds`,
    videos longer than `MAX_VIDEO_SECONDS` are refused from their packet count, before decoding; in every case,
    decoding that would hold more than `MAX_VIDEO_BYTES` of frames is refused before it starts, and ffmpeg is
    stopped when it runs longer than `timeout`.

    Args:
        path (`str` or `os.PathLike`): the video file (see `video_info`).
        max_frames (`int`, *optional*): read at most this many frames from the start.
        max_seconds (`float`, *optional*): read at most this many seconds from the start.
        max_side (`int`, *optional*): downscale frames whose longest side exceeds this (aspect ratio kept).
        timeout (`float`, *optional*, defaults to `VIDEO_DECODE_TIMEOUT`): seconds allowed for decoding; None: no limit.

    Returns:
        `(frames, fps)`: a list of `[H, W, 3]` uint8 arrays and the nominal frame rate.

    Raises:
        FileNotFoundError: `path` does not exist.
        ValueError: the file is not a readable video, is too long, took too long, or an argument is out of range.
    """
    import imageio_ffmpeg

    if max_frames is not None and (not isinstance(max_frames, int) or isinstance(max_frames, bool) or max_frames < 1):
        raise ValueError(f"`max_frames` must be a positive int or None, got {max_frames!r}.")
    if max_seconds is not None and not (isinstance(max_seconds, (int, float)) and math.isfinite(max_seconds)
                                        and max_seconds > 0):
        raise ValueError(f"`max_seconds` must be a positive number or None, got {max_seconds!r}.")
    if max_side is not None and (not isinstance(max_side, int) or max_side < 16):
        raise ValueError(f"`max_side` must be an int >= 16 or None, got {max_side!r}.")
    _check_timeout(timeout)
    info = video_info(path, timeout=None if timeout is None else min(timeout, VIDEO_PROBE_TIMEOUT))
    path = Path(path)
    if max_frames is None and max_seconds is None and info.duration > MAX_VIDEO_SECONDS:
        raise ValueError(
            f"video {str(path)!r} lasts {info.duration:.0f} s; at most {MAX_VIDEO_SECONDS:.0f} s are read. "
            "Pass `max_seconds` or `max_frames` to read only its start."
        )
    count = info.num_frames
    if max_seconds is not None:
        count = min(count, max(1, math.floor(max_seconds * info.fps + 1e-6)))
    if max_frames is not None:
        count = min(count, max_frames)
    width, height = _target_size(info.width, info.height, max_side)
    needed = count * width * height * 3
    if needed > MAX_VIDEO_BYTES:
        raise ValueError(
            f"video {str(path)!r}: {count} frames of {width}x{height} need {needed / 2**30:.1f} GiB, more than the "
            f"{MAX_VIDEO_BYTES / 2**30:.0f} GiB allowed. Pass `max_frames`, `max_seconds` or `max_side`."
        )
    # The scale filter fixes the output size, so the frame size is known whatever the decoder and rotation do.
    cmd = [imageio_ffmpeg.get_ffmpeg_exe(), "-loglevel", "error", *_ffmpeg_input(path), "-map", "0:V:0",
           "-fps_mode", "passthrough", "-frames:v", str(count), "-vf", f"scale={width}:{height}:flags=lanczos",
           "-f", "rawvideo", "-pix_fmt", "rgb24", "-"]
    frames: list[np.ndarray] = []
    with tempfile.TemporaryFile() as log:  # a file, not a pipe: ffmpeg can never block on a full stderr pipe
        proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=log)
        expired = threading.Event()

        def stop() -> None:
            expired.set()
            proc.kill()

        timer = threading.Timer(timeout, stop) if timeout is not None else None
        if timer is not None:
            timer.daemon = True
            timer.start()
        try:
            while len(frames) < count:
                raw = _read_exact(proc.stdout, width * height * 3)
                if raw is None:
                    break
                frames.append(np.frombuffer(raw, np.uint8).reshape(height, width, 3))
        finally:
            if timer is not None:
                timer.cancel()
            proc.stdout.close()
            try:
                proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        log.seek(0)
        reason = _ffmpeg_reason(log.read(65536).decode("utf-8", "replace"))
    if expired.is_set():
        raise ValueError(f"video {str(path)!r}: decoding took more than {timeout:g} s and was stopped "
                         f"({len(frames)} of {count} frames read). Use a shorter or smaller clip.")
    if not frames:
        raise ValueError(f"video {str(path)!r}: no frame could be decoded ({reason}).")
    if len(frames) < count:
        logger.warning("video %s: only %d of %d frames could be decoded (%s)", path, len(frames), count, reason)
    logger.info("read %d frames (%dx%d, %.3g fps) from %s", len(frames), width, height, info.fps, path)
    return frames, info.fps


def read_safetensors(path: str | os.PathLike, what: str) -> tuple[dict[str, Tensor], dict[str, str]]:
    """All tensors and the metadata of a safetensors file; `what` names the file in errors.

    Raises `FileNotFoundError` when there is no file and `ValueError` when it is not readable safetensors.
    """
    from safetensors import SafetensorError, safe_open

    path = checked_file(Path(path), what)
    try:
        with safe_open(str(path), framework="pt") as f:
            metadata = f.metadata() or {}
            tensors = {key: f.get_tensor(key) for key in f.keys()}
    except (SafetensorError, OSError, ValueError) as err:
        raise ValueError(f"{str(path)!r} is not a readable {what} (it is not a readable safetensors file: {err}).") from err
    return tensors, metadata
