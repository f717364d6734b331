"""A small synthetic head for tests: a closed, x-mirror-symmetric ellipsoid with a mirror-symmetric UV atlas.

The mesh is a UV sphere (rings of constant elevation, columns of constant azimuth) scaled into an ellipsoid of
head-like size in head space (+y up, the face toward +z). Its atlas is equirectangular with the seam at the
back of the head: `u = 0.5 + azimuth / (2π)` (azimuth 0 looks toward +z, azimuth -π/2 toward -x) and
`v = 0.5 + elevation / π`. Mirroring `x -> -x` is `u -> 1 - u` on the whole atlas, and the triangulation is
mirror-symmetric too (each quad is split along the mirror image of its mirror quad's diagonal), so the
mesh, the atlas and everything interpolated on them are exactly symmetric. The pole caps are triangle fans:
in UV each pole triangle is `(u_j, v_1), (u_j+1, v_1), ((u_j + u_j+1) / 2, 1)`, which leaves small uncovered
gaps along the top and bottom edges of the atlas (like the gutters of a real atlas).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from diffusers.configuration_utils import register_to_config
from torch import Tensor

from fhavatar.head.base import REGION_NAMES, HeadModel

__all__ = ["SymmetricHead", "SymmetricHeadParams"]


@dataclass
class SymmetricHeadParams:
    """Parameters of `SymmetricHead`: a rigid translation (the head has no other motion)."""

    translation: Tensor  # [B, 3]


class SymmetricHead(HeadModel):
    """An ellipsoid head with `2 + (num_rings - 1) * num_columns` vertices (see the module docstring).

    Args:
        num_columns (`int`, *optional*, defaults to 32): azimuth segments (even, so the front and back
            meridians are mesh edges).
        num_rings (`int`, *optional*, defaults to 16): elevation segments from the top pole to the bottom pole.
        radii (`tuple[float, float, float]`, *optional*, defaults to `(0.24, 0.3, 0.27)`): semi-axes along x, y
            and z in head units.
    """

    params_class = SymmetricHeadParams

    @register_to_config
    def __init__(self, num_columns: int = 32, num_rings: int = 16, radii: tuple = (0.24, 0.3, 0.27)):
        super().__init__()
        if num_columns < 4 or num_columns % 2:
            raise ValueError(f"`num_columns` must be an even number >= 4, got {num_columns}.")
        if num_rings < 3:
            raise ValueError(f"`num_rings` must be >= 3, got {num_rings}.")
        vertices, faces, uv, uv_faces = _ellipsoid(num_columns, num_rings, radii)
        self.register_buffer("template_vertices", vertices.float())
        self.register_buffer("faces", faces)
        self.register_buffer("uv_coords", uv.float())
        self.register_buffer("uv_faces", uv_faces)
        self.register_buffer("region_masks", _regions(vertices, radii))
        # No tracking landmarks (the UV tests do not use them); the buffers exist with their documented shapes.
        self.register_buffer("landmark_faces", torch.zeros(0, dtype=torch.long))
        self.register_buffer("landmark_barycentrics", torch.zeros(0, 3))
        self.register_buffer("landmark_mediapipe_ids", torch.zeros(0, dtype=torch.long))

    def neutral_params(self, batch_size: int = 1) -> SymmetricHeadParams:
        return SymmetricHeadParams(translation=torch.zeros(batch_size, 3, device=self.template_vertices.device))

    def forward(self, params: SymmetricHeadParams) -> Tensor:  # -> [B, V, 3]
        self._check_params_type(params)
        return self.template_vertices[None] + params.translation[:, None, :]


def _ellipsoid(n: int, m: int, radii) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """Vertices `[V, 3]`, faces `[F, 3]`, uv `[T, 2]`, uv_faces `[F, 3]` of the symmetric UV sphere."""
    a, b, c = (float(r) for r in radii)
    half = n // 2
    # Columns j = 0..n (j = n duplicates j = 0 in 3D: the back seam); azimuth of column j is -π + 2πj/n.
    # Only j <= n/2 are computed; j > n/2 are exact mirrors, so symmetry holds to the last bit.
    az = torch.tensor([-math.pi + 2 * math.pi * j / n for j in range(half + 1)], dtype=torch.float64)
    el = torch.tensor([math.pi / 2 - math.pi * k / m for k in range(1, m)], dtype=torch.float64)  # rings 1..m-1
    cos_el, sin_el = el.cos()[:, None], el.sin()[:, None]
    left = torch.stack([a * cos_el * az.sin(), b * sin_el.expand(-1, half + 1), c * cos_el * az.cos()], -1)
    right = left[:, 1:half].flip(1) * torch.tensor([-1.0, 1.0, 1.0], dtype=torch.float64)
    ring_xyz = torch.cat([left, right], 1)  # [m-1, n, 3], column j at index j (j < n)
    ring_xyz[:, 0, 0] = 0.0  # the back meridian lies on the mirror plane
    ring_xyz[:, half, 0] = 0.0  # and so does the front one
    top, bottom = torch.tensor([[0.0, b, 0.0]]), torch.tensor([[0.0, -b, 0.0]])
    vertices = torch.cat([top.double(), bottom.double(), ring_xyz.reshape(-1, 3)])

    def vid(k, j):  # ring k in 1..m-1, column j in 0..n
        return 2 + (k - 1) * n + (j % n)

    # UV grid: (m-1) rings x (n+1) columns, then two pole UVs per column (top, bottom).
    us = torch.tensor([j / n for j in range(n + 1)], dtype=torch.float64)
    us[half + 1 :] = 1 - us[:half].flip(0)
    vs = torch.tensor([1 - k / m for k in range(1, m)], dtype=torch.float64)
    grid_uv = torch.stack([us[None].expand(m - 1, -1), vs[:, None].expand(-1, n + 1)], -1).reshape(-1, 2)
    pole_u = (us[:-1] + us[1:]) / 2
    top_uv = torch.stack([pole_u, torch.ones(n, dtype=torch.float64)], -1)
    bottom_uv = torch.stack([pole_u, torch.zeros(n, dtype=torch.float64)], -1)
    uv = torch.cat([grid_uv, top_uv, bottom_uv])

    def tid(k, j):
        return (k - 1) * (n + 1) + j

    n_grid = (m - 1) * (n + 1)
    faces, uv_faces = [], []
    for j in range(n):
        faces.append((0, vid(1, j), vid(1, j + 1)))
        uv_faces.append((n_grid + j, tid(1, j), tid(1, j + 1)))
        faces.append((1, vid(m - 1, j + 1), vid(m - 1, j)))
        uv_faces.append((n_grid + n + j, tid(m - 1, j + 1), tid(m - 1, j)))
        for k in range(1, m - 1):
            q = [(k, j), (k, j + 1), (k + 1, j), (k + 1, j + 1)]  # A B C D
            # Left half split along A-D, right half along B-C: mirror images of each other.
            tris = [(0, 2, 3), (0, 3, 1)] if j < half else [(0, 2, 1), (1, 2, 3)]
            for t in tris:
                faces.append(tuple(vid(*q[i]) for i in t))
                uv_faces.append(tuple(tid(*q[i]) for i in t))
    faces, uv_faces = torch.tensor(faces), torch.tensor(uv_faces)
    # Orient every triangle counter-clockwise seen from outside (normal along the centroid direction).
    tri = vertices[faces]
    normal = torch.linalg.cross(tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0])
    flip = (normal * tri.mean(1)).sum(-1) < 0
    faces[flip] = faces[flip][:, [0, 2, 1]]
    uv_faces[flip] = uv_faces[flip][:, [0, 2, 1]]
    return vertices, faces, uv, uv_faces


def _regions(vertices: Tensor, radii) -> Tensor:  # -> [R, V] bool, symmetric in x
    nx, ny, nz = (vertices / torch.tensor(radii, dtype=vertices.dtype)).unbind(-1)
    ax = nx.abs()
    face = (nz > 0.3) & (ny >= -0.6) & (ny <= 0.35)
    masks = {
        "face": face,
        "scalp": (ny > 0.35) | ((nz < -0.2) & (ny > -0.3)),
        "eyes": face & ((ny - 0.15).abs() < 0.15) & (ax > 0.2) & (ax < 0.5),
        "mouth": face & ((ny + 0.35).abs() < 0.12) & (ax < 0.3),
        "neck": ny < -0.6,
        "ears": (ax > 0.85) & (ny.abs() < 0.3),
    }
    return torch.stack([masks[name] for name in REGION_NAMES])
