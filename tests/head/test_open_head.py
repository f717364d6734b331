"""OpenHead: the closed, symmetric full head built from MediaPipe's canonical face (CPU, fast)."""

import math
import os
import subprocess
import sys

import numpy as np
import pytest
import torch

from fhavatar.head import _kernels
from fhavatar.head.base import HEAD_UNITS_PER_METRE
from fhavatar.head.canonical_face import DEFAULT_OBJ, LEFT_EYE_CONTOUR, canonical_face
from fhavatar.head.lbs import axis_angle_to_matrix
from fhavatar.head.open_head import OpenHead, OpenHeadParams, default_asset_path
from fhavatar.tools.build_open_head import build_open_head, mesh_report, save_asset

JAW, LEFT_EYE, RIGHT_EYE = 2, 3, 4


@pytest.fixture(scope="module")
def head():
    return OpenHead()


def _reflect(x):
    return x * torch.tensor([-1.0, 1.0, 1.0], dtype=x.dtype)


def test_asset_is_small_and_sized_as_configured(head):
    assert default_asset_path().stat().st_size <= 5 * 1024 * 1024
    assert 3000 <= head.num_vertices <= 8000
    assert head.template_vertices.shape == (head.config.num_vertices, 3)
    assert head.uv_coords.shape == (head.config.num_uv, 2)
    assert head.faces.shape == head.uv_faces.shape == (head.config.num_faces, 3)


def test_mesh_is_closed_oriented_and_non_degenerate(head):
    v, f = head.template_vertices.double().numpy(), head.faces.numpy()
    edges = np.sort(np.concatenate([f[:, [0, 1]], f[:, [1, 2]], f[:, [2, 0]]]), axis=1)
    _, counts = np.unique(edges, axis=0, return_counts=True)
    assert (counts == 2).all()  # watertight: every edge shared by exactly two faces
    report = mesh_report(v, f)
    assert report["repeated_directed_edges"] == 0  # consistent orientation
    assert report["euler_characteristic"] == 2 and report["unused_vertices"] == 0  # one closed sphere
    assert report["min_face_area"] > 1e-7
    # outward: positive volume, and the nose tip's normal points forward
    assert report["signed_volume"] > 0
    assert head.vertex_normals(head.template_vertices[None])[0, 4, 2] > 0.9


def test_mirror_symmetry(head):
    m = head.mirror_vertex
    assert torch.equal(m[m], torch.arange(head.num_vertices))
    error = (head.template_vertices[m] - _reflect(head.template_vertices)).abs().max().item()
    assert error < 1e-6
    mirrored = {tuple(sorted(t)) for t in m[head.faces].tolist()}
    assert mirrored == {tuple(sorted(t)) for t in head.faces.tolist()}
    assert torch.equal(head.region_masks[:, m], head.region_masks)
    swapped = head.skinning_weights[m][:, [0, 1, 2, RIGHT_EYE, LEFT_EYE]]
    torch.testing.assert_close(swapped, head.skinning_weights, atol=1e-5, rtol=0)


def test_face_vertices_are_the_placed_mediapipe_landmarks(head):
    face_cm, _, _, _ = canonical_face(DEFAULT_OBJ)
    placed = (face_cm - np.array(head.config.head_centre_cm)) * HEAD_UNITS_PER_METRE / 100
    torch.testing.assert_close(head.template_vertices[:468], torch.from_numpy(placed).float(), atol=1e-6, rtol=0)
    v = head.template_vertices[:468] * 100 / HEAD_UNITS_PER_METRE + torch.tensor(head.config.head_centre_cm)  # cm
    assert int(v[:, 2].argmax()) in (1, 4)  # nose tip, about 7.5 cm in front of the face plane
    assert v[263, 0] > 3 and v[33, 0] < -3 and head.mirror_vertex[33] == 263  # +x is the subject's left
    assert v[10, 1] > 7 and v[152, 1] < -8  # forehead top, chin
    # head-space placement: the origin is near the cranium centre; crown-to-chin about 22 cm
    extent = head.template_vertices.max(0).values - head.template_vertices.min(0).values
    assert abs(head.template_vertices[:, 0].mean()) < 1e-3
    assert 0.18 < (head.template_vertices[:, 1].max() - head.template_vertices[152, 1]) / (
        HEAD_UNITS_PER_METRE) < 0.25 and extent[2] < 0.6


def test_landmark_order_matches_mediapipe_contours(head):
    connections = pytest.importorskip("mediapipe.python.solutions.face_mesh_connections")
    f = head.faces[(head.faces < 468).all(1)].numpy()
    edges = {tuple(sorted(e)) for t in f.tolist() for e in ((t[0], t[1]), (t[1], t[2]), (t[2], t[0]))}
    directed = {(a, b) for t in f.tolist() for a, b in ((t[0], t[1]), (t[1], t[2]), (t[2], t[0]))}
    boundary = {tuple(sorted(e)) for e in directed if (e[1], e[0]) not in directed}
    oval = {tuple(sorted(e)) for e in connections.FACEMESH_FACE_OVAL}
    assert oval <= boundary  # the face oval is the outer boundary of the face vertices
    for contour in (connections.FACEMESH_LIPS, connections.FACEMESH_LEFT_EYE, connections.FACEMESH_RIGHT_EYE):
        assert {tuple(sorted(e)) for e in contour} <= edges
    assert set(np.array(list(connections.FACEMESH_LEFT_EYE)).ravel()) == set(LEFT_EYE_CONTOUR)


def _uv_mirror_and_overlaps(uv, uv_faces, faces, mirror, k=512):
    """Max mirror mismatch of UV triangles and the most triangles covering one texel centre."""
    index = {}
    for i, t in enumerate(faces.tolist()):
        j = t.index(min(t))
        index[tuple(t[j:] + t[:j])] = i
    mismatch = 0.0
    for i, t in enumerate(faces.tolist()):
        a, b, c = (mirror[t[0]], mirror[t[2]], mirror[t[1]])  # mirrored triangle, orientation restored
        order = [a, b, c]
        j = order.index(min(order))
        g = index[tuple(order[j:] + order[:j])]
        corner_of = {v: uv[uv_faces[g][n]] for n, v in enumerate(faces[g].tolist())}
        for n, v in enumerate(t):
            want = corner_of[mirror[v]]
            mismatch = max(mismatch, abs(uv[uv_faces[i][n]][0] - (1 - want[0])), abs(uv[uv_faces[i][n]][1] - want[1]))
    count = np.zeros((k, k), np.int32)
    for tri in uv[uv_faces]:
        lo = np.maximum(np.ceil(tri.min(0) * k - 0.5), 0).astype(int)
        hi = np.minimum(np.floor(tri.max(0) * k - 0.5), k - 1).astype(int)
        if (hi < lo).any():
            continue
        jj, ii = np.meshgrid(np.arange(lo[0], hi[0] + 1), np.arange(lo[1], hi[1] + 1))
        p = (np.stack([jj, ii], -1) + 0.5) / k
        e1, e2, d = tri[1] - tri[0], tri[2] - tri[0], p - tri[0]
        det = e1[0] * e2[1] - e1[1] * e2[0]
        b1 = (d[..., 0] * e2[1] - d[..., 1] * e2[0]) / det
        b2 = (e1[0] * d[..., 1] - e1[1] * d[..., 0]) / det
        inside = (b1 > 1e-9) & (b2 > 1e-9) & (1 - b1 - b2 > 1e-9)
        count[ii[inside], jj[inside]] += 1
    return mismatch, count.max(), (count > 0).mean()


def test_uv_atlas_is_mirror_symmetric_and_does_not_overlap(head):
    uv, uv_faces = head.uv_coords.double().numpy(), head.uv_faces.numpy()
    assert uv.min() >= 0 and uv.max() <= 1
    e1, e2 = uv[uv_faces[:, 1]] - uv[uv_faces[:, 0]], uv[uv_faces[:, 2]] - uv[uv_faces[:, 0]]
    assert (e1[:, 0] * e2[:, 1] - e1[:, 1] * e2[:, 0] > 0).all()  # counter-clockwise, like the 3D faces
    mismatch, most, used = _uv_mirror_and_overlaps(uv, uv_faces, head.faces.numpy(), head.mirror_vertex.numpy())
    assert mismatch < 1e-6 and most == 1 and used > 0.6


def test_neutral_forward_is_the_template(head):
    vertices = head(head.neutral_params(batch_size=2))
    assert vertices.shape == (2, head.num_vertices, 3)
    torch.testing.assert_close(vertices, head.template_vertices.expand(2, -1, -1), atol=1e-6, rtol=0)


def test_jaw_moves_only_jaw_weighted_vertices(head):
    params = head.neutral_params()
    params.jaw[:, 0] = 0.3
    moved = (head(params)[0] - head.template_vertices).norm(dim=-1) > 1e-6
    weighted = head.skinning_weights[:, JAW] > 0
    assert moved.any() and not (moved & ~weighted).any()
    delta = head(params)[0] - head.template_vertices
    assert delta[14, 1] < -0.005 and delta[152, 1] < -0.01 and delta[13].norm() < 1e-6  # lower lip, chin; upper lip
    torch.testing.assert_close(head.skinning_weights.sum(1), torch.ones(head.num_vertices), atol=1e-5, rtol=0)
    assert (head.skinning_weights >= 0).all()


def test_eyes_rotate_the_covers_and_the_irises(head):
    params = head.neutral_params()
    params.eyes[:, 0, 1] = 0.3  # the subject's left eye looks toward +x
    vertices = head(params)
    # 1e-6, not 1e-7: an unweighted vertex still picks up the float32 rounding of skinning (its weights sum to 1 up
    # to an ulp), 3e-8 here on coordinates of ~0.3 whose ulp is 3e-8; the eye itself moves by ~5e-3.
    moved = (vertices[0] - head.template_vertices).norm(dim=-1) > 1e-6
    assert moved.any() and not (moved & (head.skinning_weights[:, LEFT_EYE] == 0)).any()
    shift = head.landmarks(vertices)[0] - head.landmarks(head.template_vertices[None])[0]
    assert shift[473, 0] > 0.005 and shift[468].norm() < 1e-6


def test_global_rotation_and_translation_are_rigid(head):
    params = head.neutral_params(batch_size=2)
    params.jaw[:, 0] = 0.2
    params.neck[0] = torch.tensor([0.1, 0.3, 0.0])
    base = head(params)
    params.global_rotation = torch.tensor([[0.0, math.pi / 3, 0.0], [0.3, -0.2, 0.5]])
    params.translation = torch.tensor([[0.1, -0.2, 0.3], [0.0, 0.0, 1.0]])
    rotation = axis_angle_to_matrix(params.global_rotation)
    expected = base @ rotation.transpose(1, 2) + params.translation[:, None]
    torch.testing.assert_close(head(params), expected, atol=1e-5, rtol=0)


def test_neck_turns_the_head_and_keeps_the_neck_base(head):
    params = head.neutral_params()
    params.neck[:, 1] = 0.5
    delta = (head(params)[0] - head.template_vertices).norm(dim=-1)
    assert delta[head.template_vertices[:, 1].argmin()] < 1e-6 and delta[:468].min() > 0.01


def test_landmarks_are_the_face_vertices_plus_irises(head):
    params = head.neutral_params(batch_size=3)
    params.jaw[1, 0] = 0.2
    params.expression[2] = 0.01 * torch.randn(468, 3, generator=torch.Generator().manual_seed(0))
    vertices = head(params)
    landmarks = head.landmarks(vertices)
    assert landmarks.shape == (3, 478, 3)
    assert torch.equal(landmarks[:, :468], vertices[:, :468])
    assert torch.equal(head.landmark_mediapipe_ids, torch.arange(478))
    iris = landmarks[0, 468:] * 100 / HEAD_UNITS_PER_METRE  # cm, on the eye covers in front of the eyeballs
    eye_radius = (iris[[1, 3, 6, 8]] - iris[[0, 0, 5, 5]]).norm(dim=-1)
    assert (iris[0, 0] < 0) and (iris[5, 0] > 0) and ((eye_radius - 0.6).abs() < 0.15).all()


def test_expression_moves_face_vertices_and_drags_their_surroundings(head):
    params = head.neutral_params()
    params.expression[0, 100] = torch.tensor([0.01, -0.02, 0.005])
    delta = head(params)[0] - head.template_vertices
    torch.testing.assert_close(delta[100], params.expression[0, 100])
    assert int((delta[:468].norm(dim=-1) > 1e-6).sum()) == 1
    params.expression[0] = torch.tensor([0.0, 0.0, 0.01])  # all face vertices forward
    delta = head(params)[0] - head.template_vertices
    eyes_and_mouth = head.region("eyes") | head.region("mouth")
    torch.testing.assert_close(delta[eyes_and_mouth, 2], torch.full_like(delta[eyes_and_mouth, 2], 0.01))
    assert delta[head.template_vertices[:, 2].argmin()].norm() < 1e-6  # the back of the head stays (up to rounding)


def test_compiled_expression_offsets_give_the_torch_bits(head):
    """The compiled pass (CPU, float32, no gradient) against the readable formula, on the packaged head and on
    widths whose products do not fill groups of four (PyTorch's order of a short sum)."""
    assert _kernels.matches_torch(head.expression_sources.shape[1]), "OpenHead runs the torch formula here"
    g = torch.Generator().manual_seed(0)
    expression = 0.01 * torch.randn(3, 468, 3, generator=g)
    fast = head.expression_offsets(expression)
    assert torch.equal(fast, _kernels.expression_offsets_torch(expression, head.expression_sources,
                                                               head.expression_weights))
    for width in (1, 5, 11):
        sources = torch.randint(0, 468, (300, width), generator=g)
        weights = torch.rand(300, width, generator=g)
        out = torch.empty(3, 300, 3)
        _kernels.expression_offsets(expression.numpy(), sources.numpy(), weights.numpy(), out.numpy())
        assert torch.equal(out, _kernels.expression_offsets_torch(expression, sources, weights)), width
    bad = torch.full((300, 8), 468)
    with pytest.raises(IndexError, match="outside the face vertices"):
        _kernels.expression_offsets(expression.numpy(), bad.numpy(), torch.ones(300, 8).numpy(), out.numpy())


def test_expression_offsets_keep_gradients_and_other_dtypes(head):
    g = torch.Generator().manual_seed(1)
    expression = (0.01 * torch.randn(1, 468, 3, generator=g)).requires_grad_(True)
    offsets = head.expression_offsets(expression)  # the torch formula: autograd reaches the expression
    offsets.sum().backward()
    assert expression.grad is not None and expression.grad.abs().sum() > 0
    params = head.neutral_params()
    params.expression[:] = expression.detach()
    params.jaw[:, 0] = 0.2
    double = params.to(dtype=torch.float64)  # cast to the model's dtype inside forward
    torch.testing.assert_close(head(double), head(params), atol=1e-6, rtol=0)
    # float64 offsets take the torch formula (the kernel is float32 only) and agree with the float32 kernel's
    wide = head.expression_offsets(expression.detach().double())
    assert wide.dtype == torch.float64
    torch.testing.assert_close(wide, _kernels.expression_offsets_torch(
        expression.detach().double(), head.expression_sources, head.expression_weights), atol=0, rtol=0)
    torch.testing.assert_close(wide.float(), head.expression_offsets(expression.detach()), atol=1e-7, rtol=1e-5)


def test_params_to_copies_only_what_moves(head):
    """`OpenHeadParams.to` is `Tensor.to` for the record: itself when nothing changes (the per-frame call inside
    `OpenHead.forward` builds and re-checks no copy), a checked copy with the same values when something does."""
    params = head.neutral_params()
    params.jaw[:, 0] = 0.2
    assert params.to(torch.float32) is params and params.to("cpu") is params
    double = params.to(dtype=torch.float64)
    assert double is not params and double.jaw.dtype == torch.float64 and params.jaw.dtype == torch.float32
    torch.testing.assert_close(double.jaw, params.jaw.double(), atol=0, rtol=0)
    params.jaw[:, 1] = float("nan")  # written in place: a copy is checked, the record itself is not re-checked
    assert params.to(torch.float32) is params
    with pytest.raises(ValueError, match="must be finite"):
        params.to(torch.float64)


def test_regions_partition_the_cranium(head):
    masks = head.region_masks
    assert masks.any(0).all() and torch.equal(head.region("face"), torch.arange(head.num_vertices) < 468)
    for name in ("scalp", "neck", "ears", "eyes", "mouth"):
        assert head.region(name).any(), name


def test_save_pretrained_round_trip(head, tmp_path):
    head.save_pretrained(tmp_path)
    loaded = OpenHead.from_pretrained(tmp_path)
    for name, value in head.state_dict().items():
        assert torch.equal(loaded.state_dict()[name], value), name
    params = head.neutral_params()
    params.jaw[:, 0] = 0.1
    torch.testing.assert_close(loaded(params), head(params))


def _build_in_subprocess(path, threads: int) -> bytes:
    """Build the asset in a fresh interpreter whose BLAS, OpenMP and torch use `threads` threads."""
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "OPENBLAS_NUM_THREADS": str(threads),
           "MKL_NUM_THREADS": str(threads)}
    code = ("import sys, torch; torch.set_num_threads(int(sys.argv[2])); "
            "from fhavatar.tools.build_open_head import main; main(['--out', sys.argv[1]])")
    subprocess.run([sys.executable, "-c", code, str(path), str(threads)], env=env, check=True,
                   capture_output=True, timeout=300)
    return path.read_bytes()


def test_build_is_byte_identical_across_thread_counts_and_matches_the_packaged_asset(head, tmp_path):
    # Integer outputs (expression sources, UV dedupe, landmark triangles) are ranked from floats: ties must be
    # broken the same way whatever the BLAS threads, so any machine rebuilds the packaged bytes.
    built = [_build_in_subprocess(tmp_path / f"build{t}.safetensors", t) for t in (1, 2)]
    assert built[0] == built[1]
    in_process = save_asset(*build_open_head(DEFAULT_OBJ), tmp_path / "in_process.safetensors").read_bytes()
    assert in_process == built[0] == default_asset_path().read_bytes()
    rebuilt = OpenHead.from_file(tmp_path / "in_process.safetensors")
    for name, value in head.state_dict().items():
        other = rebuilt.state_dict()[name]
        if value.is_floating_point():
            torch.testing.assert_close(other, value, atol=1e-6, rtol=0, msg=name)
        else:
            assert torch.equal(other, value), f"{name}: rebuild the asset (python -m fhavatar.tools.build_open_head)"


def test_propagation_weights_are_mirror_symmetric(head):
    # The ranking runs on exactly symmetrised weights: a vertex and its mirror keep the same weights, and where
    # no tie sits at the cut-off their sources are each other's mirrors.
    m, sources, weights = head.mirror_vertex, head.expression_sources, head.expression_weights
    torch.testing.assert_close(weights[m].sort(1).values, weights.sort(1).values, atol=1e-6, rtol=0)
    same = [set(m[sources[m[v]]][weights[m[v]] > 0].tolist()) == set(sources[v][weights[v] > 0].tolist())
            for v in range(head.num_vertices)]
    assert np.mean(same) > 0.99


def test_bad_inputs_raise_clear_errors(head, tmp_path):
    params = head.neutral_params()
    with pytest.raises(ValueError, match="expression"):
        OpenHeadParams(torch.zeros(1, 467, 3), *(getattr(params, n) for n in ("jaw", "neck", "eyes",
                                                                                "global_rotation", "translation")))
    with pytest.raises(ValueError, match=r"eyes must have shape \[1, 2, 3\]"):
        params.eyes = torch.zeros(1, 6)
        params.validate()
    params = head.neutral_params()
    params.jaw[0, 0] = float("nan")
    with pytest.raises(ValueError, match="jaw must be finite"):
        head(params)
    params = head.neutral_params()
    params.neck = [0.0, 0.0, 0.0]
    with pytest.raises(TypeError, match="neck must be a torch.Tensor"):
        head(params)
    with pytest.raises(TypeError, match="OpenHeadParams"):
        head(torch.zeros(1, 468, 3))
    with pytest.raises(ValueError, match="batch_size"):
        head.neutral_params(0)
    with pytest.raises(ValueError, match="vertices"):
        head.landmarks(torch.zeros(1, 10, 3))
    with pytest.raises(ValueError, match="num_vertices, num_faces and num_uv"):
        OpenHead(num_vertices=10)
    with pytest.raises(FileNotFoundError, match="build_open_head"):
        OpenHead.from_file(tmp_path / "missing.safetensors")
    (tmp_path / "junk.safetensors").write_bytes(b"not a safetensors file")
    with pytest.raises(ValueError, match="not a readable OpenHead asset"):
        OpenHead.from_file(tmp_path / "junk.safetensors")
    tensors, config = build_open_head(DEFAULT_OBJ)
    del tensors["faces"]
    with pytest.raises(ValueError, match="missing `faces`"):
        OpenHead.from_file(save_asset(tensors, config, tmp_path / "partial.safetensors"))
