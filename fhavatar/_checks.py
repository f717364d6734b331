"""Validation shared by the dataclass records of tensors (`Gaussians`, `OpenHeadParams`, `FLAMEParams`): every
field a floating-point tensor, every value finite; errors name the field as `Record.field`."""

from __future__ import annotations

from dataclasses import fields

import torch
from torch import Tensor

__all__ = ["check_finite_fields", "check_float_fields"]


def check_float_fields(record, dtype_error: type[Exception] = TypeError) -> None:
    """Raise `TypeError` unless every field of the dataclass `record` is a tensor, and `dtype_error` unless it is
    a floating-point one."""
    owner = type(record).__name__
    for f in fields(record):
        value = getattr(record, f.name)
        if not isinstance(value, Tensor):
            raise TypeError(f"{owner}.{f.name} must be a torch.Tensor, got {type(value).__name__}.")
        if not value.is_floating_point():
            raise dtype_error(f"{owner}.{f.name} must be a floating-point tensor, got dtype {value.dtype}.")


@torch.no_grad()
def check_finite_fields(record) -> None:
    """Raise `ValueError` if a tensor field of the dataclass `record` holds NaN/inf values.

    NaN/inf survive a sum, so one reduction per field settles the common (all finite) case; the element-wise test
    only runs to explain a failure (or when a huge finite sum overflowed).
    """
    owner = type(record).__name__
    for f in fields(record):
        value = getattr(record, f.name)
        if value.numel() == 0 or torch.isfinite(value.sum()):
            continue
        bad = (~torch.isfinite(value)).sum().item()
        if bad:
            raise ValueError(f"{owner}.{f.name} must be finite, but it holds {bad} NaN/inf value(s).")
