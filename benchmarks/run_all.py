"""Run every benchmark script (`make bench`) and write benchmarks/RESULTS.md with the machine description.

Each script runs alone in a subprocess with the cheap settings below (so the whole run fits `--budget` seconds,
10 minutes by default on a laptop-class CPU); its printed figures are copied verbatim into RESULTS.md together
with the command, the wall time and the exit status. A script that would exceed the remaining budget is stopped
and marked as such. Scripts that are too slow for `make bench`, or that write derived images of licensed photos,
are listed with the command to run them separately.

Threads. On a busy machine (load average above the core count: other processes compete for the cores) torch's
and numba's worker threads spin against those processes and small tensor operations become up to ~100x slower
(measured here: an 88K-row elementwise op, 148 ms with 2 threads vs 1.3 ms with 1, at load 9 on 2 cores). So
`--threads auto` (the default) runs the scripts with 1 intra-op thread (OMP/MKL/NUMBA_NUM_THREADS=1) when the
machine is overloaded and with the libraries' defaults otherwise; RESULTS.md records which.

    PYTHONPATH=. .venv/bin/python benchmarks/run_all.py [--budget 570] [--threads auto|N|default] [--only reenact_bench]
"""

from __future__ import annotations

import argparse
import datetime
import os
import platform
import re
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent

#: Scripts run by `make bench`, in order, with their cheap settings and a cap on their wall time (seconds).
SCRIPTS: tuple[tuple[str, tuple[str, ...], int], ...] = (
    ("render_bench.py", ("--repeats", "3"), 150),
    ("reenact_bench.py", ("--repeats", "3", "--frames", "24"), 240),
    ("app_latency_bench.py", ("--repeats", "3", "--orbit", "12", "--size", "256", "--frames", "12"), 200),
    ("memory_bench.py", ("--frames", "8", "--orbit", "8", "--size", "512"), 120),
    ("pipeline_bench.py", ("--frames", "12", "--clip-frames", "12", "--size", "256"), 150),
    ("tracking_bench.py", ("--repeats", "1", "--video-repeats", "1"), 120),
    ("uv_bench.py", ("--repeats", "3"), 90),
    ("gaussian_counts.py", (), 60),
)
#: Scripts left out of `make bench`, with why and how to run them.
SEPARATE: dict[str, str] = {
    "train_bench.py": "trains the tiny-cpu preset for up to 10 CPU minutes: "
                      "`PYTHONPATH=. .venv/bin/python benchmarks/train_bench.py`",
    "prior_bench.py": "PanoHead prior timings (slow on a CPU): `PYTHONPATH=. .venv/bin/python benchmarks/prior_bench.py`",
    "realface_eval.py": "writes orbit sheets of the licensed shared photos to out/ (minutes): "
                        "`PYTHONPATH=. .venv/bin/python benchmarks/realface_eval.py`",
}
#: Lines of native MediaPipe/TFLite logging and progress bars, dropped from the captured output.
_NOISE = re.compile(r"^(W0000|I0000|E0000|INFO: Created TensorFlow|WARNING: All log messages)|\r|it/s\]|s/it\]")


def machine_description() -> list[str]:
    """CPU model, cores, RAM, load, Python and library versions, GPU."""
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    ram = "unknown"
    try:
        kb = int(next(x for x in Path("/proc/meminfo").read_text().splitlines() if x.startswith("MemTotal")).split()[1])
        ram = f"{kb / 2**20:.1f} GiB"
    except (OSError, StopIteration, ValueError):
        pass
    usable = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    load = ", ".join(f"{v:.2f}" for v in os.getloadavg()) if hasattr(os, "getloadavg") else "n/a"
    versions = []
    for name in ("torch", "numba", "mediapipe", "diffusers", "gradio", "gsplat"):
        try:
            module = __import__(name)
            versions.append(f"{name} {getattr(module, '__version__', '?')}")
        except Exception:  # noqa: BLE001 - a missing or broken optional package is just reported
            versions.append(f"{name} (not installed)")
    gpu = "none"
    try:
        import torch

        if torch.cuda.is_available():
            gpu = f"{torch.cuda.get_device_name()} (CUDA {torch.version.cuda})"
        threads = torch.get_num_threads()
    except Exception:  # noqa: BLE001
        threads = "?"
    return [
        f"- Date: {datetime.datetime.now().astimezone().isoformat(timespec='seconds')}",
        f"- CPU: {cpu}; {os.cpu_count()} logical cores ({usable} usable by this process, torch threads {threads})",
        f"- RAM: {ram}; load average at start (1, 5, 15 min): {load}",
        f"- GPU: {gpu}",
        f"- OS: {platform.platform()}; Python {platform.python_version()}",
        f"- Libraries: {', '.join(versions)}",
    ]


def choose_threads(setting: str) -> int | None:
    """Intra-op threads for the scripts: None keeps the libraries' defaults."""
    if setting == "default":
        return None
    if setting != "auto":
        if not setting.isdigit() or int(setting) < 1:
            raise SystemExit(f"--threads must be 'auto', 'default' or a positive int, got {setting!r}")
        return int(setting)
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else 0.0
    return 1 if load > cores else None


def run_script(name: str, args: tuple[str, ...], timeout: float, threads: int | None = None) -> dict:
    """Run `benchmarks/<name>` with `args`; returns its command, status, wall time and cleaned output."""
    command = [sys.executable, str(HERE / name), *args]
    env = {**os.environ, "PYTHONPATH": str(ROOT), "HF_HUB_OFFLINE": "1", "HF_HUB_DISABLE_TELEMETRY": "1",
           "GRADIO_ANALYTICS_ENABLED": "False", "GLOG_minloglevel": "2", "TF_CPP_MIN_LOG_LEVEL": "3"}
    if threads is not None:
        env.update({key: str(threads) for key in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "NUMBA_NUM_THREADS")})
    start = time.perf_counter()
    try:
        done = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout)
        status, stdout, stderr = done.returncode, done.stdout, done.stderr
    except subprocess.TimeoutExpired as err:
        status = "timeout"
        stdout = err.stdout.decode() if isinstance(err.stdout, bytes) else (err.stdout or "")
        stderr = f"stopped after {timeout:.0f} s (the time left in the budget)"
    lines = [line for line in stdout.splitlines() if line.strip() and not _NOISE.search(line)]
    if status != 0:
        tail = [line for line in (stderr or "").splitlines() if line.strip() and not _NOISE.search(line)][-8:]
        lines += ["--- stderr (last lines) ---", *tail]
    shown_args = " ".join(args)
    prefix = "" if threads is None else f"OMP_NUM_THREADS={threads} NUMBA_NUM_THREADS={threads} "
    return {"name": name, "command": f"{prefix}PYTHONPATH=. .venv/bin/python benchmarks/{name} {shown_args}".strip(),
            "status": status, "seconds": time.perf_counter() - start, "output": lines}


def write_results(path: Path, results: list[dict], skipped: list[tuple[str, str]], machine: list[str], total: float) -> None:
    lines = ["# Benchmark results", "",
             "Written by `make bench` (`benchmarks/run_all.py`); every figure below is a script's own output, run with the",
             "cheap settings shown. Re-run `make bench` to refresh this file on your machine.", "",
             "## Machine", "", *machine, "",
             f"Total wall time: {total:.0f} s.", ""]
    for result in results:
        ok = "ok" if result["status"] == 0 else f"**{result['status']}**"
        lines += [f"## {result['name']}", "", f"`{result['command']}` — {result['seconds']:.0f} s, exit {ok}", "",
                  "```", *result["output"], "```", ""]
    if skipped:
        lines += ["## Not run by `make bench`", ""]
        lines += [f"- `{name}`: {why}" for name, why in skipped]
        lines.append("")
    path.write_text("\n".join(lines))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--budget", type=float, default=570.0, help="seconds for all scripts together (default 570)")
    parser.add_argument("--threads", default="auto", help="intra-op threads: auto (1 when overloaded), default, or N")
    parser.add_argument("--only", nargs="*", default=None, help="script names (with or without .py) to run")
    parser.add_argument("--out", type=Path, default=HERE / "RESULTS.md")
    args = parser.parse_args()
    wanted = None if args.only is None else {n if n.endswith(".py") else f"{n}.py" for n in args.only}
    threads = choose_threads(args.threads)
    machine = machine_description()
    machine.append(f"- Threads per script: {threads if threads is not None else 'library defaults'} (--threads {args.threads})")
    print("\n".join(machine), flush=True)
    start = time.perf_counter()
    results, skipped = [], []
    for name, script_args, cap in SCRIPTS:
        if wanted is not None and name not in wanted:
            continue
        if not (HERE / name).is_file():
            skipped.append((name, "not present in this checkout"))
            continue
        left = args.budget - (time.perf_counter() - start)
        if left < 10:
            skipped.append((name, f"the {args.budget:.0f} s budget was spent: `PYTHONPATH=. .venv/bin/python benchmarks/{name}`"))
            continue
        print(f"\n== {name} {' '.join(script_args)}", flush=True)
        result = run_script(name, script_args, min(cap, left), threads)
        print("\n".join(result["output"]), flush=True)
        print(f"({result['seconds']:.0f} s, exit {result['status']})", flush=True)
        results.append(result)
    known = {name for name, _, _ in SCRIPTS} | {"run_all.py"}
    for path in sorted(HERE.glob("*.py")):
        if path.name in known or path.name.startswith("_") or (wanted is not None and path.name not in wanted):
            continue
        why = SEPARATE.get(path.name)
        if why is None:
            doc = path.read_text().split('"""')[1].strip().splitlines()[0] if '"""' in path.read_text() else path.name
            why = f"{doc} — `PYTHONPATH=. .venv/bin/python benchmarks/{path.name}`"
        skipped.append((path.name, why))
    total = time.perf_counter() - start
    write_results(args.out, results, skipped, machine, total)
    print(f"\nwrote {args.out} ({total:.0f} s)")
    return 0 if all(r["status"] == 0 for r in results) else 1


if __name__ == "__main__":
    raise SystemExit(main())
