"""Build OpenHead's asset: MediaPipe's canonical face completed into a closed, mirror-symmetric full head.

Usage: `python -m fhavatar.head.build_open_head [--out PATH] [--contact-sheet PNG]`. The input is the copy of
MediaPipe's `canonical_face_model.obj` in `fhavatar/head/assets` (Apache-2.0, see the NOTICE there), so the
build needs nothing outside the repository and is deterministic (the same bytes on the same stack).

Input facts. That OBJ is the Apple-ModelIO export of an earlier MediaPipe revision: its vertices are *not* in
landmark order, and the face is turned by ~13° and ~9% smaller than the current canonical model (nose tip
z ≈ 7.5 cm). `OBJ_VERTEX_OF_LANDMARK` restores landmark order (checked against the landmark numbers printed
on MediaPipe's UV visualisation and against the mirror pairs of the UV layout); the `ALIGN_*` similarity, a
least-squares fit to the current canonical model, restores its frame and metric size (residual 2 mm RMS).

Construction (centimetres, canonical frame: +x the subject's left, +y up, +z out of the face):
1. Face: the 468 landmarks in order, made exactly mirror-symmetric; the triangles spanning the eye and mouth
   openings are removed, leaving the face oval, two eye loops and the inner-lip loop as boundaries.
2. Cranium: rows x columns over (elevation, azimuth) around `CRANIUM_CENTRE_CM`; the radius is the smooth union
   of a skull ellipsoid and a neck cylinder closed by a flat cap, plus ear bumps and a correction interpolated
   from the face oval so the cranium meets the face. Rows are spaced by arc length.
3. Atlas: u = 0.5 + azimuth / 2π (back seam at u = 0 and 1), v by arc length from the crown (v = 1) down; the
   face UVs are scaled into the hole and warped harmonically so the face oval lands on its angular position.
4. The grid is cut inside the face oval (in UV) and the two loops are stitched with a strip, built for x ≥ 0
   and mirrored. Eye covers (domes on eyeballs, UVs filling the face atlas's eye holes) and a recessed mouth
   cavity (its own UV island) close the remaining loops.
5. Rig: joints global/neck/jaw/eyes, skinning weights (harmonic jaw weights), the expression propagation
   operator (harmonic extension of face displacements), regions and the 478 MediaPipe landmarks.
"""

from __future__ import annotations

import argparse
import json
import logging
from collections import deque
from pathlib import Path

import numpy as np
import scipy.sparse as sp
import scipy.sparse.linalg as spla

from .base import HEAD_UNITS_PER_METRE, REGION_NAMES
from .open_head import (
    NUM_FACE_VERTICES,
    NUM_MEDIAPIPE_LANDMARKS,
    OPEN_HEAD_FILE_FORMAT,
    OPEN_HEAD_JOINT_NAMES,
    OPEN_HEAD_PARENTS,
    PROPAGATION_WIDTH,
    default_asset_path,
)

__all__ = ["build_open_head", "canonical_face", "mesh_report", "read_obj", "save_asset"]

logger = logging.getLogger(__name__)

DEFAULT_OBJ = Path(__file__).parent / "assets" / "canonical_face_model.obj"
# fmt: off
#: OBJ vertex index (0-based) of MediaPipe landmark i.
OBJ_VERTEX_OF_LANDMARK = (
    27, 356, 451, 245, 182, 184, 399, 5, 251, 82, 438, 31, 452, 453, 415, 412, 213, 135, 132, 357, 331, 181, 367,
    192, 191, 445, 285, 235, 237, 147, 148, 259, 99, 4, 22, 378, 219, 29, 384, 41, 79, 386, 111, 317, 359, 185, 339,
    49, 93, 95, 73, 187, 304, 307, 178, 252, 154, 374, 427, 465, 376, 143, 347, 327, 388, 405, 396, 56, 177, 55, 340,
    179, 30, 43, 81, 467, 140, 139, 15, 279, 113, 430, 433, 133, 134, 215, 414, 417, 421, 403, 198, 199, 116, 410,
    441, 16, 346, 266, 170, 269, 272, 74, 392, 59, 57, 325, 159, 85, 87, 315, 435, 257, 287, 320, 47, 91, 351, 258,
    75, 77, 35, 36, 398, 355, 341, 361, 273, 21, 46, 173, 321, 92, 461, 2, 309, 164, 294, 382, 163, 25, 222, 443,
    275, 353, 193, 195, 141, 401, 65, 394, 295, 84, 61, 366, 68, 1, 343, 69, 239, 236, 149, 151, 23, 437, 450, 169,
    281, 369, 253, 297, 313, 63, 424, 0, 249, 60, 223, 459, 420, 407, 212, 210, 157, 112, 105, 107, 117, 202, 449,
    228, 155, 17, 165, 227, 100, 431, 246, 422, 289, 370, 207, 208, 129, 171, 103, 203, 218, 205, 372, 291, 126, 101,
    127, 463, 125, 428, 363, 299, 280, 283, 311, 263, 440, 303, 305, 380, 323, 350, 261, 119, 121, 37, 39, 51, 411,
    390, 247, 447, 333, 457, 267, 335, 332, 455, 231, 229, 3, 241, 242, 11, 328, 180, 365, 190, 188, 444, 284, 232,
    233, 144, 146, 255, 96, 9, 20, 377, 216, 26, 383, 40, 78, 385, 108, 316, 358, 183, 336, 48, 89, 94, 70, 186, 302,
    306, 176, 250, 152, 373, 425, 464, 375, 142, 345, 326, 387, 404, 395, 54, 174, 52, 338, 175, 28, 42, 80, 466,
    138, 136, 12, 276, 109, 429, 432, 130, 131, 214, 413, 416, 419, 402, 196, 197, 114, 408, 14, 344, 265, 168, 268,
    271, 72, 391, 58, 53, 324, 158, 83, 86, 314, 434, 254, 286, 319, 45, 88, 349, 256, 71, 76, 32, 34, 397, 354, 337,
    360, 270, 18, 44, 172, 318, 90, 460, 8, 308, 162, 292, 381, 160, 24, 220, 442, 274, 352, 189, 194, 137, 400, 64,
    393, 293, 364, 66, 6, 342, 67, 238, 234, 145, 150, 19, 436, 166, 277, 368, 296, 312, 62, 423, 7, 248, 221, 458,
    418, 406, 211, 209, 156, 110, 104, 106, 115, 201, 448, 226, 153, 13, 161, 224, 98, 244, 288, 206, 128, 167, 102,
    200, 217, 204, 371, 290, 124, 97, 123, 462, 122, 426, 362, 298, 278, 282, 310, 262, 439, 300, 301, 379, 322, 348,
    260, 118, 120, 33, 38, 50, 409, 389, 243, 446, 329, 456, 264, 334, 330, 454, 230, 225, 10, 240,
)
# fmt: on
#: Similarity taking the OBJ's coordinates to MediaPipe's current canonical frame: x -> s R(axis-angle) x + t.
ALIGN_AXIS_ANGLE = (-0.0983168, 0.2021961, -0.0220507)
ALIGN_SCALE = 1.097355
ALIGN_TRANSLATION_CM = (0.0, -0.00041, -0.40084)
#: MediaPipe's eye contours (subject's left eye has x > 0) and inner-lip contour (FACEMESH_LEFT_EYE etc.).
LEFT_EYE_CONTOUR = (249, 263, 362, 373, 374, 380, 381, 382, 384, 385, 386, 387, 388, 390, 398, 466)
RIGHT_EYE_CONTOUR = (7, 33, 133, 144, 145, 153, 154, 155, 157, 158, 159, 160, 161, 163, 173, 246)
INNER_LIP_CONTOUR = (13, 14, 78, 80, 81, 82, 87, 88, 95, 178, 191, 308, 310, 311, 312, 317, 318, 324, 402, 415)
FOREHEAD_TOP, CHIN, UPPER_LIP, LOWER_LIP, LEFT_EYE_OUTER = 10, 152, 13, 14, 263
#: Iris landmarks: (centre, +x, +y, -x, -y) of the subject's right eye (x < 0) and left eye (x > 0).
RIGHT_IRIS, LEFT_IRIS = (468, 469, 470, 471, 472), (473, 474, 475, 476, 477)
IRIS_RADIUS_CM = 0.585  # MediaPipe's iris model assumes an 11.7 mm iris

# Head shape (cm, canonical frame). Crown ~22.5 cm above the chin, head length ~19.3 cm, breadth ~16 cm.
CRANIUM_CENTRE_CM = (0.0, 3.0, -4.1)
SKULL_HALF_X, SKULL_UP, SKULL_DOWN, SKULL_FRONT, SKULL_BACK = 8.1, 10.5, 8.0, 9.8, 9.7
SKULL_EXPONENT = 2.3  # superellipsoid exponent: fuller crown and temples than an ellipsoid
NECK_CENTRE_Z, NECK_HALF_X, NECK_HALF_Z, NECK_BOTTOM_Y = -5.0, 5.4, 5.3, -17.5
BLEND_CM = 0.5  # softness of the skull/neck union and of the neck's bottom rim
EAR_Y, EAR_Z, EAR_SIGMA_Y, EAR_SIGMA_Z, EAR_HEIGHT = 0.8, -5.2, 2.1, 1.2, 1.3
GRID_COLUMNS, GRID_ROWS = 80, 64  # azimuth samples (even: includes 0 and π) and pole-to-pole row intervals
V_BOTTOM = 0.17  # the cranium fills v in [V_BOTTOM, 1]; the mouth island lies below
NECK_UV_Y, NECK_UV_DENSITY = -10.0, 0.5  # rows (and v) below this height are spaced this much sparser
HOLE_MARGIN = 0.5  # grid vertices closer than this many columns to the face oval (in UV) are cut too
EYEBALL_RADIUS_CM, EYE_RINGS = 1.25, 3
#: Mouth cavity rings: (depth cm, width scale, vertical opening cm), then the back wall's depth.
MOUTH_RINGS = ((0.3, 1.0, 0.3), (1.0, 1.0, 0.8), (2.0, 0.9, 1.0), (3.0, 0.7, 0.8))
MOUTH_BACK_CM = 3.3
MOUTH_ISLAND = (0.5, 0.085, 0.13, 0.07)  # centre u, centre v, half width, half height
# Rig (cm): joint locations, the neck's blend to the global joint, jaw-weight constraints.
NECK_JOINT_CM, JAW_JOINT_CM = (0.0, -4.5, -5.0), (0.0, 0.2, -2.1)
NECK_BLEND_Y = (NECK_BOTTOM_Y + 1.0, -10.5)
PROPAGATION_HOPS = 6  # cranium vertices this many edges from the face still follow face displacements


def _rodrigues(axis_angle) -> np.ndarray:  # [3] -> [3, 3]
    w = np.asarray(axis_angle, dtype=np.float64)
    theta = np.linalg.norm(w)
    k = np.array([[0, -w[2], w[1]], [w[2], 0, -w[0]], [-w[1], w[0], 0]]) / theta
    return np.eye(3) + np.sin(theta) * k + (1 - np.cos(theta)) * k @ k


def read_obj(path: str | Path) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Read MediaPipe's canonical face OBJ: positions `[468, 3]` (cm), UVs `[468, 2]`, faces `[898, 3]` (0-based)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"`obj_path` {str(path)!r} does not exist (expected canonical_face_model.obj).")
    positions, uvs, faces = [], [], []
    for number, line in enumerate(path.read_text().splitlines(), 1):
        parts = line.split()
        try:
            if parts and parts[0] == "v":
                positions.append([float(p) for p in parts[1:4]])
            elif parts and parts[0] == "vt":
                uvs.append([float(p) for p in parts[1:3]])
            elif parts and parts[0] == "f":
                corners = [[int(i) - 1 for i in p.split("/")[:2]] for p in parts[1:]]
                if len(corners) != 3 or any(c[0] != c[1] for c in corners):
                    raise ValueError("expected a triangle with equal vertex and texture indices")
                faces.append([c[0] for c in corners])
        except (ValueError, IndexError) as err:
            raise ValueError(f"{str(path)!r} line {number}: cannot parse {line!r} ({err}).") from err
    counts = (len(positions), len(uvs), len(faces))
    if counts != (NUM_FACE_VERTICES, NUM_FACE_VERTICES, 898):
        raise ValueError(f"{str(path)!r} has {counts} (vertices, uvs, faces); MediaPipe's face has (468, 468, 898).")
    return np.array(positions), np.array(uvs), np.array(faces, dtype=np.int64)


def _mirror_of(points: np.ndarray, reflected: np.ndarray, tolerance: float) -> np.ndarray:  # [N, D] x2 -> [N]
    """Index of the point nearest each reflected point (the mirror partner); checks it is an involution."""
    dist = ((reflected[:, None] - points[None]) ** 2).sum(-1)
    mirror = dist.argmin(1)
    if np.sqrt(dist.min(1)).max() > tolerance or (mirror[mirror] != np.arange(len(points))).any():
        raise ValueError("the canonical face is not mirror-symmetric: check OBJ_VERTEX_OF_LANDMARK / ALIGN_*.")
    return mirror


def canonical_face(obj_path: str | Path = DEFAULT_OBJ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """The canonical face in landmark order and MediaPipe's canonical frame, exactly mirror-symmetric.

    Returns `(vertices [468, 3] cm, uv [468, 2], faces [898, 3], mirror [468])`.
    """
    positions, uvs, faces = read_obj(obj_path)
    order = np.array(OBJ_VERTEX_OF_LANDMARK)
    inverse = np.empty_like(order)
    inverse[order] = np.arange(NUM_FACE_VERTICES)
    v = ALIGN_SCALE * positions[order] @ _rodrigues(ALIGN_AXIS_ANGLE).T + np.array(ALIGN_TRANSLATION_CM)
    uv = uvs[order]
    mirror = _mirror_of(v, v * [-1, 1, 1], 1e-3)
    if (_mirror_of(uv, uv * [-1, 1] + [1, 0], 1e-2) != mirror).any():
        raise ValueError("the canonical face's UV mirror pairs differ from its 3D mirror pairs.")
    v = 0.5 * (v + v[mirror] * [-1, 1, 1])
    uv = 0.5 * (uv + uv[mirror] * [-1, 1] + [1, 0])
    return v, uv, inverse[faces], mirror


def _boundary_loops(faces: np.ndarray) -> list[np.ndarray]:
    """Closed boundary loops, each following the directed edges that only one triangle uses."""
    edges = {(int(a), int(b)) for f in faces for a, b in ((f[0], f[1]), (f[1], f[2]), (f[2], f[0]))}
    following = {a: b for a, b in edges if (b, a) not in edges}
    loops, seen = [], set()
    for start in sorted(following):
        if start in seen:
            continue
        loop = [start]
        while following[loop[-1]] != start:
            loop.append(following[loop[-1]])
        seen.update(loop)
        loops.append(np.array(loop))
    return loops


def _band(outer, inner, x: np.ndarray) -> list[tuple[tuple[int, int, int], int]]:
    """Triangles between two loops of equal length ((triangle, quad index)), diagonals mirror-symmetric in x."""
    tris, n = [], len(outer)
    for j in range(n):
        a0, a1, b0, b1 = outer[j], outer[(j + 1) % n], inner[j], inner[(j + 1) % n]
        if x[[a0, a1, b0, b1]].mean() > 0:
            tris += [((a1, a0, b0), j), ((a1, b0, b1), j)]
        else:
            tris += [((a1, a0, b1), j), ((a0, b0, b1), j)]
    return tris


def _signed_area(uv: np.ndarray, tri) -> float:
    (a, b, c) = uv[list(tri)]
    return 0.5 * ((b[0] - a[0]) * (c[1] - a[1]) - (b[1] - a[1]) * (c[0] - a[0]))


def _base_radius(dirs: np.ndarray) -> np.ndarray:  # [N, 3] unit directions from the centre -> [N] cm
    """Skull ellipsoid smoothly united with a capped neck cylinder, plus ear bumps."""
    dx, dy, dz = dirs.T
    centre = np.array(CRANIUM_CENTRE_CM)
    half_y = np.where(dy > 0, SKULL_UP, SKULL_DOWN)
    half_z = np.where(dz > 0, SKULL_FRONT, SKULL_BACK)
    norm = np.abs(dx / SKULL_HALF_X) ** SKULL_EXPONENT + np.abs(dy / half_y) ** SKULL_EXPONENT
    skull = (norm + np.abs(dz / half_z) ** SKULL_EXPONENT) ** (-1 / SKULL_EXPONENT)
    a = (dx / NECK_HALF_X) ** 2 + (dz / NECK_HALF_Z) ** 2
    offset = (centre[2] - NECK_CENTRE_Z) / NECK_HALF_Z
    b, c = 2 * offset * dz / NECK_HALF_Z, offset**2 - 1
    with np.errstate(divide="ignore", invalid="ignore"):
        side = np.where(a > 1e-12, (-b + np.sqrt(b * b - 4 * a * c)) / (2 * a), 1e6)
        cap = np.where(dy < -1e-12, (centre[1] - NECK_BOTTOM_Y) / -dy, 1e6)
    low = np.minimum(side, cap)
    neck = low - BLEND_CM * np.log(np.exp(-(side - low) / BLEND_CM) + np.exp(-(cap - low) / BLEND_CM))
    neck = np.where(dy < 0, neck, 0.0)
    high = np.maximum(skull, neck)
    radius = high + BLEND_CM * np.log(np.exp((skull - high) / BLEND_CM) + np.exp((neck - high) / BLEND_CM))
    p = centre + radius[:, None] * dirs
    ear = np.exp(-(((p[:, 1] - EAR_Y) / EAR_SIGMA_Y) ** 2) - ((p[:, 2] - EAR_Z) / EAR_SIGMA_Z) ** 2)
    return radius + EAR_HEIGHT * ear * np.abs(dx) ** 4


def _directions(azimuth: np.ndarray, elevation: np.ndarray) -> np.ndarray:  # [N], [N] -> [N, 3]
    return np.stack([np.cos(elevation) * np.sin(azimuth), np.sin(elevation), np.cos(elevation) * np.cos(azimuth)], -1)


def _row_elevations() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Row elevations (crown to neck cap) at equal mean arc length, and the (elevation -> v) table."""
    fine = np.linspace(np.pi / 2, -np.pi / 2, 2001)
    az = np.linspace(-np.pi, np.pi, GRID_COLUMNS, endpoint=False)
    a, e = np.meshgrid(az, fine)
    dirs = _directions(a.ravel(), e.ravel())
    points = (_base_radius(dirs)[:, None] * dirs).reshape(len(fine), len(az), 3)
    step = np.linalg.norm(np.diff(points, axis=0), axis=-1).mean(1)
    low = (points[1:, :, 1] + CRANIUM_CENTRE_CM[1]).mean(1) < NECK_UV_Y
    arc = np.concatenate([[0.0], np.cumsum(np.where(low, NECK_UV_DENSITY, 1.0) * step)])
    rows = np.interp(np.linspace(0, arc[-1], GRID_ROWS + 1), arc, fine)
    v_table = 1 - (1 - V_BOTTOM) * arc / arc[-1]
    return rows, fine, v_table


def _harmonic(edges: np.ndarray, n: int, fixed: np.ndarray, values: np.ndarray) -> np.ndarray:
    """Graph-harmonic interpolation: `values [n, C]` kept where `fixed`, Laplace's equation elsewhere."""
    w = sp.coo_matrix((np.ones(2 * len(edges)), (np.r_[edges[:, 0], edges[:, 1]], np.r_[edges[:, 1], edges[:, 0]])),
                      shape=(n, n)).tocsr()
    w.data[:] = 1.0
    lap = (sp.diags(np.asarray(w.sum(1)).ravel()) - w).tocsc()
    free = np.flatnonzero(~fixed)
    out = values.astype(np.float64).copy()
    rhs = -(lap[free][:, np.flatnonzero(fixed)] @ out[fixed])
    out[free] = spla.splu(lap[free][:, free].tocsc()).solve(np.asarray(rhs).reshape(len(free), -1))
    return out


def _unique_edges(faces: np.ndarray) -> np.ndarray:
    e = np.sort(np.concatenate([faces[:, [0, 1]], faces[:, [1, 2]], faces[:, [2, 0]]]), axis=1)
    return np.unique(e, axis=0)


class _Mesh:
    """Vertices (cm) with mirror partners, triangles and per-corner UVs, appended part by part."""

    def __init__(self) -> None:
        self.vertices, self.mirror, self.triangles, self.corner_uv = [], [], [], []

    def __len__(self) -> int:
        return sum(len(v) for v in self.vertices)

    def add_vertices(self, points: np.ndarray, mirror: np.ndarray) -> np.ndarray:  # [N, 3], [N] -> ids [N]
        ids = len(self) + np.arange(len(points))
        self.vertices.append(np.asarray(points, np.float64))
        self.mirror.append(np.asarray(mirror, np.int64))
        return ids

    def add_triangles(self, triangles, corner_uv) -> None:  # [T, 3] ids, [T, 3, 2]
        self.triangles += [tuple(int(i) for i in t) for t in triangles]
        self.corner_uv += [np.asarray(c, np.float64) for c in corner_uv]


def _cranium(face_v: np.ndarray, oval: np.ndarray):
    """The full grid (vertices, uv, mirror, triangles with quad index) and the face oval's target UVs."""
    centre = np.array(CRANIUM_CENTRE_CM)
    rows, fine_el, v_table = _row_elevations()
    az = -np.pi + 2 * np.pi * np.arange(GRID_COLUMNS) / GRID_COLUMNS
    row_of = np.r_[0, np.repeat(np.arange(1, GRID_ROWS), GRID_COLUMNS), GRID_ROWS]
    col_of = np.r_[0, np.tile(np.arange(GRID_COLUMNS), GRID_ROWS - 1), 0]
    pole = row_of % GRID_ROWS == 0
    dirs = _directions(np.where(pole, 0.0, az[col_of]), rows[row_of])
    oval_dirs = face_v[oval] - centre
    oval_dirs /= np.linalg.norm(oval_dirs, axis=1, keepdims=True)
    delta = np.linalg.norm(face_v[oval] - centre, axis=1) - _base_radius(oval_dirs)
    angle = np.arccos(np.clip(dirs @ oval_dirs.T, -1, 1))  # [G, O]
    shepard = 1 / (angle**3 + 1e-9)
    correction = (shepard @ delta) / shepard.sum(1) * np.exp(-((angle.min(1) / 0.35) ** 2))
    points = centre + (_base_radius(dirs) + correction)[:, None] * dirs
    uv = np.stack([col_of / GRID_COLUMNS, np.interp(-rows[row_of], -fine_el, v_table)], -1)
    mirror = np.where(pole, np.arange(len(points)), 1 + (row_of - 1) * GRID_COLUMNS + (-col_of) % GRID_COLUMNS)
    ring = [1 + (r - 1) * GRID_COLUMNS + np.arange(GRID_COLUMNS) for r in range(1, GRID_ROWS)]
    nxt = np.roll(np.arange(GRID_COLUMNS), -1)
    tris = [((0, ring[0][j], ring[0][nxt[j]]), j) for j in range(GRID_COLUMNS)]
    for upper, lower in zip(ring[:-1], ring[1:]):
        tris += _band(upper, lower, points[:, 0])
    tris += [((ring[-1][nxt[j]], ring[-1][j], len(points) - 1), j) for j in range(GRID_COLUMNS)]
    corner_uv = []
    for tri, j in tris:
        c = uv[list(tri)].copy()
        c[pole[list(tri)], 0] = (j + 0.5) / GRID_COLUMNS
        c[(col_of[list(tri)] == 0) & ~pole[list(tri)] & (j == GRID_COLUMNS - 1), 0] = 1.0
        corner_uv.append(c)
    oval_az, oval_el = np.arctan2(oval_dirs[:, 0], oval_dirs[:, 2]), np.arcsin(oval_dirs[:, 1])
    target = np.stack([0.5 + oval_az / (2 * np.pi), np.interp(-oval_el, -fine_el, v_table)], -1)
    return points, uv, mirror, [t for t, _ in tris], corner_uv, target


def _inside(points: np.ndarray, polygon: np.ndarray, margin: float) -> np.ndarray:  # [N, 2], [P, 2] -> [N] bool
    """Points inside a closed polygon or within `margin` of its edges."""
    a, b, p = polygon, np.roll(polygon, -1, axis=0), points[:, None, :]
    t = np.clip(((p - a) * (b - a)).sum(-1) / ((b - a) ** 2).sum(-1), 0, 1)
    near = np.linalg.norm(p - (a + t[..., None] * (b - a)), axis=-1).min(1) < margin
    with np.errstate(divide="ignore", invalid="ignore"):
        x_cross = a[:, 0] + (p[..., 1] - a[:, 1]) * (b[:, 0] - a[:, 0]) / (b[:, 1] - a[:, 1])
    crossing = ((a[:, 1] > p[..., 1]) != (b[:, 1] > p[..., 1])) & (p[..., 0] < x_cross)
    return near | (crossing.sum(1) % 2 == 1)


def _stitch(o_path: np.ndarray, h_path: np.ndarray, uv: np.ndarray) -> list[tuple[int, int, int]]:
    """Strip between two paths that run top to bottom on the x > 0 side (CCW in UV), shortest diagonal first."""
    i = k = 0
    strip = []
    while i < len(o_path) - 1 or k < len(h_path) - 1:
        options = []
        if i < len(o_path) - 1:
            options.append(((o_path[i], o_path[i + 1], h_path[k]), uv[o_path[i + 1]] - uv[h_path[k]], 1, 0))
        if k < len(h_path) - 1:
            options.append(((o_path[i], h_path[k + 1], h_path[k]), uv[o_path[i]] - uv[h_path[k + 1]], 0, 1))
        valid = [o for o in options if _signed_area(uv, o[0]) > 1e-9] or options
        tri, _, di, dk = min(valid, key=lambda o: float(np.linalg.norm(o[1])))
        strip.append(tri)
        i, k = i + di, k + dk
    return strip


def _half_path(loop: np.ndarray, top: int, bottom: int, x: np.ndarray) -> np.ndarray:
    """The part of a closed loop from `top` to `bottom` through x > 0."""
    loop = np.roll(loop, -int(np.flatnonzero(loop == top)[0]))
    if x[loop[1]] < 0:
        loop = np.r_[loop[:1], loop[1:][::-1]]
    return loop[: int(np.flatnonzero(loop == bottom)[0]) + 1]


def build_open_head(obj_path: str | Path = DEFAULT_OBJ) -> tuple[dict[str, np.ndarray], dict]:
    """Build every OpenHead tensor (numpy, head space) and its config from the canonical face OBJ."""
    face_v, face_uv, face_faces, face_mirror = canonical_face(obj_path)
    # 1. Open the eyes and the mouth; name the boundary loops (directed: the face lies on their left).
    contours = [set(LEFT_EYE_CONTOUR), set(RIGHT_EYE_CONTOUR), set(INNER_LIP_CONTOUR)]
    closed_face_edges = _unique_edges(face_faces)
    face_faces = face_faces[[not any(set(f) <= c for c in contours) for f in face_faces.tolist()]]
    loops = {}
    for loop in _boundary_loops(face_faces):
        for name, member in (("oval", FOREHEAD_TOP), ("mouth", UPPER_LIP), ("left_eye", LEFT_EYE_OUTER)):
            loops[name] = loop if member in loop else loops.get(name)
    oval = loops["oval"]
    # 2-3. Cranium grid and the face atlas, warped so the oval lands on its angular UV.
    grid_v, grid_uv, grid_mirror, grid_tris, grid_corner_uv, target = _cranium(face_v, oval)
    su = np.sum((face_uv[oval, 0] - 0.5) * (target[:, 0] - 0.5)) / np.sum((face_uv[oval, 0] - 0.5) ** 2)
    sv, ov = np.polyfit(face_uv[oval, 1], target[:, 1], 1)
    atlas = np.stack([0.5 + su * (face_uv[:, 0] - 0.5), ov + sv * face_uv[:, 1]], -1)
    on_oval = np.isin(np.arange(NUM_FACE_VERTICES), oval)
    offsets = np.zeros((NUM_FACE_VERTICES, 2))
    offsets[oval] = target - atlas[oval]
    atlas += _harmonic(closed_face_edges, NUM_FACE_VERTICES, on_oval, offsets)  # smooth across the openings
    mesh = _Mesh()
    mesh.add_vertices(face_v, face_mirror)
    mesh.add_triangles(face_faces, atlas[face_faces])
    # 4. Cut the grid inside the oval and stitch the oval to the hole's rim (x > 0 half, then mirrored).
    cut = _inside(grid_uv, atlas[oval], HOLE_MARGIN / GRID_COLUMNS)
    kept = np.flatnonzero(~cut)
    grid_id = np.full(len(grid_v), -1)
    grid_id[kept] = NUM_FACE_VERTICES + np.arange(len(kept))
    mesh.add_vertices(grid_v[kept], grid_id[grid_mirror[kept]])
    keep_tri = [i for i, t in enumerate(grid_tris) if not cut[list(t)].any()]
    mesh.add_triangles(grid_id[np.array(grid_tris)[keep_tri]], [grid_corner_uv[i] for i in keep_tri])
    vertices, uv = np.concatenate(mesh.vertices), np.concatenate([atlas, grid_uv[kept]])
    mirror = np.concatenate(mesh.mirror)
    (hole,) = _boundary_loops(grid_id[np.array(grid_tris)[keep_tri]])
    middle = hole[np.abs(vertices[hole, 0]) < 1e-9]
    middle = middle[np.argsort(-vertices[middle, 1])]
    strip = _stitch(_half_path(oval, FOREHEAD_TOP, CHIN, vertices[:, 0]),
                    _half_path(hole, middle[0], middle[-1], vertices[:, 0]), uv)
    strip += [(mirror[a], mirror[c], mirror[b]) for a, b, c in strip]
    mesh.add_triangles(strip, uv[np.array(strip)])
    rig = {"loops": loops}
    _add_eye_covers(mesh, loops["left_eye"], uv, rig)
    _add_mouth_cavity(mesh, loops["mouth"], rig)
    return _finish(mesh, rig)


def _add_eye_covers(mesh: _Mesh, eye: np.ndarray, uv: np.ndarray, rig: dict) -> None:
    """Domes on eyeballs behind both eye loops; UVs fill the face atlas's eye holes; the apex looks along +z."""
    face_mirror = np.concatenate(mesh.mirror)
    p = np.concatenate(mesh.vertices)[eye]
    z = np.linspace(p[:, 2].min() - 2 * EYEBALL_RADIUS_CM, p[:, 2].max(), 4001)
    dist = np.linalg.norm(p[None, :, :] - np.c_[np.tile(p[:, :2].mean(0), (len(z), 1)), z][:, None], axis=-1)
    centre = np.r_[p[:, :2].mean(0), z[np.argmin(((dist - EYEBALL_RADIUS_CM) ** 2).sum(1))]]
    radial = p - centre
    length = np.linalg.norm(radial, axis=1, keepdims=True)
    uv_centre = uv[eye].mean(0)
    points, point_uv, rings = [], [], [eye]
    first = len(mesh)
    for r in range(1, EYE_RINGS + 1):
        t = r / (EYE_RINGS + 1)
        d = (1 - t) * radial / length + t * np.array([0.0, 0.0, 1.0])
        points += list(centre + d / np.linalg.norm(d, axis=1, keepdims=True) * ((1 - t) * length + t * EYEBALL_RADIUS_CM))
        point_uv += list((1 - t) * uv[eye] + t * uv_centre)
        rings.append(first + (r - 1) * len(eye) + np.arange(len(eye)))
    points.append(centre + [0.0, 0.0, EYEBALL_RADIUS_CM])
    point_uv.append(uv_centre)
    count = len(points)
    left = mesh.add_vertices(np.array(points), first + count + np.arange(count))
    mesh.add_vertices(np.array(points) * [-1, 1, 1], left)
    tris = []
    for outer, inner in zip(rings[:-1], rings[1:]):
        tris += [t for t, _ in _band(outer, inner, np.ones(len(mesh)))]
    tris += [(rings[-1][(j + 1) % len(eye)], rings[-1][j], left[-1]) for j in range(len(eye))]
    all_uv = np.concatenate([uv, np.array(point_uv), np.array(point_uv) * [-1, 1] + [1, 0]])
    mirror = np.concatenate([face_mirror, left + count, left])
    tris = np.array(tris)
    mirrored = mirror[tris[:, [0, 2, 1]]]
    start = len(mesh.triangles)
    mesh.add_triangles(np.r_[tris, mirrored], all_uv[np.r_[tris, mirrored]])
    rig.update(eye_centre=centre, eye_ids=(left, left + count), eye_rings=[r - first for r in rings[1:]],
               left_eye_faces=start + np.arange(len(tris)), right_eye_faces=start + len(tris) + np.arange(len(tris)))


def _add_mouth_cavity(mesh: _Mesh, mouth: np.ndarray, rig: dict) -> None:
    """A pocket behind the inner-lip loop (rings opened vertically, a back wall) with its own UV island."""
    mirror_so_far = np.concatenate(mesh.mirror)
    p = np.concatenate(mesh.vertices)[mouth]
    corner_x = np.abs(p[:, 0]).max()
    start, end = int(np.argmax(p[:, 0])), int(np.argmin(p[:, 0]))
    along = (np.arange(len(mouth)) - start) % len(mouth)
    first_half = (along > 0) & (along < (end - start) % len(mouth))
    upper = first_half if first_half[mouth.tolist().index(UPPER_LIP)] else ~first_half
    side = np.where(np.isin(along, [0, (end - start) % len(mouth)]), 0, np.where(upper, 1, -1))
    loop_mirror = np.array([mouth.tolist().index(v) for v in mirror_so_far[mouth]])
    cu, cv, hu, hv = MOUTH_ISLAND
    shape = np.stack([p[:, 0] / corner_x, side * np.sqrt(np.clip(1 - (p[:, 0] / corner_x) ** 2, 0, 1))], -1)
    rings, ring_uv, first = [mouth], [shape], len(mesh)
    centre = p.mean(0)
    for r, (depth, width, opening) in enumerate(MOUTH_RINGS, 1):
        q = p.copy()
        q[:, 0] = centre[0] + (p[:, 0] - centre[0]) * width
        q[:, 1] += side * opening
        q[:, 2] -= depth
        rings.append(mesh.add_vertices(q, first + (r - 1) * len(mouth) + loop_mirror))
        ring_uv.append(shape * (1 - r / (len(MOUTH_RINGS) + 1)))
    back = mesh.add_vertices((centre - [0, 0, MOUTH_BACK_CM])[None], [len(mesh)])[0]
    uv_of = {(int(v)): ring_uv[r][j] for r, ids in enumerate(rings) for j, v in enumerate(ids)}
    uv_of[int(back)] = np.zeros(2)
    x = np.concatenate(mesh.vertices)[:, 0]
    tris = [t for outer, inner in zip(rings[:-1], rings[1:]) for t, _ in _band(outer, inner, x)]
    tris += [(rings[-1][(j + 1) % len(mouth)], rings[-1][j], back) for j in range(len(mouth))]
    corner = np.array([[uv_of[int(v)] for v in t] for t in tris])
    if _signed_area(corner[0], (0, 1, 2)) < 0:
        corner[..., 1] *= -1
    mesh.add_triangles(tris, corner * [hu, hv] + [cu, cv])
    rig.update(mouth_rings=rings, mouth_side=side, mouth_back=back)


def _smoothstep(t: np.ndarray) -> np.ndarray:
    t = np.clip(t, 0, 1)
    return t * t * (3 - 2 * t)


def _ray_hits(origin: np.ndarray, targets: np.ndarray, tri: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Triangle (of `tri [T, 3, 3]`) and barycentrics where each ray origin -> target `[P, 3]` meets the surface.

    A ray that misses every triangle (an iris point behind an eyelid) takes the nearest point of the triangle
    it passes closest to, so the landmark stays on the cover at its rim.
    """
    e1, e2 = tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0]
    faces, barys = [], []
    for target in targets:
        d, s = target - origin, origin - tri[:, 0]
        h, q = np.cross(d, e2), np.cross(s, e1)
        det = (e1 * h).sum(1)
        b1, b2, t = (s * h).sum(1) / det, (q @ d) / det, (q * e2).sum(1) / det
        bary = np.clip(np.stack([1 - b1 - b2, b1, b2], -1), 0, 1)
        bary /= bary.sum(1, keepdims=True)
        point = (bary[:, :, None] * tri).sum(1)  # clamped into each triangle
        miss = np.linalg.norm(np.cross(point - origin, d), axis=1) / np.linalg.norm(d)
        hit = int(np.argmin(np.where(t > 0, miss, np.inf)))
        faces.append(hit)
        barys.append(bary[hit])
    return np.array(faces), np.array(barys)


def _finish(mesh: _Mesh, rig: dict) -> tuple[dict[str, np.ndarray], dict]:
    """Atlas packing, regions, joints, skinning, landmarks, expression propagation; checks; head-space tensors."""
    v, mirror = np.concatenate(mesh.vertices), np.concatenate(mesh.mirror)
    faces, corner_uv = np.array(mesh.triangles, np.int64), np.stack(mesh.corner_uv)
    n, face = len(v), np.arange(len(v)) < NUM_FACE_VERTICES
    key = np.c_[faces.reshape(-1), np.round(corner_uv.reshape(-1, 2) * 1e7).astype(np.int64)]
    _, first, inverse = np.unique(key, axis=0, return_index=True, return_inverse=True)
    uv_coords, uv_faces = corner_uv.reshape(-1, 2)[first], inverse.reshape(-1, 3)
    # Regions.
    left_eye, right_eye = rig["eye_ids"]
    eyes = np.isin(np.arange(n), np.r_[left_eye, right_eye, LEFT_EYE_CONTOUR, RIGHT_EYE_CONTOUR])
    mouth = np.isin(np.arange(n), np.r_[np.concatenate(rig["mouth_rings"]), rig["mouth_back"]])
    cranium = ~face & ~eyes & ~mouth
    d = (v - CRANIUM_CENTRE_CM) / np.linalg.norm(v - CRANIUM_CENTRE_CM, axis=1, keepdims=True)
    ear = np.exp(-(((v[:, 1] - EAR_Y) / EAR_SIGMA_Y) ** 2) - ((v[:, 2] - EAR_Z) / EAR_SIGMA_Z) ** 2) * d[:, 0] ** 4
    ears = cranium & (ear > 0.3)
    chin_y = v[CHIN, 1]
    neck = cranium & ~ears & (v[:, 1] < chin_y + 3.0)
    masks = {"face": face, "scalp": cranium & ~ears & ~neck, "eyes": eyes, "mouth": mouth, "neck": neck,
             "ears": ears}
    # Joints and skinning: global <- neck <- (jaw, eyes); the neck base stays with the global joint.
    eye_centre = rig["eye_centre"]
    joints = np.array([[0.0, NECK_BOTTOM_Y, NECK_CENTRE_Z], NECK_JOINT_CM, JAW_JOINT_CM, eye_centre,
                       eye_centre * [-1, 1, 1]])
    head_part = np.where(face, 1.0, _smoothstep((v[:, 1] - NECK_BLEND_Y[0]) / (NECK_BLEND_Y[1] - NECK_BLEND_Y[0])))
    eye_w = np.zeros((n, 2))
    for ring, weight in zip(rig["eye_rings"], (0.5,) + (1.0,) * EYE_RINGS):
        eye_w[left_eye[ring], 0] = eye_w[right_eye[ring], 1] = weight
    eye_w[left_eye[-1], 0] = eye_w[right_eye[-1], 1] = 1.0
    fixed, value = np.zeros(n, bool), np.zeros(n)
    mouth_corner_y = v[rig["mouth_rings"][0], 1][rig["mouth_side"] == 0].mean()
    fixed |= (v[:, 1] > mouth_corner_y + 1.8) | (~face & (v[:, 2] < JAW_JOINT_CM[2] - 1.0))
    fixed |= v[:, 1] < chin_y - 4.5
    chin = face & (v[:, 1] < chin_y + 2.5)
    fixed[chin], value[chin] = True, 1.0
    for ids in rig["mouth_rings"]:
        fixed[ids], value[ids] = True, np.choose(rig["mouth_side"] + 1, [1.0, 0.5, 0.0])
    fixed[rig["mouth_back"]], value[rig["mouth_back"]] = True, 0.5
    edges = _unique_edges(faces)
    jaw = np.clip(_harmonic(edges, n, fixed, value[:, None])[:, 0], 0, 1)
    rest = head_part * (1 - eye_w.sum(1))
    weights = np.stack([1 - head_part, rest * (1 - jaw), rest * jaw, head_part * eye_w[:, 0],
                        head_part * eye_w[:, 1]], -1)
    # Landmarks: face vertices at a corner of their first triangle; irises on the eye covers.
    lm_faces, lm_bary = np.zeros(NUM_MEDIAPIPE_LANDMARKS, np.int64), np.zeros((NUM_MEDIAPIPE_LANDMARKS, 3))
    for f in range(len(faces) - 1, -1, -1):
        for c in range(3):
            if faces[f, c] < NUM_FACE_VERTICES:
                lm_faces[faces[f, c]], lm_bary[faces[f, c]] = f, np.eye(3)[c]
    alpha = np.arcsin(IRIS_RADIUS_CM / EYEBALL_RADIUS_CM)
    offsets = [np.array([0.0, 0.0, 1.0])] + [np.r_[np.sin(alpha) * np.array(s), np.cos(alpha)]
                                             for s in ((1, 0), (0, 1), (-1, 0), (0, -1))]
    for ids, centre, tris in ((LEFT_IRIS, eye_centre, rig["left_eye_faces"]),
                              (RIGHT_IRIS, eye_centre * [-1, 1, 1], rig["right_eye_faces"])):
        hit, bary = _ray_hits(centre, centre + EYEBALL_RADIUS_CM * np.array(offsets), v[faces[tris]])
        lm_faces[list(ids)], lm_bary[list(ids)] = tris[hit], bary
    # Expression propagation: harmonic extension of face displacements over nearby non-face vertices.
    hops = np.where(face, 0, np.iinfo(np.int64).max)
    neighbours = [[] for _ in range(n)]
    for a, b in edges:
        neighbours[a].append(b)
        neighbours[b].append(a)
    queue = deque(np.flatnonzero(face).tolist())
    while queue:
        a = queue.popleft()
        for b in neighbours[a]:
            if hops[b] > hops[a] + 1:
                hops[b] = hops[a] + 1
                queue.append(b)
    spread = _harmonic(edges, n, face | (hops > PROPAGATION_HOPS), np.eye(n, NUM_FACE_VERTICES))
    sources = np.argsort(-spread, axis=1, kind="stable")[:, :PROPAGATION_WIDTH]
    kept_w = np.take_along_axis(spread, sources, 1)
    total = spread.sum(1, keepdims=True)
    kept_w *= np.where(kept_w.sum(1, keepdims=True) > 0, total / np.maximum(kept_w.sum(1, keepdims=True), 1e-12), 0)
    # Head space: the origin at the middle of the crown-to-chin and nose-to-back extent.
    centre_cm = np.array([0.0, (v[:, 1].max() + chin_y) / 2, (v[:, 2].max() + v[:, 2].min()) / 2])
    scale = HEAD_UNITS_PER_METRE / 100
    report = mesh_report(v, faces)
    mirror_error = np.abs(v[mirror] * [-1, 1, 1] - v).max()
    if report["edges_not_shared_by_two"] or report["repeated_directed_edges"] or report["signed_volume"] <= 0:
        raise RuntimeError(f"OpenHead build produced a broken mesh: {report}.")
    if mirror_error > 1e-6 or (mirror[mirror] != np.arange(n)).any():
        raise RuntimeError(f"OpenHead build lost its mirror symmetry (max error {mirror_error} cm).")
    tensors = {
        "template_vertices": ((v - centre_cm) * scale).astype(np.float32),
        "faces": faces,
        "uv_coords": uv_coords.astype(np.float32),
        "uv_faces": uv_faces.astype(np.int64),
        "region_masks": np.stack([masks[name] for name in REGION_NAMES]),
        "landmark_faces": lm_faces,
        "landmark_barycentrics": lm_bary.astype(np.float32),
        "landmark_mediapipe_ids": np.arange(NUM_MEDIAPIPE_LANDMARKS, dtype=np.int64),
        "mirror_vertex": mirror,
        "parents": np.array(OPEN_HEAD_PARENTS, np.int64),
        "joint_locations": ((joints - centre_cm) * scale).astype(np.float32),
        "skinning_weights": weights.astype(np.float32),
        "expression_sources": sources.astype(np.int64),
        "expression_weights": kept_w.astype(np.float32),
    }
    config = {"num_vertices": n, "num_faces": len(faces), "num_uv": len(uv_coords),
              "num_landmarks": NUM_MEDIAPIPE_LANDMARKS, "num_joints": len(OPEN_HEAD_JOINT_NAMES),
              "propagation_width": PROPAGATION_WIDTH, "head_units_per_metre": HEAD_UNITS_PER_METRE,
              "head_centre_cm": [round(float(c), 6) for c in centre_cm]}
    return tensors, config


def mesh_report(vertices: np.ndarray, faces: np.ndarray) -> dict:
    """Topology and geometry figures of a triangle mesh `vertices [V, 3]`, `faces [F, 3]` (closed: all zeros)."""
    directed = np.concatenate([faces[:, [0, 1]], faces[:, [1, 2]], faces[:, [2, 0]]])
    _, shared = np.unique(np.sort(directed, axis=1), axis=0, return_counts=True)
    _, repeated = np.unique(directed, axis=0, return_counts=True)
    tri = vertices[faces].astype(np.float64)
    cross = np.cross(tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0])
    return {
        "num_vertices": len(vertices),
        "num_faces": len(faces),
        "edges_not_shared_by_two": int((shared != 2).sum()),
        "repeated_directed_edges": int((repeated > 1).sum()),
        "unused_vertices": int(len(vertices) - len(np.unique(faces))),
        "euler_characteristic": int(len(vertices) - len(shared) + len(faces)),
        "min_face_area": float(0.5 * np.linalg.norm(cross, axis=1).min()),
        "signed_volume": float((tri[:, 0] * cross).sum() / 6),
    }


def save_asset(tensors: dict[str, np.ndarray], config: dict, path: str | Path) -> Path:
    """Write the asset (safetensors; the config as JSON metadata), byte-identical for identical inputs.

    safetensors writes its metadata entries in a random order, so the header is re-serialised with them sorted
    (same length: only the order changes).
    """
    from safetensors.numpy import save

    metadata = {"format": OPEN_HEAD_FILE_FORMAT, "config": json.dumps(config, sort_keys=True)}
    data = save({k: np.ascontiguousarray(tensors[k]) for k in sorted(tensors)}, metadata=metadata)
    size = int.from_bytes(data[:8], "little")
    header = json.loads(data[8 : 8 + size])
    header = {"__metadata__": dict(sorted(header.pop("__metadata__").items())), **header}
    canonical = json.dumps(header, separators=(",", ":")).encode().ljust(size)
    if len(canonical) == size:
        data = data[:8] + canonical + data[8 + size :]
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path


#: Debug colours of the contact sheet, painted in this order (later regions win).
_SHEET_COLOURS = {"scalp": (0.30, 0.20, 0.14), "neck": (0.80, 0.62, 0.52), "ears": (0.86, 0.66, 0.56),
                  "face": (0.90, 0.72, 0.62), "mouth": (0.50, 0.12, 0.14), "eyes": (0.95, 0.95, 0.92)}


def render_contact_sheet(head, path: str | Path, size: int = 256) -> Path:
    """Render `head` (an `OpenHead`) as flat Gaussians, one per triangle, from 8 yaws (2x4 PNG, yaw 0 first).

    Colours: a debug colour per region, shaded with a light at each camera. Cameras: `Camera.orbit(8, 10°)`.
    """
    import torch
    from PIL import Image

    from ..rendering import Camera, Gaussians, render_gaussians

    with torch.no_grad():
        vertices = head(head.neutral_params())[0]
        tri = vertices[head.faces]  # [F, 3, 3]
        normal = torch.cross(tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0], dim=-1)
        area = normal.norm(dim=-1) / 2
        normal = normal / normal.norm(dim=-1, keepdim=True).clamp(min=1e-12)
        # The quaternion turning +z onto the normal (half-way vector); a flat disc covering the triangle.
        quats = torch.stack([1 + normal[:, 2], -normal[:, 1], normal[:, 0], torch.zeros_like(area)], -1)
        quats[1 + normal[:, 2] < 1e-6] = torch.tensor([0.0, 1.0, 0.0, 0.0])
        sigma = 0.55 * area.clamp(min=1e-10).sqrt()
        colour = torch.zeros_like(vertices)
        for name, rgb in _SHEET_COLOURS.items():
            colour[head.region(name)] = torch.tensor(rgb)
        colour = colour[head.faces].mean(1)
        cameras = Camera.orbit(8, elevation_deg=10)
        views = []
        for k in range(len(cameras)):
            light = cameras.position[k] + torch.tensor([0.0, 1.5, 0.0])
            shade = 0.35 + 0.65 * (normal @ (light / light.norm())).clamp(min=0)
            gaussians = Gaussians(means=tri.mean(1), quats=quats, scales=torch.stack([sigma, sigma, sigma / 20], -1),
                                  opacities=torch.ones_like(area), colors=(colour * shade[:, None]).clamp(0, 1))
            views.append(render_gaussians(gaussians, cameras[k], size, size, background=torch.ones(3)).image[0])
        grid = torch.cat([torch.cat(views[:4], dim=2), torch.cat(views[4:], dim=2)], dim=1)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray((grid.clamp(0, 1) * 255).round().byte().permute(1, 2, 0).numpy()).save(path)
    return path


def main(argv: list[str] | None = None) -> None:
    """CLI: build the asset (default: the packaged one), report its figures, optionally render a contact sheet."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--obj", default=str(DEFAULT_OBJ), help="MediaPipe canonical_face_model.obj")
    parser.add_argument("--out", default=str(default_asset_path()), help="output .safetensors")
    parser.add_argument("--contact-sheet", default=None, help="also render 8 views of the result to this PNG")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    tensors, config = build_open_head(args.obj)
    out = save_asset(tensors, config, args.out)
    report = mesh_report(tensors["template_vertices"], tensors["faces"])
    mirror_error = np.abs(tensors["template_vertices"][tensors["mirror_vertex"]] * [-1, 1, 1]
                          - tensors["template_vertices"]).max()
    logger.info("OpenHead: %d vertices, %d faces, %d UVs; %s", config["num_vertices"], config["num_faces"],
                config["num_uv"], report)
    logger.info("mirror error %.3g head units; wrote %s (%.0f kB)", mirror_error, out, out.stat().st_size / 1e3)
    if args.contact_sheet:
        from .open_head import OpenHead

        logger.info("contact sheet: %s", render_contact_sheet(OpenHead.from_file(out), args.contact_sheet))


if __name__ == "__main__":
    main()
