"""OpenHead build, part 1: the mesh. Cranium grid, stitching, eye covers, mouth cavity.

Used by `fhavatar.tools.build_open_head` (whose docstring describes the construction) on the canonical face of
`fhavatar.head.canonical_face`; all lengths in cm in MediaPipe's canonical frame (+x the subject's left, +y up,
+z out of the face).
"""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp
import scipy.sparse.linalg as spla

from ..head.canonical_face import UPPER_LIP

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
