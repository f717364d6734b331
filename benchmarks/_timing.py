"""Shared by the benchmark scripts: repeated timing with median and spread, peak memory, the machine's threads."""

from __future__ import annotations

import resource
import statistics
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
REALFACES = ROOT.parent / "shared" / "data" / "realfaces"
#: The public-domain example photo, used when the shared real photos are absent.
EXAMPLE_PHOTO = ROOT / "examples" / "astronaut.png"


@dataclass
class Stats:
    """Seconds of repeated runs: median, min, max, and the interquartile range when there are >= 4 runs."""

    runs: list[float]

    @property
    def median(self) -> float:
        return statistics.median(self.runs)

    def spread(self) -> str:
        runs = sorted(self.runs)
        text = f"min {runs[0]:.3g}, max {runs[-1]:.3g}"
        if len(runs) >= 4:
            q1, _, q3 = statistics.quantiles(runs, n=4)
            text += f", IQR {q3 - q1:.3g}"
        return f"{text}; n={len(runs)}"

    def line(self, label: str, unit: str = "s", per: float | None = None, per_unit: str = "") -> str:
        """`label  median X s (spread)` and, with `per`, the median rate `per / median` in `per_unit`."""
        rate = f"  = {per / self.median:.2f} {per_unit}" if per else ""
        return f"  {label:38s} median {self.median:8.3f} {unit}{rate}  ({self.spread()})"


def repeat(fn, repeats: int, warmup: int = 1) -> tuple[Stats, object]:
    """Call `fn` `warmup` times untimed (numba compilation, caches), then `repeats` times timed."""
    value = None
    for _ in range(warmup):
        value = fn()
    runs = []
    for _ in range(repeats):
        start = time.perf_counter()
        value = fn()
        runs.append(time.perf_counter() - start)
    return Stats(runs), value


def peak_rss_mb() -> float:
    """Peak resident memory of this process so far (Linux reports kilobytes)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def current_rss_mb() -> float:
    """Resident memory now (from /proc; falls back to the peak elsewhere)."""
    try:
        pages = int(Path("/proc/self/statm").read_text().split()[1])
    except (OSError, ValueError, IndexError):
        return peak_rss_mb()
    return pages * resource.getpagesize() / 2**20


def default_photo() -> Path:
    shared = REALFACES / "p07_frontal_woman-smiling-aligned_p4d-zoe.jpg"
    return shared if shared.is_file() else EXAMPLE_PHOTO


def default_clip() -> Path | None:
    shared = REALFACES / "v01_man-expressions-greenscreen_lp-d0.mp4"
    return shared if shared.is_file() else None


def driving_frames(clip: Path | None, photo: Path, count: int) -> list:
    """`count` driving frames: the clip (looped when shorter), or the photo drifting sideways when there is none."""
    import numpy as np

    from fhavatar.io import load_image, read_video

    if clip is not None:
        frames, _ = read_video(clip, max_frames=count)
    else:
        image = load_image(photo, max_side=512)
        frames = [np.roll(image, 2 * i, axis=1) for i in range(min(count, 12))]
    return (frames * (count // len(frames) + 1))[:count]
