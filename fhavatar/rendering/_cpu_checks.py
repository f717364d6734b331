"""One compiled pass over a CPU set of Gaussians for `Gaussians.validate`: every value finite, scales positive,
opacities in [0, 1], no zero quaternion. The torch checks cost a dozen passes over the tensors, and a video loop
validates every frame (posing, then rendering); when this pass finds a problem the torch checks run and raise the
error that names it.
"""

from __future__ import annotations

import math

import numpy as np
from numba import njit, prange


@njit(parallel=True, cache=True, nogil=True)
def _summary(means, quats, scales, opacities, colors):  # float32 [N, 3], [N, 4], [N, 3], [N], [N, C]
    """(non-finite rows, smallest scale, smallest and largest opacity, smallest largest-|component| of a quaternion)."""
    bad = 0
    smallest_scale, lowest, highest, smallest_quat = np.inf, np.inf, -np.inf, np.inf
    for i in prange(means.shape[0]):
        total = opacities[i]  # NaN/inf survive the sum
        for d in range(3):
            total += means[i, d] + scales[i, d]
        for d in range(4):
            total += quats[i, d]
        for c in range(colors.shape[1]):
            total += colors[i, c]
        bad += not math.isfinite(total)
        smallest_scale = min(smallest_scale, min(scales[i, 0], min(scales[i, 1], scales[i, 2])))
        lowest = min(lowest, opacities[i])
        highest = max(highest, opacities[i])
        q = max(max(abs(quats[i, 0]), abs(quats[i, 1])), max(abs(quats[i, 2]), abs(quats[i, 3])))
        smallest_quat = min(smallest_quat, q)
    return bad, smallest_scale, lowest, highest, smallest_quat


def values_look_valid(means, quats, scales, opacities, colors) -> bool:
    """True when the float32 numpy arrays pass every value check of `Gaussians.validate` (False: run the torch
    checks, which name the problem; a sum that overflows also lands there)."""
    arrays = [np.ascontiguousarray(a) for a in (means, quats, scales, opacities, colors)]
    bad, smallest_scale, lowest, highest, smallest_quat = _summary(*arrays)
    return bad == 0 and smallest_scale > 0 and lowest >= 0 and highest <= 1 and smallest_quat >= 1e-12
