"""Dual-encoder inversion (tiny): shapes, determinism, gradients, occlusion-aware stitching, visibility geometry."""

import math
from types import SimpleNamespace

import pytest
import torch

from fhavatar.prior import PanoHeadPrior
from fhavatar.prior.inversion import (
    INVERSION_PRESETS,
    DualEncoderInversion,
    mirror_camera_label,
    stitch_triplanes,
    visible_cells,
)
from fhavatar.prior.renderer import RenderingOptions
from fhavatar.prior.triplane import Triplane, sample_triplane
from fhavatar.rendering import Camera


@pytest.fixture(scope="module")
def prior():
    torch.manual_seed(0)
    return PanoHeadPrior.from_preset("tiny")


@pytest.fixture(scope="module")
def inputs():
    g = torch.Generator().manual_seed(1)
    image = torch.rand(2, 3, 40, 56, generator=g)  # any size: the inversion resizes to its 32² input itself
    label = Camera.orbit(8)[:2].to_label()
    return image, label


def test_inversion_gives_a_triplane_of_the_generators_shape(prior, inputs):
    image, label = inputs
    inv, gen = prior.inversion, prior.generator
    assert isinstance(inv, DualEncoderInversion)
    out = inv.invert(image, label, gen)
    reference = gen.synthesize(torch.zeros(2, gen.num_ws, gen.w_dim))
    for tri in (out.triplane, out.triplane_visible, out.triplane_occluded):
        assert isinstance(tri, Triplane)
        assert tri.planes.shape == reference.planes.shape == (2, 3, 3, 8, 32, 32)
        assert tri.ws.shape == (2, gen.num_ws, gen.w_dim)
        assert torch.isfinite(tri.planes).all()
    assert out.visibility.shape == (2, 3, 3, 32, 32)
    # The stitched tri-grid renders with encoder 1's latents.
    assert torch.equal(out.triplane.ws, out.triplane_visible.ws)
    # `forward` and `PanoHeadPrior.encode` are the same computation.
    torch.testing.assert_close(inv(image, label, gen).planes, out.triplane.planes, rtol=0, atol=0)
    torch.testing.assert_close(prior.encode(image, Camera.from_label(label)).planes, out.triplane.planes, rtol=0, atol=0)


def test_inversion_is_deterministic(prior, inputs):
    image, label = inputs
    a = prior.inversion(image, label, prior.generator)
    b = prior.inversion(image.clone(), label.clone(), prior.generator)
    assert torch.equal(a.planes, b.planes) and torch.equal(a.ws, b.ws)


def test_inversion_is_differentiable_in_the_image_and_frozen(prior, inputs):
    image, label = inputs
    image = image[:1].clone().requires_grad_(True)
    tri = prior.inversion(image, label[:1], prior.generator)
    (tri.planes.square().mean() + tri.ws.square().mean()).backward()
    assert image.grad is not None and torch.isfinite(image.grad).all() and image.grad.abs().sum() > 0
    assert all(not p.requires_grad and p.grad is None for p in prior.parameters())


def test_the_two_encoders_are_distinct_and_both_used(prior, inputs):
    image, label = inputs
    out = prior.inversion.invert(image[:1], label[:1], prior.generator)
    assert not torch.allclose(out.triplane_visible.planes, out.triplane_occluded.planes)


def test_stitching_takes_encoder_2_exactly_where_the_mask_is_occluded(prior, inputs, monkeypatch):
    image, label = inputs
    inv = prior.inversion
    g = torch.Generator().manual_seed(3)
    mask = (torch.rand(2, 3, 3, 32, 32, generator=g) > 0.5).float()
    monkeypatch.setattr(inv, "visibility", lambda triplane, camera_label, generator: mask)
    out = inv.invert(image, label, prior.generator)
    t1, t2, t = out.triplane_visible.planes, out.triplane_occluded.planes, out.triplane.planes
    seen = mask.bool()[:, :, :, None].expand_as(t)  # the mask covers all C features of a cell
    assert torch.equal(t[seen], t1[seen])
    assert torch.equal(t[~seen], t2[~seen])
    assert 0 < seen.float().mean() < 1


def test_stitch_triplanes_blends_and_checks_shapes():
    a, b = Triplane(torch.full((1, 3, 2, 4, 8, 8), 2.0)), Triplane(torch.full((1, 3, 2, 4, 8, 8), -1.0))
    v = torch.zeros(1, 3, 2, 8, 8)
    v[0, 1, 0, 2:5, 3] = 1.0
    v[0, 2, 1, 0, 0] = 0.25
    out = stitch_triplanes(a, b, v).planes
    assert torch.equal(out[0, 1, 0, :, 2:5, 3], torch.full((4, 3), 2.0))
    torch.testing.assert_close(out[0, 2, 1, :, 0, 0], torch.full((4,), 0.25 * 2 - 0.75))
    assert (out[0, 0] == -1).all()
    with pytest.raises(ValueError, match=r"`visibility` must have shape \[1, 3, 2, 8, 8\]"):
        stitch_triplanes(a, b, v[:, :, :1])
    with pytest.raises(ValueError, match="same shape"):
        stitch_triplanes(a, Triplane(torch.zeros(1, 3, 2, 4, 4, 4)), v)


def test_visible_cells_is_the_footprint_of_sample_triplane():
    """The mask marks exactly the cells whose values `sample_triplane` reads (its adjoint is non-zero)."""
    g = torch.Generator().manual_seed(5)
    b, d, r, box = 2, 3, 8, 1.0
    points = (torch.rand(b, 40, 3, generator=g) - 0.5) * 1.3  # some outside the box
    centre = ((2 * torch.tensor([1, 6, 2]) + 1) / torch.tensor([r, r, d]) - 1) / 2  # a texel centre of plane 0
    points[0, 0] = centre * box
    valid = torch.rand(b, 40, generator=g) > 0.2
    planes = torch.zeros(b, 3, d, 1, r, r, dtype=torch.float64, requires_grad=True)
    feats = sample_triplane(Triplane(planes), points.double(), box_warp=box)[..., 0]
    (feats * valid).sum().backward()
    footprint = (planes.grad[:, :, :, 0] != 0).float()
    mask = visible_cells(points.double(), valid, d, r, box)
    assert torch.equal(mask, footprint)
    assert mask.sum() > 0


def _sphere_generator(radius: float, resolution: int = 32, depth: int = 3):
    """A tri-grid + decoder stub giving a hard sphere of `radius` at the origin.

    Feature 0 of a plane holds the squared length of its two in-plane coordinates and feature 1 is 1, so their
    mean over the three planes is 2/3 |p|² and the in-box weight (the zero padding fades both alike at the box).
    """
    centres = (torch.arange(resolution) + 0.5) / resolution - 0.5  # texel centres in world units (box 1)
    v, u = torch.meshgrid(centres, centres, indexing="ij")  # rows follow the plane's height axis
    grid = torch.stack([u**2 + v**2, torch.ones_like(u)])  # [2, R, R]
    planes = grid[None, None, None].repeat(1, 3, depth, 1, 1, 1)

    def decoder(features):
        inside = 2.0 / 3.0 * radius**2 * features[..., 1:2] - features[..., :1]
        return features, 1e4 * inside - 20.0  # opaque inside, ~empty (softplus(-21)) outside

    options = RenderingOptions(depth_resolution=48, depth_resolution_importance=48, triplane_crop=0.0)
    return Triplane(planes), SimpleNamespace(decoder=decoder, rendering=options, neural_rendering_resolution=24)


def test_visibility_marks_the_front_of_a_sphere_and_never_its_back():
    radius, r = 0.3, 32
    tri, gen = _sphere_generator(radius, r)
    inv = DualEncoderInversion(**dict(INVERSION_PRESETS["tiny"], triplane_resolution=r)).eval()
    label = Camera.look_at((0.0, 0.0, 2.7)).to_label()  # in front of the face (+z), looking at the origin
    vis = inv.visibility(tri, label, gen)[0]  # [3, D, R, R]
    assert vis.requires_grad is False and set(vis.unique().tolist()) <= {0.0, 1.0}
    # Plane 0 (x, y; depth = z): the front surface has z >= 0, i.e. depth levels 1 and 2 only.
    assert vis[0, 0].sum() == 0 and vis[0, 1:].sum() > 0
    # Plane 1 (width x, height z; depth y): rows of the back half (z < 0) are never seen from the front.
    rows_z = (torch.arange(r) + 0.5) / r - 0.5
    assert vis[1][:, rows_z < 0].sum() == 0 and vis[1][:, rows_z > 0].sum() > 0
    # Cells far outside the sphere's silhouette stay occluded (taken from encoder 2).
    cols = (torch.arange(r) + 0.5) / r - 0.5
    far = (cols.abs() > radius + 2.0 / r)
    assert vis[0][:, :, far].sum() == 0 and vis[0][:, far, :].sum() == 0
    # The silhouette centre is seen: the front pole's cell on plane 0.
    mid = r // 2
    assert vis[0, 1:, mid - 1:mid + 1, mid - 1:mid + 1].sum() > 0


def test_mirror_camera_label_mirrors_the_camera_position():
    eye = torch.tensor([1.2, 0.4, 2.3])
    label = Camera.look_at(eye).to_label()
    mirrored = mirror_camera_label(label)
    expected = Camera.look_at(eye * torch.tensor([-1.0, 1.0, 1.0])).to_label()
    torch.testing.assert_close(mirrored, expected, rtol=0, atol=1e-6)
    torch.testing.assert_close(mirror_camera_label(mirrored), label, rtol=0, atol=0)


def test_check_inputs_teach(prior, inputs):
    image, label = inputs
    inv, gen = prior.inversion, prior.generator
    with pytest.raises(ValueError, match=r"`image` values must lie in \[0, 1\].*0-255"):
        inv(image * 255, label, gen)
    with pytest.raises(ValueError, match=r"`image` must be a float tensor \[B, 3, H, W\]"):
        inv(image[:, :1], label, gen)
    with pytest.raises(TypeError, match="`image` must be a torch.Tensor"):
        inv(image.numpy(), label, gen)
    with pytest.raises(ValueError, match=r"`camera_label` must be a tensor \[2, 25\]"):
        inv(image, label[:1], gen)
    with pytest.raises(TypeError, match="`generator` must be a PanoHeadGenerator"):
        inv(image, label, object())
    other = DualEncoderInversion(**dict(INVERSION_PRESETS["tiny"], triplane_channels=4))
    with pytest.raises(ValueError, match=r"disagree on \(num_ws, w_dim, C, D, R\)"):
        other(image, label, gen)


@pytest.mark.parametrize(
    "override, message",
    [
        (dict(input_size=48), "power of two >= 32"),
        (dict(up_channels=(32, 16, 18, 8)), "multiples of 4"),
        (dict(block_units=(1, 1, 1)), "4 positive integers"),
        (dict(occlusion_alpha_threshold=1.0), r"\[0, 1\)"),
    ],
)
def test_constructor_validates(override, message):
    with pytest.raises(ValueError, match=message):
        DualEncoderInversion(**dict(INVERSION_PRESETS["tiny"], **override))


def test_official_preset_sizes_follow_the_paper():
    """IR-SE-50 trunk (3+4+14+3 units), 14 latents of 512, a 288-channel (3 x 32 x 3) tri-grid residual at 256²."""
    with torch.device("meta"):
        inv = DualEncoderInversion(**INVERSION_PRESETS["official"])
    enc = inv.encoder1
    assert len(enc.psp_encoder.body) == 24 and len(enc.psp_encoder.styles) == 14
    assert enc.latent_avg.shape == (14, 512)
    assert enc.triplanenet_encoder.final_head_two[-1].out_channels == 288
    assert enc.triplanenet_encoder.input_layer[0].in_channels == 9
    # Coarse styles read the 16² map (4 halvings to 1x1), fine ones the 64² map (6 halvings).
    assert len(enc.psp_encoder.styles[0].convs) == 2 * int(math.log2(16))
    assert len(enc.psp_encoder.styles[13].convs) == 2 * int(math.log2(64))
