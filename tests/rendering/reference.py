"""A brute-force, per-pixel Gaussian splatting reference for the tests.

Written from the 3DGS/EWA equations without sharing code with `fhavatar.rendering`: quaternions via the
`(w² - |v|²) I + 2 v vᵀ + 2 w [v]×` identity, matrix inverses via `torch.linalg`, every Gaussian against
every pixel (no tiles, no bounding boxes), float64 and differentiable end to end.
"""

import torch

ALPHA_MIN, ALPHA_MAX, T_MIN, NEAR, BLUR = 1 / 255, 0.999, 1e-4, 0.01, 0.3


def _rotation(q):
    q = q / q.norm(dim=-1, keepdim=True)
    w, v = q[:, :1], q[:, 1:]
    eye = torch.eye(3, dtype=q.dtype).expand(q.shape[0], 3, 3)
    skew = torch.zeros(q.shape[0], 3, 3, dtype=q.dtype)
    skew[:, 0, 1], skew[:, 0, 2], skew[:, 1, 2] = -v[:, 2], v[:, 1], -v[:, 0]
    skew = skew - skew.transpose(1, 2)
    return (w * w - (v * v).sum(-1, keepdim=True))[..., None] * eye + 2 * v[:, :, None] * v[:, None, :] + 2 * w[..., None] * skew


def reference_render(means, quats, scales, opacities, colors, cam2world, fx, fy, cx, cy, width, height):
    """One camera. fx..cy in pixels. Returns (colours [H, W, C], alpha [H, W], expected depth [H, W])."""
    world2cam = torch.linalg.inv(cam2world)
    rot_w, t_w = world2cam[:3, :3], world2cam[:3, 3]
    p = means @ rot_w.T + t_w
    r = _rotation(quats)
    sigma3 = r @ torch.diag_embed(scales**2) @ r.transpose(1, 2)
    sigma_c = rot_w @ sigma3 @ rot_w.T
    z = p[:, 2]
    zs = torch.where(z > NEAR, z, torch.ones_like(z))
    # Jacobian at the centre clamped to 1.3x the field of view (as 3DGS/gsplat do).
    lim_xp, lim_xn = (width - cx) / fx + 0.15 * width / fx, cx / fx + 0.15 * width / fx
    lim_yp, lim_yn = (height - cy) / fy + 0.15 * height / fy, cy / fy + 0.15 * height / fy
    xc = zs * torch.clamp(p[:, 0] / zs, -lim_xn, lim_xp)
    yc = zs * torch.clamp(p[:, 1] / zs, -lim_yn, lim_yp)
    jac = torch.zeros(len(z), 2, 3, dtype=means.dtype)
    jac[:, 0, 0], jac[:, 0, 2] = fx / zs, -fx * xc / zs**2
    jac[:, 1, 1], jac[:, 1, 2] = fy / zs, -fy * yc / zs**2
    cov = jac @ sigma_c @ jac.transpose(1, 2) + BLUR * torch.eye(2, dtype=means.dtype)
    conic = torch.linalg.inv(cov)
    centre = torch.stack([fx * p[:, 0] / zs + cx, fy * p[:, 1] / zs + cy], -1)

    ys, xs = torch.meshgrid(torch.arange(height, dtype=means.dtype) + 0.5, torch.arange(width, dtype=means.dtype) + 0.5, indexing="ij")
    pix = torch.stack([xs, ys], -1)  # [H, W, 2]
    trans = torch.ones(height, width, dtype=means.dtype)
    done = torch.zeros(height, width, dtype=torch.bool)
    out = torch.zeros(height, width, colors.shape[1], dtype=means.dtype)
    depth = torch.zeros(height, width, dtype=means.dtype)
    for g in torch.argsort(z.detach(), stable=True).tolist():
        if not (z[g] > NEAR) or opacities[g] < ALPHA_MIN:
            continue
        d = centre[g] - pix
        quad = 0.5 * torch.einsum("hwi,ij,hwj->hw", d, conic[g], d)
        alpha = torch.clamp(opacities[g] * torch.exp(-quad), max=ALPHA_MAX)
        use = (~done) & (quad >= 0) & (alpha >= ALPHA_MIN)
        next_trans = trans * (1 - alpha)
        stop = use & (next_trans <= T_MIN)
        done = done | stop
        use = use & ~stop
        weight = torch.where(use, alpha * trans, torch.zeros_like(alpha))
        out = out + weight[..., None] * colors[g]
        depth = depth + weight * z[g]
        trans = torch.where(use, next_trans, trans)
    alpha_img = 1 - trans
    return out, alpha_img, depth / alpha_img.clamp(min=1e-10)
