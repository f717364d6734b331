import pytest
import torch

from fhavatar.rendering import Gaussians, quat_to_rotmat
from fhavatar.rendering.synthetic import synthetic_head


def _gaussians(n=6, channels=3):
    g = torch.Generator().manual_seed(0)
    return Gaussians(
        means=torch.randn(n, 3, generator=g), quats=torch.randn(n, 4, generator=g),
        scales=torch.rand(n, 3, generator=g) + 0.01, opacities=torch.rand(n, generator=g),
        colors=torch.rand(n, channels, generator=g),
    )


def test_container_operations():
    gs = _gaussians()
    assert len(gs) == 6 and gs.num_channels == 3
    assert len(gs[2:5]) == 3 and len(gs[0]) == 1 and len(gs[gs.opacities > 2]) == 0
    both = Gaussians.cat([gs[:2], gs[2:]])
    torch.testing.assert_close(both.means, gs.means)
    assert gs.to(torch.float64).means.dtype == torch.float64
    leaf = gs.means.clone().requires_grad_()
    assert not Gaussians(leaf, gs.quats, gs.scales, gs.opacities, gs.colors).detach().means.requires_grad


def test_covariance_is_rotated_scale():
    gs = _gaussians()
    cov = gs.covariances()
    rot = quat_to_rotmat(gs.quats)
    torch.testing.assert_close(rot @ rot.transpose(1, 2), torch.eye(3).expand(6, 3, 3), atol=1e-5, rtol=0)
    torch.testing.assert_close(torch.det(rot), torch.ones(6), atol=1e-5, rtol=0)
    eig = torch.linalg.eigvalsh(cov.double()).sort(-1).values
    torch.testing.assert_close(eig, (gs.scales.double() ** 2).sort(-1).values, atol=1e-6, rtol=1e-4)
    # a quarter turn about z maps x to y
    q = torch.tensor([[2**-0.5, 0, 0, 2**-0.5]])
    torch.testing.assert_close(quat_to_rotmat(q)[0] @ torch.tensor([1.0, 0, 0]), torch.tensor([0.0, 1, 0]), atol=1e-6, rtol=0)


@pytest.mark.parametrize(
    "field, value, message",
    [
        ("means", torch.zeros(6, 2), r"means must have shape \[N, 3\]"),
        ("quats", torch.zeros(5, 4), r"quats must have shape \[6, 4\]"),
        ("opacities", torch.zeros(6, 1), r"opacities must have shape \[6\]"),
        ("colors", torch.zeros(4, 3), "colors must have shape"),
        ("scales", torch.zeros(6, 3), "scales must be positive"),
        ("opacities", torch.full((6,), -0.1), r"opacities must lie in \[0, 1\]"),
        ("colors", torch.full((6, 3), float("nan")), "colors must be finite"),
        ("means", torch.zeros(6, 3, dtype=torch.long), "floating-point"),
    ],
)
def test_validation_names_the_field(field, value, message):
    gs = _gaussians()
    kwargs = {k: getattr(gs, k) for k in ("means", "quats", "scales", "opacities", "colors")}
    kwargs[field] = value
    with pytest.raises(ValueError, match=message):
        Gaussians(**kwargs)


def test_synthetic_head_is_deterministic_and_head_sized():
    a = synthetic_head(2000, generator=torch.Generator().manual_seed(3))
    b = synthetic_head(2000, generator=torch.Generator().manual_seed(3))
    torch.testing.assert_close(a.means, b.means)
    assert len(a) == 2000
    lo, hi = a.means.min(0).values, a.means.max(0).values
    assert (hi - lo)[1] > 0.5 and (hi - lo)[0] < 0.5  # taller (head + neck) than wide, in head-space units
    assert a.means[:, 2].max() > 0.2  # the face (nose) points toward +z
    with pytest.raises(ValueError, match="num_gaussians"):
        synthetic_head(3)


def test_values_are_checked_once_until_a_field_changes(monkeypatch):
    import fhavatar.rendering.gaussians as module

    calls = []
    compiled = module.values_look_valid
    monkeypatch.setattr(module, "values_look_valid", lambda *arrays: calls.append(1) or compiled(*arrays))
    gs = _gaussians()
    assert len(calls) == 1
    gs.validate()  # a render validates again: same tensors, unchanged, so no second pass
    assert len(calls) == 1
    gs.opacities[0] = 1.5  # in place: checked again, and refused
    with pytest.raises(ValueError, match="opacities must lie in"):
        gs.validate()
    gs.opacities = torch.rand(6)  # replaced: checked again, and accepted
    gs.validate()
    gs.validate()
    assert len(calls) == 3
    gs.means[:, 0].fill_(float("nan"))  # through a view: the version counter is shared
    with pytest.raises(ValueError, match="means must be finite"):
        gs.validate()
    checked = Gaussians.checked(means=torch.zeros(2, 3), quats=torch.tensor([[1.0, 0, 0, 0]] * 2),
                                scales=torch.full((2, 3), 0.01), opacities=torch.ones(2), colors=torch.ones(2, 3))
    checked.validate()
    assert len(calls) == 4  # `checked` trusts its caller until something changes
    checked.scales.zero_()
    with pytest.raises(ValueError, match="scales must be positive"):
        checked.validate()
    with torch.inference_mode():  # no version counters: checked every time
        inference = _gaussians()
        inference.validate()
        inference.scales[0, 0] = -1.0
        with pytest.raises(ValueError, match="scales must be positive"):
            inference.validate()
