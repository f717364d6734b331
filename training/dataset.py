"""`FHAvatarDataset`: training pairs from a preprocessed (or synthetic) FHAvatar dataset (paper §3.5).

Each item is indexed by a *driving frame* of the split. The paper switches at random between two modes:

- **animation mode**: the source image is another frame of the same clip (same identity); the target is the
  driving frame, re-enacted with its head-model parameters and seen from its camera;
- **3D-reconstruction mode**: the driving frame is its own source; the targets are that frame and its cached
  prior novel views (PanoHead inversion renders, or the synthetic dataset's extra renders). The paper uses this
  mode because inverted novel views of different frames of one video disagree on the unseen parts of the head.

Targets always have V = 1 + `num_prior_views` slots when the dataset has prior views (else 1), so batches stack;
unused slots (animation mode) are padding with `target_weights` 0: zero images and masks, and the driving frame's
camera and parameters (so that nothing downstream sees an invalid camera).

The mode (and the source frame, and which prior views) is drawn from a `torch.Generator` seeded from
`(seed, epoch, index)`: an item is reproducible whatever the worker that loads it; call `set_epoch` each epoch.
"""

from __future__ import annotations

import bisect
import hashlib
import logging
import os
from pathlib import Path
from typing import Literal

import torch
from torch import Tensor
from torch.utils.data import Dataset

from fhavatar.io import checked_file
from training._dataset_format import (
    FRAMES_DIR,
    MANIFEST_FILE,
    MASKS_DIR,
    PRIOR_CAMERAS_FILE,
    PRIOR_DIR,
    PRIOR_MASKS_DIR,
    TRACKING_FILE,
    frame_file,
    load_mask,
    load_rgb,
    prior_file,
    read_dataset_info,
    read_jsonl,
    read_prior_cameras,
    read_tracking,
)

__all__ = ["FHAvatarDataset", "collate_fn", "split_clips"]

logger = logging.getLogger(__name__)

_SPLITS = ("train", "val", "all")
#: Keys of an item that `collate_fn` keeps as lists instead of stacking.
_LIST_KEYS = ("mode", "clip")


def _name_hash(name: str) -> int:
    """A stable (process- and platform-independent) hash of a clip name (Python's `hash` is salted per process)."""
    return int.from_bytes(hashlib.sha256(name.encode("utf-8")).digest()[:8], "big")


def split_clips(names: list[str], val_fraction: float) -> tuple[list[str], list[str]]:
    """Deterministic train/val split by clip name: the `round(val_fraction * n)` clips (at least one when
    `val_fraction > 0` and `n >= 2`, at most `n - 1`) with the smallest name hashes are validation clips.

    Hash order keeps the split stable: adding clips to a dataset only moves clips across the boundary.

    Returns:
        `(train, val)` name lists, each in the order of `names`.
    """
    n = len(names)
    num_val = round(val_fraction * n)
    if val_fraction > 0 and n >= 2:
        num_val = min(max(num_val, 1), n - 1)
    val = set(sorted(names, key=lambda name: (_name_hash(name), name))[:num_val])
    return [c for c in names if c not in val], [c for c in names if c in val]


def _mix_seed(*values: int) -> int:
    """One 63-bit seed from several ints (SplitMix64 steps), so nearby (seed, epoch, index) give unrelated draws."""
    state = 0x9E3779B97F4A7C15
    for value in values:
        state = (state ^ (int(value) & 0xFFFFFFFFFFFFFFFF)) * 0xBF58476D1CE4E5B9 & 0xFFFFFFFFFFFFFFFF
        state = (state ^ (state >> 31)) * 0x94D049BB133111EB & 0xFFFFFFFFFFFFFFFF
    return state >> 1


class FHAvatarDataset(Dataset):
    """Source/target pairs of a FHAvatar dataset (`training/_dataset_format.py` describes the files).

    Args:
        root (`str` or `os.PathLike`): the dataset folder (holding `dataset.json` and `manifest.jsonl`).
        split (`"train"`, `"val"` or `"all"`, *optional*, defaults to `"train"`): clips split by name (`split_clips`).
        val_fraction (`float`, *optional*, defaults to 0.1): share of the clips in `"val"`.
        reconstruction_probability (`float`, *optional*, defaults to 0.5): chance of the 3D-reconstruction mode.
        num_prior_views (`int`, *optional*, defaults to 2): prior views per reconstruction-mode item (chosen at
            random among those stored when fewer are asked for); ignored when the dataset has none.
        resolution (`int`, *optional*): resize images and masks to `resolution` squared on load (default: stored R).
        seed (`int`, *optional*, defaults to 0): seed of the per-item draws.

    Items (`__getitem__(i)`, i indexes the driving frames of the split), R the resolution, V the target slots:
        `source_image [3, R, R]` in [0, 1], `source_mask [1, R, R]`, `source_cam2world [4, 4]`,
        `source_intrinsics [3, 3]` (normalised), `source_params` (dict of `OpenHeadParams` fields, no batch dim),
        `target_images [V, 3, R, R]`, `target_masks [V, 1, R, R]`, `target_cam2world [V, 4, 4]`,
        `target_intrinsics [V, 3, 3]`, `target_params` (dict, `[V, ...]`), `target_weights [V]` (1 valid, 0 padding),
        `mode` (`"animation"` or `"reconstruction"`), `clip` (`str`), `source_frame` and `target_frame` (`int`).

    Example:
        ```py
        >>> from torch.utils.data import DataLoader
        >>> from training.dataset import FHAvatarDataset, collate_fn
        >>> data = FHAvatarDataset("out/synthetic", split="train", resolution=64)  # doctest: +SKIP
        >>> batch = next(iter(DataLoader(data, batch_size=4, shuffle=True, collate_fn=collate_fn)))  # doctest: +SKIP
        >>> batch["target_images"].shape  # doctest: +SKIP
        torch.Size([4, 3, 3, 64, 64])
        ```
    """

    def __init__(
        self,
        root: str | os.PathLike,
        split: Literal["train", "val", "all"] = "train",
        val_fraction: float = 0.1,
        reconstruction_probability: float = 0.5,
        num_prior_views: int = 2,
        resolution: int | None = None,
        seed: int = 0,
    ) -> None:
        self._check_args(split, val_fraction, reconstruction_probability, num_prior_views, resolution, seed)
        self.root = Path(root)
        self.info = read_dataset_info(self.root)
        self.split = split
        self.reconstruction_probability = float(reconstruction_probability)
        self.stored_resolution = int(self.info["resolution"])
        self.resolution = self.stored_resolution if resolution is None else int(resolution)
        self.seed = int(seed)
        self.epoch = 0
        entries = self._read_manifest()
        stored_views = int(self.info["num_prior_views"]) if self.info.get("has_prior_views") else 0
        if stored_views and num_prior_views > stored_views:
            raise ValueError(f"`num_prior_views` must be at most the {stored_views} prior views per frame stored in "
                             f"{str(self.root)!r}, got {num_prior_views}.")
        if not stored_views and num_prior_views:
            logger.info("%s has no prior views: targets have 1 slot (`num_prior_views` ignored)", self.root)
        self.num_prior_views = min(int(num_prior_views), stored_views)
        self.stored_prior_views = stored_views
        names = [e["clip"] for e in entries]
        train, val = split_clips(names, float(val_fraction))
        chosen = set(names if split == "all" else train if split == "train" else val)
        self.clips = [e for e in entries if e["clip"] in chosen]
        if not self.clips:
            raise ValueError(f"`split`={split!r} of {str(self.root)!r} holds no clip ({len(entries)} clips, "
                             f"val_fraction={val_fraction}); use split='all' or another `val_fraction`.")
        for entry in self.clips:
            self._check_clip(entry)
        self._offsets = [0]
        for entry in self.clips:
            self._offsets.append(self._offsets[-1] + entry["num_frames"])
        self._warned_prior_masks = False

    # ------------------------------------------------------------------ construction checks
    @staticmethod
    def _check_args(split, val_fraction, reconstruction_probability, num_prior_views, resolution, seed) -> None:
        if split not in _SPLITS:
            raise ValueError(f"`split` must be one of {_SPLITS}, got {split!r}.")
        if not (isinstance(val_fraction, (int, float)) and 0.0 <= val_fraction < 1.0):
            raise ValueError(f"`val_fraction` must be a number in [0, 1), got {val_fraction!r}.")
        if not (isinstance(reconstruction_probability, (int, float)) and 0.0 <= reconstruction_probability <= 1.0):
            raise ValueError(f"`reconstruction_probability` must be a number in [0, 1], got {reconstruction_probability!r}.")
        if not isinstance(num_prior_views, int) or isinstance(num_prior_views, bool) or num_prior_views < 0:
            raise ValueError(f"`num_prior_views` must be a non-negative int, got {num_prior_views!r}.")
        if resolution is not None and (not isinstance(resolution, int) or isinstance(resolution, bool) or resolution < 8):
            raise ValueError(f"`resolution` must be an int >= 8 or None, got {resolution!r}.")
        if not isinstance(seed, int) or isinstance(seed, bool):
            raise ValueError(f"`seed` must be an int, got {seed!r}.")

    def _read_manifest(self) -> list[dict]:
        path = checked_file(self.root / MANIFEST_FILE, "`root`: the manifest",
                            f"After sharded preprocessing run `python training/preprocess.py merge {self.root}`.")
        entries = [e for e in read_jsonl(path) if not e.get("skipped", False)]
        if not entries:
            raise ValueError(f"`root`: the manifest {str(path)!r} lists no clip; preprocessing found no usable video "
                             "(see skipped.jsonl beside it).")
        for number, entry in enumerate(entries, 1):
            missing = [k for k in ("clip", "dir", "num_frames") if k not in entry]
            if missing:
                raise ValueError(f"{str(path)!r}: entry {number} lacks {missing}: {entry}.")
            if not isinstance(entry["num_frames"], int) or entry["num_frames"] < 1:
                raise ValueError(f"{str(path)!r}: clip {entry['clip']!r} has num_frames={entry['num_frames']!r}.")
        names = [e["clip"] for e in entries]
        if len(set(names)) != len(names):
            raise ValueError(f"{str(path)!r} lists some clips twice: {sorted({n for n in names if names.count(n) > 1})}.")
        total = sum(e["num_frames"] for e in entries)
        if (self.info.get("num_clips"), self.info.get("num_frames")) != (len(entries), total):
            raise ValueError(f"{str(self.root / 'dataset.json')!r} says {self.info.get('num_clips')} clips / "
                             f"{self.info.get('num_frames')} frames but {str(path)!r} lists {len(entries)} / {total}; "
                             "re-run `preprocess.py merge`.")
        return entries

    def _clip_dir(self, entry: dict) -> Path:
        return self.root / entry["dir"]

    def _check_clip(self, entry: dict) -> None:
        clip_dir = self._clip_dir(entry)
        if not clip_dir.is_dir():
            raise FileNotFoundError(f"Clip {entry['clip']!r}: its folder {str(clip_dir)!r} (from the manifest) is missing.")
        name = f"Clip {entry['clip']!r}: the file"
        for required in (clip_dir / FRAMES_DIR / frame_file(0), clip_dir / MASKS_DIR / frame_file(0),
                         clip_dir / TRACKING_FILE):
            checked_file(required, name, "The clip is incomplete (re-run preprocessing; finished clips have a `done` file).")
        if self.stored_prior_views:
            checked_file(clip_dir / PRIOR_CAMERAS_FILE, name, "The dataset has prior views, so every clip needs it.")

    # ------------------------------------------------------------------ sizes and epochs
    @property
    def num_views(self) -> int:
        """V, the target slots of every item: 1 + `num_prior_views` (1 without prior views)."""
        return 1 + self.num_prior_views

    def __len__(self) -> int:
        return self._offsets[-1]

    def set_epoch(self, epoch: int) -> None:
        """Use the draws of `epoch` (modes, source frames, prior views): call once per epoch."""
        if not isinstance(epoch, int) or isinstance(epoch, bool) or epoch < 0:
            raise ValueError(f"`epoch` must be a non-negative int, got {epoch!r}.")
        self.epoch = epoch

    def locate(self, index: int) -> tuple[int, int]:
        """`(clip number in self.clips, frame in that clip)` of item `index`."""
        if not isinstance(index, int) or isinstance(index, bool):
            raise TypeError(f"`index` must be an int, got {type(index).__name__}.")
        if index < 0:
            index += len(self)
        if not 0 <= index < len(self):
            raise IndexError(f"`index` {index} is out of range for a dataset of {len(self)} frames.")
        clip = bisect.bisect_right(self._offsets, index) - 1  # the last clip starting at or before `index`
        return clip, index - self._offsets[clip]

    # ------------------------------------------------------------------ loading
    def _frame(self, clip_dir: Path, t: int) -> tuple[Tensor, Tensor]:
        return (load_rgb(clip_dir / FRAMES_DIR / frame_file(t), self.resolution),
                load_mask(clip_dir / MASKS_DIR / frame_file(t), self.resolution))

    def _prior_views(self, clip_dir: Path, t: int, views: list[int]) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        images = torch.stack([load_rgb(clip_dir / PRIOR_DIR / prior_file(t, v), self.resolution) for v in views])
        mask_paths = [clip_dir / PRIOR_MASKS_DIR / prior_file(t, v) for v in views]
        if all(p.is_file() for p in mask_paths):
            masks = torch.stack([load_mask(p, self.resolution) for p in mask_paths])
        else:  # the contract makes prior masks optional: without them every pixel counts as foreground
            if not self._warned_prior_masks:
                logger.warning("%s has no %s/: prior-view masks are all ones", clip_dir, PRIOR_MASKS_DIR)
                self._warned_prior_masks = True
            masks = torch.ones(len(views), 1, self.resolution, self.resolution)
        cams = read_prior_cameras(clip_dir / PRIOR_CAMERAS_FILE, [t])
        return images, masks, cams["cam2world"][0, views], cams["intrinsics"][0, views]

    def __getitem__(self, index: int) -> dict:
        clip_number, target = self.locate(int(index))
        entry = self.clips[clip_number]
        clip_dir, num_frames = self._clip_dir(entry), entry["num_frames"]
        generator = torch.Generator().manual_seed(_mix_seed(self.seed, self.epoch, index))
        draw = torch.rand((), generator=generator).item()
        # A one-frame clip has no second frame to animate from: it always gives a reconstruction item.
        mode = "reconstruction" if draw < self.reconstruction_probability or num_frames == 1 else "animation"
        if mode == "animation":
            source = int(torch.randint(num_frames - 1, (), generator=generator))
            source += int(source >= target)  # any frame but the target, uniformly
        else:
            source = target
        frames = [source] if source == target else [source, target]
        tracking = read_tracking(clip_dir / TRACKING_FILE, frames)
        s, d = 0, len(frames) - 1  # rows of the source and the driving frame in `tracking`
        source_image, source_mask = self._frame(clip_dir, source)
        target_image, target_mask = (source_image, source_mask) if source == target else self._frame(clip_dir, target)
        num_views, res = self.num_views, self.resolution
        images = torch.zeros(num_views, 3, res, res)
        masks = torch.zeros(num_views, 1, res, res)
        cam2world = tracking["cam2world"][d].expand(num_views, 4, 4).clone()
        intrinsics = tracking["intrinsics"][d].expand(num_views, 3, 3).clone()
        weights = torch.zeros(num_views)
        images[0], masks[0], weights[0] = target_image, target_mask, 1.0
        if mode == "reconstruction" and self.num_prior_views:
            order = torch.randperm(self.stored_prior_views, generator=generator)[: self.num_prior_views]
            views = sorted(order.tolist())
            images[1:], masks[1:], cam2world[1:], intrinsics[1:] = self._prior_views(clip_dir, target, views)
            weights[1:] = 1.0
        params = tracking["params"]
        return {
            "source_image": source_image,
            "source_mask": source_mask,
            "source_cam2world": tracking["cam2world"][s],
            "source_intrinsics": tracking["intrinsics"][s],
            "source_params": {name: value[s] for name, value in params.items()},
            "target_images": images,
            "target_masks": masks,
            "target_cam2world": cam2world,
            "target_intrinsics": intrinsics,
            # Prior views show the driving frame itself, so every slot shares its parameters.
            "target_params": {name: value[d].expand(num_views, *value.shape[1:]).clone() for name, value in params.items()},
            "target_weights": weights,
            "mode": mode,
            "clip": entry["clip"],
            "source_frame": source,
            "target_frame": target,
        }

    @staticmethod
    def collate_fn(items: list[dict]) -> dict:
        """The module's `collate_fn` (for `DataLoader(..., collate_fn=FHAvatarDataset.collate_fn)`)."""
        return collate_fn(items)

    def __repr__(self) -> str:
        return (f"FHAvatarDataset(root={str(self.root)!r}, split={self.split!r}, clips={len(self.clips)}, "
                f"frames={len(self)}, resolution={self.resolution}, num_views={self.num_views})")


def collate_fn(items: list[dict]) -> dict:
    """Stack `FHAvatarDataset` items into a batch: tensors get a leading batch dim (ints become a LongTensor),
    the params dicts are stacked per field, `mode` and `clip` stay lists of strings.

    Example:
        ```py
        >>> batch = collate_fn([data[0], data[1]])  # doctest: +SKIP
        >>> OpenHeadParams(**batch["source_params"]).batch_size  # doctest: +SKIP
        2
        ```
    """
    if not items:
        raise ValueError("`items` must hold at least one dataset item, got an empty list.")
    keys = items[0].keys()
    for number, item in enumerate(items):
        if item.keys() != keys:
            raise ValueError(f"`items[{number}]` has keys {sorted(item)}, but `items[0]` has {sorted(keys)}.")
    batch = {}
    for key in keys:
        values = [item[key] for item in items]
        if key in _LIST_KEYS:
            batch[key] = list(values)
        elif isinstance(values[0], dict):
            batch[key] = {name: torch.stack([v[name] for v in values]) for name in values[0]}
        elif isinstance(values[0], Tensor):
            shapes = {tuple(v.shape) for v in values}
            if len(shapes) != 1:
                raise ValueError(f"`{key}` has different shapes across items ({sorted(shapes)}); all items of a batch "
                                 "must come from one dataset with one `resolution` and `num_prior_views`.")
            batch[key] = torch.stack(values)
        else:
            batch[key] = torch.tensor(values)
    return batch

