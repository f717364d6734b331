"""App under load: concurrent `gradio_client` sessions mixing good and hostile requests against the served app.

Starts `app.py` in its own process on 127.0.0.1 (the built-in default, a small atlas), warms it up, then runs
`--requests` requests from `--sessions` concurrent clients. Half are good (a photo -> /create_avatar, photo + clip
-> /animate); the rest are hostile (no face, a text file named .jpg, a truncated JPEG, a PNG whose header claims
65000 x 65000 pixels, a 25 s clip, an audio-only file, a 10-minute clip). Every good request must succeed, every
bad one must get its own readable error. Prints the requests, failures, p50/p95 latency per kind, the server's
RSS before (after warm-up), at its peak and after the soak, and whether the queue drained.

    PYTHONPATH=. .venv/bin/python benchmarks/app_load.py [--sessions 8] [--requests 56] [--resolution 32] [--size 64]
"""

from __future__ import annotations

import argparse
import json
import os
import re
import struct
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
import zlib
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

from tests.served import free_port

ROOT = Path(__file__).resolve().parents[1]
ENV = {"HF_HUB_OFFLINE": "1", "HF_HUB_DISABLE_TELEMETRY": "1", "GRADIO_ANALYTICS_ENABLED": "False"}


def _rss_mb(pid: int) -> float:
    """Resident memory of process `pid` (MB), from /proc."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"no VmRSS for pid {pid}")


def _png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)


def make_inputs(folder: Path) -> dict[str, Path]:
    """The request inputs: good photo and clip, and one hostile file per kind of bad request."""
    import imageio_ffmpeg
    from PIL import Image

    from fhavatar.io import load_image, write_video

    photo = ROOT / "examples" / "astronaut.png"
    image = load_image(photo, max_side=256)
    files = {"photo": photo, "clip": write_video(folder / "clip.mp4", [np.roll(image, s, 1) for s in range(0, 8, 2)], 8)}
    Image.new("RGB", (128, 128), (200, 200, 200)).save(folder / "blank.png")
    files["no_face"] = folder / "blank.png"
    files["text_jpg"] = folder / "notes.jpg"
    files["text_jpg"].write_text("this is not a photo\n" * 50)
    files["truncated"] = folder / "cut.jpg"
    files["truncated"].write_bytes(_jpeg_bytes(photo)[:3000])
    ihdr = struct.pack(">IIBBBBB", 65000, 65000, 8, 2, 0, 0, 0)
    files["bomb"] = folder / "bomb.png"
    files["bomb"].write_bytes(b"\x89PNG\r\n\x1a\n" + _png_chunk(b"IHDR", ihdr) + _png_chunk(b"IDAT", zlib.compress(b"\0" * 64))
                              + _png_chunk(b"IEND", b""))
    files["long_clip"] = write_video(folder / "long.mp4", [np.zeros((16, 16, 3), np.uint8)] * 25, fps=1)

    def run(*args: str) -> None:
        cmd = [imageio_ffmpeg.get_ffmpeg_exe(), "-hide_banner", "-loglevel", "error", "-y", *args]
        subprocess.run(cmd, check=True, timeout=60)

    files["audio"] = folder / "audio.mp4"
    run("-f", "lavfi", "-i", "sine=frequency=440:duration=1", "-c:a", "aac", str(files["audio"]))
    files["ten_minutes"] = folder / "ten_minutes.mp4"
    run("-f", "lavfi", "-i", "color=c=gray:size=32x32:rate=5", "-t", "600", "-c:v", "libx264", "-preset", "ultrafast",
        "-crf", "51", "-pix_fmt", "yuv420p", str(files["ten_minutes"]))
    return files


def _jpeg_bytes(path: Path) -> bytes:
    import io

    from PIL import Image

    buffer = io.BytesIO()
    Image.open(path).convert("RGB").save(buffer, "JPEG", quality=90)
    return buffer.getvalue()


#: Request kinds: (endpoint, photo key, clip key, expected error regex or None for a good request).
KINDS = {
    "create": ("/create_avatar", "photo", None, None),
    "animate": ("/animate", "photo", "clip", None),
    "no_face": ("/create_avatar", "no_face", None, r"No face found"),
    "text_jpg": ("/create_avatar", "text_jpg", None, r"not a readable image"),
    "truncated": ("/create_avatar", "truncated", None, r"corrupt or truncated|not a readable image"),
    "bomb": ("/create_avatar", "bomb", None, r"Mpx|too large"),
    "long_clip": ("/animate", "photo", "long_clip", r"at most 20 s"),
    "audio": ("/animate", "photo", "audio", r"no video stream"),
    "ten_minutes": ("/animate", "photo", "ten_minutes", r"600 s long"),
}
#: One cycle of the request mix: half good, half hostile.
MIX = ["create", "no_face", "animate", "text_jpg", "create", "bomb", "animate", "long_clip", "create", "truncated",
       "animate", "audio", "create", "ten_minutes"]


def _call(url: str, files: dict[str, Path], kind: str, frames: int, size: int, clients: dict) -> dict:
    from gradio_client import Client, handle_file

    endpoint, photo_key, clip_key, expected = KINDS[kind]
    client = clients.get(threading.get_ident())
    if client is None:  # one client (one session) per worker thread
        client = clients[threading.get_ident()] = Client(url, verbose=False)
    start = time.perf_counter()
    try:
        if endpoint == "/create_avatar":
            result = client.predict(handle_file(str(files[photo_key])), frames, size, 0.0, api_name=endpoint)
            ok = Path(result[0]["video"] if isinstance(result[0], dict) else result[0]).is_file() and Path(result[2]).is_file()
        else:
            result = client.predict(handle_file(str(files[photo_key])), handle_file(str(files[clip_key])), "relative", size,
                                    api_name=endpoint)
            ok = Path(result["video"] if isinstance(result, dict) else result).is_file()
        error = None
    except Exception as err:  # the client raises the app's gr.Error message
        ok, error = False, str(err)
    seconds = time.perf_counter() - start
    if expected is None:
        outcome = "ok" if ok else "good request failed"
    else:
        outcome = "refused" if error is not None and re.search(expected, error) else "bad request not refused properly"
    return {"kind": kind, "seconds": seconds, "outcome": outcome, "error": error}


def _percentile(values: list[float], q: float) -> float:
    return float(np.percentile(values, q)) if values else float("nan")


def run_load(sessions: int = 8, requests: int = 56, resolution: int = 32, size: int = 64, frames: int = 2,
             time_limit_s: float = 900.0, log=print) -> dict:
    """Serve the app in a subprocess, run the load and return the measurements (see the module docstring)."""
    port = free_port()
    url = f"http://127.0.0.1:{port}/"
    with tempfile.TemporaryDirectory(prefix="fhavatar-load-") as tmp:
        folder = Path(tmp)
        files = make_inputs(folder)
        server_log = open(folder / "server.log", "w")  # closed in `finally`
        env = {**os.environ, **ENV, "PYTHONPATH": str(ROOT)}
        server = subprocess.Popen([sys.executable, str(ROOT / "app.py"), "--host", "127.0.0.1", "--port", str(port),
                                   "--resolution", str(resolution)], cwd=ROOT, env=env, stdout=server_log,
                                  stderr=subprocess.STDOUT)
        try:
            deadline = time.monotonic() + 300
            while True:
                try:
                    urllib.request.urlopen(url, timeout=5).read(1)
                    break
                except OSError:
                    if server.poll() is not None or time.monotonic() > deadline:
                        raise RuntimeError(f"the app did not start:\n{(folder / 'server.log').read_text()[-3000:]}") from None
                    time.sleep(0.5)
            clients: dict = {}
            started = time.perf_counter()
            warmup = [_call(url, files, kind, frames, size, clients) for kind in ("create", "animate", "no_face")]
            log("warm-up: " + ", ".join(f"{r['kind']} {r['seconds']:.1f} s ({r['outcome']})" for r in warmup))
            rss_before = _rss_mb(server.pid)
            peak = [rss_before]
            stop = threading.Event()

            def sample() -> None:
                while not stop.wait(0.25):
                    try:
                        peak.append(_rss_mb(server.pid))
                    except (OSError, RuntimeError):
                        return

            sampler = threading.Thread(target=sample, daemon=True)
            sampler.start()
            jobs = [MIX[i % len(MIX)] for i in range(requests)]
            soak_start = time.perf_counter()
            results, rss_rounds = [], []
            # Two rounds: memory that keeps growing in the second round as much as in the first is a leak; a first-round
            # rise that stops is warm-up (allocator arenas of the worker threads, caches that reached their size).
            for half in (jobs[: len(jobs) // 2], jobs[len(jobs) // 2:]):
                with ThreadPoolExecutor(sessions) as pool:
                    futures = [pool.submit(_call, url, files, kind, frames, size, clients) for kind in half]
                    results += [f.result(timeout=max(1.0, time_limit_s - (time.perf_counter() - started))) for f in futures]
                time.sleep(1.0)
                rss_rounds.append(_rss_mb(server.pid))
            soak_s = time.perf_counter() - soak_start
            stop.set()
            sampler.join()
            rss_after = rss_rounds[-1]
            status = json.loads(urllib.request.urlopen(url + "gradio_api/queue/status", timeout=10).read())
        finally:
            server.terminate()
            try:
                server.wait(timeout=20)
            except subprocess.TimeoutExpired:
                server.kill()
            server_log.close()
    good = [r for r in results if KINDS[r["kind"]][3] is None]
    bad = [r for r in results if KINDS[r["kind"]][3] is not None]
    latency = {kind: [r["seconds"] for r in results if r["kind"] == kind] for kind in KINDS}
    return {
        "sessions": sessions, "requests": len(results), "good": len(good), "bad": len(bad),
        "good_ok": sum(r["outcome"] == "ok" for r in good), "bad_refused": sum(r["outcome"] == "refused" for r in bad),
        "failures": [r for r in results if r["outcome"] not in ("ok", "refused")],
        "p50_s": _percentile([r["seconds"] for r in results], 50), "p95_s": _percentile([r["seconds"] for r in results], 95),
        "latency_by_kind": {k: (_percentile(v, 50), _percentile(v, 95), len(v)) for k, v in latency.items() if v},
        "soak_s": soak_s, "rss_before_mb": rss_before, "rss_peak_mb": max(peak), "rss_after_mb": rss_after,
        "rss_rounds_mb": rss_rounds,
        "queue_size_after": status.get("queue_size"), "warmup": warmup,
    }


def report(m: dict) -> str:
    lines = [
        f"requests: {m['requests']} from {m['sessions']} concurrent sessions in {m['soak_s']:.1f} s "
        f"({m['good']} good, {m['bad']} hostile)",
        f"failures: {m['good'] - m['good_ok']} good requests failed; {m['bad_refused']}/{m['bad']} hostile requests "
        f"refused with their own error ({m['bad'] - m['bad_refused']} not)",
        f"latency (queue wait included): p50 {m['p50_s']:.2f} s, p95 {m['p95_s']:.2f} s",
    ]
    for kind, (p50, p95, n) in m["latency_by_kind"].items():
        lines.append(f"  {kind:12s} n={n:3d}  p50 {p50:6.2f} s  p95 {p95:6.2f} s")
    lines += [
        f"server RSS: {m['rss_before_mb']:.0f} MB before (after warm-up), {m['rss_peak_mb']:.0f} MB peak, "
        f"{m['rss_after_mb']:.0f} MB after ({m['rss_after_mb'] - m['rss_before_mb']:+.0f} MB); growth per round of "
        f"{m['requests'] // 2} requests: {m['rss_rounds_mb'][0] - m['rss_before_mb']:+.0f} MB, then "
        f"{m['rss_rounds_mb'][1] - m['rss_rounds_mb'][0]:+.0f} MB",
        f"queue drained: {'yes' if m['queue_size_after'] == 0 else 'no'} (queue size after the soak: {m['queue_size_after']})",
    ]
    lines += [f"  FAILURE {f['kind']}: {f['outcome']}: {str(f['error'])[:200]}" for f in m["failures"]]
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sessions", type=int, default=8, help="concurrent gradio_client sessions")
    parser.add_argument("--requests", type=int, default=56, help="requests in the soak (half good, half hostile)")
    parser.add_argument("--resolution", type=int, default=32, help="UV atlas K of the served built-in default")
    parser.add_argument("--size", type=int, default=64, help="render resolution asked for (the app allows 64-512)")
    parser.add_argument("--frames", type=int, default=2, help="orbit frames per /create_avatar request")
    parser.add_argument("--time-limit", type=float, default=900.0, help="seconds the whole run may take")
    args = parser.parse_args()
    for key, value in ENV.items():
        os.environ.setdefault(key, value)
    metrics = run_load(args.sessions, args.requests, args.resolution, args.size, args.frames, args.time_limit)
    print(report(metrics))
    return 0 if not metrics["failures"] and metrics["queue_size_after"] == 0 else 1


if __name__ == "__main__":
    raise SystemExit(main())
