"""The one camera class of FHAvatar (OpenCV convention, normalised intrinsics, PanoHead labels)."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Union

import torch
from torch import Tensor

__all__ = ["Camera", "PANOHEAD_FOCAL", "PANOHEAD_RADIUS"]

#: Normalised focal length of PanoHead/EG3D cameras (fx / width: a 13.4° field of view; EG3D derives it from
#: "18.837°" with an extra factor of 1.414).
PANOHEAD_FOCAL = 4.2647
#: Distance of PanoHead/EG3D cameras from the head centre, in head-space units.
PANOHEAD_RADIUS = 2.7
#: Numbers in one PanoHead camera label: a flattened 4x4 cam2world and a flattened 3x3 intrinsics.
LABEL_SIZE = 25

_Vec3 = Union[Sequence[float], Tensor]


def _as_vec3(name: str, value: _Vec3, dtype: torch.dtype, device=None) -> Tensor:
    t = torch.as_tensor(value, dtype=dtype, device=device)
    if t.shape[-1:] != (3,) or t.dim() > 2:
        raise ValueError(f"`{name}` must have shape [3] or [B, 3], got {list(t.shape)}.")
    return t


@dataclass
class Camera:
    """A batch of B pinhole cameras.

    Convention (ARCHITECTURE.md): OpenCV camera axes (x right, y down, z forward) and a right-handed head space
    with +y up and the face looking toward +z. Intrinsics are *normalised* — `fx, cx` are fractions of the
    image width and `fy, cy` of its height — so one camera serves every resolution.

    Args:
        cam2world (`Tensor` of shape `[B, 4, 4]`): camera-to-world rigid transforms.
        intrinsics (`Tensor` of shape `[B, 3, 3]`): `[[fx, 0, cx], [0, fy, cy], [0, 0, 1]]`, normalised.

    Example:
        ```py
        >>> from fhavatar.rendering import Camera
        >>> cams = Camera.orbit(8)               # 8 views, 360° around the head, starting in front
        >>> cams.to_label().shape                # PanoHead's 25-number labels
        torch.Size([8, 25])
        ```
    """

    cam2world: Tensor  # [B, 4, 4]
    intrinsics: Tensor  # [B, 3, 3]

    def __post_init__(self) -> None:
        if not isinstance(self.cam2world, Tensor) or not isinstance(self.intrinsics, Tensor):
            raise TypeError(
                "Camera.cam2world and Camera.intrinsics must be torch.Tensors, got "
                f"{type(self.cam2world).__name__} and {type(self.intrinsics).__name__}."
            )
        if self.cam2world.dim() == 2:
            self.cam2world = self.cam2world[None]
        if self.intrinsics.dim() == 2:
            self.intrinsics = self.intrinsics[None]
        if self.cam2world.shape[-2:] != (4, 4) or self.cam2world.dim() != 3:
            raise ValueError(f"Camera.cam2world must have shape [B, 4, 4], got {list(self.cam2world.shape)}.")
        if self.intrinsics.shape[-2:] != (3, 3) or self.intrinsics.dim() != 3:
            raise ValueError(f"Camera.intrinsics must have shape [B, 3, 3], got {list(self.intrinsics.shape)}.")
        b1, b2 = self.cam2world.shape[0], self.intrinsics.shape[0]
        if b1 != b2:
            if b2 == 1:
                self.intrinsics = self.intrinsics.expand(b1, 3, 3)
            else:
                raise ValueError(f"Camera has {b1} cam2world matrices but {b2} intrinsics; they must match.")
        if self.intrinsics.device != self.cam2world.device:
            raise ValueError("Camera.cam2world and Camera.intrinsics must be on the same device.")
        self.validate()

    def validate(self) -> None:
        """Raise `ValueError` on non-finite matrices, non-rigid cam2world or invalid intrinsics."""
        with torch.no_grad():
            if not torch.isfinite(self.cam2world).all():
                raise ValueError("Camera.cam2world holds NaN/inf values.")
            if not torch.isfinite(self.intrinsics).all():
                raise ValueError("Camera.intrinsics holds NaN/inf values.")
            k = self.intrinsics
            fx, fy = k[:, 0, 0], k[:, 1, 1]
            if (fx <= 0).any() or (fy <= 0).any():
                raise ValueError(
                    "Camera.intrinsics must have positive focal lengths (normalised fx, fy > 0), got "
                    f"fx={fx.tolist()}, fy={fy.tolist()}."
                )
            zero = torch.stack([k[:, 0, 1], k[:, 1, 0], k[:, 2, 0], k[:, 2, 1], k[:, 2, 2] - 1], dim=-1)
            if zero.abs().max() > 1e-6:
                raise ValueError(
                    "Camera.intrinsics must be [[fx, 0, cx], [0, fy, cy], [0, 0, 1]] (no skew), got "
                    f"{k[zero.abs().amax(-1).argmax()].tolist()}."
                )
            rot = self.cam2world[:, :3, :3]
            eye = torch.eye(3, dtype=rot.dtype, device=rot.device)
            if (rot.transpose(1, 2) @ rot - eye).abs().max() > 1e-3:
                raise ValueError("Camera.cam2world must be a rigid transform (its 3x3 block a rotation).")
            bottom = torch.tensor([0, 0, 0, 1], dtype=rot.dtype, device=rot.device)
            if (self.cam2world[:, 3] - bottom).abs().max() > 1e-6:
                raise ValueError("Camera.cam2world's last row must be [0, 0, 0, 1].")

    # ------------------------------------------------------------------ container protocol
    def __len__(self) -> int:
        return self.cam2world.shape[0]

    def __getitem__(self, index) -> Camera:
        if isinstance(index, int):
            index = slice(index, index + 1 if index != -1 else None)
        return Camera(cam2world=self.cam2world[index], intrinsics=self.intrinsics[index])

    def to(self, *args, **kwargs) -> Camera:
        """`Tensor.to` applied to both matrices; like it, returns `self` when nothing changes (no re-validation)."""
        cam2world, intrinsics = self.cam2world.to(*args, **kwargs), self.intrinsics.to(*args, **kwargs)
        if cam2world is self.cam2world and intrinsics is self.intrinsics:
            return self
        return Camera(cam2world=cam2world, intrinsics=intrinsics)

    @property
    def device(self) -> torch.device:
        return self.cam2world.device

    @staticmethod
    def cat(cameras: Sequence[Camera]) -> Camera:
        cameras = list(cameras)
        if not cameras:
            raise ValueError("Camera.cat needs at least one Camera, got an empty sequence.")
        return Camera(
            cam2world=torch.cat([c.cam2world for c in cameras]), intrinsics=torch.cat([c.intrinsics for c in cameras])
        )

    # ------------------------------------------------------------------ derived quantities
    @property
    def world2cam(self) -> Tensor:  # [B, 4, 4]
        """World-to-camera transforms (the rigid inverse of `cam2world`)."""
        rot_t = self.cam2world[:, :3, :3].transpose(1, 2)
        out = torch.zeros_like(self.cam2world)
        out[:, :3, :3] = rot_t
        out[:, :3, 3] = -(rot_t @ self.cam2world[:, :3, 3:4])[..., 0]
        out[:, 3, 3] = 1
        return out

    @property
    def position(self) -> Tensor:  # [B, 3]
        """Camera centres in world space."""
        return self.cam2world[:, :3, 3]

    def pixel_intrinsics(self, width: int, height: int) -> Tensor:  # [B, 3, 3]
        """Intrinsics in pixels for a `width` x `height` image (pixel centres at integer + 0.5)."""
        scale = torch.tensor([width, height, 1.0], dtype=self.intrinsics.dtype, device=self.device)
        return self.intrinsics * scale[None, :, None]

    def world_to_camera(self, points: Tensor) -> Tensor:  # [N, 3] or [B, N, 3] -> [B, N, 3]
        """Transform world points into each camera's frame."""
        w2c = self.world2cam
        if points.dim() == 2:
            points = points[None].expand(len(self), -1, -1)
        return points @ w2c[:, :3, :3].transpose(1, 2) + w2c[:, None, :3, 3]

    def project(self, points: Tensor, width: int, height: int) -> tuple[Tensor, Tensor]:
        """Project world points to pixel coordinates.

        Args:
            points (`Tensor` of shape `[N, 3]` or `[B, N, 3]`): world points.
            width, height (`int`): image size in pixels.

        Returns:
            `(uv [B, N, 2], depth [B, N])`: continuous pixel coordinates (the top-left pixel's centre is at
            (0.5, 0.5)) and camera-space z. Points with `depth <= 0` project to meaningless `uv`.
        """
        pc = self.world_to_camera(points)
        k = self.pixel_intrinsics(width, height)
        z = pc[..., 2]
        safe_z = torch.where(z.abs() < 1e-12, torch.full_like(z, 1e-12), z)
        u = k[:, None, 0, 0] * pc[..., 0] / safe_z + k[:, None, 0, 2]
        v = k[:, None, 1, 1] * pc[..., 1] / safe_z + k[:, None, 1, 2]
        return torch.stack([u, v], dim=-1), z

    def unproject(self, uv: Tensor, depth: Tensor, width: int, height: int) -> Tensor:  # -> [B, N, 3]
        """World points at camera-space depth `depth` behind the pixels `uv` (the inverse of `project`).

        Args:
            uv (`Tensor` of shape `[B, N, 2]`): continuous pixel coordinates, as `project` returns them.
            depth (`Tensor` of shape `[B, N]`): camera-space z.
            width, height (`int`): image size in pixels.
        """
        k = self.pixel_intrinsics(width, height)
        x = (uv[..., 0] - k[:, None, 0, 2]) / k[:, None, 0, 0] * depth
        y = (uv[..., 1] - k[:, None, 1, 2]) / k[:, None, 1, 1] * depth
        pc = torch.stack([x, y, depth], dim=-1)
        return pc @ self.cam2world[:, :3, :3].transpose(1, 2) + self.cam2world[:, None, :3, 3]

    # ------------------------------------------------------------------ PanoHead labels
    def to_label(self) -> Tensor:  # [B, 25]
        """PanoHead/EG3D camera labels: flattened cam2world (16) followed by normalised intrinsics (9)."""
        return torch.cat([self.cam2world.reshape(-1, 16), self.intrinsics.reshape(-1, 9)], dim=-1)

    @classmethod
    def from_label(cls, label: Tensor) -> Camera:
        """Inverse of `to_label`; accepts `[25]` or `[B, 25]` (tensor, array or list)."""
        label = torch.as_tensor(label, dtype=torch.float32) if not isinstance(label, Tensor) else label
        if label.dim() == 1:
            label = label[None]
        if label.dim() != 2 or label.shape[-1] != LABEL_SIZE:
            raise ValueError(f"A PanoHead camera label has shape [{LABEL_SIZE}] or [B, {LABEL_SIZE}], got {list(label.shape)}.")
        return cls(cam2world=label[:, :16].reshape(-1, 4, 4), intrinsics=label[:, 16:].reshape(-1, 3, 3))

    # ------------------------------------------------------------------ constructors
    @staticmethod
    def make_intrinsics(focal: float = PANOHEAD_FOCAL, batch: int = 1, dtype=torch.float32, device=None) -> Tensor:
        """Normalised intrinsics with focal `focal` (fraction of the image size) and a centred principal point."""
        if not math.isfinite(focal) or focal <= 0:
            raise ValueError(f"`focal` must be a positive normalised focal length, got {focal}.")
        k = torch.tensor([[focal, 0.0, 0.5], [0.0, focal, 0.5], [0.0, 0.0, 1.0]], dtype=dtype, device=device)
        return k[None].repeat(batch, 1, 1)

    @classmethod
    def look_at(
        cls,
        eye: _Vec3,  # [3] or [B, 3]
        target: _Vec3 = (0.0, 0.0, 0.0),  # [3] or [B, 3]
        up: _Vec3 = (0.0, 1.0, 0.0),
        focal: float = PANOHEAD_FOCAL,
        dtype: torch.dtype = torch.float32,
        device=None,
    ) -> Camera:
        """Cameras at `eye` looking at `target`, with world `up` appearing upward in the image."""
        eye = _as_vec3("eye", eye, dtype, device)
        target = _as_vec3("target", target, dtype, device)
        up = _as_vec3("up", up, dtype, device)
        eye, target, up = torch.broadcast_tensors(*(t if t.dim() == 2 else t[None] for t in (eye, target, up)))
        forward = target - eye
        dist = forward.norm(dim=-1, keepdim=True)
        if (dist < 1e-9).any():
            raise ValueError("Camera.look_at: `eye` and `target` coincide; the viewing direction is undefined.")
        forward = forward / dist
        right = torch.cross(forward, up, dim=-1)
        rn = right.norm(dim=-1, keepdim=True)
        if (rn < 1e-6).any():
            raise ValueError("Camera.look_at: the viewing direction is parallel to `up`; choose another `up`.")
        right = right / rn
        down = torch.cross(forward, right, dim=-1)  # OpenCV y axis points down in the image
        c2w = torch.zeros(eye.shape[0], 4, 4, dtype=dtype, device=device)
        c2w[:, :3, 0], c2w[:, :3, 1], c2w[:, :3, 2], c2w[:, :3, 3] = right, down, forward, eye
        c2w[:, 3, 3] = 1
        return cls(cam2world=c2w, intrinsics=cls.make_intrinsics(focal, eye.shape[0], dtype, device))

    @classmethod
    def orbit(
        cls,
        num_frames: int,
        radius: float = PANOHEAD_RADIUS,
        elevation_deg: float = 0.0,
        focal: float = PANOHEAD_FOCAL,
        target: _Vec3 = (0.0, 0.0, 0.0),
        dtype: torch.dtype = torch.float32,
        device=None,
    ) -> Camera:
        """A closed 360° yaw loop of `num_frames` cameras around `target`, starting in front of the face (+z).

        Frame k sits at yaw `2πk / num_frames` (toward +x first) and `elevation_deg` above the horizon; the
        loop is closed, so frame `num_frames` would repeat frame 0 and is not included.
        """
        if not isinstance(num_frames, int) or num_frames < 1:
            raise ValueError(f"`num_frames` must be a positive int, got {num_frames!r}.")
        if not math.isfinite(radius) or radius <= 0:
            raise ValueError(f"`radius` must be positive, got {radius}.")
        if not -89.0 <= elevation_deg <= 89.0:
            raise ValueError(f"`elevation_deg` must lie in [-89, 89] degrees, got {elevation_deg}.")
        yaw = torch.arange(num_frames, dtype=torch.float64) * (2 * math.pi / num_frames)
        elev = math.radians(elevation_deg)
        offset = torch.stack(
            [math.cos(elev) * torch.sin(yaw), torch.full_like(yaw, math.sin(elev)), math.cos(elev) * torch.cos(yaw)],
            dim=-1,
        ) * radius
        target_t = _as_vec3("target", target, torch.float64)
        return cls.look_at(offset + target_t, target_t, focal=focal, dtype=dtype, device=device)
