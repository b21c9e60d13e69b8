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


def test_ghost_arm_freezes_the_scene_and_fades_what_moved():
    """A bright block slides over a still background: the ghost keeps the background and the block's
    starting pixels, and draws the motion fainter than it was."""
    frames = np.full((12, 64, 64, 3), 90, np.uint8)
    for t in range(12):
        frames[t, 20:30, 4 + 4 * t : 14 + 4 * t] = 230
    ghost, params = deg.ghost_arm(frames, np.random.default_rng(0))
    assert ghost.shape == frames.shape and ghost.dtype == np.uint8
    assert np.array_equal(ghost[0], frames[0])
    assert (ghost[:, 40:] == frames[:, 40:]).all()  # nothing moved there: untouched
    real_change = np.abs(frames[-1].astype(int) - frames[0]).sum()
    ghost_change = np.abs(ghost[-1].astype(int) - frames[0]).sum()
    assert 0 < ghost_change < 0.7 * real_change  # a faded, smeared trail, not the block itself
    assert 3 <= params["trail"] <= 6 and 0.35 <= params["alpha"] <= 0.6


def test_a_ghost_of_a_real_lift_is_labelled_a_failed_inconsistent_clip():
    from roboalign_env.sim.oracle import label_trace

    trace = lift_trace()
    real = label_trace(trace, trace["object_pos"][0, :, 2])
    shown, caps = deg.ghost_trace(trace)
    labels = label_trace(shown, trace["object_pos"][0, :, 2], temporally_consistent=False)
    assert real.manipulation_success == 2 and labels.manipulation_success == 0
    assert np.array_equal(shown["object_pos"][-1], trace["object_pos"][0])  # the cube never leaves its pixels
    assert np.array_equal(shown["eef_pos"], trace["eef_pos"])  # the arm's ghost still moves
    assert caps == {"temporal_consistency": 0, "physics_adherence": 1, "action_outcome_consistency": 0,
                    "contact_realism": 0}  # it grasped and touched the cube, which did not respond
    assert trace["grasp"].any() and not shown["grasp"].any()  # the input trace is not modified
