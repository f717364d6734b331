"""Avatar models: photo (+ head mesh, camera, optional prior) -> UV Gaussian attribute maps."""

from .attributes import ATTRIBUTE_CHANNELS, NUM_ATTRIBUTE_CHANNELS, UVAttributes, activate_attributes
from .avatar_net import PRESETS, FHAvatarModel
from .projection_avatar import ProjectionAvatarModel
from .visibility import project_texels, texel_visibility

__all__ = [
    "ATTRIBUTE_CHANNELS",
    "FHAvatarModel",
    "NUM_ATTRIBUTE_CHANNELS",
    "PRESETS",
    "ProjectionAvatarModel",
    "UVAttributes",
    "activate_attributes",
    "project_texels",
    "texel_visibility",
]
