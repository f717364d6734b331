"""Generic file handling: checking a path names a readable regular file (with errors naming the argument),
writing through a partial file moved into place when complete, and reading safetensors files."""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from safetensors import SafetensorError, safe_open
from torch import Tensor

__all__ = ["checked_file", "read_safetensors", "replaced_when_done"]


def checked_file(path: str | os.PathLike, name: str, hint: str = "") -> Path:
    """`path` (as a `Path`) if it is a regular file; clear errors naming the argument `name` otherwise.

    Every reader and `check_inputs` check paths with it.

    Args:
        path (`str` or `os.PathLike`): the path to check.
        name (`str`): what the file is (an argument such as "`image`", or a description), first in every message.
        hint (`str`, *optional*): a sentence added to the message for a missing file (what it should be, how to
            make it).

    Raises:
        FileNotFoundError: nothing exists at `path`.
        ValueError: `path` is a directory, a pipe/socket/device, or a name the file system cannot hold.
    """
    path = Path(path)
    try:
        exists, is_file, is_dir = path.exists(), path.is_file(), path.is_dir()
    except OSError as err:  # e.g. a name longer than the file system allows
        raise ValueError(f"{name} {str(path)[:200]!r} is not a usable path ({err.strerror or err}).") from err
    if not exists:
        raise FileNotFoundError(f"{name} {str(path)!r} does not exist." + (f" {hint}" if hint else ""))
    if is_dir:
        raise ValueError(f"{name} {str(path)!r} is a directory, expected a file.")
    if not is_file:  # a named pipe or a device would block or never end
        raise ValueError(f"{name} {str(path)!r} is not a regular file (a pipe, socket or device?).")
    return path


@contextmanager
def replaced_when_done(path: Path, partial: Path) -> Iterator[Path]:
    """Yield `partial` to write, and move it onto `path` when the block completes; when the block raises,
    `partial` is deleted. An interrupted write never leaves a truncated file under the final name."""
    try:
        yield partial
    except BaseException:
        partial.unlink(missing_ok=True)
        raise
    os.replace(partial, path)


def read_safetensors(path: str | os.PathLike, what: str, hint: str = "") -> tuple[dict[str, Tensor], dict[str, str]]:
    """All tensors and the metadata of a safetensors file; `what` names the file in errors, and `hint` is added
    to the message for a missing file (see `checked_file`).

    Raises `FileNotFoundError` when there is no file and `ValueError` when it is not readable safetensors.
    """
    path = checked_file(path, what, hint)
    try:
        with safe_open(str(path), framework="pt") as f:
            metadata = f.metadata() or {}
            tensors = {key: f.get_tensor(key) for key in f.keys()}
    except (SafetensorError, OSError, ValueError) as err:
        raise ValueError(f"{str(path)!r} is not a readable {what} (it is not a readable safetensors file: {err}).") from err
    return tensors, metadata
