"""`python -m fhavatar.space readme [--spacefile PATH]`: the Hugging Face Space README from the Spacefile.

The Spacefile (YAML, repository root) is the one source of the Space's settings; the Space README's front
matter is generated from it, followed by a short description, so the two cannot drift apart.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from .io import checked_file

__all__ = ["SPACE_KEYS", "load_spacefile", "space_readme"]

#: Front-matter keys a Space understands, in the order they are written.
SPACE_KEYS = (
    "title", "emoji", "colorFrom", "colorTo", "sdk", "sdk_version", "python_version", "app_file",
    "suggested_hardware", "license", "short_description", "preload_from_hub", "tags",
)
_REQUIRED = ("title", "sdk", "sdk_version", "app_file")
_LIST_KEYS = ("preload_from_hub", "tags")
#: The Spacefile of the checkout this package runs from; `./Spacefile` for an installed package (a wheel carries no
#: Spacefile: it belongs to the Space's repository, whose root the command then runs in).
_CHECKOUT_SPACEFILE = Path(__file__).resolve().parents[1] / "Spacefile"
DEFAULT_SPACEFILE = _CHECKOUT_SPACEFILE if _CHECKOUT_SPACEFILE.is_file() else Path("Spacefile")


def load_spacefile(path: str | Path = DEFAULT_SPACEFILE) -> dict[str, Any]:
    """Read and check the Spacefile; raises `FileNotFoundError`/`ValueError` naming the problem."""
    import yaml

    path = checked_file(path, "Spacefile")
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (yaml.YAMLError, UnicodeDecodeError) as err:
        raise ValueError(f"{path} is not valid UTF-8 YAML: {err}") from err
    if not isinstance(data, dict):
        raise ValueError(f"{path} must be a YAML mapping of Space settings.")
    missing = [k for k in _REQUIRED if k not in data]
    unknown = sorted(set(data) - set(SPACE_KEYS))
    if missing or unknown:
        raise ValueError(f"{path}: missing keys {missing}, unknown keys {unknown} (known: {list(SPACE_KEYS)}).")
    wrong = [f"{k} ({type(v).__name__})" for k, v in data.items()
             if not (isinstance(v, list) and all(isinstance(x, str) for x in v) if k in _LIST_KEYS else isinstance(v, str))]
    if wrong:
        raise ValueError(f"{path}: these settings must be strings (quote numbers such as "
                         f"\"3.11\"; {', '.join(_LIST_KEYS)} are lists of strings): {wrong}.")
    return data


def space_readme(path: str | Path = DEFAULT_SPACEFILE) -> str:
    """The Space README: YAML front matter from the Spacefile, then a short description."""
    import yaml

    data = load_spacefile(path)
    ordered = {k: data[k] for k in SPACE_KEYS if k in data}
    front = yaml.safe_dump(ordered, sort_keys=False, allow_unicode=True).strip()
    return (
        f"---\n{front}\n---\n\n# {data['title']}\n\n{data.get('short_description', '')}\n\n"
        "Upload a photo to get a 360° orbit and a downloadable 3D Gaussian avatar (.ply); add a driving video to "
        "re-enact it. Code: the FHAvatar repository (Apache-2.0); see its model card for every component's licence.\n"
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m fhavatar.space", description=__doc__.splitlines()[0])
    parser.add_argument("command", choices=["readme"])
    parser.add_argument("--spacefile", type=Path, default=DEFAULT_SPACEFILE)
    args = parser.parse_args(argv)
    sys.stdout.write(space_readme(args.spacefile))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
