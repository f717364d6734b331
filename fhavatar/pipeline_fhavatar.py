"""`FHAvatarPipeline`: one photo -> animatable 3D full-head Gaussian avatar -> re-enacted and 360° videos.

The pipeline composes the package's pieces (ARCHITECTURE.md, "Data flow"): tracking (`fhavatar.tracking`) -> head model
(`head_model`, OpenHead) -> optional prior -> avatar model (`avatar_model`: the learned `FHAvatarModel` or the
training-free `ProjectionAvatarModel`) -> `Avatar` (Gaussians bound to the head mesh) -> `render_gaussians`.

It is a diffusers `DiffusionPipeline`, so `save_pretrained` writes one safetensors folder per module plus
`model_index.json`, `from_pretrained` reads a folder or a Hub repo id (downloaded with `snapshot_download` first),
and `push_to_hub` uploads it with a model card filled in by `make_model_card`.
"""

from __future__ import annotations

import logging
import math
import os
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

import torch
from diffusers import DiffusionPipeline
from diffusers.utils import BaseOutput
from torch import Tensor

from .animation import transfer_motion
from .avatar import Avatar
from .head.canonical_face import CHIN
from .head.open_head import OpenHead
from .head.uv import UVLayout
from .io import load_image, read_video
from .models import ProjectionAvatarModel
from .models.bust import build_bust
from .models.source_view import SourceView, make_source_view
from .pipeline_hub import download_pipeline, load_pipeline_folder, make_model_card, push_pipeline
from .pipeline_inputs import (
    MAX_DRIVING_FRAMES,
    MAX_ORBIT_FRAMES,
    MAX_RENDER_SIDE,
    MIN_RENDER_SIDE,
    check_background,
    check_driving,
    check_image,
    check_int,
    check_render_args,
    postprocess,
    square_pixels,
)
from .rendering import Camera, render_gaussians
from .tracking import FaceTrack, fit_hair_shell, track_image, track_video

__all__ = ["MAX_DRIVING_FRAMES", "MAX_ORBIT_FRAMES", "MAX_RENDER_SIDE", "MIN_RENDER_SIDE", "FHAvatarPipeline",
           "FHAvatarPipelineOutput", "make_model_card"]

logger = logging.getLogger(__name__)

#: Side of the head avatar's source-view alpha the bust is built against (the bust has one Gaussian pair per pixel).
BUST_RESOLUTION = 128

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


class FHAvatarPipeline(DiffusionPipeline):
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
        check_int("resolution", resolution, 8, 2048)
        rgb = check_background(background)
        if full_head is not None and not isinstance(full_head, bool):
            raise ValueError(f"`full_head` must be True, False or None (automatic), got {full_head!r}.")
        for name, value in (("orbit_elevation", orbit_elevation), ("smoothing", smoothing)):
            if not (isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)):
                raise ValueError(f"`{name}` must be a finite number, got {value!r}.")
        self.register_modules(avatar_model=avatar_model, head_model=head_model, prior=prior)
        self.register_to_config(resolution=resolution, background=rgb,
                                orbit_elevation=float(orbit_elevation), use_mask=bool(use_mask),
                                smoothing=float(smoothing), full_head=full_head)

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
        """Raise `ValueError` / `FileNotFoundError` naming the argument, what was expected and what was received."""
        if image is not None or driving_video is None:
            check_image(image)
        check_render_args(num_orbit_frames, height, width, output_type, name="num_orbit_frames")
        if mode not in ("relative", "absolute"):
            raise ValueError(f"`mode` must be 'relative' or 'absolute', got {mode!r}.")
        if driving_video is not None:
            check_driving(driving_video, num_driving_frames)
        elif num_driving_frames is not None:
            check_int("num_driving_frames", num_driving_frames, 1, MAX_DRIVING_FRAMES)

    # ------------------------------------------------------------------ building blocks
    @property
    def layout(self) -> UVLayout:
        """The head model's `UVLayout` at `config.resolution` (built once, on the pipeline's device)."""
        k = self.config.resolution
        model_k = getattr(self.avatar_model.config, "resolution", k)
        if model_k != k:
            raise ValueError(f"`resolution` ({k}) must equal the avatar model's resolution ({model_k}).")
        cached = self.__dict__.get("_layout_cache")
        if cached is None or cached[0] is not self.head_model or cached[1].resolution != k:
            cached = (self.head_model, UVLayout(self.head_model, resolution=k))
            self.__dict__["_layout_cache"] = cached
        return cached[1].to(self.device)

    def source_view(self, track, rest_offsets: Tensor | None = None) -> SourceView:
        """The avatar model's input for a tracked photo: `make_source_view`, the function the trainer calls too.

        The photo is composited over `config.background` for models that read it so (a trained pipeline stores its
        training background there), and the prior, when present, encodes that composite. `rest_offsets` (`[V, 3]`)
        is the hair shell the avatar will carry.
        """
        device = self.device
        image = torch.from_numpy(track.image).to(device).permute(2, 0, 1)[None].float() / 255.0
        mask = None if track.mask is None else torch.from_numpy(track.mask).to(device)[None, None].float()
        background = torch.tensor(self.config.background, device=device, dtype=image.dtype)
        return make_source_view(image, track.camera.to(device), self.head_model, track.params.to(device), self.layout,
                                mask=mask, background=background, prior=self.prior, rest_offsets=rest_offsets)

    def _bust(self, avatar: Avatar, track):
        """The neck, shoulders and chest the photo shows below the head avatar (`build_bust`), or None."""
        head_alpha = render_gaussians(avatar.gaussians(), track.camera.to(self.device), BUST_RESOLUTION,
                                      BUST_RESOLUTION).alpha[0, 0].cpu()
        image = torch.from_numpy(track.image).permute(2, 0, 1).float() / 255.0
        neck = avatar.source_vertices[self.head_model.region("neck")].mean(0).cpu()
        bust = build_bust(image, torch.from_numpy(track.mask), head_alpha, track.camera.to("cpu"),
                          float(track.landmarks[CHIN, 1]), neck)
        return None if bust is None else bust.to(self.device)

    def _render(self, gaussians_at, cameras: Camera, height: int, width: int, desc: str,
                background: Sequence[float] | None = None) -> Tensor:
        """Render frame t of `gaussians_at(t)` from `cameras[t]` over `background` (default: the config's), `[T, 3, H, W]`."""
        rgb = self.config.background if background is None else check_background(background)
        background = torch.tensor(rgb, device=self.device)
        cameras = square_pixels(cameras, width, height).to(self.device)
        frames = []
        for t in self.progress_bar(range(len(cameras)), desc=desc):
            out = render_gaussians(gaussians_at(t), cameras[t], width, height, background=background)
            frames.append(out.image[0].cpu())
        return torch.stack(frames)

    def progress_bar(self, iterable=None, total=None, desc: str | None = None):
        """diffusers' tqdm bar (configure with `set_progress_bar_config`), labelled `desc`."""
        bar = super().progress_bar(iterable=iterable, total=total)
        if desc is not None:
            bar.set_description(desc)
        return bar

    # ------------------------------------------------------------------ public steps
    @torch.no_grad()
    def reconstruct(self, image) -> Avatar:
        """Track a photo and build its avatar in one forward pass of the avatar model.

        Args:
            image (path, `PIL.Image.Image`, `np.ndarray` `[H, W, 3]` uint8 or `Tensor` `[3, H, W]` in [0, 1]):
                a portrait photo.

        Returns:
            `Avatar`, with the photo's `FaceTrack` attached as `avatar.source_track`.

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
        track = track_image(load_image(image), head=self.head_model, mask=self.config.use_mask)
        # The hair shell: the head's outline fitted to the photo's matte (None: none fitted, the bare head stays).
        full_head = self.config.get("full_head")
        full_head = isinstance(self.avatar_model, ProjectionAvatarModel) if full_head is None else full_head
        shell = fit_hair_shell(track, self.head_model) if full_head else None
        shell = None if shell is None else shell.to(self.device)
        attributes = self.avatar_model(self.source_view(track, rest_offsets=shell))
        avatar = Avatar.from_attributes(attributes, self.layout, self.head_model, track.params.to(self.device),
                                        vertex_offsets=shell)
        if full_head and track.mask is not None:
            avatar.bust = self._bust(avatar, track)
        avatar.source_track = track
        logger.info("reconstructed an avatar of %d Gaussians (K=%d) and a bust of %d", len(avatar),
                    self.config.resolution, 0 if avatar.bust is None else len(avatar.bust))
        return avatar

    @torch.no_grad()
    def track_driving(self, driving, num_frames: int | None = None) -> tuple[list, float | None]:
        """`(tracks, fps)` of a driving video path, frame list or array (FaceTrack lists pass through; fps None)."""
        fps = None
        if isinstance(driving, (list, tuple)) and driving and all(isinstance(d, FaceTrack) for d in driving):
            return list(driving)[:num_frames], fps
        if isinstance(driving, (str, os.PathLike)):
            driving, fps = read_video(driving, max_frames=num_frames or MAX_DRIVING_FRAMES)
        elif num_frames is not None:
            driving = driving[:num_frames]
        return track_video(driving, head=self.head_model, smoothing=self.config.smoothing), fps

    @torch.no_grad()
    def animate(self, avatar: Avatar, driving, mode: Literal["relative", "absolute"] = "relative",
                use_driving_camera: bool = False, height: int = 512, width: int = 512,
                num_frames: int | None = None, source_track=None, output_type: str = "pt",
                background: Sequence[float] | None = None):
        """Re-enact `avatar` with a driving video: one rendered frame per driving frame.

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

        Example:
            ```py
            >>> frames = pipe.animate(pipe.reconstruct("photo.jpg"), "clip.mp4", height=256, width=256)  # doctest: +SKIP
            >>> frames.shape  # doctest: +SKIP
            torch.Size([78, 3, 256, 256])
            ```
        """
        if not isinstance(avatar, Avatar):
            raise ValueError(f"`avatar` must be an fhavatar Avatar (from `reconstruct`), got {type(avatar).__name__}.")
        source_track = source_track if source_track is not None else getattr(avatar, "source_track", None)
        if source_track is None:
            raise ValueError("`source_track` is needed: `avatar` carries no `source_track` (pass the photo's FaceTrack).")
        self.check_inputs(None, driving, 1, height, width, mode, output_type, num_frames)
        tracks, _ = self.track_driving(driving, num_frames)
        params, cameras = transfer_motion(source_track, tracks, mode=mode, use_driving_camera=use_driving_camera)
        vertices = avatar.pose(params.to(self.device))  # [T, V, 3]
        frames = self._render(lambda t: avatar.gaussians(vertices=vertices[t]), cameras, height, width, "re-enacting",
                              background)
        return postprocess(frames, output_type)

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
        if not isinstance(avatar, Avatar):
            raise ValueError(f"`avatar` must be an fhavatar Avatar (from `reconstruct`), got {type(avatar).__name__}.")
        elevation = self.config.orbit_elevation if elevation is None else elevation
        check_render_args(num_frames, height, width, output_type, elevation)
        gaussians = avatar.gaussians()
        cameras = Camera.orbit(int(num_frames), elevation_deg=float(elevation))
        frames = self._render(lambda t: gaussians, cameras, height, width, "orbit", background)
        return postprocess(frames, output_type)

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
        gaussians = avatar.gaussians()
        front = self._render(lambda t: gaussians, source_track.camera, height, width, "front view", background)
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
