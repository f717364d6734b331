"""The typed training configuration: dataclasses with one comment per field, YAML presets and CLI overrides.

A run is described by one `TrainConfig`. It is read from a YAML file (a preset name such as `tiny-cpu`, resolved
to `training/configs/<name>.yaml`, or a path), then individual fields are overridden from the command line:
top-level fields as `--field VALUE`, loss fields as `--loss.field VALUE`. Values are parsed as YAML scalars
(`--prior null`, `--max_train_steps 20`, `--background "[1, 1, 1]"`), then type-checked against the field
annotations, so an unknown key or a wrong type is one clear `ValueError`, never a traceback from deep inside.

`check_config` then validates what depends on the outside world (dataset folder, manifest, head model, prior,
tracker, devices) before any model is built.
"""

from __future__ import annotations

import dataclasses
import difflib
import json
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Union

from training.losses import LossWeights

__all__ = [
    "CONFIG_DIR",
    "HEAD_MODELS",
    "LossConfig",
    "TrainConfig",
    "check_config",
    "config_to_dict",
    "load_config",
    "preset_names",
    "resolve_config_path",
]

#: Folder of the YAML presets (next to this module, never relative to the working directory).
CONFIG_DIR = Path(__file__).resolve().parent / "configs"
#: Head models the trainer can build, by the key a dataset's `dataset.json` stores in "head_model".
HEAD_MODELS = ("open_head",)
#: `format` and `version` a dataset's `dataset.json` must carry (the training dataset contract).
DATASET_FORMAT, DATASET_VERSION = "fhavatar-dataset", 1


@dataclass
class LossConfig(LossWeights):
    """Loss weights and schedule (`LossWeights`, paper eq. 9-10 and §B) plus how each loss is computed."""

    # Threshold ε of the shape-offset hinge L_shape (eq. 7), head units.
    epsilon: float = 0.1
    # Geometry TV regulariser weighted by lambda_3d: "3d" = L_3d on position renders (eq. 6, the paper's),
    # "uv" = GGHead's L_uv on UV-coordinate renders (the Tab. 3 alternative), "none" = off.
    geometry_tv: Literal["3d", "uv", "none"] = "3d"
    # Pixels whose rendered alpha is below this are left out of the rendered TV losses (eq. 6 divides by alpha).
    tv_alpha_threshold: float = 0.5
    # LPIPS trunk for L_lpips and L_lpips^1, or null for none (then L_re is L1 alone and A^1 is supervised by L1).
    lpips_net: Union[Literal["alex", "vgg"], None] = "vgg"
    # File of the ImageNet trunk weights (torchvision state dict); null looks in the torch hub cache.
    lpips_backbone_path: Union[str, None] = None
    # Allow a randomly initialised LPIPS trunk when no weights are found (smoke runs only: not a perceptual loss).
    lpips_allow_random: bool = False
    # Face-recognition network for L_id (`fhavatar.metrics.load_identity_network`), or null to skip L_id.
    id_network: Union[str, None] = None


@dataclass
class TrainConfig:
    """Everything one training run needs (`training/configs/*.yaml` hold the presets)."""

    # ---- data
    # Dataset root (dataset.json + manifest.jsonl, see training/README.md).
    train_data_dir: Union[str, None] = None
    # > 0: train on a synthetic dataset of this many clips, made on the fly into `train_data_dir` (default
    # <output_dir>/synthetic) unless a dataset is already there. 0: `train_data_dir` must hold a dataset.
    synthetic_clips: int = 0
    # Frames per synthetic clip.
    synthetic_frames: int = 8
    # Image side of the synthetic dataset, pixels.
    synthetic_resolution: int = 64
    # Resize frames on load to this side (null: the dataset's resolution).
    resolution: Union[int, None] = None
    # Fraction of clips held out for validation (split by name, deterministic).
    val_fraction: float = 0.1
    # Probability of the 3D-reconstruction mode (source = target + prior views) vs the animation mode (§3.5).
    reconstruction_probability: float = 0.5
    # Prior novel views per reconstruction sample (§B: 2).
    num_prior_views: int = 2
    # DataLoader worker processes.
    dataloader_num_workers: int = 0

    # ---- model
    # `FHAvatarModel.from_preset` name ("full": the paper's sizes; "tiny": CPU).
    model_preset: Literal["full", "tiny"] = "full"
    # Overrides of the preset's config (e.g. {resolution: 64}).
    model_overrides: dict = field(default_factory=dict)
    # Head model the avatar is bound to; must match the dataset's "head_model".
    head_model: Literal["open_head"] = "open_head"
    # Folder of a frozen `PanoHeadPrior` (`save_pretrained`), or null for the "w/o prior" model.
    prior: Union[str, None] = None
    # Side of the z-buffer used for the visibility mask M_v, pixels (stored in the model's config, so inference
    # reads M_v as training did; `model_overrides.visibility_resolution` wins over it).
    visibility_resolution: int = 256
    # RGB behind the renders; targets are composited over it with their masks (the paper removes backgrounds).
    background: list = field(default_factory=lambda: [1.0, 1.0, 1.0])

    # ---- optimisation (§B: Adam, lr 1e-4, batch 4, 37 500 iterations)
    learning_rate: float = 1e-4
    adam_beta1: float = 0.9
    adam_beta2: float = 0.999
    adam_epsilon: float = 1e-8
    adam_weight_decay: float = 0.0
    # diffusers scheduler name: constant, constant_with_warmup, cosine, linear, ...
    lr_scheduler: str = "constant"
    lr_warmup_steps: int = 0
    # Per-device batch size.
    train_batch_size: int = 4
    gradient_accumulation_steps: int = 1
    # Gradient-norm clipping (0 disables it).
    max_grad_norm: float = 1.0
    max_train_steps: int = 37500
    # "no", "fp16" (CUDA only) or "bf16"; the renderer, head model and losses always run in fp32.
    mixed_precision: Literal["no", "fp16", "bf16"] = "no"
    seed: int = 0

    # ---- loss
    loss: LossConfig = field(default_factory=LossConfig)

    # ---- outputs, logging, checkpoints
    # Run folder: checkpoints, logs, the final `pipeline/` folder.
    output_dir: str = "fhavatar-run"
    # Tracker log folder, relative to output_dir.
    logging_dir: str = "logs"
    # Tracker: "tensorboard" or "none".
    report_to: Literal["tensorboard", "none"] = "tensorboard"
    # Log losses every this many steps.
    logging_steps: int = 10
    # Save `checkpoint-{step}` every this many steps (0: only at the end).
    checkpointing_steps: int = 2500
    # Keep at most this many checkpoints (null: all).
    checkpoints_total_limit: Union[int, None] = None
    # "latest" or a checkpoint folder name/path to continue from (null: start fresh).
    resume_from_checkpoint: Union[str, None] = None
    # Validate (held-out renders, L1, PSNR) every this many steps (0: only at the end).
    validation_steps: int = 1000
    # Held-out samples rendered at each validation.
    num_validation_samples: int = 4
    # Upload the final pipeline with `FHAvatarPipeline.push_to_hub`.
    push_to_hub: bool = False
    # Hub repo id ("user/name"); null: the output folder's name.
    hub_model_id: Union[str, None] = None
    hub_token: Union[str, None] = None


# ---------------------------------------------------------------------------------------------- parsing
def preset_names() -> list[str]:
    """Names of the YAML presets in `CONFIG_DIR`."""
    return sorted(p.stem for p in CONFIG_DIR.glob("*.yaml"))


def resolve_config_path(name_or_path: str) -> Path:
    """A preset name (`CONFIG_DIR/<name>.yaml`) or a YAML file path -> the file; `FileNotFoundError` otherwise."""
    path = Path(name_or_path).expanduser()
    if path.suffix in (".yaml", ".yml") or path.exists():
        if not path.is_file():
            raise FileNotFoundError(f"`--config`: no YAML file at {str(path)!r}.")
        return path
    preset = CONFIG_DIR / f"{name_or_path}.yaml"
    if not preset.is_file():
        raise FileNotFoundError(f"`--config`: {name_or_path!r} is neither a preset ({', '.join(preset_names())}) "
                                "nor a YAML file.")
    return preset


def _type_name(annotation: Any) -> str:
    origin, args = typing.get_origin(annotation), typing.get_args(annotation)
    if origin is Literal:
        return " | ".join(repr(a) for a in args)
    if origin in (Union, types.UnionType):
        return " | ".join(_type_name(a) for a in args)
    return "null" if annotation is type(None) else getattr(annotation, "__name__", str(annotation))


def _matches(annotation: Any, value: Any) -> tuple[bool, Any]:
    """Does `value` fit `annotation`? Returns (ok, value converted: int -> float where a float is expected)."""
    origin, args = typing.get_origin(annotation), typing.get_args(annotation)
    if origin is Literal:
        return any(value == a and type(value) is type(a) for a in args), value
    if origin in (Union, types.UnionType):
        for arg in args:
            ok, converted = _matches(arg, value)
            if ok:
                return True, converted
        return False, value
    if annotation is type(None):
        return value is None, value
    if annotation is bool:
        return isinstance(value, bool), value
    if annotation is int:
        return isinstance(value, int) and not isinstance(value, bool), value
    if annotation is float:
        ok = isinstance(value, (int, float)) and not isinstance(value, bool)
        return ok, float(value) if ok else value
    if annotation is str:
        return isinstance(value, str), value
    if annotation in (list, dict):
        return isinstance(value, annotation), value
    raise TypeError(f"unsupported config annotation {annotation!r}")


def _build(cls: type, values: Any, prefix: str) -> Any:
    """Instantiate dataclass `cls` from a dict, with errors naming the key (`prefix` + name)."""
    where = prefix.rstrip(".") or "the config"
    if not isinstance(values, dict):
        raise ValueError(f"{where} must be a mapping of keys to values, got {type(values).__name__}.")
    hints = typing.get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls)]
    unknown = [k for k in values if k not in names]
    if unknown:
        hints_text = []
        for key in unknown:
            close = difflib.get_close_matches(str(key), names, n=1)
            hints_text.append(f"{prefix}{key}" + (f" (did you mean {prefix}{close[0]}?)" if close else ""))
        raise ValueError(f"Unknown config key(s): {', '.join(hints_text)}. Valid keys of {where}: {', '.join(names)}.")
    kwargs = {}
    for name, value in values.items():
        annotation = hints[name]
        if dataclasses.is_dataclass(annotation):
            kwargs[name] = _build(annotation, value, f"{prefix}{name}.")
            continue
        ok, converted = _matches(annotation, value)
        if not ok:
            raise ValueError(f"Config key `{prefix}{name}` must be {_type_name(annotation)}, got {value!r}.")
        kwargs[name] = converted
    return cls(**kwargs)


def _parse_value(text: str) -> Any:
    import yaml

    try:
        return yaml.safe_load(text)
    except yaml.YAMLError:
        return text


def load_config(config: str | None = None, overrides: dict[str, Any] | None = None) -> TrainConfig:
    """Read a preset or YAML file and apply `overrides` (`{"max_train_steps": 5, "loss.lambda_3d": 100}`).

    Override values that are strings are parsed as YAML scalars unless the field expects a string. Raises
    `ValueError` naming the key for unknown keys and wrong types, `FileNotFoundError` for a missing file.

    Example:
        ```py
        >>> from training.config import load_config
        >>> cfg = load_config("tiny-cpu", {"max_train_steps": "3", "loss.lambda_3d": 100})
        >>> cfg.max_train_steps, cfg.loss.lambda_3d
        (3, 100.0)

        ```
    """
    import yaml

    values: dict[str, Any] = {}
    if config is not None:
        path = resolve_config_path(config)
        try:
            loaded = yaml.safe_load(path.read_text(encoding="utf-8"))
        except yaml.YAMLError as err:
            raise ValueError(f"`--config`: {str(path)!r} is not valid YAML ({err}).") from err
        if loaded is not None and not isinstance(loaded, dict):
            raise ValueError(f"`--config`: {str(path)!r} must hold a mapping of keys to values.")
        values = dict(loaded or {})
    values["loss"] = dict(values.get("loss") or {})
    hints = typing.get_type_hints(TrainConfig)
    loss_hints = typing.get_type_hints(LossConfig)
    for key, value in (overrides or {}).items():
        section, _, name = key.rpartition(".")
        if section not in ("", "loss"):
            raise ValueError(f"Unknown config key {key!r}: only `loss.` fields are nested.")
        target, annotation = (values["loss"], loss_hints.get(name)) if section else (values, hints.get(name))
        if isinstance(value, str) and annotation is not str:
            value = _parse_value(value)
        target[name] = value
    return _build(TrainConfig, values, "")


def config_to_dict(config: TrainConfig) -> dict[str, Any]:
    """The config as plain JSON-able data (what checkpoints and the tracker store)."""
    return dataclasses.asdict(config)


# ---------------------------------------------------------------------------------------------- checks
def _check_dataset(root: Path, head_model: str) -> None:
    if not root.is_dir():
        raise ValueError(f"`train_data_dir`: no dataset folder at {str(root)!r}. Make one with "
                         "`python -m training.preprocess` or `python -m training.make_synthetic`.")
    meta_path = root / "dataset.json"
    if not meta_path.is_file():
        raise ValueError(f"`train_data_dir`: {str(root)!r} holds no dataset.json; is it a dataset made by "
                         "training/preprocess.py or training/make_synthetic.py?")
    try:
        meta = json.loads(meta_path.read_text(encoding="utf-8"))
    except ValueError as err:
        raise ValueError(f"`train_data_dir`: {str(meta_path)!r} is not valid JSON ({err}).") from err
    if not isinstance(meta, dict) or meta.get("format") != DATASET_FORMAT:
        got = meta.get("format") if isinstance(meta, dict) else type(meta).__name__
        raise ValueError(f"`train_data_dir`: {str(meta_path)!r} has format {got!r}, expected {DATASET_FORMAT!r}.")
    if meta.get("version") != DATASET_VERSION:
        raise ValueError(f"`train_data_dir`: dataset version {meta.get('version')!r} is not supported "
                         f"(this trainer reads version {DATASET_VERSION}).")
    if meta.get("head_model") != head_model:
        raise ValueError(f"`head_model` is {head_model!r} but the dataset at {str(root)!r} was tracked with "
                         f"{meta.get('head_model')!r}; set `head_model: {meta.get('head_model')}` or preprocess the "
                         "videos again with the configured head model.")
    manifest = root / "manifest.jsonl"
    lines = [ln for ln in manifest.read_text(encoding="utf-8").splitlines() if ln.strip()] if manifest.is_file() else []
    if not lines:
        raise ValueError(f"`train_data_dir`: the manifest {str(manifest)!r} is missing or lists no clip; every "
                         "clip may have been skipped (see skipped.jsonl there).")


def check_config(config: TrainConfig, check_data: bool = True) -> None:
    """Raise one `ValueError` with a readable message when `config` cannot run.

    Checks value ranges, the dataset (folder, dataset.json, a non-empty manifest, the head model it was tracked
    with) unless `check_data` is False or a synthetic dataset will be made, the prior folder, the tracker
    package and the devices mixed precision needs.
    """
    positive = ("synthetic_frames", "synthetic_resolution", "num_prior_views", "visibility_resolution",
                "train_batch_size", "gradient_accumulation_steps", "max_train_steps", "logging_steps",
                "num_validation_samples")
    for name in positive:
        if getattr(config, name) < (0 if name == "num_prior_views" else 1):
            raise ValueError(f"`{name}` must be >= 1, got {getattr(config, name)}.")
    for name in ("synthetic_clips", "dataloader_num_workers", "lr_warmup_steps", "checkpointing_steps",
                 "validation_steps"):
        if getattr(config, name) < 0:
            raise ValueError(f"`{name}` must be >= 0, got {getattr(config, name)}.")
    if not 16 <= config.visibility_resolution <= 4096:
        raise ValueError(f"`visibility_resolution` must be in [16, 4096] (pixels), got {config.visibility_resolution}.")
    if config.resolution is not None and config.resolution < 16:
        raise ValueError(f"`resolution` must be >= 16 pixels or null, got {config.resolution}.")
    if config.checkpoints_total_limit is not None and config.checkpoints_total_limit < 1:
        raise ValueError(f"`checkpoints_total_limit` must be >= 1 or null, got {config.checkpoints_total_limit}.")
    for name in ("val_fraction", "reconstruction_probability"):
        if not 0 <= getattr(config, name) <= 1:
            raise ValueError(f"`{name}` must be in [0, 1], got {getattr(config, name)}.")
    if config.learning_rate <= 0:
        raise ValueError(f"`learning_rate` must be > 0, got {config.learning_rate}.")
    if len(config.background) != 3 or not all(isinstance(c, (int, float)) and 0 <= c <= 1 for c in config.background):
        raise ValueError(f"`background` must be three numbers in [0, 1] (RGB), got {config.background!r}.")
    loss = config.loss
    for f in dataclasses.fields(LossWeights):
        if getattr(loss, f.name) < 0:
            raise ValueError(f"`loss.{f.name}` must be >= 0, got {getattr(loss, f.name)}.")
    if loss.epsilon < 0 or not 0 <= loss.tv_alpha_threshold < 1:
        raise ValueError(f"`loss.epsilon` must be >= 0 and `loss.tv_alpha_threshold` in [0, 1), got "
                         f"{loss.epsilon} and {loss.tv_alpha_threshold}.")
    if loss.id_network is not None and not Path(loss.id_network).expanduser().exists():
        raise ValueError(f"`loss.id_network`: no face-recognition network at {loss.id_network!r}.")
    if loss.lpips_backbone_path is not None and not Path(loss.lpips_backbone_path).expanduser().is_file():
        raise ValueError(f"`loss.lpips_backbone_path`: no file at {loss.lpips_backbone_path!r}.")
    import inspect

    from fhavatar.models import FHAvatarModel

    unknown = sorted(set(config.model_overrides) - set(inspect.signature(FHAvatarModel.__init__).parameters) - {"self"})
    if unknown:
        raise ValueError(f"`model_overrides` holds unknown FHAvatarModel arguments {unknown}.")
    if config.prior is not None and not (Path(config.prior).expanduser() / "config.json").is_file():
        raise ValueError(f"`prior`: {config.prior!r} is not a saved prior folder (no config.json); pass the folder "
                         "written by `PanoHeadPrior.save_pretrained`, or `--prior null` for the model without prior.")
    if config.report_to == "tensorboard":
        import importlib.util

        if importlib.util.find_spec("tensorboard") is None:
            raise ValueError("`report_to` is 'tensorboard' but the tensorboard package is not installed; "
                             "`pip install tensorboard` or pass `--report_to none`.")
    if config.mixed_precision == "fp16":
        import torch

        if not torch.cuda.is_available():
            raise ValueError("`mixed_precision` 'fp16' needs a CUDA device; use 'bf16' or 'no' on a CPU.")
    if config.push_to_hub and config.hub_model_id is not None and config.hub_model_id.count("/") > 1:
        raise ValueError(f"`hub_model_id` must be a Hub repo id 'user/name', got {config.hub_model_id!r}.")
    root = None if config.train_data_dir is None else Path(config.train_data_dir).expanduser()
    if config.synthetic_clips == 0:
        if root is None:
            raise ValueError("`train_data_dir` is not set: pass `--train_data_dir DATASET` (made by "
                             "training/preprocess.py), or `--synthetic_clips N` to train on a synthetic dataset.")
        if check_data:
            _check_dataset(root, config.head_model)
    elif check_data and root is not None and (root / "dataset.json").exists():
        # A synthetic run reuses the dataset already made there.
        _check_dataset(root, config.head_model)
