"""`LiveTracker`: `track_video`'s steps frame by frame with causal smoothing (a webcam's later frames are unknown)."""

import numpy as np
import pytest

pytest.importorskip("mediapipe")

from fhavatar.head.open_head import OpenHead  # noqa: E402
from fhavatar.tracking import LiveTracker, head_angles, track_video  # noqa: E402
from tests.live_clips import REALFACES, driving_clip  # noqa: E402


@pytest.fixture(scope="module")
def head():
    return OpenHead()


@pytest.mark.skipif(not REALFACES.is_dir(), reason=f"real test videos not found at {REALFACES}")
def test_live_tracks_agree_with_the_offline_tracks(head):
    frames, _ = driving_clip(40, 320)
    offline = track_video(frames, head=head)
    with LiveTracker(head) as tracker:
        live = [tracker(frame) for frame in frames]
    assert all(t is not None and t.has_face and t.image.shape == (512, 512, 3) for t in live)
    angles = np.array([[head_angles(t.head_rotation) for t in ts] for ts in (offline, live)])  # degrees
    expression = np.array([[t.params.expression[0].numpy() for t in ts] for ts in (offline, live)])
    motion = np.sqrt(((expression[0] - expression[0, :1]) ** 2).mean())
    gap = np.sqrt(((expression[0] - expression[1]) ** 2).mean())
    print(f"\nlive vs offline tracking: head angles within {np.abs(angles[0] - angles[1]).max():.2f} deg, expression "
          f"gap {gap / motion:.1%} of its motion")
    assert np.abs(angles[0] - angles[1]).max() < 1.0 and gap < 0.15 * motion


def test_no_face_gives_none_and_a_new_track(head):
    frames, _ = driving_clip(6, 256, prefer_real=False)
    with LiveTracker(head) as tracker:
        first = tracker(frames[0])
        assert first is not None and tracker._rigid is not None
        assert tracker(np.zeros_like(frames[0])) is None and tracker._rigid is None  # smoothing and warm start forgotten
        again = tracker(frames[0])
    np.testing.assert_allclose(again.landmarks, first.landmarks, atol=2.0)  # tracked afresh, not blended
    with pytest.raises(ValueError, match="smoothing"):
        LiveTracker(head, smoothing=-1)
