"""`pip install .` outside the repository: the built wheel carries its data files (the OpenHead asset, the model-card
template), and the CLI, `FHAvatarPipeline.default()` and `push_to_hub`'s card work from it in another folder.

The wheel is built offline (`--no-build-isolation --no-index`: the environment's setuptools, no downloads) from a
copy of the sources, so the checkout gets no `build/` or `*.egg-info` folders; it is installed with `--target`
into a temporary folder that is then the only entry of PYTHONPATH (the environment provides the dependencies).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import textwrap
import zipfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
ASTRONAUT = REPO / "examples" / "astronaut.png"
#: Files the installed package reads at run time (package data).
DATA_FILES = ("fhavatar/head/assets/open_head.safetensors", "fhavatar/head/assets/canonical_face_model.obj",
              "fhavatar/head/assets/NOTICE", "fhavatar/head/assets/LICENSE.mediapipe",
              "fhavatar/templates/model_card.md")


def _run(command: list[str], cwd: Path, env: dict | None = None, timeout: float = 300) -> subprocess.CompletedProcess:
    result = subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
    assert result.returncode == 0, f"{' '.join(map(str, command))} failed:\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}"
    return result


@pytest.fixture(scope="module")
def installed(tmp_path_factory) -> Path:
    """The wheel built from this checkout, installed into a temporary `--target` folder (returned)."""
    tmp = tmp_path_factory.mktemp("wheel")
    source = tmp / "source"
    source.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy2(REPO / name, source / name)
    shutil.copytree(REPO / "fhavatar", source / "fhavatar", ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    pip = [sys.executable, "-m", "pip", "--disable-pip-version-check", "--no-input"]
    _run([*pip, "wheel", "--no-deps", "--no-build-isolation", "--no-index", "--wheel-dir", str(tmp / "dist"),
          str(source)], cwd=tmp)
    wheels = list((tmp / "dist").glob("fhavatar-*.whl"))
    assert len(wheels) == 1, wheels
    names = set(zipfile.ZipFile(wheels[0]).namelist())
    assert set(DATA_FILES) <= names, sorted(set(DATA_FILES) - names)
    assert not any(n.startswith(("training/", "tests/", "benchmarks/")) for n in names)
    target = tmp / "site"
    _run([*pip, "install", "--no-deps", "--no-index", "--target", str(target), str(wheels[0])], cwd=tmp)
    return target


def _env(target: Path) -> dict:
    """The environment with only the installed package on PYTHONPATH (never the checkout)."""
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env.update(PYTHONPATH=str(target), HF_HUB_OFFLINE="1", HF_HUB_DISABLE_TELEMETRY="1", OMP_NUM_THREADS="1")
    return env


def test_cli_runs_from_the_installed_wheel(installed, tmp_path):
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    photo = shutil.copy2(ASTRONAUT, elsewhere / "photo.png")
    _run([sys.executable, "-m", "fhavatar", str(photo), "--out", "out", "--frames", "2", "--size", "64",
          "--resolution", "32", "--quiet"], cwd=elsewhere, env=_env(installed))
    for name in ("avatar.ply", "front.png", "orbit.mp4"):
        path = elsewhere / "out" / name
        assert path.is_file() and path.stat().st_size > 0, name


def test_default_pipeline_and_model_card_from_the_installed_wheel(installed, tmp_path):
    """The package (not the checkout) is imported; `push_to_hub` writes the card from the packaged template
    (the upload is intercepted: tests never reach the Hub)."""
    script = textwrap.dedent(f"""
        from pathlib import Path
        from types import SimpleNamespace

        import huggingface_hub

        import fhavatar
        from fhavatar import FHAvatarPipeline, make_model_card
        from fhavatar.pipeline_hub import MODEL_CARD_TEMPLATE

        target = Path({str(installed)!r}).resolve()
        assert Path(fhavatar.__file__).resolve().is_relative_to(target), fhavatar.__file__
        assert MODEL_CARD_TEMPLATE.resolve().is_relative_to(target) and MODEL_CARD_TEMPLATE.is_file()
        pipe = FHAvatarPipeline.default(resolution=32)
        card = make_model_card(pipe, "someone/fhavatar")
        assert card.startswith("---\\npipeline_tag: image-to-3d") and "license: apache-2.0" in card, card[:300]
        assert "{{{{" not in card and "someone/fhavatar" in card

        uploaded = {{}}
        huggingface_hub.create_repo = lambda repo_id, **kw: SimpleNamespace(repo_id=repo_id)
        pipe._upload_folder = lambda folder, repo_id, **kw: uploaded.update(
            {{p.name: p.read_text(errors="replace") for p in Path(folder).rglob("*.md")}})
        pipe.push_to_hub("someone/fhavatar")
        assert uploaded["README.md"] == card
        print("ok")
    """)
    result = _run([sys.executable, "-c", script], cwd=tmp_path, env=_env(installed))
    assert result.stdout.strip().endswith("ok")
