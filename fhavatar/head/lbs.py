"""Linear blend skinning shared by every head model (one implementation for FLAME and OpenHead); joint rotations
come from axis-angle vectors by `axis_angle_to_matrix` (`fhavatar.rotations`, re-exported here)."""

from __future__ import annotations

import torch
from torch import Tensor

from ..rotations import axis_angle_to_matrix

__all__ = ["axis_angle_to_matrix", "linear_blend_skinning", "rigid_transform"]


def rigid_transform(rotation: Tensor, translation: Tensor) -> Tensor:  # [..., 3, 3], [..., 3] -> [..., 4, 4]
    """Homogeneous 4x4 matrices from rotations and translations."""
    top = torch.cat([rotation, translation[..., None]], dim=-1)
    bottom = torch.zeros(top.shape[:-2] + (1, 4), dtype=top.dtype, device=top.device)
    bottom[..., 0, 3] = 1
    return torch.cat([top, bottom], dim=-2)


def linear_blend_skinning(
    vertices: Tensor,  # [B, V, 3] rest-pose vertices (after shape/expression blendshapes)
    joint_rotations: Tensor,  # [B, J, 3, 3] local rotation of each joint
    joints: Tensor,  # [B, J, 3] rest-pose joint locations
    parents: Tensor,  # [J] long, parents[0] = -1 (root), parents[j] < j
    weights: Tensor,  # [V, J] skinning weights, rows sum to 1
) -> tuple[Tensor, Tensor]:
    """Pose vertices with a kinematic chain; returns `(posed vertices [B, V, 3], posed joints [B, J, 3])`.

    Each joint rotates about its rest location; the world transform of joint j is its parent's transform
    composed with `T(joints_j) R_j T(-joints_j)`, and a vertex moves with the weight-blended transforms.
    """
    batch, num_joints = joint_rotations.shape[:2]
    if parents.shape != (num_joints,) or weights.shape != (vertices.shape[1], num_joints):
        raise ValueError(
            f"linear_blend_skinning: parents must be [J={num_joints}] and weights [V={vertices.shape[1]}, J], "
            f"got {list(parents.shape)} and {list(weights.shape)}."
        )
    rel = joints.clone()
    rel[:, 1:] = joints[:, 1:] - joints[:, parents[1:]]
    local = rigid_transform(joint_rotations, rel)  # [B, J, 4, 4]
    chain = [local[:, 0]]
    for j in range(1, num_joints):
        chain.append(chain[int(parents[j])] @ local[:, j])
    world = torch.stack(chain, dim=1)  # [B, J, 4, 4]
    posed_joints = world[..., :3, 3]
    # Remove the rest-pose joint location so transforms act on rest-pose vertex coordinates.
    offset = (world[..., :3, :3] @ joints[..., None])[..., 0]
    affine = torch.cat([world[..., :3, :3], (posed_joints - offset)[..., None]], dim=-1)  # [B, J, 3, 4]
    # Blended per vertex (the bottom row [0, 0, 0, 1] is never used); einsum returns [V, B] order: made contiguous
    # once here, the 3x3 products below run 2x faster than on the strided view.
    blended = torch.einsum("vj,bjmn->bvmn", weights.to(affine.dtype), affine).contiguous()  # [B, V, 3, 4]
    posed = (blended[..., :3] @ vertices[..., None])[..., 0] + blended[..., 3]
    return posed, posed_joints
