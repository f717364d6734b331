"""FLAME: converter (restricted unpickling, head space, mouth cover), model maths, loading and errors."""

import math
import os
import pickle
import subprocess

import numpy as np
import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file

from fhavatar.head.base import HEAD_UNITS_PER_METRE, REGION_NAMES
from fhavatar.head.flame import FLAME, FLAME_HEAD_CENTRE_M, FLAMEParams
from fhavatar.head.lbs import axis_angle_to_matrix
from fhavatar.tools import convert_flame as cf
from fhavatar.tools.restricted_pickle import RefusedPickleError, as_array, load_pickle
from tests.head.synthetic_flame import NUM_EXPRESSION, NUM_SHAPE, fake_chumpy, random_flame, write_synthetic_flame


def _convert(files, out, **kwargs):
    kwargs.setdefault("landmarks", files["landmarks"])
    return cf.convert_flame(files["model"], files["uv"], files["masks"], out=out, shape_components=NUM_SHAPE,
                            **kwargs)


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    return write_synthetic_flame(tmp_path_factory.mktemp("flame_src"))


@pytest.fixture(scope="module")
def flame(files, tmp_path_factory):
    return FLAME.from_file(_convert(files, tmp_path_factory.mktemp("flame_out") / "flame.safetensors"))


def _params(flame, batch=1, **values):
    params = flame.neutral_params(batch)
    for name, value in values.items():
        setattr(params, name, torch.as_tensor(value, dtype=torch.float32).reshape(batch, -1))
    return params


# ---------------------------------------------------------------------------------------------- converter
def test_converter_round_trip_applies_the_head_space_transform(files, flame):
    a, s = files["arrays"], HEAD_UNITS_PER_METRE
    num_v, num_f = len(a["v_template"]), len(a["f"])
    expected = s * (a["v_template"] - np.asarray(FLAME_HEAD_CENTRE_M))
    torch.testing.assert_close(flame.template_vertices[:num_v], torch.tensor(expected, dtype=torch.float32))
    torch.testing.assert_close(flame.shapedirs[:num_v], torch.tensor(s * a["shapedirs"][..., :NUM_SHAPE]).float())
    torch.testing.assert_close(flame.exprdirs[:num_v], torch.tensor(s * a["shapedirs"][..., NUM_SHAPE:]).float())
    torch.testing.assert_close(flame.posedirs[:num_v], torch.tensor(s * a["posedirs"]).float())
    torch.testing.assert_close(flame.lbs_weights[:num_v], torch.tensor(a["weights"]).float())
    torch.testing.assert_close(flame.J_regressor[:, :num_v], torch.tensor(a["J_regressor"]).float())
    assert flame.parents.tolist() == [-1, 0, 1, 1, 1]
    assert torch.equal(flame.faces[:num_f], torch.tensor(a["f"].astype(np.int64)))
    # UVs follow the model's face and corner order even though the OBJ shuffles both.
    torch.testing.assert_close(flame.uv_coords[flame.uv_faces[:num_f]], torch.tensor(a["uv"][a["uv_faces"]]).float())
    torch.testing.assert_close(flame.landmark_barycentrics, torch.tensor(files["landmark_bary"]).float())
    assert flame.landmark_faces.tolist() == files["landmark_faces"].tolist()
    c = flame.config
    assert (c.num_shape, c.num_expression, c.num_landmarks, c.landmark_kind) == (NUM_SHAPE, NUM_EXPRESSION, 10,
                                                                                  "mediapipe")
    assert (c.num_vertices, c.num_faces) == (num_v + 1, num_f + a["mouth_loop_size"])


def test_mouth_is_covered_by_a_recessed_fan_with_its_own_uv_island(files, flame):
    num_v, num_f = len(files["arrays"]["v_template"]), len(files["arrays"]["f"])
    loops = cf.boundary_loops(flame.faces.numpy())
    assert len(loops) == 1 and len(loops[0]) == 16  # only the neck stays open
    cover = flame.faces[num_f:]
    assert (cover == num_v).any(1).all()  # a fan around the new vertex
    loop = torch.unique(cover[cover != num_v])
    centre = flame.template_vertices[num_v]
    torch.testing.assert_close(centre[:2], flame.template_vertices[loop].mean(0)[:2])
    assert centre[2] < flame.template_vertices[loop, 2].mean() - 0.9 * HEAD_UNITS_PER_METRE * cf.MOUTH_CAVITY_DEPTH_M
    torch.testing.assert_close(flame.lbs_weights[num_v], flame.lbs_weights[loop].mean(0))
    assert flame.region("mouth")[num_v] and flame.region("mouth")[loop].all()
    # The island's UV triangles are new coordinates that overlap no other triangle's box, with the atlas's winding.
    island = flame.uv_coords[flame.uv_faces[num_f:]].reshape(-1, 2)
    atlas = flame.uv_coords[flame.uv_faces[:num_f]].reshape(-1, 2)
    assert island[:, 0].min() > atlas[:, 0].max() or island[:, 1].max() < atlas[:, 1].min()
    assert ((island >= 0) & (island <= 1)).all()
    areas = cf._signed_areas(flame.uv_coords.double().numpy(), flame.uv_faces.numpy())
    assert (np.sign(areas[num_f:]) == np.sign(areas[:num_f].sum())).all()


def test_a_mesh_without_a_mouth_hole_is_left_alone_and_a_full_atlas_is_squeezed(caplog):
    tetrahedron = np.array([[0, 2, 1], [0, 1, 3], [1, 2, 3], [0, 3, 2]])
    model = {"v_template": np.eye(4, 3), "f": tetrahedron}
    uv, uv_faces = np.random.default_rng(0).random((4, 2)), tetrahedron
    closed = cf.close_mouth(model, uv, uv_faces, lips=np.array([0]))
    assert closed["f"] is tetrahedron and closed["mouth_loop"].size == 0 and "nothing to cover" in caplog.text
    full_uv = np.array([[0.0, 0.0], [1.0, 0.0], [1.0, 1.0], [0.0, 1.0]])
    island, squeezed = cf._mouth_island(np.random.default_rng(1).random((6, 3)), full_uv.copy(),
                                        np.array([[0, 1, 2], [0, 2, 3]]))
    assert squeezed[:, 0].max() <= 1 - cf._ISLAND_STRIP + 1e-9 and (island[:, 0] > squeezed[:, 0].max()).all()


def test_regions_are_disjoint_and_cover_the_head(files, flame):
    masks = flame.region_masks
    assert masks.shape == (len(REGION_NAMES), flame.num_vertices)
    assert (masks.sum(0) == 1).all()
    lips = files["arrays"]["masks"]["lips"]
    assert flame.region("mouth")[lips].all() and flame.region("eyes").sum() == 4
    assert flame.region("face").any() and flame.region("scalp").any() and flame.region("neck").any()


def test_deca_landmark_embedding_reads_without_running_torch_pickles(files, tmp_path):
    model = FLAME.from_file(_convert(files, tmp_path / "f.safetensors", landmarks=files["deca_landmarks"]))
    assert model.config.landmark_kind == "ibug68"
    assert model.landmark_faces.tolist() == files["landmark_faces"].tolist()
    assert (model.landmark_mediapipe_ids == -1).all()


def test_command_line_writes_a_loadable_file(files, tmp_path):
    out = tmp_path / "cli.safetensors"
    cf.main(["--model", str(files["model"]), "--uv", str(files["uv"]), "--masks", str(files["masks"]),
             "--landmarks", str(files["landmarks"]), "--out", str(out), "--shape-components", str(NUM_SHAPE),
             "--num-shape", "3", "--num-expression", "2"])
    model = FLAME.from_file(out)
    assert (model.config.num_shape, model.config.num_expression) == (3, 2)


# ---------------------------------------------------------------------------------------------- model maths
def test_zero_params_give_the_template(flame):
    vertices = flame(flame.neutral_params(3))
    assert vertices.shape == (3, flame.num_vertices, 3)
    torch.testing.assert_close(vertices, flame.template_vertices.expand(3, -1, -1), atol=1e-6, rtol=0)


def test_shape_and_expression_blendshapes_add_linearly(flame):
    g = torch.Generator().manual_seed(0)
    beta, psi = torch.randn(1, NUM_SHAPE, generator=g), torch.randn(1, NUM_EXPRESSION, generator=g)
    template = flame.template_vertices[None]
    d_shape = flame(_params(flame, shape=beta)) - template
    d_expr = flame(_params(flame, expression=psi)) - template
    torch.testing.assert_close(d_shape[0], torch.einsum("vcs,s->vc", flame.shapedirs, beta[0]), atol=1e-6, rtol=0)
    torch.testing.assert_close(d_expr[0], torch.einsum("vce,e->vc", flame.exprdirs, psi[0]), atol=1e-6, rtol=0)
    both = flame(_params(flame, shape=beta, expression=psi)) - template
    torch.testing.assert_close(both, d_shape + d_expr, atol=1e-6, rtol=0)
    twice = flame(_params(flame, shape=2 * beta)) - template
    torch.testing.assert_close(twice, 2 * d_shape, atol=1e-6, rtol=0)
    # Fewer coefficients than the model has: the missing ones are zero.
    torch.testing.assert_close(flame(_params(flame, shape=beta[:, :2])),
                               flame(_params(flame, shape=torch.cat([beta[:, :2], torch.zeros(1, 4)], 1))))


def test_jaw_rotation_moves_only_jaw_vertices_about_the_jaw_joint(files, flame):
    model = FLAME.from_config(flame.config)
    model.load_state_dict(flame.state_dict())
    model.posedirs.zero_()  # isolate skinning from the pose correctives
    jaw_pose = torch.tensor([0.4, 0.1, 0.0])
    posed = model(_params(model, jaw=jaw_pose))[0]
    rest = model.template_vertices
    jaw_joint = model.J_regressor[2] @ rest
    pure_jaw = torch.tensor(files["arrays"]["jaw_vertices"])
    assert (model.lbs_weights[pure_jaw, 2] == 1).all()
    expected = (rest[pure_jaw] - jaw_joint) @ axis_angle_to_matrix(jaw_pose).T + jaw_joint
    torch.testing.assert_close(posed[pure_jaw], expected, atol=1e-6, rtol=0)
    still = model.lbs_weights[:, 2] == 0
    torch.testing.assert_close(posed[still], rest[still], atol=1e-7, rtol=0)
    assert (posed[pure_jaw] - rest[pure_jaw]).norm(dim=-1).max() > 0.02


def test_global_rotation_is_rigid_about_the_root_joint(flame):
    rotation = torch.tensor([0.3, -1.2, 0.5])
    translation = torch.tensor([0.1, -0.2, 0.3])
    posed = flame(_params(flame, global_rotation=rotation, translation=translation))[0]
    rest = flame.template_vertices
    root = flame.J_regressor[0] @ rest
    expected = (rest - root) @ axis_angle_to_matrix(rotation).T + root + translation
    torch.testing.assert_close(posed, expected, atol=1e-6, rtol=0)


def test_pose_correctives_are_zero_at_zero_pose_and_follow_posedirs(flame):
    identity = torch.eye(3).expand(2, 5, 3, 3)
    assert flame.pose_correctives(identity).abs().max() == 0
    rotations = axis_angle_to_matrix(torch.tensor([[0.0, 0, 0], [0.2, 0, 0], [0, 0.3, 0], [0, 0, 0], [0, 0, 0]]))
    feature = (rotations[1:] - torch.eye(3)).reshape(-1)
    expected = (flame.posedirs.reshape(-1, 36) @ feature).reshape(-1, 3)
    torch.testing.assert_close(flame.pose_correctives(rotations[None])[0], expected)
    assert expected.abs().max() > 0


def test_landmarks_are_barycentric_points_on_the_posed_mesh(flame):
    vertices = flame(_params(flame, 2, jaw=torch.tensor([[0.3, 0, 0], [0.0, 0, 0]])))
    landmarks = flame.landmarks(vertices)
    assert landmarks.shape == (2, flame.config.num_landmarks, 3)
    corners = vertices[1][flame.faces[flame.landmark_faces]]
    torch.testing.assert_close(landmarks[1], (corners * flame.landmark_barycentrics[..., None]).sum(1))


def test_params_batch_to_and_validation(flame):
    params = flame.neutral_params(4)
    assert params.batch_size == 4 and params.eyes.shape == (4, 6)
    assert params.to(torch.float64).jaw.dtype == torch.float64
    with pytest.raises(ValueError, match=r"jaw.*\[B, 3\].*\[4, 2\]"):
        FLAMEParams(**{**vars(params), "jaw": torch.zeros(4, 2)})
    with pytest.raises(ValueError, match="batch size"):
        FLAMEParams(**{**vars(params), "eyes": torch.zeros(3, 6)})
    with pytest.raises(TypeError, match="translation.*Tensor.*list"):
        FLAMEParams(**{**vars(params), "translation": [0.0, 0.0, 0.0]})
    too_many = FLAMEParams(**{**vars(params), "expression": torch.zeros(4, NUM_EXPRESSION + 1)})
    with pytest.raises(ValueError, match=f"expression has {NUM_EXPRESSION + 1} coefficients.*{NUM_EXPRESSION}"):
        flame(too_many)
    with pytest.raises(TypeError, match="FLAMEParams"):
        flame(torch.zeros(1, 3))


# ---------------------------------------------------------------------------------------------- loading / saving
def test_save_pretrained_from_pretrained_round_trip(flame, tmp_path):
    flame.save_pretrained(tmp_path / "flame")
    loaded = FLAME.from_pretrained(tmp_path / "flame")
    skip = {"_name_or_path"}
    assert {k: v for k, v in loaded.config.items() if k not in skip} == {
        k: v for k, v in flame.config.items() if k not in skip}
    for name, tensor in flame.state_dict().items():
        assert torch.equal(loaded.state_dict()[name], tensor), name
    params = _params(flame, jaw=torch.tensor([0.2, 0, 0]), neck=torch.tensor([0, 0.3, 0]))
    torch.testing.assert_close(loaded(params), flame(params))


def test_real_size_stand_in_builds_and_runs():
    model = random_flame(num_vertices=500, num_faces=990, num_shape=20, num_expression=10, num_landmarks=30,
                         num_uv=520)
    assert model(model.neutral_params(2)).shape == (2, 500, 3)


# ---------------------------------------------------------------------------------------------- refusals and errors
class _Shell:
    def __init__(self, func, args):
        self.func, self.args = func, args

    def __reduce__(self):
        return self.func, self.args


@pytest.mark.parametrize("kind", ["os.system", "builtins.eval", "subprocess.Popen", "chumpy-wrapped"])
def test_malicious_pickles_are_refused_without_running(tmp_path, kind):
    marker = tmp_path / "pwned"
    command = f"touch {marker}"
    payload = {
        "os.system": _Shell(os.system, (command,)),
        "builtins.eval": _Shell(eval, (f"open({str(marker)!r}, 'w')",)),
        "subprocess.Popen": _Shell(subprocess.Popen, (["touch", str(marker)],)),
        "chumpy-wrapped": None,
    }[kind]
    if kind == "chumpy-wrapped":
        with fake_chumpy() as Ch:
            payload = Ch(np.zeros(3))
            payload.x = _Shell(os.system, (command,))  # the evil object hides inside a chumpy state
            data = pickle.dumps({"v_template": payload}, protocol=2)
    else:
        data = pickle.dumps({"v_template": payload}, protocol=2)
    path = tmp_path / "generic_model.pkl"
    path.write_bytes(data)
    with pytest.raises(RefusedPickleError, match="non-data object"):
        cf.read_flame_model(path)
    with pytest.raises(ValueError, match="non-data object"):  # RefusedPickleError is also a ValueError
        load_pickle(data)
    assert not marker.exists()


def test_missing_files_name_the_flame_site_and_licence(files, tmp_path):
    with pytest.raises(FileNotFoundError, match=r"flame\.is\.tue\.mpg\.de.*licence.*non-commercial"):
        cf.convert_flame(tmp_path / "nope.pkl", files["uv"], files["masks"], files["landmarks"], tmp_path / "o")
    with pytest.raises(FileNotFoundError, match="FLAME_masks"):
        cf.convert_flame(files["model"], files["uv"], tmp_path / "FLAME_masks.pkl", files["landmarks"],
                         tmp_path / "o", shape_components=NUM_SHAPE)
    with pytest.raises(FileNotFoundError, match=r"convert_flame.*flame\.is\.tue\.mpg\.de"):
        FLAME.from_file(tmp_path / "flame.safetensors")
    with pytest.raises(SystemExit):  # the command line reports the same message without a traceback
        cf.main(["--model", str(tmp_path / "nope.pkl"), "--uv", str(files["uv"]), "--masks", str(files["masks"]),
                 "--landmarks", str(files["landmarks"]), "--out", str(tmp_path / "o")])


def test_wrong_shapes_and_corrupt_files_give_clear_errors(files, flame, tmp_path):
    bad = write_synthetic_flame(tmp_path / "bad", overrides={"posedirs": np.zeros((5, 3, 36))})
    with pytest.raises(ValueError, match=r"`posedirs` has shape \[5, 3, 36\], expected \[193, 3, 36\]"):
        cf.read_flame_model(bad["model"], NUM_SHAPE)
    with pytest.raises(ValueError, match="missing keys.*weights"):
        path = tmp_path / "partial.pkl"
        path.write_bytes(pickle.dumps({"v_template": np.zeros((3, 3))}, protocol=2))
        cf.read_flame_model(path)
    corrupt = tmp_path / "corrupt.safetensors"
    corrupt.write_bytes(b"not a safetensors file at all")
    with pytest.raises(ValueError, match="not a readable safetensors file"):
        FLAME.from_file(corrupt)
    good = _convert(files, tmp_path / "ok.safetensors")
    tensors = load_file(str(good))
    with safe_open(str(good), framework="pt") as f:
        metadata = f.metadata()
    tensors["posedirs"] = tensors["posedirs"][:, :, :30].contiguous()
    save_file(tensors, str(tmp_path / "wrong.safetensors"), metadata=metadata)
    with pytest.raises(ValueError, match=r"`posedirs` is \[194, 3, 30\].*expected \[194, 3, 36\]"):
        FLAME.from_file(tmp_path / "wrong.safetensors")
    save_file(tensors, str(tmp_path / "plain.safetensors"))
    with pytest.raises(ValueError, match="not an FHAvatar FLAME file"):
        FLAME.from_file(tmp_path / "plain.safetensors")


def test_non_terminal_chumpy_objects_are_reported(tmp_path):
    with fake_chumpy() as Ch:
        expression = Ch(np.zeros(3))
        del expression.x  # a chumpy expression stores operands, not `x`
        expression.a = np.ones(3)
        data = pickle.dumps({"weights": expression}, protocol=2)
    with pytest.raises(ValueError, match="`weights` is a chumpy `chumpy.ch.Ch` expression"):
        as_array(load_pickle(data)["weights"], "weights")


def test_left_eye_rotation_moves_only_left_eye_vertices(flame):
    model = FLAME.from_config(flame.config)
    model.load_state_dict(flame.state_dict())
    model.posedirs.zero_()
    posed = model(_params(model, eyes=torch.tensor([0.0, math.pi / 4, 0.0, 0.0, 0.0, 0.0])))[0]
    moved = (posed - model.template_vertices).norm(dim=-1) > 1e-6
    assert moved.any() and (model.lbs_weights[moved, 3] > 0).all()
