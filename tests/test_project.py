"""The project's own contracts: pinned stack, CI = README test command, Space manifest, public API, demo."""

import ast
import re
from pathlib import Path

import yaml

import fhavatar

ROOT = Path(__file__).resolve().parents[1]


def _requirements():
    reqs = {}
    for line in (ROOT / "requirements.txt").read_text().splitlines():
        line = line.split("#")[0].strip()
        if line:
            name = re.split(r"[<>=!~\[]", line, maxsplit=1)[0].strip().lower()
            reqs[name] = line
    return reqs


def test_requirements_pin_the_design_stack():
    reqs = _requirements()
    assert reqs["torch"] == "torch==2.14.1" and reqs["torchvision"] == "torchvision==0.29.1"
    assert reqs["mediapipe"] == "mediapipe==0.10.21"
    assert reqs["gsplat"] == "gsplat==1.5.3"
    assert "<2" in reqs["numpy"] and "<3" in reqs["pandas"]
    assert reqs["diffusers"].startswith("diffusers==0.42")
    for name in ("huggingface-hub", "accelerate", "safetensors", "gradio", "imageio", "imageio-ffmpeg", "lpips", "numba"):
        assert name in reqs, name


def test_ci_runs_exactly_the_readme_test_command():
    ci = (ROOT / ".ci" / "run").read_text()
    readme = (ROOT / "README.md").read_text()
    assert "make test" in ci and "make test" in readme and "make demo" in readme
    commands = [line for line in ci.splitlines() if line.strip() and not line.startswith("#")]
    assert commands[-1].strip() == "make test"


def test_spacefile_is_a_valid_gradio_manifest():
    space = yaml.safe_load((ROOT / "Spacefile").read_text())
    assert space["sdk"] == "gradio" and space["app_file"] == "app.py"
    assert (ROOT / space["app_file"]).is_file()
    assert isinstance(space["preload_from_hub"], list)


def test_space_readme_agrees_with_spacefile_and_requirements():
    import importlib.metadata

    from packaging.specifiers import SpecifierSet

    from fhavatar.space import load_spacefile, space_readme

    readme = space_readme(ROOT / "Spacefile")
    assert readme.startswith("---\n")
    front = yaml.safe_load(readme.split("---\n")[1])
    assert front == load_spacefile(ROOT / "Spacefile")
    # the Space installs the gradio the Spacefile names: it must satisfy requirements.txt, like the one we test
    spec = SpecifierSet(_requirements()["gradio"][len("gradio"):])
    assert str(front["sdk_version"]) in spec
    assert importlib.metadata.version("gradio") in spec
    assert front["python_version"] == "3.11"


def test_public_api_is_explicit():
    assert set(fhavatar.__all__) >= {"Camera", "Gaussians", "RenderOutput", "render_gaussians"}
    for name in fhavatar.__all__:
        assert hasattr(fhavatar, name), name


def _imported_modules(path: Path) -> set[str]:
    """Absolute names of every module (and `from X import name` target) a file under ROOT imports."""
    package = path.relative_to(ROOT).with_suffix("").parts[:-1]  # a module's (or __init__'s) package
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            base = ".".join(package[: len(package) - node.level + 1]) if node.level else ""
            module = ".".join(p for p in (base, node.module or "") if p)
            names |= {module} | {f"{module}.{alias.name}" for alias in node.names}
    return names


def test_runtime_code_never_imports_the_offline_tools():
    """`fhavatar.tools` (asset builder, converters) may import runtime modules, never the other way round."""
    offenders = {
        str(path.relative_to(ROOT)): sorted(n for n in _imported_modules(path) if n.split(".")[:2] == ["fhavatar", "tools"])
        for path in sorted((ROOT / "fhavatar").rglob("*.py"))
        if path.relative_to(ROOT).parts[1] != "tools"
    }
    assert not {k: v for k, v in offenders.items() if v}
    assert "fhavatar.head.canonical_face" in _imported_modules(ROOT / "fhavatar" / "tools" / "build_open_head.py")


def test_demo_writes_orbit_video_and_front_image(tmp_path):
    from fhavatar.demo import main

    assert main(["--out", str(tmp_path), "--frames", "3", "--size", "64"]) == 0
    assert (tmp_path / "orbit.mp4").stat().st_size > 1000
    import numpy as np
    from PIL import Image

    front = np.asarray(Image.open(tmp_path / "front.png"))
    assert front.shape == (64, 64, 3)
    assert front[0, 0].tolist() == [255, 255, 255]  # white background in the corner
    assert front[32, 32].mean() < 240  # the head in the middle
