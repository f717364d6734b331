"""Symmetric UV space feature fusion at one scale (paper §3.4, Fig. 3, eq. 3–5) and the UV mirror maps it uses.

**Mirror maps.** The fusion needs the left/right mirror of every texel at every scale. `resolve_mirror_index`
turns what the caller has — a `UVLayout` (its `mirror_index`, and `valid` for pooling), a mirror index tensor
`[K, K, 2]` or any flip callable (e.g. `layout.flip`, applied once to a map of texel coordinates) — into a
full-resolution index; `downsample_mirror_index` derives the index of a map `f` times smaller by averaging the
mirror coordinates of the valid texels of each `f×f` block and taking the block that holds the average. Where the
full-resolution mirror is the horizontal flip `(i, j) -> (i, K-1-j)` (u -> 1-u, the atlas convention of
`UVLayout`), this gives exactly the horizontal flip at every scale; near the atlas' irregular borders it follows
the layout's nearest-valid fix-ups. `flip_uv` gathers a map through an index (the F_↔ of eq. 4).

**Fusion at scale i** (`SymmetricUVFusion`), on maps of size R = R_i:

1. F_l^i is masked by the visibility (M_v^i > 0), so invisible texels never contribute, whatever they hold.
2. Patch tokens: F_g^i and F_l^i are embedded by `P×P`, stride-P convolutions (P = `patch_size`, larger at finer
   scales so that every scale has the same token grid R/P).
3. Two transformer blocks (`FusionBlock`) with convolutions instead of linear layers: each query token of F_g^i
   attends to the `w×w` window of F_l^i tokens around the same place **and** the `w×w` window around the
   mirrored place (F_l^i flipped through the token-level mirror map), `2·w²` keys per query, masked to the
   visible tokens (a token is visible when any of its texels is). A query with no visible key gets zero.
4. F_c^i = F_g^i + Conv3×3(nearest-upsample(tokens)) (the transformer output back at size R).
5. (all scales but the coarsest) M_o = sigmoid(head([F_c^i, F_l^i])); F_lm = M_o ⊙ F_l (eq. 3);
   F_m = F_lm + F_↔(F_lm) ⊙ (1 − M_v ⊙ M_o) (eq. 4): where the local feature is missing (invisible) or judged
   wrong (M_o low), the mirrored masked feature fills in; F_f^i = Conv3×3([F_c^i, F_m]) (eq. 5).

Ablations: `use_transformer=False` ("w/o T") replaces each transformer block by a residual convolution on the
concatenated tokens `[q, F_l, F_↔(F_l)]` (no window attention, no masking beyond step 1); `use_symmetry=False`
("w/o Sym.") drops the mirrored keys/values and the flip term of eq. 4 (F_m = F_lm).

Every operation is either per-texel, a convolution, a nearest/strided resampling or a window attention whose
relative-position bias depends on |Δx| only, so with left-right symmetric kernels the whole module is exactly
mirror-equivariant on a horizontal-flip mirror map (the tests check this wiring).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Union

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .layers import ConvBlock, LayerNorm2d

__all__ = [
    "FusionBlock",
    "FusionOutput",
    "SymmetricUVFusion",
    "WindowCrossAttention",
    "downsample_mirror_index",
    "flip_uv",
    "horizontal_mirror_index",
    "resolve_mirror_index",
]

MirrorLike = Union[Tensor, Callable[[Tensor], Tensor], nn.Module]


# ---------------------------------------------------------------------------------------------- mirror maps
def horizontal_mirror_index(resolution: int, device=None) -> Tensor:  # -> [R, R, 2] long
    """The plain horizontal-flip mirror index `(i, j) -> (i, R-1-j)` of an `R×R` map."""
    r = torch.arange(resolution, device=device)
    rows, cols = torch.meshgrid(r, r.flip(0), indexing="ij")
    return torch.stack([rows, cols], -1)


def _check_index(index: Tensor, resolution: int, name: str) -> Tensor:
    if index.shape != (resolution, resolution, 2):
        raise ValueError(f"`{name}` must have shape [{resolution}, {resolution}, 2], got {list(index.shape)}.")
    if index.is_floating_point() or index.is_complex() or index.dtype == torch.bool:
        raise ValueError(f"`{name}` must hold integer (row, col) indices, got dtype {index.dtype}.")
    if index.numel() and (int(index.min()) < 0 or int(index.max()) >= resolution):
        raise ValueError(
            f"`{name}` must hold indices in [0, {resolution}), got values in [{int(index.min())}, {int(index.max())}]."
        )
    return index.long()


def resolve_mirror_index(
    mirror: MirrorLike, resolution: int, device=None
) -> tuple[Tensor, Tensor | None]:  # -> index [K, K, 2] long, valid [K, K] bool or None
    """The full-resolution mirror index (and the validity mask, when known) of a layout, index or flip callable.

    Args:
        mirror (`UVLayout`, `Tensor` `[K, K, 2]` or callable): a `UVLayout` (anything with a `mirror_index`
            tensor; its `valid` mask is returned too), a `(row, col)` mirror index, or a flip callable mapping a
            `[1, 2, K, K]` map to its mirrored map by gathering (e.g. `layout.flip`).
        resolution (`int`): K.
        device: where to put the result (defaults to the index's device).
    """
    valid = None
    if isinstance(getattr(mirror, "mirror_index", None), Tensor):
        index = _check_index(mirror.mirror_index, resolution, "mirror.mirror_index")
        valid = getattr(mirror, "valid", None)
        if isinstance(valid, Tensor) and valid.shape == (resolution, resolution):
            valid = valid.bool()
        else:
            valid = None
    elif isinstance(mirror, Tensor):
        index = _check_index(mirror, resolution, "mirror")
    elif callable(mirror):
        r = torch.arange(resolution, dtype=torch.float32, device=device)
        coords = torch.stack(torch.meshgrid(r, r, indexing="ij"))[None]  # [1, 2, K, K] (row, col)
        out = mirror(coords)
        if not isinstance(out, Tensor) or out.shape != coords.shape:
            shape = list(out.shape) if isinstance(out, Tensor) else type(out).__name__
            raise ValueError(f"The `mirror` callable must map [1, 2, {resolution}, {resolution}] to the same shape, got {shape}.")
        index = _check_index(out[0].permute(1, 2, 0).round().long(), resolution, "mirror(coords)")
    else:
        raise TypeError(
            f"`mirror` must be a UVLayout, a mirror index tensor [K, K, 2] or a flip callable, got {type(mirror).__name__}."
        )
    if device is not None:
        index = index.to(device)
        valid = valid.to(device) if valid is not None else None
    return index, valid


def downsample_mirror_index(
    index: Tensor,  # [R, R, 2] long
    factor: int,
    valid: Tensor | None = None,  # [R, R] bool
) -> Tensor:  # -> [R/factor, R/factor, 2] long
    """The mirror index of a map `factor` times smaller (see the module docstring): per `f×f` block, the block
    holding the mean mirror coordinate of its valid texels (of all its texels where none is valid)."""
    if factor == 1:
        return index
    r = index.shape[0]
    if r % factor:
        raise ValueError(f"`factor` must divide the index size {r}, got {factor}.")
    coords = index.permute(2, 0, 1)[None].double()  # [1, 2, R, R]
    plain = F.avg_pool2d(coords, factor)
    if valid is not None:
        w = valid.to(coords.dtype)[None, None]
        den = F.avg_pool2d(w, factor)
        weighted = F.avg_pool2d(coords * w, factor) / den.clamp(min=1e-12)
        plain = torch.where(den > 0, weighted, plain)
    coarse = torch.div(plain, factor, rounding_mode="floor").long().clamp_(0, r // factor - 1)
    return coarse[0].permute(1, 2, 0).contiguous()


def flip_uv(maps: Tensor, index: Tensor) -> Tensor:  # [B, C, R, R], [R, R, 2] -> [B, C, R, R]
    """Gather every texel's value from its mirror texel (F_↔ of eq. 4); differentiable in `maps`."""
    b, c, h, w = maps.shape
    flat = (index[..., 0] * w + index[..., 1]).reshape(-1)
    return maps.reshape(b, c, h * w).index_select(2, flat).view(b, c, h, w)


# ---------------------------------------------------------------------------------------------- attention
class WindowCrossAttention(nn.Module):
    """Masked multi-head cross-attention from each query token to `w×w` key windows (own + mirrored).

    Projections are 1×1 convolutions. Keys/values are gathered with `F.unfold` (vectorised: `[B, C·w², T²]`),
    the mirrored window from the key/value maps flipped through `mirror_index`. A learned relative-position bias
    per head, window kind (own / mirrored), Δy and |Δx| (so the bias is left-right symmetric) is added.

    Args:
        channels (`int`): token channels D (divisible by `num_heads`).
        num_heads (`int`): attention heads.
        window_size (`int`): w (odd).
        symmetric (`bool`): also attend to the mirrored window (2·w² keys per query instead of w²).

    Shapes: `query [B, D, T, T]`, `context [B, D, T, T]`, `visible [B, 1, T, T]`, `mirror_index [T, T, 2]`
    -> `[B, D, T, T]`.
    """

    def __init__(self, channels: int, num_heads: int, window_size: int, symmetric: bool):
        super().__init__()
        self.num_heads, self.window_size, self.symmetric = num_heads, window_size, symmetric
        self.to_q = nn.Conv2d(channels, channels, 1)
        self.to_k = nn.Conv2d(channels, channels, 1)
        self.to_v = nn.Conv2d(channels, channels, 1)
        self.to_out = nn.Conv2d(channels, channels, 1)
        kinds, half = (2 if symmetric else 1), window_size // 2
        self.position_bias = nn.Parameter(torch.zeros(num_heads, kinds * window_size * (half + 1)))
        dy, dx = torch.meshgrid(torch.arange(window_size), torch.arange(window_size), indexing="ij")
        offset = (dy * (half + 1) + (dx - half).abs()).reshape(-1)  # unfold order: row-major over the window
        bias_index = torch.cat([offset + k * window_size * (half + 1) for k in range(kinds)])
        self.register_buffer("bias_index", bias_index, persistent=False)

    def _windows(self, maps: Tensor) -> Tensor:  # [B, C, T, T] -> [B, C, w², T²]
        b, c = maps.shape[:2]
        w = self.window_size
        return F.unfold(maps, w, padding=w // 2).view(b, c, w * w, -1)

    def forward(self, query: Tensor, context: Tensor, visible: Tensor, mirror_index: Tensor | None = None) -> Tensor:
        b, d, t, _ = query.shape
        heads = self.num_heads
        q = self.to_q(query).view(b, heads, d // heads, t * t)
        k, v = self.to_k(context), self.to_v(context)
        mask = visible.to(k.dtype)
        keys, values, masks = [self._windows(k)], [self._windows(v)], [self._windows(mask)]
        if self.symmetric:
            if mirror_index is None:
                raise ValueError("`mirror_index` is required when the attention is symmetric.")
            keys.append(self._windows(flip_uv(k, mirror_index)))
            values.append(self._windows(flip_uv(v, mirror_index)))
            masks.append(self._windows(flip_uv(mask, mirror_index)))
        keys = torch.cat(keys, 2).view(b, heads, d // heads, -1, t * t)  # [B, h, d_h, n, T²]
        values = torch.cat(values, 2).view(b, heads, d // heads, -1, t * t)
        masks = torch.cat(masks, 2) > 0.5  # [B, 1, n, T²] (padding and invisible tokens are False)
        logits = torch.einsum("bhcl,bhcnl->bhnl", q, keys) / math.sqrt(d // heads)
        logits = logits + self.position_bias[:, self.bias_index][None, :, :, None]
        logits = logits.masked_fill(~masks, torch.finfo(logits.dtype).min)
        # Masked keys get exactly 0 weight; a query with no visible key (uniform softmax) gets 0 everywhere.
        attn = logits.softmax(dim=2) * masks
        out = torch.einsum("bhnl,bhcnl->bhcl", attn, values).reshape(b, d, t, t)
        return self.to_out(out)


class FusionBlock(nn.Module):
    """A transformer block with convolutions instead of linear layers (§B): pre-norm masked window
    cross-attention (`WindowCrossAttention`) and a convolutional feed-forward network
    (1×1 conv -> depthwise 3×3 conv -> GELU -> 1×1 conv), both residual.

    Args:
        channels (`int`), num_heads (`int`), window_size (`int`), symmetric (`bool`): see `WindowCrossAttention`.
        ffn_ratio (`int`): hidden channels of the feed-forward network = `ffn_ratio · channels`.

    Shapes: `x [B, D, T, T]`, `context [B, D, T, T]`, `visible [B, 1, T, T]` -> `[B, D, T, T]`.
    """

    def __init__(self, channels: int, num_heads: int, window_size: int, ffn_ratio: int, symmetric: bool):
        super().__init__()
        hidden = ffn_ratio * channels
        self.norm_query = LayerNorm2d(channels)
        self.norm_context = LayerNorm2d(channels)
        self.attention = WindowCrossAttention(channels, num_heads, window_size, symmetric)
        self.norm_ffn = LayerNorm2d(channels)
        self.ffn = nn.Sequential(
            nn.Conv2d(channels, hidden, 1),
            nn.Conv2d(hidden, hidden, 3, padding=1, groups=hidden),
            nn.GELU(),
            nn.Conv2d(hidden, channels, 1),
        )

    def forward(self, x: Tensor, context: Tensor, visible: Tensor, mirror_index: Tensor | None = None) -> Tensor:
        x = x + self.attention(self.norm_query(x), self.norm_context(context), visible, mirror_index)
        return x + self.ffn(self.norm_ffn(x))


class _ConvFusionLayer(nn.Module):
    """The "w/o T" replacement of a `FusionBlock`: `x + Conv(ConvBlock([x, context, F_↔(context)]))`."""

    def __init__(self, channels: int, symmetric: bool):
        super().__init__()
        self.symmetric = symmetric
        inputs = (3 if symmetric else 2) * channels
        self.net = nn.Sequential(ConvBlock(inputs, channels), nn.Conv2d(channels, channels, 3, padding=1))

    def forward(self, x: Tensor, context: Tensor, visible: Tensor, mirror_index: Tensor | None = None) -> Tensor:
        context = context * (visible > 0.5)
        parts = [x, context] + ([flip_uv(context, mirror_index)] if self.symmetric else [])
        return x + self.net(torch.cat(parts, 1))


# ---------------------------------------------------------------------------------------------- fusion
@dataclass
class FusionOutput:
    """Outputs of `SymmetricUVFusion` at one scale (all `[B, ·, R, R]`).

    Args:
        transformer (`Tensor` `[B, D, R, R]`): F_c^i, the transformer output at map resolution.
        fused (`Tensor` `[B, D, R, R]`, *optional*): F_f^i (eq. 5); None when `fuse_local` is False.
        occlusion (`Tensor` `[B, 1, R, R]`, *optional*): M_o in (0, 1); None when `fuse_local` is False.
        mirrored_local (`Tensor` `[B, C_l, R, R]`, *optional*): F_m^i (eq. 4); None when `fuse_local` is False.
    """

    transformer: Tensor
    fused: Tensor | None = None
    occlusion: Tensor | None = None
    mirrored_local: Tensor | None = None


class SymmetricUVFusion(nn.Module):
    """Symmetric UV space feature fusion at one scale (see the module docstring for the steps and equations).

    Args:
        global_channels (`int`): channels D of F_g^i (and of the outputs F_c^i, F_f^i).
        local_channels (`int`): channels C_l of F_l^i.
        token_channels (`int`): channels of the patch tokens.
        patch_size (`int`): P; the token grid is R/P (R must be divisible by P).
        num_layers (`int`, *optional*, defaults to 2): transformer blocks.
        num_heads (`int`, *optional*, defaults to 4): attention heads (divides `token_channels`).
        window_size (`int`, *optional*, defaults to 7): w, odd.
        ffn_ratio (`int`, *optional*, defaults to 2): feed-forward expansion.
        use_transformer (`bool`, *optional*, defaults to True): False = the "w/o T" ablation.
        use_symmetry (`bool`, *optional*, defaults to True): False = the "w/o Sym." ablation.
        fuse_local (`bool`, *optional*, defaults to True): build step 5 (M_o, eq. 3–5). The coarsest scale
            skips them: D_uv starts from F_c^1, and F_f^1 is never used (§3.4).
    """

    def __init__(
        self,
        global_channels: int,
        local_channels: int,
        token_channels: int,
        patch_size: int,
        num_layers: int = 2,
        num_heads: int = 4,
        window_size: int = 7,
        ffn_ratio: int = 2,
        use_transformer: bool = True,
        use_symmetry: bool = True,
        fuse_local: bool = True,
    ):
        super().__init__()
        if token_channels % num_heads:
            raise ValueError(f"`num_heads` ({num_heads}) must divide `token_channels` ({token_channels}).")
        if window_size < 1 or window_size % 2 == 0:
            raise ValueError(f"`window_size` must be a positive odd int, got {window_size}.")
        self.patch_size, self.use_symmetry = patch_size, use_symmetry
        self.embed_query = nn.Conv2d(global_channels, token_channels, patch_size, stride=patch_size)
        self.embed_context = nn.Conv2d(local_channels, token_channels, patch_size, stride=patch_size)
        if use_transformer:
            self.layers = nn.ModuleList(
                FusionBlock(token_channels, num_heads, window_size, ffn_ratio, use_symmetry) for _ in range(num_layers)
            )
        else:
            self.layers = nn.ModuleList(_ConvFusionLayer(token_channels, use_symmetry) for _ in range(num_layers))
        self.unpatch = nn.Conv2d(token_channels, global_channels, 3, padding=1)
        self.occlusion_head = self.out = None
        if fuse_local:
            self.occlusion_head = nn.Sequential(
                ConvBlock(global_channels + local_channels, global_channels), nn.Conv2d(global_channels, 1, 3, padding=1)
            )
            self.out = nn.Conv2d(global_channels + local_channels, global_channels, 3, padding=1)

    def forward(
        self,
        global_features: Tensor,  # [B, D, R, R]  F_g^i
        local_features: Tensor,  # [B, C_l, R, R]  F_l^i
        visibility: Tensor,  # [B, 1, R, R] in [0, 1]  M_v at this scale
        mirror_index: Tensor,  # [R, R, 2] long
        token_mirror_index: Tensor | None = None,  # [R/P, R/P, 2] long; default: pooled from mirror_index
    ) -> FusionOutput:
        """Fuse F_g^i with F_l^i (see the class and module docstrings)."""
        b, _, r, _ = global_features.shape
        p = self.patch_size
        if r % p or local_features.shape[-2:] != (r, r) or visibility.shape != (b, 1, r, r):
            raise ValueError(
                f"Fusion inputs must share a size divisible by patch_size {p}: global {list(global_features.shape)}, "
                f"local {list(local_features.shape)}, visibility {list(visibility.shape)}."
            )
        if token_mirror_index is None:
            token_mirror_index = downsample_mirror_index(mirror_index, p)
        visible = visibility > 0
        local = local_features * visible  # invisible texels never contribute (step 1)

        query = self.embed_query(global_features)  # [B, T_c, R/P, R/P]
        context = self.embed_context(local)
        token_visible = F.max_pool2d(visible.to(query.dtype), p)  # a token is visible if any texel is
        token_mirror = token_mirror_index if self.use_symmetry else None
        for layer in self.layers:
            query = layer(query, context, token_visible, token_mirror)
        upsampled = F.interpolate(query, scale_factor=float(p), mode="nearest") if p > 1 else query
        fused_c = global_features + self.unpatch(upsampled)  # F_c^i
        if self.occlusion_head is None:
            return FusionOutput(transformer=fused_c)

        occlusion = torch.sigmoid(self.occlusion_head(torch.cat([fused_c, local], 1)))  # M_o
        masked_local = occlusion * local  # eq. 3: F_lm = M_o ⊙ F_l
        if self.use_symmetry:
            # eq. 4: F_m = F_lm + F_↔(F_lm) ⊙ (1 − M_v ⊙ M_o)
            mirrored = masked_local + flip_uv(masked_local, mirror_index) * (1 - visibility * occlusion)
        else:
            mirrored = masked_local
        fused = self.out(torch.cat([fused_c, mirrored], 1))  # eq. 5: F_f = Conv([F_c, F_m])
        return FusionOutput(fused=fused, transformer=fused_c, occlusion=occlusion, mirrored_local=mirrored)
