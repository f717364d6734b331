"""The service behind the Gradio app (`app.py`): the pipeline, loaded once, and the glue that turns a request's
inputs into checked calls and files. `app.py` holds only the layout and the wiring of these methods to events.

Requests never change shared state: the background colour, frame count and size are call arguments of the
pipeline, and cached avatars are keyed by the photo's content. Every failure reaches the visitor as one readable
`gr.Error` line, never a traceback.
"""

from __future__ import annotations

import collections
import ctypes
import hashlib
import logging
import os
import re
import shutil
import tempfile
import threading
from pathlib import Path

import gradio as gr

from .io import image_size, read_video, save_image, side_by_side, video_info, write_video
from .pipeline_fhavatar import FHAvatarPipeline

__all__ = ["AvatarService", "LAUNCH_OPTIONS", "limit_malloc_arenas", "on_gpu", "parse_color", "photo_input"]

logger = logging.getLogger(__name__)

MAX_ORBIT_FRAMES = 120
MAX_SIZE = 512
ORBIT_FPS = 24.0
# Limits on what one request may ask for (SECURITY.md lists them). Uploads over MAX_UPLOAD_MB are refused by the
# server before they are stored; the rest is checked from file headers before anything is decoded.
MAX_UPLOAD_MB = 50
MAX_PHOTO_MEGAPIXELS = 40
MAX_VIDEO_SECONDS = 20.0
MAX_VIDEO_FRAMES = 1200  # 20 s at 60 fps: a header claiming a huge frame rate cannot make a 20 s clip long
MAX_DRIVING_SIDE = 720  # driving frames are tracked at most this large (a 4K clip is decoded straight to it)
VIDEO_TIMEOUT_S = 60.0  # ffmpeg is stopped when probing or decoding one clip takes longer
# Serving: one pipeline, so one request runs at a time across both endpoints (they share the concurrency id);
# QUEUE_SIZE more wait, later ones are told the queue is full. Session state (the avatar) is kept for at most
# SESSION_CAPACITY sessions and STATE_TTL_S seconds; the newest OUTPUT_DIRS_KEPT request folders are kept on disk.
CONCURRENCY_LIMIT = 1
CONCURRENCY_ID = "pipeline"
QUEUE_SIZE = 16
SESSION_CAPACITY = 64
STATE_TTL_S = 3600
OUTPUT_DIRS_KEPT = 32
MALLOC_ARENAS = 2  # glibc malloc arenas of the server process (see `limit_malloc_arenas`)
LAUNCH_OPTIONS = {"max_file_size": f"{MAX_UPLOAD_MB}mb", "state_session_capacity": SESSION_CAPACITY, "show_error": True}


def on_gpu(fn):
    """On a ZeroGPU Space (the `spaces` package importable) run `fn` in a GPU slot; plain otherwise."""
    try:
        import spaces
    except ImportError:
        return fn
    return spaces.GPU(fn)


def photo_input(**kwargs) -> gr.Image:
    """A filepath `gr.Image` whose uploads reach the app as the stored file's path, untouched.

    Gradio's own preprocessing opens every upload with PIL (any format PIL knows), decodes and converts images whose
    mode is not RGB before the app can check anything, and answers an unreadable file with a generic error. Here
    FHAvatar's loader is the only one to open the file: format allow-list, pixel limit from the header, and a message
    naming the problem. Data URLs (webcam captures) still go through Gradio's decoding. (The override is set on the
    instance: a `gr.Image` subclass would make Gradio write a `.pyi` stub next to this file at import time.)
    """
    component = gr.Image(type="filepath", **kwargs)
    decode = component.preprocess

    def preprocess(payload):
        if payload is None or (payload.url or "").startswith("data:"):
            return decode(payload)
        if not payload.path:
            raise gr.Error("The photo upload is incomplete; please upload it again.")
        return str(payload.path)

    component.preprocess = preprocess
    return component


_HEX_COLOUR = re.compile(r"#?([0-9a-fA-F]{2})([0-9a-fA-F]{2})([0-9a-fA-F]{2})")


def parse_color(color: str | None) -> list[float] | None:
    """`"#rrggbb"` (the colour picker's value) as RGB in [0, 1]; None or "" keeps the pipeline's own background.

    Strict: exactly six hex digits, so no value outside [0, 1] can reach a render.
    """
    if not color:
        return None
    match = _HEX_COLOUR.fullmatch(color.strip()) if isinstance(color, str) else None
    if match is None:
        raise gr.Error(f"Background colour must look like #ffffff, got {color!r}.")
    return [int(channel, 16) / 255 for channel in match.groups()]


class AvatarService:
    """The pipeline, loaded once, and the glue that turns UI inputs into files (errors become `gr.Error`)."""

    def __init__(self, model: str | None = None, resolution: int = 256):
        if model:
            self.pipe = FHAvatarPipeline.from_pretrained(model)
            self.name = f"{model}"
        else:
            self.pipe = FHAvatarPipeline.default(resolution=resolution)
            self.name = "built-in default (OpenHead + training-free projection avatar, no download)"
        self.pipe.set_progress_bar_config(disable=True)
        self._avatars: dict[str, object] = {}  # API calls: photo content hash -> avatar (a few, newest last)
        self._lock = threading.Lock()  # guards the two caches below if the concurrency limit is ever raised
        self._output_root = Path(tempfile.mkdtemp(prefix="fhavatar-app-"))
        self._outputs: collections.deque[Path] = collections.deque()

    def avatar_for(self, photo):
        """The avatar of `photo` (a path), built once per distinct photo content and re-used by the API."""
        key = hashlib.sha1(Path(photo).read_bytes()).hexdigest()
        with self._lock:
            if key in self._avatars:
                return self._avatars[key]
        avatar = self.pipe.reconstruct(str(photo))
        with self._lock:
            self._avatars[key] = avatar
            while len(self._avatars) > 4:
                self._avatars.pop(next(iter(self._avatars)))
        return avatar

    def _output_dir(self) -> Path:
        """A fresh folder for one request's files; the oldest beyond OUTPUT_DIRS_KEPT are deleted (Gradio has copied
        returned files into its own cache by then), so a long-running Space does not fill its disk."""
        out = Path(tempfile.mkdtemp(dir=self._output_root))
        with self._lock:
            self._outputs.append(out)
            old = [self._outputs.popleft() for _ in range(max(0, len(self._outputs) - OUTPUT_DIRS_KEPT))]
        for folder in old:
            shutil.rmtree(folder, ignore_errors=True)
        return out

    @staticmethod
    def _check_file(path, what: str) -> Path:
        if not path:
            raise gr.Error(f"Please upload a {what}.")
        path = Path(path)
        if not path.is_file():
            raise gr.Error(f"The {what} could not be read (no file at {path.name}).")
        if path.stat().st_size > MAX_UPLOAD_MB * 2**20:
            raise gr.Error(f"The {what} is larger than {MAX_UPLOAD_MB} MB; please upload a smaller file.")
        return path

    def _check_photo(self, path) -> Path:
        """An uploaded photo, its pixel count checked from the header (no decoding)."""
        path = self._check_file(path, "photo")
        width, height = image_size(path)
        if width * height > MAX_PHOTO_MEGAPIXELS * 1e6:
            raise gr.Error(f"The photo is {width}x{height} ({width * height / 1e6:.0f} Mpx); at most "
                           f"{MAX_PHOTO_MEGAPIXELS} Mpx are accepted. Please upload a smaller photo.")
        return path

    @staticmethod
    def _user_error(err: BaseException, *paths) -> gr.Error:
        """`err` as a message for the user: known input errors verbatim (server folders removed), others generic."""
        if isinstance(err, (ValueError, FileNotFoundError, TypeError)):
            message = str(err)
            for path in paths:
                if path:
                    message = message.replace(str(Path(path).parent) + os.sep, "")
            return gr.Error(message)
        if isinstance(err, MemoryError):
            return gr.Error("The server ran out of memory for this request; try a smaller photo, clip or resolution.")
        logger.error("request failed", exc_info=err)
        return gr.Error(f"Internal error ({type(err).__name__}); the request was not completed. Please try again, "
                        "and report it if it keeps happening.")

    def create(self, photo, frames: int = 36, size: int = 384, elevation: float = 10.0, background: str = "#ffffff",
               progress=gr.Progress()):
        """Photo -> (orbit video path, front image path, .ply path, avatar for the session state)."""
        try:
            photo = self._check_photo(photo)
            rgb = parse_color(background)
            frames, size = int(frames), int(size)
            if not 1 <= frames <= MAX_ORBIT_FRAMES or not 64 <= size <= MAX_SIZE:
                raise gr.Error(f"Frames must be 1–{MAX_ORBIT_FRAMES} and resolution 64–{MAX_SIZE} pixels.")
            progress(0.1, desc="tracking the face and building the avatar")
            built = self.pipe(str(photo), orbit=False, height=size, width=size, output_type="np", background=rgb)
            avatar = built.avatar
            progress(0.5, desc="rendering the 360° orbit")
            orbit = self.pipe.orbit(avatar, num_frames=frames, elevation=float(elevation), height=size, width=size,
                                    output_type="np", background=rgb)
            out = self._output_dir()
            return (
                str(write_video(out / "orbit.mp4", list(orbit), fps=ORBIT_FPS)),
                str(save_image(built.front_image, out / "front.png")),
                str(avatar.save_ply(out / "avatar.ply")),
                avatar,
            )
        except gr.Error:
            raise
        except Exception as err:  # every failure reaches the user as one readable line, never a traceback
            raise self._user_error(err, photo) from err

    def animate(self, photo, driving_video, mode: str = "relative", size: int = 384, avatar=None,
                progress=gr.Progress()):
        """Driving video -> re-enacted video path (the avatar beside the clip). Rebuilds the avatar if none."""
        try:
            video = self._check_file(driving_video, "driving video")
            if mode not in ("relative", "absolute"):
                raise gr.Error(f"Transfer mode must be 'relative' or 'absolute', got {mode!r}.")
            size = int(size)
            if not 64 <= size <= MAX_SIZE:
                raise gr.Error(f"Resolution must be 64–{MAX_SIZE} pixels.")
            # The header and packet count decide before any decoding (a 10-minute clip costs a fraction of a second).
            info = video_info(video, timeout=VIDEO_TIMEOUT_S)
            if info.duration > MAX_VIDEO_SECONDS or info.num_frames > MAX_VIDEO_FRAMES:
                raise gr.Error(f"The driving video is {info.duration:.0f} s long ({info.num_frames} frames); please use "
                               f"at most {MAX_VIDEO_SECONDS:.0f} s and {MAX_VIDEO_FRAMES} frames.")
            if avatar is None:
                progress(0.05, desc="building the avatar from the photo")
                avatar = self.avatar_for(self._check_photo(photo))
            progress(0.2, desc="tracking the driving video")
            clip, fps = read_video(video, max_frames=MAX_VIDEO_FRAMES, max_side=MAX_DRIVING_SIDE, timeout=VIDEO_TIMEOUT_S)
            progress(0.5, desc="re-enacting")
            frames = self.pipe.animate(avatar, clip, mode=mode, height=size, width=size, output_type="np")
            pairs = [side_by_side(frame, original) for frame, original in zip(frames, clip)]
            return str(write_video(self._output_dir() / "reenact.mp4", pairs, fps=fps))
        except gr.Error:
            raise
        except Exception as err:  # every failure reaches the user as one readable line, never a traceback
            raise self._user_error(err, driving_video, photo) from err


def limit_malloc_arenas(arenas: int = MALLOC_ARENAS) -> bool:
    """Cap glibc's malloc arenas (unless MALLOC_ARENA_MAX is set). Gradio runs requests on a pool of worker threads;
    glibc gives each its own arena, and the frames freed in all of them stay mapped: under 8 concurrent sessions the
    server's RSS kept rising by ~100-200 MB per 56 requests, while with 2 arenas it levels off (benchmarks/app_load.py).
    Returns whether the cap was applied (False off glibc)."""
    if os.environ.get("MALLOC_ARENA_MAX"):
        return False
    try:
        libc = ctypes.CDLL("libc.so.6")
        return bool(libc.mallopt(-8, arenas))  # -8 = M_ARENA_MAX (malloc.h)
    except (OSError, AttributeError):  # not Linux/glibc
        return False
