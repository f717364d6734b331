"""MediaPipe's canonical face (`assets/canonical_face_model.obj`) in landmark order and MediaPipe's canonical frame.

The OBJ numbers its vertices differently from MediaPipe Face Mesh's landmarks and sits in an older frame:
`OBJ_VERTEX_OF_LANDMARK` restores landmark order and the `ALIGN_*` similarity moves it to the current canonical
frame (cm; +x the subject's left, +y up, +z out of the face). `canonical_face` returns it exactly
mirror-symmetric. Runtime code (crop alignment, the identity metric's fixed alignment) and the OpenHead builder
(`python -m fhavatar.tools.build_open_head`) read the face from here; the landmark index tables name MediaPipe's
eye and lip contours and a few single landmarks.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ..rotations import axis_angle_to_matrix_np
from .open_head import NUM_FACE_VERTICES

__all__ = [
    "ALIGN_AXIS_ANGLE",
    "ALIGN_SCALE",
    "ALIGN_TRANSLATION_CM",
    "CHIN",
    "DEFAULT_OBJ",
    "FOREHEAD_TOP",
    "INNER_LIP_CONTOUR",
    "LEFT_EYE_CONTOUR",
    "LEFT_EYE_OUTER",
    "LEFT_IRIS",
    "LOWER_LIP",
    "OBJ_VERTEX_OF_LANDMARK",
    "RIGHT_EYE_CONTOUR",
    "RIGHT_IRIS",
    "UPPER_LIP",
    "canonical_face",
    "read_obj",
]

DEFAULT_OBJ = Path(__file__).parent / "assets" / "canonical_face_model.obj"
# fmt: off
#: OBJ vertex index (0-based) of MediaPipe landmark i.
OBJ_VERTEX_OF_LANDMARK = (
    27, 356, 451, 245, 182, 184, 399, 5, 251, 82, 438, 31, 452, 453, 415, 412, 213, 135, 132, 357, 331, 181, 367,
    192, 191, 445, 285, 235, 237, 147, 148, 259, 99, 4, 22, 378, 219, 29, 384, 41, 79, 386, 111, 317, 359, 185, 339,
    49, 93, 95, 73, 187, 304, 307, 178, 252, 154, 374, 427, 465, 376, 143, 347, 327, 388, 405, 396, 56, 177, 55, 340,
    179, 30, 43, 81, 467, 140, 139, 15, 279, 113, 430, 433, 133, 134, 215, 414, 417, 421, 403, 198, 199, 116, 410,
    441, 16, 346, 266, 170, 269, 272, 74, 392, 59, 57, 325, 159, 85, 87, 315, 435, 257, 287, 320, 47, 91, 351, 258,
    75, 77, 35, 36, 398, 355, 341, 361, 273, 21, 46, 173, 321, 92, 461, 2, 309, 164, 294, 382, 163, 25, 222, 443,
    275, 353, 193, 195, 141, 401, 65, 394, 295, 84, 61, 366, 68, 1, 343, 69, 239, 236, 149, 151, 23, 437, 450, 169,
    281, 369, 253, 297, 313, 63, 424, 0, 249, 60, 223, 459, 420, 407, 212, 210, 157, 112, 105, 107, 117, 202, 449,
    228, 155, 17, 165, 227, 100, 431, 246, 422, 289, 370, 207, 208, 129, 171, 103, 203, 218, 205, 372, 291, 126, 101,
    127, 463, 125, 428, 363, 299, 280, 283, 311, 263, 440, 303, 305, 380, 323, 350, 261, 119, 121, 37, 39, 51, 411,
    390, 247, 447, 333, 457, 267, 335, 332, 455, 231, 229, 3, 241, 242, 11, 328, 180, 365, 190, 188, 444, 284, 232,
    233, 144, 146, 255, 96, 9, 20, 377, 216, 26, 383, 40, 78, 385, 108, 316, 358, 183, 336, 48, 89, 94, 70, 186, 302,
    306, 176, 250, 152, 373, 425, 464, 375, 142, 345, 326, 387, 404, 395, 54, 174, 52, 338, 175, 28, 42, 80, 466,
    138, 136, 12, 276, 109, 429, 432, 130, 131, 214, 413, 416, 419, 402, 196, 197, 114, 408, 14, 344, 265, 168, 268,
    271, 72, 391, 58, 53, 324, 158, 83, 86, 314, 434, 254, 286, 319, 45, 88, 349, 256, 71, 76, 32, 34, 397, 354, 337,
    360, 270, 18, 44, 172, 318, 90, 460, 8, 308, 162, 292, 381, 160, 24, 220, 442, 274, 352, 189, 194, 137, 400, 64,
    393, 293, 364, 66, 6, 342, 67, 238, 234, 145, 150, 19, 436, 166, 277, 368, 296, 312, 62, 423, 7, 248, 221, 458,
    418, 406, 211, 209, 156, 110, 104, 106, 115, 201, 448, 226, 153, 13, 161, 224, 98, 244, 288, 206, 128, 167, 102,
    200, 217, 204, 371, 290, 124, 97, 123, 462, 122, 426, 362, 298, 278, 282, 310, 262, 439, 300, 301, 379, 322, 348,
    260, 118, 120, 33, 38, 50, 409, 389, 243, 446, 329, 456, 264, 334, 330, 454, 230, 225, 10, 240,
)
# fmt: on
#: Similarity taking the OBJ's coordinates to MediaPipe's current canonical frame: x -> s R(axis-angle) x + t.
ALIGN_AXIS_ANGLE = (-0.0983168, 0.2021961, -0.0220507)
ALIGN_SCALE = 1.097355
ALIGN_TRANSLATION_CM = (0.0, -0.00041, -0.40084)
#: MediaPipe's eye contours (subject's left eye has x > 0) and inner-lip contour (FACEMESH_LEFT_EYE etc.).
LEFT_EYE_CONTOUR = (249, 263, 362, 373, 374, 380, 381, 382, 384, 385, 386, 387, 388, 390, 398, 466)
RIGHT_EYE_CONTOUR = (7, 33, 133, 144, 145, 153, 154, 155, 157, 158, 159, 160, 161, 163, 173, 246)
INNER_LIP_CONTOUR = (13, 14, 78, 80, 81, 82, 87, 88, 95, 178, 191, 308, 310, 311, 312, 317, 318, 324, 402, 415)
FOREHEAD_TOP, CHIN, UPPER_LIP, LOWER_LIP, LEFT_EYE_OUTER = 10, 152, 13, 14, 263
#: Iris landmarks: (centre, +x, +y, -x, -y) of the subject's right eye (x < 0) and left eye (x > 0).
RIGHT_IRIS, LEFT_IRIS = (468, 469, 470, 471, 472), (473, 474, 475, 476, 477)


def read_obj(path: str | Path) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Read MediaPipe's canonical face OBJ: positions `[468, 3]` (cm), UVs `[468, 2]`, faces `[898, 3]` (0-based)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"`obj_path` {str(path)!r} does not exist (expected canonical_face_model.obj).")
    positions, uvs, faces = [], [], []
    for number, line in enumerate(path.read_text().splitlines(), 1):
        parts = line.split()
        try:
            if parts and parts[0] == "v":
                positions.append([float(p) for p in parts[1:4]])
            elif parts and parts[0] == "vt":
                uvs.append([float(p) for p in parts[1:3]])
            elif parts and parts[0] == "f":
                corners = [[int(i) - 1 for i in p.split("/")[:2]] for p in parts[1:]]
                if len(corners) != 3 or any(c[0] != c[1] for c in corners):
                    raise ValueError("expected a triangle with equal vertex and texture indices")
                faces.append([c[0] for c in corners])
        except (ValueError, IndexError) as err:
            raise ValueError(f"{str(path)!r} line {number}: cannot parse {line!r} ({err}).") from err
    counts = (len(positions), len(uvs), len(faces))
    if counts != (NUM_FACE_VERTICES, NUM_FACE_VERTICES, 898):
        raise ValueError(f"{str(path)!r} has {counts} (vertices, uvs, faces); MediaPipe's face has (468, 468, 898).")
    return np.array(positions), np.array(uvs), np.array(faces, dtype=np.int64)


def _mirror_of(points: np.ndarray, reflected: np.ndarray, tolerance: float) -> np.ndarray:  # [N, D] x2 -> [N]
    """Index of the point nearest each reflected point (the mirror partner); checks it is an involution."""
    dist = ((reflected[:, None] - points[None]) ** 2).sum(-1)
    mirror = dist.argmin(1)
    if np.sqrt(dist.min(1)).max() > tolerance or (mirror[mirror] != np.arange(len(points))).any():
        raise ValueError("the canonical face is not mirror-symmetric: check OBJ_VERTEX_OF_LANDMARK / ALIGN_*.")
    return mirror


def canonical_face(obj_path: str | Path = DEFAULT_OBJ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """The canonical face in landmark order and MediaPipe's canonical frame, exactly mirror-symmetric.

    Returns `(vertices [468, 3] cm, uv [468, 2], faces [898, 3], mirror [468])`.
    """
    positions, uvs, faces = read_obj(obj_path)
    order = np.array(OBJ_VERTEX_OF_LANDMARK)
    inverse = np.empty_like(order)
    inverse[order] = np.arange(NUM_FACE_VERTICES)
    v = ALIGN_SCALE * positions[order] @ axis_angle_to_matrix_np(ALIGN_AXIS_ANGLE).T + np.array(ALIGN_TRANSLATION_CM)
    uv = uvs[order]
    mirror = _mirror_of(v, v * [-1, 1, 1], 1e-3)
    if (_mirror_of(uv, uv * [-1, 1] + [1, 0], 1e-2) != mirror).any():
        raise ValueError("the canonical face's UV mirror pairs differ from its 3D mirror pairs.")
    v = 0.5 * (v + v[mirror] * [-1, 1, 1])
    uv = 0.5 * (uv + uv[mirror] * [-1, 1] + [1, 0])
    return v, uv, inverse[faces], mirror
