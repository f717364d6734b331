"""`FHAvatarModel`: source photo -> UV Gaussian attribute maps in one forward pass (paper §3.3–3.4, §B).

Scales are numbered as in the paper: i = 1 is the **coarsest**, i = N the finest. The UV maps of scale i are
`R_i = K / 2^(N-i)` texels wide (full preset: 32, 64, 128, 256); the image features of scale i have stride
`2^(N-i+1)` (a 512² photo: 32², 64², 128², 256²). Every fusion scale uses the same token grid `R_1 × R_1`, with
patches of `2^(i-1)` texels (1, 2, 4, 8): the "large patches used in large resolution feature maps" of §3.4.

Data flow (eq. numbers of the paper). `forward(view)` reads a `SourceView` and calls `predict_maps` with its inputs:

1. F_T^p: the prior's tri-plane features at the source positions p (`triplane_features`), or — with no prior
   (the "w/o prior" / built-in mode) — a learned constant UV feature map (a dataset-mean full-head feature).
2. UV shape refinement (eq. 2): Δp = `max_shape_offset` · tanh(UNet([F_T^p, p])) (last layer zero-initialised,
   so Δp = 0 at start), p_r = p + Δp.
3. Global UV features: F_g = the tri-plane features at p_r (the constant map without a prior), encoded by the UV
   map encoder into F_g^1..F_g^N.
4. Local UV features: the CNN image encoder gives F_s^1..F_s^N; every texel samples each scale bilinearly at its
   projection into the source image (`local_uv_pixels` = the view's `texel_pixels`, or p_r projected through
   `camera`); multiplied by the visibility M_v and pooled to R_i by visibility-weighted averaging, this gives F_l^i
   (and M_v^i = the visible fraction of each block). The network has no rasteriser: M_v (a depth test of the source
   mesh) comes in.
5. Symmetric UV fusion per scale (`fusion.SymmetricUVFusion`, eq. 3–5) -> F_c^i, F_f^i.
6. UV decoder D_uv: from F_c^1, upsampled with residual blocks, adding F_f^2..F_f^N -> raw A `[B, 14, K, K]`
   -> `activate_attributes`. The auxiliary A^1 is D_uv run on F_c^1 alone (same weights, no F_f^i added): the
   paper uses it to keep D_uv "from relying too much on high-resolution inputs", which only constrains D_uv
   itself if the same decoder produces it.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Sequence
from typing import Any, Union

import torch
import torch.nn.functional as F
from diffusers import ConfigMixin, ModelMixin
from diffusers.configuration_utils import register_to_config
from torch import Tensor, nn

from ..rendering.cameras import Camera
from .attributes import NUM_ATTRIBUTE_CHANNELS, UVAttributes, activate_attributes
from .fusion import MirrorLike, SymmetricUVFusion, downsample_mirror_index, resolve_mirror_index
from .layers import PyramidEncoder, UNet, UVDecoder
from .source_view import VISIBILITY_RESOLUTION, SourceView

__all__ = ["FHAvatarModel", "PRESETS"]

#: Named configurations (plain dicts of `FHAvatarModel` kwargs). "full": the paper's sizes (K = 256, N = 4,
#: w = 7, 2 fusion layers; channel widths are ours, the paper gives none). "tiny": CPU tests.
PRESETS: dict[str, dict[str, Any]] = {
    "full": dict(
        resolution=256,
        num_scales=4,
        image_channels=(256, 256, 128, 64),
        uv_channels=(256, 128, 64, 32),
        token_channels=256,
        num_heads=8,
        num_fusion_layers=2,
        window_size=7,
        ffn_ratio=2,
        triplane_channels=32,
        refine_channels=(32, 64, 128, 128),
        num_res_blocks=1,
    ),
    "tiny": dict(
        resolution=32,
        num_scales=3,
        image_channels=(16, 16, 8),
        uv_channels=(16, 16, 8),
        token_channels=16,
        num_heads=2,
        num_fusion_layers=2,
        window_size=3,
        ffn_ratio=2,
        triplane_channels=8,
        refine_channels=(8, 16),
        num_res_blocks=1,
    ),
}

TriplaneLike = Union[Callable[[Tensor], Tensor], Tensor, None]


def _positive_int(name: str, value: Any, minimum: int = 1) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ValueError(f"`{name}` must be an int >= {minimum}, got {value!r}.")
    return value


def _channels(name: str, value: Any, length: int | None = None) -> tuple[int, ...]:
    ok = isinstance(value, Sequence) and not isinstance(value, str) and len(value) > 0
    ok = ok and all(isinstance(c, int) and not isinstance(c, bool) and c > 0 for c in value)
    if not ok or (length is not None and len(value) != length):
        expected = f"{length} positive ints" if length is not None else "a non-empty list of positive ints"
        raise ValueError(f"`{name}` must be {expected}, got {value!r}.")
    return tuple(value)


class FHAvatarModel(ModelMixin, ConfigMixin):
    r"""The FHAvatar network (paper §3.3–3.4): photo + source head + optional prior -> `UVAttributes`.

    See the module docstring for the data flow. Channel lists are **coarsest scale first** (i = 1..N).

    Args:
        resolution (`int`, *optional*, defaults to 256): K, the UV map size; divisible by `2^(num_scales-1)` and
            by `2^(len(refine_channels)-1)`.
        num_scales (`int`, *optional*, defaults to 4): N, the number of feature scales (>= 1).
        image_channels (`list[int]`, *optional*, defaults to `(256, 256, 128, 64)`): channels of the image
            features F_s^i (= of F_l^i), coarsest first.
        uv_channels (`list[int]`, *optional*, defaults to `(256, 128, 64, 32)`): channels of F_g^i, F_c^i, F_f^i
            and of the decoder stages, coarsest first.
        token_channels (`int`, *optional*, defaults to 256): channels of the fusion patch tokens.
        num_heads (`int`, *optional*, defaults to 8): attention heads (divides `token_channels`).
        num_fusion_layers (`int`, *optional*, defaults to 2): transformer blocks per scale (§B: 2).
        window_size (`int`, *optional*, defaults to 7): w, the local window (odd; §B: 7).
        ffn_ratio (`int`, *optional*, defaults to 2): expansion of the convolutional feed-forward networks.
        triplane_channels (`int`, *optional*, defaults to 32): C_T, channels of the prior's tri-plane features
            (PanoHead: 32); also the size of the learned constant map used without a prior.
        refine_channels (`list[int]`, *optional*, defaults to `(32, 64, 128, 128)`): channels of the shape
            refinement UNet levels, finest first.
        num_res_blocks (`int`, *optional*, defaults to 1): residual blocks per encoder level / decoder stage.
        max_shape_offset (`float`, *optional*, defaults to 0.25): bound of |Δp| per axis in head units
            (tanh-bounded; the paper's L_shape threshold ε = 0.1 lies well inside it).
        max_offset (`float`, *optional*, defaults to 0.02): bound of the Gaussian position offsets A_position.
        scale_range (`list[float]`, *optional*, defaults to `(0.1, 4.0)`): Gaussian scales in texel sizes.
        use_shape_refinement (`bool`, *optional*, defaults to True): False = "w/o Δp_uv" (p_r = p, no UNet).
        use_local_features (`bool`, *optional*, defaults to True): False = "w/o {F_l^i}" (zeros, no image encoder).
        use_fusion_transformer (`bool`, *optional*, defaults to True): False = "w/o T" (convolutions instead).
        use_symmetry (`bool`, *optional*, defaults to True): False = "w/o Sym." (no mirrored window/flip term).
        visibility_resolution (`int`, *optional*, defaults to 256): width of the source-mesh z-buffer of M_v that
            `forward` reads of a `SourceView` (the model sees M_v at inference as in training).

    Example:
        ```py
        >>> model = FHAvatarModel.from_preset("tiny")
        >>> out = model(make_source_view(image, camera, head, params, layout), return_aux=True)
        >>> out = model.predict_maps(image, position_map=p, relative_scale=layout.relative_scale, visibility=m_v,
        ...                          local_uv_pixels=pix, mirror=layout, return_aux=True)  # the same, from tensors
        >>> out.colors.shape, out.aux.colors.shape    # [B, 3, 32, 32] twice
        ```
    """

    config_name = "config.json"

    @register_to_config
    def __init__(
        self,
        resolution: int = 256,
        num_scales: int = 4,
        image_channels: Sequence[int] = (256, 256, 128, 64),
        uv_channels: Sequence[int] = (256, 128, 64, 32),
        token_channels: int = 256,
        num_heads: int = 8,
        num_fusion_layers: int = 2,
        window_size: int = 7,
        ffn_ratio: int = 2,
        triplane_channels: int = 32,
        refine_channels: Sequence[int] = (32, 64, 128, 128),
        num_res_blocks: int = 1,
        max_shape_offset: float = 0.25,
        max_offset: float = 0.02,
        scale_range: Sequence[float] = (0.1, 4.0),
        use_shape_refinement: bool = True,
        use_local_features: bool = True,
        use_fusion_transformer: bool = True,
        use_symmetry: bool = True,
        visibility_resolution: int = VISIBILITY_RESOLUTION,
    ):
        super().__init__()
        n = _positive_int("num_scales", num_scales)
        k = _positive_int("resolution", resolution, 8)
        image_channels = _channels("image_channels", image_channels, n)
        uv_channels = _channels("uv_channels", uv_channels, n)
        refine_channels = _channels("refine_channels", refine_channels)
        if k % 2 ** (n - 1):
            raise ValueError(f"`resolution` must be divisible by 2^(num_scales-1) = {2 ** (n - 1)}, got {k}.")
        if k % 2 ** (len(refine_channels) - 1):
            raise ValueError(
                f"`resolution` must be divisible by 2^(len(refine_channels)-1) = {2 ** (len(refine_channels) - 1)}, got {k}."
            )
        heads = _positive_int("num_heads", num_heads)
        if _positive_int("token_channels", token_channels) % heads:
            raise ValueError(f"`num_heads` ({heads}) must divide `token_channels` ({token_channels}).")
        if _positive_int("window_size", window_size) % 2 == 0:
            raise ValueError(f"`window_size` must be odd, got {window_size}.")
        if _positive_int("visibility_resolution", visibility_resolution, 16) > 4096:
            raise ValueError(f"`visibility_resolution` must be an int in [16, 4096], got {visibility_resolution!r}.")
        for name in ("num_fusion_layers", "ffn_ratio", "triplane_channels", "num_res_blocks"):
            _positive_int(name, locals()[name])
        for name, value in (("max_shape_offset", max_shape_offset), ("max_offset", max_offset)):
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 < value < math.inf:
                raise ValueError(f"`{name}` must be a positive finite number, got {value!r}.")
        if not (isinstance(scale_range, Sequence) and len(scale_range) == 2 and 0 < scale_range[0] < scale_range[1]):
            raise ValueError(f"`scale_range` must be two numbers (lo, hi) with 0 < lo < hi, got {scale_range!r}.")
        for name in ("use_shape_refinement", "use_local_features", "use_fusion_transformer", "use_symmetry"):
            if not isinstance(locals()[name], bool):
                raise ValueError(f"`{name}` must be a bool, got {locals()[name]!r}.")

        #: R_i, the UV size of scale i (coarsest first).
        self.scale_resolutions = tuple(k // 2 ** (n - 1 - i) for i in range(n))
        # Learned constant F_T used with no prior (a dataset-mean full-head UV feature map).
        self.mean_triplane_features = nn.Parameter(0.02 * torch.randn(1, triplane_channels, k, k))
        self.refiner = UNet(triplane_channels + 3, 3, refine_channels) if use_shape_refinement else None
        self.uv_encoder = PyramidEncoder(triplane_channels, uv_channels[::-1], 1, num_res_blocks)
        self.image_encoder = PyramidEncoder(3, image_channels[::-1], 2, num_res_blocks) if use_local_features else None
        self.fusions = nn.ModuleList(
            SymmetricUVFusion(
                uv_channels[i],
                image_channels[i],
                token_channels,
                patch_size=2**i,
                num_layers=num_fusion_layers,
                num_heads=heads,
                window_size=window_size,
                ffn_ratio=ffn_ratio,
                use_transformer=use_fusion_transformer,
                use_symmetry=use_symmetry,
                fuse_local=i > 0,
            )
            for i in range(n)
        )
        self.decoder = UVDecoder(uv_channels, NUM_ATTRIBUTE_CHANNELS, num_res_blocks)

    # ------------------------------------------------------------------ construction
    @classmethod
    def from_preset(cls, name: str, **overrides: Any) -> FHAvatarModel:
        """Build a model from `PRESETS[name]` ("full" or "tiny"), with keyword `overrides` of its config."""
        if name not in PRESETS:
            raise ValueError(f"`name` must be one of {sorted(PRESETS)}, got {name!r}.")
        return cls(**{**PRESETS[name], **overrides})

    # ------------------------------------------------------------------ validation
    def check_inputs(self, image, position_map, relative_scale, visibility, local_uv_pixels, camera, triplane_features):
        """Raise `ValueError`/`TypeError` naming the argument on any malformed input (see `forward`)."""
        k = self.config.resolution

        def shape_of(x):
            return list(x.shape) if isinstance(x, Tensor) else type(x).__name__

        if not isinstance(image, Tensor) or image.dim() != 4 or image.shape[1] != 3 or not image.is_floating_point():
            raise ValueError(f"`image` must be a float tensor [B, 3, H, W], got {shape_of(image)}.")
        b = image.shape[0]
        if image.numel() and (float(image.min()) < -1e-3 or float(image.max()) > 1 + 1e-3):
            raise ValueError(f"`image` must be in [0, 1], got values in [{float(image.min()):.3g}, {float(image.max()):.3g}].")
        if not isinstance(position_map, Tensor) or position_map.shape != (b, 3, k, k):
            raise ValueError(f"`position_map` must have shape [{b}, 3, {k}, {k}], got {shape_of(position_map)}.")
        if not isinstance(relative_scale, Tensor) or relative_scale.shape not in ((k, k), (b, 1, k, k)):
            raise ValueError(
                f"`relative_scale` must have shape [{k}, {k}] or [{b}, 1, {k}, {k}], got {shape_of(relative_scale)}."
            )
        if not isinstance(visibility, Tensor) or visibility.shape != (b, 1, k, k):
            raise ValueError(f"`visibility` must have shape [{b}, 1, {k}, {k}], got {shape_of(visibility)}.")
        if visibility.numel() and (float(visibility.min()) < 0 or float(visibility.max()) > 1):
            raise ValueError(
                f"`visibility` must be in [0, 1], got values in [{float(visibility.min())}, {float(visibility.max())}]."
            )
        if self.config.use_local_features:
            if (local_uv_pixels is None) == (camera is None):
                raise ValueError("Pass exactly one of `local_uv_pixels` and `camera` (got both or neither).")
            if local_uv_pixels is not None and (not isinstance(local_uv_pixels, Tensor) or local_uv_pixels.shape != (b, k, k, 2)):
                raise ValueError(f"`local_uv_pixels` must have shape [{b}, {k}, {k}, 2], got {shape_of(local_uv_pixels)}.")
            if camera is not None and (not isinstance(camera, Camera) or len(camera) != b):
                raise ValueError(f"`camera` must be a Camera with batch {b}, got {camera!r}.")
        c_t = self.config.triplane_channels
        if isinstance(triplane_features, Tensor):
            if triplane_features.shape != (b, c_t, k, k):
                raise ValueError(
                    f"`triplane_features` must have shape [{b}, {c_t}, {k}, {k}], got {shape_of(triplane_features)}."
                )
        elif triplane_features is not None and not callable(triplane_features):
            raise TypeError(
                f"`triplane_features` must be a callable sampler, a tensor or None, got {type(triplane_features).__name__}."
            )

    # ------------------------------------------------------------------ pieces
    def _triplane_at(self, triplane_features: TriplaneLike, points: Tensor) -> Tensor:  # [B,3,K,K] -> [B,C_T,K,K]
        """F_T at the positions `points` (sampler), the given map (tensor) or the learned constant (None)."""
        b, _, k, _ = points.shape
        c_t = self.config.triplane_channels
        if triplane_features is None:
            return self.mean_triplane_features.expand(b, -1, -1, -1)
        if isinstance(triplane_features, Tensor):
            return triplane_features.to(self.dtype)
        out = triplane_features(points.flatten(2).transpose(1, 2))  # [B, K², 3] -> [B, C_T, K²]
        if not isinstance(out, Tensor) or out.shape != (b, c_t, k * k):
            shape = list(out.shape) if isinstance(out, Tensor) else type(out).__name__
            raise ValueError(f"The `triplane_features` sampler must return [{b}, {c_t}, {k * k}], got {shape}.")
        return out.to(self.dtype).view(b, c_t, k, k)

    def _local_features(self, image: Tensor, pixels: Tensor, visibility: Tensor) -> tuple[list[Tensor], list[Tensor]]:
        """F_l^i `[B, C_i, R_i, R_i]` and M_v^i `[B, 1, R_i, R_i]` (coarsest first) from `pixels [B, K, K, 2]`."""
        h, w = image.shape[-2:]
        # Continuous pixel coordinates (pixel centres at +0.5) -> grid_sample coordinates; with align_corners=False
        # the same grid addresses every feature scale, since each covers the whole image.
        size = torch.tensor([w, h], dtype=pixels.dtype, device=pixels.device)
        grid = pixels / size * 2 - 1
        features = self.image_encoder(image * 2 - 1)[::-1]  # F_s^1 (coarsest) .. F_s^N
        k = self.config.resolution
        local, masks = [], []
        for feature, r in zip(features, self.scale_resolutions):
            sampled = F.grid_sample(feature, grid.to(feature.dtype), mode="bilinear", padding_mode="zeros", align_corners=False)
            sampled = sampled * visibility  # F_{s,uv}^i ⊙ M_v at full resolution
            if r < k:  # visibility-weighted mean over each (K/R)² block
                frac = F.avg_pool2d(visibility, k // r)
                sampled = F.avg_pool2d(sampled, k // r) / frac.clamp(min=1e-6)
            else:
                frac = visibility
            local.append(sampled)
            masks.append(frac)
        return local, masks

    # ------------------------------------------------------------------ forward
    def forward(self, view: SourceView, return_aux: bool = False) -> UVAttributes:
        r"""Predict the UV Gaussian attribute maps of the source head seen in `view` (every avatar model's entry).

        Reads the photo composited over the view's background (as in training), p, s, M_v (the view's visibility
        from a z-buffer `config.visibility_resolution` wide), the texel projections and the prior's sampler; see
        `predict_maps`.

        Args:
            view (`SourceView`): from `fhavatar.models.make_source_view`, with `view.layout.resolution` = K.
            return_aux (`bool`, *optional*, defaults to False): also decode A^1 from F_c^1 alone (`.aux`).

        Returns:
            `UVAttributes` with maps `[B, ·, K, K]`, `refined_positions` = p_r, and `aux` when `return_aux`.
        """
        if not isinstance(view, SourceView):
            raise TypeError("`view` must be a SourceView (fhavatar.models.make_source_view; `predict_maps` takes "
                            f"prepared tensors), got {type(view).__name__}.")
        if view.layout.resolution != self.config.resolution:
            raise ValueError(f"`view.layout` has resolution {view.layout.resolution}, but the model predicts "
                             f"{self.config.resolution}² maps: build the view's layout at the model's resolution.")
        visibility = view.visibility(self.config.visibility_resolution)
        return self.predict_maps(view.composited, position_map=view.position_map, relative_scale=view.scale_map,
                                 visibility=visibility, mirror=view.layout, local_uv_pixels=view.texel_pixels,
                                 triplane_features=view.triplane_sampler, return_aux=return_aux)

    def predict_maps(
        self,
        image: Tensor,  # [B, 3, H, W] in [0, 1]
        position_map: Tensor,  # [B, 3, K, K]  p (UVLayout.position_map of the source head vertices)
        relative_scale: Tensor,  # [K, K] or [B, 1, K, K]  s (UVLayout.relative_scale / scale_map)
        visibility: Tensor,  # [B, 1, K, K] in [0, 1]  M_v (computed outside: a depth test of the source mesh)
        mirror: MirrorLike,  # UVLayout, mirror index [K, K, 2] or flip callable
        local_uv_pixels: Tensor | None = None,  # [B, K, K, 2] texel projections in source-image pixels
        camera: Camera | None = None,  # source camera: project p_r instead of `local_uv_pixels`
        triplane_features: TriplaneLike = None,  # sampler(points [B, M, 3]) -> [B, C_T, M], or [B, C_T, K, K]
        return_aux: bool = False,
    ) -> UVAttributes:
        r"""Predict the UV Gaussian attribute maps from prepared UV inputs (what `forward` reads of a `SourceView`).

        Args:
            image (`Tensor` `[B, 3, H, W]`): the source photo in [0, 1] (512² in the paper; any size works).
            position_map (`Tensor` `[B, 3, K, K]`): p, the source head's UV position map in head space.
            relative_scale (`Tensor` `[K, K]` or `[B, 1, K, K]`): s, head units per texel.
            visibility (`Tensor` `[B, 1, K, K]`): M_v in [0, 1] (1 = the texel is seen in the source photo).
            mirror (`UVLayout`, `Tensor` `[K, K, 2]` or callable): the mirror map (pass the layout; see
                `fusion.resolve_mirror_index`). Coarser scales use mirror indices pooled from it.
            local_uv_pixels (`Tensor` `[B, K, K, 2]`, *optional*): each texel's projection into `image`, in
                pixels (x right, y down; pixel centres at +0.5, like `Camera.project`). Not differentiable in Δp.
            camera (`Camera`, *optional*): the source camera; p_r is then projected inside (differentiable in Δp).
                Exactly one of `local_uv_pixels` and `camera` is needed unless `use_local_features` is False.
            triplane_features (callable, `Tensor` or None, *optional*): the prior's tri-plane sampler
                `points [B, M, 3] -> [B, C_T, M]` (sampled at p for eq. 2 and at p_r for F_g); or a precomputed
                F_T^p `[B, C_T, K, K]` (then also used as F_g: a tensor cannot be resampled at p_r); or None: the
                learned constant map (no prior).
            return_aux (`bool`, *optional*, defaults to False): also decode A^1 from F_c^1 alone (`.aux`).

        Returns:
            `UVAttributes` with maps `[B, ·, K, K]`, `refined_positions` = p_r, and `aux` when `return_aux`.
        """
        self.check_inputs(image, position_map, relative_scale, visibility, local_uv_pixels, camera, triplane_features)
        dtype, device = self.dtype, self.device
        image, p = image.to(device, dtype), position_map.to(device, dtype)
        visibility = visibility.to(device, dtype)
        b, k = image.shape[0], self.config.resolution
        mirror_full, valid = resolve_mirror_index(mirror, k, device)
        mirrors = [downsample_mirror_index(mirror_full, k // r, valid) for r in self.scale_resolutions]

        # 1-2. F_T^p and the UV shape refinement (eq. 2): p_r = p + Δp.
        features_p = self._triplane_at(triplane_features, p)
        if self.refiner is not None:
            delta = self.config.max_shape_offset * torch.tanh(self.refiner(torch.cat([features_p, p], 1)))
            p_r = p + delta
        else:
            p_r = p
        # 3. Global UV features F_g (sampled at p_r) and the UV map encoder: F_g^1 (coarsest) .. F_g^N.
        resample = self.refiner is not None and triplane_features is not None and not isinstance(triplane_features, Tensor)
        features_g = self._triplane_at(triplane_features, p_r) if resample else features_p
        global_maps = self.uv_encoder(features_g)[::-1]

        # 4. Local UV features F_l^i and visibility M_v^i.
        if self.image_encoder is not None:
            if camera is not None:
                pixels, _ = camera.to(device).project(p_r.flatten(2).transpose(1, 2), image.shape[-1], image.shape[-2])
                pixels = pixels.view(b, k, k, 2)
            else:
                pixels = local_uv_pixels.to(device, dtype)
            local_maps, masks = self._local_features(image, pixels, visibility)
        else:
            channels = self.config.image_channels
            local_maps = [p.new_zeros(b, c, r, r) for c, r in zip(channels, self.scale_resolutions)]
            masks = [p.new_zeros(b, 1, r, r) for r in self.scale_resolutions]

        # 5. Symmetric UV fusion at every scale (eq. 3-5).
        outputs = [
            fusion(global_maps[i], local_maps[i], masks[i], mirrors[i], token_mirror_index=mirrors[0])
            for i, fusion in enumerate(self.fusions)
        ]

        # 6. D_uv: F_c^1 + F_f^2..F_f^N -> A; A^1 from F_c^1 alone.
        coarsest = outputs[0].transformer
        raw = self.decoder(coarsest, [out.fused for out in outputs[1:]])
        lo, hi = self.config.scale_range
        scale = relative_scale.to(device)
        aux = None
        if return_aux:
            aux = activate_attributes(self.decoder(coarsest, None), scale, self.config.max_offset, (lo, hi))
            aux = dataclasses.replace(aux, refined_positions=p_r)
        result = activate_attributes(raw, scale, self.config.max_offset, (lo, hi))
        return dataclasses.replace(result, refined_positions=p_r, aux=aux)
