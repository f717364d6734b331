"""Tests of `training/`. `tiny_synthetic_dataset()` builds one small synthetic dataset per test session."""

from __future__ import annotations

import atexit
import functools
import shutil
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
REALFACES = REPO.parent / "shared" / "data" / "realfaces"
ASTRONAUT = REPO / "examples" / "astronaut.png"
#: Settings of the session's tiny dataset (3 clips x 3 frames at 48 px, 2 prior views; one photo, so clips 1 and 2
#: are re-coloured copies of clip 0's identity).
TINY_SETTINGS = dict(num_clips=3, frames_per_clip=3, resolution=48, photos=[ASTRONAUT], avatar_resolution=64, seed=0)
#: Torch intra-op threads the tiny dataset is made with (a remake must use the same to be byte-identical).
TINY_DATASET_THREADS = 1


@functools.cache
def tiny_synthetic_dataset() -> Path:
    """The session's tiny synthetic dataset (made on first use, deleted at exit). Treat it as read-only: copy it
    (`shutil.copytree`) before changing any file."""
    from tests.threads import torch_threads
    from training.make_synthetic import make_synthetic_dataset

    folder = Path(tempfile.mkdtemp(prefix="fhavatar-tiny-dataset-"))
    atexit.register(shutil.rmtree, folder, ignore_errors=True)
    root = folder / "data"
    # One torch thread, whichever test asks first and whatever the core count: the tracking and avatar floats
    # depend on the thread count, and `test_same_seed_same_dataset_and_cli` remakes clip 0 byte for byte.
    with torch_threads(TINY_DATASET_THREADS):
        make_synthetic_dataset(root, **TINY_SETTINGS)
    return root
