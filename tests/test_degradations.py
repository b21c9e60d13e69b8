"""Degradation planners: every re-ordering really re-orders, pixel artifacts are graded, and state
edits either apply or decline on clips of any length (no simulator needed)."""

import numpy as np
import pytest
from conftest import lift_trace

from roboalign_env.sim import degradations as deg


@pytest.mark.parametrize("kind", [k for k in deg.TEMPORAL if k != "flicker"])
def test_reorderings_change_the_order_and_keep_enough_frames(kind):
    rng = np.random.default_rng(0)
    for n in range(deg.TEMPORAL_MIN_FRAMES, 33):
        order, _ = deg.temporal_indices(kind, n, rng)
        assert len(order) >= deg.MIN_FRAMES
        assert not np.array_equal(order, np.arange(n))
        assert order.min() >= 0 and order.max() < n


def test_short_clips_are_refused_for_reordering():
    with pytest.raises(ValueError, match="frames"):
        deg.temporal_indices("frame_drop", 8, np.random.default_rng(0))


def test_flicker_changes_only_some_frames():
    frames = np.full((16, 8, 8, 3), 100, np.uint8)
    out, params = deg.flicker(frames, np.random.default_rng(0))
    changed = np.flatnonzero((out != frames).any(axis=(1, 2, 3)))
    assert changed.tolist() == params["frames"] and 0 < len(changed) < 16


@pytest.mark.parametrize("kind", deg.PIXEL)
def test_strong_artifacts_change_pixels_more_than_mild_ones(kind):
    rng = np.random.default_rng(0)
    frames = rng.integers(0, 256, size=(8, 64, 64, 3), dtype=np.uint8)
    mild, _ = deg.pixel_artifact(frames, kind, "mild", np.random.default_rng(1))
    strong, _ = deg.pixel_artifact(frames, kind, "strong", np.random.default_rng(1))
    err = lambda x: np.abs(x.astype(float) - frames).mean()  # noqa: E731
    assert 0 < err(mild) < err(strong)
    with pytest.raises(ValueError, match="strength"):
        deg.pixel_artifact(frames, kind, "medium", rng)


def test_state_edit_planners_apply_or_decline_on_any_clip():
    rng = np.random.default_rng(0)
    applied = set()
    for _ in range(200):
        n = int(rng.integers(deg.MIN_FRAMES, 33))
        trace = lift_trace(n=n, grasp_at=int(rng.integers(1, n + 3)))
        for kind in deg.STATE_EDITS:
            edit = deg.plan_state_edit(kind, trace, rng)
            if edit is not None:
                applied.add(kind)
                assert edit.object_pos.shape == (n, 3) and edit.hidden.shape == (n,)
        for kind in deg.HINGE_EDITS:
            if deg.plan_hinge_edit(kind, trace, np.linspace(0.0, 0.3, n), rng) is not None:
                applied.add("hinge_" + kind)
    # Every edit applied somewhere (grasp edits need a grasp, untouched edits a clean clip).
    assert {"vanish", "pass_through", "follow_open", "stays_behind", "hinge_stays_behind"} <= applied


def test_untouched_edits_decline_when_the_robot_touches_the_object(clean_lift):
    rng = np.random.default_rng(0)
    for kind in ("teleport", "float", "sink", "slide"):
        assert deg.plan_state_edit(kind, clean_lift, rng) is None
    with pytest.raises(ValueError, match="unknown state edit"):
        deg.plan_state_edit("explode", clean_lift, rng)
