"""`Avatar`: Gaussians sampled from UV attribute maps and bound to the source head mesh (paper §3.2).

Each Gaussian lives on one triangle of the head model (GaussianAvatars-style binding): a face index and
barycentrics give its anchor on the surface, and its offset, rotation and scale are stored in the triangle's
*local frame*, so `Avatar.gaussians(params)` re-poses the whole avatar with the head model alone.

Local frame of a triangle: `R_tri = [t | b | n]`, tangent along +u of the atlas, bitangent, outward normal
(`fhavatar.head.uv.triangle_frames`). Triangle scale `k_tri = sqrt(area)`. A Gaussian stores `offset / k_src` and
`scale / k_src`; posed, it is at
`barycentric point + R_tri @ (k_tri * offset_local)` with rotation `R_tri ∘ q_local` and scale
`k_tri * scale_local` (so `k = k_posed / k_src` multiplies the source values).

Speed: on the CPU without gradients, `gaussians` runs the compiled re-posing of `fhavatar._posing` (one frame per
used triangle, one pass over the Gaussians, the per-avatar constants cached on the avatar and rebuilt when a tensor
they come from is replaced or changed in place); it gives the same bits as `reference_gaussians`, these formulas in
torch, which runs otherwise (autograd, CUDA) and is what the tests and `benchmarks/reenact_bench.py` compare with.

Files: `save_ply` writes the standard 3DGS binary PLY that common viewers open (`fhavatar.io.ply`, whose
`save_gaussians_ply` / `load_gaussians_ply` / `PLY_PROPERTIES` / `SH_C0` are re-exported here); `save`/`Avatar.load`
keep the bound avatar (safetensors + JSON metadata) for re-animation.
"""

from __future__ import annotations

import dataclasses
import json
import threading
import weakref
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from . import _posing
from .head.uv import UVLayout, triangle_frames
from .io import read_safetensors
from .io.ply import PLY_PROPERTIES, SH_C0, load_gaussians_ply, save_gaussians_ply
from .models.attributes import UVAttributes
from .rendering.gaussians import Gaussians
from .rotations import quat_multiply, rotmat_to_quat

__all__ = [
    "AVATAR_FILE_FORMAT", "Avatar", "PLY_PROPERTIES", "SH_C0", "load_gaussians_ply", "quat_multiply", "rotmat_to_quat",
    "save_gaussians_ply", "triangle_frames",
]

#: Identifies files written by `Avatar.save` (safetensors metadata key "format").
AVATAR_FILE_FORMAT = "fhavatar-avatar/1"
#: Smallest triangle scale sqrt(area) (head units) used as a divisor; also the smallest Gaussian scale.
_MIN_SCALE = 1e-8
_BOUND_FIELDS = ("face_index", "barycentrics", "offsets", "rotations", "scales", "colors", "opacities")
_GAUSSIAN_FIELDS = tuple(f.name for f in dataclasses.fields(Gaussians))


# ---------------------------------------------------------------------------------------------- the avatar
class Avatar:
    """N Gaussians bound to the triangles of a head model (see the module docstring for the local frame).

    Build one with `Avatar.from_attributes` (or `Avatar.load`); `gaussians(params)` poses it. Tensors (all
    on one device, fp32): `face_index [N]` long, `barycentrics [N, 3]`, `offsets [N, 3]` and `scales [N, 3]`
    in units of the source triangle's scale `sqrt(area)` along its local axes, `rotations [N, 4]` unit
    `(w, x, y, z)` relative to the local frame, `colors [N, 3]` RGB in [0, 1], `opacities [N]`, and
    `source_vertices [V, 3]` with `source_params` (batch of one) of the head model, and optional `vertex_offsets
    [V, 3]`: a displacement of the head model's rest shape (the hair shell fitted to the photo's silhouette) that
    every pose carries, skinned with the head; and optional `bust` Gaussians in head space (neck, shoulders, chest
    from the photo) that no head pose moves.

    Example:
        ```py
        >>> avatar = Avatar.from_attributes(attributes, layout, head, params)   # UVAttributes from a model
        >>> talking = head.neutral_params(1); talking.jaw[:, 0] = 0.2
        >>> image = render_gaussians(avatar.gaussians(talking), camera, 512, 512).image
        >>> avatar.save_ply("avatar.ply")                                       # for any 3DGS viewer
        ```
    """

    def __init__(self, head_model: torch.nn.Module, source_params: Any, source_vertices: Tensor, face_index: Tensor,
                 barycentrics: Tensor, offsets: Tensor, rotations: Tensor, scales: Tensor, colors: Tensor,
                 opacities: Tensor, vertex_offsets: Tensor | None = None, bust: Gaussians | None = None):
        for name in ("faces", "uv_coords", "uv_faces", "num_vertices"):
            if not hasattr(head_model, name):
                raise TypeError(f"`head_model` must be a HeadModel (with faces, uv_coords, uv_faces), got "
                                f"{type(head_model).__name__}.")
        n = face_index.shape[0]
        shapes = {"face_index": (n,), "barycentrics": (n, 3), "offsets": (n, 3), "rotations": (n, 4),
                  "scales": (n, 3), "colors": (n, 3), "opacities": (n,),
                  "source_vertices": (head_model.num_vertices, 3)}
        values = dict(face_index=face_index, barycentrics=barycentrics, offsets=offsets, rotations=rotations,
                      scales=scales, colors=colors, opacities=opacities, source_vertices=source_vertices)
        if vertex_offsets is not None:
            shapes["vertex_offsets"] = (head_model.num_vertices, 3)
            values["vertex_offsets"] = vertex_offsets
        for name, shape in shapes.items():
            if tuple(values[name].shape) != shape:
                raise ValueError(f"Avatar.{name} must have shape {list(shape)}, got {list(values[name].shape)}.")
        if n and (int(face_index.min()) < 0 or int(face_index.max()) >= head_model.faces.shape[0]):
            raise ValueError(f"Avatar.face_index must lie in [0, {head_model.faces.shape[0]}), got "
                             f"[{int(face_index.min())}, {int(face_index.max())}].")
        self.head_model = head_model
        self.source_params = source_params
        self.face_index = face_index.long()
        for name in ("source_vertices", "barycentrics", "offsets", "rotations", "scales", "colors", "opacities"):
            setattr(self, name, values[name].float())
        if vertex_offsets is not None and not bool(torch.isfinite(vertex_offsets).all()):
            raise ValueError("Avatar.vertex_offsets must be finite.")
        self.vertex_offsets = None if vertex_offsets is None else vertex_offsets.float()
        if bust is not None:
            if not isinstance(bust, Gaussians):
                raise TypeError(f"Avatar.bust must be Gaussians, got {type(bust).__name__}.")
            bust.validate()
        self.bust = bust

    def __len__(self) -> int:
        """Gaussians bound to the head mesh (the bust's, if any, are `len(avatar.bust)` more)."""
        return self.face_index.shape[0]

    @property
    def device(self) -> torch.device:
        return self.colors.device

    # ------------------------------------------------------------------ construction
    @classmethod
    def from_attributes(cls, attributes: UVAttributes, layout: UVLayout, head_model: torch.nn.Module,
                        source_params: Any, batch_index: int = 0, vertex_offsets: Tensor | None = None) -> Avatar:
        """Sample Gaussians from UV attribute maps at the layout's positions X and bind them to the source mesh.

        Args:
            attributes (`UVAttributes`): activated maps `[B, C, K, K]` (see `fhavatar.models.attributes`).
                `refined_positions`, when given, moves each Gaussian by `p_r - p` (sampled at X and expressed
                in the triangle frame) on top of its offset.
            layout (`UVLayout`): the head model's atlas at the maps' resolution K.
            head_model (`HeadModel`): the head model `source_params` belongs to (kept for posing).
            source_params: the head-model parameters of the source image (batch B, e.g. `OpenHeadParams`).
            batch_index (`int`, *optional*, defaults to 0): which batch element to build.
            vertex_offsets (`Tensor` of shape `[V, 3]`, *optional*): the rest-shape displacement the source mesh was
                built with (`head_model(source_params, rest_offsets=...)`); every pose carries it.

        Differentiable with respect to the attribute maps (training renders `from_attributes(...).gaussians()`).
        """
        if not isinstance(attributes, UVAttributes):
            raise TypeError(f"`attributes` must be UVAttributes, got {type(attributes).__name__}.")
        attributes.validate()
        if not isinstance(layout, UVLayout):
            raise TypeError(f"`layout` must be a UVLayout, got {type(layout).__name__}.")
        if attributes.resolution != layout.resolution:
            raise ValueError(f"`attributes` have resolution {attributes.resolution} but `layout` has "
                             f"{layout.resolution}; build the layout at the maps' resolution.")
        batch = attributes.colors.shape[0]
        if isinstance(batch_index, bool) or not isinstance(batch_index, int) or not 0 <= batch_index < batch:
            raise ValueError(f"`batch_index` must be an int in [0, {batch}), got {batch_index!r}.")
        vertices = head_model(source_params) if vertex_offsets is None else head_model(source_params,
                                                                                       rest_offsets=vertex_offsets)
        if vertices.shape[0] != batch:
            raise ValueError(f"`source_params` has batch size {vertices.shape[0]} but `attributes` {batch}.")
        pick = slice(batch_index, batch_index + 1)
        vertices = vertices[pick].float()
        maps = attributes.map(lambda t: t[pick].float())
        face_index, bary = layout.sample_face, layout.sample_barycentrics.float()

        def sample(t: Tensor) -> Tensor:  # [1, C, K, K] -> [M, C]
            return layout.sample(t).squeeze(0).T

        frames, tri_scale = cls._frames(head_model, vertices[0], face_index)
        offsets = sample(maps.offsets)
        if maps.refined_positions is not None:
            delta = (maps.refined_positions - layout.position_map(vertices)) * layout.valid
            offsets = offsets + (frames.transpose(1, 2) @ sample(delta)[..., None])[..., 0]
        params = _select_params(source_params, batch_index)
        return cls(
            head_model, params, vertices[0], face_index, bary,
            offsets=offsets / tri_scale[:, None],
            rotations=F.normalize(sample(maps.rotations), dim=-1),
            scales=sample(maps.scales).clamp(min=_MIN_SCALE) / tri_scale[:, None],
            colors=sample(maps.colors).clamp(0, 1),
            opacities=sample(maps.opacities)[:, 0].clamp(0, 1),
            vertex_offsets=vertex_offsets,
        )

    @staticmethod
    def _frames(head_model, vertices: Tensor, face_index: Tensor) -> tuple[Tensor, Tensor]:
        """Frames `[N, 3, 3]` and scales `[N]` of the triangles `face_index` of `vertices [V, 3]`."""
        faces = head_model.faces[face_index]
        uv = head_model.uv_coords.to(vertices)[head_model.uv_faces[face_index]]
        return triangle_frames(vertices[faces], uv)

    # ------------------------------------------------------------------ posing
    def posed_vertices(self, params: Any = None) -> Tensor:  # -> [V, 3]
        """Head-model vertices for `params` (batch of one); `None` gives the source mesh."""
        if params is None:
            return self.source_vertices
        vertices = self.pose(params)
        if vertices.shape[0] != 1:
            raise ValueError(f"`params` must have batch size 1 (one pose per Gaussians set), got {vertices.shape[0]}.")
        return vertices[0].to(self.source_vertices)

    def pose(self, params: Any) -> Tensor:  # -> [B, V, 3]
        """The head model posed by `params` (any batch size) with the avatar's rest-shape `vertex_offsets`."""
        if self.vertex_offsets is None:
            return self.head_model(params)
        return self.head_model(params, rest_offsets=self.vertex_offsets)

    def gaussians(self, params: Any = None, vertices: Tensor | None = None) -> Gaussians:
        """The avatar's Gaussians on the head posed by `params` (or by explicit `vertices [V, 3]`).

        Args:
            params (*optional*): head-model parameters with batch size 1; `None` is the source pose.
            vertices (`Tensor` of shape `[V, 3]` or `[1, V, 3]`, *optional*): posed vertices instead of params.

        Returns:
            `Gaussians` with `means [N, 3]`, `quats [N, 4]`, `scales [N, 3]`, `opacities [N]`, `colors [N, 3]`
            (the bust's Gaussians, if any, follow the head's). `opacities` and `colors` are the avatar's own
            tensors (not copies) when there is no bust, as `reference_gaussians` returns them, and one concatenation
            shared by every call when there is one.

        On the CPU, without gradients, the compiled re-posing (`fhavatar._posing`: one frame per triangle, one pass
        over the Gaussians, the per-avatar constants cached) gives the same bits as `reference_gaussians`, the
        readable torch formulas, which run otherwise (autograd, CUDA).
        """
        vertices = self._posed(params, vertices)
        if not self._compiled_posing(vertices):
            return self._reference(vertices)
        cache = self._posing_cache()
        verts = vertices.detach().contiguous().numpy()
        means, quats, scales = torch.empty(cache.size, 3), torch.empty(cache.size, 4), torch.empty(cache.size, 3)
        with cache.work() as work:
            _posing.pose_faces(verts, cache.corners, cache.uv_edges, work)
            bad = _posing.pose_gaussians(verts, cache.corners, cache.slot, *cache.bound, work["frames"],
                                         work["scales"], work["quats"], *cache.fixed, means.numpy(), quats.numpy(),
                                         scales.numpy())
        if bad:  # non-finite vertices: the readable path raises the error it always raised
            return self._reference(vertices)
        # Checked: the posed values are finite (just above), scales >= 1e-8 by the clamp, unit quaternions times
        # the avatar's rotations, the rest validated when the cache was built.
        return Gaussians.checked(means=means, quats=quats, scales=scales, opacities=cache.opacities,
                                 colors=cache.colors)

    def reference_gaussians(self, params: Any = None, vertices: Tensor | None = None) -> Gaussians:
        """`gaussians` by the straightforward torch formulas of the module docstring: a triangle frame per Gaussian,
        differentiable, on any device. The readable reference the compiled re-posing is tested against."""
        return self._reference(self._posed(params, vertices))

    def _posed(self, params: Any, vertices: Tensor | None) -> Tensor:  # -> [V, 3]
        if vertices is not None:
            if params is not None:
                raise ValueError("Give `params` or `vertices`, not both.")
            if vertices.dim() == 3 and vertices.shape[0] == 1:
                vertices = vertices[0]
            if tuple(vertices.shape) != tuple(self.source_vertices.shape):
                raise ValueError(f"`vertices` must have shape {list(self.source_vertices.shape)}, got "
                                 f"{list(vertices.shape)}.")
            return vertices.to(self.source_vertices)
        return self.posed_vertices(params)

    def _reference(self, vertices: Tensor) -> Gaussians:
        frames, tri_scale = self._frames(self.head_model, vertices, self.face_index)
        corners = vertices[self.head_model.faces[self.face_index]]  # [N, 3, 3]
        anchor = (corners * self.barycentrics[..., None]).sum(1)
        local = self.offsets * tri_scale[:, None]
        head = Gaussians(
            means=anchor + (frames @ local[..., None])[..., 0],
            quats=quat_multiply(rotmat_to_quat(frames), self.rotations),
            scales=(self.scales * tri_scale[:, None]).clamp(min=_MIN_SCALE),
            opacities=self.opacities,
            colors=self.colors,
        )
        return head if self.bust is None else Gaussians.cat([head, self.bust])

    def _compiled_posing(self, vertices: Tensor) -> bool:
        """Whether `gaussians` may take the compiled path: CPU float32 tensors, no gradient to keep, and kernels that
        reproduce this PyTorch build's rounding."""
        tensors = [vertices, *(getattr(self, name) for name in _BOUND_FIELDS[1:])]
        if self.bust is not None:
            tensors += [getattr(self.bust, f) for f in _GAUSSIAN_FIELDS]
        if any(t.device.type != "cpu" or t.dtype != torch.float32 for t in tensors) or len(self) == 0:
            return False
        if torch.is_grad_enabled() and any(t.requires_grad for t in tensors):
            return False
        return _posing.matches_torch()

    def _posing_cache(self) -> _PosingCache:
        """The per-avatar constants of the compiled re-posing, rebuilt when a tensor they derive from was replaced or
        changed in place (`Tensor._version`). Kept beside the avatar (a weak mapping), not in it: copying, pickling
        or `to()` an avatar never carries a cache along."""
        with _CACHE_LOCK:
            cache = _POSING_CACHES.get(self)
        if cache is None or not cache.valid_for(self):
            cache = _PosingCache(self)
            with _CACHE_LOCK:
                _POSING_CACHES[self] = cache
        return cache

    def to(self, device=None) -> Avatar:
        """A copy on `device` (the head model is moved too: it is shared, not copied)."""
        moved = {name: getattr(self, name).to(device) for name in (*_BOUND_FIELDS, "source_vertices")}
        params = _map_params(self.source_params, lambda t: t.to(device))
        offsets = None if self.vertex_offsets is None else self.vertex_offsets.to(device)
        bust = None if self.bust is None else self.bust.to(device)
        return Avatar(self.head_model.to(device), params, **moved, vertex_offsets=offsets, bust=bust)

    # ------------------------------------------------------------------ files
    def save_ply(self, path: str | Path, params: Any = None) -> Path:
        """Write the avatar posed by `params` (default: the source pose) as a standard 3DGS PLY."""
        return save_gaussians_ply(self.gaussians(params), path)

    @staticmethod
    def load_ply(path: str | Path) -> Gaussians:
        """Read a 3DGS PLY back into `Gaussians` (the binding is not in a PLY: use `save`/`load` for that)."""
        return load_gaussians_ply(path)

    def save(self, path: str | Path) -> Path:
        """Save the bound avatar (safetensors; metadata names the head model and checks its topology)."""
        from safetensors.torch import save_file

        tensors = {name: getattr(self, name).detach().cpu().contiguous() for name in (*_BOUND_FIELDS, "source_vertices")}
        if self.vertex_offsets is not None:
            tensors["vertex_offsets"] = self.vertex_offsets.detach().cpu().contiguous()
        if self.bust is not None:
            tensors.update({f"bust.{f}": getattr(self.bust, f).detach().cpu().contiguous() for f in _GAUSSIAN_FIELDS})
        for name, value in _params_dict(self.source_params).items():
            tensors[f"source_params.{name}"] = value.detach().cpu().contiguous()
        metadata = {"format": AVATAR_FILE_FORMAT, "head": json.dumps(_head_signature(self.head_model)),
                    "params_class": type(self.source_params).__name__}
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        save_file(tensors, str(path), metadata=metadata)
        return path

    @classmethod
    def load(cls, path: str | Path, head_model: torch.nn.Module) -> Avatar:
        """Load an avatar written by `save`, re-bound to `head_model` (which must match the saved topology)."""
        tensors, metadata = read_safetensors(path, "avatar file")
        if metadata.get("format") != AVATAR_FILE_FORMAT:
            raise ValueError(f"{str(path)!r} is not an FHAvatar avatar (format {metadata.get('format')!r}, "
                             f"expected {AVATAR_FILE_FORMAT!r}).")
        saved, expected = json.loads(metadata.get("head", "{}")), _head_signature(head_model)
        if saved != expected:
            raise ValueError(f"{str(path)!r} was bound to a different head model ({saved}); got {expected}.")
        params_class = getattr(head_model, "params_class", None)
        if metadata.get("params_class") != getattr(params_class, "__name__", None):
            raise ValueError(f"{str(path)!r} holds {metadata.get('params_class')} parameters, but `head_model` "
                             f"takes {getattr(params_class, '__name__', None)}.")
        missing = [n for n in (*_BOUND_FIELDS, "source_vertices") if n not in tensors]
        if missing:
            raise ValueError(f"{str(path)!r} is incomplete: missing {missing}.")
        device = head_model.faces.device
        prefix = "source_params."
        params = params_class(**{k[len(prefix):]: v.to(device) for k, v in tensors.items() if k.startswith(prefix)})
        offsets = tensors["vertex_offsets"].to(device) if "vertex_offsets" in tensors else None  # older files: none
        bust = None
        if any(k.startswith("bust.") for k in tensors):
            missing = [f for f in _GAUSSIAN_FIELDS if f"bust.{f}" not in tensors]
            if missing:
                raise ValueError(f"{str(path)!r} holds an incomplete bust: missing {missing}.")
            bust = Gaussians(**{f: tensors[f"bust.{f}"].to(device) for f in _GAUSSIAN_FIELDS})
        return cls(head_model, params, **{n: tensors[n].to(device) for n in (*_BOUND_FIELDS, "source_vertices")},
                   vertex_offsets=offsets, bust=bust)


#: Avatar -> its `_PosingCache` (dropped with the avatar).
_POSING_CACHES: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()
_CACHE_LOCK = threading.Lock()


class _PosingCache:
    """What the compiled re-posing of one avatar reads every frame and computes once: the triangles its Gaussians
    use (their corners and UV constants), each Gaussian's row among them, the bound attributes as numpy views, and
    the colours and opacities of head and bust together. Holds the tensors it was built from, to notice when one is
    replaced or changed in place. Posings running at once (an app's requests) take one set of per-triangle arrays
    each; one idle set is kept."""

    def __init__(self, avatar: Avatar):
        self.sources = self._sources(avatar)
        head = avatar.head_model
        faces, slot = torch.unique(avatar.face_index, return_inverse=True)
        self.slot = slot.to(torch.int32).numpy()
        self.corners = head.faces[faces].to(torch.int32).contiguous().numpy()
        self.uv_edges = _posing.uv_edges(head.uv_coords.to(torch.float32)[head.uv_faces[faces]]).numpy()
        self.bound = tuple(np.ascontiguousarray(getattr(avatar, name).detach().numpy())
                           for name in ("barycentrics", "offsets", "rotations", "scales"))
        self.size = len(avatar) + (0 if avatar.bust is None else len(avatar.bust))
        if avatar.bust is None:
            self.colors, self.opacities = avatar.colors, avatar.opacities
        else:
            self.colors = torch.cat([avatar.colors, avatar.bust.colors]).detach()
            self.opacities = torch.cat([avatar.opacities, avatar.bust.opacities]).detach()
        self.outputs = ((self.colors, self.colors._version), (self.opacities, self.opacities._version))
        bust = avatar.bust
        self.fixed = tuple(np.ascontiguousarray(getattr(bust, f).detach().numpy()) if bust is not None
                           else np.empty((0, k), np.float32) for f, k in (("means", 3), ("quats", 4), ("scales", 3)))
        # What no pose changes is validated once: a bad colour, opacity or rotation raises here, as it did when
        # every posed set was validated.
        n = len(avatar)
        fixed = [torch.from_numpy(a) for a in self.fixed]
        Gaussians(means=torch.cat([torch.zeros(n, 3), fixed[0]]), quats=torch.cat([avatar.rotations.detach(), fixed[1]]),
                  scales=torch.cat([torch.ones(n, 3), fixed[2]]), opacities=self.opacities.detach(),
                  colors=self.colors.detach())
        self._faces = faces.shape[0]
        self._idle: list[dict] = []
        self._lock = threading.Lock()

    @staticmethod
    def _sources(avatar: Avatar) -> list[tuple[Tensor, int]]:
        head = avatar.head_model
        tensors = [avatar.face_index, *(getattr(avatar, name) for name in _BOUND_FIELDS[1:]), head.faces,
                   head.uv_coords, head.uv_faces]
        if avatar.bust is not None:
            tensors += [getattr(avatar.bust, f) for f in _GAUSSIAN_FIELDS]
        return [(t, t._version) for t in tensors]

    def valid_for(self, avatar: Avatar) -> bool:
        now = self._sources(avatar)
        return len(now) == len(self.sources) and all(
            t is old and v == old_v for (t, v), (old, old_v) in zip(now, self.sources)
        ) and all(t._version == v for t, v in self.outputs)

    @contextmanager
    def work(self) -> Iterator[dict]:
        """A set of per-triangle arrays (`fhavatar._posing.face_work`) for one posing."""
        with self._lock:
            work = self._idle.pop() if self._idle else None
        work = _posing.face_work(self._faces) if work is None else work
        try:
            yield work
        finally:
            with self._lock:
                if not self._idle:
                    self._idle.append(work)


def _params_dict(params: Any) -> dict[str, Tensor]:
    if not dataclasses.is_dataclass(params):
        raise TypeError(f"Head-model parameters must be a dataclass of tensors, got {type(params).__name__}.")
    return {f.name: getattr(params, f.name) for f in dataclasses.fields(params)}


def _map_params(params: Any, fn) -> Any:
    return type(params)(**{name: fn(value) for name, value in _params_dict(params).items()})


def _select_params(params: Any, index: int) -> Any:
    """Batch element `index` of a parameter dataclass, kept as a batch of one."""
    return _map_params(params, lambda t: t[index : index + 1].detach().clone())


def _head_signature(head_model: torch.nn.Module) -> dict:
    """What must match between a saved avatar and the head model it is loaded onto."""
    faces = head_model.faces.detach().cpu().long()
    weights = torch.arange(1, faces.numel() + 1, dtype=torch.long).view_as(faces) % 9973
    return {"class": type(head_model).__name__, "num_vertices": int(head_model.num_vertices),
            "num_faces": int(faces.shape[0]), "faces_checksum": int((faces * weights).sum())}
