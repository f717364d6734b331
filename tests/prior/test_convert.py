"""Official checkpoint conversion: restricted unpickling, PanoHead pickle and dual-encoder checkpoints, CLI, errors.

The synthetic files mimic the official ones. A PanoHead pickle is `pickle.dump({'training_set_kwargs', 'G', 'D',
'G_ema', 'augment_pipe'})` whose networks are EG3D `persistence` classes: each instance pickles as
`torch_utils.persistence._reconstruct_persistent_obj(meta)`, `meta = {type, version, module_src, class_name, state}`
with `state` the module's `__dict__` (plus `_init_kwargs`); undecorated modules (`torch.nn.Sequential`, `Softplus`,
EG3D's `RaySampler`) pickle by class reference. Fake `torch_utils`/`dnnlib`/`training` modules are installed only
while writing, so the files name the same globals as the real ones; their embedded `module_src` would create a
marker file if anything executed it.
"""

import json
import os
import pickle
import subprocess
import sys
import types
from collections import OrderedDict
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from fhavatar.prior import GENERATOR_PRESETS, PanoHeadPrior
from fhavatar.prior.inversion import INVERSION_PRESETS
from fhavatar.rendering import Camera
from fhavatar.tools import convert_prior as cv
from fhavatar.tools.network_pickle import PersistentStandIn, load_network_pickle
from fhavatar.tools.restricted_pickle import RefusedPickleError, load_pickle

# ---------------------------------------------------------------------------------------------- official-like files
#: Classes the official generator builds from plain torch (pickled by reference, not as persistent objects).
_PLAIN_TORCH = (nn.Sequential, nn.ModuleList, nn.ModuleDict, nn.Softplus, nn.ReLU, nn.LeakyReLU, nn.Identity)


def _reconstruct_persistent_obj(meta):  # the real one `exec`s meta['module_src']; ours must never be called
    raise AssertionError("the converter called the pickled reconstruct function")


class EasyDict(dict):
    """Stand-in for `dnnlib.EasyDict` with its module name."""


class RaySampler(nn.Module):
    """EG3D's undecorated ray sampler (no parameters), pickled by reference."""


@contextmanager
def official_modules():
    """Make `torch_utils.persistence`, `dnnlib.util` and `training.volumetric_rendering.ray_sampler` importable."""
    made = {name: types.ModuleType(name) for name in (
        "torch_utils", "torch_utils.persistence", "dnnlib", "dnnlib.util", "training", "training.volumetric_rendering",
        "training.volumetric_rendering.ray_sampler")}
    for obj, module in ((_reconstruct_persistent_obj, "torch_utils.persistence"), (EasyDict, "dnnlib.util"),
                        (RaySampler, "training.volumetric_rendering.ray_sampler")):
        obj.__module__ = module
        setattr(made[module], obj.__name__, obj)
    saved = {name: sys.modules.get(name) for name in made}
    sys.modules.update(made)
    try:
        yield
    finally:
        for name, old in saved.items():
            if old is None:
                sys.modules.pop(name, None)
            else:
                sys.modules[name] = old


class Persistent:
    """Pickles exactly like an EG3D persistent object (`_reconstruct_persistent_obj(meta)`)."""

    def __init__(self, class_name: str, state: dict, module_src: str):
        self.class_name, self.state, self.module_src = class_name, state, module_src

    def __reduce__(self):
        meta = dict(type="class", version=6, module_src=self.module_src, class_name=self.class_name, state=self.state)
        return _reconstruct_persistent_obj, (meta,)


def evil_source(marker: Path) -> str:
    """Module source that would create `marker` if executed (the converter must never run it)."""
    return f"import pathlib\npathlib.Path({str(marker)!r}).write_text('executed')\nclass Anything: pass\n"


def mimic(module: nn.Module, module_src: str, extra: dict | None = None, init_kwargs: dict | None = None,
          children: dict | None = None):
    """The official pickled form of `module`: persistent objects for network classes, torch classes by reference.

    Only plain-data attributes are kept (the official classes hold ints, floats, strings and dicts).
    """
    state = {}
    for key, value in module.__dict__.items():
        if key.startswith("_") or key == "training" or isinstance(value, (int, float, str, bool, type(None))):
            state[key] = type(value)(value) if isinstance(value, dict) else value  # edits must not reach `module`
    state["_modules"] = OrderedDict(
        (name, None if child is None else mimic(child, module_src)) for name, child in module._modules.items()
    )
    state["_modules"].update(children or {})
    state.update(extra or {})
    if isinstance(module, _PLAIN_TORCH):
        obj = type(module).__new__(type(module))
        obj.__dict__.update(state)
        return obj
    state["_init_args"], state["_init_kwargs"] = (), EasyDict(init_kwargs or {})
    return Persistent(type(module).__name__, state, module_src)


def official_generator_kwargs(config: dict) -> dict:
    """`TriPlaneGenerator` init kwargs (PanoHead train.py names) expressing a `PanoHeadGenerator` config."""
    r = config["rendering"]
    return dict(
        z_dim=config["z_dim"], w_dim=config["w_dim"], c_dim=25, img_resolution=config["img_resolution"], img_channels=3,
        channel_base=config["channel_base"], channel_max=config["channel_max"], architecture="skip",
        mapping_kwargs=EasyDict(num_layers=config["mapping_layers"]), num_fp16_res=0, conv_clamp=None,
        fused_modconv_default="inference_only", sr_num_fp16_res=4,
        sr_kwargs=EasyDict(channel_base=config["channel_base"], channel_max=config["channel_max"]),
        rendering_kwargs=dict(
            image_resolution=config["img_resolution"], disparity_space_sampling=False, clamp_mode="softplus",
            superresolution_module="training.superresolution.SuperresolutionHybrid8XDC",
            c_gen_conditioning_zero=config.get("c_gen_conditioning_zero", False), c_scale=config.get("c_scale", 1.0),
            decoder_lr_mul=1, decoder_activation=config["decoder_activation"], use_torgb_raw=config["use_torgb_raw"],
            triplane_size=config["triplane_resolution"], triplane_depth=config["triplane_depth"],
            use_background=config["use_background"], sr_antialias=True, depth_resolution=r["depth_resolution"],
            depth_resolution_importance=r["depth_resolution_importance"], ray_start=r["ray_start"],
            ray_end=r["ray_end"], box_warp=r["box_warp"], avg_camera_radius=2.7, avg_camera_pivot=[0, 0, 0.2],
        ),
    )


def _empty_state(**extra) -> dict:
    return {"training": False, "_parameters": OrderedDict(), "_buffers": OrderedDict(), "_modules": OrderedDict(),
            "_init_args": (), "_init_kwargs": EasyDict(), **extra}


def official_renderer(module_src: str) -> Persistent:
    """PanoHead's `ImportanceRenderer` (persistent, no parameters, a plain-tensor `plane_axes` attribute)."""
    marcher = Persistent("MipRayMarcher2", _empty_state(), module_src)
    axes = torch.tensor([[[1, 0, 0], [0, 1, 0], [0, 0, 1]], [[1, 0, 0], [0, 0, 1], [0, 1, 0]],
                         [[0, 1, 0], [0, 0, 1], [1, 0, 0]]], dtype=torch.float32)
    state = _empty_state(plane_axes=axes)
    state["_modules"]["ray_marcher"] = marcher
    return Persistent("ImportanceRenderer", state, module_src)


def write_panohead_pickle(generator: nn.Module, config: dict, path: Path, marker: Path, edit=None) -> Path:
    """Write `{'training_set_kwargs', 'G', 'D', 'G_ema', 'augment_pipe'}` like PanoHead's training loop.

    `edit(g_ema)` may alter the pickled generator (its stand-in states) before writing.
    """
    src = evil_source(marker)
    with official_modules():
        kwargs = official_generator_kwargs(config)
        g_ema = mimic(generator, src, init_kwargs=kwargs, extra={"rendering_kwargs": kwargs["rendering_kwargs"]},
                      children={"renderer": official_renderer(src), "ray_sampler": RaySampler()})
        if edit is not None:
            edit(g_ema)
        disc_state = _empty_state()
        disc_state["_parameters"]["w"] = nn.Parameter(torch.randn(4, 4), requires_grad=False)
        data = dict(training_set_kwargs=dict(class_name="training.dataset.MaskLabeledDataset", resolution=512),
                    G=g_ema, D=Persistent("MaskDualDiscriminatorV2", disc_state, src), G_ema=g_ema, augment_pipe=None)
        path.write_bytes(pickle.dumps(data, protocol=pickle.HIGHEST_PROTOCOL))
    return path


def find(obj, dotted: str):
    """The pickled stand-in at `dotted` under `obj` (persistent objects and plain torch modules)."""
    for part in dotted.split("."):
        obj = obj.state["_modules"][part] if isinstance(obj, Persistent) else obj.__dict__["_modules"][part]
    return obj


class _Shell:
    """A pickle payload that runs `func(*args)` when loaded by an unrestricted unpickler."""

    def __init__(self, func, args):
        self.func, self.args = func, args

    def __reduce__(self):
        return self.func, self.args


@pytest.fixture(scope="module")
def tiny():
    torch.manual_seed(0)
    return PanoHeadPrior.from_preset("tiny")


@pytest.fixture(scope="module")
def converted(tiny, tmp_path_factory):
    """The tiny generator written as an official-style pickle and converted."""
    tmp = tmp_path_factory.mktemp("panohead")
    marker = tmp / "executed"
    pkl = write_panohead_pickle(tiny.generator, GENERATOR_PRESETS["tiny"], tmp / "network-snapshot.pkl", marker)
    out = tmp / "converted"
    cv.convert_panohead(pkl, out)
    return dict(pkl=pkl, out=out, marker=marker, tmp=tmp)


def _encoder_checkpoint(prior, index, path, legacy=False):
    """A TriPlaneNet/pSp-coach checkpoint of one encoder (its state dict also holds a generator copy)."""
    enc = getattr(prior.inversion, f"encoder{index}")
    state = OrderedDict((k, v) for k, v in enc.state_dict().items() if k != "latent_avg")
    state.update((f"decoder.{k}", v) for k, v in list(prior.generator.state_dict().items())[:5])
    data = {"state_dict": state, "opts": {"n_styles": 8, "lr": 1e-4, "encoder_type": "GradualStyleEncoder"},
            "latent_avg": enc.latent_avg.clone()}
    torch.save(data, path, _use_new_zipfile_serialization=not legacy)
    return path


# ---------------------------------------------------------------------------------------------- restricted reader
def test_network_reader_rebuilds_tensors_views_and_parameters():
    values = {
        "f32": torch.randn(3, 4), "view": torch.randn(5, 6)[1:4, ::2], "f16": torch.randn(7).half(),
        "bf16": torch.randn(3).bfloat16(), "i64": torch.arange(6), "bool": torch.tensor([True, False, True]),
        "u8": torch.arange(5, dtype=torch.uint8), "scalar": torch.tensor(2.5), "empty": torch.zeros(0, 3),
        "param": nn.Parameter(torch.randn(2, 2), requires_grad=False),
    }
    for protocol in (2, 4):
        out = load_network_pickle(pickle.dumps(values, protocol=protocol))
        for key, tensor in values.items():
            assert out[key].dtype == tensor.dtype and out[key].shape == tensor.shape, key
            assert torch.equal(out[key], tensor), key
        assert isinstance(out["param"], nn.Parameter)


def test_persistent_objects_become_inert_stand_ins(tmp_path):
    marker = tmp_path / "executed"
    state = {"_parameters": OrderedDict(w=torch.ones(2)), "_modules": OrderedDict(), "_init_kwargs": {"z_dim": 4}}
    with official_modules():
        data = pickle.dumps({"G_ema": Persistent("TriPlaneGenerator", state, evil_source(marker))})
    obj = load_network_pickle(data)["G_ema"]
    assert isinstance(obj, PersistentStandIn) and obj.class_name == "TriPlaneGenerator"
    assert obj.init_kwargs == {"z_dim": 4} and "write_text" in obj.module_src
    assert torch.equal(obj.state["_parameters"]["w"], torch.ones(2))
    assert not marker.exists()


@pytest.mark.parametrize("kind", ["os.system", "exec", "inside-persistent", "inside-storage-blob", "subprocess"])
def test_reduce_payloads_are_refused_and_never_run(tmp_path, kind):
    marker = tmp_path / "pwned"
    shell = _Shell(os.system, (f"touch {marker}",))
    if kind == "os.system":
        payload = shell
    elif kind == "exec":
        payload = _Shell(exec, (f"open({str(marker)!r}, 'w')",))
    elif kind == "subprocess":
        payload = _Shell(subprocess.Popen, (["touch", str(marker)],))
    elif kind == "inside-persistent":
        payload = Persistent("TriPlaneGenerator", {"_parameters": OrderedDict(), "_modules": OrderedDict(),
                                                   "rendering_kwargs": {"x": shell}}, "")
    else:  # a tensor whose storage blob is itself a malicious pickle
        payload = _Shell(torch.storage._load_from_bytes, (pickle.dumps(shell, protocol=2),))
    with official_modules():
        data = pickle.dumps({"G_ema": payload}, protocol=4)
    path = tmp_path / "evil.pkl"
    path.write_bytes(data)
    with pytest.raises(RefusedPickleError, match=r"refusing it") as info:
        cv.convert_panohead(path, tmp_path / "out")
    assert any(name in str(info.value) for name in ("system", "exec", "Popen"))
    assert not marker.exists() and not (tmp_path / "out").exists()


def test_flame_reader_is_unchanged():
    # The FLAME converter's reader still refuses torch globals unless told to make them opaque.
    data = pickle.dumps({"t": torch.zeros(2)}, protocol=2)
    with pytest.raises(RefusedPickleError):
        load_pickle(data)
    assert load_pickle(pickle.dumps({"a": np.arange(3)}, protocol=2))["a"].tolist() == [0, 1, 2]


# ---------------------------------------------------------------------------------------------- PanoHead generator
def test_converted_generator_matches_the_tiny_model(tiny, converted):
    assert not converted["marker"].exists()  # the embedded module source never ran
    loaded = PanoHeadPrior.from_pretrained(converted["out"])
    # The config comes from the pickled init kwargs and the weights' shapes: exactly the tiny preset.
    gen_config = loaded.config.generator_config
    assert {k: gen_config[k] for k in GENERATOR_PRESETS["tiny"]} == GENERATOR_PRESETS["tiny"]
    assert loaded.config.inversion_config is None
    got = loaded.generator.state_dict()
    for name, tensor in tiny.generator.state_dict().items():
        assert torch.equal(got[name], tensor), name
    ws = tiny.generator.mapping(torch.randn(1, 32, generator=torch.Generator().manual_seed(2)), Camera.orbit(4)[:1].to_label())
    tri_a, tri_b = tiny.generator.synthesize(ws), loaded.generator.synthesize(ws)
    assert torch.equal(tri_a.planes, tri_b.planes)
    cam = Camera.orbit(4)[1:2]
    a, b = tiny.render(tri_a, cam), loaded.render(tri_b, cam)
    assert torch.equal(a.image, b.image) and torch.equal(a.depth, b.depth)
    manifest = json.loads((converted["out"] / cv.MANIFEST_NAME).read_text())
    assert manifest["generator"]["network_key"] == "G_ema" and manifest["generator"]["init_kwargs_found"]
    assert manifest["generator"]["not_converted"] == ["D", "G", "augment_pipe", "training_set_kwargs"]
    assert "non-commercial" in manifest["license"]


def test_unknown_missing_and_mismatched_keys_are_reported_by_name(tiny, tmp_path):
    def edit(g_ema):
        del find(g_ema, "decoder.net.0").state["_parameters"]["bias"]
        find(g_ema, "torgb").state["_parameters"]["extra_gain"] = nn.Parameter(torch.ones(3), requires_grad=False)
        find(g_ema, "t_mapping.fc0").state["_parameters"]["weight"] = nn.Parameter(torch.zeros(5, 5), requires_grad=False)

    pkl = write_panohead_pickle(tiny.generator, GENERATOR_PRESETS["tiny"], tmp_path / "g.pkl", tmp_path / "m", edit)
    with pytest.raises(ValueError) as info:
        cv.convert_panohead(pkl, tmp_path / "out")
    text = str(info.value)
    assert "missing from the file (model name, shape) (1):" in text and "generator.decoder.net.0.bias [16]" in text
    assert "unexpected in the file (name, shape) (1):" in text and "generator.torgb.extra_gain [3]" in text
    assert "shape mismatches (name: file vs model) (1):" in text
    assert "generator.t_mapping.fc0.weight: [5, 5] vs [3, 35]" in text
    assert not (tmp_path / "out").exists()
    # strict=False converts anyway, dropping the bad entries (they keep their initial values).
    prior = cv.convert_panohead(pkl, tmp_path / "loose", strict=False)
    assert torch.equal(prior.generator.torgb.weight, tiny.generator.torgb.weight)
    assert "report" in json.loads((tmp_path / "loose" / cv.MANIFEST_NAME).read_text())["generator"]


def test_report_lists_first_names_and_counts():
    report = cv.ConversionReport(missing=[(f"layer{i}.weight", (2, i)) for i in range(30)])
    text = report.format(limit=5)
    assert "missing from the file (model name, shape) (30):" in text and "layer4.weight [2, 4]" in text
    assert "layer5.weight" not in text and "... and 25 more" in text


def test_wrong_network_key_and_wrong_files(tiny, converted, tmp_path):
    with pytest.raises(ValueError, match=r"no network `G_best`.*'D', 'G', 'G_ema'"):
        cv.convert_panohead(converted["pkl"], tmp_path / "o", network_key="G_best")
    with pytest.raises(FileNotFoundError, match="PanoHead network pickle .*missing.pkl' does not exist"):
        cv.convert_panohead(tmp_path / "missing.pkl", tmp_path / "o")
    png = tmp_path / "photo.pkl"
    png.write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(32))
    with pytest.raises(ValueError, match="not a Python pickle"):
        cv.convert_panohead(png, tmp_path / "o")
    zipped = tmp_path / "encoder.pt"
    torch.save({"state_dict": {}}, zipped)
    with pytest.raises(ValueError, match="is a torch checkpoint, not an EG3D/PanoHead network pickle"):
        cv.convert_panohead(zipped, tmp_path / "o")


# ---------------------------------------------------------------------------------------------- inversion
@pytest.mark.parametrize("legacy", [False, True])
def test_inversion_checkpoints_round_trip(tiny, converted, tmp_path, legacy):
    out = tmp_path / "prior"
    cv.convert_panohead(converted["pkl"], out)
    e1 = _encoder_checkpoint(tiny, 1, tmp_path / "encoder1.pt", legacy=legacy)
    e2 = _encoder_checkpoint(tiny, 2, tmp_path / "encoder2.pt", legacy=legacy)
    cv.convert_inversion(e1, out, encoder2_path=e2)
    loaded = PanoHeadPrior.from_pretrained(out)
    inv_config = {k: (tuple(v) if isinstance(v, list) else v) for k, v in loaded.config.inversion_config.items()}
    assert inv_config == INVERSION_PRESETS["tiny"]  # sizes inferred from the weights alone
    got = loaded.state_dict()
    assert got.keys() == tiny.state_dict().keys()
    for name, tensor in tiny.state_dict().items():
        assert torch.equal(got[name], tensor), name
    if not legacy:  # equal weights give equal inversions (checked once: the slow part)
        image, cam = torch.rand(1, 3, 36, 36, generator=torch.Generator().manual_seed(4)), Camera.orbit(8)[1:2]
        assert torch.equal(loaded.encode(image, cam).planes, tiny.encode(image, cam).planes)
    manifest = json.loads((out / cv.MANIFEST_NAME).read_text())
    assert manifest["inversion"]["sources"] == ["encoder1.pt", "encoder2.pt"]
    assert manifest["inversion"]["ignored_count"] == 10  # the generator copies inside both checkpoints
    # Re-converting the generator keeps the inversion that fits it.
    cv.convert_panohead(converted["pkl"], out)
    assert torch.equal(PanoHeadPrior.from_pretrained(out).inversion.encoder2.latent_avg, tiny.inversion.encoder2.latent_avg)


def test_one_file_with_both_encoders_and_missing_latent_avg(tiny, converted, tmp_path):
    out = tmp_path / "prior"
    cv.convert_panohead(converted["pkl"], out)
    state = {k[len("inversion."):]: v for k, v in tiny.state_dict().items() if k.startswith("inversion.")}
    state = {k: v for k, v in state.items() if not k.endswith("latent_avg")}
    torch.save({"state_dict": state}, tmp_path / "dual.pt")
    prior = cv.convert_inversion(tmp_path / "dual.pt", out)
    w_avg = tiny.generator.backbone.mapping.w_avg
    assert torch.equal(prior.inversion.encoder1.latent_avg, w_avg.expand(8, -1))
    assert "no latent_avg" in json.loads((out / cv.MANIFEST_NAME).read_text())["inversion"]["notes"][0]


def test_inversion_errors_teach(tiny, converted, tmp_path):
    e1 = _encoder_checkpoint(tiny, 1, tmp_path / "encoder1.pt")
    with pytest.raises(FileNotFoundError, match=r"no converted generator.*convert_prior panohead"):
        cv.convert_inversion(e1, tmp_path / "empty")
    out = tmp_path / "prior"
    cv.convert_panohead(converted["pkl"], out)
    with pytest.raises(ValueError, match="needs both: pass the second checkpoint"):
        cv.convert_inversion(e1, out)
    with pytest.raises(FileNotFoundError, match="Second encoder checkpoint .*nope.pt' does not exist"):
        cv.convert_inversion(e1, out, encoder2_path=tmp_path / "nope.pt")
    bad = torch.load(e1, weights_only=True)
    bad["state_dict"]["triplanenet_encoder.final_head_two.4.weight"] = torch.zeros(7, 72, 1, 1)
    torch.save(bad, tmp_path / "bad.pt")
    with pytest.raises(ValueError, match="different architectures"):
        cv.convert_inversion(e1, out, encoder2_path=tmp_path / "bad.pt")
    torch.save({"state_dict": {"psp_encoder.styles.0.linear.weight": torch.zeros(2)}}, tmp_path / "odd.pt")
    with pytest.raises(ValueError, match="no `psp_encoder.styles"):
        cv.convert_inversion(tmp_path / "odd.pt", out, encoder2_path=tmp_path / "odd.pt")
    (tmp_path / "weird.pt").write_bytes(pickle.dumps({"E": _Shell(os.system, ("true",))}))
    with pytest.raises(RefusedPickleError):
        cv.convert_inversion(tmp_path / "weird.pt", out, encoder2_path=e1)


# ---------------------------------------------------------------------------------------------- command line
def test_cli_converts_and_reports_errors_without_traceback(tiny, converted, tmp_path, capsys):
    out = tmp_path / "cli"
    assert cv.main(["panohead", str(converted["pkl"]), str(out)]) == 0
    e1 = _encoder_checkpoint(tiny, 1, tmp_path / "e1.pt")
    e2 = _encoder_checkpoint(tiny, 2, tmp_path / "e2.pt")
    assert cv.main(["inversion", str(e1), str(out), "--encoder2", str(e2)]) == 0
    assert "PanoHeadPrior.from_pretrained" in capsys.readouterr().out
    assert PanoHeadPrior.from_pretrained(out).inversion is not None
    with pytest.raises(SystemExit) as info:
        cv.main(["panohead", str(tmp_path / "nope.pkl"), str(out)])
    err = capsys.readouterr().err
    assert info.value.code == 2 and "PanoHead network pickle" in err and "nope.pkl' does not exist" in err
    with pytest.raises(SystemExit):
        cv.main(["inversion", str(e1), str(out)])
    assert "--encoder2" in capsys.readouterr().err
