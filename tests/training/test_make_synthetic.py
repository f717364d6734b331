"""`training/make_synthetic.py`: format, ground-truth consistency (re-rendering), determinism, errors."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
from PIL import Image

from tests.threads import torch_threads
from tests.training import ASTRONAUT, TINY_DATASET_THREADS, TINY_SETTINGS, tiny_synthetic_dataset
from training._dataset_format import PARAM_FIELDS, read_jsonl, read_prior_cameras, read_tracking
from training.make_synthetic import _frame_camera, _look_target, main, make_synthetic_dataset, smile_displacement

R, T, P = TINY_SETTINGS["resolution"], TINY_SETTINGS["frames_per_clip"], 2


def test_files_and_shapes():
    root = tiny_synthetic_dataset()
    info = json.loads((root / "dataset.json").read_text())
    assert info == {"format": "fhavatar-dataset", "version": 1, "head_model": "open_head", "resolution": R,
                    "num_clips": 3, "num_frames": 9, "has_prior_views": True, "num_prior_views": P}
    manifest = read_jsonl(root / "manifest.jsonl")
    assert [e["clip"] for e in manifest] == ["synthetic_0000", "synthetic_0001", "synthetic_0002"]
    assert read_jsonl(root / "skipped.jsonl") == []
    for entry in manifest:
        assert (entry["num_frames"], entry["source"], entry["skipped"]) == (T, "synthetic", False)
        clip = root / entry["dir"]
        assert json.loads((clip / "done").read_text()) == entry
        assert sorted(p.name for p in (clip / "frames").iterdir()) == [f"{t:06d}.png" for t in range(T)]
        assert sorted(p.name for p in (clip / "prior").iterdir()) == [f"{t:06d}_{v}.png" for t in range(T) for v in range(P)]
        assert Image.open(clip / "frames" / "000002.png").mode == "RGB"
        assert Image.open(clip / "frames" / "000002.png").size == (R, R)
        assert Image.open(clip / "masks" / "000002.png").mode == "L"
        assert Image.open(clip / "prior_masks" / "000001_1.png").size == (R, R)
        tracking = read_tracking(clip / "tracking.safetensors")
        assert tracking["cam2world"].shape == (T, 4, 4) and tracking["intrinsics"].shape == (T, 3, 3)
        assert tracking["has_face"].dtype == torch.uint8 and tracking["has_face"].tolist() == [1] * T
        shapes = {k: tuple(v.shape) for k, v in tracking["params"].items()}
        assert shapes == {"expression": (T, 468, 3), "jaw": (T, 3), "neck": (T, 3), "eyes": (T, 2, 3),
                          "global_rotation": (T, 3), "translation": (T, 3)}
        assert set(shapes) == set(PARAM_FIELDS)
        prior = read_prior_cameras(clip / "prior_cameras.safetensors")
        assert prior["cam2world"].shape == (T, P, 4, 4) and prior["intrinsics"].shape == (T, P, 3, 3)


def test_cameras_are_rigid_and_look_at_the_head():
    from fhavatar.rendering import PANOHEAD_FOCAL, Camera

    root = tiny_synthetic_dataset()
    tracking = read_tracking(root / "clips" / "synthetic_0001" / "tracking.safetensors")
    prior = read_prior_cameras(root / "clips" / "synthetic_0001" / "prior_cameras.safetensors")
    c2w = torch.cat([tracking["cam2world"], prior["cam2world"].reshape(-1, 4, 4)]).double()
    rot = c2w[:, :3, :3]
    torch.testing.assert_close(rot.transpose(1, 2) @ rot, torch.eye(3, dtype=torch.float64).expand_as(rot), atol=1e-5, rtol=0)
    torch.testing.assert_close(torch.linalg.det(rot), torch.ones(len(rot), dtype=torch.float64), atol=1e-5, rtol=0)
    torch.testing.assert_close(c2w @ torch.linalg.inv(c2w), torch.eye(4, dtype=torch.float64).expand_as(c2w), atol=1e-5, rtol=0)
    assert torch.allclose(tracking["intrinsics"], Camera.make_intrinsics(PANOHEAD_FOCAL, T))
    # Every camera (frames and prior views) keeps the photo's distance and sees the head origin near the centre.
    distance = c2w[:, :3, 3].norm(dim=-1)
    assert float(distance.max() - distance.min()) < 0.1 and 2.3 < float(distance.mean()) < 3.3
    uv, depth = Camera(cam2world=c2w.float(), intrinsics=Camera.make_intrinsics(batch=len(c2w))).project(
        torch.zeros(1, 3), R, R)
    assert (depth > 0).all() and ((uv - R / 2).abs() < 0.15 * R).all()
    # The two prior views of a frame sit on either side of it (view 0 at +yaw, view 1 at -yaw, |offset| >= 45°).
    for t in range(T):
        yaw = [math.degrees(math.atan2(float(p[0, 3]), float(p[2, 3]))) for p in prior["cam2world"][t]]
        frame_yaw = math.degrees(math.atan2(float(tracking["cam2world"][t, 0, 3]), float(tracking["cam2world"][t, 2, 3])))
        offsets = [((y - frame_yaw + 180) % 360) - 180 for y in yaw]
        assert offsets[0] >= 44 or offsets[0] <= -170, offsets
        assert offsets[1] <= -44 or offsets[1] >= 170, offsets


def test_frames_match_a_render_of_the_stored_ground_truth():
    """Re-render the saved avatar with the stored parameters and cameras: the PNGs are what those describe."""
    from fhavatar.avatar import Avatar
    from fhavatar.head.open_head import OpenHead, OpenHeadParams
    from fhavatar.rendering import Camera, render_gaussians

    root = tiny_synthetic_dataset()
    clip = root / "clips" / "synthetic_0002"  # a re-coloured copy: the saved avatar carries its colours
    avatar = Avatar.load(clip / "avatar.safetensors", OpenHead())
    tracking = read_tracking(clip / "tracking.safetensors")
    prior = read_prior_cameras(clip / "prior_cameras.safetensors")
    t = 1
    params = OpenHeadParams(**{k: v[t : t + 1] for k, v in tracking["params"].items()})
    cams = Camera(cam2world=torch.cat([tracking["cam2world"][t : t + 1], prior["cam2world"][t]]),
                  intrinsics=torch.cat([tracking["intrinsics"][t : t + 1], prior["intrinsics"][t]]))
    out = render_gaussians(avatar.gaussians(params), cams, R, R, background=torch.ones(3))
    files = [clip / "frames" / f"{t:06d}.png"] + [clip / "prior" / f"{t:06d}_{v}.png" for v in range(P)]
    masks = [clip / "masks" / f"{t:06d}.png"] + [clip / "prior_masks" / f"{t:06d}_{v}.png" for v in range(P)]
    for k in range(1 + P):
        stored = torch.from_numpy(np.array(Image.open(files[k]))).permute(2, 0, 1).float() / 255
        torch.testing.assert_close(stored, out.image[k], atol=1 / 255 + 1e-4, rtol=0)
        stored_mask = torch.from_numpy(np.array(Image.open(masks[k])))[None].float() / 255
        torch.testing.assert_close(stored_mask, out.alpha[k], atol=1 / 255 + 1e-4, rtol=0)
    # The expressions vary: jaw openings differ between frames and the smile is a multiple of smile_displacement.
    jaws = tracking["params"]["jaw"][:, 0]
    assert float(jaws.max() - jaws.min()) > 0.01 and bool((jaws >= 0).all()) and bool((jaws <= 0.35 + 1e-6).all())


def test_background_is_white_where_the_mask_is_empty():
    clip = tiny_synthetic_dataset() / "clips" / "synthetic_0000"
    image = np.asarray(Image.open(clip / "frames" / "000000.png")).astype(int)
    mask = np.asarray(Image.open(clip / "masks" / "000000.png"))
    assert (mask == 0).mean() > 0.3 and (mask > 250).mean() > 0.1  # a head on a background
    assert (image[mask == 0] == 255).all()


def test_same_seed_same_dataset_and_cli(tmp_path):
    """The generator's draws come in a fixed order, so a 1-clip, 2-frame run reproduces clip 0's first two frames
    of the session dataset byte for byte (made through the command line, with a contact sheet)."""
    out = tmp_path / "again"
    sheet = tmp_path / "sheet.png"
    ref = tiny_synthetic_dataset() / "clips" / "synthetic_0000"
    # The thread count the session dataset was made with: float reductions (tracking fit, avatar) split by thread.
    with torch_threads(TINY_DATASET_THREADS):
        assert main([str(out), "--num_clips", "1", "--frames_per_clip", "2", "--resolution", str(R), "--photos",
                     str(ASTRONAUT), "--avatar_resolution", "64", "--seed", "0", "--contact_sheet", str(sheet)]) == 0
    new = out / "clips" / "synthetic_0000"
    for name in ("frames/000000.png", "frames/000001.png", "masks/000001.png", "prior/000001_0.png", "prior/000001_1.png"):
        assert (ref / name).read_bytes() == (new / name).read_bytes(), name
    a, b = read_tracking(ref / "tracking.safetensors", [0, 1]), read_tracking(new / "tracking.safetensors")
    assert torch.equal(a["cam2world"], b["cam2world"])
    for k in PARAM_FIELDS:
        assert torch.equal(a["params"][k], b["params"][k]), k
    assert Image.open(sheet).size == (2 * (1 + P) * R, R)  # one clip row: 2 frames, each with 2 prior views


def test_smile_displacement_by_hand():
    from fhavatar.head.open_head import OpenHead

    head = OpenHead()
    smile = smile_displacement(head)
    cm = 1.8 / 100  # OpenHead: 1.8 head units per metre
    face = head.template_vertices[:468]
    sigma = 1.2 * cm
    far = math.exp(-float(((face[61] - face[291]) ** 2).sum()) / (2 * sigma**2))  # the other corner's share
    expected_291 = torch.tensor([0.35, 0.6, -0.3]) * cm + far * torch.tensor([-0.35, 0.6, -0.3]) * cm
    torch.testing.assert_close(smile[291], expected_291, atol=1e-7, rtol=1e-5)
    torch.testing.assert_close(smile[61], expected_291 * torch.tensor([-1.0, 1.0, 1.0]), atol=1e-7, rtol=1e-5)
    assert float(smile[[159, 386, 1]].norm(dim=-1).max()) < 1e-3 * cm  # eyelids and nose tip do not move


def test_look_target_and_frame_camera():
    from fhavatar.rendering import Camera

    # Looking at the origin: the origin is the nearest axis point. Looking straight along -z from y = 0.2: (0, 0.2, 0).
    target, distance = _look_target(Camera.look_at([0.3, 0.2, 2.7], [0.0, 0.0, 0.0]).cam2world[0])
    torch.testing.assert_close(target, torch.zeros(3), atol=1e-5, rtol=0)
    assert distance == pytest.approx(math.sqrt(0.3**2 + 0.2**2 + 2.7**2), abs=1e-5)
    target, distance = _look_target(Camera.look_at([0.0, 0.2, 2.7], [0.0, 0.2, 0.0]).cam2world[0])
    torch.testing.assert_close(target, torch.tensor([0.0, 0.2, 0.0]), atol=1e-5, rtol=0)
    assert distance == pytest.approx(2.7, abs=1e-5)
    front = _frame_camera(target, distance, 0.0, 0.0).cam2world[0]
    torch.testing.assert_close(front[:3, 3], torch.tensor([0.0, 0.2, distance]), atol=1e-5, rtol=0)
    side = _frame_camera(target, distance, 90.0, 0.0).cam2world[0]  # yaw 90°: on +x, looking toward -x
    torch.testing.assert_close(side[:3, 2], torch.tensor([-1.0, 0.0, 0.0]), atol=1e-5, rtol=0)


def test_errors(tmp_path):
    (tmp_path / "busy").mkdir()
    (tmp_path / "busy" / "notes.txt").write_text("mine")
    with pytest.raises(FileExistsError, match="busy.*not empty"):
        make_synthetic_dataset(tmp_path / "busy", photos=[ASTRONAUT])
    with pytest.raises(ValueError, match="not an FHAvatar dataset; refusing"):
        make_synthetic_dataset(tmp_path / "busy", photos=[ASTRONAUT], overwrite=True)
    with pytest.raises(ValueError, match="`num_clips` must be an int >= 1, got 0"):
        make_synthetic_dataset(tmp_path / "a", num_clips=0)
    with pytest.raises(ValueError, match="`yaw_range`"):
        make_synthetic_dataset(tmp_path / "a", yaw_range=(30, -30))
    with pytest.raises(FileNotFoundError, match="nowhere.png"):
        make_synthetic_dataset(tmp_path / "a", photos=[tmp_path / "nowhere.png"])
    blank = tmp_path / "blank.png"
    Image.new("RGB", (128, 128), (90, 140, 200)).save(blank)
    with pytest.raises(ValueError, match="trackable face"):
        make_synthetic_dataset(tmp_path / "b", num_clips=1, frames_per_clip=1, resolution=32, photos=[blank])
