"""Tracking benchmark on the real test material (../shared/data/realfaces).

Prints Face Mesh landmark speed in frames/s on the driving videos v01/v02 in video (tracking) mode, and the
per-photo latency in image (static) mode with the faces found, the face box and the crop. Optionally writes a
contact sheet of the aligned 512² crops (downscaled) with the landmarks drawn.

    PYTHONPATH=. .venv/bin/python benchmarks/tracking_bench.py [--repeats 5] [--contact-sheet docs/tracking_crops.png]
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from fhavatar.io import load_image, read_video
from fhavatar.tracking import FaceLandmarker, NoFaceError, compute_crop

REALFACES = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "realfaces"


def _video_fps(path: Path) -> tuple[int, float, float]:
    """(frames, landmark fps in video mode, landmark fps in image mode) for one clip (decoding excluded)."""
    frames, _ = read_video(path)
    rates = []
    for mode in ("video", "image"):
        with FaceLandmarker(mode=mode) as landmarker:
            landmarker.detect(frames[0])  # graph creation is not timed
            landmarker.reset()
            start = time.perf_counter()
            for frame in frames:
                landmarker.detect(frame)
            rates.append(len(frames) / (time.perf_counter() - start))
    return len(frames), rates[0], rates[1]


def _draw_tile(crop: np.ndarray, landmarks: np.ndarray, size: int) -> Image.Image:
    """A `size`² thumbnail of a 512² crop with its landmarks (face in green, irises in red)."""
    tile = Image.fromarray(crop).resize((size, size), Image.Resampling.LANCZOS)
    draw = ImageDraw.Draw(tile)
    points = landmarks[:, :2] * size / crop.shape[0]
    for i, (x, y) in enumerate(points):
        colour = (255, 40, 40) if i >= 468 else (40, 255, 80)
        draw.point((float(x), float(y)), fill=colour)
    return tile


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=REALFACES, help="folder with p0*.jpg/png photos and v0*.mp4 videos")
    parser.add_argument("--repeats", type=int, default=5, help="timed detections per photo (median reported)")
    parser.add_argument("--contact-sheet", type=Path, default=None, help="write the aligned crops here (PNG)")
    parser.add_argument("--tile", type=int, default=128, help="contact-sheet tile size in pixels")
    args = parser.parse_args()
    if not args.data.is_dir():
        raise SystemExit(f"test material not found: {args.data}")

    print("Face Mesh (refine_landmarks, 478 points), CPU; decoding excluded")
    for video in sorted(args.data.glob("v0*.mp4")):
        count, video_rate, image_rate = _video_fps(video)
        print(f"{video.name[:40]:40s} {count:4d} frames   video mode {video_rate:6.1f} fps   image mode {image_rate:6.1f} fps")

    tiles = []
    with FaceLandmarker(mode="image") as landmarker:
        for photo in sorted(args.data.glob("p0*")):
            image = load_image(photo)
            try:
                landmarker.detect(image)  # the first call also creates the graphs
                times = []
                for _ in range(args.repeats):
                    start = time.perf_counter()
                    result = landmarker.detect(image)
                    times.append((time.perf_counter() - start) * 1000)
            except NoFaceError as err:
                print(f"{photo.name[:40]:40s} FAILED: {err}")
                continue
            crop = compute_crop(result.landmarks, result.image_size)
            box = ", ".join(f"{v:.0f}" for v in result.face_box)
            print(
                f"{photo.name[:40]:40s} {image.shape[1]:4d}x{image.shape[0]:<4d} {statistics.median(times):6.1f} ms   "
                f"faces {result.num_faces}   box ({box})   score {result.score:.2f}   "
                f"crop side {crop.side:.0f} px, roll {np.degrees(crop.roll):+.1f}°"
            )
            tiles.append(_draw_tile(crop.warp(image), crop.apply(result.landmarks), args.tile))

    if args.contact_sheet is not None and tiles:
        sheet = Image.new("RGB", (args.tile * len(tiles), args.tile), "white")
        for i, tile in enumerate(tiles):
            sheet.paste(tile, (i * args.tile, 0))
        args.contact_sheet.parent.mkdir(parents=True, exist_ok=True)
        sheet.save(args.contact_sheet)
        print(f"contact sheet: {args.contact_sheet}")


if __name__ == "__main__":
    main()
