"""PanoHead's tri-grid generator (An et al., CVPR'23) in plain PyTorch, with the official state-dict names.

Structure and names follow PanoHead's `TriPlaneGenerator` (`training/triplane.py`), so the `G_ema` state dict of
an official pickle loads with `load_state_dict(strict=True)`:

| attribute          | official class                     | role                                                    |
|--------------------|------------------------------------|---------------------------------------------------------|
| `backbone`         | StyleGAN2 `Generator`              | `mapping` (z, camera label -> 14 latents) + `synthesis` |
|                    |                                    | (-> `3 * 32 * D` channels at 256², the tri-grid)        |
| `decoder`          | `OSGDecoder`                       | mean tri-grid feature -> raw density + 32 features      |
| `torgb`            | `ToRGBLayer` (`use_torgb_raw`)     | 32-channel feature image -> raw RGB                     |
| `bcg_synthesis`    | `SynthesisNetwork` (`use_background`) | a 32-channel background behind the head, at the SR input size |
| `superresolution`  | `SuperresolutionHybrid8XDC`        | 64² raw render -> 512² image                            |
| `t_mapping`        | `MappingNetwork` (w_dim 3)         | "self-adaptive camera" offsets; used only when sampling |
|                    |                                    | random heads from z (`apply_delta_c`), kept for loading |

`render` mirrors the official `synthesis(ws, c)`: rays from the camera label, volume rendering (`renderer.py`),
background blend `features + (1 - alpha) * background`, raw RGB, super-resolution. The official outputs images
in [-1, 1]; here `image = (sr + 1) / 2` clamped to [0, 1].
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .networks import NOISE_MODES, MappingNetwork, OSGDecoder, StyleGAN2Backbone, Superresolution, SynthesisNetwork, ToRGBLayer
from .renderer import RenderingOptions, render_triplane, sample_rays
from .triplane import Triplane, sample_triplane

__all__ = ["LABEL_SIZE", "PanoHeadGenerator"]

#: A camera label: flattened 4x4 cam2world + flattened 3x3 normalised intrinsics.
LABEL_SIZE = 25


class PanoHeadGenerator(nn.Module):
    r"""The PanoHead generator: latents -> tri-grid -> volume-rendered, super-resolved images.

    Args:
        z_dim (`int`, defaults to 512): latent z size.
        c_dim (`int`, defaults to 25): camera-label size (conditioning of the mapping network).
        w_dim (`int`, defaults to 512): intermediate latent w size.
        img_resolution (`int`, defaults to 512): size of the super-resolved image.
        triplane_resolution (`int`, defaults to 256): R, the tri-grid width (a power of two).
        triplane_depth (`int`, defaults to 3): D, the depth levels of each grid.
        triplane_channels (`int`, defaults to 32): C, the features per grid cell.
        channel_base (`int`, defaults to 32768): backbone channels at resolution r are
            `min(channel_base // r, channel_max)`; the background network uses half of `channel_base`.
        channel_max (`int`, defaults to 512): see `channel_base`.
        mapping_layers (`int`, defaults to 2): depth of the mapping networks (PanoHead `--map-depth 2`).
        architecture (`str`, defaults to "skip"): StyleGAN2 synthesis architecture ("orig", "skip", "resnet").
        conv_clamp (`float`, *optional*): activation clamp of the backbone (None: PanoHead trains it in fp32).
        decoder_hidden_dim (`int`, defaults to 64): hidden width of the decoder MLP.
        decoder_output_dim (`int`, defaults to 32): feature channels rendered per pixel (input of `torgb`/SR).
        decoder_activation (`str`, defaults to "none"): "none" (PanoHead), "sigmoid" (EG3D) or "lrelu".
        decoder_lr_multiplier (`float`, defaults to 1.0): equalised-lr multiplier of the decoder layers.
        use_torgb_raw (`bool`, defaults to True): raw RGB from a `ToRGBLayer` (else the first 3 features).
        use_background (`bool`, defaults to True): render a background network behind the head.
        sr_channels (`list[int]`, defaults to `(256, 128)`): channels of the super-resolution blocks (each 2x).
        sr_input_resolution (`int`, defaults to 128): resolution the SR network resizes its input to.
        sr_conv_clamp (`float`, *optional*, defaults to 256): SR activation clamp (official: 256, fp16 blocks).
        sr_antialias (`bool`, defaults to True): antialias when resizing into the SR network.
        neural_rendering_resolution (`int`, defaults to 64): size of the volume-rendered image.
        c_scale (`float`, defaults to 1.0): multiplier of the conditioning label.
        c_gen_conditioning_zero (`bool`, defaults to False): condition the mapping on a zero label.
        rendering (`dict`, *optional*): `RenderingOptions` fields (ray_start, ray_end, box_warp, ...).
    """

    def __init__(
        self,
        z_dim: int = 512,
        c_dim: int = LABEL_SIZE,
        w_dim: int = 512,
        img_resolution: int = 512,
        triplane_resolution: int = 256,
        triplane_depth: int = 3,
        triplane_channels: int = 32,
        channel_base: int = 32768,
        channel_max: int = 512,
        mapping_layers: int = 2,
        architecture: str = "skip",
        conv_clamp: float | None = None,
        decoder_hidden_dim: int = 64,
        decoder_output_dim: int = 32,
        decoder_activation: str = "none",
        decoder_lr_multiplier: float = 1.0,
        use_torgb_raw: bool = True,
        use_background: bool = True,
        sr_channels: Sequence[int] = (256, 128),
        sr_input_resolution: int = 128,
        sr_conv_clamp: float | None = 256,
        sr_antialias: bool = True,
        neural_rendering_resolution: int = 64,
        c_scale: float = 1.0,
        c_gen_conditioning_zero: bool = False,
        rendering: dict | None = None,
    ):
        super().__init__()
        if c_dim != LABEL_SIZE:
            raise ValueError(f"`c_dim` must be {LABEL_SIZE} (a PanoHead camera label), got {c_dim}.")
        if not use_torgb_raw and decoder_output_dim < 3:
            raise ValueError(f"`decoder_output_dim` must be >= 3 without `use_torgb_raw`, got {decoder_output_dim}.")
        if neural_rendering_resolution < 1:
            raise ValueError(f"`neural_rendering_resolution` must be >= 1, got {neural_rendering_resolution}.")
        self.z_dim, self.c_dim, self.w_dim, self.img_resolution = z_dim, c_dim, w_dim, img_resolution
        self.triplane_depth, self.triplane_channels = triplane_depth, triplane_channels
        self.neural_rendering_resolution = neural_rendering_resolution
        self.c_scale, self.c_gen_conditioning_zero = c_scale, c_gen_conditioning_zero
        self.rendering = RenderingOptions(**(rendering or {}))
        synthesis = dict(channel_max=channel_max, architecture=architecture, conv_clamp=conv_clamp)

        self.backbone = StyleGAN2Backbone(z_dim, c_dim, w_dim, img_resolution=triplane_resolution,
                                          img_channels=3 * triplane_channels * triplane_depth, mapping_layers=mapping_layers,
                                          channel_base=channel_base, **synthesis)
        self.superresolution = Superresolution(decoder_output_dim, img_resolution, sr_input_resolution, sr_channels, w_dim=w_dim,
                                               conv_clamp=sr_conv_clamp, antialias=sr_antialias)
        self.decoder = OSGDecoder(triplane_channels, decoder_hidden_dim, decoder_output_dim, decoder_activation,
                                  decoder_lr_multiplier)
        self.torgb = ToRGBLayer(decoder_output_dim, 3, w_dim) if use_torgb_raw else None
        self.bcg_synthesis = (
            SynthesisNetwork(w_dim, sr_input_resolution, decoder_output_dim, channel_base=channel_base // 2, **synthesis)
            if use_background else None
        )
        self.t_mapping = MappingNetwork(z_dim, c_dim, 3, num_ws=1, num_layers=mapping_layers, last_activation="linear",
                                        lr_multiplier=1.0)

    # ------------------------------------------------------------------ sizes
    @property
    def num_ws(self) -> int:
        """Latents per image (PanoHead: 14)."""
        return self.backbone.num_ws

    @property
    def triplane_resolution(self) -> int:
        return self.backbone.synthesis.img_resolution

    def _check_ws(self, ws: Tensor) -> None:
        if not isinstance(ws, Tensor) or ws.dim() != 3 or ws.shape[1:] != (self.num_ws, self.w_dim):
            raise ValueError(f"`ws` must have shape [B, {self.num_ws}, {self.w_dim}], got {getattr(ws, 'shape', type(ws))}.")

    @staticmethod
    def _check_label(camera_label: Tensor, batch: int | None = None) -> None:
        ok = isinstance(camera_label, Tensor) and camera_label.dim() == 2 and camera_label.shape[1] == LABEL_SIZE
        if not ok or (batch is not None and camera_label.shape[0] != batch):
            b = "B" if batch is None else batch
            got = getattr(camera_label, "shape", type(camera_label))
            raise ValueError(f"`camera_label` must have shape [{b}, {LABEL_SIZE}], got {got}.")

    # ------------------------------------------------------------------ latents and tri-grid
    def mapping(self, z: Tensor, c: Tensor, truncation_psi: float = 1.0, truncation_cutoff: int | None = None) -> Tensor:
        """z `[B, z_dim]` + camera label c `[B, 25]` -> ws `[B, num_ws, w_dim]` (official `TriPlaneGenerator.mapping`)."""
        if not isinstance(z, Tensor) or z.dim() != 2 or z.shape[1] != self.z_dim:
            raise ValueError(f"`z` must have shape [B, {self.z_dim}], got {getattr(z, 'shape', type(z))}.")
        self._check_label(c, z.shape[0])
        if self.c_gen_conditioning_zero:
            c = torch.zeros_like(c)
        return self.backbone.mapping(z, c * self.c_scale, truncation_psi=truncation_psi, truncation_cutoff=truncation_cutoff)

    def synthesize(self, ws: Tensor, noise_mode: str = "const", generator: torch.Generator | None = None) -> Triplane:
        """ws `[B, num_ws, w_dim]` -> the tri-grid (`Triplane` carrying `ws` for rendering).

        `noise_mode` "const" (default, deterministic) uses the stored noise maps, "random" draws them from
        `generator`, "none" disables noise.
        """
        self._check_ws(ws)
        if noise_mode not in NOISE_MODES:
            raise ValueError(f"`noise_mode` must be one of {NOISE_MODES}, got {noise_mode!r}.")
        raw = self.backbone.synthesis(ws, noise_mode=noise_mode, fused_modconv=not self.training, generator=generator)
        return Triplane.from_backbone(raw, self.triplane_channels, self.triplane_depth, ws=ws)

    def sample(self, triplane: Triplane, points: Tensor) -> tuple[Tensor, Tensor]:
        """Decoded colour features `[B, P, C_out]` and raw densities `[B, P, 1]` at points `[B, P, 3]` (prior box)."""
        return self.decoder(sample_triplane(triplane, points, box_warp=self.rendering.box_warp))

    # ------------------------------------------------------------------ rendering
    def render(
        self,
        triplane: Triplane,
        ws: Tensor,  # [B, num_ws, w_dim]
        camera_label: Tensor,  # [B, 25]
        resolution: int | None = None,
        neural_rendering_resolution: int | None = None,
        generator: torch.Generator | None = None,
    ) -> tuple[Tensor, Tensor, Tensor]:
        """Render the tri-grid from `camera_label` (official `TriPlaneGenerator.synthesis` after the backbone).

        Args:
            triplane (`Triplane`): `[B, 3, D, C, R, R]`.
            ws (`Tensor` of shape `[B, num_ws, w_dim]`): latents for the background, raw RGB and SR layers.
            camera_label (`Tensor` of shape `[B, 25]`): PanoHead labels (`Camera.to_label()`).
            resolution (`int`, *optional*): output size; defaults to `img_resolution` (other sizes are resized
                from it, bilinear with antialiasing).
            neural_rendering_resolution (`int`, *optional*): ray grid size; defaults to the configured 64.
            generator (`torch.Generator`, *optional*): randomises the depth samples like official training;
                without it rendering is deterministic.

        Returns:
            `(image [B, 3, H, H] in [0, 1], depth [B, 1, h, h], alpha [B, 1, h, h])` with H = `resolution` and
            h = the neural rendering resolution; depth is the expected ray distance from the camera centre.
        """
        if not isinstance(triplane, Triplane):
            raise TypeError(f"`triplane` must be a Triplane, got {type(triplane).__name__}.")
        b = len(triplane)
        self._check_ws(ws)
        self._check_label(camera_label, b)
        if ws.shape[0] != b:
            raise ValueError(f"`ws` must have batch {b} (the tri-grid's), got {ws.shape[0]}.")
        n = neural_rendering_resolution or self.neural_rendering_resolution
        label = camera_label.to(triplane.planes.dtype)
        cam2world, intrinsics = label[:, :16].reshape(b, 4, 4), label[:, 16:].reshape(b, 3, 3)
        origins, directions = sample_rays(cam2world, intrinsics, n)
        features, depth, alpha = render_triplane(triplane, self.decoder, origins, directions, self.rendering, generator)
        feature_image = features.transpose(1, 2).reshape(b, -1, n, n)
        depth = depth.transpose(1, 2).reshape(b, 1, n, n)
        alpha = alpha.transpose(1, 2).reshape(b, 1, n, n)
        fused = not self.training

        if self.decoder.activation == "sigmoid":  # EG3D renders colours in [0, 1]; SR expects [-1, 1]
            feature_image = feature_image * 2 - 1
        if self.bcg_synthesis is not None:
            bcg_ws = ws[:, : self.bcg_synthesis.num_ws]
            if bcg_ws.shape[1] < self.bcg_synthesis.num_ws:  # repeat the last latent when the head has fewer
                bcg_ws = torch.cat([bcg_ws, bcg_ws[:, -1:].repeat(1, self.bcg_synthesis.num_ws - bcg_ws.shape[1], 1)], 1)
            background = self.bcg_synthesis(bcg_ws, noise_mode="const", fused_modconv=fused)
            background = F.interpolate(background, size=(n, n), mode="bilinear", align_corners=False,
                                       antialias=self.superresolution.antialias)
            feature_image = feature_image + (1 - alpha) * background
        if self.torgb is not None:
            rgb = self.torgb(feature_image, ws[:, -1], fused_modconv=False).to(torch.float32)
        else:
            rgb = feature_image[:, :3]
        sr = self.superresolution(rgb, feature_image, ws, noise_mode="none", fused_modconv=fused)
        image = ((sr + 1) / 2).clamp(0, 1)
        if resolution is not None and resolution != image.shape[-1]:
            image = F.interpolate(image, size=(resolution, resolution), mode="bilinear", align_corners=False, antialias=True)
        return image, depth, alpha
