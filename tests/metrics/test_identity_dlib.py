"""CSIM (dlib): dlib's face-recognition network as the identity measure that runs without user files.

Same person / different people on the shared real faces (skipped in a clone without ../shared), the shipped
public-domain astronaut photo otherwise; the no-face errors; and the labelling of the substitute in the
evaluation tables (ArcFace CSIM n/a without its weights, CSIM (dlib) filled or marked n/a with the reason).
"""

from __future__ import annotations

import csv
import shutil
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from PIL import Image

from fhavatar import evaluate as ev
from fhavatar._eval_scores import comparability, report
from fhavatar.metrics.identity import (
    DLIB_SAME_PERSON_DISTANCE,
    FaceNotFoundError,
    IdentityMatch,
    dlib_model_files,
    dlib_similarity,
    identity_match,
    load_dlib_embedder,
)
from fhavatar.metrics.report import PAPER_ROWS, format_markdown_table, write_csv_table
from fhavatar.tracking import NoFaceError

ROOT = Path(__file__).resolve().parents[2]
ASTRONAUT = ROOT / "examples" / "astronaut.png"
REALFACES = ROOT.parent / "shared" / "data" / "realfaces"
needs_realfaces = pytest.mark.skipif(not REALFACES.is_dir(), reason=f"real test photos/videos not found at {REALFACES}")


def _photo(prefix: str) -> np.ndarray:
    return np.asarray(Image.open(next(REALFACES.glob(f"{prefix}_*"))).convert("RGB"))


def _frames(prefix: str, picks: tuple[int, ...]) -> list[np.ndarray]:
    from fhavatar.io import read_video

    frames, _ = read_video(next(REALFACES.glob(f"{prefix}_*.mp4")), max_frames=max(picks) + 1)
    return [frames[i] for i in picks]


# ---------------------------------------------------------------------------------------------- model files
def test_model_files_are_the_checked_public_domain_ones(tmp_path):
    files = dlib_model_files()
    assert {p.name for p in files.values()} == {"mmod_human_face_detector.dat", "shape_predictor_5_face_landmarks.dat",
                                                "dlib_face_recognition_resnet_model_v1.dat"}
    assert not any("68" in p.name for p in files.values())  # the non-commercial 68-point predictor is never loaded
    with pytest.raises(FileNotFoundError, match="lacks dlib's mmod_human_face_detector.dat"):
        dlib_model_files(tmp_path)
    for path in files.values():
        (tmp_path / path.name).write_bytes(b"not the model")
    with pytest.raises(ValueError, match="sha256 differs"):
        dlib_model_files(tmp_path)


def test_similarity_is_one_minus_distance_over_1_2():
    assert dlib_similarity(0.0) == 1.0 and dlib_similarity(DLIB_SAME_PERSON_DISTANCE) == 0.5
    assert dlib_similarity(1.2) == pytest.approx(0.0)
    assert IdentityMatch(0.5, True).distance == pytest.approx(0.6)


# ---------------------------------------------------------------------------------------------- same / different
def test_a_photo_matches_its_mirror_and_smaller_copy_in_every_input_form():
    image = Image.open(ASTRONAUT).convert("RGB")
    small = image.transpose(Image.FLIP_LEFT_RIGHT).resize((300, 300))
    match = identity_match(image, small)
    assert match.same_person and match.similarity > 0.8
    embedder = load_dlib_embedder()
    tensor = torch.from_numpy(np.array(image)).permute(2, 0, 1)[None].float() / 255
    from_uint8, from_tensor = embedder.embed(np.asarray(image)), embedder.embed(tensor)
    assert from_uint8.shape == (1, 128)
    torch.testing.assert_close(from_uint8, from_tensor)
    pair = embedder.similarity(torch.cat([tensor, tensor]), tensor)  # one reference for every image
    torch.testing.assert_close(pair, torch.ones(2))


@needs_realfaces
@pytest.mark.parametrize("clip,picks", [("v01", (0, 40, 77)), ("v02", (0, 100, 200))])
def test_frames_of_one_clip_are_the_same_person(clip, picks):
    frames = _frames(clip, picks)
    for other in frames[1:]:
        match = identity_match(other, frames[0])
        assert match.same_person and match.similarity > 0.6, (clip, match)


@needs_realfaces
@pytest.mark.parametrize("a,b", [("p01", "p07"), ("p04", "p05"), ("p03", "p06")])
def test_two_different_people_are_different(a, b):
    match = identity_match(_photo(a), _photo(b))
    assert not match.same_person and match.similarity < 0.45, (a, b, match)


@needs_realfaces
def test_the_two_clips_show_different_people():
    (first,), (second,) = _frames("v01", (0,)), _frames("v02", (0,))
    assert not identity_match(first, second).same_person


# ---------------------------------------------------------------------------------------------- errors
def test_no_face_raises_a_face_not_found_error_naming_the_image():
    face = np.asarray(Image.open(ASTRONAUT).convert("RGB"))
    blank = np.full((300, 200, 3), 128, np.uint8)
    with pytest.raises(FaceNotFoundError, match=r"^render: dlib found no face in the 200x300 image") as info:
        identity_match(blank, face)
    assert info.value.argument == "render" and isinstance(info.value, NoFaceError) and isinstance(info.value, ValueError)
    with pytest.raises(FaceNotFoundError, match="^photo: ") as info:
        identity_match(face, blank)
    assert info.value.argument == "photo"
    small = np.asarray(Image.fromarray(face).resize((200, 300)))
    batch = torch.from_numpy(np.stack([small, blank])).permute(0, 3, 1, 2).float() / 255
    with pytest.raises(FaceNotFoundError, match=r"^images\[1\]: "):
        load_dlib_embedder().embed(batch)
    assert load_dlib_embedder().embed_each(batch)[1] is None


def test_bad_inputs_are_refused_with_what_was_expected():
    with pytest.raises(ValueError, match=r"RGB image \[H, W, 3\] of uint8"):
        identity_match(np.zeros((64, 64, 3), np.float32), np.zeros((64, 64, 3), np.uint8))
    with pytest.raises(TypeError, match="render must be a PIL image"):
        identity_match([1, 2, 3], np.zeros((64, 64, 3), np.uint8))
    with pytest.raises(ValueError, match="render must be one image, got a batch of 2"):
        identity_match(torch.zeros(2, 3, 64, 64), torch.zeros(1, 3, 64, 64))
    with pytest.raises(ValueError, match="must be finite"):
        load_dlib_embedder().embed(torch.full((1, 3, 64, 64), float("nan")))


# ---------------------------------------------------------------------------------------------- labelling
def _result(dlib: dict) -> dict:
    self_sums, cross_sums = ev.Sums(), ev.Sums()
    if dlib["available"]:
        self_sums.add("self_csim_dlib", [0.8, 0.7])
        self_sums.add("self_same_person_dlib", [1.0, 1.0])
        cross_sums.add("cross_csim_dlib", [0.3])
        cross_sums.add("cross_same_person_dlib", [0.0])
    counts = {"self_clips": 1, "self_frames": 2, "cross_pairs": 1, "cross_frames": 1, "no_face_frames": 0}
    return {"self": self_sums, "cross": cross_sums, "per_clip": [], "skipped": [], "counts": counts,
            "lpips_comparable": False, "lpips_source": "random", "id_network": None, "dlib": dlib}


def test_the_dlib_substitute_is_labelled_beside_an_empty_arcface_column(tmp_path):
    result = _result({"available": True, "status": "dlib ResNet (models)", "no_face_frames": 3})
    notes = comparability(result)
    assert notes["self_csim"] == notes["cross_csim"] == "n/a: no --id_network"
    assert notes["self_csim_dlib"].startswith("no: substitute (dlib")
    md = report(result, ev.EvalSettings(), ["data"], "ours")
    header, _, ours = md.split("\n")[2:5]
    assert "| Self: CSIM ↑ | Self: CSIM (dlib) ↑ | Self: AKD ↓" in header
    assert "| Cross: CSIM ↑ | Cross: CSIM (dlib) ↑ | Cross: AED ↓" in header
    assert "| n/a | 0.7500 |" in ours and "| n/a | 0.3000 |" in ours
    assert "frames judged the same person (d ≤ 0.6): self 100 %, cross 0 %" in md and "(left out): 3" in md
    paper = [line for line in md.splitlines() if line.startswith("| paper, FHAvatar on VFHQ")][0]
    assert "| 0.8012 | n/a | 2.798 |" in paper  # the paper's ArcFace CSIM, no dlib number
    rows = [("ours", {"self_csim_dlib": 0.75}), *PAPER_ROWS.items()]
    table = list(csv.reader(write_csv_table(tmp_path / "t.csv", rows, notes).open()))
    assert table[0][3:6] == ["self_lpips", "self_csim", "self_csim_dlib"] and table[1][5] == "0.75"
    # without a dlib value or note the paper's layout is unchanged
    assert "dlib" not in format_markdown_table([("ours", {"self_psnr": 1.0})])


@pytest.mark.parametrize("status,note", [("unavailable (no module named dlib)", "n/a: dlib unavailable"),
                                         ("off (--no_dlib_csim)", "n/a: --no_dlib_csim")])
def test_a_missing_or_skipped_dlib_is_marked_not_silently_empty(status, note):
    result = _result({"available": False, "status": status, "no_face_frames": 0})
    assert comparability(result)["self_csim_dlib"] == note
    md = report(result, ev.EvalSettings(), ["data"], "ours")
    assert "Self: CSIM (dlib) ↑" in md and f"- CSIM (dlib): n/a, the dlib identity measure is {status}." in md


def test_the_measures_fall_back_when_dlib_cannot_load(monkeypatch):
    import fhavatar.metrics.identity as identity
    from fhavatar._eval_scores import _Measures
    from fhavatar.head import OpenHead

    def unavailable(*args, **kwargs):
        raise ModuleNotFoundError("CSIM (dlib) needs dlib: install it")

    monkeypatch.setattr(identity, "load_dlib_embedder", unavailable)
    measures = _Measures(ev.EvalSettings(), OpenHead())
    try:
        assert measures.dlib is None and measures.dlib_status.startswith("unavailable (CSIM (dlib) needs dlib")
        assert measures.csim_dlib(torch.zeros(1, 3, 64, 64), torch.zeros(1, 3, 64, 64)) is None
    finally:
        measures.close()
    args = ev.build_parser().parse_args(["data", "--no_dlib_csim"])
    assert ev._settings(args).dlib_csim is False and ev._settings(ev.build_parser().parse_args(["data"])).dlib_csim


class _Oracle:
    """The real pipeline's tracker and settings, but every avatar re-enacts as the ground truth (no reconstruction)."""

    def __init__(self, pipe):
        self._pipe = pipe

    def __getattr__(self, name):
        return getattr(self._pipe, name)

    def to(self, device):
        return self

    def reconstruct(self, image, **kwargs):
        from fhavatar.tracking import track_image

        return SimpleNamespace(source_track=track_image(image, head=self._pipe.head_model))

    def animate(self, avatar, tracks, height, width, **kwargs):
        return ev.ground_truth(tracks, height, self._pipe.config.background)[0]


def test_evaluate_fills_the_csim_dlib_columns(tmp_path):
    from fhavatar import FHAvatarPipeline
    from fhavatar.io import write_video

    image = np.asarray(Image.open(ASTRONAUT).convert("RGB").resize((256, 256)))
    write_video(tmp_path / "astro.mp4", [np.roll(image, s, axis=1) for s in (0, 3, 6)], fps=10, quality=10)
    shutil.copy(ASTRONAUT, tmp_path / "astronaut.png")
    settings = ev.EvalSettings(max_frames=3, resolution=256, cross_sources="photos")
    clips, photos = ev.collect_inputs([tmp_path], settings)
    result = ev.evaluate(clips, photos, settings, pipe=_Oracle(FHAvatarPipeline.default(resolution=64)))
    assert result["dlib"] == {"available": True, "status": result["dlib"]["status"], "no_face_frames": 0}
    assert result["self"].mean("self_csim") is None  # no ArcFace weights
    assert result["self"].mean("self_csim_dlib") == pytest.approx(1.0)  # the output is the ground truth
    assert result["self"].mean("self_same_person_dlib") == 1.0
    # the ground truth of the clip against the crop of the same person's photo
    assert 0.6 < result["cross"].mean("cross_csim_dlib") < 1.0 and result["cross"].mean("cross_same_person_dlib") == 1.0
    md = ev.write_outputs(result, settings, [str(tmp_path)], tmp_path / "out", "ours")["markdown"].read_text()
    assert "Self: CSIM (dlib) ↑" in md and "no: substitute (dlib ResNet" in md and "n/a: no --id_network" in md
