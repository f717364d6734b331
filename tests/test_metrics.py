"""Metrics against hand-computed values and independent reference computations (tiny inputs, CPU)."""

from __future__ import annotations

import math
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import save_file

from fhavatar.metrics import (
    ARCFACE_TEMPLATE_112,
    IResNet,
    aed,
    akd,
    apd,
    cosine_similarity,
    five_points_from_mediapipe,
    load_identity_network,
    load_lpips,
    psnr,
    ssim,
)
from fhavatar.metrics.identity import aligned_crop_five_points, similarity_to_template
from fhavatar.metrics.perceptual import hub_backbone_path

ASTRONAUT = Path(__file__).resolve().parents[1] / "examples" / "astronaut.png"


# ---------------------------------------------------------------------------------------------- PSNR
def test_psnr_constant_offset_is_20db_and_identical_is_inf():
    x = torch.full((2, 3, 8, 8), 0.5)
    torch.testing.assert_close(psnr(x, x + 0.1), torch.full((2,), 20.0))  # MSE 0.01 -> 10 log10(100)
    assert torch.isinf(psnr(x, x)).all()
    # data_range 255 with the same relative error: 10 log10(255² / 25.5²) = 20 dB.
    torch.testing.assert_close(psnr(x * 255, x * 255 + 25.5, data_range=255.0), torch.full((2,), 20.0))


def test_masked_psnr_ignores_pixels_outside_the_mask():
    x = torch.zeros(1, 3, 4, 4)
    y = x.clone()
    y[..., :, 2:] = 0.2  # error only in the right half
    mask = torch.zeros(1, 1, 4, 4)
    mask[..., :, :2] = 1.0
    assert torch.isinf(psnr(x, y, mask=mask)).all()
    expected = 10 * math.log10(1 / 0.04)  # the right half alone: MSE 0.04
    torch.testing.assert_close(psnr(x, y, mask=1 - mask), torch.tensor([expected]))
    # Whole image: MSE = 0.02.
    torch.testing.assert_close(psnr(x, y), torch.tensor([10 * math.log10(1 / 0.02)]))
    with pytest.raises(ValueError, match="mask must select at least one pixel"):
        psnr(x, y, mask=torch.zeros(1, 1, 4, 4))
    with pytest.raises(ValueError, match=r"mask must have shape \[B, 1, H, W\]"):
        psnr(x, y, mask=torch.ones(1, 1, 3, 4))


def test_image_metrics_reject_bad_inputs_with_teaching_errors():
    with pytest.raises(ValueError, match=r"x and y must have the same shape"):
        psnr(torch.zeros(1, 3, 4, 4), torch.zeros(1, 3, 4, 5))
    with pytest.raises(ValueError, match=r"x must have shape \[B, 3, H, W\], got \(3, 4, 4\)"):
        psnr(torch.zeros(3, 4, 4), torch.zeros(3, 4, 4))
    with pytest.raises(TypeError, match="float tensor"):
        psnr(torch.zeros(1, 3, 4, 4, dtype=torch.uint8), torch.zeros(1, 3, 4, 4, dtype=torch.uint8))
    with pytest.raises(TypeError, match="torch.Tensor"):
        psnr(np.zeros((1, 3, 4, 4)), torch.zeros(1, 3, 4, 4))
    with pytest.raises(ValueError, match="at least 11x11"):
        ssim(torch.zeros(1, 3, 8, 8), torch.zeros(1, 3, 8, 8))


# ---------------------------------------------------------------------------------------------- SSIM
def _ssim_reference(x: np.ndarray, y: np.ndarray, size: int = 11, sigma: float = 1.5) -> float:
    """Direct per-window SSIM (explicit weighted sums at every valid centre), independent of the conv code."""
    g = np.exp(-((np.arange(size) - (size - 1) / 2) ** 2) / (2 * sigma**2))
    w = np.outer(g, g) / np.outer(g, g).sum()
    c1, c2 = 0.01**2, 0.03**2
    values = []
    for c in range(x.shape[0]):
        for i in range(x.shape[1] - size + 1):
            for j in range(x.shape[2] - size + 1):
                a, b = x[c, i : i + size, j : j + size], y[c, i : i + size, j : j + size]
                ma, mb = (w * a).sum(), (w * b).sum()
                va, vb = (w * (a - ma) ** 2).sum(), (w * (b - mb) ** 2).sum()
                cov = (w * (a - ma) * (b - mb)).sum()
                values.append((2 * ma * mb + c1) * (2 * cov + c2) / ((ma**2 + mb**2 + c1) * (va + vb + c2)))
    return float(np.mean(values))


def test_ssim_of_constant_images_is_the_luminance_term():
    a, b = 0.5, 0.25
    x, y = torch.full((1, 3, 16, 16), a), torch.full((1, 3, 16, 16), b)
    c1 = 0.01**2
    expected = (2 * a * b + c1) / (a * a + b * b + c1)  # variances and covariance are 0: structure term = C2/C2
    torch.testing.assert_close(ssim(x, y), torch.tensor([expected]), rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(ssim(x, x), torch.ones(1), rtol=1e-5, atol=1e-6)


def test_ssim_matches_a_direct_per_window_computation_on_noise():
    gen = torch.Generator().manual_seed(0)
    x = torch.rand(2, 3, 17, 19, generator=gen, dtype=torch.float64)
    y = (x + 0.1 * torch.randn(x.shape, generator=gen, dtype=torch.float64)).clamp(0, 1)
    got = ssim(x, y)
    expected = torch.tensor([_ssim_reference(x[i].numpy(), y[i].numpy()) for i in range(2)], dtype=torch.float64)
    torch.testing.assert_close(got, expected, rtol=1e-9, atol=1e-9)
    assert 0.0 < float(got.min()) < 0.95  # noise really lowers it
    torch.testing.assert_close(ssim(x, y), ssim(y, x))  # symmetric


def test_ssim_is_differentiable_and_masked_average_weights_window_centres():
    gen = torch.Generator().manual_seed(1)
    x = torch.rand(1, 3, 12, 12, generator=gen, dtype=torch.float64, requires_grad=True)
    y = torch.rand(1, 3, 12, 12, generator=gen, dtype=torch.float64)
    assert torch.autograd.gradcheck(lambda t: ssim(t, y), (x,), fast_mode=True)
    full_map = ssim(x.detach(), y, return_map=True).mean(1)  # [1, 2, 2] over valid centres
    mask = torch.zeros(1, 1, 12, 12, dtype=torch.float64)
    mask[..., 5, 5] = 1.0  # only the first valid centre (offset 5 = window radius)
    torch.testing.assert_close(ssim(x.detach(), y, mask=mask), full_map[:, 0, 0])


# ---------------------------------------------------------------------------------------------- LPIPS
@pytest.fixture(scope="module")
def alexnet_file(tmp_path_factory) -> Path:
    import torchvision

    torch.manual_seed(123)
    path = tmp_path_factory.mktemp("lpips") / "alexnet-random.pth"
    torch.save(torchvision.models.alexnet().state_dict(), path)  # a full torchvision checkpoint (+ classifier)
    return path


@pytest.fixture(scope="module")
def alex_metric(alexnet_file):
    return load_lpips("alex", backbone_path=alexnet_file)


def _reference_lpips(trunk_state: dict, x, y):
    """LPIPS computed by the `lpips` package itself, with the same trunk and its v0.1 heads."""
    import lpips

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ref = lpips.LPIPS(pretrained=True, net="alex", pnet_rand=True, verbose=False)
    for name, param in ref.net.state_dict().items():
        _, index, kind = name.split(".")
        param.copy_(trunk_state[f"features.{index}.{kind}"])
    return ref(x * 2 - 1, y * 2 - 1).flatten()  # lpips works on [-1, 1]


def test_lpips_with_a_backbone_file_matches_the_lpips_package(alexnet_file, alex_metric):
    metric = alex_metric
    assert metric.comparable and metric.backbone_source == str(alexnet_file)
    gen = torch.Generator().manual_seed(0)
    x, y = torch.rand(2, 3, 48, 48, generator=gen), torch.rand(2, 3, 48, 48, generator=gen)
    got = metric(x, y)
    assert got.shape == (2,)
    torch.testing.assert_close(got, _reference_lpips(torch.load(alexnet_file, weights_only=True), x, y).detach())
    torch.testing.assert_close(metric(x, x), torch.zeros(2), atol=1e-7, rtol=0)
    # Differentiable in the images, never in its own weights.
    x.requires_grad_(True)
    metric(x, y).sum().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0
    assert not any(p.requires_grad for p in metric.parameters())
    metric.train()
    assert not metric.training  # dropout in the heads stays off


def test_lpips_reads_safetensors_and_the_hub_cache(alexnet_file, alex_metric, tmp_path, monkeypatch):
    state = torch.load(alexnet_file, weights_only=True)
    features = {k.removeprefix("features."): v for k, v in state.items() if k.startswith("features.")}
    save_file(features, tmp_path / "alex_features.safetensors")  # bare `model.features` keys
    x, y = torch.rand(1, 3, 32, 32), torch.rand(1, 3, 32, 32)
    expected = alex_metric(x, y)
    torch.testing.assert_close(load_lpips("alex", backbone_path=tmp_path / "alex_features.safetensors")(x, y), expected)
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path / "hub"))
    cached = hub_backbone_path("alex")
    assert cached.name == "alexnet-owt-7be5be79.pth"
    cached.parent.mkdir(parents=True)
    cached.write_bytes(alexnet_file.read_bytes())
    from_cache = load_lpips("alex")
    assert from_cache.comparable and from_cache.backbone_source == str(cached)
    torch.testing.assert_close(from_cache(x, y), expected)


def test_lpips_without_a_trunk_raises_or_warns_once(tmp_path, monkeypatch):
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path / "empty-hub"))
    with pytest.raises(FileNotFoundError, match="nothing is downloaded.*allow_random=True"):
        load_lpips("alex")
    with pytest.raises(FileNotFoundError, match="backbone_path .* does not exist"):
        load_lpips("alex", backbone_path=tmp_path / "missing.pth")
    with pytest.raises(ValueError, match=r"net must be one of \['alex', 'vgg'\], got 'squeeze'"):
        load_lpips("squeeze")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        metric = load_lpips("alex", allow_random=True)
    assert [str(w.message) for w in caught if "NOT comparable" in str(w.message)] and len(caught) == 1
    assert metric.comparable is False and metric.backbone_source == "random"
    x, y = torch.rand(1, 3, 32, 32), torch.rand(1, 3, 32, 32)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        again = load_lpips("alex", allow_random=True)
    torch.testing.assert_close(metric(x, y), again(x, y))  # the random trunk is seeded: repeatable
    with pytest.raises(ValueError, match="at least 32x32"):
        metric(torch.rand(1, 3, 16, 16), torch.rand(1, 3, 16, 16))


def test_lpips_rejects_a_file_of_the_wrong_trunk(tmp_path):
    save_file({"features.0.weight": torch.zeros(8, 3, 3, 3)}, tmp_path / "wrong.safetensors")
    with pytest.raises(ValueError, match="torchvision AlexNet state dict .* lacks"):
        load_lpips("alex", backbone_path=tmp_path / "wrong.safetensors")
    torch.save({"features.0.weight": torch.zeros(64, 3, 3, 3)}, tmp_path / "partial.pth")
    with pytest.raises(ValueError, match="lacks"):
        load_lpips("alex", backbone_path=tmp_path / "partial.pth")


# ---------------------------------------------------------------------------------------------- identity
TINY = dict(layers=(1, 2, 1, 1), widths=(8, 16, 16, 32), num_features=24)


@pytest.fixture(scope="module")
def tiny_iresnet_file(tmp_path_factory) -> Path:
    torch.manual_seed(7)
    net = IResNet(**TINY)
    for module in net.modules():  # non-trivial BatchNorm statistics, as in trained weights
        if isinstance(module, (torch.nn.BatchNorm1d, torch.nn.BatchNorm2d)):
            module.running_mean.uniform_(-0.1, 0.1)
            module.running_var.uniform_(0.5, 1.5)
    path = tmp_path_factory.mktemp("arcface") / "backbone.safetensors"
    save_file({k: v.contiguous() for k, v in net.state_dict().items()}, path)
    return path


def test_iresnet_uses_insightface_parameter_names():
    keys = set(IResNet(**TINY).state_dict())
    for key in ("conv1.weight", "bn1.running_var", "prelu.weight", "layer1.0.bn1.weight", "layer1.0.conv1.weight",
                "layer1.0.bn2.bias", "layer1.0.prelu.weight", "layer1.0.conv2.weight", "layer1.0.bn3.running_mean",
                "layer1.0.downsample.0.weight", "layer1.0.downsample.1.weight", "layer2.1.conv2.weight",
                "bn2.weight", "fc.weight", "fc.bias", "features.weight", "features.running_var"):
        assert key in keys, key
    assert "layer2.1.downsample.0.weight" not in keys  # only the first block of a stage changes shape
    full = IResNet()  # r50 defaults: fc takes the 512 x 7 x 7 map of a 112² crop
    assert full.fc.in_features == 512 * 7 * 7 and len(full.layer3) == 14


def test_identity_network_loads_files_and_csim_is_symmetric_and_one_on_identical(tiny_iresnet_file, tmp_path):
    net = load_identity_network(tiny_iresnet_file)
    assert net.backbone.layers == TINY["layers"] and net.embedding_dim == 24
    gen = torch.Generator().manual_seed(0)
    a, b = torch.rand(2, 3, 64, 64, generator=gen), torch.rand(2, 3, 64, 64, generator=gen)
    ea, eb = net(a), net(b)
    assert ea.shape == (2, 24)
    torch.testing.assert_close(ea.norm(dim=-1), torch.ones(2))
    torch.testing.assert_close(net.similarity(a, a), torch.ones(2))
    torch.testing.assert_close(net.similarity(a, b), net.similarity(b, a))
    torch.testing.assert_close(cosine_similarity(ea, eb), (ea * eb).sum(-1))  # unit vectors: cosine = dot
    # A .pth state dict wrapped like a training checkpoint loads to the same network.
    state = {k: v for k, v in net.backbone.state_dict().items()}
    torch.save({"state_dict": {f"module.{k}": v for k, v in state.items()}}, tmp_path / "backbone.pth")
    torch.testing.assert_close(load_identity_network(tmp_path / "backbone.pth")(a), ea)
    # Differentiable in the images (the ID loss of training), frozen weights.
    x = a.clone().requires_grad_(True)
    net.similarity(x, b).sum().backward()
    assert x.grad.abs().sum() > 0 and not any(p.requires_grad for p in net.parameters())


def test_identity_network_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="path .* does not exist"):
        load_identity_network(tmp_path / "none.pth")
    save_file({"conv1.weight": torch.zeros(8, 3, 3, 3)}, tmp_path / "bad.safetensors")
    with pytest.raises(ValueError, match="not an arcface_torch IResNet state dict"):
        load_identity_network(tmp_path / "bad.safetensors")
    with pytest.raises(TypeError, match="path must be a str or Path"):
        load_identity_network(3)
    torch.save(object, tmp_path / "code.pth")  # a pickle that is not plain tensors
    with pytest.raises(ValueError, match="weights_only=True"):
        load_identity_network(tmp_path / "code.pth")
    with pytest.raises(ValueError, match=r"cosine|same shape"):
        cosine_similarity(torch.zeros(2, 3), torch.zeros(2, 4))


def test_five_point_alignment_is_exact_on_the_template_and_under_similarities(tiny_iresnet_file):
    template = torch.tensor(ARCFACE_TEMPLATE_112, dtype=torch.float64)[None]
    torch.testing.assert_close(similarity_to_template(template)[0], torch.eye(2, 3, dtype=torch.float64))
    # Points moved by a known similarity: the fit must return its inverse.
    angle, scale, shift = 0.3, 2.5, torch.tensor([40.0, -7.0], dtype=torch.float64)
    rot = torch.tensor([[math.cos(angle), -math.sin(angle)], [math.sin(angle), math.cos(angle)]], dtype=torch.float64)
    moved = scale * template @ rot.T + shift
    m = similarity_to_template(moved)[0]
    torch.testing.assert_close(moved[0] @ m[:, :2].T + m[:, 2], template[0])
    # The crop of a 112² image whose landmarks are the template is the image itself.
    net = load_identity_network(tiny_iresnet_file)
    image = torch.rand(1, 3, 112, 112)
    torch.testing.assert_close(net.crop(image, template.float()), image, atol=1e-4, rtol=0)
    # A dot at the image-left eye of scaled points lands on the template's eye.
    big = torch.zeros(1, 3, 224, 224)
    eye = (template[0, 0] * 2).round().long()
    big[..., eye[1] - 1 : eye[1] + 1, eye[0] - 1 : eye[0] + 1] = 1.0
    crop = net.crop(big, template.float() * 2)
    peak = divmod(int(crop[0, 0].argmax()), 112)
    assert abs(peak[1] + 0.5 - ARCFACE_TEMPLATE_112[0][0]) <= 1.5 and abs(peak[0] + 0.5 - ARCFACE_TEMPLATE_112[0][1]) <= 1.5
    with pytest.raises(ValueError, match=r"landmarks5 must have shape \[B, 5, 2\]"):
        net.crop(image, torch.zeros(1, 4, 2))


def test_fixed_alignment_matches_the_tracker_crop_framing():
    pts = aligned_crop_five_points()  # fractions of the crop side
    # Mirror-symmetric face, eyes above the nose above the mouth, eyes at 41-48 % of the height (align.py).
    np.testing.assert_allclose(pts[0, 0] + pts[1, 0], 1.0, atol=1e-9)
    np.testing.assert_allclose(pts[3, 0] + pts[4, 0], 1.0, atol=1e-9)
    assert pts[0, 1] < pts[2, 1] < pts[3, 1] and 0.40 < pts[0, 1] < 0.48
    # MediaPipe five points: irises when 478 landmarks are given, eye-corner midpoints with 468.
    lm = torch.arange(478 * 2, dtype=torch.float32).reshape(478, 2)
    five = five_points_from_mediapipe(lm)
    torch.testing.assert_close(five[0], lm[468])
    torch.testing.assert_close(five_points_from_mediapipe(lm[:468])[0], (lm[33] + lm[133]) / 2)
    torch.testing.assert_close(five[2:], lm[[1, 61, 291]])


# ---------------------------------------------------------------------------------------------- motion
def test_akd_aed_apd_hand_computed_values():
    kp = torch.rand(3, 10, 2)
    torch.testing.assert_close(akd(kp, kp), torch.zeros(3, dtype=torch.float64))
    shifted = kp + torch.tensor([3.0, 4.0])
    torch.testing.assert_close(akd(shifted, kp), torch.full((3,), 5.0, dtype=torch.float64), atol=1e-5, rtol=0)
    e = np.zeros((2, 4, 3))
    f = e.copy()
    f[0, 0] = [1.0, -2.0, 3.0]  # L1 = 6 over 12 values
    torch.testing.assert_close(aed(f, e), torch.tensor([0.5, 0.0], dtype=torch.float64))
    torch.testing.assert_close(apd([[10.0, -5.0, 0.0]], [[7.0, -1.0, 1.0]]), torch.tensor([8 / 3], dtype=torch.float64))
    with pytest.raises(ValueError, match="same shape"):
        akd(torch.zeros(1, 5, 2), torch.zeros(1, 6, 2))
    with pytest.raises(ValueError, match=r"\[N, K, 2\]"):
        akd(torch.zeros(1, 5, 3), torch.zeros(1, 5, 3))


def test_face_region_mask_fills_the_face_oval():
    from mediapipe.python.solutions.face_mesh_connections import FACEMESH_FACE_OVAL

    from fhavatar.metrics.motion import face_oval_loop, face_region_mask

    loop = face_oval_loop()
    assert len(loop) == len(set(loop)) == 36
    edges = {frozenset(e) for e in FACEMESH_FACE_OVAL}
    assert all(frozenset((a, b)) in edges for a, b in zip(loop, loop[1:] + loop[:1]))  # a closed contour
    # Oval points on a circle of radius 20 around (32, 32); every other landmark at the centre.
    landmarks = np.full((478, 2), 32.0)
    angles = np.linspace(0, 2 * np.pi, len(loop), endpoint=False)
    landmarks[loop] = 32 + 20 * np.stack([np.cos(angles), np.sin(angles)], 1)
    mask = face_region_mask(landmarks, 64, 64)
    polygon_area = 0.5 * len(loop) * 20**2 * np.sin(2 * np.pi / len(loop))
    assert mask.shape == (64, 64) and abs(mask.sum() - polygon_area) / polygon_area < 0.05
    assert mask[32, 32] == 1.0 and mask[2, 2] == 0.0 and mask[32, 55] == 0.0


@pytest.mark.skipif(not ASTRONAUT.is_file(), reason="needs examples/astronaut.png")
def test_motion_analyzer_on_a_real_photo_and_its_mirror_image():
    from PIL import Image

    from fhavatar.metrics import MotionAnalyzer

    image = np.asarray(Image.open(ASTRONAUT).convert("RGB"))
    with MotionAnalyzer() as analyzer:
        motion = analyzer(image)
        mirrored = analyzer(np.ascontiguousarray(image[:, ::-1]))
        blank = analyzer(np.full((128, 128, 3), 127, np.uint8))
    assert blank is None
    assert motion.landmarks.shape == (478, 2) and motion.expression.shape == (468, 3)
    width = image.shape[1]
    # Landmark 1 (nose tip) of the mirror image sits at the mirrored x.
    assert abs((width - mirrored.landmarks[1, 0]) - motion.landmarks[1, 0]) < 3.0
    # Yaw and roll flip sign in the mirror image, pitch stays.
    assert abs(motion.angles[0] + mirrored.angles[0]) < 3.0 and abs(motion.angles[1] - mirrored.angles[1]) < 3.0
    assert abs(motion.angles[2] + mirrored.angles[2]) < 3.0
    assert float(apd(motion.angles[None], motion.angles[None])[0]) == 0.0
