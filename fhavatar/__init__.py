"""FHAvatar: animatable 3D full-head Gaussian avatars from a single image.

Importing the package has no side effects: nothing is downloaded, compiled or loaded until used.
"""

from .rendering import Camera, Gaussians, RenderOutput, render_gaussians

__version__ = "0.1.0"

__all__ = ["Camera", "Gaussians", "RenderOutput", "__version__", "render_gaussians"]
