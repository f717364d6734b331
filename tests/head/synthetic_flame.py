"""Synthetic stand-ins for the official FLAME files (no FLAME data exists in this repository).

`write_synthetic_flame(folder)` writes files with the official layouts but a small made-up head:

- `generic_model.pkl`: a protocol-2 pickle of a dict with FLAME's keys (`v_template`, `f`, `shapedirs`,
  `posedirs`, `J_regressor` as a scipy CSC matrix, `kintree_table`, `weights`, ...), where `shapedirs`,
  `posedirs` and `weights` are objects of a class named `chumpy.ch.Ch` (defined here in a throw-away module
  injected into `sys.modules` only while pickling), as in the real file.
- `head_template_mesh.obj` (v, vt, `f v/vt`; faces shuffled and rotated relative to the model), `FLAME_masks.pkl`,
  MICA-style `mediapipe_landmark_embedding.npz` and DECA-style `landmark_embedding.npy` (a pickled dict that
  also holds torch tensors, like DECA's).

The head is a UV sphere in metres around `FLAME_HEAD_CENTRE_M`: a pole on top, an open neck ring at the bottom
and a 6-vertex mouth hole on the front. `random_flame(...)` builds a random but valid `FLAME` of any size.
"""

from __future__ import annotations

import math
import pickle
import sys
import types
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import torch

from fhavatar.head.base import REGION_NAMES
from fhavatar.head.flame import FLAME, FLAME_HEAD_CENTRE_M

__all__ = ["fake_chumpy", "random_flame", "write_synthetic_flame"]

RINGS, COLUMNS, RADIUS = 12, 16, 0.09  # 1 + 12 * 16 = 193 vertices
MOUTH_RING = 7  # quads between rings 7 and 8 on the front meridian are removed
NUM_SHAPE, NUM_EXPRESSION = 6, 4


@contextmanager
def fake_chumpy():
    """Yield a class pickled as `chumpy.ch.Ch` (state = dict with `x`), registered in sys.modules meanwhile."""
    saved = {name: sys.modules.get(name) for name in ("chumpy", "chumpy.ch")}
    package, module = types.ModuleType("chumpy"), types.ModuleType("chumpy.ch")

    class Ch:
        def __init__(self, x):
            self.x = np.asarray(x, dtype=np.float64)

        def __getstate__(self):  # like chumpy: the instance dict (with `x` for a plain array) plus bookkeeping
            return {**self.__dict__, "_dirty_vars": set(), "_itr": None, "_depends_on_deps": {}, "_make_dense": False}

    Ch.__module__, Ch.__qualname__ = "chumpy.ch", "Ch"
    module.Ch, package.ch = Ch, module
    sys.modules.update({"chumpy": package, "chumpy.ch": module})
    try:
        yield Ch
    finally:
        for name, value in saved.items():
            if value is None:
                sys.modules.pop(name, None)
            else:
                sys.modules[name] = value


def _sphere():
    """Vertices [V,3] (metres), faces [F,3] (outward), uv [T,2], uv_faces [F,3], grid index helpers."""
    elevations = np.radians(np.linspace(75.0, -60.0, RINGS))
    azimuths = 2 * np.pi * np.arange(COLUMNS) / COLUMNS  # 0 looks toward +z, pi/2 toward +x
    ce, se = np.cos(elevations)[:, None], np.sin(elevations)[:, None]
    ring = np.stack([ce * np.sin(azimuths), np.broadcast_to(se, (RINGS, COLUMNS)), ce * np.cos(azimuths)], -1)
    ring = ring * RADIUS * np.array([0.85, 1.1, 1.0])
    vertices = np.concatenate([[[0.0, 1.1 * RADIUS, 0.0]], ring.reshape(-1, 3)]) + np.asarray(FLAME_HEAD_CENTRE_M)

    def vid(k, j):
        return 1 + k * COLUMNS + j % COLUMNS

    # Atlas: columns j = 0..C at u in [0.05, 0.65] (seam column duplicated), rings at v in [0.1, 0.85], poles at 0.95.
    us, vs = np.linspace(0.05, 0.65, COLUMNS + 1), np.linspace(0.85, 0.1, RINGS)
    grid_uv = np.stack(np.meshgrid(us, vs, indexing="xy"), -1).reshape(-1, 2)  # [(R)(C+1), 2]
    pole_uv = np.stack([(us[:-1] + us[1:]) / 2, np.full(COLUMNS, 0.95)], -1)
    uv = np.concatenate([grid_uv, pole_uv])

    def tid(k, j):
        return k * (COLUMNS + 1) + j

    faces, uv_faces = [], []
    for j in range(COLUMNS):
        faces.append((0, vid(0, j), vid(0, j + 1)))
        uv_faces.append((RINGS * (COLUMNS + 1) + j, tid(0, j), tid(0, j + 1)))
        for k in range(RINGS - 1):
            if k == MOUTH_RING and j in (COLUMNS - 1, 0):
                continue  # the mouth opening
            a, b, c, d = (k, j), (k, j + 1), (k + 1, j), (k + 1, j + 1)
            for tri in ((a, c, d), (a, d, b)):
                faces.append(tuple(vid(*q) for q in tri))
                uv_faces.append(tuple(tid(*q) for q in tri))
    return vertices, np.asarray(faces), uv, np.asarray(uv_faces), vid


def _model_arrays(seed: int) -> dict:
    rng = np.random.default_rng(seed)
    vertices, faces, uv, uv_faces, vid = _sphere()
    v = len(vertices)
    ring_of = np.r_[-1, np.repeat(np.arange(RINGS), COLUMNS)]
    col_of = np.r_[0, np.tile(np.arange(COLUMNS), RINGS)]
    front = np.cos(2 * np.pi * col_of / COLUMNS) > 0.45  # within ~60 degrees of the front meridian
    # Joints: root (neck base ring), neck (ring above), jaw (ring 7 sides), left eye (+x), right eye (-x).
    groups = [[vid(RINGS - 1, j) for j in range(COLUMNS)], [vid(RINGS - 2, j) for j in range(COLUMNS)],
              [vid(MOUTH_RING, COLUMNS // 4), vid(MOUTH_RING, 3 * COLUMNS // 4)], [vid(4, 1), vid(4, 2)],
              [vid(4, COLUMNS - 1), vid(4, COLUMNS - 2)]]
    regressor = np.zeros((5, v))
    for j, group in enumerate(groups):
        regressor[j, group] = 1.0 / len(group)
    weights = np.zeros((v, 5))
    weights[:, 1] = 1.0  # the head follows the neck joint
    jaw = (ring_of > MOUTH_RING) & (ring_of < RINGS - 2) & front
    weights[jaw] = [0, 0, 1, 0, 0]
    weights[(ring_of == RINGS - 2)] = [0.5, 0.5, 0, 0, 0]
    weights[(ring_of == RINGS - 1)] = [1, 0, 0, 0, 0]
    weights[groups[3]] = [0, 0, 0, 1, 0]
    weights[groups[4]] = [0, 0, 0, 0, 1]
    lips = [vid(k, j) for k in (MOUTH_RING - 1, MOUTH_RING, MOUTH_RING + 1, MOUTH_RING + 2) for j in range(-2, 3)]
    masks = {
        "lips": lips, "left_eyeball": groups[3], "right_eyeball": groups[4], "nose": [vid(5, 0)],
        "face": [vid(k, j) for k in range(2, RINGS - 2) for j in range(-3, 4)],
        "forehead": [vid(1, j) for j in range(-3, 4)], "eye_region": [vid(4, j) for j in range(-3, 4)],
        "left_eye_region": [vid(4, 3)], "right_eye_region": [vid(4, COLUMNS - 3)],
        "left_ear": [vid(6, COLUMNS // 4)], "right_ear": [vid(6, 3 * COLUMNS // 4)],
        "neck": groups[1], "boundary": groups[0], "scalp": [0] + [vid(k, COLUMNS // 2) for k in range(6)],
    }
    return {
        "v_template": vertices, "f": faces.astype(np.uint32), "uv": uv, "uv_faces": uv_faces,
        "shapedirs": rng.normal(scale=0.01, size=(v, 3, NUM_SHAPE + NUM_EXPRESSION)),
        "posedirs": rng.normal(scale=0.002, size=(v, 3, 36)),
        "J_regressor": regressor, "weights": weights,
        "kintree_table": np.array([[4294967295, 0, 1, 1, 1], [0, 1, 2, 3, 4]], dtype=np.int64),
        "masks": {k: np.unique(np.asarray(x, dtype=np.int64)) for k, x in masks.items()},
        "jaw_vertices": np.flatnonzero(jaw), "mouth_loop_size": 6,
    }


def write_synthetic_flame(folder: str | Path, seed: int = 0, overrides: dict | None = None) -> dict:
    """Write the synthetic FLAME files into `folder`; returns their paths and the source arrays (metres).

    `overrides` replaces entries of the model pickle (e.g. a wrongly shaped `posedirs`) for error tests.
    """
    import scipy.sparse

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    a = _model_arrays(seed)
    with fake_chumpy() as Ch:
        model = {
            "v_template": a["v_template"], "f": a["f"], "shapedirs": Ch(a["shapedirs"]),
            "posedirs": Ch(a["posedirs"]), "weights": Ch(a["weights"]),
            "J_regressor": scipy.sparse.csc_matrix(a["J_regressor"]), "kintree_table": a["kintree_table"],
            "J": a["J_regressor"] @ a["v_template"], "bs_style": "lbs", "bs_type": "lrotmin",
        }
        model.update(overrides or {})
        paths = {"model": folder / "generic_model.pkl"}
        paths["model"].write_bytes(pickle.dumps(model, protocol=2))
    paths["masks"] = folder / "FLAME_masks.pkl"
    paths["masks"].write_bytes(pickle.dumps(a["masks"], protocol=2))

    # OBJ with shuffled faces and rotated corners (the converter must match them to the model's faces).
    rng = np.random.default_rng(seed + 1)
    order, shift = rng.permutation(len(a["f"])), rng.integers(0, 3, len(a["f"]))
    lines = [f"v {x:.6f} {y:.6f} {z:.6f}" for x, y, z in a["v_template"]]
    lines += [f"vt {u:.6f} {v:.6f}" for u, v in a["uv"]]
    for i in order:
        corners = np.roll(np.arange(3), -shift[i])
        lines.append("f " + " ".join(f"{a['f'][i, k] + 1}/{a['uv_faces'][i, k] + 1}" for k in corners))
    paths["uv"] = folder / "head_template_mesh.obj"
    paths["uv"].write_text("\n".join(lines) + "\n")

    num_landmarks = 10
    faces = rng.choice(len(a["f"]), num_landmarks, replace=False)
    bary = rng.dirichlet(np.ones(3), num_landmarks)
    paths["landmarks"] = folder / "mediapipe_landmark_embedding.npz"
    np.savez(paths["landmarks"], lmk_face_idx=faces.astype(np.int64), lmk_b_coords=bary,
             landmark_indices=rng.choice(478, num_landmarks, replace=False))
    deca = {"full_lmk_faces_idx": faces[None], "full_lmk_bary_coords": bary[None],
            "static_lmk_faces_idx": faces, "dynamic_lmk_faces_idx": torch.zeros(79, 17, dtype=torch.long)}
    paths["deca_landmarks"] = folder / "landmark_embedding.npy"
    np.save(paths["deca_landmarks"], deca, allow_pickle=True)
    return {**paths, "arrays": a, "landmark_faces": faces, "landmark_bary": bary}


def random_flame(
    num_vertices: int = 5023,
    num_faces: int = 9976,
    num_shape: int = 300,
    num_expression: int = 100,
    num_landmarks: int = 105,
    num_uv: int = 5118,
    seed: int = 0,
) -> FLAME:
    """A `FLAME` with random but valid buffers of the given sizes (defaults: FLAME 2020's real sizes)."""
    g = torch.Generator().manual_seed(seed)
    model = FLAME(num_vertices=num_vertices, num_faces=num_faces, num_uv=num_uv, num_shape=num_shape,
                  num_expression=num_expression, num_landmarks=num_landmarks)
    angles = torch.rand(num_vertices, 2, generator=g) * torch.tensor([2 * math.pi, math.pi])
    sphere = torch.stack([angles[:, 1].sin() * angles[:, 0].sin(), angles[:, 1].cos(),
                          angles[:, 1].sin() * angles[:, 0].cos()], -1)
    weights = torch.rand(num_vertices, 5, generator=g)
    regressor = torch.rand(5, num_vertices, generator=g)
    regions = torch.randint(len(REGION_NAMES), (num_vertices,), generator=g)
    bary = torch.rand(num_landmarks, 3, generator=g) + 0.1
    state = {
        "template_vertices": 0.3 * sphere,
        "faces": torch.randint(num_vertices, (num_faces, 3), generator=g),
        "uv_coords": torch.rand(num_uv, 2, generator=g),
        "uv_faces": torch.randint(num_uv, (num_faces, 3), generator=g),
        "region_masks": regions[None] == torch.arange(len(REGION_NAMES))[:, None],
        "landmark_faces": torch.randint(num_faces, (num_landmarks,), generator=g),
        "landmark_barycentrics": bary / bary.sum(1, keepdim=True),
        "landmark_mediapipe_ids": torch.randperm(478, generator=g)[:num_landmarks],
        "shapedirs": 1e-3 * torch.randn(num_vertices, 3, num_shape, generator=g),
        "exprdirs": 1e-3 * torch.randn(num_vertices, 3, num_expression, generator=g),
        "posedirs": 1e-3 * torch.randn(num_vertices, 3, 36, generator=g),
        "J_regressor": regressor / regressor.sum(1, keepdim=True),
        "parents": torch.tensor([-1, 0, 1, 1, 1]),
        "lbs_weights": weights / weights.sum(1, keepdim=True),
    }
    model.load_state_dict(state)
    return model
