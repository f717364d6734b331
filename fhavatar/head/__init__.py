"""Parametric head models in head space (OpenHead built in, FLAME from user files) and their UV atlas."""

from .base import HEAD_UNITS_PER_METRE, REGION_NAMES, HeadModel
from .flame import FLAME, FLAMEParams
from .open_head import OpenHead, OpenHeadParams
from .uv import UVLayout

__all__ = [
    "FLAME",
    "FLAMEParams",
    "HEAD_UNITS_PER_METRE",
    "HeadModel",
    "OpenHead",
    "OpenHeadParams",
    "REGION_NAMES",
    "UVLayout",
]
