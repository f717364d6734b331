"""The evaluation protocol end to end with the real built-in pipeline (tiny sizes, 3 frames of a public-domain photo)."""

from __future__ import annotations

import csv
import json
import math
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from fhavatar import evaluate as ev
from fhavatar.metrics.report import COLUMNS, PAPER_ROWS, format_markdown_table, write_csv_table

ASTRONAUT = Path(__file__).resolve().parents[1] / "examples" / "astronaut.png"
needs_photo = pytest.mark.skipif(not ASTRONAUT.is_file(), reason="needs examples/astronaut.png")


def test_markdown_and_csv_tables_follow_the_paper_layout(tmp_path):
    rows = [("ours", {"self_psnr": 20.0, "self_ssim": 0.5, "cross_apd": 1.25, "self_csim": None}), *PAPER_ROWS.items()]
    notes = {"self_akd": "substitute"}
    md = format_markdown_table(rows, notes).splitlines()
    assert md[0].startswith("| Method | Self: PSNR ↑ | Self: SSIM ↑ | Self: LPIPS ↓ | Self: CSIM ↑ | Self: AKD ↓")
    assert md[0].endswith("Cross: CSIM ↑ | Cross: AED ↓ | Cross: APD ↓ |")
    assert md[2] == "| ours | 20.00 | 0.5000 | n/a | n/a | n/a | n/a | n/a | n/a | n/a | 1.2500 |"
    assert "| paper, FHAvatar on VFHQ (Tab. 1) | 23.24 | 0.7995 | 0.2384 | 0.8012 | 2.798 |" in md[3]
    assert md[-1].startswith("| *comparable with the paper?* |") and "substitute" in md[-1]
    path = write_csv_table(tmp_path / "t.csv", rows, notes)
    table = list(csv.reader(path.open()))
    assert table[0] == ["method", *(key for key, _, _ in COLUMNS)]
    assert table[1][:3] == ["ours", "20.0", "0.5"] and table[1][4] == "" and table[1][-1] == "1.25"
    assert float(table[3][1]) == 26.61 and table[-1][0] == "comparable with the paper?"


def test_collect_inputs_reads_videos_photos_and_preprocessed_datasets(tmp_path):
    from fhavatar.io import write_video

    frames = [np.full((64, 64, 3), v, np.uint8) for v in (0, 60, 120, 180, 240)]
    write_video(tmp_path / "clip.mp4", frames, fps=10)
    Image.new("RGB", (32, 32)).save(tmp_path / "face.png")
    (tmp_path / "notes.md").write_text("ignored")
    settings = ev.EvalSettings(max_frames=2, frame_stride=2)
    clips, photos = ev.collect_inputs([tmp_path], settings)
    assert [c.name for c in clips] == ["clip"] and [p.name for p in photos] == ["face.png"]
    assert len(clips[0].frames) == 2 and abs(int(clips[0].frames[1].mean()) - 120) < 6  # frames 0 and 2
    # A preprocessed dataset: dataset.json + manifest.jsonl + <dir>/frames/*.png.
    root = tmp_path / "dataset"
    (root / "c0" / "frames").mkdir(parents=True)
    for i in range(4):
        Image.new("RGB", (16, 16), (i * 50, 0, 0)).save(root / "c0" / "frames" / f"{i:06d}.png")
    (root / "dataset.json").write_text(json.dumps({"format": "fhavatar-dataset", "version": 1}))
    (root / "manifest.jsonl").write_text(json.dumps({"clip": "c0", "dir": "c0", "num_frames": 4}) + "\n")
    clips, photos = ev.collect_inputs([root], ev.EvalSettings(max_frames=3, frame_stride=1))
    assert [c.name for c in clips] == ["c0"] and photos == []
    assert [int(f[0, 0, 0]) for f in clips[0].frames] == [0, 50, 100]
    with pytest.raises(FileNotFoundError, match="DATA .* does not exist"):
        ev.collect_inputs([tmp_path / "missing"], settings)
    with pytest.raises(ValueError, match="holds no video"):
        ev.collect_inputs([tmp_path / "face.png"], settings)


def test_cli_rejects_bad_options_with_one_line(capsys, tmp_path):
    assert ev.main([str(tmp_path), "--max_frames", "1"]) == ev.USER_ERROR
    assert "--max_frames must be >= 2, got 1" in capsys.readouterr().err
    assert ev.main([str(tmp_path), "--id_network", str(tmp_path / "none.pth")]) == ev.USER_ERROR
    assert "--id_network" in capsys.readouterr().err


@pytest.fixture(scope="module")
def clip_folder(tmp_path_factory) -> Path:
    """A 3-frame clip of the astronaut photo drifting right, and the photo itself as a cross-identity source."""
    from fhavatar.io import write_video

    folder = tmp_path_factory.mktemp("evaldata")
    image = np.asarray(Image.open(ASTRONAUT).convert("RGB").resize((256, 256)))
    frames = [np.roll(image, shift, axis=1) for shift in (0, 3, 6)]
    write_video(folder / "astro.mp4", frames, fps=10, quality=10)
    shutil.copy(ASTRONAUT, folder / "astronaut.png")
    return folder


@pytest.fixture(scope="module")
def tiny_pipe():
    from fhavatar import FHAvatarPipeline

    return FHAvatarPipeline.default(resolution=64)


@needs_photo
def test_evaluate_end_to_end_with_the_built_in_pipeline(clip_folder, tiny_pipe, tmp_path, capsys):
    settings = ev.EvalSettings(max_frames=3, resolution=64, cross_sources="photos")
    clips, photos = ev.collect_inputs([clip_folder], settings)
    result = ev.evaluate(clips, photos, settings, pipe=tiny_pipe)
    assert result["counts"] == {"self_clips": 1, "self_frames": 2, "cross_pairs": 1, "cross_frames": 2,
                                "no_face_frames": 0}
    s, c = result["self"], result["cross"]
    assert s.mean("self_psnr_face") > s.mean("self_psnr_fg")  # the face is better rendered than hair and torso
    assert 8.0 < s.mean("self_psnr") < 40.0 and 0.0 < s.mean("self_ssim") < 1.0 and s.mean("self_lpips") > 0
    assert 0.0 < s.mean("self_akd") < 40.0 and s.mean("self_apd") < 15.0 and s.mean("self_aed") >= 0.0
    assert s.mean("self_csim") is None and c.mean("cross_apd") is not None and math.isfinite(c.mean("cross_aed"))
    paths = ev.write_outputs(result, settings, [str(clip_folder)], tmp_path, "ours")
    md = paths["markdown"].read_text()
    assert "| ours |" in md and "paper, FHAvatar on HDTF (Tab. 2)" in md and "1 clips, 2 frames" in md
    assert "no: random AlexNet trunk" in md and "n/a: no --id_network" in md
    rows = list(csv.DictReader(paths["per_clip"].open()))
    assert [(r["setting"], r["source"]) for r in rows] == [("self", "astro"), ("cross", "astronaut")]
    assert json.loads(paths["settings"].read_text())["settings"]["resolution"] == 64


class _OraclePipeline:
    """The real pipeline, except that `animate` returns the ground truth: every metric must read "perfect"."""

    def __init__(self, pipe):
        self._pipe = pipe

    def __getattr__(self, name):
        return getattr(self._pipe, name)

    def to(self, device):
        return self

    def animate(self, avatar, tracks, height, width, **kwargs):
        return ev.ground_truth(tracks, height, self._pipe.config.background)[0]


@needs_photo
def test_a_pipeline_that_renders_the_ground_truth_scores_perfectly(clip_folder, tiny_pipe):
    settings = ev.EvalSettings(max_frames=3, resolution=64, cross=False)
    clips, _ = ev.collect_inputs([clip_folder], settings)
    s = ev.evaluate(clips, [], settings, pipe=_OraclePipeline(tiny_pipe))["self"]
    assert s.mean("self_psnr") == s.mean("self_psnr_fg") == s.mean("self_psnr_face") == math.inf
    assert s.mean("self_ssim") == pytest.approx(1.0, abs=1e-5) and s.mean("self_lpips") == pytest.approx(0.0, abs=1e-6)
    assert s.mean("self_akd") == 0.0 and s.mean("self_aed") == 0.0 and s.mean("self_apd") == 0.0
