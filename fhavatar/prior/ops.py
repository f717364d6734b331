"""StyleGAN's custom ops in plain PyTorch: `bias_act`, `upfirdn2d`, `filtered_lrelu`, `conv2d_resample`, modulated conv.

StyleGAN2/3 (and so EG3D and PanoHead) ship these as CUDA extensions compiled at run time, each with a slow
reference path. Here they are written once with standard PyTorch ops, so the prior runs on CPU and GPU without
compiling anything. The semantics follow the official ops (read from NVlabs' `torch_utils/ops/*.py`):

- `bias_act`: `clamp(act(x + b, alpha) * gain, -clamp, clamp)`; every activation has a default `alpha` and
  `gain` (`ACTIVATIONS`), e.g. lrelu: alpha 0.2, gain √2.
- `upfirdn2d`: upsample by inserting zeros, pad (negative padding crops), convolve with a FIR filter (a true
  convolution: the filter is flipped unless `flip_filter`), keep every `down`-th sample. A 1-D filter is applied
  separably; its `gain` is split between the two passes.
- `setup_filter`: a list like `[1, 3, 3, 1]` becomes the normalised outer product (a `[4, 4]` buffer in the
  official state dicts; filters of 8+ taps stay 1-D/separable).
- `conv2d_resample`: convolution fused with FIR up/down-sampling, padding counted on the upsampled image;
  upsampling uses a transposed convolution, which equals "insert zeros, then convolve".
- `modulated_conv2d`: StyleGAN2's weight (de)modulation, as one grouped convolution (`fused_modconv`) or as
  input/output scaling around a shared convolution; both give the same result.
- `filtered_lrelu`: StyleGAN3's `bias -> upfirdn(up) -> lrelu*gain -> clamp -> upfirdn(down)`.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import NamedTuple, Union

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = [
    "ACTIVATIONS",
    "bias_act",
    "conv2d_resample",
    "downsample2d",
    "filtered_lrelu",
    "modulated_conv2d",
    "normalize_2nd_moment",
    "setup_filter",
    "upfirdn2d",
    "upsample2d",
]

IntPair = Union[int, Sequence[int]]
Padding = Union[int, Sequence[int]]


class Activation(NamedTuple):
    func: Callable[[Tensor, float], Tensor]
    alpha: float  # default shape parameter
    gain: float  # default output gain (√2 for the ReLU family keeps the signal variance)


#: The activations of StyleGAN's `bias_act` with their default alpha and gain.
ACTIVATIONS: dict[str, Activation] = {
    "linear": Activation(lambda x, a: x, 0.0, 1.0),
    "relu": Activation(lambda x, a: F.relu(x), 0.0, math.sqrt(2)),
    "lrelu": Activation(lambda x, a: F.leaky_relu(x, a), 0.2, math.sqrt(2)),
    "tanh": Activation(lambda x, a: torch.tanh(x), 0.0, 1.0),
    "sigmoid": Activation(lambda x, a: torch.sigmoid(x), 0.0, 1.0),
    "elu": Activation(lambda x, a: F.elu(x), 0.0, 1.0),
    "selu": Activation(lambda x, a: F.selu(x), 0.0, 1.0),
    "softplus": Activation(lambda x, a: F.softplus(x), 0.0, 1.0),
    "swish": Activation(lambda x, a: torch.sigmoid(x) * x, 0.0, math.sqrt(2)),
}


def normalize_2nd_moment(x: Tensor, dim: int = 1, eps: float = 1e-8) -> Tensor:
    """`x / sqrt(mean(x², dim) + eps)`: StyleGAN's pixel norm of latents and label embeddings."""
    return x * (x.square().mean(dim=dim, keepdim=True) + eps).rsqrt()


def bias_act(
    x: Tensor,  # [..., C, ...]
    b: Tensor | None = None,  # [C]
    dim: int = 1,
    act: str = "linear",
    alpha: float | None = None,
    gain: float | None = None,
    clamp: float | None = None,
) -> Tensor:
    """Add a bias along `dim`, apply `act`, scale by `gain` (default: the activation's), clamp to ±`clamp`."""
    if act not in ACTIVATIONS:
        raise ValueError(f"`act` must be one of {sorted(ACTIVATIONS)}, got {act!r}.")
    if clamp is not None and clamp < 0:
        raise ValueError(f"`clamp` must be None or >= 0, got {clamp}.")
    spec = ACTIVATIONS[act]
    if b is not None:
        if b.dim() != 1 or b.shape[0] != x.shape[dim]:
            raise ValueError(f"`b` must have shape [{x.shape[dim]}] (x.shape[{dim}]), got {list(b.shape)}.")
        x = x + b.reshape([-1 if i == dim % x.dim() else 1 for i in range(x.dim())])
    x = spec.func(x, float(spec.alpha if alpha is None else alpha))
    gain = float(spec.gain if gain is None else gain)
    if gain != 1:
        x = x * gain
    if clamp is not None:
        x = x.clamp(-clamp, clamp)
    return x


# ---------------------------------------------------------------------------------------------- FIR filters
def setup_filter(
    f: Sequence[float] | Tensor,
    normalize: bool = True,
    flip_filter: bool = False,
    gain: float = 1.0,
    separable: bool | None = None,
) -> Tensor:  # [fh, fw] or [fw]
    """A FIR filter ready for `upfirdn2d`: a short 1-D list becomes its normalised outer product."""
    f = torch.as_tensor(f, dtype=torch.float32)
    if f.dim() == 0:
        f = f[None]
    if f.dim() not in (1, 2) or f.numel() == 0:
        raise ValueError(f"`f` must be a non-empty 1-D or 2-D filter, got shape {list(f.shape)}.")
    if separable is None:
        separable = f.dim() == 1 and f.numel() >= 8  # the official rule: long filters stay separable
    if f.dim() == 1 and not separable:
        f = torch.outer(f, f)
    if normalize:
        f = f / f.sum()
    if flip_filter:
        f = f.flip(list(range(f.dim())))
    return f * gain ** (f.dim() / 2)


def _pair(name: str, value: IntPair) -> tuple[int, int]:
    if isinstance(value, int):
        return value, value
    value = tuple(value)
    if len(value) != 2:
        raise ValueError(f"`{name}` must be an int or a pair (x, y), got {value!r}.")
    return int(value[0]), int(value[1])


def _padding(padding: Padding) -> tuple[int, int, int, int]:  # (x0, x1, y0, y1)
    if isinstance(padding, int):
        return padding, padding, padding, padding
    padding = tuple(int(p) for p in padding)
    if len(padding) == 2:
        return padding[0], padding[0], padding[1], padding[1]
    if len(padding) == 4:
        return padding  # type: ignore[return-value]
    raise ValueError(f"`padding` must be an int, (px, py) or (x0, x1, y0, y1), got {padding!r}.")


def _filter_size(f: Tensor | None) -> tuple[int, int]:  # (fw, fh)
    if f is None:
        return 1, 1
    return f.shape[-1], f.shape[0]


def upfirdn2d(
    x: Tensor,  # [N, C, H, W]
    f: Tensor | None,  # [fh, fw] or [fw] (separable), None = identity
    up: IntPair = 1,
    down: IntPair = 1,
    padding: Padding = 0,
    flip_filter: bool = False,
    gain: float = 1.0,
) -> Tensor:  # [N, C, H', W']
    """Upsample (zero insertion), pad, FIR-filter and downsample a batch of images.

    The output width is `(W * up_x + pad_x0 + pad_x1 - fw + 1 + down_x - 1) // down_x` (height alike).
    """
    if x.dim() != 4:
        raise ValueError(f"`x` must have shape [N, C, H, W], got {list(x.shape)}.")
    upx, upy = _pair("up", up)
    downx, downy = _pair("down", down)
    if min(upx, upy, downx, downy) < 1:
        raise ValueError(f"`up` and `down` must be >= 1, got up={up!r}, down={down!r}.")
    px0, px1, py0, py1 = _padding(padding)
    if f is None:
        f = torch.ones(1, 1, dtype=x.dtype, device=x.device)
    n, c, h, w = x.shape

    # Upsample by inserting (up - 1) zeros after every sample.
    if upx > 1 or upy > 1:
        x = x.reshape(n, c, h, 1, w, 1)
        x = F.pad(x, [0, upx - 1, 0, 0, 0, upy - 1])
        x = x.reshape(n, c, h * upy, w * upx)
    # Pad with zeros (positive) and crop (negative).
    x = F.pad(x, [max(px0, 0), max(px1, 0), max(py0, 0), max(py1, 0)])
    x = x[:, :, max(-py0, 0) : x.shape[2] - max(-py1, 0), max(-px0, 0) : x.shape[3] - max(-px1, 0)]

    # FIR filter: conv2d computes a correlation, so flip the filter for a true convolution.
    f = (f * gain ** (f.dim() / 2)).to(x.dtype)
    if not flip_filter:
        f = f.flip(list(range(f.dim())))
    if f.dim() == 2:
        x = F.conv2d(x, f[None, None].repeat(c, 1, 1, 1), groups=c)
    else:
        x = F.conv2d(x, f[None, None, None].repeat(c, 1, 1, 1), groups=c)  # along width
        x = F.conv2d(x, f[None, None, :, None].repeat(c, 1, 1, 1), groups=c)  # along height
    return x[:, :, ::downy, ::downx]


def upsample2d(x: Tensor, f: Tensor | None, up: IntPair = 2, padding: Padding = 0, flip_filter: bool = False,
               gain: float = 1.0) -> Tensor:
    """Upsample by `up` with FIR filter `f`, padded so that the output is exactly `up` times larger."""
    upx, upy = _pair("up", up)
    px0, px1, py0, py1 = _padding(padding)
    fw, fh = _filter_size(f)
    pad = [px0 + (fw + upx - 1) // 2, px1 + (fw - upx) // 2, py0 + (fh + upy - 1) // 2, py1 + (fh - upy) // 2]
    return upfirdn2d(x, f, up=(upx, upy), padding=pad, flip_filter=flip_filter, gain=gain * upx * upy)


def downsample2d(x: Tensor, f: Tensor | None, down: IntPair = 2, padding: Padding = 0, flip_filter: bool = False,
                 gain: float = 1.0) -> Tensor:
    """Downsample by `down` with FIR filter `f`, padded so that the output is exactly `down` times smaller."""
    downx, downy = _pair("down", down)
    px0, px1, py0, py1 = _padding(padding)
    fw, fh = _filter_size(f)
    pad = [px0 + (fw - downx + 1) // 2, px1 + (fw - downx) // 2, py0 + (fh - downy + 1) // 2, py1 + (fh - downy) // 2]
    return upfirdn2d(x, f, down=(downx, downy), padding=pad, flip_filter=flip_filter, gain=gain)


# ---------------------------------------------------------------------------------------------- convolutions
def _conv(x: Tensor, w: Tensor, stride: int = 1, padding: tuple[int, int] = (0, 0), groups: int = 1,
          transpose: bool = False, flip_weight: bool = True) -> Tensor:
    """conv2d (a correlation) or, with `flip_weight=False`, a true convolution; optionally transposed."""
    if not flip_weight and (w.shape[-1] > 1 or w.shape[-2] > 1):
        w = w.flip([2, 3])
    if transpose:
        return F.conv_transpose2d(x, w, stride=stride, padding=padding, groups=groups)
    return F.conv2d(x, w, stride=stride, padding=padding, groups=groups)


def conv2d_resample(
    x: Tensor,  # [N, C_in, H, W]
    w: Tensor,  # [C_out, C_in / groups, kh, kw]
    f: Tensor | None = None,  # FIR filter from `setup_filter`, needed when up/down > 1
    up: int = 1,
    down: int = 1,
    padding: Padding = 0,  # counted on the upsampled image
    groups: int = 1,
    flip_weight: bool = True,  # True: correlation (torch's conv2d); False: true convolution
    flip_filter: bool = False,
) -> Tensor:  # [N, C_out, H * up / down, W * up / down] for 'same' padding
    """2-D convolution fused with FIR upsampling/downsampling (StyleGAN2's `conv2d_resample`)."""
    if not (isinstance(up, int) and up >= 1 and isinstance(down, int) and down >= 1):
        raise ValueError(f"`up` and `down` must be ints >= 1, got up={up!r}, down={down!r}.")
    if (up > 1 or down > 1) and f is None:
        raise ValueError("`f` (a FIR filter from setup_filter) is required when `up` or `down` is > 1.")
    out_channels, in_per_group, kh, kw = w.shape
    fw, fh = _filter_size(f)
    px0, px1, py0, py1 = _padding(padding)
    # The FIR filter's own padding, so that an 'odd' kernel keeps the image centred.
    if up > 1:
        px0, px1 = px0 + (fw + up - 1) // 2, px1 + (fw - up) // 2
        py0, py1 = py0 + (fh + up - 1) // 2, py1 + (fh - up) // 2
    if down > 1:
        px0, px1 = px0 + (fw - down + 1) // 2, px1 + (fw - down) // 2
        py0, py1 = py0 + (fh - down + 1) // 2, py1 + (fh - down) // 2

    if kw == 1 and kh == 1 and down > 1 and up == 1:  # 1x1 conv after downsampling: cheaper on fewer pixels
        x = upfirdn2d(x, f, down=down, padding=[px0, px1, py0, py1], flip_filter=flip_filter)
        return _conv(x, w, groups=groups, flip_weight=flip_weight)
    if kw == 1 and kh == 1 and up > 1 and down == 1:  # 1x1 conv before upsampling
        x = _conv(x, w, groups=groups, flip_weight=flip_weight)
        return upfirdn2d(x, f, up=up, padding=[px0, px1, py0, py1], gain=up**2, flip_filter=flip_filter)
    if down > 1 and up == 1:  # filter, then strided conv
        x = upfirdn2d(x, f, padding=[px0, px1, py0, py1], flip_filter=flip_filter)
        return _conv(x, w, stride=down, groups=groups, flip_weight=flip_weight)
    if up > 1:
        # A transposed conv with stride `up` equals zero insertion followed by a true convolution with w,
        # so the weight flip is inverted; the FIR filter then smooths with the remaining padding.
        if groups == 1:
            wt = w.transpose(0, 1)
        else:
            wt = w.reshape(groups, out_channels // groups, in_per_group, kh, kw).transpose(1, 2)
            wt = wt.reshape(groups * in_per_group, out_channels // groups, kh, kw)
        px0, px1, py0, py1 = px0 - (kw - 1), px1 - (kw - up), py0 - (kh - 1), py1 - (kh - up)
        pxt, pyt = max(min(-px0, -px1), 0), max(min(-py0, -py1), 0)
        x = _conv(x, wt, stride=up, padding=(pyt, pxt), groups=groups, transpose=True, flip_weight=not flip_weight)
        x = upfirdn2d(x, f, padding=[px0 + pxt, px1 + pxt, py0 + pyt, py1 + pyt], gain=up**2, flip_filter=flip_filter)
        if down > 1:
            x = upfirdn2d(x, f, down=down, flip_filter=flip_filter)
        return x
    if px0 == px1 and py0 == py1 and px0 >= 0 and py0 >= 0:  # plain conv with symmetric padding
        return _conv(x, w, padding=(py0, px0), groups=groups, flip_weight=flip_weight)
    # General case (asymmetric or negative padding): pad/crop explicitly, then convolve.
    x = upfirdn2d(x, None, padding=[px0, px1, py0, py1], flip_filter=flip_filter)
    return _conv(x, w, groups=groups, flip_weight=flip_weight)


def modulated_conv2d(
    x: Tensor,  # [N, C_in, H, W]
    weight: Tensor,  # [C_out, C_in, kh, kw]
    styles: Tensor,  # [N, C_in]
    noise: Tensor | None = None,  # broadcastable to the output [N, C_out, H', W']
    up: int = 1,
    down: int = 1,
    padding: Padding = 0,
    resample_filter: Tensor | None = None,
    demodulate: bool = True,
    flip_weight: bool = True,
    fused_modconv: bool = True,
) -> Tensor:  # [N, C_out, H', W']
    """StyleGAN2's modulated convolution: scale input channels by `styles`, optionally demodulate.

    Demodulation divides each output channel by the L2 norm of its modulated weights (+1e-8), which keeps
    unit-variance activations. `fused_modconv` runs one grouped conv with per-sample weights; otherwise the
    styles and demodulation coefficients scale the activations around one shared convolution (same result).
    """
    n = x.shape[0]
    out_channels, in_channels, kh, kw = weight.shape
    if x.dim() != 4 or x.shape[1] != in_channels:
        raise ValueError(f"`x` must have shape [N, {in_channels}, H, W], got {list(x.shape)}.")
    if styles.shape != (n, in_channels):
        raise ValueError(f"`styles` must have shape [{n}, {in_channels}], got {list(styles.shape)}.")
    if x.dtype == torch.float16 and demodulate:  # pre-normalise so that fp16 cannot overflow
        weight = weight * (1 / math.sqrt(in_channels * kh * kw) / weight.norm(float("inf"), dim=[1, 2, 3], keepdim=True))
        styles = styles / styles.norm(float("inf"), dim=1, keepdim=True)

    w = dcoefs = None
    if demodulate or fused_modconv:
        w = weight.unsqueeze(0) * styles.reshape(n, 1, -1, 1, 1)  # [N, O, I, kh, kw]
    if demodulate:
        dcoefs = (w.square().sum(dim=[2, 3, 4]) + 1e-8).rsqrt()  # [N, O]
    if not fused_modconv:
        x = x * styles.to(x.dtype).reshape(n, -1, 1, 1)
        x = conv2d_resample(x, weight.to(x.dtype), resample_filter, up=up, down=down, padding=padding, flip_weight=flip_weight)
        if demodulate:
            x = x * dcoefs.to(x.dtype).reshape(n, -1, 1, 1)
        if noise is not None:
            x = x + noise.to(x.dtype)
        return x

    if demodulate:
        w = w * dcoefs.reshape(n, -1, 1, 1, 1)
    x = x.reshape(1, -1, *x.shape[2:])
    w = w.reshape(-1, in_channels, kh, kw)
    x = conv2d_resample(x, w.to(x.dtype), resample_filter, up=up, down=down, padding=padding, groups=n, flip_weight=flip_weight)
    x = x.reshape(n, -1, *x.shape[2:])
    if noise is not None:
        x = x + noise.to(x.dtype)
    return x


def filtered_lrelu(
    x: Tensor,  # [N, C, H, W]
    fu: Tensor | None = None,  # upsampling FIR filter
    fd: Tensor | None = None,  # downsampling FIR filter
    b: Tensor | None = None,  # [C]
    up: int = 1,
    down: int = 1,
    padding: Padding = 0,
    gain: float = math.sqrt(2),
    slope: float = 0.2,
    clamp: float | None = None,
    flip_filter: bool = False,
) -> Tensor:
    """StyleGAN3's alias-free activation: bias, upsample with `fu`, leaky ReLU × gain, clamp, downsample with `fd`.

    The output size is `(W * up + px0 + px1 - (fu_w - 1) - (fd_w - 1) + down - 1) // down` (height alike).
    """
    if x.dim() != 4:
        raise ValueError(f"`x` must have shape [N, C, H, W], got {list(x.shape)}.")
    px0, px1, py0, py1 = _padding(padding)
    x = bias_act(x, b)
    x = upfirdn2d(x, fu, up=up, padding=[px0, px1, py0, py1], gain=up**2, flip_filter=flip_filter)
    x = bias_act(x, act="lrelu", alpha=slope, gain=gain, clamp=clamp)
    return upfirdn2d(x, fd, down=down, flip_filter=flip_filter)
