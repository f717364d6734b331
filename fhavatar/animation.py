"""Animation: the transfer of a driving video's motion onto a source avatar.

Per frame, motion is the OpenHead non-rigid parameters (`expression`, `jaw`, `neck`, `eyes`) plus the head's rigid
pose relative to the camera (ARCHITECTURE.md, "Conventions"). `transfer_motion` turns a source `FaceTrack` (the photo the
avatar was built from) and driving `FaceTrack`s into per-frame `OpenHeadParams` and cameras for
`Avatar.animate` / rendering:

- `mode="relative"` (default): the avatar keeps its own identity and starting expression and pose, and only the
  driver's *changes* are applied: `expression_t = source + (driving_t - driving_0)` (likewise jaw, neck, eyes);
  the head turns by the driver's rotation since frame 0, `global_rotation_t = R_s^T dR_t R_s` (`dR_t` measured in
  the driving video's camera, the crops' roll, shift and zoom undone, then seen from the source camera, `R_s` the
  source's head rotation), and moves by the driver's displacement since frame 0, `translation_t = R_s^T d_t` (head
  units; small for a talking head). The source camera stays.
- `mode="absolute"`: the driver's parameters replace the source's: `expression_t = driving_t` (identity
  included), and the head takes the driver's pose as seen by the source camera: `R_s G_t = R_t` with `R_t` the
  driver's head rotation in its video frame (roll kept) and `R_s T_t + t_s = t_t` (the driver's crop-camera
  position).
- `use_driving_camera=True`: each frame is seen from the driving frame's own camera (its crop camera around the
  canonical head), which already carries the driver's head pose, so `global_rotation` and `translation` are zero;
  the non-rigid parameters still follow `mode`.

A video loop then poses the avatar and renders, frame by frame: `avatar.gaussians(vertices=clip_vertices(t))` (the
head model posed a few frames per call by `ClipVertices`, then the avatar's compiled re-posing; a live loop, which
has one frame at a time, `avatar.gaussians(frame_params(params, t))`), each frame inside `FrameThreads.frame()`: one
PyTorch thread (`single_torch_thread`: the loop's own tensor operations are small) and the number of numba threads
that renders fastest on this machine now (timed, not guessed).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import fields
from typing import Literal

import numba
import numpy as np
import torch
from torch import Tensor

from .head.open_head import OpenHeadParams
from .rendering.cameras import PANOHEAD_FOCAL, Camera
from .rotations import axis_rotation_np, matrix_to_axis_angle
from .tracking.face_track import FaceTrack

__all__ = ["ClipVertices", "FrameThreads", "frame_params", "frame_pose", "single_torch_thread", "transfer_motion"]

_NON_RIGID = ("expression", "jaw", "neck", "eyes")


def frame_pose(track: FaceTrack, focal_px: float) -> tuple[np.ndarray, np.ndarray]:  # -> [3, 3], [3]
    """The head's pose in a fixed camera of the original frame (focal `focal_px` original pixels, principal point
    at the frame centre): the crop's roll, shift and zoom undone.

    The rotation is exact about the optical axis (roll); an off-centre crop is treated as a shifted view, not as a
    camera pan (a small error for the narrow PanoHead field of view).
    """
    crop = track.crop
    rotation = axis_rotation_np(2, crop.roll) @ track.head_rotation
    t = np.asarray(track.head_translation, dtype=np.float64)
    f_crop = PANOHEAD_FOCAL * crop.output_size  # crop pixels
    uv = crop.invert(f_crop * t[:2] / t[2] + crop.output_size / 2.0)  # head origin in original pixels
    depth = t[2] * focal_px / (f_crop / crop.scale)
    centre = np.array(crop.image_size, dtype=np.float64) / 2.0
    return rotation, np.array([*((uv - centre) * depth / focal_px), depth])


def transfer_motion(
    source: FaceTrack,
    driving: Sequence[FaceTrack],
    mode: Literal["relative", "absolute"] = "relative",
    use_driving_camera: bool = False,
) -> tuple[OpenHeadParams, Camera]:
    """Per-frame avatar parameters and cameras that re-enact `driving` with the `source` avatar (module docstring).

    Args:
        source (`FaceTrack`): the photo the avatar was built from (`track_image`).
        driving (sequence of `FaceTrack`, length T): the driving video (`track_video`).
        mode (`"relative"` or `"absolute"`, *optional*, defaults to `"relative"`): transfer changes since the
            first driving frame, or the driving parameters and pose themselves.
        use_driving_camera (`bool`, *optional*, defaults to False): return the driving frames' cameras (the rigid
            motion then lives in the camera; `global_rotation`/`translation` are zero) instead of the source camera.

    Returns:
        `(params, cameras)`: `OpenHeadParams` with batch T (head space; `global_rotation` axis-angle about the head
        origin, `translation` in head units) and a `Camera` with batch T.

    Example:
        ```py
        >>> from fhavatar.animation import transfer_motion
        >>> from fhavatar.tracking import track_image, track_video
        >>> source, driving = track_image("photo.jpg"), track_video("clip.mp4")  # doctest: +SKIP
        >>> params, cameras = transfer_motion(source, driving)  # doctest: +SKIP
        >>> params.batch_size == len(cameras) == len(driving)  # doctest: +SKIP
        True
        ```
    """
    if not isinstance(source, FaceTrack):
        raise TypeError(f"`source` must be a FaceTrack (from track_image), got {type(source).__name__}.")
    driving = list(driving) if not isinstance(driving, FaceTrack) else [driving]
    if not driving or not all(isinstance(d, FaceTrack) for d in driving):
        raise ValueError("`driving` must be a non-empty sequence of FaceTrack (from track_video), got "
                         f"{len(driving)} item(s) of types {sorted({type(d).__name__ for d in driving})}.")
    if mode not in ("relative", "absolute"):
        raise ValueError(f"`mode` must be 'relative' or 'absolute', got {mode!r}.")
    count = len(driving)
    like = source.params.expression
    fields = {}
    for name in _NON_RIGID:
        drv = torch.cat([getattr(d.params, name).to(like) for d in driving])  # [T, ...]
        if mode == "relative":
            drv = getattr(source.params, name).to(like) + (drv - drv[:1])
        fields[name] = drv
    rotations, translations = np.tile(np.eye(3), (count, 1, 1)), np.zeros((count, 3))  # [T, 3, 3], [T, 3]
    if use_driving_camera:
        cameras = Camera.cat([d.camera.to(like.device) for d in driving])
    else:
        rs, ts = source.head_rotation, source.head_translation
        to_source = axis_rotation_np(2, source.crop.roll).T  # original-frame axes -> source crop-camera axes
        focal = PANOHEAD_FOCAL * driving[0].crop.side  # the driving video's camera, in its pixels
        r0, o0 = frame_pose(driving[0], focal)
        for i, d in enumerate(driving):
            if mode == "relative":
                r, o = frame_pose(d, focal)
                delta, shift = to_source @ (r @ r0.T) @ to_source.T, to_source @ (o - o0)
                rotations[i], translations[i] = rs.T @ delta @ rs, rs.T @ shift
            else:
                rotations[i] = rs.T @ d.frame_rotation
                translations[i] = rs.T @ (d.head_translation - ts)
        cameras = Camera(cam2world=source.camera.cam2world.expand(count, 4, 4).clone(),
                         intrinsics=source.camera.intrinsics.expand(count, 3, 3).clone())
    params = OpenHeadParams(global_rotation=matrix_to_axis_angle(torch.from_numpy(rotations)).to(like),
                            translation=torch.tensor(translations).to(like), **fields)
    return params, cameras


def frame_params(params: OpenHeadParams, t: int) -> OpenHeadParams:
    """Frame `t` of per-frame parameters (batch T, from `transfer_motion`) as a batch of one (views, not copies).

    A live loop poses the head one frame at a time (`avatar.gaussians(frame_params(params, t))`); a loop over a
    clip known in advance poses a few frames per call (`ClipVertices`), which gives the same vertices for less.
    """
    if not isinstance(params, OpenHeadParams):
        raise TypeError(f"`params` must be OpenHeadParams (from transfer_motion), got {type(params).__name__}.")
    t = _frame_index(t, params.batch_size)
    return _frame_range(params, t, t + 1)


def _frame_index(t: int, count: int) -> int:
    """`t` as an index in [0, count) (negative counts from the end), or a `ValueError` naming it."""
    if isinstance(t, bool) or not isinstance(t, int) or not -count <= t < count:
        raise ValueError(f"`t` must be a frame index in [0, {count}), got {t!r}.")
    return t % count


def _frame_range(params: OpenHeadParams, start: int, stop: int) -> OpenHeadParams:  # frames [start, stop), views
    return OpenHeadParams(**{f.name: getattr(params, f.name)[start:stop] for f in fields(params)})


class ClipVertices:
    """The posed vertices of every frame of a clip, `clip_vertices(t) -> [V, 3]`, posed `chunk` frames per call
    of `pose` as a loop asks for them (one chunk held at a time, however long the clip).

    The head model's forward is ~300 small tensor operations whatever the batch: per frame they cost as much as
    re-posing the avatar's 88K Gaussians. Posed 16 frames at a time they cost half as much per frame (0.43 vs
    0.80 ms on a 2-core CPU), and the vertices are the same bits as posing the whole clip at once (tested).

    Args:
        pose (`Callable[[OpenHeadParams], Tensor]`): parameters with batch B -> vertices `[B, V, 3]`
            (`Avatar.pose`).
        params (`OpenHeadParams`): the clip's per-frame parameters, batch T (`transfer_motion`, `motion_params`).
        chunk (`int`, defaults to 16): frames posed per call.
    """

    def __init__(self, pose: Callable[[OpenHeadParams], Tensor], params: OpenHeadParams, chunk: int = 16):
        if not isinstance(params, OpenHeadParams):
            raise TypeError(f"`params` must be OpenHeadParams (from transfer_motion), got {type(params).__name__}.")
        if isinstance(chunk, bool) or not isinstance(chunk, int) or chunk < 1:
            raise ValueError(f"`chunk` must be a positive int, got {chunk!r}.")
        self.pose, self.params, self.chunk = pose, params, chunk
        # (first frame, its chunk's vertices), read once and replaced whole: threads sharing one stay consistent
        self._cached: tuple[int, Tensor | None] = (0, None)

    def __len__(self) -> int:
        return self.params.batch_size

    def __call__(self, t: int) -> Tensor:  # -> [V, 3]
        count = len(self)
        t = _frame_index(t, count)
        start, vertices = self._cached
        if vertices is None or not start <= t < start + len(vertices):
            start = t - t % self.chunk
            vertices = self.pose(_frame_range(self.params, start, min(start + self.chunk, count)))
            self._cached = (start, vertices)
        return vertices[t - start]


@contextmanager
def single_torch_thread() -> Iterator[None]:
    """Run the body with one PyTorch intra-op thread (this thread's setting, restored afterwards).

    A render loop's tensor operations are small, and the CPU rasterizer has its own (numba) threads: PyTorch's
    OpenMP workers, spinning after each small operation, only take cores from them (on a busy 2-core machine a
    100K-row operation was measured 100x slower with 2 threads than with 1).
    """
    previous = torch.get_num_threads()
    if previous == 1:
        yield
        return
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


class FrameThreads:
    """Thread settings of a CPU video loop, frame by frame (`with threads.frame(): ...` around each frame's work).

    PyTorch gets one thread (`single_torch_thread`). numba, which does the work, gets as many threads as pay off:
    every core on a quiet machine, but one when other processes hold the cores: there the threads of each parallel
    step wait on each other (measured on 2 cores at load 5: a 256² frame took 100 ms with 2 threads, 30 ms with 1).
    The choice is timed, not guessed: after a warm-up frame (compilation), one frame runs with all threads and the
    next with one; one thread is kept only if it was clearly faster, and every `recheck` frames the other setting
    is timed again (a frame at the slower setting: ~2% of the frames on a quiet machine). Images do not depend on it
    (the kernels give the same bits on any number of threads). numba's setting is per calling thread and restored
    after each frame, so concurrent loops (an app's sessions) do not disturb each other.
    """

    def __init__(self, recheck: int = 48):
        self.most, self.recheck = numba.get_num_threads(), max(int(recheck), 3)
        self.count, self.chosen = 0, self.most
        self.timings: dict[int, float] = {}

    def _plan(self) -> tuple[int, bool]:
        """(threads for this frame, whether it is timed)."""
        if self.most == 1 or self.count == 0:
            return self.chosen, False
        phase = (self.count - 1) % self.recheck
        if phase == 0:
            return self.chosen, True
        if phase == 1:
            return (1 if self.chosen != 1 else self.most), True
        return self.chosen, False

    @contextmanager
    def frame(self) -> Iterator[None]:
        threads, timed = self._plan()
        previous = numba.get_num_threads()
        numba.set_num_threads(threads)
        start = time.perf_counter()
        try:
            with single_torch_thread():
                yield
        finally:
            numba.set_num_threads(previous)
            if timed:
                self.timings[threads] = time.perf_counter() - start
                if len(self.timings) == 2:  # one thread must win by 10%: all cores is the default for a reason
                    one, most = self.timings[1], self.timings[self.most]
                    self.chosen = 1 if one < 0.9 * most else self.most
                    self.timings = {}
            self.count += 1
