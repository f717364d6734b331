"""Evaluate a trained pipeline with the paper's protocol: a thin entry point to `fhavatar.evaluate`.

    PYTHONPATH=. python training/evaluate.py DATA --pipeline OUTPUT_DIR/checkpoint-50000/pipeline \
        --lpips_backbone alexnet-owt-7be5be79.pth --id_network arcface_r100.safetensors --max_frames 64

Same options as `python -m fhavatar.evaluate --help` (self- and cross-identity reenactment, Tab. 1/2 layout).
"""

from __future__ import annotations

from fhavatar.evaluate import main

if __name__ == "__main__":
    raise SystemExit(main())
