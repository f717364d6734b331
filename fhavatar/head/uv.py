"""`UVLayout`: a head model's UV atlas rasterised to a K×K grid (paper §3.2 and §B).

Map convention (every map of this module and of the models that use it): a UV map is an image `[..., K, K]`
whose **row 0 is the top of the atlas** (v = 1) and **column 0 is u = 0**. Texel `(i, j)` covers
`u ∈ [j/K, (j+1)/K]`, `v ∈ [1-(i+1)/K, 1-i/K]` and its centre is `u = (j + 0.5)/K`, `v = 1 - (i + 0.5)/K`.
All quantities are evaluated at texel centres, which is exactly what `grid_sample(..., align_corners=False)`
reads at those UVs, so `UVLayout.sample(map, texel_centre_uvs)` returns the texel values unchanged.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..rendering.triangles import covered_pixels
from .base import REGION_NAMES

__all__ = ["MAX_RESOLUTION", "MIN_RESOLUTION", "MIN_TRIANGLE_SCALE", "UVLayout", "rasterize_uv", "texel_centers",
           "triangle_frames", "uv_to_grid"]

logger = logging.getLogger(__name__)

#: Smallest and largest supported UV map size K.
MIN_RESOLUTION = 8
MAX_RESOLUTION = 2048
#: Candidate (triangle, texel) pairs the rasteriser holds at once (bounds its memory at large K).
_RASTER_CHUNK = 1 << 21
#: A texel centre counts as inside a triangle when its smallest barycentric is >= -this (edges included).
_INSIDE_TOLERANCE = 1e-9


def texel_centers(height: int, width: int | None = None) -> Tensor:  # -> [H, W, 2]
    """UV coordinates `(u, v)` of the texel centres of an `H×W` map (row 0 at v = 1, column 0 at u = 0)."""
    width = height if width is None else width
    u = (torch.arange(width, dtype=torch.float64) + 0.5) / width
    v = 1 - (torch.arange(height, dtype=torch.float64) + 0.5) / height
    return torch.stack(torch.broadcast_tensors(u[None, :], v[:, None]), -1).float()


def uv_to_grid(uv: Tensor) -> Tensor:  # [..., 2] -> [..., 2]
    """UV `(u, v)` in [0, 1] to `grid_sample` coordinates `(x, y)` in [-1, 1] (y = -1 is row 0, i.e. v = 1)."""
    return torch.stack([uv[..., 0] * 2 - 1, 1 - uv[..., 1] * 2], -1)


def rasterize_uv(
    uv_coords: Tensor,  # [T, 2] float in [0, 1]
    uv_faces: Tensor,  # [F, 3] long
    height: int,
    width: int,
) -> tuple[Tensor, Tensor]:  # face_index [H, W] long (-1 outside), barycentrics [H, W, 3] float
    """Rasterise UV triangles at the texel centres of an `H×W` grid (the module's map convention).

    A texel centre on a shared edge or inside overlapping triangles gets the triangle it is deepest inside
    (largest smallest barycentric), ties going to the highest face index. Barycentrics are ≥ 0 and sum to 1
    (clamped and renormalised after the inside test); they are 0 where `face_index` is -1. Vectorised: every
    triangle enumerates the texel centres of its bounding box, in chunks of `_RASTER_CHUNK` candidates.
    """
    device = uv_coords.device
    pts = uv_coords.double()
    pix = torch.stack([pts[:, 0] * width - 0.5, (1 - pts[:, 1]) * height - 0.5], -1)[uv_faces]  # [F, 3, 2]
    best_score = torch.full((height * width,), -torch.inf, dtype=torch.float64, device=device)
    best_face = torch.full((height * width,), -1, dtype=torch.long, device=device)
    best_bary = torch.zeros(height * width, 3, dtype=torch.float64, device=device)
    for f, row, col, bary in covered_pixels(pix, width, height, None, _RASTER_CHUNK, _INSIDE_TOLERANCE):
        score = bary.amin(-1)
        texel = row * width + col
        # Per texel: the deepest candidate of this chunk, ties to the highest face index; later chunks
        # (higher face indices) replace earlier winners on ties, so the rule holds across chunks.
        chunk_best = torch.full_like(best_score, -torch.inf).scatter_reduce(0, texel, score, "amax")
        keep = score >= chunk_best[texel]
        chunk_face = torch.full_like(best_face, -1).scatter_reduce(0, texel[keep], f[keep], "amax")
        win = keep & (f == chunk_face[texel])
        f, bary, score, texel = f[win], bary[win], score[win], texel[win]
        better = score >= best_score[texel]
        texel = texel[better]
        best_score[texel], best_face[texel], best_bary[texel] = score[better], f[better], bary[better]
    best_bary = best_bary.clamp(min=0)
    best_bary = best_bary / best_bary.sum(-1, keepdim=True).clamp(min=1e-30)
    return best_face.view(height, width), best_bary.float().view(height, width, 3)


def _nearest_valid(valid: Tensor, queries: Tensor) -> Tensor:  # [K, K] bool, [Q] long -> [Q] long
    """Flat index of the nearest valid texel (Euclidean in texels, ties to the lowest index) of each query."""
    height, width = valid.shape
    if queries.numel() == 0:
        return queries.clone()
    # The nearest valid texel of an invalid texel always has an invalid 4-neighbour (a step toward the query
    # along its larger offset axis would otherwise be valid and closer), so only those are candidates.
    pad = F.pad(valid[None, None].float(), (1, 1, 1, 1), mode="replicate")[0, 0] > 0
    interior = pad[:-2, 1:-1] & pad[2:, 1:-1] & pad[1:-1, :-2] & pad[1:-1, 2:]
    candidates = (valid & ~interior).flatten().nonzero().squeeze(1)
    cand_rc = torch.stack([candidates // width, candidates % width], -1)
    out = torch.empty_like(queries)
    step = max(1, _RASTER_CHUNK // max(1, candidates.numel()))
    for s in range(0, queries.numel(), step):
        q = queries[s : s + step]
        q_rc = torch.stack([q // width, q % width], -1)
        dist = (q_rc[:, None, :] - cand_rc[None, :, :]).square().sum(-1)
        out[s : s + step] = candidates[dist.argmin(1)]
    return out


#: Smallest triangle scale sqrt(area) (head units) used as a divisor.
MIN_TRIANGLE_SCALE = 1e-8


def triangle_frames(
    triangles: Tensor,  # [..., 3, 3] corner positions
    uv_triangles: Tensor,  # [..., 3, 2] corner UVs
) -> tuple[Tensor, Tensor]:  # rotations [..., 3, 3], scales [...]
    """Local frames `R_tri = [t | b | n]` and scales `k_tri = sqrt(area)` of triangles: the frame an `Avatar` binds
    its Gaussians in (offsets, rotations and scales are stored in it).

    - normal `n = normalise((p1 - p0) x (p2 - p0))` (outward: faces are counter-clockwise seen from outside);
    - tangent `t = normalise(dP/du - (dP/du · n) n)`, the 3D direction of +u in the atlas (so the frame varies
      smoothly across triangles in UV space, as the UV maps do); `normalise(p1 - p0)` where the UV triangle is
      degenerate;
    - bitangent `b = n x t`; `R_tri = [t | b | n]` (columns), a rotation.
    """
    e1, e2 = triangles[..., 1, :] - triangles[..., 0, :], triangles[..., 2, :] - triangles[..., 0, :]
    cross = torch.linalg.cross(e1, e2, dim=-1)
    double_area = cross.norm(dim=-1)
    normal = cross / double_area.clamp(min=MIN_TRIANGLE_SCALE**2)[..., None]
    d1, d2 = uv_triangles[..., 1, :] - uv_triangles[..., 0, :], uv_triangles[..., 2, :] - uv_triangles[..., 0, :]
    det = d1[..., 0] * d2[..., 1] - d2[..., 0] * d1[..., 1]
    degenerate_uv = det.abs() < 1e-12
    d_du = (e1 * d2[..., 1:2] - e2 * d1[..., 1:2]) / torch.where(degenerate_uv, torch.ones_like(det), det)[..., None]
    d_du = torch.where(degenerate_uv[..., None], e1, d_du)
    tangent = F.normalize(d_du - (d_du * normal).sum(-1, keepdim=True) * normal, dim=-1)
    bitangent = torch.linalg.cross(normal, tangent, dim=-1)
    return torch.stack([tangent, bitangent, normal], dim=-1), (double_area / 2).clamp(min=MIN_TRIANGLE_SCALE**2).sqrt()


class UVLayout(nn.Module):
    """The UV atlas of a `HeadModel` rasterised to a `K×K` grid: everything the avatar model needs in UV space.

    Buffers (non-persistent, recomputed from the head; they follow `.to(device)`), in the module's map
    convention (row 0 = top of the atlas, v = 1; column 0 = u = 0):

    - `face_index` `[K, K]` long: the triangle under each texel centre, -1 where none (`valid` is False).
    - `barycentrics` `[K, K, 3]` float: barycentrics of the texel centre in that triangle (≥ 0, sum 1; 0 if invalid).
    - `valid` `[K, K]` bool.
    - `region_masks` `[R, K, K]` bool: a texel is in a region (`REGION_NAMES` order) when the barycentric
      interpolation of its triangle's corner memberships is ≥ 0.5 (a weighted majority vote).
    - `relative_scale` `[K, K]` float: the relative scale map `s` of §3.2 for the template,
      `sqrt(area_3D / area_UV)` of the texel's triangle with the UV area measured in texels², i.e. the
      head-space edge length of one texel (0 where invalid). `A_scale = s ⊙ A_scale` makes a predicted scale
      of 1 cover about one texel on the surface at any K.
    - `mirror_index` `[K, K, 2]` long: `(row, col)` of the left/right mirror of each texel, `(i, K-1-j)`
      (u -> 1-u, same v); for a valid texel whose mirror is invalid, the nearest valid texel to the mirror
      instead (`mirror_exact` `[K, K]` bool says where the plain mirror was used for a valid texel).
    - Gaussian sampling positions X (§B), in this order: (1) the centre of every valid texel outside the dense
      regions; (2) the cell centres of a `dense_grid = (rows, cols)` grid over the whole atlas that fall inside a
      triangle and inside a valid dense-region texel (those texels lose their centre sample); (3) one UV per
      mesh vertex (the first corner referencing it in `faces`). `sample_uv` `[M, 2]` (u, v) in [0, 1],
      `sample_face` `[M]` long and `sample_barycentrics` `[M, 3]` bind each sample to the mesh. So
      `M = #valid texels outside dense regions + #dense-grid points in them + #vertices used by faces`.

    Args:
        head (`HeadModel`): the head model; its `template_vertices`, `faces`, `uv_coords`, `uv_faces` and
            `region_masks` are read (on their device) and copied where needed.
        resolution (`int`, *optional*, defaults to 256): the map size K (`MIN_RESOLUTION`..`MAX_RESOLUTION`).
        dense_regions (`Sequence[str]`, *optional*, defaults to `("scalp",)`): regions sampled with
            `dense_grid` instead of one Gaussian per texel (the paper's hair region); `()` disables it.
        dense_grid (`tuple[int, int]`, *optional*): `(rows, cols)` of the dense sampling grid. Defaults to
            `(K // 2, 4 * K)`: the paper's "1024×128" at K = 256 read as width (u) × height (v), i.e. two
            samples per texel, four along u every other row.
        include_vertices (`bool`, *optional*, defaults to True): append one sample per mesh vertex.

    Example:
        ```py
        >>> layout = UVLayout(head, resolution=256)
        >>> p = layout.position_map(head(head.neutral_params(1)))   # [1, 3, 256, 256]
        >>> mirrored = layout.flip(p)                                # ≈ p reflected in x on valid texels
        >>> colors = layout.sample(attribute_maps)                   # [B, C, M] at the Gaussian positions X
        ```
    """

    def __init__(
        self,
        head: nn.Module,
        resolution: int = 256,
        dense_regions: Sequence[str] = ("scalp",),
        dense_grid: tuple[int, int] | None = None,
        include_vertices: bool = True,
    ):
        super().__init__()
        if isinstance(resolution, bool) or not isinstance(resolution, int):
            raise TypeError(f"`resolution` must be an int, got {type(resolution).__name__}.")
        if not MIN_RESOLUTION <= resolution <= MAX_RESOLUTION:
            raise ValueError(f"`resolution` must be in [{MIN_RESOLUTION}, {MAX_RESOLUTION}], got {resolution}.")
        if isinstance(dense_regions, str) or any(name not in REGION_NAMES for name in dense_regions):
            raise ValueError(f"`dense_regions` must be a sequence of names from {REGION_NAMES}, got {dense_regions!r}.")
        k = resolution
        dense_grid = (k // 2, 4 * k) if dense_grid is None else tuple(dense_grid)
        if len(dense_grid) != 2 or any(isinstance(n, bool) or not isinstance(n, int) or n < 1 for n in dense_grid):
            raise ValueError(f"`dense_grid` must be two positive ints (rows, cols), got {dense_grid!r}.")
        if dense_grid[0] * dense_grid[1] > MAX_RESOLUTION**2:
            raise ValueError(f"`dense_grid` must hold at most {MAX_RESOLUTION}² points, got {dense_grid!r}.")
        vertices, faces, uv, uv_faces, vertex_regions = _checked_head(head)
        self.resolution = k
        self.num_vertices = vertices.shape[0]
        self.dense_regions = tuple(dense_regions)
        self.dense_grid = dense_grid

        face_index, bary = rasterize_uv(uv, uv_faces, k, k)
        valid = face_index >= 0
        if not valid.any():
            raise ValueError(f"The head's UV atlas covers no texel centre at `resolution` {k}.")
        safe_face = face_index.clamp(min=0)
        corners = faces[safe_face]  # [K, K, 3]
        weights = bary * valid[..., None]
        regions = (vertex_regions.float()[:, corners] * weights[None]).sum(-1) >= 0.5  # [R, K, K]

        self.register_buffer("faces", faces, persistent=False)
        self.register_buffer("_uv_triangles", uv.float()[uv_faces], persistent=False)  # [F, 3, 2]
        self.register_buffer("face_index", face_index, persistent=False)
        self.register_buffer("barycentrics", bary, persistent=False)
        self.register_buffer("valid", valid, persistent=False)
        self.register_buffer("region_masks", regions & valid, persistent=False)
        # position_map gathers the 3 corners of every texel ([3, K*K]); invalid texels read vertex 0 with weight 0.
        self.register_buffer(
            "_texel_vertices", (corners * valid[..., None]).reshape(-1, 3).T.contiguous(), persistent=False
        )
        self.register_buffer("_texel_weights", weights.reshape(-1, 3).T.contiguous(), persistent=False)

        uv_tri = uv.double()[uv_faces]  # [F, 3, 2]
        e1, e2 = uv_tri[:, 1] - uv_tri[:, 0], uv_tri[:, 2] - uv_tri[:, 0]
        uv_area = (e1[:, 0] * e2[:, 1] - e1[:, 1] * e2[:, 0]).abs() / 2 * k * k  # texels²
        self.register_buffer("_uv_area", uv_area.float(), persistent=False)
        self.register_buffer("relative_scale", self.scale_map(vertices[None].float())[0, 0], persistent=False)

        # Mirror map: (i, j) -> (i, K-1-j); valid texels with an invalid mirror take the nearest valid texel.
        flat = torch.arange(k * k, device=valid.device).view(k, k)
        mirror = flat.flip(1).reshape(-1)
        valid_flat = valid.reshape(-1)
        fix = valid_flat & ~valid_flat[mirror]
        mirror[fix] = _nearest_valid(valid, mirror[fix])
        self.register_buffer("_mirror_flat", mirror, persistent=False)
        self.register_buffer("mirror_index", torch.stack([mirror // k, mirror % k], -1).view(k, k, 2), persistent=False)
        self.register_buffer("mirror_exact", (valid_flat & ~fix).view(k, k), persistent=False)

        self._build_samples(uv, uv_faces, faces, dense_grid, include_vertices)
        logger.debug("UVLayout K=%d: %d valid texels, %d Gaussian samples.", k, int(valid.sum()), self.num_samples)

    # ------------------------------------------------------------------ Gaussian sampling positions X
    def _build_samples(self, uv, uv_faces, faces, dense_grid, include_vertices) -> None:
        k, device = self.resolution, self.valid.device
        dense_ids = [REGION_NAMES.index(name) for name in self.dense_regions]
        dense_texel = self.region_masks[dense_ids].any(0) if dense_ids else torch.zeros_like(self.valid)
        plain = (self.valid & ~dense_texel).reshape(-1).nonzero().squeeze(1)
        uvs = [texel_centers(k).to(device).reshape(-1, 2)[plain]]
        face_ids = [self.face_index.reshape(-1)[plain]]
        barys = [self.barycentrics.reshape(-1, 3)[plain]]
        if dense_ids and bool(dense_texel.any()):
            rows, cols = dense_grid
            grid_face, grid_bary = rasterize_uv(uv, uv_faces, rows, cols)
            # The K-texel holding each grid point, in exact integer arithmetic (on a texel edge: the higher index).
            tex_row = ((2 * torch.arange(rows, device=device) + 1) * k) // (2 * rows)
            tex_col = ((2 * torch.arange(cols, device=device) + 1) * k) // (2 * cols)
            keep = ((grid_face >= 0) & dense_texel[tex_row[:, None], tex_col[None, :]]).reshape(-1)
            uvs.append(texel_centers(rows, cols).to(device).reshape(-1, 2)[keep])
            face_ids.append(grid_face.reshape(-1)[keep])
            barys.append(grid_bary.reshape(-1, 3)[keep])
        if include_vertices:
            corner_of = faces.reshape(-1)
            first = torch.full((self.num_vertices,), corner_of.numel(), dtype=torch.long, device=device)
            first = first.scatter_reduce(0, corner_of, torch.arange(corner_of.numel(), device=device), "amin")
            first = first[first < corner_of.numel()]  # vertices used by some face, in vertex order
            face, corner = first // 3, first % 3
            uvs.append(uv[uv_faces[face, corner]].float())
            face_ids.append(face)
            barys.append(F.one_hot(corner, 3).float())
        self.register_buffer("sample_uv", torch.cat(uvs), persistent=False)
        self.register_buffer("sample_face", torch.cat(face_ids), persistent=False)
        self.register_buffer("sample_barycentrics", torch.cat(barys), persistent=False)

    @property
    def num_samples(self) -> int:
        """M, the number of Gaussian sampling positions X."""
        return self.sample_uv.shape[0]

    def region(self, name: str) -> Tensor:  # -> [K, K] bool
        """Texel mask of region `name` (one of `REGION_NAMES`)."""
        if name not in REGION_NAMES:
            raise ValueError(f"Unknown head region {name!r}; expected one of {REGION_NAMES}.")
        return self.region_masks[REGION_NAMES.index(name)]

    # ------------------------------------------------------------------ maps from posed vertices
    def _check_vertices(self, vertices: Tensor) -> None:
        if not isinstance(vertices, Tensor) or vertices.dim() != 3 or vertices.shape[1:] != (self.num_vertices, 3):
            shape = list(vertices.shape) if isinstance(vertices, Tensor) else type(vertices).__name__
            raise ValueError(f"`vertices` must have shape [B, {self.num_vertices}, 3], got {shape}.")
        if not vertices.is_floating_point():
            raise ValueError(f"`vertices` must be a floating-point tensor, got dtype {vertices.dtype}.")

    def position_map(self, vertices: Tensor) -> Tensor:  # [B, V, 3] -> [B, 3, K, K]
        """The UV position map p: barycentric interpolation of `vertices` at texel centres, 0 where invalid.

        Differentiable in `vertices`; the result is in channels-last memory format (a view of `[B, K, K, 3]`).
        """
        self._check_vertices(vertices)
        idx, w = self._texel_vertices, self._texel_weights.to(vertices.dtype)[..., None]  # [3, K*K], [3, K*K, 1]
        p = vertices.index_select(1, idx[0]) * w[0]  # [B, K*K, 3]
        p = p.addcmul(vertices.index_select(1, idx[1]), w[1]).addcmul(vertices.index_select(1, idx[2]), w[2])
        return p.transpose(1, 2).view(vertices.shape[0], 3, self.resolution, self.resolution)

    def scale_map(self, vertices: Tensor) -> Tensor:  # [B, V, 3] -> [B, 1, K, K]
        """The relative scale map s of posed `vertices` (see `relative_scale`): `sqrt(area_3D / area_UV)`."""
        self._check_vertices(vertices)
        tri = vertices[:, self.faces]  # [B, F, 3, 3]
        area = torch.linalg.cross(tri[:, :, 1] - tri[:, :, 0], tri[:, :, 2] - tri[:, :, 0], dim=-1).norm(dim=-1) / 2
        uv_area = self._uv_area.to(vertices.dtype)
        face_scale = torch.where(uv_area > 0, (area / uv_area.clamp(min=1e-30)).sqrt(), torch.zeros_like(area))
        s = face_scale[:, self.face_index.clamp(min=0)] * self.valid
        return s[:, None]

    def sample_frames(self, vertices: Tensor) -> tuple[Tensor, Tensor]:  # [B, V, 3] -> [B, M, 3, 3], [B, M]
        """`triangle_frames` of the triangle under each Gaussian position X: the frame an `Avatar` binds it in."""
        self._check_vertices(vertices)
        uv = self._uv_triangles[self.sample_face].to(vertices.dtype)
        return triangle_frames(vertices[:, self.faces[self.sample_face]], uv.expand(vertices.shape[0], -1, -1, -1))

    def sample_positions(self, vertices: Tensor) -> Tensor:  # [B, V, 3] -> [B, M, 3]
        """Surface points of the Gaussian samples X on posed `vertices` (their face + barycentric binding)."""
        self._check_vertices(vertices)
        corners = vertices[:, self.faces[self.sample_face]]  # [B, M, 3, 3]
        return (corners * self.sample_barycentrics[None, :, :, None].to(vertices.dtype)).sum(-2)

    # ------------------------------------------------------------------ operations on UV maps
    def _check_maps(self, maps: Tensor, name: str = "maps") -> None:
        k = self.resolution
        if not isinstance(maps, Tensor) or maps.dim() != 4 or maps.shape[-2:] != (k, k):
            shape = list(maps.shape) if isinstance(maps, Tensor) else type(maps).__name__
            raise ValueError(f"`{name}` must have shape [B, C, {k}, {k}], got {shape}.")

    def flip(self, maps: Tensor) -> Tensor:  # [B, C, K, K] -> [B, C, K, K]
        """Gather every texel's value from its mirror texel (`mirror_index`); differentiable."""
        self._check_maps(maps)
        b, c, k, _ = maps.shape
        return maps.reshape(b, c, k * k).index_select(2, self._mirror_flat).view(b, c, k, k)

    def sample(self, maps: Tensor, uv: Tensor | None = None) -> Tensor:  # [B, C, K, K], [M, 2] -> [B, C, M]
        """Bilinear `grid_sample` of `maps` at UVs `uv` (`(u, v)` in [0, 1], default: the Gaussian positions X).

        `align_corners=False` with border padding: at a texel centre the value is exactly that texel's.
        """
        self._check_maps(maps)
        if uv is None:
            uv = self.sample_uv
        elif not isinstance(uv, Tensor) or uv.dim() != 2 or uv.shape[1] != 2 or not uv.is_floating_point():
            shape = list(uv.shape) if isinstance(uv, Tensor) else type(uv).__name__
            raise ValueError(f"`uv` must be a float tensor of shape [M, 2], got {shape}.")
        elif uv.numel() and not bool(((uv >= 0) & (uv <= 1)).all()):
            raise ValueError(f"`uv` must lie in [0, 1], got values in [{uv.min().item()}, {uv.max().item()}].")
        grid = uv_to_grid(uv.to(maps.dtype))[None, None].expand(maps.shape[0], 1, -1, 2)
        out = F.grid_sample(maps, grid, mode="bilinear", padding_mode="border", align_corners=False)
        return out[:, :, 0]

    def extra_repr(self) -> str:
        return (
            f"resolution={self.resolution}, valid={int(self.valid.sum())}, samples={self.num_samples}, "
            f"dense_regions={self.dense_regions}, dense_grid={self.dense_grid}"
        )


def _checked_head(head: nn.Module) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor]:
    """The head's `template_vertices`, `faces`, `uv_coords`, `uv_faces`, `region_masks`, validated."""
    names = ("template_vertices", "faces", "uv_coords", "uv_faces", "region_masks")
    missing = [n for n in names if not isinstance(getattr(head, n, None), Tensor)]
    if missing:
        raise ValueError(f"`head` must provide the HeadModel buffers {names}; missing {missing}.")
    vertices, faces, uv, uv_faces, regions = (getattr(head, n).detach() for n in names)
    num_v, num_t = vertices.shape[0], uv.shape[0]
    checks = [
        (vertices.dim() == 2 and vertices.shape[1] == 3, "template_vertices", "[V, 3]", list(vertices.shape)),
        (faces.dim() == 2 and faces.shape[1] == 3 and faces.numel() > 0, "faces", "[F, 3]", list(faces.shape)),
        (uv.dim() == 2 and uv.shape[1] == 2, "uv_coords", "[T, 2]", list(uv.shape)),
        (uv_faces.shape == faces.shape, "uv_faces", f"{list(faces.shape)} like faces", list(uv_faces.shape)),
        (
            regions.shape == (len(REGION_NAMES), num_v),
            "region_masks",
            f"[{len(REGION_NAMES)}, {num_v}]",
            list(regions.shape),
        ),
    ]
    for ok, name, expected, got in checks:
        if not ok:
            raise ValueError(f"`head.{name}` must have shape {expected}, got {got}.")
    for name, index, bound in (("faces", faces, num_v), ("uv_faces", uv_faces, num_t)):
        if index.is_floating_point() or int(index.min()) < 0 or int(index.max()) >= bound:
            raise ValueError(
                f"`head.{name}` must hold integer indices in [0, {bound}), got {index.dtype} "
                f"values in [{index.min().item()}, {index.max().item()}]."
            )
    if not torch.isfinite(uv).all() or float(uv.min()) < 0 or float(uv.max()) > 1:
        raise ValueError(
            f"`head.uv_coords` must lie in [0, 1] (v up), got values in [{uv.min().item()}, {uv.max().item()}]."
        )
    return vertices, faces.long(), uv, uv_faces.long(), regions.bool()
