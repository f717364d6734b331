"""`FHAvatarPipeline`: one photo -> animatable 3D full-head Gaussian avatar -> re-enacted and 360° videos.

The pipeline composes the package's pieces (ARCHITECTURE.md, "Data flow"): tracking (`fhavatar.tracking`) -> head model
(`head_model`, OpenHead) -> optional prior -> avatar model (`avatar_model`: the learned `FHAvatarModel` or the
training-free `ProjectionAvatarModel`) -> `Avatar` (Gaussians bound to the head mesh) -> `render_gaussians`.

It is a diffusers `DiffusionPipeline`, so `save_pretrained` writes one safetensors folder per module plus
`model_index.json`, `from_pretrained` reads a folder or a Hub repo id (downloaded with `snapshot_download` first),
and `push_to_hub` uploads it with a model card filled in by `make_model_card`.
"""

from __future__ import annotations

import functools
import logging
import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import torch
from diffusers import DiffusionPipeline
from diffusers.utils import BaseOutput
from torch import Tensor

from ._checks import Setting, check_settings
from .animation import ClipVertices, FrameThreads, single_torch_thread, transfer_motion
from .avatar import Avatar
from .head.open_head import OpenHead
from .io import load_image, read_video
from .models import ProjectionAvatarModel
from .motions import motion_length, motion_params
from .pipeline_avatar import BUST_RESOLUTION, AvatarBuilding  # noqa: F401  (BUST_RESOLUTION: public name)
from .pipeline_hub import download_pipeline, load_pipeline_folder, make_model_card, push_pipeline
from .pipeline_inputs import (
    MAX_DRIVING_FRAMES,
    MAX_DRIVING_SIDE,
    MAX_ORBIT_FRAMES,
    MAX_RENDER_SIDE,
    MIN_RENDER_SIDE,
    call_memory,
    check_avatar,
    check_background,
    check_call,
    check_image,
    check_int,
    check_memory,
    check_modules,
    check_render_args,
    check_views,
    photo_size_in_errors,
    postprocess,
    reworded,
    square_pixels,
)
from .pipeline_live import LiveReenactment
from .reconstruction_check import check_track, checked_avatar
from .rendering import Camera, render_gaussians
from .tracking import FaceTrack, track_image, track_video

__all__ = ["MAX_DRIVING_FRAMES", "MAX_ORBIT_FRAMES", "MAX_RENDER_SIDE", "MIN_RENDER_SIDE", "FHAvatarPipeline",
           "FHAvatarPipelineOutput", "make_model_card"]

logger = logging.getLogger(__name__)

@dataclass
class FHAvatarPipelineOutput(BaseOutput):
    """Output of `FHAvatarPipeline.__call__`.

    Args:
        avatar (`Avatar`): the reconstructed avatar (its `source_track` attribute holds the photo's `FaceTrack`).
        frames (`list[PIL.Image.Image]`, `np.ndarray` `[T, H, W, 3]` or `Tensor` `[T, 3, H, W]`, or `None`): the
            re-enacted driving video (None without `driving_video`).
        orbit_frames (same types, or `None`): the 360° orbit (None when `orbit=False`).
        source_track (`FaceTrack`): crop, mask, camera and head-model parameters of the photo.
        front_image (`PIL.Image.Image`, `np.ndarray` `[H, W, 3]` or `Tensor` `[3, H, W]`): the avatar rendered from
            the photo's own camera (compare with `source_track.image`).
        fps (`float` or `None`): frame rate of the driving video when it was read from a file.
    """

    avatar: Any
    frames: Any = None
    orbit_frames: Any = None
    source_track: Any = None
    front_image: Any = None
    fps: float | None = None


class FHAvatarPipeline(AvatarBuilding, DiffusionPipeline):
    r"""Photo -> animatable full-head Gaussian avatar; re-enact it with a driving video and orbit 360° around it.

    Args:
        avatar_model (`FHAvatarModel` or `ProjectionAvatarModel`): photo (+ source head, camera, prior) -> UV
            Gaussian attribute maps.
        head_model (`OpenHead`): the parametric head the tracker fits and the avatar is bound to.
        prior (`ModelMixin`, *optional*): a 3D prior with `encode(image, camera) -> triplane` and
            `sample(triplane, points [B, M, 3]) -> [B, M, C_T]` (`PanoHeadPrior`); None in the built-in default.
        resolution (`int`, *optional*, defaults to 256): K, the UV atlas size (must equal a learned model's).
        background (`list[float]`, *optional*, defaults to white): RGB behind the avatar in every render.
        orbit_elevation (`float`, *optional*, defaults to 10): camera elevation of orbits, degrees.
        use_mask (`bool`, *optional*, defaults to True): segment the photo's foreground so background pixels are
            never painted onto the head.
        smoothing (`float`, *optional*, defaults to 1.0): temporal smoothing (frames) of driving-video tracking.
        full_head (`bool`, *optional*): build the full head the photo shows around the face: fit the head's outline to
            the photo's matte (`fhavatar.tracking.fit_hair_shell`: hair volume, hats) before the avatar model runs,
            and add the neck, shoulders and chest below it (`fhavatar.models.build_bust`). Defaults to None: on for
            the training-free `ProjectionAvatarModel`, off for learned models (trained on bare heads; the trainer
            saves False).

    Example:
        ```py
        >>> from fhavatar import FHAvatarPipeline
        >>> pipe = FHAvatarPipeline.default(resolution=64)
        >>> out = pipe("photo.jpg", driving_video="clip.mp4", num_orbit_frames=8, height=128, width=128)  # doctest: +SKIP
        >>> len(out.orbit_frames), out.front_image.size  # doctest: +SKIP
        (8, (128, 128))
        ```
    """

    _optional_components = ["prior"]
    #: The range of every registered setting, checked when the pipeline is built or loaded (`check_settings`): a
    #: model folder cannot make a request loop for days (`smoothing` 1e9) or read "no" as True (`use_mask`).
    config_settings = {
        "resolution": Setting("int", 8, 2048, unit="texels"),
        "background": Setting("rgb", 0.0, 1.0),
        "orbit_elevation": Setting("float", -89.0, 89.0, unit="degrees"),
        "use_mask": Setting("bool"),
        "smoothing": Setting("float", 0.0, 30.0, unit="frames of Gaussian sigma"),
        "full_head": Setting("bool", optional=True),
    }

    def __init__(
        self,
        avatar_model,
        head_model,
        prior=None,
        resolution: int = 256,
        background: tuple = (1.0, 1.0, 1.0),
        orbit_elevation: float = 10.0,
        use_mask: bool = True,
        smoothing: float = 1.0,
        full_head: bool | None = None,
    ):
        super().__init__()
        check_modules(avatar_model, head_model, prior)
        config = check_settings(dict(resolution=resolution, background=background, orbit_elevation=orbit_elevation,
                                     use_mask=use_mask, smoothing=smoothing, full_head=full_head), self.config_settings)
        self.register_modules(avatar_model=avatar_model, head_model=head_model, prior=prior)
        self.register_to_config(**config)

    # ------------------------------------------------------------------ construction and files
    @classmethod
    def default(cls, resolution: int = 256, **config: Any) -> FHAvatarPipeline:
        """The built-in default: OpenHead + `ProjectionAvatarModel`, no prior, no weights, no downloads.

        Example:
            ```py
            >>> from fhavatar import FHAvatarPipeline
            >>> FHAvatarPipeline.default(resolution=64).config.resolution
            64

            ```
        """
        check_int("resolution", resolution, 8, 2048)
        return cls(avatar_model=ProjectionAvatarModel(), head_model=OpenHead(), prior=None,
                   resolution=resolution, **config)

    def save_pretrained(self, save_directory: str | os.PathLike, safe_serialization: bool = True, **kwargs):
        """Write `model_index.json` and one folder per module (config + safetensors weights).

        Example:
            ```py
            >>> import tempfile
            >>> from fhavatar import FHAvatarPipeline
            >>> FHAvatarPipeline.default(resolution=64).save_pretrained(tempfile.mkdtemp())

            ```
        """
        if not safe_serialization:
            raise ValueError("`safe_serialization` must be True: FHAvatar writes safetensors only, never pickles.")
        return super().save_pretrained(save_directory, safe_serialization=True, **kwargs)

    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path: str | os.PathLike, **kwargs) -> FHAvatarPipeline:
        """Load a `save_pretrained` folder, or a Hub repo id (`"user/name"`, via `snapshot_download` and its cache).

        Args:
            pretrained_model_name_or_path (`str` or `os.PathLike`): a local folder or a repo id.
            kwargs: `cache_dir`, `revision`, `token`, `local_files_only`, `force_download` go to `snapshot_download`;
                the rest to `DiffusionPipeline.from_pretrained` (e.g. `torch_dtype`).

        Example:
            ```py
            >>> from fhavatar import FHAvatarPipeline
            >>> pipe = FHAvatarPipeline.from_pretrained("user/fhavatar")  # doctest: +SKIP
            ```
        """
        path = os.fspath(pretrained_model_name_or_path)
        if not os.path.isdir(path):
            if os.path.exists(path):
                raise ValueError(f"`pretrained_model_name_or_path` must be a folder or a Hub repo id, got the file {path!r}.")
            if path.count("/") != 1 or path.startswith((".", "/", "~")):
                raise FileNotFoundError(f"`pretrained_model_name_or_path`: no folder {path!r}, and it is not a Hub "
                                        "repo id of the form 'user/name'.")
            path = download_pipeline(path, kwargs)
        if not os.path.isfile(os.path.join(path, "model_index.json")):
            raise FileNotFoundError(f"`pretrained_model_name_or_path`: {path!r} holds no model_index.json; is it a "
                                    "folder written by `FHAvatarPipeline.save_pretrained`?")
        return load_pipeline_folder(cls, path, **kwargs)

    def push_to_hub(self, repo_id: str, commit_message: str | None = None, private: bool | None = None,
                    token: str | None = None, create_pr: bool = False, metrics: dict | None = None,
                    training_details: str | None = None, **kwargs):
        """Upload `save_pretrained` files and a `README.md` model card (`make_model_card`) to the Hub repo `repo_id`."""
        return push_pipeline(self, repo_id, commit_message=commit_message, private=private, token=token,
                             create_pr=create_pr, metrics=metrics, training_details=training_details)

    # ------------------------------------------------------------------ validation
    def check_inputs(self, image=None, driving_video=None, num_orbit_frames=72, height=512, width=512,
                     mode="relative", output_type="pil", num_driving_frames=None) -> None:
        """Raise `ValueError` / `FileNotFoundError` naming the argument, what was expected and what was received,
        and a `ValueError` when the frames the call returns would not fit in the memory available now."""
        check_call(image, driving_video, num_orbit_frames, height, width, mode, output_type, num_driving_frames)

    # ------------------------------------------------------------------ building blocks
    def _frames(self, gaussians_at, cameras: Camera, height: int, width: int, desc: str,
                background: Sequence[float] | None = None) -> Iterator[Tensor]:
        """Frame t of `gaussians_at(t)` from `cameras[t]` over `background` (default: the config's), one `[3, H, W]`
        CPU tensor at a time. Arguments are checked before the first frame is asked for."""
        rgb = self.config.background if background is None else check_background(background)
        background = torch.tensor(rgb, device=self.device)
        cameras = square_pixels(cameras, width, height).to(self.device)

        @torch.no_grad()  # a generator: the decorator of the caller does not reach its body
        def frames():
            threads = FrameThreads()  # one torch thread, the numba threads that render fastest now
            for t in self.progress_bar(range(len(cameras)), desc=desc):
                with threads.frame():
                    frame = render_gaussians(gaussians_at(t), cameras[t], width, height, background=background)
                yield frame.image[0].cpu()

        return frames()

    def progress_bar(self, iterable=None, total=None, desc: str | None = None):
        """diffusers' tqdm bar (configure with `set_progress_bar_config`), labelled `desc`."""
        bar = super().progress_bar(iterable=iterable, total=total)
        if desc is not None:
            bar.set_description(desc)
        return bar

    # ------------------------------------------------------------------ public steps
    @torch.no_grad()
    def reconstruct(self, image) -> Avatar:
        """Track a photo and build its avatar in one forward pass of the avatar model, checked to show the person
        (`fhavatar.reconstruction_check`: a photo upside down is built turned 180°, a cartoon is refused, ...).

        Args:
            image (path, `PIL.Image.Image`, `np.ndarray` `[H, W, 3]` uint8 or `Tensor` `[3, H, W]` in [0, 1]):
                a portrait photo.

        Returns:
            `Avatar`, with the photo's `FaceTrack` attached as `avatar.source_track` (of the photo turned 180° when
            it was upside down) and the self-check's `CheckFigures` as `avatar.check_figures`. `ValueError` when no
            usable face is found (`NoFaceError`) or the avatar would not show the person (`UnusablePhotoError`).

        Example:
            ```py
            >>> from fhavatar import FHAvatarPipeline
            >>> pipe = FHAvatarPipeline.default(resolution=64)
            >>> avatar = pipe.reconstruct("photo.jpg")  # doctest: +SKIP
            >>> avatar.save_ply("avatar.ply")  # doctest: +SKIP
            ```
        """
        check_image(image)
        if not isinstance(self.head_model, OpenHead):
            raise ValueError(f"`head_model` must be an OpenHead to be tracked from photos, got {type(self.head_model).__name__}.")
        photo = load_image(image)
        track = functools.partial(track_image, head=self.head_model, mask=self.config.use_mask)
        with photo_size_in_errors(image, photo):
            checked = check_track(photo, track(photo), retrack=track)
        avatar, figures = checked_avatar(checked, self._build_avatar,
                                         strict=isinstance(self.avatar_model, ProjectionAvatarModel))
        avatar.check_figures = figures
        logger.info("reconstructed an avatar of %d Gaussians (K=%d) and a bust of %d; self-check %s", len(avatar),
                    self.config.resolution, 0 if avatar.bust is None else len(avatar.bust), figures)
        return avatar

    @torch.no_grad()
    def track_driving(self, driving, num_frames: int | None = None) -> tuple[list, float | None]:
        """`(tracks, fps)` of a driving video path, frame list or array (FaceTrack lists pass through; fps None)."""
        fps = None
        if isinstance(driving, (list, tuple)) and driving and all(isinstance(d, FaceTrack) for d in driving):
            return list(driving)[:num_frames], fps
        if isinstance(driving, (str, os.PathLike)):
            driving, fps = read_video(driving, max_frames=num_frames or MAX_DRIVING_FRAMES, max_side=MAX_DRIVING_SIDE)
        elif num_frames is not None:
            driving = driving[:num_frames]
        with reworded({"`frames_or_path`": "`driving_video`"}):
            return track_video(driving, head=self.head_model, smoothing=self.config.smoothing), fps

    @torch.no_grad()
    def animate(self, avatar: Avatar, driving=None, mode: Literal["relative", "absolute"] = "relative",
                use_driving_camera: bool = False, height: int = 512, width: int = 512,
                num_frames: int | None = None, source_track=None, output_type: str = "pt",
                background: Sequence[float] | None = None, motion: str | None = None):
        """Re-enact `avatar` with a driving video (one rendered frame per driving frame) or a built-in `motion`.

        Args:
            avatar (`Avatar`): from `reconstruct` (or `Avatar.load` with `source_track`).
            driving: a video path, a list of frames / `[T, H, W, 3]` array / `[T, 3, H, W]` tensor, or the
                `list[FaceTrack]` of `fhavatar.tracking.track_video`.
            mode (`"relative"` or `"absolute"`, *optional*, defaults to `"relative"`): see `transfer_motion`.
            use_driving_camera (`bool`, *optional*, defaults to False): view each frame from the driving camera.
            height, width (`int`, *optional*, default to 512): frame size in pixels.
            num_frames (`int`, *optional*): use only the first `num_frames` driving frames.
            source_track (`FaceTrack`, *optional*): the photo's track, if `avatar` has no `source_track`.
            output_type (`str`, *optional*, defaults to `"pt"`): `"pt"` `[T, 3, H, W]`, `"np"` or `"pil"`.
            background (3 floats in [0, 1], *optional*): RGB behind the avatar for this call (default
                `config.background`).
            motion (`str`, *optional*): instead of `driving`, a built-in motion at 25 fps (`fhavatar.motions.MOTIONS`:
                talk, smile, nod, shake, look_around, blink), relative to the avatar's pose; `num_frames` sets its length.

        Example:
            ```py
            >>> frames = pipe.animate(pipe.reconstruct("photo.jpg"), "clip.mp4", height=256, width=256)  # doctest: +SKIP
            >>> frames.shape  # doctest: +SKIP
            torch.Size([78, 3, 256, 256])
            ```
        """
        if motion is None and driving is not None:
            self.check_inputs(None, driving, 1, height, width, mode, output_type, num_frames)  # the frames held too
        else:  # a built-in motion: its length is known before anything renders
            count = motion_length(motion, num_frames, driving=driving)
            check_render_args(count, height, width, output_type, name="num_frames")
            check_memory(call_memory(count, height, width), f"This call (its {count} frames of {width}x{height})",
                         "Pass fewer `num_frames` or a smaller `height` x `width`.")
        frames = self.iter_animate(avatar, driving, mode, use_driving_camera, height, width, num_frames, source_track,
                                   background, motion)
        with single_torch_thread():  # big copies, where torch's threads wait on each other on a busy CPU
            return postprocess(torch.stack(list(frames)), output_type)

    @torch.no_grad()
    def iter_animate(self, avatar: Avatar, driving=None, mode: Literal["relative", "absolute"] = "relative",
                     use_driving_camera: bool = False, height: int = 512, width: int = 512,
                     num_frames: int | None = None, source_track=None,
                     background: Sequence[float] | None = None, motion: str | None = None) -> Iterator[Tensor]:
        """`animate` one `[3, H, W]` CPU frame at a time (arguments as `animate`'s, checked and the clip tracked before
        it returns): a caller that writes each frame out holds one rendered frame, however long the clip."""
        source_track = check_avatar(avatar, source_track)
        if motion is not None or driving is None:  # a built-in motion (fhavatar.motions) instead of a clip
            check_render_args(1, height, width, "pt")
            params, cameras = motion_params(motion, source_track, self.head_model, num_frames, driving=driving)
        else:
            check_call(None, driving, 1, height, width, mode, "pt", num_frames, returned=False)
            tracks, _ = self.track_driving(driving, num_frames)
            params, cameras = transfer_motion(source_track, tracks, mode=mode, use_driving_camera=use_driving_camera)
        # Posed 16 frames at a time in the loop: on frames 0, 16, 32, ..., never one of the frames FrameThreads times
        # to choose its thread count (1, 2, 49, 50, ...: its recheck of 48 is a multiple of the chunk).
        vertices = ClipVertices(avatar.pose, params.to(self.device), chunk=16)
        return self._frames(lambda t: avatar.gaussians(vertices=vertices(t)), cameras, height, width,
                            "re-enacting", background)

    def live(self, avatar: Avatar, background: Sequence[float] | None = None) -> LiveReenactment:
        """Re-enact `avatar` from a live stream (a webcam): returns a `LiveReenactment`, called once per camera frame,
        `live(frame, height, width) -> LiveFrame` (its `[3, H, W]` image None when the frame shows no face). Tracking
        is `track_video`'s with causal smoothing; motion transfer is relative to the first frame with a face.

        Example:
            ```py
            >>> live = pipe.live(pipe.reconstruct("photo.jpg"))  # doctest: +SKIP
            >>> images = [live(frame, 256, 256).image for frame in webcam_frames]  # doctest: +SKIP
            ```
        """
        return LiveReenactment(self, avatar, background)

    @torch.no_grad()
    def orbit(self, avatar: Avatar, num_frames: int = 72, elevation: float | None = None, height: int = 512,
              width: int = 512, output_type: str = "pt", background: Sequence[float] | None = None):
        """Render `avatar` (source pose) from a closed 360° camera loop starting in front of the face.

        Args:
            avatar (`Avatar`): the avatar.
            num_frames (`int`, *optional*, defaults to 72): frames of the loop (5° apart).
            elevation (`float`, *optional*): degrees above the horizon (default `config.orbit_elevation`).
            height, width (`int`, *optional*, default to 512): frame size in pixels.
            output_type (`str`, *optional*, defaults to `"pt"`): `"pt"` `[T, 3, H, W]`, `"np"` or `"pil"`.
            background (3 floats in [0, 1], *optional*): RGB behind the avatar for this call (default
                `config.background`).

        Example:
            ```py
            >>> frames = pipe.orbit(pipe.reconstruct("photo.jpg"), num_frames=8, height=128, width=128)  # doctest: +SKIP
            >>> frames.shape  # doctest: +SKIP
            torch.Size([8, 3, 128, 128])
            ```
        """
        elevation = self.config.orbit_elevation if elevation is None else elevation
        check_render_args(num_frames, height, width, output_type, elevation)
        cameras = Camera.orbit(int(num_frames), elevation_deg=float(elevation))
        with single_torch_thread():  # as in `animate`
            return postprocess(torch.stack(list(self.render_views(avatar, cameras, height, width, background))),
                               output_type)

    @torch.no_grad()
    def render_views(self, avatar: Avatar, cameras: Camera, height: int = 512, width: int = 512,
                     background: Sequence[float] | None = None) -> Iterator[Tensor]:
        """`avatar` in its source pose from each of `cameras`, one `[3, H, W]` CPU frame at a time (a caller that
        writes each out holds one frame, however many): `Camera.orbit(n, elevation_deg=e)` gives `orbit`'s views,
        `avatar.source_track.camera` the front view. Arguments as `orbit`'s."""
        check_views(avatar, cameras, height, width)
        gaussians = avatar.gaussians()
        return self._frames(lambda t: gaussians, cameras, height, width, "rendering views", background)

    # ------------------------------------------------------------------ the whole pipeline
    @torch.no_grad()
    def __call__(
        self,
        image,
        driving_video=None,
        orbit: bool = True,
        num_orbit_frames: int = 72,
        height: int = 512,
        width: int = 512,
        mode: Literal["relative", "absolute"] = "relative",
        use_driving_camera: bool = False,
        num_driving_frames: int | None = None,
        output_type: str = "pil",
        return_dict: bool = True,
        generator: torch.Generator | None = None,
        background: Sequence[float] | None = None,
    ):
        r"""Photo (+ driving video) -> avatar, front render, 360° orbit and re-enactment.

        Args:
            image (path, `PIL.Image.Image`, `np.ndarray` `[H, W, 3]` uint8 or `Tensor` `[3, H, W]` in [0, 1]):
                the portrait photo.
            driving_video (*optional*): a video path, a list of frames, a `[T, H, W, 3]` array, a `[T, 3, H, W]`
                tensor, or precomputed `list[FaceTrack]`; None skips re-enactment.
            orbit (`bool`, *optional*, defaults to True): render the 360° orbit.
            num_orbit_frames (`int`, *optional*, defaults to 72): frames of the orbit.
            height, width (`int`, *optional*, default to 512): size of every rendered frame.
            mode (`"relative"` or `"absolute"`, *optional*, defaults to `"relative"`): motion transfer mode.
            use_driving_camera (`bool`, *optional*, defaults to False): view re-enacted frames from the driving camera.
            num_driving_frames (`int`, *optional*): re-enact only the first frames of `driving_video`.
            output_type (`str`, *optional*, defaults to `"pil"`): `"pil"`, `"np"` (float `[T, H, W, 3]`) or `"pt"`
                (`[T, 3, H, W]`).
            return_dict (`bool`, *optional*, defaults to True): return `FHAvatarPipelineOutput`, else the tuple
                `(avatar, frames, orbit_frames, source_track, front_image, fps)`.
            generator (`torch.Generator`, *optional*): accepted for diffusers parity; the built-in models are
                deterministic and draw no random numbers.
            background (3 floats in [0, 1], *optional*): RGB behind the avatar in this call's renders (default
                `config.background`; a per-request setting never changes the pipeline's config).

        Returns:
            `FHAvatarPipelineOutput` or `tuple`.

        Example:
            ```py
            >>> from fhavatar import FHAvatarPipeline
            >>> pipe = FHAvatarPipeline.default()
            >>> out = pipe("photo.jpg", driving_video="clip.mp4")  # doctest: +SKIP
            >>> out.avatar.save_ply("avatar.ply"); out.front_image.save("front.png")  # doctest: +SKIP
            ```
        """
        # 0. Check inputs.
        self.check_inputs(image, driving_video, num_orbit_frames, height, width, mode, output_type, num_driving_frames)
        if background is not None:
            background = check_background(background)
        # 1. Track the photo and reconstruct the avatar.
        avatar = self.reconstruct(image)
        source_track = avatar.source_track
        # 2. Render it from the photo's own camera.
        front = torch.stack(list(self.render_views(avatar, source_track.camera, height, width, background)))
        # 3. Orbit 360° around it.
        orbit_frames = self.orbit(avatar, num_orbit_frames, height=height, width=width,
                                  background=background) if orbit else None
        # 4. Re-enact the driving video.
        frames, fps = None, None
        if driving_video is not None:
            tracks, fps = self.track_driving(driving_video, num_driving_frames)
            frames = self.animate(avatar, tracks, mode=mode, use_driving_camera=use_driving_camera, height=height,
                                  width=width, background=background)
        # 5. Convert to `output_type`.
        front_image = postprocess(front, output_type)[0]
        orbit_frames = None if orbit_frames is None else postprocess(orbit_frames, output_type)
        frames = None if frames is None else postprocess(frames, output_type)
        if not return_dict:
            return avatar, frames, orbit_frames, source_track, front_image, fps
        return FHAvatarPipelineOutput(avatar=avatar, frames=frames, orbit_frames=orbit_frames,
                                      source_track=source_track, front_image=front_image, fps=fps)
