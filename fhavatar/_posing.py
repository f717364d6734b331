"""Compiled (numba) re-posing of an `Avatar`'s bound Gaussians: the per-frame half of `Avatar.gaussians`.

`Avatar.gaussians` poses N Gaussians bound to F triangles. The readable form (`Avatar.reference_gaussians`, the
formulas of `fhavatar.avatar`'s docstring in PyTorch) builds a triangle frame per *Gaussian* and then a dozen
`[N, ...]` tensors; a video loop needs only one frame per *triangle* and one pass over the Gaussians:

1. `pose_faces`: per used triangle, the local frame `R_tri = [t | b | n]`, the scale `sqrt(area)` and the frame's
   unit quaternion (`fhavatar.head.uv.triangle_frames`, then `fhavatar.rotations.rotmat_to_quat`): `face_frames`,
   two `torch.sqrt_` on the triangles' arrays, `face_quats` (parallel: 0.13 ms for 10K triangles on 2 cores, 0.25 serial);
2. `pose_gaussians`: per Gaussian, `means = barycentric point + R_tri (k_tri offset)`, `quats = q_tri ⊗ q_local`,
   `scales = max(k_tri scale, 1e-8)`, written into the caller's tensors with the fixed Gaussians (the bust) after
   them, non-finite results counted (parallel).

The arithmetic is PyTorch's, operation for operation and rounding for rounding: float32 throughout, no fast-math
re-association, a fused multiply-add exactly where PyTorch's CPU kernels use one (the cross product and the norm
of 3-vectors, not the norm of 4-vectors), and PyTorch's own `sqrt` kernel for `Tensor.sqrt` (its vectorised
square root is not always correctly rounded). This matters: the images of a Gaussian splatting renderer are not
continuous in the Gaussians (depth order of near ties, the 1/255 alpha cut), and a relative change of 1e-7 in the
vertices moved pixels of the shared avatar by up to 5e-3. So the results must be the same bits, not nearly the same
numbers. `matches_torch()` checks that once per process on random triangles (degenerate ones included) against the
torch formulas, and `Avatar.gaussians` falls back to them when it fails (another PyTorch build or CPU may round
differently).
"""

from __future__ import annotations

import logging
import math

import numpy as np
import torch
from llvmlite import ir
from numba import njit, prange, types
from numba.core import cgutils
from numba.extending import intrinsic

logger = logging.getLogger(__name__)

f32 = np.float32
#: `fhavatar.head.uv.MIN_TRIANGLE_SCALE ** 2` (smallest doubled area / area), as PyTorch rounds it for float32.
_MIN_AREA = f32(1e-8**2)
_MIN_SCALE = f32(1e-8)  # `fhavatar.avatar._MIN_SCALE`
_NORM_EPS = f32(1e-12)  # F.normalize's eps; also rotmat_to_quat's clamp of 4 q_i^2 and the degenerate-UV test
_ONE, _TWO = f32(1.0), f32(2.0)


@intrinsic
def _fma(typingctx, a, b, c):
    """`a * b + c` rounded once (llvm.fma.f32): what PyTorch's vectorised CPU kernels compute for such sums."""
    if not all(isinstance(x, types.Float) and x.bitwidth == 32 for x in (a, b, c)):
        return None

    def codegen(context, builder, signature, args):
        f = ir.FloatType()
        fn = cgutils.get_or_insert_function(builder.module, ir.FunctionType(f, [f, f, f]), "llvm.fma.f32")
        return builder.call(fn, args)

    return types.float32(types.float32, types.float32, types.float32), codegen


@njit(inline="always")
def _cross(ax, ay, az, bx, by, bz):
    """`torch.linalg.cross`: each component one multiply, then a fused multiply-subtract."""
    return _fma(ay, bz, -(az * by)), _fma(az, bx, -(ax * bz)), _fma(ax, by, -(ay * bx))


@njit(inline="always")
def _norm3(x, y, z):
    """`Tensor.norm(dim=-1)` of a 3-vector: squares accumulated with fused multiply-adds."""
    return np.float32(math.sqrt(_fma(z, z, _fma(y, y, x * x))))


@njit(parallel=True, cache=True, nogil=True)
def face_frames(
    vertices,  # [V, 3] float32 posed vertices
    corners,  # [F, 3] int32 vertex indices of each used triangle
    uv_edges,  # [F, 5] float32 per triangle: d1 = uv1 - uv0 (2), d2 = uv2 - uv0 (2), det = d1 x d2
    out_frames,  # [F, 3, 3] written: columns t, b, n
    out_area,  # [F] written: max(area, 1e-16); `sqrt_` makes it the triangle scale
    out_squares,  # [F, 4] written: max(4 q_i^2, 1e-12) for i = w, x, y, z; `sqrt_` makes them 2 |q_i|
    out_best,  # [F] int32 written: the largest 4 q_i^2 (first of equals)
):
    """`triangle_frames` up to its square root, and the first half of `rotmat_to_quat` (bit-identical).

    The square roots are left to `torch.sqrt_`: PyTorch's vectorised `sqrt` is not always correctly rounded
    (half an ulp and a little more), and only PyTorch's own kernel gives its bits.
    """
    for f in prange(corners.shape[0]):
        i0, i1, i2 = corners[f, 0], corners[f, 1], corners[f, 2]
        e1x, e1y, e1z = vertices[i1, 0] - vertices[i0, 0], vertices[i1, 1] - vertices[i0, 1], vertices[i1, 2] - vertices[i0, 2]
        e2x, e2y, e2z = vertices[i2, 0] - vertices[i0, 0], vertices[i2, 1] - vertices[i0, 1], vertices[i2, 2] - vertices[i0, 2]
        cx, cy, cz = _cross(e1x, e1y, e1z, e2x, e2y, e2z)
        double_area = _norm3(cx, cy, cz)
        clamped = max(double_area, _MIN_AREA)
        nx, ny, nz = cx / clamped, cy / clamped, cz / clamped
        d1y, d2y, det = uv_edges[f, 1], uv_edges[f, 3], uv_edges[f, 4]
        if abs(det) < _NORM_EPS:  # degenerate UV triangle: the first edge
            tx, ty, tz = e1x, e1y, e1z
        else:  # dP/du
            tx, ty, tz = (e1x * d2y - e2x * d1y) / det, (e1y * d2y - e2y * d1y) / det, (e1z * d2y - e2z * d1y) / det
        dot = (tx * nx + ty * ny) + tz * nz
        tx, ty, tz = tx - dot * nx, ty - dot * ny, tz - dot * nz
        length = max(_norm3(tx, ty, tz), _NORM_EPS)
        tx, ty, tz = tx / length, ty / length, tz / length
        bx, by, bz = _cross(nx, ny, nz, tx, ty, tz)
        out_frames[f, 0, 0], out_frames[f, 0, 1], out_frames[f, 0, 2] = tx, bx, nx
        out_frames[f, 1, 0], out_frames[f, 1, 1], out_frames[f, 1, 2] = ty, by, ny
        out_frames[f, 2, 0], out_frames[f, 2, 1], out_frames[f, 2, 2] = tz, bz, nz
        out_area[f] = max(double_area / _TWO, _MIN_AREA)
        # rotmat_to_quat of m = [[tx, bx, nx], [ty, by, ny], [tz, bz, nz]]: 4 q_i^2
        sq0 = ((_ONE + tx) + by) + nz
        sq1 = ((_ONE + tx) - by) - nz
        sq2 = ((_ONE - tx) + by) - nz
        sq3 = ((_ONE - tx) - by) + nz
        best, most = 0, sq0  # argmax: the first of equal maxima
        if sq1 > most:
            best, most = 1, sq1
        if sq2 > most:
            best, most = 2, sq2
        if sq3 > most:
            best = 3
        out_best[f] = best
        out_squares[f, 0], out_squares[f, 1] = max(sq0, _NORM_EPS), max(sq1, _NORM_EPS)
        out_squares[f, 2], out_squares[f, 3] = max(sq2, _NORM_EPS), max(sq3, _NORM_EPS)


@njit(parallel=True, cache=True, nogil=True)
def face_quats(
    frames,  # [F, 3, 3] from `face_frames`
    roots,  # [F, 4] 2 |q_i| (`out_squares` after `sqrt_`)
    best,  # [F] int32
    out_quats,  # [F, 4] written: the frames as unit quaternions (w, x, y, z), w >= 0
):
    """The second half of `rotmat_to_quat` (bit-identical)."""
    for f in prange(frames.shape[0]):
        bx, nx = frames[f, 0, 1], frames[f, 0, 2]
        ty, ny = frames[f, 1, 0], frames[f, 1, 2]
        tz, bz = frames[f, 2, 0], frames[f, 2, 1]
        d21, d02, d10 = bz - ny, nx - tz, ty - bx
        s21, s02, s10 = bz + ny, nx + tz, ty + bx
        i = best[f]
        r = roots[f, i]
        if i == 0:
            q0, q1, q2, q3 = r * r, d21, d02, d10
        elif i == 1:
            q0, q1, q2, q3 = d21, r * r, s10, s02
        elif i == 2:
            q0, q1, q2, q3 = d02, s10, r * r, s21
        else:
            q0, q1, q2, q3 = d10, s02, s21, r * r
        two_r = _TWO * r
        q0, q1, q2, q3 = q0 / two_r, q1 / two_r, q2 / two_r, q3 / two_r
        qn = max(np.float32(math.sqrt(((q0 * q0 + q1 * q1) + q2 * q2) + q3 * q3)), _NORM_EPS)  # 4-vector norm: no FMA
        q0, q1, q2, q3 = q0 / qn, q1 / qn, q2 / qn, q3 / qn
        if q0 < 0:
            q0, q1, q2, q3 = -q0, -q1, -q2, -q3
        out_quats[f, 0], out_quats[f, 1], out_quats[f, 2], out_quats[f, 3] = q0, q1, q2, q3


def pose_faces(vertices: np.ndarray, corners: np.ndarray, uv_edges: np.ndarray, work: dict) -> None:
    """Frames, scales and quaternions of the triangles `corners` of `vertices` into `work` (`face_work` arrays)."""
    face_frames(vertices, corners, uv_edges, work["frames"], work["scales"], work["squares"], work["best"])
    torch.from_numpy(work["scales"]).sqrt_()
    torch.from_numpy(work["squares"]).sqrt_()
    face_quats(work["frames"], work["squares"], work["best"], work["quats"])


def face_work(faces: int) -> dict:
    """The per-triangle arrays `pose_faces` writes."""
    return {"frames": np.empty((faces, 3, 3), np.float32), "scales": np.empty(faces, np.float32),
            "squares": np.empty((faces, 4), np.float32), "best": np.empty(faces, np.int32),
            "quats": np.empty((faces, 4), np.float32)}


@njit(parallel=True, cache=True, nogil=True)
def pose_gaussians(
    vertices,  # [V, 3] float32
    corners,  # [F, 3] int32
    slot,  # [N] int32: each Gaussian's row of the per-triangle arrays
    barycentrics,  # [N, 3]
    offsets,  # [N, 3] local, in units of the source triangle's scale
    rotations,  # [N, 4] local (w, x, y, z)
    scales,  # [N, 3] local
    frames,  # [F, 3, 3] from `face_frames`
    tri_scales,  # [F]
    face_quats,  # [F, 4]
    fixed_means,  # [M - N, 3] Gaussians that no pose moves (the bust), copied to rows [N, M)
    fixed_quats,  # [M - N, 4]
    fixed_scales,  # [M - N, 3]
    out_means,  # [M, 3] written
    out_quats,  # [M, 4]
    out_scales,  # [M, 3]
):
    """The posed means, rotations and scales of N bound Gaussians, then the fixed ones; returns how many of the
    posed Gaussians have a value that is not finite."""
    n = slot.shape[0]
    for g in prange(fixed_means.shape[0]):
        for d in range(3):
            out_means[n + g, d], out_scales[n + g, d] = fixed_means[g, d], fixed_scales[g, d]
        for d in range(4):
            out_quats[n + g, d] = fixed_quats[g, d]
    bad = 0
    for g in prange(n):
        f = slot[g]
        i0, i1, i2 = corners[f, 0], corners[f, 1], corners[f, 2]
        b0, b1, b2 = barycentrics[g, 0], barycentrics[g, 1], barycentrics[g, 2]
        k = tri_scales[f]
        l0, l1, l2 = offsets[g, 0] * k, offsets[g, 1] * k, offsets[g, 2] * k
        for d in range(3):
            anchor = (vertices[i0, d] * b0 + vertices[i1, d] * b1) + vertices[i2, d] * b2
            out_means[g, d] = anchor + ((frames[f, d, 0] * l0 + frames[f, d, 1] * l1) + frames[f, d, 2] * l2)
            s = scales[g, d] * k
            out_scales[g, d] = s if s >= _MIN_SCALE else (_MIN_SCALE if s == s else s)  # clamp, NaN kept
        aw, ax, ay, az = face_quats[f, 0], face_quats[f, 1], face_quats[f, 2], face_quats[f, 3]
        bw, bx, by, bz = rotations[g, 0], rotations[g, 1], rotations[g, 2], rotations[g, 3]
        out_quats[g, 0] = ((aw * bw - ax * bx) - ay * by) - az * bz
        out_quats[g, 1] = ((aw * bx + ax * bw) + ay * bz) - az * by
        out_quats[g, 2] = ((aw * by - ax * bz) + ay * bw) + az * bx
        out_quats[g, 3] = ((aw * bz + ax * by) - ay * bx) + az * bw
        total = f32(0.0)
        for d in range(3):
            total += out_means[g, d] + out_scales[g, d] + out_quats[g, d]
        total += out_quats[g, 3]
        bad += not math.isfinite(total)  # NaN/inf survive the sum
    return bad


def uv_edges(uv: torch.Tensor) -> torch.Tensor:  # [F, 3, 2] corner UVs -> [F, 5]
    """The per-triangle UV constants `face_frames` reads, computed as `triangle_frames` computes them."""
    d1, d2 = uv[:, 1] - uv[:, 0], uv[:, 2] - uv[:, 0]
    det = d1[:, 0] * d2[:, 1] - d2[:, 0] * d1[:, 1]
    return torch.cat([d1, d2, det[:, None]], dim=1).float().contiguous()


_MATCHES: bool | None = None


def matches_torch() -> bool:
    """Whether the kernels reproduce the torch formulas bit for bit here (checked once per process)."""
    global _MATCHES
    if _MATCHES is None:
        try:
            _MATCHES = _self_check()
        except Exception:  # noqa: BLE001 - any failure means "use the torch formulas"
            logger.exception("compiled re-posing failed its self-check; Avatar.gaussians uses the torch formulas")
            _MATCHES = False
        if not _MATCHES:
            logger.warning("compiled re-posing does not reproduce this PyTorch build's rounding; "
                           "Avatar.gaussians uses the (slower) torch formulas")
    return _MATCHES


def _self_check(faces: int = 4096, gaussians: int = 16384) -> bool:
    from .head.uv import triangle_frames
    from .rotations import quat_multiply, rotmat_to_quat

    g = torch.Generator().manual_seed(0)
    vertices = torch.randn(3 * faces, 3, generator=g) * torch.rand(3 * faces, 1, generator=g)
    vertices[-3:] = vertices[-3]  # one collapsed triangle
    corners = torch.arange(3 * faces, dtype=torch.int32).view(faces, 3)
    uv = torch.rand(faces, 3, 2, generator=g)
    uv[:16, 2] = uv[:16, 1]  # degenerate UV triangles
    slot = torch.randint(0, faces, (gaussians,), generator=g, dtype=torch.int32)
    bary = torch.rand(gaussians, 3, generator=g)
    bary = bary / bary.sum(1, keepdim=True)
    offsets, scales = torch.randn(gaussians, 3, generator=g), torch.rand(gaussians, 3, generator=g)
    scales[:8] = 0.0  # below the clamp
    rotations = torch.nn.functional.normalize(torch.randn(gaussians, 4, generator=g), dim=-1)

    frames, tri_scale = triangle_frames(vertices[corners.long()], uv)
    face_quat = rotmat_to_quat(frames)
    sl = slot.long()
    tri = vertices[corners.long()[sl]]
    expected = (
        (tri * bary[..., None]).sum(1) + (frames[sl] @ (offsets * tri_scale[sl, None])[..., None])[..., 0],
        quat_multiply(face_quat[sl], rotations),
        (scales * tri_scale[sl, None]).clamp(min=1e-8),
    )
    work = face_work(faces)
    pose_faces(vertices.numpy(), corners.numpy(), uv_edges(uv).numpy(), work)
    out_frames, out_scale, out_quat = (torch.from_numpy(work[k]) for k in ("frames", "scales", "quats"))
    means, quats, posed_scales = torch.empty(gaussians + 2, 3), torch.empty(gaussians + 2, 4), torch.empty(gaussians + 2, 3)
    fixed = (np.full((2, 3), 0.5, np.float32), np.full((2, 4), 0.5, np.float32), np.full((2, 3), 0.25, np.float32))
    pose_gaussians(vertices.numpy(), corners.numpy(), slot.numpy(), bary.numpy(), offsets.numpy(), rotations.numpy(),
                   scales.numpy(), out_frames.numpy(), out_scale.numpy(), out_quat.numpy(), *fixed, means.numpy(),
                   quats.numpy(), posed_scales.numpy())
    if not all(np.array_equal(out.numpy()[gaussians:], value) for out, value in zip((means, quats, posed_scales), fixed)):
        return False
    means, quats, posed_scales = means[:gaussians], quats[:gaussians], posed_scales[:gaussians]
    got = (means, quats, posed_scales)
    return (torch.equal(out_frames, frames) and torch.equal(out_scale, tri_scale) and torch.equal(out_quat, face_quat)
            and all(torch.equal(a, b) for a, b in zip(got, expected)))
