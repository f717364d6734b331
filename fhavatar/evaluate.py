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
ArcFace embeddings (`--id_network`: insightface IResNet weights; n/a without), and AKD / AED / APD measured with
the project's MediaPipe tracker (substitutes for the paper's FAN / SMIRK / pose networks; see
`fhavatar.metrics.motion`). Self-reenactment CSIM compares each output with its ground-truth frame, cross-identity
CSIM with the source crop.

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
import csv
import datetime
import json
import logging
import math
import os
import platform
import sys
import time
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

logger = logging.getLogger(__name__)

VIDEO_SUFFIXES = (".mp4", ".mov", ".webm", ".avi", ".mkv", ".m4v")
PHOTO_SUFFIXES = (".jpg", ".jpeg", ".png", ".webp", ".bmp")
USER_ERROR = 2


@dataclass
class EvalSettings:
    """Every knob of one evaluation run (written to `settings.json` and beside the table)."""

    max_frames: int = 16  # frames per clip used (after striding), the source frame included
    frame_stride: int = 1  # keep every n-th frame of each clip
    resolution: int = 256  # side of the compared images (renders and ground truth), pixels
    uv_resolution: int = 256  # K of the built-in default pipeline (ignored with --pipeline)
    mode: str = "relative"  # motion transfer, see `fhavatar.tracking.transfer_motion`
    lpips_net: str = "alex"
    lpips_backbone: str | None = None
    id_network: str | None = None
    cross: bool = True  # also run cross-identity reenactment
    cross_sources: str = "both"  # "photos" | "clips" | "both": what re-enacts other clips
    max_cross_pairs: int | None = None
    pipeline: str | None = None  # None: FHAvatarPipeline.default()
    device: str = "cpu"
    save_frames: int = 0


@dataclass
class Clip:
    name: str
    frames: list  # [H, W, 3] uint8 frames, already strided and truncated
    source: str


@dataclass
class Sums:
    """Per-metric running values (a list of per-frame numbers)."""

    values: dict[str, list[float]] = field(default_factory=lambda: defaultdict(list))

    def add(self, key: str, numbers) -> None:
        self.values[key].extend(float(v) for v in np.atleast_1d(np.asarray(numbers, dtype=np.float64)))

    def mean(self, key: str) -> float | None:
        vals = [v for v in self.values.get(key, []) if not math.isnan(v)]  # inf PSNR (identical frames) counts
        return float(np.mean(vals)) if vals else None


# ---------------------------------------------------------------------------------------------- inputs
def _strided(frames: list, settings: EvalSettings) -> list:
    return frames[:: settings.frame_stride][: settings.max_frames]


def collect_inputs(paths: Sequence[str | Path], settings: EvalSettings) -> tuple[list[Clip], list[Path]]:
    """Clips (videos, or the clip folders of a preprocessed dataset) and photos found under `paths`."""
    from .io import read_video

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
    from PIL import Image

    manifest = root / "manifest.jsonl"
    if not manifest.is_file():
        raise FileNotFoundError(f"dataset {str(root)!r} has dataset.json but no manifest.jsonl")
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


# ---------------------------------------------------------------------------------------------- helpers
def _to_tensor(images: list[np.ndarray], size: int):  # uint8 [H, W, C] list -> [N, C, size, size] in [0, 1]
    import torch
    import torch.nn.functional as F

    x = torch.from_numpy(np.stack(images)).float() / 255.0
    x = x[..., None] if x.ndim == 3 else x
    x = x.permute(0, 3, 1, 2)
    if x.shape[-1] != size or x.shape[-2] != size:
        x = F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False, antialias=True)
    return x.clamp(0, 1)


def ground_truth(tracks: list, size: int, background) -> tuple:  # -> [T, 3, S, S], [T, 1, S, S]
    """The tracker's crops composited on `background` with their masks, at `size`² (the paper's bg removal)."""
    import torch

    images = _to_tensor([t.image for t in tracks], size)
    if all(t.mask is not None for t in tracks):
        masks = _to_tensor([(np.clip(t.mask, 0, 1) * 255).astype(np.uint8) for t in tracks], size)
    else:
        masks = torch.ones(len(tracks), 1, size, size)
    bg = torch.as_tensor(background, dtype=images.dtype).view(1, 3, 1, 1)
    return images * masks + bg * (1 - masks), masks


class _Measures:
    """The metric networks of one run: LPIPS, the optional identity network, the motion analyzer."""

    def __init__(self, settings: EvalSettings, head) -> None:
        import warnings

        from .metrics import MotionAnalyzer, load_identity_network, load_lpips

        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # the "not comparable" warning is carried by the table instead
            self.lpips = load_lpips(settings.lpips_net, settings.lpips_backbone, allow_random=settings.lpips_backbone is None)
        self.identity = load_identity_network(settings.id_network) if settings.id_network else None
        self.analyzer = MotionAnalyzer(head)

    def analyze(self, frames):  # [T, 3, S, S] -> list[FaceMotion | None]
        return [self.analyzer(frame) for frame in frames]

    def csim(self, generated, reference, gen_motion, ref_motion):  # [T,3,S,S] x2 -> [T] or None
        if self.identity is None:
            return None
        import torch

        values = []
        for t in range(len(generated)):
            lms = [None if m is None else torch.as_tensor(m.five_points, dtype=torch.float32)[None]
                   for m in (gen_motion[t], ref_motion[t])]
            if (lms[0] is None) != (lms[1] is None):  # same alignment on both sides: fixed when one has no face
                lms = [None, None]
            values.append(float(self.identity.similarity(generated[t : t + 1], reference[t : t + 1], *lms)[0]))
        return np.array(values)

    def close(self) -> None:
        self.analyzer.close()


def _motion_metrics(gen_m: list, ref_m: list, size: int, sums: Sums, prefix: str) -> int:
    """AKD, AED (changes since frame 0) and APD over frames 1.. where both have a face; returns frames missed."""
    from .head.base import HEAD_UNITS_PER_METRE
    from .metrics import aed, akd, apd
    from .metrics.motion import AKD_LANDMARKS, AKD_REFERENCE_SIZE

    missed = 0
    mm = 1000.0 / HEAD_UNITS_PER_METRE  # head units -> millimetres
    base_ok = gen_m[0] is not None and ref_m[0] is not None
    for t in range(1, len(gen_m)):
        g, r = gen_m[t], ref_m[t]
        if g is None or r is None:
            missed += 1
            continue
        if prefix == "self":
            scale = AKD_REFERENCE_SIZE / size
            sums.add("self_akd", akd(g.landmarks[None, :AKD_LANDMARKS] * scale, r.landmarks[None, :AKD_LANDMARKS] * scale))
        sums.add(f"{prefix}_apd", apd(g.angles[None], r.angles[None]))
        if base_ok:
            sums.add(f"{prefix}_aed", aed((g.expression - gen_m[0].expression)[None] * mm,
                                          (r.expression - ref_m[0].expression)[None] * mm))
    return missed


def _record(setting: str, clip: str, source: str, gen, ref, gen_m: list, ref_m: list, sums: Sums, totals: Sums,
            counts: dict, per_clip: list, settings: EvalSettings, out: Path | None) -> None:
    """Finish one re-enacted clip (`setting` "self" or "cross"): motion metrics against `ref_m`, the clip's sums
    into `totals`, counts, its `per_clip` row and (with `settings.save_frames`) a reference-over-generated strip."""
    missed = _motion_metrics(gen_m, ref_m, settings.resolution, sums, setting)
    for key, vals in sums.values.items():
        totals.add(key, vals)
    frames = len(gen) - 1
    counts["no_face_frames"] += missed
    counts["self_clips" if setting == "self" else "cross_pairs"] += 1
    counts[f"{setting}_frames"] += frames
    per_clip.append({"setting": setting, "clip": clip, "source": source, "frames": frames, "no_face_frames": missed,
                     **{k: sums.mean(k) for k in sums.values}})
    if out is not None and settings.save_frames:
        picks = np.linspace(1, frames, min(settings.save_frames, frames)).round().astype(int)
        name = clip if setting == "self" else f"{source}_{clip}"
        _save_strip(out / "frames" / f"{setting}_{name}.png", [[ref[t] for t in picks], [gen[t] for t in picks]])


def _save_strip(path: Path, rows: list) -> None:
    from PIL import Image

    strip = np.concatenate([np.concatenate([(r.permute(1, 2, 0).numpy() * 255 + 0.5).astype(np.uint8) for r in row], 1)
                            for row in rows], 0)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(strip).save(path)


# ---------------------------------------------------------------------------------------------- protocol
def evaluate(clips: list[Clip], photos: list[Path], settings: EvalSettings, pipe=None, out: Path | None = None) -> dict:
    """Run self- and cross-identity reenactment; returns `{"self": Sums, "cross": Sums, "per_clip": [...], ...}`."""
    import torch
    from tqdm.auto import tqdm

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
            if csim is not None:
                sums.add("self_csim", csim)
            _record("self", clip.name, clip.name, gen, gt, gen_m, gt_m, sums, self_sums, counts, per_clip, settings, out)
        if settings.cross:
            _cross(clips, photos, tracked, settings, pipe, measures, cross_sums, per_clip, skipped, counts, out)
    finally:
        measures.close()
    return {"self": self_sums, "cross": cross_sums, "per_clip": per_clip, "skipped": skipped, "counts": counts,
            "lpips_comparable": measures.lpips.comparable, "lpips_source": measures.lpips.backbone_source,
            "id_network": settings.id_network}


def _psnr(x, y, mask=None):
    from .metrics import psnr

    return psnr(x, y, mask=mask)


def _ssim(x, y):
    from .metrics import ssim

    return ssim(x, y)


def _cross(clips, photos, tracked, settings, pipe, measures, cross_sums, per_clip, skipped, counts, out) -> None:
    """Cross-identity reenactment: every source re-enacts every (other) tracked clip."""
    from tqdm.auto import tqdm

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
        _record("cross", clip_name, name, gen, tracked[clip_name][1], gen_m, drv_m, sums, cross_sums, counts, per_clip,
                settings, out)


# ---------------------------------------------------------------------------------------------- report
def comparability(result: dict) -> dict[str, str]:
    """Per column: is our number computed as the paper's is?"""
    same = "same metric (other data)"
    lpips = same if result["lpips_comparable"] else "no: random AlexNet trunk"
    csim = "ArcFace file given (other data)" if result["id_network"] else "n/a: no --id_network"
    sub = "substitute (MediaPipe)"
    return {"self_psnr": same, "self_ssim": same, "self_lpips": lpips, "self_csim": csim, "self_akd": sub,
            "self_aed": sub, "self_apd": sub, "cross_csim": csim, "cross_aed": sub, "cross_apd": sub}


def report(result: dict, settings: EvalSettings, data: Sequence[str], label: str) -> str:
    """The Markdown report: the table (ours + the paper's rows), counts, settings and units."""
    from .metrics.report import PAPER_ROWS, format_markdown_table

    ours = {**{k: result["self"].mean(k) for k in result["self"].values},
            **{k: result["cross"].mean(k) for k in result["cross"].values}}
    rows = [(label, ours), *PAPER_ROWS.items()]
    c = result["counts"]
    lines = [
        "## FHAvatar evaluation (paper §4.1 protocol, Tab. 1/2 layout)",
        "",
        format_markdown_table(rows, comparability(result)),
        "",
        f"- Data: {', '.join(str(d) for d in data)}; self-reenactment: {c['self_clips']} clips, {c['self_frames']} "
        f"frames; cross-identity: {c['cross_pairs']} source x clip pairs, {c['cross_frames']} frames; frames "
        f"where the tracker found no face in an output or reference (left out of AKD/AED/APD): {c['no_face_frames']}.",
        f"- Settings: {settings.max_frames} frames per clip (source included), stride {settings.frame_stride}, "
        f"{settings.resolution}² images, motion `{settings.mode}` rendered from the driving crop camera, pipeline "
        f"{settings.pipeline or f'built-in default (K={settings.uv_resolution})'}, LPIPS-{settings.lpips_net} trunk: "
        f"{result['lpips_source']}, identity network: {settings.id_network or 'none'}.",
        "- Units: PSNR dB over the whole image (background composited white); AKD pixels of a 512² crop (468 Face "
        "Mesh points); AED mm (OpenHead expression change since frame 0, per coordinate); APD degrees "
        "(yaw/pitch/roll). The paper's AKD/AED/APD use FAN, SMIRK and its own pose protocol: those columns are "
        "not comparable, and its numbers come from a trained model on VFHQ/HDTF.",
        f"- Self-reenactment PSNR inside the ground truth's foreground mask (head, neck and torso): "
        f"{_fmt(result['self'].mean('self_psnr_fg'))} dB; inside its Face Mesh face oval (the face alone): "
        f"{_fmt(result['self'].mean('self_psnr_face'))} dB.",
    ]
    if result["skipped"]:
        lines.append("- Skipped: " + "; ".join(result["skipped"]))
    return "\n".join(lines) + "\n"


def _fmt(value) -> str:
    return "n/a" if value is None else f"{value:.2f}"


def write_outputs(result: dict, settings: EvalSettings, data: Sequence[str], out: Path, label: str) -> dict[str, Path]:
    from .metrics.report import PAPER_ROWS, write_csv_table

    out.mkdir(parents=True, exist_ok=True)
    ours = {**{k: result["self"].mean(k) for k in result["self"].values},
            **{k: result["cross"].mean(k) for k in result["cross"].values}}
    paths = {"markdown": out / "metrics.md", "csv": out / "metrics.csv", "per_clip": out / "per_clip.csv",
             "settings": out / "settings.json"}
    paths["markdown"].write_text(report(result, settings, data, label))
    write_csv_table(paths["csv"], [(label, ours), *PAPER_ROWS.items()], comparability(result))
    keys = sorted({k for row in result["per_clip"] for k in row} - {"setting", "clip", "source", "frames", "no_face_frames"})
    with paths["per_clip"].open("w", newline="") as handle:
        writer = csv.DictWriter(handle, ["setting", "clip", "source", "frames", "no_face_frames", *keys])
        writer.writeheader()
        writer.writerows(result["per_clip"])
    paths["settings"].write_text(json.dumps({
        "settings": asdict(settings), "data": [str(d) for d in data], "counts": result["counts"],
        "skipped": result["skipped"], "date": datetime.datetime.now().isoformat(timespec="seconds"),
        "machine": f"{platform.machine()} {platform.processor() or ''}".strip(), "python": sys.version.split()[0],
    }, indent=2))
    return paths


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
        if value is not None and not Path(value).is_file():
            raise FileNotFoundError(f"--{name} {value!r} does not exist")
    return EvalSettings(max_frames=args.max_frames, frame_stride=args.frame_stride, resolution=args.resolution,
                        uv_resolution=args.uv_resolution, mode=args.mode, lpips_net=args.lpips_net,
                        lpips_backbone=args.lpips_backbone, id_network=args.id_network, cross=not args.no_cross,
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
