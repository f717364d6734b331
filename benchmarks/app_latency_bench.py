"""App end-to-end latency: the Gradio app served on loopback, called through `gradio_client` like a Space visitor.

Launches `app.py`'s real Blocks (queue included) with the built-in default on 127.0.0.1 and times, per request,
upload -> pipeline -> mp4/ply writing -> download of the results:
- `/create_avatar` (photo -> orbit video + front render + .ply),
- `/animate` (photo + driving clip -> side-by-side re-enactment; the avatar of the same photo is re-used).
The same work called directly on `app.AvatarService` (no HTTP, no queue) is timed too, so the difference is the
app's own overhead. Medians and spread over `--repeats` runs after one warm-up request each.

    PYTHONPATH=. .venv/bin/python benchmarks/app_latency_bench.py [--repeats 3] [--orbit 12] [--size 256] [--frames 12]
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import shutil
import sys
import tempfile
from pathlib import Path

from _timing import ROOT, default_clip, default_photo, driving_frames, repeat

from tests.served import free_port

for _key, _value in {"HF_HUB_OFFLINE": "1", "GRADIO_ANALYTICS_ENABLED": "False", "HF_HUB_DISABLE_TELEMETRY": "1"}.items():
    os.environ.setdefault(_key, _value)


def _load_app():
    """`app.py` from the repository root, imported by path (it is a script, not part of the package)."""
    spec = importlib.util.spec_from_file_location("app", ROOT / "app.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # Gradio looks up the module of the app's component classes
    spec.loader.exec_module(module)
    return module


def _no_progress(*args, **kwargs) -> None:
    return None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--photo", type=Path, default=default_photo())
    parser.add_argument("--clip", type=Path, default=default_clip())
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--orbit", type=int, default=12, help="orbit frames of /create_avatar (the app's default: 36)")
    parser.add_argument("--size", type=int, default=256, help="render resolution (the app's default: 384)")
    parser.add_argument("--frames", type=int, default=12, help="frames of the driving clip sent to /animate")
    args = parser.parse_args()
    from gradio_client import Client, handle_file

    from fhavatar.io import write_video

    app = _load_app()
    service = app.AvatarService()
    tmp = Path(tempfile.mkdtemp(prefix="fhavatar-app-bench-"))
    clip = write_video(tmp / "clip.mp4", driving_frames(args.clip, args.photo, args.frames), fps=25)
    print(f"app latency benchmark: built-in default, photo {args.photo.name}, {args.orbit} orbit frames at "
          f"{args.size}², {args.frames}-frame driving clip")

    print("direct calls on app.AvatarService (no HTTP, no queue):")
    create, _ = repeat(lambda: service.create(str(args.photo), args.orbit, args.size, 10.0, "#ffffff",
                                              progress=_no_progress), args.repeats)
    print(create.line("create (photo -> orbit + front + ply)"))
    animate, _ = repeat(lambda: service.animate(str(args.photo), str(clip), "relative", args.size, None,
                                                progress=_no_progress), args.repeats)
    print(animate.line("animate (re-used avatar)", per=args.frames, per_unit="frames/s"))

    port = free_port()
    demo = app.build_demo(service).queue(max_size=app.QUEUE_SIZE, default_concurrency_limit=app.CONCURRENCY_LIMIT)
    demo.launch(server_name="127.0.0.1", server_port=port, prevent_thread_lock=True, quiet=True, show_error=True)
    try:
        client = Client(f"http://127.0.0.1:{port}/", verbose=False)
        photo = handle_file(str(args.photo))
        print(f"through the served app (gradio_client on http://127.0.0.1:{port}, upload and download included):")
        http_create, _ = repeat(lambda: client.predict(photo, args.orbit, args.size, 10.0, api_name="/create_avatar"),
                                args.repeats)
        print(http_create.line("/create_avatar"))
        http_animate, _ = repeat(lambda: client.predict(photo, handle_file(str(clip)), "relative", args.size,
                                                        api_name="/animate"), args.repeats)
        print(http_animate.line("/animate", per=args.frames, per_unit="frames/s"))
    finally:
        demo.close()
        shutil.rmtree(tmp, ignore_errors=True)
    for label, served, direct in (("create", http_create, create), ("animate", http_animate, animate)):
        diff = served.median - direct.median
        noise = max(max(served.runs) - min(served.runs), max(direct.runs) - min(direct.runs))
        verdict = "within the runs' spread: not measurable here" if abs(diff) <= noise else "larger than the spread"
        print(f"app overhead on {label} (served - direct, medians): {diff:+.2f} s ({verdict}, spread {noise:.2f} s)")


if __name__ == "__main__":
    main()
