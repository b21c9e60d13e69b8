"""The data sources: (robosuite task, robot) pairs with their scripted policy and instructions.

Each task module in :mod:`roboalign_env.sim.scripted` defines its
:class:`~roboalign_env.sim.scripted.base.Source` objects; this module collects them into
``SOURCES`` (name -> Source), the single registry every other part reads. Importing it does not
import robosuite (the task modules import it where they use it).

Two kinds of source share the registry:

- ``ALL_SOURCES``: the four the env, the world model and ``compare`` offer (their order is the
  env's task one-hot);
- ``JUDGE_SOURCES``: extra scenes collected only to train the judges on more (task, robot) pairs:
  Lift with the UR5e, and PickPlace with the milk carton (Panda, Kinova3), the bread (Panda) and
  the cereal box (Panda).
  With them a judge sees the held-out source's robot, gripper and arena, never its (task, robot)
  pair.
"""

from __future__ import annotations

from roboalign_env.sim.scripted import door, lift, pick_place, stack
from roboalign_env.sim.scripted.base import Source

_ENV_SOURCES = (lift.SOURCE, stack.SOURCE, pick_place.SOURCE, door.SOURCE)
_JUDGE_SOURCES = (lift.UR5E_SOURCE, pick_place.MILK_SOURCE, pick_place.BREAD_SOURCE,
                  pick_place.MILK_KINOVA3_SOURCE, pick_place.CEREAL_SOURCE)
SOURCES: dict[str, Source] = {s.name: s for s in (*_ENV_SOURCES, *_JUDGE_SOURCES)}
ALL_SOURCES = tuple(s.name for s in _ENV_SOURCES)
"""The env's sources, in a fixed order: lift_panda, stack_sawyer, pickplace_can_ur5e, door_kinova3."""
JUDGE_SOURCES = tuple(s.name for s in _JUDGE_SOURCES)
"""Sources collected only for judge training: lift_ur5e and the four PickPlace ones above."""
