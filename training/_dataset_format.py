"""The on-disk format of FHAvatar training datasets: written by `preprocess.py` and `make_synthetic.py`, read by
`dataset.py`. One module owns every file name and key so that the writers and the reader cannot drift apart.

A dataset root holds::

    dataset.json                 {"format": "fhavatar-dataset", "version": 1, "head_model": "open_head",
                                  "resolution": R, "num_clips": n, "num_frames": N, "has_prior_views": bool,
                                  "num_prior_views": P}
    manifest.jsonl               one line per clip: {"clip", "dir", "num_frames", "source", "skipped": false}
    skipped.jsonl                clips left out (no face, unreadable video) with the reason
    <dir>/frames/000000.png      RGB, R x R aligned crops
    <dir>/masks/000000.png       L, foreground
    <dir>/tracking.safetensors   cam2world [T, 4, 4], intrinsics [T, 3, 3] (normalised), has_face [T] uint8,
                                 params.<field> [T, ...] (the fields of `OpenHeadParams`)
    <dir>/prior/000000_0.png     optional prior novel views, P per frame (P = 2)
    <dir>/prior_masks/000000_0.png  their alpha (an addition to the issue-9 contract; optional for readers)
    <dir>/prior_cameras.safetensors  cam2world [T, P, 4, 4], intrinsics [T, P, 3, 3]
    <dir>/done                   written last: the clip is complete (holds its manifest entry as JSON)

`num_prior_views` in `dataset.json` is also an addition (0 without prior views).
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Iterable, Sequence
from dataclasses import fields
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file
from torch import Tensor

from fhavatar.head.open_head import OpenHeadParams
from fhavatar.io import checked_file, replaced_when_done
from fhavatar.rotations import axis_rotation

__all__ = [
    "DATASET_FILE", "DATASET_FORMAT", "DATASET_VERSION", "DONE_FILE", "FRAMES_DIR", "HEAD_MODEL_KEY", "MANIFEST_FILE",
    "MASKS_DIR", "PARAM_FIELDS", "PRIOR_CAMERAS_FILE", "PRIOR_DIR", "PRIOR_MASKS_DIR", "SKIPPED_FILE", "TRACKING_FILE",
    "frame_file", "load_mask", "load_rgb", "make_dataset_info", "orbit_cameras", "prior_file", "read_dataset_info",
    "read_jsonl", "read_prior_cameras", "read_tracking", "save_mask", "save_rgb", "write_json_atomic",
    "write_jsonl_atomic", "write_prior_cameras", "write_tracking",
]

DATASET_FORMAT = "fhavatar-dataset"
DATASET_VERSION = 1
#: `dataset.json` "head_model" of OpenHead datasets (the trainer checks it against its config).
HEAD_MODEL_KEY = "open_head"
DATASET_FILE, MANIFEST_FILE, SKIPPED_FILE = "dataset.json", "manifest.jsonl", "skipped.jsonl"
FRAMES_DIR, MASKS_DIR, PRIOR_DIR, PRIOR_MASKS_DIR = "frames", "masks", "prior", "prior_masks"
TRACKING_FILE, PRIOR_CAMERAS_FILE, DONE_FILE = "tracking.safetensors", "prior_cameras.safetensors", "done"
#: `OpenHeadParams` fields, stored as `params.<field>` in `tracking.safetensors`.
PARAM_FIELDS = tuple(f.name for f in fields(OpenHeadParams))
_TRACKING_FORMAT = "fhavatar-tracking/1"
_PRIOR_CAMERAS_FORMAT = "fhavatar-prior-cameras/1"
#: PNG compression: level 3 writes several times faster than PIL's default 6 for a few % more bytes.
_PNG_COMPRESS_LEVEL = 3
#: Added to the error for a missing file of a clip.
_INCOMPLETE_CLIP = "The clip is incomplete (re-run preprocessing)."


def frame_file(t: int) -> str:
    """File name of frame `t` (in `frames/` and `masks/`)."""
    return f"{t:06d}.png"


def prior_file(t: int, view: int) -> str:
    """File name of prior view `view` of frame `t` (in `prior/` and `prior_masks/`)."""
    return f"{t:06d}_{view}.png"


# ---------------------------------------------------------------------------------------------- images
def _to_hwc_uint8(image, name: str) -> np.ndarray:
    """`[H, W, 3]` uint8 from an HWC uint8 array or a `[3, H, W]` float tensor in [0, 1]."""
    if isinstance(image, Tensor):
        if image.dim() != 3 or image.shape[0] != 3:
            raise ValueError(f"`{name}` tensors must be [3, H, W] in [0, 1], got {list(image.shape)}.")
        image = (image.detach().float().clamp(0, 1).permute(1, 2, 0).cpu().numpy() * 255.0 + 0.5).astype(np.uint8)
    image = np.asarray(image)
    if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
        raise ValueError(f"`{name}` must be an [H, W, 3] uint8 array, got {image.dtype} {list(image.shape)}.")
    return image


def _mask_to_uint8(mask, name: str) -> np.ndarray:
    """`[H, W]` uint8 from a `[H, W]` / `[1, H, W]` float mask in [0, 1] (array or tensor) or a uint8 array."""
    if isinstance(mask, Tensor):
        mask = mask.detach().float().cpu().numpy()
    mask = np.asarray(mask)
    if mask.ndim == 3 and mask.shape[0] == 1:
        mask = mask[0]
    if mask.ndim != 2:
        raise ValueError(f"`{name}` must be [H, W] or [1, H, W], got {list(mask.shape)}.")
    if mask.dtype == np.uint8:
        return mask
    return (np.clip(mask, 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)


def save_rgb(path: str | os.PathLike, image) -> None:
    """Write an RGB PNG from `[H, W, 3]` uint8 or a `[3, H, W]` float tensor in [0, 1]."""
    Image.fromarray(_to_hwc_uint8(image, "image")).save(path, compress_level=_PNG_COMPRESS_LEVEL)


def save_mask(path: str | os.PathLike, mask) -> None:
    """Write a mask as an 8-bit grey PNG from `[H, W]` / `[1, H, W]` floats in [0, 1] or uint8."""
    Image.fromarray(_mask_to_uint8(mask, "mask"), mode="L").save(path, compress_level=_PNG_COMPRESS_LEVEL)


def _open(path: Path, what: str) -> Image.Image:
    image = Image.open(checked_file(path, what, _INCOMPLETE_CLIP))
    image.load()
    return image


def load_rgb(path: str | os.PathLike, resolution: int | None = None) -> Tensor:  # -> [3, R, R] float in [0, 1]
    """Read an RGB PNG as a `[3, H, W]` float tensor, resized (Lanczos) to `resolution` squared if given."""
    image = _open(Path(path), "frame").convert("RGB")
    if resolution is not None and image.size != (resolution, resolution):
        image = image.resize((resolution, resolution), Image.Resampling.LANCZOS, reducing_gap=3.0)
    # Converted in numpy: small torch ops pay for waking the intra-op thread pool, which dominates at R = 128.
    return torch.from_numpy(np.ascontiguousarray(np.asarray(image, dtype=np.float32).transpose(2, 0, 1) / 255.0))


def load_mask(path: str | os.PathLike, resolution: int | None = None) -> Tensor:  # -> [1, R, R] float in [0, 1]
    """Read a grey PNG mask as a `[1, H, W]` float tensor, resized (bilinear) to `resolution` squared if given."""
    image = _open(Path(path), "mask").convert("L")
    if resolution is not None and image.size != (resolution, resolution):
        image = image.resize((resolution, resolution), Image.Resampling.BILINEAR, reducing_gap=3.0)
    return torch.from_numpy(np.asarray(image, dtype=np.float32)[None] / 255.0)


# ---------------------------------------------------------------------------------------------- tensors
def _params_dict(params) -> dict[str, Tensor]:
    if isinstance(params, OpenHeadParams):
        return {name: getattr(params, name) for name in PARAM_FIELDS}
    if isinstance(params, dict) and set(params) == set(PARAM_FIELDS):
        return dict(params)
    raise TypeError(f"`params` must be OpenHeadParams or a dict with keys {list(PARAM_FIELDS)}, got "
                    f"{sorted(params) if isinstance(params, dict) else type(params).__name__}.")


def write_tracking(
    path: str | os.PathLike,
    cam2world: Tensor,  # [T, 4, 4]
    intrinsics: Tensor,  # [T, 3, 3], normalised
    has_face: Tensor,  # [T], bool or uint8
    params,  # OpenHeadParams of batch T, or a dict of its fields
) -> None:
    """Write a clip's `tracking.safetensors` (cameras, face flags and head-model parameters, float32)."""
    params = _params_dict(params)
    num = cam2world.shape[0]
    shapes = {"cam2world": (cam2world, (num, 4, 4)), "intrinsics": (intrinsics, (num, 3, 3)), "has_face": (has_face, (num,))}
    for name, (value, shape) in shapes.items():
        if tuple(value.shape) != shape:
            raise ValueError(f"`{name}` must have shape {list(shape)} (T={num} from `cam2world`), got {list(value.shape)}.")
    for name, value in params.items():
        if value.shape[0] != num:
            raise ValueError(f"`params.{name}` must have {num} rows (one per frame), got shape {list(value.shape)}.")
    tensors = {"cam2world": cam2world.float(), "intrinsics": intrinsics.float(), "has_face": has_face.to(torch.uint8)}
    tensors.update({f"params.{name}": value.float() for name, value in params.items()})
    save_file({k: v.detach().cpu().contiguous() for k, v in tensors.items()}, str(path),
              metadata={"format": _TRACKING_FORMAT, "head_model": HEAD_MODEL_KEY})


def _read_rows(path: Path, what: str, fmt: str, frames: Sequence[int] | None) -> dict[str, Tensor]:
    """The tensors of a safetensors file, only the rows `frames` (all when None), reading nothing else."""
    checked_file(path, what, _INCOMPLETE_CLIP)
    try:
        with safe_open(str(path), framework="pt") as f:
            if (f.metadata() or {}).get("format") != fmt:
                raise ValueError(f"{str(path)!r} is not a {what} (format {(f.metadata() or {}).get('format')!r}, "
                                 f"expected {fmt!r}).")
            out = {}
            for key in f.keys():
                if frames is None:
                    out[key] = f.get_tensor(key)
                else:
                    rows = f.get_slice(key)
                    length = rows.get_shape()[0]
                    for t in frames:
                        if not 0 <= t < length:
                            raise IndexError(f"frame {t} is out of range for {str(path)!r} ({length} frames).")
                    out[key] = torch.stack([rows[t : t + 1][0] for t in frames])
    except SafetensorError as err:
        raise ValueError(f"{str(path)!r} is not a readable {what}: {err}") from err
    return out


def read_tracking(path: str | os.PathLike, frames: Sequence[int] | None = None) -> dict:
    """Read `tracking.safetensors`: `{"cam2world": [T, 4, 4], "intrinsics": [T, 3, 3], "has_face": [T] uint8,
    "params": {field: [T, ...]}}`, with T = `len(frames)` when only the rows `frames` are asked for."""
    path = Path(path)
    raw = _read_rows(path, "tracking file", _TRACKING_FORMAT, frames)
    missing = [k for k in ("cam2world", "intrinsics", "has_face", *(f"params.{n}" for n in PARAM_FIELDS)) if k not in raw]
    if missing:
        raise ValueError(f"{str(path)!r} is incomplete: missing {missing}.")
    return {"cam2world": raw["cam2world"], "intrinsics": raw["intrinsics"], "has_face": raw["has_face"],
            "params": {name: raw[f"params.{name}"] for name in PARAM_FIELDS}}


def write_prior_cameras(path: str | os.PathLike, cam2world: Tensor, intrinsics: Tensor) -> None:  # [T, P, 4, 4], [T, P, 3, 3]
    """Write a clip's `prior_cameras.safetensors`."""
    if cam2world.dim() != 4 or cam2world.shape[2:] != (4, 4):
        raise ValueError(f"`cam2world` must have shape [T, P, 4, 4], got {list(cam2world.shape)}.")
    if tuple(intrinsics.shape) != (*cam2world.shape[:2], 3, 3):
        raise ValueError(f"`intrinsics` must have shape {[*cam2world.shape[:2], 3, 3]}, got {list(intrinsics.shape)}.")
    save_file({"cam2world": cam2world.detach().float().cpu().contiguous(),
               "intrinsics": intrinsics.detach().float().cpu().contiguous()}, str(path),
              metadata={"format": _PRIOR_CAMERAS_FORMAT})


def read_prior_cameras(path: str | os.PathLike, frames: Sequence[int] | None = None) -> dict[str, Tensor]:
    """Read `prior_cameras.safetensors`: `{"cam2world": [T, P, 4, 4], "intrinsics": [T, P, 3, 3]}`."""
    raw = _read_rows(Path(path), "prior-cameras file", _PRIOR_CAMERAS_FORMAT, frames)
    if set(raw) != {"cam2world", "intrinsics"}:
        raise ValueError(f"{str(path)!r} must hold 'cam2world' and 'intrinsics', got {sorted(raw)}.")
    return raw


# ---------------------------------------------------------------------------------------------- cameras
def orbit_cameras(
    cam2world: Tensor,  # [4, 4] or [N, 4, 4]
    yaw_deg: Tensor,  # [N]
    pitch_deg: Tensor,  # [N]
) -> Tensor:  # [N, 4, 4]
    """`cam2world` moved around the head: first up by `pitch_deg` (about the world x axis through the origin),
    then by `yaw_deg` about the world y axis (positive yaw moves a frontal camera toward +x, as in
    `Camera.orbit`). The camera keeps its distance and keeps looking at the same point of the rotated head,
    so the framing of the crop is kept (the novel views of the prior, paper §3.5)."""
    yaw = torch.as_tensor(yaw_deg, dtype=torch.float64).reshape(-1) * (math.pi / 180.0)
    pitch = torch.as_tensor(pitch_deg, dtype=torch.float64).reshape(-1) * (math.pi / 180.0)
    # R_x(-pitch) takes (0, 0, r) to (0, r sin(pitch), r cos(pitch)): up (+y) for positive pitch.
    rotation = torch.eye(4, dtype=torch.float64).repeat(len(yaw), 1, 1)
    rotation[:, :3, :3] = axis_rotation(1, yaw) @ axis_rotation(0, -pitch)
    return (rotation @ cam2world.to(torch.float64)).to(cam2world.dtype)


# ---------------------------------------------------------------------------------------------- json
def _write_text_atomic(path: str | os.PathLike, text: str) -> None:
    """Write through a temporary file and a rename, so readers never see a half-written file."""
    path = Path(path)
    with replaced_when_done(path, path.with_name(f".{path.name}.tmp{os.getpid()}")) as tmp:
        tmp.write_text(text)


def write_json_atomic(path: str | os.PathLike, obj) -> None:
    """Write JSON atomically (`_write_text_atomic`)."""
    _write_text_atomic(path, json.dumps(obj, indent=2) + "\n")


def write_jsonl_atomic(path: str | os.PathLike, rows: Iterable[dict]) -> None:
    """Write one JSON object per line, atomically."""
    _write_text_atomic(path, "".join(json.dumps(row) + "\n" for row in rows))


def read_jsonl(path: str | os.PathLike) -> list[dict]:
    """Rows of a JSON-lines file (blank lines ignored); `ValueError` naming the file and line when malformed."""
    path = Path(path)
    rows = []
    for number, line in enumerate(path.read_text().splitlines(), 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as err:
            raise ValueError(f"{str(path)!r} line {number} is not valid JSON: {err}.") from err
        if not isinstance(row, dict):
            raise ValueError(f"{str(path)!r} line {number} must be a JSON object, got {type(row).__name__}.")
        rows.append(row)
    return rows


def make_dataset_info(resolution: int, num_clips: int, num_frames: int, num_prior_views: int) -> dict:
    """The `dataset.json` object."""
    return {"format": DATASET_FORMAT, "version": DATASET_VERSION, "head_model": HEAD_MODEL_KEY,
            "resolution": int(resolution), "num_clips": int(num_clips), "num_frames": int(num_frames),
            "has_prior_views": num_prior_views > 0, "num_prior_views": int(num_prior_views)}


def read_dataset_info(root: str | os.PathLike) -> dict:
    """Read and check `ROOT/dataset.json` (format, version, resolution); errors name the file."""
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"`root`: no dataset folder at {str(root)!r}.")
    path = checked_file(root / DATASET_FILE, "`root`: the dataset file",
                        f"Is {str(root)!r} a dataset? Build one with training/preprocess.py (then `preprocess.py merge "
                        "ROOT` after sharded runs) or training/make_synthetic.py.")
    try:
        info = json.loads(path.read_text())
    except json.JSONDecodeError as err:
        raise ValueError(f"{str(path)!r} is not valid JSON: {err}.") from err
    if not isinstance(info, dict) or info.get("format") != DATASET_FORMAT:
        fmt = info.get("format") if isinstance(info, dict) else type(info).__name__
        raise ValueError(f"{str(path)!r} must have \"format\": {DATASET_FORMAT!r}, got {fmt!r}.")
    if info.get("version") != DATASET_VERSION:
        raise ValueError(f"{str(path)!r} has version {info.get('version')!r}; this code reads version {DATASET_VERSION}.")
    resolution = info.get("resolution")
    if not isinstance(resolution, int) or resolution < 1:
        raise ValueError(f"{str(path)!r}: \"resolution\" must be a positive int, got {resolution!r}.")
    info.setdefault("num_prior_views", 2 if info.get("has_prior_views") else 0)
    return info
