"""The hair shell: a displacement of the head model's rest shape fitted so the source view's silhouette meets the
photo's matte — the training-free counterpart of the paper's UV shape refinement Δp_uv (eq. 2).

OpenHead is a bare skull; the photo shows hair, a hat or a hood around it. Every vertex outside the face, eyes and
mouth moves along its (smoothed) rest normal by a magnitude m_v, found by a few rounds of silhouette matching in the
source view:

1. Render the mesh's silhouette; cast rays from the projected head centre and compare, per direction in the image,
   where the ray leaves the matte and where it leaves the silhouette, inside the head rows (above the chin plus 10 %
   of the crop: the torso is not head). A ray that reaches those rows' end inside the matte holds no constraint.
2. The gap (pixels, smoothed over directions, turned into head units at the head's depth) moves the vertices that
   project in that direction, in proportion to how much their normal lies in the image plane (the silhouette's rim).
   Vertices facing away from the camera (the back of the head, which the photo cannot show) take the mean gap of
   the upper directions: the back continues the sides' volume.
3. The magnitudes are clamped (`MAX_GROWTH` out, `MAX_SHRINK` in, and no steeper than `MAX_SLOPE` from the face),
   smoothed over the mesh, and faded in from the face over `FACE_FALLOFF`, so the face the tracker fitted stays where
   it is and no triangle stretches into a gap.

The shell is refused (None, with a logged warning) when the matte is missing or untrusted, or when the fit does not
bring the silhouette closer to the matte: the avatar then keeps the bare head there, never a spike of geometry.
"""

from __future__ import annotations

import logging
import math

import numpy as np
import torch
import torch.nn.functional as F
from scipy import ndimage
from torch import Tensor

from ..head.canonical_face import CHIN
from ..head.open_head import OpenHead
from ..rendering.visibility import mesh_depth
from .face_track import FaceTrack
from .silhouette import matte_trusted

__all__ = ["FACE_FALLOFF", "HEAD_ROWS_BELOW_CHIN", "MAX_GROWTH", "MAX_SHRINK", "fit_hair_shell", "shell_weights"]

logger = logging.getLogger(__name__)

#: Largest outward displacement, head units (about 9 cm: big hair, a hat's brim).
MAX_GROWTH = 0.16
#: Largest inward displacement, head units (about 1.7 cm: a skull narrower than the template's).
MAX_SHRINK = 0.03
#: Distance from the face, eyes and mouth over which the shell fades in, head units (about 3.3 cm).
FACE_FALLOFF = 0.06
#: The head region of a crop ends this fraction of the crop height below the chin (the torso is not head); the
#: full-head metrics (`fhavatar.metrics.full_head`) use the same rows.
HEAD_ROWS_BELOW_CHIN = 0.10
#: The rendered avatar's outline lies this fraction of the crop side (1 pixel of a 256² crop) outside its mesh's: the
#: splats centred on the surface spread past it. The mesh is fitted that much inside the matte, so the render meets
#: it (measured before: the avatar's source-view silhouette covered ~1 pixel all around outside the matte).
SPLAT_REACH = 1 / 256
#: Image directions around the head centre.
ANGLE_BINS = 180
#: Silhouette-matching rounds.
ITERATIONS = 4
#: Mesh smoothing passes of the magnitudes after each round.
SMOOTHING_PASSES = 4
#: Outward growth at most this many times a vertex's distance from the face: the shell rises from the face no steeper
#: than this, so no triangle between them stretches into a sliver the Gaussians cannot close.
MAX_SLOPE = 2.5


def _neighbour_mean(values: Tensor, faces: Tensor) -> Tensor:  # [V, C], [F, 3] -> [V, C]
    """Mean of each vertex's values over the vertices sharing a triangle with it (itself included)."""
    total = values.clone()
    count = torch.ones(values.shape[0], 1, dtype=values.dtype)
    for a in range(3):
        for b in range(3):
            if a != b:
                total.index_add_(0, faces[:, a], values[faces[:, b]])
                count.index_add_(0, faces[:, a], torch.ones(faces.shape[0], 1, dtype=values.dtype))
    return total / count


def _face_distance(head: OpenHead) -> Tensor:  # -> [V] head units, 0 on the face, eyes and mouth
    rest = head.template_vertices.float()
    fixed = head.region("face") | head.region("eyes") | head.region("mouth")
    return torch.where(fixed, torch.zeros(len(rest)), torch.cdist(rest, rest[fixed]).min(dim=1).values)


def shell_weights(head: OpenHead) -> Tensor:  # -> [V] in [0, 1]
    """How much each vertex may move with the shell: 0 on the face, eyes and mouth, 1 from `FACE_FALLOFF` away."""
    t = (_face_distance(head) / FACE_FALLOFF).clamp(0, 1)
    return t * t * (3 - 2 * t)


def _ray_exits(inside: np.ndarray, centre: np.ndarray, rows_end: float, steps: np.ndarray,
               directions: np.ndarray) -> tuple[np.ndarray, np.ndarray]:  # -> [A] radii (px), [A] bool constrained
    """Where each ray from `centre` first leaves `inside` ([H, W] bool); rays still inside at `rows_end` are free."""
    height, width = inside.shape
    points = centre[None, None] + steps[None, :, None] * directions[:, None]  # [A, S, 2] (x, y)
    cols, rows = np.floor(points[..., 0]).astype(int), np.floor(points[..., 1]).astype(int)
    in_image = (cols >= 0) & (cols < width) & (rows >= 0) & (rows < height)
    hit = np.zeros(cols.shape, bool)
    hit[in_image] = inside[rows[in_image], cols[in_image]]
    below = points[..., 1] >= rows_end
    out = ~hit | below
    first = np.where(out.any(1), out.argmax(1), steps.size - 1)
    constrained = ~below[np.arange(len(first)), first] & out.any(1)
    return steps[first], constrained


def _silhouette(vertices: Tensor, head: OpenHead, track: FaceTrack, size: int) -> np.ndarray:  # -> [size, size]
    depth = mesh_depth(vertices[None], head.faces, track.camera, size, size)[0, 0]
    return torch.isfinite(depth).numpy()


def _iou(a: np.ndarray, b: np.ndarray, rows: np.ndarray) -> float:
    union = ((a | b) & rows).sum()
    return float(((a & b) & rows).sum() / union) if union else 1.0


@torch.no_grad()
def fit_hair_shell(track: FaceTrack, head: OpenHead, resolution: int = 256,
                   iterations: int = ITERATIONS) -> Tensor | None:  # -> [V, 3] rest offsets, or None
    """Rest-shape offsets `[V, 3]` (head units) that give `head`, posed by `track.params`, the photo's silhouette.

    Args:
        track (`FaceTrack`): the photo's track, with its matte (`track.mask`).
        head (`OpenHead`): the head model the track was fitted with.
        resolution (`int`, *optional*, defaults to 256): side of the silhouettes compared, pixels.
        iterations (`int`, *optional*, defaults to 4): silhouette-matching rounds.

    Returns:
        `Tensor` `[V, 3]` for `head(params, rest_offsets=...)`, or None where no shell is fitted (no or untrusted
        matte, or a fit that does not improve the silhouette), with a logged warning saying why.
    """
    if not isinstance(track, FaceTrack):
        raise TypeError(f"`track` must be a FaceTrack, got {type(track).__name__}.")
    if not isinstance(head, OpenHead):
        raise TypeError(f"`head` must be an OpenHead, got {type(head).__name__}.")
    if isinstance(resolution, bool) or not isinstance(resolution, int) or not 32 <= resolution <= 2048:
        raise ValueError(f"`resolution` must be an int in [32, 2048], got {resolution!r}.")
    if isinstance(iterations, bool) or not isinstance(iterations, int) or not 1 <= iterations <= 20:
        raise ValueError(f"`iterations` must be an int in [1, 20], got {iterations!r}.")
    if track.mask is None:
        return None
    if not matte_trusted(track.landmarks, track.mask > 0.5):
        logger.warning("The photo's foreground matte contradicts the face landmarks: no hair shell is fitted (the "
                       "avatar keeps the bare head's outline).")
        return None
    crop = track.image.shape[0]
    scale = resolution / crop
    matte = F.interpolate(torch.from_numpy(track.mask).float()[None, None], size=(resolution, resolution),
                          mode="area")[0, 0].numpy() > 0.5
    matte = ndimage.binary_fill_holes(ndimage.binary_closing(matte, iterations=2))
    rows_end = (float(track.landmarks[CHIN, 1]) + HEAD_ROWS_BELOW_CHIN * crop) * scale
    rows = (np.arange(resolution) + 0.5 < rows_end)[:, None] & np.ones((1, resolution), bool)

    params = track.params.to(device=head.template_vertices.device, dtype=torch.float32)
    faces = head.faces
    rest = head.template_vertices.float()
    normals = head.vertex_normals(rest[None])[0]
    for _ in range(3):
        normals = F.normalize(_neighbour_mean(normals, faces), dim=-1)
    weight = shell_weights(head)
    ceiling = (MAX_SLOPE * _face_distance(head)).clamp(max=MAX_GROWTH)
    camera = track.camera
    rotation = camera.cam2world[0, :3, :3].float()  # camera axes in head space (columns)
    focal_px = float(camera.pixel_intrinsics(resolution, resolution)[0, 0, 0])

    angles = (np.arange(ANGLE_BINS) + 0.5) * 2 * math.pi / ANGLE_BINS
    directions = np.stack([np.cos(angles), np.sin(angles)], -1)  # image x right, y down
    steps = np.arange(0.5, 1.5 * resolution, 0.5)
    upper = directions[:, 1] < -0.2  # directions pointing up in the image

    magnitude = torch.zeros(rest.shape[0])
    offsets = torch.zeros_like(rest)
    before = None
    for _ in range(iterations):
        vertices = head(params, rest_offsets=offsets)[0].float()
        silhouette = _silhouette(vertices, head, track, resolution)
        if before is None:
            before = _iou(silhouette, matte, rows)
        centre_3d = vertices[weight > 0.5].mean(0, keepdim=True)
        centre_px, centre_depth = camera.project(centre_3d[None], resolution, resolution)
        centre = centre_px[0, 0].numpy().astype(np.float64)
        if not (matte[int(np.clip(centre[1], 0, resolution - 1)), int(np.clip(centre[0], 0, resolution - 1))]):
            logger.warning("The head's centre projects outside the photo's matte: no hair shell is fitted.")
            return None
        to_matte, free_matte = _ray_exits(matte, centre, rows_end, steps, directions)
        to_mesh, free_mesh = _ray_exits(silhouette, centre, rows_end, steps, directions)
        valid = free_matte & free_mesh
        if valid.sum() < ANGLE_BINS // 4:
            logger.warning("Too little of the photo's head outline is visible: no hair shell is fitted.")
            return None
        gap = np.where(valid, to_matte - to_mesh - SPLAT_REACH * resolution, 0.0)
        # Smooth over directions (circular), counting only constrained rays.
        kernel = np.exp(-0.5 * (np.arange(-6, 7) / 2.5) ** 2)
        wrap = lambda x: np.concatenate([x[-6:], x, x[:6]])  # noqa: E731
        gap = np.convolve(wrap(gap * valid), kernel, "valid") / np.maximum(
            np.convolve(wrap(valid.astype(float)), kernel, "valid"), 1e-6)
        gap_units = torch.from_numpy(gap * float(centre_depth[0, 0]) / focal_px).float()  # pixels -> head units
        mean_upper = float(gap_units[torch.from_numpy(upper & valid)].mean()) if (upper & valid).any() else 0.0

        # Per vertex: its direction bin, and how much its normal lies in the image plane (the rim).
        pixels, _ = camera.project(vertices[None], resolution, resolution)
        rel = pixels[0].double().numpy() - centre[None]
        bins = ((np.arctan2(rel[:, 1], rel[:, 0]) % (2 * math.pi)) / (2 * math.pi) * ANGLE_BINS).astype(int)
        bins = torch.from_numpy(np.clip(bins, 0, ANGLE_BINS - 1))
        posed_normals = head.vertex_normals(vertices[None])[0]
        in_camera = posed_normals @ rotation  # [V, 3] in camera axes (x right, y down, z forward)
        rim = (in_camera[:, :2].norm(dim=-1) / 0.6).clamp(0, 1)
        facing_away = in_camera[:, 2] > 0  # the normal points away from the camera: the unseen back
        update = rim * gap_units[bins] + torch.where(facing_away, (1 - rim) * mean_upper, torch.zeros_like(rim))
        magnitude = torch.minimum(magnitude + weight * update, ceiling).clamp(min=-MAX_SHRINK)
        for _ in range(SMOOTHING_PASSES):
            magnitude = _neighbour_mean(magnitude[:, None], faces)[:, 0] * (weight > 0)
        offsets = magnitude[:, None] * normals * weight[:, None].clamp(min=0).sqrt()

    after = _iou(_silhouette(head(params, rest_offsets=offsets)[0].float(), head, track, resolution), matte, rows)
    if after <= before:
        logger.warning("The hair shell did not bring the outline closer to the photo's matte (IoU %.3f -> %.3f): "
                       "the bare head is kept.", before, after)
        return None
    logger.debug("hair shell: head IoU %.3f -> %.3f, largest displacement %.3f head units", before, after,
                 float(magnitude.abs().max()))
    return offsets
