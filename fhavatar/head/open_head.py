"""OpenHead: FHAvatar's built-in parametric full head, Apache-2.0-clean (MediaPipe's canonical face, completed).

Its first 468 vertices are MediaPipe Face Mesh's 468 landmarks, in landmark order, so a tracker drives them
directly: `expression` is a head-space displacement of those vertices (propagated smoothly to the stitched
cranium, the eye covers and the mouth cavity). The rest of the head follows by linear blend skinning with
five joints (`OPEN_HEAD_JOINT_NAMES`). The asset `assets/open_head.safetensors` is made by
`python -m fhavatar.tools.build_open_head`; `assets/NOTICE` carries MediaPipe's attribution.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, fields
from pathlib import Path

import torch
from diffusers.configuration_utils import register_to_config
from torch import Tensor

from .._checks import check_finite_fields, check_float_fields
from ..io import read_safetensors
from ..rotations import axis_angle_to_matrix
from . import _kernels
from .base import HEAD_UNITS_PER_METRE, HeadModel, check_buffer_tensors, mesh_buffer_specs, params_to
from .lbs import linear_blend_skinning

__all__ = [
    "NUM_FACE_VERTICES",
    "NUM_MEDIAPIPE_LANDMARKS",
    "OPEN_HEAD_FILE_FORMAT",
    "OPEN_HEAD_JOINT_NAMES",
    "OpenHead",
    "OpenHeadParams",
    "default_asset_path",
]

#: Face vertices (= MediaPipe Face Mesh landmarks without the irises) at the start of the vertex list.
NUM_FACE_VERTICES = 468
#: MediaPipe Face Mesh landmarks with irises (468-472: right iris, 473-477: left iris).
NUM_MEDIAPIPE_LANDMARKS = 478
#: Joints of the kinematic chain; parents `OPEN_HEAD_PARENTS`. "left"/"right" are the subject's (left: x > 0).
OPEN_HEAD_JOINT_NAMES = ("global", "neck", "jaw", "left_eye", "right_eye")
OPEN_HEAD_PARENTS = (-1, 0, 1, 1, 1)
#: Face vertices each vertex's expression displacement is blended from.
PROPAGATION_WIDTH = 8
#: Identifies files written by `fhavatar.tools.build_open_head` (safetensors metadata key "format").
OPEN_HEAD_FILE_FORMAT = "fhavatar-open-head/1"


def default_asset_path() -> Path:
    """The packaged asset (next to this module, never relative to the working directory)."""
    return Path(__file__).parent / "assets" / "open_head.safetensors"


_WIDTHS = {"jaw": (3,), "neck": (3,), "eyes": (2, 3), "global_rotation": (3,), "translation": (3,)}


@dataclass
class OpenHeadParams:
    """OpenHead parameters of a batch. Rotations are axis-angle (radians); lengths are head-space units.

    Args:
        expression (`Tensor`): `[B, 468, 3]` displacement of the face vertices (the MediaPipe landmarks).
        jaw (`Tensor`): `[B, 3]` jaw rotation (about +x opens the mouth).
        neck (`Tensor`): `[B, 3]` head rotation about the neck joint (the neck base stays).
        eyes (`Tensor`): `[B, 2, 3]` rotations of the subject's left eye (x > 0), then the right eye.
        global_rotation (`Tensor`): `[B, 3]` rotation of the whole posed head about the head-space origin.
        translation (`Tensor`): `[B, 3]` added to every vertex last.
    """

    expression: Tensor  # [B, 468, 3]
    jaw: Tensor  # [B, 3]
    neck: Tensor  # [B, 3]
    eyes: Tensor  # [B, 2, 3]
    global_rotation: Tensor  # [B, 3]
    translation: Tensor  # [B, 3]

    def __post_init__(self) -> None:
        self.validate()

    @property
    def batch_size(self) -> int:
        return self.expression.shape[0]

    def validate(self) -> None:
        """Check types, shapes (one batch size) and finiteness; raise `TypeError`/`ValueError` naming the field."""
        check_float_fields(self)
        shapes = {f.name: list(getattr(self, f.name).shape) for f in fields(self)}
        if self.expression.dim() != 3 or tuple(self.expression.shape[1:]) != (NUM_FACE_VERTICES, 3):
            raise ValueError(f"OpenHeadParams.expression must have shape [B, {NUM_FACE_VERTICES}, 3], "
                             f"got {shapes['expression']}.")
        batch = self.expression.shape[0]
        for name, width in _WIDTHS.items():
            if tuple(shapes[name]) != (batch, *width):
                raise ValueError(f"OpenHeadParams.{name} must have shape {[batch, *width]} (B={batch} from "
                                 f"`expression`), got {shapes[name]}.")
        check_finite_fields(self)

    def to(self, *args, **kwargs) -> OpenHeadParams:
        """A copy with every tensor moved/cast by `Tensor.to(*args, **kwargs)` (`self` when nothing changes)."""
        return params_to(self, *args, **kwargs)


class OpenHead(HeadModel):
    """The built-in full head: MediaPipe's canonical face completed with cranium, ears, neck stub, eye covers
    and mouth cavity; closed, mirror-symmetric in x, with a mirror-symmetric UV atlas.

    `OpenHead()` loads the packaged asset; `OpenHead.from_file(path)` a rebuilt one; `from_pretrained` a
    `save_pretrained` folder. Buffers beyond `HeadModel`'s: `mirror_vertex [V]` long (each vertex's x-mirror),
    `parents [J]` long, `joint_locations [J, 3]`, `skinning_weights [V, J]` (rows sum to 1),
    `expression_sources [V, K]` long and `expression_weights [V, K]` (vertex v moves by
    `sum_k weights[v, k] * expression[sources[v, k]]`; face vertex i is driven by `expression[i]` alone).

    Args:
        num_vertices (`int`, *optional*): V; `None` (with `num_faces` and `num_uv`) loads the packaged asset.
        num_faces (`int`, *optional*): F, triangles.
        num_uv (`int`, *optional*): T, UV coordinates (seams duplicate vertices in UV space).
        num_landmarks (`int`, *optional*, defaults to 478): L, MediaPipe landmarks embedded on the mesh.
        num_joints (`int`, *optional*, defaults to 5): J (`OPEN_HEAD_JOINT_NAMES`).
        propagation_width (`int`, *optional*, defaults to 8): K, face vertices blended per vertex.
        head_units_per_metre (`float`, *optional*, defaults to `HEAD_UNITS_PER_METRE`): the baked-in scale.
        head_centre_cm (`tuple`, *optional*): canonical-face point (cm) placed at the head-space origin.

    Example:
        ```py
        >>> import torch
        >>> from fhavatar.head.open_head import OpenHead
        >>> head = OpenHead()
        >>> params = head.neutral_params(batch_size=2)
        >>> params.jaw[:, 0] = 0.3  # open the mouth
        >>> head(params).shape[0], head.landmarks(head(params)).shape
        (2, torch.Size([2, 478, 3]))
        ```
    """

    params_class = OpenHeadParams

    @register_to_config
    def __init__(
        self,
        num_vertices: int | None = None,
        num_faces: int | None = None,
        num_uv: int | None = None,
        num_landmarks: int = NUM_MEDIAPIPE_LANDMARKS,
        num_joints: int = len(OPEN_HEAD_JOINT_NAMES),
        propagation_width: int = PROPAGATION_WIDTH,
        head_units_per_metre: float = HEAD_UNITS_PER_METRE,
        head_centre_cm: tuple = (0.0, 0.0, 0.0),
    ):
        super().__init__()
        sizes = {"num_vertices": num_vertices, "num_faces": num_faces, "num_uv": num_uv}
        tensors = None
        if all(v is None for v in sizes.values()):
            tensors, config = _read_asset(default_asset_path())
            self.register_to_config(**config)
        elif any(v is None for v in sizes.values()):
            raise ValueError(f"Give all of num_vertices, num_faces and num_uv, or none of them (to load the "
                             f"packaged asset); got {sizes}.")
        config = self.config
        for name in ("num_vertices", "num_faces", "num_uv", "num_landmarks", "propagation_width"):
            value = config[name]
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ValueError(f"`{name}` must be a positive int, got {value!r}.")
        if config["num_joints"] != len(OPEN_HEAD_JOINT_NAMES):
            raise ValueError(f"`num_joints` must be {len(OPEN_HEAD_JOINT_NAMES)} {OPEN_HEAD_JOINT_NAMES}, "
                             f"got {config['num_joints']!r}.")
        scale = config["head_units_per_metre"]
        if not (isinstance(scale, (int, float)) and math.isfinite(scale) and scale > 0):
            raise ValueError(f"`head_units_per_metre` must be a positive number, got {scale!r}.")
        for name, shape, dtype in _buffer_specs(config):
            self.register_buffer(name, tensors[name] if tensors is not None else torch.zeros(shape, dtype=dtype))

    # ------------------------------------------------------------------ parameters
    def neutral_params(self, batch_size: int = 1) -> OpenHeadParams:
        """All-zero parameters (the template) on the model's device and dtype."""
        if not isinstance(batch_size, int) or isinstance(batch_size, bool) or batch_size < 1:
            raise ValueError(f"`batch_size` must be a positive int, got {batch_size!r}.")
        like = self.template_vertices

        def z(*shape: int) -> Tensor:
            return torch.zeros(batch_size, *shape, device=like.device, dtype=like.dtype)

        return OpenHeadParams(z(NUM_FACE_VERTICES, 3), z(3), z(3), z(2, 3), z(3), z(3))

    # ------------------------------------------------------------------ model
    def expression_offsets(self, expression: Tensor) -> Tensor:  # [B, 468, 3] -> [B, V, 3]
        """Rest-pose displacement of every vertex for face-vertex displacements `expression`.

        `sum_k expression_weights[v, k] * expression[:, expression_sources[v, k]]`: on the CPU in float32 without
        gradients, one compiled pass (`fhavatar.head._kernels`, the same bits); the torch formula otherwise."""
        tensors = (expression, self.expression_weights)
        if (expression.dim() == 3 and expression.shape[2] == 3  # other shapes: torch's error
                and all(t.device.type == "cpu" and t.dtype == torch.float32 for t in tensors)
                and not (torch.is_grad_enabled() and any(t.requires_grad for t in tensors))
                and _kernels.matches_torch(self.expression_sources.shape[1])):
            out = torch.empty(expression.shape[0], self.num_vertices, 3, dtype=torch.float32)
            _kernels.expression_offsets(expression.detach().contiguous().numpy(), self.expression_sources.numpy(),
                                        self.expression_weights.detach().contiguous().numpy(), out.numpy())
            return out
        return _kernels.expression_offsets_torch(expression, self.expression_sources, self.expression_weights)

    def forward(self, params: OpenHeadParams, rest_offsets: Tensor | None = None) -> Tensor:  # -> [B, V, 3]
        """Posed vertices: template + expression (+ `rest_offsets`), skinning (neck, jaw, eyes), global rotation about
        the origin, translation.

        Args:
            params (`OpenHeadParams`): batch B.
            rest_offsets (`Tensor` of shape `[V, 3]` or `[B, V, 3]`, *optional*): per-vertex displacements of the rest
                shape, skinned with it (an avatar's hair shell: it follows the head, and the neck's base stays).
        """
        self._check_params_type(params)
        params.validate()
        params = params.to(device=self.template_vertices.device, dtype=self.template_vertices.dtype)
        batch = params.batch_size
        rest = self.template_vertices[None] + self.expression_offsets(params.expression)  # [B, V, 3]
        offsets = self._rest_offsets(rest_offsets, batch, rest)
        if offsets is not None:
            rest = rest + offsets
        axis_angles = torch.stack(
            [torch.zeros_like(params.jaw), params.neck, params.jaw, params.eyes[:, 0], params.eyes[:, 1]], dim=1
        )  # [B, J, 3]; the global joint stays (global rotation acts about the origin below)
        joints = self.joint_locations[None].expand(batch, -1, -1)
        posed, _ = linear_blend_skinning(rest, axis_angle_to_matrix(axis_angles), joints, self.parents,
                                         self.skinning_weights)
        rotation = axis_angle_to_matrix(params.global_rotation)  # [B, 3, 3]
        return posed @ rotation.transpose(1, 2) + params.translation[:, None, :]

    # ------------------------------------------------------------------ loading
    @classmethod
    def from_file(cls, path: str | Path) -> OpenHead:
        """Load an asset written by `python -m fhavatar.tools.build_open_head --out PATH`."""
        tensors, config = _read_asset(Path(path))
        model = cls(**config)
        model.load_state_dict(tensors, strict=True)
        return model


def _buffer_specs(config) -> list[tuple[str, tuple[int, ...], torch.dtype]]:
    """(name, shape, dtype) of every OpenHead buffer for a config (also the tensors of an asset file)."""
    v, j, k = config["num_vertices"], config["num_joints"], config["propagation_width"]
    return mesh_buffer_specs(config) + [
        ("mirror_vertex", (v,), torch.long),
        ("parents", (j,), torch.long),
        ("joint_locations", (j, 3), torch.float32),
        ("skinning_weights", (v, j), torch.float32),
        ("expression_sources", (v, k), torch.long),
        ("expression_weights", (v, k), torch.float32),
    ]


def _read_asset(path: Path) -> tuple[dict[str, Tensor], dict]:
    """Tensors and config of an OpenHead asset, checked; clear errors for missing or corrupted files."""
    if not path.is_file():
        raise FileNotFoundError(f"No OpenHead asset at {str(path)!r}; build it with "
                                f"`python -m fhavatar.tools.build_open_head --out {path}`.")
    tensors, metadata = read_safetensors(path, "OpenHead asset")
    try:
        config = json.loads(metadata.get("config", "null"))
    except ValueError as err:
        raise ValueError(f"{str(path)!r} has an unreadable OpenHead config ({err}); rebuild it with "
                         f"`python -m fhavatar.tools.build_open_head`.") from err
    if metadata.get("format") != OPEN_HEAD_FILE_FORMAT or not isinstance(config, dict):
        raise ValueError(f"{str(path)!r} is not an OpenHead asset (metadata format {metadata.get('format')!r}, "
                         f"expected {OPEN_HEAD_FILE_FORMAT!r}).")
    try:
        specs = _buffer_specs(config)
    except KeyError as err:
        raise ValueError(f"{str(path)!r} has an incomplete config (missing {err}).") from err
    check_buffer_tensors(tensors, specs, repr(str(path)), "OpenHead asset")
    return tensors, config
