"""The standard 3DGS binary PLY of Gaussians (degree-0 spherical harmonics), as 3DGS and common viewers write
and read it: `save_gaussians_ply` and `load_gaussians_ply`.

Per Gaussian (vertex properties `PLY_PROPERTIES`, float32 little-endian): position `x y z`, zero normals
`nx ny nz`, colour as the DC spherical-harmonic coefficient `f_dc = (rgb - 0.5) / SH_C0`, opacity as a logit,
`scale_*` as logs and `rot_*` a normalised `(w, x, y, z)` quaternion.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from ..rendering.gaussians import Gaussians
from .files import checked_file

__all__ = ["PLY_PROPERTIES", "SH_C0", "load_gaussians_ply", "save_gaussians_ply"]

#: Zeroth-order spherical-harmonic constant: 3DGS stores colour as `f_dc = (rgb - 0.5) / SH_C0`.
SH_C0 = 0.28209479177387814
#: Vertex properties of the PLY files written by `save_gaussians_ply`, in order (the 3DGS layout, degree 0).
PLY_PROPERTIES = (
    "x", "y", "z", "nx", "ny", "nz", "f_dc_0", "f_dc_1", "f_dc_2", "opacity",
    "scale_0", "scale_1", "scale_2", "rot_0", "rot_1", "rot_2", "rot_3",
)
#: Opacities are clamped to [eps, 1 - eps] before the logit of a PLY file.
_OPACITY_EPS = 1e-6
#: PLY scalar types -> numpy little-endian dtypes.
_PLY_TYPES = {
    "char": "i1", "int8": "i1", "uchar": "u1", "uint8": "u1", "short": "<i2", "int16": "<i2",
    "ushort": "<u2", "uint16": "<u2", "int": "<i4", "int32": "<i4", "uint": "<u4", "uint32": "<u4",
    "float": "<f4", "float32": "<f4", "double": "<f8", "float64": "<f8",
}


def save_gaussians_ply(gaussians: Gaussians, path: str | Path) -> Path:
    """Write `gaussians` as a standard 3DGS binary little-endian PLY (properties `PLY_PROPERTIES`).

    Colour is stored as the DC spherical-harmonic coefficient `(rgb - 0.5) / SH_C0`, opacity as a logit,
    scales as logs and rotations as normalised `(w, x, y, z)`; normals are zero (as 3DGS writes them).
    Only RGB Gaussians (`C = 3`) can be written.
    """
    if not isinstance(gaussians, Gaussians):
        raise TypeError(f"`gaussians` must be a fhavatar.rendering.Gaussians, got {type(gaussians).__name__}.")
    if gaussians.num_channels != 3:
        raise ValueError(f"A 3DGS PLY holds RGB colours; `gaussians` has {gaussians.num_channels} channels.")
    g = gaussians.detach().to(device="cpu", dtype=torch.float64)
    opacity = g.opacities.clamp(_OPACITY_EPS, 1 - _OPACITY_EPS)
    columns = [
        g.means, torch.zeros_like(g.means), (g.colors - 0.5) / SH_C0, torch.log(opacity / (1 - opacity))[:, None],
        g.scales.log(), F.normalize(g.quats, dim=-1),
    ]
    values = torch.cat(columns, 1).to(torch.float32).numpy()
    data = np.empty(len(g), dtype=[(name, "<f4") for name in PLY_PROPERTIES])
    for i, name in enumerate(PLY_PROPERTIES):
        data[name] = values[:, i]
    header = "ply\nformat binary_little_endian 1.0\n" + f"element vertex {len(g)}\n"
    header += "".join(f"property float {name}\n" for name in PLY_PROPERTIES) + "end_header\n"
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "wb") as f:
        f.write(header.encode("ascii"))
        f.write(data.tobytes())
    return path


def _read_ply_header(raw: bytes, path: Path) -> tuple[int, list[tuple[str, str]], int]:
    """(vertex count, [(property, numpy dtype)], data offset) of a binary little-endian 3DGS PLY."""
    end = raw.find(b"end_header\n")
    if not raw.startswith(b"ply\n") or end < 0:
        raise ValueError(f"{str(path)!r} is not a PLY file (no 'ply' magic line or no 'end_header').")
    lines = raw[:end].decode("ascii", errors="replace").splitlines()[1:]
    count, props, element = None, [], None
    for line in lines:
        words = line.split()
        if not words or words[0] in ("comment", "obj_info"):
            continue
        if words[0] == "format":
            if words[1:2] != ["binary_little_endian"]:
                raise ValueError(f"{str(path)!r}: only 'binary_little_endian' PLY files are supported, got "
                                 f"{' '.join(words[1:])!r}.")
        elif words[0] == "element":
            if len(words) != 3:
                raise ValueError(f"{str(path)!r}: malformed PLY element line {line!r}; expected 'element NAME COUNT'.")
            if element == "vertex":
                raise ValueError(f"{str(path)!r}: a 3DGS PLY holds only the 'vertex' element, found {words[1]!r} "
                                 "after it.")
            element = words[1]
            if element != "vertex":
                raise ValueError(f"{str(path)!r}: expected the 'vertex' element first, got {element!r}.")
            if not words[2].isdigit():
                raise ValueError(f"{str(path)!r}: the PLY vertex count must be a non-negative integer, got {words[2]!r}.")
            count = int(words[2])
        elif words[0] == "property":
            if len(words) != 3 or words[1] == "list" or words[1] not in _PLY_TYPES:
                raise ValueError(f"{str(path)!r}: unsupported PLY property line {line!r}.")
            props.append((words[2], _PLY_TYPES[words[1]]))
        else:
            raise ValueError(f"{str(path)!r}: unexpected PLY header line {line!r}.")
    if count is None:
        raise ValueError(f"{str(path)!r}: the PLY header declares no 'vertex' element.")
    names = {p for p, _ in props}
    missing = [name for name in PLY_PROPERTIES if name not in names and name not in ("nx", "ny", "nz")]
    if missing:
        raise ValueError(f"{str(path)!r} is not a 3DGS PLY: missing vertex properties {missing}.")
    return count, props, end + len(b"end_header\n")


def load_gaussians_ply(path: str | Path) -> Gaussians:
    """Read a 3DGS binary PLY (as written by `save_gaussians_ply`, or by 3DGS itself: higher-order SH
    coefficients and other extra properties are ignored) into `Gaussians` with RGB colours in [0, 1]."""
    path = checked_file(path, "PLY file")
    raw = path.read_bytes()
    count, props, offset = _read_ply_header(raw, path)
    dtype = np.dtype(props)
    if len(raw) - offset < count * dtype.itemsize:
        raise ValueError(f"{str(path)!r} is truncated: the header declares {count} vertices of {dtype.itemsize} "
                         f"bytes, but only {len(raw) - offset} data bytes follow.")
    data = np.frombuffer(raw, dtype=dtype, count=count, offset=offset)

    def cols(*names: str) -> Tensor:
        return torch.from_numpy(np.stack([data[n].astype(np.float32) for n in names], 1))

    f_dc = cols("f_dc_0", "f_dc_1", "f_dc_2")
    quats = cols("rot_0", "rot_1", "rot_2", "rot_3")
    if count and bool((quats.norm(dim=-1) == 0).any()):
        raise ValueError(f"{str(path)!r} holds zero rotation quaternions.")
    return Gaussians(
        means=cols("x", "y", "z"),
        quats=F.normalize(quats, dim=-1) if count else quats,
        scales=cols("scale_0", "scale_1", "scale_2").exp(),
        opacities=torch.sigmoid(cols("opacity")[:, 0]),
        colors=(f_dc * SH_C0 + 0.5).clamp(0, 1),
    )

