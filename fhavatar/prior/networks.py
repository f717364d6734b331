"""StyleGAN2 building blocks of PanoHead's generator, with the official module and parameter names.

Attribute names, parameter shapes, buffers (`resample_filter`, `noise_const`, `w_avg`) and initialisation follow
EG3D/PanoHead's `training/networks_stylegan2.py`, so an official state dict loads with `strict=True`:

- `FullyConnectedLayer`: `weight [out, in]`, `bias [out]`, with run-time gains `lr_multiplier / sqrt(in)` and
  `lr_multiplier` (the "equalised learning rate": stored weights are N(0, 1/lr_multiplier²)).
- `MappingNetwork`: `embed` (the camera label), `fc0..fc{L-1}`, `w_avg`; z and the label embedding are
  2nd-moment normalised and concatenated; the output is broadcast to `num_ws` latents; truncation lerps towards
  `w_avg`.
- `SynthesisLayer`: `affine` (w -> styles, bias init 1), `weight [O, I, k, k]`, `bias`, `noise_const [R, R]`,
  `noise_strength []`, `resample_filter [4, 4]`; modulated conv -> noise -> bias + lrelu (gain √2, clamp).
- `ToRGBLayer`: 1x1 modulated conv without demodulation, styles scaled by `1 / sqrt(in)`.
- `SynthesisBlock` `b{res}`: `const` (first block), `conv0` (2x up), `conv1`, `torgb` ('skip' architecture: the
  image is upsampled with the FIR filter and the block's RGB added), `skip` ('resnet').
- `SynthesisNetwork`: blocks `b4 .. b{R}` with `min(channel_base // res, channel_max)` channels; each block
  consumes `num_conv + num_torgb` latents with a stride of `num_conv`, so `num_ws = 2 * log2(R) - 2`.
- `OSGDecoder` (EG3D/PanoHead `training/triplane.py`): `net.0` FC(C -> 64), softplus, `net.2` FC(64 -> 1 + C_out);
  channel 0 is the raw density.
- `Superresolution` (`SuperresolutionHybrid8XDC` for 512²): `block0`, `block1`... doubling `SynthesisBlock`s fed
  with the last latent, after resizing the rendered features to `input_resolution` (bilinear, antialiased).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .ops import ACTIVATIONS, bias_act, conv2d_resample, modulated_conv2d, normalize_2nd_moment, setup_filter, upsample2d

__all__ = [
    "Conv2dLayer",
    "FullyConnectedLayer",
    "MappingNetwork",
    "OSGDecoder",
    "StyleGAN2Backbone",
    "Superresolution",
    "SynthesisBlock",
    "SynthesisLayer",
    "SynthesisNetwork",
    "ToRGBLayer",
]

NOISE_MODES = ("const", "random", "none")
DEFAULT_RESAMPLE_FILTER = (1, 3, 3, 1)


class FullyConnectedLayer(nn.Module):
    """A dense layer with equalised learning rate and a fused bias + activation."""

    def __init__(self, in_features: int, out_features: int, bias: bool = True, activation: str = "linear",
                 lr_multiplier: float = 1.0, bias_init: float = 0.0):
        super().__init__()
        self.in_features, self.out_features, self.activation = in_features, out_features, activation
        self.weight = nn.Parameter(torch.randn(out_features, in_features) / lr_multiplier)
        self.bias = nn.Parameter(torch.full([out_features], float(bias_init))) if bias else None
        self.weight_gain = lr_multiplier / math.sqrt(in_features)
        self.bias_gain = lr_multiplier

    def forward(self, x: Tensor) -> Tensor:  # [N, in] -> [N, out]
        w = self.weight.to(x.dtype) * self.weight_gain
        b = self.bias.to(x.dtype) * self.bias_gain if self.bias is not None else None
        if self.activation == "linear" and b is not None:
            return torch.addmm(b.unsqueeze(0), x, w.t())
        return bias_act(x.matmul(w.t()), b, act=self.activation)

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, activation={self.activation}"


class Conv2dLayer(nn.Module):
    """A convolution with equalised learning rate, FIR up/down-sampling and bias + activation (resnet skips)."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, bias: bool = True, activation: str = "linear",
                 up: int = 1, down: int = 1, resample_filter: Sequence[int] = DEFAULT_RESAMPLE_FILTER,
                 conv_clamp: float | None = None):
        super().__init__()
        self.activation, self.up, self.down, self.conv_clamp = activation, up, down, conv_clamp
        self.register_buffer("resample_filter", setup_filter(resample_filter))
        self.padding = kernel_size // 2
        self.weight_gain = 1 / math.sqrt(in_channels * kernel_size**2)
        self.act_gain = ACTIVATIONS[activation].gain
        self.weight = nn.Parameter(torch.randn(out_channels, in_channels, kernel_size, kernel_size))
        self.bias = nn.Parameter(torch.zeros(out_channels)) if bias else None

    def forward(self, x: Tensor, gain: float = 1.0) -> Tensor:
        w = self.weight * self.weight_gain
        x = conv2d_resample(x, w.to(x.dtype), self.resample_filter, up=self.up, down=self.down, padding=self.padding,
                            flip_weight=self.up == 1)
        clamp = self.conv_clamp * gain if self.conv_clamp is not None else None
        b = self.bias.to(x.dtype) if self.bias is not None else None
        return bias_act(x, b, act=self.activation, gain=self.act_gain * gain, clamp=clamp)


class MappingNetwork(nn.Module):
    """z (+ camera label c) -> w, broadcast to `num_ws` latents (StyleGAN2 mapping, conditioned as in EG3D)."""

    def __init__(self, z_dim: int, c_dim: int, w_dim: int, num_ws: int | None, num_layers: int = 8,
                 embed_features: int | None = None, layer_features: int | None = None, activation: str = "lrelu",
                 last_activation: str | None = None, lr_multiplier: float = 0.01, w_avg_beta: float | None = 0.998):
        super().__init__()
        self.z_dim, self.c_dim, self.w_dim, self.num_ws, self.num_layers = z_dim, c_dim, w_dim, num_ws, num_layers
        embed_features = w_dim if embed_features is None else embed_features
        embed_features = 0 if c_dim == 0 else embed_features
        layer_features = w_dim if layer_features is None else layer_features
        features = [z_dim + embed_features] + [layer_features] * (num_layers - 1) + [w_dim]
        if c_dim > 0:
            self.embed = FullyConnectedLayer(c_dim, embed_features)
        for idx in range(num_layers):
            act = last_activation if (idx == num_layers - 1 and last_activation) else activation
            layer = FullyConnectedLayer(features[idx], features[idx + 1], activation=act, lr_multiplier=lr_multiplier)
            setattr(self, f"fc{idx}", layer)
        if num_ws is not None and w_avg_beta is not None:
            self.register_buffer("w_avg", torch.zeros(w_dim))

    def forward(self, z: Tensor, c: Tensor, truncation_psi: float = 1.0, truncation_cutoff: int | None = None) -> Tensor:
        parts = []
        if self.z_dim > 0:
            parts.append(normalize_2nd_moment(z.to(torch.float32)))
        if self.c_dim > 0:
            parts.append(normalize_2nd_moment(self.embed(c.to(torch.float32))))
        x = torch.cat(parts, dim=1)
        for idx in range(self.num_layers):
            x = getattr(self, f"fc{idx}")(x)
        if self.num_ws is not None:
            x = x.unsqueeze(1).repeat(1, self.num_ws, 1)
        if truncation_psi != 1:
            if not hasattr(self, "w_avg"):
                raise ValueError("`truncation_psi` != 1 needs the tracked average latent `w_avg` (w_avg_beta is None).")
            if self.num_ws is None or truncation_cutoff is None:
                x = self.w_avg.lerp(x, truncation_psi)
            else:
                x = torch.cat([self.w_avg.lerp(x[:, :truncation_cutoff], truncation_psi), x[:, truncation_cutoff:]], dim=1)
        return x


class SynthesisLayer(nn.Module):
    """Modulated 3x3 conv (optionally 2x up), per-pixel noise, bias + lrelu."""

    def __init__(self, in_channels: int, out_channels: int, w_dim: int, resolution: int, kernel_size: int = 3, up: int = 1,
                 use_noise: bool = True, activation: str = "lrelu", resample_filter: Sequence[int] = DEFAULT_RESAMPLE_FILTER,
                 conv_clamp: float | None = None):
        super().__init__()
        self.in_channels, self.out_channels, self.resolution, self.up = in_channels, out_channels, resolution, up
        self.use_noise, self.activation, self.conv_clamp = use_noise, activation, conv_clamp
        self.register_buffer("resample_filter", setup_filter(resample_filter))
        self.padding = kernel_size // 2
        self.act_gain = ACTIVATIONS[activation].gain
        self.affine = FullyConnectedLayer(w_dim, in_channels, bias_init=1)
        self.weight = nn.Parameter(torch.randn(out_channels, in_channels, kernel_size, kernel_size))
        if use_noise:
            self.register_buffer("noise_const", torch.randn(resolution, resolution))
            self.noise_strength = nn.Parameter(torch.zeros([]))
        self.bias = nn.Parameter(torch.zeros(out_channels))

    def forward(self, x: Tensor, w: Tensor, noise_mode: str = "const", fused_modconv: bool = True, gain: float = 1.0,
                generator: torch.Generator | None = None) -> Tensor:
        if noise_mode not in NOISE_MODES:
            raise ValueError(f"`noise_mode` must be one of {NOISE_MODES}, got {noise_mode!r}.")
        styles = self.affine(w)
        noise = None
        if self.use_noise and noise_mode == "random":
            shape = (x.shape[0], 1, self.resolution, self.resolution)
            noise = torch.randn(shape, generator=generator, device=x.device, dtype=x.dtype) * self.noise_strength
        elif self.use_noise and noise_mode == "const":
            noise = self.noise_const * self.noise_strength
        x = modulated_conv2d(x, self.weight, styles, noise=noise, up=self.up, padding=self.padding,
                             resample_filter=self.resample_filter, flip_weight=self.up == 1, fused_modconv=fused_modconv)
        clamp = self.conv_clamp * gain if self.conv_clamp is not None else None
        return bias_act(x, self.bias.to(x.dtype), act=self.activation, gain=self.act_gain * gain, clamp=clamp)


class ToRGBLayer(nn.Module):
    """A 1x1 modulated conv to image channels, without demodulation."""

    def __init__(self, in_channels: int, out_channels: int, w_dim: int, kernel_size: int = 1, conv_clamp: float | None = None):
        super().__init__()
        self.conv_clamp = conv_clamp
        self.affine = FullyConnectedLayer(w_dim, in_channels, bias_init=1)
        self.weight = nn.Parameter(torch.randn(out_channels, in_channels, kernel_size, kernel_size))
        self.bias = nn.Parameter(torch.zeros(out_channels))
        self.weight_gain = 1 / math.sqrt(in_channels * kernel_size**2)

    def forward(self, x: Tensor, w: Tensor, fused_modconv: bool = True) -> Tensor:
        styles = self.affine(w) * self.weight_gain
        x = modulated_conv2d(x, self.weight, styles, demodulate=False, fused_modconv=fused_modconv)
        return bias_act(x, self.bias.to(x.dtype), clamp=self.conv_clamp)


class SynthesisBlock(nn.Module):
    """One resolution of the StyleGAN2 synthesis network ('orig', 'skip' or 'resnet' architecture)."""

    def __init__(self, in_channels: int, out_channels: int, w_dim: int, resolution: int, img_channels: int, is_last: bool,
                 architecture: str = "skip", resample_filter: Sequence[int] = DEFAULT_RESAMPLE_FILTER,
                 conv_clamp: float | None = None, use_noise: bool = True):
        super().__init__()
        if architecture not in ("orig", "skip", "resnet"):
            raise ValueError(f"`architecture` must be 'orig', 'skip' or 'resnet', got {architecture!r}.")
        self.in_channels, self.resolution, self.img_channels = in_channels, resolution, img_channels
        self.is_last, self.architecture = is_last, architecture
        self.register_buffer("resample_filter", setup_filter(resample_filter))
        self.num_conv = self.num_torgb = 0
        layer = dict(w_dim=w_dim, resolution=resolution, conv_clamp=conv_clamp, use_noise=use_noise)
        if in_channels == 0:
            self.const = nn.Parameter(torch.randn(out_channels, resolution, resolution))
        else:
            self.conv0 = SynthesisLayer(in_channels, out_channels, up=2, resample_filter=resample_filter, **layer)
            self.num_conv += 1
        self.conv1 = SynthesisLayer(out_channels, out_channels, **layer)
        self.num_conv += 1
        if is_last or architecture == "skip":
            self.torgb = ToRGBLayer(out_channels, img_channels, w_dim=w_dim, conv_clamp=conv_clamp)
            self.num_torgb += 1
        if in_channels != 0 and architecture == "resnet":
            self.skip = Conv2dLayer(in_channels, out_channels, kernel_size=1, bias=False, up=2, resample_filter=resample_filter)

    def forward(self, x: Tensor | None, img: Tensor | None, ws: Tensor, **layer_kwargs) -> tuple[Tensor, Tensor | None]:
        if ws.shape[1] != self.num_conv + self.num_torgb:
            need = self.num_conv + self.num_torgb
            raise ValueError(f"SynthesisBlock b{self.resolution} needs {need} latents, got {ws.shape[1]}.")
        w_iter = iter(ws.unbind(dim=1))
        if self.in_channels == 0:
            x = self.const.unsqueeze(0).repeat(ws.shape[0], 1, 1, 1)
            x = self.conv1(x, next(w_iter), **layer_kwargs)
        elif self.architecture == "resnet":
            y = self.skip(x, gain=math.sqrt(0.5))
            x = self.conv0(x, next(w_iter), **layer_kwargs)
            x = y + self.conv1(x, next(w_iter), gain=math.sqrt(0.5), **layer_kwargs)
        else:
            x = self.conv0(x, next(w_iter), **layer_kwargs)
            x = self.conv1(x, next(w_iter), **layer_kwargs)
        if img is not None:
            img = upsample2d(img, self.resample_filter)
        if self.is_last or self.architecture == "skip":
            fused = layer_kwargs.get("fused_modconv", True)
            y = self.torgb(x, next(w_iter), fused_modconv=fused).to(torch.float32)
            img = img + y if img is not None else y
        return x, img


class SynthesisNetwork(nn.Module):
    """Blocks b4 .. b{img_resolution}: latents `[B, num_ws, w_dim]` -> image `[B, img_channels, R, R]`."""

    def __init__(self, w_dim: int, img_resolution: int, img_channels: int, channel_base: int = 32768, channel_max: int = 512,
                 architecture: str = "skip", conv_clamp: float | None = None, use_noise: bool = True):
        super().__init__()
        if img_resolution < 4 or img_resolution & (img_resolution - 1):
            raise ValueError(f"`img_resolution` must be a power of two >= 4, got {img_resolution}.")
        self.w_dim, self.img_resolution, self.img_channels = w_dim, img_resolution, img_channels
        self.block_resolutions = [2**i for i in range(2, int(math.log2(img_resolution)) + 1)]
        channels = {res: min(channel_base // res, channel_max) for res in self.block_resolutions}
        self.num_ws = 0
        for res in self.block_resolutions:
            is_last = res == img_resolution
            block = SynthesisBlock(channels[res // 2] if res > 4 else 0, channels[res], w_dim=w_dim, resolution=res,
                                   img_channels=img_channels, is_last=is_last, architecture=architecture,
                                   conv_clamp=conv_clamp, use_noise=use_noise)
            self.num_ws += block.num_conv + (block.num_torgb if is_last else 0)
            setattr(self, f"b{res}", block)

    def forward(self, ws: Tensor, **layer_kwargs) -> Tensor:
        if ws.dim() != 3 or ws.shape[1:] != (self.num_ws, self.w_dim):
            raise ValueError(f"`ws` must have shape [B, {self.num_ws}, {self.w_dim}], got {list(ws.shape)}.")
        ws = ws.to(torch.float32)
        x = img = None
        w_idx = 0
        for res in self.block_resolutions:
            block = getattr(self, f"b{res}")
            # Consecutive blocks share one latent: a block's torgb uses the next block's first conv latent.
            x, img = block(x, img, ws.narrow(1, w_idx, block.num_conv + block.num_torgb), **layer_kwargs)
            w_idx += block.num_conv
        return img


class StyleGAN2Backbone(nn.Module):
    """`mapping` + `synthesis`: PanoHead's tri-grid generator backbone (official `Generator`)."""

    def __init__(self, z_dim: int, c_dim: int, w_dim: int, img_resolution: int, img_channels: int,
                 mapping_layers: int = 2, **synthesis_kwargs):
        super().__init__()
        self.synthesis = SynthesisNetwork(w_dim, img_resolution, img_channels, **synthesis_kwargs)
        self.num_ws = self.synthesis.num_ws
        self.mapping = MappingNetwork(z_dim, c_dim, w_dim, num_ws=self.num_ws, num_layers=mapping_layers)


class OSGDecoder(nn.Module):
    """The tri-plane decoder MLP: aggregated features -> (raw density, colour features)."""

    def __init__(self, n_features: int, hidden_dim: int = 64, output_dim: int = 32, activation: str = "none",
                 lr_multiplier: float = 1.0):
        super().__init__()
        if activation not in ("none", "sigmoid", "lrelu"):
            raise ValueError(f"`activation` must be 'none', 'sigmoid' or 'lrelu', got {activation!r}.")
        self.activation = activation
        self.net = nn.Sequential(
            FullyConnectedLayer(n_features, hidden_dim, lr_multiplier=lr_multiplier),
            nn.Softplus(),
            FullyConnectedLayer(hidden_dim, 1 + output_dim, lr_multiplier=lr_multiplier),
        )

    def forward(self, features: Tensor) -> tuple[Tensor, Tensor]:  # [B, P, C] -> rgb [B, P, C_out], sigma [B, P, 1]
        b, p, c = features.shape
        x = self.net(features.reshape(b * p, c)).view(b, p, -1)
        rgb, sigma = x[..., 1:], x[..., :1]
        if self.activation == "sigmoid":  # EG3D: colours in (-0.001, 1.001)
            rgb = torch.sigmoid(rgb) * (1 + 2 * 0.001) - 0.001
        elif self.activation == "lrelu":
            rgb = F.leaky_relu(rgb, 0.2) * math.sqrt(2)
        return rgb, sigma


class Superresolution(nn.Module):
    """Doubling `SynthesisBlock`s from `input_resolution` to `img_resolution` (EG3D's SuperresolutionHybrid*X)."""

    def __init__(self, channels: int, img_resolution: int, input_resolution: int, block_channels: Sequence[int],
                 w_dim: int = 512, conv_clamp: float | None = 256, antialias: bool = True, use_noise: bool = True):
        super().__init__()
        num_blocks = int(round(math.log2(img_resolution / input_resolution)))
        if num_blocks < 1 or input_resolution * 2**num_blocks != img_resolution or len(block_channels) != num_blocks:
            raise ValueError(
                f"`img_resolution` ({img_resolution}) must be `input_resolution` ({input_resolution}) times 2^n with "
                f"n = len(block_channels) = {len(block_channels)} >= 1."
            )
        self.input_resolution, self.antialias = input_resolution, antialias
        in_ch = channels
        for i, out_ch in enumerate(block_channels):
            setattr(self, f"block{i}", SynthesisBlock(in_ch, out_ch, w_dim=w_dim, resolution=input_resolution * 2 ** (i + 1),
                                                      img_channels=3, is_last=i == num_blocks - 1, conv_clamp=conv_clamp,
                                                      use_noise=use_noise))
            in_ch = out_ch
        self.num_blocks = num_blocks

    def forward(self, rgb: Tensor, x: Tensor, ws: Tensor, **layer_kwargs) -> Tensor:  # -> [B, 3, img_res, img_res]
        ws = ws[:, -1:, :].repeat(1, 3, 1)  # every block: conv0, conv1, torgb from the last latent
        if x.shape[-1] != self.input_resolution:
            size = (self.input_resolution, self.input_resolution)
            x = F.interpolate(x, size=size, mode="bilinear", align_corners=False, antialias=self.antialias)
            rgb = F.interpolate(rgb, size=size, mode="bilinear", align_corners=False, antialias=self.antialias)
        for i in range(self.num_blocks):
            x, rgb = getattr(self, f"block{i}")(x, rgb, ws, **layer_kwargs)
        return rgb
