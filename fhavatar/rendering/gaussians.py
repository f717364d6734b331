"""The `Gaussians` container: one set of 3D Gaussian primitives in head space."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, fields

import torch
from torch import Tensor

from .._checks import check_finite_fields, check_float_fields
from ..rotations import quat_to_rotmat
from ._cpu_checks import values_look_valid

__all__ = ["Gaussians"]


@dataclass
class Gaussians:
    """A set of N 3D Gaussians (paper §A, 3DGS).

    Args:
        means (`Tensor` of shape `[N, 3]`): centres in head space.
        quats (`Tensor` of shape `[N, 4]`): rotations as quaternions `(w, x, y, z)`; they need not be
            normalised (the renderer normalises them), but must not be zero.
        scales (`Tensor` of shape `[N, 3]`): standard deviations along the rotated axes (linear, > 0).
        opacities (`Tensor` of shape `[N]`): opacities in `[0, 1]`.
        colors (`Tensor` of shape `[N, C]`): per-Gaussian colour (`C = 3` for RGB in `[0, 1]`).

    The constructor validates shapes, dtypes and values and raises `ValueError` naming the field. Values that passed
    are not checked again by later `validate` calls (every render runs one) while the fields hold the same tensors,
    unchanged in place (`Tensor._version`; a write through a `.numpy()` view or `.data` escapes it).

    Example:
        ```py
        >>> import torch
        >>> from fhavatar.rendering import Gaussians
        >>> g = Gaussians(means=torch.zeros(2, 3), quats=torch.tensor([[1.0, 0, 0, 0]] * 2),
        ...               scales=torch.full((2, 3), 0.01), opacities=torch.ones(2), colors=torch.rand(2, 3))
        >>> len(g)
        2
        ```
    """

    means: Tensor  # [N, 3]
    quats: Tensor  # [N, 4]
    scales: Tensor  # [N, 3]
    opacities: Tensor  # [N]
    colors: Tensor  # [N, C]

    def __post_init__(self) -> None:
        self.validate()

    @classmethod
    def checked(cls, *, means: Tensor, quats: Tensor, scales: Tensor, opacities: Tensor, colors: Tensor) -> Gaussians:
        """Gaussians of tensors the caller has validated itself, built without running `validate` again
        (`Avatar.gaussians` checks the values as its kernel computes them). Use the constructor otherwise."""
        gaussians = cls.__new__(cls)
        gaussians.__dict__.update(means=means, quats=quats, scales=scales, opacities=opacities, colors=colors)
        gaussians._values_passed()
        return gaussians

    # ------------------------------------------------------------------ validation
    def validate(self, check_values: bool = True) -> None:
        """Check shapes, dtypes, devices and (optionally) values; raise `ValueError` on the first problem."""
        check_float_fields(self, dtype_error=ValueError)
        n = self.means.shape[0] if self.means.dim() == 2 else -1
        expected = {"means": (n, 3), "quats": (n, 4), "scales": (n, 3), "opacities": (n,)}
        if self.means.dim() != 2 or self.means.shape[1] != 3:
            raise ValueError(f"Gaussians.means must have shape [N, 3], got {list(self.means.shape)}.")
        for name, shape in expected.items():
            got = tuple(getattr(self, name).shape)
            if got != shape:
                raise ValueError(
                    f"Gaussians.{name} must have shape {list(shape)} (N={n} from means), got {list(got)}."
                )
        if self.colors.dim() != 2 or self.colors.shape[0] != n or self.colors.shape[1] < 1:
            raise ValueError(f"Gaussians.colors must have shape [N, C] with N={n}, got {list(self.colors.shape)}.")
        device = self.means.device
        for f in fields(self):
            if getattr(self, f.name).device != device:
                raise ValueError(
                    f"Gaussians.{f.name} is on {getattr(self, f.name).device} but means is on {device}; "
                    "move all fields to one device (Gaussians.to(device))."
                )
        if not check_values or n == 0 or self._values_unchanged():
            return
        snapshot = self._snapshot()  # taken before the checks: a write while they run is not marked as checked
        if device.type == "cpu" and all(getattr(self, f.name).dtype == torch.float32 for f in fields(self)):
            if values_look_valid(*(getattr(self, f.name).detach().numpy() for f in fields(self))):
                self._values_passed(snapshot)
                return  # one compiled pass; otherwise the checks below name the problem
        check_finite_fields(self)
        with torch.no_grad():
            # One reduction each: validation runs on every render, so it must stay cheap.
            if self.scales.min() <= 0:
                raise ValueError(
                    f"Gaussians.scales must be positive (linear standard deviations), but the smallest is "
                    f"{self.scales.min().item():.3g}; apply exp() to log-scales first."
                )
            lo, hi = self.opacities.min().item(), self.opacities.max().item()
            if lo < 0 or hi > 1:
                raise ValueError(
                    f"Gaussians.opacities must lie in [0, 1], got range [{lo:.3g}, {hi:.3g}]; apply sigmoid() to logits first."
                )
            if self.quats.abs().amax(dim=-1).min() < 1e-12:
                raise ValueError("Gaussians.quats contains zero quaternions; each row must be a non-zero (w, x, y, z).")
        self._values_passed(snapshot)

    def _snapshot(self) -> tuple | None:
        """The fields with their in-place version counters now (None for inference-mode tensors, which keep none:
        their values are checked every time)."""
        try:
            return tuple((t, t._version) for t in (getattr(self, f.name) for f in fields(self)))
        except RuntimeError:
            return None

    def _values_passed(self, snapshot: tuple | None = None) -> None:
        """Remember the tensors whose values passed, as they were when the checks began (default: now)."""
        snapshot = self._snapshot() if snapshot is None else snapshot
        if snapshot is None:
            self.__dict__.pop("_passed", None)
        else:
            self.__dict__["_passed"] = snapshot

    def _values_unchanged(self) -> bool:
        """Whether every field is a tensor whose values passed and that was not changed in place since."""
        passed = self.__dict__.get("_passed")
        return passed is not None and all(getattr(self, f.name) is t and t._version == version
                                          for f, (t, version) in zip(fields(self), passed))

    # ------------------------------------------------------------------ container protocol
    def __len__(self) -> int:
        return self.means.shape[0]

    @property
    def num_channels(self) -> int:
        """Number of colour channels C."""
        return self.colors.shape[1]

    @property
    def device(self) -> torch.device:
        return self.means.device

    @property
    def dtype(self) -> torch.dtype:
        return self.means.dtype

    def _map(self, fn) -> Gaussians:
        return Gaussians(**{f.name: fn(getattr(self, f.name)) for f in fields(self)})

    def __getitem__(self, index) -> Gaussians:
        """Select Gaussians with an int, slice, index tensor or boolean mask over N."""
        if isinstance(index, int):
            index = slice(index, index + 1 if index != -1 else None)
        return self._map(lambda t: t[index])

    def to(self, *args, **kwargs) -> Gaussians:
        """`Tensor.to` applied to every field (device and/or dtype)."""
        return self._map(lambda t: t.to(*args, **kwargs))

    def detach(self) -> Gaussians:
        return self._map(lambda t: t.detach())

    def clone(self) -> Gaussians:
        return self._map(lambda t: t.clone())

    @staticmethod
    def cat(items: Sequence[Gaussians]) -> Gaussians:
        """Concatenate several sets along N (they must share device and channel count)."""
        items = list(items)
        if not items:
            raise ValueError("Gaussians.cat needs at least one Gaussians object, got an empty sequence.")
        channels = {g.num_channels for g in items}
        if len(channels) != 1:
            raise ValueError(f"Gaussians.cat needs one colour channel count, got {sorted(channels)}.")
        return Gaussians(**{f.name: torch.cat([getattr(g, f.name) for g in items]) for f in fields(Gaussians)})

    # ------------------------------------------------------------------ geometry
    def covariances(self) -> Tensor:
        """World-space covariances `R S S^T R^T`, shape `[N, 3, 3]`."""
        rot = quat_to_rotmat(self.quats)
        m = rot * self.scales[:, None, :]
        return m @ m.transpose(-1, -2)
