"""Convolutional building blocks of the avatar network (paper §3.3–3.4): norms, residual blocks, resampling,
multi-scale encoders, a small UNet and the UV map decoder D_uv.

All modules take and return `[B, C, H, W]` maps. Every block is built from convolutions, group/layer norms,
SiLU and nearest/stride-2 resampling only, so a block whose spatial kernels are left-right symmetric is exactly
mirror-equivariant (`fusion.py` relies on this in its tests).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = [
    "ConvBlock",
    "Downsample",
    "LayerNorm2d",
    "PyramidEncoder",
    "ResidualBlock",
    "UNet",
    "UVDecoder",
    "Upsample",
    "group_norm",
]

#: Upper bound on the number of GroupNorm groups.
MAX_NORM_GROUPS = 32


def group_norm(channels: int) -> nn.GroupNorm:
    """GroupNorm with the largest group count <= `MAX_NORM_GROUPS` that divides `channels`."""
    groups = max(g for g in range(1, min(MAX_NORM_GROUPS, channels) + 1) if channels % g == 0)
    return nn.GroupNorm(groups, channels, eps=1e-6)


class LayerNorm2d(nn.Module):
    """Layer norm over the channel dimension of a `[B, C, H, W]` map (per texel), with a learned affine.

    Args:
        channels (`int`): C.
        eps (`float`, *optional*, defaults to 1e-6): added to the variance.
    """

    def __init__(self, channels: int, eps: float = 1e-6):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(channels))
        self.bias = nn.Parameter(torch.zeros(channels))
        self.eps = eps

    def forward(self, x: Tensor) -> Tensor:  # [B, C, H, W] -> [B, C, H, W]
        mean = x.mean(1, keepdim=True)
        var = (x - mean).square().mean(1, keepdim=True)
        x = (x - mean) * torch.rsqrt(var + self.eps)
        return x * self.weight[:, None, None] + self.bias[:, None, None]


class ConvBlock(nn.Sequential):
    """`conv(k×k, stride) -> GroupNorm -> SiLU`; `[B, C_in, H, W] -> [B, C_out, H/stride, W/stride]`."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int = 3, stride: int = 1):
        super().__init__(
            nn.Conv2d(in_channels, out_channels, kernel_size, stride=stride, padding=kernel_size // 2),
            group_norm(out_channels),
            nn.SiLU(),
        )


class ResidualBlock(nn.Module):
    """Pre-activation residual block: `x + conv(SiLU(GN(conv(SiLU(GN(x))))))`, 1×1 skip when C changes.

    Args:
        in_channels (`int`), out_channels (`int`, *optional*, defaults to `in_channels`).
    Shapes: `[B, C_in, H, W] -> [B, C_out, H, W]`.
    """

    def __init__(self, in_channels: int, out_channels: int | None = None):
        super().__init__()
        out_channels = in_channels if out_channels is None else out_channels
        self.norm1 = group_norm(in_channels)
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, padding=1)
        self.norm2 = group_norm(out_channels)
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, padding=1)
        self.skip = nn.Identity() if in_channels == out_channels else nn.Conv2d(in_channels, out_channels, 1)

    def forward(self, x: Tensor) -> Tensor:
        h = self.conv1(F.silu(self.norm1(x)))
        h = self.conv2(F.silu(self.norm2(h)))
        return self.skip(x) + h


class Downsample(nn.Conv2d):
    """Stride-2 3×3 convolution: `[B, C_in, H, W] -> [B, C_out, ceil(H/2), ceil(W/2)]`."""

    def __init__(self, in_channels: int, out_channels: int):
        super().__init__(in_channels, out_channels, 3, stride=2, padding=1)


class Upsample(nn.Module):
    """Nearest ×2 upsampling then a 3×3 convolution: `[B, C_in, H, W] -> [B, C_out, 2H, 2W]`."""

    def __init__(self, in_channels: int, out_channels: int):
        super().__init__()
        self.conv = nn.Conv2d(in_channels, out_channels, 3, padding=1)

    def forward(self, x: Tensor) -> Tensor:
        return self.conv(F.interpolate(x, scale_factor=2.0, mode="nearest"))


class PyramidEncoder(nn.Module):
    """A CNN returning one feature map per scale (the image encoder and the UV map encoder of §3.3–3.4).

    Level 0 is a stem convolution with stride `first_stride` followed by `num_res_blocks` residual blocks; every
    further level halves the size (`Downsample`) and applies `num_res_blocks` residual blocks.

    Args:
        in_channels (`int`): input channels.
        channels (`Sequence[int]`): output channels of each level, **finest first**.
        first_stride (`int`, *optional*, defaults to 1): 1 keeps level 0 at the input size (UV map encoder),
            2 halves it (image encoder: levels at strides 2, 4, 8, ...).
        num_res_blocks (`int`, *optional*, defaults to 1): residual blocks per level.

    Shapes: `[B, C_in, H, W] -> [ [B, channels[l], H / (first_stride · 2^l), ...] for each level l ]`.
    """

    def __init__(self, in_channels: int, channels: Sequence[int], first_stride: int = 1, num_res_blocks: int = 1):
        super().__init__()
        self.stem = nn.Conv2d(in_channels, channels[0], 3, stride=first_stride, padding=1)
        self.levels = nn.ModuleList()
        for level, c in enumerate(channels):
            blocks = [] if level == 0 else [Downsample(channels[level - 1], c)]
            blocks += [ResidualBlock(c) for _ in range(num_res_blocks)]
            self.levels.append(nn.Sequential(*blocks))

    def forward(self, x: Tensor) -> list[Tensor]:
        features, h = [], self.stem(x)
        for level in self.levels:
            h = level(h)
            features.append(h)
        return features


class UNet(nn.Module):
    """A small UNet (the shape-refinement network F_refine of eq. 2).

    Encoder: stem, then per level a residual block and (except at the last level) a stride-2 downsampling;
    decoder: nearest upsampling, concatenation with the encoder skip, a residual block; output: GN, SiLU, 3×3
    convolution, **zero-initialised** when `zero_init` (the UNet then starts as the zero map).

    Args:
        in_channels (`int`), out_channels (`int`).
        channels (`Sequence[int]`): channels per level, finest first; `len(channels) - 1` downsamplings, so the
            input size must be divisible by `2 ** (len(channels) - 1)`.
        zero_init (`bool`, *optional*, defaults to True): zero the output convolution.

    Shapes: `[B, C_in, H, W] -> [B, C_out, H, W]`.
    """

    def __init__(self, in_channels: int, out_channels: int, channels: Sequence[int], zero_init: bool = True):
        super().__init__()
        self.stem = nn.Conv2d(in_channels, channels[0], 3, padding=1)
        self.down_blocks = nn.ModuleList(ResidualBlock(channels[max(i - 1, 0)], c) for i, c in enumerate(channels))
        self.downsamples = nn.ModuleList(Downsample(c, c) for c in channels[:-1])
        self.upsamples = nn.ModuleList(Upsample(channels[i + 1], channels[i]) for i in range(len(channels) - 1))
        self.up_blocks = nn.ModuleList(ResidualBlock(2 * c, c) for c in channels[:-1])
        self.out_norm = group_norm(channels[0])
        self.out_conv = nn.Conv2d(channels[0], out_channels, 3, padding=1)
        if zero_init:
            nn.init.zeros_(self.out_conv.weight)
            nn.init.zeros_(self.out_conv.bias)

    def forward(self, x: Tensor) -> Tensor:
        h, skips = self.stem(x), []
        for i, block in enumerate(self.down_blocks):
            h = block(h)
            if i < len(self.downsamples):
                skips.append(h)
                h = self.downsamples[i](h)
        for i in reversed(range(len(self.upsamples))):
            h = self.up_blocks[i](torch.cat([self.upsamples[i](h), skips[i]], dim=1))
        return self.out_conv(F.silu(self.out_norm(h)))


class UVDecoder(nn.Module):
    """The UV map decoder D_uv (§3.4): from F_c^1 up to the K×K attribute map, adding F_f^i on the way.

    Stage 0 applies `num_res_blocks` residual blocks to F_c^1; stage i ≥ 1 upsamples ×2 (`Upsample`), adds the
    fused map F_f^{i+1} of the same size when given, and applies `num_res_blocks` residual blocks. The head is
    GN, SiLU and a 3×3 convolution to `out_channels`.

    Args:
        channels (`Sequence[int]`): channels of each stage, **coarsest first** (= the channels of F_c^1 and of
            F_f^2 ... F_f^N).
        out_channels (`int`): channels of the output map (14 raw attribute channels).
        num_res_blocks (`int`, *optional*, defaults to 1): residual blocks per stage.

    Shapes: `x [B, channels[0], R, R]`, `skips[i - 1] [B, channels[i], R·2^i, R·2^i]` -> `[B, out, R·2^(S-1), ...]`.
    """

    def __init__(self, channels: Sequence[int], out_channels: int, num_res_blocks: int = 1):
        super().__init__()
        self.stages = nn.ModuleList()
        self.upsamples = nn.ModuleList()
        for i, c in enumerate(channels):
            if i:
                self.upsamples.append(Upsample(channels[i - 1], c))
            self.stages.append(nn.Sequential(*[ResidualBlock(c) for _ in range(num_res_blocks)]))
        self.out_norm = group_norm(channels[-1])
        self.out_conv = nn.Conv2d(channels[-1], out_channels, 3, padding=1)
        # Small output init: the activated attributes start near their neutral values (sigmoid/tanh at ~0).
        nn.init.normal_(self.out_conv.weight, std=1e-3 / math.sqrt(channels[-1]))
        nn.init.zeros_(self.out_conv.bias)

    def forward(self, x: Tensor, skips: Sequence[Tensor] | None = None) -> Tensor:
        """Decode `x` (F_c^1); `skips` (F_f^2 ... F_f^N) are added after each upsampling, or omitted (A^1)."""
        if skips is not None and len(skips) != len(self.upsamples):
            raise ValueError(f"`skips` must hold {len(self.upsamples)} maps, got {len(skips)}.")
        h = self.stages[0](x)
        for i, upsample in enumerate(self.upsamples):
            h = upsample(h)
            if skips is not None:
                h = h + skips[i]
            h = self.stages[i + 1](h)
        return self.out_conv(F.silu(self.out_norm(h)))
