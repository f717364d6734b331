import numpy as np
import pytest
import torch

import fhavatar.head.uv as uv_module
from fhavatar.head.base import REGION_NAMES
from fhavatar.head.uv import UVLayout, rasterize_uv, texel_centers
from tests.head.symmetric_head import SymmetricHead

MIRROR_X = torch.tensor([-1.0, 1.0, 1.0])


@pytest.fixture(scope="module")
def head():
    return SymmetricHead()


@pytest.fixture(scope="module")
def layout(head):
    return UVLayout(head, resolution=64)


def _posed(head, seed=0):
    """Template vertices plus a smooth random deformation (so nothing is symmetric or trivial by accident)."""
    g = torch.Generator().manual_seed(seed)
    v = head.template_vertices
    return (v + 0.02 * torch.sin(v @ torch.randn(3, 3, generator=g) * 9))[None]


def _point_in_triangles(points, tri, tol=1e-7):
    """Independent brute force: barycentrics of every point in every triangle. [P,2], [F,3,2] -> [P,F,3]."""
    a, b, c = tri[:, 0], tri[:, 1], tri[:, 2]
    v0, v1, v2 = b - a, c - a, points[:, None, :] - a[None]
    d00, d01, d11 = (v0 * v0).sum(-1), (v0 * v1).sum(-1), (v1 * v1).sum(-1)
    d20, d21 = (v2 * v0).sum(-1), (v2 * v1).sum(-1)
    den = d00 * d11 - d01 * d01
    w1 = (d11 * d20 - d01 * d21) / den
    w2 = (d00 * d21 - d01 * d20) / den
    return np.stack([1 - w1 - w2, w1, w2], -1)


# ---------------------------------------------------------------------------------- rasterisation
def test_coverage_and_barycentrics(layout):
    k = layout.resolution
    assert layout.face_index.shape == (k, k) and layout.barycentrics.shape == (k, k, 3)
    assert layout.valid.float().mean() > 0.9  # the sphere atlas covers all but the pole gaps
    assert not layout.valid.all()  # ... which do exist at K = 64
    bary = layout.barycentrics[layout.valid]
    assert (bary >= 0).all()
    torch.testing.assert_close(bary.sum(-1), torch.ones(len(bary)))
    assert (layout.face_index[~layout.valid] == -1).all() and (layout.barycentrics[~layout.valid] == 0).all()


def test_rasterizer_and_position_map_match_brute_force_point_in_triangle(head, layout):
    k = layout.resolution
    centres = texel_centers(k).reshape(-1, 2).double().numpy()
    tri = head.uv_coords.double().numpy()[head.uv_faces.numpy()]
    bary = _point_in_triangles(centres, tri)  # [K*K, F, 3]
    inside = bary.min(-1) >= -1e-7
    np.testing.assert_array_equal(inside.any(1), layout.valid.reshape(-1).numpy())
    # The chosen triangle contains the centre, and the position map is the interpolation in it.
    idx = layout.face_index.reshape(-1).numpy()
    rows = np.nonzero(idx >= 0)[0]
    assert inside[rows, idx[rows]].all()
    verts = _posed(head)
    p = layout.position_map(verts)[0].reshape(3, -1).T.double().numpy()
    corners = verts[0].double().numpy()[head.faces.numpy()]  # [F, 3, 3]
    expected = np.einsum("pc,pci->pi", bary[rows, idx[rows]], corners[idx[rows]])
    np.testing.assert_allclose(p[rows], expected, atol=2e-6)
    assert (p[idx < 0] == 0).all()


def test_chunked_rasterisation_equals_single_pass(head, monkeypatch):
    face, bary = rasterize_uv(head.uv_coords, head.uv_faces, 40, 56)
    monkeypatch.setattr(uv_module, "_RASTER_CHUNK", 301)
    face_c, bary_c = rasterize_uv(head.uv_coords, head.uv_faces, 40, 56)
    torch.testing.assert_close(face_c, face)
    torch.testing.assert_close(bary_c, bary)


def test_overlapping_triangles_go_to_the_deepest_one():
    uv = torch.tensor([[0.0, 0.0], [1.0, 0.0], [0.0, 1.0], [0.6, 0.0], [0.6, 0.6], [1.0, 0.6]])
    faces = torch.tensor([[0, 1, 2], [3, 5, 4]])  # the second (clockwise in UV) overlaps the first's corner
    face, bary = rasterize_uv(uv, faces, 10, 10)
    # Texel (row 5, col 6) has centre (0.65, 0.45): deeper inside the small triangle than the big one.
    assert face[5, 6] == 1 and face[9, 0] == 0 and face[0, 9] == -1
    torch.testing.assert_close(bary[5, 6].sum(), torch.tensor(1.0))


def test_region_masks_follow_vertex_regions_and_are_symmetric(head, layout):
    assert layout.region_masks.shape == (len(REGION_NAMES), layout.resolution, layout.resolution)
    assert not (layout.region_masks & ~layout.valid).any()
    for name in ("face", "scalp", "neck"):
        assert layout.region(name).sum() > 20, name
    # A texel whose three corners are all scalp vertices is scalp; one with none is not.
    corner_in = head.region("scalp")[head.faces[layout.face_index.clamp(min=0)]]  # [K, K, 3]
    assert layout.region("scalp")[corner_in.all(-1) & layout.valid].all()
    assert not layout.region("scalp")[~corner_in.any(-1)].any()
    flipped = layout.flip(layout.region_masks[None].float())[0] > 0.5
    assert (flipped == layout.region_masks).all()
    with pytest.raises(ValueError, match="hair"):
        layout.region("hair")


# ---------------------------------------------------------------------------------- maps
def test_position_map_batches_and_is_differentiable(head, layout):
    verts = torch.cat([_posed(head, 0), _posed(head, 1)]).requires_grad_(True)
    p = layout.position_map(verts)
    assert p.shape == (2, 3, layout.resolution, layout.resolution)
    torch.testing.assert_close(p[1:], layout.position_map(verts[1:]))
    (p * torch.randn_like(p)).sum().backward()
    assert verts.grad.abs().sum() > 0
    assert layout.position_map(verts.double()).dtype == torch.float64


def test_scale_map(head, layout):
    s = layout.relative_scale
    assert (s[layout.valid] > 0).all() and (s[~layout.valid] == 0).all()
    torch.testing.assert_close(layout.scale_map(head.template_vertices[None])[0, 0], s)
    # Independent value for one texel: sqrt(3D area / UV area in texels²).
    i, j = 20, 17
    f = layout.face_index[i, j]
    a3 = head.template_vertices[head.faces[f]].double()
    a2 = head.uv_coords[head.uv_faces[f]].double() * layout.resolution
    area3 = torch.linalg.cross(a3[1] - a3[0], a3[2] - a3[0]).norm() / 2
    e1, e2 = a2[1] - a2[0], a2[2] - a2[0]
    area2 = (e1[0] * e2[1] - e1[1] * e2[0]).abs() / 2
    torch.testing.assert_close(s[i, j].double(), (area3 / area2).sqrt(), rtol=1e-5, atol=0)
    # Equirectangular atlas: UV triangles near the poles are large for their (tiny) 3D size.
    k = layout.resolution
    assert s[k // 2].mean() > 2 * s[2][layout.valid[2]].mean()
    # Scaling the head scales s linearly.
    torch.testing.assert_close(layout.scale_map(2 * head.template_vertices[None])[0, 0], 2 * s)


# ---------------------------------------------------------------------------------- mirror map
def test_mirror_map_on_symmetric_head(layout, head):
    k = layout.resolution
    assert (layout.mirror_exact == layout.valid).all()
    rows, cols = torch.meshgrid(torch.arange(k), torch.arange(k), indexing="ij")
    torch.testing.assert_close(layout.mirror_index, torch.stack([rows, k - 1 - cols], -1))
    p = layout.position_map(head.template_vertices[None])
    err = (layout.flip(p) - p * MIRROR_X[None, :, None, None]).norm(dim=1)[0][layout.valid]
    assert err.max() < 1e-6
    x = torch.randn(2, 5, k, k)
    torch.testing.assert_close(layout.flip(layout.flip(x))[..., layout.mirror_exact], x[..., layout.mirror_exact])


def test_mirror_falls_back_to_the_nearest_valid_texel():
    head = SymmetricHead(num_columns=16, num_rings=8)
    head.uv_coords = head.uv_coords * torch.tensor([0.8, 1.0])  # atlas in u ∈ [0, 0.8]: asymmetric
    layout = UVLayout(head, resolution=32)
    k = layout.resolution
    valid = layout.valid
    mi = layout.mirror_index
    assert valid[mi[..., 0], mi[..., 1]][valid].all()  # every valid texel reads a valid texel
    fallback = valid & ~layout.mirror_exact
    assert fallback.sum() > 20
    ok_rc = valid.nonzero().float()
    for i, j in fallback.nonzero().tolist():
        target = torch.tensor([i, k - 1 - j], dtype=torch.float32)
        best = (ok_rc - target).square().sum(-1).min()
        assert (mi[i, j].float() - target).square().sum() == best
    exact = layout.mirror_exact
    cols = torch.arange(k).expand(k, k)
    assert (mi[..., 1][exact] == (k - 1 - cols)[exact]).all()


def test_flip_is_a_differentiable_gather(layout):
    k = layout.resolution
    x = torch.randn(1, 2, k, k, dtype=torch.float64, requires_grad=True)
    y = layout.flip(x)
    y.sum().backward()
    reads = (
        torch.bincount(
            layout.mirror_index[..., 0].reshape(-1) * k + layout.mirror_index[..., 1].reshape(-1), minlength=k * k
        )
        .view(k, k)
        .double()
    )
    torch.testing.assert_close(x.grad, reads.expand(1, 2, k, k))
    small = UVLayout(SymmetricHead(num_columns=8, num_rings=4), resolution=8)
    z = torch.randn(1, 1, 8, 8, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(small.flip, (z,), fast_mode=True)


# ---------------------------------------------------------------------------------- sampling
def test_sample_at_texel_centres_returns_the_texels(head, layout):
    for lay in (layout, UVLayout(SymmetricHead(num_columns=8, num_rings=4), resolution=40)):
        k = lay.resolution
        maps = torch.randn(2, 3, k, k)
        out = lay.sample(maps, texel_centers(k).reshape(-1, 2))
        torch.testing.assert_close(out, maps.flatten(2), atol=1e-5, rtol=0)
    p = layout.position_map(_posed(head))
    out = layout.sample(p, texel_centers(layout.resolution).reshape(-1, 2))
    torch.testing.assert_close(out, p.flatten(2), atol=1e-6, rtol=0)


def test_sample_at_vertex_uvs_is_close_to_the_vertices(head, layout):
    verts = head.template_vertices
    n = verts.shape[0]
    uv = layout.sample_uv[-n:]
    got = layout.sample(layout.position_map(verts[None]), uv)[0].T
    away = (uv[:, 0] > 0.1) & (uv[:, 0] < 0.9) & (uv[:, 1] > 0.15) & (uv[:, 1] < 0.85)
    assert away.sum() > 200
    err = (got - verts).norm(dim=-1)[away]
    texel = layout.relative_scale[layout.valid].mean()
    assert err.max() < 0.2 * texel
    # The mesh binding of the vertex samples is exact.
    torch.testing.assert_close(layout.sample_positions(verts[None])[0, -n:], verts)


def test_sample_binding_is_consistent_with_the_uvs(head, layout):
    tri_uv = head.uv_coords[head.uv_faces[layout.sample_face]]  # [M, 3, 2]
    uv = (tri_uv * layout.sample_barycentrics[..., None]).sum(1)
    torch.testing.assert_close(uv, layout.sample_uv, atol=1e-6, rtol=0)
    assert (layout.sample_barycentrics >= 0).all() and ((layout.sample_uv >= 0) & (layout.sample_uv <= 1)).all()
    # Texel-centre samples: the grid_sample of the position map equals the bound surface point.
    verts = _posed(head)
    n_centre = int((layout.valid & ~layout.region("scalp")).sum())
    sampled = layout.sample(layout.position_map(verts))[0].T[:n_centre]
    torch.testing.assert_close(sampled, layout.sample_positions(verts)[0, :n_centre], atol=1e-5, rtol=0)
    assert layout.sample(torch.zeros(3, 7, 64, 64)).shape == (3, 7, layout.num_samples)


def test_sample_count_formula(head):
    layout = UVLayout(head, resolution=32)
    k, (rows, cols) = layout.resolution, layout.dense_grid
    assert (rows, cols) == (k // 2, 4 * k)
    dense = layout.region("scalp")
    grid_face, _ = rasterize_uv(head.uv_coords, head.uv_faces, rows, cols)
    centres = texel_centers(rows, cols).double()  # [rows, cols, 2] -> the K-texel of each grid point
    tex_col = (centres[..., 0] * k).floor().long()
    tex_row = ((1 - centres[..., 1]) * k).floor().long()
    n_dense = int(((grid_face >= 0) & dense[tex_row, tex_col]).sum())
    n_plain = int((layout.valid & ~dense).sum())
    assert n_dense > 1.5 * int(dense.sum())  # about two Gaussians per dense texel
    assert layout.num_samples == n_plain + n_dense + head.num_vertices
    plain = UVLayout(head, resolution=k, dense_regions=())
    assert plain.num_samples == int(layout.valid.sum()) + head.num_vertices
    same = UVLayout(head, resolution=k, dense_grid=(k, k), include_vertices=False)
    assert same.num_samples == int(layout.valid.sum())
    finer = UVLayout(head, resolution=k, dense_grid=(2 * k, 2 * k), include_vertices=False)
    assert finer.num_samples > n_plain + 3.5 * int(dense.sum())


# ---------------------------------------------------------------------------------- module behaviour and errors
def test_buffers_are_not_persistent_and_follow_to(layout):
    assert layout.state_dict() == {}
    moved = UVLayout(SymmetricHead(num_columns=8, num_rings=4), resolution=8).to(torch.float64)
    assert moved.barycentrics.dtype == torch.float64 and moved.face_index.dtype == torch.long


def test_errors(head, layout):
    for bad in (4, 4096):
        with pytest.raises(ValueError, match="resolution"):
            UVLayout(head, resolution=bad)
    with pytest.raises(TypeError, match="resolution"):
        UVLayout(head, resolution=64.0)
    with pytest.raises(ValueError, match="dense_regions"):
        UVLayout(head, resolution=16, dense_regions=("hair",))
    with pytest.raises(ValueError, match="dense_grid"):
        UVLayout(head, resolution=16, dense_grid=(0, 8))
    outside = SymmetricHead(num_columns=8, num_rings=4)
    outside.uv_coords = outside.uv_coords * 1.1
    with pytest.raises(ValueError, match=r"uv_coords.*\[0, 1\]"):
        UVLayout(outside, resolution=16)
    broken = SymmetricHead(num_columns=8, num_rings=4)
    broken.uv_faces = broken.uv_faces[:-1]
    with pytest.raises(ValueError, match="uv_faces"):
        UVLayout(broken, resolution=16)
    with pytest.raises(ValueError, match="missing"):
        UVLayout(torch.nn.Linear(2, 2), resolution=16)
    v = head.template_vertices
    for bad in (v, v[None, :-1], v[None, :, :2], v[None].long()):
        with pytest.raises(ValueError, match="vertices"):
            layout.position_map(bad)
    with pytest.raises(ValueError, match="vertices"):
        layout.scale_map(v)
    with pytest.raises(ValueError, match=r"maps.*\[B, C, 64, 64\]"):
        layout.flip(torch.zeros(1, 3, 32, 32))
    with pytest.raises(ValueError, match=r"uv.*\[M, 2\]"):
        layout.sample(torch.zeros(1, 3, 64, 64), torch.zeros(5, 3))
    with pytest.raises(ValueError, match=r"uv.*\[0, 1\]"):
        layout.sample(torch.zeros(1, 3, 64, 64), torch.full((5, 2), 1.5))


def test_open_head_uv_atlas_is_mirror_symmetric():
    """On the real OpenHead: the position at the mirror texel is the x-reflected position."""
    from fhavatar.head.open_head import OpenHead

    head = OpenHead()
    layout = UVLayout(head, resolution=64)
    positions = layout.position_map(head.template_vertices[None])
    reflected = positions * torch.tensor([-1.0, 1.0, 1.0])[None, :, None, None]
    exact = layout.valid & layout.mirror_exact
    assert exact.sum() > 0.95 * layout.valid.sum()
    err = (layout.flip(positions) - reflected).norm(dim=1)[0][exact]
    assert err.max() < 1e-4, err.max()
    assert 0.6 < layout.valid.float().mean() < 0.95
