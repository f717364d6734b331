"""The app's Live tab (`LiveService`): the visitor's webcam drives the avatar of Create, frame by frame, and the
rendered frames stream back beside the camera image; a clip of the session can be downloaded when it ends.

Streaming is Gradio's own webcam streaming (`gr.Image(sources=["webcam"], streaming=True)` and its `.stream`
event), which needs nothing beyond the app: it works offline and in a Space (WebRTC would need a TURN server there).
The browser offers a JPEG frame every `LIVE_STREAM_EVERY` s; Gradio keeps only the newest one for the handler (a frame
that arrives during a render replaces the one waiting), and the handler itself drops a frame that finds the session
busy, so latency never queues up: what is shown is always the avatar of a recent frame. The render side adapts to
what the machine sustains (`AdaptiveSize`: `LIVE_SIZES`, aiming at `LIVE_TARGET_FPS`).

Each frame: camera image -> `FHAvatarPipeline.live` (video-mode tracking with causal smoothing -> relative motion
transfer from the first frame with a face -> the avatar posed and rendered). A session is one visitor's stream (keyed
by Gradio's session hash: one live session per visitor) and lasts at most `LIVE_SECONDS` (the `.stream` event's time
limit); then, or when the visitor stops the camera, `stop` writes its clip (avatar | camera, `RECORD_FPS`, real time)
with `fhavatar.io.write_video`. `LIVE_SESSIONS` streams run at once under their own concurrency id, so Create and
Animate are never blocked by a live session; a visitor whose session ran out and who still streams queues again
behind anyone waiting. Messages (no avatar yet, no face in view, time up, errors) go to a status line: a stream
never raises into the visitor's face, and the avatar holds its last frame while no face is seen.
"""

from __future__ import annotations

import collections
import io
import logging
import threading
import time

import gradio as gr
import numpy as np
from PIL import Image

from .app_service import AvatarService, SessionAvatar
from .io import side_by_side, write_video

__all__ = ["LIVE_SECONDS", "LIVE_SESSIONS", "LIVE_SIZES", "AdaptiveSize", "LiveService", "LiveSession"]

logger = logging.getLogger(__name__)

LIVE_SECONDS = 60  # one live session at most (the `.stream` event's time limit)
LIVE_SESSIONS = 2  # live streams served at once (concurrency id LIVE_CONCURRENCY_ID); more wait in the queue
LIVE_CONCURRENCY_ID = "live"
LIVE_SESSIONS_KEPT = 16  # sessions (running or awaiting their clip) kept at most; the oldest are closed first
LIVE_STREAM_EVERY = 0.04  # seconds between the frames the browser offers (Gradio keeps only the newest)
#: The webcam is asked for this size (the browser's default asks 1920x1440: large JPEGs to send every frame).
LIVE_WEBCAM_CONSTRAINTS = {"video": {"width": {"ideal": 640}, "height": {"ideal": 480}}}
LIVE_VIEW_HEIGHT_PX = 384  # the camera and the avatar shown side by side, this high (the avatar sent at this side)
LIVE_CAMERA_SIDE = 480  # camera frames are scaled down to this longer side before tracking
LIVE_SIZES = (128, 160, 192, 224, 256, 320, 384)  # render sides (pixels) the stream adapts between
LIVE_START_SIZE = 192
LIVE_TARGET_FPS = 10.0  # the render side is lowered while frames take longer than 1 / LIVE_TARGET_FPS s
RECORD_FPS = 10.0  # the session clip: frames resampled in real time at this rate ...
RECORD_SIDE = 256  # ... the avatar at this side, the camera image beside it ...
RECORD_JPEG_QUALITY = 90  # ... kept as JPEGs in memory until the clip is written (~20 kB a frame)
NO_AVATAR = "Create an avatar first (on the Create tab), then start the camera here."
NO_FACE = "No face in the camera: face it in good light. The avatar holds its last frame meanwhile."


class AdaptiveSize:
    """The render side a stream sustains, timed rather than guessed.

    A side's frame time is the median of its last `patience` frames (a lone slow frame, a compilation or another
    process, moves nothing), remembered for `recheck` frames. Over `budget` seconds, the side steps down when the
    next smaller one is untimed or clearly faster (by more than `tolerance`), or when this one is clearly slower than
    the fastest timed. Otherwise it steps up to the next side if that one is untimed (a probe of `patience` frames) or
    was timed within `budget`, or within `tolerance` of the fastest: when every side is over budget, the rate is
    limited by what costs the same at any side (tracking, posing, the rasterizer's per-Gaussian work), and a smaller
    image would only look worse. A frame's cost grows much less than its pixel count on the CPU (K=256: 36 ms at
    128², 54 ms at 384²), so sides are timed, not extrapolated.

    Example:
        ```py
        >>> from fhavatar.app_live import AdaptiveSize
        >>> size = AdaptiveSize((128, 192, 256), start=192, budget=0.1)
        >>> cost = {128: 0.05, 192: 0.3, 256: 0.6}  # seconds a frame
        >>> for _ in range(20):
        ...     side = size.update(cost[size.side])
        >>> size.side
        128

        ```
    """

    def __init__(self, sizes=LIVE_SIZES, start: int = LIVE_START_SIZE, budget: float = 1.0 / LIVE_TARGET_FPS,
                 tolerance: float = 0.15, patience: int = 5, recheck: int = 100):
        self.sizes = tuple(sorted(sizes))
        self.index = self.sizes.index(start)
        self.budget, self.tolerance, self.recheck = budget, tolerance, recheck
        self.times: collections.deque[float] = collections.deque(maxlen=patience)  # at the current side
        self.timed: dict[int, tuple[float, int]] = {}  # side -> (median frame time, frame count when timed)
        self.count = 0

    @property
    def side(self) -> int:
        return self.sizes[self.index]

    def _time(self, index: int) -> float | None:
        """The remembered frame time of `sizes[index]` (None: untimed, forgotten, or out of range)."""
        if not 0 <= index < len(self.sizes) or self.sizes[index] not in self.timed:
            return None
        seconds, when = self.timed[self.sizes[index]]
        return seconds if self.count - when < self.recheck else None

    def update(self, seconds: float) -> int:
        """Record one frame's time; returns the side for the next frame."""
        self.times.append(seconds)
        self.count += 1
        if len(self.times) < self.times.maxlen:
            return self.side
        typical = float(np.median(self.times))
        self.timed[self.side] = (typical, self.count)
        fastest = min(t for t in map(self._time, range(len(self.sizes))) if t is not None)
        lower, upper = self._time(self.index - 1), self._time(self.index + 1)
        acceptable = max(self.budget, fastest * (1 + self.tolerance))
        step = 0
        if typical > self.budget and self.index > 0 and (
                lower is None or lower * (1 + self.tolerance) < typical or typical > acceptable):
            step = -1  # a smaller side may sustain more frames (untimed), or does (timed)
        elif self.index + 1 < len(self.sizes):
            step = int(upper is None or upper <= acceptable)  # untimed: a probe
        if step:
            self.index += step
            self.times.clear()
        return self.side


def _jpeg(image: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, format="JPEG", quality=RECORD_JPEG_QUALITY)
    return buffer.getvalue()


def _scaled(image: np.ndarray, side: int) -> np.ndarray:
    """`image` with its longer side scaled down to `side` (unchanged when it is not longer)."""
    height, width = image.shape[:2]
    if max(height, width) <= side:
        return image
    scale = side / max(height, width)
    size = (max(1, round(width * scale)), max(1, round(height * scale)))
    return np.asarray(Image.fromarray(image).resize(size, Image.Resampling.BILINEAR))


class LiveSession:
    """One visitor's live stream: the pipeline's `LiveReenactment`, the adaptive render side, the last avatar frame
    and the recorded frames (JPEG pairs avatar | camera, with their times)."""

    def __init__(self, reenactment, seconds: float = LIVE_SECONDS, sizes=LIVE_SIZES):
        self.reenactment, self.seconds = reenactment, seconds
        self.size = AdaptiveSize(sizes, start=min(sizes, key=lambda side: abs(side - LIVE_START_SIZE)))
        self.started = time.monotonic()
        self.busy = threading.Lock()  # held while a frame is rendered, and to close
        self.closed = False
        self.last: np.ndarray | None = None  # the last avatar frame, [S, S, 3] uint8
        self.recorded: list[tuple[float, bytes]] = []
        self.answered: collections.deque[float] = collections.deque(maxlen=20)  # times of the last frames
        self.frames = self.dropped = self.faceless = 0

    @property
    def elapsed(self) -> float:
        return time.monotonic() - self.started

    @property
    def expired(self) -> bool:
        return self.elapsed >= self.seconds

    def fps(self) -> float:
        """Frames answered per second, over the last ones."""
        times = self.answered
        return (len(times) - 1) / (times[-1] - times[0]) if len(times) > 1 and times[-1] > times[0] else 0.0

    def step(self, camera: np.ndarray) -> tuple[np.ndarray | None, str]:
        """One camera frame -> (the avatar frame at `LIVE_VIEW_HEIGHT_PX`, whatever side it was rendered at, so the
        page's layout never jumps, or None when no face is seen; the status line)."""
        camera = _scaled(np.ascontiguousarray(camera[..., :3], dtype=np.uint8), LIVE_CAMERA_SIDE)
        start = time.perf_counter()
        side = self.size.side
        result = self.reenactment(camera, side, side)
        now = time.monotonic()
        self.frames += 1
        self.answered.append(now)
        if result.image is None:
            self.faceless += 1
            status = NO_FACE
        else:
            self.last = (result.image.permute(1, 2, 0).clamp(0, 1).numpy() * 255 + 0.5).astype(np.uint8)
            status = (f"Live: {side}×{side} px, {self.fps():.1f} frames/s, "
                      f"{max(0.0, self.seconds - self.elapsed):.0f} s left.")
        if self.last is not None:
            pair = side_by_side(_scaled_to(self.last, RECORD_SIDE), camera)
            self.recorded.append((now - self.started, _jpeg(pair)))
        if result.image is not None:
            self.size.update(time.perf_counter() - start)
        return (_scaled_to(self.last, LIVE_VIEW_HEIGHT_PX) if result.image is not None else None), status

    def close(self) -> None:
        """Free the tracker's graphs, once a frame still rendering is done (the recording stays for the clip)."""
        with self.busy:
            if not self.closed:
                self.closed = True
                self.reenactment.close()


def clip_frames(sessions, fps: float = RECORD_FPS):
    """The frames recorded by consecutive `sessions` of one stream, resampled in real time at `fps` (each instant
    shows the latest frame before it; a pause between sessions holds the last frame)."""
    recorded = [(session.started + t, jpeg) for session in sessions for t, jpeg in session.recorded]
    times = [t for t, _ in recorded]
    count = max(1, int((times[-1] - times[0]) * fps) + 1)
    for k in range(count):
        index = int(np.searchsorted(times, times[0] + k / fps, side="right")) - 1
        yield np.asarray(Image.open(io.BytesIO(recorded[index][1])).convert("RGB"))


def _scaled_to(image: np.ndarray, side: int) -> np.ndarray:
    """A square `image` resized to `side` (whatever side it was rendered at; bicubic: a 128² render shown at 384²
    keeps smooth edges, for ~1 ms)."""
    if image.shape[0] == side:
        return image
    return np.asarray(Image.fromarray(image).resize((side, side), Image.Resampling.BICUBIC))


class LiveService:
    """The Live tab's handlers around an `AvatarService` (its pipeline and output folders): `frame` for each webcam
    frame of the `.stream` event, `stop` when the stream ends (time limit or the visitor), `forget` when they leave.

    Args:
        service (`AvatarService`): the app's service (pipeline, output folders, error wording).
        seconds (`float`, *optional*, defaults to `LIVE_SECONDS`): the longest live session.
        sizes (sequence of `int`, *optional*, defaults to `LIVE_SIZES`): the render sides the stream adapts between.
    """

    def __init__(self, service: AvatarService, seconds: float = LIVE_SECONDS, sizes=LIVE_SIZES):
        self.service, self.seconds, self.sizes = service, seconds, tuple(sizes)
        self._sessions: dict[str, LiveSession] = {}  # visitor -> running session
        self._ended: dict[str, LiveSession] = {}  # visitor -> session over, its clip not written yet
        self._lock = threading.Lock()

    @staticmethod
    def _visitor(request) -> str:
        return getattr(request, "session_hash", None) or "api"

    def _end(self, visitor: str) -> LiveSession | None:
        """Move the visitor's running session to the ended one (`stop` writes the stream's clip); under
        `self._lock`. Returns an older ended session it replaces, for the caller to close outside the lock."""
        previous = self._ended.pop(visitor, None)
        self._ended[visitor] = self._sessions.pop(visitor)
        return previous

    def _start(self, visitor: str, avatar) -> LiveSession:
        if not isinstance(avatar, SessionAvatar):
            raise gr.Error(NO_AVATAR)
        session = LiveSession(self.service.pipe.live(avatar.avatar, avatar.background), self.seconds, self.sizes)
        with self._lock:
            if visitor in self._sessions:  # started meanwhile by another call of this visitor's
                session.close()
                return self._sessions[visitor]
            self._sessions[visitor] = session
            old = []
            for table in (self._ended, self._sessions):
                while len(self._sessions) + len(self._ended) > LIVE_SESSIONS_KEPT and table:
                    old.append(table.pop(next(iter(table))))
        for stale in old:
            stale.close()
        return session

    def frame(self, camera, avatar=None, request: gr.Request | None = None):
        """One webcam frame (`[H, W, 3]` uint8) -> (the avatar frame, the status line), or `gr.skip()` for what does
        not change: the avatar while no face is seen, everything for a frame dropped because the last one is still
        being rendered."""
        if camera is None:
            return gr.skip(), gr.skip()
        visitor = self._visitor(request)
        ended, replaced = None, None
        with self._lock:
            session = self._sessions.get(visitor)
            switched = (session is not None and isinstance(avatar, SessionAvatar)
                        and session.reenactment.avatar is not avatar.avatar)  # a new avatar was created meanwhile
            if session is not None and (switched or session.expired):
                ended, replaced, session = session, self._end(visitor), None
        for old in (replaced, ended):  # (a replaced ended session's frames are not in the clip)
            if old is not None:
                old.close()
        if ended is not None and not switched:
            return gr.skip(), (f"This live session reached its {self.seconds:g} s limit; its clip comes below when "
                               "the stream ends. While the camera streams, a new session follows (after anyone "
                               "waiting for one).")
        try:
            session = session or self._start(visitor, avatar)
        except gr.Error as err:
            return None, err.message
        except Exception as err:
            return None, self.service.user_error(err).message
        if not session.busy.acquire(blocking=False):
            session.dropped += 1
            return gr.skip(), gr.skip()
        if session.closed:  # ended (stop, the visitor left, the cap) while this frame waited
            session.busy.release()
            return gr.skip(), gr.skip()
        try:
            image, status = session.step(np.asarray(camera))
        except Exception as err:  # the stream goes on; the visitor reads what went wrong in the status line
            return gr.skip(), self.service.user_error(err).message
        finally:
            session.busy.release()
        return (image if image is not None else gr.skip()), status

    def stop(self, request: gr.Request | None = None):
        """The stream ended: (the session's clip path, or None; the status line)."""
        visitor = self._visitor(request)
        with self._lock:  # the stream is over: its ended session (if any) and its running one, in order
            sessions = [s for s in (self._ended.pop(visitor, None), self._sessions.pop(visitor, None)) if s]
        if not sessions:
            return gr.skip(), gr.skip()
        for session in sessions:
            session.close()  # (a frame still rendering finishes first)
        sessions = [session for session in sessions if session.recorded]
        if not sessions:
            return None, "The live session ended before any face was seen: nothing was recorded."
        try:
            clip = write_video(self.service.output_dir() / "live.mp4", clip_frames(sessions), fps=RECORD_FPS)
        except Exception as err:
            return None, self.service.user_error(err).message
        frames = sum(len(session.recorded) for session in sessions)
        seconds = (sessions[-1].started + sessions[-1].recorded[-1][0]) - (sessions[0].started + sessions[0].recorded[0][0])
        rate = (frames - 1) / seconds if seconds > 0 else 0.0
        side = sessions[-1].size.side
        return str(clip), (f"Live session over: {frames} frames in {seconds:.0f} s ({rate:.1f} frames/s, the last at "
                           f"{side}×{side} px); its clip is below.")

    def forget(self, request: gr.Request | None = None) -> None:
        """The visitor left: close their sessions."""
        visitor = self._visitor(request)
        with self._lock:
            sessions = [s for s in (self._sessions.pop(visitor, None), self._ended.pop(visitor, None)) if s]
        for session in sessions:
            session.close()
