"""The visibility mask M_v: mesh z-buffer, texel projection, facing and occlusion (checked by ray casting)."""

from __future__ import annotations

import math

import pytest
import torch

from fhavatar.head.open_head import OpenHead
from fhavatar.head.uv import UVLayout
from fhavatar.rendering import Camera
from fhavatar.rendering.visibility import (
    NEAR_PLANE,
    _rasterize_depth,
    _rasterize_depth_reference,
    mesh_depth,
    project_texels,
    texel_facing,
    texel_visibility,
)
from tests.threads import one_torch_thread

K = 48
NOSE_TIP = 4  # MediaPipe landmark 4: the tip of the nose

_one_thread = pytest.fixture(autouse=True, scope="module", name="_one_thread")(one_torch_thread)


@pytest.fixture(scope="module")
def head_scene():
    head = OpenHead()
    layout = UVLayout(head, resolution=K)
    vertices = head(head.neutral_params(1))
    return head, layout, vertices


def _yaw_camera(degrees: float) -> Camera:
    a = math.radians(degrees)
    return Camera.look_at([2.7 * math.sin(a), 0.0, 2.7 * math.cos(a)])


def _first_hits(origin: torch.Tensor, points: torch.Tensor, triangles: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Ray casting reference (Möller–Trumbore), float64: for rays from `origin [3]` to `points [M, 3]`, the
    nearest hit parameter t (the point itself is at t = 1) over `triangles [F, 3, 3]`, and that triangle."""
    o, p, tri = origin.double(), points.double(), triangles.double()
    d = p - o  # [M, 3]
    e1, e2 = tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0]  # [F, 3]
    best_t = torch.full((p.shape[0],), math.inf, dtype=torch.float64)
    best_f = torch.full((p.shape[0],), -1, dtype=torch.long)
    for s in range(0, p.shape[0], 256):
        dd = d[s : s + 256, None]  # [m, 1, 3]
        h = torch.linalg.cross(dd.expand(-1, e2.shape[0], -1), e2[None].expand(dd.shape[0], -1, -1), dim=-1)
        a = (e1[None] * h).sum(-1)
        ok = a.abs() > 1e-15
        inv = 1 / torch.where(ok, a, torch.ones_like(a))
        sv = o - tri[:, 0]  # [F, 3]
        u = (sv[None] * h).sum(-1) * inv
        q = torch.linalg.cross(sv, e1, dim=-1)  # [F, 3]
        v = (dd * q[None]).sum(-1) * inv
        t = (e2 * q).sum(-1)[None] * inv
        hit = ok & (u >= 0) & (v >= 0) & (u + v <= 1) & (t > 1e-9)
        t = torch.where(hit, t, torch.full_like(t, math.inf))
        best_t[s : s + 256], best_f[s : s + 256] = t.min(1)
    return best_t, best_f


def test_mesh_depth_of_a_slanted_triangle():
    camera = Camera.look_at([0.0, 0.0, 2.0])
    # A plane z = 0.2 x (tilted), big enough to cover the whole view.
    vertices = torch.tensor([[[-3.0, -3.0, -0.6], [3.0, -3.0, 0.6], [0.0, 3.0, 0.0]]])
    depth = mesh_depth(vertices, torch.tensor([[0, 1, 2]]), camera, 32, 24)
    assert depth.shape == (1, 1, 24, 32)
    # Exact ray-plane depth at every pixel centre: the ray through pixel (x, y) has direction d (camera frame).
    k = camera.pixel_intrinsics(32, 24)[0]
    xs = ((torch.arange(32) + 0.5) - k[0, 2]) / k[0, 0]
    dx = xs[None, :].expand(24, 32)
    # Camera looks down -z from z = 2 with x to the right: world point = (dx t, -dy t, 2 - t); plane z = 0.2 x.
    t = 2.0 / (1.0 + 0.2 * dx)
    torch.testing.assert_close(depth[0, 0], t.float(), atol=1e-5, rtol=1e-5)
    empty = mesh_depth(vertices + torch.tensor([0.0, 0.0, 10.0]), torch.tensor([[0, 1, 2]]), camera, 8, 8)
    assert torch.isinf(empty).all()  # behind the camera: not rasterised


def _both_zbuffers(tri_pix, tri_z, width, height) -> torch.Tensor:  # -> [H * W] the compiled kernel's depth
    """Run the compiled z-buffer and the torch reference on the same triangles; they must agree exactly (inf where
    empty) and to float64 rounding elsewhere."""
    fast, slow = (torch.full((width * height,), math.inf, dtype=torch.float64) for _ in range(2))
    _rasterize_depth(tri_pix, tri_z, width, height, fast)
    _rasterize_depth_reference(tri_pix, tri_z, width, height, slow)
    assert torch.equal(torch.isinf(fast), torch.isinf(slow))
    torch.testing.assert_close(fast, slow, atol=1e-12, rtol=1e-12)
    return fast


def test_compiled_zbuffer_matches_the_torch_reference(head_scene):
    """The CPU kernel and the vectorised reference give the same depth at every pixel: a head from three sides,
    and random triangles (slivers, ones cut by the image border, behind the near plane, degenerate)."""
    head, _, vertices = head_scene
    faces = head.faces.long()
    for yaw in (0.0, 50.0, 180.0):
        pix, z = _yaw_camera(yaw).to(dtype=torch.float64).project(vertices.double(), 96, 80)
        assert torch.isfinite(_both_zbuffers(pix[0][faces] - 0.5, z[0][faces], 96, 80)).sum() > 1000
    g = torch.Generator().manual_seed(0)
    tri_pix = torch.rand(400, 3, 2, generator=g, dtype=torch.float64) * 50 - 10
    tri_pix[:50, 2] = tri_pix[:50, 0] + 1e-3 * (tri_pix[:50, 1] - tri_pix[:50, 0])  # slivers and degenerate ones
    tri_z = 0.5 + torch.rand(400, 3, generator=g, dtype=torch.float64) * 3
    tri_z[50:70, 1] = NEAR_PLANE  # a corner at the near plane: skipped
    assert torch.isfinite(_both_zbuffers(tri_pix, tri_z, 40, 30)).sum() > 600


def test_project_texels_matches_camera_projection(head_scene):
    _, layout, vertices = head_scene
    camera = _yaw_camera(20.0)
    uv, depth = project_texels(layout, vertices, camera, 100, 80)
    assert uv.shape == (1, K, K, 2) and depth.shape == (1, K, K)
    points = layout.position_map(vertices)[0].permute(1, 2, 0).reshape(-1, 3)
    ref_uv, ref_depth = camera.project(points, 100, 80)
    torch.testing.assert_close(uv.reshape(-1, 2), ref_uv[0])
    torch.testing.assert_close(depth.reshape(-1), ref_depth[0])


def test_front_and_back_views(head_scene):
    _, layout, vertices = head_scene
    _, y, z = layout.position_map(vertices)[0]
    face = layout.region("face") & ~layout.region("eyes") & ~layout.region("mouth")
    back = layout.valid & (z < -0.05)
    in_frame = y > -0.25  # the bottom of the neck stub is outside the default 13.4° field of view
    both = texel_visibility(layout, vertices.expand(2, -1, -1), Camera.cat([_yaw_camera(0.0), _yaw_camera(180.0)]))
    assert both.shape == (2, 1, K, K) and set(both.unique().tolist()) <= {0.0, 1.0}
    front, rear = both[0, 0] > 0, both[1, 0] > 0
    assert not front[back].any()  # nothing on the back of the head is seen from the front
    assert front[face & (texel_facing(layout, vertices, _yaw_camera(0.0))[0] > 0.3)].float().mean() > 0.97
    assert not rear[face].any()
    facing_back = back & in_frame & (texel_facing(layout, vertices, _yaw_camera(180.0))[0] > 0.3)
    assert rear[facing_back].float().mean() > 0.97
    assert not front[~layout.valid].any()


def test_nose_occludes_the_far_cheek_from_a_side_view(head_scene):
    head, layout, vertices = head_scene
    camera = _yaw_camera(50.0)
    visible = texel_visibility(layout, vertices, camera, 384, 384)[0, 0] > 0
    facing = texel_facing(layout, vertices, camera)[0] > 0.05
    candidates = facing & layout.region("face")
    points = layout.position_map(vertices)[0].permute(1, 2, 0)[candidates]  # [M, 3]
    triangles = vertices[0][head.faces]
    t, first = _first_hits(camera.position[0], points, triangles)
    occluded = t < 1 - 0.01 / (points - camera.position[0]).norm(dim=-1).double()
    nose_vertices = (vertices[0] - vertices[0, NOSE_TIP]).norm(dim=-1) < 0.05
    by_nose = occluded & nose_vertices[head.faces[first.clamp(min=0)]].any(-1) & (first >= 0)
    assert by_nose.sum() >= 3, "the side view must have cheek texels hidden behind the nose"
    assert not visible[candidates][by_nose].any()
    # Overall agreement with the ray-cast reference on the facing face texels.
    agree = (visible[candidates] == ~occluded).float().mean()
    assert agree > 0.97


def test_silhouette_margin_and_validation(head_scene):
    _, layout, vertices = head_scene
    camera = _yaw_camera(0.0)
    plain = texel_visibility(layout, vertices, camera)
    margin = texel_visibility(layout, vertices, camera, silhouette_margin=2)
    assert margin.sum() < plain.sum() and (margin <= plain).all()
    with pytest.raises(ValueError, match="width"):
        texel_visibility(layout, vertices, camera, 0, 10)
    with pytest.raises(ValueError, match="vertices"):
        texel_visibility(layout, vertices[:, :5], camera)
    with pytest.raises(ValueError, match="camera"):
        texel_visibility(layout, vertices.expand(2, -1, -1), Camera.orbit(3))
    with pytest.raises(TypeError, match="camera"):
        texel_visibility(layout, vertices, "front")
    with pytest.raises(ValueError, match="depth_tolerance"):
        texel_visibility(layout, vertices, camera, depth_tolerance=-1.0)
    with pytest.raises(ValueError, match="faces"):
        mesh_depth(vertices, torch.zeros(3, 2, dtype=torch.long), camera, 8, 8)
