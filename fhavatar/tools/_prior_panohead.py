"""`python -m fhavatar.tools.convert_prior panohead`: an official PanoHead network pickle -> a prior folder.

See `fhavatar.tools.convert_prior` for the file formats; the shared reading and writing is in `_prior_files`.
"""

from __future__ import annotations

import copy
import logging
import re
import zipfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from torch import Tensor

from ..io import checked_file
from ..prior.panohead import GENERATOR_PRESETS, PanoHeadPrior
from ._prior_files import _LICENSE_NOTE, _load_existing, _sha256, _write, compare_state_dicts, flatten_module
from .network_pickle import is_legacy_torch_file, load_network_pickle
from .restricted_pickle import ModuleStandIn

logger = logging.getLogger(__name__)


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
    path, out_dir = checked_file(pkl_path, "PanoHead network pickle"), Path(out_dir)
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
