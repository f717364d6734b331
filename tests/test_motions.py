"""Built-in motions (`fhavatar.motions`): every preset is smooth at 25 fps, starts and ends at the source, and moves the
part it is named for; the pipeline re-enacts each one on a real avatar."""

import math
from pathlib import Path

import numpy as np
import pytest
import torch

from fhavatar.head.open_head import OpenHead
from fhavatar.motions import FPS, MOTIONS, check_motion, motion_curves, motion_length, motion_params
from fhavatar.rotations import axis_angle_to_matrix
from tests.test_animation import _track

#: Largest move of any head vertex between two frames (head units; 0.03 = 1.7 cm, 42 cm/s at 25 fps: a brisk head
#: shake), and the largest change of that move from one frame to the next (a jump shows as both).
MAX_STEP = 0.03
MAX_STEP_CHANGE = 0.025
UPPER_LID, LOWER_LID, UPPER_LIP, LOWER_LIP, NOSE_TIP = 159, 145, 13, 14, 1
MOUTH_CORNERS = (61, 291)
EXAMPLE_PHOTO = Path(__file__).resolve().parents[1] / "examples" / "astronaut.png"


@pytest.fixture(scope="module")
def head():
    return OpenHead()


@pytest.fixture(scope="module")
def source():
    return _track(12, -4, 2, expression=0.002, eyes=0.05)


@pytest.fixture(scope="module")
def posed(head, source):
    """Preset -> (params, cameras, vertices [T, V, 3] float64)."""
    out = {}
    for name in MOTIONS:
        params, cameras = motion_params(name, source, head)
        out[name] = params, cameras, head(params).double().numpy()
    return out


def _angles(axis_angle: torch.Tensor) -> np.ndarray:  # [T, 3] -> [T, 3] yaw, pitch, roll degrees (Ry Rx Rz)
    m = axis_angle_to_matrix(axis_angle.double()).numpy()
    pitch = np.degrees(np.arcsin(np.clip(-m[:, 1, 2], -1, 1)))
    yaw = np.degrees(np.arctan2(m[:, 0, 2], m[:, 2, 2]))
    roll = np.degrees(np.arctan2(m[:, 1, 0], m[:, 1, 1]))
    return np.stack([yaw, pitch, roll], 1)


@pytest.mark.parametrize("name", list(MOTIONS))
def test_every_preset_is_smooth_and_starts_and_ends_at_the_source(name, posed, head, source):
    params, cameras, vertices = posed[name]
    rest = head(source.params).double().numpy()[0]
    assert len(vertices) == len(cameras) == motion_length(name) >= 2 * FPS  # at least two seconds
    np.testing.assert_allclose(vertices[0], rest, atol=1e-6)  # relative to the source, like a driving video
    np.testing.assert_allclose(vertices[-1], rest, atol=1e-6)  # at rest again: the preset loops
    steps = np.diff(vertices, axis=0)
    assert np.linalg.norm(steps, axis=-1).max() < MAX_STEP
    assert np.linalg.norm(np.diff(steps, axis=0), axis=-1).max() < MAX_STEP_CHANGE
    assert not params.global_rotation.any() and not params.translation.any()  # the source camera sees it all
    torch.testing.assert_close(cameras.cam2world, source.camera.cam2world.expand(len(cameras), 4, 4))


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_random_draws_and_other_lengths_stay_smooth(head, source, seed):
    """Other generator draws and lengths (shorter, longer, repeated gestures) keep the bounds and end at rest."""
    rest = head(source.params).double().numpy()[0]
    for name in MOTIONS:
        for frames in (37, 260):
            params, _ = motion_params(name, source, head, frames, generator=torch.Generator().manual_seed(seed))
            vertices = head(params).double().numpy()
            steps = np.diff(vertices, axis=0)
            assert np.linalg.norm(steps, axis=-1).max() < MAX_STEP, (name, frames)
            assert np.linalg.norm(np.diff(steps, axis=0), axis=-1).max() < MAX_STEP_CHANGE, (name, frames)
            np.testing.assert_allclose(vertices[-1], rest, atol=1e-6)


def test_curves_reach_rest_with_zero_speed():
    """Minimum-jerk keyframes: at the first and last frames the curves and their first differences are ~zero."""
    for name in MOTIONS:
        curves = motion_curves(name)
        for field in ("yaw", "pitch", "roll", "eye_yaw", "eye_pitch", "jaw", "blink", "smile", "lip_round", "brows"):
            values = getattr(curves, field)
            assert np.isfinite(values).all()
            assert abs(values[0]) < 1e-9 and abs(values[-1]) < 1e-9, (name, field)
            assert abs(values[1] - values[0]) < 0.05 * max(np.abs(values).max(), 1e-9) + 1e-9, (name, field)


def test_talk_moves_the_mouth_and_little_else(posed):
    params, _, v = posed["talk"]
    opening = v[:, LOWER_LIP, 1] - v[:, UPPER_LIP, 1]
    assert opening.max() - opening.min() > 0.012  # the lips part by over 6 mm and close again
    # syllables: the mouth opens and closes several times a second
    opens = np.sum(np.diff(np.sign(np.diff(-opening))) < 0)
    assert opens >= 2.5 * len(v) / FPS
    head = _angles(params.neck)
    assert np.abs(head).max() < 4.0  # small head movements while talking
    assert float(params.jaw[:, 0].max()) > math.radians(5)


def test_smile_lifts_and_widens_the_mouth_corners(posed):
    _, _, v = posed["smile"]
    left, right = v[:, MOUTH_CORNERS[1]], v[:, MOUTH_CORNERS[0]]
    rise = (left[:, 1] + right[:, 1]) / 2 - (left[0, 1] + right[0, 1]) / 2
    widen = (left[:, 0] - right[:, 0]) - (left[0, 0] - right[0, 0])
    peak = int(np.argmax(rise))
    assert rise[peak] > 0.008 and widen[peak] > 0.01


@pytest.mark.parametrize("name, moved, still", [("nod", 1, 0), ("shake", 0, 1)])
def test_nod_pitches_and_shake_yaws(posed, name, moved, still):
    params, _, v = posed[name]
    angles = _angles(params.neck)
    assert angles[:, moved].max() > 8 and angles[:, moved].min() < -2  # a damped oscillation: both ways
    assert np.abs(angles[:, still]).max() < 0.25 * np.abs(angles[:, moved]).max()
    sign_changes = np.sum(np.diff(np.sign(angles[np.abs(angles[:, moved]) > 1.0, moved])) != 0)
    assert sign_changes >= 3  # at least two full swings
    nose = v[:, NOSE_TIP]
    if name == "nod":  # the face tips down and up: the nose moves vertically, not sideways
        assert np.ptp(nose[:, 1]) > 0.03 and np.ptp(nose[:, 0]) < 0.005
    else:
        assert np.ptp(nose[:, 0]) > 0.05 and np.ptp(nose[:, 1]) < 0.02
    eyes = _angles(params.eyes[:, 0])
    assert np.corrcoef(eyes[:, moved], angles[:, moved])[0, 1] < -0.9  # the eyes keep looking at the viewer


def test_blink_closes_the_eyelids_and_nothing_else_moves(posed, head, source):
    params, _, v = posed["blink"]
    gap = v[:, UPPER_LID, 1] - v[:, LOWER_LID, 1]
    assert gap.min() < 0.15 * gap[0]  # closed
    closed = gap < 0.5 * gap[0]
    starts = np.flatnonzero(np.diff(closed.astype(int)) == 1)
    assert len(starts) >= 3  # several blinks
    durations = np.diff(np.flatnonzero(np.diff(closed.astype(int)) != 0))[::2] / FPS
    assert ((durations >= 0.06) & (durations <= 0.25)).all()  # each about 100-200 ms below half open
    assert not params.neck.any() and not params.jaw.any()
    mouth = v[:, [UPPER_LIP, LOWER_LIP, *MOUTH_CORNERS]]
    np.testing.assert_allclose(mouth, np.broadcast_to(mouth[:1], mouth.shape), atol=1e-6)


def test_look_around_turns_eyes_and_head_every_way(posed):
    params, _, _ = posed["look_around"]
    head, eyes = _angles(params.neck), _angles(params.eyes[:, 0])
    for axis in (0, 1):
        assert head[:, axis].max() > 5 and head[:, axis].min() < -5
    assert np.abs(eyes[:, 0]).max() > 10  # the eyes lead each turn
    assert np.abs(eyes).max() < 50  # ... within their range (Bell's upward roll during blinks included)
    lead = np.argmax(np.abs(eyes[:, 0]) > 5)
    assert lead < np.argmax(np.abs(head[:, 0]) > 5)  # eyes first, then the head


def test_lengths_seeds_and_names():
    assert motion_length("nod", 100) == 100 and len(motion_curves("talk", 400)) == 400
    long = motion_curves("nod", 250)  # a longer run repeats the gesture and still ends at rest
    assert np.sum(np.abs(long.pitch) > 5) > 2 * np.sum(np.abs(motion_curves("nod").pitch) > 5) - 2
    assert abs(long.pitch[-1]) < 1e-9
    a, b = motion_curves("talk"), motion_curves("talk")
    np.testing.assert_array_equal(a.jaw, b.jaw)  # no generator: the same every time
    c = motion_curves("talk", generator=torch.Generator().manual_seed(3))
    assert not np.allclose(a.jaw, c.jaw)
    assert check_motion("Look around") == check_motion("look-around") == "look_around"
    with pytest.raises(ValueError, match="`motion` must be one of talk, smile"):
        check_motion("dance")
    with pytest.raises(ValueError, match="not both"):
        check_motion("nod", driving="clip.mp4")
    with pytest.raises(ValueError, match="`driving` or `motion` is needed"):
        check_motion(None)
    with pytest.raises(ValueError, match="`num_frames` must be an int in"):
        motion_length("nod", 0)


def test_the_pipeline_re_enacts_every_preset_smoothly():
    """A real avatar (the example photo, K=64) re-enacted with each preset: the rendered frames change smoothly, frame 0
    is the avatar's front view, and the image changes where the preset says (mouth for talk, eyes for blink)."""
    from fhavatar import FHAvatarPipeline

    pipe = FHAvatarPipeline.default(resolution=64)
    pipe.set_progress_bar_config(disable=True)
    avatar = pipe.reconstruct(EXAMPLE_PHOTO)
    size = 64
    front = next(pipe.render_views(avatar, avatar.source_track.camera, size, size))
    landmarks = pipe.head_model.landmarks(avatar.posed_vertices()[None])[0]
    uv, _ = avatar.source_track.camera.project(landmarks, size, size)
    uv = uv[0].numpy()

    def box(indices):  # mean over the pixels around landmarks `indices`
        lo, hi = np.floor(uv[list(indices)].min(0)).astype(int) - 1, np.ceil(uv[list(indices)].max(0)).astype(int) + 1
        return lambda frames: frames[:, :, lo[1] : hi[1], lo[0] : hi[0]].abs().mean((1, 2, 3))

    mouth, eyes = box([UPPER_LIP, LOWER_LIP, *MOUTH_CORNERS]), box([159, 145, 386, 374, 33, 263])
    for name in MOTIONS:
        frames = pipe.animate(avatar, motion=name, height=size, width=size)
        assert frames.shape == (motion_length(name), 3, size, size)
        torch.testing.assert_close(frames[0], front, atol=2e-3, rtol=0)
        steps = (frames[1:] - frames[:-1]).abs().mean((1, 2, 3))
        assert float(steps.max()) < 0.04, name  # no frame jumps
        change = frames - frames[:1]
        if name == "talk":  # the mouth's pixels follow the jaw
            jaw = motion_curves(name).jaw
            assert np.corrcoef(mouth(change).numpy(), jaw)[0, 1] > 0.5
        if name == "blink":  # the eyes' pixels change, the mouth's do not
            assert float(eyes(change).max()) > 0.005 and float(mouth(change).max()) < 0.1 * float(eyes(change).max())


def test_cli_writes_a_motion_video_and_refuses_motion_with_driving(tmp_path, capsys):
    import imageio_ffmpeg

    from fhavatar.__main__ import main

    out = tmp_path / "out"
    code = main([str(EXAMPLE_PHOTO), "--motion", "nod", "--out", str(out), "--frames", "2", "--size", "48",
                 "--resolution", "32", "--quiet"])
    assert code == 0, capsys.readouterr().err
    reader = imageio_ffmpeg.read_frames(str(out / "motion.mp4"))
    meta = next(reader)
    assert meta["fps"] == FPS and meta["size"] == (48, 48) and sum(1 for _ in reader) == motion_length("nod")
    for argv in (["--motion", "nod", "--driving", str(out / "motion.mp4")], ["--motion", "dance"]):
        with pytest.raises(SystemExit) as exit_info:
            main([str(EXAMPLE_PHOTO), *argv, "--out", str(tmp_path / "o")])
        assert exit_info.value.code == 2
        assert "argument --motion" in capsys.readouterr().err
