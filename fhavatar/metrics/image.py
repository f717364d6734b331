"""Reconstruction metrics on image pairs: PSNR (optionally masked) and SSIM (Wang et al. 2004).

Images are float `[B, 3, H, W]` tensors in [0, 1] (`data_range` 1). Every function returns one value per image
(`[B]`); average them over frames yourself (`fhavatar.evaluate` averages per frame, then over clips' frames).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor

from ._common import check_image_pair

__all__ = ["SSIM_K1", "SSIM_K2", "SSIM_SIGMA", "SSIM_WINDOW", "gaussian_window", "psnr", "ssim"]

#: SSIM's standard settings (Wang et al. 2004; skimage with `gaussian_weights=True`, torchmetrics, pytorch-msssim).
SSIM_WINDOW = 11
SSIM_SIGMA = 1.5
SSIM_K1 = 0.01
SSIM_K2 = 0.03


def _check_mask(mask, x: Tensor) -> Tensor:  # -> [B, 1, H, W] float
    if not isinstance(mask, Tensor):
        raise TypeError(f"mask must be a torch.Tensor [B, 1, H, W] in [0, 1], got {type(mask).__name__}")
    b, _, h, w = x.shape
    if mask.ndim == 3:
        mask = mask[:, None]
    if mask.ndim != 4 or mask.shape[0] != b or mask.shape[1] != 1 or tuple(mask.shape[-2:]) != (h, w):
        raise ValueError(f"mask must have shape [B, 1, H, W] = [{b}, 1, {h}, {w}], got {tuple(mask.shape)}")
    return mask.to(x.dtype)


def psnr(
    x: Tensor,  # [B, 3, H, W] in [0, 1]
    y: Tensor,  # [B, 3, H, W] in [0, 1]
    mask: Tensor | None = None,  # [B, 1, H, W] weights in [0, 1]
    data_range: float = 1.0,
) -> Tensor:  # [B], dB
    """Peak signal-to-noise ratio `10 log10(data_range² / MSE)` per image; `inf` for identical images.

    With `mask`, the MSE is the mask-weighted mean over the masked pixels (all 3 channels), so pixels outside the
    mask do not count at all (PSNR of the foreground). An all-zero mask raises `ValueError`.
    """
    check_image_pair(x, y)
    err = (x - y).pow(2)
    if mask is None:
        mse = err.flatten(1).mean(1)
    else:
        mask = _check_mask(mask, x)
        weight = mask.flatten(1).sum(1) * x.shape[1]
        if (weight <= 0).any():
            raise ValueError("mask must select at least one pixel of every image; an image's mask is all zero")
        mse = (err * mask).flatten(1).sum(1) / weight
    return 10.0 * torch.log10(data_range**2 / mse)


def gaussian_window(size: int = SSIM_WINDOW, sigma: float = SSIM_SIGMA, dtype=torch.float32, device=None) -> Tensor:  # [size]
    """Normalised 1D Gaussian (the SSIM window is its outer product)."""
    coords = torch.arange(size, dtype=torch.float64, device=device) - (size - 1) / 2.0
    g = torch.exp(-(coords**2) / (2.0 * sigma**2))
    return (g / g.sum()).to(dtype)


def _blur(x: Tensor, window: Tensor) -> Tensor:  # [B, C, H, W] -> [B, C, H - k + 1, W - k + 1] ('valid')
    c = x.shape[1]
    x = F.conv2d(x, window.view(1, 1, 1, -1).expand(c, 1, 1, -1), groups=c)
    return F.conv2d(x, window.view(1, 1, -1, 1).expand(c, 1, -1, 1), groups=c)


def ssim(
    x: Tensor,  # [B, 3, H, W] in [0, 1]
    y: Tensor,  # [B, 3, H, W] in [0, 1]
    data_range: float = 1.0,
    window_size: int = SSIM_WINDOW,
    sigma: float = SSIM_SIGMA,
    mask: Tensor | None = None,  # [B, 1, H, W]
    return_map: bool = False,
) -> Tensor:  # [B] (or the map [B, 3, H - 10, W - 10])
    r"""Structural similarity, Gaussian window (11, σ 1.5), K1 = 0.01, K2 = 0.03, population statistics.

    Per channel, `SSIM = (2 μx μy + C1)(2 σxy + C2) / ((μx² + μy² + C1)(σx² + σy² + C2))` with `C1 = (K1 L)²`,
    `C2 = (K2 L)²`, L the data range; local statistics from the Gaussian window over the *valid* region (no
    padding, as in Wang et al.'s reference code and skimage's cropped mean), then averaged over channels and
    positions. With `mask`, positions are weighted by the mask at the window centres. Differentiable.
    """
    check_image_pair(x, y, min_side=window_size)
    if window_size % 2 != 1 or window_size < 3:
        raise ValueError(f"window_size must be an odd int >= 3, got {window_size!r}")
    if not (sigma > 0 and math.isfinite(sigma)):
        raise ValueError(f"sigma must be a positive number, got {sigma!r}")
    window = gaussian_window(window_size, sigma, dtype=x.dtype, device=x.device)
    c1, c2 = (SSIM_K1 * data_range) ** 2, (SSIM_K2 * data_range) ** 2
    mu_x, mu_y = _blur(x, window), _blur(y, window)
    # Second moments minus squared means: the (biased) local variances and covariance.
    var_x = _blur(x * x, window) - mu_x**2
    var_y = _blur(y * y, window) - mu_y**2
    cov = _blur(x * y, window) - mu_x * mu_y
    ssim_map = ((2 * mu_x * mu_y + c1) * (2 * cov + c2)) / ((mu_x**2 + mu_y**2 + c1) * (var_x + var_y + c2))
    if return_map:
        return ssim_map
    if mask is None:
        return ssim_map.flatten(1).mean(1)
    mask = _check_mask(mask, x)
    r = window_size // 2
    weight = mask[:, :, r:-r, r:-r]
    total = weight.flatten(1).sum(1)
    if (total <= 0).any():
        raise ValueError("mask must select at least one window centre of every image; an image's mask is empty there")
    return (ssim_map.mean(1, keepdim=True) * weight).flatten(1).sum(1) / total
