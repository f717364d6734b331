"""Avatar models: a `SourceView` (photo, head mesh, camera, optional prior) -> UV Gaussian attribute maps.

Every avatar model is called the same way, `model(make_source_view(...)) -> UVAttributes`.
"""

from ..rendering.visibility import project_texels, texel_visibility
from .attributes import ATTRIBUTE_CHANNELS, NUM_ATTRIBUTE_CHANNELS, UVAttributes, activate_attributes
from .avatar_net import PRESETS, FHAvatarModel
from .bust import build_bust
from .projection_avatar import ProjectionAvatarModel
from .source_view import VISIBILITY_RESOLUTION, SourceView, make_source_view

__all__ = [
    "ATTRIBUTE_CHANNELS",
    "FHAvatarModel",
    "NUM_ATTRIBUTE_CHANNELS",
    "PRESETS",
    "ProjectionAvatarModel",
    "SourceView",
    "UVAttributes",
    "VISIBILITY_RESOLUTION",
    "activate_attributes",
    "build_bust",
    "make_source_view",
    "project_texels",
    "texel_visibility",
]
