"""`FHAvatarPipeline`: one photo -> animatable 3D full-head Gaussian avatar -> re-enacted and 360° videos.

The pipeline composes the package's pieces (DESIGN.md, "Data flow"): tracking (`fhavatar.tracking`) -> head model
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
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from diffusers import DiffusionPipeline
from diffusers.utils import BaseOutput
from PIL import Image
from torch import Tensor

from .avatar import Avatar
from .head.open_head import OpenHead
from .head.uv import UVLayout
from .pipeline_hub import download_pipeline, load_pipeline_folder, make_model_card, push_pipeline
from .rendering import Camera, render_gaussians

__all__ = ["FHAvatarPipeline", "FHAvatarPipelineOutput", "make_model_card"]

logger = logging.getLogger(__name__)

#: Largest rendered frame side, in pixels.
MAX_RENDER_SIDE = 4096
#: Smallest rendered frame side, in pixels.
MIN_RENDER_SIDE = 16
#: Most orbit frames one call renders (a 360° loop at 1 frame per 0.1°).
MAX_ORBIT_FRAMES = 3600
#: Most driving frames one call re-enacts (2 minutes at 25 fps).
MAX_DRIVING_FRAMES = 3000
#: Width of the z-buffer of the visibility mask M_v computed for the learned avatar model.
VISIBILITY_RESOLUTION = 256

_OUTPUT_TYPES = ("pil", "np", "pt")


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


def _is_int(value: Any) -> bool:
    return isinstance(value, (int, np.integer)) and not isinstance(value, bool)


def _check_int(name: str, value: Any, lo: int, hi: int) -> None:
    if not _is_int(value) or not lo <= value <= hi:
        raise ValueError(f"`{name}` must be an int in [{lo}, {hi}], got {value!r}.")


def _square_pixels(camera: Camera, width: int, height: int) -> Camera:
    """`camera` with its normalised fx scaled so pixels stay square at `width` x `height` (vertical FOV kept)."""
    if width == height:
        return camera
    intrinsics = camera.intrinsics.clone()
    intrinsics[:, 0, 0] = intrinsics[:, 1, 1] * height / width
    return Camera(cam2world=camera.cam2world, intrinsics=intrinsics)


def _postprocess(frames: Tensor, output_type: str):  # [T, 3, H, W] in [0, 1]
    """Frames as `output_type`: "pt" `[T, 3, H, W]`, "np" float32 `[T, H, W, 3]`, "pil" list of images."""
    frames = frames.detach().float().clamp(0, 1).cpu()
    if output_type == "pt":
        return frames
    array = frames.permute(0, 2, 3, 1).numpy()
    if output_type == "np":
        return array
    return [Image.fromarray((a * 255.0 + 0.5).astype(np.uint8)) for a in array]


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
    ):
        super().__init__()
        _check_int("resolution", resolution, 8, 2048)
        try:
            rgb = [float(c) for c in background]
        except (TypeError, ValueError):
            rgb = []
        if len(rgb) != 3 or not all(math.isfinite(c) and 0.0 <= c <= 1.0 for c in rgb):
            raise ValueError(f"`background` must be 3 numbers in [0, 1] (RGB), got {background!r}.")
        for name, value in (("orbit_elevation", orbit_elevation), ("smoothing", smoothing)):
            if not (isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)):
                raise ValueError(f"`{name}` must be a finite number, got {value!r}.")
        self.register_modules(avatar_model=avatar_model, head_model=head_model, prior=prior)
        self.register_to_config(resolution=resolution, background=rgb,
                                orbit_elevation=float(orbit_elevation), use_mask=bool(use_mask),
                                smoothing=float(smoothing))

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
        from .models import ProjectionAvatarModel

        _check_int("resolution", resolution, 8, 2048)
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
        from .tracking import FaceTrack

        if image is not None or driving_video is None:
            self._check_image(image)
        self._check_render_args(num_orbit_frames, height, width, output_type, name="num_orbit_frames")
        if num_driving_frames is not None:
            _check_int("num_driving_frames", num_driving_frames, 1, MAX_DRIVING_FRAMES)
        if mode not in ("relative", "absolute"):
            raise ValueError(f"`mode` must be 'relative' or 'absolute', got {mode!r}.")
        if driving_video is None:
            return
        if isinstance(driving_video, (str, os.PathLike)):
            from .io import checked_file, video_info

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

    @staticmethod
    def _check_image(image) -> None:
        if isinstance(image, (str, os.PathLike)):
            from .io import checked_file

            checked_file(Path(image), "`image`")
        elif not isinstance(image, (Image.Image, np.ndarray, Tensor)):
            raise ValueError("`image` must be a path, a PIL image, an HWC uint8 array or a [3, H, W] tensor in [0, 1]; "
                             f"got {type(image).__name__}.")

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

    def _attributes(self, track):
        """UV attribute maps of the tracked photo from the avatar model (with the prior's features when present)."""
        from .models import FHAvatarModel
        from .models.visibility import project_texels, texel_visibility

        device, layout = self.device, self.layout
        image = torch.from_numpy(track.image).to(device).permute(2, 0, 1)[None].float() / 255.0
        mask = None if track.mask is None else torch.from_numpy(track.mask).to(device)[None, None].float()
        camera = track.camera.to(device)
        vertices = self.head_model(track.params.to(device)).float()
        sampler = None
        if self.prior is not None:
            triplane = self.prior.encode(image, camera)

            def sampler(points: Tensor) -> Tensor:  # [B, M, 3] head space -> [B, C_T, M] (the avatar model's layout)
                return self.prior.sample(triplane, points).transpose(1, 2)
        if not isinstance(self.avatar_model, FHAvatarModel):
            return self.avatar_model(image, camera, vertices, layout, prior=self.prior, mask=mask)
        if mask is not None:
            # The learned model is trained on photos composited over the background colour (training/train_fhavatar.py
            # stores it in this config), so it sees them the same way here.
            background = torch.tensor(self.config.background, device=device, dtype=image.dtype).view(1, 3, 1, 1)
            image = image * mask + background * (1 - mask)
        height, width = image.shape[-2:]
        visibility = texel_visibility(layout, vertices, camera, VISIBILITY_RESOLUTION,
                                      max(1, round(VISIBILITY_RESOLUTION * height / width)))
        pixels, _ = project_texels(layout, vertices, camera, width, height)
        return self.avatar_model(image, position_map=layout.position_map(vertices),
                                 relative_scale=layout.scale_map(vertices), visibility=visibility, mirror=layout,
                                 local_uv_pixels=pixels, triplane_features=sampler)

    def _render(self, gaussians_at, cameras: Camera, height: int, width: int, desc: str) -> Tensor:
        """Render frame t of `gaussians_at(t)` from `cameras[t]`: `[T, 3, H, W]` on the CPU."""
        background = torch.tensor(self.config.background, device=self.device)
        cameras = _square_pixels(cameras, width, height).to(self.device)
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
        from .io import load_image
        from .tracking import track_image

        self._check_image(image)
        if not isinstance(self.head_model, OpenHead):
            raise ValueError(f"`head_model` must be an OpenHead to be tracked from photos, got {type(self.head_model).__name__}.")
        track = track_image(load_image(image), head=self.head_model, mask=self.config.use_mask)
        attributes = self._attributes(track)
        avatar = Avatar.from_attributes(attributes, self.layout, self.head_model, track.params.to(self.device))
        avatar.source_track = track
        logger.info("reconstructed an avatar of %d Gaussians (K=%d)", len(avatar), self.config.resolution)
        return avatar

    @torch.no_grad()
    def track_driving(self, driving, num_frames: int | None = None) -> tuple[list, float | None]:
        """`(tracks, fps)` of a driving video path, frame list or array (FaceTrack lists pass through; fps None)."""
        from .io import read_video
        from .tracking import FaceTrack, track_video

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
                num_frames: int | None = None, source_track=None, output_type: str = "pt"):
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

        Example:
            ```py
            >>> frames = pipe.animate(pipe.reconstruct("photo.jpg"), "clip.mp4", height=256, width=256)  # doctest: +SKIP
            >>> frames.shape  # doctest: +SKIP
            torch.Size([78, 3, 256, 256])
            ```
        """
        from .tracking import transfer_motion

        if not isinstance(avatar, Avatar):
            raise ValueError(f"`avatar` must be an fhavatar Avatar (from `reconstruct`), got {type(avatar).__name__}.")
        source_track = source_track if source_track is not None else getattr(avatar, "source_track", None)
        if source_track is None:
            raise ValueError("`source_track` is needed: `avatar` carries no `source_track` (pass the photo's FaceTrack).")
        self.check_inputs(None, driving, 1, height, width, mode, output_type, num_frames)
        tracks, _ = self.track_driving(driving, num_frames)
        params, cameras = transfer_motion(source_track, tracks, mode=mode, use_driving_camera=use_driving_camera)
        vertices = self.head_model(params.to(self.device))  # [T, V, 3]
        frames = self._render(lambda t: avatar.gaussians(vertices=vertices[t]), cameras, height, width, "re-enacting")
        return _postprocess(frames, output_type)

    @torch.no_grad()
    def orbit(self, avatar: Avatar, num_frames: int = 72, elevation: float | None = None, height: int = 512,
              width: int = 512, output_type: str = "pt"):
        """Render `avatar` (source pose) from a closed 360° camera loop starting in front of the face.

        Args:
            avatar (`Avatar`): the avatar.
            num_frames (`int`, *optional*, defaults to 72): frames of the loop (5° apart).
            elevation (`float`, *optional*): degrees above the horizon (default `config.orbit_elevation`).
            height, width (`int`, *optional*, default to 512): frame size in pixels.
            output_type (`str`, *optional*, defaults to `"pt"`): `"pt"` `[T, 3, H, W]`, `"np"` or `"pil"`.

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
        self._check_render_args(num_frames, height, width, output_type, elevation)
        gaussians = avatar.gaussians()
        cameras = Camera.orbit(int(num_frames), elevation_deg=float(elevation))
        return _postprocess(self._render(lambda t: gaussians, cameras, height, width, "orbit"), output_type)

    @staticmethod
    def _check_render_args(num_frames, height, width, output_type, elevation=0.0, name="num_frames") -> None:
        _check_int(name, num_frames, 1, MAX_ORBIT_FRAMES)
        _check_int("height", height, MIN_RENDER_SIDE, MAX_RENDER_SIDE)
        _check_int("width", width, MIN_RENDER_SIDE, MAX_RENDER_SIDE)
        if output_type not in _OUTPUT_TYPES:
            raise ValueError(f"`output_type` must be one of {_OUTPUT_TYPES}, got {output_type!r}.")
        if not (isinstance(elevation, (int, float)) and math.isfinite(elevation) and -89 <= elevation <= 89):
            raise ValueError(f"`elevation` must be a number of degrees in [-89, 89], got {elevation!r}.")

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
        # 1. Track the photo and reconstruct the avatar.
        avatar = self.reconstruct(image)
        source_track = avatar.source_track
        # 2. Render it from the photo's own camera.
        gaussians = avatar.gaussians()
        front = self._render(lambda t: gaussians, source_track.camera, height, width, "front view")
        # 3. Orbit 360° around it.
        orbit_frames = self.orbit(avatar, num_orbit_frames, height=height, width=width) if orbit else None
        # 4. Re-enact the driving video.
        frames, fps = None, None
        if driving_video is not None:
            tracks, fps = self.track_driving(driving_video, num_driving_frames)
            frames = self.animate(avatar, tracks, mode=mode, use_driving_camera=use_driving_camera, height=height,
                                  width=width)
        # 5. Convert to `output_type`.
        front_image = _postprocess(front, output_type)[0]
        orbit_frames = None if orbit_frames is None else _postprocess(orbit_frames, output_type)
        frames = None if frames is None else _postprocess(frames, output_type)
        if not return_dict:
            return avatar, frames, orbit_frames, source_track, front_image, fps
        return FHAvatarPipelineOutput(avatar=avatar, frames=frames, orbit_frames=orbit_frames,
                                      source_track=source_track, front_image=front_image, fps=fps)
