"""`python app.py` started the way a Hugging Face Space starts it: no arguments, the address in the environment
(`GRADIO_SERVER_NAME`, `GRADIO_SERVER_PORT`, `SPACE_ID`). The app must listen where the environment says."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from tests.served import free_port

REPO = Path(__file__).resolve().parents[1]
START_TIMEOUT_S = 180


def _bind_host() -> str:
    """0.0.0.0 as on a Space, or 127.0.0.1 where this machine does not allow binding every interface."""
    try:
        free_port("0.0.0.0")
        return "0.0.0.0"
    except OSError:
        return "127.0.0.1"


def _stop(process: subprocess.Popen) -> None:
    """End the app and everything it started (it runs in its own process group)."""
    if process.poll() is not None:
        return
    try:
        os.killpg(process.pid, signal.SIGTERM)
        process.wait(timeout=10)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait(timeout=10)
    except ProcessLookupError:
        pass


@pytest.fixture
def space_app(tmp_path):
    """Start `python app.py` with a Space's environment; yields (url, log path)."""
    host = _bind_host()
    port = free_port(host)
    env = {k: v for k, v in os.environ.items() if not k.startswith("GRADIO_") and k != "PYTHONPATH"}
    # A Space runs app.py from the repository root with nothing on PYTHONPATH, and says where to listen.
    env.update(GRADIO_SERVER_NAME=host, GRADIO_SERVER_PORT=str(port), SPACE_ID="fhavatar-tests/fhavatar",
               GRADIO_ANALYTICS_ENABLED="False", HF_HUB_OFFLINE="1", HF_HUB_DISABLE_TELEMETRY="1")
    log = tmp_path / "app.log"
    with open(log, "w") as out:
        process = subprocess.Popen([sys.executable, "app.py"], cwd=REPO, env=env, stdout=out, stderr=subprocess.STDOUT,
                                   stdin=subprocess.DEVNULL, start_new_session=True)
    try:
        url = f"http://127.0.0.1:{port}/"
        deadline = time.monotonic() + START_TIMEOUT_S
        while True:
            try:
                urllib.request.urlopen(url, timeout=5).read(1)
                break
            except OSError:
                if process.poll() is not None:
                    pytest.fail(f"app.py exited with {process.returncode}:\n{log.read_text()[-3000:]}")
                if time.monotonic() > deadline:
                    pytest.fail(f"app.py did not listen on {host}:{port} within {START_TIMEOUT_S} s:\n"
                                f"{log.read_text()[-3000:]}")
                time.sleep(0.25)
        yield url, log, host, port
    finally:
        _stop(process)


def test_app_listens_where_the_space_environment_says(space_app):
    from gradio_client import Client

    url, log, host, port = space_app
    client = Client(url, verbose=False)
    try:
        api = client.view_api(print_info=False, return_format="dict")
    finally:
        client.close()
    assert {"/create_avatar", "/animate"} <= set(api["named_endpoints"])
    assert f"{host}:{port}" in log.read_text()
