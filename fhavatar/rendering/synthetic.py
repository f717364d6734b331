"""A procedural Gaussian head for demos, benchmarks and tests (no assets, no learning).

It is a stand-in scene with the size and layout of a real avatar in head space — a skull-shaped ellipsoid
with hair and a face (eyes, nose, mouth), a neck, ~78K surface-aligned flat Gaussians like the paper's
UV-sampled avatar — so that renderer speed and looks can be judged before any model exists.
"""

from __future__ import annotations

import math

import torch

from ..rotations import quat_from_z_to
from .gaussians import Gaussians

__all__ = ["synthetic_head", "DEFAULT_NUM_GAUSSIANS"]

#: Number of Gaussians of a full FLAME-based avatar at K=256 (paper §B).
DEFAULT_NUM_GAUSSIANS = 78_000

_HEAD_CENTRE = (0.0, 0.04, -0.02)
_HEAD_RADII = (0.20, 0.25, 0.235)
_SKIN = (0.87, 0.68, 0.58)
_HAIR = (0.25, 0.16, 0.10)
_NECK_RADIUS, _NECK_TOP, _NECK_BOTTOM = 0.10, -0.12, -0.45
# Face features: (centre offset from the head centre in units of the radii, radius, colour).
_FEATURES = (
    ((0.36, 0.12, 0.93), 0.035, (0.08, 0.07, 0.07)),  # eyes
    ((-0.36, 0.12, 0.93), 0.035, (0.08, 0.07, 0.07)),
    ((0.0, -0.38, 0.92), 0.055, (0.65, 0.25, 0.27)),  # mouth
    ((0.40, 0.24, 0.90), 0.045, (0.22, 0.14, 0.10)),  # brows (wide, flat)
    ((-0.40, 0.24, 0.90), 0.045, (0.22, 0.14, 0.10)),
)


def synthetic_head(
    num_gaussians: int = DEFAULT_NUM_GAUSSIANS, generator: torch.Generator | None = None
) -> Gaussians:
    """A procedural full head of `num_gaussians` flat, surface-aligned Gaussians in head space.

    Args:
        num_gaussians (`int`, *optional*, defaults to 78000): total count (≥ 16); 85% on the head, the
            rest on the neck.
        generator (`torch.Generator`, *optional*): randomness for the small jitter of positions and colours.

    Returns:
        `Gaussians` with RGB colours (lighting baked in), opacities 0.9–1.
    """
    if not isinstance(num_gaussians, int) or num_gaussians < 16:
        raise ValueError(f"`num_gaussians` must be an int >= 16, got {num_gaussians!r}.")
    n_head = int(num_gaussians * 0.85)
    n_neck = num_gaussians - n_head

    # Head: Fibonacci points on the unit sphere mapped onto the ellipsoid (near-uniform coverage).
    i = torch.arange(n_head, dtype=torch.float64) + 0.5
    polar = torch.acos(1 - 2 * i / n_head)
    azim = math.pi * (1 + 5**0.5) * i
    unit = torch.stack([torch.sin(polar) * torch.sin(azim), torch.cos(polar), torch.sin(polar) * torch.cos(azim)], -1)
    radii = torch.tensor(_HEAD_RADII, dtype=torch.float64)
    centre = torch.tensor(_HEAD_CENTRE, dtype=torch.float64)
    head_pts = unit * radii + centre
    head_normals = unit / radii
    head_normals = head_normals / head_normals.norm(dim=-1, keepdim=True)

    colour = torch.tensor(_HAIR, dtype=torch.float64).expand(n_head, 3).clone()
    face = (unit[:, 2] > 0.35) & (unit[:, 1] < 0.45) & (unit[:, 2] > 0.55 * unit[:, 1].abs() + 0.2)
    colour[face] = torch.tensor(_SKIN, dtype=torch.float64)
    for offset, size, rgb in _FEATURES:
        d = torch.tensor(offset, dtype=torch.float64)
        dist = ((unit - d / d.norm()) * torch.tensor([1.0, 1.6, 1.0], dtype=torch.float64)).norm(dim=-1)
        colour[dist < size * 4] = torch.tensor(rgb, dtype=torch.float64)
    # Nose: push the centre-front surface outward.
    nose = torch.exp(-((unit[:, 0] / 0.09) ** 2 + ((unit[:, 1] + 0.08) / 0.2) ** 2)) * (unit[:, 2] > 0).double()
    head_pts = head_pts + head_normals * (0.045 * nose[:, None])

    # Neck: a cylinder with the same point density.
    j = torch.arange(n_neck, dtype=torch.float64) + 0.5
    theta = 2 * math.pi * ((j * 0.6180339887) % 1.0)
    height = _NECK_TOP + (_NECK_BOTTOM - _NECK_TOP) * j / n_neck
    neck_normals = torch.stack([torch.sin(theta), torch.zeros_like(theta), torch.cos(theta)], -1)
    neck_pts = neck_normals * _NECK_RADIUS + torch.stack([torch.zeros_like(j), height, torch.zeros_like(j)], -1)
    neck_pts[:, 2] -= 0.03
    neck_colour = torch.tensor(_SKIN, dtype=torch.float64).expand(n_neck, 3) * 0.85

    means = torch.cat([head_pts, neck_pts])
    normals = torch.cat([head_normals, neck_normals])
    colours = torch.cat([colour, neck_colour])
    # Baked Lambert shading from a key light above-front-right, plus ambient.
    light = torch.tensor([0.4, 0.5, 0.77], dtype=torch.float64)
    light = light / light.norm()
    shade = 0.55 + 0.45 * (normals @ light).clamp(min=0.0)
    colours = colours * shade[:, None]
    colours = colours * (1 + 0.06 * (torch.rand(num_gaussians, 1, generator=generator, dtype=torch.float64) - 0.5))
    means = means + 0.002 * (torch.rand(num_gaussians, 3, generator=generator, dtype=torch.float64) - 0.5)

    # Flat discs: tangent extent ~ the point spacing, thin along the normal.
    area = 4 * math.pi * (math.prod(_HEAD_RADII) ** (2 / 3))
    spacing = math.sqrt(area / n_head)
    scales = torch.tensor([spacing * 0.9, spacing * 0.9, spacing * 0.15], dtype=torch.float64).expand(num_gaussians, 3)
    opacities = 0.9 + 0.1 * torch.rand(num_gaussians, generator=generator, dtype=torch.float64)
    return Gaussians(
        means=means.float(),
        quats=quat_from_z_to(normals).float(),
        scales=scales.float().contiguous(),
        opacities=opacities.float(),
        colors=colours.clamp(0, 1).float(),
    )
