"""The app keeps the avatar (Create offers avatar.safetensors; Animate takes it instead of the photo, and refuses files
that are not avatars in plain words), animates built-in motions without a clip, and writes its .ply in the 3D viewer's
frame, which decodes as the 3DGS viewers decode it."""

from pathlib import Path

import imageio_ffmpeg
import numpy as np
import pytest
import torch

gr = pytest.importorskip("gradio")

import app  # noqa: E402
from fhavatar import app_service  # noqa: E402
from fhavatar.motions import FPS, motion_length  # noqa: E402

PHOTO = app.EXAMPLES_DIR / "astronaut.png"


@pytest.fixture(scope="module")
def service():
    return app.AvatarService(resolution=64)


@pytest.fixture(scope="module")
def created(service):
    """(create's outputs, the session avatar) for the example photo."""
    outputs = service.create(str(PHOTO), frames=1, size=64, elevation=10.0, background="#ffffff")
    return outputs


def _video(path) -> tuple[dict, np.ndarray]:
    reader = imageio_ffmpeg.read_frames(str(path))
    meta = next(reader)
    w, h = meta["size"]
    return meta, np.stack([np.frombuffer(f, np.uint8).reshape(h, w, 3) for f in reader]).astype(np.float32)


def test_a_built_in_motion_needs_no_clip(service, created):
    session = created[3]
    meta, frames = _video(service.animate(None, None, "relative", 64, session, motion="nod"))
    assert len(frames) == motion_length("nod") and meta["fps"] == FPS and tuple(meta["size"]) == (64, 64)
    assert np.abs(frames[1:] - frames[:-1]).mean((1, 2, 3)).max() < 12  # smooth: no jumps between frames
    assert np.abs(frames - frames[:1]).mean((1, 2, 3)).max() > 2  # and the head does move
    with pytest.raises(gr.Error, match="driving video or choose a built-in motion"):
        service.animate(None, None, "relative", 64, session, motion=None)
    with pytest.raises(gr.Error, match="driving video or choose a built-in motion"):
        service.animate(None, None, "relative", 64, session, motion="dance")


def test_the_kept_avatar_file_animates_as_the_session_avatar(service, created, tmp_path):
    kept = created[5]
    assert Path(kept).name == "avatar.safetensors" and Path(kept).stat().st_size > 100_000
    fresh = app.AvatarService(resolution=64)  # another server: nothing cached, no photo, only the file
    _, from_file = _video(fresh.animate(None, None, "relative", 64, None, motion="blink", avatar_file=kept))
    _, from_session = _video(service.animate(None, None, "relative", 64, created[3], motion="blink"))
    assert np.abs(from_file - from_session).mean() < 1.0
    # the file wins over a photo of someone else, and works with a driving clip too
    from fhavatar.io import load_image, write_video

    clip = write_video(tmp_path / "clip.mp4", [np.roll(load_image(PHOTO), s, axis=1) for s in (0, 3, 6)], fps=10)
    meta, pairs = _video(fresh.animate(None, str(clip), "relative", 64, None, avatar_file=kept))
    assert len(pairs) == 3 and meta["fps"] == 10


@pytest.mark.parametrize("what", ["photo", "text", "ply", "head asset", "bare avatar", "truncated"])
def test_files_that_are_not_avatars_get_a_plain_error(service, created, tmp_path, what):
    from fhavatar.avatar import Avatar

    path = tmp_path / {"photo": "me.png", "text": "notes.safetensors", "ply": "avatar.ply"}.get(what, "x.safetensors")
    if what == "photo":
        path.write_bytes(PHOTO.read_bytes())
    elif what == "text":
        path.write_text("not an avatar")
    elif what == "ply":
        path.write_bytes(Path(created[2]).read_bytes())
    elif what == "head asset":
        from fhavatar.head.open_head import default_asset_path

        path.write_bytes(default_asset_path().read_bytes())
    elif what == "bare avatar":  # Avatar.save alone: no photo track, so nothing to animate it from
        Avatar.save(created[3].avatar, path)
    else:
        data = Path(created[5]).read_bytes()
        path.write_bytes(data[: len(data) // 2])
    with pytest.raises(gr.Error) as info:
        service.animate(None, None, "relative", 64, None, motion="nod", avatar_file=str(path))
    message = str(info.value)
    assert path.name in message and "Please upload the avatar.safetensors file that Create offers" in message
    assert str(tmp_path) not in message and "Traceback" not in message and "`" not in message


def test_the_viewer_ply_is_upright_facing_the_start_camera_in_3dgs_conventions(service, created):
    """The .ply decoded as 3DGS's reference loader and gsplat.js (Gradio's viewer) decode it: colour
    0.5 + SH_C0 * f_dc, opacity sigmoid(opacity), scales exp(scale_*), rotation (rot_0 = w, x, y, z); positions
    in the viewers' frame: -y up, the face toward the start camera (azimuth 0.5 rad), framed for the canvas."""
    from fhavatar.io.ply import PLY_PROPERTIES, SH_C0

    raw = Path(created[2]).read_bytes()
    end = raw.index(b"end_header\n") + len(b"end_header\n")
    header = raw[:end].decode()
    assert header.startswith("ply\nformat binary_little_endian 1.0\n")
    data = np.frombuffer(raw, dtype=[(name, "<f4") for name in PLY_PROPERTIES], offset=end)
    avatar = created[3].avatar
    g = app_service.viewer_gaussians(avatar.gaussians())
    np.testing.assert_allclose(np.stack([data["x"], data["y"], data["z"]], 1), g.means.numpy(), atol=1e-5)
    colours = 0.5 + SH_C0 * np.stack([data[f"f_dc_{i}"] for i in range(3)], 1)
    np.testing.assert_allclose(colours, avatar.gaussians().colors.numpy(), atol=1e-5)
    np.testing.assert_allclose(1 / (1 + np.exp(-data["opacity"])), avatar.gaussians().opacities.numpy(), atol=1e-5)
    scale = g.scales.numpy() / avatar.gaussians().scales.numpy()
    np.testing.assert_allclose(np.exp(np.stack([data[f"scale_{i}"] for i in range(3)], 1)), g.scales.numpy(), rtol=1e-4)
    assert np.allclose(scale, scale[0, 0], rtol=1e-4)  # one uniform scale
    # orientation: the head's landmarks in the viewer frame
    from fhavatar.head.canonical_face import CHIN, FOREHEAD_TOP

    head = avatar.head_model
    landmarks = head.landmarks(avatar.posed_vertices()[None])[0]
    n = len(landmarks)
    points = type(g)(means=landmarks, quats=torch.tensor([[1.0, 0, 0, 0]]).expand(n, 4), scales=torch.ones(n, 3),
                     opacities=torch.ones(n), colors=torch.zeros(n, 3))
    marks = app_service.viewer_gaussians(points).means.numpy()
    assert marks[FOREHEAD_TOP, 1] < marks[CHIN, 1]  # -y is up: the forehead above the chin
    nose, back = marks[1], marks[[CHIN, FOREHEAD_TOP]].mean(0)
    facing = (nose - back) * [1, 0, 1]
    camera = np.array([np.sin(app_service.VIEWER_AZIMUTH), 0, -np.cos(app_service.VIEWER_AZIMUTH)])
    assert facing @ camera / np.linalg.norm(facing) > 0.95  # the face looks at the start camera
    right = marks[263] - marks[33]  # the subject's left eye minus the right eye: the viewer's right (not mirrored)
    camera_right = np.cross([0, 1, 0], -camera)  # OpenCV-style camera: right = down x forward (+y is down)
    assert right @ camera_right > 0
