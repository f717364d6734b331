"""What `python -m fhavatar.evaluate` measures and writes: per-frame metric sums, the ground truth frames, the metric
networks, per-clip bookkeeping, and the report (`metrics.md`, `metrics.csv`, `per_clip.csv`, `settings.json`).

`fhavatar/evaluate.py` (inputs, the protocol and the command line) documents the protocol and imports all of this.
"""

from __future__ import annotations

import csv
import datetime
import json
import logging
import math
import platform
import sys
import warnings
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

__all__ = ["EvalSettings", "Sums", "comparability", "ground_truth", "report", "write_outputs"]

logger = logging.getLogger(__name__)


@dataclass
class EvalSettings:
    """Every knob of one evaluation run (written to `settings.json` and beside the table)."""

    max_frames: int = 16  # frames per clip used (after striding), the source frame included
    frame_stride: int = 1  # keep every n-th frame of each clip
    resolution: int = 256  # side of the compared images (renders and ground truth), pixels
    uv_resolution: int = 256  # K of the built-in default pipeline (ignored with --pipeline)
    mode: str = "relative"  # motion transfer, see `fhavatar.animation.transfer_motion`
    lpips_net: str = "alex"
    lpips_backbone: str | None = None
    id_network: str | None = None
    dlib_csim: bool = True  # CSIM (dlib), the labelled identity substitute that needs no user file
    cross: bool = True  # also run cross-identity reenactment
    cross_sources: str = "both"  # "photos" | "clips" | "both": what re-enacts other clips
    max_cross_pairs: int | None = None
    pipeline: str | None = None  # None: FHAvatarPipeline.default()
    device: str = "cpu"
    save_frames: int = 0


@dataclass
class Sums:
    """Per-metric running values (a list of per-frame numbers)."""

    values: dict[str, list[float]] = field(default_factory=lambda: defaultdict(list))

    def add(self, key: str, numbers) -> None:
        self.values[key].extend(float(v) for v in np.atleast_1d(np.asarray(numbers, dtype=np.float64)))

    def mean(self, key: str) -> float | None:
        vals = [v for v in self.values.get(key, []) if not math.isnan(v)]  # inf PSNR (identical frames) counts
        return float(np.mean(vals)) if vals else None


# ---------------------------------------------------------------------------------------------- scoring
def _to_tensor(images: list[np.ndarray], size: int):  # uint8 [H, W, C] list -> [N, C, size, size] in [0, 1]
    x = torch.from_numpy(np.stack(images)).float() / 255.0
    x = x[..., None] if x.ndim == 3 else x
    x = x.permute(0, 3, 1, 2)
    if x.shape[-1] != size or x.shape[-2] != size:
        x = F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False, antialias=True)
    return x.clamp(0, 1)


def ground_truth(tracks: list, size: int, background) -> tuple:  # -> [T, 3, S, S], [T, 1, S, S]
    """The tracker's crops composited on `background` with their masks, at `size`² (the paper's bg removal)."""
    images = _to_tensor([t.image for t in tracks], size)
    if all(t.mask is not None for t in tracks):
        masks = _to_tensor([(np.clip(t.mask, 0, 1) * 255).astype(np.uint8) for t in tracks], size)
    else:
        masks = torch.ones(len(tracks), 1, size, size)
    bg = torch.as_tensor(background, dtype=images.dtype).view(1, 3, 1, 1)
    return images * masks + bg * (1 - masks), masks


class _Measures:
    """The metric networks of one run: LPIPS, the optional ArcFace network, dlib's identity embedder (CSIM (dlib)),
    the motion analyzer."""

    def __init__(self, settings: EvalSettings, head) -> None:
        # Lazy: `.metrics` and `.head` import diffusers (~2 s), which `evaluate --help` never needs.
        from .metrics import MotionAnalyzer, load_identity_network, load_lpips

        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # the "not comparable" warning is carried by the table instead
            self.lpips = load_lpips(settings.lpips_net, settings.lpips_backbone, allow_random=settings.lpips_backbone is None)
        self.identity = load_identity_network(settings.id_network) if settings.id_network else None
        self.dlib, self.dlib_status, self.dlib_missed = None, "off (--no_dlib_csim)", 0
        if settings.dlib_csim:
            from .metrics.identity import load_dlib_embedder

            try:
                self.dlib = load_dlib_embedder()
                self.dlib_status = f"dlib ResNet ({self.dlib.source})"
            except (ImportError, OSError, ValueError) as error:  # not installed, or not the expected files
                self.dlib_status = f"unavailable ({' '.join(str(error).split())})"
                logger.warning("CSIM (dlib) left out: %s", error)
        self.analyzer = MotionAnalyzer(head)

    def analyze(self, frames):  # [T, 3, S, S] -> list[FaceMotion | None]
        return [self.analyzer(frame) for frame in frames]

    def csim(self, generated, reference, gen_motion, ref_motion):  # [T,3,S,S] x2 -> [T] or None
        if self.identity is None:
            return None
        values = []
        for t in range(len(generated)):
            lms = [None if m is None else torch.as_tensor(m.five_points, dtype=torch.float32)[None]
                   for m in (gen_motion[t], ref_motion[t])]
            if (lms[0] is None) != (lms[1] is None):  # same alignment on both sides: fixed when one has no face
                lms = [None, None]
            values.append(float(self.identity.similarity(generated[t : t + 1], reference[t : t + 1], *lms)[0]))
        return np.array(values)

    def csim_dlib(self, generated, reference):  # [T,3,S,S], [T or 1,3,S,S] -> ([N], [N] 0/1) or None
        """CSIM (dlib) and dlib's same-person verdict (0/1) of the frames where dlib finds a face in both images;
        the others are counted in `dlib_missed`. A single reference image serves every generated frame."""
        # Lazy: `.metrics` and `.head` import diffusers (~2 s), which `evaluate --help` never needs.
        from .metrics.identity import DLIB_SAME_PERSON_DISTANCE, dlib_similarity

        if self.dlib is None:
            return None
        gen, ref = self.dlib.embed_each(generated, "generated"), self.dlib.embed_each(reference, "reference")
        ref = ref * len(gen) if len(ref) == 1 else ref
        distances = np.array([np.linalg.norm(g - r) for g, r in zip(gen, ref) if g is not None and r is not None])
        self.dlib_missed += len(gen) - len(distances)
        return dlib_similarity(distances), (distances <= DLIB_SAME_PERSON_DISTANCE).astype(np.float64)

    def close(self) -> None:
        self.analyzer.close()


def _motion_metrics(gen_m: list, ref_m: list, size: int, sums: Sums, prefix: str) -> int:
    """AKD, AED (changes since frame 0) and APD over frames 1.. where both have a face; returns frames missed."""
    # Lazy: `.metrics` and `.head` import diffusers (~2 s), which `evaluate --help` never needs.
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
    strip = np.concatenate([np.concatenate([(r.permute(1, 2, 0).numpy() * 255 + 0.5).astype(np.uint8) for r in row], 1)
                            for row in rows], 0)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(strip).save(path)


def _psnr(x, y, mask=None):
    # Lazy: `.metrics` and `.head` import diffusers (~2 s), which `evaluate --help` never needs.
    from .metrics import psnr

    return psnr(x, y, mask=mask)


def _ssim(x, y):
    # Lazy: `.metrics` and `.head` import diffusers (~2 s), which `evaluate --help` never needs.
    from .metrics import ssim

    return ssim(x, y)


# ---------------------------------------------------------------------------------------------- report
def comparability(result: dict) -> dict[str, str]:
    """Per column: is our number computed as the paper's is?"""
    same = "same metric (other data)"
    lpips = same if result["lpips_comparable"] else "no: random AlexNet trunk"
    csim = "ArcFace file given (other data)" if result["id_network"] else "n/a: no --id_network"
    dlib = result.get("dlib", {})
    dlib_csim = ("no: substitute (dlib ResNet, 1 − d/1.2)" if dlib.get("available") else
                 "n/a: --no_dlib_csim" if str(dlib.get("status", "")).startswith("off") else "n/a: dlib unavailable")
    sub = "substitute (MediaPipe)"
    return {"self_psnr": same, "self_ssim": same, "self_lpips": lpips, "self_csim": csim, "self_csim_dlib": dlib_csim,
            "self_akd": sub, "self_aed": sub, "self_apd": sub, "cross_csim": csim, "cross_csim_dlib": dlib_csim,
            "cross_aed": sub, "cross_apd": sub}


def report(result: dict, settings: EvalSettings, data: Sequence[str], label: str) -> str:
    """The Markdown report: the table (ours + the paper's rows), counts, settings and units."""
    # Lazy: `.metrics` and `.head` import diffusers (~2 s), which `evaluate --help` never needs.
    from .metrics.report import PAPER_ROWS, format_markdown_table

    ours = _our_means(result)
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
        _identity_line(result),
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


def _identity_line(result: dict) -> str:
    """What CSIM (dlib) is, its same-person rates and the frames it could not score."""
    dlib = result.get("dlib", {})
    if not dlib.get("available"):
        return f"- CSIM (dlib): n/a, the dlib identity measure is {dlib.get('status', 'not run')}."
    rates = [f"{setting} {100 * mean:.0f} %" for setting in ("self", "cross")
             if (mean := result[setting].mean(f"{setting}_same_person_dlib")) is not None]
    return ("- CSIM (dlib): a labelled substitute for the paper's ArcFace CSIM, not comparable with it: 1 − d/1.2, d the "
            "Euclidean distance of dlib's face-recognition ResNet descriptors (`fhavatar.metrics.identity`), so dlib's "
            f"same-person threshold d = 0.6 reads 0.5; frames judged the same person (d ≤ 0.6): {', '.join(rates) or 'n/a'}; "
            f"frames where dlib found no face in an output or reference (left out): {dlib['no_face_frames']}.")


def _our_means(result: dict) -> dict[str, float | None]:
    """Every metric of the run (self- and cross-identity), averaged over its frames: our row of the tables."""
    return {**{k: result["self"].mean(k) for k in result["self"].values},
            **{k: result["cross"].mean(k) for k in result["cross"].values}}


def _fmt(value) -> str:
    return "n/a" if value is None else f"{value:.2f}"


def write_outputs(result: dict, settings: EvalSettings, data: Sequence[str], out: Path, label: str) -> dict[str, Path]:
    # Lazy: `.metrics` and `.head` import diffusers (~2 s), which `evaluate --help` never needs.
    from .metrics.report import PAPER_ROWS, write_csv_table

    out.mkdir(parents=True, exist_ok=True)
    ours = _our_means(result)
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
