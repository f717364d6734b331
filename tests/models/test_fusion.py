"""Symmetric UV fusion (paper §3.4, eq. 3-5) and the mirror maps it uses."""

from types import SimpleNamespace

import pytest
import torch
from torch import nn

from fhavatar.head.uv import UVLayout
from fhavatar.models.fusion import (
    FusionOutput,
    SymmetricUVFusion,
    WindowCrossAttention,
    downsample_mirror_index,
    flip_uv,
    horizontal_mirror_index,
    resolve_mirror_index,
)
from tests.head.symmetric_head import SymmetricHead

R = 16  # map size of the fusion tests
FIELDS = ("fused", "transformer", "occlusion", "mirrored_local")


def _hflip(x):
    return torch.flip(x, dims=[-1])


def _fusion(patch_size=1, use_transformer=True, use_symmetry=True, seed=0):
    torch.manual_seed(seed)
    fusion = SymmetricUVFusion(
        global_channels=8,
        local_channels=6,
        token_channels=8,
        patch_size=patch_size,
        num_layers=2,
        num_heads=2,
        window_size=3,
        use_transformer=use_transformer,
        use_symmetry=use_symmetry,
    )
    with torch.no_grad():  # non-trivial relative-position biases (zero at init)
        for m in fusion.modules():
            if isinstance(m, WindowCrossAttention):
                m.position_bias.normal_()
    return fusion


def _inputs(seed=0, b=2, mirror_symmetric_global=True):
    g = torch.Generator().manual_seed(seed)
    glob = torch.randn(b, 8, R, R, generator=g)
    if mirror_symmetric_global:
        glob = glob + _hflip(glob)
    local = torch.randn(b, 6, R, R, generator=g)
    vis = torch.rand(b, 1, R, R, generator=g) * (torch.rand(b, 1, R, R, generator=g) > 0.4)
    return glob, local, vis


def _symmetrize_kernels(module: nn.Module):
    """Make every spatial kernel left-right symmetric: then the module must be exactly mirror-equivariant."""
    with torch.no_grad():
        for m in module.modules():
            if isinstance(m, nn.Conv2d) and m.kernel_size[1] > 1:
                m.weight.copy_((m.weight + m.weight.flip(-1)) / 2)


# ------------------------------------------------------------------------------------------- mirror maps
def test_mirror_index_helpers_on_a_horizontal_mirror():
    idx = horizontal_mirror_index(R)
    assert idx.shape == (R, R, 2) and idx.dtype == torch.long
    x = torch.randn(2, 3, R, R)
    torch.testing.assert_close(flip_uv(x, idx), _hflip(x), rtol=0, atol=0)
    for factor in (1, 2, 4, 8):
        assert torch.equal(downsample_mirror_index(idx, factor), horizontal_mirror_index(R // factor))
    valid = torch.rand(R, R) > 0.3
    assert torch.equal(downsample_mirror_index(idx, 4, valid), horizontal_mirror_index(R // 4))


def test_resolve_mirror_index_accepts_layout_index_and_callable():
    layout = UVLayout(SymmetricHead(num_columns=16, num_rings=8), resolution=32)
    index, valid = resolve_mirror_index(layout, 32)
    assert torch.equal(index, layout.mirror_index) and torch.equal(valid, layout.valid)
    from_callable, none_valid = resolve_mirror_index(layout.flip, 32)
    assert torch.equal(from_callable, layout.mirror_index) and none_valid is None
    from_tensor, _ = resolve_mirror_index(layout.mirror_index.int(), 32)
    assert torch.equal(from_tensor, layout.mirror_index)
    # The symmetric head's atlas mirror is u -> 1-u: every scale is the horizontal flip.
    for factor in (2, 4):
        assert torch.equal(downsample_mirror_index(index, factor, valid), horizontal_mirror_index(32 // factor))
    x = torch.randn(1, 2, 32, 32)
    torch.testing.assert_close(flip_uv(x, index), layout.flip(x), rtol=0, atol=0)


def test_resolve_mirror_index_rejects_bad_inputs():
    with pytest.raises(ValueError, match="mirror"):
        resolve_mirror_index(horizontal_mirror_index(8), 16)
    with pytest.raises(ValueError, match="integer"):
        resolve_mirror_index(horizontal_mirror_index(R).float(), R)
    with pytest.raises(ValueError, match=r"\[0, 16\)"):
        resolve_mirror_index(horizontal_mirror_index(R) + 1, R)
    with pytest.raises(ValueError, match="mirror.mirror_index"):
        resolve_mirror_index(SimpleNamespace(mirror_index=torch.zeros(4, 4, 2, dtype=torch.long)), R)
    with pytest.raises(ValueError, match="callable"):
        resolve_mirror_index(lambda x: x[:, :1], R)
    with pytest.raises(TypeError, match="mirror"):
        resolve_mirror_index("flip", R)
    with pytest.raises(ValueError, match="factor"):
        downsample_mirror_index(horizontal_mirror_index(R), 3)


# ------------------------------------------------------------------------------------------- fusion
@pytest.mark.parametrize("patch_size", [1, 4])
def test_fusion_shapes_and_ranges(patch_size):
    fusion = _fusion(patch_size)
    glob, local, vis = _inputs()
    out = fusion(glob, local, vis, horizontal_mirror_index(R))
    assert isinstance(out, FusionOutput)
    assert out.fused.shape == out.transformer.shape == (2, 8, R, R)
    assert out.occlusion.shape == (2, 1, R, R) and out.mirrored_local.shape == (2, 6, R, R)
    assert all(torch.isfinite(getattr(out, f)).all() and getattr(out, f).dtype == torch.float32 for f in FIELDS)
    assert ((out.occlusion > 0) & (out.occlusion < 1)).all()


def test_fusion_implements_eq3_and_eq4():
    idx = horizontal_mirror_index(R)
    glob, local, vis = _inputs()
    out = _fusion(2)(glob, local, vis, idx)
    masked = out.occlusion * local * (vis > 0)  # eq. 3 (F_l holds visible texels only)
    expected = masked + flip_uv(masked, idx) * (1 - vis * out.occlusion)  # eq. 4
    torch.testing.assert_close(out.mirrored_local, expected)
    plain = _fusion(2, use_symmetry=False)(glob, local, vis, idx)
    torch.testing.assert_close(plain.mirrored_local, plain.occlusion * local * (vis > 0))


@pytest.mark.parametrize("patch_size, use_transformer", [(1, True), (2, True), (4, True), (2, False)])
def test_fusion_is_mirror_equivariant(patch_size, use_transformer):
    """With a mirror-symmetric F_g and symmetric kernels: fusion(flip(F_l), flip(M_v)) == flip(fusion(F_l, M_v))."""
    fusion = _fusion(patch_size, use_transformer)
    _symmetrize_kernels(fusion)
    idx = horizontal_mirror_index(R)
    glob, local, vis = _inputs(seed=1)
    out = fusion(glob, local, vis, idx)
    mirrored = fusion(glob, _hflip(local), _hflip(vis), idx)
    for f in FIELDS:
        torch.testing.assert_close(getattr(mirrored, f), _hflip(getattr(out, f)), rtol=1e-4, atol=1e-5)
    # Not trivially symmetric: the outputs themselves are not mirror images of themselves.
    assert not torch.allclose(out.fused, _hflip(out.fused), atol=1e-3)


@pytest.mark.parametrize("use_symmetry", [True, False])
def test_invisible_texels_do_not_matter(use_symmetry):
    fusion = _fusion(2, use_symmetry=use_symmetry)
    idx = horizontal_mirror_index(R)
    glob, local, vis = _inputs(seed=2)
    garbage = local + 100 * torch.randn_like(local) * (vis == 0)
    a, b = fusion(glob, local, vis, idx), fusion(glob, garbage, vis, idx)
    for f in FIELDS:
        torch.testing.assert_close(getattr(a, f), getattr(b, f), rtol=0, atol=0)
    # ...while visible texels do.
    c = fusion(glob, local + (vis > 0) * torch.randn_like(local), vis, idx)
    assert not torch.allclose(a.fused, c.fused)


def test_symmetric_keys_reach_the_hidden_side():
    """A query whose own window is invisible still gets local detail through the mirrored window."""
    idx = horizontal_mirror_index(R)
    glob, local, _ = _inputs(seed=3)
    vis = torch.zeros(2, 1, R, R)
    vis[..., : R // 2] = 1  # left half visible, right half hidden
    right = (..., slice(R // 2 + 6, None))  # beyond the receptive field (2 x (window + FFN conv) + unpatch conv)
    for use_symmetry, should_change in ((True, True), (False, False)):
        fusion = _fusion(1, use_symmetry=use_symmetry)
        a = fusion(glob, local, vis, idx).transformer
        b = fusion(glob, local + vis * torch.randn_like(local), vis, idx).transformer
        changed = not torch.allclose(a[right], b[right])
        assert changed == should_change


def test_no_visible_key_gives_finite_outputs_and_gradients():
    fusion = _fusion(2)
    glob, local, _ = _inputs()
    glob.requires_grad_(True)
    out = fusion(glob, local, torch.zeros(2, 1, R, R), horizontal_mirror_index(R))
    assert torch.isfinite(out.fused).all()
    torch.testing.assert_close(out.mirrored_local, torch.zeros_like(out.mirrored_local))
    out.fused.sum().backward()
    assert torch.isfinite(glob.grad).all()


def test_fusion_gradients_reach_every_parameter():
    fusion = _fusion(2)
    glob, local, vis = _inputs()
    out = fusion(glob, local, vis, horizontal_mirror_index(R))
    (out.fused.square().mean() + out.occlusion.mean()).backward()
    for name, param in fusion.named_parameters():
        assert param.grad is not None and torch.isfinite(param.grad).all(), name
        assert param.grad.abs().sum() > 0, name


def test_coarsest_scale_only_builds_the_transformer():
    torch.manual_seed(0)
    fusion = SymmetricUVFusion(8, 6, 8, 1, num_heads=2, window_size=3, fuse_local=False)
    assert fusion.occlusion_head is None and fusion.out is None
    out = fusion(*_inputs(), horizontal_mirror_index(R))
    assert out.transformer.shape == (2, 8, R, R) and out.fused is None and out.occlusion is None


def test_fusion_rejects_mismatched_sizes():
    fusion = _fusion(4)
    glob, local, vis = _inputs()
    with pytest.raises(ValueError, match="patch_size"):
        fusion(glob[..., :10, :10], local[..., :10, :10], vis[..., :10, :10], horizontal_mirror_index(10))
    with pytest.raises(ValueError, match="visibility"):
        fusion(glob, local, vis[:, :, :8], horizontal_mirror_index(R))
    with pytest.raises(ValueError, match="num_heads"):
        SymmetricUVFusion(8, 6, 8, 1, num_heads=3)
    with pytest.raises(ValueError, match="window_size"):
        SymmetricUVFusion(8, 6, 8, 1, num_heads=2, window_size=4)
