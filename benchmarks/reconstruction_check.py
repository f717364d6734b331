"""The reconstruction self-check's figures (`fhavatar.reconstruction_check`) on the shared photos and hostile variants.

For every photo in ../shared/data/realfaces (and examples/astronaut.png) and, made from each in memory, the photo
turned 90°, 180° and 270°, and a tight crop in which the face fills the frame (`--tight`: the crop's side is this
fraction of the face landmarks' bounding box, 0.88 by default: the face covers ~98 % of the image), plus two drawn
smileys: reconstruct with the built-in default and print what the check measured (`Avatar.check_figures`) or the
error it refused with, the photo -> avatar time, and the time of the check's always-run steps (the detector scores
of the crop upright and turned, the texture figures) measured again on the result. The bounds of
`fhavatar.reconstruction_check` were chosen from these figures.

    OMP_NUM_THREADS=1 NUMBA_NUM_THREADS=1 PYTHONPATH=. .venv/bin/python benchmarks/reconstruction_check.py \
        [--resolution 256] [--only p01] [--no-variants]

(One thread per library on a busy machine, as `run_all.py` does, or the times mean nothing.)
"""

from __future__ import annotations

import argparse
import math
import time
from pathlib import Path

import numpy as np

from fhavatar import FHAvatarPipeline
from fhavatar.io import load_image
from fhavatar.reconstruction_check import detector_scores, face_agreement
from fhavatar.rendering import render_gaussians
from tests.hostile.drawn_photos import smiley, tight_crop

ROOT = Path(__file__).resolve().parents[1]
PHOTOS = ROOT.parent / "shared" / "data" / "realfaces"


def variants(path: Path, tight: float, with_variants: bool):
    photo = load_image(path)
    yield path.stem[:3] if path.stem.startswith("p0") else path.stem[:5], photo
    if with_variants:
        for turns in (1, 2, 3):
            yield f"  rot{90 * turns}", np.ascontiguousarray(np.rot90(photo, turns))
        yield f"  tight{tight:g}", tight_crop(photo, tight)


def row(name: str, pipe: FHAvatarPipeline, photo: np.ndarray) -> str:
    start = time.perf_counter()
    try:
        avatar = pipe.reconstruct(photo)
    except ValueError as error:
        figures = getattr(error, "figures", None)
        return f"{name:<10s} REFUSED {time.perf_counter() - start:4.1f} s  {figures}\n{'':10s} {error}"
    seconds = time.perf_counter() - start
    f, track = avatar.check_figures, avatar.source_track
    t0 = time.perf_counter()
    detector_scores(track.image)
    t1 = time.perf_counter()
    render = render_gaussians(avatar.gaussians(), track.camera, 128, 128)
    t2 = time.perf_counter()
    face_agreement(render.image[0], render.alpha[0, 0], track.image, track.landmarks)
    t3 = time.perf_counter()

    def number(value, spec):
        return "  -  " if value is None or (isinstance(value, float) and math.isnan(value)) else format(value, spec)

    dlib = "-" if f.dlib_upright is None else f"{'Y' if f.dlib_upright else 'n'}/{'Y' if f.dlib_turned else 'n'}"
    if f.turned:  # what made the check turn it: the photo as given
        g = f.before_turn
        first = "-" if g.dlib_upright is None else f"{'Y' if g.dlib_upright else 'n'}/{'Y' if g.dlib_turned else 'n'}"
        name += (f"\n{'':10s} as given: detector {g.upright_score:.2f}/{g.turned_score:.2f} (turned-upright "
                 f"{g.turned_score - g.upright_score:+.2f}) dlib {first}; turned 180°:\n{'':10s}")
    return (f"{name:<10s} ok {seconds:4.1f} s  matte {number(f.matte_coverage, '.2f')} photo matte "
            f"{number(f.photo_matte_coverage, '.2f')} used {f.matte:<5s} detector {f.upright_score:.2f}/"
            f"{f.turned_score:.2f} (turned-upright {f.turned_score - f.upright_score:+.2f}) dlib {dlib:<3s} "
            f"turned {'yes' if f.turned else 'no ':3s} face {f.face_psnr:4.1f} dB corr {f.face_correlation:.2f}  "
            f"check: detector {1000 * (t1 - t0):3.0f} ms, texture figures {1000 * (t3 - t2):3.0f} ms "
            f"(+ the render, shared with the bust: {1000 * (t2 - t1):3.0f} ms)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--resolution", type=int, default=256, help="UV atlas size K")
    parser.add_argument("--tight", type=float, default=0.88, help="tight crop: fraction of the face landmarks' box")
    parser.add_argument("--only", default=None, help="only photos whose name starts with this")
    parser.add_argument("--no-variants", action="store_true", help="the photos only (no turned / cropped variants)")
    args = parser.parse_args()
    pipe = FHAvatarPipeline.default(resolution=args.resolution)
    pipe.set_progress_bar_config(disable=True)
    paths = sorted(PHOTOS.glob("p0*")) + [ROOT / "examples" / "astronaut.png"]
    for path in paths:
        if args.only and not path.name.startswith(args.only):
            continue
        for name, photo in variants(path, args.tight, not args.no_variants):
            print(row(name, pipe, photo), flush=True)
    if not args.only and not args.no_variants:
        for background in ((255, 255, 255), (90, 120, 160)):
            print(row(f"smiley{background[0]}", pipe, smiley(512, background)), flush=True)


if __name__ == "__main__":
    main()
