"""How `FHAvatarPipeline` turns a tracked photo into an `Avatar`: the UV layout, the avatar model's input
(`make_source_view`, the function the trainer calls too), the hair shell, the bust. A mixin of the pipeline, kept
apart so the pipeline's file holds its public steps (`reconstruct`, `animate`, `orbit`, `__call__`)."""

from __future__ import annotations

import torch
from torch import Tensor

from .avatar import Avatar
from .head.canonical_face import CHIN
from .head.uv import UVLayout
from .models import ProjectionAvatarModel
from .models.bust import build_bust
from .models.source_view import SourceView, make_source_view
from .rendering import render_gaussians
from .tracking import fit_hair_shell

__all__ = ["BUST_RESOLUTION", "AvatarBuilding"]

#: Side of the source-view render the bust and the self-check read (the head's alpha and colours).
BUST_RESOLUTION = 128


class AvatarBuilding:
    """The avatar-building steps of `FHAvatarPipeline` (which provides `config`, `device`, `head_model`,
    `avatar_model` and `prior`)."""

    @property
    def layout(self) -> UVLayout:
        """The head model's `UVLayout` at `config.resolution` (built once, on the pipeline's device)."""
        k = self.config.resolution
        model_k = getattr(self.avatar_model.config, "resolution", k)
        if model_k != k:
            raise ValueError(f"`resolution` ({k}) must equal the avatar model's resolution ({model_k}).")
        cached = self.__dict__.get("_layout_cache")
        if cached is None or cached[0] is not self.head_model or cached[1].resolution != k:
            cached = (self.head_model, UVLayout(self.head_model, resolution=k))
            self.__dict__["_layout_cache"] = cached
        return cached[1].to(self.device)

    def source_view(self, track, rest_offsets: Tensor | None = None) -> SourceView:
        """The avatar model's input for a tracked photo: `make_source_view`, the function the trainer calls too.

        The photo is composited over `config.background` for models that read it so (a trained pipeline stores its
        training background there), and the prior, when present, encodes that composite. `rest_offsets` (`[V, 3]`)
        is the hair shell the avatar will carry.
        """
        device = self.device
        image = torch.from_numpy(track.image).to(device).permute(2, 0, 1)[None].float() / 255.0
        mask = None if track.mask is None else torch.from_numpy(track.mask).to(device)[None, None].float()
        background = torch.tensor(self.config.background, device=device, dtype=image.dtype)
        return make_source_view(image, track.camera.to(device), self.head_model, track.params.to(device), self.layout,
                                mask=mask, background=background, prior=self.prior, rest_offsets=rest_offsets)

    def _build_avatar(self, track, fit_outline: bool) -> tuple[Avatar, Tensor, Tensor]:
        """The avatar of a track (its outline fitted to `track.mask` if `fit_outline`: shell, bust) and its head's
        source-view image `[3, S, S]` and alpha `[S, S]` (CPU, S = BUST_RESOLUTION) for the self-check."""
        # The hair shell: the head's outline fitted to the photo's matte (None: none fitted, the bare head stays).
        full_head = self.config.get("full_head")
        full_head = isinstance(self.avatar_model, ProjectionAvatarModel) if full_head is None else full_head
        shell = fit_hair_shell(track, self.head_model) if full_head and fit_outline else None
        shell = None if shell is None else shell.to(self.device)
        attributes = self.avatar_model(self.source_view(track, rest_offsets=shell))
        avatar = Avatar.from_attributes(attributes, self.layout, self.head_model, track.params.to(self.device),
                                        vertex_offsets=shell)
        # One render of the head serves the bust (its alpha) and the self-check (its colours).
        head = render_gaussians(avatar.gaussians(), track.camera.to(self.device), BUST_RESOLUTION, BUST_RESOLUTION)
        alpha = head.alpha[0, 0].cpu()
        if full_head and fit_outline and track.mask is not None:  # the neck, shoulders and chest below the head
            image = torch.from_numpy(track.image).permute(2, 0, 1).float() / 255.0
            neck = avatar.source_vertices[self.head_model.region("neck")].mean(0).cpu()
            bust = build_bust(image, torch.from_numpy(track.mask), alpha, track.camera.to("cpu"),
                              float(track.landmarks[CHIN, 1]), neck,
                              head_depth=head.depth[0, 0].cpu())
            avatar.bust = None if bust is None else bust.to(self.device)
        avatar.source_track = track
        return avatar, head.image[0].cpu(), alpha

