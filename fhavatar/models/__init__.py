"""Avatar models: photo (+ head mesh, camera, optional prior) -> UV Gaussian attribute maps."""

from .attributes import ATTRIBUTE_CHANNELS, NUM_ATTRIBUTE_CHANNELS, UVAttributes, activate_attributes
from .avatar_net import PRESETS, FHAvatarModel

__all__ = [
    "ATTRIBUTE_CHANNELS",
    "FHAvatarModel",
    "NUM_ATTRIBUTE_CHANNELS",
    "PRESETS",
    "UVAttributes",
    "activate_attributes",
]
