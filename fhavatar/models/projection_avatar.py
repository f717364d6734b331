"""`ProjectionAvatarModel`: the training-free avatar model of the built-in default (no prior, no weights).

It fills the same `UVAttributes` contract as the learned `FHAvatarModel` (paper §3.2), from the photo alone:

1. **Projection.** Every texel's 3D point is projected into the photo and the photo is sampled there
   (bilinear), wherever the visibility mask M_v of §3.3 says the camera sees it (and, optionally, where the
   foreground mask, shrunk by a few pixels, is set). A texel seen head-on keeps the photo's colour as is; one
   seen at a grazing angle, next to the mask's outline, or whose mirror is seen more head-on blends it with its
   fallback colour.
2. **Symmetry prior.** A texel the camera does not see takes the colour of its mirror texel (`layout.flip`)
   when that one is seen — the symmetry the paper's fusion module exploits (§3.4, eq. 7).
3. **Region defaults** everywhere else: hair colour (median of the photo over the visible scalp above the
   hairline) on the scalp, skin colour (median over the visible cheeks) on the face and ears, slightly darker
   skin on the neck, dark skin inside the mouth cavity; blurred across region borders. Seams are feathered
   outward (into the unseen side) only, so the texels seen head-on stay exact.
4. **Neutral geometry:** identity rotations in the triangle frame, flat discs along the surface (two tangent
   standard deviations of `tangent_scale` texel sizes, a thin normal one), high opacity, zero offsets — so
   the Gaussians overlap into a closed surface from every angle; `refined_positions` is the position map.
5. **Colour refinement (inverse rendering).** Rendering blurs: each pixel mixes the overlapping splats. The
   source-view render is linear in the colours, `I = A c`, so a few damped Jacobi (preconditioned Richardson)
   steps on the photometric least squares of the photo, `c <- c + Aᵀ(w (y - A c)) / (Aᵀ(w A 1) + damping)`,
   with `w` the covered foreground pixels, sharpen the seen texels (each step scaled by the texel's confidence)
   until the source view matches the photo at the photo's resolution (the `Aᵀ` products are the renderer's
   backward pass). Mirrored colours then follow the refined ones.
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
from ..rendering import Gaussians, render_gaussians
from ..rendering.cameras import Camera
from ..rendering.visibility import texel_facing
from ..rotations import rotmat_to_quat
from .attributes import UVAttributes
from .source_view import SourceView
from .uv_quilting import quilt_unseen
from .uv_synthesis import MIN_SOURCE_CONFIDENCE, hair_like, synthesize_unseen

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


def _inner_ramp(inside: Tensor, width: int) -> Tensor:  # [B, 1, H, W] bool -> [B, 1, H, W] in [0, 1]
    """Mean of `width` nested 3x3 erosions of the region: 0 outside it and on its outermost pixels, then rising by
    `1 / width` per pixel inward, 1 from `width + 1` pixels in."""
    current = inside.float()
    total = torch.zeros_like(current)
    for _ in range(width):
        current = -F.max_pool2d(-current, 3, stride=1, padding=1)
        total = total + current
    return total / width


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


def _grow(maps: Tensor, known: Tensor, valid: Tensor, rings: int) -> tuple[Tensor, Tensor]:
    """Grow `maps` from the `known` texels into their valid neighbours, one ring per step, for `rings` steps.

    Args:
        maps (`Tensor` of shape `[B, C, K, K]`): values, read where `known`.
        known (`Tensor` of shape `[B, 1, K, K]`, bool): where `maps` holds values.
        valid (`Tensor` of shape `[K, K]`, bool): texels that may be reached.
        rings (`int`): steps (texels) to grow.

    Returns:
        `(grown [B, C, K, K], reach [B, 1, K, K])`: each reached texel holds the mean of its already reached
        3x3 neighbours; `reach` is 1 on known texels, `1 - r / (rings + 1)` on ring r and 0 beyond (a linear fade).
    """
    reached = known.to(maps.dtype)
    out = maps * reached
    reach = reached.clone()
    allowed = valid.to(maps.dtype)[None, None]
    for ring in range(1, rings + 1):
        total = F.avg_pool2d(out * reached, 3, stride=1, padding=1)
        count = F.avg_pool2d(reached, 3, stride=1, padding=1)
        new = (count > 0) & (reached == 0) & (allowed > 0)
        out = torch.where(new, total / count.clamp(min=1e-12), out)
        reach = torch.where(new, torch.full_like(reach, 1 - ring / (rings + 1)), reach)
        reached = torch.maximum(reached, new.to(maps.dtype))
    return out, reach


def _source_gaussians(layout: UVLayout, vertices: Tensor, scales: Tensor, opacities: Tensor,
                      colors: Tensor | None = None) -> Gaussians:
    """The avatar's Gaussians on the source mesh, as `Avatar.from_attributes(...).gaussians()` places them.

    Args:
        layout (`UVLayout`): the atlas (its Gaussian positions X).
        vertices (`Tensor` of shape `[1, V, 3]`): the source mesh.
        scales, opacities (`Tensor` of shapes `[1, 3, K, K]`, `[1, 1, K, K]`): neutral maps (identity rotations in
            the triangle frame, zero offsets); the scales are along the frame's tangent, bitangent and normal.
        colors (`Tensor` of shape `[1, C, K, K]`, *optional*): the colour map (differentiable); None gives zero
            colours, for `with_colors` to fill (the geometry of a fixed mesh computed once for many colour maps).
    """
    frames, _ = layout.sample_frames(vertices)  # the local rotations are the identity: R_tri itself
    means = layout.sample_positions(vertices)[0]
    sampled = means.new_zeros(means.shape[0], 3) if colors is None else layout.sample(colors)[0].T
    return Gaussians(means=means, quats=rotmat_to_quat(frames[0]), scales=layout.sample(scales)[0].T.clamp(min=1e-8),
                     opacities=layout.sample(opacities)[0, 0], colors=sampled)


def _with_colors(layout: UVLayout, gaussians: Gaussians, colors: Tensor) -> Gaussians:  # colors [1, C, K, K]
    """`gaussians` (from `_source_gaussians`) with the colours of the map `colors` (differentiable)."""
    return Gaussians(gaussians.means, gaussians.quats, gaussians.scales, gaussians.opacities,
                     layout.sample(colors)[0].T)


def _refine_colors(
    layout: UVLayout,
    vertices: Tensor,  # [1, V, 3]
    camera: Camera,  # one camera
    scales: Tensor,  # [1, 3, K, K]
    opacities: Tensor,  # [1, 1, K, K]
    colors: Tensor,  # [1, 3, K, K]
    confidence: Tensor,  # [1, 1, K, K] in [0, 1]: how much each texel's update counts (0: unchanged)
    image: Tensor,  # [1, 3, H, W]
    fitted: Tensor,  # [1, 1, H, W] bool: pixels that may be fitted (foreground)
    steps: int,
    damping: float,
    min_alpha: float,
) -> Tensor:  # [1, 3, K, K]
    """Damped Jacobi steps on `sum_pixels w (render(colors) - image)^2`, scaled per texel by `confidence`
    (module docstring).

    The source-view render is `A c` (linear in the colour map `c` for a fixed geometry) over a black background.
    `Aᵀ v` is the gradient of `<A c, v>`, one backward pass of the renderer. The preconditioner `Aᵀ(w A 1)` is
    the row sum of `Aᵀ w A` (all entries are non-negative), which makes every step a contraction.
    """
    height, width = image.shape[-2:]
    geometry = _source_gaussians(layout, vertices, scales, opacities)  # fixed: only the colours change

    def render(c: Tensor) -> tuple[Tensor, Tensor]:
        c = c.detach().requires_grad_(True)
        out = render_gaussians(_with_colors(layout, geometry, c), camera, width, height)
        return c, out

    with torch.enable_grad():
        ones, out = render(torch.ones_like(colors))
        weight = (fitted & (out.alpha.detach() >= min_alpha)).to(image.dtype)
        (out.image * weight * out.alpha.detach()).sum().backward()
        preconditioner = ones.grad + damping
        update = confidence.to(image.dtype)
        for _ in range(steps):
            c, out = render(colors)
            (out.image * (weight * (image - out.image.detach()))).sum().backward()
            colors = (colors + update * c.grad / preconditioner).clamp(0, 1)
    return colors.detach()


#: Hair synthesised for the unseen scalp: strands along v (`quilt_unseen`'s `flow`, texels), a prior, not a measurement:
#: the photo sees the hair on top and in front, combed every way, but behind it falls down from the crown (the seen
#: texture's own direction gave leopard-spot backs); and their contrast boosted, the finest scale most (`sharpen`): the
#: splats keep about a third of a 2-texel pattern's contrast and two thirds of a 4-texel one in a 256² view (the seen
#: texels are compensated by the refinement against the photo, the synthesised ones by this gain). A gain alone
#: strong enough for the fine strands to show turned the coarser detail into blotches.
HAIR_FLOW = 8.0
HAIR_DETAIL_GAIN = 2.0
HAIR_SHARPEN = 4.0


def _synthesize_unseen(layout: UVLayout, colors: Tensor, confidence: Tensor, defaults: Tensor, hair: Tensor,
                       skin: Tensor) -> Tensor:  # [B, 3, K, K], [B, 1, K, K], [B, 3, K, K], [B, 3], [B, 3]
    """`defaults` with the unseen scalp, ear and neck texels synthesised from the seen ones (`uv_synthesis`: each
    texel's row gives the guide colour; `uv_quilting`: patches of the seen texture draw the detail, hair where the
    guide is hair-coloured from hair-coloured texels only, skin (a bare nape) likewise)."""
    exemplars = (layout.region("scalp") | layout.region("neck")) & layout.valid
    guide, filled = synthesize_unseen(colors, confidence, exemplars | (layout.region("ears") & layout.valid),
                                      sources=exemplars, hair=hair, skin=skin)
    cranium = filled & exemplars[None, None]
    seen_hair, wants_hair = hair_like(colors, hair, skin), hair_like(guide, hair, skin)
    known = confidence >= MIN_SOURCE_CONFIDENCE
    for sources, targets, flow, gain, sharpen in ((seen_hair, wants_hair, HAIR_FLOW, HAIR_DETAIL_GAIN, HAIR_SHARPEN),
                                                  (~seen_hair, ~wants_hair, 0.0, 1.0, 0.0)):
        guide, _ = quilt_unseen(colors, known, cranium & targets, sources & exemplars, guide, flow=flow, gain=gain,
                                sharpen=sharpen)
    return torch.where(filled, guide, defaults)


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
        full_cosine (`float`, *optional*, defaults to 0.3): texels seen more obliquely than this blend their
            projected colour over the fallback, with a weight ramping from 0 at `min_cosine` to 1 here (their colour
            is a few photo pixels smeared over a large area).
        feather_width (`float`, *optional*, defaults to 0.04): width of the seam feathering (projected ->
            mirrored -> default colours) into the unseen side, as a fraction of the atlas width (at least one
            texel).
        mask_threshold (`float`, *optional*, defaults to 0.5): with a foreground mask, texels projecting where
            it is below this value are treated as unseen.
        mask_erosion (`int`, *optional*, defaults to 2): the mask is shrunk by this many photo pixels for that
            test (texels next to the outline would carry the background's colour around the head).
        edge_feather (`float`, *optional*, defaults to 0.006): with a mask, the confidence of a projected colour
            ramps from 0 at the outline to 1 at this fraction of the image width inside it (the outline's pixels mix
            in the background and rim shading; seen from the front, a profile's rim would be stretched over the
            forehead and nose).
        tangent_scale (`float`, *optional*, defaults to 1.0): the two tangent standard deviations, in texel
            sizes on the surface (the relative scale map s of §3.2).
        face_tangent_scale (`float`, *optional*, defaults to 0.55): the same on the face, eye and mouth regions,
            where the photo has detail and is seen head-on (sharper, still closed).
        strand_scale (`float`, *optional*, defaults to 0.4): on the layout's densely sampled regions (the scalp:
            several samples per texel along u, around the head, but one every other texel along v), the standard
            deviation along u, in texel sizes. Narrow along u and `tangent_scale` along v, the splats are short
            vertical strands: the hair's detail across its strands survives rendering, and the sparse rows stay
            closed.
        normal_scale (`float`, *optional*, defaults to 0.15): the standard deviation along the normal, in
            texel sizes (flat discs).
        opacity (`float`, *optional*, defaults to 0.98): opacity of every Gaussian.
        hair_color (`tuple[float, float, float]`, *optional*): RGB used on the scalp when no hair is visible.
        skin_color (`tuple[float, float, float]`, *optional*): RGB used for skin when no cheek is visible.
        hairline_margin (`float`, *optional*, defaults to 0.0): hair colour is the median over visible scalp
            texels higher than the top of the face region plus this (head units; negative reaches lower).
        neck_shade (`float`, *optional*, defaults to 0.85): neck default = skin colour times this.
        mouth_shade (`float`, *optional*, defaults to 0.35): mouth-cavity default = skin colour times this.
        refine_steps (`int`, *optional*, defaults to 3): colour-refinement steps (step 5 of the module docstring;
            each renders the source view at the photo's resolution, forward and backward); 0 disables it.
        refine_damping (`float`, *optional*, defaults to 0.01): damping added to the Jacobi preconditioner; it
            keeps texels that cover few pixels (grazing, mostly hidden) close to their projected colour.
        refine_min_alpha (`float`, *optional*, defaults to 0.9): only pixels the avatar covers at least this much
            are fitted (the rim mixes in the background).
        synthesize_unseen (`bool`, *optional*, defaults to True): scalp, ear and neck texels the photo shows neither
            directly nor mirrored take texture copied from the seen ones of their row (`uv_synthesis`) instead of a
            flat region colour.

    Example:
        ```py
        >>> model = ProjectionAvatarModel()
        >>> attributes = model(make_source_view(image, camera, head, params, layout))   # UVAttributes [B, C, K, K]
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
        full_cosine: float = 0.3,
        feather_width: float = 0.04,
        mask_threshold: float = 0.5,
        mask_erosion: int = 2,
        edge_feather: float = 0.006,
        tangent_scale: float = 1.0,
        face_tangent_scale: float = 0.55,
        strand_scale: float = 0.4,
        normal_scale: float = 0.15,
        opacity: float = 0.98,
        hair_color: tuple = (0.22, 0.15, 0.11),
        skin_color: tuple = (0.80, 0.62, 0.52),
        hairline_margin: float = 0.0,
        neck_shade: float = 0.85,
        mouth_shade: float = 0.35,
        refine_steps: int = 3,
        refine_damping: float = 0.01,
        refine_min_alpha: float = 0.9,
        synthesize_unseen: bool = True,
    ):
        super().__init__()
        if isinstance(render_resolution, bool) or not isinstance(render_resolution, int) or not 16 <= render_resolution <= 4096:
            raise ValueError(f"`render_resolution` must be an int in [16, 4096], got {render_resolution!r}.")
        if isinstance(silhouette_margin, bool) or not isinstance(silhouette_margin, int) or silhouette_margin < 0:
            raise ValueError(f"`silhouette_margin` must be an int >= 0 (pixels), got {silhouette_margin!r}.")
        ranges = {
            "depth_tolerance": (depth_tolerance, 0.0, math.inf), "feather_width": (feather_width, 0.0, 0.5),
            "mask_threshold": (mask_threshold, 0.0, 1.0), "edge_feather": (edge_feather, 0.0, 0.25),
            "tangent_scale": (tangent_scale, 1e-3, 100.0),
            "face_tangent_scale": (face_tangent_scale, 1e-3, 100.0), "strand_scale": (strand_scale, 1e-3, 100.0),
            "normal_scale": (normal_scale, 1e-4, 100.0), "opacity": (opacity, 0.0, 1.0),
            "neck_shade": (neck_shade, 0.0, 2.0), "mouth_shade": (mouth_shade, 0.0, 2.0),
            "hairline_margin": (hairline_margin, -1.0, 1.0), "min_cosine": (min_cosine, -1.0, 0.99),
            "refine_damping": (refine_damping, 1e-6, math.inf), "refine_min_alpha": (refine_min_alpha, 0.0, 1.0),
        }
        for name, (value, lo, hi) in ranges.items():
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not lo <= value <= hi:
                raise ValueError(f"`{name}` must be a number in [{lo}, {hi}], got {value!r}.")
        if not (isinstance(full_cosine, (int, float)) and not isinstance(full_cosine, bool)
                and min_cosine < full_cosine <= 1):
            raise ValueError(f"`full_cosine` must be a number in ({min_cosine}, 1] (above `min_cosine`), got {full_cosine!r}.")
        if isinstance(mask_erosion, bool) or not isinstance(mask_erosion, int) or not 0 <= mask_erosion <= 64:
            raise ValueError(f"`mask_erosion` must be an int in [0, 64] (pixels), got {mask_erosion!r}.")
        if not isinstance(synthesize_unseen, bool):
            raise ValueError(f"`synthesize_unseen` must be True or False, got {synthesize_unseen!r}.")
        if isinstance(refine_steps, bool) or not isinstance(refine_steps, int) or not 0 <= refine_steps <= 100:
            raise ValueError(f"`refine_steps` must be an int in [0, 100], got {refine_steps!r}.")
        for name, value in (("hair_color", hair_color), ("skin_color", skin_color)):
            if len(tuple(value)) != 3 or not all(isinstance(c, (int, float)) and 0 <= c <= 1 for c in value):
                raise ValueError(f"`{name}` must be three numbers in [0, 1] (RGB), got {value!r}.")
        # The rotation every Gaussian takes relative to its triangle. Being a (persistent) tensor, it also gives
        # the model a device and dtype inside a pipeline and makes `save_pretrained` write a weights file.
        self.register_buffer("identity_rotation", torch.tensor([1.0, 0.0, 0.0, 0.0]))

    # ------------------------------------------------------------------ forward
    @torch.no_grad()
    def forward(self, view: SourceView) -> UVAttributes:
        """Attribute maps of the avatar seen in the source photo.

        Args:
            view (`SourceView`): the photo (`image` and its `mask`: background is never sampled), camera, fitted
                source head mesh and its layout, from `make_source_view`. The prior's sampler, if any, is unused.

        Returns:
            `UVAttributes` with maps `[B, C, K, K]` and `refined_positions` = the position map of the source mesh.
        """
        if not isinstance(view, SourceView):
            raise TypeError("`view` must be a SourceView (fhavatar.models.make_source_view), got "
                            f"{type(view).__name__}.")
        image, mask, camera, vertices, layout = view.image, view.mask, view.camera, view.vertices, view.layout
        cfg = self.config
        batch, _, height, width = image.shape
        k, valid = layout.resolution, layout.valid

        # 1. Projection, visibility and the confidence of the projected colours. A texel seen head-on keeps the
        #    photo's colour as is: blending it with mirrored or default colours (e.g. feathering inward from the
        #    edge of the seen area) would change the source view.
        visible = view.visibility(cfg.render_resolution, cfg.depth_tolerance, cfg.min_cosine,
                                  cfg.silhouette_margin)  # [B, 1, K, K]
        uv = view.texel_pixels  # [B, K, K, 2]
        grid = uv / torch.tensor([width, height], dtype=uv.dtype, device=uv.device) * 2 - 1
        projected = F.grid_sample(image.float(), grid, mode="bilinear", padding_mode="border", align_corners=False)
        edge_weight = torch.ones_like(visible)
        if mask is not None:
            # The matte shrunk by `mask_erosion` pixels: texels that sample the photo next to the outline would carry
            # the background's colour around the head.
            erosion = cfg.mask_erosion
            matte = -F.max_pool2d(-mask.float(), 2 * erosion + 1, 1, erosion) if erosion else mask.float()
            fg = F.grid_sample(matte, grid, mode="bilinear", padding_mode="border", align_corners=False)
            visible = visible * (fg >= cfg.mask_threshold)
            # The outline's last pixels mix in the background and rim shading (more so in an upsampled photo): the
            # colours projected there count less, ramping up over `edge_feather` of the width inside the outline.
            feather = round(cfg.edge_feather * width)
            if feather > 0:
                inner = _inner_ramp(mask.float() >= cfg.mask_threshold, feather)
                edge_weight = F.grid_sample(inner, grid, mode="bilinear", padding_mode="border", align_corners=False)
        seen = visible > 0.5  # [B, 1, K, K]
        # Confidence of the projected colour: grazing texels smear a few photo pixels over a large area, so below
        # `full_cosine` their colour is blended toward the fallback (mirror / default) colour; and a texel whose
        # mirror is seen more head-on leans toward the mirror's colour, by the weight 2 q / (q + q_mirror) (q the
        # cosine): equal views keep their own colours, a far cheek seen at a grazing angle borrows the near one's.
        cosine = texel_facing(layout, vertices, camera)[:, None]
        confidence = seen * ((cosine - cfg.min_cosine) / (cfg.full_cosine - cfg.min_cosine)).clamp(0, 1) * edge_weight
        quality = seen * cosine.clamp(min=0) * edge_weight
        mirror_quality = layout.flip(quality)
        confidence = confidence * (2 * quality / (quality + mirror_quality).clamp(min=1e-6)).clamp(max=1)

        # 2. Region defaults from colours estimated in the photo.
        positions = view.position_map
        rings = max(1, round(cfg.feather_width * k))
        estimates = [self._default_colors(layout, positions[b], projected[b], seen[b, 0]) for b in range(batch)]
        defaults = _box_blur(torch.stack([e[0] for e in estimates]), valid, max(1, rings // 2))
        # 3. Neutral geometry.
        texel = view.scale_map  # [B, 1, K, K] head units per texel
        # Sharper splats on the face, where the photo has detail and the surface is seen head-on; the default
        # width elsewhere keeps silhouettes, scalp and neck closed.
        face = (layout.region("face") | layout.region("eyes") | layout.region("mouth"))[None, None]
        tangent = torch.where(face, float(cfg.face_tangent_scale), float(cfg.tangent_scale)).float()
        dense = torch.zeros_like(valid)
        for name in layout.dense_regions:
            dense = dense | layout.region(name)
        across = torch.where(dense[None, None] & ~face, float(cfg.strand_scale), tangent)
        axes = torch.cat([across, tangent, torch.full_like(tangent, float(cfg.normal_scale))], dim=1)
        scales = _fill_gutter(texel * axes, valid)
        opacities = torch.full((batch, 1, k, k), float(cfg.opacity), device=image.device)

        # 4. Seen colour, else the mirror's seen colour (eq. 7's symmetry prior), else the default; 5. refine the
        #    seen colours against the photo; 6. what neither the photo nor its mirror shows (the back of the head,
        #    the nape) takes texture synthesised from the refined seen colours (which carry the compensation for the
        #    splats' blur that the refinement found), then compose again so the fallbacks follow the refined colours.
        colors = self._compose(layout, projected, seen, confidence, defaults, rings)
        refined = colors
        if cfg.refine_steps > 0 and bool(seen.any()):
            fitted = mask >= cfg.mask_threshold if mask is not None else torch.ones_like(image[:, :1], dtype=torch.bool)
            refined = torch.stack([
                _refine_colors(layout, vertices[b : b + 1], camera[b] if len(camera) > 1 else camera, scales[b : b + 1],
                               opacities[b : b + 1], colors[b : b + 1], confidence[b : b + 1], image[b : b + 1].float(),
                               fitted[b : b + 1], cfg.refine_steps, cfg.refine_damping, cfg.refine_min_alpha)[0]
                for b in range(batch)])
        if cfg.synthesize_unseen:
            hair, skin = torch.stack([e[1] for e in estimates]), torch.stack([e[2] for e in estimates])
            defaults = _synthesize_unseen(layout, refined, confidence, defaults, hair, skin)
        if refined is not colors or cfg.synthesize_unseen:
            colors = torch.where(seen, refined, self._compose(layout, refined, seen, confidence, defaults, rings))
        identity = self.identity_rotation.to(device=image.device, dtype=torch.float32)
        return UVAttributes(
            colors=_fill_gutter(colors, valid),
            rotations=identity[None, :, None, None].expand(batch, 4, k, k).contiguous(),
            scales=scales,
            opacities=opacities,
            offsets=torch.zeros(batch, 3, k, k, device=image.device),
            refined_positions=positions,
        )

    @staticmethod
    def _compose(layout: UVLayout, projected: Tensor, seen: Tensor, confidence: Tensor, defaults: Tensor,
                 rings: int) -> Tensor:  # -> [B, C, K, K]
        """Seen colour, else the mirror's seen colour, else the default.

        Args:
            projected, defaults (`Tensor` of shape `[B, C, K, K]`): photo colours (read where `seen`) and region
                defaults.
            seen (`Tensor` of shape `[B, 1, K, K]`, bool), confidence (`[B, 1, K, K]` in [0, 1], 0 where unseen):
                a seen texel blends its colour over its fallback with this weight.
            rings (`int`): width of the seam feathering in texels.

        Seams are feathered outward only: an unseen texel near a seen one blends the seen colours grown into it
        (`_grow`, confidence-weighted, the confidence grown along) with its fallback, fading over `rings` texels, so a confidently
        seen texel keeps its colour exactly.
        """

        def blend(base: Tensor, values: Tensor, known: Tensor, weight: Tensor) -> Tensor:
            # Colours grow weighted by their confidence: a barely trusted rim texel (a profile's edge, which mixes
            # in the background) must not tint the unseen texels next to it.
            grown, reach = _grow(torch.cat([values * weight, weight], 1), known, layout.valid, rings)
            colour = grown[:, :-1] / grown[:, -1:].clamp(min=1e-6)
            strength = torch.where(known, weight, reach * grown[:, -1:])
            return torch.lerp(base, colour, strength)

        fallback = blend(defaults, layout.flip(projected), layout.flip(seen.float()) > 0.5, layout.flip(confidence))
        return blend(fallback, projected, seen, confidence).clamp(0, 1)

    def _default_colors(self, layout: UVLayout, positions: Tensor, projected: Tensor,
                        seen: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """Region default colours `[3, K, K]` of one photo (positions/projected `[3, K, K]`, seen `[K, K]`), with the
        estimated hair and skin colours `[3]`."""
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
        return out, hair, skin
