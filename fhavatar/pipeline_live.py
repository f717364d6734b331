"""Live re-enactment: one camera frame in, one rendered frame of the avatar out (`FHAvatarPipeline.live`).

The per-frame form of `FHAvatarPipeline.iter_animate` for a stream whose later frames are not known yet (a webcam):
`LiveTracker` (`track_video`'s steps, causal smoothing) -> `transfer_motion` (relative: the changes since the
first frame that showed a face) -> the one path into the avatar, `avatar.gaussians(frame_params(params, t))` ->
`render_gaussians`, under `FrameThreads` kept across frames (the thread choice is timed over the stream, as over a
clip). Frames that show no face give no image: the caller keeps showing the last one.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

from .animation import FrameThreads, frame_params, transfer_motion
from .pipeline_inputs import check_avatar, check_background, check_render_args, square_pixels
from .rendering import render_gaussians
from .tracking import FaceTrack, LiveTracker

__all__ = ["LiveFrame", "LiveReenactment"]


@dataclass
class LiveFrame:
    """What `LiveReenactment` gives for one camera frame.

    Args:
        image (`Tensor` of shape `[3, H, W]` in [0, 1], or `None`): the avatar re-enacting the frame (CPU); None
            when the frame shows no face.
        track (`FaceTrack` or `None`): the frame's track (None without a face).
        seconds (`float`): the time this frame took (tracking, posing and rendering).
    """

    image: Tensor | None
    track: FaceTrack | None
    seconds: float

    @property
    def has_face(self) -> bool:
        return self.track is not None


class LiveReenactment:
    """A live stream's state: the tracker, the reference frame (the first with a face) and the render threads.

    Made by `FHAvatarPipeline.live`; call it once per camera frame (`[H, W, 3]` uint8 RGB), in the stream's order.
    Motion is transferred relatively (`transfer_motion(mode="relative")`): the avatar keeps its own face and pose and
    follows the changes since the reference frame, so whoever is in front of the camera drives it from their own
    resting face. `reset()` takes the next face as the new reference.

    Args:
        pipe (`FHAvatarPipeline`): gives the head model, device, smoothing and background.
        avatar (`Avatar`): from `reconstruct` or `load_avatar_file` (with its `source_track`).
        background (3 floats in [0, 1], *optional*): RGB behind the avatar (default: the pipeline's).
    """

    def __init__(self, pipe, avatar, background: Sequence[float] | None = None):
        self.avatar, self.source = avatar, check_avatar(avatar)
        rgb = pipe.config.background if background is None else check_background(background)
        self.device = pipe.device
        self.background = torch.tensor(rgb, device=self.device)
        self.tracker = LiveTracker(pipe.head_model, smoothing=pipe.config.smoothing)
        self.threads = FrameThreads()
        self.reference: FaceTrack | None = None

    def reset(self) -> None:
        """Forget the reference frame and the track: the next face starts the motion afresh."""
        self.reference = None
        self.tracker.reset()

    @torch.no_grad()
    def __call__(self, frame: np.ndarray, height: int = 256, width: int = 256) -> LiveFrame:  # [H, W, 3] uint8
        """The avatar re-enacting `frame`, rendered at `width` x `height` (`LiveFrame.image` None without a face)."""
        check_render_args(1, height, width, "pt")
        start = time.perf_counter()
        track = self.tracker(frame)
        if track is None:
            return LiveFrame(None, None, time.perf_counter() - start)
        if self.reference is None:
            self.reference = track
        params, cameras = transfer_motion(self.source, [self.reference, track])
        params = params.to(self.device)
        camera = square_pixels(cameras, width, height).to(self.device)[1]
        with self.threads.frame():
            gaussians = self.avatar.gaussians(frame_params(params, 1))
            image = render_gaussians(gaussians, camera, width, height, background=self.background).image[0].cpu()
        return LiveFrame(image, track, time.perf_counter() - start)

    def close(self) -> None:
        """Release the tracker's MediaPipe graphs."""
        self.tracker.close()
