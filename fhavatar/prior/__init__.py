"""The frozen PanoHead prior (paper §3.3): tri-grid generator, dual-encoder inversion, checkpoint conversion.

`fhavatar.prior.convert` (official checkpoints -> safetensors) is not imported here, so that
`python -m fhavatar.prior.convert` runs it as a fresh module.
"""

from .generator import PanoHeadGenerator
from .inversion import DualEncoderInversion
from .panohead import GENERATOR_PRESETS, PanoHeadPrior, PriorRenderOutput
from .renderer import RenderingOptions
from .triplane import Triplane, sample_triplane

__all__ = [
    "GENERATOR_PRESETS",
    "DualEncoderInversion",
    "PanoHeadGenerator",
    "PanoHeadPrior",
    "PriorRenderOutput",
    "RenderingOptions",
    "Triplane",
    "sample_triplane",
]
