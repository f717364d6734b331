"""The service behind the Gradio app (`app.py`): the pipeline, loaded once, and the glue that turns a request's
inputs into checked calls and files. `app.py` holds only the layout and the wiring of these methods to events.

Requests never change shared state: the background colour, frame count and size are call arguments of the
pipeline, and avatars are keyed by the photo's content (`photo_key`), never by the session alone: `animate` re-uses
the session's avatar only when its photo is the one the avatar was built from. Frames go to the video encoder as
they are rendered. Every failure reaches the visitor as one readable `gr.Error` line in plain words, never a
traceback or a Python argument name.
"""

from __future__ import annotations

import collections
import ctypes
import hashlib
import logging
import math
import os
import re
import shutil
import tempfile
import threading
from dataclasses import dataclass
from pathlib import Path

import gradio as gr
import torch

from .avatar_file import load_avatar_file, save_avatar_file
from .io import image_size, read_video, save_image, side_by_side, video_info, write_video
from .io.ply import save_gaussians_ply
from .motions import FPS as MOTION_FPS
from .motions import MOTIONS, check_motion
from .pipeline_fhavatar import FHAvatarPipeline
from .pipeline_inputs import MAX_DRIVING_SIDE, check_render_args, reword
from .rendering import Camera, Gaussians
from .rendering.cameras import PANOHEAD_FOCAL
from .rotations import axis_rotation, quat_multiply, rotmat_to_quat

__all__ = ["AvatarService", "LAUNCH_OPTIONS", "MOTION_CHOICES", "SessionAvatar", "limit_malloc_arenas", "on_gpu",
           "parse_color", "photo_input", "photo_key", "viewer_gaussians"]

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
AVATARS_KEPT = 4  # avatars cached by photo content, shared by every session (the newest kept)
#: Plain words for the Python argument names that the library's errors quote.
PLAIN_NAMES = {"`image`": "the photo", "`driving_video`": "the driving video", "`frames_or_path`": "the driving video",
               "`height`": "the resolution", "`width`": "the resolution", "`num_orbit_frames`": "the orbit frames",
               "`num_frames`": "the frame count", "`elevation`": "the elevation", "`background`": "the background colour"}
LAUNCH_OPTIONS = {"max_file_size": f"{MAX_UPLOAD_MB}mb", "state_session_capacity": SESSION_CAPACITY, "show_error": True}
#: The Animate tab's built-in motions, as (label, value) pairs (`fhavatar.motions`).
MOTION_CHOICES = [(name.replace("_", " "), name) for name in MOTIONS]
# The 3D viewer: Gradio's Model3D shows a 3DGS .ply with gsplat.js (gradio 6: `Canvas3DGS`), whose orbit camera
# starts at azimuth and elevation 0.5 rad (28.6°), VIEWER_DISTANCE from the origin, with a focal length of
# VIEWER_FOCAL_PX whatever the canvas size, and which (like 3DGS's COLMAP scenes, SIBR and SuperSplat) takes -y as up.
# `viewer_gaussians` turns the avatar into that frame, upright, facing the start camera, scaled so that a canvas
# VIEWER_HEIGHT_PX high frames the head as the orbit video does.
VIEWER_AZIMUTH = 0.5
VIEWER_DISTANCE = 5.0
VIEWER_FOCAL_PX = 1132.0
VIEWER_HEIGHT_PX = 440
ORBIT_RADIUS = 2.7  # `Camera.orbit`'s default


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

    Strict: exactly six hex digits (surrounding spaces aside), so no value outside [0, 1] can reach a render; anything
    else but None or an empty string (a number, a list, `#-1-1-1`) is refused, never read as "no colour".
    """
    if color is None or (isinstance(color, str) and not color.strip()):
        return None
    match = _HEX_COLOUR.fullmatch(color.strip()) if isinstance(color, str) else None
    if match is None:
        raise gr.Error(f"Background colour must look like #ffffff, got {color!r}.")
    return [int(channel, 16) / 255 for channel in match.groups()]


def photo_key(path) -> str:
    """The content hash (SHA-256) of a photo file: the key of its avatar, whatever the file or the session."""
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


@dataclass
class SessionAvatar:
    """What a session keeps from `create` for `animate`: the avatar, the `photo_key` of the photo it was built from
    and the background colour chosen with it (None: the pipeline's own)."""

    avatar: object
    photo_key: str
    background: list[float] | None = None


def viewer_gaussians(gaussians: Gaussians, canvas_height: int = VIEWER_HEIGHT_PX) -> Gaussians:
    """`gaussians` in head space (ARCHITECTURE.md: +y up, the face toward +z) moved into the 3D viewer's frame: turned
    180° about x (the 3DGS viewers' -y up; the face toward -z, the subject's left still on the viewer's right), then
    by -VIEWER_AZIMUTH about y so the face looks at the viewer's start camera, and scaled so that a canvas
    `canvas_height` pixels high shows the head as large as the orbit video (`Camera.orbit` at radius 2.7)."""
    rotation = axis_rotation(1, torch.tensor(-VIEWER_AZIMUTH)) @ axis_rotation(0, torch.tensor(math.pi))
    scale = PANOHEAD_FOCAL / ORBIT_RADIUS * VIEWER_DISTANCE * canvas_height / VIEWER_FOCAL_PX
    g = gaussians.detach().to("cpu")
    quat = rotmat_to_quat(rotation.to(g.quats))[None].expand_as(g.quats)
    return Gaussians(means=scale * g.means @ rotation.to(g.means).T, quats=quat_multiply(quat, g.quats),
                     scales=scale * g.scales, opacities=g.opacities, colors=g.colors)


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

    def avatar_for(self, photo, key: str | None = None):
        """The avatar of `photo` (a path), built once per distinct photo content (`photo_key`, or `key` when the
        caller hashed it already) and shared: the same photo gives the same avatar in every session and endpoint."""
        key = key or photo_key(photo)
        with self._lock:
            if key in self._avatars:
                return self._avatars[key]
        avatar = self.pipe.reconstruct(str(photo))
        with self._lock:
            self._avatars[key] = avatar
            while len(self._avatars) > AVATARS_KEPT:
                self._avatars.pop(next(iter(self._avatars)))
        return avatar

    def output_dir(self) -> Path:
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
    def user_error(err: BaseException, *paths) -> gr.Error:
        """`err` as a message for the user: known input errors in plain words (`PLAIN_NAMES`; server folders removed),
        others generic."""
        if isinstance(err, (ValueError, FileNotFoundError, TypeError)):
            message = reword(str(err), PLAIN_NAMES)
            for path in paths:
                if path:
                    message = message.replace(str(Path(path).parent) + os.sep, "")
            return gr.Error(message[:1].upper() + message[1:])
        if isinstance(err, MemoryError):
            return gr.Error("The server ran out of memory for this request; try a smaller photo, clip or resolution.")
        logger.error("request failed", exc_info=err)
        return gr.Error(f"Internal error ({type(err).__name__}); the request was not completed. Please try again, "
                        "and report it if it keeps happening.")

    def create(self, photo, frames: int = 36, size: int = 384, elevation: float = 10.0, background: str = "#ffffff",
               progress=gr.Progress()):
        """Photo -> (orbit video path, front image path, .ply path, `SessionAvatar` for the session state, the same
        .ply for the 3D viewer, the re-animatable avatar file path).

        The avatar comes from the shared cache keyed by the photo's content (`avatar_for`); the colour, frame count,
        elevation and size are this request's alone. The .ply is in the 3D viewer's frame (`viewer_gaussians`); the
        avatar file (`fhavatar.avatar_file`) is what Animate accepts instead of the photo.
        """
        try:
            photo = self._check_photo(photo)
            rgb = parse_color(background)
            frames, size, elevation = int(frames), int(size), float(elevation)
            if not 1 <= frames <= MAX_ORBIT_FRAMES or not 64 <= size <= MAX_SIZE:
                raise gr.Error(f"Frames must be 1–{MAX_ORBIT_FRAMES} and resolution 64–{MAX_SIZE} pixels.")
            check_render_args(frames, size, size, "np", elevation)
            progress(0.1, desc="tracking the face and building the avatar")
            key = photo_key(photo)
            avatar = self.avatar_for(photo, key)
            progress(0.5, desc="rendering the 360° orbit")
            out = self.output_dir()
            front = next(self.pipe.render_views(avatar, avatar.source_track.camera, size, size, background=rgb))
            views = self.pipe.render_views(avatar, Camera.orbit(frames, elevation_deg=elevation), size, size,
                                           background=rgb)
            ply = str(save_gaussians_ply(viewer_gaussians(avatar.gaussians()), out / "avatar.ply"))
            return (
                str(write_video(out / "orbit.mp4", views, fps=ORBIT_FPS)),
                str(save_image(front, out / "front.png")),
                ply,
                SessionAvatar(avatar, key, rgb),
                ply,
                str(save_avatar_file(avatar, out / "avatar.safetensors")),
            )
        except gr.Error:
            raise
        except Exception as err:  # every failure reaches the user as one readable line, never a traceback
            raise self.user_error(err, photo) from err

    def animate(self, photo, driving_video, mode: str = "relative", size: int = 384, avatar=None,
                motion: str | None = "talk", avatar_file=None, progress=gr.Progress()):
        """Driving video -> re-enacted video path (the avatar beside the clip); without a video, the built-in `motion`
        (`fhavatar.motions`) -> the avatar performing it (25 fps).

        The avatar is, first found: the uploaded `avatar_file` (Create's avatar.safetensors); the session's
        `SessionAvatar` from `create` (`avatar`, with its background colour), used only when `photo` is empty or has the
        content it was built from; else the avatar of `photo` (`avatar_for`), so a session can never be answered with
        the avatar of a photo it no longer shows.
        """
        try:
            video = self._check_file(driving_video, "driving video") if driving_video else None
            if video is None:
                try:
                    motion = check_motion(motion)  # "look around", "Look-around" and "look_around" alike
                except ValueError:
                    raise gr.Error("Please upload a driving video or choose a built-in motion "
                                   f"({', '.join(label for label, _ in MOTION_CHOICES)}).") from None
            if mode not in ("relative", "absolute"):
                raise gr.Error(f"Transfer mode must be 'relative' or 'absolute', got {mode!r}.")
            size = int(size)
            if not 64 <= size <= MAX_SIZE:
                raise gr.Error(f"Resolution must be 64–{MAX_SIZE} pixels.")
            if video is not None:
                # The header and packet count decide before any decoding (a 10-minute clip costs a fraction of a second).
                info = video_info(video, timeout=VIDEO_TIMEOUT_S)
                if info.duration > MAX_VIDEO_SECONDS or info.num_frames > MAX_VIDEO_FRAMES:
                    raise gr.Error(f"The driving video is {info.duration:.0f} s long ({info.num_frames} frames); please "
                                   f"use at most {MAX_VIDEO_SECONDS:.0f} s and {MAX_VIDEO_FRAMES} frames.")
            avatar, background = self._animated_avatar(photo, avatar, avatar_file, progress)
            if video is None:
                progress(0.2, desc=f"animating: {motion.replace('_', ' ')}")
                renders = self.pipe.iter_animate(avatar, motion=motion, height=size, width=size, background=background)
                frames = (render.permute(1, 2, 0).numpy() for render in renders)
                return str(write_video(self.output_dir() / "motion.mp4", frames, fps=MOTION_FPS))
            progress(0.2, desc="tracking the driving video")
            clip, fps = read_video(video, max_frames=MAX_VIDEO_FRAMES, max_side=MAX_DRIVING_SIDE, timeout=VIDEO_TIMEOUT_S)
            tracks, _ = self.pipe.track_driving(clip)
            progress(0.5, desc="re-enacting")
            renders = self.pipe.iter_animate(avatar, tracks, mode=mode, height=size, width=size, background=background)
            pairs = (side_by_side(render.permute(1, 2, 0).numpy(), original) for render, original in zip(renders, clip))
            return str(write_video(self.output_dir() / "reenact.mp4", pairs, fps=fps))
        except gr.Error:
            raise
        except Exception as err:  # every failure reaches the user as one readable line, never a traceback
            raise self.user_error(err, driving_video, photo, avatar_file) from err

    def _animated_avatar(self, photo, session, avatar_file, progress):
        """`(avatar, background)` for `animate` (its docstring says which avatar)."""
        if avatar_file:
            return self.avatar_from_file(avatar_file), None
        session = session if isinstance(session, SessionAvatar) else None
        if photo:
            photo = self._check_photo(photo)
            key = photo_key(photo)
            if session is not None and session.photo_key == key:
                return session.avatar, session.background
            progress(0.05, desc="building the avatar from the photo")
            return self.avatar_for(photo, key), None
        if session is not None:
            return session.avatar, session.background
        raise gr.Error("Please upload a photo or an avatar file (or create an avatar first).")

    def avatar_from_file(self, path):
        """The avatar of an uploaded avatar file (`fhavatar.avatar_file`), cached by the file's content like
        `avatar_for`; a file that is not an avatar file gets a plain-words `gr.Error`."""
        path = self._check_file(path, "avatar file")
        key = "file:" + photo_key(path)
        with self._lock:
            if key in self._avatars:
                return self._avatars[key]
        try:
            avatar = load_avatar_file(path, self.pipe.head_model)  # on the head model's device, the pipeline's
        except ValueError as err:
            raise gr.Error(f"{err} Please upload the avatar.safetensors file that Create offers, or use a photo.") from err
        with self._lock:
            self._avatars[key] = avatar
            while len(self._avatars) > AVATARS_KEPT:
                self._avatars.pop(next(iter(self._avatars)))
        return avatar


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
