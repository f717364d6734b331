"""`python -m fhavatar PHOTO [--driving VIDEO]`: photo -> avatar.ply, front.png, orbit.mp4 (and reenact.mp4).

Runs `FHAvatarPipeline` (the built-in default, or `--model DIR_OR_REPO`) on the CPU or a GPU and writes into
`--out` (default `out/`):

- `avatar.ply`: the avatar as a standard 3DGS PLY (any Gaussian-splatting viewer opens it);
- `front.png`: the avatar rendered from the photo's camera;
- `orbit.mp4`: a 360° orbit (`--frames` frames, 24 fps);
- `reenact.mp4` (with `--driving`): the avatar re-enacting the clip, side by side with it, at the clip's fps.

Failures on user input (missing files, no face, bad options) print one line and exit with status 2.

Example:
    ```sh
    python -m fhavatar photo.jpg --driving clip.mp4 --out out --frames 72 --size 512
    ```
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import time
from collections.abc import Sequence
from pathlib import Path

import torch

from .io import checked_file, read_video, save_image, side_by_side, write_video

#: Frame rate of the orbit video.
ORBIT_FPS = 24.0
#: Exit status for user errors (bad paths, no face, invalid options), as argparse uses.
USER_ERROR = 2

logger = logging.getLogger("fhavatar")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m fhavatar", description=__doc__.splitlines()[0])
    parser.add_argument("photo", type=Path, help="portrait photo (jpg, png, ...)")
    parser.add_argument("--driving", type=Path, default=None, help="driving video (mp4, mov, webm, ...)")
    parser.add_argument("--out", type=Path, default=Path("out"), help="output folder (default: out)")
    parser.add_argument("--model", default=None, help="save_pretrained folder or Hub repo id (default: built-in)")
    parser.add_argument("--frames", type=int, default=72, help="frames of the 360° orbit (default: 72)")
    parser.add_argument("--size", type=int, default=512, help="square render size in pixels (default: 512)")
    parser.add_argument("--mode", choices=("relative", "absolute"), default="relative",
                        help="motion transfer (default: relative)")
    parser.add_argument("--driving-frames", type=int, default=None, help="re-enact only the first N driving frames")
    parser.add_argument("--resolution", type=int, default=256, help="UV atlas size K of the built-in model (default: 256)")
    parser.add_argument("--device", default=None, help="torch device (default: cuda if available, else cpu)")
    parser.add_argument("--quiet", action="store_true", help="no progress bars")
    return parser


def run(args: argparse.Namespace) -> dict[str, Path]:
    """Run the pipeline for parsed `args` and write the outputs; returns their paths."""
    checked_file(args.photo, "photo")
    if args.driving is not None:
        checked_file(args.driving, "driving video")
    # Imported here, after the file checks: the pipeline pulls in diffusers (seconds), which `--help` never needs.
    from .pipeline_fhavatar import MAX_ORBIT_FRAMES, MAX_RENDER_SIDE, MIN_RENDER_SIDE, FHAvatarPipeline

    if not MIN_RENDER_SIDE <= args.size <= MAX_RENDER_SIDE or not 1 <= args.frames <= MAX_ORBIT_FRAMES:
        raise ValueError(f"--size must be in [{MIN_RENDER_SIDE}, {MAX_RENDER_SIDE}] and --frames in [1, {MAX_ORBIT_FRAMES}], "
                         f"got {args.size} and {args.frames}.")
    if args.driving_frames is not None and args.driving_frames < 1:
        raise ValueError(f"--driving-frames must be >= 1, got {args.driving_frames}.")
    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    if args.model is None:
        pipe = FHAvatarPipeline.default(resolution=args.resolution)
    else:
        pipe = FHAvatarPipeline.from_pretrained(args.model)
    pipe = pipe.to(device)
    pipe.set_progress_bar_config(disable=args.quiet, leave=False)

    driving, fps = None, None
    if args.driving is not None:
        driving, fps = read_video(args.driving, max_frames=args.driving_frames)
    out = pipe(args.photo, driving_video=driving, num_orbit_frames=args.frames, height=args.size, width=args.size,
               mode=args.mode, output_type="np")
    args.out.mkdir(parents=True, exist_ok=True)
    paths = {
        "avatar": out.avatar.save_ply(args.out / "avatar.ply"),
        "front": save_image(out.front_image, args.out / "front.png"),
        "orbit": write_video(args.out / "orbit.mp4", list(out.orbit_frames), fps=ORBIT_FPS),
    }
    if driving is not None:
        pairs = [side_by_side(frame, clip) for frame, clip in zip(out.frames, driving)]
        paths["reenact"] = write_video(args.out / "reenact.mp4", pairs, fps=fps)
    return paths


def main(argv: Sequence[str] | None = None) -> int:
    os.environ.setdefault("GLOG_minloglevel", "2")  # MediaPipe's native logging
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(message)s")
    start = time.perf_counter()
    try:
        paths = run(args)
    except KeyboardInterrupt:
        sys.stderr.write("fhavatar: interrupted\n")
        return 130
    except (ValueError, TypeError, OSError) as err:  # user errors: one line, no traceback
        reason = " ".join(str(err).split()) or type(err).__name__
        sys.stderr.write(f"fhavatar: error: {reason}\n")
        return USER_ERROR
    sys.stdout.write(f"FHAvatar: done in {time.perf_counter() - start:.1f} s\n")
    for name, path in paths.items():
        sys.stdout.write(f"  {name:8s} {path}\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
