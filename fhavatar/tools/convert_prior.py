"""Official PanoHead / dual-encoder checkpoints -> a `PanoHeadPrior.from_pretrained` folder (safetensors).

Usage::

    python -m fhavatar.tools.convert_prior panohead easy-khair-180-gpc0.8-trans10-025000.pkl weights/panohead
    python -m fhavatar.tools.convert_prior inversion encoder1.pt weights/panohead --encoder2 encoder2.pt

`panohead` reads an EG3D-style network pickle (`{'G': ..., 'D': ..., 'G_ema': ..., 'training_set_kwargs': ...}`,
PanoHead's release) with the restricted reader of `fhavatar.tools.network_pickle`: persistence objects keep
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

The two conversions live in `_prior_panohead` and `_prior_inversion`, what they share (file names, reports,
reading checkpoints, writing the folder) in `_prior_files`; this module is their command line and public API.
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from ..prior.panohead import GENERATOR_PRESETS
from ._prior_files import CONFIG_NAME, MANIFEST_NAME, WEIGHTS_NAME, ConversionReport, compare_state_dicts, flatten_module
from ._prior_inversion import convert_inversion, inversion_config_from_state_dict
from ._prior_panohead import convert_panohead, generator_config_from_pickle

__all__ = ["CONFIG_NAME", "MANIFEST_NAME", "WEIGHTS_NAME", "ConversionReport", "compare_state_dicts", "convert_inversion",
           "convert_panohead", "flatten_module", "generator_config_from_pickle", "inversion_config_from_state_dict",
           "main"]


def main(argv: list[str] | None = None) -> int:
    """`python -m fhavatar.tools.convert_prior panohead|inversion SRC OUT [options]`."""
    parser = argparse.ArgumentParser(prog="python -m fhavatar.tools.convert_prior", description=__doc__.split("\n\n")[0])
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
