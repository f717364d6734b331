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

`mirror_hidden_side` then applies the symmetry prior (the one the avatar's texture uses, paper §3.4) to the
geometry: Face Mesh's landmarks of the side a turned face hides are guesses (a near-profile's far eye and brow are
squashed toward the profile, in 3D too), so a face vertex the camera sees worse than its mirror partner takes the
partner's displacement, reflected in x, in proportion to how badly it is seen. Well-seen vertices keep their own;
seen ones keep their pixels (only their depth follows the mirror), so the source view does not change.
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
from torch import Tensor

from ..head.open_head import NUM_FACE_VERTICES, OpenHead
from ..rendering.cameras import Camera
from ..rendering.visibility import mesh_depth

__all__ = [
    "MAX_OUTSIDE_FRACTION",
    "SILHOUETTE_INSET",
    "SILHOUETTE_SNAP",
    "SILHOUETTE_STEPS",
    "MIRROR_FULL_QUALITY",
    "check_mask",
    "matte_trusted",
    "mirror_hidden_side",
    "on_background",
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
#: In `mirror_hidden_side`, a face vertex seen at least this well (visible, and this cosine between its normal and
#: the direction to the camera) keeps its own displacement (before the weights are smoothed over the mesh); below,
#: it leans toward its mirror partner's as the partner is seen better, and takes it whole when hidden.
MIRROR_FULL_QUALITY = 0.3
#: Averaging passes of the mirror weights over the face mesh (no seam where hidden meets seen).
_MIRROR_SMOOTHING = 2
#: Largest z-buffer side of the visibility test in `mirror_hidden_side`.
_MIRROR_DEPTH_SIZE = 256

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


def _posed(head: OpenHead, expression: np.ndarray) -> Tensor:  # [468, 3] -> [1, V, 3]
    """OpenHead's vertices with the expression displacements `expression` and zero pose (the fit's head)."""
    params = head.neutral_params()
    params.expression = torch.as_tensor(expression, dtype=params.expression.dtype, device=params.expression.device)[None]
    with torch.no_grad():
        return head(params)


def _seen_face_vertices(head: OpenHead, vertices: Tensor, camera: Camera, size: int):
    """Pixels `[468, 2]`, visibility `[468]` bool (depth test against the whole head) and z-buffer `[S, S]`."""
    with torch.no_grad():
        depth = mesh_depth(vertices, head.faces, camera, size, size)[0, 0].cpu().double().numpy()
        pix, z = camera.to(device=vertices.device, dtype=vertices.dtype).project(vertices[:, :NUM_FACE_VERTICES],
                                                                                size, size)
    pix, z = pix[0].cpu().double().numpy(), z[0].cpu().double().numpy()
    covered = np.isfinite(depth)
    visible = z <= _lookup(np.where(covered, depth, np.inf), pix) + _DEPTH_TOLERANCE
    return pix, visible, depth


def mirror_hidden_side(
    expression: np.ndarray,  # [468, 3] head-space displacements of the face vertices
    head: OpenHead,
    camera: Camera,  # the fitted crop camera (batch 1)
    image_size: int,
    unobserved: np.ndarray | None = None,  # [468] bool
    foreground: np.ndarray | None = None,  # [S, S] bool
) -> tuple[np.ndarray, np.ndarray]:  # [468, 3], [468]
    """The symmetry prior on the fitted face (module docstring): badly seen vertices take their mirror's displacement.

    A vertex's quality `q` is its cosine to the camera where the depth test sees it and its landmark was observed,
    else 0. Its own weight is `max(clip(q / F), 1 - clip((q_mirror - q) / F))` (`F = MIRROR_FULL_QUALITY`, clip to
    [0, 1]), averaged over its mesh neighbours `_MIRROR_SMOOTHING` times; the blend is
    `w e + (1 - w) reflect(e[mirror])`. A vertex seen with an observed landmark keeps its pixel and takes only the
    blend's camera depth (the source view keeps what the photo shows; the far side is no longer squashed in
    depth); the others take the blend whole.

    Args:
        expression (`np.ndarray` of shape `[468, 3]`): fitted displacements (`OpenHeadParams.expression`).
        head (`OpenHead`): the fitted model (its `mirror_vertex` pairs).
        camera (`Camera`): the fitted crop camera around the canonical head.
        image_size (`int`): crop side in pixels (of `foreground`; the depth test runs at most at 256).
        unobserved (`np.ndarray` of shape `[468]`, bool, *optional*): vertices whose landmarks are known to be
            wrong (they lay on the matte's background: `silhouette_targets` moved them); treated as hidden.
        foreground (`np.ndarray` of shape `[image_size, image_size]`, bool, *optional*): the crop's foreground; a
            moved vertex that would show on its background (the symmetric far side of a face deeper than the template,
            or of an under-rotated fit, pokes out beyond the profile) goes `SILHOUETTE_INSET` pixels inside it, at
            its camera depth.

    Returns:
        `(expression [468, 3], own_weight [468])`: the symmetrised displacements and each vertex's own weight.
    """
    expression = np.asarray(expression, dtype=np.float64)
    if expression.shape != (NUM_FACE_VERTICES, 3) or not np.isfinite(expression).all():
        raise ValueError(f"`expression` must be finite face displacements of shape [{NUM_FACE_VERTICES}, 3], got "
                         f"{list(expression.shape)}.")
    if unobserved is not None and np.shape(unobserved) != (NUM_FACE_VERTICES,):
        raise ValueError(f"`unobserved` must be a bool mask of shape [{NUM_FACE_VERTICES}], got {list(np.shape(unobserved))}.")
    if isinstance(image_size, bool) or not isinstance(image_size, int) or image_size < 8:
        raise ValueError(f"`image_size` must be the crop side in pixels (an int >= 8), got {image_size!r}.")
    if not isinstance(camera, Camera) or len(camera) != 1:
        raise ValueError("`camera` must be the fitted crop camera (a fhavatar.rendering.Camera holding one camera).")
    if foreground is not None:
        _check_foreground(foreground, "foreground", image_size)
    vertices = _posed(head, expression)
    # Which vertices the camera sees needs no fine z-buffer (the landmarks' spacing is several pixels at 256).
    _, visible, _ = _seen_face_vertices(head, vertices, camera, min(image_size, _MIRROR_DEPTH_SIZE))
    if unobserved is not None:
        visible &= ~np.asarray(unobserved, dtype=bool)
    with torch.no_grad():
        points = vertices[0, :NUM_FACE_VERTICES]
        normals = head.vertex_normals(vertices)[0, :NUM_FACE_VERTICES]
        to_camera = torch.nn.functional.normalize(camera.position.to(points)[0] - points, dim=-1)
        cosine = (normals * to_camera).sum(-1).cpu().double().numpy()
    quality = np.where(visible, np.clip(cosine, 0.0, None), 0.0)
    mirror = head.mirror_vertex[:NUM_FACE_VERTICES].cpu().numpy()
    if (mirror >= NUM_FACE_VERTICES).any():
        raise ValueError("`head.mirror_vertex` pairs face vertices with non-face vertices; the head is not an OpenHead.")
    # Continuous in both qualities: 1 when seen well or no worse than the partner, 0 when hidden and the partner
    # is seen well (two barely seen partners keep most of their own).
    own = np.maximum(np.clip(quality / MIRROR_FULL_QUALITY, 0.0, 1.0),
                     1.0 - np.clip((quality[mirror] - quality) / MIRROR_FULL_QUALITY, 0.0, 1.0))
    laplacian = _face_laplacian(head)
    degree = laplacian.diagonal()
    adjacency = sp.diags(degree) - laplacian
    for _ in range(_MIRROR_SMOOTHING):
        own = (own + adjacency @ own) / (1.0 + degree)
    own = np.where(mirror == np.arange(NUM_FACE_VERTICES), 1.0, own)  # the midline is its own mirror
    reflected = expression[mirror] * np.array([-1.0, 1.0, 1.0])
    mirrored = own[:, None] * expression + (1.0 - own[:, None]) * reflected
    # A vertex seen where its landmark was observed keeps its pixel (the photo shows it there, if only as a point of
    # the outline) and takes only the mirrored depth; the others move whole.
    template = head.template_vertices[:NUM_FACE_VERTICES].detach().cpu().double().numpy()
    cam = camera.to(dtype=torch.float64, device="cpu")

    def to_pixels(points: np.ndarray) -> np.ndarray:  # [468, 3] head space -> [468, 3] (pixel x, pixel y, depth)
        uv, z = cam.project(torch.from_numpy(points), image_size, image_size)
        return torch.cat([uv[0], z[0, :, None]], 1).numpy()

    before, after = to_pixels(template + expression), to_pixels(template + mirrored)
    target = np.where(visible[:, None], np.concatenate([before[:, :2], after[:, 2:]], 1), after)
    if foreground is not None and foreground.any():
        # A moved vertex that would show on the background goes to the nearest pixel well inside the foreground at
        # its depth, as `silhouette_targets` does with the landmarks.
        outside = ~visible & (own < 1.0) & ~_lookup(foreground, target[:, :2])
        if outside.any():
            target[outside, :2], _ = _inside_targets(target[outside, :2], foreground,
                                                     SILHOUETTE_INSET * image_size / _REFERENCE_SIZE)
    target = torch.from_numpy(target)[None]
    return cam.unproject(target[..., :2], target[..., 2], image_size, image_size)[0].numpy() - template, own


def _lookup(image: np.ndarray, points: np.ndarray) -> np.ndarray:  # [H, W], [N, 2] pixels -> [N]
    """Values of the pixels holding `points` (x right, y down; pixel (r, c) spans [c, c+1] x [r, r+1])."""
    rows = np.clip(np.floor(points[:, 1]).astype(int), 0, image.shape[0] - 1)
    cols = np.clip(np.floor(points[:, 0]).astype(int), 0, image.shape[1] - 1)
    return image[rows, cols]


def _check_foreground(foreground, name: str = "foreground", size: int | None = None) -> None:
    """A thresholded matte: a square 2D bool array (`check_mask` makes one from probabilities)."""
    shape = np.shape(foreground)
    if not isinstance(foreground, np.ndarray) or foreground.dtype != bool or len(shape) != 2 or shape[0] != shape[1]:
        raise ValueError(f"`{name}` must be a square bool array (threshold a matte with `check_mask`), got "
                         f"{getattr(foreground, 'dtype', type(foreground).__name__)} of shape {list(shape)}.")
    if size is not None and shape != (size, size):
        raise ValueError(f"`{name}` must be the crop's matte of shape [{size}, {size}], got {list(shape)}.")


def on_background(landmarks: np.ndarray, foreground: np.ndarray) -> np.ndarray:  # [478 or 468, >=2], [S, S] -> [468]
    """Which of the 468 face landmarks (crop pixels) lie on the matte's background (bool `[468]`)."""
    _check_foreground(foreground)
    return ~_lookup(foreground, np.asarray(landmarks)[:NUM_FACE_VERTICES, :2])


def matte_trusted(landmarks: np.ndarray, foreground: np.ndarray) -> bool:  # [478, >=2], [S, S] bool
    """Whether the matte has an edge and at most `MAX_OUTSIDE_FRACTION` of the face landmarks lie on its background."""
    _check_foreground(foreground)
    if foreground.all() or not foreground.any():
        return False
    return bool(on_background(landmarks, foreground).mean() <= MAX_OUTSIDE_FRACTION)


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
    size = foreground.shape[0]
    scale = size / _REFERENCE_SIZE
    face = landmarks[:NUM_FACE_VERTICES, :2]
    outside = on_background(landmarks, foreground)
    if not matte_trusted(landmarks, foreground):
        logger.info("silhouette fit skipped: the matte has no edge, or %d of %d face landmarks lie on the background "
                    "(matte not trusted)", int(outside.sum()), NUM_FACE_VERTICES)
        return landmarks
    targets = landmarks.copy()
    targets[:NUM_FACE_VERTICES, :2], _ = _inside_targets(face, foreground, SILHOUETTE_INSET * scale)
    # Signed distance to the matte's edge, positive on the background.
    edge_distance = ndimage.distance_transform_edt(~foreground) - ndimage.distance_transform_edt(foreground)
    snap_limit, laplacian = SILHOUETTE_SNAP * scale, _face_laplacian(head)
    for _ in range(SILHOUETTE_STEPS):
        vertices = _posed(head, fit_expression(targets))
        pix, visible, depth = _seen_face_vertices(head, vertices, camera, size)
        covered = np.isfinite(depth)
        coverage_distance = ndimage.distance_transform_edt(~covered) - ndimage.distance_transform_edt(covered)
        grad_y, grad_x = np.gradient(ndimage.gaussian_filter(coverage_distance, 1.0))
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
