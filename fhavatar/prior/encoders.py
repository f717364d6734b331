"""The two-stage encoders of the dual-encoder PanoHead inversion (`inversion.py`), in the official modules' layout.

`TwoStageEncoder` = a pSp `GradualStyleEncoder` (IR-SE backbone + feature pyramid, one `GradualStyleBlock` per
latent: `w+` offsets from the average latent) followed by a TriPlaneNet-v2 `TriplaneResidualEncoder` (an IR-SE
U-Net from the first-stage render, its error and the mirrored error to a residual of the flat tri-grid). Attribute
names follow pSp (`input_layer`, `body.N.res_layer`, `styles.N.convs`, `latlayer1`) and TriPlaneNet v2
(`up1..up4.conv.double_conv`, `final_head_two`): they are the checkpoint keys converted weights load by.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .triplane import Triplane

__all__ = ["GradualStyleEncoder", "TriplaneResidualEncoder", "TwoStageEncoder"]

#: pSp's split of the latents over the pyramid levels: styles [0, 3) read the 1/16 map, [3, 7) the 1/8 map.
_COARSE_STYLES, _MIDDLE_STYLES = 3, 7
#: pSp's squeeze-and-excitation reduction.
_SE_REDUCTION = 16


# ============================================================================ encoder building blocks (pSp)
class EqualLinear(nn.Module):
    """StyleGAN2 (rosinality) equalised linear layer: `x @ (weight * lr_mul / sqrt(in)).T + bias * lr_mul`."""

    def __init__(self, in_dim: int, out_dim: int, lr_mul: float = 1.0):
        super().__init__()
        self.weight = nn.Parameter(torch.randn(out_dim, in_dim) / lr_mul)
        self.bias = nn.Parameter(torch.zeros(out_dim))
        self.scale, self.lr_mul = lr_mul / in_dim**0.5, lr_mul

    def forward(self, x: Tensor) -> Tensor:  # [N, in] -> [N, out]
        return F.linear(x, self.weight * self.scale, self.bias * self.lr_mul)


class SEModule(nn.Module):
    """Squeeze-and-excitation gate of the IR-SE units."""

    def __init__(self, channels: int, reduction: int = _SE_REDUCTION):
        super().__init__()
        hidden = max(1, channels // reduction)
        self.avg_pool = nn.AdaptiveAvgPool2d(1)
        self.fc1 = nn.Conv2d(channels, hidden, kernel_size=1, padding=0, bias=False)
        self.relu = nn.ReLU(inplace=True)
        self.fc2 = nn.Conv2d(hidden, channels, kernel_size=1, padding=0, bias=False)
        self.sigmoid = nn.Sigmoid()

    def forward(self, x: Tensor) -> Tensor:
        return x * self.sigmoid(self.fc2(self.relu(self.fc1(self.avg_pool(x)))))


class BottleneckIRSE(nn.Module):
    """An IR-SE residual unit (ArcFace backbone): BN-conv-PReLU-conv(stride)-BN-SE plus a (projected) shortcut."""

    def __init__(self, in_channels: int, depth: int, stride: int):
        super().__init__()
        if in_channels == depth:
            self.shortcut_layer = nn.MaxPool2d(1, stride)
        else:
            self.shortcut_layer = nn.Sequential(nn.Conv2d(in_channels, depth, (1, 1), stride, bias=False),
                                                nn.BatchNorm2d(depth))
        self.res_layer = nn.Sequential(
            nn.BatchNorm2d(in_channels), nn.Conv2d(in_channels, depth, (3, 3), (1, 1), 1, bias=False), nn.PReLU(depth),
            nn.Conv2d(depth, depth, (3, 3), stride, 1, bias=False), nn.BatchNorm2d(depth), SEModule(depth),
        )

    def forward(self, x: Tensor) -> Tensor:
        return self.res_layer(x) + self.shortcut_layer(x)


def _ir_se_body(block_units: tuple[int, ...], block_channels: tuple[int, ...]) -> nn.Sequential:
    """Four stages of IR-SE units; the first unit of each stage halves the resolution (IR-SE-50: 3, 4, 14, 3)."""
    units, previous = [], block_channels[0]  # the stem already has the first stage's width
    for count, depth in zip(block_units, block_channels):
        units.append(BottleneckIRSE(previous, depth, 2))
        units.extend(BottleneckIRSE(depth, depth, 1) for _ in range(count - 1))
        previous = depth
    return nn.Sequential(*units)


def _stem(in_channels: int, out_channels: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(in_channels, out_channels, (3, 3), 1, 1, bias=False), nn.BatchNorm2d(out_channels),
                         nn.PReLU(out_channels))


class GradualStyleBlock(nn.Module):
    """Strided 3x3 convolutions down to 1x1, then an equalised linear layer: one latent from one pyramid level."""

    def __init__(self, in_channels: int, out_channels: int, spatial: int):
        super().__init__()
        self.out_c = out_channels
        layers: list[nn.Module] = [nn.Conv2d(in_channels, out_channels, kernel_size=3, stride=2, padding=1), nn.LeakyReLU()]
        for _ in range(max(spatial.bit_length() - 2, 0)):  # log2(spatial) - 1 more halvings
            layers += [nn.Conv2d(out_channels, out_channels, kernel_size=3, stride=2, padding=1), nn.LeakyReLU()]
        self.convs = nn.Sequential(*layers)
        self.linear = EqualLinear(out_channels, out_channels, lr_mul=1)

    def forward(self, x: Tensor) -> Tensor:  # [B, in, s, s] -> [B, out]
        return self.linear(self.convs(x).reshape(x.shape[0], self.out_c))


class GradualStyleEncoder(nn.Module):
    """pSp's encoder: IR-SE backbone + FPN; latents 0-2 from the 1/16 map, 3-6 from 1/8, the rest from 1/4."""

    def __init__(self, num_ws: int, w_dim: int, input_size: int, block_units: tuple[int, ...],
                 block_channels: tuple[int, ...]):
        super().__init__()
        self.input_layer = _stem(3, block_channels[0])
        self.body = _ir_se_body(block_units, block_channels)
        self.taps = (block_units[0] + block_units[1] - 1, sum(block_units[:3]) - 1)  # c1 (1/4), c2 (1/8)
        self.styles = nn.ModuleList()
        for i in range(num_ws):
            spatial = input_size // (16 if i < _COARSE_STYLES else 8 if i < _MIDDLE_STYLES else 4)
            self.styles.append(GradualStyleBlock(block_channels[3], w_dim, spatial))
        self.latlayer1 = nn.Conv2d(block_channels[2], block_channels[3], kernel_size=1, stride=1, padding=0)
        self.latlayer2 = nn.Conv2d(block_channels[1], block_channels[3], kernel_size=1, stride=1, padding=0)

    def forward(self, x: Tensor) -> Tensor:  # [B, 3, S, S] in [-1, 1] -> [B, num_ws, w_dim]
        x = self.input_layer(x)
        for i, unit in enumerate(self.body):
            x = unit(x)
            if i == self.taps[0]:
                c1 = x
            elif i == self.taps[1]:
                c2 = x
        c3 = x
        # Bilinear (align_corners=True) upsample-and-add, as pSp's `_upsample_add`.
        p2 = F.interpolate(c3, size=c2.shape[-2:], mode="bilinear", align_corners=True) + self.latlayer1(c2)
        p1 = F.interpolate(p2, size=c1.shape[-2:], mode="bilinear", align_corners=True) + self.latlayer2(c1)
        levels = [c3 if i < _COARSE_STYLES else p2 if i < _MIDDLE_STYLES else p1 for i in range(len(self.styles))]
        return torch.stack([style(level) for style, level in zip(self.styles, levels)], dim=1)


# ============================================================================ tri-grid residual encoder (TriPlaneNet v2)
class DoubleConv(nn.Module):
    """BN, conv-PReLU, conv-PReLU-PReLU (the official block applies PReLU twice; kept for weight compatibility)."""

    def __init__(self, in_channels: int, out_channels: int):
        super().__init__()
        self.double_conv = nn.Sequential(
            nn.BatchNorm2d(in_channels), nn.Conv2d(in_channels, out_channels, kernel_size=3, padding=1),
            nn.PReLU(out_channels), nn.Conv2d(out_channels, out_channels, kernel_size=3, padding=1),
            nn.PReLU(out_channels), nn.PReLU(out_channels),
        )

    def forward(self, x: Tensor) -> Tensor:
        return self.double_conv(x)


class Up(nn.Module):
    """Pixel-shuffle upsampling of the coarse map, concatenated after the skip features, then `DoubleConv`."""

    def __init__(self, in_channels: int, out_channels: int, upscale_factor: int = 2):
        super().__init__()
        self.up = nn.PixelShuffle(upscale_factor=upscale_factor)
        self.conv = DoubleConv(in_channels, out_channels)

    def forward(self, coarse: Tensor, skip: Tensor) -> Tensor:
        return self.conv(torch.cat([skip, self.up(coarse)], dim=1))


class TriplaneResidualEncoder(nn.Module):
    """TriPlaneNet v2's `TriPlane_Encoder`: IR-SE U-Net from 9 image channels to a residual of the flat tri-grid."""

    def __init__(self, triplane_features: int, block_units: tuple[int, ...], block_channels: tuple[int, ...],
                 up_channels: tuple[int, ...]):
        super().__init__()
        d0, d1, d2, d3 = block_channels
        u1, u2, u3, u4 = up_channels
        self.input_layer = _stem(9, d0)
        self.body = _ir_se_body(block_units, block_channels)
        n0, n1, n2 = block_units[:3]
        self.taps = (n0 - 1, n0 + n1 - 1, n0 + n1 + n2 - 1, n0 + n1 + n2)  # c0 (1/2), c1 (1/4), c2 (1/8), c3 (1/16)
        self.up1 = Up(2 * d3, u1, upscale_factor=1)
        self.up2 = Up(u1 // 4 + d2, u2)
        self.up3 = Up(u2 // 4 + d1, u3)
        self.up4 = Up(u3 // 4 + d0, u4)
        self.up5 = nn.PixelShuffle(upscale_factor=2)
        t = triplane_features
        self.final_head_two = nn.Sequential(
            nn.Conv2d(t + u4 // 4, t, kernel_size=3, padding=1), nn.PReLU(t),
            nn.Conv2d(t, t, kernel_size=3, padding=1), nn.PReLU(t), nn.Conv2d(t, t, kernel_size=1),
        )

    def forward(self, x: Tensor, planes: Tensor) -> Tensor:  # [B, 9, S, S], [B, 3CD, R, R] -> [B, 3CD, R, R]
        x = self.input_layer(x)
        skips = {}
        for i, unit in enumerate(self.body):
            x = unit(x)
            if i in self.taps:
                skips[self.taps.index(i)] = x
        c0, c1, c2, c3 = (skips[k] for k in range(4))
        y = self.up5(self.up4(self.up3(self.up2(self.up1(x, c3), c2), c1), c0))
        if y.shape[-1] != planes.shape[-1]:  # encoder input and tri-grid sizes differ (official: both 256)
            y = F.interpolate(y, size=planes.shape[-2:], mode="bilinear", align_corners=False)
        return planes + self.final_head_two(torch.cat([planes, y], dim=1))


class TwoStageEncoder(nn.Module):
    """One encoder of the pair: `psp_encoder` (w+ offsets from `latent_avg`) then `triplanenet_encoder` (residual)."""

    def __init__(self, num_ws: int, w_dim: int, triplane_features: int, input_size: int, block_units: tuple[int, ...],
                 block_channels: tuple[int, ...], up_channels: tuple[int, ...]):
        super().__init__()
        self.psp_encoder = GradualStyleEncoder(num_ws, w_dim, input_size, block_units, block_channels)
        self.triplanenet_encoder = TriplaneResidualEncoder(triplane_features, block_units, block_channels, up_channels)
        self.register_buffer("latent_avg", torch.zeros(num_ws, w_dim))

    def forward(self, x: Tensor, x_mirror: Tensor, label: Tensor, label_mirror: Tensor, generator: nn.Module) -> Triplane:
        """Images `[B, 3, S, S]` in [-1, 1] (and mirrored), labels `[B, 25]` -> tri-grid carrying its latents."""
        ws = self.psp_encoder(x) + self.latent_avg  # eq. (1): w+ = E(I), relative to the average latent
        first = generator.synthesize(ws)
        size = x.shape[-2:]
        both = generator.render(Triplane(first.planes.repeat(2, *[1] * 5), ws=None), ws.repeat(2, 1, 1),
                                torch.cat([label, label_mirror]))[0]
        # TriPlaneNet averages the super-resolved render down to the encoder size; [0, 1] -> [-1, 1].
        both = F.adaptive_avg_pool2d(both, size) * 2 - 1
        y, y_mirror = both.chunk(2)
        residual_input = torch.cat([y, x - y, x_mirror - y_mirror], dim=1)
        planes = self.triplanenet_encoder(residual_input, first.to_backbone())
        return Triplane.from_backbone(planes, first.channels, first.depth, ws=ws)
