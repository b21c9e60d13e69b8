"""Exploration policies: action-diverse episodes for training a world model that follows actions.

A scripted episode's actions can be guessed from its frames (the arm always heads for the object),
so a world model trained only on them can ignore its action input. These policies send commands a
scripted run never does -- constant pushes, rotations, random targets, gripper toggles mid-air --
in the same real simulator. Each one is called like a scripted policy (a robosuite observation dict
in, a float32 7-D OSC_POSE action in [-1, 1] out: 3 position deltas, 3 axis-angle deltas, gripper
+1 closes / -1 opens) and is built by :func:`exploration_policy` from a source and a numpy Generator,
so an episode is deterministic per seed.

The exploring policies but one keep the end effector inside its source's :data:`WORKSPACE`, a
world-frame box that holds the start pose and the task objects and whose corners all project well
inside the agentview image (``tests/test_exploration.py`` checks this), and the gripper within about
:data:`MAX_TILT` of its start orientation, so the arm stays in view and clear of its joint limits
(scripted stretches follow their plan, which stays near the box). The exception, ``explore_push``,
goes where a policy that keeps pushing one way takes the arm: far past the box, out of view, into
the table.
"""

from __future__ import annotations

import numpy as np

from roboalign_env.sim.scripted.base import OSC_POS_SCALE, Source

EXPLORATION_MODES = ("explore_waypoints", "explore_constant", "explore_ou", "explore_prefix", "explore_push")
DEFAULT_EXPLORATION_MODES = EXPLORATION_MODES[:4]
"""The modes `roboalign collect` cycles unless told otherwise (``explore_push`` is asked for by name)."""

# World-frame (low, high) end-effector bounds per source, in metres: the start pose and the task
# objects (cubes, can and both bins, door handle) with some room around them, from just above the
# table (so objects can be touched) up; every corner projects inside the central 90% of the
# agentview image, so the hand above the end effector mostly stays in view too.
_TABLE = ((-0.18, -0.18, 0.83), (0.12, 0.18, 1.03))  # Lift's cube on the table
_BINS = ((-0.20, -0.38, 0.84), (0.20, 0.39, 1.05))  # PickPlace's two bins, whatever the object
WORKSPACE: dict[str, tuple[tuple[float, float, float], tuple[float, float, float]]] = {
    "lift_panda": _TABLE,
    "stack_sawyer": ((-0.16, -0.15, 0.83), (0.12, 0.18, 1.04)),
    "pickplace_can_ur5e": _BINS,
    "door_kinova3": ((-0.30, -0.27, 0.85), (0.00, 0.08, 1.15)),
    "lift_ur5e": _TABLE,
    "pickplace_milk_panda": _BINS,
    "pickplace_bread_panda": _BINS,
    "pickplace_milk_kinova3": _BINS,
    "pickplace_cereal_panda": _BINS,
}
OSC_ROT_SCALE = 0.5  # OSC_POSE maps an action of 1.0 to this many radians of rotation per step
MAX_TILT = 0.6  # radians the gripper may turn away from its start orientation
GRIPPER_TOGGLE_P = 0.3  # chance of toggling the gripper with each new command or waypoint


def _quat_mul(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Hamilton product of (x, y, z, w) quaternions (robosuite's order)."""
    ax, ay, az, aw = a
    bx, by, bz, bw = b
    return np.array([
        aw * bx + ax * bw + ay * bz - az * by,
        aw * by - ax * bz + ay * bw + az * bx,
        aw * bz + ax * by - ay * bx + az * bw,
        aw * bw - ax * bx - ay * by - az * bz,
    ])


def tilt(quat: np.ndarray, home: np.ndarray) -> np.ndarray:
    """Rotation vector (world frame, radians) that turns orientation ``home`` into ``quat`` (x, y, z, w)."""
    rel = _quat_mul(quat, home * [-1, -1, -1, 1])
    if rel[3] < 0:
        rel = -rel
    sin = np.linalg.norm(rel[:3])
    return np.zeros(3) if sin < 1e-9 else rel[:3] / sin * 2 * np.arctan2(sin, rel[3])


def _object_positions(obs: dict) -> list[np.ndarray]:
    """World positions of the task objects in a robosuite observation: its ``<name>_pos`` entries
    other than the robot's own and relative ones (``gripper_to_cube_pos``)."""
    return [np.asarray(v, float) for k, v in sorted(obs.items())
            if k.endswith("_pos") and not k.startswith("robot") and "_to_" not in k]


def random_command(rng: np.random.Generator, axes: int, most: int, low: float) -> np.ndarray:
    """A 6-D arm command that moves 1 to ``most`` of its first ``axes`` axes, each at +-``low``..1.0."""
    chosen = rng.choice(axes, size=int(rng.integers(1, most + 1)), replace=False)
    command = np.zeros(6)
    command[chosen] = rng.uniform(low, 1.0, size=len(chosen)) * rng.choice([-1.0, 1.0], size=len(chosen))
    return command


class _Explorer:
    """Shared state: the workspace box, the start orientation (``home``) and the gripper command."""

    def __init__(self, source: Source, rng: np.random.Generator):
        self.rng = rng
        self.low, self.high = (np.array(b) for b in WORKSPACE[source.name])
        self.home: np.ndarray | None = None
        self.gripper = -1.0  # open

    def _observe(self, obs: dict) -> tuple[np.ndarray, np.ndarray]:
        """The end-effector position and its tilt from ``home`` (set on the first call)."""
        if self.home is None:
            self.home = np.asarray(obs["robot0_eef_quat"], float)
        return np.asarray(obs["robot0_eef_pos"], float), tilt(obs["robot0_eef_quat"], self.home)

    def _maybe_toggle(self) -> None:
        if self.rng.random() < GRIPPER_TOGGLE_P:
            self.gripper = -self.gripper

    def _action(self, arm: np.ndarray) -> np.ndarray:
        return np.clip([*arm, self.gripper], -1.0, 1.0).astype(np.float32)


class RandomWaypoints(_Explorer):
    """``explore_waypoints``: go to random targets in the workspace box, one after another.

    Each waypoint is a position -- with probability ``p_object`` near a task object (within 3 cm
    sideways, up to 5 cm above it, so objects get touched and pushed), otherwise uniform in the box
    -- a speed (largest action component, 0.3-1.0) and, with probability ``p_rotate``, a random
    orientation within ``MAX_TILT`` of the start (otherwise the start orientation). Proportional
    control moves towards it; a new waypoint is drawn once the end effector is within ``reach_tol``
    or after 8-16 steps (0.8-1.6 s above 10 Hz: a 20 Hz arm moves too little in 8 steps to get
    anywhere). The gripper may toggle at each one.
    """

    reach_tol = 0.02
    gain = 1.5
    p_rotate = 0.3
    p_object = 0.3

    def __init__(self, source: Source, rng: np.random.Generator):
        super().__init__(source, rng)
        self.target: np.ndarray | None = None
        self.steps_left = 0
        self.patience = max(1.0, source.control_freq / 10)

    def _new_waypoint(self, obs: dict) -> None:
        objects = _object_positions(obs)
        if objects and self.rng.random() < self.p_object:
            near = objects[int(self.rng.integers(len(objects)))]
            self.target = np.clip(near + self.rng.uniform([-0.03, -0.03, 0], [0.03, 0.03, 0.05]), self.low, self.high)
        else:
            self.target = self.rng.uniform(self.low, self.high)
        self.target_tilt = np.zeros(3)
        if self.rng.random() < self.p_rotate:
            axis = self.rng.normal(size=3)
            self.target_tilt = axis / np.linalg.norm(axis) * self.rng.uniform(0.0, MAX_TILT)
        self.speed = self.rng.uniform(0.3, 1.0)
        self.steps_left = int(self.rng.integers(8, 17) * self.patience)
        self._maybe_toggle()

    def __call__(self, obs: dict) -> np.ndarray:
        eef, rot = self._observe(obs)
        if self.target is None or self.steps_left == 0 or np.linalg.norm(self.target - eef) < self.reach_tol:
            self._new_waypoint(obs)
        self.steps_left -= 1
        arm = np.concatenate([(self.target - eef) / OSC_POS_SCALE, (self.target_tilt - rot) / OSC_ROT_SCALE])
        arm *= self.gain
        arm *= min(1.0, self.speed / max(np.abs(arm).max(), 1e-9))  # keep the direction, cap the speed
        return self._action(arm)


class ConstantCommands(_Explorer):
    """``explore_constant``: piecewise-constant random commands, each held for 4-8 steps.

    A command moves 1-3 arm axes at +-0.3..1.0 (rotation axes are eligible with probability
    ``p_rotate``); the gripper may toggle with each new command. Soft box: a position component
    that is not already heading back while the end effector is, or would be after a step of the
    command, out of the workspace box turns towards the box (at least ``push_back``; this also
    catches a zero component, as a rotation swings the end effector too), any rotation stops while
    the end effector is out, a rotation that turns the gripper further past ``MAX_TILT`` is
    reflected, and such a bounced command is held for a fresh 4-8 steps: every command lasts at
    least 4 steps unless it hits another wall first.
    """

    hold = (4, 8)
    p_rotate = 0.3
    push_back = 0.5

    def __init__(self, source: Source, rng: np.random.Generator):
        super().__init__(source, rng)
        self.command = np.zeros(6)
        self.steps_left = 0

    def _new_command(self) -> np.ndarray:
        command = random_command(self.rng, 6 if self.rng.random() < self.p_rotate else 3, 3, 0.3)
        self._maybe_toggle()
        return command

    def bounce(self, command: np.ndarray, eef: np.ndarray, rot: np.ndarray) -> np.ndarray:
        """``command`` turned back at the walls of the box and of the tilt limit (see the class)."""
        command = command.copy()
        ahead = eef + command[:3] * OSC_POS_SCALE
        for outside, inward in ((np.maximum(eef, ahead) > self.high, -1.0), (np.minimum(eef, ahead) < self.low, 1.0)):
            turn = outside & (command[:3] * inward <= 0)
            command[:3][turn] = inward * np.maximum(np.abs(command[:3][turn]), self.push_back)
        angle = np.linalg.norm(rot)
        if np.any(eef > self.high) or np.any(eef < self.low):
            command[3:] = 0.0  # a rotation swings the end effector (several cm a step at 5 Hz): stop it
        elif angle > MAX_TILT:
            unit = rot / angle
            along = command[3:] @ unit
            if along > 0:
                command[3:] -= 2 * along * unit
        return command

    def __call__(self, obs: dict) -> np.ndarray:
        eef, rot = self._observe(obs)
        if self.steps_left == 0:
            self.command = self.bounce(self._new_command(), eef, rot)
            self.steps_left = int(self.rng.integers(self.hold[0], self.hold[1] + 1))
        else:
            bounced = self.bounce(self.command, eef, rot)
            if not np.array_equal(bounced, self.command):
                self.command = bounced
                self.steps_left = int(self.rng.integers(self.hold[0], self.hold[1] + 1))
        self.steps_left -= 1
        return self._action(self.command)


class NominalWithOU:
    """``explore_ou``: the source's nominal scripted policy plus Ornstein-Uhlenbeck noise on the arm.

    The noise follows ``x <- (1 - theta) x + sigma * N(0, 1)`` per step and per arm dimension,
    starting at 0: correlated over about ``1 / theta`` steps (0.3 s at 20 Hz, 1.3 s at 5 Hz) with a
    stationary std of ``sigma / sqrt(1 - (1 - theta)^2)``, about 0.38. The scripted plan corrects
    position drift closed-loop; it never rotates, so a proportional pull back to the start
    orientation (``rot_gain``) keeps the rotation noise from accumulating into a spin.
    """

    theta = 0.15
    sigma = 0.2
    rot_gain = 1.0

    def __init__(self, source: Source, rng: np.random.Generator):
        self.rng = rng
        self.nominal = source.policy("nominal", rng)
        self.noise = np.zeros(6)
        self.home: np.ndarray | None = None

    def __call__(self, obs: dict) -> np.ndarray:
        if self.home is None:
            self.home = np.asarray(obs["robot0_eef_quat"], float)
        action = self.nominal(obs).astype(float)
        self.noise = (1 - self.theta) * self.noise + self.sigma * self.rng.normal(size=6)
        action[:6] += self.noise
        action[3:6] -= self.rot_gain * tilt(obs["robot0_eef_quat"], self.home) / OSC_ROT_SCALE
        return np.clip(action, -1.0, 1.0).astype(np.float32)


class ScriptedPrefix:
    """``explore_prefix``: the nominal scripted policy, then exploration from a random step on.

    The switch comes at a uniform step in ``[horizon / 4, 3 * horizon / 4)``: early switches leave
    an object approached or touched, late ones leave it grasped or lifted, so the exploration that
    follows (:class:`ConstantCommands` or :class:`RandomWaypoints`, equally likely; starting with
    the gripper as the plan left it) pushes, carries and drops it under varied actions.
    """

    def __init__(self, source: Source, rng: np.random.Generator):
        self.nominal = source.policy("nominal", rng)
        self.switch_step = int(rng.integers(source.horizon // 4, 3 * source.horizon // 4))
        explorer = ConstantCommands if rng.random() < 0.5 else RandomWaypoints
        self.explorer = explorer(source, rng)
        self.step_count = 0

    def __call__(self, obs: dict) -> np.ndarray:
        if self.explorer.home is None:  # tilts count from the episode's start orientation
            self.explorer.home = np.asarray(obs["robot0_eef_quat"], float)
        self.step_count += 1
        if self.step_count <= self.switch_step:
            action = self.nominal(obs)
            self.explorer.gripper = float(action[6])
            return action
        return self.explorer(obs)


class SustainedPushes(_Explorer):
    """``explore_push``: long constant pushes from the start pose, far past the workspace box.

    Each command moves 1-2 position axes at +-0.5..1.0 and is held for 8-20 steps, so the arm travels
    as far as a policy that keeps commanding one direction takes it (tens of centimetres at 0.8 for 16
    steps): out of the box, out of view, against the table or a joint limit. The boxed modes never
    show that. Once the end effector is outside the box, a new command heads back to the start
    position instead with probability ``p_return`` (always beyond ``max_distance`` of it, never within
    ``min_return``), so the episode keeps coming back into the scene. No rotation; the gripper may
    toggle with each command.
    """

    hold = (8, 20)
    p_return = 0.5
    max_distance = 0.4
    min_return = 0.05  # a start pose outside the box is no reason to stand still

    def __init__(self, source: Source, rng: np.random.Generator):
        super().__init__(source, rng)
        self.start: np.ndarray | None = None
        self.command = np.zeros(6)
        self.steps_left = 0

    def _new_command(self, eef: np.ndarray) -> np.ndarray:
        command = np.zeros(6)
        outside = np.any(eef > self.high) or np.any(eef < self.low)
        back = self.start - eef
        away = np.linalg.norm(back)
        if away > self.max_distance or (outside and away > self.min_return and self.rng.random() < self.p_return):
            command[:3] = back / max(np.abs(back).max(), 1e-9) * self.rng.uniform(0.5, 1.0)
        else:
            command = random_command(self.rng, 3, 2, 0.5)
        self._maybe_toggle()
        return command

    def __call__(self, obs: dict) -> np.ndarray:
        eef, _ = self._observe(obs)
        if self.start is None:
            self.start = eef.copy()
        if self.steps_left == 0:
            self.command = self._new_command(eef)
            self.steps_left = int(self.rng.integers(self.hold[0], self.hold[1] + 1))
        self.steps_left -= 1
        return self._action(self.command)


_POLICIES = {
    "explore_waypoints": RandomWaypoints,
    "explore_constant": ConstantCommands,
    "explore_ou": NominalWithOU,
    "explore_prefix": ScriptedPrefix,
    "explore_push": SustainedPushes,
}


def exploration_policy(mode: str, source: Source, rng: np.random.Generator):
    """The exploration policy ``mode`` (one of :data:`EXPLORATION_MODES`) for ``source``."""
    if mode not in _POLICIES:
        raise ValueError(f"mode={mode!r} is not an exploration mode; expected one of {EXPLORATION_MODES}")
    if source.name not in WORKSPACE:
        raise ValueError(f"source {source.name!r} has no exploration workspace; add it to WORKSPACE")
    return _POLICIES[mode](source, rng)
