"""Talking-head videos -> an FHAvatar training dataset (the format of `training/_dataset_format.py`).

Per clip (paper §4.1: camera pose, crop and background removal per frame; `training/_preprocess_clip.py`): the
tracker's 512² PanoHead-style crops with their cameras and OpenHead parameters, foreground masks (the background
replaced by white unless `--keep_background`) and, with `--prior`, `--num_prior_views` novel views per frame
rendered by a `PanoHeadPrior` from cameras orbited around the head (paper §3.5: pseudo multi-view supervision).

Robust at scale:
- **resumable**: a finished clip has a `done` file, written last; re-runs skip it. A clip folder without it is
  partial (an interrupted run) and is redone from scratch. Clips without a face get a `skipped.json` marker and
  are not tracked again.
- **parallel** over clips (`--num_workers` processes, each with its own MediaPipe graphs and prior);
- **sharded** across machines (`--num_shards N --shard_index i`: shard i takes every N-th video of the sorted
  list and writes `manifest-shard-iiofNN.jsonl`); `python training/preprocess.py merge ROOT` then writes
  `manifest.jsonl`, `skipped.jsonl` and `dataset.json`. A single-shard run merges by itself.

Usage (from the repository root; `PYTHONPATH=. python training/preprocess.py ...` works the same)::

    python -m training.preprocess VIDEOS_DIR OUT_ROOT --resolution 512 --frame_stride 2 --max_frames 200 \
        --num_workers 4 [--prior PANOHEAD_DIR] [--num_shards 8 --shard_index 0]
    python -m training.preprocess merge OUT_ROOT
"""

from __future__ import annotations

import argparse
import json
import logging
import multiprocessing
import re
import sys
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
from tqdm.auto import tqdm

from fhavatar.head.open_head import OpenHead
from fhavatar.tracking import FaceLandmarker
from training._dataset_format import (
    DATASET_FILE,
    DONE_FILE,
    MANIFEST_FILE,
    SKIPPED_FILE,
    make_dataset_info,
    read_jsonl,
    write_json_atomic,
    write_jsonl_atomic,
)
from training._preprocess_clip import TRACK_SIZE, PreprocessConfig, clip_state, load_prior, preprocess_clip

__all__ = [
    "PreprocessConfig", "PreprocessSummary", "clip_name", "find_videos", "merge_shards", "preprocess_clip",
    "preprocess_videos",
]

logger = logging.getLogger(__name__)

VIDEO_SUFFIXES = (".mp4", ".mov", ".webm", ".avi", ".mkv", ".m4v")
#: Settings that must agree between runs writing into one dataset root.
_SHARED_SETTINGS = ("resolution", "max_frames", "frame_stride", "keep_background", "num_prior_views")


@dataclass
class PreprocessSummary:
    """What one `preprocess_videos` run did (clip names)."""

    processed: list[str] = field(default_factory=list)  # tracked and written now
    reused: list[str] = field(default_factory=list)  # finished by an earlier run
    skipped: list[dict] = field(default_factory=list)  # left out: {"clip", "source", "reason"}
    failed: list[dict] = field(default_factory=list)  # crashed (retried by the next run): {"clip", "source", "reason"}


# ---------------------------------------------------------------------------------------------- clip lists
def find_videos(input_path) -> list[Path]:
    """Video files (`VIDEO_SUFFIXES`) under a folder, recursively, sorted; or the one file given."""
    path = Path(input_path)
    if path.is_file():
        return [path]
    if not path.is_dir():
        raise FileNotFoundError(f"`input_dir`: no folder or video at {str(path)!r}.")
    videos = sorted(p for p in path.rglob("*") if p.is_file() and p.suffix.lower() in VIDEO_SUFFIXES)
    if not videos:
        raise FileNotFoundError(f"`input_dir`: {str(path)!r} holds no video ({', '.join(VIDEO_SUFFIXES)}).")
    return videos


def clip_name(video: Path, input_dir: Path) -> str:
    """A file-system-safe clip name: the video's path under `input_dir` without suffix, '/' -> '__'."""
    base = Path(input_dir)
    relative = video.relative_to(base) if base.is_dir() else Path(video.name)
    name = "__".join(relative.with_suffix("").parts)
    return re.sub(r"[^A-Za-z0-9._-]+", "_", name).strip("._") or "clip"


def _shard_tag(num_shards: int, shard_index: int) -> str:
    return f"shard-{shard_index:02d}of{num_shards:02d}"


# ---------------------------------------------------------------------------------------------- workers
_WORKER: dict = {}


def _init_worker(config: PreprocessConfig, prior_model=None, worker_process: bool = False) -> None:
    """Per-process state: one MediaPipe landmarker (video mode), one OpenHead and the prior, made once."""
    if worker_process:
        torch.set_num_threads(1)  # processes, not threads, give the parallelism
    _WORKER.clear()
    _WORKER.update(config=config, landmarker=FaceLandmarker(mode="video"), head=OpenHead(),
                   prior=prior_model if prior_model is not None else (load_prior(config.prior) if config.prior else None))


def _run_job(job: tuple[str, str, str]) -> dict:
    """Process one `(video, clip_dir, name)` in a worker; crashes become a `failed` entry, not a dead pool."""
    video, clip_dir, name = job
    try:
        return preprocess_clip(Path(video), Path(clip_dir), name, _WORKER["config"], _WORKER["landmarker"],
                               _WORKER["head"], _WORKER["prior"])
    except Exception as err:  # noqa: BLE001 - one broken clip must not stop a dataset-sized run
        logger.exception("clip %s failed", name)
        return {"clip": name, "source": str(video), "skipped": True, "failed": True,
                "reason": f"{type(err).__name__}: {err}"}


def _shared_settings(config: PreprocessConfig, has_prior: bool) -> dict:
    settings = {k: v for k, v in asdict(config).items() if k in _SHARED_SETTINGS}
    settings["num_prior_views"] = config.num_prior_views if has_prior else 0
    return settings


def _check_settings(root: Path, mine: dict) -> None:
    for path in sorted(root.glob("settings-shard-*.json")):
        theirs = {k: v for k, v in json.loads(path.read_text()).items() if k in _SHARED_SETTINGS}
        if theirs != mine:
            raise ValueError(f"`output_root` {str(root)!r} was made with other settings ({path.name}: {theirs}); this run "
                             f"has {mine}. Use a new output folder or the same settings.")


def preprocess_videos(input_dir, output_root, config: PreprocessConfig | None = None, num_workers: int = 1,
                      num_shards: int = 1, shard_index: int = 0, merge: bool = True, progress: bool = True,
                      prior_model=None) -> PreprocessSummary:
    """Preprocess this shard's videos of `input_dir` into `output_root` (resumable; see the module docstring).

    Args:
        input_dir (path): a folder searched recursively for videos (or one video file).
        output_root (path): the dataset folder (clips under `clips/<name>`).
        config (`PreprocessConfig`, *optional*): the settings (defaults: 512², all frames, no prior).
        num_workers (`int`, *optional*, defaults to 1): processes (1: in this process).
        num_shards, shard_index (`int`, *optional*): process videos `shard_index::num_shards` of the sorted list.
        merge (`bool`, *optional*, defaults to True): with a single shard, write `manifest.jsonl` and
            `dataset.json` at the end (sharded runs call `merge_shards` once every shard is done).
        progress (`bool`, *optional*, defaults to True): a tqdm bar over clips.
        prior_model (*optional*): an in-memory prior (`encode`/`render`) instead of `config.prior` (one process only).

    Returns:
        `PreprocessSummary`.
    """
    config = config if config is not None else PreprocessConfig()
    for name, value, lo in (("num_workers", num_workers, 1), ("num_shards", num_shards, 1)):
        if not isinstance(value, int) or isinstance(value, bool) or value < lo:
            raise ValueError(f"`{name}` must be an int >= {lo}, got {value!r}.")
    if not isinstance(shard_index, int) or not 0 <= shard_index < num_shards:
        raise ValueError(f"`shard_index` must be an int in [0, {num_shards}), got {shard_index!r}.")
    if prior_model is not None and num_workers > 1:
        raise ValueError("`prior_model` objects work with num_workers=1 only; pass `config.prior` (a folder) instead.")
    if prior_model is not None:
        config = PreprocessConfig(**{**asdict(config), "prior": None})
    input_dir, root = Path(input_dir), Path(output_root)
    videos = find_videos(input_dir)[shard_index::num_shards]
    root.mkdir(parents=True, exist_ok=True)
    shared = _shared_settings(config, config.prior is not None or prior_model is not None)
    _check_settings(root, shared)
    tag = _shard_tag(num_shards, shard_index)
    write_json_atomic(root / f"settings-{tag}.json", {**asdict(config), **shared})

    summary, entries, jobs = PreprocessSummary(), [], []  # entries: finished earlier, then new
    names = [clip_name(v, input_dir) for v in videos]
    if len(set(names)) != len(names):
        clash = sorted({n for n in names if names.count(n) > 1})
        raise ValueError(f"`input_dir`: several videos map to the same clip names {clash}; rename them.")
    for video, name in zip(videos, names):
        clip_dir = root / "clips" / name
        state = clip_state(clip_dir)
        if state is not None:
            entries.append(state)
            if state.get("skipped"):
                summary.skipped.append(state)
            else:
                summary.reused.append(name)
        else:
            jobs.append((str(video), str(clip_dir), name))
    logger.info("%s: %d videos, %d already done, %d to process", tag, len(videos), len(videos) - len(jobs), len(jobs))
    bar = tqdm(total=len(jobs), desc=f"preprocess {tag}", unit="clip", disable=not progress)
    if num_workers == 1:
        _init_worker(config, prior_model)
        try:
            for job in jobs:
                entries.append(_run_job(job))
                bar.update(1)
        finally:
            _WORKER["landmarker"].close()
            _WORKER.clear()
    else:
        # "spawn": MediaPipe and torch threads do not survive fork() safely.
        with ProcessPoolExecutor(num_workers, mp_context=multiprocessing.get_context("spawn"),
                                 initializer=_init_worker, initargs=(config, None, True)) as pool:
            for future in as_completed([pool.submit(_run_job, job) for job in jobs]):
                entries.append(future.result())
                bar.update(1)
    bar.close()
    for entry in entries[len(videos) - len(jobs):]:
        if entry.get("failed"):
            summary.failed.append(entry)
        elif entry.get("skipped"):
            summary.skipped.append(entry)
        else:
            summary.processed.append(entry["clip"])
    entries.sort(key=lambda e: e["clip"])
    write_jsonl_atomic(root / f"manifest-{tag}.jsonl", [e for e in entries if not e.get("skipped")])
    write_jsonl_atomic(root / f"skipped-{tag}.jsonl", [e for e in entries if e.get("skipped")])
    logger.info("%s: %d processed, %d reused, %d skipped, %d failed", tag, len(summary.processed), len(summary.reused),
                len(summary.skipped), len(summary.failed))
    if merge and num_shards == 1:
        merge_shards(root)
    return summary


def merge_shards(root) -> dict:
    """Join the shard manifests of `root` into `manifest.jsonl`, `skipped.jsonl` and `dataset.json`.

    Raises:
        FileNotFoundError: no shard manifest, or a shard (of `num_shards`) or a listed clip folder is missing.
        ValueError: shards disagree (settings, shard counts) or list a clip twice.
    """
    root = Path(root)
    manifests = sorted(root.glob("manifest-shard-*.jsonl"))
    if not manifests:
        raise FileNotFoundError(f"`root`: {str(root)!r} holds no manifest-shard-*.jsonl; run preprocess.py first.")
    tags = [re.fullmatch(r"manifest-(shard-(\d+)of(\d+))\.jsonl", p.name) for p in manifests]
    totals = {int(m.group(3)) for m in tags if m}
    if len(totals) != 1:
        raise ValueError(f"`root`: shard manifests from runs with different --num_shards ({sorted(totals)}) in "
                         f"{str(root)!r}; delete the stale ones.")
    total = totals.pop()
    have = {int(m.group(2)) for m in tags if m}
    missing = sorted(set(range(total)) - have)
    if missing:
        raise FileNotFoundError(f"`root`: shards {missing} of {total} have not finished (no manifest-shard file).")
    settings = [json.loads((root / f"settings-{m.group(1)}.json").read_text()) for m in tags if m]
    shared = [{k: s.get(k) for k in _SHARED_SETTINGS} for s in settings]
    if any(s != shared[0] for s in shared):
        raise ValueError(f"`root`: shards of {str(root)!r} were made with different settings: {shared}.")
    entries, skipped = [], []
    for m in tags:
        entries += read_jsonl(root / f"manifest-{m.group(1)}.jsonl")
        path = root / f"skipped-{m.group(1)}.jsonl"
        skipped += read_jsonl(path) if path.is_file() else []
    names = [e["clip"] for e in entries]
    if len(set(names)) != len(names):
        raise ValueError(f"`root`: clips listed by several shards: {sorted({n for n in names if names.count(n) > 1})}.")
    for entry in entries:
        if not (root / entry["dir"] / DONE_FILE).is_file():
            raise FileNotFoundError(f"`root`: clip {entry['clip']!r} is listed but {str(root / entry['dir'])!r} has no "
                                    "`done` file; re-run its shard.")
    entries.sort(key=lambda e: e["clip"])
    write_jsonl_atomic(root / MANIFEST_FILE, entries)
    write_jsonl_atomic(root / SKIPPED_FILE, sorted(skipped, key=lambda e: e["clip"]))
    info = make_dataset_info(shared[0]["resolution"], len(entries), sum(e["num_frames"] for e in entries),
                             shared[0]["num_prior_views"])
    write_json_atomic(root / DATASET_FILE, info)
    if not entries:
        logger.warning("merge: no usable clip in %s (%d skipped; see %s)", root, len(skipped), SKIPPED_FILE)
    logger.info("merge: %d clips, %d frames, %d skipped -> %s", len(entries), info["num_frames"], len(skipped), root)
    return info


# ---------------------------------------------------------------------------------------------- command line
def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description="Preprocess talking-head videos into an FHAvatar dataset "
                                     "(`preprocess.py merge ROOT` joins shards).")
    parser.add_argument("input_dir", help="folder of videos (searched recursively) or one video")
    parser.add_argument("output_root", help="dataset folder")
    parser.add_argument("--resolution", type=int, default=TRACK_SIZE)
    parser.add_argument("--max_frames", type=int, default=None)
    parser.add_argument("--frame_stride", type=int, default=1)
    parser.add_argument("--smoothing", type=float, default=1.0)
    parser.add_argument("--min_face_fraction", type=float, default=0.5)
    parser.add_argument("--keep_background", action="store_true")
    parser.add_argument("--prior", default=None, help="PanoHeadPrior folder: also cache prior novel views")
    parser.add_argument("--num_prior_views", type=int, default=2)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--num_workers", type=int, default=1)
    parser.add_argument("--num_shards", type=int, default=1)
    parser.add_argument("--shard_index", type=int, default=0)
    parser.add_argument("--no_merge", action="store_true", help="do not write manifest.jsonl/dataset.json")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    try:
        if argv[:1] == ["merge"]:
            merge = argparse.ArgumentParser(description="Join shard manifests into manifest.jsonl + dataset.json.")
            merge.add_argument("root")
            info = merge_shards(merge.parse_args(argv[1:]).root)
            print(json.dumps(info))
            return 0
        args = _parser().parse_args(argv)
        config = PreprocessConfig(resolution=args.resolution, max_frames=args.max_frames, frame_stride=args.frame_stride,
                                  smoothing=args.smoothing, min_face_fraction=args.min_face_fraction,
                                  keep_background=args.keep_background, prior=args.prior,
                                  num_prior_views=args.num_prior_views, seed=args.seed)
        summary = preprocess_videos(args.input_dir, args.output_root, config, num_workers=args.num_workers,
                                    num_shards=args.num_shards, shard_index=args.shard_index, merge=not args.no_merge)
    except (ValueError, FileNotFoundError, ImportError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(f"processed {len(summary.processed)}, reused {len(summary.reused)}, skipped {len(summary.skipped)}, "
          f"failed {len(summary.failed)}")
    for entry in summary.skipped + summary.failed:
        print(f"  skipped {entry['clip']}: {entry['reason']}")
    return 1 if summary.failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
