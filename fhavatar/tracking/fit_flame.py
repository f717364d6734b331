"""FLAME fitting to 2D landmarks: shape, expression, jaw and the head's rigid pose, by Levenberg-Marquardt.

The model's landmark embedding (`landmark_faces`, `landmark_barycentrics`) gives L points on the mesh and
`landmark_mediapipe_ids` the Face Mesh landmark each one matches. The fit minimises, over the first `num_shape`
shape and `num_expression` expression coefficients, the jaw rotation, the global rotation and the translation,

    sum_l |project(landmark_l) - observed_l|^2 / sigma^2 + w_s |shape|^2 + w_e |expression|^2 + w_j |jaw|^2,

with `sigma` = 1 % of the observed landmarks' box (so the weights do not depend on the image size). Only the
landmark triangles' vertices are evaluated: a small FLAME holding those vertices plus one proxy vertex per joint
(its blendshapes are the joint regressor's, so joints move exactly as in the full model) runs the real
`FLAME.forward`, and `torch.func.jacrev` gives exact Jacobians.
"""

from __future__ import annotations

import logging

import numpy as np
import torch
from torch import Tensor

from ..head.flame import FLAME, FLAMEParams
from ..rendering.cameras import Camera

__all__ = ["fit_flame"]

logger = logging.getLogger(__name__)

#: Landmark residuals are divided by this fraction of the observed landmarks' box.
RESIDUAL_SCALE = 0.01


def _landmark_flame(flame: FLAME) -> FLAME:
    """A FLAME holding only the landmark triangles' vertices and one proxy vertex per joint (see module doc)."""
    cfg = flame.config
    corners = flame.faces[flame.landmark_faces]  # [L, 3]
    ids, inverse = torch.unique(corners, return_inverse=True)
    num_joints, num_landmarks = flame.J_regressor.shape[0], corners.shape[0]
    num = len(ids) + num_joints
    sub = FLAME(num_vertices=num, num_faces=num_landmarks, num_uv=1, num_shape=cfg.num_shape,
                num_expression=cfg.num_expression, num_landmarks=num_landmarks, landmark_kind=cfg.landmark_kind,
                head_units_per_metre=cfg.head_units_per_metre, head_centre_m=tuple(cfg.head_centre_m))
    reg = flame.J_regressor

    def with_joints(x: Tensor) -> Tensor:  # [V, ...] -> [U + J, ...]
        return torch.cat([x[ids], torch.einsum("jv,v...->j...", reg, x)])

    weights = torch.cat([flame.lbs_weights[ids], torch.eye(num_joints, dtype=flame.lbs_weights.dtype)])
    sub.load_state_dict({
        "template_vertices": with_joints(flame.template_vertices), "faces": inverse.reshape(-1, 3),
        "uv_coords": torch.zeros(1, 2), "uv_faces": torch.zeros(num_landmarks, 3, dtype=torch.long),
        "region_masks": torch.zeros(flame.region_masks.shape[0], num, dtype=torch.bool),
        "landmark_faces": torch.arange(num_landmarks), "landmark_barycentrics": flame.landmark_barycentrics,
        "landmark_mediapipe_ids": flame.landmark_mediapipe_ids, "shapedirs": with_joints(flame.shapedirs),
        "exprdirs": with_joints(flame.exprdirs),
        "posedirs": torch.cat([flame.posedirs[ids], torch.zeros(num_joints, *flame.posedirs.shape[1:])]),
        "J_regressor": torch.cat([torch.zeros(num_joints, len(ids)), torch.eye(num_joints)], 1),
        "parents": flame.parents, "lbs_weights": weights,
    })
    return sub


def _observed(landmarks, flame: FLAME) -> Tensor:  # -> [L, 2]
    lm = torch.as_tensor(np.asarray(landmarks) if not isinstance(landmarks, Tensor) else landmarks).float()
    num = flame.landmark_faces.shape[0]
    if lm.dim() != 2 or lm.shape[1] not in (2, 3) or lm.shape[0] not in (num, 478):
        raise ValueError(f"`landmarks_px` must be [478, 2|3] Face Mesh landmarks or [{num}, 2|3] in the model's order, "
                         f"got {list(lm.shape)}.")
    if not torch.isfinite(lm).all():
        raise ValueError("`landmarks_px` hold NaN/inf values.")
    if lm.shape[0] == 478:
        ids = flame.landmark_mediapipe_ids.cpu()
        if (ids < 0).any():
            raise ValueError(f"This FLAME's landmarks are not matched to Face Mesh (landmark_kind="
                             f"{flame.config.landmark_kind!r}); pass [{num}, 2] landmarks in the model's order.")
        lm = lm[ids]
    return lm[:, :2]


def fit_flame(
    landmarks_px: np.ndarray | Tensor,  # [478, 2|3] (Face Mesh order) or [L, 2|3] (model order), pixels
    flame: FLAME,
    camera: Camera,
    image_size: int = 512,
    num_shape: int = 100,
    num_expression: int = 50,
    shape_weight: float = 1.0,
    expression_weight: float = 1.0,
    jaw_weight: float = 1.0,
    iterations: int = 30,
    init: FLAMEParams | None = None,
) -> FLAMEParams:
    """Fit FLAME's shape, expression, jaw and rigid pose to landmarks seen by `camera`.

    Args:
        landmarks_px (`np.ndarray` or `Tensor` of shape `[478, 2|3]` or `[L, 2|3]`): Face Mesh landmarks in pixels
            of the `image_size` square image (`landmark_mediapipe_ids` picks the model's ones), or the model's L
            landmarks in its own order. A third column is ignored.
        flame (`FLAME`): the model (its landmark embedding must be MediaPipe-matched for `[478, ...]` input).
        camera (`Camera`, batch 1): the fixed camera (world = head space).
        image_size (`int`, *optional*, defaults to 512): side of the image in pixels.
        num_shape (`int`, *optional*, defaults to 100), num_expression (`int`, *optional*, defaults to 50):
            leading coefficients optimised (capped by the model's); the rest stay 0.
        shape_weight, expression_weight, jaw_weight (`float`, *optional*, default to 1.0): L2 prior weights
            (coefficients, and the jaw in radians), relative to a 1 %-of-the-face landmark error.
        iterations (`int`, *optional*, defaults to 30): Levenberg-Marquardt iterations at most.
        init (`FLAMEParams`, *optional*): starting point (default: neutral, the head at the world origin).

    Returns:
        `FLAMEParams` (batch 1, the model's full coefficient counts; neck and eyes zero).
    """
    if not isinstance(flame, FLAME):
        raise TypeError(f"`flame` must be a FLAME model, got {type(flame).__name__}.")
    if not isinstance(camera, Camera) or len(camera) != 1:
        raise ValueError(f"`camera` must be a Camera with batch size 1, got {camera!r:.80}.")
    obs = _observed(landmarks_px, flame).double()
    scale = RESIDUAL_SCALE * float((obs.max(0).values - obs.min(0).values).max().clamp(min=1.0))
    sub = _landmark_flame(flame.cpu().float()).double()
    cam = Camera(camera.cam2world.detach().cpu().double(), camera.intrinsics.detach().cpu().double())
    ns, ne = min(num_shape, flame.config.num_shape), min(num_expression, flame.config.num_expression)
    sizes = [ns, ne, 3, 3, 3]  # shape, expression, global rotation, jaw, translation
    start = init if init is not None else flame.neutral_params()
    theta = torch.cat([start.shape[0, :ns], start.expression[0, :ne], start.global_rotation[0], start.jaw[0],
                       start.translation[0]]).detach().cpu().double()
    prior = torch.cat([torch.full((ns,), shape_weight), torch.full((ne,), expression_weight), torch.zeros(3),
                       torch.full((3,), jaw_weight), torch.zeros(3)]).double().sqrt()

    def params(t: Tensor) -> FLAMEParams:
        shape, expr, rot, jaw, trans = torch.split(t, sizes)
        z = t.new_zeros(1, 3)
        return FLAMEParams(shape[None], expr[None], rot[None], z, jaw[None], t.new_zeros(1, 6), trans[None])

    def residual(t: Tensor) -> Tensor:
        uv, _ = cam.project(sub.landmarks(sub(params(t))), image_size, image_size)
        return torch.cat([((uv[0] - obs) / scale).reshape(-1), prior * t])

    damping, res = 1e-3, residual(theta)
    cost = float(res @ res)
    for _ in range(iterations):
        jac = torch.func.jacrev(residual)(theta)
        jtj, grad = jac.T @ jac, jac.T @ res
        while True:
            step = torch.linalg.solve(jtj + damping * (torch.diag(torch.diag(jtj)) + 1e-9 * torch.eye(len(theta),
                                      dtype=jtj.dtype)), -grad)
            trial = residual(theta + step)
            if float(trial @ trial) < cost or damping > 1e8:
                break
            damping *= 4.0
        if float(trial @ trial) >= cost:
            break
        improvement = (cost - float(trial @ trial)) / max(cost, 1e-12)
        theta, res, cost, damping = theta + step, trial, float(trial @ trial), max(damping / 3.0, 1e-7)
        if improvement < 1e-7:
            break
    logger.info("fit_flame: rms landmark error %.2f%% of the face box",
                100 * RESIDUAL_SCALE * float(res[: 2 * len(obs)].pow(2).mean().sqrt()))
    fitted = params(theta.float())
    out = flame.neutral_params()
    out.shape[0, :ns], out.expression[0, :ne] = fitted.shape[0], fitted.expression[0]
    out.global_rotation, out.jaw, out.translation = fitted.global_rotation, fitted.jaw, fitted.translation
    return out.to(device=flame.template_vertices.device)
