import math

import torch
from scipy.spatial.transform import Rotation

from fhavatar.head.lbs import axis_angle_to_matrix, linear_blend_skinning


def test_axis_angle_matches_scipy_and_is_smooth_at_zero():
    aa = torch.randn(20, 3, dtype=torch.float64)
    aa[0] = 0
    aa[1] = 1e-6
    ours = axis_angle_to_matrix(aa)
    ref = torch.from_numpy(Rotation.from_rotvec(aa.numpy()).as_matrix())
    torch.testing.assert_close(ours, ref, atol=1e-10, rtol=0)
    x = torch.zeros(3, dtype=torch.float64, requires_grad=True)
    axis_angle_to_matrix(x).sum().backward()
    assert torch.isfinite(x.grad).all()


def test_lbs_rotates_only_weighted_vertices_about_the_joint():
    # root at the origin, a "jaw" joint at (0, -1, 0.5) carrying vertex 1 only
    verts = torch.tensor([[[0.0, 1.0, 0.0], [0.0, -2.0, 0.5], [1.0, 0.0, 0.0]]])
    joints = torch.tensor([[[0.0, 0.0, 0.0], [0.0, -1.0, 0.5]]])
    parents = torch.tensor([-1, 0])
    weights = torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 0.0]])
    rot = torch.eye(3).repeat(1, 2, 1, 1)
    rot[0, 1] = axis_angle_to_matrix(torch.tensor([math.pi / 2, 0.0, 0.0]))  # jaw opens about x
    posed, posed_joints = linear_blend_skinning(verts, rot, joints, parents, weights)
    torch.testing.assert_close(posed[0, 0], verts[0, 0])
    torch.testing.assert_close(posed[0, 2], verts[0, 2])
    # (0, -1, 0) relative to the joint, rotated +90° about x -> (0, 0, -1)
    torch.testing.assert_close(posed[0, 1], torch.tensor([0.0, -1.0, -0.5]), atol=1e-6, rtol=0)
    torch.testing.assert_close(posed_joints, joints)
    # a root rotation moves everything rigidly, children included
    rot2 = torch.eye(3).repeat(1, 2, 1, 1)
    rot2[0, 0] = axis_angle_to_matrix(torch.tensor([0.0, math.pi, 0.0]))
    posed2, _ = linear_blend_skinning(verts, rot2, joints, parents, weights)
    torch.testing.assert_close(posed2[0], verts[0] * torch.tensor([-1.0, 1.0, -1.0]), atol=1e-6, rtol=0)
