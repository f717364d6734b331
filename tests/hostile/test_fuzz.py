"""Property tests (hypothesis): random and mutated files given to the readers, random arguments to `check_inputs`.

Each reader may only return a valid result or raise its documented errors (`ValueError`; `FileNotFoundError` for
missing paths; `TypeError` for wrong argument types). Examples are bounded and derandomized, so the run is
reproducible and short; `FUZZ` counts every generated input for the session summary.
"""

from __future__ import annotations

import io
import struct
import tempfile
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

hypothesis = pytest.importorskip("hypothesis")
from hypothesis import HealthCheck, example, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from .catalogue import CURRENT_DEFECT, FUZZ, known_defect  # noqa: E402

DOCUMENTED = (ValueError, TypeError, FileNotFoundError)
FUZZ_SETTINGS = dict(deadline=None, database=None, derandomize=True, print_blob=True,
                     suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
DIRECTORY = tempfile.gettempdir()  # an existing folder, given where a file is expected


def _classify(fn, check=None):
    """Run one generated input: a documented error or a result passing `check`; anything else fails the example."""
    FUZZ["inputs"] += 1
    try:
        result = fn()
    except DOCUMENTED:
        FUZZ["refused"] += 1
        return
    except Exception as err:
        FUZZ["undocumented"] += 1
        FUZZ["known"] += bool(CURRENT_DEFECT)
        pytest.fail(f"undocumented {type(err).__module__}.{type(err).__name__}: {str(err)[:300]}", pytrace=False)
    if check is not None:
        check(result)
    FUZZ["accepted"] += 1


@pytest.fixture(scope="module")
def scratch(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("fuzz")


def _file(folder: Path, data: bytes, suffix: str) -> Path:
    path = folder / f"input{suffix}"
    path.write_bytes(data)
    return path


def _encode(image: Image.Image, fmt: str, **options) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, fmt, **options)
    return buffer.getvalue()


_GRADIENT = Image.fromarray(np.add.outer(np.arange(24), np.arange(32)).astype(np.uint8)[..., None].repeat(3, -1) * 4)
VALID_IMAGES = {fmt: _encode(_GRADIENT, fmt, **opts) for fmt, opts in
                [("PNG", {}), ("JPEG", {"quality": 90}), ("GIF", {}), ("WEBP", {"lossless": True}), ("BMP", {}),
                 ("TIFF", {})]}


@st.composite
def mutated(draw, base: bytes):
    """`base` with a few bytes replaced, a slice deleted or duplicated, or cut short."""
    data = bytearray(base)
    for _ in range(draw(st.integers(1, 4))):
        kind = draw(st.sampled_from(["set", "cut", "delete", "duplicate"]))
        if not data:
            break
        at = draw(st.integers(0, len(data) - 1))
        if kind == "set":
            data[at] = draw(st.integers(0, 255))
        elif kind == "cut":
            del data[at:]
        elif kind == "delete":
            del data[at: at + draw(st.integers(1, 16))]
        else:
            data[at:at] = data[at: at + draw(st.integers(1, 16))]
    return bytes(data)


def _valid_image(a: np.ndarray) -> None:
    assert a.dtype == np.uint8 and a.ndim == 3 and a.shape[2] == 3 and min(a.shape[:2]) >= 1 and max(a.shape[:2]) <= 2048


# ---------------------------------------------------------------------------------------------- images
@settings(max_examples=60, **FUZZ_SETTINGS)
@given(data=st.binary(max_size=512), suffix=st.sampled_from([".jpg", ".png", ".webp", ".gif"]))
def test_load_image_on_random_bytes(scratch, data, suffix):
    from fhavatar.io import load_image

    _classify(lambda: load_image(_file(scratch, data, suffix)), _valid_image)


@settings(max_examples=150, **FUZZ_SETTINGS)
@given(case=st.sampled_from(sorted(VALID_IMAGES)).flatmap(lambda fmt: st.tuples(st.just(fmt), mutated(VALID_IMAGES[fmt]))))
def test_load_image_on_mutated_files(scratch, case):
    from fhavatar.io import image_size, load_image

    fmt, data = case
    path = _file(scratch, data, "." + fmt.lower())
    _classify(lambda: load_image(path), _valid_image)
    _classify(lambda: image_size(path), lambda s: s[0] >= 1 and s[1] >= 1 or pytest.fail(str(s)))


# ---------------------------------------------------------------------------------------------- PLY
def _valid_ply() -> bytes:
    from fhavatar.avatar import save_gaussians_ply
    from fhavatar.rendering import Gaussians

    g = Gaussians(means=torch.rand(3, 3), quats=torch.tensor([[1.0, 0, 0, 0]] * 3), scales=torch.full((3, 3), 0.1),
                  opacities=torch.full((3,), 0.5), colors=torch.rand(3, 3))
    with tempfile.TemporaryDirectory() as folder:
        return save_gaussians_ply(g, Path(folder) / "valid.ply").read_bytes()


VALID_PLY = _valid_ply()
HEADER_END = VALID_PLY.find(b"end_header\n") + len(b"end_header\n")
_HEADER_LINES = [b"element vertex 3", b"element", b"element vertex", b"element vertex -1", b"element face 2",
                 b"property float x", b"property", b"property list uchar int vertex_indices", b"format ascii 1.0",
                 b"comment x", b"format binary_little_endian", b"", b"\xff\xfe", b"element vertex 1e9"]


@st.composite
def ply_files(draw):
    header = VALID_PLY[:HEADER_END].split(b"\n")
    for _ in range(draw(st.integers(1, 3))):
        at = draw(st.integers(1, len(header) - 2))
        header[at] = draw(st.sampled_from(_HEADER_LINES))
    body = VALID_PLY[HEADER_END:]
    if draw(st.booleans()):
        body = draw(mutated(body))
    return b"\n".join(header) + body


@known_defect("ply-header")
@settings(max_examples=120, **FUZZ_SETTINGS)
@example(data=b"ply\nformat binary_little_endian 1.0\nelement\nend_header\n")
@given(data=st.one_of(ply_files(), mutated(VALID_PLY)))
def test_load_gaussians_ply_on_mutated_files(scratch, data):
    from fhavatar.avatar import load_gaussians_ply

    _classify(lambda: load_gaussians_ply(_file(scratch, data, ".ply")), lambda g: len(g) >= 0)


# ---------------------------------------------------------------------------------------------- safetensors
def _valid_safetensors() -> bytes:
    from safetensors.torch import save

    return save({"a": torch.arange(6, dtype=torch.float32).reshape(2, 3), "b": torch.ones(4, dtype=torch.int64)},
                metadata={"format": "pt"})


@st.composite
def safetensors_headers(draw):
    """A well-framed file whose JSON header describes tensors that may not fit the data."""
    import json

    entries = {}
    for name in draw(st.lists(st.sampled_from(["a", "b", "__metadata__", ""]), min_size=1, max_size=3, unique=True)):
        if name == "__metadata__":
            entries[name] = draw(st.one_of(st.just({"k": "v"}), st.just({"k": 1}), st.just([1])))
            continue
        start = draw(st.integers(-8, 64))
        entries[name] = {"dtype": draw(st.sampled_from(["F32", "I64", "F16", "BOOL", "U8", "Q4", ""])),
                         "shape": draw(st.lists(st.integers(-2, 2**40), max_size=4)),
                         "data_offsets": [start, start + draw(st.integers(-8, 64))]}
    raw = json.dumps(entries).encode()
    return struct.pack("<Q", len(raw)) + raw + bytes(draw(st.integers(0, 64)))


@settings(max_examples=120, **FUZZ_SETTINGS)
@given(data=st.one_of(safetensors_headers(), mutated(_valid_safetensors()), st.binary(max_size=64)))
def test_read_safetensors_on_hostile_files(scratch, data):
    from fhavatar.io import read_safetensors

    _classify(lambda: read_safetensors(_file(scratch, data, ".safetensors"), "fuzzed file"),
              lambda r: isinstance(r[0], dict) or pytest.fail())


# ---------------------------------------------------------------------------------------------- pickles and video
@known_defect("pickle-errors")
@settings(max_examples=80, **FUZZ_SETTINGS)
@example(data=b"\x80\x02Q.")  # a persistent id: what a torch zip's data.pkl holds
@given(data=st.one_of(st.binary(max_size=64), mutated(b"\x80\x04\x95\x15\x00\x00\x00\x00\x00\x00\x00}\x94\x8c\x01a\x94K\x01s.")))
def test_restricted_unpickler_on_random_bytes(data):
    from fhavatar.tools.restricted_pickle import load_pickle

    _classify(lambda: load_pickle(data, source="fuzzed.pkl"))


@settings(max_examples=20, **FUZZ_SETTINGS)
@given(data=st.binary(min_size=0, max_size=256), suffix=st.sampled_from([".mp4", ".mkv", ".avi", ".webm"]))
def test_video_info_on_random_bytes(scratch, data, suffix):
    from fhavatar.io import video_info

    _classify(lambda: video_info(_file(scratch, data, suffix), timeout=20), lambda info: info.num_frames >= 1 or pytest.fail())


# ---------------------------------------------------------------------------------------------- check_inputs
_ANY = st.one_of(st.none(), st.booleans(), st.integers(-(2**70), 2**70), st.floats(allow_nan=True, allow_infinity=True),
                 st.text(max_size=40), st.builds(np.int64, st.integers(-(2**40), 2**40)),
                 st.lists(st.integers(), max_size=3), st.builds(lambda n: np.zeros([1] * n), st.integers(0, 5)))
_IMAGES = st.one_of(_ANY, st.sampled_from(["missing.png", DIRECTORY, "input.jpg"]),
                    st.builds(lambda s: torch.zeros(s), st.lists(st.integers(0, 4), max_size=4)),
                    st.just(Image.new("RGB", (4, 4))))
_VIDEOS = st.one_of(_ANY, st.sampled_from(["missing.mp4", DIRECTORY]),
                    st.builds(lambda s: np.zeros(s, np.uint8), st.lists(st.integers(0, 3), max_size=5)),
                    st.lists(st.one_of(st.just(np.zeros((4, 4, 3), np.uint8)), st.integers(), st.none()), max_size=3))


@pytest.fixture(scope="module")
def bare_pipe():
    """A pipeline object without models: check_inputs reads neither of them."""
    from fhavatar import FHAvatarPipeline

    return FHAvatarPipeline.__new__(FHAvatarPipeline)


@settings(max_examples=200, **FUZZ_SETTINGS)
@given(image=_IMAGES, video=_VIDEOS, frames=_ANY, height=_ANY, width=_ANY,
       mode=st.one_of(_ANY, st.sampled_from(["relative", "absolute"])),
       output_type=st.one_of(_ANY, st.sampled_from(["pil", "np", "pt"])), driving_frames=_ANY)
def test_check_inputs_raises_only_documented_errors(bare_pipe, image, video, frames, height, width, mode, output_type,
                                                    driving_frames):
    _classify(lambda: bare_pipe.check_inputs(image, video, frames, height, width, mode, output_type, driving_frames))


@known_defect("long-path")
def test_check_inputs_with_an_over_long_path(bare_pipe):
    from .catalogue import refused

    refused("check_inputs: 5000-character image path", lambda: bare_pipe.check_inputs("a" * 5000), r"image")
    refused("check_inputs: 5000-character video path", lambda: bare_pipe.check_inputs(None, "v" * 5000), r"driving_video")
