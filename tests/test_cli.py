"""`python -m fhavatar`: writes the avatar, front view and videos; fails on bad input with one line and status 2."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from fhavatar.__main__ import main
from fhavatar.io import side_by_side, video_info

ROOT = Path(__file__).resolve().parents[1]
REAL = ROOT.parent / "shared" / "data" / "realfaces"
P07 = REAL / "p07_frontal_woman-smiling-aligned_p4d-zoe.jpg"
V01 = REAL / "v01_man-expressions-greenscreen_lp-d0.mp4"


def _run_module(*args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "HF_HUB_OFFLINE": "1"}
    return subprocess.run([sys.executable, "-m", "fhavatar", *args], capture_output=True, text=True, env=env,
                          cwd=ROOT, timeout=120)


def test_missing_photo_fails_with_one_line(tmp_path):
    proc = _run_module(str(tmp_path / "nobody.jpg"), "--out", str(tmp_path / "out"))
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("fhavatar: error:") and "nobody.jpg" in lines[0]
    assert "Traceback" not in proc.stderr and not (tmp_path / "out").exists()


def test_user_errors_return_status_2(tmp_path, capsys):
    photo = tmp_path / "photo.png"
    Image.fromarray(np.zeros((32, 32, 3), np.uint8)).save(photo)
    assert main([str(photo), "--size", "5", "--out", str(tmp_path)]) == 2
    assert main([str(photo), "--driving", str(tmp_path / "none.mp4"), "--out", str(tmp_path)]) == 2
    assert main([str(tmp_path), "--out", str(tmp_path / "o")]) == 2  # a directory, not a photo
    errors = capsys.readouterr().err.strip().splitlines()
    assert len(errors) == 3 and all(line.startswith("fhavatar: error:") for line in errors)
    assert "--size" in errors[0] and "none.mp4" in errors[1]


def test_side_by_side_keeps_the_render_height():
    render = np.zeros((64, 64, 3), np.float32)
    clip = np.full((480, 640, 3), 255, np.uint8)
    out = side_by_side(render, clip)
    assert out.shape == (64, 64 + 85, 3) and out.dtype == np.uint8 and out[:, 64:].min() == 255


@pytest.mark.skipif(not REAL.is_dir(), reason="needs shared/data/realfaces")
def test_cli_writes_avatar_front_orbit_and_reenactment(tmp_path, capsys):
    out = tmp_path / "out"
    code = main([str(P07), "--driving", str(V01), "--driving-frames", "6", "--out", str(out), "--frames", "3",
                 "--size", "64", "--resolution", "32", "--quiet"])
    assert code == 0, capsys.readouterr().err
    assert {p.name for p in out.iterdir()} == {"avatar.ply", "front.png", "orbit.mp4", "reenact.mp4"}
    orbit, reenact = video_info(out / "orbit.mp4"), video_info(out / "reenact.mp4")
    assert (orbit.num_frames, orbit.width, orbit.height, orbit.fps) == (3, 64, 64, 24)
    assert (reenact.num_frames, reenact.width, reenact.height, reenact.fps) == (6, 128, 64, 25)  # render | clip
    assert Image.open(out / "front.png").size == (64, 64)
    from fhavatar.avatar import Avatar

    assert len(Avatar.load_ply(out / "avatar.ply")) > 1000
    assert "orbit.mp4" in capsys.readouterr().out
