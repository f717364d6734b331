"""Hostile driving videos for `fhavatar.io.video_info` / `read_video`, the pipeline's checks and the app.

Every clip is written here with the ffmpeg binary shipped by imageio-ffmpeg, tiny (32 px, a second or so).
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import numpy as np
import pytest

from fhavatar.io import read_video, video_info
from fhavatar.io import video as fio  # the module whose globals read_video uses

from .catalogue import elapsed, ffmpeg, handled, refused, write

TESTSRC = "testsrc=size=32x32:rate=10:duration=1"  # a moving test pattern: every frame differs


@pytest.fixture(scope="module")
def clips(tmp_path_factory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("clips")
    h264 = ["-c:v", "libx264", "-preset", "ultrafast", "-pix_fmt", "yuv420p"]
    files = {name: d / name for name in ("one.mp4", "zero.avi", "empty.mp4", "audio.m4a", "audio_first.mp4",
                                         "vfr.mkv", "odd.mkv", "rotated.mp4", "long.mp4", "cover.mp3")}
    ffmpeg("-f", "lavfi", "-i", TESTSRC, "-frames:v", "1", *h264, str(files["one.mp4"]))
    ffmpeg("-f", "lavfi", "-i", TESTSRC, "-t", "0", "-c:v", "mjpeg", str(files["zero.avi"]))  # a stream, no frame
    ffmpeg("-f", "lavfi", "-i", TESTSRC, "-frames:v", "0", *h264, str(files["empty.mp4"]))  # no stream at all
    ffmpeg("-f", "lavfi", "-i", "sine=frequency=440:duration=1", "-c:a", "aac", str(files["audio.m4a"]))
    ffmpeg("-f", "lavfi", "-i", "sine=frequency=440:duration=1", "-f", "lavfi", "-i", TESTSRC,
           "-map", "0:a", "-map", "1:v", "-c:a", "aac", *h264, str(files["audio_first.mp4"]))
    # 10 frames 100 ms apart, then 10 frames 30 ms apart (millisecond time base, timestamps kept as they are)
    ffmpeg("-f", "lavfi", "-i", "testsrc=size=32x32:rate=10:duration=2",
           "-vf", "settb=1/1000,setpts='if(lt(N,10),N*100,1000+(N-10)*30)'", "-fps_mode", "passthrough",
           *h264, str(files["vfr.mkv"]))
    ffmpeg("-f", "lavfi", "-i", "testsrc=size=33x17:rate=10:duration=1", "-c:v", "ffv1", str(files["odd.mkv"]))
    landscape = d / "landscape.mp4"
    ffmpeg("-f", "lavfi", "-i", "testsrc=size=48x32:rate=10:duration=1", *h264, str(landscape))
    ffmpeg("-display_rotation", "90", "-i", str(landscape), "-c", "copy", str(files["rotated.mp4"]))
    # 10 min 10 s at 5 fps, 32 px, almost no bits: written in well under a second
    ffmpeg("-f", "lavfi", "-i", "color=c=gray:size=32x32:rate=5", "-t", "610", *h264, "-crf", "51", "-g", "3000",
           str(files["long.mp4"]))
    cover = d / "cover.png"
    ffmpeg("-f", "lavfi", "-i", "color=c=red:size=32x32", "-frames:v", "1", str(cover))
    ffmpeg("-f", "lavfi", "-i", "sine=frequency=440:duration=1", "-i", str(cover), "-map", "0:a", "-map", "1:v",
           "-c:a", "libmp3lame", "-c:v", "png", "-disposition:v", "attached_pic", str(files["cover.mp3"]))
    return files


def _distinct(frames) -> int:
    return len({f.tobytes() for f in frames})


def test_frame_count_edge_cases(clips):
    handled("1-frame video", lambda: read_video(clips["one.mp4"]),
            lambda r: (len(r[0]) == 1 and r[0][0].shape == (32, 32, 3) and r[1] == 10) or pytest.fail(str(len(r[0]))))
    refused("0-frame video (a stream, no frame)", lambda: read_video(clips["zero.avi"]), r"zero\.avi.*no video frames")
    refused("0-frame video (no stream)", lambda: video_info(clips["empty.mp4"]), r"empty\.mp4.*no video stream")


def test_audio_only_and_audio_first(clips):
    refused("audio-only file", lambda: read_video(clips["audio.m4a"]), r"audio\.m4a.*no video stream")
    refused("audio + cover picture only", lambda: read_video(clips["cover.mp3"]), r"cover\.mp3.*(no video stream)")

    def ten_frames(result):
        frames, fps = result
        assert (len(frames), fps, frames[0].shape) == (10, 10.0, (32, 32, 3))
        assert _distinct(frames) == 10

    handled("audio stream first", lambda: read_video(clips["audio_first.mp4"]), ten_frames)


def test_variable_frame_rate_keeps_every_frame(clips):
    def all_frames(result):
        frames, fps = result
        assert len(frames) == 20 and _distinct(frames) == 20, "frames were dropped or duplicated"
        assert fps == 10.0

    handled("variable frame rate", lambda: read_video(clips["vfr.mkv"]), all_frames)


def test_odd_size_and_rotation(clips):
    def odd(result):
        frames, _ = result
        assert len(frames) == 10 and frames[0].shape == (17, 33, 3)
        assert frames[0].std() > 20  # the test pattern, not a blank or misaligned buffer

    handled("odd frame size (33x17)", lambda: read_video(clips["odd.mkv"]), odd)

    def portrait(result):
        frames, _ = result
        assert frames[0].shape == (48, 32, 3), f"frames {frames[0].shape}: the container's rotation was not applied"

    handled("display rotation 90°", lambda: read_video(clips["rotated.mp4"]), portrait)
    handled("display rotation 90° (info)", lambda: video_info(clips["rotated.mp4"]),
            lambda info: (info.width, info.height) == (32, 48) or pytest.fail(str(info)))


def test_ten_minute_video_is_capped_without_decoding_it(clips, pipe):
    long = clips["long.mp4"]
    info, seconds = elapsed(lambda: video_info(long))
    assert (info.num_frames, info.duration) == (3050, 610.0)
    assert seconds < 10, f"probing a 10-minute clip took {seconds:.1f} s"
    refused("10-minute video, no limit given", lambda: read_video(long), r"lasts 610 s; at most 600 s", limit_s=10)
    handled("10-minute video, first 2 s", lambda: read_video(long, max_seconds=2), lambda r: len(r[0]) == 10 or pytest.fail(),
            limit_s=10)
    refused("10-minute video (pipeline.check_inputs)", lambda: pipe.check_inputs(None, long, 1, 64, 64),
            r"3050 frames; at most 3000", limit_s=10)


def test_ten_minute_video_in_the_app(clips):
    """The app refuses it from its header and packet count: no decoding, well under a second of work."""
    gr = pytest.importorskip("gradio")
    import app

    service = app.AvatarService.__new__(app.AvatarService)  # no pipeline needed: refused before any model work
    refused("10-minute video (app)", lambda: service.animate(str(app.EXAMPLES_DIR / "astronaut.png"), str(clips["long.mp4"])),
            r"610 s long", errors=(gr.Error,), limit_s=10)


def test_broken_and_disguised_files(clips, tmp_path):
    moov_last = tmp_path / "moov_last.mp4"
    ffmpeg("-i", str(clips["vfr.mkv"]), "-c", "copy", str(moov_last))  # the index (moov) goes at the end
    cut = write(tmp_path / "cut.mp4", moov_last.read_bytes()[: moov_last.stat().st_size // 2])
    refused("truncated mp4 (index lost)", lambda: read_video(cut), r"cut\.mp4.*not a readable video")
    refused("random bytes .mp4", lambda: read_video(write(tmp_path / "noise.mp4", os.urandom(20000))),
            r"noise\.mp4.*not a readable video")
    refused("text named .mp4", lambda: video_info(write(tmp_path / "notes.mp4", b"hello\n" * 100)),
            r"notes\.mp4.*not a readable video")
    refused("empty .mp4", lambda: video_info(write(tmp_path / "empty.mp4", b"")), r"empty\.mp4.*not a readable video")
    faststart = tmp_path / "faststart.mp4"  # index first, so damage to the frame data leaves it readable
    ffmpeg("-i", str(clips["vfr.mkv"]), "-c", "copy", "-movflags", "+faststart", str(faststart))
    garbled = bytearray(faststart.read_bytes())
    garbled[len(garbled) * 6 // 10: len(garbled) * 8 // 10] = bytes(len(garbled) * 8 // 10 - len(garbled) * 6 // 10)

    def some_frames(result):
        frames, _ = result
        assert 1 <= len(frames) <= 20 and frames[0].shape == (32, 32, 3)

    handled("mp4 with zeroed frame data (decodes what it can)",
            lambda: read_video(write(tmp_path / "zeroed.mp4", bytes(garbled))), some_frames)


def test_playlists_and_concat_lists_cannot_pull_in_other_files(clips, tmp_path):
    """A playlist or concat list disguised as a video would make ffmpeg read another local file (or a URL) into the
    frames returned to the user; only container formats are opened, from local files."""
    secret = clips["one.mp4"]
    hls = f"#EXTM3U\n#EXT-X-TARGETDURATION:1\n#EXTINF:1.0,\nfile:{secret}\n#EXT-X-ENDLIST\n".encode()
    for name in ("playlist.m3u8", "playlist.mp4"):
        refused(f"HLS playlist ({name})", lambda n=name: read_video(write(tmp_path / n, hls)), r"not a readable video")
    concat = f"ffconcat version 1.0\nfile '{secret}'\n".encode()
    refused("ffconcat list .mp4", lambda: read_video(write(tmp_path / "list.mp4", concat)), r"not a readable video")
    refused("URL-looking relative name", lambda: read_video("http://127.0.0.1:9/x.mp4"), r"does not exist",
            errors=(FileNotFoundError,))


def test_pipes_and_time_limits(clips, tmp_path, monkeypatch):
    fifo = tmp_path / "pipe.mp4"
    os.mkfifo(fifo)
    refused("named pipe .mp4", lambda: read_video(fifo), r"pipe\.mp4.*not a regular file", limit_s=5)
    refused("directory as video", lambda: video_info(tmp_path), r"directory")
    refused("bad timeout", lambda: read_video(clips["one.mp4"], timeout=-1), r"`timeout` must be a positive")
    info = video_info(clips["long.mp4"])
    monkeypatch.setattr(fio, "video_info", lambda path, timeout=None: info)  # only decoding is timed below
    start = time.perf_counter()
    refused("decoding past its time limit", lambda: read_video(clips["long.mp4"], max_seconds=600, timeout=0.05),
            r"decoding took more than 0.05 s and was stopped", limit_s=10)
    assert time.perf_counter() - start < 5

    def probe_timeout(*args, **kwargs):
        import subprocess

        raise subprocess.TimeoutExpired(args[0], kwargs.get("timeout"))

    monkeypatch.undo()
    monkeypatch.setattr(fio.subprocess, "run", probe_timeout)
    refused("probe past its time limit", lambda: video_info(clips["one.mp4"], timeout=1.0), r"took more than 1 s")


def test_frame_memory_is_checked_before_decoding(clips, monkeypatch):
    monkeypatch.setattr(fio, "MAX_VIDEO_BYTES", 32 * 32 * 3 * 100)
    refused("frames over the memory budget", lambda: read_video(clips["long.mp4"], max_seconds=600), r"GiB",
            limit_s=5)
    handled("same clip, first 100 frames (within the budget)", lambda: read_video(clips["long.mp4"], max_frames=100),
            lambda r: len(r[0]) == 100 or pytest.fail())
    assert np.asarray(read_video(clips["one.mp4"])[0][0]).flags.writeable
