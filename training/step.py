"""One training step and held-out validation (paper §3.5, eq. 10): `training_step`, `validate`.

`source_view` / `predict_attributes` run the model on a batch's source frames through `make_source_view`, the same
function the pipeline calls, so the model sees a photo in training as it does at inference; `render_targets` renders
the predicted avatars in every target's pose and camera. `train_fhavatar.py` calls these from its loop.
"""

from __future__ import annotations

import contextlib
import typing
from dataclasses import dataclass

import torch
from torch import Tensor

from fhavatar.avatar import Avatar
from fhavatar.head.open_head import OpenHead, OpenHeadParams
from fhavatar.head.uv import UVLayout
from fhavatar.metrics import psnr as image_psnr
from fhavatar.models.attributes import UVAttributes
from fhavatar.models.source_view import SourceView, make_source_view
from fhavatar.rendering import Camera, render_gaussians
from training.config import LossConfig
from training.losses import LossInputs, compute_losses

__all__ = ["StepOutput", "predict_attributes", "render_targets", "source_view", "training_step", "validate"]


# ---------------------------------------------------------------------------------------------- one step
@dataclass
class StepOutput:
    """What `training_step` returns: the loss to back-propagate and the detached terms to log."""

    loss: Tensor
    logs: dict[str, float]
    images: Tensor  # [N, 3, H, W] renders (detached), N = batch x target views


def _composite(image: Tensor, mask: Tensor, background: Tensor) -> Tensor:  # [..., 3, H, W], [..., 1, H, W], [3]
    """`image` over `background` through `mask` (training targets and sources never show the dataset's backdrop)."""
    return image * mask + background.view(3, 1, 1) * (1 - mask)


def _params(values: dict[str, Tensor], device) -> OpenHeadParams:
    return OpenHeadParams(**{k: v.to(device=device, dtype=torch.float32) for k, v in values.items()})


def source_view(batch: dict, head: OpenHead, layout: UVLayout, prior=None, background: Tensor | None = None
                ) -> SourceView:
    """The model input of a batch's source frames: `make_source_view`, the function the pipeline calls too.

    The dataset stores what the tracker gives the pipeline (photo, matte, camera, head parameters), so a photo reaches
    the model the same way in training and at inference (`tests/training/test_source_view.py` checks it).
    """
    device = layout.valid.device
    camera = Camera(batch["source_cam2world"].to(device).float(), batch["source_intrinsics"].to(device).float())
    return make_source_view(batch["source_image"].to(device).float(), camera, head, _params(batch["source_params"], device),
                            layout, mask=batch["source_mask"].to(device).float(), background=background, prior=prior)


def predict_attributes(batch: dict, model, head: OpenHead, layout: UVLayout, prior=None,
                       background: Tensor | None = None, *, return_aux: bool = True,
                       autocast=None) -> tuple[UVAttributes, Tensor, OpenHeadParams]:
    """Source photo -> UV attribute maps A (and A¹): `model(source_view(batch, ...))`, as the pipeline does.

    Only the model runs under `autocast` (a context-manager factory such as `accelerator.autocast`; the head model
    stays in fp32).

    Returns:
        `(attributes, position_map [B, 3, K, K], source_params)`.
    """
    view = source_view(batch, head, layout, prior, background)
    with (autocast or contextlib.nullcontext)():
        attributes = model(view, return_aux=return_aux)
    return attributes.map(lambda t: t.float()), view.position_map, _params(batch["source_params"], view.image.device)


def render_targets(attributes: UVAttributes, source_params: OpenHeadParams, batch: dict, head: OpenHead,
                   layout: UVLayout, background: Tensor, geometry: typing.Literal["3d", "uv", "none"] = "none",
                   ) -> tuple[Tensor, Tensor, Tensor | None]:
    """Render the avatars of `attributes` re-posed by each target's head parameters from each target camera.

    `Avatar.from_attributes` (differentiable in the maps) -> `avatar.gaussians(target params)` ->
    `render_gaussians` (the CPU path is differentiable too). Padding slots (weight 0) are not rendered: they
    hold the background and zero alpha. All slots of an item share the driving frame's parameters (the dataset
    contract), so one call renders all of an item's cameras.

    Returns:
        `(images [N, 3, H, W], alphas [N, 1, H, W], geometry [N, C, H, W] or None)` with N = B x V in batch
        order; `geometry` holds head-space positions (C = 3, for L_3d) or UV coordinates (C = 2, for L_uv).
    """
    device = layout.valid.device
    targets = batch["target_images"]
    b, v, _, height, width = targets.shape
    weights = batch["target_weights"].to(device)
    images = background.view(1, 1, 3, 1, 1).expand(b, v, 3, height, width).clone()
    alphas = torch.zeros(b, v, 1, height, width, device=device)
    channels = {"3d": 3, "uv": 2}.get(geometry, 0)
    geo = torch.zeros(b, v, channels, height, width, device=device) if channels else None
    images, alphas = list(images.unbind(0)), list(alphas.unbind(0))
    geo_rows = list(geo.unbind(0)) if geo is not None else None
    for i in range(b):
        keep = (weights[i] > 0).nonzero().squeeze(1)
        if keep.numel() == 0:
            continue
        avatar = Avatar.from_attributes(attributes, layout, head, source_params, batch_index=i)
        params = _params({k: t[i, keep[:1]] for k, t in batch["target_params"].items()}, device)
        gaussians = avatar.gaussians(params)
        camera = Camera(batch["target_cam2world"][i, keep].to(device).float(),
                        batch["target_intrinsics"][i, keep].to(device).float())
        features = None
        if geometry == "3d":
            features = gaussians.means  # G_color := G_position (eq. 6)
        elif geometry == "uv":
            features = layout.sample_uv.to(gaussians.means)  # G_color := UV coordinates (GGHead's L_uv)
        out = render_gaussians(gaussians, camera, width, height, background=background, features=features)
        images[i] = images[i].index_put((keep,), out.image)
        alphas[i] = alphas[i].index_put((keep,), out.alpha)
        if geo_rows is not None:
            geo_rows[i] = geo_rows[i].index_put((keep,), out.features)
    flat = lambda rows: torch.stack(rows).flatten(0, 1)  # noqa: E731
    return flat(images), flat(alphas), flat(geo_rows) if geo_rows is not None else None


def training_step(batch: dict, model, head: OpenHead, layout: UVLayout, prior, loss_config: LossConfig, step: int,
                  lpips=None, identity=None, background: Tensor | None = None, *, autocast=None) -> StepOutput:
    """One optimisation step's forward pass and loss (paper §3.5, eq. 10).

    1. The source frame -> A and A¹ (`predict_attributes`: the model on the batch's `SourceView`).
    2. Gaussians of A (and of A¹) bound to the source mesh, re-posed by every target's parameters and rendered
       from its camera; with `loss_config.geometry_tv` the render also carries positions (L_3d) or UVs (L_uv).
    3. Targets composited over the background; `compute_losses` with the weights `loss_config.at(step)`.

    Args:
        batch (`dict`): a `training.dataset.collate_fn` batch (any device).
        model (`FHAvatarModel`, possibly wrapped by accelerate/DDP): the network being trained.
        head (`OpenHead`), layout (`UVLayout`): the head model and its atlas at the model's K.
        prior (*optional*): the frozen prior (`encode`/`sample`), or None for the model without prior.
        loss_config (`LossConfig`): weights, schedule and loss options.
        step (`int`): the global optimisation step (selects the scheduled weights).
        lpips, identity (`nn.Module`, *optional*): LPIPS and face-embedding networks.
        background (`Tensor` `[3]`, *optional*): RGB behind renders and targets (white).
        autocast (*optional*): mixed-precision context factory for the model's forward (`accelerator.autocast`).

    Returns:
        `StepOutput(loss, logs, images)`.
    """
    device = layout.valid.device
    background = torch.ones(3, device=device) if background is None else background.to(device)
    weights = loss_config.at(step)
    # A in fp32: skinning, rendering and the losses run in fp32 whatever the model's precision.
    attributes, position_map, source_params = predict_attributes(batch, model, head, layout, prior, background,
                                                                  return_aux=weights["aux"] > 0, autocast=autocast)
    geometry = loss_config.geometry_tv if weights["tv_3d"] > 0 else "none"
    images, alphas, geo = render_targets(attributes, source_params, batch, head, layout, background, geometry)
    aux_images = aux_alphas = None
    if attributes.aux is not None:
        aux_images, aux_alphas, _ = render_targets(attributes.aux, source_params, batch, head, layout, background)
    masks = batch["target_masks"].to(device).flatten(0, 1)
    targets = _composite(batch["target_images"].to(device).flatten(0, 1), masks, background)
    target_weights = batch["target_weights"].to(device)
    # L_id compares faces: only slot 0 (a real frame) is a frontal photo; prior views may show the back.
    front = torch.zeros_like(target_weights)
    front[:, 0] = 1
    inputs = LossInputs(
        images=images, alphas=alphas, target_images=targets, target_masks=masks, weights=target_weights.flatten(),
        attributes=attributes, position_map=position_map.float(), valid=layout.valid,
        eye_mask=layout.region("eyes"), geometry=geo, aux_images=aux_images, aux_alphas=aux_alphas,
        identity_weights=(target_weights * front).flatten(),
    )
    terms = compute_losses(inputs, weights, lpips=lpips, identity=identity, epsilon=loss_config.epsilon,
                           tv_alpha_threshold=loss_config.tv_alpha_threshold)
    logs = {f"loss/{name}": float(value.detach()) for name, value in terms.items()}
    return StepOutput(loss=terms["total"], logs=logs, images=images.detach())


# ---------------------------------------------------------------------------------------------- validation
@torch.no_grad()
def validate(model, head: OpenHead, layout: UVLayout, prior, samples: list[dict], background: Tensor,
             *, autocast=None) -> tuple[dict[str, float], Tensor]:
    """Held-out L1 and PSNR of slot-0 targets (the driving frame), and a preview grid.

    Args:
        samples (`list[dict]`): collated batches of the validation split.

    Returns:
        `({"val/l1": ..., "val/psnr": ...}, grid [3, H·n, 3W])` where each row of the grid is
        source | target | render.
    """
    was_training = model.training
    model.eval()
    device = layout.valid.device
    l1, psnr, rows = [], [], []
    for batch in samples:
        attributes, _, params = predict_attributes(batch, model, head, layout, prior, background, return_aux=False,
                                                   autocast=autocast)
        images, _, _ = render_targets(attributes, params, batch, head, layout, background)
        v = batch["target_images"].shape[1]
        render = images.view(-1, v, *images.shape[1:])[:, 0].clamp(0, 1)
        target = _composite(batch["target_images"][:, 0].to(device), batch["target_masks"][:, 0].to(device), background)
        source = _composite(batch["source_image"].to(device), batch["source_mask"].to(device), background)
        l1.append((render - target).abs().flatten(1).mean(1))
        psnr.append(image_psnr(render, target).clamp(max=100.0))  # identical images would be inf dB
        rows.extend(torch.cat([s, t, r], dim=-1) for s, t, r in zip(source, target, render))
    model.train(was_training)
    metrics = {"val/l1": float(torch.cat(l1).mean()), "val/psnr": float(torch.cat(psnr).mean())}
    return metrics, torch.cat(rows, dim=-2).cpu()
