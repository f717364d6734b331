"""Hostile model folders and settings: a pipeline folder (or Hub repo) is data, and may not hang every request, read
"no" as True, put a module in the wrong role or carry damaged weights. Each is refused when the pipeline is built or
loaded, with one line naming the setting or module."""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from .catalogue import handled, refused

NAN = float("nan")


@pytest.fixture(scope="module")
def saved(tmp_path_factory) -> Path:
    from fhavatar import FHAvatarPipeline

    folder = tmp_path_factory.mktemp("pipe") / "saved"
    FHAvatarPipeline.default(resolution=16).save_pretrained(folder)
    return folder


def _variant(saved: Path, tmp_path: Path, edit) -> Path:
    folder = tmp_path / "variant"
    shutil.copytree(saved, folder)
    edit(folder)
    return folder


def _json(rel: str, **values):
    def edit(folder: Path) -> None:
        data = json.loads((folder / rel).read_text())
        data.update(values)
        (folder / rel).write_text(json.dumps(data))

    return edit


def _module_as(role: str, module: str, source: str):
    """`model_index.json` names `module` in `role`, whose folder holds the files saved for `source`."""
    classes = {"head_model": ["fhavatar.head.open_head", "OpenHead"],
               "avatar_model": ["fhavatar.models.projection_avatar", "ProjectionAvatarModel"]}

    def edit(folder: Path) -> None:
        _json("model_index.json", **{role: classes[module]})(folder)
        shutil.rmtree(folder / role, ignore_errors=True)
        shutil.copytree(folder / source, folder / role)

    return edit


def _poison(role: str):
    def edit(folder: Path) -> None:
        for file in (folder / role).glob("*.safetensors"):
            tensors = load_file(file)
            save_file({k: torch.full_like(v, NAN) if v.is_floating_point() else v for k, v in tensors.items()}, file)

    return edit


@pytest.mark.parametrize("values, match", [
    ({"smoothing": 1e9}, r"model_index\.json.*`smoothing` must be a number in \[0, 30\].*got 1000000000"),
    ({"smoothing": -1}, r"`smoothing` must be a number in \[0, 30\]"),
    ({"use_mask": "no"}, r"`use_mask` must be True or False, got 'no'"),
    ({"use_mask": 1}, r"`use_mask` must be True or False, got 1"),
    ({"full_head": "yes"}, r"`full_head` must be True or False, or None"),
    ({"background": "101"}, r"`background` must be 3 numbers in \[0, 1\]"),
    ({"background": [-1, -1, -1]}, r"`background` must be 3 numbers in \[0, 1\]"),
    ({"orbit_elevation": 1e6}, r"`orbit_elevation` must be a number in \[-89, 89\]"),
    ({"resolution": 10**6}, r"`resolution` must be an int in \[8, 2048\]"),
])
def test_out_of_range_settings_are_refused_at_load(saved, tmp_path, values, match):
    from fhavatar import FHAvatarPipeline

    folder = _variant(saved, tmp_path, _json("model_index.json", **values))
    refused(f"model_index.json {values}", lambda: FHAvatarPipeline.from_pretrained(folder), match, limit_s=30)


def test_settings_are_checked_when_built_or_overridden(saved):
    from fhavatar import FHAvatarPipeline

    refused("FHAvatarPipeline.default(smoothing=1e9)", lambda: FHAvatarPipeline.default(resolution=16, smoothing=1e9),
            r"^`smoothing` must be a number in \[0, 30\]")
    refused("FHAvatarPipeline.default(use_mask='no')", lambda: FHAvatarPipeline.default(resolution=16, use_mask="no"),
            r"^`use_mask` must be True or False")
    refused("from_pretrained(smoothing=1e9) override", lambda: FHAvatarPipeline.from_pretrained(saved, smoothing=1e9),
            r"^`smoothing` must be")  # the caller's value: not blamed on the file

    def bounded(pipe):
        assert pipe.config.smoothing == 30.0 and pipe.config.use_mask is False

    handled("settings at the edge of their range", lambda: FHAvatarPipeline.from_pretrained(
        saved, smoothing=30, use_mask=False), bounded)


def test_largest_smoothing_stays_fast():
    """The top of `smoothing`'s range costs seconds, not days: the temporal filter over 300 tracked frames."""
    import numpy as np

    from fhavatar import FHAvatarPipeline
    from fhavatar.tracking.smoothing import smooth_sequence

    top = FHAvatarPipeline.config_settings["smoothing"].hi

    def smooth():
        start = time.perf_counter()
        out = smooth_sequence(np.random.default_rng(0).normal(size=(300, 478, 3)), top)
        return out.shape, time.perf_counter() - start

    def fast(result):
        shape, seconds = result
        assert shape == (300, 478, 3) and seconds < 20, f"smoothing {top} took {seconds:.1f} s"

    handled(f"smoothing {top:g} over 300 frames", smooth, fast)


@pytest.mark.parametrize("role, module, source, match", [
    ("prior", "head_model", "head_model", r"`prior` must be None or a 3D prior .*got OpenHead"),
    ("head_model", "avatar_model", "avatar_model", r"`head_model` must be a head model .*got ProjectionAvatarModel"),
    ("avatar_model", "head_model", "head_model", r"`avatar_model` must be an avatar model .*got OpenHead"),
])
def test_modules_in_the_wrong_role_are_refused(saved, tmp_path, role, module, source, match):
    from fhavatar import FHAvatarPipeline

    folder = _variant(saved, tmp_path, _module_as(role, module, source))
    refused(f"a {module} registered as {role}", lambda: FHAvatarPipeline.from_pretrained(folder), match, limit_s=30)


@pytest.mark.parametrize("role", ["head_model", "avatar_model"])
def test_non_finite_weights_are_refused_at_load(saved, tmp_path, role):
    from fhavatar import FHAvatarPipeline

    folder = _variant(saved, tmp_path, _poison(role))
    refused(f"all-NaN {role} weights", lambda: FHAvatarPipeline.from_pretrained(folder),
            rf"^`{role}` \(.*\): the weight `\w+` holds \d+ NaN/inf value\(s\)", limit_s=30)


def test_a_module_config_out_of_range_names_the_module(saved, tmp_path):
    from fhavatar import FHAvatarPipeline

    folder = _variant(saved, tmp_path, _json("avatar_model/config.json", refine_steps=10**9))
    refused("avatar_model/config.json refine_steps=1e9", lambda: FHAvatarPipeline.from_pretrained(folder),
            r"^`avatar_model` \(.*\): `refine_steps` must be an int in \[0, 100\]", limit_s=30)


def test_modules_in_the_wrong_role_are_refused_when_built():
    from fhavatar import FHAvatarPipeline
    from fhavatar.head.open_head import OpenHead
    from fhavatar.models import ProjectionAvatarModel

    head = OpenHead()
    refused("FHAvatarPipeline(prior=OpenHead())",
            lambda: FHAvatarPipeline(avatar_model=ProjectionAvatarModel(), head_model=head, prior=head, resolution=16),
            r"`prior` must be None or a 3D prior")
    refused("FHAvatarPipeline(head_model=None)",
            lambda: FHAvatarPipeline(avatar_model=ProjectionAvatarModel(), head_model=None, resolution=16),
            r"`head_model` must be a head model .*got NoneType")


@pytest.fixture(scope="module")
def avatar(pipe):
    return pipe.reconstruct(Path(__file__).resolve().parents[2] / "examples" / "astronaut.png")


def test_streaming_calls_check_their_arguments_before_the_first_frame(pipe, avatar):
    """`render_views` / `iter_animate` return generators: their arguments are checked when called, not when the
    first frame is asked for (a bad call fails at once, not after a long run of other work)."""
    from fhavatar.rendering import Camera

    refused("render_views(avatar='photo.jpg')", lambda: pipe.render_views("photo.jpg", Camera.orbit(2)),
            r"^`avatar` must be an fhavatar Avatar")
    refused("render_views(cameras=[...])", lambda: pipe.render_views(avatar, [1, 2]), r"^`cameras` must be a Camera")
    refused("render_views(3601 cameras)", lambda: pipe.render_views(avatar, Camera.orbit(3601)),
            r"^`cameras` must hold 1 to 3600 views, got 3601")
    refused("iter_animate(mode='sideways')", lambda: pipe.iter_animate(avatar, [avatar.source_track], mode="sideways"),
            r"^`mode` must be")
