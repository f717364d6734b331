"""One clip of `training/preprocess.py`: a talking-head video -> its clip folder of the FHAvatar training dataset.

The tracker (`fhavatar.tracking.track_video`, Face Mesh + OpenHead fit, temporally smoothed) gives each frame a
PanoHead-style 512² crop, its camera and OpenHead parameters; MediaPipe selfie segmentation gives the foreground
mask, and the background is replaced by white (`keep_background` keeps it). With a prior, a `PanoHeadPrior` inverts
every frame (`encode`) and renders `num_prior_views` novel views (`render`) from the frame's camera orbited around
the head, one to each side (paper §3.5: pseudo multi-view supervision).

A finished clip folder has a `done` file, written last; a clip without enough faces gets a `skipped.json` marker
instead (`clip_state` reads either back). `training/preprocess.py` drives many clips (workers, shards, resume).
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import shutil
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from fhavatar.head.open_head import OpenHead
from fhavatar.io import read_video, video_info
from fhavatar.rendering import Camera
from fhavatar.tracking import FaceLandmarker, track_video
from training._dataset_format import (
    DONE_FILE,
    FRAMES_DIR,
    MASKS_DIR,
    PARAM_FIELDS,
    PRIOR_CAMERAS_FILE,
    PRIOR_DIR,
    PRIOR_MASKS_DIR,
    TRACKING_FILE,
    frame_file,
    orbit_cameras,
    prior_file,
    save_mask,
    save_rgb,
    write_json_atomic,
    write_prior_cameras,
    write_tracking,
)

__all__ = ["SKIP_MARKER", "TRACK_SIZE", "PreprocessConfig", "clip_state", "load_prior", "preprocess_clip"]

logger = logging.getLogger(__name__)

#: Crops come out of the tracker at this size; datasets are stored at it or smaller.
TRACK_SIZE = 512
#: Marker of a clip that was looked at and left out (no face, unreadable video), holding the reason.
SKIP_MARKER = "skipped.json"


@dataclass(frozen=True)
class PreprocessConfig:
    """Settings of `preprocess_videos` (one per dataset root).

    Args:
        resolution (`int`, defaults to 512): side R of the stored frames (the 512² crops are resized; <= 512).
        max_frames (`int`, *optional*): keep at most this many frames per clip (after `frame_stride`).
        frame_stride (`int`, defaults to 1): keep every `frame_stride`-th frame.
        smoothing (`float`, defaults to 1.0): temporal smoothing of the tracker (frames of the strided clip).
        min_face_fraction (`float`, defaults to 0.5): clips where fewer frames show a face are skipped.
        keep_background (`bool`, defaults to False): keep the video's background instead of white.
        prior (`str`, *optional*): a `PanoHeadPrior.save_pretrained` folder: cache prior novel views.
        num_prior_views (`int`, defaults to 2): novel views per frame with `prior`.
        prior_yaw_offset (`(float, float)`, defaults to (45, 180)): |yaw| of the novel views from the frame's
            camera, degrees (view 0 toward +yaw, view 1 toward -yaw).
        prior_pitch_range (`(float, float)`, defaults to (-15, 15)): their pitch change, degrees.
        seed (`int`, defaults to 0): seed of the novel-view cameras (per clip and frame, so resumable).
    """

    resolution: int = TRACK_SIZE
    max_frames: int | None = None
    frame_stride: int = 1
    smoothing: float = 1.0
    min_face_fraction: float = 0.5
    keep_background: bool = False
    prior: str | None = None
    num_prior_views: int = 2
    prior_yaw_offset: tuple[float, float] = (45.0, 180.0)
    prior_pitch_range: tuple[float, float] = (-15.0, 15.0)
    seed: int = 0

    def __post_init__(self) -> None:
        def positive_int(name, value, lo=1, hi=None):
            if not isinstance(value, int) or isinstance(value, bool) or value < lo or (hi is not None and value > hi):
                raise ValueError(f"`{name}` must be an int in [{lo}, {hi if hi is not None else 'inf'}], got {value!r}.")

        positive_int("resolution", self.resolution, 16, TRACK_SIZE)
        if self.max_frames is not None:
            positive_int("max_frames", self.max_frames)
        positive_int("frame_stride", self.frame_stride)
        positive_int("num_prior_views", self.num_prior_views, 1)
        if not (isinstance(self.smoothing, (int, float)) and math.isfinite(self.smoothing) and self.smoothing >= 0):
            raise ValueError(f"`smoothing` must be a non-negative number of frames, got {self.smoothing!r}.")
        if not 0.0 < float(self.min_face_fraction) <= 1.0:
            raise ValueError(f"`min_face_fraction` must lie in (0, 1], got {self.min_face_fraction!r}.")
        if self.prior is not None and not Path(self.prior).is_dir():
            raise FileNotFoundError(f"`prior`: no PanoHeadPrior folder at {str(self.prior)!r}.")
        lo, hi = self.prior_yaw_offset
        if not 0.0 <= lo <= hi <= 180.0:
            raise ValueError(f"`prior_yaw_offset` must be (min, max) degrees in [0, 180], got {self.prior_yaw_offset!r}.")
        lo, hi = self.prior_pitch_range
        if not -60.0 <= lo <= hi <= 60.0:
            raise ValueError(f"`prior_pitch_range` must be (min, max) degrees in [-60, 60], got {self.prior_pitch_range!r}.")


def load_prior(path: str):
    """A `PanoHeadPrior` from a `save_pretrained` folder, frozen, on the CPU."""
    try:
        from fhavatar.prior import PanoHeadPrior
    except ImportError as err:
        raise ImportError(f"`prior`={path!r} needs `fhavatar.prior.PanoHeadPrior`, which cannot be imported: {err}") from err
    return PanoHeadPrior.from_pretrained(path).eval().requires_grad_(False)


def _resize(image: np.ndarray, size: int, resample) -> np.ndarray:
    if image.shape[0] == size:
        return image
    return np.asarray(Image.fromarray(image).resize((size, size), resample, reducing_gap=3.0))


def _prior_views(prior, landmarker, image: np.ndarray, camera, config: PreprocessConfig, generator: torch.Generator):
    """Invert one crop with the prior and render its novel views: `(images [P, 3, R, R], alpha [P, 1, R, R],
    cam2world [P, 4, 4])`. Without an `alpha` in the prior's output the render is segmented with MediaPipe."""
    p = config.num_prior_views
    signs = torch.tensor([1.0 if v % 2 == 0 else -1.0 for v in range(p)], dtype=torch.float64)
    lo, hi = config.prior_yaw_offset
    yaw = signs * (lo + (hi - lo) * torch.rand(p, generator=generator, dtype=torch.float64))
    lo, hi = config.prior_pitch_range
    pitch = lo + (hi - lo) * torch.rand(p, generator=generator, dtype=torch.float64)
    cam2world = orbit_cameras(camera.cam2world[0], yaw, pitch)
    tensor = torch.from_numpy(image).permute(2, 0, 1)[None].float() / 255.0
    res = config.resolution
    images, alphas = [], []
    with torch.no_grad():
        triplane = prior.encode(tensor, camera)
        for v in range(p):
            # At the prior's own output size (PanoHead: 512² super-resolved), then resized to R.
            out = prior.render(triplane, Camera(cam2world=cam2world[v : v + 1], intrinsics=camera.intrinsics))
            rgb = out if isinstance(out, torch.Tensor) else out.image
            rgb = torch.nn.functional.interpolate(rgb.float().clamp(0, 1), size=(res, res), mode="area")[0]
            alpha = None if isinstance(out, torch.Tensor) else getattr(out, "alpha", None)
            if alpha is None:
                uint8 = (rgb.permute(1, 2, 0).numpy() * 255.0 + 0.5).astype(np.uint8)
                alpha = torch.from_numpy(landmarker.segment_foreground(uint8))[None, None]
            alpha = torch.nn.functional.interpolate(alpha.float().clamp(0, 1), size=(res, res), mode="bilinear",
                                                    align_corners=False, antialias=True)[0]
            images.append(rgb)
            alphas.append(alpha)
    return torch.stack(images), torch.stack(alphas), cam2world


def _hash_seed(seed: int, name: str, t: int) -> int:
    """A seed from `(seed, clip name, frame)` that does not depend on the process (unlike `hash`)."""
    digest = hashlib.sha256(f"{seed}/{name}/{t}".encode()).digest()
    return int.from_bytes(digest[:8], "big") >> 1


def preprocess_clip(video: Path, clip_dir: Path, name: str, config: PreprocessConfig, landmarker=None, head=None,
                    prior=None) -> dict:
    """Track one video and write its clip folder; return its manifest entry.

    A clip without enough faces (or an unreadable video) gets a `skipped.json` marker and the entry
    `{"clip", "source", "skipped": True, "reason"}`. Other errors propagate (the clip stays partial and is redone
    by the next run).

    Args:
        video (`Path`): the video file.
        clip_dir (`Path`): the clip's folder (emptied first).
        name (`str`): the clip name.
        config (`PreprocessConfig`): the settings.
        landmarker (`FaceLandmarker`, *optional*): reused (video mode); one is made otherwise.
        head (`OpenHead`, *optional*): the head model (default: the packaged OpenHead).
        prior (*optional*): a `PanoHeadPrior` (or any object with its `encode(image, camera) -> triplane` and
            `render(triplane, camera) -> output with .image (and .alpha)`); when given, `config.num_prior_views`
            novel views per frame are cached.
    """
    if clip_dir.exists():
        shutil.rmtree(clip_dir)
    clip_dir.mkdir(parents=True)
    source = str(Path(video).resolve())
    own = landmarker is None
    landmarker = FaceLandmarker(mode="video") if own else landmarker
    head = head if head is not None else OpenHead()
    try:
        try:
            info = video_info(video)
            count = None if config.max_frames is None else (config.max_frames - 1) * config.frame_stride + 1
            frames, fps = read_video(video, max_frames=count)
            frames = frames[:: config.frame_stride][: config.max_frames]
            tracks = track_video(frames, landmarker=landmarker, head=head, smoothing=float(config.smoothing), mask=True,
                                 min_face_fraction=config.min_face_fraction)
        except ValueError as err:  # no face, too few faces, unreadable or too long video: a property of the clip
            entry = {"clip": name, "source": source, "skipped": True, "reason": str(err)}
            write_json_atomic(clip_dir / SKIP_MARKER, entry)
            logger.info("skipped %s: %s", name, err)
            return entry
        for sub in (FRAMES_DIR, MASKS_DIR) + ((PRIOR_DIR, PRIOR_MASKS_DIR) if prior is not None else ()):
            (clip_dir / sub).mkdir()
        res, prior_c2w = config.resolution, []
        for t, track in enumerate(tracks):
            mask = track.mask if track.mask is not None else np.ones(track.image.shape[:2], np.float32)
            image = track.image
            if not config.keep_background:  # paper §4.1: backgrounds removed (white, like the renders)
                image = (image * mask[..., None] + 255.0 * (1.0 - mask[..., None]) + 0.5).astype(np.uint8)
            save_rgb(clip_dir / FRAMES_DIR / frame_file(t), _resize(image, res, Image.Resampling.LANCZOS))
            mask8 = (np.clip(mask, 0, 1) * 255.0 + 0.5).astype(np.uint8)
            save_mask(clip_dir / MASKS_DIR / frame_file(t), _resize(mask8, res, Image.Resampling.BILINEAR))
            if prior is not None:
                # Seeded per (seed, clip, frame): a redone clip gets the same novel-view cameras.
                seed = _hash_seed(config.seed, name, t)
                views, alphas, c2w = _prior_views(prior, landmarker, image, track.camera, config,
                                                  torch.Generator().manual_seed(seed))
                for v in range(len(views)):
                    save_rgb(clip_dir / PRIOR_DIR / prior_file(t, v), views[v])
                    save_mask(clip_dir / PRIOR_MASKS_DIR / prior_file(t, v), alphas[v])
                prior_c2w.append(c2w)
        cam2world = torch.cat([t.camera.cam2world for t in tracks])
        intrinsics = torch.cat([t.camera.intrinsics for t in tracks])
        params = {f: torch.cat([getattr(t.params, f) for t in tracks]) for f in PARAM_FIELDS}
        has_face = torch.tensor([t.has_face for t in tracks], dtype=torch.uint8)
        write_tracking(clip_dir / TRACKING_FILE, cam2world, intrinsics, has_face, params)
        if prior is not None:
            write_prior_cameras(clip_dir / PRIOR_CAMERAS_FILE, torch.stack(prior_c2w),
                                intrinsics[:, None].expand(-1, config.num_prior_views, 3, 3))
    finally:
        if own:
            landmarker.close()
    entry = {"clip": name, "dir": f"clips/{name}", "num_frames": len(tracks), "source": source, "skipped": False,
             "fps": fps / config.frame_stride, "source_frames": info.num_frames,
             "frames_with_face": int(has_face.sum()), "has_prior_views": prior is not None}
    write_json_atomic(clip_dir / DONE_FILE, entry)  # last: the clip is complete
    return entry


def clip_state(clip_dir: Path) -> dict | None:
    """The recorded entry of a finished or skipped clip; None when it must be (re)done."""
    for marker in (DONE_FILE, SKIP_MARKER):
        path = clip_dir / marker
        if path.is_file():
            try:
                return json.loads(path.read_text())
            except json.JSONDecodeError:
                return None
    return None
