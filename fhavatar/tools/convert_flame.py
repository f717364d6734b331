"""Convert the official FLAME files into FHAvatar's one-file FLAME format (safetensors tensors + JSON config).

    python -m fhavatar.tools.convert_flame --model generic_model.pkl --uv head_template_mesh.obj \\
        --masks FLAME_masks.pkl --landmarks mediapipe_landmark_embedding.npz --out flame.safetensors

Inputs (FLAME 2020 or 2023, from https://flame.is.tue.mpg.de after accepting its non-commercial licence):

- `generic_model.pkl` (or `flame2023.pkl`): a pickle of `v_template [V, 3]`, `f [F, 3]`,
  `shapedirs [V, 3, 300 + 100]` (identity then expression), `posedirs [V, 3, 36]`, `J_regressor [5, V]`
  (scipy sparse), `kintree_table [2, 5]` and `weights [V, 5]`, some stored as chumpy arrays. It is read with
  `fhavatar.tools.restricted_pickle` (no chumpy, no scipy, no code from the file).
- `head_template_mesh.obj`: the UV atlas (`vt` and `f v/vt ...` lines on FLAME's topology).
- `FLAME_masks.pkl`: vertex index arrays of FLAME's regions (`face`, `scalp`, `lips`, `left_eyeball`, ...).
- a landmark embedding: MICA's `mediapipe_landmark_embedding.npz` (`lmk_face_idx [L]`, `lmk_b_coords [L, 3]`,
  `landmark_indices [L]` MediaPipe ids), DECA's `landmark_embedding.npy` (`full_lmk_faces_idx [1, 68]`,
  `full_lmk_bary_coords [1, 68, 3]`) or FLAME's `flame_static_embedding.pkl` (`lmk_face_idx`, `lmk_b_coords`).

The converter moves everything into head space (`fhavatar.head.flame` docstring), covers the mouth opening with
a recessed fan (one vertex `MOUTH_CAVITY_DEPTH_M` behind the inner-lip loop, blended like the loop) that gets
its own small UV island, maps FLAME's masks onto `REGION_NAMES`, and writes one safetensors file.
"""

from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import save_file

from ..head.base import HEAD_UNITS_PER_METRE, REGION_NAMES
from ..head.flame import FLAME_FILE_FORMAT, FLAME_HEAD_CENTRE_M, FLAME_JOINT_NAMES, FLAME_LICENCE_NOTE, check_tensors
from ..io import checked_file
from .restricted_pickle import as_array, load_npy, load_pickle

__all__ = ["FLAME_SHAPE_COMPONENTS", "MOUTH_CAVITY_DEPTH_M", "REGION_SOURCES", "convert_flame", "main"]

logger = logging.getLogger(__name__)

#: How many of `shapedirs`' components are identity shape in FLAME 2020/2023 (the remaining 100 are expression).
FLAME_SHAPE_COMPONENTS = 300
#: How far (metres, along -z) the mouth-cover centre vertex sits behind the inner-lip loop's centroid.
MOUTH_CAVITY_DEPTH_M = 0.01
#: FLAME mask names merged into each FHAvatar region. Regions are disjoint: a vertex goes to the first region of
#: `REGION_PRIORITY` that claims it; vertices no mask claims (back of the head) go to "scalp".
REGION_SOURCES = {
    "eyes": ("left_eyeball", "right_eyeball"),
    "mouth": ("lips",),
    "ears": ("left_ear", "right_ear"),
    "face": ("face", "forehead", "nose", "eye_region", "left_eye_region", "right_eye_region"),
    "neck": ("neck", "boundary"),
    "scalp": ("scalp",),
}
REGION_PRIORITY = ("eyes", "mouth", "ears", "face", "neck", "scalp")
#: Atlas resolution used to find free space for the mouth island, and the island's size limits (UV units).
_ATLAS_GRID = 256
_ISLAND_MAX, _ISLAND_MIN, _ISLAND_STRIP = 0.12, 0.04, 0.08
_LANDMARK_KINDS = {".npz": "mediapipe", ".npy": "ibug68", ".pkl": "ibug51"}


# ---------------------------------------------------------------------------------------------- readers
def read_flame_model(path: str | Path, shape_components: int = FLAME_SHAPE_COMPONENTS) -> dict[str, np.ndarray]:
    """FLAME arrays in metres: v_template [V,3], f [F,3], shapedirs [V,3,S], exprdirs [V,3,E],
    posedirs [V,3,36], J_regressor [J,V], parents [J] (-1 root), weights [V,J]."""
    path = checked_file(path, "FLAME model (generic_model.pkl)", FLAME_LICENCE_NOTE)
    raw = load_pickle(path.read_bytes(), source=str(path))
    if not isinstance(raw, dict):
        raise ValueError(f"{path}: expected a dict of FLAME arrays, found {type(raw).__name__}.")
    keys = ("v_template", "f", "shapedirs", "posedirs", "J_regressor", "kintree_table", "weights")
    missing = [k for k in keys if k not in raw]
    if missing:
        raise ValueError(f"{path}: not a FLAME model, missing keys {missing} (found {sorted(raw)}).")
    a = {k: as_array(raw[k], k) for k in keys}
    v, f = a["v_template"].astype(np.float64), a["f"].astype(np.int64)
    num_v, num_j = v.shape[0], len(FLAME_JOINT_NAMES)
    expect = {"v_template": (num_v, 3), "f": (f.shape[0], 3), "posedirs": (num_v, 3, 9 * (num_j - 1)),
              "J_regressor": (num_j, num_v), "kintree_table": (2, num_j), "weights": (num_v, num_j)}
    for key, shape in expect.items():
        if a[key].shape != shape:
            raise ValueError(f"{path}: `{key}` has shape {list(a[key].shape)}, expected {list(shape)}.")
    dirs = a["shapedirs"]
    if dirs.ndim != 3 or dirs.shape[:2] != (num_v, 3) or not 0 < shape_components < dirs.shape[2]:
        raise ValueError(
            f"{path}: `shapedirs` has shape {list(dirs.shape)}, expected [{num_v}, 3, N] with N > "
            f"shape_components={shape_components} (identity then expression components)."
        )
    if f.min() < 0 or f.max() >= num_v:
        raise ValueError(f"{path}: `f` indexes vertices outside [0, {num_v}).")
    kin = a["kintree_table"].astype(np.int64)
    parents = np.full(num_j, -1, dtype=np.int64)
    parents[kin[1]] = np.where((kin[0] < 0) | (kin[0] >= num_j), -1, kin[0])
    if parents[0] != -1 or any(not 0 <= parents[j] < j for j in range(1, num_j)):
        raise ValueError(f"{path}: `kintree_table` is not a chain rooted at joint 0: parents {parents.tolist()}.")
    regressor = a["J_regressor"].astype(np.float64)
    # Rows must be affine combinations (sum 1) for joints to move with the head-space similarity.
    if not np.allclose(regressor.sum(1), 1.0, atol=0.05):
        raise ValueError(f"{path}: `J_regressor` rows must sum to 1, got {regressor.sum(1).tolist()}.")
    regressor = regressor / regressor.sum(1, keepdims=True)
    return {"v_template": v, "f": f, "shapedirs": dirs[..., :shape_components].astype(np.float64),
            "exprdirs": dirs[..., shape_components:].astype(np.float64),
            "posedirs": a["posedirs"].astype(np.float64), "J_regressor": regressor, "parents": parents,
            "weights": a["weights"].astype(np.float64)}


def read_obj_uv(path: str | Path) -> tuple[int, np.ndarray, np.ndarray, np.ndarray]:
    """(vertex count, uv [T,2], faces [F,3], uv_faces [F,3]) of an OBJ with `f v/vt` triangles (0-based)."""
    path = checked_file(path, "FLAME UV template (head_template_mesh.obj)", FLAME_LICENCE_NOTE)
    num_v, uv, faces, uv_faces = 0, [], [], []
    for lineno, line in enumerate(path.read_text(errors="replace").splitlines(), 1):
        parts = line.split()
        if not parts:
            continue
        if parts[0] == "v":
            num_v += 1
        elif parts[0] == "vt":
            uv.append([float(parts[1]), float(parts[2])])
        elif parts[0] == "f":
            corners = [p.split("/") for p in parts[1:]]
            if len(corners) != 3 or any(len(c) < 2 or not c[1] for c in corners):
                raise ValueError(f"{path}:{lineno}: expected a triangle `f v/vt v/vt v/vt`, got {line.strip()!r}.")
            faces.append([int(c[0]) - 1 for c in corners])
            uv_faces.append([int(c[1]) - 1 for c in corners])
    if not uv or not faces:
        raise ValueError(f"{path}: no `vt`/`f v/vt` lines: not a UV template mesh.")
    uv, uv_faces = np.asarray(uv, dtype=np.float64), np.asarray(uv_faces, dtype=np.int64)
    if uv_faces.min() < 0 or uv_faces.max() >= len(uv):
        raise ValueError(f"{path}: face UV indices fall outside the {len(uv)} `vt` lines.")
    return num_v, uv, np.asarray(faces, dtype=np.int64), uv_faces


def read_masks(path: str | Path, num_vertices: int) -> dict[str, np.ndarray]:
    """FLAME_masks.pkl as {name: vertex indices}, checked against the model's vertex count."""
    path = checked_file(path, "FLAME masks (FLAME_masks.pkl)", FLAME_LICENCE_NOTE)
    raw = load_pickle(path.read_bytes(), source=str(path))
    if not isinstance(raw, dict):
        raise ValueError(f"{path}: expected a dict of vertex index arrays, found {type(raw).__name__}.")
    needed = sorted({name for names in REGION_SOURCES.values() for name in names})
    missing = [n for n in needed if n not in raw]
    if missing:
        raise ValueError(f"{path}: missing FLAME masks {missing} (found {sorted(raw)}).")
    masks = {}
    for name in needed:
        idx = as_array(raw[name], name).astype(np.int64).reshape(-1)
        if idx.size and (idx.min() < 0 or idx.max() >= num_vertices):
            raise ValueError(f"{path}: mask `{name}` indexes vertices outside [0, {num_vertices}).")
        masks[name] = idx
    return masks


def read_landmarks(path: str | Path, num_faces: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, str]:
    """(faces [L], barycentrics [L,3], MediaPipe ids [L] (-1 = none), kind) of a landmark embedding."""
    path = checked_file(path, "FLAME landmark embedding", FLAME_LICENCE_NOTE)
    kind = _LANDMARK_KINDS.get(path.suffix.lower())
    if kind == "mediapipe":
        with np.load(path, allow_pickle=False) as data:
            keys = ("lmk_face_idx", "lmk_b_coords", "landmark_indices")
            if any(k not in data for k in keys):
                raise ValueError(f"{path}: expected MICA's keys {keys}, found {sorted(data.keys())}.")
            faces, bary, ids = (np.asarray(data[k]) for k in keys)
    elif kind == "ibug68":
        raw = load_npy(path)
        raw = raw.item() if raw.dtype == object and raw.shape == () else raw
        if not isinstance(raw, dict) or "full_lmk_faces_idx" not in raw or "full_lmk_bary_coords" not in raw:
            raise ValueError(f"{path}: expected DECA's dict with `full_lmk_faces_idx` and `full_lmk_bary_coords`.")
        faces, bary = as_array(raw["full_lmk_faces_idx"], "full_lmk_faces_idx"), as_array(
            raw["full_lmk_bary_coords"], "full_lmk_bary_coords")
        ids = None
    elif kind == "ibug51":
        raw = load_pickle(path.read_bytes(), source=str(path))
        if not isinstance(raw, dict) or "lmk_face_idx" not in raw or "lmk_b_coords" not in raw:
            raise ValueError(f"{path}: expected FLAME's dict with `lmk_face_idx` and `lmk_b_coords`.")
        faces, bary, ids = as_array(raw["lmk_face_idx"]), as_array(raw["lmk_b_coords"]), None
    else:
        raise ValueError(f"{path}: unknown landmark embedding type {path.suffix!r}; expected .npz, .npy or .pkl.")
    faces, bary = faces.astype(np.int64).reshape(-1), bary.astype(np.float64).reshape(-1, 3)
    ids = np.full(len(faces), -1, dtype=np.int64) if ids is None else ids.astype(np.int64).reshape(-1)
    if len(bary) != len(faces) or len(ids) != len(faces):
        raise ValueError(f"{path}: {len(faces)} landmark faces but {len(bary)} barycentrics and {len(ids)} ids.")
    if faces.size and (faces.min() < 0 or faces.max() >= num_faces):
        raise ValueError(f"{path}: landmark faces outside [0, {num_faces}): is it for this FLAME topology?")
    return faces, bary, ids, kind


# ---------------------------------------------------------------------------------------------- geometry
def match_uv_faces(faces: np.ndarray, obj_faces: np.ndarray, obj_uv_faces: np.ndarray) -> np.ndarray:
    """UV faces `[F,3]` in the model's face order and corner order (the OBJ may order faces differently)."""
    if obj_faces.shape == faces.shape and np.array_equal(obj_faces, faces):
        return obj_uv_faces
    lookup = {tuple(sorted(face)): i for i, face in enumerate(obj_faces.tolist())}
    uv_faces = np.empty_like(faces)
    for i, face in enumerate(faces.tolist()):
        j = lookup.get(tuple(sorted(face)))
        if j is None:
            raise ValueError(f"The UV template has no triangle {face} of the FLAME model: different topologies.")
        order = [obj_faces[j].tolist().index(vertex) for vertex in face]
        uv_faces[i] = obj_uv_faces[j, order]
    return uv_faces


def boundary_loops(faces: np.ndarray) -> list[np.ndarray]:
    """Hole loops of a triangle mesh, each ordered so that `(loop[k], loop[k+1], x)` matches the mesh winding."""
    directed = np.concatenate([faces[:, [0, 1]], faces[:, [1, 2]], faces[:, [2, 0]]])
    undirected, counts = np.unique(np.sort(directed, 1), axis=0, return_counts=True)
    once = {tuple(e) for e in undirected[counts == 1].tolist()}
    # A boundary edge a->b of an existing face is walked b->a around the hole.
    step = {}
    for a, b in directed.tolist():
        if (min(a, b), max(a, b)) in once:
            if b in step:
                raise ValueError(f"The FLAME mesh has a non-manifold boundary vertex ({b}).")
            step[b] = a
    loops, seen = [], set()
    for start in sorted(step):
        if start in seen:
            continue
        loop, vertex = [], start
        while vertex not in seen:
            seen.add(vertex)
            loop.append(vertex)
            vertex = step[vertex]
        loops.append(np.asarray(loop, dtype=np.int64))
    return loops


def _largest_empty_square(uv: np.ndarray, uv_faces: np.ndarray, grid: int = _ATLAS_GRID):
    """(u0, v0, side) of the largest square of the atlas no UV triangle touches (UV units)."""
    occupied = np.zeros((grid + 2, grid + 2), dtype=bool)  # one texel of padding around the atlas
    centres = (np.arange(grid) + 0.5) / grid
    for tri in uv[uv_faces]:
        lo = np.clip(np.floor(tri.min(0) * grid).astype(int) - 1, 0, grid - 1)
        hi = np.clip(np.ceil(tri.max(0) * grid).astype(int) + 1, 0, grid - 1)
        uu, vv = np.meshgrid(centres[lo[0]: hi[0] + 1], centres[lo[1]: hi[1] + 1], indexing="ij")
        p = np.stack([uu, vv], -1)
        e0, e1, e2 = tri[1] - tri[0], tri[2] - tri[1], tri[0] - tri[2]
        tol = 1.5 / grid * np.array([np.hypot(*e) for e in (e0, e1, e2)])  # cover texels the edges touch
        c0 = e0[0] * (p[..., 1] - tri[0, 1]) - e0[1] * (p[..., 0] - tri[0, 0])
        c1 = e1[0] * (p[..., 1] - tri[1, 1]) - e1[1] * (p[..., 0] - tri[1, 0])
        c2 = e2[0] * (p[..., 1] - tri[2, 1]) - e2[1] * (p[..., 0] - tri[2, 0])
        inside = ((c0 >= -tol[0]) & (c1 >= -tol[1]) & (c2 >= -tol[2])) | (
            (c0 <= tol[0]) & (c1 <= tol[1]) & (c2 <= tol[2]))
        occupied[lo[0] + 1: hi[0] + 2, lo[1] + 1: hi[1] + 2] |= inside
    occupied[0, :] = occupied[-1, :] = occupied[:, 0] = occupied[:, -1] = True
    table = np.pad(occupied.astype(np.int64).cumsum(0).cumsum(1), ((1, 0), (1, 0)))

    def empty_corner(side: int):
        window = table[side:, side:] - table[:-side, side:] - table[side:, :-side] + table[:-side, :-side]
        hits = np.argwhere(window == 0)
        return hits[0] if len(hits) else None

    lo, hi, best = 1, grid, None
    while lo <= hi:  # binary search on the side length (an empty square contains smaller empty squares)
        mid = (lo + hi) // 2
        corner = empty_corner(mid)
        if corner is None:
            hi = mid - 1
        else:
            lo, best = mid + 1, (corner, mid)
    if best is None:
        return 0.0, 0.0, 0.0
    (i, j), side = best
    return (i - 1) / grid, (j - 1) / grid, side / grid


def _mouth_island(points: np.ndarray, uv: np.ndarray, uv_faces: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """UVs `[n+1, 2]` of the cover (loop points then centre) in free atlas space; may squeeze the atlas in u."""
    u0, v0, side = _largest_empty_square(uv, uv_faces)
    if side < _ISLAND_MIN:
        logger.warning("No free atlas space for the mouth island: squeezing FLAME's atlas to u <= %.2f.",
                       1 - _ISLAND_STRIP)
        uv[:, 0] *= 1 - _ISLAND_STRIP
        u0, v0, side = 1 - _ISLAND_STRIP, 0.5 - _ISLAND_STRIP / 2, _ISLAND_STRIP
    size = min(side, _ISLAND_MAX) * 0.9
    centre = np.array([u0 + side / 2, v0 + side / 2])
    flat = points[:, :2] - points[:, :2].mean(0)  # front view (x right, y up)
    flat = flat / max(np.abs(flat).max(), 1e-12)
    return np.concatenate([centre + flat * size / 2, centre[None]]), uv


def close_mouth(model: dict, uv: np.ndarray, uv_faces: np.ndarray, lips: np.ndarray) -> dict:
    """Cover the inner-lip hole with a recessed fan (one new vertex, one face per loop edge, a UV island)."""
    loops = boundary_loops(model["f"])
    in_lips = np.zeros(len(model["v_template"]), dtype=bool)
    in_lips[lips] = True
    # The inner-lip loop: the hole with most vertices in FLAME's `lips` mask, or else one centred inside the lips.
    candidates = [lp for lp in loops if in_lips[lp].any()]
    if not candidates and lips.size:
        lo, hi = model["v_template"][lips].min(0), model["v_template"][lips].max(0)
        half = 0.6 * (hi - lo)  # half the lips' box plus a 20 % margin
        candidates = [lp for lp in loops if np.all(np.abs(model["v_template"][lp].mean(0) - (lo + hi) / 2) <= half)]
    if not candidates:
        logger.warning("No mouth opening found next to FLAME's `lips` mask: nothing to cover.")
        return {**model, "uv": uv, "uv_faces": uv_faces, "mouth_loop": np.zeros(0, dtype=np.int64)}
    loop = max(candidates, key=lambda lp: in_lips[lp].mean())
    n, num_v = len(loop), len(model["v_template"])

    def extend(array: np.ndarray, new_row: np.ndarray) -> np.ndarray:
        return np.concatenate([array, new_row[None]])

    out = dict(model)
    centre = model["v_template"][loop].mean(0) - np.array([0.0, 0.0, MOUTH_CAVITY_DEPTH_M])
    out["v_template"] = extend(model["v_template"], centre)
    for key in ("shapedirs", "exprdirs", "posedirs", "weights"):
        out[key] = extend(model[key], model[key][loop].mean(0))  # the centre moves like the loop's average
    out["J_regressor"] = np.concatenate([model["J_regressor"], np.zeros((len(FLAME_JOINT_NAMES), 1))], 1)
    new_faces = np.stack([loop, np.roll(loop, -1), np.full(n, num_v)], 1)
    out["f"] = np.concatenate([model["f"], new_faces])
    island, uv = _mouth_island(model["v_template"][loop], uv.copy(), uv_faces)
    t0 = len(uv)
    new_uv_faces = np.stack([t0 + np.arange(n), t0 + (np.arange(n) + 1) % n, np.full(n, t0 + n)], 1)
    out["uv"] = np.concatenate([uv, island])
    out["uv_faces"] = np.concatenate([uv_faces, new_uv_faces])
    # Keep the island's UV winding the same as the atlas's (mirror it in u otherwise).
    if np.sign(_signed_areas(out["uv"], new_uv_faces).sum()) != np.sign(_signed_areas(uv, uv_faces).sum()):
        out["uv"][t0:, 0] = 2 * out["uv"][-1, 0] - out["uv"][t0:, 0]
    out["mouth_loop"] = loop
    logger.info("Mouth covered: %d-vertex inner-lip loop, 1 vertex and %d faces added.", n, n)
    return out


def _signed_areas(uv: np.ndarray, uv_faces: np.ndarray) -> np.ndarray:  # -> [F]
    a, b, c = (uv[uv_faces[:, k]] for k in range(3))
    return 0.5 * ((b - a)[:, 0] * (c - a)[:, 1] - (b - a)[:, 1] * (c - a)[:, 0])


def region_masks(masks: dict[str, np.ndarray], num_vertices: int, mouth_vertices: np.ndarray) -> np.ndarray:
    """Disjoint `[R, V]` bool masks over `REGION_NAMES` from FLAME's masks (see `REGION_SOURCES`)."""
    claimed = np.zeros(num_vertices, dtype=bool)
    out = np.zeros((len(REGION_NAMES), num_vertices), dtype=bool)
    for region in REGION_PRIORITY:
        member = np.zeros(num_vertices, dtype=bool)
        for name in REGION_SOURCES[region]:
            member[masks[name]] = True
        if region == "mouth":
            member[mouth_vertices] = True
        if region == "scalp":
            member[:] = True  # everything left over (back and top of the head) is hair
        member &= ~claimed
        claimed |= member
        out[REGION_NAMES.index(region)] = member
    return out


# ---------------------------------------------------------------------------------------------- conversion
def convert_flame(
    model: str | Path,
    uv: str | Path,
    masks: str | Path,
    landmarks: str | Path,
    out: str | Path,
    num_shape: int | None = None,
    num_expression: int | None = None,
    shape_components: int = FLAME_SHAPE_COMPONENTS,
) -> Path:
    """Convert the official FLAME files (module docstring) into one safetensors file at `out`; returns its path.

    Args:
        model, uv, masks, landmarks (`str` or `Path`): the FLAME input files.
        out (`str` or `Path`): the safetensors file to write.
        num_shape (`int`, *optional*): identity blendshapes to keep (defaults to all).
        num_expression (`int`, *optional*): expression blendshapes to keep (defaults to all).
        shape_components (`int`, *optional*, defaults to 300): how many of `shapedirs`' components are identity.
    """
    flame = read_flame_model(model, shape_components)
    num_v, num_f = len(flame["v_template"]), len(flame["f"])
    obj_v, uv_coords, obj_faces, obj_uv_faces = read_obj_uv(uv)
    if obj_v not in (0, num_v) or len(obj_faces) != num_f:
        raise ValueError(
            f"{uv}: {obj_v} vertices and {len(obj_faces)} faces, but the FLAME model has {num_v} and {num_f}."
        )
    uv_faces = match_uv_faces(flame["f"], obj_faces, obj_uv_faces)
    flame_masks = read_masks(masks, num_v)
    lmk_faces, lmk_bary, lmk_ids, kind = read_landmarks(landmarks, num_f)
    for name, total, keep in (("num_shape", flame["shapedirs"].shape[2], num_shape),
                              ("num_expression", flame["exprdirs"].shape[2], num_expression)):
        if keep is not None and not 0 < keep <= total:
            raise ValueError(f"`{name}` must be in [1, {total}], got {keep}.")
    flame["shapedirs"] = flame["shapedirs"][..., :num_shape]
    flame["exprdirs"] = flame["exprdirs"][..., :num_expression]

    closed = close_mouth(flame, uv_coords, uv_faces, flame_masks["lips"])
    mouth_vertices = np.arange(num_v, len(closed["v_template"]))
    regions = region_masks(flame_masks, len(closed["v_template"]), mouth_vertices)

    scale, centre = HEAD_UNITS_PER_METRE, np.asarray(FLAME_HEAD_CENTRE_M)
    head_template = scale * (closed["v_template"] - centre)
    bbox_centre = (head_template.min(0) + head_template.max(0)) / 2
    logger.info("Head-space template bounding-box centre: %s head units.", np.round(bbox_centre, 3).tolist())
    if np.linalg.norm(bbox_centre) > 0.15:
        logger.warning("The converted template is centred %.2f units from the origin; check FLAME_HEAD_CENTRE_M.",
                       np.linalg.norm(bbox_centre))

    def f32(x: np.ndarray) -> torch.Tensor:
        return torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32))

    def i64(x: np.ndarray) -> torch.Tensor:
        return torch.from_numpy(np.ascontiguousarray(x, dtype=np.int64))

    tensors = {
        "template_vertices": f32(head_template),
        "faces": i64(closed["f"]),
        "uv_coords": f32(closed["uv"]),
        "uv_faces": i64(closed["uv_faces"]),
        "region_masks": torch.from_numpy(regions),
        "landmark_faces": i64(lmk_faces),
        "landmark_barycentrics": f32(lmk_bary),
        "landmark_mediapipe_ids": i64(lmk_ids),
        "shapedirs": f32(scale * closed["shapedirs"]),
        "exprdirs": f32(scale * closed["exprdirs"]),
        "posedirs": f32(scale * closed["posedirs"]),
        "J_regressor": f32(closed["J_regressor"]),
        "parents": i64(closed["parents"]),
        "lbs_weights": f32(closed["weights"]),
    }
    config = {
        "num_vertices": len(head_template), "num_faces": len(closed["f"]), "num_uv": len(closed["uv"]),
        "num_shape": int(tensors["shapedirs"].shape[2]), "num_expression": int(tensors["exprdirs"].shape[2]),
        "num_landmarks": len(lmk_faces), "num_joints": len(FLAME_JOINT_NAMES), "landmark_kind": kind,
        "num_mouth_vertices": len(mouth_vertices), "num_mouth_faces": len(closed["f"]) - num_f,
        "head_units_per_metre": scale, "head_centre_m": [float(c) for c in centre],
        "source": ", ".join(Path(p).name for p in (model, uv, masks, landmarks)),
    }
    check_tensors(tensors, config, "convert_flame")
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    save_file(tensors, str(out), metadata={"format": FLAME_FILE_FORMAT, "config": json.dumps(config),
                                           "licence": FLAME_LICENCE_NOTE})
    logger.info("Wrote %s: %d vertices, %d faces, %d UVs, %d landmarks (%s).", out, config["num_vertices"],
                config["num_faces"], config["num_uv"], config["num_landmarks"], kind)
    return out


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m fhavatar.tools.convert_flame", description=__doc__.split("\n")[0],
                                     epilog=FLAME_LICENCE_NOTE)
    parser.add_argument("--model", required=True, help="generic_model.pkl (FLAME 2020) or flame2023.pkl")
    parser.add_argument("--uv", required=True, help="head_template_mesh.obj (FLAME's UV atlas)")
    parser.add_argument("--masks", required=True, help="FLAME_masks.pkl")
    parser.add_argument("--landmarks", required=True,
                        help="mediapipe_landmark_embedding.npz (MICA), landmark_embedding.npy (DECA) or "
                             "flame_static_embedding.pkl")
    parser.add_argument("--out", required=True, help="output .safetensors file")
    parser.add_argument("--num-shape", type=int, default=None, help="identity blendshapes to keep (default: all)")
    parser.add_argument("--num-expression", type=int, default=None, help="expression blendshapes (default: all)")
    parser.add_argument("--shape-components", type=int, default=FLAME_SHAPE_COMPONENTS,
                        help="identity components at the start of shapedirs (FLAME: 300)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    try:
        convert_flame(args.model, args.uv, args.masks, args.landmarks, args.out, num_shape=args.num_shape,
                      num_expression=args.num_expression, shape_components=args.shape_components)
    except (FileNotFoundError, ValueError) as err:
        parser.error(str(err))


if __name__ == "__main__":
    main()
