"""Built-in motions: head-model parameter sequences the project makes itself, so an avatar moves without a driving
video (`pipe.animate(avatar, motion="talk")`, `python -m fhavatar photo.jpg --motion talk`, the app's Animate tab).

Each preset (`MOTIONS`) is a set of time curves at `FPS` (25 fps) built from human timing, then turned into the
OpenHead parameters (ARCHITECTURE.md, "Motion"): `expression` (face-vertex displacements), `jaw`, `neck`, `eyes`.
They are applied relative to the avatar's source, as a driving video's motion is (`fhavatar.animation`, relative
mode): `params_t = source + delta_t`, `delta_0 = 0`, seen from the source camera; every preset starts and ends at
rest, so it loops.

- Curves move between keyframes along minimum-jerk profiles (`10u^3 - 15u^4 + 6u^5`: zero velocity and zero
  acceleration at each keyframe, the profile of human reaching and head movements), so no frame jumps or jerks.
- `nod` / `shake`: damped oscillations of the head about the neck joint (pitch 11° down first / yaw ±12°, halving
  about every cycle, ~1.7 Hz / ~1.8 Hz); the eyes counter-rotate (vestibulo-ocular reflex), so the gaze stays on the
  viewer.
- `talk`: phrases of 1.2-2.6 s with 0.3-0.6 s pauses; syllables of 160-280 ms (about 4.5 per second) open the jaw
  by up to 3-8° (less for short ones) and round or spread the lips; brows lift on some stressed syllables; small,
  slow head movements (filtered noise, 1-2°) and blinks every 2.5-4.5 s.
- `smile`: mouth corners up, out and back, cheeks raised and lower lids pushed up (a Duchenne smile), lips
  parted; 0.6 s onset, 1.4 s hold, 0.8 s release, a slight head tilt, a blink.
- `look_around`: gaze shifts to the left, right, up and down: the eyes lead with a 70 ms saccade, the head
  follows over 0.6 s and ends with ~70 % of the shift, the eyes (at most 18° off centre) holding the target
  meanwhile; blinks at some large shifts.
- `blink`: single and double blinks, 100 ms to close and 150 ms to reopen. In every blink the upper lid's margin
  slides down whole (the skin below the brow stretches), bulges forward over the eye, and the eyes roll up (Bell's
  phenomenon), so the eye covers stay hidden behind the closed lids.

Expression shapes are built on the source's own face (the OpenHead template plus the source expression), so a
blink closes the lids the photo shows, whatever their gap. Random parts (syllables, blink times) come from
`generator=` only; without one a preset is the same every time.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import torch

from .rendering.cameras import Camera
from .rotations import matrix_to_axis_angle

if TYPE_CHECKING:
    from .head.open_head import OpenHeadParams
    from .tracking.face_track import FaceTrack

__all__ = ["FPS", "MAX_MOTION_FRAMES", "MOTIONS", "MotionCurves", "check_motion", "motion_curves", "motion_length",
           "motion_params"]

#: Frame rate of the built-in motions.
FPS = 25.0
#: Most frames of one built-in motion (2 minutes at 25 fps, the driving-video limit).
MAX_MOTION_FRAMES = 3000
#: Preset name -> what it shows (the CLI's and the app's choices, in this order).
MOTIONS = {
    "talk": "talking: jaw and lips in syllables, brows, small head movements, blinks",
    "smile": "a smile that comes and goes (mouth corners, cheeks, lower lids)",
    "nod": "a 'yes' nod: damped up-and-down of the head",
    "shake": "a 'no' shake: damped left-and-right of the head",
    "look_around": "looks left, right, up and down: the eyes lead, the head follows",
    "blink": "single and double blinks",
}

# MediaPipe Face Mesh landmarks (= OpenHead face vertices). Eyelid contours, outer to inner corner, each upper point
# above its lower partner; "right"/"left" are the subject's (right: x < 0).
_UPPER_LIDS = ((246, 161, 160, 159, 158, 157, 173), (466, 388, 387, 386, 385, 384, 398))
_LOWER_LIDS = ((7, 163, 144, 145, 153, 154, 155), (249, 390, 373, 374, 380, 381, 382))
_EYE_CORNERS = (33, 133, 263, 362)
_BROWS = (70, 63, 105, 66, 107, 46, 53, 52, 65, 55, 300, 293, 334, 296, 336, 276, 283, 282, 295, 285)
_MOUTH_CORNERS = (61, 291)
_UPPER_LIP_MID, _LOWER_LIP_MID = 0, 17
_CHEEKS = (50, 280, 205, 425, 101, 330, 117, 346)

# Amplitudes (head units: 1.8 per metre; angles in degrees unless named _RAD).
_LID_CLOSE = 0.92  # the upper lid covers this share of the gap, the lower lid rises by the rest less 2 %
_LID_FORWARD = 0.004  # the closing upper lid bulges forward over the eye (2.2 mm)
_BELL_PITCH = -30.0  # Bell's phenomenon: the eyes roll up under the closed lids (the eye covers stay hidden)
_SMILE_CORNER = (0.008, 0.011, -0.006)  # outward, up, back (4.4, 6.1, 3.3 mm)
_SMILE_CHEEK_UP = 0.004
_SMILE_LOWER_LID_UP = 0.0015
_ROUND_INWARD = 0.22  # lip rounding pulls the corners this share of their distance to the middle
_ROUND_FORWARD = 0.006
_BROW_UP = 0.006
_VOR_GAIN = 0.8  # share of a head rotation the eyes undo (the gaze stays on the viewer)


def _min_jerk(u: np.ndarray) -> np.ndarray:
    """The minimum-jerk step 0 -> 1 over u in [0, 1] (clipped outside)."""
    u = np.clip(u, 0.0, 1.0)
    return u**3 * (10.0 - 15.0 * u + 6.0 * u * u)


def _keys(t: np.ndarray, keys: list[tuple[float, float]]) -> np.ndarray:
    """The curve through `keys` ((time, value) pairs, times increasing), minimum-jerk between successive keys and
    held before the first and after the last."""
    if not keys:
        return np.zeros_like(t)
    times = np.array([k[0] for k in keys])
    values = np.array([k[1] for k in keys])
    i = np.clip(np.searchsorted(times, t, side="right") - 1, 0, len(keys) - 1)
    j = np.minimum(i + 1, len(keys) - 1)
    span = np.maximum(times[j] - times[i], 1e-9)
    return values[i] + (values[j] - values[i]) * _min_jerk((t - times[i]) / span)


def _blink_keys(start: float, close: float = 0.10, hold: float = 0.02, reopen: float = 0.15) -> list:
    """Keyframes of one blink (closure 0 -> 1 -> 0) starting at `start` seconds."""
    return [(start, 0.0), (start + close, 1.0), (start + close + hold, 1.0), (start + close + hold + reopen, 0.0)]


def _merge_keys(*blinks: list) -> list:
    return [key for blink in blinks for key in blink]


def _envelope(t: np.ndarray, duration: float, ramp: float = 0.4) -> np.ndarray:
    """1 inside, 0 at both ends, minimum-jerk ramps of `ramp` seconds."""
    return _min_jerk(t / ramp) * _min_jerk((duration - t) / ramp)


def _smooth_noise(t: np.ndarray, rng: np.random.Generator, amplitude: float, low: float = 0.15,
                  high: float = 0.7, waves: int = 4) -> np.ndarray:
    """Band-limited noise: a sum of `waves` sinusoids of random frequencies in [low, high] Hz and phases, scaled so
    that its largest value over `t` is `amplitude`."""
    freqs, phases = rng.uniform(low, high, waves), rng.uniform(0, 2 * np.pi, waves)
    weights = rng.uniform(0.5, 1.0, waves)
    curve = (weights[:, None] * np.sin(2 * np.pi * freqs[:, None] * t[None] + phases[:, None])).sum(0)
    return amplitude * curve / max(np.abs(curve).max(), 1e-9)


@dataclass
class MotionCurves:
    """A preset's time curves, one value per frame (T frames at `fps`). Angles in degrees: head `yaw` (> 0 turns the
    face toward the subject's left, +x), `pitch` (> 0 tips it down), `roll`; the same for the gaze of both eyes
    (`eye_yaw`, `eye_pitch`, relative to the head). `jaw` opening in radians. Weights of the face shapes: `blink`
    (0 open, 1 closed), `smile` (0-1), `lip_round` (> 0 rounds the lips, < 0 spreads them), `brows` (0-1 raise)."""

    fps: float
    yaw: np.ndarray
    pitch: np.ndarray
    roll: np.ndarray
    eye_yaw: np.ndarray
    eye_pitch: np.ndarray
    jaw: np.ndarray
    blink: np.ndarray
    smile: np.ndarray
    lip_round: np.ndarray
    brows: np.ndarray

    def __len__(self) -> int:
        return len(self.yaw)


_CURVE_NAMES = ("yaw", "pitch", "roll", "eye_yaw", "eye_pitch", "jaw", "blink", "smile", "lip_round", "brows")


def _curves(t: np.ndarray, fps: float, **given: np.ndarray) -> MotionCurves:
    zero = np.zeros_like(t)
    values = {name: np.asarray(given.pop(name, zero), dtype=np.float64) for name in _CURVE_NAMES}
    assert not given, f"unknown curves {sorted(given)}"
    return MotionCurves(fps=fps, **values)


# ---------------------------------------------------------------------------------------------- presets
def _starts(duration: float, length: float, lead: float, rest: float) -> tuple[list[float], float]:
    """Start times of a gesture `length` seconds long repeated after `rest` seconds, the first at `lead`, while a whole
    one fits in `duration` (0.1 s kept at the end), and the factor (<= 1) it is sped up by when not even one fits."""
    room = duration - lead - 0.1
    if room < length:
        return [lead if room > 0 else 0.0], max(room, 0.5 * duration, 1e-3) / length
    return [lead + k * (length + rest) for k in range(int((room + rest) // (length + rest)))], 1.0


def _gesture(t: np.ndarray, duration: float, amplitudes: list[float], half_periods: list[float], lead: float = 0.2,
             rest: float = 0.5) -> tuple[np.ndarray, np.ndarray]:
    """A damped oscillation through `amplitudes` (turning points, from and back to 0), each reached in its half period
    along a minimum-jerk path; repeated after `rest` seconds while a whole one fits in `duration` (one shorter and
    smaller when none fits: the same speed). Returns the curve and its envelope (0 at rest, 1 while a gesture runs,
    minimum-jerk ramps of the first and last half period)."""
    starts, speed = _starts(duration, sum(half_periods), lead, rest)
    halves, amplitudes = [h * speed for h in half_periods], [a * speed for a in amplitudes]
    keys, envelope = [], []
    for start in starts:
        time = start
        keys.append((time, 0.0))
        for value, half in zip([*amplitudes, 0.0], halves):
            time += half
            keys.append((time, value))
        envelope += [(start, 0.0), (start + halves[0], 1.0), (time - halves[-1], 1.0), (time, 0.0)]
    return _keys(t, keys), _keys(t, envelope)


def _nod(t, duration, rng):
    pitch, _ = _gesture(t, duration, [11.0, -4.0, 7.5, -2.5, 4.0], [0.30, 0.28, 0.27, 0.27, 0.28, 0.32])
    return {"pitch": pitch, "eye_pitch": -_VOR_GAIN * pitch}


def _shake(t, duration, rng):
    yaw, envelope = _gesture(t, duration, [12.0, -11.0, 8.0, -5.5, 2.5], [0.28, 0.27, 0.26, 0.26, 0.27, 0.32])
    pitch = 2.0 * envelope  # the head lowers a little while it shakes
    return {"yaw": yaw, "pitch": pitch, "eye_yaw": -_VOR_GAIN * yaw, "eye_pitch": -_VOR_GAIN * pitch}


def _blinks_every(duration: float, rng: np.random.Generator, first: tuple[float, float] = (0.8, 2.0),
                  gap: tuple[float, float] = (2.5, 4.5)) -> list:
    keys, start = [], rng.uniform(*first)
    while start + 0.3 <= duration - 0.1:
        keys += _blink_keys(start)
        start += rng.uniform(*gap)
    return keys


def _blink(t, duration, rng):
    keys, start, pattern = [], 0.5, [1.2, 1.25, 0.35, 1.3]  # single, single, double, ...
    i = 0
    while start + 0.3 <= duration - 0.2:
        keys += _blink_keys(start)
        start += pattern[i % len(pattern)]
        i += 1
    return {"blink": _keys(t, keys)}


def _smile(t, duration, rng):
    starts, speed = _starts(duration, 2.8, 0.3, 0.8)  # 0.6 s onset, 1.4 s hold, 0.8 s release
    keys = [(start + k * speed, v) for start in starts for k, v in ((0.0, 0.0), (0.6, 1.0), (2.0, 1.0), (2.8, 0.0))]
    smile = _keys(t, keys)
    blinks = _keys(t, _merge_keys(*(_blink_keys(start + 1.1 * speed) for start in starts if speed == 1.0)))
    return {"smile": smile, "jaw": 0.035 * smile, "pitch": -3.0 * smile, "roll": 3.0 * smile, "blink": blinks}


def _talk(t, duration, rng):
    jaw_keys, round_keys, brow_keys, beat_keys = [(0.0, 0.0)], [(0.0, 0.0)], [], []
    time = 0.25
    while time + 1.0 <= duration - 0.35:
        phrase_end = min(time + rng.uniform(1.2, 2.6), duration - 0.35)
        stressed = rng.random() < 0.6
        first = True
        while time + 0.16 <= phrase_end:
            syllable = rng.uniform(0.16, 0.28)
            peak = time + syllable * rng.uniform(0.4, 0.6)
            jaw_keys += [(peak, math.radians(rng.uniform(3.0, 8.0) * min(1.0, syllable / 0.24)))]  # short: less open
            round_keys += [(peak, float(rng.uniform(-0.8, 0.8)))]
            time += syllable
            jaw_keys += [(time, math.radians(rng.uniform(0.0, 1.5)))]  # consonants close the mouth (nearly)
            if first and stressed:
                brow_keys += [(peak - 0.25, 0.0), (peak, float(rng.uniform(0.5, 1.0))), (peak + 0.5, 0.0)]
                beat_keys += [(peak - 0.2, 0.0), (peak, 1.5), (peak + 0.35, 0.0)]
            first = False
        jaw_keys += [(time + 0.12, 0.0)]
        round_keys += [(time + 0.12, 0.0)]
        time += 0.12 + rng.uniform(0.3, 0.6)
    envelope = _envelope(t, duration, 0.5)
    yaw = _smooth_noise(t, rng, 2.0) * envelope
    pitch = (_smooth_noise(t, rng, 1.2) + _keys(t, beat_keys)) * envelope
    return {"jaw": _keys(t, jaw_keys), "lip_round": _keys(t, round_keys), "brows": _keys(t, brow_keys), "yaw": yaw,
            "pitch": pitch, "roll": _smooth_noise(t, rng, 1.0) * envelope, "eye_yaw": -_VOR_GAIN * yaw,
            "eye_pitch": -_VOR_GAIN * pitch, "blink": _keys(t, _blinks_every(duration, rng, (1.0, 2.0)))}


_TARGETS = ((25.0, -2.0), (-25.0, -2.0), (10.0, -12.0), (-6.0, 10.0), (0.0, 0.0))  # gaze (yaw, pitch), degrees;
# a run cycles through all but the last, then ends with it (back to the viewer)
_HEAD_SHARE = 0.7  # of a gaze shift, the head's part once it has followed
_EYE_LEAD = 18.0  # largest eye-in-head angle of the leading saccade, degrees


def _look_around(t, duration, rng):
    head_keys = ([], [])
    eye_keys = ([(0.0, 0.0)], [(0.0, 0.0)])
    blinks, head, time = [], (0.0, 0.0), 0.3
    saccade, follow, hold = 0.07, 0.6, 0.9
    shifts = max(1, int((duration - 0.6) // (follow + hold)))  # the last one looks back at the viewer
    targets = [_TARGETS[i % (len(_TARGETS) - 1)] for i in range(shifts - 1)] + [(0.0, 0.0)]
    for target in targets:
        for axis in (0, 1):
            head_to = _HEAD_SHARE * target[axis]
            head_keys[axis].extend([(time, head[axis]), (time + follow, head_to)])
            # the eyes jump toward the target first (as far as they turn), then hold it while the head comes round
            lead = float(np.clip(target[axis] - head[axis], -_EYE_LEAD, _EYE_LEAD))
            eye_keys[axis].extend([(time, eye_keys[axis][-1][1]), (time + saccade, lead),
                                   (time + follow, target[axis] - head_to)])
        if abs(target[0] - head[0] / _HEAD_SHARE) > 20 and rng.random() < 0.6:
            blinks += _blink_keys(time)  # large gaze shifts often come with a blink
        head = (_HEAD_SHARE * target[0], _HEAD_SHARE * target[1])
        time += follow + hold
    return {"yaw": _keys(t, head_keys[0]), "pitch": _keys(t, head_keys[1]), "eye_yaw": _keys(t, eye_keys[0]),
            "eye_pitch": _keys(t, eye_keys[1]), "blink": _keys(t, blinks)}


#: Preset name -> (curves maker, its default duration in seconds).
_PRESETS: dict[str, tuple[Callable, float]] = {
    "talk": (_talk, 6.0),
    "smile": (_smile, 3.2),
    "nod": (_nod, 2.4),
    "shake": (_shake, 2.4),
    "look_around": (_look_around, 8.2),
    "blink": (_blink, 3.6),
}


# ---------------------------------------------------------------------------------------------- checks
def check_motion(motion, num_frames=None, driving=None) -> str:
    """The preset name of `motion` (spaces and hyphens read as underscores, any case); `ValueError` naming `motion`
    and the choices otherwise, or when a `driving` video is given too. `num_frames`, when given, must be in
    [1, `MAX_MOTION_FRAMES`]."""
    if driving is not None:
        raise ValueError("Give `driving` (a video) or `motion` (a built-in motion), not both.")
    if motion is None:
        raise ValueError(f"`driving` or `motion` is needed: a driving video, or one of the built-in motions "
                         f"{', '.join(MOTIONS)}.")
    name = motion.strip().lower().replace(" ", "_").replace("-", "_") if isinstance(motion, str) else None
    if name not in MOTIONS:
        raise ValueError(f"`motion` must be one of {', '.join(MOTIONS)}; got {motion!r}.")
    if num_frames is not None and (isinstance(num_frames, bool) or not isinstance(num_frames, (int, np.integer))
                                   or not 1 <= num_frames <= MAX_MOTION_FRAMES):
        raise ValueError(f"`num_frames` must be an int in [1, {MAX_MOTION_FRAMES}], got {num_frames!r}.")
    return name


def motion_length(motion, num_frames: int | None = None, fps: float = FPS, driving=None) -> int:
    """Frames of `motion` (its default duration at `fps`, or `num_frames`); checked as `check_motion` checks."""
    name = check_motion(motion, num_frames, driving)
    return int(num_frames) if num_frames is not None else int(round(_PRESETS[name][1] * fps))


def motion_curves(motion: str, num_frames: int | None = None, fps: float = FPS,
                  generator: torch.Generator | None = None) -> MotionCurves:
    """The time curves of the preset `motion` (`MOTIONS`) over `num_frames` frames (default: its own duration) at
    `fps`. A longer run repeats a gesture (nod, shake, smile) or goes on (talk, blink, look_around), a run too short for
    one gesture gets a shorter, smaller one at the same speed; every run starts and ends at rest. `generator` seeds
    the random parts (none: the same curves every time)."""
    name = check_motion(motion, num_frames)
    if not (isinstance(fps, (int, float)) and math.isfinite(fps) and 1 <= fps <= 240):
        raise ValueError(f"`fps` must be a number in [1, 240], got {fps!r}.")
    count = motion_length(name, num_frames, fps)
    seed = 0 if generator is None else int(torch.randint(0, 2**31 - 1, (1,), generator=generator))
    t = np.arange(count) / fps
    duration = max(count - 1, 1) / fps
    maker = _PRESETS[name][0]
    return _curves(t, fps, **maker(t, duration, np.random.default_rng(seed)))


# ---------------------------------------------------------------------------------------------- face shapes
def _field(rest: np.ndarray, anchors: np.ndarray, moves: np.ndarray, reach: float, blend: float = 0.003) -> np.ndarray:
    """Displacements `[V, 3]` of the face vertices `rest` `[V, 3]` that move the `anchors` (indices) by `moves`
    `[A, 3]` and fade with the distance to the nearest anchor (to zero at `reach`): each vertex takes the
    Gaussian-weighted (`blend`) mean of the anchors' moves, so the lower lid keeps its own move beside the upper."""
    points = rest[anchors]  # [A, 3]
    dist = np.linalg.norm(rest[:, None] - points[None], axis=-1)  # [V, A]
    nearest = dist.min(1, keepdims=True)
    weights = np.exp(-0.5 * ((dist - nearest) / blend) ** 2)
    mean = weights @ moves / weights.sum(1, keepdims=True)
    return mean * (1.0 - _min_jerk(nearest / reach))


def _face_shapes(rest: np.ndarray) -> dict[str, np.ndarray]:
    """The face shapes `[468, 3]` of a face whose rest vertices are `rest`: `blink` (the lids meet), `lid_forward` (the
    closing upper lid bulges forward over the eye), `smile`, `lip_round`, `brows`."""
    upper = np.array(_UPPER_LIDS).ravel()
    lower = np.array(_LOWER_LIDS).ravel()
    gap = rest[lower] - rest[upper]  # points down
    lids = np.concatenate([upper, lower, _EYE_CORNERS])
    moves = np.concatenate([_LID_CLOSE * gap, -(1.0 - _LID_CLOSE - 0.02) * gap, np.zeros((4, 3))])
    blink = _field(rest, lids, moves, reach=0.025)  # the lid margin slides down whole; the skin above stretches
    forward = np.zeros((len(lids), 3))
    forward[: len(upper), 2] = _LID_FORWARD
    lid_forward = _field(rest, lids, forward, reach=0.015)

    # The lips: every face vertex inside the mouth's ellipse moves with the corners, by (x / half width)^2.
    corners = rest[list(_MOUTH_CORNERS)]
    half_width = 0.5 * abs(corners[1, 0] - corners[0, 0])
    centre_y = 0.5 * (rest[_UPPER_LIP_MID, 1] + rest[_LOWER_LIP_MID, 1])
    half_height = 1.3 * abs(rest[_UPPER_LIP_MID, 1] - rest[_LOWER_LIP_MID, 1])
    x, y = rest[:, 0], rest[:, 1]
    in_mouth = (x / (1.15 * half_width)) ** 2 + ((y - centre_y) / half_height) ** 2 <= 1.0
    lips = np.flatnonzero(in_mouth & (rest[:, 2] > corners[:, 2].min() - 0.02))
    share = np.clip(rest[lips, 0] / half_width, -1.0, 1.0)
    out, up, back = _SMILE_CORNER
    smile_moves = np.stack([out * np.sign(share) * share**2, up * share**2, back * share**2], 1)
    cheeks = np.array(_CHEEKS)
    lids_low = np.array(_LOWER_LIDS).ravel()
    smile = _field(rest, np.concatenate([lips, cheeks, lids_low]), np.concatenate(
        [smile_moves, np.tile([0.0, _SMILE_CHEEK_UP, 0.0], (len(cheeks), 1)),
         np.tile([0.0, _SMILE_LOWER_LID_UP, 0.0], (len(lids_low), 1))]), reach=0.03, blend=0.006)
    round_moves = np.stack([-_ROUND_INWARD * rest[lips, 0], np.zeros(len(lips)), _ROUND_FORWARD * (1 - share**2)], 1)
    lip_round = _field(rest, lips, round_moves, reach=0.02, blend=0.006)
    brows_idx = np.array(_BROWS)
    brows = _field(rest, brows_idx, np.tile([0.0, _BROW_UP, 0.0], (len(brows_idx), 1)), reach=0.035, blend=0.01)
    return {"blink": blink, "lid_forward": lid_forward, "smile": smile, "lip_round": lip_round, "brows": brows}


def _rotations(yaw: np.ndarray, pitch: np.ndarray, roll: np.ndarray | None = None) -> torch.Tensor:  # -> [T, 3]
    """Axis-angles of `Ry(yaw) @ Rx(pitch) @ Rz(roll)` (degrees; `fhavatar.rotations.rotation_from_angles`)."""
    a, b = np.radians(yaw), np.radians(pitch)
    c = np.zeros_like(a) if roll is None else np.radians(roll)

    def axis(i, angle):
        m = np.tile(np.eye(3), (len(angle), 1, 1))
        j, k = [(1, 2), (2, 0), (0, 1)][i]
        m[:, j, j], m[:, j, k], m[:, k, j], m[:, k, k] = np.cos(angle), -np.sin(angle), np.sin(angle), np.cos(angle)
        return m

    return matrix_to_axis_angle(torch.from_numpy(axis(1, a) @ axis(0, b) @ axis(2, c)))


# ---------------------------------------------------------------------------------------------- parameters
def motion_params(motion: str, source: FaceTrack, head_model, num_frames: int | None = None,
                  generator: torch.Generator | None = None, driving=None) -> tuple[OpenHeadParams, Camera]:
    """Per-frame avatar parameters and cameras of the preset `motion` for the avatar of `source`, as
    `fhavatar.animation.transfer_motion` returns them for a driving video (relative mode, the source camera).

    Args:
        motion (`str`): a `MOTIONS` name.
        source (`FaceTrack`): the photo the avatar was built from (`avatar.source_track`).
        head_model (`OpenHead`): the avatar's head model (its template is the rest face the shapes are built on).
        num_frames (`int`, *optional*): frames at `FPS` (default: the preset's own duration).
        generator (`torch.Generator`, *optional*): seeds the random parts.
        driving (*optional*): must be None (a caller's driving video, refused beside a motion).

    Returns:
        `(params, cameras)`: `OpenHeadParams` with batch T (frame 0 = the source's) and the source `Camera` T times.

    Example:
        ```py
        >>> from fhavatar.motions import motion_params
        >>> params, cameras = motion_params("nod", avatar.source_track, pipe.head_model)  # doctest: +SKIP
        >>> params.batch_size, len(cameras)  # doctest: +SKIP
        (60, 60)
        ```
    """
    # Imported here: the names and curves above stay cheap to import (the CLI lists the presets in its --help).
    from .head.open_head import NUM_FACE_VERTICES, OpenHeadParams
    from .tracking.face_track import FaceTrack

    check_motion(motion, num_frames, driving)
    if not isinstance(source, FaceTrack):
        raise TypeError(f"`source` must be a FaceTrack (the avatar's source_track), got {type(source).__name__}.")
    curves = motion_curves(motion, num_frames, generator=generator)
    count = len(curves)
    like = source.params.expression
    rest = (head_model.template_vertices[:NUM_FACE_VERTICES].to(like) + like[0]).detach().cpu().double().numpy()
    shapes = _face_shapes(rest)
    weights = {name: getattr(curves, name) for name in ("blink", "smile", "lip_round", "brows")}
    weights["lid_forward"] = _min_jerk(2.0 * curves.blink)  # forward first, then down in front of the eye
    expression = sum(weights[name][:, None, None] * shape[None] for name, shape in shapes.items())
    jaw = np.zeros((count, 3))
    jaw[:, 0] = curves.jaw
    eyes = _rotations(curves.eye_yaw, curves.eye_pitch + _BELL_PITCH * curves.blink)[:, None].expand(count, 2, 3)
    src = source.params
    params = OpenHeadParams(
        expression=src.expression.to(like) + torch.from_numpy(expression).to(like),
        jaw=src.jaw.to(like) + torch.from_numpy(jaw).to(like),
        neck=src.neck.to(like) + _rotations(curves.yaw, curves.pitch, curves.roll).to(like),
        eyes=src.eyes.to(like) + eyes.to(like),
        global_rotation=torch.zeros(count, 3).to(like),
        translation=torch.zeros(count, 3).to(like),
    )
    cameras = Camera(cam2world=source.camera.cam2world.expand(count, 4, 4).clone(),
                     intrinsics=source.camera.intrinsics.expand(count, 3, 3).clone())
    return params, cameras
