"""Avatar models: photo (+ head mesh, camera, optional prior) -> UV Gaussian attribute maps."""

from .attributes import ATTRIBUTE_CHANNELS, NUM_ATTRIBUTE_CHANNELS, UVAttributes, activate_attributes

__all__ = ["ATTRIBUTE_CHANNELS", "NUM_ATTRIBUTE_CHANNELS", "UVAttributes", "activate_attributes"]
