"""FHAvatarPipeline: end to end on real photos and a real clip, save/load round trips, Hub loading, card, errors."""

from __future__ import annotations

import math
import shutil
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from fhavatar import FHAvatarPipeline, FHAvatarPipelineOutput, make_model_card
from fhavatar.io import read_video, video_info, write_video

REAL = Path(__file__).resolve().parents[2] / "shared" / "data" / "realfaces"
P07 = REAL / "p07_frontal_woman-smiling-aligned_p4d-zoe.jpg"  # frontal, already aligned
P03 = REAL / "p03_34_glasses-older-woman_aflw04331.jpg"  # 3/4 view, glasses
V01 = REAL / "v01_man-expressions-greenscreen_lp-d0.mp4"  # 78 frames, 25 fps, 512²
K, SIZE, DRIVING_FRAMES = 64, 128, 20

needs_real = pytest.mark.skipif(not REAL.is_dir(), reason="needs shared/data/realfaces")


def _quiet(pipe: FHAvatarPipeline) -> FHAvatarPipeline:
    pipe.set_progress_bar_config(disable=True)
    return pipe


@pytest.fixture(scope="module")
def pipe():
    return _quiet(FHAvatarPipeline.default(resolution=K))


@pytest.fixture(scope="module")
def frontal(pipe):
    """p07 with a 4-frame orbit (tensors)."""
    return pipe(P07, num_orbit_frames=4, height=SIZE, width=SIZE, output_type="pt")


@pytest.fixture(scope="module")
def driving_tracks(pipe):
    tracks, fps = pipe.track_driving(V01, num_frames=DRIVING_FRAMES)
    assert fps is None or fps == 25  # None: a path is read inside
    return tracks


@pytest.fixture(scope="module")
def tiny_pipe():
    from fhavatar.head import OpenHead
    from fhavatar.models import FHAvatarModel

    torch.manual_seed(0)
    model = FHAvatarModel.from_preset("tiny", resolution=K).eval()
    return _quiet(FHAvatarPipeline(avatar_model=model, head_model=OpenHead(), resolution=K))


def _psnr(a: torch.Tensor, b: torch.Tensor) -> float:
    mse = float(((a - b) ** 2).mean())
    return 10 * math.log10(1.0 / max(mse, 1e-12))


# ---------------------------------------------------------------------------------------------- end to end
@needs_real
def test_front_render_matches_the_aligned_photo(frontal):
    out = frontal
    assert isinstance(out, FHAvatarPipelineOutput) and out.frames is None
    assert out.front_image.shape == (3, SIZE, SIZE) and out.orbit_frames.shape == (4, 3, SIZE, SIZE)
    assert _psnr(out.front_image[:, :4, :4], torch.ones(3, 4, 4)) > 40.0  # white background
    # The full-resolution atlas (K=256) for the likeness: at K=64 the face texture is a blur.
    full = _quiet(FHAvatarPipeline.default(resolution=256))
    avatar = full.reconstruct(P07)
    track = avatar.source_track
    render = next(full.render_views(avatar, track.camera, SIZE, SIZE))
    photo = torch.from_numpy(track.image).permute(2, 0, 1).float()[None] / 255
    photo = torch.nn.functional.interpolate(photo, size=(SIZE, SIZE), mode="area")[0]
    # Face region: the box of the inner face landmarks (10th-90th percentiles), in render pixels.
    lm = track.landmarks[:468, :2] * SIZE / track.image.shape[0]
    (x0, y0), (x1, y1) = np.percentile(lm, 10, axis=0), np.percentile(lm, 90, axis=0)
    rows, cols = slice(int(y0), int(math.ceil(y1))), slice(int(x0), int(math.ceil(x1)))
    face = photo[:, rows, cols]
    psnr = _psnr(render[:, rows, cols], face)
    flat = _psnr(face.mean((1, 2), keepdim=True).expand_as(face), face)  # a face-coloured blob, for scale
    shifted = max(_psnr(torch.roll(render, shift, dim)[:, rows, cols], face) for shift in (-4, 4) for dim in (1, 2))
    print(f"p07 front view vs aligned photo, face box {x1 - x0:.0f}x{y1 - y0:.0f} px: PSNR {psnr:.1f} dB "
          f"(flat face colour {flat:.1f} dB, render shifted 4 px {shifted:.1f} dB)")
    assert psnr > 18.0 and psnr > flat + 3.0 and psnr > shifted + 1.0


@needs_real
def test_three_quarter_photo_orbit_and_reenactment_videos(pipe, tmp_path):
    out = pipe(P03, driving_video=V01, num_driving_frames=DRIVING_FRAMES, num_orbit_frames=6, height=SIZE,
               width=SIZE, output_type="np")
    assert out.fps == 25 and out.frames.shape == (DRIVING_FRAMES, SIZE, SIZE, 3)
    assert out.orbit_frames.shape == (6, SIZE, SIZE, 3) and out.front_image.shape == (SIZE, SIZE, 3)
    assert out.frames.std(axis=0).mean() > 1e-3  # the face moves
    write_video(tmp_path / "orbit.mp4", list(out.orbit_frames), fps=24)
    write_video(tmp_path / "reenact.mp4", list(out.frames), fps=out.fps)
    for name, count, fps in (("orbit", 6, 24), ("reenact", DRIVING_FRAMES, 25)):
        info = video_info(tmp_path / f"{name}.mp4")
        assert (info.num_frames, info.width, info.height, info.fps) == (count, SIZE, SIZE, fps)
        frames, _ = read_video(tmp_path / f"{name}.mp4")
        assert len(frames) == count and frames[0].shape == (SIZE, SIZE, 3)
    # The orbit's back view shows the head (not background) and differs from the front view.
    back = out.orbit_frames[3]
    assert back[SIZE // 2, SIZE // 2].mean() < 0.9 and np.abs(back - out.orbit_frames[0]).mean() > 0.02


@needs_real
def test_animate_orbit_and_output_types(pipe, frontal, driving_tracks):
    avatar = frontal.avatar
    frames = pipe.animate(avatar, driving_tracks[:5], height=64, width=96)
    assert frames.shape == (5, 3, 64, 96) and frames.min() >= 0 and frames.max() <= 1
    absolute = pipe.animate(avatar, driving_tracks[:3], mode="absolute", use_driving_camera=True, height=64,
                            width=64, output_type="pil")
    assert len(absolute) == 3 and absolute[0].size == (64, 64)
    orbit = pipe.orbit(avatar, num_frames=4, height=SIZE, width=SIZE)
    torch.testing.assert_close(orbit, frontal.orbit_frames)  # deterministic
    as_np = pipe.orbit(avatar, num_frames=2, elevation=30, height=32, width=32, output_type="np")
    assert as_np.shape == (2, 32, 32, 3) and as_np.dtype == np.float32
    avatar.source_track, track = None, avatar.source_track
    try:
        with pytest.raises(ValueError, match="source_track"):
            pipe.animate(avatar, driving_tracks[:2])
        frames = pipe.animate(avatar, driving_tracks[:2], source_track=track, height=32, width=32)
        assert frames.shape == (2, 3, 32, 32)
    finally:
        avatar.source_track = track


@needs_real
def test_tuple_and_dataclass_outputs_are_equal(pipe, frontal):
    avatar, frames, orbit, track, front, fps = pipe(P07, num_orbit_frames=4, height=SIZE, width=SIZE,
                                                    output_type="pt", return_dict=False)
    assert frames is None and fps is None and track.image.shape == frontal.source_track.image.shape
    torch.testing.assert_close(front, frontal.front_image)
    torch.testing.assert_close(orbit, frontal.orbit_frames)
    torch.testing.assert_close(avatar.colors, frontal.avatar.colors)


# ---------------------------------------------------------------------------------------------- files and the Hub
def _only_safetensors(folder: Path) -> None:
    weights = [p.name for p in folder.rglob("*") if p.suffix in (".bin", ".pt", ".pth", ".pkl", ".ckpt")]
    assert not weights, weights
    assert list(folder.rglob("*.safetensors"))


@needs_real
def test_default_save_and_load_render_identically(pipe, frontal, tmp_path):
    pipe.save_pretrained(tmp_path)
    _only_safetensors(tmp_path)
    loaded = _quiet(FHAvatarPipeline.from_pretrained(tmp_path))
    assert type(loaded.avatar_model) is type(pipe.avatar_model) and loaded.prior is None
    assert loaded.config.resolution == K and list(loaded.config.background) == [1.0, 1.0, 1.0]
    for name, value in pipe.head_model.state_dict().items():
        torch.testing.assert_close(loaded.head_model.state_dict()[name], value, msg=name)
    out = loaded(P07, num_orbit_frames=4, height=SIZE, width=SIZE, output_type="pt")
    torch.testing.assert_close(out.front_image, frontal.front_image)
    torch.testing.assert_close(out.orbit_frames, frontal.orbit_frames)
    with pytest.raises(ValueError, match="safetensors"):
        pipe.save_pretrained(tmp_path / "pickled", safe_serialization=False)


@needs_real
def test_tiny_learned_model_end_to_end_and_round_trip(tiny_pipe, driving_tracks, tmp_path):
    out = tiny_pipe(P07, driving_video=driving_tracks[:3], num_orbit_frames=2, height=64, width=64, output_type="pt")
    assert out.frames.shape == (3, 3, 64, 64) and out.orbit_frames.shape == (2, 3, 64, 64)
    assert torch.isfinite(out.front_image).all() and out.front_image.std() > 1e-3
    tiny_pipe.save_pretrained(tmp_path)
    _only_safetensors(tmp_path)
    loaded = _quiet(FHAvatarPipeline.from_pretrained(tmp_path))
    again = loaded.orbit(out.avatar, num_frames=2, height=64, width=64)
    torch.testing.assert_close(again, out.orbit_frames)
    avatar = loaded.reconstruct(P07)
    torch.testing.assert_close(avatar.colors, out.avatar.colors)
    torch.testing.assert_close(avatar.scales, out.avatar.scales)


def _hub_cache(cache: Path, repo_id: str, folder: Path) -> None:
    """A Hugging Face cache holding `folder` as the `main` snapshot of model repo `repo_id` (huggingface_hub's layout)."""
    repo = cache / ("models--" + repo_id.replace("/", "--"))
    commit = "0123456789abcdef0123456789abcdef01234567"
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text(commit)
    shutil.copytree(folder, repo / "snapshots" / commit)


def test_repo_id_loads_offline_from_the_hub_cache(tmp_path, monkeypatch):
    source = FHAvatarPipeline.default(resolution=32)
    source.save_pretrained(tmp_path / "saved")
    _hub_cache(tmp_path / "hub", "someone/fhavatar-default", tmp_path / "saved")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    loaded = FHAvatarPipeline.from_pretrained("someone/fhavatar-default", cache_dir=tmp_path / "hub",
                                              local_files_only=True)
    assert loaded.config.resolution == 32 and loaded.config._name_or_path.endswith("01234567")
    torch.testing.assert_close(loaded.head_model.template_vertices, source.head_model.template_vertices)
    with pytest.raises(FileNotFoundError, match="not in the local cache"):
        FHAvatarPipeline.from_pretrained("someone/missing", cache_dir=tmp_path / "hub", local_files_only=True)
    with pytest.raises(FileNotFoundError, match="no folder"):
        FHAvatarPipeline.from_pretrained(tmp_path / "no" / "such" / "dir")
    with pytest.raises(FileNotFoundError, match="model_index.json"):
        FHAvatarPipeline.from_pretrained(tmp_path / "hub")


def test_model_card_lists_every_licence(tmp_path, monkeypatch):
    default = FHAvatarPipeline.default(resolution=32)
    card = make_model_card(default, "someone/fhavatar", metrics={"PSNR": "21.3"})
    assert card.startswith("---\npipeline_tag: image-to-3d\n") and "license: apache-2.0" in card
    assert "{{" not in card and "someone/fhavatar" in card and "| PSNR | 21.3 |" in card
    for text in ("OpenHead", "MediaPipe", "ProjectionAvatarModel", "| FHAvatar code | this project | Apache-2.0 |"):
        assert text in card, text
    assert "non-commercial" not in card.lower()

    class FLAME:  # stands in for fhavatar.head.FLAME (its assets are not shipped)
        pass

    fake = SimpleNamespace(head_model=FLAME(), avatar_model=default.avatar_model, prior=object(),
                           config=SimpleNamespace(resolution=256))
    card = make_model_card(fake, "someone/fhavatar-full")
    assert "license: other" in card and "license_link:" in card
    assert "PanoHead" in card and "EG3D" in card and "FLAME licence" in card
    fake.head_model = default.head_model
    card = make_model_card(fake, "someone/fhavatar-prior")
    assert "license_name: panohead-non-commercial" in card and "**non-commercial**" in card
    with pytest.raises(ValueError, match="repo_id"):
        make_model_card(default, "a/b/c")

    # push_to_hub writes that card as README.md next to the safetensors files (upload intercepted: no network).
    import huggingface_hub

    uploaded = {}
    monkeypatch.setattr(huggingface_hub, "create_repo", lambda repo_id, **kw: SimpleNamespace(repo_id=repo_id))

    def fake_upload(folder, repo_id, **kwargs):
        uploaded.update({p.name: p.read_bytes() for p in Path(folder).rglob("*") if p.is_file()}, repo=repo_id)

    monkeypatch.setattr(default, "_upload_folder", fake_upload)
    default.push_to_hub("someone/fhavatar")
    assert uploaded["repo"] == "someone/fhavatar" and "model_index.json" in uploaded
    assert uploaded["README.md"].decode().startswith("---\npipeline_tag: image-to-3d")


# ---------------------------------------------------------------------------------------------- bad inputs
def test_bad_inputs_name_the_argument(pipe, tmp_path):
    photo = np.zeros((64, 64, 3), np.uint8)
    cases = [
        (dict(image=tmp_path / "missing.jpg"), FileNotFoundError, "`image`"),
        (dict(image=tmp_path), ValueError, "`image`.*directory"),
        (dict(image=42), ValueError, "`image`.*int"),
        (dict(image=photo, height=0), ValueError, "`height`"),
        (dict(image=photo, width=100_000), ValueError, "`width`"),
        (dict(image=photo, height=256.0), ValueError, "`height`"),
        (dict(image=photo, num_orbit_frames=0), ValueError, "`num_orbit_frames`"),
        (dict(image=photo, num_orbit_frames=10**6), ValueError, "`num_orbit_frames`"),
        (dict(image=photo, mode="sideways"), ValueError, "`mode`"),
        (dict(image=photo, output_type="jpg"), ValueError, "`output_type`"),
        (dict(image=photo, driving_video=tmp_path / "missing.mp4"), FileNotFoundError, "`driving_video`"),
        (dict(image=photo, driving_video=tmp_path), ValueError, "`driving_video`.*directory"),
        (dict(image=photo, driving_video=[]), ValueError, "`driving_video`"),
        (dict(image=photo, driving_video=3.5), ValueError, "`driving_video`"),
        (dict(image=photo, driving_video=["a.png"]), ValueError, "`driving_video`"),
        (dict(image=photo, driving_video=np.zeros((5000, 2, 2, 3), np.uint8)), ValueError, "`driving_video`.*5000"),
        (dict(image=photo, driving_video=[photo], num_driving_frames=0), ValueError, "`num_driving_frames`"),
    ]
    for kwargs, error, match in cases:
        with pytest.raises(error, match=match):
            pipe(**kwargs)
    with pytest.raises(ValueError, match="`avatar`"):
        pipe.orbit("not an avatar")
    with pytest.raises(ValueError, match="`resolution`"):
        FHAvatarPipeline.default(resolution=3)


def test_a_photo_without_a_face_is_a_clear_error(pipe):
    from fhavatar.tracking import NoFaceError

    with pytest.raises(NoFaceError):
        pipe(np.full((256, 256, 3), 200, np.uint8), orbit=False, height=32, width=32)


@pytest.mark.slow
@needs_real
def test_full_size_end_to_end():
    pipe = _quiet(FHAvatarPipeline.default())
    out = pipe(P07, driving_video=V01, num_orbit_frames=72, height=512, width=512, output_type="np")
    assert out.orbit_frames.shape == (72, 512, 512, 3) and out.frames.shape == (78, 512, 512, 3)
    assert len(out.avatar) > 80_000 and out.fps == 25
