"""Driving frames for the Live tests: the shared real clip when it is there, else the packaged example photo moving
(public domain: the astronaut, turning her head in the image plane and coming closer), so no Live test needs
../shared to run. `y4m` writes frames as the camera file Chromium's fake capture device plays."""

from pathlib import Path

import imageio_ffmpeg
import numpy as np
from PIL import Image

REALFACES = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "realfaces"
EXAMPLE_PHOTO = Path(__file__).resolve().parents[1] / "examples" / "astronaut.png"
FPS = 25.0


def example_clip(count: int = 50, side: int = 256) -> list[np.ndarray]:
    """The example photo as a clip: the face tilting by up to ±12° and zooming in by up to 15%, one cycle."""
    photo = Image.open(EXAMPLE_PHOTO).convert("RGB")
    centre = (215, 130)  # her face in the 512² photo
    frames = []
    for t in np.linspace(0, 2 * np.pi, count, endpoint=False):
        half = 150 / (1 + 0.15 * (1 - np.cos(t)) / 2)
        view = photo.rotate(12 * np.sin(t), center=centre, resample=Image.Resampling.BILINEAR, fillcolor=(200, 190, 180))
        box = (centre[0] - half, centre[1] - half + 30, centre[0] + half, centre[1] + half + 30)
        frames.append(np.asarray(view.resize((side, side), Image.Resampling.BILINEAR, box=box)))
    return frames


def driving_clip(count: int = 50, side: int = 256, prefer_real: bool = True) -> tuple[list[np.ndarray], str]:
    """`(frames [side, side, 3] uint8, what they are)`: the shared clip v01 (smiles, blinks, gaze) when present and
    `prefer_real`, else `example_clip`."""
    clips = sorted(REALFACES.glob("v01*.mp4")) if prefer_real and REALFACES.is_dir() else []
    if clips:
        from fhavatar.io import read_video

        frames, _ = read_video(clips[0], max_frames=count, max_side=side)
        return frames, clips[0].name
    return example_clip(count, side), EXAMPLE_PHOTO.name + " (tilting, zooming)"


def y4m(frames, path, fps: float = FPS) -> Path:
    """`frames` as a YUV4MPEG2 file (what `--use-file-for-fake-video-capture` plays, in a loop)."""
    height, width = frames[0].shape[:2]
    writer = imageio_ffmpeg.write_frames(str(path), (width, height), fps=fps, codec="rawvideo", pix_fmt_out="yuv420p",
                                         macro_block_size=1, ffmpeg_log_level="error",
                                         output_params=["-f", "yuv4mpegpipe"])
    writer.send(None)
    for frame in frames:
        writer.send(np.ascontiguousarray(frame))
    writer.close()
    return Path(path)
