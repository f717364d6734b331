"""Build OpenHead's asset: MediaPipe's canonical face completed into a closed, mirror-symmetric full head.

Usage: `python -m fhavatar.tools.build_open_head [--out PATH] [--contact-sheet PNG]`. The input is the copy of
MediaPipe's `canonical_face_model.obj` in `fhavatar/head/assets` (Apache-2.0, see the NOTICE there), so the
build needs nothing outside the repository and is deterministic (the same bytes on the same stack).

Input facts. That OBJ is the Apple-ModelIO export of an earlier MediaPipe revision: its vertices are *not* in
landmark order, and the face is turned by ~13° and ~9% smaller than the current canonical model (nose tip
z ≈ 7.5 cm). In `fhavatar.head.canonical_face`, `OBJ_VERTEX_OF_LANDMARK` restores landmark order (checked
against the landmark numbers printed on MediaPipe's UV visualisation and against the mirror pairs of the UV
layout); the `ALIGN_*` similarity, a least-squares fit to the current canonical model, restores its frame and
metric size (residual 2 mm RMS).

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

The input face (step 1) comes from `fhavatar.head.canonical_face`, which runtime code shares; steps 2-4
(cranium, stitching, eye covers, mouth cavity) live in `_open_head_geometry`, step 5 in `_open_head_rig`; this
module assembles them, checks the result and writes the asset.
"""

from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from safetensors.numpy import save as save_safetensors

from ..head.base import HEAD_UNITS_PER_METRE, REGION_NAMES
from ..head.canonical_face import (
    CHIN,
    DEFAULT_OBJ,
    FOREHEAD_TOP,
    INNER_LIP_CONTOUR,
    LEFT_EYE_CONTOUR,
    LEFT_EYE_OUTER,
    RIGHT_EYE_CONTOUR,
    UPPER_LIP,
    canonical_face,
)
from ..head.open_head import (
    NUM_FACE_VERTICES,
    NUM_MEDIAPIPE_LANDMARKS,
    OPEN_HEAD_FILE_FORMAT,
    OPEN_HEAD_JOINT_NAMES,
    OPEN_HEAD_PARENTS,
    PROPAGATION_WIDTH,
    OpenHead,
    default_asset_path,
)
from ..rendering import Camera, Gaussians, render_gaussians
from ._open_head_geometry import (
    GRID_COLUMNS,
    HOLE_MARGIN,
    _add_eye_covers,
    _add_mouth_cavity,
    _boundary_loops,
    _cranium,
    _half_path,
    _harmonic,
    _inside,
    _Mesh,
    _stitch,
    _unique_edges,
)
from ._open_head_rig import _expression_propagation, _joints_and_skinning, _landmarks, _region_masks

__all__ = ["build_open_head", "mesh_report", "save_asset"]

logger = logging.getLogger(__name__)

#: Head-space coordinates below this magnitude are round-off of an exact zero (the asset's coordinates are >= 1e-6).
ROUND_OFF_ZERO = 1e-12


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


def _finish(mesh: _Mesh, rig: dict) -> tuple[dict[str, np.ndarray], dict]:
    """Atlas packing, regions, joints, skinning, landmarks, expression propagation; checks; head-space tensors."""
    v, mirror = np.concatenate(mesh.vertices), np.concatenate(mesh.mirror)
    faces, corner_uv = np.array(mesh.triangles, np.int64), np.stack(mesh.corner_uv)
    n = len(v)
    key = np.c_[faces.reshape(-1), np.round(corner_uv.reshape(-1, 2) * 1e7).astype(np.int64)]
    _, first, inverse = np.unique(key, axis=0, return_index=True, return_inverse=True)
    uv_coords, uv_faces = corner_uv.reshape(-1, 2)[first], inverse.reshape(-1, 3)
    masks = _region_masks(v, rig)
    edges = _unique_edges(faces)
    joints, weights = _joints_and_skinning(v, edges, rig)
    lm_faces, lm_bary = _landmarks(v, faces, rig)
    sources, kept_w = _expression_propagation(edges, n, mirror)
    # Head space: the origin at the middle of the crown-to-chin and nose-to-back extent.
    centre_cm = np.array([0.0, (v[:, 1].max() + v[CHIN, 1]) / 2, (v[:, 2].max() + v[:, 2].min()) / 2])
    scale = HEAD_UNITS_PER_METRE / 100
    report = mesh_report(v, faces)
    mirror_error = np.abs(v[mirror] * [-1, 1, 1] - v).max()
    if report["edges_not_shared_by_two"] or report["repeated_directed_edges"] or report["signed_volume"] <= 0:
        raise RuntimeError(f"OpenHead build produced a broken mesh: {report}.")
    if mirror_error > 1e-6 or (mirror[mirror] != np.arange(n)).any():
        raise RuntimeError(f"OpenHead build lost its mirror symmetry (max error {mirror_error} cm).")
    tensors = {
        "template_vertices": _head_space(v, centre_cm, scale),
        "faces": faces,
        "uv_coords": uv_coords.astype(np.float32),
        "uv_faces": uv_faces.astype(np.int64),
        "region_masks": np.stack([masks[name] for name in REGION_NAMES]),
        "landmark_faces": lm_faces,
        "landmark_barycentrics": lm_bary.astype(np.float32),
        "landmark_mediapipe_ids": np.arange(NUM_MEDIAPIPE_LANDMARKS, dtype=np.int64),
        "mirror_vertex": mirror,
        "parents": np.array(OPEN_HEAD_PARENTS, np.int64),
        "joint_locations": _head_space(joints, centre_cm, scale),
        "skinning_weights": weights.astype(np.float32),
        "expression_sources": sources.astype(np.int64),
        "expression_weights": kept_w.astype(np.float32),
    }
    config = {"num_vertices": n, "num_faces": len(faces), "num_uv": len(uv_coords),
              "num_landmarks": NUM_MEDIAPIPE_LANDMARKS, "num_joints": len(OPEN_HEAD_JOINT_NAMES),
              "propagation_width": PROPAGATION_WIDTH, "head_units_per_metre": HEAD_UNITS_PER_METRE,
              "head_centre_cm": [round(float(c), 6) for c in centre_cm]}
    return tensors, config


def _head_space(points_cm: np.ndarray, centre_cm: np.ndarray, scale: float) -> np.ndarray:  # [N, 3] -> [N, 3] float32
    """Points in head space as float32. Coordinates that are zero in exact arithmetic (the midline's x) come out as
    round-off of ~1e-19, which float32 keeps and which differs between CPUs and BLAS builds: they are snapped to 0."""
    points = (points_cm - centre_cm) * scale
    points[np.abs(points) < ROUND_OFF_ZERO] = 0.0
    return points.astype(np.float32)


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
    metadata = {"format": OPEN_HEAD_FILE_FORMAT, "config": json.dumps(config, sort_keys=True)}
    data = save_safetensors({k: np.ascontiguousarray(tensors[k]) for k in sorted(tensors)}, metadata=metadata)
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
        logger.info("contact sheet: %s", render_contact_sheet(OpenHead.from_file(out), args.contact_sheet))


if __name__ == "__main__":
    main()
