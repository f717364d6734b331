"""The served app under a reduced load (benchmarks/app_load.py): concurrent sessions, good and hostile requests."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

from .catalogue import OUTCOMES

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.slow
def test_concurrent_sessions_mixing_good_and_hostile_requests():
    pytest.importorskip("gradio_client")
    spec = importlib.util.spec_from_file_location("app_load", ROOT / "benchmarks" / "app_load.py")
    app_load = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(app_load)
    m = app_load.run_load(sessions=6, requests=14, resolution=32, size=64, frames=2, time_limit_s=600, log=lambda _: None)
    print(app_load.report(m))
    OUTCOMES["tried"] += m["bad"] + m["good"]  # every request is a case of the catalogue
    OUTCOMES["refused"] += m["bad_refused"]
    OUTCOMES["handled"] += m["good_ok"]
    OUTCOMES["crash"] += len(m["failures"])
    assert m["requests"] == 14 and m["good"] == 7 and m["bad"] == 7
    assert not m["failures"], app_load.report(m)
    assert m["good_ok"] == 7 and m["bad_refused"] == 7
    assert m["queue_size_after"] == 0, "the queue did not drain"
    assert m["rss_after_mb"] - m["rss_before_mb"] < 250, app_load.report(m)
    assert all(r["outcome"] in ("ok", "refused") for r in m["warmup"])
