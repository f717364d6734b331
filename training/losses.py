"""The training objective of FHAvatar (paper §3.5, eq. 6-10, and the weights and schedule of §B).

    L = L_re + L_α + λ_id L_id + λ¹ (L_lpips¹ + L_α¹) + L_reg                                      (eq. 10)
    L_reg = λ_3d L_3d + λ_eye L_eye + λ_pos L_pos + λ_shape L_shape + λ_shape^tv L_shape^tv          (eq. 9)

Each term is one small function of tensors, so it can be checked by hand on tiny inputs; `compute_losses`
combines them with the weights of `LossWeights.at(step)`. Conventions:

- Rendered and target images are `[N, 3, H, W]` in [0, 1] over the same background (N = batch x target views);
  `weights [N]` is 1 for real targets and 0 for padding slots, and every image loss is the weight-normalised
  mean of per-view means.
- UV maps are `[B, C, K, K]` with a texel mask `[K, K]` (the `UVLayout`'s `valid`, or a region of it).
- Total variation (TV) is the anisotropic L1 form: the mean absolute difference between horizontally
  neighbouring entries plus the same vertically, each averaged over the neighbour pairs whose two ends are inside
  the mask (and over channels). The paper does not spell its TV out; this is the usual choice of the works it
  follows (GGHead's L_uv, GAIA's eyeball TV).

Perceptual (LPIPS) and identity networks are passed in (`fhavatar.metrics.load_lpips`,
`fhavatar.metrics.load_identity_network`): their weights cannot be shipped. Without an identity network L_id is
skipped with one logged warning; without LPIPS, L_re is L1 alone and A¹ is supervised with L1 instead of LPIPS.
"""

from __future__ import annotations

import dataclasses
import functools
import logging
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from fhavatar.models.attributes import ATTRIBUTE_CHANNELS, UVAttributes

__all__ = [
    "LossInputs",
    "LossWeights",
    "alpha_loss",
    "compute_losses",
    "eyeball_tv_loss",
    "identity_loss",
    "l1_loss",
    "lpips_loss",
    "normalized_render",
    "position_offset_loss",
    "rendered_tv_loss",
    "shape_offset_loss",
    "shape_tv_loss",
    "total_variation",
    "weighted_mean",
]

logger = logging.getLogger(__name__)

#: Smallest rendered alpha used as a divisor in eq. 6 (pixels below `tv_alpha_threshold` are masked anyway).
_ALPHA_EPS = 1e-4


@functools.cache
def _warn_once(message: str) -> None:
    logger.warning(message)


# ---------------------------------------------------------------------------------------------- building blocks
def weighted_mean(values: Tensor, weights: Tensor | None = None) -> Tensor:  # [N], [N] -> []
    """`Σ w_i v_i / Σ w_i` (plain mean without weights; 0 when every weight is 0)."""
    if weights is None:
        return values.mean()
    weights = weights.to(values)
    return (values * weights).sum() / weights.sum().clamp(min=1e-12)


def total_variation(
    x: Tensor,  # [B, C, H, W]
    mask: Tensor | None = None,  # [B or 1, 1, H, W] or [H, W]; bool or {0, 1}
) -> Tensor:  # [B]
    """Anisotropic L1 total variation of each sample: mean |x[i, j+1] - x[i, j]| + mean |x[i+1, j] - x[i, j]|.

    Each mean runs over the neighbour pairs whose two ends lie in `mask` (all pairs without a mask) and over
    channels; a sample with no such pair contributes 0.
    """
    if x.dim() != 4:
        raise ValueError(f"`x` must have shape [B, C, H, W], got {list(x.shape)}.")
    if mask is None:
        mask = torch.ones_like(x[:, :1])
    elif mask.dim() == 2:
        mask = mask[None, None]
    mask = mask.to(x.dtype).expand(x.shape[0], 1, *x.shape[-2:])
    channels = x.shape[1]
    total = x.new_zeros(x.shape[0])
    for dim in (3, 2):  # horizontal pairs, then vertical pairs
        n = x.shape[dim]
        diff = (x.narrow(dim, 1, n - 1) - x.narrow(dim, 0, n - 1)).abs()
        pairs = mask.narrow(dim, 1, n - 1) * mask.narrow(dim, 0, n - 1)
        count = pairs.sum((1, 2, 3)) * channels
        total = total + (diff * pairs).sum((1, 2, 3)) / count.clamp(min=1)
    return total


# ---------------------------------------------------------------------------------------------- image losses
def l1_loss(
    pred: Tensor,  # [N, C, H, W]
    target: Tensor,  # [N, C, H, W]
    weights: Tensor | None = None,  # [N]
) -> Tensor:
    """L_1: the weighted mean over views of each view's mean absolute error."""
    return weighted_mean((pred - target).abs().flatten(1).mean(1), weights)


def lpips_loss(
    lpips: nn.Module,
    pred: Tensor,  # [N, 3, H, W] in [0, 1]
    target: Tensor,  # [N, 3, H, W] in [0, 1]
    weights: Tensor | None = None,  # [N]
) -> Tensor:
    """L_lpips: `lpips(pred, target) -> [N]` (a `fhavatar.metrics.load_lpips` module), weighted over views.

    Views of weight 0 are not evaluated (LPIPS is the most expensive term).
    """
    if weights is not None:
        keep = weights > 0
        if not bool(keep.any()):
            return pred.sum() * 0
        pred, target, weights = pred[keep], target[keep], weights[keep]
    return weighted_mean(lpips(pred, target).reshape(-1), weights)


def alpha_loss(
    alpha: Tensor,  # [N, 1, H, W] rendered alpha
    mask: Tensor,  # [N, 1, H, W] target foreground in [0, 1]
    weights: Tensor | None = None,  # [N]
) -> Tensor:
    """L_α: L1 between the rendered alpha and the target's foreground mask."""
    return l1_loss(alpha, mask, weights)


def identity_loss(
    network: nn.Module,
    pred: Tensor,  # [N, 3, H, W] in [0, 1]
    target: Tensor,  # [N, 3, H, W] in [0, 1]
    weights: Tensor | None = None,  # [N]
) -> Tensor:
    """L_id = 1 - cos(E(pred), E(target)) with a face-recognition embedder E (ArcFace in the paper, [7]).

    The target embedding is a constant (no gradient). Views of weight 0 are not evaluated.
    """
    if weights is not None:
        keep = weights > 0
        if not bool(keep.any()):
            return pred.sum() * 0
        pred, target, weights = pred[keep], target[keep], weights[keep]
    with torch.no_grad():
        reference = network(target)
    cosine = F.cosine_similarity(network(pred), reference, dim=-1)
    return weighted_mean(1 - cosine, weights)


# ---------------------------------------------------------------------------------------------- rendered TV losses
def normalized_render(
    render: Tensor,  # [N, C, H, W] composited per-Gaussian features
    alpha: Tensor,  # [N, 1, H, W]
    background: float = 0.0,
) -> Tensor:  # [N, C, H, W]
    """The alpha-normalised render of eq. 6, `(I - background (1 - I_α)) / I_α`: the expected feature per pixel.

    The paper renders positions over a white background (`background = 1`); `render_gaussians(features=...)`
    returns features without background (`background = 0`).
    """
    return (render - background * (1 - alpha)) / alpha.clamp(min=_ALPHA_EPS)


def rendered_tv_loss(
    render: Tensor,  # [N, C, H, W] features rendered without background: positions (L_3d) or UVs (L_uv)
    alpha: Tensor,  # [N, 1, H, W]
    weights: Tensor | None = None,  # [N]
    alpha_threshold: float = 0.5,
    background: float = 0.0,
) -> Tensor:
    """L_3d (eq. 6) on head-space position renders, or GGHead's L_uv on UV-coordinate renders.

    TV of `normalized_render` over the pixels whose alpha is at least `alpha_threshold` (eq. 6 divides by the
    alpha, which is undefined off the head). Within the head, holes that show the far side of the head make
    neighbouring pixels hold distant positions, which this penalises.
    """
    mask = alpha.detach() >= alpha_threshold
    return weighted_mean(total_variation(normalized_render(render, alpha, background), mask), weights)


# ---------------------------------------------------------------------------------------------- UV regularisers
def _check_uv(name: str, maps: Tensor, mask: Tensor) -> None:
    if maps.dim() != 4 or mask.shape != maps.shape[-2:]:
        raise ValueError(f"`{name}` must be [B, C, K, K] with a [K, K] mask, got {list(maps.shape)} and "
                         f"{list(mask.shape)}.")


def eyeball_tv_loss(
    attributes: UVAttributes,  # maps [B, ·, K, K]
    eye_mask: Tensor,  # [K, K] bool: the eye region of the UVLayout
) -> Tensor:
    """L_eye (GAIA [51]): TV of every attribute map inside the eyeball region, so the eyeballs stay smooth.

    The eyes rotate under the eyelids, so texture and geometry painted onto them (e.g. lid shadows) would move
    with the gaze; smooth eyeball maps avoid that. The five maps (colour, rotation, scale, opacity, offset) are
    concatenated into one 14-channel map.
    """
    maps = torch.cat([getattr(attributes, name) for name in ATTRIBUTE_CHANNELS], dim=1)
    _check_uv("attributes", maps, eye_mask)
    return total_variation(maps, eye_mask).mean()


def position_offset_loss(
    offsets: Tensor,  # [B, 3, K, K] A_position
    valid: Tensor,  # [K, K]
) -> Tensor:
    """L_pos = ||A_position||_2, averaged over the valid texels: keeps Gaussians near their surface points."""
    _check_uv("offsets", offsets, valid)
    norms = torch.linalg.vector_norm(offsets, dim=1)  # [B, K, K]
    valid = valid.to(norms)
    return (norms * valid).sum() / (valid.sum() * offsets.shape[0]).clamp(min=1)


def shape_offset_loss(
    delta: Tensor,  # [B, 3, K, K] Δp_uv = p_r - p
    valid: Tensor,  # [K, K]
    epsilon: float = 0.1,
) -> Tensor:
    """L_shape = max(||Δp_uv||_2 - ε, 0) (eq. 7), averaged over the valid texels: free up to ε, then linear."""
    _check_uv("delta", delta, valid)
    hinge = (torch.linalg.vector_norm(delta, dim=1) - epsilon).clamp(min=0)
    valid = valid.to(hinge)
    return (hinge * valid).sum() / (valid.sum() * delta.shape[0]).clamp(min=1)


def shape_tv_loss(
    delta: Tensor,  # [B, 3, K, K] Δp_uv
    valid: Tensor,  # [K, K]
) -> Tensor:
    """L_shape^tv = TV(Δp_uv) (eq. 8) over the valid texels: a smooth shape offset, no outlier Gaussians."""
    _check_uv("delta", delta, valid)
    return total_variation(delta, valid).mean()


# ---------------------------------------------------------------------------------------------- weights and schedule
@dataclass
class LossWeights:
    """Loss weights of eq. 9-10 with the schedule of §B (defaults: the paper's values).

    `at(step)` gives the weights in force at an optimisation step: L_3d (or L_uv), L_eye, L_shape^tv and L_id are
    off before `regularizer_start_step`, and λ_3d becomes `lambda_3d_late` from `lambda_3d_late_step` on.
    """

    # Weight of the L1 half of L_re.
    lambda_l1: float = 1.0
    # Weight of the LPIPS half of L_re.
    lambda_lpips: float = 1.0
    # Weight of L_α.
    lambda_alpha: float = 1.0
    # λ_id, the identity-similarity loss.
    lambda_id: float = 0.25
    # λ¹, the auxiliary A¹ losses (L_lpips¹ + L_α¹).
    lambda_aux: float = 0.5
    # λ_3d, the geometry TV loss (L_3d, or L_uv when `geometry_tv` is "uv").
    lambda_3d: float = 50.0
    # λ_eye, the eyeball TV loss.
    lambda_eye: float = 5.0
    # λ_pos, the position-offset L2.
    lambda_pos: float = 1.0
    # λ_shape, the shape-offset hinge (eq. 7).
    lambda_shape: float = 1.0
    # λ_shape^tv, the shape-offset TV (eq. 8).
    lambda_shape_tv: float = 10.0
    # Step from which L_3d, L_eye, L_shape^tv and L_id are added (§B: 7500).
    regularizer_start_step: int = 7500
    # λ_3d from `lambda_3d_late_step` on (§B: 100 at 25 000).
    lambda_3d_late: float = 100.0
    lambda_3d_late_step: int = 25000

    def at(self, step: int) -> dict[str, float]:
        """The weights in force at optimisation step `step` (0-based), keyed by loss name."""
        if isinstance(step, bool) or not isinstance(step, int) or step < 0:
            raise ValueError(f"`step` must be an int >= 0, got {step!r}.")
        started = step >= self.regularizer_start_step
        tv_3d = self.lambda_3d_late if step >= self.lambda_3d_late_step else self.lambda_3d
        return {
            "l1": self.lambda_l1,
            "lpips": self.lambda_lpips,
            "alpha": self.lambda_alpha,
            "id": self.lambda_id if started else 0.0,
            "aux": self.lambda_aux,
            "tv_3d": tv_3d if started else 0.0,
            "eye": self.lambda_eye if started else 0.0,
            "pos": self.lambda_pos,
            "shape": self.lambda_shape,
            "shape_tv": self.lambda_shape_tv if started else 0.0,
        }

    def weights_only(self) -> LossWeights:
        """A plain `LossWeights` with this object's values (drops the fields of subclasses such as `LossConfig`)."""
        return LossWeights(**{f.name: getattr(self, f.name) for f in dataclasses.fields(LossWeights)})


# ---------------------------------------------------------------------------------------------- the objective
@dataclass
class LossInputs:
    """What `compute_losses` reads: the renders of one training step and the maps they came from.

    Args:
        images (`Tensor` `[N, 3, H, W]`): renders of the Gaussians of A over the background.
        alphas (`Tensor` `[N, 1, H, W]`): their alpha maps.
        target_images (`Tensor` `[N, 3, H, W]`): targets composited over the same background.
        target_masks (`Tensor` `[N, 1, H, W]`): target foreground masks.
        weights (`Tensor` `[N]`): 1 for real targets, 0 for padding.
        attributes (`UVAttributes`): the maps A `[B, ·, K, K]` with `refined_positions` p_r.
        position_map (`Tensor` `[B, 3, K, K]`): p, so that Δp_uv = p_r - p.
        valid (`Tensor` `[K, K]`): valid texels; eye_mask (`Tensor` `[K, K]`): the eye region.
        geometry (`Tensor` `[N, C, H, W]`, *optional*): position (L_3d) or UV (L_uv) renders, no background.
        aux_images, aux_alphas (`Tensor`, *optional*): renders of A¹ like `images`/`alphas`.
        identity_weights (`Tensor` `[N]`, *optional*): views L_id applies to (real frontal frames); default
            `weights`.
    """

    images: Tensor
    alphas: Tensor
    target_images: Tensor
    target_masks: Tensor
    weights: Tensor
    attributes: UVAttributes
    position_map: Tensor
    valid: Tensor
    eye_mask: Tensor
    geometry: Tensor | None = None
    aux_images: Tensor | None = None
    aux_alphas: Tensor | None = None
    identity_weights: Tensor | None = None


def compute_losses(
    inputs: LossInputs,
    weights: dict[str, float],
    lpips: nn.Module | None = None,
    identity: nn.Module | None = None,
    epsilon: float = 0.1,
    tv_alpha_threshold: float = 0.5,
) -> dict[str, Tensor]:
    """Every active term of eq. 10 (unweighted, for logging) and their weighted sum under "total".

    Args:
        inputs (`LossInputs`): renders, targets and UV maps of the step.
        weights (`dict[str, float]`): `LossWeights.at(step)`; a term of weight 0 is not computed.
        lpips (`nn.Module`, *optional*): LPIPS `(x, y) -> [N]`; None: no L_lpips, and A¹ is supervised with L1.
        identity (`nn.Module`, *optional*): face embedder `[N, 3, H, W] -> [N, D]`; None skips L_id (one warning).
        epsilon (`float`, *optional*, defaults to 0.1): ε of eq. 7.
        tv_alpha_threshold (`float`, *optional*, defaults to 0.5): alpha below which pixels leave L_3d / L_uv.

    Returns:
        `dict[str, Tensor]` with scalar terms among "l1", "lpips", "alpha", "id", "aux_lpips" or "aux_l1",
        "aux_alpha", "tv_3d", "eye", "pos", "shape", "shape_tv", and "total".
    """
    w = inputs.weights
    terms: dict[str, Tensor] = {}
    weighted: list[Tensor] = []

    def add(name: str, weight: float, value: Tensor) -> None:
        terms[name] = value
        weighted.append(weight * value)

    # L_re = L_1 + L_lpips, and L_α.
    if weights["l1"] > 0:
        add("l1", weights["l1"], l1_loss(inputs.images, inputs.target_images, w))
    if weights["lpips"] > 0 and lpips is not None:
        add("lpips", weights["lpips"], lpips_loss(lpips, inputs.images, inputs.target_images, w))
    if weights["alpha"] > 0:
        add("alpha", weights["alpha"], alpha_loss(inputs.alphas, inputs.target_masks, w))
    # λ_id L_id.
    if weights["id"] > 0:
        if identity is None:
            _warn_once("No identity network configured (`loss.id_network`): L_id is skipped.")
        else:
            id_weights = w if inputs.identity_weights is None else inputs.identity_weights
            add("id", weights["id"], identity_loss(identity, inputs.images, inputs.target_images, id_weights))
    # λ¹ (L_lpips¹ + L_α¹) on the renders of A¹.
    if weights["aux"] > 0 and inputs.aux_images is not None:
        if lpips is not None:
            add("aux_lpips", weights["aux"], lpips_loss(lpips, inputs.aux_images, inputs.target_images, w))
        else:
            add("aux_l1", weights["aux"], l1_loss(inputs.aux_images, inputs.target_images, w))
        add("aux_alpha", weights["aux"], alpha_loss(inputs.aux_alphas, inputs.target_masks, w))
    # L_reg (eq. 9).
    if weights["tv_3d"] > 0 and inputs.geometry is not None:
        add("tv_3d", weights["tv_3d"], rendered_tv_loss(inputs.geometry, inputs.alphas, w, tv_alpha_threshold))
    if weights["eye"] > 0:
        add("eye", weights["eye"], eyeball_tv_loss(inputs.attributes, inputs.eye_mask))
    if weights["pos"] > 0:
        add("pos", weights["pos"], position_offset_loss(inputs.attributes.offsets, inputs.valid))
    delta = None
    if inputs.attributes.refined_positions is not None:
        delta = (inputs.attributes.refined_positions - inputs.position_map) * inputs.valid.to(inputs.position_map)
    if weights["shape"] > 0 and delta is not None:
        add("shape", weights["shape"], shape_offset_loss(delta, inputs.valid, epsilon))
    if weights["shape_tv"] > 0 and delta is not None:
        add("shape_tv", weights["shape_tv"], shape_tv_loss(delta, inputs.valid))
    terms["total"] = torch.stack(weighted).sum() if weighted else inputs.images.sum() * 0
    return terms
