"""Image and video files: loading with limits and clear errors, conversions at the package edges and H.264 mp4
writing, all without a system ffmpeg (the ffmpeg binary shipped by `imageio-ffmpeg` is used)."""

from __future__ import annotations

import logging
import math
import os
import re
import subprocess
import warnings
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Union

import numpy as np
import torch
from PIL import Image, ImageOps
from torch import Tensor

__all__ = [
    "DEFAULT_MAX_SIDE",
    "MAX_IMAGE_PIXELS",
    "MAX_VIDEO_BYTES",
    "MAX_VIDEO_SECONDS",
    "VideoInfo",
    "load_image",
    "read_safetensors",
    "read_video",
    "save_image",
    "to_uint8_frames",
    "video_info",
    "write_video",
]

logger = logging.getLogger(__name__)

FrameLike = Union[Tensor, np.ndarray, Image.Image]
ImageLike = Union[str, os.PathLike, Image.Image, np.ndarray, Tensor]

#: Longest side (pixels) of the images `load_image` returns by default; larger ones are downscaled.
DEFAULT_MAX_SIDE = 2048
#: Largest image (width x height) `load_image` accepts; bigger files are refused from their header, before decoding.
MAX_IMAGE_PIXELS = 100_000_000
#: Longest video (seconds) `read_video` decodes when neither `max_frames` nor `max_seconds` limits it.
MAX_VIDEO_SECONDS = 600.0
#: Most bytes of decoded frames (`frames x height x width x 3`) `read_video` holds in memory.
MAX_VIDEO_BYTES = 4 * 1024**3


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


def _check_pixels(width: int, height: int, what: str) -> None:
    if width * height > MAX_IMAGE_PIXELS:
        raise ValueError(
            f"{what} is {width}x{height} ({width * height / 1e6:.0f} Mpx); at most {MAX_IMAGE_PIXELS / 1e6:.0f} Mpx "
            "is accepted. Downscale it first."
        )


def _open_image_file(path: Path, max_side: int | None) -> Image.Image:
    """Open, check the size from the header, decode (JPEGs at a reduced scale when possible) and apply EXIF."""
    if not path.exists():
        raise FileNotFoundError(f"`image` {str(path)!r} does not exist.")
    if path.is_dir():
        raise ValueError(f"`image` {str(path)!r} is a directory, expected an image file.")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)  # our own limit applies below
            im = Image.open(path)
    except Image.DecompressionBombError as err:
        raise ValueError(f"`image` {str(path)!r} is too large to decode safely ({err}).") from err
    except (OSError, SyntaxError, ValueError) as err:
        raise ValueError(f"`image` {str(path)!r} is not a readable image file ({type(err).__name__}: {err}).") from err
    _check_pixels(im.width, im.height, f"`image` {str(path)!r}")
    if im.format == "JPEG" and max_side is not None and max(im.size) > max_side:
        im.draft(None, _target_size(im.width, im.height, max_side))  # DCT-domain 1/2, 1/4, 1/8 decoding
    try:
        im.load()
        ImageOps.exif_transpose(im, in_place=True)  # in place: no second full-size copy
    except (OSError, SyntaxError, ValueError) as err:
        raise ValueError(f"`image` {str(path)!r} is corrupt or truncated ({type(err).__name__}: {err}).") from err
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
        except (OSError, SyntaxError, ValueError) as err:
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


def _check_video_path(path: str | os.PathLike) -> Path:
    if not isinstance(path, (str, os.PathLike)):
        raise TypeError(f"`path` must be a str or os.PathLike to a video file, got {type(path).__name__}.")
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"video {str(path)!r} does not exist.")
    if not path.is_file():
        raise ValueError(f"video {str(path)!r} is not a file.")
    return path


def video_info(path: str | os.PathLike) -> VideoInfo:
    """Frame rate, frame count, duration and size of a video, without decoding its frames.

    Args:
        path (`str` or `os.PathLike`): a video file ffmpeg can read (mp4, mov, webm, avi, ...).

    Raises:
        FileNotFoundError: `path` does not exist.
        ValueError: the file is not a readable video (the message names the path and quotes ffmpeg).
    """
    import imageio_ffmpeg

    path = _check_video_path(path)
    reader = imageio_ffmpeg.read_frames(str(path))
    try:
        meta = next(reader)
    except (OSError, RuntimeError, IndexError, AttributeError, StopIteration) as err:
        raise ValueError(f"video {str(path)!r} is not a readable video ({str(err).strip()[-300:]}).") from err
    finally:
        reader.close()
    # Count the packets of the first video stream by stream copy (no decoding).
    cmd = [imageio_ffmpeg.get_ffmpeg_exe(), "-hide_banner", "-nostdin", "-i", str(path)]
    cmd += ["-map", "0:v:0", "-c", "copy", "-f", "null", "-"]
    proc = subprocess.run(cmd, capture_output=True, text=True, errors="replace", timeout=120)
    counts = re.findall(r"frame=\s*(\d+)", proc.stderr)
    if proc.returncode != 0 or not counts:
        raise ValueError(f"video {str(path)!r}: ffmpeg cannot count its frames ({proc.stderr.strip()[-300:]}).")
    num_frames = int(counts[-1])
    fps = float(meta.get("fps") or 0.0)
    if num_frames == 0:
        raise ValueError(f"video {str(path)!r} has no video frames.")
    if fps <= 0:
        duration = float(meta.get("duration") or 0.0)
        if duration <= 0:
            raise ValueError(f"video {str(path)!r}: neither its frame rate nor its duration can be read.")
        fps = num_frames / duration
    width, height = meta["size"]
    return VideoInfo(fps, num_frames, num_frames / fps, int(width), int(height), str(meta.get("codec", "")))


def read_video(
    path: str | os.PathLike,
    max_frames: int | None = None,
    max_seconds: float | None = None,
    max_side: int | None = None,
) -> tuple[list[np.ndarray], float]:
    """Decode a video into RGB uint8 frames with the ffmpeg binary shipped by `imageio-ffmpeg`.

    Every decoded frame is returned once (`-fps_mode passthrough`: nothing is duplicated or dropped to force a
    constant rate). Without `max_frames` / `max_seconds`, videos longer than `MAX_VIDEO_SECONDS` are refused;
    in every case, decoding that would hold more than `MAX_VIDEO_BYTES` of frames is refused before it starts.

    Args:
        path (`str` or `os.PathLike`): the video file.
        max_frames (`int`, *optional*): read at most this many frames from the start.
        max_seconds (`float`, *optional*): read at most this many seconds from the start.
        max_side (`int`, *optional*): downscale frames whose longest side exceeds this (aspect ratio kept).

    Returns:
        `(frames, fps)`: a list of `[H, W, 3]` uint8 arrays and the nominal frame rate.

    Raises:
        FileNotFoundError: `path` does not exist.
        ValueError: the file is not a readable video, is too long, or an argument is out of range.
    """
    import imageio_ffmpeg

    if max_frames is not None and (not isinstance(max_frames, int) or max_frames < 1):
        raise ValueError(f"`max_frames` must be a positive int or None, got {max_frames!r}.")
    if max_seconds is not None and not (isinstance(max_seconds, (int, float)) and max_seconds > 0):
        raise ValueError(f"`max_seconds` must be a positive number or None, got {max_seconds!r}.")
    if max_side is not None and (not isinstance(max_side, int) or max_side < 16):
        raise ValueError(f"`max_side` must be an int >= 16 or None, got {max_side!r}.")
    info = video_info(path)
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
    reader = imageio_ffmpeg.read_frames(str(path), output_params=["-fps_mode", "passthrough", "-frames:v", str(count)])
    frames: list[np.ndarray] = []
    try:
        meta = next(reader)
        w, h = meta["size"]
        for raw in reader:
            frame = np.frombuffer(raw, np.uint8).reshape(h, w, 3)
            if (w, h) != (width, height):
                frame = np.asarray(Image.fromarray(frame).resize((width, height), Image.Resampling.LANCZOS, reducing_gap=3.0))
            frames.append(frame.copy() if not frame.flags.writeable else frame)
    except (OSError, RuntimeError, IndexError, AttributeError, StopIteration) as err:
        raise ValueError(f"video {str(path)!r} cannot be decoded ({str(err).strip()[-300:]}).") from err
    finally:
        reader.close()
    if not frames:
        raise ValueError(f"video {str(path)!r}: no frame could be decoded.")
    logger.info("read %d frames (%dx%d, %.3g fps) from %s", len(frames), width, height, info.fps, path)
    return frames, info.fps


def read_safetensors(path: str | os.PathLike, what: str) -> tuple[dict[str, Tensor], dict[str, str]]:
    """All tensors and the metadata of a safetensors file; `what` names the file in errors.

    Raises `FileNotFoundError` when there is no file and `ValueError` when it is not readable safetensors.
    """
    from safetensors import SafetensorError, safe_open

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"No {what} at {str(path)!r}.")
    try:
        with safe_open(str(path), framework="pt") as f:
            metadata = f.metadata() or {}
            tensors = {key: f.get_tensor(key) for key in f.keys()}
    except (SafetensorError, OSError, ValueError) as err:
        raise ValueError(f"{str(path)!r} is not a readable {what} (it is not a readable safetensors file: {err}).") from err
    return tensors, metadata
