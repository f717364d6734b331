"""The app in a real browser: headless Chromium (Debian's package) driven by Playwright.

Uploads the example photo, creates the avatar, waits for the orbit video; then uploads a driving clip on the
Animate tab and waits for the re-enactment. Screenshots go to tmp (or to $FHAVATAR_SCREENSHOT_DIR, which is
how docs/app_*.png are made). Skipped, with the reason, where Chromium or Playwright is missing.
"""

import os
import shutil
import socket
from pathlib import Path

import numpy as np
import pytest

CHROMIUM = shutil.which("chromium")
if CHROMIUM is None:
    pytest.skip("Debian's chromium is not installed (make test installs it when run as root)", allow_module_level=True)
playwright_api = pytest.importorskip("playwright.sync_api", reason="the playwright package is not installed")

import app  # noqa: E402

TIMEOUT_MS = 120_000


@pytest.fixture(scope="module")
def served_app():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    # tiny atlas for speed; the docs screenshots are made at the full K=256 ($FHAVATAR_SCREENSHOT_RESOLUTION)
    resolution = int(os.environ.get("FHAVATAR_SCREENSHOT_RESOLUTION", 64))
    demo = app.build_demo(app.AvatarService(resolution=resolution)).queue(max_size=8, default_concurrency_limit=1)
    demo.launch(server_name="127.0.0.1", server_port=port, prevent_thread_lock=True, quiet=True)
    yield f"http://127.0.0.1:{port}/"
    demo.close()


def _video_src(page, label: str) -> str:
    """The src of the <video> inside the block labelled `label`, once it has one."""
    block = page.locator(".block", has_text=label).last
    video = block.locator("video")
    video.wait_for(state="attached", timeout=TIMEOUT_MS)
    return video.get_attribute("src") or ""


def test_create_and_animate_in_chromium(served_app, tmp_path):
    from fhavatar.io import load_image, write_video

    shots = Path(os.environ.get("FHAVATAR_SCREENSHOT_DIR", tmp_path))
    shots.mkdir(parents=True, exist_ok=True)
    photo = app.EXAMPLES_DIR / "astronaut.png"
    image = load_image(photo)
    clip = write_video(tmp_path / "driving.mp4", [np.roll(image, s, axis=1) for s in range(0, 16, 2)], fps=8)

    with playwright_api.sync_playwright() as pw:
        browser = pw.chromium.launch(
            executable_path=CHROMIUM,
            args=["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
                  "--disable-component-update", "--disable-sync"],
        )
        page = browser.new_page(viewport={"width": 1280, "height": 1000})
        page.goto(served_app, timeout=TIMEOUT_MS)
        page.locator("input[type=file]").first.set_input_files(str(photo))
        page.get_by_role("button", name="Create avatar").click()
        orbit_src = _video_src(page, "360° orbit")
        assert orbit_src, "the orbit video has no source"
        page.screenshot(path=str(shots / "app_create.png"))

        page.get_by_role("tab", name="Animate").click()
        page.locator("input[type=file]").last.set_input_files(str(clip))
        page.get_by_role("button", name="Animate").click()
        reenact_src = _video_src(page, "Re-enactment")
        assert reenact_src, "the re-enacted video has no source"
        page.screenshot(path=str(shots / "app_animate.png"))
        # both sources are served by the app and are real mp4 files
        for src in (orbit_src, reenact_src):
            response = page.request.get(src if src.startswith("http") else served_app.rstrip("/") + src)
            assert response.ok and len(response.body()) > 1000
        browser.close()
