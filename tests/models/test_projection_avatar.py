"""ProjectionAvatarModel on a synthetic photo: fidelity, closed surface, mirroring, defaults, save/load."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from fhavatar.avatar import Avatar
from fhavatar.head.open_head import OpenHead
from fhavatar.head.uv import UVLayout
from fhavatar.models.attributes import UVAttributes
from fhavatar.models.projection_avatar import ProjectionAvatarModel, _source_gaussians, _with_colors
from fhavatar.models.source_view import SourceView
from fhavatar.rendering import Camera, render_gaussians
from fhavatar.rendering.gaussians import quat_to_rotmat
from fhavatar.rendering.visibility import mesh_depth, project_texels, texel_facing, texel_visibility

K = 64
PHOTO = 128
SKIN = (0.86, 0.66, 0.55)
HAIR = (0.30, 0.19, 0.11)
BACKGROUND = (0.35, 0.50, 0.75)


def synthetic_texture(layout: UVLayout, vertices: torch.Tensor, features: bool = False) -> torch.Tensor:
    """A colour map `[1, 3, K, K]` for a head: skin and hair by region, smooth variation and baked light.

    `features=True` adds brows, dark eyes and lips (sharper than the atlas of a small K resolves).
    """
    pos = layout.position_map(vertices)[0]
    x, y, z = pos
    region = layout.region
    skin = torch.tensor(SKIN)[:, None, None] * (1 + 0.06 * torch.sin(14 * x) * torch.cos(11 * y))
    hair = torch.tensor(HAIR)[:, None, None] * (1 + 0.12 * torch.sin(9 * y + 6 * x))
    col = skin.clone()
    scalp = region("scalp")
    col[:, scalp] = hair[:, scalp]
    neck = region("neck") & ~scalp & ~region("face")
    col[:, neck] = col[:, neck] * 0.88
    if features:
        eyes, mouth = region("eyes"), region("mouth")
        eye_y, eye_x = y[eyes].mean(), x[eyes].abs().mean()
        brow = torch.exp(-(((y - eye_y - 0.035) / 0.008) ** 2) - (((x.abs() - eye_x) / 0.03) ** 4))
        brow = brow * region("face")
        col = col * (1 - brow) + torch.tensor([0.24, 0.15, 0.09])[:, None, None] * brow
        col[:, eyes] = torch.tensor([0.18, 0.13, 0.10])[:, None]
        col[:, mouth] = torch.tensor([0.68, 0.32, 0.33])[:, None]
    # Baked Lambert light from the upper front right (asymmetric on purpose: mirroring copies it).
    normal = F.normalize(pos - torch.tensor([0.0, -0.02, -0.02])[:, None, None], dim=0)
    light = F.normalize(torch.tensor([0.5, 0.5, 0.7]), dim=0)
    shade = 0.7 + 0.3 * (normal * light[:, None, None]).sum(0).clamp(min=0)
    return (col * shade * layout.valid)[None].clamp(0, 1)


def synthetic_photo(model: ProjectionAvatarModel, head, layout: UVLayout, params, camera: Camera, size: int,
                    features: bool = False):
    """(photo `[1, 3, size, size]`, ground-truth avatar, its texture) of a textured head seen by `camera`."""
    vertices = head(params)
    geometry = model(SourceView(torch.zeros(1, 3, size, size), camera, vertices, layout))
    texture = synthetic_texture(layout, vertices, features)
    truth = UVAttributes(colors=texture, rotations=geometry.rotations, scales=geometry.scales,
                         opacities=geometry.opacities, offsets=geometry.offsets,
                         refined_positions=geometry.refined_positions)
    avatar = Avatar.from_attributes(truth, layout, head, params)
    photo = render_gaussians(avatar.gaussians(), camera, size, size, background=torch.tensor(BACKGROUND)).image
    return photo, avatar, texture


@pytest.fixture(scope="module")
def scene():
    head = OpenHead()
    layout = UVLayout(head, resolution=K)
    params = head.neutral_params(1)
    model = ProjectionAvatarModel()
    return head, layout, params, model


@pytest.fixture(scope="module")
def front_photo(scene):
    """(photo, texture) of the textured head seen from the front."""
    head, layout, params, model = scene
    photo, _, texture = synthetic_photo(model, head, layout, params, _front(), PHOTO)
    return photo, texture


def _front() -> Camera:
    return Camera.look_at([0.0, 0.0, 2.7])


def _yaw(degrees: float) -> Camera:
    a = math.radians(degrees)
    return Camera.look_at([2.7 * math.sin(a), 0.0, 2.7 * math.cos(a)])


def psnr(a: torch.Tensor, b: torch.Tensor, mask: torch.Tensor) -> float:
    mse = ((a - b) ** 2)[:, mask].mean().item()
    return -10 * math.log10(max(mse, 1e-12))


def test_reconstruction_fidelity_and_closed_surface(scene, front_photo):
    head, layout, params, model = scene
    camera = _front()
    photo, _ = front_photo
    attributes = model(SourceView(photo, camera, head(params), layout))
    attributes.validate()
    avatar = Avatar.from_attributes(attributes, layout, head, params)
    gaussians = avatar.gaussians()
    face = layout.sample(layout.region("face")[None, None].float())[0].T  # [M, 1]
    out = render_gaussians(gaussians, camera, PHOTO, PHOTO, background=torch.tensor(BACKGROUND), features=face)
    inside = (out.features[0, 0] > 0.5) & (out.alpha[0, 0] > 0.99)
    assert inside.sum() > 0.1 * PHOTO**2
    assert psnr(out.image[0], photo[0], inside) >= 25.0

    # Closed surface: opaque everywhere inside the mesh silhouette, from 8 orbit angles.
    orbit = Camera.orbit(8, elevation_deg=10)
    alpha = render_gaussians(gaussians, orbit, PHOTO, PHOTO).alpha[:, 0]
    silhouette = torch.isfinite(mesh_depth(head(params), head.faces, orbit, PHOTO, PHOTO))[:, 0]
    silhouette = -F.max_pool2d(-silhouette[:, None].float(), 3, 1, 1)[:, 0] > 0  # 1 px inside the contour
    for i in range(8):
        assert alpha[i][silhouette[i]].min() >= 0.99, f"hole in orbit view {i}"


def test_hidden_side_mirrors_the_visible_side(scene):
    head, layout, params, model = scene
    camera = _yaw(75.0)  # sees the subject's left side (x > 0)
    photo, _, texture = synthetic_photo(model, head, layout, params, camera, PHOTO)
    vertices = head(params)
    colors = model(SourceView(photo, camera, vertices, layout)).colors
    cfg = model.config
    visible = texel_visibility(layout, vertices, camera, cfg.render_resolution, cfg.render_resolution,
                               cfg.depth_tolerance, 0.5, cfg.silhouette_margin)[0, 0] > 0
    deep = -F.max_pool2d(-visible[None, None].float(), 5, 1, 2)[0, 0] > 0  # away from the seams
    hidden = layout.valid & ~visible & layout.flip(deep[None, None].float())[0, 0].bool() & layout.region("face")
    assert hidden.sum() > 50
    # A hidden texel takes its mirror's reconstructed colour, which is close to the mirror's true colour.
    assert (colors - layout.flip(colors))[0][:, hidden].abs().mean() < 0.02
    assert (colors - layout.flip(texture))[0][:, hidden].abs().mean() < 0.05


def test_region_defaults_come_from_the_photo(scene, front_photo):
    head, layout, params, _ = scene
    model = ProjectionAvatarModel(synthesize_unseen=False)  # the flat region defaults under the synthesis
    camera = _front()
    photo, texture = front_photo
    vertices = head(params)
    colors = model(SourceView(photo, camera, vertices, layout)).colors[0]
    z = layout.position_map(vertices)[0, 2]
    back_scalp = layout.region("scalp") & (z < -0.1)
    hair_truth = texture[0][:, layout.region("scalp") & (z > 0)].median(1).values
    assert (colors[:, back_scalp].median(1).values - hair_truth).abs().max() < 0.06
    back_neck = layout.region("neck") & ~layout.region("scalp") & (z < -0.05)
    skin = colors[:, back_neck].median(1).values
    assert (skin - torch.tensor(SKIN) * 0.85 * 0.85).abs().max() < 0.1  # neck shade x light
    assert colors[:, back_scalp].mean() < colors[:, back_neck].mean()  # hair darker than skin


def test_foreground_mask_excludes_background(scene, front_photo):
    head, layout, params, model = scene
    camera = _front()
    photo, _ = front_photo
    vertices = head(params)
    colors = model(SourceView(photo, camera, vertices, layout, mask=torch.zeros(1, 1, PHOTO, PHOTO))).colors[0]
    face = layout.region("face") & ~layout.region("eyes") & ~layout.region("mouth")
    # Nothing is seen, so the face takes the configured skin colour.
    assert torch.allclose(colors[:, face].median(1).values, torch.tensor(model.config.skin_color), atol=0.02)
    full = model(SourceView(photo, camera, vertices, layout, mask=torch.ones(1, 1, PHOTO, PHOTO))).colors
    torch.testing.assert_close(full, model(SourceView(photo, camera, vertices, layout)).colors)


def test_geometry_is_neutral_and_batched(scene):
    head, layout, params, model = scene
    vertices = head(params)
    image = torch.rand(2, 3, 48, 64, generator=torch.Generator().manual_seed(0))
    cameras = Camera.cat([_front(), _yaw(30.0)])
    out = model(SourceView(image, cameras, vertices.expand(2, -1, -1), layout))
    out.validate()
    assert out.colors.shape == (2, 3, K, K)
    assert torch.all(out.rotations[:, 0] == 1) and torch.all(out.rotations[:, 1:] == 0)
    assert torch.all(out.offsets == 0)
    assert torch.allclose(out.opacities, torch.full_like(out.opacities, 0.98))
    texel = layout.scale_map(vertices)[0, 0]
    valid = layout.valid
    face = layout.region("face") | layout.region("eyes") | layout.region("mouth")
    expected = torch.where(face, model.config.face_tangent_scale, model.config.tangent_scale) * texel
    # along v (bitangent) the region widths; along u the hair's splats are narrow strands
    torch.testing.assert_close(out.scales[0, 1][valid], expected[valid])
    strands = layout.region("scalp") & ~face & valid
    assert strands.any()
    torch.testing.assert_close(out.scales[0, 0][strands], model.config.strand_scale * texel[strands])
    torch.testing.assert_close(out.scales[0, 0][valid & ~strands], expected[valid & ~strands])
    assert model.config.face_tangent_scale < model.config.tangent_scale  # sharper on the face
    torch.testing.assert_close(out.scales[0, 2][valid], model.config.normal_scale * texel[valid])
    assert out.scales.min() > 0  # gutters filled: bilinear sampling never reads a zero scale
    torch.testing.assert_close(out.refined_positions, layout.position_map(vertices.expand(2, -1, -1)))
    single = model(SourceView(image[1:], cameras[1], vertices, layout))
    torch.testing.assert_close(out.colors[1:], single.colors)


def test_save_pretrained_round_trip(scene, tmp_path):
    head, layout, params, _ = scene
    model = ProjectionAvatarModel(tangent_scale=1.3, opacity=0.95, hair_color=[0.1, 0.1, 0.1])
    model.save_pretrained(tmp_path / "projection")
    loaded = ProjectionAvatarModel.from_pretrained(tmp_path / "projection")
    public = lambda config: {k: list(v) if isinstance(v, (list, tuple)) else v  # noqa: E731
                             for k, v in config.items() if not k.startswith("_")}
    assert public(loaded.config) == public(model.config)
    assert (tmp_path / "projection" / "diffusion_pytorch_model.safetensors").is_file()
    image = torch.rand(1, 3, 64, 64, generator=torch.Generator().manual_seed(1))
    a = model(SourceView(image, _front(), head(params), layout))
    b = loaded(SourceView(image, _front(), head(params), layout))
    for name in ("colors", "scales", "opacities"):
        torch.testing.assert_close(getattr(a, name), getattr(b, name))


@pytest.mark.parametrize(
    "kwargs",
    [{"render_resolution": 8}, {"opacity": 1.5}, {"tangent_scale": 0}, {"min_cosine": 1.0},
     {"hair_color": (1, 2)}, {"silhouette_margin": -1}, {"refine_steps": -1}, {"refine_steps": 2.0},
     {"refine_damping": 0.0}, {"refine_min_alpha": 1.5}, {"edge_feather": 0.5}],
)
def test_config_validation(kwargs):
    with pytest.raises(ValueError, match=next(iter(kwargs))):
        ProjectionAvatarModel(**kwargs)


def test_input_validation(scene):
    head, layout, params, model = scene
    vertices = head(params)
    with pytest.raises(ValueError, match="image"):
        model(SourceView(torch.zeros(1, 4, 32, 32), _front(), vertices, layout))
    with pytest.raises(ValueError, match="vertices"):
        model(SourceView(torch.zeros(1, 3, 32, 32), _front(), vertices[:, :10], layout))
    with pytest.raises(ValueError, match="mask"):
        model(SourceView(torch.zeros(1, 3, 32, 32), _front(), vertices, layout, mask=torch.zeros(1, 1, 16, 16)))
    with pytest.raises(TypeError, match="layout"):
        model(SourceView(torch.zeros(1, 3, 32, 32), _front(), vertices, None))
    with pytest.raises(TypeError, match="camera"):
        model(SourceView(torch.zeros(1, 3, 32, 32), None, vertices, layout))
    with pytest.raises(TypeError, match="SourceView"):
        model(torch.zeros(1, 3, 32, 32))


def test_seen_texels_keep_the_photo_colour(scene):
    """Without refinement a texel seen head-on (cosine >= `full_cosine`, and at least its mirror's) holds the
    bilinear photo sample at its projection, unblended: seams are feathered into the unseen side only."""
    head, layout, params, _ = scene
    model = ProjectionAvatarModel(refine_steps=0)
    camera, vertices = _yaw(30.0), head(params)
    image = torch.rand(1, 3, PHOTO, PHOTO, generator=torch.Generator().manual_seed(3))
    colors = model(SourceView(image, camera, vertices, layout)).colors[0]
    cfg = model.config
    visible = texel_visibility(layout, vertices, camera, cfg.render_resolution, cfg.render_resolution,
                               cfg.depth_tolerance, cfg.min_cosine, cfg.silhouette_margin)[0, 0] > 0
    cosine = texel_facing(layout, vertices, camera)[0] * visible
    head_on = visible & (cosine >= cfg.full_cosine) & (cosine >= layout.flip(cosine[None, None])[0, 0])
    assert head_on.sum() > 0.1 * layout.valid.sum()
    uv, _ = project_texels(layout, vertices, camera, PHOTO, PHOTO)
    # Independent bilinear sample: pixel centres at integers + 0.5, the four neighbours weighted by distance.
    x, y = uv[0, head_on].T - 0.5
    x0, y0 = x.floor().long(), y.floor().long()
    fx, fy = x - x0, y - y0
    pixel = lambda r, c: image[0][:, r.clamp(0, PHOTO - 1), c.clamp(0, PHOTO - 1)]  # noqa: E731
    expected = (pixel(y0, x0) * (1 - fx) * (1 - fy) + pixel(y0, x0 + 1) * fx * (1 - fy)
                + pixel(y0 + 1, x0) * (1 - fx) * fy + pixel(y0 + 1, x0 + 1) * fx * fy)
    torch.testing.assert_close(colors[:, head_on], expected, atol=1e-5, rtol=0)
    # Grazing seen texels (cosine below `full_cosine`) are blended toward their fallback, not kept.
    grazing = visible & (cosine < 0.5 * (cfg.min_cosine + cfg.full_cosine)) & (cosine > cfg.min_cosine)
    uv_g = uv[0, grazing].T / PHOTO * 2 - 1
    sampled = F.grid_sample(image, uv_g.T[None, None], align_corners=False)[0, :, 0]
    assert (colors[:, grazing] - sampled).abs().mean() > 0.05


def test_source_gaussians_match_the_bound_avatar(scene):
    """The refinement renders the Gaussians exactly where `Avatar` puts them (same means, covariances, colours)."""
    head, layout, params, _ = scene
    model = ProjectionAvatarModel(refine_steps=0)
    vertices = head(params)
    attributes = model(SourceView(torch.rand(1, 3, 64, 64, generator=torch.Generator().manual_seed(4)), _front(), vertices, layout))
    truth = Avatar.from_attributes(attributes, layout, head, params).gaussians()
    ours = _source_gaussians(layout, vertices, attributes.scales, attributes.opacities, attributes.colors)
    torch.testing.assert_close(ours.means, truth.means, atol=1e-6, rtol=0)
    torch.testing.assert_close(ours.colors, truth.colors)
    torch.testing.assert_close(ours.opacities, truth.opacities)

    def covariance(g):
        r = quat_to_rotmat(g.quats)
        return r @ torch.diag_embed(g.scales.square()) @ r.transpose(1, 2)

    scale = truth.scales.amax(1).square()[:, None, None]
    torch.testing.assert_close(covariance(ours) / scale, covariance(truth) / scale, atol=1e-5, rtol=0)
    # The refinement's shortcut: the geometry once, the colours swapped in (the same tensors, the same gradients)
    colors = attributes.colors.clone().requires_grad_(True)
    swapped = _with_colors(layout, _source_gaussians(layout, vertices, attributes.scales, attributes.opacities), colors)
    for name in ("means", "quats", "scales", "opacities", "colors"):
        assert torch.equal(getattr(swapped, name), getattr(ours, name)), name
    swapped.colors.sum().backward()
    assert colors.grad is not None and float(colors.grad.sum()) == pytest.approx(float(len(ours.colors)) * 3, rel=1e-6)


def test_colour_refinement_fits_the_photo(scene):
    """The damped Jacobi steps decrease the photometric error of the source view monotonically and sharpen it."""
    head, layout, params, _ = scene
    camera = _yaw(20.0)
    photo, _, _ = synthetic_photo(ProjectionAvatarModel(), head, layout, params, camera, PHOTO, features=True)
    vertices = head(params)
    errors = []
    for steps in (0, 1, 3):
        model = ProjectionAvatarModel(refine_steps=steps)
        attributes = model(SourceView(photo, camera, vertices, layout))
        out = render_gaussians(Avatar.from_attributes(attributes, layout, head, params).gaussians(), camera, PHOTO, PHOTO,
                               background=torch.tensor(BACKGROUND))
        inside = out.alpha[0, 0] > 0.99
        errors.append(((out.image[0] - photo[0]) ** 2)[:, inside].mean().item())
    assert errors[0] > errors[1] > errors[2]
    assert -10 * math.log10(errors[2]) > -10 * math.log10(errors[0]) + 2.0  # at least 2 dB sharper


def test_seam_feathering_weights_colours_by_confidence(scene):
    """An unseen texel next to the seen area takes the seen colours weighted by their confidence: a barely trusted
    rim texel (here green, confidence 0.01) does not tint it, while confident (red) ones do."""
    _, layout, _, _ = scene
    red, green, blue = torch.tensor([1.0, 0, 0]), torch.tensor([0, 1.0, 0]), torch.tensor([0, 0, 1.0])
    block = torch.zeros(K, K, dtype=torch.bool)
    block[2:14, 0:8] = True
    assert layout.valid[2:14, 0:16].all()
    projected = red[None, :, None, None].expand(1, 3, K, K).clone()
    confidence = block.float()[None, None].clone()
    rim = torch.zeros(K, K, dtype=torch.bool)
    rim[2:14:2, 7] = True  # every other texel of the seen area's right border
    projected[0, :, rim] = green[:, None]
    confidence[0, 0, rim] = 0.01
    defaults = blue[None, :, None, None].expand(1, 3, K, K)
    colors = ProjectionAvatarModel._compose(layout, projected, block[None, None], confidence, defaults, rings=3)[0]
    beside = colors[:, 4:12, 8]  # the unseen column next to the rim
    assert (beside[1] < 0.03).all()  # no green
    assert (beside[0] > 0.2).all() and (beside[2] > 0.2).all()  # red feathered over the blue default
    torch.testing.assert_close(colors[:, 2:14, 0:6], projected[0, :, 2:14, 0:6])  # seen texels keep their colour


def test_edge_feather_discounts_colours_at_the_outline(scene, front_photo):
    """Photo pixels just inside the mask's outline (painted green here: a rim mixing head and background) reach
    far fewer texels with `edge_feather`; colours away from the outline are the same either way."""
    head, layout, params, _ = scene
    camera, vertices = _front(), head(params)
    photo, _ = front_photo
    inside = torch.isfinite(mesh_depth(vertices, head.faces, camera, PHOTO, PHOTO))
    eroded = -F.max_pool2d(-inside.float(), 7, 1, 3) > 0.5  # 3 px inside the outline
    rim = inside & ~eroded
    image = torch.where(rim, torch.tensor([0.0, 1.0, 0.0])[None, :, None, None], photo)
    mask = inside.float()

    def greenness(colors):  # texels whose colour is mostly the rim's green
        return int(((colors[0, 1] - colors[0, [0, 2]].max(0).values) > 0.3).sum())

    plain = ProjectionAvatarModel(refine_steps=0, edge_feather=0.0)(SourceView(image, camera, vertices, layout, mask=mask)).colors
    feathered = ProjectionAvatarModel(refine_steps=0, edge_feather=0.1)(SourceView(image, camera, vertices, layout, mask=mask))  # 13 px
    assert greenness(plain) > 20
    assert greenness(feathered.colors) < 0.3 * greenness(plain)
    # Texels projecting well inside (beyond the feather) keep the same colour.
    uv, _ = project_texels(layout, vertices, camera, PHOTO, PHOTO)
    deep = -F.max_pool2d(-inside.float(), 2 * 15 + 1, 1, 15)[0, 0] > 0.5
    cols, rows = uv[0, ..., 0].long().clamp(0, PHOTO - 1), uv[0, ..., 1].long().clamp(0, PHOTO - 1)
    facing = texel_facing(layout, vertices, camera)[0] > 0.6
    core = deep[rows, cols] & facing & layout.region("face")
    assert core.sum() > 50
    torch.testing.assert_close(feathered.colors[0][:, core], plain[0][:, core])


def test_the_unseen_back_is_textured_from_the_seen_hair(scene, front_photo):
    """With synthesis the back scalp copies the seen hair's texture (not one flat colour, and never the face)."""
    head, layout, params, model = scene
    photo, texture = front_photo
    vertices = head(params)
    flat = ProjectionAvatarModel(synthesize_unseen=False)(SourceView(photo, _front(), vertices, layout)).colors[0]
    colors = model(SourceView(photo, _front(), vertices, layout)).colors[0]
    z = layout.position_map(vertices)[0, 2]
    back_scalp = layout.region("scalp") & (z < -0.1)
    assert colors[:, back_scalp].std(1).mean() > 2 * flat[:, back_scalp].std(1).mean()
    hair_truth = texture[0][:, layout.region("scalp") & (z > 0)].median(1).values
    assert (colors[:, back_scalp].median(1).values - hair_truth).abs().max() < 0.08
