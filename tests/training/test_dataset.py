"""`training/dataset.py`: item shapes and modes, reproducible draws, splits, collation and error messages."""

from __future__ import annotations

import hashlib
import json
import shutil

import pytest
import torch
from torch.utils.data import DataLoader

from tests.training import TINY_SETTINGS, tiny_synthetic_dataset
from training._dataset_format import load_mask, load_rgb, read_prior_cameras, read_tracking
from training.dataset import FHAvatarDataset, collate_fn, split_clips

R = TINY_SETTINGS["resolution"]


def _copy(tmp_path):
    root = tmp_path / "data"
    shutil.copytree(tiny_synthetic_dataset(), root)
    return root


def test_item_shapes_and_types():
    data = FHAvatarDataset(tiny_synthetic_dataset(), split="all")
    assert len(data) == 9 and data.num_views == 3
    item = data[4]
    shapes = {k: tuple(v.shape) for k, v in item.items() if isinstance(v, torch.Tensor)}
    assert shapes == {"source_image": (3, R, R), "source_mask": (1, R, R), "source_cam2world": (4, 4),
                      "source_intrinsics": (3, 3), "target_images": (3, 3, R, R), "target_masks": (3, 1, R, R),
                      "target_cam2world": (3, 4, 4), "target_intrinsics": (3, 3, 3), "target_weights": (3,)}
    assert {k: tuple(v.shape) for k, v in item["source_params"].items()} == {
        "expression": (468, 3), "jaw": (3,), "neck": (3,), "eyes": (2, 3), "global_rotation": (3,), "translation": (3,)}
    assert {k: tuple(v.shape) for k, v in item["target_params"].items()} == {
        "expression": (3, 468, 3), "jaw": (3, 3), "neck": (3, 3), "eyes": (3, 2, 3), "global_rotation": (3, 3),
        "translation": (3, 3)}
    assert item["source_image"].dtype == torch.float32 and 0 <= float(item["source_image"].min()) <= 1
    assert item["mode"] in ("animation", "reconstruction") and item["clip"] == "synthetic_0001"
    assert item["target_frame"] == 1  # index 4 = clip 1, frame 1
    # `resolution` resizes on load.
    small = FHAvatarDataset(tiny_synthetic_dataset(), split="all", resolution=32)[4]
    assert small["source_image"].shape == (3, 32, 32) and small["target_masks"].shape == (3, 1, 32, 32)


def test_reconstruction_mode_targets_the_source_and_its_prior_views():
    root = tiny_synthetic_dataset()
    data = FHAvatarDataset(root, split="all", reconstruction_probability=1.0)
    for index in range(len(data)):
        item = data[index]
        assert item["mode"] == "reconstruction" and item["source_frame"] == item["target_frame"]
        assert torch.equal(item["target_images"][0], item["source_image"])
        assert torch.equal(item["target_masks"][0], item["source_mask"])
        assert torch.equal(item["target_weights"], torch.ones(3))
    item = data[5]  # clip 1, frame 2
    clip = root / "clips" / "synthetic_0001"
    tracking, prior = read_tracking(clip / "tracking.safetensors"), read_prior_cameras(clip / "prior_cameras.safetensors")
    assert torch.equal(item["source_image"], load_rgb(clip / "frames" / "000002.png"))
    for v in range(2):
        assert torch.equal(item["target_images"][1 + v], load_rgb(clip / "prior" / f"000002_{v}.png"))
        assert torch.equal(item["target_masks"][1 + v], load_mask(clip / "prior_masks" / f"000002_{v}.png"))
    assert torch.equal(item["target_cam2world"], torch.cat([tracking["cam2world"][2:3], prior["cam2world"][2]]))
    assert torch.equal(item["source_cam2world"], tracking["cam2world"][2])
    for name, value in tracking["params"].items():  # the params round-trip exactly, in every target slot
        assert torch.equal(item["source_params"][name], value[2])
        assert torch.equal(item["target_params"][name], value[2:3].expand(3, *value.shape[1:]))


def test_animation_mode_pairs_two_frames_and_pads():
    root = tiny_synthetic_dataset()
    data = FHAvatarDataset(root, split="all", reconstruction_probability=0.0)
    sources = set()
    for index in range(len(data)):
        item = data[index]
        assert item["mode"] == "animation" and item["source_frame"] != item["target_frame"]
        sources.add((index, item["source_frame"]))
        assert not torch.equal(item["source_image"], item["target_images"][0])  # two different frames
        assert torch.equal(item["target_weights"], torch.tensor([1.0, 0.0, 0.0]))
        assert float(item["target_images"][1:].abs().max()) == 0 and float(item["target_masks"][1:].abs().max()) == 0
        assert torch.equal(item["target_cam2world"][1:], item["target_cam2world"][:1].expand(2, 4, 4))
    item = data[6]  # clip 2, frame 0 driven from another frame
    clip = root / "clips" / "synthetic_0002"
    tracking = read_tracking(clip / "tracking.safetensors")
    s = item["source_frame"]
    assert item["clip"] == "synthetic_0002" and item["target_frame"] == 0
    assert torch.equal(item["source_image"], load_rgb(clip / "frames" / f"{s:06d}.png"))
    assert torch.equal(item["target_images"][0], load_rgb(clip / "frames" / "000000.png"))
    assert torch.equal(item["source_cam2world"], tracking["cam2world"][s])
    assert torch.equal(item["target_cam2world"][0], tracking["cam2world"][0])
    for name, value in tracking["params"].items():
        assert torch.equal(item["source_params"][name], value[s])
        assert torch.equal(item["target_params"][name][0], value[0])


def test_draws_are_reproducible_per_seed_epoch_and_index():
    root = tiny_synthetic_dataset()
    a, b = FHAvatarDataset(root, split="all"), FHAvatarDataset(root, split="all")

    def draws(data):
        return [(data[i]["mode"], data[i]["source_frame"]) for i in range(len(data))]

    assert draws(a) == draws(b) == draws(a)  # same seed, epoch and index -> same item, in any order
    modes, per_epoch = [], []
    for epoch in range(12):
        a.set_epoch(epoch)
        per_epoch.append(draws(a))
        modes += [m for m, _ in per_epoch[-1]]
    assert len(set(map(tuple, per_epoch))) > 1  # epochs differ
    assert 0.3 < modes.count("reconstruction") / len(modes) < 0.7  # 108 draws with p = 0.5
    assert draws(FHAvatarDataset(root, split="all", seed=1)) != per_epoch[0]  # another seed, other draws
    with pytest.raises(ValueError, match="`epoch` must be a non-negative int, got -1"):
        a.set_epoch(-1)


def test_split_is_deterministic_by_name():
    names = [f"clip_{i:03d}" for i in range(20)]
    train, val = split_clips(names, 0.25)
    assert len(val) == 5 and sorted(train + val) == sorted(names) and not set(train) & set(val)
    # Independent reference: the 5 names with the smallest sha256 prefixes.
    ranked = sorted(names, key=lambda n: int.from_bytes(hashlib.sha256(n.encode()).digest()[:8], "big"))
    assert set(val) == set(ranked[:5])
    assert split_clips(list(reversed(names)), 0.25)[1] == list(reversed(val))  # the order of `names` is irrelevant
    assert split_clips(names[:2], 0.1) == ([n for n in names[:2] if n != min(names[:2], key=ranked.index)],
                                          [min(names[:2], key=ranked.index)])  # at least one val clip
    assert split_clips(names, 0.0) == (names, [])
    root = tiny_synthetic_dataset()
    train = FHAvatarDataset(root, split="train", val_fraction=0.34)
    val = FHAvatarDataset(root, split="val", val_fraction=0.34)
    assert len(train.clips) == 2 and len(val.clips) == 1 and len(train) == 6 and len(val) == 3
    assert {c["clip"] for c in train.clips} | {c["clip"] for c in val.clips} == {f"synthetic_000{i}" for i in range(3)}
    assert [c["clip"] for c in FHAvatarDataset(root, split="val", val_fraction=0.34).clips] == [c["clip"] for c in val.clips]


def test_collate_and_dataloader():
    from fhavatar.head.open_head import OpenHeadParams

    data = FHAvatarDataset(tiny_synthetic_dataset(), split="all", resolution=32)
    batch = next(iter(DataLoader(data, batch_size=4, shuffle=False, collate_fn=collate_fn)))
    assert batch["target_images"].shape == (4, 3, 3, 32, 32) and batch["source_cam2world"].shape == (4, 4, 4)
    assert batch["target_params"]["expression"].shape == (4, 3, 468, 3)
    assert batch["clip"] == ["synthetic_0000"] * 3 + ["synthetic_0001"] and len(batch["mode"]) == 4
    assert batch["target_frame"].tolist() == [0, 1, 2, 0]
    params = OpenHeadParams(**{k: v for k, v in batch["source_params"].items()})
    assert params.batch_size == 4
    for i in range(4):
        assert torch.equal(batch["source_image"][i], data[i]["source_image"])
    same = FHAvatarDataset.collate_fn([data[0], data[1]])
    assert torch.equal(same["target_cam2world"], batch["target_cam2world"][:2]) and same["mode"] == batch["mode"][:2]
    with pytest.raises(ValueError, match="`items` must hold at least one"):
        collate_fn([])
    assert data.locate(-1) == (2, 2) and data.locate(3) == (1, 0)
    with pytest.raises(IndexError, match="`index` 9 is out of range for a dataset of 9 frames"):
        data[9]


def test_datasets_without_prior_views_have_one_target(tmp_path):
    root = _copy(tmp_path)
    info = json.loads((root / "dataset.json").read_text())
    (root / "dataset.json").write_text(json.dumps({**info, "has_prior_views": False, "num_prior_views": 0}))
    item = FHAvatarDataset(root, split="all", reconstruction_probability=1.0)[0]
    assert item["target_images"].shape == (1, 3, R, R) and torch.equal(item["target_weights"], torch.ones(1))
    assert FHAvatarDataset(tiny_synthetic_dataset(), split="all", num_prior_views=0).num_views == 1
    one = FHAvatarDataset(tiny_synthetic_dataset(), split="all", num_prior_views=1, reconstruction_probability=1.0)
    assert one.num_views == 2 and one[0]["target_images"].shape == (2, 3, R, R)


def test_missing_prior_masks_count_as_foreground(tmp_path, caplog):
    root = _copy(tmp_path)
    shutil.rmtree(root / "clips" / "synthetic_0000" / "prior_masks")
    item = FHAvatarDataset(root, split="all", reconstruction_probability=1.0)[0]
    assert torch.equal(item["target_masks"][1:], torch.ones(2, 1, R, R))
    assert "prior-view masks are all ones" in caplog.text


def test_one_frame_clips_always_reconstruct(tmp_path):
    root = _copy(tmp_path)
    lines = (root / "manifest.jsonl").read_text().splitlines()
    entries = [json.loads(line) for line in lines]
    entries[0]["num_frames"] = 1
    (root / "manifest.jsonl").write_text("".join(json.dumps(e) + "\n" for e in entries))
    info = json.loads((root / "dataset.json").read_text())
    (root / "dataset.json").write_text(json.dumps({**info, "num_frames": 7}))
    data = FHAvatarDataset(root, split="all", reconstruction_probability=0.0)
    assert len(data) == 7 and data[0]["mode"] == "reconstruction" and data[1]["mode"] == "animation"


def test_errors_name_the_problem(tmp_path):
    with pytest.raises(FileNotFoundError, match="no dataset folder at .*nowhere"):
        FHAvatarDataset(tmp_path / "nowhere")
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match=r"empty/dataset\.json' does not exist\. Is .* a dataset"):
        FHAvatarDataset(tmp_path / "empty")
    root = _copy(tmp_path)
    info = json.loads((root / "dataset.json").read_text())
    for change, message in (({"format": "other"}, "must have \"format\": 'fhavatar-dataset', got 'other'"),
                            ({"version": 7}, "has version 7; this code reads version 1"),
                            ({"num_frames": 3}, "says 3 clips / 3 frames but .* lists 3 / 9")):
        (root / "dataset.json").write_text(json.dumps({**info, **change}))
        with pytest.raises(ValueError, match=message):
            FHAvatarDataset(root, split="all")
    (root / "dataset.json").write_text(json.dumps(info))
    with pytest.raises(ValueError, match="`split` must be one of"):
        FHAvatarDataset(root, split="test")
    with pytest.raises(ValueError, match="`num_prior_views` must be at most the 2 prior views"):
        FHAvatarDataset(root, num_prior_views=3)
    with pytest.raises(ValueError, match="`split`='val' .* holds no clip"):
        FHAvatarDataset(root, split="val", val_fraction=0.0)
    with pytest.raises(ValueError, match="`reconstruction_probability` must be a number in \\[0, 1\\], got 1.5"):
        FHAvatarDataset(root, reconstruction_probability=1.5)
    (root / "clips" / "synthetic_0001" / "frames" / "000000.png").unlink()
    with pytest.raises(FileNotFoundError, match=r"Clip 'synthetic_0001': the file .*frames/000000\.png' does not exist\. The clip is incomplete"):
        FHAvatarDataset(root, split="all")
    (root / "clips" / "synthetic_0001" / "frames" / "000001.png").rename(root / "clips" / "synthetic_0001" / "frames" / "000000.png")
    data = FHAvatarDataset(root, split="all", reconstruction_probability=1.0)
    with pytest.raises(FileNotFoundError, match=r"frame .*synthetic_0001/frames/000001\.png' does not exist\. The clip is incomplete"):
        data[4]
    shutil.rmtree(root / "clips" / "synthetic_0002")
    with pytest.raises(FileNotFoundError, match="Clip 'synthetic_0002': its folder .* is missing"):
        FHAvatarDataset(root, split="all")
    (root / "manifest.jsonl").write_text("\n")
    with pytest.raises(ValueError, match="lists no clip"):
        FHAvatarDataset(root, split="all")
    (root / "manifest.jsonl").unlink()
    with pytest.raises(FileNotFoundError, match=r"manifest\.jsonl' does not exist\. .*preprocess\.py merge"):
        FHAvatarDataset(root, split="all")
