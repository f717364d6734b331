"""Hostile tensors and files: NaN/inf, PLY, safetensors, pipeline folders, the Spacefile, and pickles that carry code."""

from __future__ import annotations

import json
import os
import pickle
import shutil
import struct
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import save_file

from fhavatar.avatar import load_gaussians_ply, save_gaussians_ply
from fhavatar.io import read_safetensors
from fhavatar.rendering import Camera, Gaussians, render_gaussians

from .catalogue import defect_marks, handled, known_defect, refused, write

ROOT = Path(__file__).resolve().parents[2]
NAN, INF = float("nan"), float("inf")


def _gaussians(n: int = 4, **fields) -> Gaussians:
    values = dict(means=torch.zeros(n, 3), quats=torch.tensor([[1.0, 0, 0, 0]] * n), scales=torch.full((n, 3), 0.05),
                  opacities=torch.full((n,), 0.9), colors=torch.full((n, 3), 0.5))
    return Gaussians(**{**values, **fields})


def _with(name: str, index: tuple, value: float, n: int = 4) -> dict:
    base = _gaussians(n)
    tensor = getattr(base, name).clone()
    tensor[index] = value
    return {name: tensor}


# ---------------------------------------------------------------------------------------------- NaN / inf tensors
@pytest.mark.parametrize("field, index", [("means", (0, 1)), ("quats", (2, 0)), ("scales", (1, 2)), ("opacities", (3,)),
                                          ("colors", (0, 0))])
@pytest.mark.parametrize("value", [NAN, INF])
def test_non_finite_gaussians_are_refused(field, index, value):
    refused(f"Gaussians.{field} = {value}", lambda: _gaussians(**_with(field, index, value)),
            rf"Gaussians\.{field} must be finite|Gaussians\.{field}.*(NaN|inf)")


def test_non_finite_cameras_and_render_arguments():
    camera = Camera.orbit(1)
    for name in ("cam2world", "intrinsics"):
        for value in (NAN, INF):
            tensor = getattr(camera, name).clone()
            tensor[0, 0, -1] = value
            fields = {"cam2world": camera.cam2world, "intrinsics": camera.intrinsics, name: tensor}
            refused(f"Camera.{name} = {value}", lambda f=fields: Camera(**f), rf"Camera\.{name} holds NaN/inf")
    g = _gaussians()
    refused("render: NaN background", lambda: render_gaussians(g, camera, 16, 16, background=torch.tensor([NAN, 0, 0])),
            r"`background` holds NaN/inf")
    refused("render: inf features", lambda: render_gaussians(g, camera, 16, 16, features=torch.full((4, 2), INF)),
            r"`features` holds NaN/inf")
    mutated = _gaussians()
    mutated.means[0, 0] = NAN  # changed after construction: render_gaussians validates again
    refused("render: Gaussians mutated to NaN", lambda: render_gaussians(mutated, camera, 16, 16), r"means must be finite")
    refused("render: zero width", lambda: render_gaussians(g, camera, 0, 16), r"`width` must be a positive int")

    def finite_image(out):
        assert torch.isfinite(out.image).all() and out.image.min() >= 0 and out.image.max() <= 1

    extreme = _gaussians(scales=torch.full((4, 3), 1e30), means=torch.full((4, 3), 1e30))
    handled("render: 1e30 scales and positions", lambda: render_gaussians(extreme, camera, 16, 16), finite_image)
    handled("render: 1e-30 scales", lambda: render_gaussians(_gaussians(scales=torch.full((4, 3), 1e-30)), camera, 16, 16),
            finite_image)


@known_defect("render-size")
def test_render_size_is_bounded_before_allocating():
    refused("render: 100000 x 100000 pixels", lambda: render_gaussians(_gaussians(), Camera.orbit(1), 100_000, 100_000),
            r"(width|height|pixels)", limit_s=10)


# ---------------------------------------------------------------------------------------------- PLY files
@pytest.fixture
def ply(tmp_path) -> bytes:
    return save_gaussians_ply(_gaussians(2), tmp_path / "ok.ply").read_bytes()


def _header_end(data: bytes) -> int:
    return data.find(b"end_header\n") + len(b"end_header\n")


@pytest.mark.parametrize("column, value, problem", [(0, NAN, "means"), (10, 1e30, "scales"), (9, NAN, "opacities"),
                                                    (6, NAN, "colors"), (2, -INF, "means")])
def test_ply_with_non_finite_values(ply, tmp_path, column, value, problem):
    data = bytearray(ply)
    struct.pack_into("<f", data, _header_end(ply) + 4 * column, value)  # first vertex, one property
    path = write(tmp_path / "bad.ply", bytes(data))
    refused(f"PLY: {problem} <- {value}", lambda: load_gaussians_ply(path), rf"Gaussians\.{problem} must be finite")


def test_ply_with_an_infinite_colour_coefficient(ply, tmp_path):
    data = bytearray(ply)
    struct.pack_into("<f", data, _header_end(ply) + 4 * 6, INF)  # f_dc_0: saturates to full red, a valid colour
    path = write(tmp_path / "inf_colour.ply", bytes(data))
    handled("PLY: colour coefficient inf", lambda: load_gaussians_ply(path),
            lambda g: (g.colors[0, 0] == 1 and torch.isfinite(g.colors).all()) or pytest.fail(str(g.colors[0])))


def test_ply_with_broken_structure(ply, tmp_path):
    body = ply[_header_end(ply):]
    props = ply[ply.find(b"property"): _header_end(ply)]
    cases = {
        "empty file": (b"", r"not a PLY file"),
        "truncated data": (ply[:-20], r"truncated"),
        "ascii format": (ply.replace(b"binary_little_endian", b"ascii"), r"only 'binary_little_endian'"),
        "big-endian format": (ply.replace(b"binary_little_endian", b"binary_big_endian"), r"only 'binary_little_endian'"),
        "huge vertex count": (b"ply\nformat binary_little_endian 1.0\nelement vertex 99999999999\n" + props + body,
                              r"truncated: the header declares 99999999999 vertices"),
        "no end_header": (ply[: ply.find(b"end_header")], r"not a PLY file"),
        "missing properties": (ply.replace(b"property float rot_0\n", b""), r"missing vertex properties \['rot_0'\]"),
        "zero quaternion": (ply[:_header_end(ply)] + bytes(len(body)), r"zero rotation quaternions"),
        "face element": (ply.replace(b"end_header", b"element face 1\nend_header"), r"only the 'vertex' element"),
    }
    for name, (data, match) in cases.items():
        refused(f"PLY: {name}", lambda d=data, n=name: load_gaussians_ply(write(tmp_path / f"{n}.ply", d)), match)


@known_defect("ply-header")
@pytest.mark.parametrize("line, match", [(b"element", r"element"), (b"element vertex abc", r"vertex count"),
                                         (b"element vertex -5", r"vertex count"), (b"property", r"property")])
def test_ply_with_malformed_header_lines(ply, tmp_path, line, match):
    header = b"ply\nformat binary_little_endian 1.0\n" + line + b"\n"
    data = header + ply[ply.find(b"property"):]
    refused(f"PLY header line {line!r}", lambda: load_gaussians_ply(write(tmp_path / "h.ply", data)),
            rf"h\.ply.*{match}")


# ---------------------------------------------------------------------------------------------- safetensors
def _safetensors_header(header: dict, data: bytes = b"") -> bytes:
    raw = json.dumps(header).encode()
    return struct.pack("<Q", len(raw)) + raw + data


def test_unreadable_safetensors(tmp_path):
    cases = {
        "random bytes": (os.urandom(64), r"not a readable"),
        "header length past the end": (struct.pack("<Q", 2**40) + b"{}", r"not a readable"),
        "shape larger than the data": (_safetensors_header({"w": {"dtype": "F32", "shape": [100000, 100000],
                                                                  "data_offsets": [0, 16]}}, bytes(16)), r"not a readable"),
        "offsets past the end": (_safetensors_header({"w": {"dtype": "F32", "shape": [4], "data_offsets": [0, 4096]}},
                                                     bytes(16)), r"not a readable"),
        "unknown dtype": (_safetensors_header({"w": {"dtype": "Q99", "shape": [4], "data_offsets": [0, 16]}}, bytes(16)),
                          r"not a readable"),
        "empty file": (b"", r"not a readable"),
    }
    for name, (data, match) in cases.items():
        path = write(tmp_path / f"{name}.safetensors", data)
        refused(f"safetensors: {name}", lambda p=path: read_safetensors(p, "weights file"), rf"weights file.*|{match}")
    refused("safetensors: missing", lambda: read_safetensors(tmp_path / "none.safetensors", "weights file"),
            r"weights file.*does not exist", errors=(FileNotFoundError,))


@pytest.fixture(scope="module")
def avatar_file(pipe, tmp_path_factory) -> Path:
    avatar = pipe.reconstruct(ROOT / "examples" / "astronaut.png")
    return avatar.save(tmp_path_factory.mktemp("avatar") / "avatar.safetensors")


def _resave(src: Path, dst: Path, edit) -> Path:
    from safetensors import safe_open

    with safe_open(str(src), framework="pt") as f:
        metadata = f.metadata()
        tensors = {k: f.get_tensor(k) for k in f.keys()}
    edit(tensors)
    save_file(tensors, str(dst), metadata=metadata)
    return dst


def test_avatar_files_with_wrong_shapes_or_values(pipe, avatar_file, tmp_path):
    from fhavatar.avatar import Avatar

    head = pipe.head_model
    handled("avatar file round trip", lambda: Avatar.load(avatar_file, head), lambda a: len(a) > 1000 or pytest.fail())
    first_float = next(k for k, v in read_safetensors(avatar_file, "avatar")[0].items()
                       if v.is_floating_point() and v.dim() == 2 and not k.startswith("source"))

    def shrink(t):
        t[first_float] = t[first_float][:, :1].contiguous()

    wrong = _resave(avatar_file, tmp_path / "wrong.safetensors", shrink)
    refused("avatar file: wrong shape", lambda: Avatar.load(wrong, head), rf"{first_float}.*must have shape")

    def drop(t):
        del t[first_float]

    missing = _resave(avatar_file, tmp_path / "missing.safetensors", drop)
    refused("avatar file: missing tensor", lambda: Avatar.load(missing, head), rf"incomplete: missing \['{first_float}'\]")

    def poison(t):
        t[first_float] = torch.full_like(t[first_float], NAN)

    nan = _resave(avatar_file, tmp_path / "nan.safetensors", poison)
    refused("avatar file: NaN values (load + gaussians)", lambda: Avatar.load(nan, head).gaussians(), r"must be finite")
    not_avatar = tmp_path / "plain.safetensors"
    save_file({"x": torch.zeros(2)}, str(not_avatar))
    refused("avatar file: other safetensors", lambda: Avatar.load(not_avatar, head), r"is not an FHAvatar avatar")


def test_head_model_files_with_wrong_shapes(tmp_path):
    from fhavatar.head.open_head import OpenHead, default_asset_path

    def shrink(t):
        t["template_vertices"] = t["template_vertices"][:10].contiguous()

    path = _resave(default_asset_path(), tmp_path / "open_head.safetensors", shrink)
    refused("OpenHead asset: wrong shape", lambda: OpenHead.from_file(path), r"`template_vertices` is \[10, 3\]")
    refused("OpenHead asset: not safetensors", lambda: OpenHead.from_file(write(tmp_path / "x.safetensors", b"junk" * 8)),
            r"not a readable")
    from fhavatar.head.flame import FLAME

    refused("FLAME file: an OpenHead asset", lambda: FLAME.from_file(default_asset_path()), r"not an FHAvatar FLAME file")


# ---------------------------------------------------------------------------------------------- pipeline folders
@pytest.fixture(scope="module")
def saved_pipeline(tmp_path_factory) -> Path:
    from fhavatar import FHAvatarPipeline

    folder = tmp_path_factory.mktemp("pipe") / "saved"
    FHAvatarPipeline.default(resolution=16).save_pretrained(folder)
    return folder


def _variant(saved: Path, tmp_path: Path, name: str, edit) -> Path:
    folder = tmp_path / name
    shutil.copytree(saved, folder)
    edit(folder)
    return folder


def _set_json(rel: str, **values):
    def edit(folder):
        data = json.loads((folder / rel).read_text())
        data.update(values)
        (folder / rel).write_text(json.dumps(data))

    return edit


def test_pipeline_folders_that_load_or_are_refused(saved_pipeline, tmp_path):
    from fhavatar import FHAvatarPipeline

    load = FHAvatarPipeline.from_pretrained
    handled("pipeline folder round trip", lambda: load(saved_pipeline), lambda p: p.config.resolution == 16 or pytest.fail())
    outside = _variant(saved_pipeline, tmp_path, "outside", _set_json("model_index.json", avatar_model=["os", "system"]))
    refused("model_index.json naming os.system", lambda: load(outside), r"only fhavatar classes are loaded")
    not_model = _variant(saved_pipeline, tmp_path, "notmodel",
                         _set_json("model_index.json", avatar_model=["fhavatar.__main__", "main"]))
    refused("model_index.json naming a function", lambda: load(not_model), r"is not an fhavatar model class")
    refused("no model_index.json", lambda: load(_variant(saved_pipeline, tmp_path, "noindex",
                                                         lambda f: (f / "model_index.json").unlink())),
            r"holds no model_index.json")
    refused("a file instead of a folder", lambda: load(saved_pipeline / "model_index.json"), r"must be a folder")


@known_defect("model-index")
@pytest.mark.parametrize("name, edit, match", [
    ("not JSON", lambda f: (f / "model_index.json").write_text("{not json"), r"model_index\.json.*(JSON|json)"),
    ("a JSON list", lambda f: (f / "model_index.json").write_text("[1, 2]"), r"model_index\.json"),
    ("3-item module entry", _set_json("model_index.json", avatar_model=["fhavatar", "A", "B"]), r"avatar_model"),
    ("missing fhavatar module", _set_json("model_index.json", avatar_model=["fhavatar.nope", "X"]), r"fhavatar\.nope"),
    ("component config not JSON", lambda f: (f / "head_model" / "config.json").write_text("{{{"), r"head_model"),
    ("component config missing", lambda f: (f / "head_model" / "config.json").unlink(), r"head_model"),
    ("component weights junk", lambda f: [w.write_bytes(b"junk") for w in (f / "head_model").glob("*.safetensors")],
     r"head_model"),
])
def test_malformed_pipeline_folders_are_refused(saved_pipeline, tmp_path, name, edit, match):
    from fhavatar import FHAvatarPipeline

    folder = _variant(saved_pipeline, tmp_path, "case", edit)
    refused(f"pipeline folder: {name}", lambda: FHAvatarPipeline.from_pretrained(folder), match)


@known_defect("pipeline-config")
@pytest.mark.parametrize("values, match", [({"resolution": "abc"}, r"resolution"), ({"resolution": -4}, r"resolution"),
                                           ({"background": "xyz"}, r"background"),
                                           ({"background": [NAN, 0, 0]}, r"background")])
def test_pipeline_config_values_are_checked(saved_pipeline, tmp_path, values, match):
    from fhavatar import FHAvatarPipeline

    folder = _variant(saved_pipeline, tmp_path, "case", _set_json("model_index.json", **values))
    refused(f"model_index.json {values}", lambda: FHAvatarPipeline.from_pretrained(folder), match)


# ---------------------------------------------------------------------------------------------- Spacefile
def test_spacefile_shapes_that_are_refused(tmp_path):
    from fhavatar.space import load_spacefile

    refused("Spacefile: a YAML list", lambda: load_spacefile(write(tmp_path / "list", b"- a\n- b\n")), r"must be a YAML mapping")
    refused("Spacefile: empty", lambda: load_spacefile(write(tmp_path / "empty", b"")), r"must be a YAML mapping")
    refused("Spacefile: missing keys", lambda: load_spacefile(write(tmp_path / "few", b"title: x\n")),
            r"missing keys \['sdk', 'sdk_version', 'app_file'\]")
    refused("Spacefile: missing file", lambda: load_spacefile(tmp_path / "none"), r"Spacefile .*none' does not exist")
    handled("Spacefile: the repository's", lambda: load_spacefile(ROOT / "Spacefile"),
            lambda d: d["app_file"] == "app.py" or pytest.fail())


@known_defect("spacefile")
@pytest.mark.parametrize("name, text", [("tab indent", b"title: a\n\tsdk: gradio\n"), ("unclosed list", b"title: [a\n"),
                                        ("python tag", b"!!python/object/apply:os.system ['echo hi']\n"),
                                        ("binary", b"\x00\x01\xff\xfe"),
                                        ("wrong types", b"title: x\nsdk: 5\nsdk_version: [1]\napp_file: {a: 1}\n")])
def test_malformed_spacefiles_are_refused(tmp_path, name, text):
    from fhavatar.space import load_spacefile

    path = write(tmp_path / "Spacefile", text)
    refused(f"Spacefile: {name}", lambda: load_spacefile(path), r"Spacefile")


# ---------------------------------------------------------------------------------------------- pickles with code
class _Payload:
    """Unpickling this runs its `__reduce__` callable: here, creating a marker file."""

    def __init__(self, marker: Path, how: str):
        self.marker, self.how = marker, how

    def __reduce__(self):
        if self.how == "open":
            return open, (str(self.marker), "w")
        return os.system, (f"touch {self.marker}",)


PAYLOAD_FILES = [f"{how}-{kind}" for how in ("open", "system") for kind in ("p0.pkl", "p2.pkl", "p4.pkl", "p5.pkl",
                                                                            "torch.pt", "array.npy")]
CONVERTERS = ["convert_flame.read_flame_model", "convert_flame.read_masks", "convert_flame.read_landmarks",
              "convert_flame.convert_flame", "metrics.load_state_dict_file", "prior.convert_panohead",
              "prior.convert_inversion"]
#: Non-pickle files (a torch zip, a .npy) given to the FLAME pickle readers: a bare pickle.UnpicklingError escapes.
_PICKLE_ERRORS = {(c, f) for c in CONVERTERS[:4] if c != "convert_flame.read_landmarks" for f in PAYLOAD_FILES
                  if f.endswith(("torch.pt", "array.npy"))}


def _payload_file(folder: Path, name: str, marker: Path) -> Path:
    how, kind = name.split("-")
    payload = _Payload(marker, how)
    path = folder / name
    if kind.endswith(".pkl"):
        data = {"v_template": payload, "G_ema": payload, "f": payload}
        return write(path, pickle.dumps(data, protocol=int(kind[1])))
    if kind == "torch.pt":
        torch.save({"state_dict": payload}, path)  # a zip checkpoint whose data.pkl carries the payload
        return path
    np.save(path, np.array([payload], dtype=object), allow_pickle=True)
    return path


def _converter(name: str, out: Path):
    if name.startswith("convert_flame."):
        from fhavatar.tools import convert_flame

        return {
            "read_flame_model": lambda p: convert_flame.read_flame_model(p),
            "read_masks": lambda p: convert_flame.read_masks(p, 100),
            "read_landmarks": lambda p: convert_flame.read_landmarks(p, 100),
            "convert_flame": lambda p: convert_flame.convert_flame(p, p, p, p, out / "flame.safetensors"),
        }[name.split(".")[1]]
    if name == "metrics.load_state_dict_file":
        from fhavatar.metrics._common import load_state_dict_file

        return lambda p: load_state_dict_file(p, "weights")
    from fhavatar.tools import convert_prior as prior_convert

    return {"prior.convert_panohead": lambda p: prior_convert.convert_panohead(p, out / "prior"),
            "prior.convert_inversion": lambda p: prior_convert.convert_inversion(p, out / "prior")}[name]


@pytest.mark.filterwarnings("ignore:Detected pickle protocol:UserWarning")  # torch.load's note on protocols 4-5
@pytest.mark.parametrize("converter, file_name", [
    pytest.param(c, f, marks=defect_marks("pickle-errors") if (c, f) in _PICKLE_ERRORS else ())
    for c in CONVERTERS for f in PAYLOAD_FILES])
def test_pickles_with_code_never_run_in_any_converter(tmp_path, converter, file_name):
    marker = tmp_path / "PAYLOAD_RAN"
    path = _payload_file(tmp_path, file_name, marker)
    refused(f"{converter}({file_name})", lambda: _converter(converter, tmp_path)(path),
            r"(non-data object|refus|weights_only|not a FLAME|expected|neither|unknown landmark|pickle)")
    assert not marker.exists(), f"{converter} ran the code in {file_name}"


def test_converter_command_lines_refuse_payloads(tmp_path, capsys):
    from fhavatar.tools import convert_flame

    marker = tmp_path / "PAYLOAD_RAN"
    evil = _payload_file(tmp_path, "open-p2.pkl", marker)
    args = ["--model", str(evil), "--uv", str(evil), "--masks", str(evil), "--landmarks", str(evil), "--out",
            str(tmp_path / "o.safetensors")]
    err = refused("convert_flame CLI with a payload", lambda: convert_flame.main(args), r"2", errors=(SystemExit,))
    assert err.code == 2 and "non-data object" in capsys.readouterr().err and not marker.exists()


@known_defect("sparse-bomb")
def test_pickled_sparse_matrix_with_a_huge_shape(tmp_path):
    """A FLAME-style pickle whose scipy.sparse J_regressor claims 10^6 x 10^6 entries (7 TiB dense)."""
    import copyreg
    import sys
    import types

    from fhavatar.tools.restricted_pickle import as_array, load_pickle

    module = types.ModuleType("scipy.sparse._csc")

    class csc_matrix:  # noqa: N801 - the name a real pickle carries
        def __reduce__(self):
            state = {"_shape": (10**6, 10**6), "data": [], "indices": [], "indptr": [0] * (10**6 + 1)}
            return copyreg._reconstructor, (csc_matrix, object, None), state

    csc_matrix.__module__, csc_matrix.__qualname__ = module.__name__, "csc_matrix"  # pickled by that name
    module.csc_matrix = csc_matrix
    saved = sys.modules.get(module.__name__)
    sys.modules[module.__name__] = module
    try:
        data = pickle.dumps({"J_regressor": csc_matrix()}, protocol=4)
    finally:
        if saved is None:
            sys.modules.pop(module.__name__)
        else:
            sys.modules[module.__name__] = saved
    refused("sparse matrix of 10^6 x 10^6", lambda: as_array(load_pickle(data)["J_regressor"], "J_regressor"),
            r"J_regressor|too large|shape", limit_s=10)
