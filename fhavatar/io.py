"""Image and video files: conversions at the package edges and H.264 mp4 writing without a system ffmpeg."""

from __future__ import annotations

import logging
import os
from collections.abc import Iterable
from pathlib import Path
from typing import Union

import numpy as np
import torch
from PIL import Image
from torch import Tensor

__all__ = ["to_uint8_frames", "save_image", "write_video"]

logger = logging.getLogger(__name__)

FrameLike = Union[Tensor, np.ndarray, Image.Image]


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
