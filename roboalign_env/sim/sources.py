"""The four data sources: (robosuite task, robot) pairs with their scripted policy and instructions.

Each task module in :mod:`roboalign_env.sim.scripted` defines one :class:`Source`; this module
collects them into ``SOURCES`` (name -> Source), the single registry every other part reads.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable

from roboalign_env.sim.scripted.base import ScriptedPolicy

ALL_SOURCES = ("lift_panda", "stack_sawyer", "pickplace_can_ur5e", "door_kinova3")
"""Every source's name, in a fixed order (import-light: no robosuite); ``SOURCES`` has the details."""


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


def _registry() -> dict[str, Source]:
    from roboalign_env.sim.scripted import door, lift, pick_place, stack

    return {s.name: s for s in (lift.SOURCE, stack.SOURCE, pick_place.SOURCE, door.SOURCE)}


def __getattr__(name: str):
    # ``SOURCES`` is built on first use: the task modules import ``Source`` from here, so building
    # it at import time would be circular whenever a task module is imported first.
    if name == "SOURCES":
        globals()["SOURCES"] = _registry()
        return globals()["SOURCES"]
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
