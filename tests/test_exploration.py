"""Exploration modes in real robosuite: action range and diversity, holds, workspace box, scripted
prefix, determinism, planning with exploration episodes, and the end-effector in-view fraction."""

import numpy as np
import pytest

from roboalign_env.data.episodes import Episode, episode_path, save_episode, write_manifest
from roboalign_env.sim.collect import (
    EXPLORATION_SEED_OFFSET,
    EpisodeSpec,
    camera_view,
    collect,
    eef_in_view_fraction,
    plan_episodes,
    run_episode,
)
from roboalign_env.sim.exploration import (
    DEFAULT_EXPLORATION_MODES,
    EXPLORATION_MODES,
    WORKSPACE,
    exploration_policy,
    tilt,
)
from roboalign_env.sim.sources import SOURCES

pytestmark = pytest.mark.sim

LIFT = SOURCES["lift_panda"]


@pytest.fixture(scope="module")
def lift_env():
    from roboalign_env.sim.robosuite_env import make_env

    return make_env(LIFT)


def rollout(env, mode: str, seed: int, steps: int):
    """Run ``mode`` on Lift without rendering; also ask a nominal policy fed the same observations.

    Returns the policy, its actions, the nominal actions, and the end-effector positions and tilts
    (from the start orientation) each action was chosen at, and the final position.
    """
    from roboalign_env.sim.robosuite_env import reset_env

    obs = reset_env(env, seed)
    home = obs["robot0_eef_quat"].copy()
    policy = exploration_policy(mode, LIFT, np.random.default_rng([seed, 1]))
    nominal = LIFT.policy("nominal", np.random.default_rng(0))
    out = {"actions": [], "nominal": [], "eef": [], "tilt": []}
    for _ in range(steps):
        out["eef"].append(obs["robot0_eef_pos"].copy())
        out["tilt"].append(tilt(obs["robot0_eef_quat"], home))
        out["nominal"].append(nominal(obs))
        out["actions"].append(policy(obs))
        obs, _, _, _ = env.step(out["actions"][-1])
    out["eef"].append(obs["robot0_eef_pos"].copy())
    return policy, {k: np.array(v) for k, v in out.items()}


@pytest.mark.parametrize("mode", EXPLORATION_MODES)
def test_actions_in_range_deterministic_and_not_nominal(lift_env, mode):
    steps = LIFT.horizon if mode == "explore_prefix" else 16  # the prefix runs nominal for >= 16 steps
    _, run = rollout(lift_env, mode, 3, steps)
    actions = run["actions"]
    assert actions.dtype == np.float32 and actions.shape == (steps, 7)
    assert np.abs(actions).max() <= 1.0
    assert not np.allclose(actions, run["nominal"])
    assert np.array_equal(actions, rollout(lift_env, mode, 3, steps)[1]["actions"])
    assert not np.array_equal(actions, rollout(lift_env, mode, 4, steps)[1]["actions"])


def test_constant_holds_each_command_for_four_steps(lift_env):
    policy, run = rollout(lift_env, "explore_constant", 5, 40)
    arm = run["actions"][:, :6]
    changes = np.flatnonzero(np.any(arm[1:] != arm[:-1], axis=1)) + 1
    runs = np.diff([0, *changes])  # the last command, cut by the episode's end, is left out
    assert len(runs) >= 4  # several different commands ...
    assert (np.abs(arm) >= 0.3 - 1e-6).any(axis=1).all()  # ... never a null one ...
    for start, run_length in zip(changes, runs):  # ... each held for >= 4 steps unless it hit a wall
        previous = arm[start - 1]
        hit_wall = not np.array_equal(policy.bounce(previous, run["eef"][start], run["tilt"][start]), previous)
        assert run_length >= 4 or hit_wall, (start, run_length)
    assert runs.min() < 4  # (this seed does bounce early once)


def test_constant_turns_back_at_the_walls():
    policy = exploration_policy("explore_constant", LIFT, np.random.default_rng(0))
    low, high = policy.low, policy.high
    middle = (low + high) / 2
    up = np.array([0.0, 0.0, 0.8, 0.0, 0.0, 0.0])
    assert np.array_equal(policy.bounce(up, middle, np.zeros(3)), up)
    at_top = np.array([*middle[:2], high[2] - 0.01])
    assert np.allclose(policy.bounce(up, at_top, np.zeros(3)), -up)
    spin = np.array([0.0, 0.0, 0.0, 0.0, 0.0, 0.7])  # no position command, but the end effector is out
    beyond = np.array([high[0] + 0.05, *middle[1:]])
    assert np.allclose(policy.bounce(spin, beyond, np.zeros(3)), [-policy.push_back, 0, 0, 0, 0, 0])
    tilted = np.array([0.0, 0.0, 0.7])  # past MAX_TILT about z: turning further about z reverses
    assert np.allclose(policy.bounce(spin, middle, tilted), -spin)


def test_waypoints_keep_the_end_effector_in_the_box(lift_env):
    _, run = rollout(lift_env, "explore_waypoints", 6, LIFT.horizon)
    low, high = (np.array(b) for b in WORKSPACE["lift_panda"])
    assert np.all(run["eef"] >= low - 0.02) and np.all(run["eef"] <= high + 0.02)
    assert np.ptp(run["eef"], axis=0).max() > 0.1  # it does move around


def test_push_holds_long_commands_past_the_box_and_comes_back(lift_env):
    policy, run = rollout(lift_env, "explore_push", 2, LIFT.horizon)
    arm = run["actions"][:, :6]
    assert np.all(arm[:, 3:] == 0)  # no rotation
    assert (np.abs(arm[:, :3]) >= 0.5 - 1e-6).any(axis=1).all()  # never a null command
    changes = np.flatnonzero(np.any(arm[1:] != arm[:-1], axis=1)) + 1
    assert np.all(np.diff([0, *changes]) >= 8)  # each command held 8-20 steps ...
    assert np.all(np.diff([0, *changes]) <= 20)
    low, high = (np.array(b) for b in WORKSPACE["lift_panda"])
    eef = run["eef"]
    outside = np.any((eef < low - 0.02) | (eef > high + 0.02), axis=1)
    assert outside.any()  # ... far enough to leave the workspace box ...
    assert np.linalg.norm(eef - eef[0], axis=1).max() <= policy.max_distance + 0.2  # ... but not without bound


def test_push_heads_back_once_too_far():
    policy = exploration_policy("explore_push", LIFT, np.random.default_rng(0))
    policy.start = np.array([0.0, 0.0, 1.0])
    far = policy.start + np.array([0.0, 0.5, 0.0])
    command = policy._new_command(far)
    assert command[1] < -0.4 and np.allclose(command[[0, 2, 3, 4, 5]], 0)


def test_prefix_follows_the_nominal_plan_until_its_switch(lift_env):
    policy, run = rollout(lift_env, "explore_prefix", 7, LIFT.horizon)
    switch = policy.switch_step
    assert LIFT.horizon // 4 <= switch < 3 * LIFT.horizon // 4
    assert np.array_equal(run["actions"][:switch], run["nominal"][:switch])
    assert not np.allclose(run["actions"][switch:], run["nominal"][switch:])


def test_unknown_exploration_mode_is_rejected():
    with pytest.raises(ValueError, match="exploration mode"):
        exploration_policy("explore_dance", LIFT, np.random.default_rng(0))


def test_plan_adds_exploration_episodes_without_changing_scripted_ones():
    sources = ["lift_panda", "door_kinova3"]
    scripted = plan_episodes(sources, 6)
    mixed = plan_episodes(sources, 6, exploration_fraction=0.5)
    assert [s for s in mixed if s.failure not in EXPLORATION_MODES] == scripted
    explore = [s for s in mixed if s.failure in EXPLORATION_MODES]
    assert len(explore) == 12  # half of each source's 12 episodes
    lift = [s for s in explore if s.source == "lift_panda"]
    assert [s.failure for s in lift] == [*DEFAULT_EXPLORATION_MODES, *DEFAULT_EXPLORATION_MODES[:2]]
    assert "explore_push" in EXPLORATION_MODES and "explore_push" not in DEFAULT_EXPLORATION_MODES
    assert [s.seed for s in lift] == [EXPLORATION_SEED_OFFSET + i for i in range(6)]
    assert len({s.episode_id for s in mixed}) == len(mixed)
    quarter = plan_episodes(["lift_panda"], 6, exploration_fraction=0.25, exploration_modes=("explore_ou",))
    assert [s.failure for s in quarter[6:]] == ["explore_ou"] * 2


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"exploration_fraction": 1.0}, "exploration_fraction"),
        ({"exploration_fraction": -0.1}, "exploration_fraction"),
        ({"exploration_fraction": 0.5, "exploration_modes": ()}, "exploration_modes"),
        ({"exploration_modes": ("explore_dance",)}, "exploration_modes"),
        ({"exploration_modes": ("explore_ou", "explore_ou")}, "exploration_modes"),
    ],
)
def test_plan_rejects_bad_exploration_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        plan_episodes(["lift_panda"], 4, **kwargs)


def test_workspace_boxes_are_well_inside_the_view():
    for name, (low, high) in WORKSPACE.items():
        corners = np.array([[x, y, z] for x in (low[0], high[0]) for y in (low[1], high[1]) for z in (low[2], high[2])])
        assert camera_view(name).in_view(corners, margin=0.1).all(), name


def test_projection_of_known_points():
    view = camera_view("lift_panda")
    forward = -view.rotation[:, 2]  # MuJoCo cameras look along their -z axis
    right = view.rotation[:, 0]
    ahead = view.position + forward
    assert view.in_view(ahead)
    assert not view.in_view(view.position - forward)  # behind the camera
    assert not view.in_view(ahead + right * 2 * view.tan_half_fovy)  # beyond the right edge
    assert view.in_view(ahead + right * 0.9 * view.tan_half_fovy)
    assert not view.in_view(ahead + right * 0.9 * view.tan_half_fovy, margin=0.2)
    up = view.rotation[:, 1]
    assert np.allclose(view.pixels(ahead, 64), [32, 32])  # the optical axis hits the image centre
    assert np.allclose(view.pixels(ahead + right * view.tan_half_fovy, 64), [64, 32])  # the right edge
    assert np.allclose(view.pixels(ahead + up * view.tan_half_fovy / 2, 128), [64, 32])  # rows grow downwards
    points = ahead + np.random.default_rng(0).normal(size=(200, 3)) * 0.6
    inside = ((view.pixels(points, 64) >= 0) & (view.pixels(points, 64) < 64)).all(-1)
    assert (inside[view.in_view(points)]).all()  # every point in view lands on the image


def test_run_episode_and_in_view_fraction(tmp_path):
    explore = run_episode(EpisodeSpec("lift_panda", "explore_constant", EXPLORATION_SEED_OFFSET), steps=8)
    assert explore.meta["failure"] == "explore_constant" and explore.meta["num_steps"] == 8
    assert explore.frames.shape == (9, 64, 64, 3) and explore.actions.shape == (8, 7)
    nominal = run_episode(EpisodeSpec("lift_panda", "nominal", 0), steps=8)
    assert eef_in_view_fraction([nominal]) == {"lift_panda": 1.0}
    far = {**nominal.state, "eef_pos": nominal.state["eef_pos"] + [0.0, 5.0, 0.0]}
    gone = Episode(nominal.frames, nominal.actions, far, {**nominal.meta, "episode_id": "lift_panda-far-00000"})
    rows = []
    for ep in (explore, nominal, gone):
        path = save_episode(episode_path(tmp_path, "lift_panda", ep.episode_id), ep)
        rows.append({**ep.meta, "path": str(path.relative_to(tmp_path))})
    write_manifest(tmp_path, rows)
    by_mode = eef_in_view_fraction(tmp_path, by_mode=True)
    assert set(by_mode) == {"lift_panda/scripted", "lift_panda/explore_constant"}
    assert by_mode["lift_panda/scripted"] == 0.5  # the nominal frames are in view, the moved ones not
    assert 0.0 <= by_mode["lift_panda/explore_constant"] <= 1.0


def test_camera_settings_move_a_world_camera_back_along_its_line_of_sight():
    from roboalign_env.sim.rendering import parse_camera

    assert parse_camera("agentview") == ("agentview", 0.0)
    assert parse_camera("agentview+50cm") == ("agentview", 0.5)
    for bad in ("agentview+50", "agentview+0.5m", "+50cm", "agentview+-5cm"):
        with pytest.raises(ValueError, match="whole centimetres"):
            parse_camera(bad)
    near, far = camera_view("lift_panda"), camera_view("lift_panda", "agentview+50cm")
    assert np.allclose(far.rotation, near.rotation) and far.tan_half_fovy == near.tan_half_fovy
    assert np.allclose(far.position - near.position, 0.5 * near.rotation[:, 2])  # it looks along -z: back is +z
    with pytest.raises(ValueError, match="lift_panda: .*no camera 'nope'"):
        camera_view("lift_panda", "nope")
    with pytest.raises(ValueError, match="only a camera fixed to the world"):
        camera_view("lift_panda", "robot0_eye_in_hand+10cm")


def test_collect_through_another_camera_records_it_and_refuses_to_mix(tmp_path):
    spec = EpisodeSpec("lift_panda", "nominal", 0)
    near, far = run_episode(spec, steps=2), run_episode(spec, steps=2, camera="agentview+50cm")
    assert far.meta["camera"] == "agentview+50cm" and near.meta["camera"] == "agentview"
    assert np.array_equal(far.actions, near.actions) and np.abs(far.frames.astype(int) - near.frames).mean() > 5
    with pytest.raises(ValueError, match="no camera 'nope'"):
        collect(tmp_path / "bad", [spec], camera="nope")
    assert not (tmp_path / "bad").exists()  # refused before anything was written
    save_episode(episode_path(tmp_path / "far", "lift_panda", spec.episode_id), far)
    with pytest.raises(ValueError, match="camera='agentview\\+50cm', but camera='agentview'"):
        collect(tmp_path / "far", [spec])
