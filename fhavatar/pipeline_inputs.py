"""Limits and checks of `FHAvatarPipeline`'s call arguments, and the conversion of rendered frames to `output_type`.

The CLI and the app read the same limits from here, so one number holds everywhere; their messages name their own
flags and controls.
"""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image
from torch import Tensor

from .io import checked_file, video_info
from .rendering import Camera
from .tracking import FaceTrack

__all__ = ["MAX_DRIVING_FRAMES", "MAX_ORBIT_FRAMES", "MAX_RENDER_SIDE", "MIN_RENDER_SIDE", "OUTPUT_TYPES",
           "check_background", "check_driving", "check_image", "check_int", "check_render_args", "postprocess",
           "square_pixels"]

#: Largest rendered frame side, in pixels.
MAX_RENDER_SIDE = 4096
#: Smallest rendered frame side, in pixels.
MIN_RENDER_SIDE = 16
#: Most orbit frames one call renders (a 360° loop at 1 frame per 0.1°).
MAX_ORBIT_FRAMES = 3600
#: Most driving frames one call re-enacts (2 minutes at 25 fps).
MAX_DRIVING_FRAMES = 3000
#: The frame formats of `output_type`.
OUTPUT_TYPES = ("pil", "np", "pt")



def is_int(value: Any) -> bool:
    return isinstance(value, (int, np.integer)) and not isinstance(value, bool)


def check_int(name: str, value: Any, lo: int, hi: int) -> None:
    if not is_int(value) or not lo <= value <= hi:
        raise ValueError(f"`{name}` must be an int in [{lo}, {hi}], got {value!r}.")


def check_background(background: Any, name: str = "background") -> list[float]:
    """`background` as 3 floats in [0, 1] (RGB), or a ValueError naming `name`."""
    try:
        rgb = [float(c) for c in background]
    except (TypeError, ValueError):
        rgb = []
    if len(rgb) != 3 or not all(math.isfinite(c) and 0.0 <= c <= 1.0 for c in rgb):
        raise ValueError(f"`{name}` must be 3 numbers in [0, 1] (RGB), got {background!r}.")
    return rgb


def square_pixels(camera: Camera, width: int, height: int) -> Camera:
    """`camera` with its normalised fx scaled so pixels stay square at `width` x `height` (vertical FOV kept)."""
    if width == height:
        return camera
    intrinsics = camera.intrinsics.clone()
    intrinsics[:, 0, 0] = intrinsics[:, 1, 1] * height / width
    return Camera(cam2world=camera.cam2world, intrinsics=intrinsics)


def postprocess(frames: Tensor, output_type: str):  # [T, 3, H, W] in [0, 1]
    """Frames as `output_type`: "pt" `[T, 3, H, W]`, "np" float32 `[T, H, W, 3]`, "pil" list of images."""
    frames = frames.detach().float().clamp(0, 1).cpu()
    if output_type == "pt":
        return frames
    array = frames.permute(0, 2, 3, 1).numpy()
    if output_type == "np":
        return array
    return [Image.fromarray((a * 255.0 + 0.5).astype(np.uint8)) for a in array]


def check_image(image) -> None:
    """`image` must be a readable file path, a PIL image, an array or a tensor (decoded and checked later)."""
    if isinstance(image, (str, os.PathLike)):
        checked_file(Path(image), "`image`")
    elif not isinstance(image, (Image.Image, np.ndarray, Tensor)):
        raise ValueError("`image` must be a path, a PIL image, an HWC uint8 array or a [3, H, W] tensor in [0, 1]; "
                         f"got {type(image).__name__}.")


def check_render_args(num_frames, height, width, output_type, elevation=0.0, name="num_frames") -> None:
    """Frame count (`name`), frame size, `output_type` and camera elevation within the pipeline's limits."""
    check_int(name, num_frames, 1, MAX_ORBIT_FRAMES)
    check_int("height", height, MIN_RENDER_SIDE, MAX_RENDER_SIDE)
    check_int("width", width, MIN_RENDER_SIDE, MAX_RENDER_SIDE)
    if output_type not in OUTPUT_TYPES:
        raise ValueError(f"`output_type` must be one of {OUTPUT_TYPES}, got {output_type!r}.")
    if not (isinstance(elevation, (int, float)) and math.isfinite(elevation) and -89 <= elevation <= 89):
        raise ValueError(f"`elevation` must be a number of degrees in [-89, 89], got {elevation!r}.")


def check_driving(driving_video, num_driving_frames=None) -> None:
    """A driving video path (probed, not decoded), frame list, `[T, ...]` array/tensor or FaceTrack list."""
    if num_driving_frames is not None:
        check_int("num_driving_frames", num_driving_frames, 1, MAX_DRIVING_FRAMES)
    if isinstance(driving_video, (str, os.PathLike)):
        count = video_info(checked_file(Path(driving_video), "`driving_video`")).num_frames
    elif isinstance(driving_video, (Tensor, np.ndarray)):
        if driving_video.ndim != 4:
            raise ValueError("`driving_video` arrays must be [T, H, W, 3] (numpy) or [T, 3, H, W] (tensor), got "
                             f"shape {list(driving_video.shape)}.")
        count = driving_video.shape[0]
    elif isinstance(driving_video, (list, tuple)):
        kinds = {type(f).__name__ for f in driving_video}
        ok = all(isinstance(f, (FaceTrack, Tensor, np.ndarray, Image.Image)) for f in driving_video)
        if not ok or (any(isinstance(f, FaceTrack) for f in driving_video) and kinds != {"FaceTrack"}):
            raise ValueError("`driving_video` lists must hold frames (PIL images, HWC arrays, [3, H, W] tensors) "
                             f"or FaceTracks from `track_video`, not a mix; got {sorted(kinds)}.")
        count = len(driving_video)
    else:
        raise ValueError("`driving_video` must be a video path, a list of frames, a [T, ...] array or tensor, or a "
                         f"list of FaceTracks; got {type(driving_video).__name__}.")
    if count < 1:
        raise ValueError("`driving_video` holds no frame.")
    if num_driving_frames is None and count > MAX_DRIVING_FRAMES:
        raise ValueError(f"`driving_video` has {count} frames; at most {MAX_DRIVING_FRAMES} are re-enacted in one "
                         "call. Trim it or pass `num_driving_frames`.")
