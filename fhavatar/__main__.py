"""`python -m fhavatar PHOTO [--driving VIDEO | --motion NAME]`: photo -> avatar.ply, front.png, orbit.mp4 (+ a video).

Runs `FHAvatarPipeline` (the built-in default, or `--model DIR_OR_REPO`) on the CPU or a GPU and writes into
`--out` (default `out/`):

- `avatar.ply`: the avatar as a standard 3DGS PLY (any Gaussian-splatting viewer opens it);
- `front.png`: the avatar rendered from the photo's camera;
- `orbit.mp4`: a 360° orbit (`--frames` frames, 24 fps);
- `reenact.mp4` (with `--driving`): the avatar re-enacting the clip, side by side with it, at the clip's fps;
- `motion.mp4` (with `--motion NAME`, instead of a clip): the avatar performing a built-in motion at 25 fps
  (`fhavatar.motions`: talk, smile, nod, shake, look_around, blink).

Limits: `--frames` 1-3600, `--size` 16-4096, at most 3000 driving frames (`--driving-frames` picks the start of a
longer clip). Every frame is written to the H.264 encoder as soon as it is rendered, so the orbit costs the same
memory at 3600 frames as at 1 (under 4 GB at `--frames 3600 --size 4096`: benchmarks/memory_bench.py `--cli`).
Before any work starts, the photo, the clip (probed, not decoded: length and size from its header and packets) and
the output folder are checked, and the memory the run needs is estimated and compared with what is free; driving
clips are decoded at most 720 pixels a side. Failures on user input (missing files, no face, bad options, too
little memory) print one line naming the flag and exit with status 2.

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

from .io import checked_file, read_video, save_image, side_by_side, video_info, write_video
from .motions import FPS as MOTION_FPS
from .motions import MOTIONS
from .rendering import Camera

#: Frame rate of the orbit video.
ORBIT_FPS = 24.0
#: Exit status for user errors (bad paths, no face, invalid options), as argparse uses.
USER_ERROR = 2
#: The files written into `--out`.
OUTPUT_NAMES = ("avatar.ply", "front.png", "orbit.mp4", "reenact.mp4", "motion.mp4")
#: The CLI's words for the Python argument names that the library's errors quote.
CLI_NAMES = {
    "`image`": "photo",
    "`driving_video`": "--driving",
    "`frames_or_path`": "--driving",
    "`num_driving_frames`": "--driving-frames",
    "`max_frames`": "--driving-frames",
    "`num_orbit_frames`": "--frames",
    "`num_frames`": "--frames",
    "`height`": "--size",
    "`width`": "--size",
    "`mode`": "--mode",
    "`resolution`": "--resolution",
    "`pretrained_model_name_or_path`": "--model",
}

logger = logging.getLogger("fhavatar")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m fhavatar", description=__doc__.splitlines()[0])
    parser.add_argument("photo", type=Path, help="portrait photo (jpg, png, ...)")
    motion = parser.add_mutually_exclusive_group()
    motion.add_argument("--driving", type=Path, default=None, help="driving video (mp4, mov, webm, ...)")
    motion.add_argument("--motion", choices=tuple(MOTIONS), default=None,
                        help="a built-in motion instead of a driving video: writes motion.mp4 (25 fps)")
    parser.add_argument("--out", type=Path, default=Path("out"), help="output folder (default: out)")
    parser.add_argument("--model", default=None, help="save_pretrained folder or Hub repo id (default: built-in)")
    parser.add_argument("--frames", type=int, default=72, help="frames of the 360° orbit, 1-3600 (default: 72)")
    parser.add_argument("--size", type=int, default=512, help="square render size in pixels, 16-4096 (default: 512)")
    parser.add_argument("--mode", choices=("relative", "absolute"), default="relative",
                        help="motion transfer (default: relative)")
    parser.add_argument("--driving-frames", type=int, default=None,
                        help="re-enact only the first N driving frames (at most 3000)")
    parser.add_argument("--resolution", type=int, default=256, help="UV atlas size K of the built-in model (default: 256)")
    parser.add_argument("--device", default=None, help="torch device (default: cuda if available, else cpu)")
    parser.add_argument("--quiet", action="store_true", help="no progress bars")
    return parser


def check_out_folder(out: Path) -> Path:
    """`--out` can take the outputs: an existing writable folder, or one that can be made in a writable folder, and
    none of `OUTPUT_NAMES` in it is a folder. Nothing is created (a refused run leaves no folder behind)."""
    try:
        exists, is_dir = out.exists(), out.is_dir()
    except OSError as err:  # a name longer than the file system allows
        raise ValueError(f"--out {str(out)[:200]!r} is not a usable path ({err.strerror or err}).") from err
    if exists and not is_dir:
        raise ValueError(f"--out {str(out)!r} is a file; give a folder (it is created when missing).")
    parent = out.absolute()
    while not parent.exists():
        parent = parent.parent
    if not parent.is_dir():
        raise ValueError(f"--out {str(out)!r}: {str(parent)!r} is a file, so no folder can be made inside it.")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise ValueError(f"--out {str(out)!r}: no permission to write in {str(parent)!r}.")
    for name in OUTPUT_NAMES:
        if (out / name).is_dir():
            raise ValueError(f"--out {str(out)!r} holds a folder named {name}, where that output file goes.")
    return out


def _device(name: str | None) -> str:
    if name is None:
        return "cuda" if torch.cuda.is_available() else "cpu"
    try:
        device = torch.device(name)
    except (RuntimeError, TypeError) as err:
        raise ValueError(f"--device {name!r} is not a torch device (cpu, cuda, cuda:1, mps, ...).") from err
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"--device {name!r}: CUDA is not available on this machine (use --device cpu).")
    return name


def _check_options(args: argparse.Namespace, limits) -> None:
    if not limits.MIN_RENDER_SIDE <= args.size <= limits.MAX_RENDER_SIDE:
        raise ValueError(f"--size must be in [{limits.MIN_RENDER_SIDE}, {limits.MAX_RENDER_SIDE}], got {args.size}.")
    if not 1 <= args.frames <= limits.MAX_ORBIT_FRAMES:
        raise ValueError(f"--frames must be in [1, {limits.MAX_ORBIT_FRAMES}], got {args.frames}.")
    if args.driving_frames is not None and not 1 <= args.driving_frames <= limits.MAX_DRIVING_FRAMES:
        raise ValueError(f"--driving-frames must be in [1, {limits.MAX_DRIVING_FRAMES}], got {args.driving_frames}.")


def _probe_driving(args: argparse.Namespace, limits) -> tuple[int, tuple[int, int]]:
    """`(frames to re-enact, their decoded size)` of `--driving`, from its header and packets (nothing decoded)."""
    info = video_info(args.driving)
    if args.driving_frames is None and info.num_frames > limits.MAX_DRIVING_FRAMES:
        raise ValueError(f"--driving {str(args.driving)!r} has {info.num_frames} frames ({info.duration:.0f} s at "
                         f"{info.fps:g} fps); at most {limits.MAX_DRIVING_FRAMES} are re-enacted. Pass --driving-frames N "
                         f"(N <= {limits.MAX_DRIVING_FRAMES}) to re-enact its first N frames.")
    count, size = min(info.num_frames, args.driving_frames or info.num_frames), limits.driving_size(info.width, info.height)
    limits.check_decoded(count, size)
    return count, size


def _check_memory(args: argparse.Namespace, limits, driving: tuple[int, tuple[int, int]] | None) -> None:
    """Refuse, with the figures, a run whose peak memory estimate exceeds the memory available now."""
    size = args.size
    needed = limits.stream_memory(size, size)
    what = f"This run (--size {size}"
    if driving is not None:
        count, (w, h) = driving
        encoded = size + max(2, round(w * size / h))  # the render beside the clip, at the render's height
        needed = max(needed, limits.stream_memory(size, size, encoded, limits.driving_memory(count, (w, h))))
        what += f", {count} frames of --driving"
    limits.check_memory(needed, what + ")", "Use a smaller --size" + (" or fewer --driving-frames." if driving else "."))


def run(args: argparse.Namespace) -> dict[str, Path]:
    """Check everything the run needs, then run the pipeline for parsed `args`, writing each output as it comes."""
    checked_file(args.photo, "photo")
    if args.driving is not None:
        checked_file(args.driving, "--driving")
    out = check_out_folder(args.out)
    device = _device(args.device)
    # Imported here, after the cheap checks: the pipeline pulls in diffusers (seconds), which `--help` never needs.
    from . import pipeline_inputs as limits

    with limits.reworded(CLI_NAMES):
        _check_options(args, limits)
        driving = _probe_driving(args, limits) if args.driving is not None else None
        _check_memory(args, limits, driving)
        return _write_outputs(args, out, device, driving, limits)


def _write_outputs(args: argparse.Namespace, out: Path, device: str, driving, limits) -> dict[str, Path]:
    """Build the pipeline and the avatar, then write each output; videos are encoded frame by frame as rendered."""
    from .pipeline_fhavatar import FHAvatarPipeline

    if args.model is None:
        pipe = FHAvatarPipeline.default(resolution=args.resolution)
    else:
        pipe = FHAvatarPipeline.from_pretrained(args.model)
    pipe = pipe.to(device)
    pipe.set_progress_bar_config(disable=args.quiet, leave=False)
    avatar = pipe.reconstruct(args.photo)
    size = args.size
    out.mkdir(parents=True, exist_ok=True)
    paths = {"avatar": avatar.save_ply(out / "avatar.ply")}
    paths["front"] = save_image(next(pipe.render_views(avatar, avatar.source_track.camera, size, size)), out / "front.png")
    cameras = Camera.orbit(args.frames, elevation_deg=pipe.config.orbit_elevation)
    paths["orbit"] = write_video(out / "orbit.mp4", pipe.render_views(avatar, cameras, size, size), fps=ORBIT_FPS)
    if driving is not None:
        frames, fps = read_video(args.driving, max_frames=driving[0], max_side=limits.MAX_DRIVING_SIDE)
        tracks, _ = pipe.track_driving(frames)
        renders = pipe.iter_animate(avatar, tracks, mode=args.mode, height=size, width=size)
        pairs = (side_by_side(render.permute(1, 2, 0).numpy(), clip) for render, clip in zip(renders, frames))
        paths["reenact"] = write_video(out / "reenact.mp4", pairs, fps=fps)
    if args.motion is not None:
        renders = pipe.iter_animate(avatar, motion=args.motion, height=size, width=size)
        paths["motion"] = write_video(out / "motion.mp4", renders, fps=MOTION_FPS)
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
