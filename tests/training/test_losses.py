"""Training losses (paper eq. 6-10, §B): each term against a value computed by hand on tiny tensors."""

import logging
import math

import pytest
import torch
from torch import nn

from fhavatar.models.attributes import UVAttributes
from training import losses
from training.config import load_config
from training.losses import (
    LossInputs,
    LossWeights,
    alpha_loss,
    compute_losses,
    eyeball_tv_loss,
    identity_loss,
    l1_loss,
    lpips_loss,
    normalized_render,
    position_offset_loss,
    rendered_tv_loss,
    shape_offset_loss,
    shape_tv_loss,
    total_variation,
    weighted_mean,
)


def _attributes(k=2, b=1, **maps):
    defaults = dict(colors=torch.zeros(b, 3, k, k), rotations=torch.zeros(b, 4, k, k), scales=torch.zeros(b, 3, k, k),
                    opacities=torch.zeros(b, 1, k, k), offsets=torch.zeros(b, 3, k, k))
    defaults.update(maps)
    return UVAttributes(**defaults)


class _Embed(nn.Module):
    """A stand-in face embedder: the mean colour of the image, L2-normalised."""

    def forward(self, x):
        return torch.nn.functional.normalize(x.mean((2, 3)), dim=-1)


def _image(*rgb):
    return torch.tensor(rgb, dtype=torch.float32).view(1, 3, 1, 1)


# ---------------------------------------------------------------------------------------------- building blocks
def test_total_variation_by_hand():
    x = torch.tensor([[1.0, 2.0], [4.0, 8.0]])[None, None]
    # horizontal |2-1|, |8-4| -> mean 2.5; vertical |4-1|, |8-2| -> mean 4.5
    assert total_variation(x).item() == pytest.approx(7.0)
    mask = torch.tensor([[1.0, 1.0], [1.0, 0.0]])
    # only the pairs (1,2) and (1,4) have both ends inside: 1 + 3
    assert total_variation(x, mask).item() == pytest.approx(4.0)
    # channels are averaged; a sample with no valid pair gives 0
    two = torch.cat([x, 3 * x], 1)
    assert total_variation(two).item() == pytest.approx((7.0 + 21.0) / 2)
    assert total_variation(x, torch.eye(2)).item() == 0.0


def test_weighted_mean_and_l1_and_alpha_by_hand():
    assert weighted_mean(torch.tensor([1.0, 2.0, 3.0]), torch.tensor([1.0, 0.0, 1.0])).item() == pytest.approx(2.0)
    assert weighted_mean(torch.tensor([1.0, 2.0]), torch.zeros(2)).item() == 0.0
    pred = torch.zeros(2, 3, 2, 2)
    target = torch.stack([torch.ones(3, 2, 2), torch.full((3, 2, 2), 0.5)])
    assert l1_loss(pred, target).item() == pytest.approx(0.75)
    assert l1_loss(pred, target, torch.tensor([1.0, 0.0])).item() == pytest.approx(1.0)
    alpha = torch.tensor([[1.0, 0.5], [0.0, 0.0]]).view(1, 1, 2, 2)
    mask = torch.tensor([[1.0, 1.0], [1.0, 0.0]]).view(1, 1, 2, 2)
    assert alpha_loss(alpha, mask).item() == pytest.approx((0 + 0.5 + 1 + 0) / 4)


def test_lpips_loss_weights_views_and_skips_padding():
    calls = []

    class FakeLPIPS(nn.Module):
        def forward(self, x, y):
            calls.append(x.shape[0])
            return (x - y).abs().flatten(1).mean(1)

    pred = torch.zeros(3, 3, 4, 4)
    target = torch.stack([torch.full((3, 4, 4), v) for v in (0.2, 0.4, 0.9)])
    value = lpips_loss(FakeLPIPS(), pred, target, torch.tensor([1.0, 1.0, 0.0]))
    assert value.item() == pytest.approx(0.3)
    assert calls == [2]  # the padding view is never evaluated
    assert lpips_loss(FakeLPIPS(), pred, target, torch.zeros(3)).item() == 0.0


def test_lpips_loss_with_the_project_loader():
    """`fhavatar.metrics.load_lpips` with a random trunk (allow_random: no ImageNet weights here): a distance that is
    0 for identical images, positive otherwise and differentiable in the prediction."""
    from fhavatar.metrics import load_lpips

    with pytest.warns(UserWarning, match="random trunk"):
        lpips = load_lpips(net="alex", allow_random=True)
    assert lpips.comparable is False
    g = torch.Generator().manual_seed(0)
    target = torch.rand(2, 3, 32, 32, generator=g)
    pred = torch.rand(2, 3, 32, 32, generator=g).requires_grad_(True)
    assert lpips_loss(lpips, target, target).item() == pytest.approx(0.0, abs=1e-6)
    value = lpips_loss(lpips, pred, target)
    assert value.item() > 0
    value.backward()
    assert pred.grad.abs().sum() > 0


def test_identity_loss_is_one_minus_cosine():
    net = _Embed()
    # orthogonal embeddings: 1 - 0; 45 degrees apart: 1 - cos(45°)
    assert identity_loss(net, _image(1, 0, 0), _image(0, 1, 0)).item() == pytest.approx(1.0)
    assert identity_loss(net, _image(1, 1, 0), _image(1, 0, 0)).item() == pytest.approx(1 - math.sqrt(0.5))
    pred = torch.cat([_image(1, 0, 0), _image(0, 0, 1)]).requires_grad_(True)
    target = torch.cat([_image(1, 0, 0), _image(0, 1, 0)]).requires_grad_(True)
    value = identity_loss(net, pred, target, torch.tensor([0.0, 1.0]))
    assert value.item() == pytest.approx(1.0)  # only the second view counts
    value.backward()
    assert target.grad is None  # the reference embedding is a constant


# ---------------------------------------------------------------------------------------------- rendered TV (eq. 6)
def test_normalized_render_recovers_the_feature():
    x = torch.tensor([0.3, -0.2, 0.7]).view(1, 3, 1, 1)
    alpha = torch.tensor(0.4).view(1, 1, 1, 1)
    # features composited without background (render_gaussians) and over white (the paper's eq. 6)
    torch.testing.assert_close(normalized_render(alpha * x, alpha), x)
    torch.testing.assert_close(normalized_render(alpha * x + (1 - alpha), alpha, background=1.0), x)


def test_rendered_tv_loss_by_hand():
    positions = torch.tensor([[0.0, 1.0], [2.0, 9.0]])[None, None]  # one channel, 2x2 pixels
    alpha = torch.tensor([[1.0, 0.5], [0.5, 0.2]])[None, None]
    render = positions * alpha  # as render_gaussians composites features
    # pixel (1,1) has alpha 0.2 < 0.5: left out; the others normalise back to 0, 1, 2
    # horizontal pairs: (0,1) -> 1; vertical pairs: (0,2) -> 2
    assert rendered_tv_loss(render, alpha, alpha_threshold=0.5).item() == pytest.approx(3.0)
    # with every pixel inside: horizontal (1 + 7) / 2, vertical (2 + 8) / 2
    assert rendered_tv_loss(render, alpha, alpha_threshold=0.1).item() == pytest.approx(4.0 + 5.0)
    # views are weighted
    two = torch.cat([render, 2 * render])
    assert rendered_tv_loss(two, torch.cat([alpha, alpha]), torch.tensor([0.0, 1.0])).item() == pytest.approx(6.0)


# ---------------------------------------------------------------------------------------------- UV regularisers
def test_eyeball_tv_only_inside_the_eye_region():
    colors = torch.zeros(1, 3, 2, 2)
    colors[0, 0] = torch.tensor([[0.0, 1.0], [0.0, 1.0]])
    attributes = _attributes(colors=colors, offsets=torch.full((1, 3, 2, 2), 0.01))
    # horizontal pairs: 2 pairs x 14 channels, one channel differs by 1 in both -> 2 / 28; vertical: 0
    assert eyeball_tv_loss(attributes, torch.ones(2, 2, dtype=torch.bool)).item() == pytest.approx(1 / 14)
    # the eye region is the left column only: no horizontal pair, vertical differences are 0
    assert eyeball_tv_loss(attributes, torch.tensor([[True, False], [True, False]])).item() == 0.0


def test_position_offset_loss_is_the_mean_norm_over_valid_texels():
    offsets = torch.zeros(1, 3, 2, 2)
    offsets[0, :, 0, 0] = torch.tensor([3.0, 4.0, 0.0])
    offsets[0, :, 1, 1] = torch.tensor([10.0, 0.0, 0.0])  # invalid texel: ignored
    valid = torch.tensor([[True, True], [False, False]])
    assert position_offset_loss(offsets, valid).item() == pytest.approx(5.0 / 2)


def test_shape_offset_hinge_eq7():
    delta = torch.zeros(1, 3, 1, 3)
    delta[0, 0, 0, 0] = 0.05  # below ε: free
    delta[0, :, 0, 1] = torch.tensor([0.0, 0.3, 0.4])  # norm 0.5 -> 0.4
    valid = torch.tensor([[True, True, True]])
    assert shape_offset_loss(delta, valid, epsilon=0.1).item() == pytest.approx((0 + 0.4 + 0) / 3)
    assert shape_offset_loss(delta, valid, epsilon=0.0).item() == pytest.approx((0.05 + 0.5 + 0) / 3)
    # finite gradients where Δp = 0 (the zero-initialised refiner starts there)
    zero = torch.zeros(1, 3, 2, 2, requires_grad=True)
    shape_offset_loss(zero, torch.ones(2, 2, dtype=torch.bool), epsilon=0.0).backward()
    assert torch.isfinite(zero.grad).all()
    offsets = torch.zeros(1, 3, 2, 2, requires_grad=True)
    position_offset_loss(offsets, torch.ones(2, 2, dtype=torch.bool)).backward()
    assert torch.isfinite(offsets.grad).all()


def test_shape_tv_eq8():
    delta = torch.zeros(1, 3, 2, 2)
    delta[0, 2] = torch.tensor([[0.0, 0.3], [0.6, 0.6]])
    valid = torch.ones(2, 2, dtype=torch.bool)
    # horizontal: (0.3 + 0) / (2 pairs x 3 channels); vertical: (0.6 + 0.3) / 6
    assert shape_tv_loss(delta, valid).item() == pytest.approx(0.3 / 6 + 0.9 / 6)


# ---------------------------------------------------------------------------------------------- schedule
def test_paper_schedule_switches_at_7500_and_25000():
    w = LossWeights()
    before, start, late = w.at(7499), w.at(7500), w.at(25000)
    for name in ("tv_3d", "eye", "shape_tv", "id"):
        assert before[name] == 0.0 and start[name] > 0
    assert (start["tv_3d"], w.at(24999)["tv_3d"], late["tv_3d"]) == (50.0, 50.0, 100.0)
    assert (start["eye"], start["shape_tv"], start["id"]) == (5.0, 10.0, 0.25)
    for name, value in (("l1", 1.0), ("lpips", 1.0), ("alpha", 1.0), ("aux", 0.5), ("pos", 1.0), ("shape", 1.0)):
        assert before[name] == value == late[name]
    with pytest.raises(ValueError, match="`step` must be an int >= 0"):
        w.at(-1)


def test_preset_schedule_comes_from_the_config():
    loss = load_config("tiny-cpu").loss
    assert loss.at(loss.regularizer_start_step - 1)["eye"] == 0.0
    assert loss.at(loss.regularizer_start_step)["eye"] == loss.lambda_eye
    assert loss.at(loss.lambda_3d_late_step)["tv_3d"] == loss.lambda_3d_late
    custom = load_config("tiny-cpu", {"loss.regularizer_start_step": 3, "loss.lambda_3d_late_step": 5}).loss
    assert (custom.lambda_3d, custom.lambda_3d_late) == (6.25, 12.5)  # the paper's 50 -> 100, scaled by 64/512
    assert [custom.at(s)["tv_3d"] for s in (2, 3, 4, 5)] == [0.0, 6.25, 6.25, 12.5]


# ---------------------------------------------------------------------------------------------- the objective
def _inputs(requires_grad=False):
    g = torch.Generator().manual_seed(0)
    images = torch.rand(2, 3, 4, 4, generator=g).requires_grad_(requires_grad)
    offsets = (0.01 * torch.randn(1, 3, 2, 2, generator=g)).requires_grad_(requires_grad)
    refined = torch.zeros(1, 3, 2, 2)
    refined[0, 0, 0, 0] = 0.5  # |Δp| = 0.5 at one texel
    return LossInputs(
        images=images, alphas=torch.full((2, 1, 4, 4), 0.8), target_images=torch.rand(2, 3, 4, 4, generator=g),
        target_masks=torch.ones(2, 1, 4, 4), weights=torch.tensor([1.0, 0.0]),
        attributes=_attributes(offsets=offsets, refined_positions=refined), position_map=torch.zeros(1, 3, 2, 2),
        valid=torch.ones(2, 2, dtype=torch.bool), eye_mask=torch.ones(2, 2, dtype=torch.bool),
        geometry=torch.rand(2, 3, 4, 4, generator=g), aux_images=torch.rand(2, 3, 4, 4, generator=g),
        aux_alphas=torch.full((2, 1, 4, 4), 0.5),
    )


def test_compute_losses_total_is_eq10(caplog):
    inputs = _inputs(requires_grad=True)
    weights = LossWeights().at(30000)
    losses._warn_once.cache_clear()
    with caplog.at_level(logging.WARNING, logger="training.losses"):
        terms = compute_losses(inputs, weights, lpips=None, identity=None, epsilon=0.1)
        compute_losses(inputs, weights)
    assert [r.getMessage() for r in caplog.records].count(
        "No identity network configured (`loss.id_network`): L_id is skipped.") == 1
    assert set(terms) == {"l1", "alpha", "aux_l1", "aux_alpha", "tv_3d", "eye", "pos", "shape", "shape_tv", "total"}
    assert terms["shape"].item() == pytest.approx(0.4 / 4)  # one texel of four over ε = 0.1
    assert terms["alpha"].item() == pytest.approx(0.2)  # only view 0 counts
    expected = (terms["l1"] + terms["alpha"] + 0.5 * (terms["aux_l1"] + terms["aux_alpha"]) + 100 * terms["tv_3d"]
                + 5 * terms["eye"] + terms["pos"] + terms["shape"] + 10 * terms["shape_tv"])
    torch.testing.assert_close(terms["total"], expected)
    terms["total"].backward()
    assert inputs.images.grad[0].abs().sum() > 0 and inputs.images.grad[1].abs().sum() == 0  # padding view
    assert inputs.attributes.offsets.grad.abs().sum() > 0


def test_compute_losses_with_lpips_and_identity_and_before_the_schedule():
    class FakeLPIPS(nn.Module):
        def forward(self, x, y):
            return (x - y).square().flatten(1).mean(1)

    inputs = _inputs()
    terms = compute_losses(inputs, LossWeights().at(30000), lpips=FakeLPIPS(), identity=_Embed())
    assert {"lpips", "aux_lpips", "id"} <= set(terms) and "aux_l1" not in terms
    expected_lpips = (inputs.images[0] - inputs.target_images[0]).square().mean()
    assert terms["lpips"].item() == pytest.approx(expected_lpips.item(), rel=1e-5)
    early = compute_losses(inputs, LossWeights().at(0), lpips=FakeLPIPS(), identity=_Embed())
    assert not {"id", "tv_3d", "eye", "shape_tv"} & set(early)
    zero = {k: 0.0 for k in LossWeights().at(0)}
    assert compute_losses(inputs, zero)["total"].item() == 0.0
