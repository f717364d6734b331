"""PanoHeadPrior: frozen, differentiable in its inputs, save/load, head-space mapping, avatar-model integration."""

import dataclasses

import pytest
import torch

from fhavatar.models.avatar_net import FHAvatarModel
from fhavatar.models.fusion import horizontal_mirror_index
from fhavatar.prior import PanoHeadPrior, PriorRenderOutput, Triplane, sample_triplane
from fhavatar.rendering.cameras import Camera


@pytest.fixture(scope="module")
def prior():
    torch.manual_seed(0)
    return PanoHeadPrior.from_preset("tiny")


def _triplane(prior, b=2, seed=0):
    g = torch.Generator().manual_seed(seed)
    gen = prior.generator
    ws = gen.mapping(torch.randn(b, gen.z_dim, generator=g), Camera.orbit(b).to_label())
    return gen.synthesize(ws)


def test_prior_is_frozen_and_stays_in_eval_mode(prior):
    assert prior.inversion is not None
    assert all(not p.requires_grad for p in prior.parameters())
    prior.train()
    assert not prior.training and not any(m.training for m in prior.modules())
    assert prior.triplane_channels == 8 and prior.box_warp == 1.0


def test_official_preset_instantiates_with_the_official_sizes():
    with torch.device("meta"):
        official = PanoHeadPrior.from_preset("official")
    gen = official.generator
    assert (gen.num_ws, gen.w_dim, gen.triplane_channels, gen.triplane_depth, gen.triplane_resolution) == (14, 512, 32, 3, 256)
    assert gen.img_resolution == 512 and gen.neural_rendering_resolution == 64
    # Generator total: backbone mapping 800,768 + synthesis 28,774,125 + background 22,494,667 + SR 1,649,578
    # + decoder 4,257 + raw torgb 16,515 + t_mapping 1,638 (benchmarks/prior_bench.py derives it from the config).
    assert sum(p.numel() for p in gen.parameters()) == 53_741_548
    assert official.inversion is not None and official.inversion.num_ws == 14


def test_sample_maps_head_space_into_the_box(prior):
    tri = _triplane(prior)
    points = 0.3 * torch.randn(2, 7, 3, generator=torch.Generator().manual_seed(1))
    torch.testing.assert_close(prior.sample(tri, points), sample_triplane(tri, points))
    shifted = PanoHeadPrior(generator_config=prior.config.generator_config, head_offset=(0.0, 0.0, 0.1))
    shifted.load_state_dict(prior.state_dict(), strict=False)
    torch.testing.assert_close(shifted.sample(tri, points), sample_triplane(tri, points + torch.tensor([0.0, 0.0, 0.1])))
    with pytest.raises(ValueError, match="points"):
        prior.sample(tri, torch.zeros(2, 7))
    with pytest.raises(ValueError, match="head_offset"):
        PanoHeadPrior(generator_config=prior.config.generator_config, head_offset=(0.0, 1.0))


def test_render_uses_the_triplane_latents_and_validates(prior):
    tri = _triplane(prior)
    cams = Camera.orbit(2, elevation_deg=5)
    out = prior.render(tri, cams, 32)
    assert isinstance(out, PriorRenderOutput) and out.image.shape == (2, 3, 32, 32) and out.alpha.shape == (2, 1, 16, 16)
    explicit = prior.render(dataclasses.replace(tri, ws=None), cams, 32, ws=tri.ws)
    torch.testing.assert_close(out.image, explicit.image, rtol=0, atol=0)
    averaged = prior.render(dataclasses.replace(tri, ws=None), cams, 32)  # falls back to w_avg
    assert averaged.image.shape == out.image.shape and not torch.equal(averaged.image, out.image)
    with pytest.raises(ValueError, match="`camera` must hold 2"):
        prior.render(tri, cams[:1])
    with pytest.raises(TypeError, match="camera"):
        prior.render(tri, cams.to_label())
    with pytest.raises(ValueError, match="resolution"):
        prior.render(tri, cams, 0)


def test_encode_validates_and_needs_an_inversion(prior):
    cams = Camera.orbit(1)
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        prior.encode(torch.full((1, 3, 32, 32), 2.0), cams)
    with pytest.raises(ValueError, match="`camera` must hold 1"):
        prior.encode(torch.rand(1, 3, 32, 32), Camera.orbit(2))
    generator_only = PanoHeadPrior(generator_config=prior.config.generator_config)
    with pytest.raises(ValueError, match="no inversion"):
        generator_only.encode(torch.rand(1, 3, 32, 32), cams)


def test_gradients_flow_to_inputs_but_not_parameters(prior):
    image = torch.rand(1, 3, 40, 40, generator=torch.Generator().manual_seed(0), requires_grad=True)
    cams = Camera.orbit(1)
    tri = prior.encode(image, cams)
    assert tri.planes.shape == (1, 3, 3, 8, 32, 32) and tri.ws is not None
    points = (0.2 * torch.randn(1, 16, 3, generator=torch.Generator().manual_seed(1))).requires_grad_()
    loss = prior.sample(tri, points).square().sum() + prior.render(tri, cams, 32).image.mean()
    loss.backward()
    for name, grad in (("image", image.grad), ("points", points.grad)):
        assert grad is not None and torch.isfinite(grad).all() and grad.abs().sum() > 0, name
    planes = tri.planes.detach().requires_grad_()
    prior.render(Triplane(planes, ws=tri.ws.detach()), cams, 32).image.mean().backward()
    assert planes.grad is not None and planes.grad.abs().sum() > 0
    assert all(p.grad is None for p in prior.parameters())


def test_save_pretrained_round_trip_gives_identical_outputs(prior, tmp_path):
    prior.save_pretrained(tmp_path)
    loaded = PanoHeadPrior.from_pretrained(tmp_path)
    assert loaded.config.generator_config == prior.config.generator_config
    assert all(not p.requires_grad for p in loaded.parameters()) and not loaded.training
    for key, value in prior.state_dict().items():
        assert torch.equal(loaded.state_dict()[key], value), key
    image, cams = torch.rand(1, 3, 32, 32, generator=torch.Generator().manual_seed(2)), Camera.orbit(1)
    with torch.no_grad():
        a, b = prior.encode(image, cams), loaded.encode(image, cams)
        torch.testing.assert_close(a.planes, b.planes, rtol=0, atol=0)
        points = 0.3 * torch.randn(1, 9, 3, generator=torch.Generator().manual_seed(3))
        torch.testing.assert_close(prior.sample(a, points), loaded.sample(b, points), rtol=0, atol=0)
        torch.testing.assert_close(prior.render(a, cams).image, loaded.render(b, cams).image, rtol=0, atol=0)


def test_tiny_prior_drives_the_tiny_avatar_model_end_to_end(prior):
    """The pipeline's wiring: FHAvatarModel's sampler = `lambda p: prior.sample(T, p).transpose(1, 2)`."""
    k, b = 32, 1
    torch.manual_seed(0)
    model = FHAvatarModel.from_preset("tiny", triplane_channels=prior.triplane_channels)
    g = torch.Generator().manual_seed(4)
    image = torch.rand(b, 3, 64, 64, generator=g)
    tri = prior.encode(image, Camera.orbit(b))
    planes = tri.planes.detach().requires_grad_()
    tri = Triplane(planes, ws=tri.ws)
    out = model.predict_maps(
        image,
        position_map=0.25 * torch.randn(b, 3, k, k, generator=g),
        relative_scale=torch.full((k, k), 0.01),
        visibility=(torch.rand(b, 1, k, k, generator=g) > 0.5).float(),
        mirror=horizontal_mirror_index(k),
        local_uv_pixels=64 * torch.rand(b, k, k, 2, generator=g),
        triplane_features=lambda p: prior.sample(tri, p).transpose(1, 2),
    )
    assert out.colors.shape == (b, 3, k, k) and torch.isfinite(out.colors).all()
    without = model.predict_maps(
        image,
        position_map=0.25 * torch.randn(b, 3, k, k, generator=torch.Generator().manual_seed(4)),
        relative_scale=torch.full((k, k), 0.01),
        visibility=torch.ones(b, 1, k, k),
        mirror=horizontal_mirror_index(k),
        local_uv_pixels=torch.full((b, k, k, 2), 32.0),
    )
    assert without.colors.shape == out.colors.shape
    out.colors.mean().backward()  # the avatar loss reaches the prior's tri-grid features
    assert planes.grad is not None and planes.grad.abs().sum() > 0
