"""The re-animatable avatar file: `Avatar.save`'s safetensors plus the photo's `FaceTrack` (`source_track`), so an
avatar kept from one session is animated later exactly as the one just built (driving video or built-in motion)
without the photo being tracked again.

`save_avatar_file(avatar, path)` writes `Avatar.save`'s file and adds, under `source_track.*`, the crop (uint8), its
matte (uint8, 1/255 steps), the landmarks, the camera and the head pose, with the crop transform and fit errors as
JSON metadata (`SOURCE_TRACK_FORMAT`). `Avatar.load` reads the same file (it ignores the extra tensors);
`load_avatar_file(path, head_model)` returns the avatar with its `source_track`. Anything else (another safetensors
file, a PLY, a photo, a file that is not safetensors at all) is refused with a `ValueError` that says what the file
is not, in words a user can act on.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import save_file

from .avatar import AVATAR_FILE_FORMAT, Avatar
from .io import read_safetensors
from .rendering.cameras import Camera
from .tracking.align import CropTransform
from .tracking.face_track import FaceTrack

__all__ = ["AVATAR_FILE_SUFFIX", "SOURCE_TRACK_FORMAT", "load_avatar_file", "save_avatar_file"]

#: The metadata key and value that mark a file's source track.
SOURCE_TRACK_FORMAT = "fhavatar-source-track/1"
#: The file name suffix of avatar files.
AVATAR_FILE_SUFFIX = ".safetensors"
_PREFIX = "source_track."
_SHAPES = {"image": (None, None, 3), "landmarks": (None, 3), "cam2world": (1, 4, 4), "intrinsics": (1, 3, 3),
           "head_rotation": (3, 3), "head_translation": (3,)}


def save_avatar_file(avatar: Avatar, path: str | Path) -> Path:
    """Write `avatar` (with its `source_track`) as one re-animatable safetensors file; returns the path."""
    track = getattr(avatar, "source_track", None)
    if not isinstance(avatar, Avatar) or not isinstance(track, FaceTrack):
        raise ValueError("`avatar` must be an Avatar with its `source_track` (from `reconstruct` or `load_avatar_file`).")
    path = avatar.save(path)
    tensors, metadata = read_safetensors(path, "avatar file")
    tensors.update({
        _PREFIX + "image": torch.from_numpy(np.ascontiguousarray(track.image, dtype=np.uint8)),
        _PREFIX + "landmarks": torch.from_numpy(np.asarray(track.landmarks, dtype=np.float32)),
        _PREFIX + "cam2world": track.camera.cam2world.detach().cpu().float().contiguous(),
        _PREFIX + "intrinsics": track.camera.intrinsics.detach().cpu().float().contiguous(),
        _PREFIX + "head_rotation": torch.from_numpy(np.asarray(track.head_rotation, dtype=np.float64)),
        _PREFIX + "head_translation": torch.from_numpy(np.asarray(track.head_translation, dtype=np.float64)),
    })
    if track.mask is not None:
        tensors[_PREFIX + "mask"] = torch.from_numpy(np.round(np.clip(track.mask, 0, 1) * 255).astype(np.uint8))
    crop = track.crop
    metadata["source_track"] = json.dumps({
        "format": SOURCE_TRACK_FORMAT, "centre": [float(c) for c in crop.centre], "side": float(crop.side),
        "roll": float(crop.roll), "image_size": [int(s) for s in crop.image_size], "output_size": int(crop.output_size),
        "reprojection_error": float(track.reprojection_error), "rigid_error": float(track.rigid_error),
        "has_face": bool(track.has_face),
    })
    save_file(tensors, str(path), metadata=metadata)
    return path


def load_avatar_file(path: str | Path, head_model) -> Avatar:
    """The avatar of a `save_avatar_file` file, bound to `head_model`, with its `source_track`.

    Raises `ValueError` for a file that is not an avatar file (its message starts with the file's name and says what
    it is instead), and `FileNotFoundError` when there is no file.
    """
    path = Path(path)
    name = repr(path.name)
    try:
        tensors, metadata = read_safetensors(path, "avatar file")
    except ValueError as err:
        raise ValueError(f"{name} is not an FHAvatar avatar file: it is not a safetensors file.") from err
    if metadata.get("format") != AVATAR_FILE_FORMAT:
        raise ValueError(f"{name} is not an FHAvatar avatar file: it is a safetensors file of other data (format "
                         f"{metadata.get('format')!r}).")
    try:
        track_info = json.loads(metadata.get("source_track", "null"))
    except ValueError:
        track_info = None
    if not isinstance(track_info, dict) or track_info.get("format") != SOURCE_TRACK_FORMAT:
        raise ValueError(f"{name} holds an avatar without the photo's track it was made from (as Avatar.save writes it), "
                         "so it cannot be animated; save_avatar_file writes avatar files that can be.")
    try:
        avatar = Avatar.load(path, head_model)
        avatar.source_track = _track(tensors, track_info, avatar)
    except (ValueError, TypeError, KeyError) as err:
        raise ValueError(f"{name} is a damaged FHAvatar avatar file ({err}).") from err
    return avatar


def _track(tensors: dict, info: dict, avatar: Avatar) -> FaceTrack:
    values = {}
    for key, shape in _SHAPES.items():
        value = tensors.get(_PREFIX + key)
        if value is None:
            raise KeyError(f"missing {_PREFIX + key}")
        if value.dim() != len(shape) or any(s is not None and s != v for s, v in zip(shape, value.shape)):
            raise ValueError(f"{_PREFIX + key} has shape {list(value.shape)}")
        if value.is_floating_point() and not bool(torch.isfinite(value).all()):
            raise ValueError(f"{_PREFIX + key} holds NaN/inf")
        values[key] = value
    if values["image"].dtype != torch.uint8:
        raise ValueError(f"{_PREFIX}image must be uint8, got {values['image'].dtype}")
    numbers = [*info["centre"], info["side"], info["roll"], info["reprojection_error"], info["rigid_error"]]
    if not all(isinstance(v, (int, float)) and math.isfinite(v) for v in numbers):
        raise ValueError("the crop or fit figures are not finite numbers")
    crop = CropTransform.from_params(tuple(info["centre"]), float(info["side"]), float(info["roll"]),
                                     tuple(int(s) for s in info["image_size"]), int(info["output_size"]))
    mask = tensors.get(_PREFIX + "mask")
    if mask is not None:
        if mask.dtype != torch.uint8 or tuple(mask.shape) != tuple(values["image"].shape[:2]):
            raise ValueError(f"{_PREFIX}mask must be uint8 of the crop's size, got {mask.dtype} {list(mask.shape)}")
        mask = mask.numpy().astype(np.float32) / 255.0
    device = avatar.device
    camera = Camera(cam2world=values["cam2world"].to(device), intrinsics=values["intrinsics"].to(device))
    return FaceTrack(image=values["image"].numpy(), mask=mask, crop=crop, landmarks=values["landmarks"].numpy(),
                     camera=camera, params=avatar.source_params, head_rotation=values["head_rotation"].numpy(),
                     head_translation=values["head_translation"].numpy(),
                     reprojection_error=float(info["reprojection_error"]), rigid_error=float(info["rigid_error"]),
                     has_face=bool(info.get("has_face", True)))
