"""Training benchmark: does the tiny FHAvatar model learn on the synthetic dataset within a CPU budget?

Trains the `tiny-cpu` preset (the "w/o prior" model at K = 32 on 64² synthetic images, training/configs/tiny-cpu.yaml)
in this process and prints the curve — step, training loss, held-out L1 and PSNR (animation mode on held-out
clips: a source frame re-enacted into another frame) — then the final ratios against the untrained model, wall
time and CPU time. The acceptance of issue 9: held-out L1 drops by >= 50 % and PSNR rises by >= 3 dB within
10 CPU minutes of training (making the synthetic dataset is not counted; it is cached in the output folder).

    PYTHONPATH=. .venv/bin/python benchmarks/train_bench.py [--max_train_steps 300] [--output_dir out/train_bench]

The synthetic dataset is rendered from the shared real photos when they are present, so the output folder
must stay out of the repository (`out/` is git-ignored).
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import resource
import shutil
import sys
import time
from pathlib import Path

import torch

from training.config import check_config, load_config
from training.train_fhavatar import _make_synthetic, train, use_workqueue_threads

#: Acceptance of issue 9.
MIN_L1_DROP, MIN_PSNR_GAIN_DB, MAX_CPU_MINUTES = 0.5, 3.0, 10.0


def _cpu_seconds() -> float:
    """User + system CPU time of this process and its finished children (all threads)."""
    own, children = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--config", default="tiny-cpu")
    parser.add_argument("--output_dir", default="out/train_bench")
    parser.add_argument("--max_train_steps", type=int, default=None, help="default: the preset's")
    parser.add_argument("--validation_steps", type=int, default=None, help="default: the preset's")
    parser.add_argument("--threads", type=int, default=None, help="torch intra-op threads (default: torch's)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    if args.threads:
        torch.set_num_threads(args.threads)
    use_workqueue_threads()  # before the first render (see its docstring)

    overrides = {"output_dir": args.output_dir, "report_to": "none", "checkpointing_steps": 0}
    for name in ("max_train_steps", "validation_steps"):
        if getattr(args, name) is not None:
            overrides[name] = getattr(args, name)
    config = load_config(args.config, overrides)
    check_config(config)
    output = Path(config.output_dir)
    # A fresh run each time, but the (slow to make) synthetic dataset is kept.
    for old in output.glob("checkpoint-*"):
        shutil.rmtree(old)
    data = output / "synthetic"
    start = time.perf_counter()
    _make_synthetic(config, data)
    print(f"synthetic dataset: {data} ({time.perf_counter() - start:.0f} s wall, not counted)")
    config = dataclasses.replace(config, train_data_dir=str(data))

    wall0, cpu0 = time.perf_counter(), _cpu_seconds()
    result = train(config)
    wall, cpu = time.perf_counter() - wall0, _cpu_seconds() - cpu0

    print(f"\n{'step':>6} {'train loss':>11} {'held-out L1':>12} {'PSNR (dB)':>10}")
    for row in result.history:
        loss = "-" if row["loss"] is None else f"{row['loss']:.4f}"
        print(f"{row['step']:>6} {loss:>11} {row['val/l1']:>12.4f} {row['val/psnr']:>10.2f}")
    first, last = result.history[0], result.history[-1]
    drop = 1 - last["val/l1"] / first["val/l1"]
    gain = last["val/psnr"] - first["val/psnr"]
    print(f"\nheld-out L1 {first['val/l1']:.4f} -> {last['val/l1']:.4f}: drop {100 * drop:.1f} % "
          f"(needs >= {100 * MIN_L1_DROP:.0f} %)")
    print(f"held-out PSNR {first['val/psnr']:.2f} -> {last['val/psnr']:.2f} dB: +{gain:.2f} dB "
          f"(needs >= {MIN_PSNR_GAIN_DB:.0f} dB)")
    print(f"training: {result.global_step} steps, wall {wall / 60:.1f} min, CPU {cpu / 60:.1f} min "
          f"(needs <= {MAX_CPU_MINUTES:.0f} CPU min; {torch.get_num_threads()} torch threads)")
    ok = drop >= MIN_L1_DROP and gain >= MIN_PSNR_GAIN_DB and cpu / 60 <= MAX_CPU_MINUTES
    print("PASS" if ok else "FAIL")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
