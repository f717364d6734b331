"""The Live tab in a real browser: headless Chromium (Debian's package, driven by Playwright) whose camera is a clip
(`--use-fake-device-for-media-stream --use-file-for-fake-video-capture=<y4m>`: the shared real clip v01 when present,
else the example photo moving; tests/live_clips.py).

Without an avatar the Live tab says to create one; after Create, the camera drives the avatar: streamed avatar frames
must arrive, keep up (frames shown per second) and follow the driving motion. The session's time limit (shortened
here to LIVE_TEST_SECONDS) ends it with its clip while the stream goes on in a new session; stopping offers that one's.
End-to-end latency is measured from the moment a camera frame is shown in the page to the moment the avatar frame
made from it is shown: each frame of the camera file carries its index as a bar code along its bottom edge, the
server (this test's wrapper around `LiveService.frame`) copies the index it reads onto the avatar frame, and the page
reads both (`requestVideoFrameCallback` on the camera's <video>, the avatar <img> once decoded).

A screenshot goes to tmp, or to $FHAVATAR_SCREENSHOT_DIR: that is how docs/app_live.png is made, with the example
photo as the camera (the shared clips are for internal tests only), without bar codes (so no latency there) and with
the app's own time limit (so that phase is skipped).
Skipped, with the reason, where Chromium or Playwright is missing.
"""

import os
import shutil
import time
from pathlib import Path

import numpy as np
import pytest

CHROMIUM = shutil.which("chromium")
if CHROMIUM is None:
    pytest.skip("Debian's chromium is not installed (make test installs it when run as root)", allow_module_level=True)
playwright_api = pytest.importorskip("playwright.sync_api", reason="the playwright package is not installed")

import gradio as gr  # noqa: E402

import app  # noqa: E402
from fhavatar import app_live  # noqa: E402
from tests.live_clips import FPS, driving_clip, y4m  # noqa: E402
from tests.served import served  # noqa: E402

TIMEOUT_MS = 300_000
DOCS = "FHAVATAR_SCREENSHOT_DIR" in os.environ
LIVE_WINDOW_S = 8.0  # how long the streamed frames are watched
LIVE_TEST_SECONDS = 14  # the live session's time limit in this test (the app's is app_live.LIVE_SECONDS)
BITS, BAR_ROWS, STAMP_ROWS = 8, 16, 12  # the frame-index bar code: 8 blocks along the bottom (camera) / top (avatar)
CLIP_FRAMES = 75  # the camera file plays them forward then backward (150 frames, 6 s), in a loop


def _bar(image: np.ndarray, index: int, rows: slice) -> None:
    width = image.shape[1]
    for bit in range(BITS):
        image[rows, bit * width // BITS : (bit + 1) * width // BITS] = 255 * ((index >> (BITS - 1 - bit)) & 1)


def _read_bar(image: np.ndarray, row: int) -> int:
    width, value = image.shape[1], 0
    for bit in range(BITS):
        value = 2 * value + int(image[row, round((bit + 0.5) * width / BITS)].mean() > 128)
    return value


@pytest.fixture(scope="module")
def camera(tmp_path_factory):
    """(the camera file, its frames, what they show)."""
    frames, what = driving_clip(CLIP_FRAMES, 256, prefer_real=not DOCS)
    frames = [f.copy() for f in frames + frames[::-1]]
    if not DOCS:
        for index, frame in enumerate(frames):
            _bar(frame, index, slice(-BAR_ROWS, None))
    return y4m(frames, tmp_path_factory.mktemp("camera") / "camera.y4m", FPS), frames, what


@pytest.fixture(scope="module")
def served_app():
    frame = app_live.LiveService.frame

    def stamped(self, camera, avatar=None, request: gr.Request | None = None):
        image, status = frame(self, camera, avatar, request)
        if isinstance(image, np.ndarray) and camera is not None and not DOCS:
            index = _read_bar(np.asarray(camera)[:, ::-1], camera.shape[0] - BAR_ROWS // 2)  # the webcam mirrors
            image = image.copy()
            _bar(image, index, slice(0, STAMP_ROWS))
        return image, status

    resolution = int(os.environ.get("FHAVATAR_SCREENSHOT_RESOLUTION", 64))
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(app_live.LiveService, "frame", stamped)
        if not DOCS:  # the docs screenshot shows the app's own limit
            patch.setattr(app, "LIVE_SECONDS", LIVE_TEST_SECONDS)
        demo = app.build_demo(app.AvatarService(resolution=resolution)).queue(max_size=8, default_concurrency_limit=1)
    with served(demo) as url:
        yield url


# In the page: the time each camera frame index is first shown, and each avatar frame shown (time, its index from
# the stamp, a 32² grey thumbnail below the stamp).
WATCH_JS = """([bits, barRows, stampRows]) => {
  const canvas = document.createElement('canvas');
  const ctx = canvas.getContext('2d', {willReadFrequently: true});
  const read = (source, w, h, row) => {
    canvas.width = w; canvas.height = h; ctx.drawImage(source, 0, 0, w, h);
    let value = 0;
    for (let b = 0; b < bits; b++) {
      const p = ctx.getImageData(Math.round((b + 0.5) * w / bits), row, 1, 1).data;
      value = 2 * value + ((p[0] + p[1] + p[2]) / 3 > 128 ? 1 : 0);
    }
    return value;
  };
  const live = window.__live = {camera: {}, shown: []};
  const video = document.querySelector('[data-testid="webcam-video"]');
  const onFrame = () => {
    if (video.videoWidth) {
      const k = read(video, video.videoWidth, video.videoHeight, video.videoHeight - barRows / 2);
      (live.camera[k] = live.camera[k] || []).push(Date.now());
    }
    video.requestVideoFrameCallback(onFrame);
  };
  video.requestVideoFrameCallback(onFrame);
  const block = [...document.querySelectorAll('.block')].filter(b => b.innerText.includes('Avatar (live)')).pop();
  let last = '';
  new MutationObserver(() => {
    const img = block.querySelector('img');
    if (!img || !img.src || img.src === last) return;
    last = img.src;
    img.decode().then(() => {
      const t = Date.now(), w = img.naturalWidth, h = img.naturalHeight;
      const k = read(img, w, h, stampRows / 2);
      ctx.drawImage(img, 0, stampRows, w, h - stampRows, 0, 0, 32, 32);
      const px = ctx.getImageData(0, 0, 32, 32).data, thumb = [];
      for (let i = 0; i < px.length; i += 4) thumb.push((px[i] + px[i + 1] + px[i + 2]) / 3);
      live.shown.push({t, k, thumb});
    }).catch(() => {});
  }).observe(block, {subtree: true, childList: true, attributes: true, attributeFilter: ['src']});
}"""


def _status(page) -> str:
    return page.get_by_label("Live status").input_value()


def _wait_status(page, prefix: str) -> str:
    deadline = time.monotonic() + TIMEOUT_MS / 1000
    while not (status := _status(page)).startswith(prefix) and time.monotonic() < deadline:
        time.sleep(0.25)
    return status


def _video_src(page, old: str = "") -> str:
    """The src of the session clip's <video>, once it has one other than `old`."""
    video = page.locator(".block", has_text="Clip of the live session").last.locator("video")
    video.wait_for(state="attached", timeout=TIMEOUT_MS)
    deadline = time.monotonic() + TIMEOUT_MS / 1000
    while (src := video.first.get_attribute("src") or "") in ("", old) and time.monotonic() < deadline:
        time.sleep(0.25)
    return src


def test_live_tab_streams_the_avatar_in_chromium(served_app, camera, tmp_path):
    shots = Path(os.environ.get("FHAVATAR_SCREENSHOT_DIR", tmp_path))
    shots.mkdir(parents=True, exist_ok=True)
    camera_file, frames, what = camera
    with playwright_api.sync_playwright() as pw:
        browser = pw.chromium.launch(
            executable_path=CHROMIUM,
            args=["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
                  "--disable-component-update", "--disable-sync", "--use-fake-ui-for-media-stream",
                  "--use-fake-device-for-media-stream", f"--use-file-for-fake-video-capture={camera_file}"],
        )
        context = browser.new_context(permissions=["camera"], viewport={"width": 1280, "height": 900})
        # No WebGL in this page: Create's 3D viewer (its own test is test_app_browser.py) would draw its splats with
        # SwiftShader, on the CPU, in a loop that starves the page and the server on a 2-core machine.
        context.add_init_script("HTMLCanvasElement.prototype.getContext = (get => function (kind, ...rest) {"
                                " return String(kind).startsWith('webgl') ? null : get.call(this, kind, ...rest);"
                                " })(HTMLCanvasElement.prototype.getContext);")
        page = context.new_page()
        began, phases = time.monotonic(), []  # (what, seconds since the page was asked for)

        def phase(what: str) -> None:
            phases.append(f"{what} {time.monotonic() - began:.0f} s")

        page.goto(served_app, timeout=TIMEOUT_MS)
        # 1. No avatar yet: the status line says what to do.
        page.get_by_role("tab", name="Live").click()
        page.get_by_text("Click to Access Webcam").click()
        record = page.get_by_label("capture photo")  # Gradio's record / stop button of the streaming webcam
        record.click()
        assert _wait_status(page, "Create an avatar first") == app_live.NO_AVATAR
        phase("no-avatar message")
        record.click()
        # 2. Create the avatar of the example photo.
        page.get_by_role("tab", name="Create").click()
        page.locator("input[type=file]").first.set_input_files(str(app.EXAMPLES_DIR / "astronaut.png"))
        page.get_by_role("button", name="Create avatar").click()
        page.locator(".block", has_text="360° orbit").last.locator("video").wait_for(state="attached",
                                                                                      timeout=TIMEOUT_MS)
        phase("created")
        # 3. Live: the camera drives it.
        page.get_by_role("tab", name="Live").click()
        page.evaluate(WATCH_JS, [BITS, BAR_ROWS, STAMP_ROWS])
        record.click()
        assert _wait_status(page, "Live:").startswith("Live:")
        phase("live")
        start = page.evaluate("() => Date.now()")
        time.sleep(LIVE_WINDOW_S)
        live, streaming = page.evaluate("() => window.__live"), _status(page)
        clips = []
        if not DOCS:  # 4. The time limit ends the session with its clip; the stream goes on in a new session.
            clips.append(_video_src(page))  # (the status says so too, until the new session's first frame)
            phase("time limit: clip")
            assert _wait_status(page, "Live:").startswith("Live:")
            phase("live again")
        # 5. Stop: the (new) session's clip is offered.
        record.click()
        assert _wait_status(page, "Live session over").startswith("Live session over")
        clips.append(_video_src(page, old=clips[0] if clips else ""))
        assert clips[-1] and clips[-1] not in clips[:-1]
        phase("stopped: clip")
        # the camera still shows, beside the avatar's last frame, the status and the clip (taken once the stream has
        # stopped: a streaming page on a busy CPU may not paint a screenshot in time)
        page.wait_for_timeout(1500)  # the outputs' fade-in after an update
        page.screenshot(path=str(shots / "app_live.png"), full_page=True, timeout=TIMEOUT_MS)
        for src in clips:
            clip = page.request.get(src if src.startswith("http") else served_app.rstrip("/") + src)
            assert clip.ok and len(clip.body()) > 1000
        browser.close()

    shown = [s for s in live["shown"] if s["t"] >= start]
    assert len(shown) >= 2, f"only {len(shown)} avatar frames arrived in {LIVE_WINDOW_S} s"
    fps = (len(shown) - 1) / ((shown[-1]["t"] - shown[0]["t"]) / 1000)
    thumbs = np.array([s["thumb"] for s in shown], np.float32)
    change = np.abs(thumbs - thumbs[:1]).mean(1)
    report = (f"\nlive in Chromium ({what}; the page said {streaming!r}): {len(shown)} avatar frames shown in "
              f"{LIVE_WINDOW_S:.0f} s, {fps:.1f} frames/s, change up to {change.max():.1f} grey levels; "
              f"phases: {', '.join(phases)}")
    assert fps >= 1.0 and change.max() > 1.0
    if not DOCS:
        # The avatar follows the camera: frames made from far-apart camera frames differ more than near ones.
        index = np.array([min(s["k"], len(frames) - 1 - s["k"]) for s in shown])  # forward and backward: the same
        apart = np.abs(index[:, None] - index[None, :])
        differ = np.abs(thumbs[:, None] - thumbs[None, :]).mean(-1)
        near, far = differ[(apart <= 3) & (apart > 0)], differ[apart >= 12]
        # End-to-end latency: the camera frame shown in the page -> the avatar frame made from it shown.
        # A camera frame the page did not see shown (a busy machine skips some) is left out, not matched with its
        # showing one loop earlier: only matches under half the loop count.
        loop_ms = 1000 * len(frames) / FPS
        latency = []
        for s in shown:
            seen = [t for t in live["camera"].get(str(s["k"]), []) if t <= s["t"]]
            if seen and s["t"] - max(seen) < loop_ms / 2:
                latency.append(s["t"] - max(seen))
        report += (f"; end-to-end latency median {np.median(latency):.0f} ms, 90th percentile "
                   f"{np.percentile(latency, 90):.0f} ms ({len(latency)} frames matched); frame difference "
                   f"{near.mean() if near.size else float('nan'):.1f} (camera frames ≤3 apart) vs {far.mean():.1f} "
                   "(≥12 apart)")
        print(report)
        assert len(latency) >= 0.5 * len(shown) and np.median(latency) < 2500
        assert far.size and (not near.size or far.mean() > near.mean())
    else:
        print(report)
