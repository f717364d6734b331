"""`training/preprocess.py` on a short clip cut from the shared driving video (skipped when absent) and on a
synthetic video without a face: outputs, resumability, partial clips, sharding + merge, prior views, workers."""

from __future__ import annotations

import json
import math
import shutil
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from PIL import Image

from tests.training import REALFACES
from training._dataset_format import read_jsonl, read_prior_cameras, read_tracking
from training.dataset import FHAvatarDataset
from training.preprocess import PreprocessConfig, clip_name, find_videos, main, merge_shards, preprocess_videos

VIDEO = REALFACES / "v01_man-expressions-greenscreen_lp-d0.mp4"
needs_video = pytest.mark.skipif(not VIDEO.is_file(), reason=f"needs the shared driving video {VIDEO}")
#: 6 source frames, stride 2, at most 3 kept: frames 0, 2 and 4; stored at 64 px.
CONFIG = PreprocessConfig(resolution=64, max_frames=3, frame_stride=2)


@pytest.fixture(scope="module")
def clips(tmp_path_factory):
    """`talk.mp4`: the first 6 frames of the shared video at 256 px; `noface.mp4`: 4 frames of colour ramps."""
    from fhavatar.io import read_video, write_video

    folder = tmp_path_factory.mktemp("videos")
    noface = np.zeros((4, 128, 128, 3), np.uint8)
    ramp = np.linspace(0, 255, 128, dtype=np.float32)
    for t in range(4):
        noface[t, ..., 0], noface[t, ..., 1] = ramp[None, :], ramp[:, None]
        noface[t, ..., 2] = 60 * t
    write_video(folder / "noface.mp4", list(noface), fps=25)
    if VIDEO.is_file():
        frames, _ = read_video(VIDEO, max_frames=6)
        small = [np.asarray(Image.fromarray(f).resize((256, 256), Image.Resampling.LANCZOS)) for f in frames]
        write_video(folder / "talk.mp4", small, fps=25, quality=12)
    return folder


def _videos(tmp_path, clips, *names):
    """An input folder holding copies of the fixture videos under `names` (a name containing "noface" copies
    `noface.mp4`, any other `talk.mp4`)."""
    folder = tmp_path / "in"
    for name in names:
        target = folder / name
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(clips / ("noface.mp4" if "noface" in name else "talk.mp4"), target)
    return folder


def test_find_videos_and_clip_names(tmp_path):
    (tmp_path / "a" / "b").mkdir(parents=True)
    for name in ("a/b/x y.mp4", "a/z.MOV", "notes.txt", "c.mp4"):
        (tmp_path / name).write_bytes(b"")
    videos = find_videos(tmp_path)
    assert [v.relative_to(tmp_path).as_posix() for v in videos] == ["a/b/x y.mp4", "a/z.MOV", "c.mp4"]
    assert [clip_name(v, tmp_path) for v in videos] == ["a__b__x_y", "a__z", "c"]
    assert find_videos(tmp_path / "c.mp4") == [tmp_path / "c.mp4"]
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="holds no video"):
        find_videos(tmp_path / "empty")
    with pytest.raises(FileNotFoundError, match="no folder or video at"):
        find_videos(tmp_path / "missing")


def test_config_errors():
    with pytest.raises(ValueError, match=r"`resolution` must be an int in \[16, 512\], got 1024"):
        PreprocessConfig(resolution=1024)
    with pytest.raises(ValueError, match="`frame_stride`"):
        PreprocessConfig(frame_stride=0)
    with pytest.raises(FileNotFoundError, match="`prior`: no PanoHeadPrior folder"):
        PreprocessConfig(prior="/nonexistent/prior")
    with pytest.raises(ValueError, match="`min_face_fraction` must lie in"):
        PreprocessConfig(min_face_fraction=0.0)


@needs_video
def test_preprocess_outputs_resume_and_partial_clips(tmp_path, clips):
    videos, root = _videos(tmp_path, clips, "talk.mp4", "noface.mp4"), tmp_path / "data"
    summary = preprocess_videos(videos, root, CONFIG, progress=False)
    assert (summary.processed, summary.reused, summary.failed) == (["talk"], [], [])
    assert [e["clip"] for e in summary.skipped] == ["noface"] and "face" in summary.skipped[0]["reason"]
    info = json.loads((root / "dataset.json").read_text())
    assert info == {"format": "fhavatar-dataset", "version": 1, "head_model": "open_head", "resolution": 64,
                    "num_clips": 1, "num_frames": 3, "has_prior_views": False, "num_prior_views": 0}
    [entry] = read_jsonl(root / "manifest.jsonl")
    assert (entry["clip"], entry["dir"], entry["num_frames"], entry["skipped"]) == ("talk", "clips/talk", 3, False)
    assert entry["source"] == str((videos / "talk.mp4").resolve()) and entry["source_frames"] == 6
    assert [e["clip"] for e in read_jsonl(root / "skipped.jsonl")] == ["noface"]
    clip = root / "clips" / "talk"
    assert sorted(p.name for p in (clip / "frames").iterdir()) == ["000000.png", "000001.png", "000002.png"]
    tracking = read_tracking(clip / "tracking.safetensors")
    assert tracking["has_face"].tolist() == [1, 1, 1] and tracking["cam2world"].shape == (3, 4, 4)
    rot = tracking["cam2world"][:, :3, :3].double()
    torch.testing.assert_close(rot @ rot.transpose(1, 2), torch.eye(3, dtype=torch.float64).expand(3, 3, 3), atol=1e-5, rtol=0)
    distance = tracking["cam2world"][:, :3, 3].norm(dim=-1)
    assert bool(((distance > 2.0) & (distance < 4.0)).all())  # a PanoHead-like camera around the head
    assert float(tracking["params"]["expression"].abs().max()) > 0  # the fitted expression residuals are stored
    image = np.asarray(Image.open(clip / "frames" / "000000.png"))
    mask = np.asarray(Image.open(clip / "masks" / "000000.png"))
    assert image.shape == (64, 64, 3) and mask.shape == (64, 64)
    assert mask[24:40, 24:40].mean() > 200 and (image[mask == 0] >= 250).all()  # face in the middle, white outside
    item = FHAvatarDataset(root, split="all", reconstruction_probability=0.0)[2]
    assert item["mode"] == "animation" and item["target_images"].shape == (1, 3, 64, 64)

    # A second run re-uses the finished clip and the skip marker: nothing is tracked or written again.
    stamp = (clip / "tracking.safetensors").stat().st_mtime_ns
    again = preprocess_videos(videos, root, CONFIG, progress=False)
    assert (again.processed, again.reused, [e["clip"] for e in again.skipped]) == ([], ["talk"], ["noface"])
    assert (clip / "tracking.safetensors").stat().st_mtime_ns == stamp

    # A partial clip (no `done`, a frame missing: an interrupted run) is redone from scratch.
    (clip / "done").unlink()
    (clip / "frames" / "000001.png").unlink()
    redo = preprocess_videos(videos, root, CONFIG, progress=False)
    assert (redo.processed, redo.reused) == (["talk"], [])
    assert (clip / "frames" / "000001.png").is_file() and (clip / "done").is_file()
    assert torch.equal(read_tracking(clip / "tracking.safetensors")["cam2world"], tracking["cam2world"])

    with pytest.raises(ValueError, match="was made with other settings"):
        preprocess_videos(videos, root, PreprocessConfig(resolution=32, max_frames=3, frame_stride=2), progress=False)


@needs_video
def test_shards_and_merge(tmp_path, clips):
    videos = _videos(tmp_path, clips, "a/talk.mp4", "b/talk.mp4", "noface.mp4")
    root = tmp_path / "data"
    first = preprocess_videos(videos, root, CONFIG, num_shards=2, shard_index=0, progress=False)
    assert first.processed == ["a__talk"] and [e["clip"] for e in first.skipped] == ["noface"]
    assert (root / "manifest-shard-00of02.jsonl").is_file() and not (root / "dataset.json").exists()
    with pytest.raises(FileNotFoundError, match=r"shards \[1\] of 2 have not finished"):
        merge_shards(root)
    second = preprocess_videos(videos, root, CONFIG, num_shards=2, shard_index=1, progress=False)
    assert second.processed == ["b__talk"] and second.skipped == []
    assert main(["merge", str(root)]) == 0
    assert [e["clip"] for e in read_jsonl(root / "manifest.jsonl")] == ["a__talk", "b__talk"]
    assert [e["clip"] for e in read_jsonl(root / "skipped.jsonl")] == ["noface"]
    info = json.loads((root / "dataset.json").read_text())
    assert (info["num_clips"], info["num_frames"]) == (2, 6)
    assert len(FHAvatarDataset(root, split="all")) == 6
    (root / "manifest-shard-00of03.jsonl").write_text("")
    with pytest.raises(ValueError, match="different --num_shards"):
        merge_shards(root)


class StubPrior:
    """A stand-in for `PanoHeadPrior` with its call signatures: the 'triplane' is the image's mean colour; renders
    are white for cameras on the +x side of the head, black on the -x side, with an alpha whose left half is 1."""

    def __init__(self):
        self.encoded = []

    def encode(self, image, camera):
        self.encoded.append((tuple(image.shape), camera.cam2world.clone()))
        return image.mean((2, 3))

    def render(self, triplane, camera, resolution=None):
        side = float(camera.cam2world[0, 0, 3] > 0)
        image = torch.full((1, 3, resolution or 96, resolution or 96), side)
        alpha = torch.zeros(1, 1, 128, 128)
        alpha[..., :64] = 1.0
        return SimpleNamespace(image=image, depth=torch.ones(1, 1, 128, 128), alpha=alpha)


@needs_video
def test_prior_views(tmp_path, clips):
    videos, root = _videos(tmp_path, clips, "talk.mp4"), tmp_path / "data"
    prior = StubPrior()
    config = PreprocessConfig(resolution=64, max_frames=2, frame_stride=2, prior_yaw_offset=(60.0, 100.0))
    summary = preprocess_videos(videos, root, config, progress=False, prior_model=prior)
    assert summary.processed == ["talk"]
    info = json.loads((root / "dataset.json").read_text())
    assert (info["has_prior_views"], info["num_prior_views"]) == (True, 2)
    clip = root / "clips" / "talk"
    tracking = read_tracking(clip / "tracking.safetensors")
    cams = read_prior_cameras(clip / "prior_cameras.safetensors")
    assert cams["cam2world"].shape == (2, 2, 4, 4) and torch.equal(cams["intrinsics"][:, 0], tracking["intrinsics"])
    assert [shape for shape, _ in prior.encoded] == [(1, 3, 512, 512)] * 2  # each 512² crop is inverted
    for (_, camera), t in zip(prior.encoded, range(2)):
        assert torch.equal(camera[0], tracking["cam2world"][t])
    for t in range(2):
        frame_c2w = tracking["cam2world"][t].double()
        frame_yaw = math.degrees(math.atan2(float(frame_c2w[0, 3]), float(frame_c2w[2, 3])))
        for v, sign in ((0, 1), (1, -1)):
            c2w = cams["cam2world"][t, v].double()
            assert float(c2w[:3, 3].norm()) == pytest.approx(float(frame_c2w[:3, 3].norm()), abs=1e-4)  # same radius
            offset = math.degrees(math.atan2(float(c2w[0, 3]), float(c2w[2, 3]))) - frame_yaw
            assert 55 < sign * offset < 105, offset
            view = np.asarray(Image.open(clip / "prior" / f"{t:06d}_{v}.png"))
            assert (view == (255 if sign > 0 else 0)).all()  # the stub's colour for that side of the head
            alpha = np.asarray(Image.open(clip / "prior_masks" / f"{t:06d}_{v}.png"))
            assert alpha.shape == (64, 64) and (alpha[:, :30] == 255).all() and (alpha[:, 34:] == 0).all()
    item = FHAvatarDataset(root, split="all", reconstruction_probability=1.0)[1]
    assert item["target_images"].shape == (3, 3, 64, 64) and torch.equal(item["target_weights"], torch.ones(3))
    with pytest.raises(ValueError, match="num_workers=1 only"):
        preprocess_videos(videos, root, config, num_workers=2, progress=False, prior_model=prior)


@pytest.mark.slow  # two spawned processes each import torch and MediaPipe: ~15 s on an idle 2-core machine
@needs_video
def test_worker_processes(tmp_path, clips):
    videos, root = _videos(tmp_path, clips, "a/talk.mp4", "b/talk.mp4"), tmp_path / "data"
    summary = preprocess_videos(videos, root, PreprocessConfig(resolution=32, max_frames=2), num_workers=2, progress=False)
    assert sorted(summary.processed) == ["a__talk", "b__talk"] and summary.failed == []
    a = read_tracking(root / "clips" / "a__talk" / "tracking.safetensors")
    b = read_tracking(root / "clips" / "b__talk" / "tracking.safetensors")
    assert torch.equal(a["cam2world"], b["cam2world"])  # the same video gives the same track in either process


def test_cli_errors(tmp_path, capsys):
    assert main([str(tmp_path / "missing"), str(tmp_path / "out")]) == 2
    assert "no folder or video at" in capsys.readouterr().err
    assert main([str(tmp_path), str(tmp_path / "out"), "--resolution", "1024"]) == 2
    assert "`resolution` must be an int in [16, 512]" in capsys.readouterr().err
    assert main(["merge", str(tmp_path)]) == 2
    assert "holds no manifest-shard" in capsys.readouterr().err


@pytest.mark.slow  # the tiny PanoHeadPrior inverts a 512² crop in ~15 s on a 2-core CPU
@needs_video
def test_prior_folder_with_a_tiny_panohead(tmp_path, clips):
    """`--prior FOLDER` loads a `PanoHeadPrior.save_pretrained` folder (random tiny weights) in the worker."""
    from fhavatar.prior import PanoHeadPrior

    PanoHeadPrior.from_preset("tiny").save_pretrained(tmp_path / "prior")
    videos, root = _videos(tmp_path, clips, "talk.mp4"), tmp_path / "data"
    assert main([str(videos), str(root), "--resolution", "32", "--max_frames", "1", "--prior", str(tmp_path / "prior")]) == 0
    assert json.loads((root / "dataset.json").read_text())["has_prior_views"] is True
    for v in range(2):
        view = np.asarray(Image.open(root / "clips" / "talk" / "prior" / f"000000_{v}.png"))
        alpha = np.asarray(Image.open(root / "clips" / "talk" / "prior_masks" / f"000000_{v}.png"))
        assert view.shape == (32, 32, 3) and alpha.shape == (32, 32) and view.std() > 0
    assert read_prior_cameras(root / "clips" / "talk" / "prior_cameras.safetensors")["cam2world"].shape == (1, 2, 4, 4)
