"""Gaussians, cameras and the one rasterizer entry point of FHAvatar; the mesh z-buffer and the texel visibility
test live in `fhavatar.rendering.visibility`."""

from ..rotations import quat_to_rotmat
from .cameras import PANOHEAD_FOCAL, PANOHEAD_RADIUS, Camera
from .gaussians import Gaussians
from .rasterize import RenderOutput, render_gaussians
from .reference import project_gaussians

__all__ = [
    "Camera",
    "Gaussians",
    "PANOHEAD_FOCAL",
    "PANOHEAD_RADIUS",
    "RenderOutput",
    "project_gaussians",
    "quat_to_rotmat",
    "render_gaussians",
]
