"""The plain-PyTorch StyleGAN ops against straightforward references (explicit loops, explicit compositions)."""

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from fhavatar.prior.ops import (
    ACTIVATIONS,
    bias_act,
    conv2d_resample,
    downsample2d,
    filtered_lrelu,
    modulated_conv2d,
    normalize_2nd_moment,
    setup_filter,
    upfirdn2d,
    upsample2d,
)


def _rand(*shape, seed=0, dtype=torch.float32):
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed), dtype=dtype)


# ------------------------------------------------------------------------------------------------ bias_act
EXPECTED_ACT = {  # name: (function, default gain) written out independently of the library table
    "linear": (lambda x: x, 1.0),
    "relu": (lambda x: np.maximum(x, 0), math.sqrt(2)),
    "lrelu": (lambda x: np.where(x >= 0, x, 0.2 * x), math.sqrt(2)),
    "tanh": (np.tanh, 1.0),
    "sigmoid": (lambda x: 1 / (1 + np.exp(-x)), 1.0),
    "elu": (lambda x: np.where(x > 0, x, np.exp(x) - 1), 1.0),
    "selu": (lambda x: 1.0507009873554805 * np.where(x > 0, x, 1.6732632423543772 * (np.exp(x) - 1)), 1.0),
    "softplus": (lambda x: np.log1p(np.exp(x)), 1.0),
    "swish": (lambda x: x / (1 + np.exp(-x)), math.sqrt(2)),
}


@pytest.mark.parametrize("act", sorted(EXPECTED_ACT))
def test_bias_act_every_activation_default_gain_and_clamp(act):
    assert set(ACTIVATIONS) == set(EXPECTED_ACT)
    x, b = 2 * _rand(2, 3, 4, 5), _rand(3, seed=1)
    func, gain = EXPECTED_ACT[act]
    pre = (x + b[None, :, None, None]).double().numpy()
    torch.testing.assert_close(bias_act(x, b, act=act), torch.from_numpy(func(pre) * gain).float(), rtol=1e-5, atol=1e-5)
    # explicit gain, then clamp after the gain
    torch.testing.assert_close(
        bias_act(x, b, act=act, gain=3.0, clamp=0.7), torch.from_numpy(np.clip(func(pre) * 3.0, -0.7, 0.7)).float(), rtol=1e-5, atol=1e-5
    )


def test_bias_act_alpha_dim_and_errors():
    x, b = _rand(3, 4, 2), _rand(4, seed=1)
    expected = F.leaky_relu(x + b[None, :, None], 0.5) * 2.0
    torch.testing.assert_close(bias_act(x, b, dim=1, act="lrelu", alpha=0.5, gain=2.0), expected)
    b2 = _rand(2, seed=2)
    torch.testing.assert_close(bias_act(x, b2, dim=2), x + b2)
    with pytest.raises(ValueError, match="act"):
        bias_act(x, act="gelu")
    with pytest.raises(ValueError, match="`b` must have shape"):
        bias_act(x, b2, dim=1)
    with pytest.raises(ValueError, match="clamp"):
        bias_act(x, clamp=-1)


def test_normalize_2nd_moment():
    z = torch.tensor([[3.0, 4.0]])
    torch.testing.assert_close(normalize_2nd_moment(z), z / math.sqrt(12.5 + 1e-8))


# ------------------------------------------------------------------------------------------------ filters
def test_setup_filter_outer_product_and_separable():
    f = setup_filter([1, 3, 3, 1])
    assert f.shape == (4, 4)
    torch.testing.assert_close(f, torch.tensor([1.0, 3, 3, 1])[:, None] * torch.tensor([1.0, 3, 3, 1])[None] / 64)
    g = setup_filter([1] * 8)  # 8+ taps stay 1-D
    assert g.shape == (8,) and torch.allclose(g, torch.full((8,), 1 / 8))
    torch.testing.assert_close(setup_filter([1, 2], gain=4).sum(), torch.tensor(4.0))  # 2-D: gain ** (2/2)
    with pytest.raises(ValueError, match="filter"):
        setup_filter(torch.ones(2, 2, 2))


def _naive_upfirdn(x, f, up, down, pad):
    """Zero insertion, zero padding / cropping and a true 2-D convolution written as explicit loops."""
    (upx, upy), (downx, downy), (px0, px1, py0, py1) = up, down, pad
    x, f = x.double().numpy(), f.double().numpy()
    if f.ndim == 1:
        f = np.outer(f, f)
    n, c, h, w = x.shape
    z = np.zeros((n, c, h * upy, w * upx))
    z[:, :, ::upy, ::upx] = x
    canvas = np.zeros((n, c, z.shape[2] + max(py0, 0) + max(py1, 0), z.shape[3] + max(px0, 0) + max(px1, 0)))
    canvas[:, :, max(py0, 0) : max(py0, 0) + z.shape[2], max(px0, 0) : max(px0, 0) + z.shape[3]] = z
    canvas = canvas[:, :, max(-py0, 0) : canvas.shape[2] - max(-py1, 0), max(-px0, 0) : canvas.shape[3] - max(-px1, 0)]
    fh, fw = f.shape
    oh, ow = canvas.shape[2] - fh + 1, canvas.shape[3] - fw + 1
    out = np.zeros((n, c, oh, ow))
    for i in range(oh):
        for j in range(ow):
            for a in range(fh):
                for b in range(fw):  # true convolution: the filter enters flipped
                    out[:, :, i, j] += canvas[:, :, i + a, j + b] * f[fh - 1 - a, fw - 1 - b]
    return torch.from_numpy(out[:, :, ::downy, ::downx]).float()


@pytest.mark.parametrize(
    "up,down,pad,separable",
    [((1, 1), (1, 1), (1, 1, 1, 1), False), ((2, 2), (1, 1), (2, 1, 2, 1), False), ((1, 1), (2, 2), (1, 1, 1, 1), False),
     ((2, 1), (1, 2), (1, 0, 2, -1), False), ((2, 2), (2, 2), (-1, 2, 0, 1), True)],
)
def test_upfirdn2d_matches_explicit_loops(up, down, pad, separable):
    x = _rand(2, 3, 5, 6)
    f = torch.tensor([1.0, 2.0, 4.0, 3.0]) if separable else _rand(3, 4, seed=1)
    got = upfirdn2d(x, f, up=up, down=down, padding=pad, gain=1.5)
    expected = _naive_upfirdn(x, f, up, down, pad) * 1.5  # the gain scales the whole (separable) filter
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-5)
    # flip_filter=True means correlation: the same as convolving with the flipped filter
    flipped = f.flip(list(range(f.dim())))
    torch.testing.assert_close(
        upfirdn2d(x, f, up=up, down=down, padding=pad, flip_filter=True), _naive_upfirdn(x, flipped, up, down, pad), rtol=1e-5, atol=1e-5
    )


def test_resampling_preserves_constants_and_sizes():
    f = setup_filter([1, 3, 3, 1])
    x = torch.full((1, 2, 8, 8), 2.5)
    up = upsample2d(x, f)
    down = downsample2d(x, f)
    assert up.shape == (1, 2, 16, 16) and down.shape == (1, 2, 4, 4)
    torch.testing.assert_close(up[..., 2:-2, 2:-2], torch.full_like(up[..., 2:-2, 2:-2], 2.5))  # interior: DC gain 1
    torch.testing.assert_close(down[..., 1:-1, 1:-1], torch.full_like(down[..., 1:-1, 1:-1], 2.5))


# ------------------------------------------------------------------------------------------------ convolutions
def _reference_conv_resample(x, w, f, up, down, pad, groups, flip_weight):
    """Explicit composition: FIR upsample (gain up²) -> plain conv (correlation or true conv) -> FIR downsample."""
    fw = f.shape[-1]
    kh, kw = w.shape[-2:]
    px0 = px1 = py0 = py1 = pad
    if up > 1:
        px0, px1, py0, py1 = px0 + (fw + up - 1) // 2, px1 + (fw - up) // 2, py0 + (fw + up - 1) // 2, py1 + (fw - up) // 2
    if down > 1:
        px0, px1, py0, py1 = px0 + (fw - down + 1) // 2, px1 + (fw - down) // 2, py0 + (fw - down + 1) // 2, py1 + (fw - down) // 2
    x = _naive_upfirdn(x, f if up > 1 else torch.ones(1, 1), (up, up), (1, 1), (px0, px1, py0, py1)) * up**2
    w = w if flip_weight else w.flip([2, 3])
    x = F.conv2d(x, w, groups=groups)
    if down > 1:
        x = _naive_upfirdn(x, f, (1, 1), (down, down), (0, 0, 0, 0))
    return x


@pytest.mark.parametrize(
    "up,down,k,groups,flip_weight",
    [(1, 1, 3, 1, True), (2, 1, 3, 1, False), (2, 1, 3, 2, False), (1, 2, 3, 1, True), (2, 1, 1, 1, True), (1, 2, 1, 2, True)],
)
def test_conv2d_resample_matches_explicit_composition(up, down, k, groups, flip_weight):
    x, w, f = _rand(2, 4, 6, 6), _rand(6, 4 // groups, k, k, seed=1), setup_filter([1, 3, 3, 1])
    got = conv2d_resample(x, w, f, up=up, down=down, padding=k // 2, groups=groups, flip_weight=flip_weight)
    expected = _reference_conv_resample(x, w, f, up, down, k // 2, groups, flip_weight)
    assert got.shape == (2, 6, 6 * up // down, 6 * up // down)
    torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-4)


def test_conv2d_resample_errors():
    with pytest.raises(ValueError, match="`f`"):
        conv2d_resample(torch.zeros(1, 1, 4, 4), torch.zeros(1, 1, 3, 3), None, up=2)
    with pytest.raises(ValueError, match="`up` and `down`"):
        conv2d_resample(torch.zeros(1, 1, 4, 4), torch.zeros(1, 1, 3, 3), None, up=0)


@pytest.mark.parametrize("up", [1, 2])
def test_modulated_conv2d_fused_unfused_and_per_sample_reference(up):
    x, weight, styles = _rand(3, 4, 5, 5), _rand(6, 4, 3, 3, seed=1), 1 + 0.5 * _rand(3, 4, seed=2)
    noise = _rand(3, 1, 5 * up, 5 * up, seed=3)
    f = setup_filter([1, 3, 3, 1])
    kwargs = dict(noise=noise, up=up, padding=1, resample_filter=f, flip_weight=up == 1)
    fused = modulated_conv2d(x, weight, styles, fused_modconv=True, **kwargs)
    unfused = modulated_conv2d(x, weight, styles, fused_modconv=False, **kwargs)
    torch.testing.assert_close(fused, unfused, rtol=1e-4, atol=1e-4)
    expected = []
    for i in range(3):  # per-sample modulated + demodulated weights, explicitly
        wi = weight * styles[i][None, :, None, None]
        wi = wi / torch.sqrt((wi**2).sum(dim=(1, 2, 3), keepdim=True) + 1e-8)
        expected.append(_reference_conv_resample(x[i : i + 1], wi, f, up, 1, 1, 1, up == 1) + noise[i])
    torch.testing.assert_close(fused, torch.cat(expected), rtol=1e-4, atol=1e-4)
    # without demodulation: a conv with style-scaled weights
    plain = modulated_conv2d(x, weight, styles, demodulate=False, padding=1)
    ref = torch.cat([F.conv2d(x[i : i + 1], weight * styles[i][None, :, None, None], padding=1) for i in range(3)])
    torch.testing.assert_close(plain, ref, rtol=1e-4, atol=1e-4)


def test_modulated_conv2d_gradients_match_finite_differences():
    x = _rand(1, 2, 3, 3, dtype=torch.float64).requires_grad_()
    weight = _rand(2, 2, 3, 3, seed=1, dtype=torch.float64).requires_grad_()
    styles = (1 + 0.3 * _rand(1, 2, seed=2, dtype=torch.float64)).requires_grad_()
    f = setup_filter([1, 3, 3, 1]).double()
    assert torch.autograd.gradcheck(
        lambda a, b, c: modulated_conv2d(a, b, c, up=2, padding=1, resample_filter=f, flip_weight=False),
        (x, weight, styles),
        fast_mode=True,
    )


# ------------------------------------------------------------------------------------------------ filtered_lrelu
@pytest.mark.parametrize("up,down,clamp", [(2, 2, None), (2, 1, 0.5), (1, 2, None)])
def test_filtered_lrelu_equals_upsample_lrelu_downsample(up, down, clamp):
    x, b = _rand(2, 3, 6, 6), _rand(3, seed=1)
    fu, fd = setup_filter([1, 3, 3, 1]), setup_filter([1, 2, 1])
    pad = (3, 2, 3, 2)
    got = filtered_lrelu(x, fu, fd, b, up=up, down=down, padding=pad, gain=1.7, slope=0.1, clamp=clamp)
    # explicit: bias, zero insertion, pad, conv with the flipped filter (gain up²), lrelu, clamp, conv, stride
    y = x + b[None, :, None, None]
    z = torch.zeros(2, 3, 6 * up, 6 * up)
    z[:, :, ::up, ::up] = y
    z = F.pad(z, [pad[0], pad[1], pad[2], pad[3]])
    z = F.conv2d(z, (fu.flip([0, 1]) * up**2).expand(3, 1, 4, 4), groups=3)
    z = F.leaky_relu(z, 0.1) * 1.7
    if clamp is not None:
        z = z.clamp(-clamp, clamp)
    z = F.conv2d(z, fd.flip([0, 1]).expand(3, 1, 3, 3), groups=3)[:, :, ::down, ::down]
    expected_size = (6 * up + pad[0] + pad[1] - 3 - 2 + down - 1) // down
    assert got.shape == (2, 3, expected_size, expected_size)
    torch.testing.assert_close(got, z, rtol=1e-5, atol=1e-5)
