"""The re-enactment loop (issue 20): compiled re-posing, render scratch, a frame at a time, against today's path.

Today's path is computed here with the straightforward formulas: the head posed for the whole clip,
`Avatar.reference_gaussians` (a triangle frame per Gaussian, in torch) and the renderer's autograd path (fresh
arrays, serial binning). The fast loop must give the same images (max abs difference <= 1e-4; in practice 0: the
compiled kernels reproduce torch's rounding, because a last-bit change in one mean can move a pixel by 1e-3).
"""

from __future__ import annotations

import math
import threading
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from fhavatar import FHAvatarPipeline, _posing
from fhavatar.animation import ClipVertices, FrameThreads, frame_params, single_torch_thread, transfer_motion
from fhavatar.avatar import Avatar
from fhavatar.head.open_head import OpenHead
from fhavatar.head.uv import UVLayout
from fhavatar.models.attributes import UVAttributes
from fhavatar.pipeline_inputs import square_pixels
from fhavatar.rendering import Gaussians, render_gaussians
from fhavatar.rendering.rasterize import _RenderCPU
from fhavatar.rotations import HEAD_TO_CAMERA, rotation_from_angles
from fhavatar.tracking import CropTransform
from fhavatar.tracking.fit import OpenHeadFit, make_track

K = 32
REAL = Path(__file__).resolve().parents[2] / "shared" / "data" / "realfaces"
FIELDS = ("means", "quats", "scales", "opacities", "colors")


@pytest.fixture(scope="module")
def head():
    return OpenHead()


@pytest.fixture(scope="module")
def layout(head):
    return UVLayout(head, resolution=K)


def _avatar(head, layout, seed: int = 0, bust: bool = True) -> Avatar:
    """A random avatar with a hair shell (vertex offsets) and a bust, like the pipeline's full head."""
    g = torch.Generator().manual_seed(seed)
    params = head.neutral_params(1)
    params.expression[:] = 0.004 * torch.randn(params.expression.shape, generator=g)
    shell = 0.01 * torch.rand(head.num_vertices, 3, generator=g)
    vertices = head(params, rest_offsets=shell)
    texel = layout.scale_map(vertices).clamp(min=1e-3)
    attributes = UVAttributes(
        colors=torch.rand(1, 3, K, K, generator=g),
        rotations=F.normalize(torch.randn(1, 4, K, K, generator=g), dim=1),
        scales=texel * (0.5 + torch.rand(1, 3, K, K, generator=g)),
        opacities=0.2 + 0.7 * torch.rand(1, 1, K, K, generator=g),
        offsets=0.01 * (2 * torch.rand(1, 3, K, K, generator=g) - 1),
    )
    avatar = Avatar.from_attributes(attributes, layout, head, params, vertex_offsets=shell)
    if bust:
        n = 300
        avatar.bust = Gaussians(means=torch.randn(n, 3, generator=g) * 0.05 + torch.tensor([0.0, -0.35, 0.0]),
                                quats=F.normalize(torch.randn(n, 4, generator=g), dim=-1),
                                scales=0.01 + 0.01 * torch.rand(n, 3, generator=g),
                                opacities=torch.rand(n, generator=g), colors=torch.rand(n, 3, generator=g))
    return avatar


def _poses(head, count: int, seed: int = 1):
    """Head parameters of a short clip: jaw, neck, eyes, expression, head turn and shift, all moving."""
    g = torch.Generator().manual_seed(seed)
    params = head.neutral_params(count)
    phase = torch.linspace(0, 2 * math.pi, count)
    params.jaw[:, 0] = 0.15 * (1 + torch.sin(phase))
    params.neck[:] = 0.1 * torch.stack([torch.sin(phase), torch.cos(phase), 0 * phase], -1)
    params.eyes[:] = 0.05 * torch.randn(params.eyes.shape, generator=g)
    params.expression[:] = 0.003 * torch.randn(params.expression.shape, generator=g)
    params.global_rotation[:] = 0.3 * torch.stack([0.3 * torch.sin(phase), torch.sin(phase), 0.2 * phase], -1)
    params.translation[:] = 0.02 * torch.randn(count, 3, generator=g)
    return params


def _same(a: Gaussians, b: Gaussians) -> bool:
    return all(torch.equal(getattr(a, f), getattr(b, f)) for f in FIELDS)


def _todays_frame(gaussians: Gaussians, camera, size: int, background: torch.Tensor) -> torch.Tensor:
    """One frame as the renderer produced it before issue 20 (its autograd path), over `background`."""
    render, alpha = _RenderCPU.apply(gaussians.means, gaussians.quats, gaussians.scales, gaussians.opacities,
                                     gaussians.colors, camera.world2cam, camera.pixel_intrinsics(size, size), size, size)
    return (render[:, :3] + background[:, None, None] * (1 - alpha))[0]


def _todays_path(avatar: Avatar, params, cameras, size: int, background: torch.Tensor) -> torch.Tensor:
    cameras = square_pixels(cameras, size, size)
    vertices = avatar.pose(params)  # the whole clip at once, as the pipeline did
    return torch.stack([_todays_frame(avatar.reference_gaussians(vertices=vertices[t]), cameras[t], size, background)
                        for t in range(len(cameras))])


# ---------------------------------------------------------------------------------------------- re-posing
def test_the_kernels_reproduce_this_torch_build():
    assert _posing.matches_torch(), "the compiled re-posing is off on this machine: Avatar.gaussians runs in torch"


@torch.no_grad()
def test_compiled_posing_gives_the_reference_bits(head, layout):
    avatar = _avatar(head, layout)
    params = _poses(head, 6)
    assert _same(avatar.gaussians(), avatar.reference_gaussians())
    for t in range(6):
        frame = frame_params(params, t)
        fast, reference = avatar.gaussians(frame), avatar.reference_gaussians(frame)
        assert _same(fast, reference), t
        assert fast.means.shape == (len(avatar) + len(avatar.bust), 3)
    vertices = avatar.pose(params)
    assert _same(avatar.gaussians(vertices=vertices[2]), avatar.reference_gaussians(vertices=vertices[2:3]))
    bare = _avatar(head, layout, seed=3, bust=False)
    g = bare.gaussians(frame_params(params, 1))
    assert _same(g, bare.reference_gaussians(frame_params(params, 1)))
    assert g.colors is bare.colors and g.opacities is bare.opacities  # as the reference returns them


@torch.no_grad()
def test_the_cache_follows_changes_to_the_avatar(head, layout):
    avatar = _avatar(head, layout, seed=4)
    frame = frame_params(_poses(head, 3), 1)
    before = avatar.gaussians(frame)
    avatar.offsets.mul_(2.0)  # in place
    avatar.colors[:10] = 0.5
    after = avatar.gaussians(frame)
    assert not torch.equal(after.means, before.means) and _same(after, avatar.reference_gaussians(frame))
    avatar.rotations = F.normalize(torch.randn_like(avatar.rotations), dim=-1)  # replaced
    avatar.bust = avatar.bust[:100]
    g = avatar.gaussians(frame)
    assert len(g) == len(avatar) + 100 and _same(g, avatar.reference_gaussians(frame))
    g.colors[0] = 0.0  # a caller writing into the shared colours does not poison the next frame
    assert _same(avatar.gaussians(frame), avatar.reference_gaussians(frame))
    avatar.bust = None
    assert _same(avatar.gaussians(frame), avatar.reference_gaussians(frame))
    copy = avatar.to("cpu")
    assert _same(copy.gaussians(frame), avatar.gaussians(frame))
    import copy as copying
    import pickle

    for clone in (copying.deepcopy(avatar), pickle.loads(pickle.dumps(avatar))):  # no cache (and no lock) inside
        assert _same(clone.gaussians(frame), avatar.gaussians(frame))


def test_gradients_and_bad_values_take_the_reference_path(head, layout):
    avatar = _avatar(head, layout, seed=5)
    avatar.offsets.requires_grad_(True)
    g = avatar.gaussians()
    g.means.sum().backward()
    assert avatar.offsets.grad is not None and avatar.offsets.grad.abs().sum() > 0
    with torch.no_grad():
        avatar.offsets.requires_grad_(False)
        vertices = avatar.source_vertices.clone()
        vertices[0, 0] = float("nan")
        with pytest.raises(ValueError, match="must be finite"):
            avatar.gaussians(vertices=vertices)
        avatar.opacities[0] = 1.5
        with pytest.raises(ValueError, match="opacities must lie in"):
            avatar.gaussians()


@torch.no_grad()
def test_threads_posing_one_avatar_at_once_get_the_reference(head, layout):
    avatar = _avatar(head, layout, seed=6)
    params = _poses(head, 8)
    expected = [avatar.reference_gaussians(frame_params(params, t)) for t in range(8)]
    failures = []

    def run(offset):
        for i in range(16):
            t = (i + offset) % 8
            if not _same(avatar.gaussians(frame_params(params, t)), expected[t]):
                failures.append(t)

    threads = [threading.Thread(target=run, args=(k,)) for k in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not failures


# ---------------------------------------------------------------------------------------------- the loop
@torch.no_grad()
def test_frame_params_pose_what_the_whole_clip_poses(head, layout):
    avatar = _avatar(head, layout, seed=7)
    params = _poses(head, 5)
    whole = avatar.pose(params)
    for t in (0, 3, -1):
        frame = frame_params(params, t)
        assert frame.batch_size == 1 and torch.equal(frame.jaw, params.jaw[t % 5 : t % 5 + 1])
        assert torch.equal(avatar.pose(frame)[0], whole[t])
        assert _same(avatar.gaussians(frame), avatar.reference_gaussians(vertices=whole[t]))
    with pytest.raises(ValueError, match="frame index"):
        frame_params(params, 5)
    with pytest.raises(TypeError, match="OpenHeadParams"):
        frame_params([params], 0)


@torch.no_grad()
def test_clip_vertices_pose_a_few_frames_at_a_time_what_the_whole_clip_poses(head, layout):
    avatar = _avatar(head, layout, seed=7)
    params = _poses(head, 7)
    whole = avatar.pose(params)
    calls = []

    def pose(p):
        calls.append(p.batch_size)
        return avatar.pose(p)

    for chunk in (1, 3, 16):
        calls.clear()
        vertices = ClipVertices(pose, params, chunk=chunk)
        assert len(vertices) == 7
        for t in range(7):
            assert torch.equal(vertices(t), whole[t]), (chunk, t)
        assert calls == [min(chunk, 7 - start) for start in range(0, 7, chunk)]  # each frame posed once, in chunks
    vertices = ClipVertices(pose, params, chunk=3)
    for t in (5, 0, -1, 4, 1):  # any order: the chunk holding t is posed when needed
        assert torch.equal(vertices(t), whole[t])
    with pytest.raises(ValueError, match="frame index"):
        vertices(7)
    with pytest.raises(ValueError, match="chunk"):
        ClipVertices(pose, params, chunk=0)
    with pytest.raises(TypeError, match="OpenHeadParams"):
        ClipVertices(pose, [params])


def test_single_torch_thread_restores_the_setting():
    before = torch.get_num_threads()
    with single_torch_thread():
        assert torch.get_num_threads() == 1
    assert torch.get_num_threads() == before


def test_frame_threads_time_both_settings_and_keep_the_faster(monkeypatch):
    import fhavatar.animation as animation

    monkeypatch.setattr(animation.numba, "get_num_threads", lambda: 2)
    settings = []
    monkeypatch.setattr(animation.numba, "set_num_threads", settings.append)
    clock_state = [0.0]  # a fake clock: each frame costs what its thread count costs below
    monkeypatch.setattr(animation.time, "perf_counter", lambda: clock_state[0])
    costs = {2: 1.0, 1: 3.0}  # a quiet machine: all threads win
    threads = FrameThreads(recheck=4)
    used = []
    for _ in range(11):
        with threads.frame():
            n = settings[-1]
            used.append(n)
            clock_state[0] += costs[n]
            assert torch.get_num_threads() == 1
        assert settings[-1] == 2  # restored after each frame
    assert used == [2, 2, 1, 2, 2, 2, 1, 2, 2, 2, 1]  # warm-up, then a probe of one thread every 4 frames
    costs = {2: 3.0, 1: 1.0}  # a busy machine: one thread wins from the next probe on
    threads, used = FrameThreads(recheck=4), []
    for _ in range(7):
        with threads.frame():
            used.append(settings[-1])
            clock_state[0] += costs[settings[-1]]
    assert used == [2, 2, 1, 1, 1, 1, 2]  # the last: all threads timed again


@torch.no_grad()
def test_renders_do_not_depend_on_the_thread_count(head, layout):
    import numba

    avatar = _avatar(head, layout, seed=10)
    g = avatar.gaussians(frame_params(_poses(head, 2), 1))
    camera = square_pixels(_cameras(1), 80, 80)
    before = numba.get_num_threads()
    images = []
    for threads in sorted({1, before}):
        numba.set_num_threads(threads)
        images.append(render_gaussians(g, camera, 80, 80).image)
    numba.set_num_threads(before)
    assert all(torch.equal(images[0], image) for image in images)


@torch.no_grad()
def test_no_gradient_renders_match_the_autograd_path_and_keep_their_outputs(head, layout):
    avatar = _avatar(head, layout, seed=8)
    params = _poses(head, 2)
    cameras = square_pixels(_cameras(2), 96, 64)
    background = torch.tensor([1.0, 0.5, 0.0])
    features = torch.rand(len(avatar) + len(avatar.bust), 2)
    first = render_gaussians(avatar.gaussians(frame_params(params, 0)), cameras[0], 96, 64, features=features)
    kept = [first.image.clone(), first.alpha.clone(), first.depth.clone(), first.features.clone()]
    for t in range(2):
        g = avatar.gaussians(frame_params(params, t))
        fast = render_gaussians(g, cameras[t], 96, 64, background=background, features=features)
        with torch.enable_grad():
            means = g.means.clone().requires_grad_(True)
            slow = render_gaussians(Gaussians(means, g.quats, g.scales, g.opacities, g.colors), cameras[t], 96, 64,
                                    background=background, features=features)
        for name in ("image", "alpha", "depth", "features"):
            assert torch.equal(getattr(fast, name), getattr(slow, name).detach()), name
    for value, again in zip(kept, (first.image, first.alpha, first.depth, first.features)):
        assert torch.equal(value, again)  # later renders reuse the scratch; returned tensors are not in it


@torch.no_grad()
def test_renders_running_at_once_each_get_their_own_scratch(head, layout):
    avatar = _avatar(head, layout, seed=11)
    g = avatar.gaussians()
    cameras = _cameras(1)
    sizes = [48, 64, 96, 64, 48, 96]
    expected = {size: render_gaussians(g, square_pixels(cameras, size, size), size, size).image for size in set(sizes)}
    failures = []

    def run(size):
        for _ in range(4):
            image = render_gaussians(g, square_pixels(cameras, size, size), size, size).image
            if not torch.equal(image, expected[size]):
                failures.append(size)

    threads = [threading.Thread(target=run, args=(size,)) for size in sizes]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not failures


def _track(yaw=0.0, pitch=0.0, expression=0.0, jaw=0.0, seed=0):
    """A FaceTrack without MediaPipe (as in test_animation.py): the head posed in a 512² crop camera."""
    rng = np.random.default_rng(seed)
    fit = OpenHeadFit(HEAD_TO_CAMERA @ rotation_from_angles(yaw, pitch, 0.0), np.array([0.0, 0.02, 2.7]),
                      expression * rng.standard_normal((468, 3)), np.zeros((2, 3)), 0.001, 0.02)
    crop = CropTransform.from_params((320.0, 240.0), 400.0, 0.0, (640, 480))
    track = make_track(np.zeros((512, 512, 3), np.uint8), None, crop, np.zeros((478, 3)), fit)
    track.params.jaw[:, 0] = jaw
    return track


def _cameras(count: int):
    return transfer_motion(_track(), [_track()] * count)[1]


def _synthetic_clip(head, layout):
    """A pipeline, a random full-head avatar on its head model, a source track and 6 driving tracks (head turning,
    jaw opening)."""
    pipe = FHAvatarPipeline.default(resolution=K)
    pipe.set_progress_bar_config(disable=True)
    avatar = _avatar(head, layout, seed=9)
    avatar.head_model = pipe.head_model
    driving = [_track(yaw=10 * math.sin(t), pitch=4 * math.cos(t), expression=0.002, jaw=0.1 * t, seed=t)
               for t in range(6)]
    return pipe, avatar, _track(seed=1), driving


@torch.no_grad()
def test_the_pipeline_loop_renders_todays_images(head, layout):
    """A fixed synthetic clip through `pipe.animate` against today's path computed with the plain formulas."""
    pipe, avatar, source, driving = _synthetic_clip(head, layout)
    for size in (64, 96):
        frames = pipe.animate(avatar, driving, source_track=source, height=size, width=size)
        params, cameras = transfer_motion(source, driving)
        expected = _todays_path(avatar, params, cameras, size, torch.tensor(pipe.config.background))
        assert frames.shape == expected.shape
        assert (frames - expected).abs().max() <= 1e-4


@pytest.mark.gpu
@torch.no_grad()
def test_the_loop_on_cuda_gives_the_cpu_images(head, layout):
    """Issue 20, item 4: the same clip through `pipe.animate` on CUDA (torch re-posing, gsplat's rasterizer) and on
    the CPU (compiled re-posing, the numba rasterizer): two implementations, the same frames up to float noise."""
    pipe, avatar, source, driving = _synthetic_clip(head, layout)
    cpu = pipe.animate(avatar, driving, source_track=source, height=96, width=96)
    pipe.to("cuda")  # moves the shared head model too
    try:
        gpu = pipe.animate(avatar.to("cuda"), driving, source_track=source, height=96, width=96)
    finally:
        pipe.to("cpu")
    assert gpu.shape == cpu.shape
    diff = (gpu.cpu() - cpu).abs()
    assert diff.mean() < 1e-3 and diff.max() < 0.05, (diff.mean(), diff.max())


@pytest.mark.skipif(not REAL.is_dir(), reason="needs shared/data/realfaces")
@torch.no_grad()
def test_a_real_clip_renders_todays_images():
    """p07 (hair shell and bust) driven by 6 frames of v01, against today's path."""
    pipe = FHAvatarPipeline.default(resolution=64)
    pipe.set_progress_bar_config(disable=True)
    avatar = pipe.reconstruct(REAL / "p07_frontal_woman-smiling-aligned_p4d-zoe.jpg")
    assert avatar.vertex_offsets is not None and avatar.bust is not None
    tracks, _ = pipe.track_driving(REAL / "v01_man-expressions-greenscreen_lp-d0.mp4", num_frames=6)
    frames = pipe.animate(avatar, tracks, height=128, width=128)
    params, cameras = transfer_motion(avatar.source_track, tracks)
    expected = _todays_path(avatar, params, cameras, 128, torch.tensor(pipe.config.background))
    assert (frames - expected).abs().max() <= 1e-4
