"""`python -m fhavatar.evaluate DATA`: the paper's evaluation protocol (§4.1, Tab. 1/2) on your own clips.

Self-reenactment: for each clip, the first frame is the source photo and the rest are the driving frames, so
every output has a ground truth. Cross-identity: each source (the photos in DATA, and the first frame of every
other clip) re-enacts each clip; no ground truth, so only CSIM, AED and APD.

Comparison space. Every driving frame is tracked (`fhavatar.tracking.track_video`, with foreground masks); its
ground truth is the tracker's 512² PanoHead-style crop, resized to `--resolution` and composited with its mask
onto the pipeline's background (white by default), as the paper removes backgrounds. The avatar is animated with
the driving frame's motion (`--mode`, relative by default: source + (driving_t - driving_0)) and rendered from the
driving frame's own crop camera (`use_driving_camera=True`), so render and ground truth share the crop space.
Metrics are averaged over all evaluated frames of all clips (frame 0, the source, is never scored).

Metrics (`fhavatar.metrics`): PSNR, SSIM (11, σ 1.5), LPIPS-Alex v0.1 (`--lpips_backbone`: a torchvision AlexNet
state dict; without one the torch hub cache is tried, then a random trunk, marked "not comparable"), CSIM of
ArcFace embeddings (`--id_network`: insightface IResNet weights; n/a without), CSIM (dlib), a labelled substitute
that runs without user files (dlib's face-recognition ResNet, `1 - d / 1.2` with d its descriptor distance, so
dlib's same-person threshold 0.6 reads 0.5; not comparable with the paper's CSIM; `--no_dlib_csim` skips it; see
`fhavatar.metrics.identity`), and AKD / AED / APD measured with the project's MediaPipe tracker (substitutes for
the paper's FAN / SMIRK / pose networks; see `fhavatar.metrics.motion`). Self-reenactment CSIM compares each output
with its ground-truth frame, cross-identity CSIM with the source crop (both CSIMs alike).

Outputs in `--out` (default `out/eval`): `metrics.md` and `metrics.csv` (Tab. 1/2 layout, the paper's numbers
beside ours), `per_clip.csv`, `settings.json`; `--save_frames N` also writes N comparison strips per clip
(derived images: keep them out of the repository).

Example:
    ```sh
    python -m fhavatar.evaluate ../shared/data/realfaces --max_frames 8 --frame_stride 8 --resolution 256
    ```
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from tqdm.auto import tqdm

from ._eval_scores import EvalSettings, Sums, _Measures, _psnr, _record, _ssim, comparability, ground_truth, report, write_outputs
from .io import checked_file, read_video

__all__ = ["Clip", "EvalSettings", "Sums", "collect_inputs", "comparability", "evaluate", "ground_truth", "main", "report",
           "write_outputs"]

logger = logging.getLogger(__name__)

VIDEO_SUFFIXES = (".mp4", ".mov", ".webm", ".avi", ".mkv", ".m4v")
PHOTO_SUFFIXES = (".jpg", ".jpeg", ".png", ".webp", ".bmp")
USER_ERROR = 2


@dataclass
class Clip:
    name: str
    frames: list  # [H, W, 3] uint8 frames, already strided and truncated
    source: str


# ---------------------------------------------------------------------------------------------- inputs
def _strided(frames: list, settings: EvalSettings) -> list:
    return frames[:: settings.frame_stride][: settings.max_frames]


def collect_inputs(paths: Sequence[str | Path], settings: EvalSettings) -> tuple[list[Clip], list[Path]]:
    """Clips (videos, or the clip folders of a preprocessed dataset) and photos found under `paths`."""
    clips, photos = [], []
    files: list[Path] = []
    for raw in paths:
        path = Path(raw).expanduser()
        if not path.exists():
            raise FileNotFoundError(f"DATA {str(path)!r} does not exist (a folder of videos/photos, a video or a photo)")
        if path.is_dir() and (path / "dataset.json").is_file():
            clips.extend(_dataset_clips(path, settings))
        elif path.is_dir():
            files.extend(sorted(p for p in path.iterdir() if p.is_file()))
        else:
            files.append(path)
    for path in files:
        suffix = path.suffix.lower()
        if suffix in VIDEO_SUFFIXES:
            frames, _ = read_video(path, max_frames=settings.max_frames * settings.frame_stride)
            clips.append(Clip(path.stem, _strided(frames, settings), str(path)))
        elif suffix in PHOTO_SUFFIXES:
            photos.append(path)
    if not clips:
        raise ValueError(f"DATA {[str(p) for p in paths]} holds no video ({', '.join(VIDEO_SUFFIXES)}) and no "
                         "preprocessed dataset (dataset.json); self-reenactment needs at least one clip")
    return clips, photos


def _dataset_clips(root: Path, settings: EvalSettings) -> list[Clip]:
    """The clips of a `training/preprocess.py` dataset: its aligned frames read back as videos."""
    manifest = checked_file(root / "manifest.jsonl", "manifest", f"The dataset {str(root)!r} has dataset.json but no manifest.")
    clips = []
    for line in manifest.read_text().splitlines():
        if not line.strip():
            continue
        entry = json.loads(line)
        frame_files = sorted((root / entry["dir"] / "frames").glob("*.png"))
        chosen = _strided(frame_files, settings)
        frames = [np.asarray(Image.open(f).convert("RGB")) for f in chosen]
        clips.append(Clip(entry["clip"], frames, str(root / entry["dir"])))
    return clips


# ---------------------------------------------------------------------------------------------- protocol
def evaluate(clips: list[Clip], photos: list[Path], settings: EvalSettings, pipe=None, out: Path | None = None) -> dict:
    """Run self- and cross-identity reenactment; returns `{"self": Sums, "cross": Sums, "per_clip": [...], ...}`."""
    # Lazy: these import diffusers (~2-3 s), which `evaluate --help` never needs.
    from .metrics.motion import face_region_mask
    from .pipeline_fhavatar import FHAvatarPipeline
    from .tracking import NoFaceError, track_video

    if pipe is None:
        pipe = (FHAvatarPipeline.from_pretrained(settings.pipeline) if settings.pipeline
                else FHAvatarPipeline.default(resolution=settings.uv_resolution))
    pipe = pipe.to(settings.device)
    pipe.set_progress_bar_config(disable=True)
    size, background = settings.resolution, pipe.config.background
    measures = _Measures(settings, pipe.head_model)
    self_sums, cross_sums = Sums(), Sums()
    per_clip, skipped, tracked = [], [], {}
    counts = {"self_clips": 0, "self_frames": 0, "cross_pairs": 0, "cross_frames": 0, "no_face_frames": 0}
    try:
        for clip in tqdm(clips, desc="self-reenactment", unit="clip"):
            if len(clip.frames) < 2:
                skipped.append(f"{clip.name}: fewer than 2 frames")
                continue
            try:
                tracks = track_video(clip.frames, head=pipe.head_model, smoothing=pipe.config.smoothing, mask=True)
                avatar = pipe.reconstruct(clip.frames[0])
            except (NoFaceError, ValueError) as err:
                skipped.append(f"{clip.name}: {err}")
                continue
            gt, masks = ground_truth(tracks, size, background)
            gen = pipe.animate(avatar, tracks, mode=settings.mode, use_driving_camera=True, height=size, width=size)
            gen_m, gt_m = measures.analyze(gen), measures.analyze(gt)
            tracked[clip.name] = (tracks, gt, gt_m)
            sums = Sums()
            with torch.no_grad():
                sums.add("self_psnr", _psnr(gen[1:], gt[1:]))
                sums.add("self_ssim", _ssim(gen[1:], gt[1:]))
                sums.add("self_lpips", measures.lpips(gen[1:], gt[1:]))
                sums.add("self_psnr_fg", _psnr(gen[1:], gt[1:], masks[1:]))
                for t in range(1, len(gen)):
                    if gt_m[t] is not None:  # PSNR of the face alone (inside the ground truth's face oval)
                        face = torch.from_numpy(face_region_mask(gt_m[t].landmarks, size, size))[None, None]
                        sums.add("self_psnr_face", _psnr(gen[t : t + 1], gt[t : t + 1], face))
                csim = measures.csim(gen[1:], gt[1:], gen_m[1:], gt_m[1:])
                csim_dlib = measures.csim_dlib(gen[1:], gt[1:])
            if csim is not None:
                sums.add("self_csim", csim)
            if csim_dlib is not None:
                sums.add("self_csim_dlib", csim_dlib[0])
                sums.add("self_same_person_dlib", csim_dlib[1])
            _record("self", clip.name, clip.name, gen, gt, gen_m, gt_m, sums, self_sums, counts, per_clip, settings, out)
        if settings.cross:
            _cross(clips, photos, tracked, settings, pipe, measures, cross_sums, per_clip, skipped, counts, out)
    finally:
        measures.close()
    return {"self": self_sums, "cross": cross_sums, "per_clip": per_clip, "skipped": skipped, "counts": counts,
            "lpips_comparable": measures.lpips.comparable, "lpips_source": measures.lpips.backbone_source,
            "id_network": settings.id_network,
            "dlib": {"available": measures.dlib is not None, "status": measures.dlib_status,
                     "no_face_frames": measures.dlib_missed}}


def _cross(clips, photos, tracked, settings, pipe, measures, cross_sums, per_clip, skipped, counts, out) -> None:
    """Cross-identity reenactment: every source re-enacts every (other) tracked clip."""
    # Lazy: `.tracking` imports diffusers (~2 s), which `evaluate --help` never needs.
    from .tracking import NoFaceError

    sources: list[tuple[str, object]] = []
    if settings.cross_sources in ("photos", "both"):
        sources += [(p.stem, p) for p in photos]
    if settings.cross_sources in ("clips", "both"):
        sources += [(c.name, c.frames[0]) for c in clips if c.name in tracked]
    pairs = [(name, src, clip) for name, src in sources for clip in tracked if clip != name]
    if settings.max_cross_pairs is not None:
        pairs = pairs[: settings.max_cross_pairs]
    avatars: dict[str, object] = {}
    size = settings.resolution
    for name, src, clip_name in tqdm(pairs, desc="cross-identity", unit="pair"):
        if name not in avatars:
            try:
                avatars[name] = pipe.reconstruct(src)
            except (NoFaceError, ValueError) as err:
                avatars[name] = None
                skipped.append(f"source {name}: {err}")
        avatar = avatars[name]
        if avatar is None:
            continue
        tracks, _, drv_m = tracked[clip_name]
        gen = pipe.animate(avatar, tracks, mode=settings.mode, use_driving_camera=True, height=size, width=size)
        gen_m = measures.analyze(gen)
        sums = Sums()
        source_img, _ = ground_truth([avatar.source_track], size, pipe.config.background)
        src_m = measures.analyze(source_img)
        csim = measures.csim(gen[1:], source_img.expand(len(gen) - 1, -1, -1, -1), gen_m[1:], src_m * (len(gen) - 1))
        if csim is not None:
            sums.add("cross_csim", csim)
        csim_dlib = measures.csim_dlib(gen[1:], source_img)
        if csim_dlib is not None:
            sums.add("cross_csim_dlib", csim_dlib[0])
            sums.add("cross_same_person_dlib", csim_dlib[1])
        _record("cross", clip_name, name, gen, tracked[clip_name][1], gen_m, drv_m, sums, cross_sums, counts, per_clip,
                settings, out)


# ---------------------------------------------------------------------------------------------- CLI
def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m fhavatar.evaluate", description=__doc__.splitlines()[0])
    parser.add_argument("data", nargs="+", help="folders of videos (+ photos), video/photo files, or a preprocessed "
                        "dataset folder (with dataset.json)")
    parser.add_argument("--pipeline", default=None, help="save_pretrained folder or Hub repo id (default: built-in)")
    parser.add_argument("--max_frames", type=int, default=16, help="frames per clip, source included (default 16)")
    parser.add_argument("--frame_stride", type=int, default=1, help="keep every n-th frame (default 1)")
    parser.add_argument("--resolution", type=int, default=256, help="side of compared images (default 256)")
    parser.add_argument("--uv_resolution", type=int, default=256, help="UV atlas K of the built-in default (256)")
    parser.add_argument("--mode", choices=("relative", "absolute"), default="relative")
    parser.add_argument("--lpips_net", choices=("alex", "vgg"), default="alex")
    parser.add_argument("--lpips_backbone", default=None, help="torchvision AlexNet/VGG16 state dict (.pth/.safetensors)")
    parser.add_argument("--id_network", default=None, help="insightface arcface_torch IResNet weights for CSIM")
    parser.add_argument("--no_dlib_csim", action="store_true", help="skip CSIM (dlib), the labelled identity "
                        "substitute computed with dlib's face-recognition network (no user file needed)")
    parser.add_argument("--no_cross", action="store_true", help="skip cross-identity reenactment")
    parser.add_argument("--cross_sources", choices=("photos", "clips", "both"), default="both")
    parser.add_argument("--max_cross_pairs", type=int, default=None)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--save_frames", type=int, default=0, help="comparison strips per clip (derived images)")
    parser.add_argument("--label", default=None, help="row label of our results")
    parser.add_argument("--out", type=Path, default=None, help="output folder (default: <repo>/out/eval)")
    return parser


def _settings(args: argparse.Namespace) -> EvalSettings:
    for name, low in (("max_frames", 2), ("frame_stride", 1), ("resolution", 64), ("uv_resolution", 8)):
        if getattr(args, name) < low:
            raise ValueError(f"--{name} must be >= {low}, got {getattr(args, name)}")
    if args.max_cross_pairs is not None and args.max_cross_pairs < 0:
        raise ValueError(f"--max_cross_pairs must be >= 0, got {args.max_cross_pairs}")
    for name in ("lpips_backbone", "id_network"):
        value = getattr(args, name)
        if value is not None:
            checked_file(value, f"--{name}")
    return EvalSettings(max_frames=args.max_frames, frame_stride=args.frame_stride, resolution=args.resolution,
                        uv_resolution=args.uv_resolution, mode=args.mode, lpips_net=args.lpips_net,
                        lpips_backbone=args.lpips_backbone, id_network=args.id_network,
                        dlib_csim=not args.no_dlib_csim, cross=not args.no_cross,
                        cross_sources=args.cross_sources, max_cross_pairs=args.max_cross_pairs,
                        pipeline=args.pipeline, device=args.device, save_frames=args.save_frames)


def main(argv: Sequence[str] | None = None) -> int:
    os.environ.setdefault("GLOG_minloglevel", "2")  # MediaPipe's native logging
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(message)s")
    out = args.out if args.out is not None else Path(__file__).resolve().parents[1] / "out" / "eval"
    start = time.perf_counter()
    try:
        settings = _settings(args)
        clips, photos = collect_inputs(args.data, settings)
        result = evaluate(clips, photos, settings, out=out)
    except KeyboardInterrupt:
        sys.stderr.write("fhavatar.evaluate: interrupted\n")
        return 130
    except (ValueError, TypeError, OSError) as err:
        sys.stderr.write(f"fhavatar.evaluate: error: {' '.join(str(err).split())}\n")
        return USER_ERROR
    label = args.label or ("FHAvatar " + ("built-in default" if not settings.pipeline else Path(settings.pipeline).name)
                           + " (this run)")
    paths = write_outputs(result, settings, args.data, out, label)
    sys.stdout.write(paths["markdown"].read_text())
    sys.stdout.write(f"\n(done in {time.perf_counter() - start:.0f} s; tables in {paths['markdown']} and {paths['csv']})\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
