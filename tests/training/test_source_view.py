"""One source-view contract: a tracked photo reaches an avatar model identically through the pipeline
(`FHAvatarPipeline.source_view`) and through the trainer (the dataset's files -> `training.step.source_view`)."""

import dataclasses

import numpy as np
import pytest
import torch

from fhavatar import FHAvatarPipeline
from fhavatar.head.open_head import OpenHead
from fhavatar.head.uv import UVLayout
from fhavatar.models import FHAvatarModel, ProjectionAvatarModel, SourceView, make_source_view
from fhavatar.tracking import track_image
from tests.training import ASTRONAUT
from training._dataset_format import load_mask, load_rgb, read_tracking, save_mask, save_rgb, write_tracking
from training.step import source_view as training_source_view

K = 32
ZBUFFER = 48


class _StandInPrior:
    """A frozen prior stand-in: the tri-plane is the mean colour of the encoded image; sampling mixes it with the points."""

    def encode(self, image, camera):  # [B, 3, H, W] -> [B, 3]
        return image.mean(dim=(2, 3)) + camera.position

    def sample(self, triplane, points):  # [B, 3], [B, M, 3] -> [B, M, 6]
        return torch.cat([torch.sin(3 * points) + triplane[:, None], points.square()], -1)


@pytest.fixture(scope="module")
def track():
    """The example photo's track, its matte at the dataset's 8 bits (preprocessing stores mattes as 8-bit PNGs)."""
    track = track_image(ASTRONAUT, head=OpenHead())
    matte8 = (np.clip(track.mask, 0, 1) * 255.0 + 0.5).astype(np.uint8)
    return dataclasses.replace(track, mask=matte8.astype(np.float32) / 255.0)


def _pipeline(model, prior=None):
    return FHAvatarPipeline(avatar_model=model, head_model=OpenHead(), prior=prior, resolution=K,
                            background=(0.2, 0.4, 0.6))


def _training_batch(track, folder):
    """The photo as preprocessing stores it and the dataset reads it back (a batch of one)."""
    save_rgb(folder / "frame.png", track.image)
    save_mask(folder / "mask.png", (track.mask * 255.0 + 0.5).astype(np.uint8))
    params = track.params
    write_tracking(folder / "tracking.safetensors", track.camera.cam2world, track.camera.intrinsics,
                   torch.ones(1, dtype=torch.bool), params)
    stored = read_tracking(folder / "tracking.safetensors")
    return {"source_image": load_rgb(folder / "frame.png")[None], "source_mask": load_mask(folder / "mask.png")[None],
            "source_cam2world": stored["cam2world"], "source_intrinsics": stored["intrinsics"],
            "source_params": stored["params"]}


def _same_inputs(a: SourceView, b: SourceView):
    for name in ("image", "mask", "composited", "vertices", "position_map", "scale_map", "texel_pixels"):
        torch.testing.assert_close(getattr(a, name), getattr(b, name), rtol=0, atol=0, msg=name)
    torch.testing.assert_close(a.camera.cam2world, b.camera.cam2world, rtol=0, atol=0)
    torch.testing.assert_close(a.camera.intrinsics, b.camera.intrinsics, rtol=0, atol=0)
    torch.testing.assert_close(a.visibility(ZBUFFER), b.visibility(ZBUFFER), rtol=0, atol=0)
    assert a.visibility(ZBUFFER).sum() > 50  # the face is seen


def test_pipeline_and_trainer_build_identical_model_inputs(track, tmp_path):
    assert track.mask is not None and track.mask.any()
    torch.manual_seed(0)
    model = FHAvatarModel.from_preset("tiny", resolution=K, triplane_channels=6, visibility_resolution=ZBUFFER)
    prior = _StandInPrior()
    pipe = _pipeline(model, prior)
    inference = pipe.source_view(track)
    head = pipe.head_model
    training = training_source_view(_training_batch(track, tmp_path), head, UVLayout(head, resolution=K), prior,
                                    torch.tensor(pipe.config.background))
    _same_inputs(inference, training)
    # the matte composites over the pipeline's background, and the prior encodes that composite
    background_pixel = torch.from_numpy(track.mask == 0).nonzero()[0]
    torch.testing.assert_close(inference.composited[0, :, background_pixel[0], background_pixel[1]],
                               torch.tensor([0.2, 0.4, 0.6]))
    points = torch.rand(1, 5, 3, generator=torch.Generator().manual_seed(1))
    torch.testing.assert_close(inference.triplane_sampler(points), training.triplane_sampler(points))
    expected = prior.sample(prior.encode(inference.composited, inference.camera), points).transpose(1, 2)
    torch.testing.assert_close(inference.triplane_sampler(points), expected)
    # so the model predicts the same maps either way
    with torch.no_grad():
        a, b = model(inference), model(training)
    for name in ("colors", "opacities", "scales", "rotations", "offsets", "refined_positions"):
        torch.testing.assert_close(getattr(a, name), getattr(b, name), msg=name)


def test_every_avatar_model_is_called_with_a_view(track):
    """Both avatar models take the same `forward(view)`; the pipeline builds one view per photo."""
    for model in (ProjectionAvatarModel(refine_steps=0), FHAvatarModel.from_preset("tiny", resolution=K)):
        pipe = _pipeline(model)
        view = pipe.source_view(track)
        attributes = model(view)
        assert attributes.colors.shape == (1, 3, K, K)
        assert torch.isfinite(attributes.colors).all()
        with pytest.raises(TypeError, match="SourceView"):
            model(view.image)


def test_view_caches_derived_inputs_and_checks_its_arguments(track):
    head = OpenHead()
    layout = UVLayout(head, resolution=K)
    image = torch.rand(1, 3, 64, 64)
    view = make_source_view(image, track.camera, head, track.params, layout)
    assert view.composited is image  # no matte: the photo itself
    assert view.visibility(ZBUFFER) is view.visibility(ZBUFFER)  # one z-buffer per setting
    assert not torch.equal(view.visibility(ZBUFFER), view.visibility(ZBUFFER, min_cosine=0.9))
    assert view.position_map is view.position_map and view.position_map.shape == (1, 3, K, K)
    with pytest.raises(ValueError, match="`image` must be a float tensor"):
        SourceView(torch.rand(1, 4, 8, 8), track.camera, view.vertices, layout)
    with pytest.raises(ValueError, match=r"`mask` must have shape \[1, 1, 64, 64\]"):
        SourceView(image, track.camera, view.vertices, layout, mask=torch.ones(1, 1, 8, 8))
    with pytest.raises(ValueError, match="`background` must be a tensor of 3 numbers"):
        SourceView(image, track.camera, view.vertices, layout, background=torch.ones(4))
    with pytest.raises(TypeError, match="triplane_sampler"):
        SourceView(image, track.camera, view.vertices, layout, triplane_sampler=3)


def test_derived_inputs_stay_fp32_inside_a_mixed_precision_forward(track):
    """Training runs the model under autocast; the view's geometry must not drop to bf16 there."""
    head = OpenHead()
    layout = UVLayout(head, resolution=K)
    image = torch.from_numpy(track.image).permute(2, 0, 1)[None].float() / 255
    inside, outside = (make_source_view(image, track.camera, head, track.params, layout) for _ in range(2))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        pixels, visible, positions = inside.texel_pixels, inside.visibility(ZBUFFER), inside.position_map
    assert pixels.dtype == visible.dtype == positions.dtype == torch.float32
    torch.testing.assert_close(pixels, outside.texel_pixels)
    torch.testing.assert_close(visible, outside.visibility(ZBUFFER))


def test_a_view_at_another_resolution_is_refused_with_its_name(track):
    model = FHAvatarModel.from_preset("tiny", resolution=K)
    view = make_source_view(torch.rand(1, 3, 64, 64), track.camera, OpenHead(), track.params,
                            UVLayout(OpenHead(), resolution=16))
    with pytest.raises(ValueError, match=r"`view.layout` has resolution 16, but the model predicts 32"):
        model(view)
