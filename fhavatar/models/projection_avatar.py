"""`ProjectionAvatarModel`: the training-free avatar model of the built-in default (no prior, no weights).

It fills the same `UVAttributes` contract as the learned `FHAvatarModel` (paper §3.2), from the photo alone:

1. **Projection.** Every texel's 3D point is projected into the photo and the photo is sampled there
   (bilinear), wherever the visibility mask M_v of §3.3 says the camera sees it (and, optionally, where the
   foreground mask is set). Oblique texels get less weight, and the weight is feathered inward from the edge
   of the visible area so no seam shows.
2. **Symmetry prior.** A texel the camera does not see takes the colour of its mirror texel (`layout.flip`)
   when that one is seen — the symmetry the paper's fusion module exploits (§3.4, eq. 7).
3. **Region defaults** everywhere else: hair colour (median of the photo over the visible scalp above the
   hairline) on the scalp, skin colour (median over the visible cheeks) on the face and ears, slightly darker
   skin on the neck, dark skin inside the mouth cavity; blurred across region borders.
4. **Neutral geometry:** identity rotations in the triangle frame, flat discs along the surface (two tangent
   standard deviations of `tangent_scale` texel sizes, a thin normal one), high opacity, zero offsets — so
   the Gaussians overlap into a closed surface from every angle; `refined_positions` is the position map.
"""

from __future__ import annotations

import logging
import math

import torch
import torch.nn.functional as F
from diffusers import ConfigMixin, ModelMixin
from diffusers.configuration_utils import register_to_config
from torch import Tensor

from ..head.uv import UVLayout
from ..rendering.cameras import Camera
from .attributes import UVAttributes
from .visibility import project_texels, texel_facing, texel_visibility

__all__ = ["ProjectionAvatarModel"]

logger = logging.getLogger(__name__)

#: Rings of invalid texels around the atlas islands filled from their valid neighbours (bilinear sampling of
#: the maps at island borders reads one ring).
_GUTTER_RINGS = 2


def _box_blur(maps: Tensor, valid: Tensor, radius: int) -> Tensor:  # [B, C, K, K], [K, K] bool -> [B, C, K, K]
    """Mean of `maps` over the valid texels of a `(2 radius + 1)²` window (invalid texels are ignored)."""
    if radius < 1:
        return maps
    weight = valid.to(maps.dtype)[None, None]
    size = 2 * radius + 1
    num = F.avg_pool2d(maps * weight, size, stride=1, padding=radius, count_include_pad=True)
    den = F.avg_pool2d(weight, size, stride=1, padding=radius, count_include_pad=True)
    return num / den.clamp(min=1e-6) * weight


def _fill_gutter(maps: Tensor, valid: Tensor) -> Tensor:  # [B, C, K, K], [K, K] bool -> [B, C, K, K]
    """Give invalid texels values: `_GUTTER_RINGS` rings grown from their valid neighbours, the mean of the
    valid texels beyond, so bilinear sampling at island borders never mixes in zeros."""
    known = valid.to(maps.dtype)[None, None]
    out = maps * known
    for _ in range(_GUTTER_RINGS):
        total = F.avg_pool2d(out * known, 3, stride=1, padding=1, count_include_pad=True)
        count = F.avg_pool2d(known, 3, stride=1, padding=1, count_include_pad=True)
        grow = (count > 0) & (known == 0)
        out = torch.where(grow, total / count.clamp(min=1e-6), out)
        known = torch.maximum(known, grow.to(maps.dtype))
    mean = (maps * valid).sum((2, 3), keepdim=True) / valid.sum().clamp(min=1)
    return torch.where(known > 0, out, mean.expand_as(out))


def _masked_median(values: Tensor, mask: Tensor) -> Tensor | None:  # [C, K, K], [K, K] bool -> [C] or None
    """Per-channel median of `values` over `mask` (None if the mask is empty)."""
    if not bool(mask.any()):
        return None
    return values[:, mask].median(dim=1).values


class ProjectionAvatarModel(ModelMixin, ConfigMixin):
    """Photo -> `UVAttributes` by projection, mirroring and region defaults (see the module docstring).

    It has no learned parameters, but saves and loads like any model (`save_pretrained` writes its config and
    a one-buffer weights file).

    Args:
        render_resolution (`int`, *optional*, defaults to 256): width of the z-buffer of the visibility test
            (its height follows the photo's aspect ratio).
        depth_tolerance (`float`, *optional*, defaults to 0.01): depth bias of the visibility test, head units.
        silhouette_margin (`int`, *optional*, defaults to 1): texels within this many z-buffer pixels of the
            mesh silhouette are not projected (their pixels mix head and background).
        min_cosine (`float`, *optional*, defaults to 0.1): texels seen more obliquely (cosine between normal and
            view direction) are not projected.
        full_cosine (`float`, *optional*, defaults to 0.4): the weight of the projected colour ramps linearly
            from 0 at `min_cosine` to 1 at this cosine.
        feather_width (`float`, *optional*, defaults to 0.04): width of the seam feathering (projected ->
            mirrored -> default colours), as a fraction of the atlas width (at least one texel).
        mask_threshold (`float`, *optional*, defaults to 0.5): with a foreground mask, texels projecting where
            it is below this value are treated as unseen.
        tangent_scale (`float`, *optional*, defaults to 1.0): the two tangent standard deviations, in texel
            sizes on the surface (the relative scale map s of §3.2).
        face_tangent_scale (`float`, *optional*, defaults to 0.55): the same on the face, eye and mouth regions,
            where the photo has detail and is seen head-on (sharper, still closed).
        normal_scale (`float`, *optional*, defaults to 0.15): the standard deviation along the normal, in
            texel sizes (flat discs).
        opacity (`float`, *optional*, defaults to 0.98): opacity of every Gaussian.
        hair_color (`tuple[float, float, float]`, *optional*): RGB used on the scalp when no hair is visible.
        skin_color (`tuple[float, float, float]`, *optional*): RGB used for skin when no cheek is visible.
        hairline_margin (`float`, *optional*, defaults to 0.0): hair colour is the median over visible scalp
            texels higher than the top of the face region plus this (head units; negative reaches lower).
        neck_shade (`float`, *optional*, defaults to 0.85): neck default = skin colour times this.
        mouth_shade (`float`, *optional*, defaults to 0.35): mouth-cavity default = skin colour times this.

    Example:
        ```py
        >>> model = ProjectionAvatarModel()
        >>> attributes = model(image, camera, vertices, layout)      # UVAttributes, maps [B, C, K, K]
        >>> avatar = Avatar.from_attributes(attributes, layout, head, params)
        ```
    """

    @register_to_config
    def __init__(
        self,
        render_resolution: int = 256,
        depth_tolerance: float = 0.01,
        silhouette_margin: int = 1,
        min_cosine: float = 0.1,
        full_cosine: float = 0.4,
        feather_width: float = 0.04,
        mask_threshold: float = 0.5,
        tangent_scale: float = 1.0,
        face_tangent_scale: float = 0.55,
        normal_scale: float = 0.15,
        opacity: float = 0.98,
        hair_color: tuple = (0.22, 0.15, 0.11),
        skin_color: tuple = (0.80, 0.62, 0.52),
        hairline_margin: float = 0.0,
        neck_shade: float = 0.85,
        mouth_shade: float = 0.35,
    ):
        super().__init__()
        if isinstance(render_resolution, bool) or not isinstance(render_resolution, int) or not 16 <= render_resolution <= 4096:
            raise ValueError(f"`render_resolution` must be an int in [16, 4096], got {render_resolution!r}.")
        if isinstance(silhouette_margin, bool) or not isinstance(silhouette_margin, int) or silhouette_margin < 0:
            raise ValueError(f"`silhouette_margin` must be an int >= 0 (pixels), got {silhouette_margin!r}.")
        ranges = {
            "depth_tolerance": (depth_tolerance, 0.0, math.inf), "feather_width": (feather_width, 0.0, 0.5),
            "mask_threshold": (mask_threshold, 0.0, 1.0), "tangent_scale": (tangent_scale, 1e-3, 100.0),
            "face_tangent_scale": (face_tangent_scale, 1e-3, 100.0),
            "normal_scale": (normal_scale, 1e-4, 100.0), "opacity": (opacity, 0.0, 1.0),
            "neck_shade": (neck_shade, 0.0, 2.0), "mouth_shade": (mouth_shade, 0.0, 2.0),
            "hairline_margin": (hairline_margin, -1.0, 1.0), "min_cosine": (min_cosine, -1.0, 1.0),
        }
        for name, (value, lo, hi) in ranges.items():
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not lo <= value <= hi:
                raise ValueError(f"`{name}` must be a number in [{lo}, {hi}], got {value!r}.")
        if not (isinstance(full_cosine, (int, float)) and min_cosine < full_cosine <= 1):
            raise ValueError(f"`full_cosine` must be in ({min_cosine}, 1] (above `min_cosine`), got {full_cosine!r}.")
        for name, value in (("hair_color", hair_color), ("skin_color", skin_color)):
            if len(tuple(value)) != 3 or not all(isinstance(c, (int, float)) and 0 <= c <= 1 for c in value):
                raise ValueError(f"`{name}` must be three numbers in [0, 1] (RGB), got {value!r}.")
        # The rotation every Gaussian takes relative to its triangle. Being a (persistent) tensor, it also gives
        # the model a device and dtype inside a pipeline and makes `save_pretrained` write a weights file.
        self.register_buffer("identity_rotation", torch.tensor([1.0, 0.0, 0.0, 0.0]))

    # ------------------------------------------------------------------ inputs
    @staticmethod
    def _check_inputs(image, camera, vertices, layout, mask) -> None:
        if not isinstance(layout, UVLayout):
            raise TypeError(f"`layout` must be a fhavatar.head.uv.UVLayout, got {type(layout).__name__}.")
        if not isinstance(image, Tensor) or image.dim() != 4 or image.shape[1] != 3 or not image.is_floating_point():
            shape = list(image.shape) if isinstance(image, Tensor) else type(image).__name__
            raise ValueError(f"`image` must be a float tensor of shape [B, 3, H, W] in [0, 1], got {shape}.")
        batch, _, height, width = image.shape
        if not isinstance(camera, Camera):
            raise TypeError(f"`camera` must be a fhavatar.rendering.Camera, got {type(camera).__name__}.")
        if len(camera) not in (1, batch):
            raise ValueError(f"`camera` must hold 1 or B={batch} cameras, got {len(camera)}.")
        expected = (batch, layout.num_vertices, 3)
        if not isinstance(vertices, Tensor) or tuple(vertices.shape) != expected:
            shape = list(vertices.shape) if isinstance(vertices, Tensor) else type(vertices).__name__
            raise ValueError(f"`vertices` must have shape {list(expected)} (the source head mesh), got {shape}.")
        if mask is not None and (not isinstance(mask, Tensor) or tuple(mask.shape) != (batch, 1, height, width)):
            shape = list(mask.shape) if isinstance(mask, Tensor) else type(mask).__name__
            raise ValueError(f"`mask` must have shape [{batch}, 1, {height}, {width}] like `image`, got {shape}.")

    # ------------------------------------------------------------------ forward
    @torch.no_grad()
    def forward(
        self,
        image: Tensor,  # [B, 3, H, W] in [0, 1]
        camera: Camera,  # 1 or B cameras
        vertices: Tensor,  # [B, V, 3] source head mesh, head space
        layout: UVLayout,
        triplane: Tensor | None = None,
        prior=None,
        mask: Tensor | None = None,  # [B, 1, H, W] foreground in [0, 1]
    ) -> UVAttributes:
        """Attribute maps of the avatar seen in `image`.

        Args:
            image (`Tensor` of shape `[B, 3, H, W]`): the source photo, RGB in [0, 1].
            camera (`Camera`): the source camera(s), normalised intrinsics (1 or B cameras).
            vertices (`Tensor` of shape `[B, V, 3]`): the fitted source head mesh in head space.
            layout (`UVLayout`): the head model's atlas; its resolution K is the maps' resolution.
            triplane, prior: accepted for interface parity with `FHAvatarModel`; unused (no prior here).
            mask (`Tensor` of shape `[B, 1, H, W]`, *optional*): foreground matte; background is never sampled.

        Returns:
            `UVAttributes` with maps `[B, C, K, K]` and `refined_positions` = the position map of `vertices`.
        """
        self._check_inputs(image, camera, vertices, layout, mask)
        if triplane is not None or prior is not None:
            logger.debug("ProjectionAvatarModel ignores `triplane`/`prior` (it uses no prior).")
        cfg = self.config
        batch, _, height, width = image.shape
        k, valid = layout.resolution, layout.valid
        vertices = vertices.to(device=image.device, dtype=torch.float32)
        camera = camera.to(device=image.device, dtype=torch.float32)

        # 1. Projection, visibility and a feathered weight of the projected colour.
        zb_w = cfg.render_resolution
        zb_h = max(1, round(cfg.render_resolution * height / width))
        visible = texel_visibility(layout, vertices, camera, zb_w, zb_h, cfg.depth_tolerance, cfg.min_cosine,
                                   cfg.silhouette_margin)  # [B, 1, K, K]
        uv, _ = project_texels(layout, vertices, camera, width, height)  # [B, K, K, 2]
        grid = uv / torch.tensor([width, height], dtype=uv.dtype, device=uv.device) * 2 - 1
        projected = F.grid_sample(image.float(), grid, mode="bilinear", padding_mode="border", align_corners=False)
        if mask is not None:
            fg = F.grid_sample(mask.float(), grid, mode="bilinear", padding_mode="border", align_corners=False)
            visible = visible * (fg >= cfg.mask_threshold)
        cosine = texel_facing(layout, vertices, camera)[:, None]
        ramp = ((cosine - cfg.min_cosine) / (cfg.full_cosine - cfg.min_cosine)).clamp(0, 1)
        radius = max(1, round(cfg.feather_width * k))
        weight = visible * ramp
        feathered = weight * _box_blur(weight, valid, radius)  # fades to ~0.5 at the edge of the seen area
        # The mouth cavity is only seen through the lips, a small island that feathering would wash out into the
        # dark default; whatever of it is seen (teeth, tongue) is taken as is.
        weight = torch.where(layout.region("mouth")[None, None], weight, feathered)

        # 2. Region defaults from colours estimated in the photo.
        positions = layout.position_map(vertices)
        defaults = torch.stack([self._default_colors(layout, positions[b], projected[b], weight[b, 0] > 0.5)
                                for b in range(batch)])
        defaults = _box_blur(defaults, valid, max(1, radius // 2))

        # 3. Seen colour, else the mirror's seen colour, else the default.
        mirror_weight = layout.flip(weight)
        fallback = mirror_weight * layout.flip(projected) + (1 - mirror_weight) * defaults
        colors = (weight * projected + (1 - weight) * fallback).clamp(0, 1)

        # 4. Neutral geometry.
        texel = layout.scale_map(vertices)  # [B, 1, K, K] head units per texel
        # Sharper splats on the face, where the photo has detail and the surface is seen head-on; the default
        # width elsewhere keeps silhouettes, scalp and neck closed.
        face = (layout.region("face") | layout.region("eyes") | layout.region("mouth"))[None, None]
        tangent = torch.where(face, float(cfg.face_tangent_scale), float(cfg.tangent_scale)).float()
        axes = torch.cat([tangent, tangent, torch.full_like(tangent, float(cfg.normal_scale))], dim=1)
        identity = self.identity_rotation.to(device=image.device, dtype=torch.float32)
        return UVAttributes(
            colors=_fill_gutter(colors, valid),
            rotations=identity[None, :, None, None].expand(batch, 4, k, k).contiguous(),
            scales=_fill_gutter(texel * axes, valid),
            opacities=torch.full((batch, 1, k, k), float(cfg.opacity), device=image.device),
            offsets=torch.zeros(batch, 3, k, k, device=image.device),
            refined_positions=positions,
        )

    def _default_colors(self, layout: UVLayout, positions: Tensor, projected: Tensor, seen: Tensor) -> Tensor:
        """Region default colours `[3, K, K]` of one photo (positions/projected `[3, K, K]`, seen `[K, K]`)."""
        cfg = self.config
        region = layout.region
        face, scalp, eyes, mouth = region("face"), region("scalp"), region("eyes"), region("mouth")
        y, x = positions[1], positions[0]

        # Hair: visible scalp above the hairline (the top of the face region); else any visible scalp.
        face_top = y[face].max() if bool(face.any()) else y.max()
        hair = _masked_median(projected, seen & scalp & (y > face_top + cfg.hairline_margin))
        if hair is None:
            hair = _masked_median(projected, seen & scalp)
        # Skin: visible cheeks (face, between eye and mouth height, away from the nose); else any visible face.
        skin = None
        plain_face = face & ~eyes & ~mouth
        if bool(eyes.any()) and bool(mouth.any()) and bool(plain_face.any()):
            half_width = x[plain_face].abs().max()
            cheek = plain_face & (y < y[eyes].mean()) & (y > y[mouth].mean()) & (x.abs() > 0.3 * half_width)
            skin = _masked_median(projected, seen & cheek)
        if skin is None:
            skin = _masked_median(projected, seen & plain_face)
        hair = hair if hair is not None else torch.tensor(cfg.hair_color, device=positions.device)
        skin = skin if skin is not None else torch.tensor(cfg.skin_color, device=positions.device)
        logger.debug("Default colours: hair %s, skin %s.", hair.tolist(), skin.tolist())

        out = skin[:, None, None].expand(3, *seen.shape).clone()
        out[:, scalp] = hair[:, None]
        out[:, region("neck") & ~scalp & ~face] = (skin * cfg.neck_shade)[:, None].clamp(0, 1)
        out[:, mouth] = (skin * cfg.mouth_shade)[:, None].clamp(0, 1)
        return out
