"""`training/train_fhavatar.py`: the training step (renders, losses, gradients, frozen prior), and the accelerate
script end to end (checkpoints, resume, pipeline folder)."""

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from fhavatar.avatar import Avatar
from fhavatar.head.open_head import OpenHead, OpenHeadParams
from fhavatar.head.uv import UVLayout
from fhavatar.models import FHAvatarModel
from fhavatar.rendering import Camera, render_gaussians
from tests.training import REPO, tiny_synthetic_dataset
from training.config import load_config
from training.dataset import FHAvatarDataset, collate_fn
from training.train_fhavatar import predict_attributes, render_targets, training_step, use_workqueue_threads

WHITE = torch.ones(3)


@pytest.fixture(scope="module")
def setup():
    use_workqueue_threads()
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny tensors: one intra-op thread is faster and immune to a busy machine
    torch.manual_seed(0)
    model = FHAvatarModel.from_preset("tiny", visibility_resolution=48)
    head = OpenHead()
    layout = UVLayout(head, resolution=model.config.resolution)
    data = FHAvatarDataset(tiny_synthetic_dataset(), split="all", reconstruction_probability=0.5)
    modes = {}
    for i in range(len(data)):
        modes.setdefault(data[i]["mode"], i)
    assert set(modes) == {"animation", "reconstruction"}
    batch = collate_fn([data[modes["reconstruction"]], data[modes["animation"]]])
    yield model, head, layout, batch
    torch.set_num_threads(threads)


def _loss_config(**overrides):
    return load_config("tiny-cpu", {f"loss.{k}": v for k, v in overrides.items()}).loss


def test_training_step_losses_and_gradients(setup):
    model, head, layout, batch = setup
    loss = _loss_config()
    model.zero_grad()
    out = training_step(batch, model, head, layout, None, loss, step=loss.regularizer_start_step, background=WHITE)
    expected = {"l1", "alpha", "aux_l1", "aux_alpha", "tv_3d", "eye", "pos", "shape", "shape_tv", "total"}
    assert {k.split("/")[1] for k in out.logs} == expected
    assert torch.isfinite(out.loss) and out.loss.item() == pytest.approx(out.logs["loss/total"])
    assert out.images.shape == (2 * 3, 3, 48, 48)
    # the animation item's padding slots are not rendered: background only
    torch.testing.assert_close(out.images[4:], torch.ones(2, 3, 48, 48))
    out.loss.backward()
    for name in ("decoder.out_conv.weight", "refiner.out_conv.weight", "mean_triplane_features"):
        grad = dict(model.named_parameters())[name].grad
        assert grad is not None and grad.abs().sum() > 0, name
    early = training_step(batch, model, head, layout, None, loss, step=0, background=WHITE)
    assert not {"loss/tv_3d", "loss/eye", "loss/shape_tv"} & set(early.logs)


def test_padding_slots_do_not_change_the_loss(setup):
    model, head, layout, batch = setup
    loss = _loss_config()
    changed = dict(batch, target_images=batch["target_images"].clone())
    changed["target_images"][1, 1:] = torch.rand(2, 3, 48, 48)  # the animation item's padding slots
    with torch.no_grad():
        a = training_step(batch, model, head, layout, None, loss, 100, background=WHITE)
        b = training_step(changed, model, head, layout, None, loss, 100, background=WHITE)
        changed["target_images"][0, 1] = torch.rand(3, 48, 48)  # a real prior view of the reconstruction item
        c = training_step(changed, model, head, layout, None, loss, 100, background=WHITE)
    assert a.logs == b.logs
    assert c.logs["loss/l1"] != a.logs["loss/l1"]


def test_render_targets_matches_a_direct_render(setup):
    """Batched renders (one call per item, all its cameras) equal rendering each target view on its own."""
    model, head, layout, batch = setup
    with torch.no_grad():
        attributes, _, params = predict_attributes(batch, model, head, layout, None, WHITE, return_aux=False)
        images, alphas, geometry = render_targets(attributes, params, batch, head, layout, WHITE, "uv")
        assert geometry.shape == (6, 2, 48, 48)
        for view in range(3):  # the reconstruction item: the frame and its two prior views
            avatar = Avatar.from_attributes(attributes, layout, head, params, batch_index=0)
            target = OpenHeadParams(**{k: v[0, view : view + 1] for k, v in batch["target_params"].items()})
            camera = Camera(batch["target_cam2world"][0, view], batch["target_intrinsics"][0, view])
            ref = render_gaussians(avatar.gaussians(target), camera, 48, 48, background=WHITE, features=layout.sample_uv)
            torch.testing.assert_close(images[view], ref.image[0], atol=1e-5, rtol=0)
            torch.testing.assert_close(alphas[view], ref.alpha[0], atol=1e-5, rtol=0)
            torch.testing.assert_close(geometry[view], ref.features[0], atol=1e-5, rtol=0)
    assert alphas[0].mean() > 0.1  # the head is in view


def test_a_few_steps_fit_one_batch(setup):
    _, head, layout, batch = setup
    torch.manual_seed(1)
    model = FHAvatarModel.from_preset("tiny", visibility_resolution=48)
    loss = _loss_config(regularizer_start_step=10**6)
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)
    values = []
    for _ in range(6):
        out = training_step(batch, model, head, layout, None, loss, 0, background=WHITE)
        optimizer.zero_grad()
        out.loss.backward()
        optimizer.step()
        values.append(out.logs["loss/l1"] + out.logs["loss/alpha"])
    assert values[-1] < 0.8 * values[0], values


def test_the_prior_stays_frozen(setup):
    from fhavatar.prior import PanoHeadPrior

    _, head, layout, batch = setup
    prior = PanoHeadPrior.from_preset("tiny")
    before = {k: v.clone() for k, v in prior.state_dict().items()}
    model = FHAvatarModel.from_preset("tiny", triplane_channels=prior.triplane_channels, visibility_resolution=48)
    loss = _loss_config()
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    out = training_step(batch, model, head, layout, prior, loss, 0, background=WHITE)
    out.loss.backward()
    optimizer.step()
    assert all(p.grad is None for p in prior.parameters())
    assert all(torch.equal(before[k], v) for k, v in prior.state_dict().items())
    # the tri-plane features reach the refiner: Δp is trained through the prior's sampler
    assert model.refiner.out_conv.weight.grad.abs().sum() > 0


def test_synthetic_dataset_is_made_once(tmp_path, monkeypatch):
    """A `synthetic_clips > 0` run makes its dataset with the configured sizes, and re-uses it afterwards."""
    import training.make_synthetic
    from training.train_fhavatar import _dataset_root, _make_synthetic

    calls, made = [], tiny_synthetic_dataset()

    def fake(root, **kwargs):
        calls.append(kwargs)
        shutil.copytree(made, root)

    monkeypatch.setattr(training.make_synthetic, "make_synthetic_dataset", fake)
    config = load_config("tiny-cpu", {"output_dir": str(tmp_path / "run"), "synthetic_clips": 3,
                                      "synthetic_frames": 5, "synthetic_resolution": 40, "seed": 7})
    root = _dataset_root(config)
    assert root == tmp_path / "run" / "synthetic"
    _make_synthetic(config, root)
    _make_synthetic(config, root)
    assert calls == [dict(num_clips=3, frames_per_clip=5, resolution=40, num_prior_views=2, seed=7, progress=True)]
    assert _dataset_root(load_config("tiny-cpu", {"train_data_dir": "/data/x"})) == Path("/data/x")


def _launch(args, cwd):
    accelerate = Path(sys.executable).parent / "accelerate"
    command = [str(accelerate), "launch", "--cpu", "--num_processes", "1", "--num_machines", "1",
               "--mixed_precision", "no", "--dynamo_backend", "no", str(REPO / "training" / "train_fhavatar.py"),
               *args]
    # One intra-op thread: the tensors are tiny, and a second thread only waits on a busy machine.
    env = dict(os.environ, PYTHONPATH=str(REPO), HF_HUB_OFFLINE="1", HF_HUB_DISABLE_TELEMETRY="1", OMP_NUM_THREADS="1")
    return subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True, timeout=600)


def test_accelerate_launch_checkpoints_resume_and_pipeline(tmp_path):
    """The issue-9 acceptance: `accelerate launch --cpu` of the tiny-cpu preset (synthetic data made on the fly)
    trains, checkpoints, resumes from `latest` continuing the step count, and writes a loadable pipeline."""
    from safetensors.torch import load_file

    from fhavatar import FHAvatarPipeline

    out = tmp_path / "run"
    # The preset's synthetic data: the session's tiny dataset stands in for the one the run would make
    # (`test_synthetic_dataset_is_made_once` covers making it), which saves tracking photos in the subprocess.
    shutil.copytree(tiny_synthetic_dataset(), out / "synthetic")
    common = ["--config", "tiny-cpu", "--output_dir", str(out), "--num_prior_views", "1", "--train_batch_size", "1",
              "--checkpointing_steps", "1", "--checkpoints_total_limit", "1", "--validation_steps", "0",
              "--num_validation_samples", "1", "--visibility_resolution", "32"]
    first = _launch([*common, "--max_train_steps", "2"], tmp_path)
    assert first.returncode == 0, first.stderr[-3000:]
    assert "using the dataset already at" in first.stderr
    assert sorted(p.name for p in out.glob("checkpoint-*")) == ["checkpoint-2"]  # checkpoint-1 pruned
    assert (out / "checkpoint-2" / "avatar_model" / "diffusion_pytorch_model.safetensors").is_file()
    assert list((out / "logs").rglob("events.out.tfevents.*"))
    step2 = load_file(out / "checkpoint-2" / "avatar_model" / "diffusion_pytorch_model.safetensors")
    shutil.copytree(out / "checkpoint-2", tmp_path / "checkpoint-2-copy")

    second = _launch([*common, "--max_train_steps", "3", "--resume_from_checkpoint", "latest"], tmp_path)
    assert second.returncode == 0, second.stderr[-3000:]
    assert "Resuming from" in second.stdout + second.stderr and "checkpoint-2" in second.stdout + second.stderr
    assert sorted(p.name for p in out.glob("checkpoint-*")) == ["checkpoint-3"]
    step3 = load_file(out / "checkpoint-3" / "avatar_model" / "diffusion_pytorch_model.safetensors")
    assert any(not torch.equal(step2[k], step3[k]) for k in step2)  # one more optimisation step

    pipe = FHAvatarPipeline.from_pretrained(out / "pipeline")
    assert type(pipe.avatar_model).__name__ == "FHAvatarModel" and pipe.prior is None
    assert pipe.config.resolution == pipe.avatar_model.config.resolution == 32
    assert pipe.config.background == [1.0, 1.0, 1.0]
    loaded = pipe.avatar_model.state_dict()
    assert all(torch.equal(loaded[k], step3[k]) for k in step3)


def test_save_pipeline_and_push_to_hub(tmp_path, monkeypatch):
    """The final pipeline folder loads; with `push_to_hub` it is uploaded through `FHAvatarPipeline.push_to_hub`
    (replaced here: tests never reach the Hub)."""
    from fhavatar import FHAvatarPipeline
    from training.train_fhavatar import save_pipeline

    pushed = []
    monkeypatch.setattr(FHAvatarPipeline, "push_to_hub", lambda self, repo_id, **kw: pushed.append((repo_id, kw)))
    model = FHAvatarModel.from_preset("tiny", visibility_resolution=48)
    config = load_config("tiny-cpu", {"push_to_hub": True, "background": [0.0, 0.0, 0.0]})
    folder = save_pipeline(model, None, config, tmp_path / "my-run", 12, {"val/psnr": 21.5})
    assert pushed == [("my-run", dict(token=None, metrics={"val/psnr": 21.5},
                                      commit_message="FHAvatar trained for 12 steps"))]
    pipe = FHAvatarPipeline.from_pretrained(folder)
    assert pipe.config.background == [0.0, 0.0, 0.0] and pipe.prior is None
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in pipe.avatar_model.state_dict().items())
    save_pipeline(model, None, load_config("tiny-cpu", {"push_to_hub": True, "hub_model_id": "me/fh"}), tmp_path, 1)
    assert pushed[-1][0] == "me/fh" and pushed[-1][1]["metrics"] is None


@pytest.mark.gpu
def test_two_steps_on_cuda(setup):
    batch = setup[3]
    device = torch.device("cuda")
    torch.manual_seed(0)
    model = FHAvatarModel.from_preset("tiny", visibility_resolution=48).to(device)
    head = OpenHead().to(device)
    layout = UVLayout(head, resolution=model.config.resolution).to(device)
    loss = _loss_config()
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    values = []
    for step in (loss.regularizer_start_step, loss.regularizer_start_step + 1):
        out = training_step(batch, model, head, layout, None, loss, step, background=WHITE.to(device))
        optimizer.zero_grad()
        out.loss.backward()
        optimizer.step()
        values.append(out.loss.item())
        assert out.images.device.type == "cuda" and "loss/tv_3d" in out.logs
    assert all(torch.isfinite(torch.tensor(values))) and values[0] != values[1]
