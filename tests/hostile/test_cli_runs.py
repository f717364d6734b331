"""Hostile command lines for `python -m fhavatar`: output folders ffmpeg could misread, folders that cannot take the
outputs, clips too long or too large, runs that cannot fit in memory, and every message worded with the CLI's flags.

A refusal must come before the work (seconds, not the minutes of a run) as one `fhavatar: error:` line that names
flags, never a Python argument in backquotes.
"""

from __future__ import annotations

import weakref
from pathlib import Path

import numpy as np
import pytest

from fhavatar.__main__ import USER_ERROR, main
from fhavatar.io import video_info, write_video

from .catalogue import ffmpeg, handled, refused

ROOT = Path(__file__).resolve().parents[2]
PHOTO = ROOT / "examples" / "astronaut.png"
TINY = ("--frames", "2", "--size", "32", "--resolution", "16", "--quiet")


class CliError(ValueError):
    """A run of the CLI that ended with its user-error status; the message is its one stderr line."""


@pytest.fixture
def cli(capsys):
    """`cli(*args)`: run `main(args)`; status 2 raises `CliError(line)` (one line, no Python names), 0 returns."""

    def run(*args):
        code = main([str(a) for a in args])
        err = capsys.readouterr().err.strip()
        if code == USER_ERROR:
            assert len(err.splitlines()) == 1 and err.startswith("fhavatar: error: "), err
            assert "`" not in err, f"a Python argument name reached the CLI's message: {err}"
            raise CliError(err)
        assert code == 0, f"status {code}: {err}"
        return code

    return run


@pytest.fixture(scope="module")
def clips(tmp_path_factory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("cli_clips")
    h264 = ["-c:v", "libx264", "-preset", "ultrafast", "-pix_fmt", "yuv420p"]
    files = {"long": d / "ten_minutes.mp4", "4k": d / "4k.mp4"}
    # The case: 10 minutes of 320x240 at 25 fps (15000 frames), written in seconds (one gray picture).
    ffmpeg("-f", "lavfi", "-i", "color=c=gray:size=320x240:rate=25", "-t", "600", *h264, "-crf", "51", "-g", "15000",
           str(files["long"]), timeout=120)
    # 3 frames of 3840x2160 with the example face in the middle.
    ffmpeg("-loop", "1", "-i", str(PHOTO), "-vf", "scale=1080:1080,pad=3840:2160:1380:540", "-frames:v", "3",
           "-r", "10", *h264, str(files["4k"]))
    return files


# ---------------------------------------------------------------------------------------------- output folders
def test_output_folder_with_a_colon(cli, tmp_path, monkeypatch):
    """`--out out:1` once made ffmpeg read `out:` as a protocol, after all the work: every output is written now."""
    monkeypatch.chdir(tmp_path)

    def all_written(_):
        names = {p.name for p in (tmp_path / "out:1").iterdir()}
        assert names == {"avatar.ply", "front.png", "orbit.mp4"}, names
        assert video_info(tmp_path / "out:1" / "orbit.mp4").num_frames == 2

    handled("--out out:1 (a colon in the folder name)", lambda: cli(PHOTO, "--out", "out:1", *TINY), all_written,
            limit_s=180)
    handled("write_video('v:1/clip.mp4')", lambda: write_video("v:1/clip.mp4", [np.zeros((8, 8, 3), np.uint8)] * 3),
            lambda p: video_info(tmp_path / p).num_frames == 3 or pytest.fail())


def test_output_folders_are_checked_before_any_work(cli, tmp_path):
    (tmp_path / "file").write_text("not a folder")
    (tmp_path / "taken" / "orbit.mp4").mkdir(parents=True)
    refused("--out is a file", lambda: cli(PHOTO, "--out", tmp_path / "file", *TINY), r"--out .*file' is a file",
            errors=(CliError,), limit_s=20)
    refused("--out inside a file", lambda: cli(PHOTO, "--out", tmp_path / "file" / "sub", *TINY),
            r"--out .* is a file, so no folder can be made inside it", errors=(CliError,), limit_s=20)
    refused("--out holds a folder named orbit.mp4", lambda: cli(PHOTO, "--out", tmp_path / "taken", *TINY),
            r"--out .* holds a folder named orbit\.mp4", errors=(CliError,), limit_s=20)
    assert not (tmp_path / "file" / "sub").exists()


# ---------------------------------------------------------------------------------------------- driving clips
def test_too_long_clip_is_refused_from_its_probe(cli, clips, tmp_path):
    refused("10-minute clip (15000 frames)", lambda: cli(PHOTO, "--driving", clips["long"], "--out", tmp_path, *TINY),
            r"--driving .*ten_minutes\.mp4' has 15000 frames \(600 s at 25 fps\); at most 3000 are re-enacted\. "
            r"Pass --driving-frames N", errors=(CliError,), limit_s=15)
    assert not (tmp_path / "avatar.ply").exists()


def test_messages_from_deep_inside_name_the_flag(cli, clips, tmp_path):
    """The tracker calls the clip `frames_or_path`; the CLI says --driving (and the Python API `driving_video`)."""
    refused("first 4 frames of a clip without a face",
            lambda: cli(PHOTO, "--driving", clips["long"], "--driving-frames", 4, "--out", tmp_path, *TINY),
            r"--driving: only 0 of 4 frames show a face", errors=(CliError,), limit_s=180)


def test_python_api_names_its_own_argument(pipe, clips):
    refused("pipeline.track_driving(clip without a face)", lambda: pipe.track_driving(str(clips["long"]), 3),
            r"^`driving_video`: only 0 of 3 frames show a face", limit_s=60)


def test_4k_clip_is_decoded_downscaled(cli, clips, tmp_path, monkeypatch):
    import fhavatar.__main__ as cli_module

    sides = []

    def spy(*args, **kwargs):
        frames, fps = video_read(*args, **kwargs)
        sides.append(max(frames[0].shape[:2]))
        return frames, fps

    video_read = cli_module.read_video
    monkeypatch.setattr(cli_module, "read_video", spy)

    def downscaled(_):
        assert sides == [720], f"the 4K clip was decoded at {sides} pixels a side"
        info = video_info(tmp_path / "reenact.mp4")
        assert (info.num_frames, info.height) == (3, 32), info

    handled("3840x2160 driving clip (CLI)", lambda: cli(PHOTO, "--driving", clips["4k"], "--out", tmp_path, *TINY),
            downscaled, limit_s=240)


# ---------------------------------------------------------------------------------------------- memory
def test_runs_that_cannot_fit_are_refused_with_the_figure(cli, tmp_path, monkeypatch):
    from fhavatar import pipeline_inputs

    class Small:
        available = 2**30

    monkeypatch.setattr(pipeline_inputs.psutil, "virtual_memory", lambda: Small())
    refused("--size 4096 with 1 GB free", lambda: cli(PHOTO, "--size", 4096, "--frames", 3600, "--out", tmp_path),
            r"This run \(--size 4096\) needs about \d+\.\d GiB of memory, and 1\.0 GiB are available\. Use a smaller "
            r"--size\.", errors=(CliError,), limit_s=20)
    refused("pipeline: 3600 orbit frames of 4096² returned", lambda: pipeline_inputs.check_call(
        str(PHOTO), None, 3600, 4096, 4096, "relative", "np"), r"its 3600 returned frames of 4096x4096\) needs about")


def test_write_video_streams_a_generator(tmp_path):
    """Frames given as a generator are encoded as they come: when frame i is made, frames before i - 1 are gone."""
    held = []

    def frames():
        made = []
        for i in range(12):
            held.extend(j for j, ref in enumerate(made[:-1]) if ref() is not None)
            frame = np.full((16, 16, 3), 20 * i, np.uint8)
            made.append(weakref.ref(frame))
            yield frame
            del frame

    def released(path):
        assert not held, f"frames {sorted(set(held))} were still held while later ones were made"
        assert video_info(path).num_frames == 12

    handled("write_video(generator of 12 frames)", lambda: write_video(tmp_path / "g.mp4", frames()), released)


@pytest.mark.parametrize("args, match", [
    (("--frames", "0"), r"--frames must be in \[1, 3600\], got 0"),
    (("--size", "5000"), r"--size must be in \[16, 4096\], got 5000"),
    (("--driving-frames", "5000"), r"--driving-frames must be in \[1, 3000\], got 5000"),
    (("--resolution", "5"), r"--resolution must be an int in \[8, 2048\], got 5"),
    (("--device", "warp9"), r"--device 'warp9' is not a torch device"),
    (("--model", "no/such/folder"), r"--model: no folder 'no/such/folder'"),
])
def test_flags_are_named_in_every_message(cli, tmp_path, args, match):
    refused(f"CLI {' '.join(args)}", lambda: cli(PHOTO, "--out", tmp_path, *args), match, errors=(CliError,), limit_s=30)


def test_decoded_clip_memory_is_checked_with_each_interfaces_words(cli, clips, pipe, tmp_path, monkeypatch):
    """The 4 GiB cap on decoded frames is checked from the probe, before decoding, in the caller's words (here with
    the cap lowered to two 720x405 frames)."""
    from fhavatar import pipeline_inputs

    monkeypatch.setattr(pipeline_inputs, "MAX_VIDEO_BYTES", 2 * 720 * 405 * 3)
    refused("4K clip over the decoded-frames cap (CLI)", lambda: cli(PHOTO, "--driving", clips["4k"], "--out", tmp_path,
                                                                    *TINY),
            r"--driving: 3 frames of 720x405 need 0\.0 GiB decoded, more than the 0 GiB allowed\. Pass --driving-frames "
            r"\(at most 2\)", errors=(CliError,), limit_s=20)
    refused("4K clip over the decoded-frames cap (pipeline)", lambda: pipe.check_inputs(None, str(clips["4k"]), 1, 64, 64),
            r"^`driving_video`: 3 frames of 720x405 need .* Pass `num_driving_frames` \(at most 2\)", limit_s=20)
