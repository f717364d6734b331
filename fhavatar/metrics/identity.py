"""Identity embeddings (ArcFace-style IResNet) and CSIM, the cosine similarity of two faces' embeddings.

The paper measures identity preservation with the cosine similarity of ArcFace [7] features (§4.1). ArcFace
weights cannot be shipped or downloaded here, so `load_identity_network(path)` builds the network of
insightface's `arcface_torch` (`IResNet`, the same module and parameter names: `conv1`, `bn1`, `prelu`,
`layer1..4.<i>.{bn1,conv1,bn2,prelu,conv2,bn3,downsample.0/1}`, `bn2`, `fc`, `features`) and loads a user's file
(their `backbone.pth` state dict read with `weights_only=True`, or the same converted to `.safetensors`). Depth
(r18/r34/r50/r100), channel widths and embedding size are read from the file.

Alignment. ArcFace expects 112x112 RGB crops made by a similarity transform of five points (eye centres, nose
tip, mouth corners) onto its fixed template (`ARCFACE_TEMPLATE_112`), pixels scaled to [-1, 1]. The crop is made
inside the module, differentiably (an affine `grid_sample`), in one of two ways:

- `landmarks5` given (`[B, 5, 2]` pixels of the input images, e.g. `five_points_from_mediapipe` on MediaPipe's
  478 landmarks): the least-squares similarity of those points onto the template (the insightface protocol);
- no landmarks: a fixed similarity for this project's aligned crops (`fhavatar.tracking.align`: PanoHead-like
  framing, 36 cm side centred on `CROP_CENTRE_CM`). It is computed once from where the five points of
  MediaPipe's canonical face land in such a crop for a frontal head seen by the PanoHead camera, so frontal and
  moderately turned faces are aligned as the template expects; for strongly turned faces pass landmarks.

CSIM (dlib), the substitute that needs no user file. `DlibFaceEmbedder` runs dlib's face-recognition ResNet
(128-d descriptors, 99.38 % on LFW) on faces found by dlib's HOG detector (its CNN detector when HOG finds none) and
aligned by its 5-point predictor, with the model files of the `face-recognition-models` package (requirements.txt).
Its descriptors are compared by Euclidean distance d, and dlib calls two faces the same person when
d <= 0.6 (`DLIB_SAME_PERSON_DISTANCE`); raw cosines are uninformative here (strangers score 0.84-0.86). The
reported similarity is therefore `1 - d / 1.2` (`dlib_similarity`): 1 for identical descriptors, 0.5 exactly at
dlib's threshold, ~0.7-0.9 for frames of one person and ~0.15-0.45 for strangers on the shared photos. It is
labelled "CSIM (dlib)" wherever it is reported: it is not the paper's ArcFace CSIM and not comparable with it.
`identity_match(render, photo)` is the one-call form (similarity, same person?) for checking an avatar.
Licences: the three files loaded (`DLIB_MODEL_FILES`: CNN face detector, 5-point predictor, ResNet; sha256-checked)
are Davis King's, released into the public domain (the package's LICENSE is CC0 1.0); the package's 68-point
predictor (iBUG 300-W data, no commercial use) is never opened. dlib itself is Boost-licensed. The implementation
is in `_identity_dlib.py`.
"""

from __future__ import annotations

import functools
import logging
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..head.canonical_face import canonical_face
from ._common import check_images, load_state_dict_file
from ._identity_dlib import (
    DLIB_CSIM_LABEL,
    DLIB_SAME_PERSON_DISTANCE,
    DlibFaceEmbedder,
    FaceNotFoundError,
    IdentityMatch,
    dlib_model_files,
    dlib_similarity,
    identity_match,
    load_dlib_embedder,
)

logger = logging.getLogger(__name__)

__all__ = [
    "ARCFACE_TEMPLATE_112",
    "DLIB_CSIM_LABEL",
    "DLIB_SAME_PERSON_DISTANCE",
    "DlibFaceEmbedder",
    "FaceNotFoundError",
    "IResNet",
    "IdentityMatch",
    "IdentityNetwork",
    "aligned_crop_five_points",
    "cosine_similarity",
    "dlib_model_files",
    "dlib_similarity",
    "five_points_from_mediapipe",
    "identity_match",
    "load_dlib_embedder",
    "load_identity_network",
    "similarity_to_template",
]

#: ArcFace's five-point template in a 112x112 crop (insightface `arcface_dst`): image-left eye, image-right eye,
#: nose tip, image-left mouth corner, image-right mouth corner (pixels, continuous).
ARCFACE_TEMPLATE_112 = (
    (38.2946, 51.6963),
    (73.5318, 51.5014),
    (56.0252, 71.7366),
    (41.5493, 92.3655),
    (70.7299, 92.2041),
)
ARCFACE_SIZE = 112
#: MediaPipe Face Mesh indices of the five points (image-left = the subject's right): eye corners averaged into
#: eye centres (the irises 468/473 are used instead when 478 points are given), nose tip, mouth corners.
_MP_EYE_CORNERS = ((33, 133), (362, 263))
_MP_IRIS = (468, 473)
_MP_NOSE_TIP = 1
_MP_MOUTH = (61, 291)


def five_points_from_mediapipe(landmarks: Tensor | np.ndarray) -> Tensor:  # [..., 468|478, >=2] -> [..., 5, 2]
    """The ArcFace five points (template order) from MediaPipe Face Mesh landmarks in pixels."""
    lm = torch.as_tensor(np.asarray(landmarks) if not isinstance(landmarks, Tensor) else landmarks)
    if lm.ndim < 2 or lm.shape[-2] not in (468, 478) or lm.shape[-1] < 2:
        raise ValueError(f"landmarks must have shape [..., 468 or 478, 2|3], got {tuple(lm.shape)}")
    lm = lm[..., :2].float()
    if lm.shape[-2] == 478:
        eyes = [lm[..., i, :] for i in _MP_IRIS]
    else:
        eyes = [(lm[..., a, :] + lm[..., b, :]) / 2 for a, b in _MP_EYE_CORNERS]
    points = [*eyes, lm[..., _MP_NOSE_TIP, :], lm[..., _MP_MOUTH[0], :], lm[..., _MP_MOUTH[1], :]]
    return torch.stack(points, dim=-2)


@functools.lru_cache(maxsize=1)
def aligned_crop_five_points() -> np.ndarray:  # [5, 2], fractions of the crop side
    """Where the five points of a frontal canonical face land in a `fhavatar.tracking.align` crop (side = 1)."""
    from ..rendering.cameras import PANOHEAD_FOCAL
    from ..tracking.align import CROP_CENTRE_CM, CROP_SIDE_CM

    face = canonical_face()[0]  # [468, 3] cm: +x the subject's left (image right), +y up, +z toward the camera
    centre = np.asarray(CROP_CENTRE_CM)
    # The PanoHead camera sees CROP_SIDE_CM at the crop centre's depth with normalised focal PANOHEAD_FOCAL,
    # so it stands CROP_SIDE_CM * PANOHEAD_FOCAL cm in front of that point: perspective for nearer face points.
    distance = CROP_SIDE_CM * PANOHEAD_FOCAL
    points = five_points_from_mediapipe(face[None]).numpy()[0]
    depth = np.array([face[list(_MP_EYE_CORNERS[0])][:, 2].mean(), face[list(_MP_EYE_CORNERS[1])][:, 2].mean(),
                      face[_MP_NOSE_TIP, 2], face[_MP_MOUTH[0], 2], face[_MP_MOUTH[1], 2]])
    zoom = distance / (distance - (depth - centre[2]))
    u = 0.5 + (points[:, 0] - centre[0]) * zoom / CROP_SIDE_CM
    v = 0.5 - (points[:, 1] - centre[1]) * zoom / CROP_SIDE_CM
    return np.stack([u, v], axis=1)


def similarity_to_template(points: Tensor) -> Tensor:  # [B, 5, 2] px -> [B, 2, 3]
    """Least-squares similarity (Umeyama, no reflection) taking `points` onto `ARCFACE_TEMPLATE_112`.

    Returns `M` with `template ≈ M[:, :, :2] @ p + M[:, :, 2]` (pixels, continuous coordinates).
    """
    src = points.double()
    dst = torch.tensor(ARCFACE_TEMPLATE_112, dtype=torch.float64, device=points.device).expand_as(src)
    ms, md = src.mean(1, keepdim=True), dst.mean(1, keepdim=True)
    a, b = src - ms, dst - md
    cov = b.transpose(1, 2) @ a / a.shape[1]  # [B, 2, 2]
    u, sig, vt = torch.linalg.svd(cov)
    d = torch.ones_like(sig)
    d[:, 1] = torch.sign(torch.linalg.det(u @ vt))
    rot = u @ torch.diag_embed(d) @ vt
    scale = (sig * d).sum(1) / a.pow(2).sum((1, 2)).div(a.shape[1]).clamp_min(1e-12)
    lin = scale[:, None, None] * rot
    trans = md[:, 0] - (lin @ ms[:, 0, :, None])[..., 0]
    return torch.cat([lin, trans[..., None]], dim=2).to(points.dtype)


def _warp_to_template(images: Tensor, matrix: Tensor) -> Tensor:  # [B,3,H,W], [B,2,3] -> [B,3,112,112]
    """Resample `images` so that input pixel p lands at `matrix @ [p, 1]` in a 112x112 crop (bilinear)."""
    b, _, h, w = images.shape
    lin, trans = matrix[:, :, :2].double(), matrix[:, :, 2].double()
    inv = torch.linalg.inv(lin)  # crop px -> input px: p = inv (q - t)
    # Normalised coordinates (align_corners=False): q = (qn + 1) S / 2, pn = 2 p / size - 1.
    size_out = ARCFACE_SIZE
    to_in = torch.diag(torch.tensor([2.0 / w, 2.0 / h], dtype=torch.float64, device=images.device))
    theta_lin = to_in @ inv * (size_out / 2)
    theta_t = to_in @ (inv @ (torch.full((2,), size_out / 2, dtype=torch.float64, device=images.device) - trans)[..., None])
    theta = torch.cat([theta_lin, theta_t - 1.0], dim=2).to(images.dtype)
    grid = F.affine_grid(theta, [b, 3, size_out, size_out], align_corners=False)
    return F.grid_sample(images, grid, mode="bilinear", padding_mode="border", align_corners=False)


class _IBasicBlock(nn.Module):
    """IResNet's pre-activation residual block: BN, conv3x3, BN, PReLU, conv3x3 (stride), BN (+ shortcut)."""

    def __init__(self, in_channels: int, channels: int, stride: int) -> None:
        super().__init__()
        self.bn1 = nn.BatchNorm2d(in_channels, eps=1e-5)
        self.conv1 = nn.Conv2d(in_channels, channels, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(channels, eps=1e-5)
        self.prelu = nn.PReLU(channels)
        self.conv2 = nn.Conv2d(channels, channels, 3, stride, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(channels, eps=1e-5)
        self.downsample = None
        if stride != 1 or in_channels != channels:
            self.downsample = nn.Sequential(
                nn.Conv2d(in_channels, channels, 1, stride, bias=False), nn.BatchNorm2d(channels, eps=1e-5)
            )

    def forward(self, x: Tensor) -> Tensor:
        out = self.bn3(self.conv2(self.prelu(self.bn2(self.conv1(self.bn1(x))))))
        return out + (x if self.downsample is None else self.downsample(x))


class IResNet(nn.Module):
    """ArcFace's IResNet (insightface `arcface_torch` layout) on 112x112 inputs normalised to [-1, 1].

    Args:
        layers (`tuple` of 4 ints, *optional*, defaults to `(3, 4, 14, 3)`):
            Blocks per stage: r18 `(2, 2, 2, 2)`, r34 `(3, 4, 6, 3)`, r50 `(3, 4, 14, 3)`, r100 `(3, 13, 30, 3)`.
        widths (`tuple` of 4 ints, *optional*, defaults to `(64, 128, 256, 512)`): channels per stage (the stem
            has `widths[0]`); smaller widths only for tests.
        num_features (`int`, *optional*, defaults to 512): embedding size.
    """

    def __init__(self, layers=(3, 4, 14, 3), widths=(64, 128, 256, 512), num_features: int = 512) -> None:
        super().__init__()
        if len(layers) != 4 or len(widths) != 4 or min(layers) < 1 or min(widths) < 1:
            raise ValueError(f"layers and widths must be 4 positive ints each, got {layers!r} and {widths!r}")
        self.layers, self.widths, self.num_features = tuple(layers), tuple(widths), int(num_features)
        self.conv1 = nn.Conv2d(3, widths[0], 3, 1, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(widths[0], eps=1e-5)
        self.prelu = nn.PReLU(widths[0])
        in_channels = widths[0]
        for stage, (count, channels) in enumerate(zip(layers, widths), start=1):
            blocks = [_IBasicBlock(in_channels if i == 0 else channels, channels, 2 if i == 0 else 1) for i in range(count)]
            self.add_module(f"layer{stage}", nn.Sequential(*blocks))
            in_channels = channels
        self.bn2 = nn.BatchNorm2d(widths[-1], eps=1e-5)
        side = ARCFACE_SIZE // 16  # four stride-2 stages: 112 -> 7
        self.fc = nn.Linear(widths[-1] * side * side, num_features)
        self.features = nn.BatchNorm1d(num_features, eps=1e-5)

    @classmethod
    def from_state_dict(cls, state: dict[str, Tensor], name: str = "state") -> IResNet:
        """The IResNet whose depth, widths and embedding size match `state` (weights not loaded)."""
        try:
            layers = tuple(1 + max(int(k.split(".")[1]) for k in state if k.startswith(f"layer{s}.")) for s in range(1, 5))
            widths = tuple(int(state[f"layer{s}.0.conv1.weight"].shape[0]) for s in range(1, 5))
            num_features = int(state["fc.weight"].shape[0])
        except (KeyError, ValueError) as error:
            raise ValueError(
                f"{name} is not an arcface_torch IResNet state dict (keys conv1.weight, layer1.0.conv1.weight, ..., "
                f"fc.weight, features.running_mean); it has {sorted(state)[:5]} ... ({type(error).__name__}: {error})"
            ) from error
        return cls(layers, widths, num_features)

    def forward(self, x: Tensor) -> Tensor:  # [B, 3, 112, 112] in [-1, 1] -> [B, num_features]
        x = self.prelu(self.bn1(self.conv1(x)))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        return self.features(self.fc(torch.flatten(self.bn2(x), 1)))


class IdentityNetwork(nn.Module):
    """Image `[B, 3, H, W]` in [0, 1] -> L2-normalised identity embedding `[B, D]`; frozen, differentiable in x.

    `forward(images, landmarks5=None)`: see the module docstring for the two alignments. `similarity(x, y)` is
    CSIM per image pair.
    """

    def __init__(self, backbone: IResNet, source: str = "") -> None:
        super().__init__()
        self.backbone = backbone
        self.source = source
        self.requires_grad_(False)
        self.eval()

    def train(self, mode: bool = True) -> IdentityNetwork:
        return super().train(False)  # BatchNorm statistics are part of the weights

    @property
    def embedding_dim(self) -> int:
        return self.backbone.num_features

    def crop(
        self,
        images: Tensor,  # [B, 3, H, W] in [0, 1]
        landmarks5: Tensor | None = None,  # [B, 5, 2] pixels of `images`
    ) -> Tensor:  # [B, 3, 112, 112] in [0, 1]
        """The 112x112 ArcFace crops the embedding is computed from."""
        check_images(images, "images", min_side=8)
        b, _, h, w = images.shape
        if landmarks5 is None:
            points = torch.as_tensor(aligned_crop_five_points(), dtype=images.dtype, device=images.device)
            points = (points * torch.tensor([w, h], dtype=images.dtype, device=images.device)).expand(b, 5, 2)
        else:
            points = torch.as_tensor(landmarks5, dtype=images.dtype, device=images.device)
            if points.shape != (b, 5, 2):
                raise ValueError(f"landmarks5 must have shape [B, 5, 2] = [{b}, 5, 2] (pixels), got {tuple(points.shape)}")
            if not torch.isfinite(points).all():
                raise ValueError("landmarks5 must be finite pixel coordinates")
        return _warp_to_template(images, similarity_to_template(points))

    def forward(
        self,
        images: Tensor,  # [B, 3, H, W] in [0, 1]
        landmarks5: Tensor | None = None,  # [B, 5, 2]
    ) -> Tensor:  # [B, D], unit length
        crops = self.crop(images, landmarks5)
        return F.normalize(self.backbone(crops * 2.0 - 1.0), dim=-1)

    def similarity(self, x: Tensor, y: Tensor, landmarks_x: Tensor | None = None, landmarks_y: Tensor | None = None) -> Tensor:
        """CSIM of each image pair: `[B]` cosine similarities in [-1, 1]."""
        return cosine_similarity(self(x, landmarks_x), self(y, landmarks_y))


def cosine_similarity(a: Tensor, b: Tensor, eps: float = 1e-8) -> Tensor:  # [..., D], [..., D] -> [...]
    """Cosine of embedding pairs (CSIM when they are identity embeddings); symmetric, 1 for equal inputs."""
    if a.shape != b.shape:
        raise ValueError(f"embeddings must have the same shape, got {tuple(a.shape)} and {tuple(b.shape)}")
    return (a * b).sum(-1) / (a.norm(dim=-1) * b.norm(dim=-1)).clamp_min(eps)


def load_identity_network(path: str | Path, device: str | torch.device | None = None) -> IdentityNetwork:
    r"""Load an ArcFace IResNet from a user file into an `IdentityNetwork`.

    Args:
        path (`str` or `Path`):
            insightface `arcface_torch` backbone weights: a state dict `.pth` (read with `weights_only=True`, never
            executing code) or `.safetensors` with the same keys.
        device (`str` or `torch.device`, *optional*): where to put the network (CPU when omitted).

    Example:
        ```py
        >>> from fhavatar.metrics import load_identity_network
        >>> arcface = load_identity_network("ms1mv3_arcface_r100_fp16/backbone.pth")  # doctest: +SKIP
        >>> arcface.similarity(generated, source)  # [B] CSIM  # doctest: +SKIP
        ```
    """
    if not isinstance(path, (str, Path)):
        raise TypeError(f"path must be a str or Path to IResNet weights, got {type(path).__name__}")
    state = load_state_dict_file(path, "path")
    backbone = IResNet.from_state_dict(state, name=f"path {str(path)!r}")
    expected = backbone.state_dict()
    # BatchNorm's `num_batches_tracked` counters are not weights; older checkpoints lack them.
    missing = sorted(k for k in set(expected) - set(state) if not k.endswith("num_batches_tracked"))
    unexpected = sorted(set(state) - set(expected))
    if missing or unexpected:
        raise ValueError(
            f"path {str(path)!r} does not match the IResNet{backbone.layers} layout: missing {missing[:5]}, "
            f"unexpected {unexpected[:5]}"
        )
    for key, value in expected.items():
        if state[key].shape != value.shape:
            raise ValueError(f"path {str(path)!r}: {key} has shape {tuple(state[key].shape)}, expected {tuple(value.shape)}")
    backbone.load_state_dict({k: v.float() if v.is_floating_point() else v for k, v in state.items()}, strict=False)
    logger.info("identity network IResNet%s (%d-d) from %s", backbone.layers, backbone.num_features, path)
    network = IdentityNetwork(backbone, source=str(path))
    return network.to(device) if device is not None else network


