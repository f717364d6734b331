"""The avatar-model contract: UV Gaussian attribute maps (paper §3.2, §3.4) and their activations.

Every avatar model (the learned `FHAvatarModel`, the training-free `ProjectionAvatarModel`) returns
`UVAttributes`; `fhavatar.avatar.Avatar` samples them at the `UVLayout` positions and binds the Gaussians to
the source mesh. Conventions, all maps `[B, C, K, K]` on the UV atlas (row 0 = top, v = 1):

- `colors` `[B, 3, K, K]`: RGB in [0, 1].
- `rotations` `[B, 4, K, K]`: unit quaternions (w, x, y, z) *relative to the local frame of the bound triangle*
  (tangent t = the triangle's 3D direction of +u made perpendicular to the normal, normal n, bitangent n × t;
  see `fhavatar.avatar`), so they follow the triangle when the head moves.
- `scales` `[B, 3, K, K]`: standard deviations in head units on the source mesh, along the rotated local axes
  (already multiplied by the relative scale map s of §3.2); they scale with the triangle when it stretches.
- `opacities` `[B, 1, K, K]` in [0, 1].
- `offsets` `[B, 3, K, K]`: position offsets in head units, expressed in the triangle's local frame (bounded).
"""

from __future__ import annotations

from dataclasses import dataclass, fields

import torch
import torch.nn.functional as F
from diffusers.utils import BaseOutput
from torch import Tensor

__all__ = ["ATTRIBUTE_CHANNELS", "NUM_ATTRIBUTE_CHANNELS", "UVAttributes", "activate_attributes"]

#: Raw channel layout of an attribute map A (14 channels, paper §3.4).
ATTRIBUTE_CHANNELS = {"colors": 3, "rotations": 4, "scales": 3, "opacities": 1, "offsets": 3}
NUM_ATTRIBUTE_CHANNELS = sum(ATTRIBUTE_CHANNELS.values())


@dataclass
class UVAttributes(BaseOutput):
    """Activated UV Gaussian attribute maps (see the module docstring for units and frames).

    Args:
        colors (`Tensor` `[B, 3, K, K]`), rotations (`[B, 4, K, K]`), scales (`[B, 3, K, K]`),
        opacities (`[B, 1, K, K]`), offsets (`[B, 3, K, K]`).
        refined_positions (`Tensor` `[B, 3, K, K]`, *optional*): the refined position map p_r = p + Δp (eq. 2).
        aux (`UVAttributes`, *optional*): the auxiliary maps A^1 decoded from F_c^1 alone (training only).
    """

    colors: Tensor
    rotations: Tensor
    scales: Tensor
    opacities: Tensor
    offsets: Tensor
    refined_positions: Tensor | None = None
    aux: UVAttributes | None = None

    @property
    def resolution(self) -> int:
        return self.colors.shape[-1]

    def validate(self) -> None:
        """Raise `ValueError` if a map has the wrong shape or the batch/resolution disagree."""
        b, k = self.colors.shape[0], self.colors.shape[-1]
        for name, channels in ATTRIBUTE_CHANNELS.items():
            value = getattr(self, name)
            if not isinstance(value, Tensor) or value.shape != (b, channels, k, k):
                shape = list(value.shape) if isinstance(value, Tensor) else type(value).__name__
                raise ValueError(f"UVAttributes.{name} must have shape [{b}, {channels}, {k}, {k}], got {shape}.")
        if self.refined_positions is not None and self.refined_positions.shape != (b, 3, k, k):
            got = list(self.refined_positions.shape)
            raise ValueError(f"UVAttributes.refined_positions must be [{b}, 3, {k}, {k}], got {got}.")

    def map(self, fn) -> UVAttributes:
        """Apply `fn` to every map (e.g. `layout.flip`, `.detach()`), recursing into `aux`."""
        values = {}
        for f in fields(self):
            value = getattr(self, f.name)
            if f.name == "aux":
                values[f.name] = value.map(fn) if value is not None else None
            else:
                values[f.name] = fn(value) if value is not None else None
        return UVAttributes(**values)


def activate_attributes(
    raw: Tensor,  # [B, 14, K, K]
    relative_scale: Tensor,  # [K, K] or [B, 1, K, K], head units per texel (UVLayout.relative_scale)
    max_offset: float = 0.02,
    scale_range: tuple[float, float] = (0.1, 4.0),
) -> UVAttributes:
    """Map raw network outputs to valid attributes.

    colour = sigmoid; rotation = normalise(raw + identity) so zero output means "aligned with the triangle";
    scale = s · (lo + (hi - lo) · sigmoid(raw)), i.e. between `lo` and `hi` texel sizes (bounded, so no
    Gaussian can explode or vanish); opacity = sigmoid; offset = max_offset · tanh(raw) (head units).
    """
    if raw.dim() != 4 or raw.shape[1] != NUM_ATTRIBUTE_CHANNELS:
        raise ValueError(f"`raw` must have shape [B, {NUM_ATTRIBUTE_CHANNELS}, K, K], got {list(raw.shape)}.")
    colors, rot, scale, opacity, offset = torch.split(raw, list(ATTRIBUTE_CHANNELS.values()), dim=1)
    identity = torch.tensor([1.0, 0.0, 0.0, 0.0], dtype=raw.dtype, device=raw.device)[None, :, None, None]
    s = relative_scale if relative_scale.dim() == 4 else relative_scale[None, None]
    lo, hi = scale_range
    return UVAttributes(
        colors=torch.sigmoid(colors),
        rotations=F.normalize(rot + identity, dim=1),
        scales=s.to(raw.dtype) * (lo + (hi - lo) * torch.sigmoid(scale)),
        opacities=torch.sigmoid(opacity),
        offsets=max_offset * torch.tanh(offset),
    )
