"""`PanoHeadPrior`: the frozen full-head prior of FHAvatar (paper §3.3): PanoHead + dual-encoder inversion.

`encode(image, camera)` inverts a photo into PanoHead's tri-grid T (feed-forward dual encoder), `sample(T, points)`
reads its features at head-space points (the global UV features F_g of the avatar model), and
`render(T, camera)` volume-renders and super-resolves it (the pseudo multi-view supervision of §3.5).

Coordinates. FHAvatar's head space *is* PanoHead's world frame (ARCHITECTURE.md): +y up, the face toward +z,
cameras at radius 2.7, the tri-grid spanning the cube `[-box_warp/2, box_warp/2]³` = `[-0.5, 0.5]³` around the
origin. `sample` therefore maps a head-space point p to the prior's box as `p + head_offset` (default: zero,
no scale), and `Camera.to_label()` is directly PanoHead's camera label (OpenCV axes, normalised intrinsics).

The official weights are not shipped; `fhavatar.tools.convert_prior` turns official checkpoints into `from_pretrained`
folders. Treat them as non-commercial (ARCHITECTURE.md): PanoHead's README shows a CC-BY-4.0 badge, but its network code
derives from NVIDIA's EG3D (NVIDIA Source Code License, non-commercial); the inversion follows its authors' terms.
"""

from __future__ import annotations

import copy
import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
from diffusers import ConfigMixin, ModelMixin
from diffusers.configuration_utils import register_to_config
from diffusers.utils import BaseOutput
from torch import Tensor

from ..rendering.cameras import Camera
from .generator import PanoHeadGenerator
from .inversion import PRESETS as INVERSION_PRESETS
from .inversion import DualEncoderInversion
from .triplane import Triplane, sample_triplane

__all__ = ["GENERATOR_PRESETS", "PanoHeadPrior", "PriorRenderOutput"]

logger = logging.getLogger(__name__)

#: `PanoHeadGenerator` kwargs. "official": PanoHead's released 512² model (train.py `--cfg=ffhq` rendering,
#: `--triplane_depth 3 --use_torgb_raw 1 --decoder_activation none`, background on, SuperresolutionHybrid8XDC,
#: mapping depth 2, 64² neural rendering). "tiny": the same architecture at toy sizes for CPU tests.
GENERATOR_PRESETS: dict[str, dict[str, Any]] = {
    "official": dict(
        z_dim=512, w_dim=512, img_resolution=512, triplane_resolution=256, triplane_depth=3, triplane_channels=32,
        channel_base=32768, channel_max=512, mapping_layers=2, decoder_hidden_dim=64, decoder_output_dim=32,
        decoder_activation="none", use_torgb_raw=True, use_background=True, sr_channels=[256, 128],
        sr_input_resolution=128, sr_conv_clamp=256, neural_rendering_resolution=64,
        rendering=dict(ray_start=2.25, ray_end=3.3, box_warp=1.0, depth_resolution=48, depth_resolution_importance=48,
                       triplane_crop=0.1),
    ),
    "tiny": dict(
        z_dim=32, w_dim=32, img_resolution=64, triplane_resolution=32, triplane_depth=3, triplane_channels=8,
        channel_base=256, channel_max=64, mapping_layers=2, decoder_hidden_dim=16, decoder_output_dim=8,
        decoder_activation="none", use_torgb_raw=True, use_background=True, sr_channels=[16, 8],
        sr_input_resolution=16, sr_conv_clamp=256, neural_rendering_resolution=16,
        rendering=dict(ray_start=2.25, ray_end=3.3, box_warp=1.0, depth_resolution=12, depth_resolution_importance=12,
                       triplane_crop=0.1),
    ),
}


@dataclass
class PriorRenderOutput(BaseOutput):
    """Output of `PanoHeadPrior.render`.

    Args:
        image (`Tensor` of shape `[B, 3, H, H]`): the super-resolved render in [0, 1].
        depth (`Tensor` of shape `[B, 1, h, h]`): expected distance along each ray from the camera centre
            (the 64² neural rendering resolution officially).
        alpha (`Tensor` of shape `[B, 1, h, h]`): accumulated opacity of the head (1 - background weight).
    """

    image: Tensor
    depth: Tensor
    alpha: Tensor


class PanoHeadPrior(ModelMixin, ConfigMixin):
    r"""PanoHead's tri-grid GAN with a feed-forward dual-encoder inversion, frozen (paper §3.3).

    Every parameter has `requires_grad=False` and the module stays in eval mode (`train()` is a no-op), but all
    methods are differentiable with respect to their *inputs* (image, points, tri-grid), so losses can train a
    network through the prior.

    Args:
        generator_config (`dict`, *optional*): `PanoHeadGenerator` kwargs (sizes, rendering options); defaults to
            `GENERATOR_PRESETS["official"]`.
        inversion_config (`dict`, *optional*): `DualEncoderInversion` kwargs; None builds a generator-only prior
            (`encode` then raises), e.g. a converted PanoHead pickle without an inversion checkpoint.
        head_offset (`list[float]`, *optional*, defaults to `(0, 0, 0)`): added to head-space points to get
            prior-box coordinates (head space already uses PanoHead's frame and units).

    Example:
        ```py
        >>> prior = PanoHeadPrior.from_preset("tiny")
        >>> tri = prior.generator.synthesize(prior.generator.mapping(torch.randn(1, 32), Camera.orbit(1).to_label()))
        >>> prior.sample(tri, torch.zeros(1, 10, 3)).shape      # [1, 10, 8]
        >>> prior.render(tri, Camera.orbit(4)[:1], 64).image.shape  # [1, 3, 64, 64]
        ```
    """

    config_name = "config.json"

    @register_to_config
    def __init__(
        self,
        generator_config: dict[str, Any] | None = None,
        inversion_config: dict[str, Any] | None = None,
        head_offset: Sequence[float] = (0.0, 0.0, 0.0),
    ):
        super().__init__()
        if generator_config is not None and not isinstance(generator_config, dict):
            raise TypeError(
                f"`generator_config` must be a dict of PanoHeadGenerator kwargs or None, got {type(generator_config).__name__}."
            )
        if inversion_config is not None and not isinstance(inversion_config, dict):
            got = type(inversion_config).__name__
            raise TypeError(f"`inversion_config` must be a dict of DualEncoderInversion kwargs or None, got {got}.")
        ok = isinstance(head_offset, Sequence) and len(head_offset) == 3
        if not ok or not all(isinstance(v, (int, float)) and math.isfinite(v) for v in head_offset):
            raise ValueError(f"`head_offset` must be three finite numbers, got {head_offset!r}.")
        self.generator = PanoHeadGenerator(**(GENERATOR_PRESETS["official"] if generator_config is None else generator_config))
        if inversion_config is not None:
            self.inversion = DualEncoderInversion(**inversion_config)
        else:
            self.inversion = None
        self._head_offset = tuple(float(v) for v in head_offset)
        self.requires_grad_(False)
        self.eval()

    @classmethod
    def from_preset(cls, name: str, **overrides: Any) -> PanoHeadPrior:
        """Build "official" (PanoHead's sizes) or "tiny" (tests); `overrides` replace config entries."""
        if name not in GENERATOR_PRESETS:
            raise ValueError(f"`name` must be one of {sorted(GENERATOR_PRESETS)}, got {name!r}.")
        config = dict(
            generator_config=copy.deepcopy(GENERATOR_PRESETS[name]), inversion_config=copy.deepcopy(INVERSION_PRESETS[name])
        )
        return cls(**{**config, **overrides})

    @classmethod
    def from_pretrained(cls, *args: Any, **kwargs: Any) -> PanoHeadPrior:
        """`ModelMixin.from_pretrained`, with every tensor copied into freshly allocated memory.

        Loaded tensors can live at unaligned offsets of the safetensors file, and CPU convolution kernels then
        take another code path: the outputs differ from the saved model's in the last bits. Fresh copies make a
        loaded prior compute bit-identically (and release the file mapping).
        """
        model = super().from_pretrained(*args, **kwargs)
        with torch.no_grad():
            for tensor in [*model.parameters(), *model.buffers()]:
                tensor.data = tensor.data.clone()
        return model

    def train(self, mode: bool = True) -> PanoHeadPrior:
        """The prior is frozen: it always stays in eval mode."""
        return super().train(False)

    # ------------------------------------------------------------------ sizes
    @property
    def triplane_channels(self) -> int:
        """C_T, the feature channels `sample` returns (PanoHead: 32)."""
        return self.generator.triplane_channels

    @property
    def box_warp(self) -> float:
        """Side of the cube covered by the tri-grid, in head-space units."""
        return self.generator.rendering.box_warp

    # ------------------------------------------------------------------ validation
    def check_inputs(self, image: Tensor | None = None, camera: Camera | None = None, batch: int | None = None) -> None:
        """Raise `ValueError`/`TypeError` naming the argument on malformed inputs of `encode`/`render`."""
        if image is not None:
            if not isinstance(image, Tensor) or image.dim() != 4 or image.shape[1] != 3 or not image.is_floating_point():
                got = getattr(image, "shape", type(image))
                raise ValueError(f"`image` must be a float tensor [B, 3, H, W] in [0, 1], got {got}.")
            lo, hi = (float(image.detach().min()), float(image.detach().max())) if image.numel() else (0.0, 1.0)
            if lo < -1e-3 or hi > 1 + 1e-3:
                raise ValueError(f"`image` must be in [0, 1], got values in [{lo:.3g}, {hi:.3g}].")
            batch = image.shape[0]
        if camera is not None:
            if not isinstance(camera, Camera):
                raise TypeError(f"`camera` must be a fhavatar Camera, got {type(camera).__name__}.")
            if batch is not None and len(camera) != batch:
                raise ValueError(f"`camera` must hold {batch} cameras (one per image/tri-grid), got {len(camera)}.")

    # ------------------------------------------------------------------ API
    def encode(self, image: Tensor, camera: Camera) -> Triplane:
        """Invert photos into tri-grids.

        Args:
            image (`Tensor` of shape `[B, 3, H, W]`): aligned portraits in [0, 1], any size (the inversion
                resizes and normalises them itself).
            camera (`Camera`): the photos' cameras (B of them).

        Returns:
            `Triplane` `[B, 3, D, C, R, R]` (with its `ws`), differentiable with respect to `image`.
        """
        self.check_inputs(image=image, camera=camera)
        if self.inversion is None:
            raise ValueError(
                "This PanoHeadPrior has no inversion (config `inversion_config` is None): convert an inversion checkpoint "
                "with `python -m fhavatar.tools.convert_prior inversion ...` or build it with `inversion_config=` kwargs."
            )
        label = camera.to_label().to(device=image.device, dtype=image.dtype)
        return self.inversion(image, label, self.generator)

    def sample(
        self,
        triplane: Triplane,
        points: Tensor,  # [B, P, 3] in head space
    ) -> Tensor:  # [B, P, C_T]
        """Tri-grid features at head-space `points` (mapped into the prior's box by `head_offset`).

        Points outside the `[-box_warp/2, box_warp/2]³` cube get features fading to zero (PanoHead's padding).
        The avatar model wants channels first: `lambda p: prior.sample(tri, p).transpose(1, 2)`.
        """
        if not isinstance(points, Tensor) or points.dim() != 3 or points.shape[-1] != 3:
            raise ValueError(f"`points` must be a tensor [B, P, 3], got {getattr(points, 'shape', type(points))}.")
        offset = torch.tensor(self._head_offset, device=points.device, dtype=points.dtype)
        return sample_triplane(triplane, points + offset, box_warp=self.box_warp)

    def render(
        self,
        triplane: Triplane,
        camera: Camera,
        resolution: int | None = None,
        ws: Tensor | None = None,  # [B, num_ws, w_dim]
        generator: torch.Generator | None = None,
    ) -> PriorRenderOutput:
        """Volume-render and super-resolve `triplane` from `camera`.

        Args:
            triplane (`Triplane`): `[B, ...]` tri-grids.
            camera (`Camera`): B cameras in head space (moved by `-head_offset` into the prior's frame).
            resolution (`int`, *optional*): output size, defaults to the generator's (512 officially).
            ws (`Tensor` of shape `[B, num_ws, w_dim]`, *optional*): latents for the style-modulated layers;
                defaults to `triplane.ws`, else the mapping network's average latent `w_avg`.
            generator (`torch.Generator`, *optional*): random depth samples as in PanoHead; deterministic without.

        Returns:
            `PriorRenderOutput(image [B, 3, H, H], depth [B, 1, h, h], alpha [B, 1, h, h])`.
        """
        if not isinstance(triplane, Triplane):
            raise TypeError(f"`triplane` must be a Triplane, got {type(triplane).__name__}.")
        b = len(triplane)
        self.check_inputs(camera=camera, batch=b)
        if resolution is not None and (not isinstance(resolution, int) or resolution < 1):
            raise ValueError(f"`resolution` must be a positive int or None, got {resolution!r}.")
        gen = self.generator
        if ws is None:
            ws = triplane.ws
        if ws is None:
            logger.info("PanoHeadPrior.render: no latents given; using the average latent w_avg.")
            ws = gen.backbone.mapping.w_avg.to(triplane.planes)[None, None].expand(b, gen.num_ws, -1)
        cam2world = camera.cam2world.clone()
        cam2world[:, :3, 3] = cam2world[:, :3, 3] + torch.tensor(self._head_offset).to(cam2world)
        label = Camera(cam2world=cam2world, intrinsics=camera.intrinsics).to_label()
        label = label.to(device=triplane.planes.device, dtype=triplane.planes.dtype)
        image, depth, alpha = gen.render(triplane, ws, label, resolution=resolution, generator=generator)
        return PriorRenderOutput(image=image, depth=depth, alpha=alpha)
