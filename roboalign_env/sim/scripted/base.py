"""Shared machinery for the scripted robosuite policies.

A scripted policy is a small phase machine over end-effector targets. Each task module subclasses
:class:`ScriptedPolicy` and implements :meth:`ScriptedPolicy.plan`, which maps the current
observation to a :class:`Command` (where the end effector should go, and whether the gripper is
closed). This base class turns commands into the 7-D action the robosuite OSC_POSE controller
expects (3 position deltas, 3 axis-angle deltas, 1 gripper; all in [-1, 1]) and applies the
*failure modes* that are common to every task, so that failures come from the same physics as
successes.

Failure modes handled here (a task may add its own, e.g. ``wrong_object``):

- ``nominal``: the policy as designed.
- ``never_close``: the gripper command is forced open for the whole episode.
- ``misaligned_grasp``: every grasp target is shifted horizontally by 3-5 cm in a random direction
  (the task reads :attr:`ScriptedPolicy.grasp_offset`).
- ``early_release``: the gripper opens for good a few steps after it first closes.
- ``stall``: the arm stops (zero action, gripper held) from a random step on.
- ``noisy``: Gaussian noise (``noise_sigma``, default 0.4) on the arm part of every action
  (``noise_dims``); a closed-loop plan that shrugs it off raises them.
- ``random``: uniform random actions, ignoring the plan.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np

COMMON_FAILURES = ("never_close", "misaligned_grasp", "early_release", "stall", "noisy", "random")

# OSC_POSE maps an action of 1.0 to this many metres of end-effector displacement per step.
OSC_POS_SCALE = 0.05


@dataclass
class Command:
    """What a scripted phase wants: an end-effector target (world frame, metres) and the gripper."""

    target: np.ndarray
    close: bool
    gain: float = 1.0  # multiplies the proportional step; > 1 saturates sooner


class ScriptedPolicy:
    """Base phase-machine policy. Subclasses implement ``plan`` and may extend ``failure_modes``."""

    failure_modes: tuple[str, ...] = ("nominal", *COMMON_FAILURES)
    noise_sigma: float = 0.4  # ``noisy``: std of the Gaussian noise ...
    noise_dims: int = 6  # ... on the first this many action dimensions (6: arm only, 7: gripper too)

    def __init__(self, failure: str = "nominal", rng: np.random.Generator | None = None):
        if failure not in self.failure_modes:
            raise ValueError(
                f"failure={failure!r} is not a failure mode of {type(self).__name__}; "
                f"expected one of {self.failure_modes}"
            )
        self.failure = failure
        self.rng = rng if rng is not None else np.random.default_rng(0)
        self.grasp_offset = np.zeros(3)
        if failure == "misaligned_grasp":
            angle = self.rng.uniform(0, 2 * np.pi)
            radius = self.rng.uniform(0.03, 0.05)
            self.grasp_offset = np.array([np.cos(angle), np.sin(angle), 0.0]) * radius
        self.stall_step = int(self.rng.integers(4, 14)) if failure == "stall" else None
        self.release_delay = int(self.rng.integers(2, 6))
        self.step_count = 0
        self.first_close_step: int | None = None
        self.phase = 0

    # -- to implement -------------------------------------------------------------------------
    def plan(self, obs: dict) -> Command:
        """Return the command for this step; advance ``self.phase`` as sub-goals are reached."""
        raise NotImplementedError

    # -- shared -------------------------------------------------------------------------------
    def __call__(self, obs: dict) -> np.ndarray:
        """Return the 7-D action in [-1, 1] for observation ``obs`` (a robosuite observation dict)."""
        cmd = self.plan(obs)
        action = np.zeros(7)
        delta = (cmd.target - obs["robot0_eef_pos"]) / OSC_POS_SCALE * cmd.gain
        action[:3] = np.clip(delta, -1.0, 1.0)
        close = cmd.close
        if close and self.first_close_step is None:
            self.first_close_step = self.step_count
        action[6] = self._gripper(close)
        action = self._apply_failure(action)
        self.step_count += 1
        return np.clip(action, -1.0, 1.0).astype(np.float32)

    def _gripper(self, close: bool) -> float:
        if self.failure == "never_close":
            return -1.0
        if self.failure == "early_release" and self.first_close_step is not None:
            if self.step_count >= self.first_close_step + self.release_delay:
                return -1.0
        return 1.0 if close else -1.0

    def _apply_failure(self, action: np.ndarray) -> np.ndarray:
        if self.failure == "stall" and self.step_count >= self.stall_step:
            action[:6] = 0.0
        elif self.failure == "noisy":
            action[: self.noise_dims] += self.rng.normal(0.0, self.noise_sigma, size=self.noise_dims)
        elif self.failure == "random":
            action = self.rng.uniform(-1.0, 1.0, size=7)
        return action

    @staticmethod
    def reached(obs: dict, target: np.ndarray, tol: float = 0.01) -> bool:
        """Whether the end effector is within ``tol`` metres of ``target``."""
        return bool(np.linalg.norm(obs["robot0_eef_pos"] - target) < tol)


@dataclass(frozen=True)
class Source:
    """One (task, robot) data source.

    ``objects`` names the movable task objects: attribute names on the robosuite env whose
    ``root_body`` pose is recorded and whose geoms count for contact and grasp checks. ``progress``
    maps the env to a task-progress scalar in [0, 1] (0: untouched start, 1: at goal); the oracle
    uses it to tell partial success from no success.
    """

    name: str
    task: str
    robot: str
    policy: type[ScriptedPolicy]
    control_freq: int
    horizon: int
    instructions: tuple[str, ...]
    near_miss_instructions: tuple[str, ...]
    objects: tuple[str, ...]
    progress: Callable[[Any], float]
    env_kwargs: dict = field(default_factory=dict)
    edit_joint: str | None = None
    """Joint the bench's state edits move when the target is not free-floating (a door's hinge)."""

    @property
    def failure_modes(self) -> tuple[str, ...]:
        return self.policy.failure_modes

    @property
    def family(self) -> str:
        """The task an instruction names: robosuite's single-object PickPlace variants (PickPlaceCan,
        PickPlaceMilk, ...) are one task, PickPlace, on different objects."""
        return "PickPlace" if self.task.startswith("PickPlace") else self.task
