"""The `HeadModel` interface: a parametric head mesh in head space, with UVs, regions and landmarks."""

from __future__ import annotations

from dataclasses import fields, replace
from typing import Any

import torch
from diffusers import ConfigMixin, ModelMixin
from torch import Tensor

from .._checks import count_non_finite

__all__ = ["HEAD_UNITS_PER_METRE", "HeadModel", "REGION_NAMES", "check_buffer_tensors", "mesh_buffer_specs", "params_to"]

#: Head-space units per metre. PanoHead's cameras (radius 2.7, normalised focal 4.2647, i.e. a 13.4° vertical
#: field of view) see 2.7 / 4.2647 = 0.633 units of height at the head centre; PanoHead's full-head crops give
#: a crown-to-chin head (~23 cm) about 2/3 of that, so 1.8 units/m. Every head model maps its native units with
#: this scale.
HEAD_UNITS_PER_METRE = 1.8

#: Vertex regions every head model names (used for UV region masks, losses and defaults).
REGION_NAMES = ("face", "scalp", "eyes", "mouth", "neck", "ears")


def mesh_buffer_specs(config) -> list[tuple[str, tuple[int, ...], torch.dtype]]:
    """(name, shape, dtype) of the buffers every head model has (see `HeadModel`), from its config sizes."""
    v, f, t, lm = config["num_vertices"], config["num_faces"], config["num_uv"], config["num_landmarks"]
    return [
        ("template_vertices", (v, 3), torch.float32),
        ("faces", (f, 3), torch.long),
        ("uv_coords", (t, 2), torch.float32),
        ("uv_faces", (f, 3), torch.long),
        ("region_masks", (len(REGION_NAMES), v), torch.bool),
        ("landmark_faces", (lm,), torch.long),
        ("landmark_barycentrics", (lm, 3), torch.float32),
        ("landmark_mediapipe_ids", (lm,), torch.long),
    ]


def check_buffer_tensors(tensors: dict[str, Tensor], specs, source: str, what: str) -> None:
    """Raise `ValueError` naming every missing, unexpected or wrongly shaped/typed tensor of a head-model file.

    `specs` lists `(name, shape, dtype)`; `source` names the file (or step) and `what` the kind of file.
    """
    expected = {name: (tuple(shape), dtype) for name, shape, dtype in specs}
    problems = [f"missing `{n}`" for n in expected if n not in tensors]
    problems += [
        f"`{n}` is {list(tensors[n].shape)} {tensors[n].dtype}, expected {list(shape)} {dtype}"
        for n, (shape, dtype) in expected.items()
        if n in tensors and (tuple(tensors[n].shape) != shape or tensors[n].dtype != dtype)
    ]
    problems += [f"unexpected `{n}`" for n in tensors if n not in expected]
    if problems:
        raise ValueError(f"{source}: not a valid {what}: " + "; ".join(problems) + ".")


class HeadModel(ModelMixin, ConfigMixin):
    """Base class of the parametric head models (FLAME, OpenHead).

    A subclass registers these buffers (persistent, so they save with the pipeline) in head space — right-
    handed, +y up, the face looking toward +z, PanoHead units:

    - `template_vertices` `[V, 3]` float: the neutral head.
    - `faces` `[F, 3]` long: triangles, counter-clockwise seen from outside (normals point outward).
    - `uv_coords` `[T, 2]` float in [0, 1] and `uv_faces` `[F, 3]` long: the UV atlas (v up: v = 1 is the
      top row of a texture image).
    - `region_masks` `[R, V]` bool: membership of each vertex in `REGION_NAMES` (same order).
    - `landmark_faces` `[L]` long and `landmark_barycentrics` `[L, 3]`: the tracking landmarks as points on
      the mesh, and `landmark_mediapipe_ids` `[L]` long: the MediaPipe Face Mesh landmark each one matches.

    and implements `params_class`, `neutral_params(batch_size)` and `forward(params) -> [B, V, 3]`.
    """

    config_name = "config.json"
    #: The parameter dataclass of the model (set by subclasses).
    params_class: type = object

    # ------------------------------------------------------------------ sizes and regions
    @property
    def num_vertices(self) -> int:
        return self.template_vertices.shape[0]

    @property
    def num_faces(self) -> int:
        return self.faces.shape[0]

    def region(self, name: str) -> Tensor:  # -> [V] bool
        """Vertex mask of region `name` (one of `REGION_NAMES`)."""
        if name not in REGION_NAMES:
            raise ValueError(f"Unknown head region {name!r}; expected one of {REGION_NAMES}.")
        return self.region_masks[REGION_NAMES.index(name)]

    # ------------------------------------------------------------------ landmarks
    def landmarks(self, vertices: Tensor) -> Tensor:  # [B, V, 3] -> [B, L, 3]
        """Tracking landmarks of posed vertices (barycentric points on `landmark_faces`)."""
        self._check_vertices(vertices)
        corners = vertices[:, self.faces[self.landmark_faces]]  # [B, L, 3, 3]
        return (corners * self.landmark_barycentrics[None, :, :, None].to(vertices.dtype)).sum(-2)

    # ------------------------------------------------------------------ helpers for subclasses
    def _check_vertices(self, vertices: Tensor) -> None:
        if not isinstance(vertices, Tensor) or vertices.dim() != 3 or vertices.shape[1:] != (self.num_vertices, 3):
            shape = list(vertices.shape) if isinstance(vertices, Tensor) else type(vertices).__name__
            raise ValueError(f"`vertices` must have shape [B, {self.num_vertices}, 3], got {shape}.")

    def _check_params_type(self, params: Any) -> None:
        if not isinstance(params, self.params_class):
            raise TypeError(
                f"{type(self).__name__} takes {self.params_class.__name__} parameters, got {type(params).__name__}; "
                f"start from `{type(self).__name__.lower()}.neutral_params(batch_size)`."
            )

    def _rest_offsets(self, rest_offsets: Tensor | None, batch: int, like: Tensor) -> Tensor | None:
        """`rest_offsets` checked (`[V, 3]` or `[B, V, 3]`, finite) and broadcast to `[B, V, 3]` like `like`."""
        if rest_offsets is None:
            return None
        shapes = ((self.num_vertices, 3), (batch, self.num_vertices, 3))
        if not isinstance(rest_offsets, Tensor) or tuple(rest_offsets.shape) not in shapes:
            shape = list(rest_offsets.shape) if isinstance(rest_offsets, Tensor) else type(rest_offsets).__name__
            raise ValueError(f"`rest_offsets` must have shape [{self.num_vertices}, 3] or [{batch}, "
                             f"{self.num_vertices}, 3], got {shape}.")
        if count_non_finite(rest_offsets):  # one sum: an avatar passes its offsets every frame
            raise ValueError("`rest_offsets` must be finite.")
        return rest_offsets.to(like).expand(batch, self.num_vertices, 3)

    def vertex_normals(self, vertices: Tensor) -> Tensor:  # [B, V, 3] -> [B, V, 3]
        """Area-weighted unit vertex normals."""
        self._check_vertices(vertices)
        tri = vertices[:, self.faces]  # [B, F, 3, 3]
        face_n = torch.cross(tri[:, :, 1] - tri[:, :, 0], tri[:, :, 2] - tri[:, :, 0], dim=-1)
        normals = torch.zeros_like(vertices)
        for corner in range(3):
            normals.index_add_(1, self.faces[:, corner], face_n)
        return normals / normals.norm(dim=-1, keepdim=True).clamp(min=1e-12)


def params_to(params, *args, **kwargs):
    """A head-parameter dataclass with every tensor moved/cast by `Tensor.to(*args, **kwargs)`: `params` itself
    when no tensor changes (as `Tensor.to` returns itself), so a per-frame call that moves nothing builds and checks
    no copy."""
    moved = {f.name: getattr(params, f.name).to(*args, **kwargs) for f in fields(params)}
    if all(moved[name] is getattr(params, name) for name in moved):
        return params
    return replace(params, **moved)
