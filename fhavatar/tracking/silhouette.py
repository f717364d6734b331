"""Outline-consistent face fitting: make the fitted head's outline agree with the photo's foreground matte.

Face Mesh places the landmarks of a strongly turned face as if it were turned less. In a near-profile photo the
far eye, brow and cheek land on the background beyond the profile, and the profile itself (brow, nose bridge, lips,
chin) lies a few pixels inside the real one. The OpenHead fit puts the face vertices exactly on the landmarks, so the
fitted head shows a "ghost" of its far side against the background and misses a band along the profile; a texture
projected from the photo (the training-free avatar) makes both visible in the source view.

`silhouette_targets` corrects the 2D targets of the 468 face vertices before the expression fit, from the crop's
foreground matte (`segment_foreground`):

1. A landmark on the background is moved to the nearest pixel at least `SILHOUETTE_INSET` inside the foreground:
   the point it stands for is hidden behind the outline, not beyond it.
2. Then, `SILHOUETTE_STEPS` times: fit the expression to the targets, rasterise the whole posed head, and move each
   visible face vertex on the head's outline whose distance to the matte's edge is at most `SILHOUETTE_SNAP` onto
   that edge, along the outline's normal. The displacements are spread over the face mesh by a screened Laplacian
   (`SNAP_SMOOTHNESS`, `SNAP_SCREENING`): the profile moves as a smooth curve and the correction fades within a few
   vertex rings, so the inner face keeps its landmarks.

Distances are given for a 512-pixel crop and scale with the crop size. When more than `MAX_OUTSIDE_FRACTION` of the
landmarks lie on the background the matte is not trusted and the targets are left as they are.
"""

from __future__ import annotations

import logging
import weakref
from collections.abc import Callable

import numpy as np
import scipy.sparse as sp
import scipy.sparse.linalg as spla
import torch
from scipy import ndimage

from ..head.open_head import NUM_FACE_VERTICES, OpenHead, OpenHeadParams
from ..rendering.cameras import Camera

__all__ = [
    "MAX_OUTSIDE_FRACTION",
    "SILHOUETTE_INSET",
    "SILHOUETTE_SNAP",
    "SILHOUETTE_STEPS",
    "check_mask",
    "silhouette_targets",
]

logger = logging.getLogger(__name__)

#: Crop size the pixel distances below are given for.
_REFERENCE_SIZE = 512
#: Landmarks on the background go this many pixels inside the foreground.
SILHOUETTE_INSET = 5.0
#: Outline vertices at most this many pixels from the matte's edge are snapped onto it (beyond: hair, a hand, a
#: segmentation error; left alone).
SILHOUETTE_SNAP = 12.0
#: The outline is snapped this many pixels inside the matte's edge: the splats of the outline vertices reach about
#: that far beyond their centres.
OUTLINE_INSET = 1.0
#: Fit -> rasterise -> snap rounds.
SILHOUETTE_STEPS = 4
#: Screened-Laplacian spreading of the snap displacements: (W + smoothness L + screening I) d = W d_snap. The decay
#: length is about sqrt(smoothness / screening) ≈ 4.5 vertex rings.
SNAP_SMOOTHNESS, SNAP_SCREENING = 1.0, 0.05
#: With more landmarks than this on the background, the matte is not trusted.
MAX_OUTSIDE_FRACTION = 0.3
#: A face vertex is on the outline when its pixel is within this many pixels inside the head's coverage.
_OUTLINE_BAND = 2.0
#: Depth tolerance (head units) of the outline vertices' visibility test against the head's z-buffer.
_DEPTH_TOLERANCE = 0.01
#: Foreground threshold of the matte.
_FOREGROUND = 0.5

_LAPLACIANS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def check_mask(mask, image_size: int) -> np.ndarray:  # -> [S, S] bool foreground
    """Validate a foreground matte `[S, S]` in [0, 1] of the `image_size` crop; return it thresholded."""
    array = np.asarray(mask.detach().cpu() if isinstance(mask, torch.Tensor) else mask, dtype=np.float64)
    if array.shape != (image_size, image_size):
        raise ValueError(f"`mask` must be the crop's foreground matte of shape [{image_size}, {image_size}], got "
                         f"{list(array.shape)}.")
    if not np.isfinite(array).all() or array.min() < 0 or array.max() > 1:
        raise ValueError("`mask` must hold finite foreground probabilities in [0, 1].")
    return array >= _FOREGROUND


def _face_laplacian(head: OpenHead) -> sp.csr_matrix:  # [468, 468]
    """Graph Laplacian of the face vertices (edges of the triangles among the first 468 vertices)."""
    if head not in _LAPLACIANS:
        faces = head.faces.detach().cpu().numpy()
        faces = faces[(faces < NUM_FACE_VERTICES).all(1)]
        edges = np.unique(np.sort(np.concatenate([faces[:, [0, 1]], faces[:, [1, 2]], faces[:, [2, 0]]]), 1), axis=0)
        n = NUM_FACE_VERTICES
        adjacency = sp.coo_matrix((np.ones(2 * len(edges)), (np.r_[edges[:, 0], edges[:, 1]],
                                                             np.r_[edges[:, 1], edges[:, 0]])), shape=(n, n)).tocsr()
        _LAPLACIANS[head] = (sp.diags(np.asarray(adjacency.sum(1)).ravel()) - adjacency).tocsr()
    return _LAPLACIANS[head]


def _lookup(image: np.ndarray, points: np.ndarray) -> np.ndarray:  # [H, W], [N, 2] pixels -> [N]
    """Values of the pixels holding `points` (x right, y down; pixel (r, c) spans [c, c+1] x [r, r+1])."""
    rows = np.clip(np.floor(points[:, 1]).astype(int), 0, image.shape[0] - 1)
    cols = np.clip(np.floor(points[:, 0]).astype(int), 0, image.shape[1] - 1)
    return image[rows, cols]


def _inside_targets(points: np.ndarray, foreground: np.ndarray, inset: float) -> tuple[np.ndarray, np.ndarray]:
    """Points `[N, 2]` on the background -> the nearest pixel centre `inset` px inside the foreground; (points, moved)."""
    inner = ndimage.binary_erosion(foreground, iterations=max(1, round(inset)))
    if not inner.any():
        inner = foreground
    _, (rows, cols) = ndimage.distance_transform_edt(~inner, return_indices=True)
    moved = ~_lookup(foreground, points)
    out = points.copy()
    out[moved, 0] = _lookup(cols, points[moved]) + 0.5
    out[moved, 1] = _lookup(rows, points[moved]) + 0.5
    return out, moved


def silhouette_targets(
    landmarks: np.ndarray,  # [478, 3] crop pixels, z scaled like x
    foreground: np.ndarray,  # [S, S] bool
    head: OpenHead,
    camera: Camera,  # the fitted crop camera (batch 1)
    fit_expression: Callable[[np.ndarray], np.ndarray],  # targets [478, 3] -> expression [468, 3]
) -> np.ndarray:  # [478, 3]
    """Landmark targets whose fitted head outline follows the matte's edge (module docstring); irises unchanged.

    Args:
        landmarks (`np.ndarray` of shape `[478, 3]`): observed Face Mesh landmarks in crop pixels.
        foreground (`np.ndarray` of shape `[S, S]`, bool): the crop's foreground (`check_mask`).
        head (`OpenHead`): the fitted model.
        camera (`Camera`): the fitted crop camera around the canonical head (PanoHead intrinsics).
        fit_expression (`Callable`): the expression fit under the fitted pose, from targets to `[468, 3]`.

    Returns:
        `np.ndarray` of shape `[478, 3]`: corrected targets (the landmarks themselves when the matte is not trusted).
    """
    from ..models.visibility import mesh_depth  # the mesh z-buffer of the visibility test

    size = foreground.shape[0]
    scale = size / _REFERENCE_SIZE
    face = landmarks[:NUM_FACE_VERTICES, :2]
    outside = ~_lookup(foreground, face)
    if foreground.all() or not foreground.any() or outside.mean() > MAX_OUTSIDE_FRACTION:
        logger.info("silhouette fit skipped: the matte has no edge, or %d of %d face landmarks lie on the background "
                    "(matte not trusted)", int(outside.sum()), NUM_FACE_VERTICES)
        return landmarks
    targets = landmarks.copy()
    targets[:NUM_FACE_VERTICES, :2], _ = _inside_targets(face, foreground, SILHOUETTE_INSET * scale)
    # Signed distance to the matte's edge, positive on the background.
    edge_distance = ndimage.distance_transform_edt(~foreground) - ndimage.distance_transform_edt(foreground)
    snap_limit, laplacian = SILHOUETTE_SNAP * scale, _face_laplacian(head)
    like = head.template_vertices
    for _ in range(SILHOUETTE_STEPS):
        expression = torch.as_tensor(fit_expression(targets), dtype=like.dtype, device=like.device)[None]
        zeros = torch.zeros(1, 3, dtype=like.dtype, device=like.device)
        params = OpenHeadParams(expression, zeros, zeros, torch.zeros(1, 2, 3, dtype=like.dtype, device=like.device),
                                zeros, zeros)
        with torch.no_grad():
            vertices = head(params)
            depth = mesh_depth(vertices, head.faces, camera, size, size)[0, 0].cpu().double().numpy()
            pix, z = camera.to(device=like.device, dtype=like.dtype).project(vertices[:, :NUM_FACE_VERTICES], size, size)
        pix, z = pix[0].cpu().double().numpy(), z[0].cpu().double().numpy()
        covered = np.isfinite(depth)
        coverage_distance = ndimage.distance_transform_edt(~covered) - ndimage.distance_transform_edt(covered)
        grad_y, grad_x = np.gradient(ndimage.gaussian_filter(coverage_distance, 1.0))
        visible = z <= _lookup(np.where(covered, depth, np.inf), pix) + _DEPTH_TOLERANCE
        on_outline = visible & (_lookup(coverage_distance, pix) > -_OUTLINE_BAND * scale)
        gap = _lookup(edge_distance, pix) + OUTLINE_INSET * scale
        snap = on_outline & (np.abs(gap) <= snap_limit) & (np.abs(gap) > 0.5)
        if not snap.any():
            break
        normal = np.stack([_lookup(grad_x, pix), _lookup(grad_y, pix)], -1)
        normal /= np.maximum(np.linalg.norm(normal, axis=1, keepdims=True), 1e-12)
        wanted = np.where(snap[:, None], -gap[:, None] * normal, 0.0)  # outward when inside the matte, and back
        weight = sp.diags(snap.astype(np.float64))
        system = (weight + SNAP_SMOOTHNESS * laplacian + SNAP_SCREENING * sp.identity(NUM_FACE_VERTICES)).tocsc()
        targets[:NUM_FACE_VERTICES, :2] = pix + spla.splu(system).solve(weight @ wanted)
    logger.debug("silhouette fit: %d landmarks moved inside the matte", int(outside.sum()))
    return targets
