"""Input checks and weight-file loading shared by the metrics."""

from __future__ import annotations

from pathlib import Path

import torch
from safetensors.torch import load_file
from torch import Tensor

from ..io import checked_file


def check_images(x, name: str = "x", min_side: int = 1) -> None:
    """Raise a teaching error unless `x` is a float `[B, 3, H, W]` tensor with H, W >= `min_side`."""
    if not isinstance(x, Tensor):
        raise TypeError(f"{name} must be a torch.Tensor [B, 3, H, W] in [0, 1], got {type(x).__name__}")
    if x.ndim != 4 or x.shape[1] != 3:
        raise ValueError(f"{name} must have shape [B, 3, H, W], got {tuple(x.shape)}")
    if not x.is_floating_point():
        raise TypeError(f"{name} must be a float tensor in [0, 1], got dtype {x.dtype} (divide uint8 images by 255)")
    if min(x.shape[-2:]) < min_side:
        raise ValueError(f"{name} must be at least {min_side}x{min_side} pixels, got {tuple(x.shape[-2:])}")


def check_image_pair(x, y, min_side: int = 1) -> None:
    """`check_images` on both, plus equal shapes."""
    check_images(x, "x", min_side)
    check_images(y, "y", min_side)
    if x.shape != y.shape:
        raise ValueError(f"x and y must have the same shape, got {tuple(x.shape)} and {tuple(y.shape)}")


def load_state_dict_file(path: str | Path, name: str) -> dict[str, Tensor]:
    """Read a state dict from `.safetensors` or from a torch file with `weights_only=True` (never runs code).

    A checkpoint that wraps the weights (`{"state_dict": ...}` / `{"model": ...}`) is unwrapped, and a
    `module.` prefix (DataParallel) is stripped.
    """
    path = checked_file(Path(path).expanduser(), name)
    if path.suffix == ".safetensors":
        state = load_file(str(path), device="cpu")
    else:
        try:
            state = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as error:  # a pickle with code, or not a torch file at all
            raise ValueError(
                f"{name} {str(path)!r} could not be read as a plain state dict with weights_only=True "
                f"({type(error).__name__}: {str(error).splitlines()[0][:200]}); convert it to .safetensors"
            ) from error
        for wrapper in ("state_dict", "model"):
            if isinstance(state, dict) and isinstance(state.get(wrapper), dict):
                state = state[wrapper]
    if not isinstance(state, dict) or not all(isinstance(v, Tensor) for v in state.values()):
        raise ValueError(f"{name} {str(path)!r} must hold a dict of tensors, got {type(state).__name__}")
    return {key.removeprefix("module."): value for key, value in state.items()}
