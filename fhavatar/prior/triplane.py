"""PanoHead's tri-grid: three axis-aligned feature planes, each with a few depth levels (PanoHead §3.2).

PanoHead extends EG3D's tri-plane with a small depth axis per plane ("tri-grid", D = 3 levels), so a point's
feature is *trilinearly* interpolated in each of the three grids and the three results are averaged (the
aggregation its decoder applies before the MLP).

Layout facts (read from PanoHead's `training/triplane.py` and `volumetric_rendering/renderer.py`):

- The StyleGAN2 backbone emits `3 * C * D` channels at `R x R`; plane `i` owns channels `[i*C*D, (i+1)*C*D)`
  and, inside a plane, channel `c * D + d` is feature `c` at depth level `d` (a `view(3, C, D, R, R)`).
  `Triplane.planes` stores the same numbers as `[B, 3, D, C, R, R]` (the layout of our contract);
  `Triplane.from_backbone` / `Triplane.to_backbone` convert exactly.
- Points are scaled by `2 / box_warp` into `[-1, 1]` and each plane reads them in its own axis order
  `(width, height, depth)`: plane 0 = `(x, y, z)`, plane 1 = `(x, z, y)`, plane 2 = `(y, z, x)` (PanoHead's
  `generate_planes`, which fixes EG3D's duplicated plane). Sampling is `grid_sample` with
  `align_corners=False` and zero padding, so texel centres sit at `(2k + 1) / R - 1` and features fade to zero
  outside the box.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = ["PLANE_AXES", "Triplane", "sample_triplane"]

#: For each plane, which point coordinate (0 = x, 1 = y, 2 = z) drives its (width, height, depth) grid axes.
PLANE_AXES: tuple[tuple[int, int, int], ...] = ((0, 1, 2), (0, 2, 1), (1, 2, 0))


@dataclass
class Triplane:
    """A batch of PanoHead tri-grids.

    Args:
        planes (`Tensor` of shape `[B, 3, D, C, R, R]`): per plane (in `PLANE_AXES` order), D depth levels of
            C-channel `R x R` feature maps (PanoHead: D = 3, C = 32, R = 256). Row index = the plane's height
            axis, column index = its width axis.
        ws (`Tensor` of shape `[B, num_ws, w_dim]`, *optional*): the latents the grids were synthesised from.
            Rendering needs them (background, raw-RGB and super-resolution layers are style-modulated), so
            `PanoHeadGenerator.synthesize` sets them; keep them when editing the planes
            (`dataclasses.replace(triplane, planes=...)`).

    Example:
        ```py
        >>> tri = Triplane(torch.randn(1, 3, 3, 32, 256, 256))
        >>> sample_triplane(tri, torch.zeros(1, 5, 3)).shape
        torch.Size([1, 5, 32])
        ```
    """

    planes: Tensor  # [B, 3, D, C, R, R]
    ws: Tensor | None = None  # [B, num_ws, w_dim]

    def __post_init__(self) -> None:
        if not isinstance(self.planes, Tensor):
            raise TypeError(f"Triplane.planes must be a torch.Tensor, got {type(self.planes).__name__}.")
        p = self.planes
        if p.dim() != 6 or p.shape[1] != 3 or p.shape[-1] != p.shape[-2]:
            raise ValueError(f"Triplane.planes must have shape [B, 3, D, C, R, R], got {list(p.shape)}.")
        if not p.is_floating_point():
            raise ValueError(f"Triplane.planes must be a floating-point tensor, got dtype {p.dtype}.")
        if self.ws is not None and (not isinstance(self.ws, Tensor) or self.ws.dim() != 3 or self.ws.shape[0] != p.shape[0]):
            got = getattr(self.ws, "shape", self.ws)
            raise ValueError(f"Triplane.ws must be None or a tensor [{p.shape[0]}, num_ws, w_dim], got {got}.")

    # ------------------------------------------------------------------ sizes
    def __len__(self) -> int:
        return self.planes.shape[0]

    @property
    def depth(self) -> int:
        """D, the depth levels of each grid."""
        return self.planes.shape[2]

    @property
    def channels(self) -> int:
        """C, the feature channels."""
        return self.planes.shape[3]

    @property
    def resolution(self) -> int:
        """R, the grid width and height."""
        return self.planes.shape[-1]

    # ------------------------------------------------------------------ conversions
    @classmethod
    def from_backbone(cls, features: Tensor, channels: int, depth: int, ws: Tensor | None = None) -> Triplane:
        """Split the backbone's output `[B, 3*C*D, R, R]` (official channel order) into a `Triplane`."""
        if not isinstance(features, Tensor) or features.dim() != 4:
            raise ValueError(f"`features` must be a tensor [B, 3*C*D, R, R], got {getattr(features, 'shape', type(features))}.")
        b, n, r, _ = features.shape
        if n != 3 * channels * depth:
            raise ValueError(f"`features` must have 3*C*D = {3 * channels * depth} channels (C={channels}, D={depth}), got {n}.")
        return cls(features.view(b, 3, channels, depth, r, r).transpose(2, 3), ws=ws)

    def to_backbone(self) -> Tensor:  # [B, 3*C*D, R, R]
        """The inverse of `from_backbone`: the official flat channel layout."""
        b, _, d, c, r, _ = self.planes.shape
        return self.planes.transpose(2, 3).reshape(b, 3 * c * d, r, r)

    def to(self, *args, **kwargs) -> Triplane:
        ws = self.ws.to(*args, **kwargs) if self.ws is not None else None
        return Triplane(self.planes.to(*args, **kwargs), ws=ws)

    def detach(self) -> Triplane:
        return Triplane(self.planes.detach(), ws=self.ws.detach() if self.ws is not None else None)

    def __getitem__(self, index) -> Triplane:
        if isinstance(index, int):
            index = slice(index, index + 1 if index != -1 else None)
        return Triplane(self.planes[index], ws=self.ws[index] if self.ws is not None else None)


def sample_triplane(
    triplane: Triplane,
    points: Tensor,  # [B, P, 3] in the prior's world units
    box_warp: float = 1.0,
) -> Tensor:  # [B, P, C]
    """Features of `triplane` at `points`: trilinear in each grid, averaged over the three planes.

    Args:
        triplane (`Triplane`): `[B, 3, D, C, R, R]` grids.
        points (`Tensor` of shape `[B, P, 3]`): points in the prior's world coordinates; the grids span the cube
            `[-box_warp/2, box_warp/2]^3` (outside it the features fade to 0, like PanoHead's zero padding).
        box_warp (`float`, *optional*, defaults to 1.0): side length of that cube (PanoHead: 1).

    Returns:
        `Tensor` of shape `[B, P, C]`, differentiable in `triplane.planes` and `points`. At a texel centre of
        every plane (see the module docstring) it equals the mean of the three texel values exactly.
    """
    if not isinstance(triplane, Triplane):
        raise TypeError(f"`triplane` must be a Triplane, got {type(triplane).__name__}.")
    b, _, d, c, r, _ = triplane.planes.shape
    if not isinstance(points, Tensor) or points.dim() != 3 or points.shape[0] != b or points.shape[-1] != 3:
        raise ValueError(f"`points` must be a tensor [{b}, P, 3], got {getattr(points, 'shape', type(points))}.")
    if not box_warp > 0:
        raise ValueError(f"`box_warp` must be positive, got {box_warp!r}.")
    coords = points.to(triplane.planes.dtype) * (2.0 / box_warp)
    # One grid per plane: its (width, height, depth) coordinates, in `grid_sample`'s (x, y, z) order.
    grid = torch.stack([coords[..., list(axes)] for axes in PLANE_AXES], dim=1)  # [B, 3, P, 3]
    volumes = triplane.planes.transpose(2, 3).reshape(b * 3, c, d, r, r)  # [B*3, C, D, R, R]
    sampled = F.grid_sample(
        volumes, grid.reshape(b * 3, 1, 1, -1, 3), mode="bilinear", padding_mode="zeros", align_corners=False
    )  # [B*3, C, 1, 1, P]
    return sampled.view(b, 3, c, -1).mean(dim=1).transpose(1, 2)
