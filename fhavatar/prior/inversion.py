"""Feed-forward PanoHead inversion with two encoders and occlusion-aware tri-grid stitching.

Bilecen, Gokmen & Dundar, "Dual Encoder GAN Inversion for High-Fidelity 3D Head Reconstruction from Single
Images" (NeurIPS'24), the inversion FHAvatar's paper uses to turn the source photo into a full-head tri-grid.
Facts this module relies on (from that paper and the public code of the encoders it builds on):

- Each encoder is two-stage (paper §3.2, App. A.1): a pSp `GradualStyleEncoder` (IR-SE-50 backbone, feature
  pyramid, one `GradualStyleBlock` per latent) predicts `w+` offsets from the average latent (14 x 512 for
  PanoHead), the generator synthesises a tri-grid from them, and a TriPlaneNet-v2 style `TriPlane_Encoder`
  predicts a residual added to that tri-grid from 9 channels: the first-stage render `y`, the error `x - y` and
  the mirrored error `flip(x) - y_mirror` (render from the mirrored camera), all at the encoder's 256² input.
- Encoder 1 is trained for same-view fidelity (eq. 5), encoder 2 adds an adversarial loss from an
  occlusion-aware tri-plane discriminator (eq. 6). At inference (Fig. 4, §3.4) the visible part of the tri-grid
  comes from encoder 1 and the occluded part from encoder 2: visible = the tri-grid cells hit by the surface
  points obtained by back-projecting the input view's depth map (eq. 3), occluded = the complement `O`.
- Names mirror the official modules (`encoders.py`; pSp: `input_layer`, `body.N.res_layer`, `styles.N.convs`,
  `latlayer1`; TriPlaneNet v2: `up1..up4.conv.double_conv`, `final_head_two`) so converted checkpoints load by name. The
  dual-encoder repository itself is not available to us: the per-encoder prefixes `psp_encoder.` /
  `triplanenet_encoder.` and the pSp checkpoint layout `{'state_dict', 'latent_avg', 'opts'}` are TriPlaneNet's,
  and the residual head width (the tri-grid's `3 * C * D` channels instead of EG3D's 96) is our inference from
  the paper's tri-grid shape `[B, 3, 96, 256, 256]`. `fhavatar.tools.convert_prior` reports any mismatch by name.

Not from the paper (our choices, documented where used): the depth map is rendered at the generator's neural
rendering resolution and upsampled to the tri-grid resolution before back-projection (so the visible cells are
dense; the upsampling interpolates head pixels only, never the background depth), a ray counts as surface where
its alpha exceeds `occlusion_alpha_threshold`, the stitched tri-grid keeps encoder 1's latents for rendering
(background and super-resolution), and the first-stage renders come from `PanoHeadGenerator.render`, i.e. clamped
to [0, 1] before the [-1, 1] mapping (TriPlaneNet feeds the unclamped super-resolution output).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from diffusers.utils import BaseOutput
from torch import Tensor, nn

from .encoders import TwoStageEncoder
from .renderer import render_triplane, sample_rays
from .triplane import PLANE_AXES, Triplane

__all__ = ["DualEncoderInversion", "DualEncoderInversionOutput", "INVERSION_PRESETS", "PRESETS", "mirror_camera_label",
           "stitch_triplanes", "visible_cells"]

#: Constructor arguments of the released sizes (PanoHead tri-grid 3 x 32 x 256², IR-SE-50 encoders at 256²) and
#: of a tiny configuration for tests (pair it with the generator's tiny preset: same latents and tri-grid).
INVERSION_PRESETS: dict[str, dict[str, Any]] = {
    "official": dict(num_ws=14, w_dim=512, triplane_channels=32, triplane_depth=3, triplane_resolution=256,
                     input_size=256, block_units=(3, 4, 14, 3), block_channels=(64, 128, 256, 512),
                     up_channels=(512, 384, 256, 96)),
    "tiny": dict(num_ws=8, w_dim=32, triplane_channels=8, triplane_depth=3, triplane_resolution=32, input_size=32,
                 block_units=(1, 1, 1, 1), block_channels=(8, 16, 24, 32), up_channels=(32, 16, 16, 8)),
}
PRESETS = INVERSION_PRESETS  # the name `PanoHeadPrior.from_preset` looks up


# ============================================================================ stitching
def mirror_camera_label(camera_label: Tensor) -> Tensor:  # [B, 25] -> [B, 25]
    """The camera seeing the head mirrored left-right (x -> -x): `cam2world' = S cam2world S`, S = diag(-1, 1, 1, 1).

    With a mirrored image this is the pair TriPlaneNet feeds its second stage (the same convention as EG3D's
    dataset mirroring: the x row and column of the pose flip sign, the intrinsics stay).
    """
    flip = torch.tensor([-1.0, 1.0, 1.0, 1.0], dtype=camera_label.dtype, device=camera_label.device)
    pose = camera_label[:, :16].reshape(-1, 4, 4) * flip[:, None] * flip[None, :]
    return torch.cat([pose.reshape(-1, 16), camera_label[:, 16:]], dim=1)


def stitch_triplanes(visible: Triplane, occluded: Triplane, visibility: Tensor) -> Triplane:
    """Occlusion-aware stitching (paper Fig. 4): `visibility * T1 + (1 - visibility) * T2`, per grid cell.

    Args:
        visible (`Triplane`): encoder 1's tri-grid `[B, 3, D, C, R, R]` (faithful to the input view).
        occluded (`Triplane`): encoder 2's tri-grid, same shape (realistic where the input shows nothing).
        visibility (`Tensor` of shape `[B, 3, D, R, R]`): 1 where a cell is seen in the input view (1 - O of
            eq. 3), 0 where occluded; fractional values blend.

    Returns:
        The stitched `Triplane`, carrying encoder 1's latents.
    """
    p1, p2 = visible.planes, occluded.planes
    if p1.shape != p2.shape:
        raise ValueError(f"Both tri-grids must have the same shape, got {list(p1.shape)} and {list(p2.shape)}.")
    b, _, d, _, r, _ = p1.shape
    if not isinstance(visibility, Tensor) or visibility.shape != (b, 3, d, r, r):
        raise ValueError(f"`visibility` must have shape [{b}, 3, {d}, {r}, {r}], got {getattr(visibility, 'shape', visibility)}.")
    v = visibility.to(p1.dtype).unsqueeze(3)  # broadcast over the C features of a cell
    return Triplane(v * p1 + (1 - v) * p2, ws=visible.ws)


def visible_cells(points: Tensor, valid: Tensor, depth: int, resolution: int, box_warp: float) -> Tensor:
    """Mark the tri-grid cells that trilinear sampling at `points` reads from (the adjoint footprint).

    Args:
        points (`Tensor` of shape `[B, P, 3]`): surface points in the prior's world units.
        valid (`Tensor` of shape `[B, P]`): which points count.
        depth, resolution: D and R of the tri-grid; box_warp: side of the cube it spans.

    Returns:
        `Tensor` of shape `[B, 3, D, R, R]`, 1.0 at every cell with a non-zero interpolation weight for some valid
        point, else 0.0 — exactly the cells `sample_triplane` would read (same axes and `align_corners=False`).
    """
    b = points.shape[0]
    mask = torch.zeros(b, 3, depth, resolution, resolution, dtype=torch.bool, device=points.device)
    coords = points * (2.0 / box_warp)
    sizes = (resolution, resolution, depth)  # grid_sample's (x -> width, y -> height, z -> depth) extents
    batch = torch.arange(b, device=points.device)[:, None].expand_as(valid)
    for plane, axes in enumerate(PLANE_AXES):
        lows, fracs = [], []
        for coord, size in zip(coords[..., list(axes)].unbind(-1), sizes):
            pixel = ((coord + 1) * size - 1) / 2  # align_corners=False: texel k's centre sits at pixel k
            low = torch.floor(pixel)
            lows.append(low.long())
            fracs.append(pixel - low)
        for corner in range(8):
            offs = [(corner >> k) & 1 for k in range(3)]
            idx = [low + o for low, o in zip(lows, offs)]
            # A corner is read when its trilinear weight is non-zero: the upper corner needs a fractional part.
            keep = valid.clone()
            for i, o, frac, size in zip(idx, offs, fracs, sizes):
                keep &= (i >= 0) & (i < size) & ((frac > 0) if o else (frac < 1))
            w, h, d = (i.clamp(0, size - 1) for i, size in zip(idx, sizes))
            mask[batch[keep], plane, d[keep], h[keep], w[keep]] = True
    return mask.to(points.dtype)


@dataclass
class DualEncoderInversionOutput(BaseOutput):
    """Everything `DualEncoderInversion.invert` computes.

    Args:
        triplane (`Triplane`): the stitched tri-grid (what `forward` returns).
        triplane_visible (`Triplane`): encoder 1's tri-grid.
        triplane_occluded (`Triplane`): encoder 2's tri-grid.
        visibility (`Tensor` of shape `[B, 3, D, R, R]`): 1 at cells seen in the input view.
    """

    triplane: Triplane
    triplane_visible: Triplane
    triplane_occluded: Triplane
    visibility: Tensor


# ============================================================================ the inversion
class DualEncoderInversion(nn.Module):
    r"""Dual-encoder PanoHead inversion: image + camera -> full-head tri-grid (Bilecen et al., NeurIPS'24).

    Two `TwoStageEncoder`s (`encoder1`: same-view fidelity, `encoder2`: realistic occluded regions) each invert
    the image into latents + a tri-grid residual; the tri-grids are stitched per cell with the input view's
    visibility (module docstring). The generator is passed at call time (it belongs to `PanoHeadPrior`).

    Args:
        num_ws (`int`, defaults to 14): latents per image (the generator's `num_ws`).
        w_dim (`int`, defaults to 512): latent width.
        triplane_channels (`int`, defaults to 32): C of the generator's tri-grid.
        triplane_depth (`int`, defaults to 3): D of the generator's tri-grid.
        triplane_resolution (`int`, defaults to 256): R of the generator's tri-grid.
        input_size (`int`, defaults to 256): the encoders' square input (a power of two >= 32); any image is
            resized to it.
        block_units (`tuple[int]`, defaults to `(3, 4, 14, 3)`): IR-SE units per stage (IR-SE-50).
        block_channels (`tuple[int]`, defaults to `(64, 128, 256, 512)`): channels per stage.
        up_channels (`tuple[int]`, defaults to `(512, 384, 256, 96)`): outputs of the residual decoder's `up1..up4`
            (multiples of 4: they are pixel-shuffled).
        occlusion_resolution (`int`, *optional*): size of the depth map back-projected for the visibility mask;
            defaults to `triplane_resolution` (one ray per tri-grid texel, so the visible region has no holes).
        occlusion_alpha_threshold (`float`, defaults to 0.5): a ray hits the head where its alpha exceeds this.

    Example:
        ```py
        >>> from fhavatar.prior.inversion import DualEncoderInversion, INVERSION_PRESETS
        >>> inversion = DualEncoderInversion(**INVERSION_PRESETS["tiny"]).eval()
        >>> triplane = inversion(image, camera.to_label(), prior.generator)  # image [B, 3, H, W] in [0, 1]
        ```
    """

    def __init__(
        self,
        num_ws: int = 14,
        w_dim: int = 512,
        triplane_channels: int = 32,
        triplane_depth: int = 3,
        triplane_resolution: int = 256,
        input_size: int = 256,
        block_units: tuple[int, ...] = (3, 4, 14, 3),
        block_channels: tuple[int, ...] = (64, 128, 256, 512),
        up_channels: tuple[int, ...] = (512, 384, 256, 96),
        occlusion_resolution: int | None = None,
        occlusion_alpha_threshold: float = 0.5,
    ):
        super().__init__()
        for name, value in (("block_units", block_units), ("block_channels", block_channels), ("up_channels", up_channels)):
            if len(tuple(value)) != 4 or not all(isinstance(v, int) and v > 0 for v in value):
                raise ValueError(f"`{name}` must be 4 positive integers (one per encoder stage), got {value!r}.")
        if any(u % 4 for u in up_channels):
            raise ValueError(f"`up_channels` must be multiples of 4 (they are pixel-shuffled by 2), got {tuple(up_channels)}.")
        if input_size < 32 or input_size & (input_size - 1):
            raise ValueError(f"`input_size` must be a power of two >= 32 (the encoder pools 16x), got {input_size}.")
        for name, value in (("num_ws", num_ws), ("w_dim", w_dim), ("triplane_channels", triplane_channels),
                            ("triplane_depth", triplane_depth), ("triplane_resolution", triplane_resolution)):
            if not isinstance(value, int) or value < 1:
                raise ValueError(f"`{name}` must be a positive integer, got {value!r}.")
        if occlusion_resolution is not None and occlusion_resolution < 1:
            raise ValueError(f"`occlusion_resolution` must be a positive integer or None, got {occlusion_resolution!r}.")
        if not 0 <= occlusion_alpha_threshold < 1:
            raise ValueError(f"`occlusion_alpha_threshold` must lie in [0, 1), got {occlusion_alpha_threshold!r}.")
        self.num_ws, self.w_dim, self.input_size = num_ws, w_dim, input_size
        self.triplane_channels, self.triplane_depth = triplane_channels, triplane_depth
        self.triplane_resolution = triplane_resolution
        self.occlusion_resolution = occlusion_resolution or triplane_resolution
        self.occlusion_alpha_threshold = occlusion_alpha_threshold
        sizes = dict(num_ws=num_ws, w_dim=w_dim, triplane_features=3 * triplane_channels * triplane_depth,
                     input_size=input_size, block_units=tuple(block_units), block_channels=tuple(block_channels),
                     up_channels=tuple(up_channels))
        self.encoder1 = TwoStageEncoder(**sizes)
        self.encoder2 = TwoStageEncoder(**sizes)

    # ------------------------------------------------------------------ checks and preprocessing
    def check_inputs(self, image: Tensor, camera_label: Tensor, generator: nn.Module) -> None:
        """Raise `TypeError`/`ValueError` naming the argument for malformed inputs or a mismatched generator."""
        if not isinstance(image, Tensor):
            raise TypeError(f"`image` must be a torch.Tensor [B, 3, H, W] in [0, 1], got {type(image).__name__}.")
        if image.dim() != 4 or image.shape[1] != 3 or not image.is_floating_point():
            raise ValueError(f"`image` must be a float tensor [B, 3, H, W] in [0, 1], got {image.dtype} {list(image.shape)}.")
        lo, hi = float(image.detach().min()), float(image.detach().max())
        if lo < -1e-3 or hi > 1 + 1e-3:
            raise ValueError(f"`image` values must lie in [0, 1], got [{lo:.3g}, {hi:.3g}] (did you pass [-1, 1] or 0-255?).")
        if not isinstance(camera_label, Tensor) or camera_label.shape != (image.shape[0], 25):
            raise ValueError(
                f"`camera_label` must be a tensor [{image.shape[0]}, 25] (`Camera.to_label()`), got "
                f"{getattr(camera_label, 'shape', type(camera_label).__name__)}."
            )
        missing = [a for a in ("synthesize", "render", "decoder", "rendering") if not hasattr(generator, a)]
        if missing:
            raise TypeError(f"`generator` must be a PanoHeadGenerator, got {type(generator).__name__} (no {missing}).")
        mine = (self.num_ws, self.w_dim, self.triplane_channels, self.triplane_depth, self.triplane_resolution)
        theirs = (generator.num_ws, generator.w_dim, generator.triplane_channels, generator.triplane_depth,
                  generator.triplane_resolution)
        if mine != theirs:
            raise ValueError(
                "The inversion and `generator` disagree on (num_ws, w_dim, C, D, R): inversion "
                f"{mine}, generator {theirs}. Build both from one PanoHeadPrior config."
            )

    def preprocess(self, image: Tensor) -> Tensor:  # [B, 3, H, W] in [0, 1] -> [B, 3, S, S] in [-1, 1]
        """Resize (bilinear, antialiased) to the encoders' input and map [0, 1] -> [-1, 1] like pSp's transforms."""
        dtype = self.encoder1.latent_avg.dtype
        image = image.to(device=self.encoder1.latent_avg.device, dtype=dtype)
        if image.shape[-2:] != (self.input_size, self.input_size):
            image = F.interpolate(image, size=(self.input_size, self.input_size), mode="bilinear", align_corners=False,
                                  antialias=True)
        return image * 2 - 1

    # ------------------------------------------------------------------ visibility (eq. 3)
    @torch.no_grad()
    def visibility(self, triplane: Triplane, camera_label: Tensor, generator: nn.Module) -> Tensor:
        """`1 - O` of eq. (3): tri-grid cells hit by the back-projected depth map of the input view.

        Args:
            triplane (`Triplane`): encoder 1's tri-grid `[B, 3, D, C, R, R]`.
            camera_label (`Tensor` of shape `[B, 25]`): the input view.
            generator: the PanoHead generator (its decoder and rendering options render the depth).

        Returns:
            `Tensor` of shape `[B, 3, D, R, R]` with values in {0, 1}; no gradient (a hard selection).
        """
        b, n, m = len(triplane), generator.neural_rendering_resolution, self.occlusion_resolution
        label = camera_label.to(triplane.planes.dtype)
        cam2world, intrinsics = label[:, :16].reshape(b, 4, 4), label[:, 16:].reshape(b, 3, 3)
        origins, directions = sample_rays(cam2world, intrinsics, n)
        _, depth, alpha = render_triplane(triplane.detach(), generator.decoder, origins, directions, generator.rendering)
        depth, alpha = depth.reshape(b, 1, n, n), alpha.reshape(b, 1, n, n)  # rays are row-major
        hit = (alpha > self.occlusion_alpha_threshold).to(depth.dtype)
        if m != n:
            # Normalised interpolation: upsample depth from head pixels only, so silhouette pixels never mix in the
            # far background depth (which would mark cells behind the head as visible).
            def up(x: Tensor) -> Tensor:
                return F.interpolate(x, size=(m, m), mode="bilinear", align_corners=False)

            weight = up(hit)
            depth = up(depth * hit) / weight.clamp_min(1e-6)
            hit = (weight > 0.5).to(depth.dtype)
            origins, directions = sample_rays(cam2world, intrinsics, m)
        points = origins + depth.reshape(b, -1, 1) * directions  # depth = distance along the unit ray
        valid = hit.reshape(b, -1) > 0
        return visible_cells(points, valid, self.triplane_depth, self.triplane_resolution, generator.rendering.box_warp)

    # ------------------------------------------------------------------ inversion
    def invert(self, image: Tensor, camera_label: Tensor, generator: nn.Module) -> DualEncoderInversionOutput:
        """Both encoders, the visibility mask and the stitched tri-grid (see `forward`)."""
        self.check_inputs(image, camera_label, generator)
        x = self.preprocess(image)
        label = camera_label.to(device=x.device, dtype=x.dtype)
        label_mirror, x_mirror = mirror_camera_label(label), x.flip(-1)
        visible = self.encoder1(x, x_mirror, label, label_mirror, generator)
        occluded = self.encoder2(x, x_mirror, label, label_mirror, generator)
        visibility = self.visibility(visible, label, generator)
        return DualEncoderInversionOutput(
            triplane=stitch_triplanes(visible, occluded, visibility), triplane_visible=visible,
            triplane_occluded=occluded, visibility=visibility,
        )

    def forward(
        self,
        image: Tensor,  # [B, 3, H, W] in [0, 1], any H, W
        camera_label: Tensor,  # [B, 25]
        generator: nn.Module,
    ) -> Triplane:
        """Invert `image` seen from `camera_label` into a full-head tri-grid.

        Args:
            image (`Tensor` of shape `[B, 3, H, W]`): the aligned portrait in [0, 1], any size (resized here).
            camera_label (`Tensor` of shape `[B, 25]`): its PanoHead camera label.
            generator (`PanoHeadGenerator`): the prior's generator (synthesis and rendering).

        Returns:
            `Triplane` `[B, 3, D, C, R, R]` (with encoder 1's latents as `ws`), differentiable w.r.t. `image`
            (the visibility mask itself is a hard, gradient-free selection).
        """
        return self.invert(image, camera_label, generator).triplane
