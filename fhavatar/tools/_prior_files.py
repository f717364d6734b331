"""`python -m fhavatar.tools.convert_prior`, shared parts: output file names, reports, reading checkpoints, writing.

Used by `_prior_panohead` and `_prior_inversion` (the two conversions); see `fhavatar.tools.convert_prior`.
"""

from __future__ import annotations

import hashlib
import json
import logging
import zipfile
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file
from torch import Tensor

from ..prior.panohead import PanoHeadPrior
from .network_pickle import is_legacy_torch_file, load_network_pickle
from .restricted_pickle import ModuleStandIn

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
