"""Limits and checks of `FHAvatarPipeline`'s call arguments and modules, memory estimates, and the conversion of
rendered frames to `output_type`.

The CLI and the app read the same limits from here, so one number holds everywhere; their messages name their own
flags and controls (`reworded` turns the Python argument names of an error into the interface's words).
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import psutil
from PIL import Image
from torch import Tensor, nn

from .avatar import Avatar
from .head import HeadModel
from .io import DEFAULT_MAX_SIDE, MAX_VIDEO_BYTES, checked_file, encoder_memory, image_size, video_info
from .io.images import _target_size
from .rendering import Camera
from .tracking import FaceTrack, NoFaceError

__all__ = ["MAX_DRIVING_FRAMES", "MAX_DRIVING_SIDE", "MAX_ORBIT_FRAMES", "MAX_RENDER_SIDE", "MIN_RENDER_SIDE",
           "OUTPUT_TYPES", "call_memory", "check_avatar", "check_background", "check_call", "check_decoded", "check_driving",
           "check_image", "check_int", "check_memory", "check_modules", "check_render_args", "check_views",
           "driving_memory", "driving_size", "photo_size_in_errors", "postprocess", "render_memory", "reword",
           "reworded", "square_pixels", "stream_memory"]

#: Largest rendered frame side, in pixels.
MAX_RENDER_SIDE = 4096
#: Smallest rendered frame side, in pixels.
MIN_RENDER_SIDE = 16
#: Most orbit frames one call renders (a 360° loop at 1 frame per 0.1°).
MAX_ORBIT_FRAMES = 3600
#: Most driving frames one call re-enacts (2 minutes at 25 fps).
MAX_DRIVING_FRAMES = 3000
#: Driving frames read from a file are decoded straight to at most this side (a 4K clip is never held at 4K; the
#: tracker works on a 512² crop of the face).
MAX_DRIVING_SIDE = 720
#: The frame formats of `output_type`.
OUTPUT_TYPES = ("pil", "np", "pt")

# Memory model (bytes), measured on the CPU renderer (benchmarks/memory_bench.py): rendering one frame peaks at ~57
# bytes per pixel (4096²: +0.93 GB); a frame returned by a call is held as float32 RGB, and converting it to
# `output_type` holds a second copy; a tracked driving frame keeps its 512² crop (`FaceTrack.image`) and its fit.
# The estimates are what a run adds to the process that checks them (its imports are loaded by then): the CLI's
# streamed 3600-frame orbit at 4096² is estimated at 3.1 GiB and peaked at 3.1 GB with its encoder (`--cli`).
RENDER_BYTES_PER_PIXEL = 64
HELD_BYTES_PER_PIXEL = 24
STREAM_BYTES_PER_PIXEL = 40  # a streamed frame: the render's float copy, its conversion to uint8, a side-by-side
TRACK_BYTES = 512 * 512 * 3 + 64 * 1024
#: What building the pipeline and tracking the photo add to a fresh process (the models, MediaPipe, the avatar).
PIPELINE_BYTES = 600 * 2**20


def is_int(value: Any) -> bool:
    return isinstance(value, (int, np.integer)) and not isinstance(value, bool)


def check_int(name: str, value: Any, lo: int, hi: int) -> None:
    if not is_int(value) or not lo <= value <= hi:
        raise ValueError(f"`{name}` must be an int in [{lo}, {hi}], got {value!r}.")


def check_background(background: Any, name: str = "background") -> list[float]:
    """`background` as 3 floats in [0, 1] (RGB), or a ValueError naming `name` (a string is refused, not split)."""
    try:
        rgb = [] if isinstance(background, (str, bytes)) else [float(c) for c in background]
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


def check_driving(driving_video, num_driving_frames=None) -> tuple[int, tuple[int, int] | None]:
    """A driving video path (probed, not decoded), frame list, `[T, ...]` array/tensor or FaceTrack list.

    Returns `(frames, (width, height))`: how many frames will be re-enacted and, for a file, the size they are decoded
    at (at most `MAX_DRIVING_SIDE`; None for frames given in memory).
    """
    if num_driving_frames is not None:
        check_int("num_driving_frames", num_driving_frames, 1, MAX_DRIVING_FRAMES)
    size = None
    if isinstance(driving_video, (str, os.PathLike)):
        info = video_info(checked_file(Path(driving_video), "`driving_video`"))
        count, size = info.num_frames, driving_size(info.width, info.height)
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
    count = min(count, num_driving_frames or count)
    if size is not None:
        check_decoded(count, size)
    return count, size


def check_decoded(num_frames: int, size: tuple[int, int]) -> None:
    """`num_frames` driving frames decoded at `size` must fit `MAX_VIDEO_BYTES` (`read_video`'s limit), checked
    before decoding with the pipeline's argument names."""
    most = MAX_VIDEO_BYTES // (3 * size[0] * size[1])
    if num_frames > most:
        raise ValueError(f"`driving_video`: {num_frames} frames of {size[0]}x{size[1]} need "
                         f"{3 * num_frames * size[0] * size[1] / 2**30:.1f} GiB decoded, more than the "
                         f"{MAX_VIDEO_BYTES / 2**30:.0f} GiB allowed. Pass `num_driving_frames` (at most {most}).")


def check_call(image, driving_video, num_orbit_frames, height, width, mode, output_type, num_driving_frames=None,
               returned: bool = True) -> None:
    """The checks of `FHAvatarPipeline.check_inputs`; with `returned`, also that the frames the call returns fit in the
    memory available now (`check_memory`). `image=None` with a `driving_video` checks a re-enactment alone."""
    if image is not None or driving_video is None:
        check_image(image)
    check_render_args(num_orbit_frames, height, width, output_type, name="num_orbit_frames")
    if mode not in ("relative", "absolute"):
        raise ValueError(f"`mode` must be 'relative' or 'absolute', got {mode!r}.")
    count, size = 0, None
    if driving_video is not None:
        count, size = check_driving(driving_video, num_driving_frames)
    elif num_driving_frames is not None:
        check_int("num_driving_frames", num_driving_frames, 1, MAX_DRIVING_FRAMES)
    if returned:
        frames = num_orbit_frames + count
        check_memory(call_memory(frames, height, width, driving_memory(count, size)),
                     f"This call (its {frames} returned frames of {width}x{height})",
                     "Pass fewer `num_orbit_frames` / `num_driving_frames` or a smaller `height` x `width`, or write "
                     "the frames out as they come from `render_views` / `iter_animate`.")


def _check_is_avatar(avatar) -> None:
    if not isinstance(avatar, Avatar):
        raise ValueError(f"`avatar` must be an fhavatar Avatar (from `reconstruct`), got {type(avatar).__name__}.")


def check_avatar(avatar, source_track=None):
    """`avatar` must be an `Avatar` with a photo's track: returns `source_track`, else the avatar's own."""
    _check_is_avatar(avatar)
    source_track = source_track if source_track is not None else getattr(avatar, "source_track", None)
    if source_track is None:
        raise ValueError("`source_track` is needed: `avatar` carries no `source_track` (pass the photo's FaceTrack).")
    return source_track


def check_views(avatar, cameras, height, width) -> None:
    """`avatar` must be an `Avatar`, `cameras` a `Camera` of at most `MAX_ORBIT_FRAMES` views, the size in range."""
    _check_is_avatar(avatar)
    if not isinstance(cameras, Camera):
        raise ValueError(f"`cameras` must be a Camera (e.g. `Camera.orbit`), got {type(cameras).__name__}.")
    if not 1 <= len(cameras) <= MAX_ORBIT_FRAMES:
        raise ValueError(f"`cameras` must hold 1 to {MAX_ORBIT_FRAMES} views, got {len(cameras)}.")
    check_render_args(1, height, width, "pt")


# ---------------------------------------------------------------------------------------------- memory
def driving_size(width: int, height: int) -> tuple[int, int]:
    """The size a `width` x `height` driving clip is decoded at (longest side at most `MAX_DRIVING_SIDE`)."""
    return _target_size(width, height, MAX_DRIVING_SIDE)


def render_memory(height: int, width: int) -> int:
    """Bytes that rendering one `height` x `width` frame holds at its peak."""
    return RENDER_BYTES_PER_PIXEL * height * width


def driving_memory(num_frames: int, size: tuple[int, int] | None) -> int:
    """Bytes held by `num_frames` driving frames decoded at `size` (None: already in memory) and their tracks."""
    decoded = 0 if size is None else 3 * size[0] * size[1]
    return num_frames * (decoded + TRACK_BYTES)


def check_memory(needed: int, what: str, advice: str) -> None:
    """Raise `ValueError` when `needed` bytes exceed the memory available now, before the work starts.

    Args:
        needed (`int`): the estimate (bytes).
        what (`str`): what needs it, in the interface's words (e.g. "This run (--size 4096, 3000 frames of --driving)").
        advice (`str`): how to need less, in the interface's words.
    """
    available = psutil.virtual_memory().available
    if needed > available:
        raise ValueError(f"{what} needs about {needed / 2**30:.1f} GiB of memory, and {available / 2**30:.1f} GiB are "
                         f"available. {advice}")


def call_memory(num_frames: int, height: int, width: int, driving: int = 0) -> int:
    """Bytes a pipeline call that returns `num_frames` frames of `height` x `width` holds at its peak (plus `driving`,
    from `driving_memory`)."""
    return PIPELINE_BYTES + render_memory(height, width) + num_frames * height * width * HELD_BYTES_PER_PIXEL + driving


def stream_memory(height: int, width: int, encoded_width: int | None = None, driving: int = 0) -> int:
    """Bytes a run that writes each `height` x `width` frame to an H.264 file as it is rendered holds at its peak:
    one render, one frame in conversion and the encoder (`encoded_width`: the written frames' width, e.g. a
    re-enactment beside its clip), plus `driving` (from `driving_memory`). The frame count does not matter."""
    encoded_width = encoded_width or width
    return (PIPELINE_BYTES + render_memory(height, width) + encoder_memory(encoded_width, height)
            + STREAM_BYTES_PER_PIXEL * height * encoded_width + driving)


# ---------------------------------------------------------------------------------------------- wording
def reword(message: str, names: Mapping[str, str]) -> str:
    """`message` with each key of `names` (a Python argument name in backquotes) replaced by its value."""
    for name, word in names.items():
        message = message.replace(name, word)
    return message


@contextmanager
def reworded(names: Mapping[str, str]) -> Iterator[None]:
    """Re-raise a `ValueError` / `TypeError` / `FileNotFoundError` raised inside the block with the names of
    `names` replaced (`reword`): a layer that calls another under other argument names says its own."""
    try:
        yield
    except (ValueError, TypeError, FileNotFoundError) as err:
        message = reword(str(err), names)
        if message == str(err):
            raise
        try:
            new = type(err)(message)
        except TypeError:  # an error class with other constructor arguments (UnicodeDecodeError)
            new = ValueError(message)
        raise new from err


def _photo_size(image, loaded: tuple[int, int]) -> tuple[int, int]:
    """`(width, height)` of a photo as given, upright (a file's header size turned like the loaded pixels)."""
    if isinstance(image, (str, os.PathLike)):
        width, height = image_size(image)
    elif isinstance(image, Image.Image):
        width, height = image.size
    elif isinstance(image, np.ndarray) and image.ndim >= 2:
        height, width = image.shape[:2]
    elif isinstance(image, Tensor) and image.dim() >= 2:
        height, width = image.shape[-2:]
    else:
        return loaded
    return (width, height) if (width >= height) == (loaded[0] >= loaded[1]) else (height, width)


@contextmanager
def photo_size_in_errors(image, loaded: np.ndarray) -> Iterator[None]:
    """Inside the block, a no-face error about the downscaled `loaded` pixels names the photo's own size.

    `load_image` hands the tracker at most `DEFAULT_MAX_SIDE` pixels a side, so its messages count those; the user
    knows the photo by its own size.
    """
    try:
        yield
    except NoFaceError as err:
        height, width = loaded.shape[:2]
        own = _photo_size(image, (width, height))
        if own == (width, height) or max(own) <= DEFAULT_MAX_SIDE:
            raise
        message = str(err).replace(f"{width}x{height} image", f"{own[0]}x{own[1]} photo (searched at {width}x{height})")
        raise type(err)(message) from err


# ---------------------------------------------------------------------------------------------- modules
def _prior_like(module) -> bool:
    return callable(getattr(module, "encode", None)) and callable(getattr(module, "sample", None))


def check_modules(avatar_model, head_model, prior) -> None:
    """Each module in its role, or a `ValueError` naming the role and the class found there.

    `head_model` is a `HeadModel` (OpenHead, FLAME); `prior` is None or has `encode(image, camera)` and
    `sample(triplane, points)` (PanoHeadPrior); `avatar_model` is a torch module that is neither (FHAvatarModel,
    ProjectionAvatarModel, or a drop-in with `forward(view) -> UVAttributes`).
    """
    def name(module) -> str:
        return type(module).__name__

    if not isinstance(head_model, HeadModel):
        raise ValueError(f"`head_model` must be a head model (fhavatar.head.HeadModel: OpenHead, FLAME), got "
                         f"{name(head_model)}.")
    if prior is not None and (isinstance(prior, HeadModel) or not _prior_like(prior)):
        raise ValueError("`prior` must be None or a 3D prior with `encode(image, camera)` and `sample(triplane, "
                         f"points)` (PanoHeadPrior), got {name(prior)}.")
    if not isinstance(avatar_model, nn.Module) or isinstance(avatar_model, HeadModel) or _prior_like(avatar_model):
        raise ValueError("`avatar_model` must be an avatar model (FHAvatarModel, ProjectionAvatarModel: "
                         f"`forward(view) -> UVAttributes`), got {name(avatar_model)}.")
