"""`Avatar`: binding to the head mesh, re-posing, PLY files and save/load."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from fhavatar.avatar import (
    PLY_PROPERTIES,
    SH_C0,
    Avatar,
    load_gaussians_ply,
    quat_multiply,
    rotmat_to_quat,
    save_gaussians_ply,
    triangle_frames,
)
from fhavatar.head.lbs import axis_angle_to_matrix
from fhavatar.head.open_head import OpenHead
from fhavatar.head.uv import UVLayout
from fhavatar.models.attributes import UVAttributes
from fhavatar.rendering import Gaussians, quat_to_rotmat

K = 32


@pytest.fixture(scope="module")
def head():
    return OpenHead()


@pytest.fixture(scope="module")
def layout(head):
    return UVLayout(head, resolution=K)


def make_attributes(layout: UVLayout, vertices: torch.Tensor, seed: int = 0, offsets: float = 0.0,
                    batch: int = 1) -> UVAttributes:
    """Random but valid attribute maps `[batch, C, K, K]` (scales about one texel)."""
    g = torch.Generator().manual_seed(seed)
    texel = layout.scale_map(vertices[:1]).clamp(min=1e-3)
    return UVAttributes(
        colors=torch.rand(batch, 3, K, K, generator=g),
        rotations=F.normalize(torch.randn(batch, 4, K, K, generator=g), dim=1),
        scales=texel * (0.5 + torch.rand(batch, 3, K, K, generator=g)),
        opacities=0.2 + 0.7 * torch.rand(batch, 1, K, K, generator=g),
        offsets=offsets * (2 * torch.rand(batch, 3, K, K, generator=g) - 1),
    )


def reference_frames(head, vertices: torch.Tensor, faces: torch.Tensor) -> torch.Tensor:  # -> [N, 3, 3]
    """The documented local frame computed another way: dP/du from solving [e1 e2] = [dP/du dP/dv] D."""
    tri = vertices[head.faces[faces]].double()
    uv = head.uv_coords[head.uv_faces[faces]].double()
    edges = torch.stack([tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0]], -1)  # [N, 3, 2]
    d = torch.stack([uv[:, 1] - uv[:, 0], uv[:, 2] - uv[:, 0]], -1)  # [N, 2, 2] columns = uv edges
    jac = edges @ torch.linalg.inv(d)  # [N, 3, 2]: dP/du, dP/dv
    n = F.normalize(torch.linalg.cross(edges[..., 0], edges[..., 1], dim=-1), dim=-1)
    t = F.normalize(jac[..., 0] - (jac[..., 0] * n).sum(-1, keepdim=True) * n, dim=-1)
    return torch.stack([t, torch.linalg.cross(n, t, dim=-1), n], -1).float()


def test_binding_reproduces_the_sampling_positions(head, layout):
    params = head.neutral_params(1)
    vertices = head(params)
    attributes = make_attributes(layout, vertices)
    avatar = Avatar.from_attributes(attributes, layout, head, params)
    assert len(avatar) == layout.num_samples
    surface = layout.sample_positions(vertices)[0]
    torch.testing.assert_close(avatar.gaussians().means, surface, atol=1e-6, rtol=0)
    torch.testing.assert_close(avatar.gaussians(params).means, surface, atol=1e-6, rtol=0)
    # refined_positions equal to the position map change nothing.
    refined = UVAttributes(**{**attributes.__dict__, "refined_positions": layout.position_map(vertices)})
    torch.testing.assert_close(Avatar.from_attributes(refined, layout, head, params).gaussians().means, surface,
                               atol=1e-6, rtol=0)


def test_offsets_rotations_and_scales_live_in_the_triangle_frame(head, layout):
    params = head.neutral_params(1)
    vertices = head(params)
    attributes = make_attributes(layout, vertices, seed=1, offsets=0.01)
    avatar = Avatar.from_attributes(attributes, layout, head, params)
    g = avatar.gaussians()
    frames = reference_frames(head, vertices[0], layout.sample_face)
    offsets = layout.sample(attributes.offsets)[0].T
    expected = layout.sample_positions(vertices)[0] + (frames @ offsets[..., None])[..., 0]
    torch.testing.assert_close(g.means, expected, atol=1e-5, rtol=0)
    local_rot = quat_to_rotmat(F.normalize(layout.sample(attributes.rotations)[0].T, dim=-1))
    scales = layout.sample(attributes.scales)[0].T
    m = frames @ local_rot * scales[:, None, :]
    torch.testing.assert_close(g.covariances(), m @ m.transpose(1, 2), atol=1e-8, rtol=1e-4)
    torch.testing.assert_close(g.colors, layout.sample(attributes.colors)[0].T)
    torch.testing.assert_close(g.opacities, layout.sample(attributes.opacities)[0, 0])


def test_refined_positions_displace_the_gaussians(head, layout):
    params = head.neutral_params(1)
    vertices = head(params)
    delta = torch.tensor([0.01, -0.02, 0.005])
    attributes = make_attributes(layout, vertices, seed=2)
    attributes.refined_positions = layout.position_map(vertices) + delta[None, :, None, None]
    means = Avatar.from_attributes(attributes, layout, head, params).gaussians().means
    # Texel-centre samples (the first block of X) move by exactly delta.
    plain = int((layout.valid & ~layout.region("scalp")).sum())
    surface = layout.sample_positions(vertices)[0]
    torch.testing.assert_close(means[:plain] - surface[:plain], delta.expand(plain, 3), atol=1e-5, rtol=0)


def test_jaw_opening_moves_the_mouth_not_the_back_of_the_head(head, layout):
    params = head.neutral_params(1)
    avatar = Avatar.from_attributes(make_attributes(layout, head(params), offsets=0.005), layout, head, params)
    rest = avatar.gaussians()
    talking = head.neutral_params(1)
    talking.jaw[:, 0] = 0.3
    moved = avatar.gaussians(talking)
    shift = (moved.means - rest.means).norm(dim=-1)
    surface = layout.sample_positions(head(params))[0]
    chin = (surface[:, 1] < -0.15) & (surface[:, 1] > -0.25) & (surface[:, 2] > 0.08) & (surface[:, 0].abs() < 0.04)
    back = (surface[:, 2] < -0.05) & (surface[:, 1] > 0.0)
    assert chin.sum() > 3 and back.sum() > 100
    assert shift[chin].min() > 0.01
    assert shift[back].max() < 1e-6
    torch.testing.assert_close(moved.colors, rest.colors)


def test_global_rotation_moves_every_gaussian_rigidly(head, layout):
    params = head.neutral_params(1)
    avatar = Avatar.from_attributes(make_attributes(layout, head(params), seed=3, offsets=0.01), layout, head,
                                    params)
    rest = avatar.gaussians()
    turned = head.neutral_params(1)
    turned.global_rotation[:] = torch.tensor([0.3, -0.5, 0.2])
    turned.translation[:] = torch.tensor([0.05, -0.1, 0.02])
    moved = avatar.gaussians(turned)
    rot = axis_angle_to_matrix(turned.global_rotation)[0]
    torch.testing.assert_close(moved.means, rest.means @ rot.T + turned.translation, atol=1e-5, rtol=0)
    torch.testing.assert_close(moved.covariances(), rot @ rest.covariances() @ rot.T, atol=1e-8, rtol=1e-4)
    torch.testing.assert_close(moved.scales, rest.scales, atol=1e-7, rtol=1e-4)


def test_stretching_the_mesh_scales_the_gaussians(head, layout):
    params = head.neutral_params(1)
    avatar = Avatar.from_attributes(make_attributes(layout, head(params), seed=4, offsets=0.01), layout, head,
                                    params)
    rest = avatar.gaussians()
    doubled = avatar.gaussians(vertices=2 * head(params))
    torch.testing.assert_close(doubled.means, 2 * rest.means, atol=1e-5, rtol=0)
    torch.testing.assert_close(doubled.scales, 2 * rest.scales, atol=1e-7, rtol=1e-4)
    torch.testing.assert_close(quat_to_rotmat(doubled.quats), quat_to_rotmat(rest.quats), atol=1e-5, rtol=0)


def test_batch_index_selects_the_source(head, layout):
    params = head.neutral_params(2)
    params.jaw[1, 0] = 0.2
    vertices = head(params)
    attributes = make_attributes(layout, vertices, seed=5, batch=2)
    avatar = Avatar.from_attributes(attributes, layout, head, params, batch_index=1)
    torch.testing.assert_close(avatar.source_vertices, vertices[1])
    torch.testing.assert_close(avatar.source_params.jaw, params.jaw[1:])
    torch.testing.assert_close(avatar.gaussians().means, layout.sample_positions(vertices)[1], atol=1e-6, rtol=0)
    torch.testing.assert_close(avatar.colors, layout.sample(attributes.colors[1:])[0].T)


def test_gradients_reach_the_attribute_maps(head, layout):
    params = head.neutral_params(1)
    attributes = make_attributes(layout, head(params), offsets=0.01)
    for name in ("colors", "offsets", "scales", "rotations", "opacities"):
        getattr(attributes, name).requires_grad_(True)
    g = Avatar.from_attributes(attributes, layout, head, params).gaussians()
    (g.means.sum() + g.colors.sum() + g.scales.sum() + g.quats.sum() + g.opacities.sum()).backward()
    for name in ("colors", "offsets", "scales", "rotations", "opacities"):
        grad = getattr(attributes, name).grad
        assert grad is not None and grad.abs().sum() > 0, name


def test_frame_and_quaternion_helpers():
    g = torch.Generator().manual_seed(0)
    tri, uv = torch.randn(500, 3, 3, generator=g), torch.rand(500, 3, 2, generator=g)
    frames, scale = triangle_frames(tri, uv)
    eye = torch.eye(3).expand(500, 3, 3)
    torch.testing.assert_close(frames.transpose(1, 2) @ frames, eye, atol=1e-5, rtol=0)
    torch.testing.assert_close(torch.linalg.det(frames), torch.ones(500), atol=1e-5, rtol=0)
    area = torch.linalg.cross(tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0], dim=-1).norm(dim=-1) / 2
    torch.testing.assert_close(scale, area.sqrt())
    torch.testing.assert_close(quat_to_rotmat(rotmat_to_quat(frames)), frames, atol=1e-5, rtol=0)
    a, b = F.normalize(torch.randn(50, 4, generator=g), dim=-1), F.normalize(torch.randn(50, 4, generator=g), dim=-1)
    torch.testing.assert_close(quat_to_rotmat(quat_multiply(a, b)), quat_to_rotmat(a) @ quat_to_rotmat(b),
                               atol=1e-5, rtol=0)


# ---------------------------------------------------------------------------------------------- files
@pytest.fixture
def avatar(head, layout):
    params = head.neutral_params(1)
    return Avatar.from_attributes(make_attributes(layout, head(params), seed=6, offsets=0.01), layout, head, params)


def test_ply_round_trip_and_header(avatar, tmp_path):
    path = avatar.save_ply(tmp_path / "avatar.ply")
    raw = path.read_bytes()
    header = raw[: raw.index(b"end_header\n")].decode("ascii").splitlines()
    assert header[:3] == ["ply", "format binary_little_endian 1.0", f"element vertex {len(avatar)}"]
    assert header[3:] == [f"property float {name}" for name in PLY_PROPERTIES]
    assert len(raw) == raw.index(b"end_header\n") + 11 + 4 * len(PLY_PROPERTIES) * len(avatar)
    g, back = avatar.gaussians(), Avatar.load_ply(path)
    torch.testing.assert_close(back.means, g.means)
    torch.testing.assert_close(back.colors, g.colors, atol=1e-6, rtol=0)
    torch.testing.assert_close(back.opacities, g.opacities, atol=1e-6, rtol=0)
    torch.testing.assert_close(back.scales, g.scales, atol=1e-9, rtol=1e-5)
    torch.testing.assert_close(quat_to_rotmat(back.quats), quat_to_rotmat(g.quats), atol=1e-6, rtol=0)
    # The raw values follow the 3DGS conventions.
    data = np.frombuffer(raw, dtype=[(n, "<f4") for n in PLY_PROPERTIES], offset=raw.index(b"end_header\n") + 11)
    np.testing.assert_allclose(data["f_dc_0"], (g.colors[:, 0].numpy() - 0.5) / SH_C0, atol=1e-5)
    np.testing.assert_allclose(data["scale_1"], np.log(g.scales[:, 1].numpy()), atol=1e-5)
    np.testing.assert_allclose(data["opacity"], torch.logit(g.opacities.double()).numpy(), atol=1e-4)
    np.testing.assert_allclose(np.linalg.norm(np.stack([data[f"rot_{i}"] for i in range(4)], 1), axis=1), 1, atol=1e-6)


def test_ply_read_by_plyfile(avatar, tmp_path):
    plyfile = pytest.importorskip("plyfile")
    path = avatar.save_ply(tmp_path / "avatar.ply")
    vertex = plyfile.PlyData.read(str(path))["vertex"]
    assert [p.name for p in vertex.properties] == list(PLY_PROPERTIES)
    np.testing.assert_allclose(vertex["x"], avatar.gaussians().means[:, 0].numpy())


def test_ply_with_extra_3dgs_properties(tmp_path):
    names = [*PLY_PROPERTIES[:9], *(f"f_rest_{i}" for i in range(3)), *PLY_PROPERTIES[9:]]
    data = np.zeros(2, dtype=[(n, "<f4") for n in names])
    data["x"] = [1.0, 2.0]
    data["rot_0"] = 2.0
    data["f_rest_1"] = 5.0
    header = "ply\nformat binary_little_endian 1.0\ncomment made by a test\nelement vertex 2\n"
    header += "".join(f"property float {n}\n" for n in names) + "end_header\n"
    (tmp_path / "x.ply").write_bytes(header.encode() + data.tobytes())
    g = load_gaussians_ply(tmp_path / "x.ply")
    assert len(g) == 2 and g.means[:, 0].tolist() == [1.0, 2.0]
    torch.testing.assert_close(g.quats, torch.tensor([[1.0, 0, 0, 0]] * 2))
    torch.testing.assert_close(g.colors, torch.full((2, 3), 0.5))
    torch.testing.assert_close(g.opacities, torch.full((2,), 0.5))


def test_ply_errors(avatar, tmp_path):
    with pytest.raises(FileNotFoundError):
        load_gaussians_ply(tmp_path / "missing.ply")
    (tmp_path / "junk.ply").write_bytes(b"not a ply at all")
    with pytest.raises(ValueError, match="not a PLY"):
        load_gaussians_ply(tmp_path / "junk.ply")
    good = avatar.save_ply(tmp_path / "good.ply").read_bytes()
    (tmp_path / "short.ply").write_bytes(good[:-10])
    with pytest.raises(ValueError, match="truncated"):
        load_gaussians_ply(tmp_path / "short.ply")
    (tmp_path / "ascii.ply").write_bytes(good.replace(b"binary_little_endian", b"ascii", 1))
    with pytest.raises(ValueError, match="binary_little_endian"):
        load_gaussians_ply(tmp_path / "ascii.ply")
    (tmp_path / "noscale.ply").write_bytes(good.replace(b"property float scale_2\n", b"property float other\n", 1))
    with pytest.raises(ValueError, match="scale_2"):
        load_gaussians_ply(tmp_path / "noscale.ply")
    grey = Gaussians(means=torch.zeros(1, 3), quats=torch.tensor([[1.0, 0, 0, 0]]), scales=torch.ones(1, 3),
                     opacities=torch.ones(1), colors=torch.ones(1, 1))
    with pytest.raises(ValueError, match="RGB"):
        save_gaussians_ply(grey, tmp_path / "grey.ply")


def test_save_and_load_the_bound_avatar(avatar, head, tmp_path):
    path = avatar.save(tmp_path / "avatar.safetensors")
    loaded = Avatar.load(path, head)
    talking = head.neutral_params(1)
    talking.jaw[:, 0] = 0.25
    for params in (None, talking):
        a, b = avatar.gaussians(params), loaded.gaussians(params)
        for name in ("means", "quats", "scales", "opacities", "colors"):
            torch.testing.assert_close(getattr(b, name), getattr(a, name), atol=0, rtol=0)
    torch.testing.assert_close(loaded.source_params.expression, avatar.source_params.expression)


def test_load_rejects_other_heads_and_files(avatar, tmp_path):
    from tests.head.symmetric_head import SymmetricHead

    path = avatar.save(tmp_path / "avatar.safetensors")
    with pytest.raises(ValueError, match="different head model"):
        Avatar.load(path, SymmetricHead())
    with pytest.raises(FileNotFoundError):
        Avatar.load(tmp_path / "missing.safetensors", avatar.head_model)
    (tmp_path / "junk.safetensors").write_bytes(b"\x00" * 64)
    with pytest.raises(ValueError, match="not a readable avatar"):
        Avatar.load(tmp_path / "junk.safetensors", avatar.head_model)


def test_argument_errors(avatar, head, layout):
    params = head.neutral_params(1)
    attributes = make_attributes(layout, head(params))
    with pytest.raises(ValueError, match="resolution"):
        Avatar.from_attributes(attributes, UVLayout(head, resolution=16), head, params)
    with pytest.raises(ValueError, match="batch_index"):
        Avatar.from_attributes(attributes, layout, head, params, batch_index=1)
    with pytest.raises(TypeError, match="attributes"):
        Avatar.from_attributes({}, layout, head, params)
    with pytest.raises(ValueError, match="batch size 1"):
        avatar.gaussians(head.neutral_params(2))
    with pytest.raises(ValueError, match="vertices"):
        avatar.gaussians(vertices=torch.zeros(10, 3))
    with pytest.raises(ValueError, match="not both"):
        avatar.gaussians(params, vertices=head(params))
