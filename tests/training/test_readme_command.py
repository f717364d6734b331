"""The README's training command runs as written: from the repository root, in the project's environment, with no
PYTHONPATH (issue 19). The command is read from README.md, so the test and the documentation cannot drift apart;
flags appended after it only make the run tiny (later flags override earlier ones)."""

from __future__ import annotations

import os
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

from tests.training import REPO, tiny_synthetic_dataset

PREFIX = "accelerate launch --cpu"


def _documented_command(readme: Path) -> str:
    lines = [line.strip() for line in readme.read_text(encoding="utf-8").splitlines() if line.strip().startswith(PREFIX)]
    assert len(lines) == 1, f"{readme.name} should show exactly one `{PREFIX} ...` command, found {lines}"
    return lines[0]


def test_readmes_show_the_same_cpu_training_command():
    command = _documented_command(REPO / "README.md")
    assert _documented_command(REPO / "training" / "README.md") == command
    assert "PYTHONPATH" not in command and "training/train_fhavatar.py" in command


def test_readme_training_command_runs_verbatim(tmp_path):
    argv = shlex.split(_documented_command(REPO / "README.md"))
    assert argv[0] == "accelerate"
    argv[0] = str(Path(sys.executable).parent / "accelerate")  # `accelerate` of the activated environment
    out = tmp_path / "tiny"
    # The preset's dataset: the session's tiny one stands in for the one the run would make (tested elsewhere).
    shutil.copytree(tiny_synthetic_dataset(), out / "synthetic")
    tiny = ["--output_dir", str(out), "--max_train_steps", "1", "--train_batch_size", "1", "--num_prior_views", "1",
            "--visibility_resolution", "32", "--checkpointing_steps", "1", "--validation_steps", "0",
            "--num_validation_samples", "1", "--report_to", "none"]
    # A fresh shell: nothing on PYTHONPATH (the Makefile exports one for the tests; a user's shell has none).
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env.update(HF_HUB_OFFLINE="1", HF_HUB_DISABLE_TELEMETRY="1", OMP_NUM_THREADS="1")
    result = subprocess.run([*argv, *tiny], cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    assert (out / "checkpoint-1" / "avatar_model" / "diffusion_pytorch_model.safetensors").is_file()
    assert (out / "pipeline" / "model_index.json").is_file()
