"""Validation shared across the package: the dataclass records of tensors (`Gaussians`, `OpenHeadParams`,
`FLAMEParams`: every field a floating-point tensor, every value finite; errors name the field as `Record.field`),
named tensors such as a module's weights (`check_finite_tensors`), and registered config settings against the
range table of the class that owns them (`Setting`, `check_settings`)."""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, fields
from typing import Any

import torch
from torch import Tensor

__all__ = ["Setting", "check_finite_fields", "check_finite_tensors", "check_float_fields", "check_settings",
           "count_non_finite"]


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
def count_non_finite(value: Tensor) -> int:
    """How many NaN/inf values a floating-point tensor holds (0 for other dtypes).

    NaN/inf survive a sum, so one reduction settles the common (all finite) case; the element-wise test only runs to
    count a failure (or when a huge finite sum overflowed).
    """
    if not value.is_floating_point() or value.numel() == 0 or torch.isfinite(value.sum()):
        return 0
    return int((~torch.isfinite(value)).sum().item())


def check_finite_fields(record) -> None:
    """Raise `ValueError` if a tensor field of the dataclass `record` holds NaN/inf values."""
    owner = type(record).__name__
    for f in fields(record):
        bad = count_non_finite(getattr(record, f.name))
        if bad:
            raise ValueError(f"{owner}.{f.name} must be finite, but it holds {bad} NaN/inf value(s).")


def check_finite_tensors(tensors: Mapping[str, Tensor], owner: str) -> None:
    """Raise `ValueError` naming `owner` and the tensor if a floating-point tensor of `tensors` (e.g. a module's
    `state_dict()`) holds NaN/inf values."""
    for name, value in tensors.items():
        bad = count_non_finite(value)
        if bad:
            raise ValueError(f"{owner}: the weight `{name}` holds {bad} NaN/inf value(s) of {value.numel()}; the "
                             "weights are damaged.")


@dataclass(frozen=True)
class Setting:
    """The accepted values of one registered config setting (a row of its owner's range table).

    Args:
        kind (`str`): `"int"`, `"float"` (any real number; stored as float), `"bool"` (True or False only: `"no"`
            or 0 are refused, never read as truthy), or `"rgb"` (three numbers, each within [lo, hi]).
        lo, hi (`float`, *optional*): the closed range of a number (each channel of an `"rgb"`).
        optional (`bool`, *optional*, defaults to False): None is accepted too.
        unit (`str`, *optional*): what the number counts, for messages (`"frames"`, `"degrees"`).
    """

    kind: str
    lo: float = -math.inf
    hi: float = math.inf
    optional: bool = False
    unit: str = ""

    def describe(self) -> str:
        unit = f" ({self.unit})" if self.unit else ""
        if self.kind == "bool":
            text = "True or False"
        elif self.kind == "rgb":
            text = f"3 numbers in [{self.lo:g}, {self.hi:g}] (RGB)"
        else:
            text = f"{'an int' if self.kind == 'int' else 'a number'} in [{self.lo:g}, {self.hi:g}]{unit}"
        return text + (", or None" if self.optional else "")


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def check_setting(name: str, value: Any, setting: Setting) -> Any:
    """`value` of the setting `name`, normalised (floats as float, RGB as a list), or a `ValueError` naming it."""
    if value is None and setting.optional:
        return None
    if setting.kind == "bool":
        ok = isinstance(value, bool)
    elif setting.kind == "int":
        ok = isinstance(value, int) and not isinstance(value, bool) and setting.lo <= value <= setting.hi
    elif setting.kind == "float":
        ok = _is_number(value) and setting.lo <= value <= setting.hi
        value = float(value) if ok else value
    elif setting.kind == "rgb":
        ok = (isinstance(value, (list, tuple)) and len(value) == 3
              and all(_is_number(c) and setting.lo <= c <= setting.hi for c in value))
        value = [float(c) for c in value] if ok else value
    else:
        raise AssertionError(f"unknown setting kind {setting.kind!r}")
    if not ok:
        raise ValueError(f"`{name}` must be {setting.describe()}, got {value!r}.")
    return value


def check_settings(values: Mapping[str, Any], table: Mapping[str, Setting]) -> dict[str, Any]:
    """Every entry of `values` checked against its row of `table` (a class's range table); entries without a row
    pass unchanged. Returns the normalised values; the first bad one raises a `ValueError` naming it."""
    return {name: check_setting(name, value, table[name]) if name in table else value for name, value in values.items()}
