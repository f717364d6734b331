"""Tri-grid sampling, volume rendering and the PanoHead generator (tiny config; official names/sizes on meta)."""

import math

import pytest
import torch

from fhavatar.prior import GENERATOR_PRESETS, PanoHeadGenerator, RenderingOptions, Triplane, sample_triplane
from fhavatar.prior.renderer import march_rays, render_triplane, sample_pdf, sample_rays
from fhavatar.rendering.cameras import Camera


def _tiny(seed=0, **overrides):
    torch.manual_seed(seed)
    return PanoHeadGenerator(**{**GENERATOR_PRESETS["tiny"], **overrides}).eval().requires_grad_(False)


# ------------------------------------------------------------------------------------------------ Triplane
def test_backbone_layout_round_trip():
    b, c, d, r = 2, 4, 3, 5
    raw = torch.randn(b, 3 * c * d, r, r)
    tri = Triplane.from_backbone(raw, channels=c, depth=d)
    assert tri.planes.shape == (b, 3, d, c, r, r) and (tri.depth, tri.channels, tri.resolution) == (d, c, r)
    # official layout: plane i owns channels [i*C*D, (i+1)*C*D), feature c at depth level d is channel c*D + d
    torch.testing.assert_close(tri.planes[1, 2, 1, 3], raw[1, 2 * c * d + 3 * d + 1])
    torch.testing.assert_close(tri.to_backbone(), raw)
    with pytest.raises(ValueError, match="3\\*C\\*D"):
        Triplane.from_backbone(raw, channels=5, depth=3)
    with pytest.raises(ValueError, match=r"\[B, 3, D, C, R, R\]"):
        Triplane(torch.zeros(1, 2, 3, 4, 5, 5))
    with pytest.raises(ValueError, match="Triplane.ws"):
        Triplane(torch.zeros(1, 3, 3, 4, 5, 5), ws=torch.zeros(2, 3, 4))


def test_sample_triplane_is_exact_at_grid_points():
    # R = 9 and D = 3 share the normalised texel centres -2/3, 0, 2/3 (R-index 1, 4, 7; D-index 0, 1, 2), so these
    # points sit exactly on a cell centre of every plane; box_warp = 2 makes world = normalised coordinates.
    tri = Triplane(torch.randn(2, 3, 3, 4, 9, 9))
    values = (-2 / 3, 0.0, 2 / 3)
    r_index, d_index = {v: i for v, i in zip(values, (1, 4, 7))}, {v: i for v, i in zip(values, (0, 1, 2))}
    pts = torch.tensor([[x, y, z] for x in values for y in values for z in values])
    got = sample_triplane(tri, pts[None].repeat(2, 1, 1), box_warp=2.0)
    for bi in range(2):
        for k, (x, y, z) in enumerate(pts.tolist()):
            xk, yk, zk = min(values, key=lambda v: abs(v - x)), min(values, key=lambda v: abs(v - y)), min(values, key=lambda v: abs(v - z))
            p = tri.planes[bi]
            expected = (
                p[0, d_index[zk], :, r_index[yk], r_index[xk]]  # plane 0: width x, height y, depth z
                + p[1, d_index[yk], :, r_index[zk], r_index[xk]]  # plane 1: width x, height z, depth y
                + p[2, d_index[xk], :, r_index[zk], r_index[yk]]  # plane 2: width y, height z, depth x
            ) / 3
            torch.testing.assert_close(got[bi, k], expected, rtol=1e-5, atol=1e-6)


def test_sample_triplane_interpolates_and_pads_with_zeros():
    planes = torch.zeros(1, 3, 1, 1, 4, 4)
    planes[0, 0, 0, 0, 1, 1], planes[0, 0, 0, 0, 1, 2] = 3.0, 6.0  # plane 0, row (y) 1, columns (x) 1 and 2
    tri = Triplane(planes)
    # box_warp 1: texel centres at x = (2k + 1) / 8 - 0.5 -> columns 1, 2 at -0.125, 0.125; row 1 at y = -0.125.
    # D = 1: the single depth level is at z = 0, where it is read with weight 1.
    pts = torch.tensor([[[0.0, -0.125, 0.0], [-0.125, -0.125, 0.0], [5.0, 5.0, 5.0]]])
    got = sample_triplane(tri, pts)[0, :, 0]
    torch.testing.assert_close(got, torch.tensor([4.5 / 3, 3.0 / 3, 0.0]))


def test_sample_triplane_gradients_and_errors():
    planes = torch.randn(1, 3, 3, 2, 6, 6, dtype=torch.float64, requires_grad=True)
    pts = (0.3 * torch.randn(1, 4, 3, dtype=torch.float64)).requires_grad_()
    assert torch.autograd.gradcheck(lambda a, b: sample_triplane(Triplane(a), b), (planes, pts), fast_mode=True)
    with pytest.raises(ValueError, match="points"):
        sample_triplane(Triplane(planes), torch.zeros(2, 4, 3))
    with pytest.raises(TypeError, match="Triplane"):
        sample_triplane(planes, pts)


# ------------------------------------------------------------------------------------------------ renderer
def test_rays_pass_through_their_pixel_centres():
    cams = Camera.orbit(3, elevation_deg=15)
    origins, dirs = sample_rays(cams.cam2world, cams.intrinsics, 8)
    assert origins.shape == dirs.shape == (3, 64, 3)
    torch.testing.assert_close(dirs.norm(dim=-1), torch.ones(3, 64))
    uv, depth = cams.project(origins + 2.7 * dirs, 8, 8)
    j, i = torch.meshgrid(torch.arange(8.0), torch.arange(8.0), indexing="xy")
    expected = torch.stack([j.flatten() + 0.5, i.flatten() + 0.5], dim=-1)  # row-major pixel centres
    torch.testing.assert_close(uv, expected[None].expand(3, -1, -1), rtol=1e-4, atol=1e-4)
    assert (depth > 0).all()


def test_march_rays_matches_hand_computation():
    depths = torch.tensor([2.0, 2.5, 3.0]).view(1, 1, 3, 1)
    densities = torch.tensor([1.0, 3.0, 1.0]).view(1, 1, 3, 1)
    colors = torch.tensor([0.0, 1.0, 0.0]).view(1, 1, 3, 1)
    rgb, depth, weights = march_rays(colors, densities, depths)
    a = 1 - math.exp(-math.log1p(math.exp(2.0 - 1)) * 0.5)  # both intervals: mid density 2, softplus(2 - 1)
    expected_w = torch.tensor([a, a * (1 - a)])
    torch.testing.assert_close(weights.flatten(), expected_w, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(rgb.flatten(), (0.5 * expected_w).sum().view(1))
    torch.testing.assert_close(depth.flatten(), ((2.25 * expected_w[0] + 2.75 * expected_w[1]) / expected_w.sum()).view(1))


def test_sample_pdf_inverts_the_cdf():
    bins = torch.tensor([[0.0, 1.0, 2.0, 3.0]])
    uniform = sample_pdf(bins, torch.ones(1, 3), 7)
    torch.testing.assert_close(uniform, torch.linspace(0, 3, 7)[None], rtol=1e-4, atol=1e-4)
    peaked = sample_pdf(bins, torch.tensor([[0.0, 1.0, 0.0]]), 50, generator=torch.Generator().manual_seed(0))
    assert ((peaked >= 0.99) & (peaked <= 2.01)).float().mean() > 0.95  # almost all mass in the middle bin


def _sphere_generator(radius):
    """Tiny generator whose decoder turns channel 0 = |p|²/3 (x² + z² + y² spread over the planes) into a sphere."""
    gen = _tiny()
    r = gen.triplane_resolution
    centres = ((2 * torch.arange(r) + 1) / r - 1) * gen.rendering.box_warp / 2
    a = centres[None, :].expand(r, r)  # width coordinate (column)
    b = centres[:, None].expand(r, r)  # height coordinate (row)
    planes = torch.zeros(1, 3, gen.triplane_depth, gen.triplane_channels, r, r)
    planes[0, 0, :, 0] = a**2  # plane 0 (x, y): x²
    planes[0, 1, :, 0] = b**2  # plane 1 (x, z): z²
    planes[0, 2, :, 0] = a**2  # plane 2 (y, z): y²
    sharp, height, drop = 2000.0, 40.0, 50.0
    with torch.no_grad():
        fc0, fc2 = gen.decoder.net[0], gen.decoder.net[2]
        fc0.weight.zero_(), fc0.bias.fill_(-30.0), fc2.weight.zero_(), fc2.bias.zero_()
        fc0.weight[0, 0] = sharp / fc0.weight_gain  # h0 = softplus(sharp * (|p|²/3 - radius²/3))
        fc0.bias[0] = -sharp * radius**2 / 3
        fc2.weight[0, 0] = -drop / fc2.weight_gain  # sigma = height - drop * h0: dense inside, empty outside
        fc2.bias[0] = height
    return gen, Triplane(planes)


def test_render_of_a_sphere_gives_the_projected_disc():
    radius, n = 0.2, 24
    gen, tri = _sphere_generator(radius)
    cams = Camera.orbit(4, elevation_deg=10)  # front, side, back, side: the sphere looks the same from all
    tri4 = Triplane(tri.planes.expand(4, -1, -1, -1, -1, -1))
    ws = torch.zeros(4, gen.num_ws, gen.w_dim)
    image, depth, alpha = gen.render(tri4, ws, cams.to_label(), neural_rendering_resolution=n)
    assert image.shape == (4, 3, 64, 64) and depth.shape == alpha.shape == (4, 1, n, n)
    origins, dirs = sample_rays(cams.cam2world, cams.intrinsics, n)
    miss = torch.cross(origins, dirs, dim=-1).norm(dim=-1).view(4, 1, n, n)  # ray distance from the sphere centre
    inside, outside = miss < 0.7 * radius, miss > 1.3 * radius
    assert inside.sum() >= 4 * 40 and outside.sum() >= 4 * 200  # both regions well populated
    assert alpha[inside].min() > 0.95, alpha[inside].min()
    assert alpha[outside].max() < 0.05, alpha[outside].max()
    centre = miss.flatten(1).argmin(dim=1)
    front_depth = depth.flatten(1).gather(1, centre[:, None])
    torch.testing.assert_close(front_depth, torch.full_like(front_depth, 2.7 - radius), atol=0.04, rtol=0)


def test_render_is_deterministic_without_a_generator_and_seeded_with_one():
    gen = _tiny()
    cam = Camera.orbit(2)
    ws = gen.mapping(torch.randn(2, gen.z_dim, generator=torch.Generator().manual_seed(1)), cam.to_label())
    tri = gen.synthesize(ws)
    first, second = gen.render(tri, ws, cam.to_label()), gen.render(tri, ws, cam.to_label())
    for a, b in zip(first, second):
        torch.testing.assert_close(a, b, rtol=0, atol=0)
    seeded = [gen.render(tri, ws, cam.to_label(), generator=torch.Generator().manual_seed(3))[0] for _ in range(2)]
    torch.testing.assert_close(seeded[0], seeded[1], rtol=0, atol=0)
    assert not torch.equal(seeded[0], first[0])  # jittered samples differ from the evenly spaced ones


def test_render_triplane_without_importance_and_the_crop():
    gen, tri = _sphere_generator(0.2)
    cam = Camera.orbit(1)
    origins, dirs = sample_rays(cam.cam2world, cam.intrinsics, 8)
    alphas = {}
    for crop in (0.0, 0.1):
        opts = RenderingOptions(depth_resolution=64, depth_resolution_importance=0, triplane_crop=crop)
        feats, depth, alpha = render_triplane(tri, gen.decoder, origins, dirs, opts)
        assert feats.shape == (1, 64, gen.decoder.net[2].out_features - 1) and alpha.shape == (1, 64, 1)
        alphas[crop] = alpha.view(8, 8)
    assert alphas[0.1][3:5, 3:5].min() > 0.95  # the sphere, with coarse samples only
    # Outside the box the features fade to 0, which this decoder reads as "|p| = 0": dense. PanoHead's crop
    # (|x|, |z| > box/2 - 0.1 emptied) removes that phantom density, which the corner rays cross.
    assert alphas[0.0][0, 0] > 0.3 and alphas[0.1][0, 0] < 0.01
    with pytest.raises(ValueError, match="ray_start"):
        RenderingOptions(ray_start=3.0, ray_end=2.0)
    with pytest.raises(ValueError, match="triplane_crop"):
        RenderingOptions(triplane_crop=0.6)


# ------------------------------------------------------------------------------------------------ generator
def test_tiny_generator_shapes_and_determinism():
    gen = _tiny()
    cam = Camera.orbit(2)
    z = torch.randn(2, gen.z_dim, generator=torch.Generator().manual_seed(0))
    ws = gen.mapping(z, cam.to_label())
    assert ws.shape == (2, gen.num_ws, gen.w_dim) and gen.num_ws == 2 * int(math.log2(gen.triplane_resolution)) - 2
    torch.testing.assert_close(ws[:, 0], ws[:, -1])  # one w broadcast to every layer
    tri = gen.synthesize(ws)
    assert tri.planes.shape == (2, 3, 3, 8, 32, 32) and tri.ws is ws
    torch.testing.assert_close(gen.synthesize(ws).planes, tri.planes, rtol=0, atol=0)
    truncated = gen.mapping(z, cam.to_label(), truncation_psi=0.5)
    torch.testing.assert_close(truncated, 0.5 * ws + 0.5 * gen.backbone.mapping.w_avg)
    random_noise = gen.synthesize(ws, noise_mode="random", generator=torch.Generator().manual_seed(0))
    assert random_noise.planes.shape == tri.planes.shape
    feats, sigma = gen.sample(tri, torch.zeros(2, 5, 3))
    assert feats.shape == (2, 5, 8) and sigma.shape == (2, 5, 1)
    image, depth, alpha = gen.render(tri, ws, cam.to_label(), resolution=32)
    assert image.shape == (2, 3, 32, 32) and depth.shape == alpha.shape == (2, 1, 16, 16)
    assert image.min() >= 0 and image.max() <= 1 and alpha.min() >= 0 and alpha.max() <= 1 + 1e-5


def test_generator_input_errors():
    gen = _tiny()
    ws = torch.zeros(1, gen.num_ws, gen.w_dim)
    tri = gen.synthesize(ws)
    with pytest.raises(ValueError, match="`z`"):
        gen.mapping(torch.zeros(1, 5), torch.zeros(1, 25))
    with pytest.raises(ValueError, match="camera_label"):
        gen.mapping(torch.zeros(1, gen.z_dim), torch.zeros(1, 16))
    with pytest.raises(ValueError, match="`ws`"):
        gen.synthesize(torch.zeros(1, 3, gen.w_dim))
    with pytest.raises(ValueError, match="noise_mode"):
        gen.synthesize(ws, noise_mode="loud")
    with pytest.raises(ValueError, match="camera_label"):
        gen.render(tri, ws, torch.zeros(2, 25))
    with pytest.raises(ValueError, match="c_dim"):
        PanoHeadGenerator(c_dim=16)


# Keys and shapes of PanoHead's released G_ema (TriPlaneGenerator), as read from the official architecture.
OFFICIAL_KEYS = {
    "backbone.mapping.embed.weight": (512, 25),
    "backbone.mapping.fc0.weight": (512, 1024),
    "backbone.mapping.fc1.weight": (512, 512),
    "backbone.mapping.w_avg": (512,),
    "backbone.synthesis.b4.const": (512, 4, 4),
    "backbone.synthesis.b4.conv1.noise_const": (4, 4),
    "backbone.synthesis.b8.conv0.weight": (512, 512, 3, 3),
    "backbone.synthesis.b8.conv0.resample_filter": (4, 4),
    "backbone.synthesis.b128.conv0.weight": (256, 512, 3, 3),
    "backbone.synthesis.b256.conv1.affine.weight": (128, 512),
    "backbone.synthesis.b256.torgb.weight": (288, 128, 1, 1),
    "backbone.synthesis.b256.conv1.noise_strength": (),
    "decoder.net.0.weight": (64, 32),
    "decoder.net.2.weight": (33, 64),
    "torgb.weight": (3, 32, 1, 1),
    "torgb.affine.weight": (32, 512),
    "superresolution.block0.conv0.weight": (256, 32, 3, 3),
    "superresolution.block0.conv0.noise_const": (256, 256),
    "superresolution.block1.conv1.weight": (128, 128, 3, 3),
    "superresolution.block1.torgb.weight": (3, 128, 1, 1),
    "superresolution.block1.resample_filter": (4, 4),
    "bcg_synthesis.b4.const": (512, 4, 4),
    "bcg_synthesis.b128.conv1.weight": (128, 128, 3, 3),
    "bcg_synthesis.b128.torgb.weight": (32, 128, 1, 1),
    "t_mapping.embed.weight": (3, 25),
    "t_mapping.fc0.weight": (3, 515),
    "t_mapping.fc1.weight": (3, 3),
    "t_mapping.w_avg": (3,),
}


def test_official_config_mirrors_the_official_state_dict():
    with torch.device("meta"):
        gen = PanoHeadGenerator(**GENERATOR_PRESETS["official"])
    sd = gen.state_dict()
    for key, shape in OFFICIAL_KEYS.items():
        assert key in sd, key
        assert tuple(sd[key].shape) == shape, (key, tuple(sd[key].shape))
    prefixes = {k.split(".")[0] for k in sd}
    assert prefixes == {"backbone", "decoder", "torgb", "superresolution", "bcg_synthesis", "t_mapping"}
    assert gen.num_ws == 14 and gen.bcg_synthesis.num_ws == 12
    # Backbone synthesis, computed by hand from the official channel table (32768 // res capped at 512):
    # b4 3,041,057 + b8..b64 4 x 5,655,330 + b128 2,369,314 + b256 742,434.
    assert sum(p.numel() for p in gen.backbone.synthesis.parameters()) == 28_774_125
