"""Tracking benchmark on the real test material (../shared/data/realfaces).

Prints Face Mesh landmark speed in frames/s on the driving videos v01/v02 in video (tracking) mode, the full
`track_video` speed (landmarks + smoothing + crops + OpenHead fit; decoding timed separately), and per photo the
latency in image (static) mode with the faces found, the face box and the crop, then the `track_image` fit
(pose, reprojection errors). Optionally writes a contact sheet of the aligned 512² crops (downscaled) with the
landmarks drawn, and a sheet of the OpenHead fits (mesh and landmarks over each crop).

    PYTHONPATH=. .venv/bin/python benchmarks/tracking_bench.py [--repeats 5] [--contact-sheet out/tracking_crops.png]
        [--fit-sheet out/tracking_fit.png]
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from fhavatar.head.open_head import OpenHead
from fhavatar.io import load_image, read_video
from fhavatar.tracking import FaceLandmarker, NoFaceError, compute_crop, head_angles, track_image, track_video

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


def _track_video_fps(path: Path, head: OpenHead, repeats: int) -> tuple[int, float, float]:
    """(frames, decode fps, best `track_video` fps over `repeats` runs, decoding excluded) for one clip."""
    start = time.perf_counter()
    frames, _ = read_video(path)
    decode = len(frames) / (time.perf_counter() - start)
    best = 0.0
    with FaceLandmarker(mode="video") as landmarker:
        track_video(frames[:2], landmarker, head)  # graph creation is not timed
        for _ in range(repeats):
            start = time.perf_counter()
            track_video(frames, landmarker, head)
            best = max(best, len(frames) / (time.perf_counter() - start))
    return len(frames), decode, best


def _fit_tile(track, head: OpenHead, size: int) -> Image.Image:
    """The crop with the fitted OpenHead at `size`² pixels: its front-facing mesh edges (translucent blue), the
    detected landmarks (red dots) and, on top, the fitted model's projected landmarks (green centres)."""
    import torch

    tile = Image.fromarray(track.image).resize((size, size), Image.Resampling.LANCZOS).convert("RGBA")
    with torch.no_grad():
        vertices = head(track.params)
        uv, _ = track.camera.project(vertices, size, size)
        model_lm, _ = track.camera.project(head.landmarks(vertices), size, size)
        tri = track.camera.world_to_camera(vertices)[0][head.faces]  # [F, 3, 3] in camera space
        normal = torch.cross(tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0], dim=-1)
        front = (normal * tri.mean(1)).sum(-1) < 0  # facing the camera
    mesh = Image.new("RGBA", tile.size, (0, 0, 0, 0))
    draw = ImageDraw.Draw(mesh)
    points = uv[0].numpy()
    for face in head.faces[front].numpy():
        draw.line([tuple(points[i]) for i in (*face, face[0])], fill=(70, 140, 255, 90), width=1)
    tile = Image.alpha_composite(tile, mesh).convert("RGB")
    draw = ImageDraw.Draw(tile)
    for x, y in track.landmarks[:, :2] * (size / track.image.shape[0]):
        draw.ellipse((x - 2.2, y - 2.2, x + 2.2, y + 2.2), fill=(255, 40, 40))
    for x, y in model_lm[0].numpy():
        draw.ellipse((x - 0.8, y - 0.8, x + 0.8, y + 0.8), fill=(40, 255, 80))
    return tile


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
    parser.add_argument("--fit-sheet", type=Path, default=None, help="write the OpenHead fits here (PNG)")
    parser.add_argument("--fit-tile", type=int, default=384, help="fit-sheet tile size in pixels")
    parser.add_argument("--video-repeats", type=int, default=3, help="timed track_video runs per clip (best kept)")
    args = parser.parse_args()
    if not args.data.is_dir():
        raise SystemExit(f"test material not found: {args.data}")

    print("Face Mesh (refine_landmarks, 478 points), CPU; decoding excluded")
    for video in sorted(args.data.glob("v0*.mp4")):
        count, video_rate, image_rate = _video_fps(video)
        print(f"{video.name[:40]:40s} {count:4d} frames   video mode {video_rate:6.1f} fps   image mode {image_rate:6.1f} fps")

    head = OpenHead()
    print("track_video (landmarks in tracking mode + smoothing + crops + OpenHead fit), CPU")
    for video in sorted(args.data.glob("v0*.mp4")):
        count, decode, rate = _track_video_fps(video, head, args.video_repeats)
        print(f"{video.name[:40]:40s} {count:4d} frames   decode {decode:6.1f} fps   track_video {rate:6.1f} fps")

    tiles, fit_tiles = [], []
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
            start = time.perf_counter()
            track = track_image(image, landmarker, head)
            yaw, pitch, roll = head_angles(track.head_rotation)
            print(
                f"{'':40s} track_image {(time.perf_counter() - start) * 1000:6.1f} ms   yaw {yaw:+6.1f}° pitch "
                f"{pitch:+6.1f}° roll {roll:+6.1f}°   depth {track.head_translation[2]:.2f}   reprojection "
                f"{100 * track.reprojection_error:.3f} % (rigid only {100 * track.rigid_error:.2f} %) of the face box"
            )
            if args.fit_sheet is not None:
                fit_tiles.append(_fit_tile(track, head, args.fit_tile))

    if args.contact_sheet is not None and tiles:
        sheet = Image.new("RGB", (args.tile * len(tiles), args.tile), "white")
        for i, tile in enumerate(tiles):
            sheet.paste(tile, (i * args.tile, 0))
        args.contact_sheet.parent.mkdir(parents=True, exist_ok=True)
        sheet.save(args.contact_sheet)
        print(f"contact sheet: {args.contact_sheet}")
    if args.fit_sheet is not None and fit_tiles:
        columns = min(4, len(fit_tiles))
        rows = -(-len(fit_tiles) // columns)
        sheet = Image.new("RGB", (args.fit_tile * columns, args.fit_tile * rows), "white")
        for i, tile in enumerate(fit_tiles):
            sheet.paste(tile, ((i % columns) * args.fit_tile, (i // columns) * args.fit_tile))
        args.fit_sheet.parent.mkdir(parents=True, exist_ok=True)
        sheet.save(args.fit_sheet)
        print(f"fit sheet: {args.fit_sheet}")


if __name__ == "__main__":
    main()
