"""Head-model fitting: one photo or a driving video -> aligned crop, PanoHead camera and OpenHead parameters.

Conventions (ARCHITECTURE.md). World = head space (+y up, the face toward +z, 1.8 units/m). The fitted head stays
canonical (zero `global_rotation`/`translation`) and the camera moves around it, PanoHead style: the head's
rigid pose in the crop's OpenCV camera (x right, y down, z forward) is `world2cam = [R | t]`
(`FaceTrack.head_rotation`, `FaceTrack.head_translation`) and `FaceTrack.camera.cam2world` is its inverse, with
PanoHead's intrinsics (normalised focal `PANOHEAD_FOCAL`, principal point at the crop centre).

OpenHead fit (`fit_open_head`): its first 468 vertices are MediaPipe's face landmarks, so
1. rigid: a similarity (Umeyama) fit of the template to the landmarks (x, y and MediaPipe's depth, in pixels)
   gives the rotation and the depth (`z = f_px / scale`); a few Levenberg-Marquardt steps then minimise the
   perspective reprojection error of the expression-stable landmarks (above the upper lip, without eyelids),
   Huber-weighted so that moving brows or bad points count less;
2. expression: every observed landmark is back-projected along its camera ray to the depth of its rigidly posed
   template vertex (moved halfway toward MediaPipe's own relative depth, `DEPTH_BLEND`), taken to head space and
   minus the template: `expression [468, 3]`, each displacement clamped to `MAX_EXPRESSION_CM`; with the crop's
   foreground matte (`track_image` by default), the 2D targets are first corrected so the head's outline follows
   the matte's edge (`fhavatar.tracking.silhouette`: Face Mesh under-rotates near-profile faces), and the side the
   camera sees worse takes the mirrored displacements of the side it sees better (`mirror_hidden_side`);
3. eyes: each eye's pitch/yaw (`OpenHeadParams.eyes`) by Gauss-Newton on its iris centre.
Reprojection errors are mean distances between observed and model landmarks (478, irises included) divided by
the longer side of the observed landmarks' box.

Driving videos are tracked by `track_video` (`video.py`: Face Mesh in tracking mode, interpolation over frames
without a face, temporal smoothing, then this fit per frame). FLAME is fitted by `fit_flame` (`fit_flame.py`,
re-exported here).
"""

from __future__ import annotations

import logging
import math
import weakref
from dataclasses import dataclass

import numpy as np
import torch

from ..head.open_head import NUM_FACE_VERTICES, OpenHead, OpenHeadParams
from ..io import load_image
from ..rendering.cameras import PANOHEAD_FOCAL, Camera
from ..rotations import HEAD_TO_CAMERA, axis_angle_to_matrix_np, head_angles, rotation_from_angles, similarity_fit_np, skew_np
from .align import _EYE_CONTOURS, DEFAULT_CROP_SIZE, compute_crop
from .face_track import FaceTrack
from .fit_flame import fit_flame
from .landmarks import FaceLandmarker
from .letterbox import remove_bars
from .silhouette import check_mask, matte_trusted, mirror_hidden_side, on_background, silhouette_targets

__all__ = [
    "DEPTH_BLEND",
    "FaceTrack",
    "HEAD_TO_CAMERA",
    "MAX_EXPRESSION_CM",
    "OpenHeadFit",
    "fit_flame",
    "fit_open_head",
    "head_angles",
    "rotation_from_angles",
    "track_image",
]

logger = logging.getLogger(__name__)

#: Largest per-landmark expression displacement, in cm (3 cm = 0.054 head units).
MAX_EXPRESSION_CM = 3.0
#: Weight of MediaPipe's relative depth (vs the template's depth) when back-projecting landmarks.
DEPTH_BLEND = 0.5
#: Huber threshold of the rigid fit, as a fraction of the crop size (2 px of 512).
HUBER_FRACTION = 2.0 / 512
#: Levenberg-Marquardt steps of the rigid fit: from the similarity initialisation / warm-started from a frame.
RIGID_STEPS, WARM_RIGID_STEPS = 8, 3
#: Gauss-Newton steps per eye and the largest eye rotation (radians, per axis).
EYE_STEPS, MAX_EYE_ANGLE = 4, math.radians(40.0)
_IRIS_CENTRES = (473, 468)  # OpenHeadParams.eyes order: the subject's left eye (x > 0), then the right eye
_EYE_JOINTS = (3, 4)


@dataclass
class OpenHeadFit:
    """Result of `fit_open_head` (all numpy, float64).

    Attributes:
        rotation (`[3, 3]`), translation (`[3]`): world2cam of the head in the crop camera.
        expression (`[468, 3]`): head-space displacement of the face vertices.
        eyes (`[2, 3]`): axis-angle rotations of the subject's left, then right eye.
        reprojection_error (`float`), rigid_error (`float`): as in `FaceTrack`.
    """

    rotation: np.ndarray
    translation: np.ndarray
    expression: np.ndarray
    eyes: np.ndarray
    reprojection_error: float
    rigid_error: float


# ---------------------------------------------------------------------------------------------- model arrays
class _HeadArrays:
    """What the fit needs from an OpenHead, as float64 numpy (landmark vertices only)."""

    def __init__(self, head: OpenHead) -> None:
        template = head.template_vertices.detach().cpu().double().numpy()
        faces = head.faces.detach().cpu().numpy()
        corners = faces[head.landmark_faces.detach().cpu().numpy()]  # [478, 3]
        ids = head.landmark_mediapipe_ids.detach().cpu().numpy()
        order = np.argsort(ids)
        if not np.array_equal(ids[order], np.arange(len(ids))) or len(ids) != 478:
            raise ValueError("`head` must embed the 478 MediaPipe landmarks (landmark_mediapipe_ids 0..477).")
        self.vertex_ids, inverse = np.unique(corners[order], return_inverse=True)
        self.corners = inverse.reshape(478, 3)  # landmark -> its triangle's corners in `vertex_ids`
        self.bary = head.landmark_barycentrics.detach().cpu().double().numpy()[order]  # [478, 3]
        self.template = template[self.vertex_ids]  # [U, 3]
        self.sources = head.expression_sources.detach().cpu().numpy()[self.vertex_ids]  # [U, K]
        self.weights = head.expression_weights.detach().cpu().double().numpy()[self.vertex_ids]  # [U, K]
        skin = head.skinning_weights.detach().cpu().double().numpy()[self.vertex_ids]
        self.eye_weights = skin[:, list(_EYE_JOINTS)]  # [U, 2]
        self.eye_joints = head.joint_locations.detach().cpu().double().numpy()[list(_EYE_JOINTS)]  # [2, 3]
        self.face = template[:NUM_FACE_VERTICES]  # [468, 3]
        upper_lip_y = 0.5 * (template[0, 1] + template[2, 1])  # between the upper lip (0) and the subnasale (2)
        self.stable = np.array([i for i in range(NUM_FACE_VERTICES)
                                if template[i, 1] > upper_lip_y and i not in _EYE_CONTOURS])
        self.max_expression = MAX_EXPRESSION_CM / 100.0 * float(head.config.head_units_per_metre)
        self.neutral = self.landmarks(self.template, np.zeros((2, 3)))  # [478, 3]
        # Eyelid contours per eye, in `OpenHeadParams.eyes` order: the subject's left eye (x > 0) first.
        contours = np.array(_EYE_CONTOURS)
        self.eye_contours = (contours[self.face[contours, 0] > 0], contours[self.face[contours, 0] < 0])

    def rest(self, expression: np.ndarray) -> np.ndarray:  # [468, 3] -> [U, 3]
        """Un-posed landmark-triangle vertices with the expression displacements."""
        return self.template + (expression[self.sources] * self.weights[..., None]).sum(1)

    def landmarks(self, rest: np.ndarray, eyes: np.ndarray) -> np.ndarray:  # [U, 3], [2, 3] -> [478, 3]
        """Head-space landmarks with eye rotations `eyes` and zero jaw/neck/global pose (OpenHead.forward on the
        landmark triangles only)."""
        posed = rest.copy()
        for e in range(2):
            w = self.eye_weights[:, e]
            if w.any() and np.any(eyes[e]):
                rotated = (rest - self.eye_joints[e]) @ axis_angle_to_matrix_np(eyes[e]).T + self.eye_joints[e]
                posed += w[:, None] * (rotated - rest)
        return (posed[self.corners] * self.bary[..., None]).sum(1)


_ARRAYS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def _arrays(head: OpenHead) -> _HeadArrays:
    if not isinstance(head, OpenHead):
        raise TypeError(f"`head` must be an OpenHead, got {type(head).__name__}.")
    if head not in _ARRAYS:
        _ARRAYS[head] = _HeadArrays(head)
    return _ARRAYS[head]


def _project(points: np.ndarray, rotation: np.ndarray, translation: np.ndarray, size: int) -> np.ndarray:
    """[N, 3] head space -> [N, 2] pixels of a PanoHead camera on a `size` square image."""
    p = points @ rotation.T + translation
    return PANOHEAD_FOCAL * size * p[:, :2] / p[:, 2:3] + size / 2.0


# ---------------------------------------------------------------------------------------------- the OpenHead fit
def _similarity_init(lm: np.ndarray, arrays: _HeadArrays, size: int, stable: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Umeyama fit of the camera-axes template to the `stable` landmarks (x, y, MediaPipe z) -> (R, t)."""
    pts = lm[stable]
    # pixels per head unit at the depth of the stable points; the rotation of the camera-axes template
    scale, rot, _ = similarity_fit_np(arrays.face[stable] @ HEAD_TO_CAMERA.T, pts)
    rot = rot @ HEAD_TO_CAMERA  # head space -> camera
    if not scale > 0:
        raise ValueError("`landmarks` do not look like a face (the similarity fit has a non-positive scale).")
    f = PANOHEAD_FOCAL * size
    depth = f / scale
    centroid = np.array([(pts[:, 0].mean() - size / 2) / f * depth, (pts[:, 1].mean() - size / 2) / f * depth, depth])
    return rot, centroid - rot @ arrays.face[stable].mean(0)


def _refine_rigid(lm, arrays, rot, trans, size, steps, stable):
    """Huber-weighted Levenberg-Marquardt on the perspective reprojection of the `stable` landmarks."""
    pts, obs, f = arrays.face[stable], lm[stable, :2], PANOHEAD_FOCAL * size
    huber, damping = HUBER_FRACTION * size, 1e-3
    for _ in range(steps):
        rp = pts @ rot.T
        p = rp + trans
        z = p[:, 2]
        res = f * p[:, :2] / z[:, None] + size / 2.0 - obs  # [N, 2]
        norm = np.linalg.norm(res, axis=1)
        w = np.where(norm > huber, huber / np.maximum(norm, 1e-12), 1.0)
        dproj = np.zeros((len(z), 2, 3))  # d(u, v) / dp
        dproj[:, 0, 0] = dproj[:, 1, 1] = f / z
        dproj[:, :, 2] = -f * p[:, :2] / z[:, None] ** 2
        jac = np.concatenate([dproj @ -skew_np(rp), dproj], 2).reshape(-1, 6)  # [2N, 6]: (omega, t)
        wr = np.repeat(w, 2)
        jtj = (jac * wr[:, None]).T @ jac
        step = np.linalg.solve(jtj + damping * np.diag(np.diag(jtj)), -(jac * wr[:, None]).T @ res.ravel())
        rot, trans = axis_angle_to_matrix_np(step[:3]) @ rot, trans + step[3:]
    return rot, trans


def _rigid(lm, arrays, size, init=None, exclude=None):
    """Similarity initialisation (or the warm start `init`, when it fits the stable landmarks better) + LM.

    `exclude` (`[468]` bool) drops landmarks known to be wrong (on the matte's background) from the fit, unless
    fewer than half of the stable ones would remain.
    """
    stable = arrays.stable
    if exclude is not None and (~exclude[stable]).sum() >= 0.5 * len(stable):
        stable = stable[~exclude[stable]]
    rot, trans = _similarity_init(lm, arrays, size, stable)
    if init is not None:
        warm = np.asarray(init[0], float), np.asarray(init[1], float)

        def cost(r, t):
            return np.linalg.norm(_project(arrays.face[stable], r, t, size) - lm[stable, :2], axis=1).mean()

        if cost(*warm) < cost(rot, trans):
            return _refine_rigid(lm, arrays, *warm, size, WARM_RIGID_STEPS, stable)
    return _refine_rigid(lm, arrays, rot, trans, size, RIGID_STEPS, stable)


def _expression(lm, arrays, rot, trans, size):
    """Back-project the 468 landmarks to the depth of the posed template (blended with MediaPipe's z)."""
    f = PANOHEAD_FOCAL * size
    depth = (arrays.face @ rot.T + trans)[:, 2]
    ref = depth[arrays.stable].mean()
    mp_depth = lm[:468, 2] * ref / f  # MediaPipe's z (scaled like x) in head units, up to an offset
    mp_depth += np.median(depth[arrays.stable] - mp_depth[arrays.stable])
    z = depth + DEPTH_BLEND * (mp_depth - depth)
    cam = np.concatenate([(lm[:468, :2] - size / 2.0) / f * z[:, None], z[:, None]], 1)
    expression = (cam - trans) @ rot - arrays.face
    return _clamp_expression(expression, arrays)


def _clamp_expression(expression, arrays):
    """Each displacement shortened to at most `MAX_EXPRESSION_CM`."""
    norm = np.linalg.norm(expression, axis=1, keepdims=True)
    return expression * np.minimum(1.0, arrays.max_expression / np.maximum(norm, 1e-12))


def _eyes(lm, arrays, rot, trans, rest, size):
    """Per eye, the (pitch, yaw) about the eye joint that puts the model's iris centre on the observed one.

    The iris centre is `a + R d` (barycentric sum of its triangle's skinned corners), so each Gauss-Newton step
    rotates one vector (Jacobian `-[R d]x`, exact at zero angles).
    """
    eyes = np.zeros((2, 3))
    for e, iris in enumerate(_IRIS_CENTRES):
        corners, bary, w = rest[arrays.corners[iris]], arrays.bary[iris], arrays.eye_weights[arrays.corners[iris], e]
        joint = arrays.eye_joints[e]
        a = bary @ (corners * (1 - w[:, None]) + w[:, None] * joint)
        d = (bary * w) @ (corners - joint)
        f, angles = PANOHEAD_FOCAL * size, np.zeros(2)
        for _ in range(EYE_STEPS):
            rd = axis_angle_to_matrix_np(np.array([angles[0], angles[1], 0.0])) @ d
            p = rot @ (a + rd) + trans
            res = f * p[:2] / p[2] + size / 2.0 - lm[iris, :2]
            dproj = np.array([[f / p[2], 0.0, -f * p[0] / p[2] ** 2], [0.0, f / p[2], -f * p[1] / p[2] ** 2]])
            jac = dproj @ rot @ -skew_np(rd)[:, :2]  # exact at zero angles, close enough near them
            angles = np.clip(angles - np.linalg.lstsq(jac, res, rcond=None)[0], -MAX_EYE_ANGLE, MAX_EYE_ANGLE)
        eyes[e, :2] = angles
    return eyes


def _reprojection(lm, model_landmarks, rot, trans, size) -> float:
    uv = _project(model_landmarks, rot, trans, size)
    box = np.ptp(lm[:, :2], axis=0).max()
    return float(np.linalg.norm(uv - lm[:, :2], axis=1).mean() / max(box, 1e-9))


def _check_landmarks(landmarks) -> np.ndarray:
    lm = np.asarray(landmarks, dtype=np.float64)
    if lm.shape != (478, 3):
        raise ValueError(f"`landmarks` must be Face Mesh landmarks of shape [478, 3] (crop pixels), got {lm.shape}.")
    if not np.isfinite(lm).all():
        raise ValueError("`landmarks` hold NaN/inf values.")
    return lm


def fit_open_head(
    landmarks: np.ndarray,  # [478, 3] crop pixels, z scaled like x
    head: OpenHead | None = None,
    image_size: int = DEFAULT_CROP_SIZE,
    init: tuple[np.ndarray, np.ndarray] | None = None,
    pose: tuple[np.ndarray, np.ndarray] | None = None,
    mask: np.ndarray | None = None,
) -> OpenHeadFit:
    """Fit OpenHead (rigid pose, expression residuals, eyes) to Face Mesh landmarks of a crop.

    Args:
        landmarks (`np.ndarray` of shape `[478, 3]`): landmarks in pixels of the `image_size` square crop seen by a
            PanoHead camera (`CropTransform.apply(LandmarkResult.landmarks)`).
        head (`OpenHead`, *optional*): the model (default: the packaged OpenHead).
        image_size (`int`, *optional*, defaults to 512): side of the crop in pixels.
        init (`tuple` of `[3, 3]`, `[3]`, *optional*): a warm start for the rigid fit (e.g. the previous frame).
        pose (`tuple` of `[3, 3]`, `[3]`, *optional*): a fixed pose (e.g. temporally smoothed): skips the rigid fit.
        mask (`np.ndarray` of shape `[image_size, image_size]`, *optional*): the crop's foreground matte in [0, 1].
            When given, the expression fit also makes the head's outline follow the matte's edge (landmarks on the
            background are tucked behind the outline; see `fhavatar.tracking.silhouette`), and the face's hidden side
            is rebuilt from its seen side (`mirror_hidden_side`); both only when the matte is trusted
            (`matte_trusted`). The errors stay measured against `landmarks`.

    Returns:
        `OpenHeadFit`.
    """
    lm = _check_landmarks(landmarks)
    head = head if head is not None else OpenHead()
    arrays = _arrays(head)
    foreground = check_mask(mask, image_size) if mask is not None else None
    trusted = foreground is not None and matte_trusted(lm, foreground)
    # Landmarks on a trusted matte's background are guesses (Face Mesh's hidden side of a turned face): they pull
    # the pose toward a smaller rotation, so the rigid fit leaves them out.
    unobserved = on_background(lm, foreground) if trusted else None
    if pose is None:
        rot, trans = _rigid(lm, arrays, image_size, init, unobserved)
    else:
        rot, trans = np.asarray(pose[0], float), np.asarray(pose[1], float)
    if not trans[2] > 0:
        raise ValueError(f"The fitted head lies behind the camera (depth {trans[2]:.3g}); the landmarks are not a face.")
    rigid_error = _reprojection(lm, arrays.neutral, rot, trans, image_size)
    expression, own = _expression(lm, arrays, rot, trans, image_size), None
    if trusted:
        camera = _camera(rot, trans)
        targets = silhouette_targets(lm, foreground, head, camera, lambda t: _expression(t, arrays, rot, trans, image_size))
        expression, own = mirror_hidden_side(_expression(targets, arrays, rot, trans, image_size), head, camera,
                                             image_size, unobserved, foreground)
        expression = _clamp_expression(expression, arrays)  # tucking can lengthen a displacement
    rest = arrays.rest(expression)
    eyes = _eyes(lm, arrays, rot, trans, rest, image_size)
    if own is not None:
        # A hidden eye's iris landmark is a guess too: it looks where the seen eye looks (same gaze, not mirrored).
        seen_eye = [own[contour].mean() >= 0.5 for contour in arrays.eye_contours]
        for e in range(2):
            if not seen_eye[e] and seen_eye[1 - e]:
                eyes[e] = eyes[1 - e]
    error = _reprojection(lm, arrays.landmarks(rest, eyes), rot, trans, image_size)
    return OpenHeadFit(rot, trans, expression, eyes, error, rigid_error)


def _camera(rotation: np.ndarray, translation: np.ndarray) -> Camera:
    """The PanoHead camera (batch 1) whose world2cam is `[rotation | translation]`."""
    cam2world = np.eye(4)
    cam2world[:3, :3] = rotation.T
    cam2world[:3, 3] = -rotation.T @ translation
    return Camera(cam2world=torch.tensor(cam2world, dtype=torch.float32)[None], intrinsics=Camera.make_intrinsics())


def _params(fit: OpenHeadFit) -> OpenHeadParams:
    def z(*shape):
        return torch.zeros(1, *shape)

    eyes = torch.tensor(fit.eyes, dtype=torch.float32)[None]
    return OpenHeadParams(torch.tensor(fit.expression, dtype=torch.float32)[None], z(3), z(3), eyes, z(3), z(3))


def make_track(image, mask, crop, landmarks, fit: OpenHeadFit, has_face: bool = True) -> FaceTrack:
    """Assemble a `FaceTrack` from a crop and its `OpenHeadFit` (used by `track_image` and `track_video`)."""
    return FaceTrack(image, mask, crop, np.asarray(landmarks, np.float32), _camera(fit.rotation, fit.translation),
                     _params(fit), fit.rotation.copy(), fit.translation.copy(), fit.reprojection_error,
                     fit.rigid_error, has_face)


def track_image(image, landmarker: FaceLandmarker | None = None, head: OpenHead | None = None, mask: bool = True) -> FaceTrack:
    """Track one photo: detect -> PanoHead crop -> landmarks in crop pixels -> OpenHead fit (-> foreground mask).

    Args:
        image (path, PIL image, array or tensor): anything `fhavatar.io.load_image` reads.
        landmarker (`FaceLandmarker`, *optional*): reused if given (image mode recommended); else one is made.
        head (`OpenHead`, *optional*): the model (default: the packaged OpenHead).
        mask (`bool`, *optional*, defaults to True): also segment the crop's foreground, and fit the head's outline
            to it (`fit_open_head(..., mask=...)`).

    Returns:
        `FaceTrack`.

    Raises:
        NoFaceError / FaceTooSmallError: no usable face; ValueError / TypeError / FileNotFoundError: bad input.

    Example:
        ```py
        >>> from fhavatar.tracking import track_image
        >>> track = track_image("photo.jpg")  # doctest: +SKIP
        >>> track.image.shape, track.camera.to_label().shape  # doctest: +SKIP
        ((512, 512, 3), torch.Size([1, 25]))
        ```
    """
    image = remove_bars([load_image(image)])[0]  # a letterbox is not the person's body
    own = landmarker is None
    landmarker = FaceLandmarker() if own else landmarker
    try:
        result = landmarker.detect(image)
        crop = compute_crop(result.landmarks, result.image_size)
        crop_image = crop.warp(image)
        landmarks = crop.apply(result.landmarks.astype(np.float64))
        fg = landmarker.segment_foreground(crop_image) if mask else None
    finally:
        if own:
            landmarker.close()
    fit = fit_open_head(landmarks, head, crop.output_size, mask=fg)
    yaw, pitch, roll = head_angles(fit.rotation)
    logger.info("tracked a %dx%d photo: yaw %+.0f°, pitch %+.0f°, roll %+.0f°, reprojection %.2f%% of the face box",
                image.shape[1], image.shape[0], yaw, pitch, roll, 100 * fit.reprojection_error)
    return make_track(crop_image, fg, crop, landmarks, fit)
