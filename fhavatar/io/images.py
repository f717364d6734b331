"""Images: loading photos with size limits and clear errors (`load_image`, `image_size`), the conversions of
frames at the package edges (`to_uint8_frames`, `save_image`), and two frames placed side by side (`side_by_side`)."""

from __future__ import annotations

import logging
import os
import re
import struct
import warnings
from collections.abc import Iterable
from pathlib import Path
from typing import Union

import numpy as np
import torch
from PIL import Image, ImageOps
from torch import Tensor

from .files import checked_file

__all__ = ["DEFAULT_MAX_SIDE", "IMAGE_FORMATS", "MAX_IMAGE_PIXELS", "image_size", "load_image", "save_image", "side_by_side",
           "to_uint8_frames"]

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


# ---------------------------------------------------------------------------------------------------- frames
def _frame_to_uint8(frame: FrameLike, index: int) -> np.ndarray:  # -> [H, W, 3] uint8
    if isinstance(frame, Image.Image):
        return np.asarray(frame.convert("RGB"))
    if isinstance(frame, Tensor):
        t = frame.detach().float().cpu()
        if t.dim() != 3 or t.shape[0] not in (1, 3):
            raise ValueError(f"frame {index}: a tensor frame must be [3, H, W] (or [1, H, W]) in [0, 1], got {list(t.shape)}.")
        if not torch.isfinite(t).all():
            raise ValueError(f"frame {index}: the tensor holds NaN/inf values.")
        t = t.expand(3, -1, -1).clamp(0, 1).mul_(255.0).add_(0.5)  # one float copy (a 4096² frame: 200 MB, not 600)
        return np.ascontiguousarray(t.to(torch.uint8).permute(1, 2, 0).numpy())
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


# ---------------------------------------------------------------------------------------------------- loading
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



def _open_image_header(path: Path) -> Image.Image:
    """Open `path` with PIL (header only, allowed formats only); nothing is decoded yet."""
    checked_file(path, "`image`")
    try:
        with warnings.catch_warnings(record=True) as caught:  # PIL warns about damaged metadata: logged below
            warnings.simplefilter("always")
            im = Image.open(path, formats=IMAGE_FORMATS)
    except Image.DecompressionBombError as err:  # PIL's own, higher limit: quote the project's
        claimed = re.search(r"\((\d+) pixels\)", str(err))
        size = f" ({int(claimed.group(1)) / 1e6:.0f} Mpx)" if claimed else ""
        raise ValueError(f"`image` {str(path)!r} is too large{size}; at most {MAX_IMAGE_PIXELS / 1e6:.0f} Mpx is "
                         "accepted. Downscale it first.") from err
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


def side_by_side(left: np.ndarray, right: np.ndarray) -> np.ndarray:  # [H, W, 3] x [h, w, 3] -> [H, W + w', 3]
    """`right` resized to the height of `left` (aspect kept), placed to its right (uint8 or float in [0, 1])."""
    left = (np.clip(left, 0, 1) * 255 + 0.5).astype(np.uint8) if left.dtype != np.uint8 else left
    height = left.shape[0]
    width = max(2, round(right.shape[1] * height / right.shape[0]))
    right = np.asarray(Image.fromarray(right).resize((width, height), Image.Resampling.LANCZOS))
    return np.concatenate([left, right], axis=1)
