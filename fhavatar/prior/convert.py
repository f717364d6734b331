"""Official PanoHead / dual-encoder checkpoints -> a `PanoHeadPrior.from_pretrained` folder (safetensors).

Usage::

    python -m fhavatar.prior.convert panohead easy-khair-180-gpc0.8-trans10-025000.pkl weights/panohead
    python -m fhavatar.prior.convert inversion encoder1.pt weights/panohead --encoder2 encoder2.pt

`panohead` reads an EG3D-style network pickle (`{'G': ..., 'D': ..., 'G_ema': ..., 'training_set_kwargs': ...}`,
PanoHead's release) with the restricted reader of `fhavatar/head/_restricted_pickle.py`: persistence objects keep
their embedded source as an inert string, tensors are rebuilt from raw bytes, and nothing from the file runs.
`G_ema` is flattened into a state dict (`_parameters` and persistent `_buffers` of every nested module; names
are already ours, prefixed `generator.`), the generator's config is derived from the pickled `init_kwargs`
(`rendering_kwargs`, `mapping_kwargs`, ...) and from the shapes of layers the official code hard-codes, every
name and shape is checked against `PanoHeadPrior(config)`, and `config.json` +
`diffusion_pytorch_model.safetensors` (+ `conversion.json`, a manifest) are written.

`inversion` adds the dual-encoder inversion to such a folder (run `panohead` first): each encoder checkpoint is
a pSp/TriPlaneNet-style `torch.save` file (`{'state_dict': {'psp_encoder.*', 'triplanenet_encoder.*',
'decoder.*' (a generator copy, ignored)}, 'latent_avg', 'opts'}`, read with `torch.load(weights_only=True)`) or
an EG3D-style pickle holding the encoder module; one file with `encoder1.*` / `encoder2.*` keys works too. The
inversion's sizes are inferred from the weights.

The official weights are non-commercial (PanoHead: CC BY-NC 4.0); converted folders carry the same terms.
"""

from __future__ import annotations

import argparse
import copy
import hashlib
import json
import logging
import re
import sys
import zipfile
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file
from torch import Tensor

from ..head._restricted_pickle import ModuleStandIn, is_legacy_torch_file, load_network_pickle
from .panohead import GENERATOR_PRESETS, PanoHeadPrior

__all__ = ["ConversionReport", "convert_inversion", "convert_panohead", "flatten_module", "generator_config_from_pickle",
           "inversion_config_from_state_dict", "main"]

logger = logging.getLogger(__name__)

WEIGHTS_NAME = "diffusion_pytorch_model.safetensors"
CONFIG_NAME = "config.json"
MANIFEST_NAME = "conversion.json"
#: How many names each section of a report lists before "... and N more".
REPORT_LIMIT = 12
_LICENSE_NOTE = "Converted from official checkpoints; the original non-commercial terms (PanoHead: CC BY-NC 4.0) apply."


# ============================================================================ reports
@dataclass
class ConversionReport:
    """Key-by-key comparison of a converted state dict with the model it must load into."""

    missing: list[tuple[str, tuple]] = field(default_factory=list)  # in the model, not in the file
    unexpected: list[tuple[str, tuple]] = field(default_factory=list)  # in the file, not in the model
    mismatched: list[tuple[str, tuple, tuple]] = field(default_factory=list)  # (name, file shape, model shape)
    ignored: dict[str, str] = field(default_factory=dict)  # file key -> why it was skipped

    @property
    def ok(self) -> bool:
        return not (self.missing or self.unexpected or self.mismatched)

    def format(self, limit: int = REPORT_LIMIT) -> str:
        def section(title: str, rows: list[str]) -> list[str]:
            if not rows:
                return []
            more = [f"    ... and {len(rows) - limit} more"] if len(rows) > limit else []
            return [f"  {title} ({len(rows)}):"] + [f"    {r}" for r in rows[:limit]] + more

        lines = section("missing from the file (model name, shape)", [f"{k} {list(s)}" for k, s in self.missing])
        lines += section("unexpected in the file (name, shape)", [f"{k} {list(s)}" for k, s in self.unexpected])
        lines += section("shape mismatches (name: file vs model)",
                         [f"{k}: {list(a)} vs {list(b)}" for k, a, b in self.mismatched])
        lines += section("ignored", [f"{k} ({why})" for k, why in self.ignored.items()])
        return "\n".join(lines) if lines else "  all names and shapes match"


def compare_state_dicts(converted: Mapping[str, Tensor], expected: Mapping[str, Tensor], prefixes: tuple[str, ...],
                        ignored: dict[str, str] | None = None) -> ConversionReport:
    """Compare `converted` with the entries of `expected` under `prefixes` (names and shapes)."""
    report = ConversionReport(ignored=dict(ignored or {}))
    wanted = {k: v for k, v in expected.items() if k.startswith(prefixes)}
    for name, tensor in converted.items():
        if name not in wanted:
            report.unexpected.append((name, tuple(tensor.shape)))
        elif tuple(tensor.shape) != tuple(wanted[name].shape):
            report.mismatched.append((name, tuple(tensor.shape), tuple(wanted[name].shape)))
    report.missing = [(k, tuple(v.shape)) for k, v in wanted.items() if k not in converted]
    return report


# ============================================================================ reading files
def _check_file(path: str | Path, what: str) -> Path:
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{what} not found: {path} (expected an existing file).")
    return path


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _read_checkpoint(path: Path) -> Any:
    """A torch zip/legacy checkpoint via `torch.load(weights_only=True)`, or a network pickle via the safe reader."""
    with open(path, "rb") as f:
        head = f.read(64)
    if zipfile.is_zipfile(path) or is_legacy_torch_file(head):
        try:
            return torch.load(path, map_location="cpu", weights_only=True)
        except Exception as err:  # weights_only refuses anything but tensors and plain containers
            raise ValueError(f"{path} is a torch checkpoint that `torch.load(weights_only=True)` refuses: {err}") from err
    if not head.startswith(b"\x80"):
        raise ValueError(
            f"{path} is neither a torch checkpoint nor a Python pickle (it starts with {head[:8]!r}); expected an "
            "official .pkl/.pt file."
        )
    return load_network_pickle(path.read_bytes(), source=str(path))


def flatten_module(module: ModuleStandIn, prefix: str = "") -> dict[str, Tensor]:
    """The state dict of an unpickled module stand-in: parameters and persistent buffers, recursively.

    Args:
        module (`ModuleStandIn`): e.g. `G_ema` from `load_network_pickle`.
        prefix (`str`): prepended to every name.

    Returns:
        `{dotted name: tensor}` in the order `torch.nn.Module.state_dict` would give.
    """
    out: dict[str, Tensor] = {}
    ancestors: list[int] = []

    def visit(obj: Any, path: str) -> None:
        if not isinstance(obj, ModuleStandIn):
            raise ValueError(f"`{path.rstrip('.') or 'the root'}` is a {type(obj).__name__}, not a module.")
        if id(obj) in ancestors:  # a module containing itself: not a module tree
            raise ValueError(f"`{path.rstrip('.')}` contains itself; the file is not a plain module tree.")
        ancestors.append(id(obj))
        state = obj.state
        skip = set(state.get("_non_persistent_buffers_set", ()) or ())
        for kind in ("_parameters", "_buffers"):
            for name, value in (state.get(kind) or {}).items():
                if value is None or (kind == "_buffers" and name in skip):
                    continue
                if not isinstance(value, Tensor):
                    raise ValueError(f"`{path}{name}` holds a {type(value).__name__}, not a tensor.")
                out[path + name] = value.detach()
        for name, child in (state.get("_modules") or {}).items():
            if child is not None:
                visit(child, f"{path}{name}.")
        ancestors.pop()

    visit(module, prefix)
    return out


# ============================================================================ PanoHead generator
def _module_at(root: ModuleStandIn, dotted: str) -> ModuleStandIn | None:
    node: Any = root
    for part in dotted.split("."):
        node = (node.state.get("_modules") or {}).get(part) if isinstance(node, ModuleStandIn) else None
    return node if isinstance(node, ModuleStandIn) else None


def generator_config_from_pickle(g_ema: ModuleStandIn, state_dict: Mapping[str, Tensor],
                                 base: str | dict = "official") -> tuple[dict[str, Any], list[str]]:
    """`PanoHeadGenerator` kwargs for an official `G_ema`: its `init_kwargs`, then sizes read from its weights.

    Args:
        g_ema (`ModuleStandIn`): the unpickled generator.
        state_dict (`dict`): `flatten_module(g_ema)`.
        base (`str` or `dict`): preset name or kwargs for what neither source states.

    Returns:
        `(generator_config, notes)`: the kwargs and human-readable notes on what came from where.
    """
    config = copy.deepcopy(GENERATOR_PRESETS[base] if isinstance(base, str) else base)
    rendering = dict(config.get("rendering") or {})
    notes: list[str] = []
    kwargs = dict(getattr(g_ema, "init_kwargs", {}) or {})
    if not kwargs:
        notes.append(f"no init_kwargs in the pickle: sizes from the `{base if isinstance(base, str) else 'given'}` base")
    used = {"z_dim", "c_dim", "w_dim", "img_resolution", "channel_base", "channel_max", "architecture", "conv_clamp",
            "mapping_kwargs", "rendering_kwargs"}
    if set(kwargs) - used:  # precision/speed settings (fp16 layers, fused modconv): no effect on the weights
        notes.append(f"init kwargs not used: {sorted(set(kwargs) - used)}")
    direct = {"z_dim": "z_dim", "c_dim": "c_dim", "w_dim": "w_dim", "img_resolution": "img_resolution",
              "channel_base": "channel_base", "channel_max": "channel_max", "architecture": "architecture",
              "conv_clamp": "conv_clamp"}
    for theirs, ours in direct.items():
        if theirs in kwargs:
            config[ours] = kwargs[theirs]
    mapping = dict(kwargs.get("mapping_kwargs") or {})
    if "num_layers" in mapping:
        config["mapping_layers"] = int(mapping["num_layers"])
    rk = dict(kwargs.get("rendering_kwargs") or {})
    renames = {"triplane_size": "triplane_resolution", "triplane_depth": "triplane_depth",
               "decoder_activation": "decoder_activation", "decoder_lr_mul": "decoder_lr_multiplier",
               "use_torgb_raw": "use_torgb_raw", "use_background": "use_background", "sr_antialias": "sr_antialias",
               "c_scale": "c_scale", "c_gen_conditioning_zero": "c_gen_conditioning_zero"}
    for theirs, ours in renames.items():
        if theirs in rk:
            value = rk[theirs]
            config[ours] = bool(value) if isinstance(config.get(ours), bool) else value
    for key in ("ray_start", "ray_end", "box_warp", "depth_resolution", "depth_resolution_importance"):
        if key in rk:
            rendering[key] = rk[key]
    if rk.get("disparity_space_sampling"):
        raise ValueError("The pickle's generator samples depths in disparity space, which FHAvatar's renderer does not do.")
    sr_module = str(rk.get("superresolution_module", ""))
    if sr_module and not sr_module.endswith("SuperresolutionHybrid8XDC"):
        notes.append(f"superresolution module {sr_module}: sizes inferred from its weights")
    # Sizes the official code hard-codes instead of passing as kwargs: read them from the weights.
    fc0, fc1 = state_dict.get("decoder.net.0.weight"), state_dict.get("decoder.net.2.weight")
    if fc0 is not None and fc1 is not None:
        config.update(triplane_channels=int(fc0.shape[1]), decoder_hidden_dim=int(fc0.shape[0]),
                      decoder_output_dim=int(fc1.shape[0]) - 1)
    blocks = sorted({int(m.group(1)) for k in state_dict if (m := re.match(r"superresolution\.block(\d+)\.conv1\.weight$", k))})
    if blocks:
        config["sr_channels"] = [int(state_dict[f"superresolution.block{i}.conv1.weight"].shape[0]) for i in blocks]
    sr = _module_at(g_ema, "superresolution")
    if sr is not None and isinstance(sr.state.get("input_resolution"), int):
        config["sr_input_resolution"] = sr.state["input_resolution"]
    conv = _module_at(g_ema, "superresolution.block0.conv0")
    if conv is not None and "conv_clamp" in conv.state:
        config["sr_conv_clamp"] = conv.state["conv_clamp"]
    if isinstance(g_ema.state.get("neural_rendering_resolution"), int):
        config["neural_rendering_resolution"] = g_ema.state["neural_rendering_resolution"]
    config["rendering"] = rendering
    return config, notes


# ============================================================================ inversion
def inversion_config_from_state_dict(encoder: Mapping[str, Tensor]) -> dict[str, Any]:
    """`DualEncoderInversion` sizes from one encoder's weights (`psp_encoder.*` / `triplanenet_encoder.*` names)."""
    def need(name: str) -> Tensor:
        if name not in encoder:
            raise ValueError(f"The encoder checkpoint has no `{name}`; is it a dual-encoder (pSp + TriPlaneNet) checkpoint?")
        return encoder[name]

    styles = sorted({int(m.group(1)) for k in encoder if (m := re.match(r"psp_encoder\.styles\.(\d+)\.", k))})
    convs = {int(m.group(1)) for k in encoder if (m := re.match(r"psp_encoder\.styles\.0\.convs\.(\d+)\.weight$", k))}
    units = sorted({int(m.group(1)) for k in encoder if (m := re.match(r"psp_encoder\.body\.(\d+)\.", k))})
    if not styles or not convs or not units:
        raise ValueError("The encoder checkpoint has no `psp_encoder.styles.*` / `psp_encoder.body.*` weights.")
    depths = [int(need(f"psp_encoder.body.{u}.res_layer.1.weight").shape[0]) for u in units]
    # A stage starts where a unit projects its shortcut (the channel count changes), and at the first unit.
    starts = [u for i, u in enumerate(units) if i == 0 or f"psp_encoder.body.{u}.shortcut_layer.0.weight" in encoder]
    if len(starts) != 4:
        raise ValueError(f"Expected 4 IR-SE stages in `psp_encoder.body`, found {len(starts)} (stage starts {starts}).")
    bounds = starts + [units[-1] + 1]
    tri = need("triplanenet_encoder.final_head_two.4.weight")
    return dict(
        num_ws=len(styles), w_dim=int(need("psp_encoder.styles.0.linear.weight").shape[0]),
        input_size=16 * 2 ** len(convs), block_units=[bounds[i + 1] - bounds[i] for i in range(4)],
        block_channels=[depths[units.index(s)] for s in starts],
        up_channels=[int(need(f"triplanenet_encoder.up{i}.conv.double_conv.1.weight").shape[0]) for i in range(1, 5)],
        triplane_features=int(tri.shape[0]),
    )


def _encoder_state(obj: Any, source: Path) -> tuple[dict[str, Tensor], Tensor | None]:
    """(state dict, latent_avg) from whatever one checkpoint file holds."""
    latent = None
    if isinstance(obj, Mapping):
        latent = obj.get("latent_avg") if isinstance(obj.get("latent_avg"), Tensor) else None
        for key in ("state_dict", "model", "net"):
            if isinstance(obj.get(key), Mapping):
                obj = obj[key]
                break
        modules = [v for v in obj.values() if isinstance(v, ModuleStandIn)] if isinstance(obj, Mapping) else []
        if len(modules) == 1:
            obj = flatten_module(modules[0])
    elif isinstance(obj, ModuleStandIn):
        obj = flatten_module(obj)
    if not isinstance(obj, Mapping) or not all(isinstance(v, Tensor) for v in obj.values()):
        raise ValueError(f"{source}: found no encoder state dict (a dict of tensors under 'state_dict', or a module).")
    state = {re.sub(r"^module\.", "", k): v for k, v in obj.items()}
    if latent is None and isinstance(state.get("latent_avg"), Tensor):
        latent = state["latent_avg"]
    return state, latent


def _split_encoders(obj: Any, source: Path, encoder2: Path | None) -> list[tuple[dict[str, Tensor], Tensor | None]]:
    state, latent = _encoder_state(obj, source)
    if any(k.startswith(("encoder1.", "encoder2.")) for k in state):  # one file holding both encoders
        if encoder2 is not None:
            raise ValueError(f"{source} already holds both encoders (`encoder1.*`, `encoder2.*`); drop `encoder2`.")
        parts = []
        for i in (1, 2):
            sub = {k[len(f"encoder{i}."):]: v for k, v in state.items() if k.startswith(f"encoder{i}.")}
            parts.append((sub, sub.get("latent_avg")))
        return parts
    if encoder2 is None:
        raise ValueError(
            f"{source} holds one encoder; the dual-encoder inversion needs both: pass the second checkpoint as "
            "`encoder2_path` (CLI: --encoder2)."
        )
    return [(state, latent), _encoder_state(_read_checkpoint(encoder2), encoder2)]


def _map_encoder(state: Mapping[str, Tensor], index: int) -> tuple[dict[str, Tensor], dict[str, str]]:
    converted, ignored = {}, {}
    for name, tensor in state.items():
        if name == "latent_avg":
            continue
        if name.startswith(("decoder.", "generator.", "G.")):
            ignored[f"encoder{index}:{name}"] = "a copy of the generator; the prior's comes from `convert panohead`"
        else:
            converted[f"inversion.encoder{index}.{name}"] = tensor
    return converted, ignored


def _latent_avg(latent: Tensor | None, num_ws: int, w_dim: int, w_avg: Tensor, notes: list[str], index: int) -> Tensor:
    if latent is None:
        notes.append(f"encoder{index}: no latent_avg in the checkpoint; using the generator's mapping w_avg")
        latent = w_avg
    latent = latent.detach().float().reshape(-1, latent.shape[-1])
    if latent.shape[-1] != w_dim or latent.shape[0] not in (1, num_ws):
        raise ValueError(f"encoder{index}: latent_avg has shape {list(latent.shape)}, expected [{num_ws}, {w_dim}] or [{w_dim}].")
    return latent.expand(num_ws, w_dim).clone()


# ============================================================================ writing
def _load_existing(out_dir: Path) -> tuple[dict[str, Any], dict[str, Tensor], dict[str, Any]] | None:
    config_path, weights_path = out_dir / CONFIG_NAME, out_dir / WEIGHTS_NAME
    if not (config_path.is_file() and weights_path.is_file()):
        return None
    config = {k: v for k, v in json.loads(config_path.read_text()).items() if not k.startswith("_")}
    manifest_path = out_dir / MANIFEST_NAME
    manifest = json.loads(manifest_path.read_text()) if manifest_path.is_file() else {}
    return config, load_file(str(weights_path)), manifest


def _write(out_dir: Path, prior: PanoHeadPrior, weights: dict[str, Tensor], report: ConversionReport,
           prefixes: tuple[str, ...], strict: bool, manifest: dict[str, Any]) -> PanoHeadPrior:
    if not report.ok:
        if strict:
            raise ValueError(f"The checkpoint does not match PanoHeadPrior({prefixes[0].rstrip('.')}):\n{report.format()}")
        logger.warning("Loading with strict=False; these entries were dropped or left at init:\n%s", report.format())
        bad = {k for k, _ in report.unexpected} | {k for k, _, _ in report.mismatched}
        weights = {k: v for k, v in weights.items() if k not in bad}
    missing, unexpected = prior.load_state_dict(weights, strict=False)
    unexpected = [k for k in unexpected if k.startswith(prefixes)]
    if unexpected or (strict and missing):
        raise ValueError(f"Internal conversion error: missing {missing[:REPORT_LIMIT]}, unexpected {unexpected[:REPORT_LIMIT]}.")
    out_dir.mkdir(parents=True, exist_ok=True)
    prior.save_pretrained(str(out_dir))
    (out_dir / MANIFEST_NAME).write_text(json.dumps(manifest, indent=2, sort_keys=True))
    return prior


def convert_panohead(pkl_path: str | Path, out_dir: str | Path, network_key: str = "G_ema", base: str | dict = "official",
                     strict: bool = True) -> PanoHeadPrior:
    """Convert an official PanoHead network pickle into a `PanoHeadPrior.from_pretrained` folder.

    Args:
        pkl_path (`str` or `Path`): the official `.pkl` (e.g. `easy-khair-180-gpc0.8-trans10-025000.pkl`).
        out_dir (`str` or `Path`): output folder; an inversion already converted there is kept if it still fits.
        network_key (`str`, *optional*, defaults to "G_ema"): which network of the pickle to convert.
        base (`str` or `dict`, *optional*, defaults to "official"): generator preset (or kwargs) for sizes that
            neither the pickled `init_kwargs` nor the weights state.
        strict (`bool`, *optional*, defaults to True): raise on any missing/unexpected/mismatched tensor (the
            error lists names and shapes); False drops those entries with a warning.

    Returns:
        The converted `PanoHeadPrior` (also written to `out_dir`: config.json, diffusion_pytorch_model.safetensors,
        conversion.json).
    """
    path, out_dir = _check_file(pkl_path, "PanoHead network pickle"), Path(out_dir)
    if isinstance(base, str) and base not in GENERATOR_PRESETS:
        raise ValueError(f"`base` must be one of {sorted(GENERATOR_PRESETS)} or a dict, got {base!r}.")
    raw = path.read_bytes()
    if zipfile.is_zipfile(path) or is_legacy_torch_file(raw[:64]):
        raise ValueError(f"{path} is a torch checkpoint, not an EG3D/PanoHead network pickle (for encoders use `inversion`).")
    if not raw.startswith(b"\x80"):
        raise ValueError(f"{path} is not a Python pickle (it starts with {raw[:8]!r}); expected PanoHead's .pkl.")
    data = load_network_pickle(raw, source=str(path))
    del raw
    if not isinstance(data, Mapping) or not isinstance(data.get(network_key), ModuleStandIn):
        keys = sorted(data) if isinstance(data, Mapping) else type(data).__name__
        raise ValueError(f"{path} has no network `{network_key}` (found {keys}); pass `network_key=` to choose one.")
    g_ema = data[network_key]
    flat = flatten_module(g_ema)
    generator_config, notes = generator_config_from_pickle(g_ema, flat, base)
    weights = {f"generator.{k}": v for k, v in flat.items()}

    existing = _load_existing(out_dir)
    config = {"generator_config": generator_config, "inversion_config": None, "head_offset": [0.0, 0.0, 0.0]}
    manifest: dict[str, Any] = {"license": _LICENSE_NOTE}
    if existing is not None and existing[0].get("inversion_config"):
        old_config, old_weights, manifest = existing
        inversion = {k: v for k, v in old_weights.items() if k.startswith("inversion.")}
        fits = all(old_config["inversion_config"].get(k) == generator_config.get(k) for k in
                   ("triplane_channels", "triplane_depth", "triplane_resolution", "w_dim"))
        if fits:
            config.update(inversion_config=old_config["inversion_config"], head_offset=old_config.get("head_offset", [0, 0, 0]))
            weights.update(inversion)
            notes.append("kept the inversion already converted in the output folder")
        else:
            manifest.pop("inversion", None)
            logger.warning("The inversion in %s does not fit the new generator's sizes; it is dropped.", out_dir)
    prior = PanoHeadPrior(**config)
    report = compare_state_dicts({k: v for k, v in weights.items() if k.startswith("generator.")}, prior.state_dict(),
                                 ("generator.",))
    manifest["generator"] = {"source": path.name, "sha256": _sha256(path), "network_key": network_key, "notes": notes,
                             "init_kwargs_found": bool(getattr(g_ema, "init_kwargs", None)),
                             "not_converted": sorted(k for k in data if k != network_key)}
    if not report.ok:
        manifest["generator"]["report"] = report.format()
    prior = _write(out_dir, prior, weights, report, ("generator.",), strict, manifest)
    logger.info("Converted %s (%d tensors) into %s.", path.name, len(flat), out_dir)
    return prior


def convert_inversion(ckpt_path: str | Path, out_dir: str | Path, encoder2_path: str | Path | None = None,
                      strict: bool = True) -> PanoHeadPrior:
    """Add the dual-encoder inversion to a folder written by `convert_panohead`.

    Args:
        ckpt_path (`str` or `Path`): encoder 1 (same-view fidelity), or one file holding `encoder1.*`/`encoder2.*`.
        out_dir (`str` or `Path`): a folder written by `convert_panohead` (the generator must be converted first:
            the encoders' sizes are checked against it and its `w_avg` stands in for a missing `latent_avg`).
        encoder2_path (`str` or `Path`, *optional*): encoder 2 (occluded regions), when in a separate file.
        strict (`bool`, *optional*, defaults to True): raise on any name/shape mismatch (listed in the error).

    Returns:
        The `PanoHeadPrior` with generator and inversion (also written to `out_dir`).
    """
    path, out_dir = _check_file(ckpt_path, "Inversion checkpoint"), Path(out_dir)
    second = _check_file(encoder2_path, "Second encoder checkpoint") if encoder2_path is not None else None
    existing = _load_existing(out_dir)
    if existing is None:
        raise FileNotFoundError(
            f"{out_dir} holds no converted generator ({CONFIG_NAME} + {WEIGHTS_NAME}); run "
            f"`python -m fhavatar.prior.convert panohead <PanoHead .pkl> {out_dir}` first."
        )
    config, old_weights, manifest = existing
    gen = config["generator_config"]
    encoders = _split_encoders(_read_checkpoint(path), path, second)
    sizes = [inversion_config_from_state_dict(state) for state, _ in encoders]
    if sizes[0] != sizes[1]:
        raise ValueError(f"The two encoders have different architectures: {sizes[0]} vs {sizes[1]}.")
    size = dict(sizes[0])
    features = 3 * gen["triplane_channels"] * gen["triplane_depth"]
    if size.pop("triplane_features") != features or size["num_ws"] != _num_ws(gen) or size["w_dim"] != gen["w_dim"]:
        raise ValueError(
            f"The encoders ({sizes[0]}) do not fit the converted generator (num_ws {_num_ws(gen)}, w_dim {gen['w_dim']}, "
            f"tri-grid features 3*C*D = {features})."
        )
    inversion_config = dict(size, triplane_channels=gen["triplane_channels"], triplane_depth=gen["triplane_depth"],
                            triplane_resolution=gen["triplane_resolution"])
    weights = {k: v for k, v in old_weights.items() if k.startswith("generator.")}
    notes: list[str] = []
    ignored: dict[str, str] = {}
    w_avg = old_weights["generator.backbone.mapping.w_avg"]
    for index, (state, latent) in enumerate(encoders, start=1):
        mapped, skipped = _map_encoder(state, index)
        weights.update(mapped)
        ignored.update(skipped)
        weights[f"inversion.encoder{index}.latent_avg"] = _latent_avg(latent, size["num_ws"], size["w_dim"], w_avg, notes, index)
    config = dict(config, inversion_config=inversion_config)
    prior = PanoHeadPrior(**config)
    report = compare_state_dicts({k: v for k, v in weights.items() if k.startswith("inversion.")}, prior.state_dict(),
                                 ("inversion.",), ignored)
    manifest["inversion"] = {"sources": [p.name for p in (path, second) if p is not None],
                             "sha256": [_sha256(p) for p in (path, second) if p is not None], "notes": notes,
                             "ignored": sorted(ignored)[:REPORT_LIMIT], "ignored_count": len(ignored)}
    manifest.setdefault("license", _LICENSE_NOTE)
    prior = _write(out_dir, prior, weights, report, ("inversion.",), strict, manifest)
    logger.info("Added the dual-encoder inversion from %s to %s.", path.name, out_dir)
    return prior


def _num_ws(generator_config: dict[str, Any]) -> int:
    """StyleGAN2's latent count for a tri-grid of resolution R: 2 log2(R) - 2 (PanoHead: 14)."""
    return 2 * (int(generator_config["triplane_resolution"]).bit_length() - 1) - 2


# ============================================================================ command line
def main(argv: list[str] | None = None) -> int:
    """`python -m fhavatar.prior.convert panohead|inversion SRC OUT [options]`."""
    parser = argparse.ArgumentParser(prog="python -m fhavatar.prior.convert", description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="kind", required=True)
    p = sub.add_parser("panohead", help="PanoHead network pickle (.pkl) -> from_pretrained folder")
    p.add_argument("src", help="official PanoHead .pkl")
    p.add_argument("out", help="output folder")
    p.add_argument("--network-key", default="G_ema", help="network inside the pickle (default: G_ema)")
    p.add_argument("--base", default="official", choices=sorted(GENERATOR_PRESETS), help="preset for unstated sizes")
    p.add_argument("--no-strict", action="store_true", help="drop mismatched tensors instead of failing")
    q = sub.add_parser("inversion", help="dual-encoder checkpoint(s) -> add the inversion to a converted folder")
    q.add_argument("src", help="encoder 1 checkpoint (or one file with both encoders)")
    q.add_argument("out", help="a folder written by the `panohead` command")
    q.add_argument("--encoder2", help="encoder 2 checkpoint, when in a separate file")
    q.add_argument("--no-strict", action="store_true", help="drop mismatched tensors instead of failing")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    try:
        if args.kind == "panohead":
            convert_panohead(args.src, args.out, network_key=args.network_key, base=args.base, strict=not args.no_strict)
        else:
            convert_inversion(args.src, args.out, encoder2_path=args.encoder2, strict=not args.no_strict)
    except (FileNotFoundError, ValueError) as err:  # RefusedPickleError is a ValueError
        parser.error(str(err))
    print(f"Wrote {Path(args.out) / WEIGHTS_NAME}; load it with PanoHeadPrior.from_pretrained({str(args.out)!r}).")
    return 0


if __name__ == "__main__":
    sys.exit(main())
