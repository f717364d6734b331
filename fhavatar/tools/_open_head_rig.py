"""OpenHead build, part 2: the rig. Regions, joints, skinning weights, landmarks and expression propagation.

Used by `fhavatar.tools.build_open_head` on the finished mesh of `_open_head_geometry` (vertices in cm, canonical
frame); `rig` is the dict the eye-cover and mouth-cavity builders fill in.
"""

from __future__ import annotations

from collections import deque

import numpy as np

from ..head.canonical_face import CHIN, LEFT_EYE_CONTOUR, LEFT_IRIS, RIGHT_EYE_CONTOUR, RIGHT_IRIS
from ..head.open_head import NUM_FACE_VERTICES, NUM_MEDIAPIPE_LANDMARKS, PROPAGATION_WIDTH
from ._open_head_geometry import (
    CRANIUM_CENTRE_CM,
    EAR_SIGMA_Y,
    EAR_SIGMA_Z,
    EAR_Y,
    EAR_Z,
    EYE_RINGS,
    EYEBALL_RADIUS_CM,
    IRIS_RADIUS_CM,
    NECK_BOTTOM_Y,
    NECK_CENTRE_Z,
    _harmonic,
)

# Rig (cm): joint locations, the neck's blend to the global joint, jaw-weight constraints.
NECK_JOINT_CM, JAW_JOINT_CM = (0.0, -4.5, -5.0), (0.0, 0.2, -2.1)
NECK_BLEND_Y = (NECK_BOTTOM_Y + 1.0, -10.5)
PROPAGATION_HOPS = 6  # cranium vertices this many edges from the face still follow face displacements
TIE_DECIMALS = 10  # propagation weights are ranked after rounding to this many decimals (machine-independent)


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


def _region_masks(v: np.ndarray, rig: dict) -> dict[str, np.ndarray]:
    """Boolean `[V]` mask per region name: face, scalp, eyes, mouth, neck, ears."""
    n, face = len(v), np.arange(len(v)) < NUM_FACE_VERTICES
    left_eye, right_eye = rig["eye_ids"]
    eyes = np.isin(np.arange(n), np.r_[left_eye, right_eye, LEFT_EYE_CONTOUR, RIGHT_EYE_CONTOUR])
    mouth = np.isin(np.arange(n), np.r_[np.concatenate(rig["mouth_rings"]), rig["mouth_back"]])
    cranium = ~face & ~eyes & ~mouth
    d = (v - CRANIUM_CENTRE_CM) / np.linalg.norm(v - CRANIUM_CENTRE_CM, axis=1, keepdims=True)
    ear = np.exp(-(((v[:, 1] - EAR_Y) / EAR_SIGMA_Y) ** 2) - ((v[:, 2] - EAR_Z) / EAR_SIGMA_Z) ** 2) * d[:, 0] ** 4
    ears = cranium & (ear > 0.3)
    chin_y = v[CHIN, 1]
    neck = cranium & ~ears & (v[:, 1] < chin_y + 3.0)
    return {"face": face, "scalp": cranium & ~ears & ~neck, "eyes": eyes, "mouth": mouth, "neck": neck,
            "ears": ears}


def _joints_and_skinning(v: np.ndarray, edges: np.ndarray, rig: dict) -> tuple[np.ndarray, np.ndarray]:
    """Joints `[5, 3]` cm and skinning weights `[V, 5]`: global <- neck <- (jaw, eyes); harmonic jaw weights.

    The neck base stays with the global joint.
    """
    n, face = len(v), np.arange(len(v)) < NUM_FACE_VERTICES
    left_eye, right_eye = rig["eye_ids"]
    chin_y = v[CHIN, 1]
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
    jaw = np.clip(_harmonic(edges, n, fixed, value[:, None])[:, 0], 0, 1)
    rest = head_part * (1 - eye_w.sum(1))
    weights = np.stack([1 - head_part, rest * (1 - jaw), rest * jaw, head_part * eye_w[:, 0],
                        head_part * eye_w[:, 1]], -1)
    return joints, weights


def _landmarks(v: np.ndarray, faces: np.ndarray, rig: dict) -> tuple[np.ndarray, np.ndarray]:
    """The 478 MediaPipe landmarks as (triangle `[478]`, barycentrics `[478, 3]`).

    Face vertices sit at a corner of their first triangle; irises on the eye covers.
    """
    lm_faces, lm_bary = np.zeros(NUM_MEDIAPIPE_LANDMARKS, np.int64), np.zeros((NUM_MEDIAPIPE_LANDMARKS, 3))
    for f in range(len(faces) - 1, -1, -1):
        for c in range(3):
            if faces[f, c] < NUM_FACE_VERTICES:
                lm_faces[faces[f, c]], lm_bary[faces[f, c]] = f, np.eye(3)[c]
    eye_centre = rig["eye_centre"]
    alpha = np.arcsin(IRIS_RADIUS_CM / EYEBALL_RADIUS_CM)
    offsets = [np.array([0.0, 0.0, 1.0])] + [np.r_[np.sin(alpha) * np.array(s), np.cos(alpha)]
                                             for s in ((1, 0), (0, 1), (-1, 0), (0, -1))]
    for ids, centre, tris in ((LEFT_IRIS, eye_centre, rig["left_eye_faces"]),
                              (RIGHT_IRIS, eye_centre * [-1, 1, 1], rig["right_eye_faces"])):
        hit, bary = _ray_hits(centre, centre + EYEBALL_RADIUS_CM * np.array(offsets), v[faces[tris]])
        lm_faces[list(ids)], lm_bary[list(ids)] = tris[hit], bary
    return lm_faces, lm_bary


def _expression_propagation(edges: np.ndarray, n: int, mirror: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Harmonic extension of face displacements over nearby non-face vertices: sources and weights `[n, W]`.

    `mirror [n]` is each vertex's mirror partner. The W strongest sources of a vertex are an integer choice made
    from floating-point weights, and the symmetric mesh makes exact ties (a midline vertex draws equally on a
    face vertex and its mirror) that solver round-off breaks differently per CPU, BLAS and thread count. So the
    weights are made exactly mirror-symmetric (a sum of the same two numbers in either order), rounded to 1e-10,
    and ranked by (weight, vertex index): every machine picks the same sources.
    """
    face = np.arange(n) < NUM_FACE_VERTICES
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
    spread = (spread + spread[mirror][:, mirror[:NUM_FACE_VERTICES]]) / 2
    spread = np.round(spread, TIE_DECIMALS)
    sources = np.argsort(-spread, axis=1, kind="stable")[:, :PROPAGATION_WIDTH]
    kept_w = np.take_along_axis(spread, sources, 1)
    total = spread.sum(1, keepdims=True)
    kept_w *= np.where(kept_w.sum(1, keepdims=True) > 0, total / np.maximum(kept_w.sum(1, keepdims=True), 1e-12), 0)
    return sources, kept_w
