"""A small multi-view, multi-expression FHAvatar dataset with exact ground truth, made on a CPU from photos.

Each identity is the built-in default avatar (OpenHead textured by `ProjectionAvatarModel`) of one photo: the
shared real photos (`../shared/data/realfaces` beside the repository) when present, else the packaged
`examples/astronaut.png`; when there are more clips than photos, the extra clips re-use the avatars with a
random colour change. Per clip, every frame gets a random camera (yaw/pitch around the head, at the distance of
the photo's own tracked camera) and a random expression (jaw opening, a smile, eye gaze), and is rendered with
`render_gaussians` on a white background; its mask is the render's alpha. Two "prior views" per frame render the
same posed avatar from cameras orbited further around the head (one to each side), so the 3D-reconstruction mode
of training has real novel-view targets. The parameters and cameras written are exactly those rendered, and
`avatar.safetensors` (`fhavatar.Avatar.save`) holds each clip's ground-truth Gaussians.

Command line (from the repository root; `PYTHONPATH=. python training/make_synthetic.py ...` works the same)::

    python -m training.make_synthetic out/synthetic --num_clips 8 --frames_per_clip 8 --resolution 128 \
        --contact_sheet out/synthetic_sheet.png

The photos p02-p07 of the shared folder must not be redistributed: keep datasets made from them out of the
repository (under `out/`, which git ignores).
"""

from __future__ import annotations

import argparse
import logging
import math
import shutil
from pathlib import Path

import torch
from torch import Tensor
from tqdm.auto import tqdm

from training._dataset_format import (
    DATASET_FILE,
    DONE_FILE,
    FRAMES_DIR,
    MANIFEST_FILE,
    MASKS_DIR,
    PARAM_FIELDS,
    PRIOR_CAMERAS_FILE,
    PRIOR_DIR,
    PRIOR_MASKS_DIR,
    SKIPPED_FILE,
    TRACKING_FILE,
    frame_file,
    make_dataset_info,
    orbit_cameras,
    prior_file,
    save_mask,
    save_rgb,
    write_json_atomic,
    write_jsonl_atomic,
    write_prior_cameras,
    write_tracking,
)

__all__ = ["default_photos", "make_contact_sheet", "make_synthetic_dataset", "smile_displacement"]

logger = logging.getLogger(__name__)

_REPO = Path(__file__).resolve().parents[1]
_IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp")
#: MediaPipe Face Mesh landmarks of the mouth corners: the subject's right (x < 0), then left (x > 0).
_MOUTH_CORNERS = (61, 291)
#: A full smile moves each mouth corner outward, up and back by these amounts (cm).
_SMILE_OUT_CM, _SMILE_UP_CM, _SMILE_BACK_CM = 0.35, 0.6, 0.3
#: Gaussian falloff (cm) of the smile around each corner: the lips and the cheeks follow, the eyes do not.
_SMILE_SIGMA_CM = 1.2
#: Colour gains of the re-coloured copies of an identity (per channel, uniform in this range).
_COLOUR_GAIN = (0.75, 1.25)
#: Largest random eye rotation (radians, pitch and yaw).
_MAX_GAZE = 0.15


def default_photos() -> list[Path]:
    """The shared real photos (`<repo>/../shared/data/realfaces/*`) when present, else `examples/astronaut.png`."""
    shared = _REPO.parent / "shared" / "data" / "realfaces"
    photos = sorted(p for p in shared.glob("*") if p.suffix.lower() in _IMAGE_SUFFIXES) if shared.is_dir() else []
    return photos or [_REPO / "examples" / "astronaut.png"]


def _resolve_photos(photos) -> list[Path]:
    if photos is None:
        return default_photos()
    if isinstance(photos, (str, Path)):
        photos = [photos]
    out: list[Path] = []
    for item in photos:
        path = Path(item)
        if path.is_dir():
            found = sorted(p for p in path.glob("*") if p.suffix.lower() in _IMAGE_SUFFIXES)
            if not found:
                raise FileNotFoundError(f"`photos`: the folder {str(path)!r} holds no image ({', '.join(_IMAGE_SUFFIXES)}).")
            out += found
        elif path.is_file():
            out.append(path)
        else:
            raise FileNotFoundError(f"`photos`: no file or folder at {str(path)!r}.")
    if not out:
        raise ValueError("`photos` must name at least one image, got an empty list.")
    return out


def smile_displacement(head) -> Tensor:  # -> [468, 3]
    """`OpenHeadParams.expression` of a full smile (add a multiple of it): mouth corners out, up and back,
    with a Gaussian falloff of `_SMILE_SIGMA_CM` around each corner (MediaPipe landmarks 61 and 291)."""
    from fhavatar.head.open_head import NUM_FACE_VERTICES

    cm = float(head.config.head_units_per_metre) / 100.0
    face = head.template_vertices[:NUM_FACE_VERTICES].detach().float().cpu()
    out = torch.zeros(NUM_FACE_VERTICES, 3)
    for corner in _MOUTH_CORNERS:
        centre = face[corner]
        weight = torch.exp(-((face - centre) ** 2).sum(-1) / (2 * (_SMILE_SIGMA_CM * cm) ** 2))
        side = math.copysign(1.0, float(centre[0]))
        move = torch.tensor([side * _SMILE_OUT_CM, _SMILE_UP_CM, -_SMILE_BACK_CM]) * cm
        out += weight[:, None] * move
    return out


def _look_target(cam2world: Tensor) -> tuple[Tensor, float]:  # [4, 4] -> ([3], distance)
    """The point of the camera's optical axis nearest the head-space origin, and the camera's distance to it:
    the framing of the photo's tracked crop, re-used for every render of its avatar."""
    position, forward = cam2world[:3, 3].double(), cam2world[:3, 2].double()
    along = float(-(position @ forward))
    return (position + along * forward).float(), along


def _frame_camera(target: Tensor, distance: float, yaw_deg: float, pitch_deg: float):
    from fhavatar.rendering import Camera

    yaw, pitch = math.radians(yaw_deg), math.radians(pitch_deg)
    direction = torch.tensor([math.sin(yaw) * math.cos(pitch), math.sin(pitch), math.cos(yaw) * math.cos(pitch)])
    return Camera.look_at(target + distance * direction, target)


def _uniform(generator: torch.Generator, lo: float, hi: float, size: int = 1) -> Tensor:
    return lo + (hi - lo) * torch.rand(size, generator=generator, dtype=torch.float64)


def _recolour(avatar, generator: torch.Generator):
    """A copy of `avatar` with per-channel colour gains (another 'identity' from the same photo)."""
    from fhavatar.avatar import Avatar

    gain = _uniform(generator, *_COLOUR_GAIN, size=3).float()
    colors = (avatar.colors * gain).clamp(0.0, 1.0)
    return Avatar(avatar.head_model, avatar.source_params, avatar.source_vertices, avatar.face_index,
                  avatar.barycentrics, avatar.offsets, avatar.rotations, avatar.scales, colors, avatar.opacities)


def _check_range(name: str, value, lo: float, hi: float) -> tuple[float, float]:
    try:
        a, b = (float(v) for v in value)
    except (TypeError, ValueError) as err:
        raise ValueError(f"`{name}` must be a (min, max) pair of numbers, got {value!r}.") from err
    if not (lo <= a <= b <= hi):
        raise ValueError(f"`{name}` must be (min, max) with {lo} <= min <= max <= {hi}, got {value!r}.")
    return a, b


def _prepare_root(root: Path, overwrite: bool) -> None:
    if root.exists() and not root.is_dir():
        raise ValueError(f"`root` must be a folder, got the file {str(root)!r}.")
    if root.is_dir() and any(root.iterdir()):
        if not overwrite:
            raise FileExistsError(f"`root`: {str(root)!r} is not empty; pass overwrite=True (--overwrite) to replace it.")
        if not (root / DATASET_FILE).is_file() and not (root / MANIFEST_FILE).is_file():
            raise ValueError(f"`root`: {str(root)!r} is not empty and is not an FHAvatar dataset; refusing to delete it.")
        shutil.rmtree(root)
    root.mkdir(parents=True, exist_ok=True)


def make_synthetic_dataset(
    root,
    num_clips: int = 8,
    frames_per_clip: int = 8,
    resolution: int = 128,
    photos=None,
    num_prior_views: int = 2,
    yaw_range: tuple[float, float] = (-45.0, 45.0),
    pitch_range: tuple[float, float] = (-15.0, 15.0),
    prior_yaw_offset: tuple[float, float] = (45.0, 180.0),
    max_jaw: float = 0.35,
    max_smile: float = 1.0,
    avatar_resolution: int = 128,
    seed: int = 0,
    save_avatars: bool = True,
    overwrite: bool = False,
    progress: bool = False,
) -> dict:
    """Render a synthetic dataset into `root` (the format of `training/_dataset_format.py`).

    Args:
        root (`str` or `os.PathLike`): output folder (created; must be empty unless `overwrite`).
        num_clips (`int`, *optional*, defaults to 8): clips (identities; more than the photos re-use them re-coloured).
        frames_per_clip (`int`, *optional*, defaults to 8): frames per clip.
        resolution (`int`, *optional*, defaults to 128): R, the side of every image.
        photos (path, folder or list of them, *optional*): identity photos (default `default_photos()`); photos
            without a trackable face are skipped with a warning.
        num_prior_views (`int`, *optional*, defaults to 2): novel views per frame (0: none).
        yaw_range, pitch_range (`(float, float)`, *optional*): frame cameras, degrees (yaw 0 = in front, pitch > 0
            = from above), uniform.
        prior_yaw_offset (`(float, float)`, *optional*, defaults to (45, 180)): |yaw| of the prior views relative to
            the frame's camera (view 0 toward +yaw, view 1 toward -yaw, ...), degrees; their pitch is drawn in
            `pitch_range`.
        max_jaw (`float`, *optional*, defaults to 0.35): largest jaw opening (radians about +x), uniform from 0.
        max_smile (`float`, *optional*, defaults to 1.0): largest multiple of `smile_displacement`, uniform from 0.
        avatar_resolution (`int`, *optional*, defaults to 128): UV atlas size K of the avatars (~25K Gaussians at 128).
        seed (`int`, *optional*, defaults to 0): everything random derives from it (same seed, same dataset).
        save_avatars (`bool`, *optional*, defaults to True): write each clip's `avatar.safetensors`.
        overwrite (`bool`, *optional*, defaults to False): replace an existing dataset at `root`.
        progress (`bool`, *optional*, defaults to False): show a tqdm bar.

    Returns:
        `dict`: the `dataset.json` written.

    Example:
        ```py
        >>> from training.make_synthetic import make_synthetic_dataset
        >>> info = make_synthetic_dataset("out/synthetic", num_clips=2, frames_per_clip=3, resolution=64)  # doctest: +SKIP
        >>> info["num_frames"]  # doctest: +SKIP
        6
        ```
    """
    from fhavatar import FHAvatarPipeline
    from fhavatar.head.open_head import OpenHeadParams
    from fhavatar.rendering import Camera, render_gaussians
    from fhavatar.tracking import NoFaceError

    for name, value, lo in (("num_clips", num_clips, 1), ("frames_per_clip", frames_per_clip, 1),
                            ("resolution", resolution, 16), ("num_prior_views", num_prior_views, 0),
                            ("avatar_resolution", avatar_resolution, 16)):
        if not isinstance(value, int) or isinstance(value, bool) or value < lo:
            raise ValueError(f"`{name}` must be an int >= {lo}, got {value!r}.")
    yaw_range = _check_range("yaw_range", yaw_range, -180.0, 180.0)
    pitch_range = _check_range("pitch_range", pitch_range, -60.0, 60.0)
    prior_yaw_offset = _check_range("prior_yaw_offset", prior_yaw_offset, 0.0, 180.0)
    for name, value, hi in (("max_jaw", max_jaw, 0.6), ("max_smile", max_smile, 2.0)):
        if not (isinstance(value, (int, float)) and 0.0 <= value <= hi):
            raise ValueError(f"`{name}` must be a number in [0, {hi}], got {value!r}.")
    photo_paths = _resolve_photos(photos)
    root = Path(root)
    _prepare_root(root, overwrite)

    # 1. One avatar per photo (as many photos as clips at most).
    pipe = FHAvatarPipeline.default(resolution=avatar_resolution)
    pipe.set_progress_bar_config(disable=True)
    identities = []
    for photo in photo_paths[:num_clips]:
        try:
            avatar = pipe.reconstruct(photo)
        except (NoFaceError, ValueError) as err:
            logger.warning("make_synthetic: skipping the photo %s (%s)", photo, err)
            continue
        target, distance = _look_target(avatar.source_track.camera.cam2world[0])
        identities.append((photo, avatar, target, distance))
    if not identities:
        raise ValueError(f"`photos`: none of {[str(p) for p in photo_paths[:num_clips]]} shows a trackable face.")
    head = pipe.head_model
    smile = smile_displacement(head)
    background = torch.ones(3)
    generator = torch.Generator().manual_seed(int(seed))

    # 2. Clips: random cameras and expressions, rendered with their prior views.
    manifest, total = [], 0
    bar = tqdm(total=num_clips * frames_per_clip, desc="synthetic frames", disable=not progress)
    for c in range(num_clips):
        photo, avatar, target, distance = identities[c % len(identities)]
        if c >= len(identities):
            avatar = _recolour(avatar, generator)
        name = f"synthetic_{c:04d}"
        clip_dir = root / "clips" / name
        for sub in (FRAMES_DIR, MASKS_DIR) + ((PRIOR_DIR, PRIOR_MASKS_DIR) if num_prior_views else ()):
            (clip_dir / sub).mkdir(parents=True, exist_ok=True)
        base = avatar.source_params
        rows = {f: [] for f in PARAM_FIELDS}
        cams, prior_c2w = [], []
        for t in range(frames_per_clip):
            jaw = float(_uniform(generator, 0.0, max_jaw))
            amount = float(_uniform(generator, 0.0, max_smile))
            gaze = _uniform(generator, -_MAX_GAZE, _MAX_GAZE, 2).float()
            params = OpenHeadParams(
                expression=base.expression + amount * smile[None],
                jaw=base.jaw + torch.tensor([[jaw, 0.0, 0.0]]),
                neck=base.neck.clone(),
                eyes=base.eyes + torch.tensor([gaze[0], gaze[1], 0.0])[None, None],  # both eyes look the same way
                global_rotation=base.global_rotation.clone(),
                translation=base.translation.clone(),
            )
            yaw = float(_uniform(generator, *yaw_range))
            pitch = float(_uniform(generator, *pitch_range))
            camera = _frame_camera(target, distance, yaw, pitch)
            views = [camera]
            if num_prior_views:
                signs = torch.tensor([1.0 if v % 2 == 0 else -1.0 for v in range(num_prior_views)], dtype=torch.float64)
                offsets = signs * _uniform(generator, *prior_yaw_offset, size=num_prior_views)
                pitches = _uniform(generator, *pitch_range, size=num_prior_views)
                c2w = orbit_cameras(camera.cam2world[0], offsets, pitches)
                prior_c2w.append(c2w)
                views.append(Camera(cam2world=c2w, intrinsics=camera.intrinsics.expand(num_prior_views, 3, 3)))
            out = render_gaussians(avatar.gaussians(params), Camera.cat(views), resolution, resolution,
                                   background=background)
            save_rgb(clip_dir / FRAMES_DIR / frame_file(t), out.image[0])
            save_mask(clip_dir / MASKS_DIR / frame_file(t), out.alpha[0])
            for v in range(num_prior_views):
                save_rgb(clip_dir / PRIOR_DIR / prior_file(t, v), out.image[1 + v])
                save_mask(clip_dir / PRIOR_MASKS_DIR / prior_file(t, v), out.alpha[1 + v])
            for f in rows:
                rows[f].append(getattr(params, f))
            cams.append(camera)
            bar.update(1)
        cameras = Camera.cat(cams)
        write_tracking(clip_dir / TRACKING_FILE, cameras.cam2world, cameras.intrinsics,
                       torch.ones(frames_per_clip, dtype=torch.uint8), {f: torch.cat(v) for f, v in rows.items()})
        if num_prior_views:
            prior = torch.stack(prior_c2w)
            write_prior_cameras(clip_dir / PRIOR_CAMERAS_FILE, prior,
                                cameras.intrinsics[:, None].expand(-1, num_prior_views, 3, 3))
        if save_avatars:
            avatar.save(clip_dir / "avatar.safetensors")
        entry = {"clip": name, "dir": f"clips/{name}", "num_frames": frames_per_clip, "source": "synthetic",
                 "skipped": False, "photo": photo.name}
        write_json_atomic(clip_dir / DONE_FILE, entry)
        manifest.append(entry)
        total += frames_per_clip
    bar.close()

    # 3. Index files last: a dataset.json means the dataset is complete.
    write_jsonl_atomic(root / MANIFEST_FILE, manifest)
    write_jsonl_atomic(root / SKIPPED_FILE, [])
    info = make_dataset_info(resolution, len(manifest), total, num_prior_views)
    write_json_atomic(root / DATASET_FILE, info)
    logger.info("make_synthetic: %d clips, %d frames at %d px in %s", len(manifest), total, resolution, root)
    return info


def make_contact_sheet(root, path, max_clips: int = 4, max_frames: int = 4) -> Path:
    """Write a PNG grid of a dataset: one row per clip, each frame followed by its prior views (if any)."""
    from PIL import Image

    from training._dataset_format import read_dataset_info, read_jsonl

    root, path = Path(root), Path(path)
    info = read_dataset_info(root)
    res, views = info["resolution"], info["num_prior_views"]
    clips = read_jsonl(root / MANIFEST_FILE)[:max_clips]
    columns = min(max_frames, max(e["num_frames"] for e in clips)) * (1 + views)
    sheet = Image.new("RGB", (columns * res, len(clips) * res), (128, 128, 128))
    for row, entry in enumerate(clips):
        clip_dir = root / entry["dir"]
        for t in range(min(max_frames, entry["num_frames"])):
            tiles = [clip_dir / FRAMES_DIR / frame_file(t)] + [clip_dir / PRIOR_DIR / prior_file(t, v) for v in range(views)]
            for k, tile in enumerate(tiles):
                sheet.paste(Image.open(tile).convert("RGB"), ((t * (1 + views) + k) * res, row * res))
    path.parent.mkdir(parents=True, exist_ok=True)
    sheet.save(path)
    return path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Render a small synthetic FHAvatar dataset (CPU, no external data).")
    parser.add_argument("root", help="output dataset folder")
    parser.add_argument("--num_clips", type=int, default=8)
    parser.add_argument("--frames_per_clip", type=int, default=8)
    parser.add_argument("--resolution", type=int, default=128)
    parser.add_argument("--photos", nargs="+", default=None, help="photos or folders (default: shared real photos, "
                        "else examples/astronaut.png)")
    parser.add_argument("--num_prior_views", type=int, default=2)
    parser.add_argument("--yaw_range", type=float, nargs=2, default=(-45.0, 45.0))
    parser.add_argument("--pitch_range", type=float, nargs=2, default=(-15.0, 15.0))
    parser.add_argument("--avatar_resolution", type=int, default=128)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--overwrite", action="store_true")
    parser.add_argument("--contact_sheet", default=None, help="also write a PNG grid of the first clips here")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    info = make_synthetic_dataset(args.root, num_clips=args.num_clips, frames_per_clip=args.frames_per_clip,
                                  resolution=args.resolution, photos=args.photos, num_prior_views=args.num_prior_views,
                                  yaw_range=tuple(args.yaw_range), pitch_range=tuple(args.pitch_range),
                                  avatar_resolution=args.avatar_resolution, seed=args.seed, overwrite=args.overwrite,
                                  progress=True)
    print(f"wrote {info['num_clips']} clips / {info['num_frames']} frames at {info['resolution']} px to {args.root}")
    if args.contact_sheet:
        print(f"contact sheet: {make_contact_sheet(args.root, args.contact_sheet)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
