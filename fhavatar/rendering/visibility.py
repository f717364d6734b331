"""Which UV texels does the source camera see? The visibility mask M_v of paper §3.3.

A texel is visible when its 3D point on the head mesh (the UV position map) faces the camera and is the
nearest surface along its viewing ray. The second test compares the texel's depth with a z-buffer of the
mesh rendered from the same camera by `mesh_depth`, a small vectorised torch rasteriser (no extra
dependency, any device). Everything here is a pure function of the mesh and the camera; no gradients are
needed (the mask is a constant for the avatar model, as in the paper).
"""

from __future__ import annotations

import math
from typing import Protocol

import torch
import torch.nn.functional as F
from torch import Tensor

from ._cpu_zbuffer import zbuffer_triangles
from .cameras import Camera
from .triangles import covered_pixels

__all__ = ["TexelLayout", "mesh_depth", "project_texels", "texel_facing", "texel_visibility"]

#: Triangles with a corner closer to the camera than this (camera-space z, head units) are not rasterised.
NEAR_PLANE = 0.01
#: Candidate (triangle, pixel) pairs the rasteriser holds at once (bounds its memory).
_RASTER_CHUNK = 1 << 20
#: A pixel centre counts as inside a triangle when its smallest barycentric is >= -this (no cracks on edges).
_INSIDE_TOLERANCE = 1e-6
#: Largest slope (tan of the viewing angle) the slope-scaled depth bias accounts for.
_MAX_SLOPE = 8.0


class TexelLayout(Protocol):
    """What the texel functions read of a UV atlas (`fhavatar.head.uv.UVLayout` is one): K x K texels, each a point
    on a triangle of a mesh of `num_vertices` vertices."""

    resolution: int  # K
    num_vertices: int  # V
    faces: Tensor  # [F, 3] long
    valid: Tensor  # [K, K] bool: the texels that lie on a triangle

    def position_map(self, vertices: Tensor) -> Tensor:  # [B, V, 3] -> [B, 3, K, K]
        """Each texel's point on the mesh `vertices`."""
        ...


def _check_image_size(width: int, height: int) -> None:
    for name, value in (("width", width), ("height", height)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"`{name}` must be a positive int (pixels), got {value!r}.")


def _broadcast(vertices: Tensor, camera: Camera) -> tuple[Tensor, Camera]:
    """`vertices [B, V, 3]` and `camera` with one batch size: a batch of one on either side is repeated."""
    if not isinstance(camera, Camera):
        raise TypeError(f"`camera` must be a fhavatar.rendering.Camera, got {type(camera).__name__}.")
    nv, nc = vertices.shape[0], len(camera)
    if nv != nc and 1 not in (nv, nc):
        raise ValueError(f"`vertices` (batch {nv}) and `camera` ({nc} cameras) must have the same batch size, "
                         "or one of them a batch of one.")
    batch = max(nv, nc)
    if nc != batch:
        camera = Camera(cam2world=camera.cam2world.expand(batch, 4, 4), intrinsics=camera.intrinsics.expand(batch, 3, 3))
    return vertices.expand(batch, -1, -1), camera.to(device=vertices.device, dtype=vertices.dtype)


def _check_vertices(vertices: Tensor, num_vertices: int) -> None:
    if not isinstance(vertices, Tensor) or vertices.dim() != 3 or vertices.shape[1:] != (num_vertices, 3):
        shape = list(vertices.shape) if isinstance(vertices, Tensor) else type(vertices).__name__
        raise ValueError(f"`vertices` must have shape [B, {num_vertices}, 3], got {shape}.")
    if not vertices.is_floating_point():
        raise ValueError(f"`vertices` must be a floating-point tensor, got dtype {vertices.dtype}.")


@torch.no_grad()
def mesh_depth(
    vertices: Tensor,  # [B, V, 3] head space
    faces: Tensor,  # [F, 3] long
    camera: Camera,  # 1 or B cameras (or B cameras of one mesh)
    width: int,
    height: int,
) -> Tensor:  # [B, 1, H, W]
    """Z-buffer of a triangle mesh: the camera-space depth of the nearest surface at every pixel centre.

    Pixel `(row, col)` has its centre at `(col + 0.5, row + 0.5)` in `Camera.project` coordinates. Depth is
    interpolated perspective-correctly (1/z is linear in the image). Triangles with a corner behind the near
    plane (`NEAR_PLANE`) are skipped; faces are two-sided (no back-face culling). Pixels no triangle covers
    hold `inf`. Vectorised: every triangle enumerates the pixel centres of its bounding box, in chunks.

    Args:
        vertices (`Tensor` of shape `[B, V, 3]`): mesh vertices in world (head) space.
        faces (`Tensor` of shape `[F, 3]`): triangle vertex indices.
        camera (`Camera`): B cameras, or one (a batch of one on either side is repeated).
        width, height (`int`): size of the depth image in pixels.

    Returns:
        `Tensor` of shape `[B, 1, H, W]`: depth (head units), `inf` where the mesh does not cover the pixel.
    """
    _check_image_size(width, height)
    if not isinstance(faces, Tensor) or faces.dim() != 2 or faces.shape[1] != 3 or faces.is_floating_point():
        shape = list(faces.shape) if isinstance(faces, Tensor) else type(faces).__name__
        raise ValueError(f"`faces` must be an integer tensor of shape [F, 3], got {shape}.")
    if not isinstance(vertices, Tensor) or vertices.dim() != 3 or vertices.shape[-1] != 3:
        shape = list(vertices.shape) if isinstance(vertices, Tensor) else type(vertices).__name__
        raise ValueError(f"`vertices` must have shape [B, V, 3], got {shape}.")
    out_dtype = vertices.dtype
    vertices, camera = _broadcast(vertices.double(), camera)
    batch = vertices.shape[0]
    pix, z = camera.project(vertices, width, height)  # [B, V, 2], [B, V]
    depth = torch.full((batch, height * width), math.inf, dtype=torch.float64, device=vertices.device)
    faces = faces.long()
    for b in range(batch):
        tri_pix = pix[b][faces] - 0.5  # [F, 3, 2]: pixel-index coordinates (centres at integers)
        tri_z = z[b][faces]  # [F, 3]
        _rasterize_depth(tri_pix, tri_z, width, height, depth[b])
    return depth.view(batch, 1, height, width).to(out_dtype)


def _rasterize_depth(tri_pix: Tensor, tri_z: Tensor, width: int, height: int, out: Tensor) -> None:
    """Scatter the nearest perspective-correct depth of triangles `[F, 3, 2]`/`[F, 3]` into `out [H*W]` (float64):
    the compiled kernel on the CPU, the torch reference elsewhere."""
    if out.device.type == "cpu" and out.is_contiguous():
        zbuffer_triangles(tri_pix.contiguous().numpy(), tri_z.contiguous().numpy(), width, height, NEAR_PLANE,
                          _INSIDE_TOLERANCE, out.numpy())
    else:
        _rasterize_depth_reference(tri_pix, tri_z, width, height, out)


def _rasterize_depth_reference(tri_pix: Tensor, tri_z: Tensor, width: int, height: int, out: Tensor) -> None:
    """`_rasterize_depth` in vectorised torch (every triangle's candidate pixels as tensors, `covered_pixels`)."""
    usable = tri_z.amin(1) > NEAR_PLANE
    for f, row, col, bary in covered_pixels(tri_pix, width, height, usable, _RASTER_CHUNK, _INSIDE_TOLERANCE):
        bary = bary.clamp(min=0)
        inv_z = (bary / tri_z[f]).sum(-1) / bary.sum(-1)
        out.scatter_reduce_(0, row * width + col, 1.0 / inv_z, "amin")


def project_texels(
    layout: TexelLayout,
    vertices: Tensor,  # [B, V, 3]
    camera: Camera,  # 1 or B cameras (or B cameras of one mesh)
    width: int,
    height: int,
) -> tuple[Tensor, Tensor]:  # uv_pixels [B, K, K, 2], depth [B, K, K]
    """Project every texel's 3D point (the position map of `vertices`) into a `width` x `height` image.

    Args:
        layout (`TexelLayout`, e.g. `UVLayout`): the UV atlas of the head model that produced `vertices`.
        vertices (`Tensor` of shape `[B, V, 3]`): posed source vertices in head space.
        camera (`Camera`): B cameras, or one (a batch of one on either side is repeated).
        width, height (`int`): image size in pixels.

    Returns:
        `(uv_pixels [B, K, K, 2], depth [B, K, K])`: continuous pixel coordinates (x right, y down; the top-left
        pixel's centre at (0.5, 0.5), as `Camera.project`) and camera-space depth. Invalid texels project the
        origin of the position map (0, 0, 0); mask them with `layout.valid`.
    """
    _check_image_size(width, height)
    _check_vertices(vertices, layout.num_vertices)
    vertices, camera = _broadcast(vertices, camera)
    batch, k = vertices.shape[0], layout.resolution
    points = layout.position_map(vertices).permute(0, 2, 3, 1).reshape(batch, k * k, 3)
    uv, depth = camera.project(points, width, height)
    return uv.view(batch, k, k, 2), depth.view(batch, k, k)


def texel_facing(
    layout: TexelLayout,
    vertices: Tensor,  # [B, V, 3]
    camera: Camera,  # 1 or B cameras (or B cameras of one mesh)
) -> Tensor:  # [B, K, K]
    """Cosine between each texel's surface normal and its direction to the camera (0 on invalid texels).

    The normal is the barycentric interpolation of the area-weighted vertex normals of `vertices`, so it is
    smooth across triangles; positive means the texel faces the camera.
    """
    _check_vertices(vertices, layout.num_vertices)
    vertices, camera = _broadcast(vertices, camera)
    faces = layout.faces
    tri = vertices[:, faces]  # [B, F, 3, 3]
    face_n = torch.linalg.cross(tri[:, :, 1] - tri[:, :, 0], tri[:, :, 2] - tri[:, :, 0], dim=-1)
    vertex_n = torch.zeros_like(vertices)
    for corner in range(3):
        vertex_n.index_add_(1, faces[:, corner], face_n)
    normals = F.normalize(layout.position_map(vertex_n), dim=1)  # [B, 3, K, K]
    points = layout.position_map(vertices)
    to_camera = F.normalize(camera.position[:, :, None, None] - points, dim=1)
    return (normals * to_camera).sum(1) * layout.valid


@torch.no_grad()
def texel_visibility(
    layout: TexelLayout,
    vertices: Tensor,  # [B, V, 3]
    camera: Camera,  # 1 or B cameras (or B cameras of one mesh)
    width: int = 256,
    height: int = 256,
    depth_tolerance: float = 0.01,
    min_cosine: float = 0.0,
    silhouette_margin: int = 0,
) -> Tensor:  # [B, 1, K, K]
    """The UV visibility mask M_v: 1 where the source camera sees the texel's surface point, else 0.

    A valid texel is visible when (1) it faces the camera (`texel_facing > min_cosine`), (2) it projects
    inside the image in front of the camera, and (3) its depth is at most the z-buffer of the mesh
    (`mesh_depth` at `width` x `height`, read at the nearest pixel) plus a bias: `depth_tolerance` plus a
    slope-scaled term (the depth change across one pixel on a surface seen at that angle, as in shadow
    mapping), so grazing surfaces do not self-occlude.

    Args:
        layout (`TexelLayout`, e.g. `UVLayout`): the UV atlas of the head model that produced `vertices`.
        vertices (`Tensor` of shape `[B, V, 3]`): posed source vertices in head space.
        camera (`Camera`): B cameras, or one (a batch of one on either side is repeated).
        width, height (`int`, *optional*, default to 256): z-buffer size; intrinsics are normalised, so any
            size with the photo's aspect ratio works.
        depth_tolerance (`float`, *optional*, defaults to 0.01): constant depth bias in head units (5.5 mm).
        min_cosine (`float`, *optional*, defaults to 0): facing threshold in [-1, 1).
        silhouette_margin (`int`, *optional*, defaults to 0): also hide texels whose z-buffer pixel lies within
            this many pixels of a pixel the mesh does not cover (pixels on the silhouette mix in background).

    Returns:
        `Tensor` of shape `[B, 1, K, K]` (dtype of `vertices`): 1.0 for visible texels, 0.0 otherwise.
    """
    _check_image_size(width, height)
    _check_vertices(vertices, layout.num_vertices)
    if not (isinstance(depth_tolerance, (int, float)) and math.isfinite(depth_tolerance) and depth_tolerance >= 0):
        raise ValueError(f"`depth_tolerance` must be a finite number >= 0 (head units), got {depth_tolerance!r}.")
    if not (isinstance(min_cosine, (int, float)) and -1 <= min_cosine < 1):
        raise ValueError(f"`min_cosine` must be a number in [-1, 1), got {min_cosine!r}.")
    if isinstance(silhouette_margin, bool) or not isinstance(silhouette_margin, int) or silhouette_margin < 0:
        raise ValueError(f"`silhouette_margin` must be an int >= 0 (pixels), got {silhouette_margin!r}.")
    vertices, camera = _broadcast(vertices, camera)
    zbuffer = mesh_depth(vertices, layout.faces, camera, width, height)[:, 0]  # [B, H, W]
    uv, depth = project_texels(layout, vertices, camera, width, height)  # [B, K, K, 2], [B, K, K]
    cosine = texel_facing(layout, vertices, camera)
    col, row = uv[..., 0].floor(), uv[..., 1].floor()
    inside = (col >= 0) & (col < width) & (row >= 0) & (row < height) & (depth > NEAR_PLANE)
    flat = (row.clamp(0, height - 1) * width + col.clamp(0, width - 1)).long().flatten(1)
    surface = zbuffer.flatten(1).gather(1, flat).view_as(depth)
    if silhouette_margin:
        size = 2 * silhouette_margin + 1
        near_edge = F.max_pool2d((~torch.isfinite(zbuffer))[:, None].float(), size, 1, silhouette_margin)[:, 0]
        surface = torch.where(near_edge.flatten(1).gather(1, flat).view_as(depth) > 0, -math.inf, surface)
    focal_px = camera.pixel_intrinsics(width, height)[:, 0, 0].abs()[:, None, None]
    slope = (1 - cosine.square()).clamp(min=0).sqrt() / cosine.clamp(min=1 / _MAX_SLOPE)
    bias = depth_tolerance + slope * depth.abs() / focal_px
    visible = layout.valid & inside & (cosine > min_cosine) & (depth <= surface + bias)
    return visible[:, None].to(vertices.dtype)
