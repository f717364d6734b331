"""LPIPS (Zhang et al. 2018, v0.1 linear heads) with backbones loaded from local files only.

The paper reports LPIPS with the AlexNet trunk (§4.1). The `lpips` package ships the v0.1 linear-layer weights
but fetches its ImageNet backbones through torchvision downloads, which this project never does. Here the
backbone comes from, in order:

1. `backbone_path`: a torchvision AlexNet / VGG16 state dict (`.pth`/`.pt`, read with `weights_only=True`, or
   `.safetensors`), keys `features.<i>.weight|bias` (the `classifier.*` keys of a full checkpoint are ignored);
2. the torch hub cache, where torchvision would have put its download (`$TORCH_HOME/hub/checkpoints/`
   `alexnet-owt-7be5be79.pth`, `vgg16-397923af.pth`);
3. with `allow_random=True` only: a randomly initialised trunk (seeded, so repeatable). Such a metric is still a
   differentiable feature distance (useful for tests and smoke runs) but its numbers are **not** comparable with
   published LPIPS; the module says so through `.comparable = False` and one warning.
"""

from __future__ import annotations

import logging
import warnings
from pathlib import Path
from typing import Literal

import torch
from torch import Tensor, nn

from ..io import checked_file
from ._common import check_image_pair, load_state_dict_file

logger = logging.getLogger(__name__)

__all__ = ["LPIPSMetric", "hub_backbone_path", "load_lpips"]

#: Smallest input side each trunk accepts (its pooling stack reduces smaller images to nothing).
MIN_SIDE = {"alex": 32, "vgg": 16}
#: Seed of the random trunk used with `allow_random=True`, so two runs give the same (non-comparable) numbers.
RANDOM_TRUNK_SEED = 0


def hub_backbone_path(net: Literal["alex", "vgg"]) -> Path:
    """Where torchvision's download of the ImageNet trunk would sit in the torch hub cache (may not exist)."""
    from torchvision.models import AlexNet_Weights, VGG16_Weights

    weights = AlexNet_Weights.IMAGENET1K_V1 if net == "alex" else VGG16_Weights.IMAGENET1K_V1
    return Path(torch.hub.get_dir()) / "checkpoints" / Path(weights.url).name


class LPIPSMetric(nn.Module):
    r"""LPIPS distance between two image batches in [0, 1]; frozen weights, differentiable in its inputs.

    Built by `load_lpips`. `forward(x, y)` returns one distance per image (lower is more similar; 0 for identical
    images). Attributes: `net` ("alex" | "vgg"), `comparable` (True when the trunk holds ImageNet weights, so
    the numbers match published LPIPS v0.1), `backbone_source` (the file the trunk came from, or "random").
    """

    def __init__(self, lpips_model: nn.Module, net: str, comparable: bool, backbone_source: str) -> None:
        super().__init__()
        self.lpips = lpips_model
        self.net = net
        self.comparable = comparable
        self.backbone_source = backbone_source
        self.requires_grad_(False)
        self.eval()

    def train(self, mode: bool = True) -> LPIPSMetric:
        # The metric never trains: dropout in the linear heads would make it random.
        return super().train(False)

    def forward(
        self,
        x: Tensor,  # [B, 3, H, W] in [0, 1]
        y: Tensor,  # [B, 3, H, W] in [0, 1]
    ) -> Tensor:  # [B]
        check_image_pair(x, y, min_side=MIN_SIDE[self.net])
        # normalize=True maps [0, 1] to the [-1, 1] range LPIPS was trained on.
        return self.lpips(x, y, normalize=True).reshape(x.shape[0])

    def extra_repr(self) -> str:
        return f"net={self.net!r}, comparable={self.comparable}, backbone_source={self.backbone_source!r}"


def _trunk_keys(lpips_model: nn.Module) -> dict[str, str]:
    """{torchvision key `features.<i>.<p>`: LPIPS key `net.slice<k>.<i>.<p>`} for every trunk parameter."""
    mapping = {}
    for name in lpips_model.net.state_dict():
        _slice, index, param = name.split(".")
        mapping[f"features.{index}.{param}"] = f"net.{name}"
    return mapping


def _load_trunk(lpips_model: nn.Module, path: Path, net: str) -> None:
    state = load_state_dict_file(path, "backbone_path")
    mapping = _trunk_keys(lpips_model)
    # Accept a bare `features` state dict too (keys `0.weight`, ...), as saved from `model.features`.
    if not any(key.startswith("features.") for key in state):
        state = {f"features.{key}": value for key, value in state.items()}
    missing = sorted(set(mapping) - set(state))
    if missing:
        raise ValueError(
            f"backbone_path must be a torchvision {'AlexNet' if net == 'alex' else 'VGG16'} state dict with keys "
            f"'features.<i>.weight/bias'; {path} lacks {missing[:4]}{' ...' if len(missing) > 4 else ''} "
            f"(it has {sorted(state)[:4]} ...). Did you pass the other trunk (net={net!r})?"
        )
    own = lpips_model.state_dict()
    for tv_key, lp_key in mapping.items():
        if tuple(state[tv_key].shape) != tuple(own[lp_key].shape):
            raise ValueError(
                f"backbone_path {path}: {tv_key} has shape {tuple(state[tv_key].shape)}, the {net} trunk needs "
                f"{tuple(own[lp_key].shape)}"
            )
    lpips_model.load_state_dict({lp_key: state[tv_key] for tv_key, lp_key in mapping.items()}, strict=False)


def load_lpips(
    net: Literal["alex", "vgg"] = "alex",
    backbone_path: str | Path | None = None,
    allow_random: bool = False,
    device: str | torch.device | None = None,
) -> LPIPSMetric:
    r"""Build the LPIPS v0.1 metric without any download.

    Args:
        net (`str`, *optional*, defaults to `"alex"`):
            The trunk: `"alex"` (the paper's LPIPS) or `"vgg"` (the usual training loss).
        backbone_path (`str` or `Path`, *optional*):
            A torchvision AlexNet/VGG16 state dict (`.pth` read with `weights_only=True`, or `.safetensors`). When
            omitted, the torch hub cache is tried.
        allow_random (`bool`, *optional*, defaults to `False`):
            When no trunk file is found, use a seeded random trunk (`.comparable = False`, one warning) instead of
            raising `FileNotFoundError`.
        device (`str` or `torch.device`, *optional*):
            Where to put the module (CPU when omitted).

    Returns:
        `LPIPSMetric`: `metric(x, y)` on `[B, 3, H, W]` images in [0, 1] gives `[B]` distances.

    Example:
        ```py
        >>> from fhavatar.metrics import load_lpips
        >>> lpips_alex = load_lpips("alex", backbone_path="alexnet-owt-7be5be79.pth")  # doctest: +SKIP
        >>> lpips_alex(prediction, target).mean()  # doctest: +SKIP
        ```
    """
    if net not in MIN_SIDE:
        raise ValueError(f"net must be one of {sorted(MIN_SIDE)}, got {net!r}")
    import lpips as lpips_package

    if backbone_path is not None:
        path = checked_file(Path(backbone_path).expanduser(), "backbone_path", f"Expected a torchvision {net} state dict.")
    else:
        cached = hub_backbone_path(net)
        path = cached if cached.is_file() else None
        if path is None and not allow_random:
            raise FileNotFoundError(
                f"No ImageNet {net} trunk for LPIPS: pass backbone_path= (a torchvision state dict such as "
                f"{cached.name}) or put it at {cached}; nothing is downloaded. Use allow_random=True for a "
                "random trunk whose numbers are not comparable with published LPIPS."
            )

    with warnings.catch_warnings():
        # lpips builds its trunk through torchvision's deprecated `pretrained=` argument; pretrained=False here.
        warnings.simplefilter("ignore", UserWarning)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(RANDOM_TRUNK_SEED)
            model = lpips_package.LPIPS(pretrained=False, net=net, version="0.1", pnet_rand=True, verbose=False)
    heads = Path(lpips_package.__file__).parent / "weights" / "v0.1" / f"{net}.pth"
    model.load_state_dict(torch.load(heads, map_location="cpu", weights_only=True), strict=False)

    if path is not None:
        _load_trunk(model, path, net)
        source, comparable = str(path), True
        logger.info("LPIPS-%s: trunk from %s", net, path)
    else:
        source, comparable = "random", False
        warnings.warn(
            f"LPIPS-{net} uses a random trunk (no backbone file found): its values are NOT comparable with "
            "published LPIPS. Pass backbone_path= to a torchvision state dict for real numbers.",
            UserWarning,
            stacklevel=2,
        )
    metric = LPIPSMetric(model, net=net, comparable=comparable, backbone_source=source)
    return metric.to(device) if device is not None else metric
