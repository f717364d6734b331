"""FHAvatar: animatable 3D full-head Gaussian avatars from a single image.

Importing the package has no side effects: nothing is downloaded, compiled or loaded until used. The pipeline
(`FHAvatarPipeline`, which pulls in diffusers) and `Avatar` are imported on first access; MediaPipe only when a
photo is tracked.

Example:
    ```py
    >>> import fhavatar
    >>> pipe = fhavatar.FHAvatarPipeline.default(resolution=64)
    >>> out = pipe("photo.jpg", num_orbit_frames=8, height=128, width=128)  # doctest: +SKIP
    ```
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from .rendering import Camera, Gaussians, RenderOutput, render_gaussians

if TYPE_CHECKING:
    from .avatar import Avatar
    from .pipeline_fhavatar import FHAvatarPipeline, FHAvatarPipelineOutput, make_model_card
    from .prior import PanoHeadPrior

__version__ = "0.1.0"

#: Names imported on first access, and the module that defines each.
_LAZY = {
    "Avatar": ".avatar",
    "FHAvatarPipeline": ".pipeline_fhavatar",
    "FHAvatarPipelineOutput": ".pipeline_fhavatar",
    "PanoHeadPrior": ".prior",
    "make_model_card": ".pipeline_fhavatar",
}

__all__ = [
    "Avatar",
    "Camera",
    "FHAvatarPipeline",
    "FHAvatarPipelineOutput",
    "Gaussians",
    "PanoHeadPrior",
    "RenderOutput",
    "__version__",
    "make_model_card",
    "render_gaussians",
]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        value = getattr(importlib.import_module(_LAZY[name], __name__), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY))
