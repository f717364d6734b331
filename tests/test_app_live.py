"""The Live tab's service, called directly: camera frames in, avatar frames out (size, motion, no-face message,
frames dropped while busy, time limit, one session per visitor, the recorded clip), and the per-frame pipeline entry
`FHAvatarPipeline.live` under it. Frames come from the shared real clip when present, else from the example photo
moving (tests/live_clips.py), so nothing here needs ../shared. The browser test is test_app_live_browser.py."""

import time
from types import SimpleNamespace

import imageio_ffmpeg
import numpy as np
import pytest

gr = pytest.importorskip("gradio")

import app  # noqa: E402
from fhavatar import app_live  # noqa: E402
from fhavatar.app_live import NO_AVATAR, NO_FACE, RECORD_FPS, RECORD_SIDE, AdaptiveSize, LiveService  # noqa: E402
from fhavatar.app_service import SessionAvatar  # noqa: E402
from tests.live_clips import driving_clip  # noqa: E402


@pytest.fixture(scope="module")
def service():
    return app.AvatarService(resolution=64)


@pytest.fixture(scope="module")
def created(service):
    """Create's outputs for the example photo."""
    return service.create(str(app.EXAMPLES_DIR / "astronaut.png"), frames=1, size=64, background="#ffffff")


@pytest.fixture(scope="module")
def avatar(created):
    """The session avatar Create leaves in the state."""
    return created[3]


@pytest.fixture(scope="module")
def clip():
    return driving_clip(36, 256)[0]


def visitor(name: str):
    return SimpleNamespace(session_hash=name)


def _small(image, side=128) -> np.ndarray:
    from PIL import Image

    return np.asarray(Image.fromarray(image).resize((side, side), Image.Resampling.BILINEAR)).astype(np.float32)


def test_frames_in_frames_out_following_the_camera(service, avatar, clip):
    live = LiveService(service, sizes=(128,))
    still = [live.frame(clip[0], avatar, visitor("a"))[0] for _ in range(6)]
    moving = [live.frame(frame, avatar, visitor("a")) for frame in clip[1:]]
    images = [image for image, _ in moving]
    side = app_live.LIVE_VIEW_HEIGHT_PX  # rendered at 128², sent at the side the page shows
    assert all(isinstance(i, np.ndarray) and i.shape == (side, side, 3) and i.dtype == np.uint8 for i in still + images)
    assert moving[-1][1].startswith("Live: 128×128 px,") and "s left" in moving[-1][1]
    # a still face gives a still avatar (smoothing settles, no jitter); the clip's motion moves it
    still_change = max(np.abs(_small(a) - _small(b)).mean() for a, b in zip(still[2:], still[3:]))
    moved = max(np.abs(_small(i) - _small(still[-1])).mean() for i in images)
    print(f"\nlive: still-face frame change {still_change:.3f}, driven change up to {moved:.2f} (of 255)")
    assert still_change < 0.3 and moved > 1.5 and moved > 10 * still_change
    live.stop(visitor("a"))


def test_no_avatar_and_no_face_are_told_in_the_status_line(service, avatar, clip):
    live = LiveService(service, sizes=(128,))
    assert live.frame(clip[0], None, visitor("b")) == (None, NO_AVATAR)
    assert live.frame(None, avatar, visitor("b")) == (gr.skip(), gr.skip())  # the stream's first, empty call
    blank = np.full_like(clip[0], 90)
    assert live.frame(blank, avatar, visitor("b"))[1] == NO_FACE  # before any face
    image, status = live.frame(clip[0], avatar, visitor("b"))
    assert isinstance(image, np.ndarray) and status.startswith("Live:")
    image, status = live.frame(blank, avatar, visitor("b"))
    assert image == gr.skip() and status == NO_FACE  # the avatar holds its last frame
    assert live._sessions["b"].faceless == 2 and len(live._sessions["b"].recorded) == 2
    image, status = live.frame(clip[1], avatar, visitor("b"))  # the face is back: tracked afresh
    assert isinstance(image, np.ndarray) and status.startswith("Live:")
    live.stop(visitor("b"))


def test_a_frame_that_finds_the_session_busy_is_dropped(service, avatar, clip):
    live = LiveService(service, sizes=(128,))
    live.frame(clip[0], avatar, visitor("c"))
    session = live._sessions["c"]
    with session.busy:  # a render in flight
        assert live.frame(clip[1], avatar, visitor("c")) == (gr.skip(), gr.skip())
    assert session.dropped == 1 and session.frames == 1
    assert isinstance(live.frame(clip[2], avatar, visitor("c"))[0], np.ndarray)
    live.stop(visitor("c"))
    assert session.closed and session.frames == 2
    # a frame that got the session just before the stream ended renders nothing on the closed tracker
    live._sessions["c"] = session
    assert live.frame(clip[3], avatar, visitor("c")) == (gr.skip(), gr.skip()) and session.frames == 2
    live._sessions.pop("c")


def test_one_session_per_visitor_and_the_time_limit(service, created, avatar, clip):
    live = LiveService(service, seconds=0.5, sizes=(128,))
    live.frame(clip[0], avatar, visitor("d"))
    live.frame(clip[0], avatar, visitor("e"))
    first = live._sessions["d"]
    assert live._sessions["e"] is not first  # visitors never share a session (nor its reference face)
    live.frame(clip[1], avatar, visitor("d"))
    assert live._sessions["d"] is first and first.frames == 2
    time.sleep(0.6)
    image, status = live.frame(clip[2], avatar, visitor("d"))
    assert image == gr.skip() and "reached its 0.5 s" in status and "d" not in live._sessions
    assert first.closed  # its tracker freed at once; its frames kept for the clip
    image, status = live.frame(clip[3], avatar, visitor("d"))  # streaming on: a new session
    assert status.startswith("Live:") and live._sessions["d"] is not first
    clip_path, status = live.stop(visitor("d"))  # the stream's end: one clip of both sessions, both closed
    assert clip_path and status.startswith("Live session over: 3 frames")
    assert "d" not in live._sessions and "d" not in live._ended
    # another avatar in the state (Create again) starts a new session for it; the clip holds the stream's frames
    live.frame(clip[4], avatar, visitor("d"))
    second = live._sessions["d"]
    assert second.elapsed < 5  # a fresh session, not one left over from the stream before
    other = SessionAvatar(service.avatar_from_file(created[5]), "other")
    assert live.frame(clip[5], other, visitor("d"))[1].startswith("Live:")
    assert live._sessions["d"] is not second and live._sessions["d"].reenactment.avatar is other.avatar
    assert second.closed
    assert live.stop(visitor("d"))[1].startswith("Live session over: 2 frames")  # `second`'s and the new one's
    assert "d" not in live._sessions and "d" not in live._ended
    for name in ("d", "e"):
        live.forget(visitor(name))
    assert not live._sessions and not live._ended


def test_the_recorded_clip_plays_the_session_in_real_time(service, avatar, clip):
    live = LiveService(service, sizes=(128,))
    sent = []
    start = time.monotonic()
    for frame in clip[:12]:
        sent.append(live.frame(frame, avatar, visitor("f"))[0])
    elapsed = time.monotonic() - start
    path, status = live.stop(visitor("f"))
    assert status.startswith("Live session over: 12 frames") and path.endswith("live.mp4")
    reader = imageio_ffmpeg.read_frames(path)
    meta = next(reader)
    frames = [np.frombuffer(f, np.uint8).reshape(meta["size"][1], meta["size"][0], 3) for f in reader]
    assert meta["fps"] == RECORD_FPS and tuple(meta["size"]) == (2 * RECORD_SIDE, RECORD_SIDE)  # avatar | camera
    assert abs(len(frames) - elapsed * RECORD_FPS) <= 2  # real time, whatever the frame rate served
    first_avatar = frames[0][:, :RECORD_SIDE].astype(np.float32)
    assert np.abs(_small(first_avatar.astype(np.uint8)) - _small(sent[0])).mean() < 8  # the avatar, left
    assert np.abs(_small(frames[0][:, RECORD_SIDE:]) - _small(clip[0])).mean() < 8  # the camera, right
    assert live.stop(visitor("f")) == (gr.skip(), gr.skip())  # nothing left to write
    # a session that never saw a face records nothing, and says so
    live.frame(np.zeros_like(clip[0]), avatar, visitor("g"))
    assert live.stop(visitor("g")) == (None, "The live session ended before any face was seen: nothing was recorded.")


def test_errors_reach_the_status_line_and_the_stream_goes_on(service, avatar, clip):
    live = LiveService(service, sizes=(128,))
    image, status = live.frame(np.zeros((4, 4), np.float64), avatar, visitor("h"))  # not a camera image
    assert image == gr.skip() and "Traceback" not in status and "\n" not in status and status.endswith(".")
    assert isinstance(live.frame(clip[0], avatar, visitor("h"))[0], np.ndarray)
    live.forget(visitor("h"))


def test_old_sessions_are_closed_beyond_the_cap(service, avatar, clip, monkeypatch):
    monkeypatch.setattr(app_live, "LIVE_SESSIONS_KEPT", 2)
    live = LiveService(service, sizes=(128,))
    for name in ("i", "j", "k"):
        live.frame(clip[0], avatar, visitor(name))
    assert list(live._sessions) == ["j", "k"]
    for name in ("j", "k"):
        live.forget(visitor(name))


def _sides(size: AdaptiveSize, cost, frames: int = 300) -> list[int]:
    sides = [size.side]
    for _ in range(frames):
        sides.append(size.update(cost(size.side)))
    return sides


def test_adaptive_size_follows_the_frame_time():
    sizes = (128, 192, 256, 384)
    # slow, and cheaper when smaller: down, and never below the range
    sides = _sides(AdaptiveSize(sizes, start=192, budget=0.1, patience=3), lambda side: 0.3 * (side / 192) ** 2, 30)
    assert sides[:4] == [192, 192, 192, 128] and set(sides[3:]) == {128}
    # fast: up one step at a time to the top, and no further
    sides = _sides(AdaptiveSize(sizes, start=128, budget=0.1, patience=3), lambda side: 0.01, 12)
    assert sides[-1] == 384 and sides == sorted(sides)
    # 192² fits the budget, 256² does not: 256² is timed, found too slow, and timed again only `recheck` frames later
    cost = {128: 0.04, 192: 0.05, 256: 0.2, 384: 0.4}
    sides = _sides(AdaptiveSize(sizes, start=192, budget=0.1, patience=3, recheck=50), cost.get, 200)
    assert 0 < sides.count(256) / len(sides) < 0.1 and 128 not in sides and 384 not in sides
    # over budget at every side, about as slow at all (tracking and per-Gaussian work): the largest image is kept
    sides = _sides(AdaptiveSize(sizes, start=192, budget=0.1, patience=3, recheck=50), lambda side: 0.12 + side / 1e5)
    assert sides.count(384) > 0.6 * len(sides)
    # one slow frame (a compilation) moves nothing
    size = AdaptiveSize(sizes, start=192, budget=0.1, patience=5, recheck=1000)
    _sides(size, cost.get, 40)
    assert size.side == 192
    size.update(1.0)
    assert [size.update(0.05) for _ in range(10)] == [192] * 10


def test_the_live_tab_streams_under_its_own_limits(service):
    demo = app.build_demo(service)
    streams = [fn for fn in demo.fns.values() if fn.connection == "stream"]
    assert len(streams) == 1
    stream = streams[0]
    assert stream.time_limit == app_live.LIVE_SECONDS and stream.concurrency_id == app_live.LIVE_CONCURRENCY_ID
    assert stream.concurrency_limit == app_live.LIVE_SESSIONS and stream.stream_every == app_live.LIVE_STREAM_EVERY
    after = [fn for fn in demo.fns.values() if any(t[1] == "then" for t in fn.targets)]
    assert [fn.name for fn in after] == ["stop"]


def test_pipeline_live_renders_each_camera_frame(service, avatar, clip):
    """`FHAvatarPipeline.live`, the per-frame entry under the Live tab: the first face is the reference, so its frame
    shows the avatar as the photo's own view does; a frame without a face gives no image."""
    import torch

    live = service.pipe.live(avatar.avatar, background=[0.0, 0.0, 0.0])
    first = live(clip[0], 96, 128)
    front = next(service.pipe.render_views(avatar.avatar, avatar.avatar.source_track.camera, 96, 128,
                                           background=[0.0, 0.0, 0.0]))
    assert first.has_face and first.image.shape == (3, 96, 128) and first.seconds > 0
    torch.testing.assert_close(first.image, front, atol=2e-3, rtol=0)
    blank = live(np.zeros_like(clip[0]), 96, 128)
    assert blank.image is None and not blank.has_face
    with pytest.raises(ValueError, match="height"):
        live(clip[1], 8, 8)
    live.close()
