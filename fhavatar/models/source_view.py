"""`SourceView`: everything an avatar model reads of the source photo, prepared once by `make_source_view`.

Every avatar model takes one `SourceView` (`model(view) -> UVAttributes`), built by one function that the pipeline
(`FHAvatarPipeline.reconstruct`) and the trainer (`training/step.py`) both call, so what a model sees at
inference is what it saw in training: the photo as taken and composited over the background colour, the matte,
the camera, the fitted source head mesh and its UV maps (position map p, scale map s), the texels' projections into
the photo, the visibility mask M_v (paper §3.3, cached per z-buffer setting) and the prior's tri-plane sampler.
"""

from __future__ import annotations

import contextlib
import functools
from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor

from ..head.uv import UVLayout
from ..rendering.cameras import Camera
from ..rendering.visibility import project_texels, texel_visibility

__all__ = ["VISIBILITY_RESOLUTION", "SourceView", "make_source_view"]

#: Width of the z-buffer of the visibility mask M_v a learned model reads (the height follows the photo's aspect).
VISIBILITY_RESOLUTION = 256

#: A tri-plane sampler: head-space points `[B, M, 3]` -> features `[B, C_T, M]`.
TriplaneSampler = Callable[[Tensor], Tensor]


class SourceView:
    """The source photo and its fitted head, as every avatar model reads them (build it with `make_source_view`).

    Args:
        image (`Tensor` of shape `[B, 3, H, W]`): the photo, RGB in [0, 1], background included.
        camera (`Camera`): the source camera(s), normalised intrinsics (1 or B cameras).
        vertices (`Tensor` of shape `[B, V, 3]`): the fitted source head mesh in head space.
        layout (`UVLayout`): the head model's UV atlas; its resolution K is the attribute maps' resolution.
        mask (`Tensor` of shape `[B, 1, H, W]`, *optional*): the foreground matte in [0, 1] (None: all foreground).
        background (`Tensor` of shape `[3]`, *optional*, defaults to white): the colour behind the matte in
            `composited` (learned models are trained on photos composited over it).
        triplane_sampler (callable, *optional*): the prior's tri-plane sampler `points [B, M, 3] -> [B, C_T, M]`;
            None without a prior.

    Derived inputs are computed on first use and kept: `composited`, `position_map`, `scale_map`,
    `texel_pixels` and `visibility(...)` (one z-buffer per setting).
    """

    def __init__(self, image: Tensor, camera: Camera, vertices: Tensor, layout: UVLayout, mask: Tensor | None = None,
                 background: Tensor | None = None, triplane_sampler: TriplaneSampler | None = None):
        _check_view(image, camera, vertices, layout, mask, background, triplane_sampler)
        # One memory layout whatever the caller's (a permuted HWC photo or a loaded CHW one): same values, same results.
        self.image = image.contiguous()
        self.mask = None if mask is None else mask.to(image.device, image.dtype).contiguous()
        self.layout, self.triplane_sampler = layout, triplane_sampler
        self.vertices = vertices.to(device=image.device, dtype=torch.float32)
        self.camera = camera.to(device=image.device, dtype=torch.float32)
        self.background = (torch.ones(3) if background is None else background).to(image.device, image.dtype)
        self._visibility: dict[tuple, Tensor] = {}

    @property
    def batch_size(self) -> int:
        return self.image.shape[0]

    @property
    def size(self) -> tuple[int, int]:
        """`(height, width)` of the photo in pixels."""
        return tuple(self.image.shape[-2:])

    @functools.cached_property
    def composited(self) -> Tensor:  # [B, 3, H, W]
        """The photo over `background` through the matte (the photo itself without a matte)."""
        if self.mask is None:
            return self.image
        return self.image * self.mask + self.background.view(3, 1, 1) * (1 - self.mask)

    def _geometry(self) -> contextlib.ExitStack:
        """No gradients (the head model has no trainable parameters) and fp32 even inside a mixed-precision model's
        forward (training's autocast): the source geometry is computed as at inference."""
        stack = contextlib.ExitStack()
        stack.enter_context(torch.no_grad())
        stack.enter_context(torch.autocast(self.image.device.type, enabled=False))
        return stack

    @functools.cached_property
    def position_map(self) -> Tensor:  # [B, 3, K, K]
        """p: the source head's UV position map in head space."""
        with self._geometry():
            return self.layout.position_map(self.vertices)

    @functools.cached_property
    def scale_map(self) -> Tensor:  # [B, 1, K, K]
        """s: head units per texel of the source head."""
        with self._geometry():
            return self.layout.scale_map(self.vertices)

    @functools.cached_property
    def texel_pixels(self) -> Tensor:  # [B, K, K, 2]
        """Each texel's projection into the photo, in pixels (x right, y down; pixel centres at +0.5)."""
        height, width = self.size
        with self._geometry():
            return project_texels(self.layout, self.vertices, self.camera, width, height)[0]

    def visibility(self, resolution: int = VISIBILITY_RESOLUTION, depth_tolerance: float = 0.01,
                   min_cosine: float = 0.0, silhouette_margin: int = 0) -> Tensor:  # [B, 1, K, K]
        """M_v (paper §3.3): 1 where the source camera sees the texel (`texel_visibility`), computed once per setting.

        Args:
            resolution (`int`, *optional*, defaults to 256): z-buffer width; its height follows the photo's aspect.
            depth_tolerance, min_cosine, silhouette_margin: see `fhavatar.rendering.visibility.texel_visibility`.
        """
        key = (resolution, depth_tolerance, min_cosine, silhouette_margin)
        if key not in self._visibility:
            height, width = self.size
            with self._geometry():
                self._visibility[key] = texel_visibility(self.layout, self.vertices, self.camera, resolution,
                                                         max(1, round(resolution * height / width)),
                                                         depth_tolerance, min_cosine, silhouette_margin)
        return self._visibility[key]


def _shape(value: Any) -> Any:
    return list(value.shape) if isinstance(value, Tensor) else type(value).__name__


def _check_view(image, camera, vertices, layout, mask, background, triplane_sampler) -> None:
    if not isinstance(layout, UVLayout):
        raise TypeError(f"`layout` must be a fhavatar.head.uv.UVLayout, got {type(layout).__name__}.")
    if not isinstance(image, Tensor) or image.dim() != 4 or image.shape[1] != 3 or not image.is_floating_point():
        raise ValueError(f"`image` must be a float tensor of shape [B, 3, H, W] in [0, 1], got {_shape(image)}.")
    batch, _, height, width = image.shape
    if not isinstance(camera, Camera):
        raise TypeError(f"`camera` must be a fhavatar.rendering.Camera, got {type(camera).__name__}.")
    if len(camera) not in (1, batch):
        raise ValueError(f"`camera` must hold 1 or B={batch} cameras, got {len(camera)}.")
    expected = (batch, layout.num_vertices, 3)
    if not isinstance(vertices, Tensor) or tuple(vertices.shape) != expected:
        raise ValueError(f"`vertices` must have shape {list(expected)} (the source head mesh), got {_shape(vertices)}.")
    if mask is not None and (not isinstance(mask, Tensor) or tuple(mask.shape) != (batch, 1, height, width)):
        raise ValueError(f"`mask` must have shape [{batch}, 1, {height}, {width}] like `image`, got {_shape(mask)}.")
    if background is not None and (not isinstance(background, Tensor) or background.numel() != 3):
        raise ValueError(f"`background` must be a tensor of 3 numbers (RGB in [0, 1]), got {_shape(background)}.")
    if triplane_sampler is not None and not callable(triplane_sampler):
        raise TypeError("`triplane_sampler` must be a callable points [B, M, 3] -> [B, C_T, M], got "
                        f"{type(triplane_sampler).__name__}.")


def make_source_view(
    image: Tensor,  # [B, 3, H, W] in [0, 1]
    camera: Camera,  # 1 or B cameras
    head_model: torch.nn.Module,
    params: Any,  # the head model's parameters of the source (batch B)
    layout: UVLayout,
    mask: Tensor | None = None,  # [B, 1, H, W] in [0, 1]
    background: Tensor | None = None,  # [3]
    prior: Any = None,
    rest_offsets: Tensor | None = None,  # [V, 3]
) -> SourceView:
    """The one way to prepare an avatar model's input from a tracked photo (pipeline and trainer alike).

    Poses the head model (`head_model(params)`, fp32, no gradients: it has no trainable parameters) and, with a
    `prior`, encodes the composited photo into a tri-plane (frozen, no gradients) whose sampler the view carries:
    gradients reach the sampled points (hence the learned shape offsets Δp), never the prior's weights.

    Args:
        image (`Tensor` of shape `[B, 3, H, W]`): the photo, RGB in [0, 1], background included.
        camera (`Camera`): the source camera(s).
        head_model (`HeadModel`): the head model that was fitted; `params` its fitted parameters.
        layout (`UVLayout`): `head_model`'s atlas at the avatar model's resolution.
        mask (`Tensor` of shape `[B, 1, H, W]`, *optional*): the foreground matte.
        background (`Tensor` of shape `[3]`, *optional*, defaults to white): colour composited behind the matte.
        prior (*optional*): a frozen 3D prior with `encode(image, camera)` and `sample(triplane, points)`
            (`PanoHeadPrior`).
        rest_offsets (`Tensor` of shape `[V, 3]`, *optional*): a rest-shape displacement of the head model (the hair
            shell of `fhavatar.tracking.fit_hair_shell`), so the view sees the head the avatar will be bound to.

    Returns:
        `SourceView`.

    Example:
        ```py
        >>> view = make_source_view(image, track.camera, head, track.params, layout, mask=mask)  # doctest: +SKIP
        >>> attributes = avatar_model(view)  # doctest: +SKIP
        ```
    """
    with torch.no_grad():
        vertices = (head_model(params) if rest_offsets is None else head_model(params, rest_offsets=rest_offsets)).float()
    view = SourceView(image, camera, vertices, layout, mask=mask, background=background)
    if prior is not None:
        with torch.no_grad():
            triplane = prior.encode(view.composited, view.camera)

        def sampler(points: Tensor) -> Tensor:  # [B, M, 3] head space -> [B, C_T, M]
            return prior.sample(triplane, points).transpose(1, 2)

        view.triplane_sampler = sampler
    return view
