"""The compiled CPU projection against the readable PyTorch reference: values and gradients."""

import numpy as np
import torch

from fhavatar.rendering import Camera, Gaussians
from fhavatar.rendering import _cpu_projection as kernels
from fhavatar.rendering.reference import project_gaussians

from .test_rasterize import _hard_scene


def _numba_projection(gs, cam, width, height, v_means2d, v_conics, v_depths):
    n = len(gs)
    k = cam.pixel_intrinsics(width, height)[0].double().numpy()
    view = cam.world2cam[0].double().numpy()
    arrays = [np.ascontiguousarray(t.detach().numpy()) for t in (gs.means, gs.quats, gs.scales, gs.opacities)]
    out = (np.empty((n, 2), np.float32), np.empty((n, 3), np.float32), np.empty(n, np.float32), np.empty((n, 2), np.int32))
    intr = (k[0, 0], k[1, 1], k[0, 2], k[1, 2])
    kernels.project_forward(*arrays, view, *intr, width, height, *out)
    grads = (np.zeros((n, 3), np.float32), np.zeros((n, 4), np.float32), np.zeros((n, 3), np.float32))
    kernels.project_backward(*arrays[:3], out[3], view, *intr, width, height, v_means2d, v_conics, v_depths, *grads)
    return out, grads


def test_projection_matches_reference_values_and_gradients():
    gs = _hard_scene(n=200, seed=11)
    cam = Camera.look_at((-0.3, 0.2, 2.6), focal=3.0)
    width, height = 64, 48
    leaves = [t.double().clone().requires_grad_() for t in (gs.means, gs.quats, gs.scales)]
    ref_g = Gaussians(*leaves, gs.opacities.double(), gs.colors.double())
    ref = project_gaussians(ref_g.means, ref_g.covariances(), ref_g.opacities, cam.world2cam.double(), cam.pixel_intrinsics(width, height).double(), width, height)
    gen = torch.Generator().manual_seed(0)
    # large conic gradients (as big Gaussians get) make any wrong Jacobian term visible
    v_m2d, v_con, v_dep = torch.randn(200, 2, generator=gen), 1e4 * torch.randn(200, 3, generator=gen), torch.randn(200, generator=gen)
    (out, grads) = _numba_projection(gs, cam, width, height, v_m2d.numpy(), v_con.numpy(), v_dep.numpy())
    visible = torch.from_numpy(out[3] > 0).all(-1)
    assert 50 < visible.sum() < 200  # culling happened and plenty survived
    np.testing.assert_array_equal(out[3], ref.radii[0].numpy())
    torch.testing.assert_close(torch.from_numpy(out[0])[visible], ref.means2d[0][visible].float(), atol=1e-3, rtol=1e-5)
    torch.testing.assert_close(torch.from_numpy(out[1])[visible], ref.conics[0][visible].float(), atol=1e-6, rtol=1e-4)
    torch.testing.assert_close(torch.from_numpy(out[2]), ref.depths[0].float(), atol=1e-5, rtol=1e-6)
    mask = visible.double()
    ((ref.means2d[0] * v_m2d * mask[:, None]).sum() + (ref.conics[0] * v_con * mask[:, None]).sum() + (ref.depths[0] * v_dep * mask).sum()).backward()
    for ours, leaf in zip(grads, leaves):
        scale = leaf.grad.abs().max().item()
        torch.testing.assert_close(torch.from_numpy(ours).double(), leaf.grad, atol=2e-5 * scale, rtol=1e-4)
