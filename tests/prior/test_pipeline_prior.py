"""The pipeline with a prior: tiny PanoHeadPrior + tiny FHAvatarModel end to end, and a save/load round trip."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from fhavatar import FHAvatarPipeline
from fhavatar.head import OpenHead
from fhavatar.models import FHAvatarModel
from fhavatar.prior import PanoHeadPrior

PHOTO = Path(__file__).resolve().parents[2] / "examples" / "astronaut.png"  # public domain (NASA)
K = 32


@pytest.fixture(scope="module")
def prior_pipe():
    torch.manual_seed(0)
    prior = PanoHeadPrior.from_preset("tiny")
    channels = prior.config.generator_config["triplane_channels"]  # C of sample(): PanoHead averages the planes
    model = FHAvatarModel.from_preset("tiny", resolution=K, triplane_channels=channels).eval()
    pipe = FHAvatarPipeline(avatar_model=model, head_model=OpenHead(), prior=prior, resolution=K)
    pipe.set_progress_bar_config(disable=True)
    return pipe


def test_prior_features_reach_the_avatar(prior_pipe):
    """With the prior the attribute maps depend on its tri-grid: zeroing the prior's output changes the avatar."""
    avatar = prior_pipe.reconstruct(PHOTO)
    assert len(avatar) > 0 and torch.isfinite(avatar.colors).all()
    frames = prior_pipe.orbit(avatar, num_frames=2, height=48, width=48)
    assert frames.shape == (2, 3, 48, 48) and torch.isfinite(frames).all()

    original = prior_pipe.prior.sample
    try:
        prior_pipe.prior.sample = lambda triplane, points: torch.zeros_like(original(triplane, points))
        without = prior_pipe.reconstruct(PHOTO)
    finally:
        prior_pipe.prior.sample = original
    assert not torch.allclose(without.colors, avatar.colors)


def test_pipeline_with_prior_round_trips(prior_pipe, tmp_path):
    prior_pipe.save_pretrained(tmp_path)
    assert (tmp_path / "prior" / "config.json").is_file()
    assert not list(tmp_path.rglob("*.bin")) and not list(tmp_path.rglob("*.pkl"))
    loaded = FHAvatarPipeline.from_pretrained(tmp_path)
    loaded.set_progress_bar_config(disable=True)
    assert isinstance(loaded.prior, PanoHeadPrior)
    assert not any(p.requires_grad for p in loaded.prior.parameters())
    a, b = prior_pipe.reconstruct(PHOTO), loaded.reconstruct(PHOTO)
    torch.testing.assert_close(b.colors, a.colors)
    torch.testing.assert_close(b.offsets, a.offsets)
