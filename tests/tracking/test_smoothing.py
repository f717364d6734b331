"""The temporal filters of tracked signals: Gaussian / edge-preserving smoothing and gap filling."""

import numpy as np
import pytest

from fhavatar.tracking.smoothing import interpolate_missing, smooth_sequence


def test_smoothing_keeps_constants_and_ramps_and_removes_jitter():
    t = np.arange(40, dtype=float)
    ramp = np.stack([3.0 * t + 1, np.full_like(t, 5.0)], 1)
    np.testing.assert_allclose(smooth_sequence(ramp, 1.5)[4:-4], ramp[4:-4], atol=1e-9)  # radius 4
    np.testing.assert_allclose(smooth_sequence(np.ones((5, 2)), 2.0), np.ones((5, 2)))
    noisy = np.random.default_rng(0).normal(0, 1, (400, 2))
    assert smooth_sequence(noisy, 1.0).std() < 0.6 * noisy.std()
    np.testing.assert_array_equal(smooth_sequence(noisy, 0.0), noisy)


def test_edge_preserving_smoothing_keeps_a_jump():
    step = np.zeros((20, 478, 2))
    step[10:, 13, 1] = 20.0  # the lip opens by 20 px at frame 10
    step += np.random.default_rng(1).normal(0, 0.2, step.shape)
    out = smooth_sequence(step, 1.0, range_scale=np.full((20, 1), 2.5))
    assert out[9, 13, 1] < 1.0 and out[10, 13, 1] > 19.0  # the jump survives ...
    assert np.sqrt((out[:, 100] ** 2).mean()) < 0.6 * np.sqrt((step[:, 100] ** 2).mean())  # ... jitter shrinks


def test_interpolate_missing():
    values = np.array([[0.0], [9.0], [2.0], [9.0], [9.0], [8.0], [9.0]])
    present = np.array([False, True, True, False, False, True, False])
    values[1] = 1.0
    out = interpolate_missing(values, present)
    np.testing.assert_allclose(out[:, 0], [1.0, 1.0, 2.0, 4.0, 6.0, 8.0, 8.0])
    with pytest.raises(ValueError, match="present"):
        interpolate_missing(values, np.zeros(7, bool))


def test_online_smoother_is_causal_and_as_strong_as_the_gaussian():
    from fhavatar.tracking.smoothing import OnlineSmoother

    noisy = np.random.default_rng(2).normal(0, 1, (400, 2))
    smoother = OnlineSmoother(1.0)
    out = np.stack([smoother(x) for x in noisy])
    assert out.std() < 0.75 * noisy.std()  # jitter shrinks (variance-matched to sigma 1: ~0.62 of it)
    np.testing.assert_array_equal(out[0], noisy[0])  # the first value passes through
    changed = noisy.copy()
    changed[200:] += 5
    other = OnlineSmoother(1.0)
    np.testing.assert_array_equal(np.stack([other(x) for x in changed])[:200], out[:200])  # only the past counts
    ramp_smoother, ramp = OnlineSmoother(0.0), np.arange(6.0)[:, None]
    np.testing.assert_array_equal(np.stack([ramp_smoother(x) for x in ramp]), ramp)  # sigma 0: no smoothing
    with pytest.raises(ValueError, match="sigma"):
        OnlineSmoother(float("nan"))


def test_online_smoother_edge_preserving_keeps_a_jump_and_resets():
    from fhavatar.tracking.smoothing import OnlineSmoother

    smoother = OnlineSmoother(1.0)
    step = np.zeros((20, 478, 2))
    step[10:, 13, 1] = 20.0  # the lip opens by 20 px at frame 10
    out = np.stack([smoother(x, 2.5) for x in step])
    assert out[10, 13, 1] > 19.0 and out[9, 13, 1] == 0.0  # the jump goes through at once
    smoother.reset()
    np.testing.assert_array_equal(smoother(np.ones((3, 2))), np.ones((3, 2)))
