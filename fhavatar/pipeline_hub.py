"""Files and the Hub for `FHAvatarPipeline`: loading `save_pretrained` folders, Hub downloads and the model card.

diffusers' generic loader resolves a component class only through a module that re-exports `ModelMixin`, and only
from modules the caller imported already; FHAvatar loads its modules itself (`load_pipeline_folder`), and only
classes of the `fhavatar` package, so a downloaded `model_index.json` can never make it import other code.
"""

from __future__ import annotations

import importlib
import inspect
import json
import os
import tempfile
from pathlib import Path
from typing import Any

import huggingface_hub
import torch
from diffusers import ModelMixin
from huggingface_hub.errors import HfHubHTTPError, LocalEntryNotFoundError

from ._checks import check_finite_tensors, check_settings
from .io import checked_file

__all__ = ["HUB_ALLOW_PATTERNS", "MODEL_CARD_TEMPLATE", "download_pipeline", "load_pipeline_folder", "make_model_card",
           "push_pipeline"]

#: The model-card template filled in by `make_model_card` (package data: it ships in the wheel).
MODEL_CARD_TEMPLATE = Path(__file__).resolve().parent / "templates" / "model_card.md"
#: Files of a pipeline repo that `download_pipeline` fetches (safetensors only: no pickles).
HUB_ALLOW_PATTERNS = ("*.json", "*.safetensors", "*.md")
#: `from_pretrained` keyword arguments that go to `snapshot_download`.
DOWNLOAD_OPTIONS = ("cache_dir", "revision", "token", "local_files_only", "force_download")
_MODULES = ("avatar_model", "head_model", "prior")


def download_pipeline(repo_id: str, options: dict) -> str:
    """Local folder of the Hub repo `repo_id` (`snapshot_download`; offline, from the cache when it holds it).

    Args:
        repo_id (`str`): `"user/name"`.
        options (`dict`): may hold `DOWNLOAD_OPTIONS` (other keys are ignored).

    Example:
        ```py
        >>> from fhavatar.pipeline_hub import download_pipeline
        >>> folder = download_pipeline("user/fhavatar", {"local_files_only": True})  # doctest: +SKIP
        ```
    """
    options = {key: options[key] for key in DOWNLOAD_OPTIONS if key in options}
    try:
        return huggingface_hub.snapshot_download(repo_id, allow_patterns=list(HUB_ALLOW_PATTERNS), **options)
    except LocalEntryNotFoundError as err:
        raise FileNotFoundError(f"`pretrained_model_name_or_path`: the Hub repo {repo_id!r} is not in the local "
                                "cache and downloading is off (HF_HUB_OFFLINE) or failed.") from err
    except HfHubHTTPError as err:
        raise FileNotFoundError(f"`pretrained_model_name_or_path`: cannot download {repo_id!r} ({err}).") from err


def load_pipeline_folder(pipeline_class, path: str, torch_dtype: torch.dtype | None = None, **overrides: Any):
    """Build `pipeline_class` from a `save_pretrained` folder: each module with its own `from_pretrained`.

    Nothing in the folder is trusted: the saved settings are checked against `pipeline_class.config_settings` before
    any weights are read, each module must sit in its role and hold finite weights, and every failure is one
    `ValueError` line naming the file or module and the setting.

    Args:
        pipeline_class (`type`): `FHAvatarPipeline` (or a subclass).
        path (`str`): the folder (with `model_index.json`).
        torch_dtype (`torch.dtype`, *optional*): dtype of the loaded modules.
        overrides: modules or config entries replacing the saved ones (e.g. `avatar_model=...`, `resolution=...`).

    Example:
        ```py
        >>> from fhavatar import FHAvatarPipeline
        >>> from fhavatar.pipeline_hub import load_pipeline_folder
        >>> pipe = load_pipeline_folder(FHAvatarPipeline, "my-fhavatar")  # doctest: +SKIP
        ```
    """
    for key in DOWNLOAD_OPTIONS:
        overrides.pop(key, None)
    index_path = os.path.join(path, "model_index.json")
    try:
        with open(index_path, encoding="utf-8") as f:
            index = json.load(f)
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise ValueError(f"`pretrained_model_name_or_path`: {index_path!r} is not valid JSON ({err}).") from err
    if not isinstance(index, dict):
        raise ValueError(f"`pretrained_model_name_or_path`: {index_path!r} must hold a JSON object, got "
                         f"{type(index).__name__}.")
    accepted = set(inspect.signature(pipeline_class.__init__).parameters) - {"self"}
    unknown = sorted(set(overrides) - accepted)
    if unknown:
        raise ValueError(f"`from_pretrained` got unexpected arguments {unknown}; it takes the modules and config "
                         f"entries {sorted(accepted)}, `torch_dtype` and the download options {DOWNLOAD_OPTIONS}.")
    init = {k: v for k, v in index.items() if k in accepted and k not in _MODULES}
    try:  # the saved settings first: a bad one is blamed on the file, before any weights are read
        check_settings({k: v for k, v in init.items() if k not in overrides}, getattr(pipeline_class, "config_settings", {}))
    except ValueError as err:
        raise ValueError(f"`pretrained_model_name_or_path`: {index_path!r}: {err}") from err
    options = {"torch_dtype": torch_dtype} if torch_dtype is not None else {}
    for name in _MODULES:
        entry = index.get(name)
        if name in overrides:
            continue
        if not isinstance(entry, list) or entry[0] is None:
            if name not in pipeline_class._optional_components:
                raise ValueError(f"`pretrained_model_name_or_path`: model_index.json names no `{name}`.")
            init[name] = None
            continue
        if len(entry) != 2 or not all(isinstance(e, str) for e in entry):
            raise ValueError(f"`{name}`: model_index.json must name it as [\"module\", \"Class\"], got {entry!r}.")
        library, class_name = entry
        if library != "fhavatar" and not library.startswith("fhavatar."):
            raise ValueError(f"`{name}`: model_index.json names {library}.{class_name}; only fhavatar classes are "
                             f"loaded automatically. Load it yourself and pass `{name}=` to from_pretrained.")
        try:
            module_class = getattr(importlib.import_module(library), class_name, None)
        except ImportError as err:
            raise ValueError(f"`{name}`: model_index.json names the module {library!r}, which this fhavatar version "
                             f"does not have ({err}).") from err
        if not (isinstance(module_class, type) and issubclass(module_class, ModelMixin)):
            raise ValueError(f"`{name}`: {library}.{class_name} is not an fhavatar model class.")
        folder = os.path.join(path, name)
        try:
            init[name] = module_class.from_pretrained(folder, use_safetensors=True, **options)
        except OSError as err:  # diffusers: a missing or invalid config.json, unreadable weights
            raise ValueError(f"`{name}`: cannot load {folder!r}: {err}") from err
        except ValueError as err:  # the module's own checks of its config.json
            raise ValueError(f"`{name}` ({folder!r}): {err}") from err
        check_finite_tensors(init[name].state_dict(), f"`{name}` ({folder!r})")
    pipeline = pipeline_class(**{**init, **overrides})
    pipeline.register_to_config(_name_or_path=os.fspath(path))
    return pipeline.to(dtype=torch_dtype) if torch_dtype is not None else pipeline


def push_pipeline(pipeline, repo_id: str, commit_message: str | None = None, private: bool | None = None,
                  token: str | None = None, create_pr: bool = False, metrics: dict | None = None,
                  training_details: str | None = None):
    """Upload `pipeline.save_pretrained` files and a `README.md` card (`make_model_card`) to the Hub repo `repo_id`.

    Example:
        ```py
        >>> from fhavatar import FHAvatarPipeline
        >>> FHAvatarPipeline.default().push_to_hub("user/fhavatar")  # doctest: +SKIP
        ```
    """
    repo_id = huggingface_hub.create_repo(repo_id, private=private, token=token, exist_ok=True).repo_id
    with tempfile.TemporaryDirectory() as tmp:
        pipeline.save_pretrained(tmp)
        card = make_model_card(pipeline, repo_id, metrics=metrics, training_details=training_details)
        Path(tmp, "README.md").write_text(card, encoding="utf-8")
        return pipeline._upload_folder(tmp, repo_id, token=token, commit_message=commit_message, create_pr=create_pr)


# ---------------------------------------------------------------------------------------------- model card
_LICENCE_ROWS = {
    "OpenHead": "| OpenHead head model (MediaPipe canonical face completed into a full head) | built in "
                "(`fhavatar/head/assets`) | Apache-2.0 |",
    "FLAME": "| FLAME head model | https://flame.is.tue.mpg.de | FLAME licence: **non-commercial** scientific research "
             "only |",
    "tracker": "| MediaPipe Face Mesh and selfie segmentation (tracking) | https://github.com/google-ai-edge/mediapipe "
               "| Apache-2.0 |",
    "ProjectionAvatarModel": "| ProjectionAvatarModel (training-free projection avatar; no learned weights) | built in "
                             "| Apache-2.0 |",
    "FHAvatarModel": "| FHAvatarModel weights | this repository | Apache-2.0 for the code; the weights inherit the "
                     "terms of their training data and of the prior/head model they were trained with |",
    # PanoHead's network code derives from EG3D (NVIDIA Source Code License, non-commercial); the inversion encoders
    # are trained against it: treat converted weights as non-commercial whatever badge a repository shows.
    "prior": "| PanoHead prior (tri-grid generator + dual-encoder inversion), converted with `fhavatar.tools.convert_prior` | "
             "https://github.com/SizheAn/PanoHead | the PanoHead release terms; its code derives from EG3D (NVIDIA Source "
             "Code License): **non-commercial** research only |",
}


def make_model_card(pipeline, repo_id: str, metrics: dict | None = None,
                    training_details: str | None = None, template: str | os.PathLike = MODEL_CARD_TEMPLATE) -> str:
    """Fill the model-card template (`fhavatar/templates/model_card.md`) for `pipeline` uploaded as `repo_id`.

    The licence table lists every component; the metadata licence is the most restrictive one (Apache-2.0 for the
    built-in default, `other` (non-commercial) with a PanoHead prior or FLAME).

    Example:
        ```py
        >>> from fhavatar import FHAvatarPipeline, make_model_card
        >>> card = make_model_card(FHAvatarPipeline.default(resolution=64), "user/fhavatar")
        >>> "pipeline_tag: image-to-3d" in card and "license: apache-2.0" in card
        True

        ```
    """
    if not isinstance(repo_id, str) or repo_id.count("/") > 1 or not repo_id.strip("/"):
        raise ValueError(f"`repo_id` must be a Hub repo id like 'user/name', got {repo_id!r}.")
    template = checked_file(template, "`template`", "Expected a model-card template (like model_card.md).")
    head = type(pipeline.head_model).__name__
    model = type(pipeline.avatar_model).__name__
    uses_flame, uses_prior = head == "FLAME", pipeline.prior is not None
    rows = [_LICENCE_ROWS.get(head, f"| {head} head model | user supplied | see its own licence |"), _LICENCE_ROWS["tracker"],
            _LICENCE_ROWS.get(model, f"| {model} | user supplied | see its own licence |")]
    if uses_prior:
        rows.append(_LICENCE_ROWS["prior"])
    if uses_flame:
        licence = ("other\nlicense_name: fhavatar-non-commercial\n"
                   "license_link: https://flame.is.tue.mpg.de/modellicense.html")
    else:
        licence = ("other\nlicense_name: panohead-non-commercial\nlicense_link: https://github.com/SizheAn/PanoHead"
                   if uses_prior else "apache-2.0")
    if training_details is None:
        training_details = ("No learned weights: the built-in default reconstructs avatars by projecting the photo onto "
                            "the tracked head (`ProjectionAvatarModel`)." if model == "ProjectionAvatarModel" else
                            "Trained with `training/train_fhavatar.py` (paper §B recipe); see the training config.")
    config = f"UV resolution K = {pipeline.config.resolution}; head model {head}; avatar model {model}; " \
             f"prior: {type(pipeline.prior).__name__ if uses_prior else 'none'}."
    if metrics:
        table = "| metric | value |\n|---|---|\n" + "".join(f"| {k} | {v} |\n" for k, v in metrics.items())
    else:
        table = "Not evaluated yet (run `training/evaluate.py` and pass `metrics=` to `push_to_hub`)."
    values = {"license": licence, "model_name": repo_id.split("/")[-1], "repo_id": repo_id,
              "component_rows": "\n".join(rows), "training_details": f"{training_details}\n\n{config}",
              "metrics": table}
    text = template.read_text(encoding="utf-8")
    for key, value in values.items():
        text = text.replace("{{ " + key + " }}", value)
    return text
