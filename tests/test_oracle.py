"""The oracle's labels on hand-built state traces, one case per degradation (no simulator needed)."""

import numpy as np
import pytest
from conftest import lift_trace

from roboalign_env.sim.oracle import actions_match, label_trace

REST = np.array([0.82])


def labels(trace, **kw):
    return tuple(label_trace(trace, REST, **kw).as_dict().values())


def resting_trace(n=20):
    """The robot hovers 15 cm away; the object rests untouched on the table."""
    t = lift_trace(n=n, grasp_at=n + 1)
    t["eef_pos"][:] = [0.15, 0.0, 0.95]
    return t


def test_clean_success_gets_full_marks(clean_lift):
    assert labels(clean_lift) == (3, 2, 1, 1, 1, 2)


def test_instruction_swaps(clean_lift):
    assert labels(clean_lift, instruction_kind="other_task")[:2] == (0, 0)
    assert labels(clean_lift, instruction_kind="near_miss")[:2] == (1, 0)
    with pytest.raises(ValueError, match="instruction_kind"):
        labels(clean_lift, instruction_kind="sideways")


def test_incomplete_execution_is_if2_ms0():
    prefix = {k: v[:8] for k, v in lift_trace().items()}
    assert labels(prefix)[:2] == (2, 0)


def test_partial_success_grasped_not_lifted():
    t = lift_trace(lift_per_frame=0.0)
    t["success"][:] = False
    t["progress"][:] = 0.0
    t["support_contact"][:] = True
    assert labels(t)[:2] == (2, 1)


def test_wrong_target_failure_is_if1():
    t = lift_trace()
    t["success"][:] = False
    t["grasp"][:] = False
    t["robot_contact"][:] = False
    t["object_pos"][:, 0, 2] = 0.82
    assert labels(t, failure="wrong_object")[0] == 1


def test_random_flailing_far_from_object_is_if0():
    t = resting_trace()
    t["eef_pos"][:] = [0.3, 0.3, 1.1]
    assert labels(t)[:2] == (0, 0)


def test_temporal_degradation_sets_tc0(clean_lift):
    assert labels(clean_lift, temporally_consistent=False)[3] == 0


def test_resting_object_is_physically_fine():
    assert labels(resting_trace())[2:] == (1, 1, 1, 2)


def test_teleport_is_pa0():
    t = resting_trace()
    t["object_pos"][10:, 0, 0] += 0.08
    assert labels(t)[4:] == (1, 0)


def test_vanish_is_pa0():
    t = resting_trace()
    t["visible"][10:] = False
    assert labels(t)[5] == 0


@pytest.mark.parametrize("dz,expected", [(0.02, 1), (0.07, 0)])
def test_float_severity(dz, expected):
    t = resting_trace()
    t["object_pos"][:, 0, 2] += dz
    t["support_contact"][:] = False
    assert labels(t)[5] == expected


@pytest.mark.parametrize("depth,expected", [(0.012, 1), (0.03, 0)])
def test_sink_severity(depth, expected):
    t = resting_trace()
    t["support_penetration"][:] = depth
    assert labels(t)[5] == expected


def test_slide_without_contact_is_cr0():
    t = resting_trace()
    t["object_pos"][6:, 0, 0] += 0.015 * np.arange(1, 15)
    assert labels(t)[4:] == (0, 2)


def test_gripper_passing_through_object_is_cr0(clean_lift):
    clean_lift["robot_penetration"][10:] = 0.02
    assert labels(clean_lift)[4] == 0


def test_object_following_open_gripper_is_aoc0(clean_lift):
    clean_lift["grasp"][:] = False
    clean_lift["robot_contact"][:] = False
    clean_lift["gripper_contact"][:] = False
    clean_lift["gripper_opening"][:] = 0.08
    assert labels(clean_lift)[2] == 0


def test_object_staying_behind_closed_grasp_is_aoc0(clean_lift):
    g = 8
    clean_lift["object_pos"][g:, 0, 2] = 0.82
    clean_lift["grasp"][g + 1 :] = False
    clean_lift["robot_contact"][g + 1 :] = False
    clean_lift["support_contact"][:] = True
    clean_lift["success"][:] = False
    assert labels(clean_lift)[2] == 0


def test_real_drop_after_release_is_consistent(clean_lift):
    """Early release: the object falls back under gravity with the gripper open; nothing is violated."""
    t = clean_lift
    t["grasp"][14:] = False
    t["robot_contact"][14:] = False
    t["gripper_opening"][14:] = 0.08
    z = t["object_pos"][:, 0, 2]
    fall = np.maximum(z[13] - 0.5 * 9.81 * (0.1 * np.arange(1, 11)) ** 2, 0.82)
    t["object_pos"][14:, 0, 2] = fall
    t["support_contact"][14:, 0] = fall <= 0.8201
    t["success"][:] = t["object_pos"][:, 0, 2] - 0.82 > 0.04
    assert labels(t)[2:] == (1, 1, 1, 2)


def test_object_moved_by_itself_is_not_success():
    t = resting_trace()
    t["object_pos"][:, 0, 2] += 0.07
    t["support_contact"][:] = False
    t["success"][:] = True
    assert labels(t)[:2] == (0, 0)


def test_actions_match_compares_commanded_paths_and_gripper():
    rng = np.random.default_rng(0)
    executed = np.zeros((16, 7))
    executed[:, 2] = -0.5  # down for 16 steps, gripper open
    executed[:, 6] = -1.0
    jitter = executed + rng.normal(0, 0.05, executed.shape) * [1, 1, 1, 0, 0, 0, 0]
    assert actions_match(executed, executed) and actions_match(executed, jitter)
    late = np.roll(executed, 1, axis=0)  # one step of lag is the same command
    assert actions_match(executed, late)
    assert not actions_match(executed, -executed)  # up instead of down, gripper closing
    sideways = executed.copy()
    sideways[:, :3] = [0.5, 0.0, 0.0]
    assert not actions_match(executed, sideways)
    gripper = executed.copy()
    gripper[:4, 6] = 1.0
    assert not actions_match(executed, gripper)
    with pytest.raises(ValueError, match="equal"):
        actions_match(executed, executed[:8])
