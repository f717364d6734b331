"""The compiled compositing kernels against a plain per-pixel loop (values) and a PyTorch copy (gradients).

The scenes are 2D (means, conics, opacities already projected) so that every branch of the kernels can be
reached on purpose: partial tiles, a huge Gaussian, needle-thin ones, a conic that is not positive definite,
opacities below 1/255, more and fewer channels than the kernels fuse into their main loop.
"""

import math

import numpy as np
import pytest
import torch

from fhavatar.rendering import _cpu_kernels as kern

WIDTH, HEIGHT = 40, 24  # 3 x 2 tiles, the last column and row of tiles partial


def _scene(n_channels, seed=0, n=80):
    rng = np.random.default_rng(seed)
    # crowded on the left (pixels stop early), sparse on the right (pixels stay see-through)
    x = np.where(np.arange(n) < 0.8 * n, rng.uniform(-2, 0.4 * WIDTH, n), rng.uniform(0.5 * WIDTH, WIDTH + 4, n))
    means2d = np.stack([x, rng.uniform(-4, HEIGHT + 4, n)], 1)
    sx, sy = rng.uniform(0.8, 6.0, n), rng.uniform(0.8, 6.0, n)
    sx[:3], sy[:3] = 0.15, 9.0  # needles
    sx[3], sy[3] = 40.0, 25.0  # covers the whole image
    theta = rng.uniform(0, math.pi, n)
    cos, sin = np.cos(theta), np.sin(theta)
    cov = np.empty((n, 2, 2))
    cov[:, 0, 0] = cos**2 * sx**2 + sin**2 * sy**2
    cov[:, 1, 1] = sin**2 * sx**2 + cos**2 * sy**2
    cov[:, 0, 1] = cov[:, 1, 0] = cos * sin * (sx**2 - sy**2)
    inv = np.linalg.inv(cov)
    conics = np.stack([inv[:, 0, 0], inv[:, 0, 1], inv[:, 1, 1]], 1)
    conics[4] = [0.05, 0.3, 0.05]  # not positive definite: sigma < 0 along a diagonal
    opacities = np.where(x < 0.45 * WIDTH, rng.uniform(0.85, 1.0, n), rng.uniform(0.1, 0.9, n))
    opacities[3] = 0.03  # the huge one: faint
    opacities[5:7] = [1.0, 0.003]  # alpha clamped at 0.999 / never above 1/255
    channels = rng.uniform(-1, 1, (n, n_channels))
    f32 = lambda a: np.ascontiguousarray(a, dtype=np.float32)  # noqa: E731
    return f32(means2d), f32(conics), f32(opacities), f32(channels)


#: A cut-off test (alpha >= 1/255, T (1 - alpha) <= 1e-4, sigma >= 0) whose float64 value lies within this relative
#: distance of the cut-off is a near tie: the float32 kernels (fastmath, compiled for the CPU at hand) may decide it
#: either way, and everything that pixel composites afterwards follows that decision.
NEAR_TIE = 1e-4


def _reference_forward(means2d, conics, opacities, channels):
    """gsplat's per-pixel loop in float64, every Gaussian against every pixel in list order (vectorised over pixels).

    Also returns `near_tie [H, W]`: the pixels where some cut-off test was a near tie (`NEAR_TIE`)."""
    ys, xs = np.meshgrid(np.arange(HEIGHT) + 0.5, np.arange(WIDTH) + 0.5, indexing="ij")
    out = np.zeros((channels.shape[1], HEIGHT, WIDTH))
    trans = np.ones((HEIGHT, WIDTH))
    last = np.full((HEIGHT, WIDTH), -1)
    stopped = np.zeros((HEIGHT, WIDTH), dtype=bool)
    near_tie = np.zeros((HEIGHT, WIDTH), dtype=bool)
    for i in range(len(opacities)):
        dx, dy = means2d[i, 0] - xs, means2d[i, 1] - ys
        a, b, c = conics[i].astype(np.float64)
        terms = (0.5 * a * dx * dx, 0.5 * c * dy * dy, b * dx * dy)
        sigma = terms[0] + terms[1] + terms[2]
        with np.errstate(over="ignore"):
            alpha = np.minimum(0.999, opacities[i] * np.exp(-sigma))
        near_tie |= ~stopped & (np.abs(sigma) <= NEAR_TIE * sum(np.abs(t) for t in terms))
        near_tie |= ~stopped & (sigma >= 0) & (np.abs(alpha * 255 - 1) <= NEAR_TIE)
        take = (sigma >= 0) & (alpha >= 1 / 255) & ~stopped
        near_tie |= take & (np.abs(trans * (1 - alpha) * 1e4 - 1) <= NEAR_TIE)
        stop = take & (trans * (1 - alpha) <= 1e-4)  # the pixel stops before this Gaussian
        stopped |= stop
        take &= ~stop
        out += np.where(take, alpha * trans, 0.0) * channels[i][:, None, None]
        trans = np.where(take, trans * (1 - alpha), trans)
        last[take] = i
    return out, trans, last, stopped, near_tie


def _run_forward(means2d, conics, opacities, channels):
    n = len(opacities)
    radii = np.full((n, 2), 2 * max(WIDTH, HEIGHT), dtype=np.int32)  # every Gaussian in every tile
    tiles_x, tiles_y = math.ceil(WIDTH / 16), math.ceil(HEIGHT / 16)
    offsets, ids = kern.bin_gaussians_to_tiles(means2d, radii, np.arange(n), tiles_x, tiles_y)
    params = np.empty((n, kern.PARAM_FIELDS + max(channels.shape[1], kern.FUSED_CHANNELS)), np.float32)
    kern.pack_gaussians(means2d, conics, opacities, channels, params)
    rec = np.empty((len(ids), params.shape[1]), np.float32)
    kern.gather_rows(params, ids, rec)
    out = np.empty((channels.shape[1], HEIGHT, WIDTH), np.float32)
    trans = np.empty((HEIGHT, WIDTH), np.float32)
    last = np.empty((HEIGHT, WIDTH), np.int64)
    kern.rasterize_forward(rec, offsets, WIDTH, HEIGHT, tiles_x, out, trans, last)
    return out, trans, last, (rec, offsets, ids, tiles_x)


@pytest.mark.parametrize("n_channels", [2, 6])
def test_forward_kernel_matches_per_pixel_loop(n_channels):
    scene = _scene(n_channels)
    out, trans, last, (_, offsets, _, tiles_x) = _run_forward(*scene)
    ref_out, ref_trans, ref_last, stopped, near_tie = _reference_forward(*scene)
    assert stopped.mean() > 0.1 and (ref_trans > 0.5).mean() > 0.05  # pixels that stop early and see-through ones
    # Pixels with a near tie at a cut-off (2 of 960 here, e.g. an alpha 3e-6 above 1/255) may legitimately take or
    # skip that Gaussian on another CPU: every other pixel must match, its composited list exactly.
    assert near_tie.mean() < 0.01
    clear = ~near_tie
    np.testing.assert_allclose(out[:, clear], ref_out[:, clear], atol=2e-4)  # float32: needles lose digits to cancellation
    np.testing.assert_allclose(trans[clear], ref_trans[clear], atol=2e-6)
    # last composited intersection: the tile's list is all Gaussians in order, so it is start + i
    tile = (np.arange(HEIGHT)[:, None] // 16) * tiles_x + np.arange(WIDTH)[None, :] // 16
    np.testing.assert_array_equal((last - offsets[tile])[clear], ref_last[clear])


def _torch_composite(means2d, conics, opacities, channels, done):
    """Differentiable copy of the per-pixel loop; `done [N, H, W]` marks where each pixel had stopped."""
    ys, xs = torch.meshgrid(torch.arange(HEIGHT) + 0.5, torch.arange(WIDTH) + 0.5, indexing="ij")
    out = torch.zeros(channels.shape[1], HEIGHT, WIDTH, dtype=torch.float64)
    t = torch.ones(HEIGHT, WIDTH, dtype=torch.float64)
    for i in range(len(opacities)):
        dx, dy = means2d[i, 0] - xs, means2d[i, 1] - ys
        sigma = 0.5 * (conics[i, 0] * dx * dx + conics[i, 2] * dy * dy) + conics[i, 1] * dx * dy
        front = sigma >= 0
        sigma = torch.where(front, sigma, torch.zeros_like(sigma))  # keeps exp finite: no NaN gradients
        alpha = torch.clamp(opacities[i] * torch.exp(-sigma), max=0.999)
        take = front & (alpha >= 1 / 255) & ~done[i]
        alpha = torch.where(take, alpha, torch.zeros_like(alpha))
        out = out + channels[i][:, None, None] * (alpha * t)
        t = t * (1 - alpha)
    return out, t


@pytest.mark.parametrize("n_channels", [2, 6])
def test_backward_kernel_matches_autograd(n_channels):
    means2d, conics, opacities, channels = _scene(n_channels, seed=1)
    out, trans, last, (rec, offsets, ids, tiles_x) = _run_forward(means2d, conics, opacities, channels)
    rng = np.random.default_rng(2)
    grad_out = rng.standard_normal(out.shape).astype(np.float32)
    grad_alpha = rng.standard_normal(trans.shape).astype(np.float32)
    rows = np.zeros((len(ids), 6 + n_channels), np.float32)
    kern.rasterize_backward(rec, offsets, WIDTH, HEIGHT, tiles_x, trans, last, grad_out, grad_alpha, rows)
    grads = np.zeros((len(opacities), 6 + n_channels), np.float32)
    kern.scatter_add_rows(ids, rows, grads)

    tile = (np.arange(HEIGHT)[:, None] // 16) * tiles_x + np.arange(WIDTH)[None, :] // 16
    stop = torch.from_numpy(last - offsets[tile])  # Gaussians after the last composited one are not seen
    done = torch.arange(len(opacities))[:, None, None] > stop[None]
    leaves = [torch.from_numpy(a).double().requires_grad_() for a in (means2d, conics, opacities, channels)]
    ref_out, ref_t = _torch_composite(*leaves, done)
    np.testing.assert_allclose(ref_out.detach().numpy(), out, atol=2e-4)  # the same pixels were composited
    ((ref_out * torch.from_numpy(grad_out)).sum() + ((1 - ref_t) * torch.from_numpy(grad_alpha)).sum()).backward()
    for ours, leaf in ((grads[:, 0:2], leaves[0]), (grads[:, 2:5], leaves[1]), (grads[:, 5], leaves[2]), (grads[:, 6:], leaves[3])):
        want = leaf.grad.numpy()
        np.testing.assert_allclose(ours, want, atol=1e-4 * np.abs(want).max(), rtol=1e-3)


def test_sort_by_depth_is_stable_and_drops_culled():
    rng = np.random.default_rng(0)
    depths = rng.choice(np.array([-1.5, 0.02, 0.5, 2.7, 2.7000003, 1e6], np.float32), 500)
    radii = rng.integers(0, 3, (500, 2)).astype(np.int32)
    order = kern.sort_by_depth(depths, radii)
    visible = np.flatnonzero((radii[:, 0] > 0) & (radii[:, 1] > 0))
    np.testing.assert_array_equal(order, visible[np.argsort(depths[visible], kind="stable")])
    assert kern.sort_by_depth(depths[:0], radii[:0]).shape == (0,)


@pytest.mark.parametrize("chunks", [1, 3, 8, 5000])
def test_parallel_binning_gives_the_serial_lists(chunks):
    rng = np.random.default_rng(chunks)
    n, tiles_x, tiles_y = 3000, 7, 5  # a 112 x 80 image; some boxes reach outside it
    means2d = rng.uniform(-20, 130, (n, 2)).astype(np.float32)
    radii = rng.integers(0, 40, (n, 2)).astype(np.int32)
    depths = rng.uniform(0.5, 3.0, n).astype(np.float32)
    order = kern.sort_by_depth(depths, radii)
    offsets, ids = kern.bin_gaussians_to_tiles(means2d, radii, order, tiles_x, tiles_y)
    par_offsets, par_ids = kern.bin_gaussians_parallel(means2d, radii, order, tiles_x, tiles_y, chunks)
    np.testing.assert_array_equal(par_offsets, offsets)
    np.testing.assert_array_equal(par_ids, ids)
    empty = kern.bin_gaussians_parallel(means2d, radii, order[:0], tiles_x, tiles_y, chunks)
    assert empty[1].shape == (0,) and (empty[0] == 0).all()


def test_sort_and_bound_gives_the_plain_order_and_each_gaussians_tiles():
    rng = np.random.default_rng(1)
    n, tiles_x, tiles_y = 4000, 6, 4
    for depths in (rng.choice(np.array([-1.5, 0.02, 0.5, 2.7, 2.7000003, 1e6], np.float32), n),  # ties, a wide span
                   rng.uniform(2.4, 3.1, n).astype(np.float32)):  # a head: two radix passes
        radii = rng.integers(0, 30, (n, 2)).astype(np.int32)
        means2d = rng.uniform(-30, 120, (n, 2)).astype(np.float32)
        work = [np.empty(n, t) for t in (np.uint32, np.uint32, np.int64, np.int64)]
        rects = [np.empty((n, 4), np.int32) for _ in range(2)]
        expected = kern.sort_by_depth(depths, radii)
        for runs in (3, 1):  # parallel runs, then the serial case
            order, sorted_rects = kern.sort_and_bound(depths, radii, means2d, tiles_x, tiles_y, *work, *rects,
                                                      np.empty((runs, 2048), np.int64))
            np.testing.assert_array_equal(order, expected)
        offsets, ids = kern.bin_gaussians_to_tiles(means2d, radii, expected, tiles_x, tiles_y)
        counts, par_offsets = np.empty((3, tiles_x * tiles_y), np.int64), np.empty(tiles_x * tiles_y + 1, np.int64)
        par_ids = np.empty(kern.count_tiles_parallel(sorted_rects, tiles_x, counts, par_offsets), np.int64)
        kern.fill_tiles_parallel(order, sorted_rects, tiles_x, counts, par_ids)
        np.testing.assert_array_equal(par_offsets, offsets)
        np.testing.assert_array_equal(par_ids, ids)
    empty = kern.sort_and_bound(depths[:0], radii[:0], means2d[:0], tiles_x, tiles_y, *work, *rects,
                                np.empty((2, 2048), np.int64))
    assert empty[0].shape == (0,) and empty[1].shape == (0, 4)
