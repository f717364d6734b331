"""FLAME, the paper's head model, in head space: shape/expression blendshapes, pose correctives and skinning.

FLAME's data is licensed by its owners (non-commercial, https://flame.is.tue.mpg.de) and is never shipped with
FHAvatar. `python -m fhavatar.tools.convert_flame` turns the official files into one safetensors file that
`FLAME.from_file` loads; `save_pretrained`/`from_pretrained` then work like any diffusers model.

Head space. FLAME is in metres, +y up, the face toward +z. The converter maps every FLAME position `x` to
`HEAD_UNITS_PER_METRE * (x - FLAME_HEAD_CENTRE_M)` (and blendshape offsets to `HEAD_UNITS_PER_METRE * offset`),
so skinning in head space equals skinning in metres followed by this similarity. Both numbers are stored in
the model config (`head_units_per_metre`, `head_centre_m`) so metre-valued FLAME translations from other
trackers can be converted: `t_head = head_units_per_metre * t_metres`.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, fields
from pathlib import Path

import torch
from diffusers.configuration_utils import register_to_config
from torch import Tensor

from .._checks import check_float_fields
from ..io import read_safetensors
from ..rotations import axis_angle_to_matrix
from .base import HEAD_UNITS_PER_METRE, HeadModel, check_buffer_tensors, mesh_buffer_specs, params_to
from .lbs import linear_blend_skinning

__all__ = [
    "FLAME",
    "FLAMEParams",
    "FLAME_FILE_FORMAT",
    "FLAME_HEAD_CENTRE_M",
    "FLAME_JOINT_NAMES",
    "FLAME_LICENCE_NOTE",
]

#: FLAME coordinates (metres) of the point that becomes the head-space origin: an estimate of the middle of the
#: FLAME template's crown-to-chin and nose-to-back-of-head extent. The converter logs the converted template's
#: bounding-box centre (and warns when it is more than 0.15 head units off), so the estimate is checked on real data.
FLAME_HEAD_CENTRE_M = (0.0, 0.02, -0.01)
#: FLAME's kinematic chain, in the order of its joints (and of `kintree_table`).
FLAME_JOINT_NAMES = ("global", "neck", "jaw", "left_eye", "right_eye")
#: Identifies files written by `fhavatar.tools.convert_flame` (safetensors metadata key "format").
FLAME_FILE_FORMAT = "fhavatar-flame/1"
FLAME_LICENCE_NOTE = (
    "Get FLAME from https://flame.is.tue.mpg.de after accepting its licence (Max Planck Institute for Intelligent "
    "Systems; non-commercial research use only). FHAvatar never ships it."
)
_POSE_WIDTHS = {"global_rotation": 3, "neck": 3, "jaw": 3, "eyes": 6, "translation": 3}


@dataclass(eq=False)
class FLAMEParams:
    """FLAME parameters of a batch. Rotations are axis-angle; translation is in head-space units.

    Args:
        shape (`Tensor`): `[B, S]` identity coefficients, `S <= FLAME.num_shape` (missing trailing ones are 0).
        expression (`Tensor`): `[B, E]` expression coefficients, `E <= FLAME.num_expression`.
        global_rotation (`Tensor`): `[B, 3]` rotation of the root joint (the whole head, about the root joint).
        neck (`Tensor`): `[B, 3]` neck joint rotation.
        jaw (`Tensor`): `[B, 3]` jaw joint rotation.
        eyes (`Tensor`): `[B, 6]` left eye then right eye rotations (FLAME joints 3 and 4).
        translation (`Tensor`): `[B, 3]` added to every vertex after skinning (head units).
    """

    shape: Tensor  # [B, S]
    expression: Tensor  # [B, E]
    global_rotation: Tensor  # [B, 3]
    neck: Tensor  # [B, 3]
    jaw: Tensor  # [B, 3]
    eyes: Tensor  # [B, 6]
    translation: Tensor  # [B, 3]

    def __post_init__(self) -> None:
        self.validate()

    @property
    def batch_size(self) -> int:
        return self.shape.shape[0]

    def validate(self, num_shape: int | None = None, num_expression: int | None = None) -> None:
        """Check types and shapes (and, given the model sizes, the coefficient counts); raise naming the field."""
        check_float_fields(self)
        shapes = {}
        for f in fields(self):
            value = getattr(self, f.name)
            if value.dim() != 2:
                raise ValueError(f"FLAMEParams.{f.name} must have shape [B, N], got {list(value.shape)}.")
            shapes[f.name] = list(value.shape)
        batch = self.shape.shape[0]
        for name, shape in shapes.items():
            if shape[0] != batch:
                raise ValueError(f"FLAMEParams fields disagree on the batch size: {shapes}.")
            if name in _POSE_WIDTHS and shape[1] != _POSE_WIDTHS[name]:
                raise ValueError(f"FLAMEParams.{name} must have shape [B, {_POSE_WIDTHS[name]}], got {shape}.")
        for name, limit in (("shape", num_shape), ("expression", num_expression)):
            if limit is not None and shapes[name][1] > limit:
                raise ValueError(
                    f"FLAMEParams.{name} has {shapes[name][1]} coefficients but the model has {limit} "
                    f"(shape {shapes[name]})."
                )

    def to(self, *args, **kwargs) -> FLAMEParams:
        """A copy with every tensor moved/cast by `Tensor.to(*args, **kwargs)` (`self` when nothing changes)."""
        return params_to(self, *args, **kwargs)


class FLAME(HeadModel):
    """The FLAME head model in head space, with its mouth covered (paper §B), UVs, regions and landmarks.

    Build it with `FLAME.from_file("flame.safetensors")` (see `fhavatar.tools.convert_flame`) or
    `FLAME.from_pretrained(folder)`. The constructor only allocates zero buffers of the configured sizes.
    Buffers beyond `HeadModel`'s: `shapedirs [V, 3, S]`, `exprdirs [V, 3, E]`, `posedirs [V, 3, 9 (J-1)]`,
    `J_regressor [J, V]`, `parents [J]` long, `lbs_weights [V, J]`. The last `num_mouth_faces` faces (and the
    last `num_mouth_vertices` vertices) are the added mouth-cavity cover.

    Args:
        num_vertices (`int`): V, FLAME's vertices plus the cavity vertices.
        num_faces (`int`): F, FLAME's triangles plus the cavity triangles.
        num_uv (`int`): T, UV coordinates.
        num_shape (`int`): S, identity blendshapes kept.
        num_expression (`int`): E, expression blendshapes kept.
        num_landmarks (`int`): L, tracking landmarks.
        num_joints (`int`, *optional*, defaults to 5): J, FLAME's joints (`FLAME_JOINT_NAMES`).
        landmark_kind (`str`, *optional*, defaults to `"mediapipe"`): `"mediapipe"` (MediaPipe-matched, from MICA's
            embedding) or `"ibug68"`/`"ibug51"` (DECA/FLAME embeddings; `landmark_mediapipe_ids` are -1).
        num_mouth_vertices (`int`, *optional*, defaults to 0): vertices added to cover the mouth.
        num_mouth_faces (`int`, *optional*, defaults to 0): faces added to cover the mouth.
        head_units_per_metre (`float`, *optional*, defaults to `HEAD_UNITS_PER_METRE`): the baked-in scale.
        head_centre_m (`tuple`, *optional*, defaults to `FLAME_HEAD_CENTRE_M`): the baked-in centre (metres).
        source (`str`, *optional*, defaults to `""`): where the data came from (file names), for the model card.

    Example:
        ```py
        >>> flame = FLAME.from_file("flame.safetensors")  # doctest: +SKIP
        >>> params = flame.neutral_params(batch_size=2)  # doctest: +SKIP
        >>> params.jaw[:, 0] = 0.2  # open the mouth  # doctest: +SKIP
        >>> vertices = flame(params)  # [2, V, 3]  # doctest: +SKIP
        ```
    """

    params_class = FLAMEParams

    @register_to_config
    def __init__(
        self,
        num_vertices: int,
        num_faces: int,
        num_uv: int,
        num_shape: int,
        num_expression: int,
        num_landmarks: int,
        num_joints: int = len(FLAME_JOINT_NAMES),
        landmark_kind: str = "mediapipe",
        num_mouth_vertices: int = 0,
        num_mouth_faces: int = 0,
        head_units_per_metre: float = HEAD_UNITS_PER_METRE,
        head_centre_m: tuple = FLAME_HEAD_CENTRE_M,
        source: str = "",
    ):
        super().__init__()
        sizes = {"num_vertices": num_vertices, "num_faces": num_faces, "num_uv": num_uv, "num_shape": num_shape,
                 "num_expression": num_expression, "num_landmarks": num_landmarks}
        for name, value in sizes.items():
            if not isinstance(value, int) or isinstance(value, bool) or value < (0 if "land" in name else 1):
                raise ValueError(f"`{name}` must be a positive int, got {value!r}.")
        if num_joints != len(FLAME_JOINT_NAMES):
            raise ValueError(f"`num_joints` must be {len(FLAME_JOINT_NAMES)} ({FLAME_JOINT_NAMES}), got {num_joints}.")
        if landmark_kind not in ("mediapipe", "ibug68", "ibug51"):
            raise ValueError(f"`landmark_kind` must be 'mediapipe', 'ibug68' or 'ibug51', got {landmark_kind!r}.")
        for name, shape, dtype in _buffer_specs(self.config):
            self.register_buffer(name, torch.zeros(shape, dtype=dtype))

    # ------------------------------------------------------------------ parameters
    def neutral_params(self, batch_size: int = 1) -> FLAMEParams:
        """All-zero parameters (the template, un-posed) on the model's device."""
        if not isinstance(batch_size, int) or batch_size < 1:
            raise ValueError(f"`batch_size` must be a positive int, got {batch_size!r}.")
        device, dtype = self.template_vertices.device, self.template_vertices.dtype

        def z(n: int) -> Tensor:
            return torch.zeros(batch_size, n, device=device, dtype=dtype)

        return FLAMEParams(z(self.config.num_shape), z(self.config.num_expression), z(3), z(3), z(3), z(6), z(3))

    # ------------------------------------------------------------------ model
    def forward(self, params: FLAMEParams, rest_offsets: Tensor | None = None) -> Tensor:  # -> [B, V, 3]
        """Posed vertices in head space: blendshapes (+ `rest_offsets`), pose correctives, linear blend skinning,
        translation. `rest_offsets` (`[V, 3]` or `[B, V, 3]`, *optional*) displaces the shaped rest mesh after the
        joints are regressed (a hair shell does not move the skeleton)."""
        self._check_params_type(params)
        params.validate(self.config.num_shape, self.config.num_expression)
        params = params.to(device=self.template_vertices.device, dtype=self.template_vertices.dtype)
        v_shaped = self.blend_shapes(params.shape, params.expression)  # [B, V, 3]
        joints = torch.einsum("jv,bvc->bjc", self.J_regressor, v_shaped)  # [B, J, 3]
        offsets = self._rest_offsets(rest_offsets, params.shape.shape[0], v_shaped)
        if offsets is not None:
            v_shaped = v_shaped + offsets
        axis_angles = torch.cat([params.global_rotation, params.neck, params.jaw, params.eyes], dim=-1)
        rotations = axis_angle_to_matrix(axis_angles.reshape(-1, len(FLAME_JOINT_NAMES), 3))  # [B, J, 3, 3]
        v_posed = v_shaped + self.pose_correctives(rotations)
        vertices, _ = linear_blend_skinning(v_posed, rotations, joints, self.parents, self.lbs_weights)
        return vertices + params.translation[:, None, :]

    def blend_shapes(self, shape: Tensor, expression: Tensor) -> Tensor:  # [B, S'], [B, E'] -> [B, V, 3]
        """Template plus identity and expression offsets (the first S' and E' blendshapes)."""
        offsets = torch.einsum("bs,vcs->bvc", shape, self.shapedirs[..., : shape.shape[1]])
        offsets = offsets + torch.einsum("be,vce->bvc", expression, self.exprdirs[..., : expression.shape[1]])
        return self.template_vertices[None] + offsets

    def pose_correctives(self, rotations: Tensor) -> Tensor:  # [B, J, 3, 3] -> [B, V, 3]
        """FLAME's pose blendshapes: `posedirs` times the flattened `R_j - I` of the non-root joints."""
        eye = torch.eye(3, dtype=rotations.dtype, device=rotations.device)
        feature = (rotations[:, 1:] - eye).reshape(rotations.shape[0], -1)  # [B, 9 (J-1)]
        return torch.einsum("bk,vck->bvc", feature, self.posedirs)

    # ------------------------------------------------------------------ loading
    @classmethod
    def from_file(cls, path: str | Path) -> FLAME:
        """Load a file written by `python -m fhavatar.tools.convert_flame` (safetensors + JSON config)."""
        path = Path(path)
        tensors, metadata = read_safetensors(
            path, "converted FLAME file",
            f"Create it with `python -m fhavatar.tools.convert_flame --model generic_model.pkl --uv "
            f"head_template_mesh.obj --masks FLAME_masks.pkl --landmarks mediapipe_landmark_embedding.npz --out "
            f"{path.name}`. {FLAME_LICENCE_NOTE}",
        )
        if metadata.get("format") != FLAME_FILE_FORMAT or "config" not in metadata:
            raise ValueError(
                f"{str(path)!r} is not an FHAvatar FLAME file (metadata format {metadata.get('format')!r}, "
                f"expected {FLAME_FILE_FORMAT!r}); convert the official files with fhavatar.tools.convert_flame."
            )
        try:
            config = json.loads(metadata["config"])
            model = cls(**config)
        except (json.JSONDecodeError, TypeError) as err:
            raise ValueError(f"{str(path)!r} has an unusable config ({err}).") from err
        check_tensors(tensors, model.config, str(path))
        model.load_state_dict(tensors, strict=True)
        return model


def _buffer_specs(config) -> list[tuple[str, tuple[int, ...], torch.dtype]]:
    """(name, shape, dtype) of every FLAME buffer for a config (also the tensors of a converted file)."""
    v, j = config["num_vertices"], config["num_joints"]
    return mesh_buffer_specs(config) + [
        ("shapedirs", (v, 3, config["num_shape"]), torch.float32),
        ("exprdirs", (v, 3, config["num_expression"]), torch.float32),
        ("posedirs", (v, 3, 9 * (j - 1)), torch.float32),
        ("J_regressor", (j, v), torch.float32),
        ("parents", (j,), torch.long),
        ("lbs_weights", (v, j), torch.float32),
    ]


def check_tensors(tensors: dict[str, Tensor], config, source: str) -> None:
    """Raise `ValueError` naming every missing, unexpected or wrongly shaped/typed FLAME tensor."""
    check_buffer_tensors(tensors, _buffer_specs(config), source, "FLAME tensor set")
