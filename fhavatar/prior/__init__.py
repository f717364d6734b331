"""The frozen PanoHead prior (paper §3.3): tri-grid generator and dual-encoder inversion.

Official checkpoints are converted offline into `PanoHeadPrior.from_pretrained` folders by
`python -m fhavatar.tools.convert_prior` (an offline tool: nothing here imports it).
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
