"""Videos: probing (`video_info`) and decoding (`read_video`) with limits on length, memory and time, and H.264
mp4 writing (`write_video`), all without a system ffmpeg (the ffmpeg binary shipped by `imageio-ffmpeg` is used)."""

from __future__ import annotations

import logging
import math
import os
import re
import subprocess
import tempfile
import threading
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

import imageio_ffmpeg
import numpy as np
from torch import Tensor

from .files import checked_file, replaced_when_done
from .images import MAX_IMAGE_PIXELS, FrameLike, _frame_to_uint8, _target_size

__all__ = ["ENCODER_LOOKAHEAD_PIXELS", "MAX_VIDEO_BYTES", "MAX_VIDEO_SECONDS", "VIDEO_DECODE_TIMEOUT", "VIDEO_DEMUXERS",
           "VIDEO_PROBE_TIMEOUT", "VideoInfo", "encoder_memory", "ffmpeg_path", "read_video", "video_info", "write_video"]

logger = logging.getLogger(__name__)

#: Longest video (seconds) `read_video` decodes when neither `max_frames` nor `max_seconds` limits it.
MAX_VIDEO_SECONDS = 600.0
#: Most bytes of decoded frames (`frames x height x width x 3`) `read_video` holds in memory.
MAX_VIDEO_BYTES = 4 * 1024**3
#: ffmpeg demuxers a video file may be opened with: containers only (no playlists, concat lists, image sequences);
#: mp3/wav are opened only to say "no video stream" rather than "not a video".
VIDEO_DEMUXERS = ("mov", "mp4", "matroska", "webm", "avi", "gif", "mpegts", "mpeg", "flv", "ogg", "asf", "mp3", "wav")
#: Default seconds `video_info` may take (header + packet count by stream copy, no decoding).
VIDEO_PROBE_TIMEOUT = 60.0
#: Default seconds `read_video` lets ffmpeg decode before stopping it.
VIDEO_DECODE_TIMEOUT = 600.0
#: Largest frame (pixels, padded to even sides) `write_video` encodes with x264's default lookahead and B-frames;
#: larger frames use the low-latency tuning, so the encoder's memory stays bounded (`encoder_memory`).
ENCODER_LOOKAHEAD_PIXELS = 1920 * 1088


# ---------------------------------------------------------------------------------------------------- writing
def ffmpeg_path(path: str | os.PathLike) -> str:
    """`path` as ffmpeg must be given it: `file:` and the absolute path, so a name with a colon (`out:1/a.mp4`) is
    never read as a protocol (`out:`) or an option."""
    return "file:" + str(Path(path).absolute())


def encoder_memory(width: int, height: int) -> int:
    """Bytes the H.264 encoder of `write_video` (ffmpeg + x264, its own process) holds for `width` x `height` frames.

    Measured (benchmarks/memory_bench.py): ~0.6 GB at 1920x1080 with x264's defaults, which hold ~50 frames of
    lookahead and B-frames (~3.2 GB at 4096², more with more cores); above `ENCODER_LOOKAHEAD_PIXELS` the
    low-latency tuning holds a few frames (~0.7 GB at 4096²).
    """
    pixels = (width + width % 2) * (height + height % 2)
    return 150 * 2**20 + pixels * (300 if pixels <= ENCODER_LOOKAHEAD_PIXELS else 48)


def _to_uint8(frame: FrameLike, index: int, size: tuple[int, int] | None) -> np.ndarray:
    array = _frame_to_uint8(frame, index)
    if size is not None and array.shape[:2] != size:
        raise ValueError(f"All frames must have one size: frame {index} is {array.shape[1]}x{array.shape[0]}, the "
                         f"first {size[1]}x{size[0]}.")
    return np.ascontiguousarray(array)


def _one_by_one(first: np.ndarray, rest: Iterator[FrameLike], size: tuple[int, int]) -> Iterator[np.ndarray]:
    """`first`, then each frame of `rest` as uint8 HWC of `size`, none of them kept once handed on."""
    yield first
    del first
    for index, frame in enumerate(rest, 1):
        yield _to_uint8(frame, index, size)


def write_video(
    path: str | os.PathLike,
    frames: Tensor | Iterable[FrameLike],
    fps: float = 25.0,
    quality: int = 20,
) -> Path:
    """Write an H.264 / yuv420p mp4 that browsers (and Gradio) play without transcoding.

    Uses the ffmpeg binary shipped by `imageio-ffmpeg`, so no system ffmpeg is needed. Frames are encoded as they
    come: a generator of frames is never held in memory whole, so a long video costs one frame at a time (and the
    encoder's `encoder_memory`; frames larger than `ENCODER_LOOKAHEAD_PIXELS` are encoded without lookahead and
    B-frames to bound it). Odd frame sizes are padded by one pixel (yuv420p needs even sizes). The file is written
    next to `path` and moved into place when complete, so an interrupted run never leaves a truncated video under the
    final name.

    Args:
        path (`str` or `os.PathLike`): output `.mp4` file (any name: it reaches ffmpeg as `ffmpeg_path(path)`).
        frames: `[T, 3, H, W]` tensor in [0, 1], or an iterable (a list, a generator) of `[3, H, W]` tensors, HWC
            arrays or PIL images, all of one size.
        fps (`float`, *optional*, defaults to 25): frame rate.
        quality (`int`, *optional*, defaults to 20): x264 CRF (0 = lossless, 51 = worst).
    """
    if not (0 < fps <= 240):
        raise ValueError(f"`fps` must lie in (0, 240], got {fps}.")
    if not (0 <= quality <= 51):
        raise ValueError(f"`quality` is an x264 CRF in [0, 51], got {quality}.")
    path = Path(path)
    if path.suffix.lower() != ".mp4":
        raise ValueError(f"`path` must end in .mp4, got {str(path)!r}.")
    frames = iter(frames)
    first = next(frames, None)
    if first is None:
        raise ValueError("`frames` is empty: a video needs at least one frame.")
    first = _to_uint8(first, 0, None)
    h, w = first.shape[:2]
    pad_h, pad_w = h % 2, w % 2
    options = ["-crf", str(quality), "-movflags", "+faststart"]
    if (w + pad_w) * (h + pad_h) > ENCODER_LOOKAHEAD_PIXELS:
        options += ["-tune", "zerolatency"]  # no lookahead or B-frames: x264 holds a few frames, not ~50
    path.parent.mkdir(parents=True, exist_ok=True)
    count = 0
    with replaced_when_done(path, path.with_name(f".{path.stem}.partial.mp4")) as partial:
        writer = imageio_ffmpeg.write_frames(ffmpeg_path(partial), (w + pad_w, h + pad_h), fps=fps, codec="libx264",
                                             pix_fmt_out="yuv420p", output_params=options, macro_block_size=1,
                                             ffmpeg_log_level="error")
        arrays = _one_by_one(first, frames, (h, w))
        del first  # from here each frame is held only until it is encoded
        try:
            writer.send(None)
            for a in arrays:
                if pad_h or pad_w:
                    a = np.pad(a, ((0, pad_h), (0, pad_w), (0, 0)), mode="edge")
                writer.send(a)
                count += 1
        finally:
            writer.close()
    logger.info("wrote %d frames (%dx%d, %.3g fps) to %s", count, w, h, fps, path)
    return path


# ---------------------------------------------------------------------------------------------------- reading
@dataclass(frozen=True)
class VideoInfo:
    """What `video_info` reads from a video's header and packets (nothing is decoded)."""

    fps: float  # nominal frame rate
    num_frames: int  # video packets (= frames) in the first video stream
    duration: float  # seconds, num_frames / fps
    width: int  # frame size as decoded (after the container's rotation, if any)
    height: int
    codec: str


def _ffmpeg_input(path: Path) -> list[str]:
    # Local files only (no URLs, no other protocols) and container demuxers only: playlists (HLS), concat lists and
    # image sequences would let a crafted upload make ffmpeg read other files or URLs into the frames we return.
    return ["-hide_banner", "-nostdin", "-protocol_whitelist", "file", "-format_whitelist", ",".join(VIDEO_DEMUXERS),
            "-i", ffmpeg_path(path.resolve())]


def _check_timeout(timeout: float | None, name: str = "timeout") -> None:
    if timeout is not None and not (isinstance(timeout, (int, float)) and not isinstance(timeout, bool) and timeout > 0):
        raise ValueError(f"`{name}` must be a positive number of seconds or None, got {timeout!r}.")


def _ffmpeg_reason(log: str) -> str:
    """The last few meaningful ffmpeg log lines, for error messages."""
    lines = [re.sub(r"^\[[^\]]*\]\s*", "", ln.strip()) for ln in log.splitlines()]  # drop "[in#0 @ 0x...]"
    return " | ".join([ln for ln in lines if ln][-3:])[-300:]


_STREAM = re.compile(r"^\s*Stream #0:(\d+)[^:]*: Video: (\w+)(.*)$", re.MULTILINE)
_SIZE = re.compile(r",\s(\d{1,6})x(\d{1,6})[\s,\[]")
_RATE = re.compile(r"(\d+(?:\.\d+)?)(k?) (fps|tbr)")
_MAPPED = re.compile(r"Stream #0:(\d+) -> #0:0")
_ROTATION = re.compile(r"rotation of (-?\d+(?:\.\d+)?) degrees", re.IGNORECASE)


def video_info(path: str | os.PathLike, timeout: float | None = VIDEO_PROBE_TIMEOUT) -> VideoInfo:
    """Frame rate, frame count, duration and size of a video, without decoding its frames.

    The first real video stream is used (audio, cover pictures and thumbnails are skipped, wherever they are in
    the file); its frames are counted from its packets by stream copy, so a header that lies about the duration
    cannot slip a long video past the limits.

    Args:
        path (`str` or `os.PathLike`): a video file in a container of `VIDEO_DEMUXERS` (mp4, mov, mkv, webm, avi, ...).
        timeout (`float`, *optional*, defaults to `VIDEO_PROBE_TIMEOUT`): seconds allowed; None waits as long as it takes.

    Raises:
        FileNotFoundError: `path` does not exist.
        ValueError: the file is not a readable video, has no video stream or no frame, or took too long to read (the
            message names the path and quotes ffmpeg).
    """
    _check_timeout(timeout)
    if not isinstance(path, (str, os.PathLike)):
        raise TypeError(f"`path` must be a str or os.PathLike to a video file, got {type(path).__name__}.")
    path = checked_file(Path(path), "video")
    cmd = [imageio_ffmpeg.get_ffmpeg_exe(), *_ffmpeg_input(path), "-map", "0:V:0", "-c", "copy", "-f", "null", "-"]
    try:
        log = subprocess.run(cmd, capture_output=True, text=True, errors="replace", timeout=timeout).stderr
    except subprocess.TimeoutExpired as err:
        raise ValueError(f"video {str(path)!r}: reading its header and counting its frames took more than {timeout:g} s; "
                         "is it a real video file?") from err
    mapped = _MAPPED.search(log)
    if "Error opening input" in log or "Format not on whitelist" in log:
        raise ValueError(f"video {str(path)!r} is not a readable video file (allowed containers: "
                         f"{', '.join(VIDEO_DEMUXERS)}; ffmpeg: {_ffmpeg_reason(log)}).")
    if mapped is None:
        raise ValueError(f"video {str(path)!r} has no video stream (an audio-only or empty file?).")
    stream = next((m for m in _STREAM.finditer(log) if m.group(1) == mapped.group(1)), None)
    counts = re.findall(r"frame=\s*(\d+)", log)
    size = _SIZE.search(stream.group(3)) if stream else None
    if stream is None or size is None or not counts:
        raise ValueError(f"video {str(path)!r}: ffmpeg cannot read its video stream ({_ffmpeg_reason(log)}).")
    num_frames, width, height = int(counts[-1]), int(size.group(1)), int(size.group(2))
    if num_frames == 0:
        raise ValueError(f"video {str(path)!r} has no video frames.")
    if width < 1 or height < 1 or width * height > MAX_IMAGE_PIXELS:
        raise ValueError(f"video {str(path)!r}: its {width}x{height} frames are outside 1 px to "
                         f"{MAX_IMAGE_PIXELS / 1e6:.0f} Mpx.")
    # The side data after the stream line: ffmpeg turns the frames upright when decoding, so report that size.
    following = log[stream.end():]
    nxt = re.search(r"^\s*(Stream #|Stream mapping)", following, re.MULTILINE)
    rotation = _ROTATION.search(following[: nxt.start() if nxt else len(following)])
    if rotation and round(float(rotation.group(1)) / 90) % 2:
        width, height = height, width
    rates = {unit: float(v) * (1000 if k else 1) for v, k, unit in _RATE.findall(stream.group(3))}
    fps = rates.get("fps") or rates.get("tbr") or 0.0
    if fps <= 0:
        duration = re.search(r"Duration: (\d+):(\d\d):(\d\d(?:\.\d+)?)", log)
        seconds = 3600 * int(duration.group(1)) + 60 * int(duration.group(2)) + float(duration.group(3)) if duration else 0
        if seconds <= 0:
            raise ValueError(f"video {str(path)!r}: neither its frame rate nor its duration can be read.")
        fps = num_frames / seconds
    return VideoInfo(fps, num_frames, num_frames / fps, width, height, stream.group(2))


def _read_exact(stream, size: int) -> bytearray | None:
    """`size` bytes from a pipe (fewer only at its end; None when nothing is left)."""
    buffer = bytearray(size)
    view, got = memoryview(buffer), 0
    while got < size:
        n = stream.readinto(view[got:])
        if not n:
            break
        got += n
    return buffer if got == size else None


def read_video(
    path: str | os.PathLike,
    max_frames: int | None = None,
    max_seconds: float | None = None,
    max_side: int | None = None,
    timeout: float | None = VIDEO_DECODE_TIMEOUT,
) -> tuple[list[np.ndarray], float]:
    """Decode a video into RGB uint8 frames with the ffmpeg binary shipped by `imageio-ffmpeg`.

    Every decoded frame is returned once (`-fps_mode passthrough`: nothing is duplicated or dropped to force a
    constant rate, so variable-frame-rate clips keep all their frames). Without `max_frames` / `max_seconds`,
    videos longer than `MAX_VIDEO_SECONDS` are refused from their packet count, before decoding; in every case,
    decoding that would hold more than `MAX_VIDEO_BYTES` of frames is refused before it starts, and ffmpeg is
    stopped when it runs longer than `timeout`.

    Args:
        path (`str` or `os.PathLike`): the video file (see `video_info`).
        max_frames (`int`, *optional*): read at most this many frames from the start.
        max_seconds (`float`, *optional*): read at most this many seconds from the start.
        max_side (`int`, *optional*): downscale frames whose longest side exceeds this (aspect ratio kept).
        timeout (`float`, *optional*, defaults to `VIDEO_DECODE_TIMEOUT`): seconds allowed for decoding; None: no limit.

    Returns:
        `(frames, fps)`: a list of `[H, W, 3]` uint8 arrays and the nominal frame rate.

    Raises:
        FileNotFoundError: `path` does not exist.
        ValueError: the file is not a readable video, is too long, took too long, or an argument is out of range.
    """
    if max_frames is not None and (not isinstance(max_frames, int) or isinstance(max_frames, bool) or max_frames < 1):
        raise ValueError(f"`max_frames` must be a positive int or None, got {max_frames!r}.")
    if max_seconds is not None and not (isinstance(max_seconds, (int, float)) and math.isfinite(max_seconds)
                                        and max_seconds > 0):
        raise ValueError(f"`max_seconds` must be a positive number or None, got {max_seconds!r}.")
    if max_side is not None and (not isinstance(max_side, int) or max_side < 16):
        raise ValueError(f"`max_side` must be an int >= 16 or None, got {max_side!r}.")
    _check_timeout(timeout)
    info = video_info(path, timeout=None if timeout is None else min(timeout, VIDEO_PROBE_TIMEOUT))
    path = Path(path)
    if max_frames is None and max_seconds is None and info.duration > MAX_VIDEO_SECONDS:
        raise ValueError(
            f"video {str(path)!r} lasts {info.duration:.0f} s; at most {MAX_VIDEO_SECONDS:.0f} s are read. "
            "Pass `max_seconds` or `max_frames` to read only its start."
        )
    count = info.num_frames
    if max_seconds is not None:
        count = min(count, max(1, math.floor(max_seconds * info.fps + 1e-6)))
    if max_frames is not None:
        count = min(count, max_frames)
    width, height = _target_size(info.width, info.height, max_side)
    needed = count * width * height * 3
    if needed > MAX_VIDEO_BYTES:
        raise ValueError(
            f"video {str(path)!r}: {count} frames of {width}x{height} need {needed / 2**30:.1f} GiB, more than the "
            f"{MAX_VIDEO_BYTES / 2**30:.0f} GiB allowed. Pass `max_frames`, `max_seconds` or `max_side`."
        )
    # The scale filter fixes the output size, so the frame size is known whatever the decoder and rotation do.
    cmd = [imageio_ffmpeg.get_ffmpeg_exe(), "-loglevel", "error", *_ffmpeg_input(path), "-map", "0:V:0",
           "-fps_mode", "passthrough", "-frames:v", str(count), "-vf", f"scale={width}:{height}:flags=lanczos",
           "-f", "rawvideo", "-pix_fmt", "rgb24", "-"]
    frames: list[np.ndarray] = []
    with tempfile.TemporaryFile() as log:  # a file, not a pipe: ffmpeg can never block on a full stderr pipe
        proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=log)
        expired = threading.Event()

        def stop() -> None:
            expired.set()
            proc.kill()

        timer = threading.Timer(timeout, stop) if timeout is not None else None
        if timer is not None:
            timer.daemon = True
            timer.start()
        try:
            while len(frames) < count:
                raw = _read_exact(proc.stdout, width * height * 3)
                if raw is None:
                    break
                frames.append(np.frombuffer(raw, np.uint8).reshape(height, width, 3))
        finally:
            if timer is not None:
                timer.cancel()
            proc.stdout.close()
            try:
                proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        log.seek(0)
        reason = _ffmpeg_reason(log.read(65536).decode("utf-8", "replace"))
    if expired.is_set():
        raise ValueError(f"video {str(path)!r}: decoding took more than {timeout:g} s and was stopped "
                         f"({len(frames)} of {count} frames read). Use a shorter or smaller clip.")
    if not frames:
        raise ValueError(f"video {str(path)!r}: no frame could be decoded ({reason}).")
    if len(frames) < count:
        logger.warning("video %s: only %d of %d frames could be decoded (%s)", path, len(frames), count, reason)
    logger.info("read %d frames (%dx%d, %.3g fps) from %s", len(frames), width, height, info.fps, path)
    return frames, info.fps
