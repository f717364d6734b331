"""Train the FHAvatar network (paper §3.5, §4.1, §B) with 🤗 accelerate: one CPU, one GPU, or many GPUs/nodes.

    accelerate launch training/train_fhavatar.py --config paper --train_data_dir DATA --output_dir runs/fhavatar
    accelerate launch --cpu --num_processes 1 training/train_fhavatar.py --config tiny-cpu --output_dir out/tiny

Runs as a file from any folder (it puts the repository root on `sys.path`, below) or as the module
`training.train_fhavatar`. `--config` takes a preset name
(`training/configs/*.yaml`) or a YAML path; every config field can be overridden (`--max_train_steps 100`,
`--loss.lambda_3d 100`, `--prior null`). See training/README.md for data preparation, multi-GPU launches,
resuming and pushing to the Hub.

The loop follows diffusers' example scripts: `Accelerator` + `ProjectConfiguration`, save/load hooks writing
`save_pretrained` folders of the `FHAvatarModel`, `checkpoint-{step}` folders pruned to `checkpoints_total_limit`,
`--resume_from_checkpoint latest`, tracker logging with periodic validation renders, and at the end a
`pipeline/` folder that `FHAvatarPipeline.from_pretrained` loads. One step is `training_step`.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import math
import os
import shutil
import sys
import typing
from dataclasses import dataclass, field
from pathlib import Path

# Run as a file (`accelerate launch training/train_fhavatar.py`, `python training/train_fhavatar.py`), Python puts
# only this script's folder on sys.path, not the repository root that holds the `fhavatar` and `training`
# packages; put the root first so the documented commands work from a fresh clone without PYTHONPATH.
# Imported as `training.train_fhavatar` (tests, `python -m`) the root is importable already: nothing changes.
if not __package__:
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch

from fhavatar.head.open_head import OpenHead
from fhavatar.head.uv import UVLayout
from fhavatar.models import FHAvatarModel
from training.config import LossConfig, TrainConfig, check_config, config_to_dict, load_config
from training.step import StepOutput, predict_attributes, render_targets, source_view, training_step, validate

__all__ = ["ConfigError", "StepOutput", "TrainResult", "main", "parse_args", "predict_attributes", "render_targets",
           "save_pipeline", "source_view", "train", "training_step", "use_workqueue_threads", "validate"]

logger = logging.getLogger(__name__)

#: Sub-folder of a checkpoint holding the `FHAvatarModel` (`save_pretrained`), and the config file beside it.
MODEL_FOLDER, CONFIG_FILE = "avatar_model", "training_config.json"


# ---------------------------------------------------------------------------------------------- arguments
def parse_args(argv: list[str] | None = None) -> TrainConfig:
    """`--config NAME_OR_YAML` plus one flag per config field (`--field`, `--loss.field`) overriding it."""
    # No prefix matching: a misspelt flag must not silently set another field.
    parser = argparse.ArgumentParser(description="Train FHAvatar (paper §3.5, §B).", allow_abbrev=False)
    parser.add_argument("--config", default="paper", help="preset name (training/configs/NAME.yaml) or a YAML path")
    flags = [(f.name, typing.get_type_hints(TrainConfig)[f.name]) for f in dataclasses.fields(TrainConfig)
             if f.name != "loss"]
    flags += [(f"loss.{f.name}", typing.get_type_hints(LossConfig)[f.name]) for f in dataclasses.fields(LossConfig)]
    for name, annotation in flags:
        kwargs = dict(default=argparse.SUPPRESS, metavar="VALUE", help=f"override `{name}`")
        if annotation is bool:  # `--push_to_hub` alone means true
            kwargs.update(nargs="?", const="true")
        parser.add_argument(f"--{name}", dest=name, **kwargs)
    known, rest = parser.parse_known_args(argv)
    args = vars(known)
    # Unknown `--key value` / `--key=value` pairs go to the config too, whose error names the key and the closest
    # valid one ("did you mean ...?").
    while rest:
        token = rest.pop(0)
        if not token.startswith("--"):
            raise ValueError(f"unexpected argument {token!r}; every option is `--key value`.")
        key, sep, value = token[2:].partition("=")
        args[key] = value if sep else (rest.pop(0) if rest and not rest[0].startswith("--") else "true")
    return load_config(args.pop("config"), args)


# ---------------------------------------------------------------------------------------------- setup helpers
def _load_prior(path: str | None, device):
    if path is None:
        return None
    from fhavatar.prior import PanoHeadPrior

    prior = PanoHeadPrior.from_pretrained(str(Path(path).expanduser()))
    prior.requires_grad_(False)  # frozen (paper §3.5): never trained, never in the optimiser
    return prior.eval().to(device)


def _load_loss_networks(loss: LossConfig, device):
    lpips = identity = None
    if loss.lpips_net is not None and (loss.lambda_lpips > 0 or loss.lambda_aux > 0):
        from fhavatar.metrics import load_lpips

        lpips = load_lpips(net=loss.lpips_net, backbone_path=loss.lpips_backbone_path,
                           allow_random=loss.lpips_allow_random).to(device)
        if not getattr(lpips, "comparable", True):
            logger.warning("LPIPS uses a randomly initialised trunk: a smoke-test loss, not a perceptual one.")
    if loss.id_network is not None and loss.lambda_id > 0:
        from fhavatar.metrics import load_identity_network

        identity = load_identity_network(loss.id_network).to(device)
        identity.requires_grad_(False)
        identity.eval()
    return lpips, identity


def _dataset_root(config: TrainConfig) -> Path:
    if config.train_data_dir is not None:
        return Path(config.train_data_dir).expanduser()
    return Path(config.output_dir).expanduser() / "synthetic"


def _make_synthetic(config: TrainConfig, root: Path) -> None:
    """Make the synthetic dataset of a `synthetic_clips > 0` run unless `root` already holds one."""
    if (root / "dataset.json").is_file():
        logger.info("using the dataset already at %s", root)
        return
    from training.make_synthetic import make_synthetic_dataset

    logger.info("making a synthetic dataset of %d clips at %s", config.synthetic_clips, root)
    make_synthetic_dataset(root, num_clips=config.synthetic_clips, frames_per_clip=config.synthetic_frames,
                           resolution=config.synthetic_resolution, num_prior_views=config.num_prior_views,
                           seed=config.seed, progress=True)


def _prepare(config: TrainConfig, accelerator):
    """The datasets, the model, the head model and its atlas, the frozen prior and the loss networks."""
    from training.dataset import FHAvatarDataset, collate_fn

    device = accelerator.device
    # The synthetic dataset is made once, by the main process; the others wait for it.
    root = _dataset_root(config)
    if config.synthetic_clips > 0:
        with accelerator.main_process_first():
            if accelerator.is_main_process:
                _make_synthetic(config, root)
    check_config(dataclasses.replace(config, train_data_dir=str(root), synthetic_clips=0))
    data_args = dict(val_fraction=config.val_fraction, num_prior_views=config.num_prior_views,
                     resolution=config.resolution, seed=config.seed)
    train_set = FHAvatarDataset(root, split="train", reconstruction_probability=config.reconstruction_probability,
                                **data_args)
    # Held-out clips in animation mode: source frame -> another frame (self-reenactment, as evaluated in §4).
    val_set = FHAvatarDataset(root, split="val" if config.val_fraction > 0 else "all", reconstruction_probability=0.0,
                              **data_args)
    count = min(config.num_validation_samples, len(val_set))
    picks = torch.linspace(0, len(val_set) - 1, count).round().long().tolist()
    val_batches = [collate_fn([val_set[i]]) for i in picks]
    # The model keeps the z-buffer size of M_v in its config, so a saved pipeline reads M_v as training did.
    model = FHAvatarModel.from_preset(config.model_preset, **{"visibility_resolution": config.visibility_resolution,
                                                              **config.model_overrides})
    head = OpenHead().to(device)
    layout = UVLayout(head, resolution=model.config.resolution).to(device)
    prior = _load_prior(config.prior, device)
    if prior is not None and prior.triplane_channels != model.config.triplane_channels:
        raise ValueError(f"`prior` gives {prior.triplane_channels} tri-plane channels but the model expects "
                         f"{model.config.triplane_channels}; set `model_overrides: {{triplane_channels: "
                         f"{prior.triplane_channels}}}`.")
    lpips, identity = _load_loss_networks(config.loss, device)
    return train_set, val_batches, model, head, layout, prior, lpips, identity


def _checkpoints(output_dir: Path) -> list[Path]:
    """`checkpoint-{step}` folders, oldest first."""
    found = [p for p in output_dir.glob("checkpoint-*") if p.is_dir() and p.name.split("-")[1].isdigit()]
    return sorted(found, key=lambda p: int(p.name.split("-")[1]))


def _resolve_resume(config: TrainConfig, output_dir: Path) -> Path | None:
    if config.resume_from_checkpoint is None:
        return None
    if config.resume_from_checkpoint == "latest":
        found = _checkpoints(output_dir)
        if not found:
            logger.info("`resume_from_checkpoint` is 'latest' but %s holds no checkpoint: starting a new run", output_dir)
        return found[-1] if found else None
    path = Path(config.resume_from_checkpoint).expanduser()
    path = path if path.is_absolute() or path.exists() else output_dir / path
    if not (path.is_dir() and (path / MODEL_FOLDER).is_dir()):
        raise ValueError(f"`resume_from_checkpoint`: {str(path)!r} is not a checkpoint folder (no {MODEL_FOLDER}/).")
    return path


def _tracker_config(config: TrainConfig) -> dict:
    """Flat scalar hyper-parameters for the tracker (tensorboard's hparams take numbers and strings only)."""
    values = config_to_dict(config)
    values.update({f"loss.{k}": v for k, v in values.pop("loss").items()})
    return {k: v if isinstance(v, (int, float, str, bool)) else json.dumps(v) for k, v in values.items()}


# ---------------------------------------------------------------------------------------------- the loop
class ConfigError(ValueError):
    """A configuration problem found while setting up (dataset, prior, loss networks, checkpoint to resume)."""


@dataclass
class TrainResult:
    """What `train` returns: the history of validations and logs, the final step and the pipeline folder."""

    global_step: int
    history: list[dict] = field(default_factory=list)
    pipeline_dir: Path | None = None


def use_workqueue_threads() -> None:
    """Run the CPU rasteriser's numba kernels on numba's own "workqueue" thread pool (unless the user chose one).

    With numba's default OpenMP layer, every CPU render leaves OpenMP threads spinning that then compete with
    torch's own OpenMP pool: measured here, the tiny model's forward pass took 30x more CPU time after a render
    (0.06 s -> 1.9 s). The layer is picked at the first parallel launch, so call this before any render.
    """
    import numba

    if "NUMBA_THREADING_LAYER" not in os.environ:
        numba.config.THREADING_LAYER = "workqueue"


def save_pipeline(model: FHAvatarModel, prior, config: TrainConfig, output_dir: Path, global_step: int,
                  metrics: dict[str, float] | None = None) -> Path:
    """Write `output_dir/pipeline` (`FHAvatarPipeline.from_pretrained` loads it); push it when `config.push_to_hub`.

    The pipeline holds the trained model, a fresh `OpenHead` and the (frozen) prior, with the training background.
    The Hub repo is `config.hub_model_id`, or the output folder's name; `metrics` go into its model card.
    """
    from fhavatar.pipeline_fhavatar import FHAvatarPipeline

    pipeline = FHAvatarPipeline(avatar_model=model, head_model=OpenHead(), prior=prior,
                                resolution=model.config.resolution, background=config.background,
                                full_head=False)  # trained on bare heads: no shell or bust at inference
    folder = Path(output_dir) / "pipeline"
    pipeline.save_pretrained(folder)
    logger.info("saved the pipeline to %s (FHAvatarPipeline.from_pretrained loads it)", folder)
    if config.push_to_hub:
        repo_id = config.hub_model_id or Path(output_dir).name
        pipeline.push_to_hub(repo_id, token=config.hub_token, metrics=metrics or None,
                             commit_message=f"FHAvatar trained for {global_step} steps")
        logger.info("pushed the pipeline to the Hub repo %s", repo_id)
    return folder


def train(config: TrainConfig) -> TrainResult:
    """Run training as configured (call `check_config` first; `main` does)."""
    from accelerate import Accelerator
    from accelerate.utils import DistributedDataParallelKwargs, ProjectConfiguration, set_seed
    from diffusers.optimization import get_scheduler
    from torch.utils.data import DataLoader
    from tqdm.auto import tqdm

    from training.dataset import collate_fn

    use_workqueue_threads()
    output_dir = Path(config.output_dir).expanduser().resolve()
    project = ProjectConfiguration(project_dir=str(output_dir), logging_dir=str(output_dir / config.logging_dir))
    # With a prior, the model's learned stand-in for its features (`mean_triplane_features`) gets no gradient,
    # which DDP must be told about.
    ddp = DistributedDataParallelKwargs(find_unused_parameters=config.prior is not None)
    accelerator = Accelerator(gradient_accumulation_steps=config.gradient_accumulation_steps,
                              mixed_precision=config.mixed_precision,
                              log_with=None if config.report_to == "none" else config.report_to,
                              project_config=project, kwargs_handlers=[ddp])
    logging.basicConfig(format="%(asctime)s %(levelname)s %(name)s: %(message)s", level=logging.INFO)
    set_seed(config.seed)
    device = accelerator.device
    if accelerator.is_main_process:
        output_dir.mkdir(parents=True, exist_ok=True)
        (output_dir / CONFIG_FILE).write_text(json.dumps(config_to_dict(config), indent=2) + "\n")

    # 1-2. Data and models; anything wrong with them is a configuration error (one message, no traceback).
    try:
        train_set, val_batches, model, head, layout, prior, lpips, identity = _prepare(config, accelerator)
    except (ValueError, FileNotFoundError) as err:
        raise ConfigError(str(err)) from err
    background = torch.tensor(config.background, dtype=torch.float32, device=device)
    loader = DataLoader(train_set, batch_size=config.train_batch_size, shuffle=True, collate_fn=collate_fn,
                        num_workers=config.dataloader_num_workers, drop_last=len(train_set) >= config.train_batch_size)

    def save_model_hook(models, weights, folder):
        if accelerator.is_main_process:
            for m in models:
                accelerator.unwrap_model(m).save_pretrained(Path(folder) / MODEL_FOLDER)
                weights.pop()  # saved above; accelerate must not pickle it again
            (Path(folder) / CONFIG_FILE).write_text(json.dumps(config_to_dict(config), indent=2) + "\n")

    def load_model_hook(models, folder):
        for _ in range(len(models)):
            m, loaded = models.pop(), FHAvatarModel.from_pretrained(Path(folder) / MODEL_FOLDER)
            # A checkpoint older than a config field gets that field's default: the running model's value stays.
            defaulted = set(loaded.config.get("_use_default_values", ()))
            m.register_to_config(**{k: v for k, v in loaded.config.items() if k not in defaulted})
            m.load_state_dict(loaded.state_dict())

    accelerator.register_save_state_pre_hook(save_model_hook)
    accelerator.register_load_state_pre_hook(load_model_hook)

    optimizer = torch.optim.AdamW(model.parameters(), lr=config.learning_rate,
                                  betas=(config.adam_beta1, config.adam_beta2), eps=config.adam_epsilon,
                                  weight_decay=config.adam_weight_decay)
    lr_scheduler = get_scheduler(config.lr_scheduler, optimizer,
                                 num_warmup_steps=config.lr_warmup_steps * accelerator.num_processes,
                                 num_training_steps=config.max_train_steps * accelerator.num_processes)
    model, optimizer, loader, lr_scheduler = accelerator.prepare(model, optimizer, loader, lr_scheduler)
    steps_per_epoch = max(1, math.ceil(len(loader) / config.gradient_accumulation_steps))
    num_epochs = math.ceil(config.max_train_steps / steps_per_epoch)
    if accelerator.is_main_process and config.report_to != "none":
        accelerator.init_trackers("fhavatar", config=_tracker_config(config))

    # 3. Resume.
    global_step, first_epoch, resume_batches = 0, 0, 0
    try:
        resume = _resolve_resume(config, output_dir)
    except ValueError as err:
        raise ConfigError(str(err)) from err
    if resume is not None:
        accelerator.print(f"Resuming from {resume}")
        accelerator.load_state(str(resume))
        global_step = int(resume.name.split("-")[1])
        first_epoch = global_step // steps_per_epoch
        resume_batches = (global_step % steps_per_epoch) * config.gradient_accumulation_steps

    logger.info("training: %d train frames (%s), %d held-out samples, %d steps of %d x %d x %d process(es)",
                len(train_set), train_set.root, len(val_batches), config.max_train_steps, config.train_batch_size,
                config.gradient_accumulation_steps, accelerator.num_processes)
    result = TrainResult(global_step=global_step)
    # `prepare` wraps the model's forward in autocast + an fp32 conversion of its outputs that cannot rebuild
    # `UVAttributes`; drop that wrapper and autocast the model's forward in `predict_attributes` instead.
    unwrapped = accelerator.unwrap_model(model, keep_fp32_wrapper=False)

    def run_validation():
        metrics, grid = validate(unwrapped, head, layout, prior, val_batches, background, autocast=accelerator.autocast)
        accelerator.log(metrics, step=global_step)
        logger.info("step %d: held-out L1 %.4f, PSNR %.2f dB", global_step, metrics["val/l1"], metrics["val/psnr"])
        for tracker in accelerator.trackers:
            if tracker.name == "tensorboard":
                tracker.writer.add_image("validation", grid.clamp(0, 1), global_step)
        return metrics

    def save_checkpoint():
        if accelerator.is_main_process:
            if config.checkpoints_total_limit is not None:
                existing = _checkpoints(output_dir)
                for old in existing[: max(0, len(existing) - config.checkpoints_total_limit + 1)]:
                    shutil.rmtree(old)
            path = output_dir / f"checkpoint-{global_step}"
            accelerator.save_state(str(path))
            logger.info("saved %s", path)

    if accelerator.is_main_process and config.validation_steps and global_step == 0:
        result.history.append({"step": 0, "loss": None, **run_validation()})
    progress = tqdm(range(config.max_train_steps), initial=global_step, desc="steps",
                    disable=not accelerator.is_local_main_process)
    last_saved = global_step if resume is not None else -1
    for epoch in range(first_epoch, num_epochs):
        if global_step >= config.max_train_steps:
            break
        train_set.set_epoch(epoch)
        model.train()
        batches = loader
        if epoch == first_epoch and resume_batches:
            batches = accelerator.skip_first_batches(loader, resume_batches)
        for batch in batches:
            with accelerator.accumulate(model):
                out = training_step(batch, model, head, layout, prior, config.loss, global_step, lpips, identity,
                                    background, autocast=accelerator.autocast)
                accelerator.backward(out.loss)
                if accelerator.sync_gradients and config.max_grad_norm > 0:
                    accelerator.clip_grad_norm_(model.parameters(), config.max_grad_norm)
                optimizer.step()
                lr_scheduler.step()
                optimizer.zero_grad(set_to_none=True)
            if not accelerator.sync_gradients:
                continue
            global_step += 1
            progress.update(1)
            logs = {**out.logs, "lr": lr_scheduler.get_last_lr()[0]}
            progress.set_postfix(loss=f"{logs['loss/total']:.4f}")
            if global_step % config.logging_steps == 0 or global_step == config.max_train_steps:
                accelerator.log(logs, step=global_step)
            if config.checkpointing_steps and global_step % config.checkpointing_steps == 0:
                save_checkpoint()
                last_saved = global_step
            if accelerator.is_main_process and config.validation_steps and global_step % config.validation_steps == 0:
                result.history.append({"step": global_step, "loss": logs["loss/total"], **run_validation()})
            if global_step >= config.max_train_steps:
                break

    # 4. Final checkpoint, validation and the pipeline folder.
    accelerator.wait_for_everyone()
    if last_saved != global_step:
        save_checkpoint()
    result.global_step = global_step
    if accelerator.is_main_process:
        if not result.history or result.history[-1]["step"] != global_step:
            result.history.append({"step": global_step, "loss": None, **run_validation()})
        metrics = {k: round(v, 4) for k, v in result.history[-1].items() if k.startswith("val/")}
        result.pipeline_dir = save_pipeline(unwrapped, prior, config, output_dir, global_step, metrics)
    accelerator.end_training()
    return result


def main(argv: list[str] | None = None) -> int:
    """Parse, check, train. Configuration errors print one line and exit with status 2 (no traceback)."""
    try:
        config = parse_args(argv)
        check_config(config)
    except (ValueError, FileNotFoundError) as err:
        print(f"train_fhavatar.py: error: {err}", file=sys.stderr)
        return 2
    try:
        train(config)
    except ConfigError as err:
        print(f"train_fhavatar.py: error: {err}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
