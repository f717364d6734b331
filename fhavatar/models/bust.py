"""The bust: the neck, shoulders and chest a photo shows below the head, as Gaussians that stay put when it moves.

PanoHead-framed crops show the top of the torso, and the paper's orbits keep it. No head model has one, so the
built-in default builds it from the photo: every foreground pixel below the chin that the head avatar does not cover
lies on a vertical elliptic cylinder (a simple chest), sampled row by row at even steps along each ring so it is
closed from every side (a body cut by the photo's bottom edge goes on a little below it; a lid sloping up toward the
neck, as shoulders do, closes the top): points facing the camera take the photo's colour (so does the lid where a
camera above the shoulders sees it in front of the head), points facing away (the back, which the photo cannot show)
and the rest of the lid the colour just inside the outline on their side (what wraps around the body there: long
hair behind the shoulders, a collar, a sleeve). Per image row the cylinder's axis passes through
the middle of the outline of the foreground part below the chin that holds the neck (the body; a raised hand or a
second person is not), seen from the photo's camera at the body's distance; its width follows the outline (smoothed
over a few rows), its depth is `DEPTH_RATIO` of it (only `NECK_FRONT` of that in front, on the rows whose middle the
head covers: nothing of the body is in front of the neck).
The Gaussians live in head space and are not skinned: the head turns and nods above them.
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F
from scipy import ndimage
from torch import Tensor

from ..rendering.cameras import Camera
from ..rendering.gaussians import Gaussians
from ..rotations import quat_from_z_to

__all__ = ["DEPTH_RATIO", "build_bust"]

#: Chest depth over chest width.
DEPTH_RATIO = 0.6
#: The bust starts this fraction of the crop height above the chin: its top rings reach up behind the hair's lower
#: edge and the jaw, so the head and the bust overlap instead of meeting at a crease.
START_ABOVE_CHIN = 0.04
#: Fewer bust pixels than this: no bust (a tight crop shows no torso).
MIN_PIXELS = 30
#: The shoulders' lid closes the top ring down to this fraction of its size (about the neck's width).
LID_INNER = 0.35
#: The lid rises toward the neck by this slope (rise over run), as shoulders do: seen from the side or behind, the
#: bust's top then meets the head at an open angle instead of a thin wedge of background under the hair or jaw.
LID_SLOPE = 0.3
#: A point the photo cannot show takes the colour this fraction of the row's width inside its side of the outline
#: (not the outline's own pixels, which mix in the background).
BACK_INSET = 0.06
#: Gaussian standard deviation along the surface, in pixel footprints (neighbours overlap: a closed surface).
FOOTPRINT_SIGMA = 0.75
#: Where the outline steps out or in between rows (shoulders), rings are added so that neighbours lie at most this many
#: footprints apart (sideways or in depth): seen from above, a wide step between two rows opened slits between them.
RING_STEP = 0.5
#: Depth of a ring's front half (the face's side) relative to its back where the head covers the row's middle in the
#: photo: there the rows are hair or clothes beside the neck, and a full ring stood out as a shelf under the chin.
NECK_FRONT = 0.3
#: The front depth ramps back to full over this fraction of the rows above the first row the head leaves free.
FRONT_RAMP = 0.04
#: A body cut by the photo's bottom edge goes on below it for this fraction of the crop height (views from above or
#: beside show its lower end, which would otherwise be a soft edge inside the picture).
BELOW_PHOTO = 0.02
#: Ring shapes (centre, width, depth) follow the outline smoothed over rows with a Gaussian of this fraction of the
#: crop height: a step (long hair ending on the shoulders) or a notch (a wisp, the matte's noise) in the outline made
#: a concave corner in the bust's side, and seen from the side or behind, with the head's soft edge crossing it, a
#: crease of half-covered pixels. Smoothed, the bust's sides are slopes.
OUTLINE_SMOOTH = 0.02
#: Angles per ring at which its arc length is tabulated (for points spaced evenly along it).
ARC_SAMPLES = 256


def _row_edges(matte: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:  # [R, R] -> [R] x3
    """Leftmost and rightmost foreground column of every row (pixel centres) and whether the row has any."""
    has = matte.any(1)
    left = np.where(has, matte.argmax(1), 0) + 0.5
    right = np.where(has, matte.shape[1] - 1 - matte[:, ::-1].argmax(1), 0) + 0.5
    return left, right, has


def _ring_parameters(body: np.ndarray, camera: Camera, body_centre: Tensor) -> tuple[Tensor, np.ndarray, float]:
    """Per row of `body` (`[H, R]` bool: the picture's R columns; H >= R when rows past its bottom edge are added):
    the chest ring `(centre x, y, centre z, semi-axis x, semi-axis z)` in head space `[rows, 5]`, the rows it belongs
    to, and the head units per pixel at the chest."""
    size = body.shape[1]
    left, right, has = _row_edges(body)
    # The chest's depth from the camera: the body centre's; per row, its outline unprojected there.
    _, centre_depth = camera.project(body_centre[None, None].float(), size, size)
    depth = float(centre_depth[0, 0])
    row_ids = np.flatnonzero(has)
    centres = (np.arange(body.shape[0]) + 0.5)[row_ids]
    uv = torch.tensor(np.stack([np.r_[left[row_ids], right[row_ids]], np.r_[centres, centres]], -1), dtype=torch.float32)
    edges = camera.unproject(uv[None], torch.full((1, len(uv)), depth), size, size)[0]
    lefts, rights = edges[: len(row_ids)], edges[len(row_ids):]
    middle = (lefts + rights) / 2  # [rows, 3]
    half = (rights - lefts).norm(dim=-1) / 2
    # The outline of an ellipse (semi-axes a, DEPTH_RATIO a) seen at yaw θ is sqrt(cos² + ratio² sin²) a wide.
    view = camera.position[0] - body_centre.float()
    yaw = math.atan2(float(view[0]), float(view[2]))
    focal = float(camera.pixel_intrinsics(size, size)[0, 0, 0])
    footprint = depth / focal
    # (at least half a footprint: a row one pixel wide has no width between its pixel centres)
    semi_x = (half / math.sqrt(math.cos(yaw) ** 2 + (DEPTH_RATIO * math.sin(yaw)) ** 2)).clamp(min=footprint / 2)
    # The axis passes through the outline's middle, at the body centre's distance from the camera (seen from the
    # side, the middle moves along the head's z, not its x).
    params = torch.stack([middle[:, 0], middle[:, 1], middle[:, 2], semi_x, DEPTH_RATIO * semi_x], -1)
    # The shape (not the height) follows the outline smoothed over the rows around.
    shape = ndimage.gaussian_filter1d(params[:, [0, 2, 3, 4]].numpy(), OUTLINE_SMOOTH * size, axis=0, mode="nearest")
    params[:, [0, 2, 3, 4]] = torch.from_numpy(shape)
    return params, row_ids, footprint


def _rings(params: Tensor, footprint: float) -> tuple[Tensor, Tensor, Tensor]:  # [rows, 6] -> [K, 6], [K], [K]
    """All rings (`(centre x, y, centre z, semi-axis x, semi-axis z, front depth ratio)`): each row's, interpolated
    ones where the outline steps out by more than `RING_STEP` footprints (shoulders without terraces or slits), and a
    lid (the top ring narrowed toward the neck, rising by `LID_SLOPE`). Returns the rings, the row each belongs to,
    and which are lid rings."""
    steps = torch.ones(len(params), dtype=torch.long)
    if len(params) > 1:
        shape = torch.cat([params[:, [0, 2, 3, 4]], (params[:, 4] * params[:, 5])[:, None]], -1)  # + front depth
        jump = (shape[1:] - shape[:-1]).abs().max(-1).values
        steps[:-1] = (jump / (RING_STEP * footprint)).ceil().long().clamp(1, 64)
    owner = torch.repeat_interleave(torch.arange(len(params)), steps)
    fraction = torch.cat([torch.arange(int(n)) / int(n) for n in steps])
    following = (owner + 1).clamp(max=len(params) - 1)
    rings = torch.lerp(params[owner], params[following], fraction[:, None])
    lids = max(1, math.ceil(float((1 - LID_INNER) * params[0, 3] / footprint)))
    lid = params[0].repeat(lids, 1)
    shrink = torch.linspace(1, LID_INNER, lids + 1)[1:]
    lid[:, 1] += LID_SLOPE * (1 - shrink) * params[0, 3]
    lid[:, 3:5] *= shrink[:, None]
    is_lid = torch.cat([torch.zeros(len(rings), dtype=torch.bool), torch.ones(lids, dtype=torch.bool)])
    return torch.cat([rings, lid]), torch.cat([owner, torch.zeros(lids, dtype=torch.long)]), is_lid


def _front_depths(body: np.ndarray, head: np.ndarray, row_ids: np.ndarray) -> Tensor:  # [R, R] bool x2 -> [rows]
    """Per body row, the depth of its ring's front half (+z, the face's side) relative to the back's: `NECK_FRONT`
    where the head covers the row's middle in the photo (hair falling beside the neck: nothing of the body lies in
    front of the neck there, and a full ring would stand out as a shelf under the chin), 1 on the chest below, with a
    linear ramp over `FRONT_RAMP` of the rows in between so the front has no step."""
    left, right, _ = _row_edges(body)
    middle = np.clip(((left + right) / 2).astype(int), 0, body.shape[1] - 1)
    covered = head[np.arange(body.shape[0]), middle][row_ids]
    below = np.flatnonzero(~covered)
    if len(below) == 0:  # the head hides every row's middle
        return torch.full((len(row_ids),), NECK_FRONT)
    first_chest = int(below[0])  # the first body row (top down) whose middle the head leaves free
    ramp = max(1, round(FRONT_RAMP * body.shape[1]))
    t = np.clip((np.arange(len(row_ids)) - (first_chest - ramp)) / ramp, 0, 1)
    return torch.from_numpy(NECK_FRONT + (1 - NECK_FRONT) * t).float()


def _half_depth(depth_back: Tensor, front: Tensor, angle: Tensor) -> Tensor:  # broadcast -> depth at `angle`
    """A ring's semi-axis along z at `angle`: the back half's, or `front` times it on the front half (+z, the face's
    side, which may be shallower)."""
    return depth_back * torch.where(torch.sin(angle) > 0, front, 1.0)


def _even_angles(
    semi_x: Tensor,  # [K] the rings' semi-axes along x
    depth_back: Tensor,  # [K] their semi-axes along -z (the back half)
    front: Tensor,  # [K] the front half's (+z) depth relative to the back's
    footprint: float,  # the spacing wanted along each ring, head units
) -> tuple[Tensor, Tensor]:  # [P] ring of each point, [P] its angle
    """Points spaced evenly *along* each ring (at most `footprint` apart), as angles of `(semi_x cos, depth sin)`.

    Even angles would crowd the points where a ring is narrow (its sides) and space them out where it is wide (the
    chest's front and back, 1.2-1.5 footprints apart on a flat front): the surface showed stripes of lower alpha there.
    The arc length is tabulated per ring on a fine grid of angles and inverted by linear interpolation.
    """
    grid = torch.linspace(0, 2 * math.pi, ARC_SAMPLES + 1)  # [M + 1]
    x, z = semi_x[:, None] * torch.cos(grid), _half_depth(depth_back[:, None], front[:, None], grid) * torch.sin(grid)
    chords = torch.hypot(x.diff(dim=1), z.diff(dim=1))  # [K, M]
    arc = torch.cat([torch.zeros(len(semi_x), 1), chords.cumsum(1)], 1)  # [K, M + 1], from angle 0
    counts = (arc[:, -1] / footprint).ceil().long().clamp(min=8)
    ring = torch.repeat_interleave(torch.arange(len(semi_x)), counts)
    step = torch.cat([torch.arange(int(n)) for n in counts]).float()
    target = (step + 0.5) / counts[ring] * arc[ring, -1]  # [P] arc length of each point
    # One sorted sequence over all rings (ring k's arc lengths offset by k times the longest), searched once.
    offset = float(arc[:, -1].max()) * 2
    table = (arc.double() + offset * torch.arange(len(semi_x))[:, None]).reshape(-1)  # double: offsets reach ~1e3
    position = target.double() + offset * ring
    upper = torch.searchsorted(table, position).clamp(1, table.numel() - 1)
    lower = upper - 1
    t = ((position - table[lower]) / (table[upper] - table[lower]).clamp(min=1e-12)).clamp(0, 1)
    column = lower % (ARC_SAMPLES + 1)
    return ring, grid[column] + t.float() * (2 * math.pi / ARC_SAMPLES)


@torch.no_grad()
def build_bust(
    image: Tensor,  # [3, H, W] the aligned photo in [0, 1]
    matte: Tensor,  # [H, W] its foreground matte in [0, 1]
    head_alpha: Tensor,  # [R, R] the head avatar's alpha from the photo's camera
    camera: Camera,  # the photo's camera (batch 1)
    chin_y: float,  # the chin's row in the photo, pixels
    body_centre: Tensor,  # [3] head space, a point on the chest's vertical axis (e.g. the neck's centre)
    head_depth: Tensor | None = None,  # [R, R] the head's camera-space depth from the photo's camera (0: none)
) -> Gaussians | None:
    """Gaussians of the bust the photo shows below the head (None when it shows none).

    Works at the resolution R of `head_alpha` (the photo and matte are resampled to it): one ring of Gaussians per
    row of R, about one Gaussian per pixel footprint around it. `head_depth` (the head's depth where `head_alpha`
    covers) tells which parts of the lid the head hides from the photo's camera; without it, everything the head
    covers counts as hidden.
    """
    size = head_alpha.shape[-1]
    photo = F.interpolate(image[None].float(), size=(size, size), mode="area")[0]
    fg = F.interpolate(matte[None, None].float(), size=(size, size), mode="area")[0, 0].numpy() > 0.5
    rows = (np.arange(size) + 0.5)[:, None] >= (chin_y / image.shape[-2] - START_ABOVE_CHIN) * size
    labels, count = ndimage.label(fg & rows)
    if count == 0:
        return None
    # The body is the part of the matte below the chin that holds the neck (another person beside, a raised hand or a
    # stray blob is not); if the neck's pixel is off the matte, the largest part.
    neck_px, _ = camera.project(body_centre[None, None].float(), size, size)
    col, row = (int(np.clip(v, 0, size - 1)) for v in neck_px[0, 0].tolist())
    label = labels[row, col] if labels[row, col] else 1 + int(np.argmax(np.bincount(labels.ravel())[1:]))
    body = labels == label
    head = head_alpha.numpy() >= 0.5
    if (body & ~head).sum() < MIN_PIXELS:  # the head hides (nearly) all of it
        return None
    front = _front_depths(body, head, np.flatnonzero(body.any(1)))
    below = round(BELOW_PHOTO * size) if body[-1].any() else 0
    if below:  # the photo's last row repeated: rows past the bottom edge, unprojected like the others
        body = np.concatenate([body, np.repeat(body[-1:], below, 0)])
        photo = torch.cat([photo, photo[:, -1:].expand(-1, below, -1)], 1)
        front = torch.cat([front, front[-1:].expand(below)])
    params, row_ids, footprint = _ring_parameters(body, camera, body_centre)
    params = torch.cat([params, front[:, None]], -1)
    rings, owner, is_lid = _rings(params, footprint)

    # Every ring sampled evenly around (a closed surface from every side).
    cx, y, cz, ax, az_back, front = rings.unbind(-1)
    ring, angle = _even_angles(ax, az_back, front, footprint)
    depth = _half_depth(az_back[ring], front[ring], angle)
    points = torch.stack([cx[ring] + ax[ring] * torch.cos(angle), y[ring], cz[ring] + depth * torch.sin(angle)], -1)
    normals = F.normalize(torch.stack([torch.cos(angle) / ax[ring], torch.zeros_like(angle),
                                       torch.sin(angle) / depth], -1), dim=-1)
    lid_pts = is_lid[ring]
    # The lid faces up (+y), tilted out by its slope: it rises LID_SLOPE per unit of x-run, and the run to the same
    # angle is depth / semi-axis x as long along z (an elliptic cone), so it is steeper front and back.
    slope = torch.stack([torch.cos(angle) * LID_SLOPE, torch.ones_like(angle),
                         torch.sin(angle) * LID_SLOPE * ax[ring] / depth], -1)
    normals[lid_pts] = F.normalize(slope[lid_pts], dim=-1)
    facing = (normals * (camera.position[0].float() - points)).sum(-1) > 0
    pixels, point_depth = camera.project(points[None], size, size)
    x = pixels[0, :, 0]
    col = x.floor().long().clamp(0, size - 1)
    pixel_row = pixels[0, :, 1].floor().long().clamp(0, size - 1)
    # A camera looking down on the shoulders sees the lid: where the head does not hide it and the photo shows the
    # person, it takes the photo's colour at its pixel, as the head's texture does, so the source view shows the
    # photo there (not a collar's colour over the jaw). Elsewhere (the photo shows background there) the lid keeps
    # the colour of its side of the outline.
    behind_head = torch.from_numpy(head)[pixel_row, col]
    if head_depth is not None:
        behind_head &= point_depth[0] > head_depth[pixel_row, col]
    lid_seen = lid_pts & facing & ~behind_head & torch.from_numpy(fg)[pixel_row, col]
    facing &= ~lid_pts  # a ring point facing the camera: the photo's pixel on its ring's row
    # A flat disc looks the same from both sides: keep normals in the +z half (quat_from_z_to's safe side).
    normals = normals * torch.where(normals[:, 2:] < 0, -1.0, 1.0)

    # Colours: a point facing the camera takes the photo at its pixel on its ring's row (a pixel off the body, behind
    # the head's neck or past a concave outline, the nearest body pixel of the row). A point facing away, which the
    # photo cannot show, takes the colour just inside the row's outline on its own side: what wraps around the body
    # there (long hair falling behind the shoulders, the back of a collar or a sleeve), not what is in front of it.
    row = torch.from_numpy(row_ids)[owner[ring]]
    row_body = torch.from_numpy(body)[row]  # [P, R]
    left, right, _ = (torch.from_numpy(e) for e in _row_edges(body))
    inset = (BACK_INSET * (right[row] - left[row])).clamp(min=1)
    edge = torch.where(x < (left[row] + right[row]) / 2, left[row] + inset, right[row] - inset)
    col = torch.where(facing | lid_seen, col, edge.floor().long().clamp(0, size - 1))
    distance = (torch.arange(size)[None, :] - col[:, None]).abs().float()
    nearest = torch.where(row_body, distance, torch.full_like(distance, float("inf"))).argmin(1)
    col = torch.where(row_body.gather(1, col[:, None])[:, 0] | lid_seen, col, nearest)
    row = torch.where(lid_seen, pixel_row, row)
    if len(points) < MIN_PIXELS:
        return None
    sigma = FOOTPRINT_SIGMA * footprint
    return Gaussians(means=points, quats=quat_from_z_to(normals),
                     scales=torch.tensor([sigma, sigma, 0.15 * sigma]).repeat(len(points), 1),
                     opacities=torch.full((len(points),), 0.98), colors=photo[:, row, col].T.clamp(0, 1))
