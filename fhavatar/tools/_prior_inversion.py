"""`python -m fhavatar.tools.convert_prior inversion`: dual-encoder checkpoints -> the inversion of a prior folder.

See `fhavatar.tools.convert_prior` for the file formats; the shared reading and writing is in `_prior_files`.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from torch import Tensor

from ..io import checked_file
from ..prior.panohead import PanoHeadPrior
from ._prior_files import (
    _LICENSE_NOTE,
    CONFIG_NAME,
    REPORT_LIMIT,
    WEIGHTS_NAME,
    _load_existing,
    _read_checkpoint,
    _sha256,
    _write,
    compare_state_dicts,
    flatten_module,
)
from .restricted_pickle import ModuleStandIn

logger = logging.getLogger(__name__)


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
            ignored[f"encoder{index}:{name}"] = "a copy of the generator; the prior's comes from `convert_prior panohead`"
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
    path, out_dir = checked_file(ckpt_path, "Inversion checkpoint"), Path(out_dir)
    second = checked_file(encoder2_path, "Second encoder checkpoint") if encoder2_path is not None else None
    existing = _load_existing(out_dir)
    if existing is None:
        raise FileNotFoundError(
            f"{out_dir} holds no converted generator ({CONFIG_NAME} + {WEIGHTS_NAME}); run "
            f"`python -m fhavatar.tools.convert_prior panohead <PanoHead .pkl> {out_dir}` first."
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
