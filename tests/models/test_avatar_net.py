"""FHAvatarModel (paper §3.3-3.4): shapes, ranges, save/load, determinism, gradients, ablations, input errors."""

import json

import pytest
import torch
from torch import nn

from fhavatar.head.uv import UVLayout
from fhavatar.models import UVAttributes
from fhavatar.models.avatar_net import PRESETS, FHAvatarModel
from fhavatar.models.fusion import horizontal_mirror_index
from fhavatar.rendering.cameras import Camera
from tests.head.symmetric_head import SymmetricHead

K, H, B = 32, 64, 2
MAPS = ("colors", "rotations", "scales", "opacities", "offsets", "refined_positions")
SWITCHES = ("use_shape_refinement", "use_local_features", "use_fusion_transformer", "use_symmetry")


def _model(seed=0, **overrides):
    torch.manual_seed(seed)
    return FHAvatarModel.from_preset("tiny", **overrides)


def _perturb_zero_inits(model, seed=1, refiner=True):
    """Give the zero/small-initialised output layers random weights, so every path is active."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        layers = [model.decoder.out_conv] + ([model.refiner.out_conv] if refiner and model.refiner is not None else [])
        for conv in layers:
            conv.weight.copy_(0.05 * torch.randn(conv.weight.shape, generator=g))
        for name, param in model.named_parameters():
            if name.endswith("position_bias"):
                param.copy_(torch.randn(param.shape, generator=g))
    return model


def _inputs(seed=0, b=B):
    g = torch.Generator().manual_seed(seed)
    return dict(
        image=torch.rand(b, 3, H, H, generator=g),
        position_map=0.3 * torch.randn(b, 3, K, K, generator=g),
        relative_scale=0.01 + 0.01 * torch.rand(K, K, generator=g),
        visibility=(torch.rand(b, 1, K, K, generator=g) > 0.4).float(),
        local_uv_pixels=H * torch.rand(b, K, K, 2, generator=g),
        mirror=horizontal_mirror_index(K),
    )


class _Sampler(nn.Module):
    """A differentiable stand-in for the prior's tri-plane sampler: points [B, M, 3] -> [B, C_T, M]."""

    def __init__(self, channels=8):
        super().__init__()
        self.proj = nn.Linear(3, channels)

    def forward(self, points):
        return torch.sin(4 * self.proj(points)).transpose(1, 2)


def _flat(out: UVAttributes):
    return torch.cat([getattr(out, f).flatten() for f in MAPS])


# ------------------------------------------------------------------------------------------- outputs
def test_presets_follow_the_paper():
    full = PRESETS["full"]
    assert (full["resolution"], full["num_scales"], full["window_size"], full["num_fusion_layers"]) == (256, 4, 7, 2)
    assert PRESETS["tiny"]["resolution"] == 32 and 2 <= PRESETS["tiny"]["num_scales"] <= 3
    json.dumps(PRESETS)
    json.loads(_model().to_json_string())


def test_output_shapes_dtypes_and_ranges():
    model = _model()
    x = _inputs()
    out = model.predict_maps(**x, return_aux=True)
    assert isinstance(out, UVAttributes)
    out.validate()
    for result in (out, out.aux):
        for f, c in zip(MAPS, (3, 4, 3, 1, 3, 3)):
            value = getattr(result, f)
            assert value.shape == (B, c, K, K) and value.dtype == torch.float32 and torch.isfinite(value).all(), f
        assert ((result.colors >= 0) & (result.colors <= 1)).all()
        assert ((result.opacities >= 0) & (result.opacities <= 1)).all()
        torch.testing.assert_close(result.rotations.norm(dim=1), torch.ones(B, K, K))
        s = x["relative_scale"]
        assert (result.scales >= 0.1 * s - 1e-7).all() and (result.scales <= 4.0 * s + 1e-7).all()
        assert result.offsets.abs().max() <= 0.02
    # Δp starts at zero (zero-initialised last layer) and stays bounded.
    torch.testing.assert_close(out.refined_positions, x["position_map"])
    out = _perturb_zero_inits(model).predict_maps(**x)
    delta = out.refined_positions - x["position_map"]
    assert delta.abs().max() > 0 and delta.abs().max() <= model.config.max_shape_offset
    assert model.predict_maps(**x, return_aux=False).aux is None


def test_batch_elements_are_independent():
    model = _perturb_zero_inits(_model())
    x = _inputs()
    both = model.predict_maps(**x)
    one = model.predict_maps(**{k: (v[1:] if k not in ("relative_scale", "mirror") else v) for k, v in x.items()})
    torch.testing.assert_close(_flat(one), torch.cat([getattr(both, f)[1:].flatten() for f in MAPS]), rtol=1e-4, atol=1e-5)


def test_save_pretrained_round_trip(tmp_path):
    model = _perturb_zero_inits(_model(use_symmetry=False))
    model.save_pretrained(tmp_path)
    loaded = FHAvatarModel.from_pretrained(tmp_path)
    assert loaded.config.use_symmetry is False and list(loaded.config.uv_channels) == [16, 16, 8]
    x = _inputs()
    torch.testing.assert_close(_flat(loaded.predict_maps(**x, return_aux=True)), _flat(model.predict_maps(**x, return_aux=True)), rtol=0, atol=0)


def test_determinism():
    x = _inputs()
    a, b = _model(seed=3), _model(seed=3)
    torch.testing.assert_close(_flat(a.predict_maps(**x)), _flat(b.predict_maps(**x)), rtol=0, atol=0)
    torch.testing.assert_close(_flat(a.predict_maps(**x)), _flat(a.predict_maps(**x)), rtol=0, atol=0)
    assert not torch.equal(_flat(_perturb_zero_inits(_model(seed=4)).predict_maps(**x)), _flat(_perturb_zero_inits(a).predict_maps(**x)))


def test_gradients_reach_every_parameter():
    model = _perturb_zero_inits(_model())
    out = model.predict_maps(**_inputs(), return_aux=True)
    loss = sum(getattr(r, f).square().mean() for r in (out, out.aux) for f in MAPS)
    loss.backward()
    for name, param in model.named_parameters():
        assert param.grad is not None and torch.isfinite(param.grad).all(), name
        assert param.grad.abs().sum() > 0, name


def test_refinement_gets_gradients_through_the_prior_and_the_camera():
    """p_r drives the tri-plane sampling (F_g) and, with a camera, the local projections."""
    x = _inputs()
    camera = Camera.look_at(torch.tensor([[0.0, 0.0, 2.7]] * B))
    for kwargs in (dict(triplane_features=_Sampler()), dict(camera=camera, local_uv_pixels=None)):
        model = _perturb_zero_inits(_model())
        model.predict_maps(**{**x, **kwargs}).colors.mean().backward()
        assert model.refiner.stem.weight.grad.abs().sum() > 0, kwargs


def test_global_branch_modes():
    model, x = _perturb_zero_inits(_model()), _inputs()
    sampler = _Sampler()
    with_prior = model.predict_maps(**x, triplane_features=sampler)
    without = model.predict_maps(**x)
    features = sampler(x["position_map"].flatten(2).transpose(1, 2)).view(B, 8, K, K)
    precomputed = model.predict_maps(**x, triplane_features=features)
    assert not torch.allclose(with_prior.colors, without.colors)
    assert not torch.allclose(precomputed.colors, without.colors)
    with pytest.raises(ValueError, match="sampler must return"):
        model.predict_maps(**x, triplane_features=lambda points: points)
    with pytest.raises(ValueError, match="triplane_features"):
        model.predict_maps(**x, triplane_features=torch.zeros(B, 3, K, K))
    with pytest.raises(TypeError, match="triplane_features"):
        model.predict_maps(**x, triplane_features=3)


def test_mirror_forms_agree_on_a_real_layout():
    """A UVLayout, its mirror index and its flip callable give the same output (symmetric test head)."""
    head = SymmetricHead(num_columns=16, num_rings=8)
    layout = UVLayout(head, resolution=K)
    vertices = head(head.neutral_params(B))
    p = layout.position_map(vertices)
    camera = Camera.look_at(torch.tensor([[0.0, 0.0, 2.7]] * B))
    pixels = camera.project(p.flatten(2).transpose(1, 2), H, H)[0].view(B, K, K, 2)
    visibility = (layout.valid & (p[:, 2:] > 0)).float()  # front half (a stand-in for the depth test)
    model = _perturb_zero_inits(_model(), refiner=False)  # Δp = 0: the camera projects p_r = p
    x = dict(
        image=torch.rand(B, 3, H, H),
        position_map=p,
        relative_scale=layout.relative_scale,
        visibility=visibility,
        local_uv_pixels=pixels,
    )
    outs = [model.predict_maps(**x, mirror=m) for m in (layout, layout.mirror_index, layout.flip)]
    for out in outs[1:]:
        torch.testing.assert_close(_flat(out), _flat(outs[0]), rtol=1e-5, atol=1e-6)
    via_camera = model.predict_maps(**{**x, "local_uv_pixels": None}, camera=camera, mirror=layout)
    torch.testing.assert_close(_flat(via_camera), _flat(outs[0]), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("switch", SWITCHES)
def test_every_ablation_runs_and_changes_the_output(switch):
    base = _perturb_zero_inits(_model())
    ablated = _model(**{switch: False})
    shared = ablated.state_dict()
    shared.update({k: v for k, v in base.state_dict().items() if k in shared and shared[k].shape == v.shape})
    ablated.load_state_dict(shared)  # same weights wherever the architectures agree
    torch.manual_seed(0)
    x = {**_inputs(), "triplane_features": _Sampler()}
    out = ablated.predict_maps(**x, return_aux=True)
    out.validate()
    assert torch.isfinite(_flat(out)).all()
    assert not torch.allclose(_flat(out), _flat(base.predict_maps(**x)), atol=1e-6)
    if switch == "use_shape_refinement":
        assert ablated.refiner is None and torch.equal(out.refined_positions, x["position_map"])
    if switch == "use_local_features":  # no image encoder, no projection inputs needed
        assert ablated.image_encoder is None
        ablated.predict_maps(**{**x, "local_uv_pixels": None})


# ------------------------------------------------------------------------------------------- errors
@pytest.mark.parametrize(
    "change, match",
    [
        (dict(image=torch.rand(B, 4, H, H)), "image"),
        (dict(image=2 * torch.ones(B, 3, H, H)), r"image.*\[0, 1\]"),
        (dict(position_map=torch.zeros(B, 3, 16, 16)), "position_map"),
        (dict(relative_scale=torch.ones(K)), "relative_scale"),
        (dict(visibility=torch.ones(B, K, K)), "visibility"),
        (dict(visibility=2 * torch.ones(B, 1, K, K)), r"visibility.*\[0, 1\]"),
        (dict(local_uv_pixels=torch.zeros(B, K, K, 3)), "local_uv_pixels"),
        (dict(local_uv_pixels=None), "exactly one"),
        (dict(camera=Camera.look_at((0.0, 0.0, 2.7))), "exactly one"),
        (dict(mirror=horizontal_mirror_index(16)), "mirror"),
    ],
)
def test_bad_inputs_raise_clear_errors(change, match):
    model = _model()
    with pytest.raises(ValueError, match=match):
        model.predict_maps(**{**_inputs(), **change})


def test_bad_mirror_type():
    with pytest.raises(TypeError, match="mirror"):
        _model().predict_maps(**{**_inputs(), "mirror": "left-right"})


@pytest.mark.parametrize(
    "overrides, match",
    [
        (dict(resolution=34), "resolution"),
        (dict(num_scales=0), "num_scales"),
        (dict(image_channels=(8, 8)), "image_channels"),
        (dict(uv_channels=(16, 0, 8)), "uv_channels"),
        (dict(num_heads=3), "num_heads"),
        (dict(window_size=4), "window_size"),
        (dict(max_shape_offset=-1.0), "max_shape_offset"),
        (dict(scale_range=(2.0, 1.0)), "scale_range"),
        (dict(use_symmetry="yes"), "use_symmetry"),
        (dict(refine_channels=(8, 8, 8, 8, 8, 8, 8)), "refine_channels"),
    ],
)
def test_bad_config_raises(overrides, match):
    with pytest.raises(ValueError, match=match):
        FHAvatarModel.from_preset("tiny", **overrides)
    with pytest.raises(ValueError, match="name"):
        FHAvatarModel.from_preset("huge")
