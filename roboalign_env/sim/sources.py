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

from roboalign_env.sim.oracle import INSTRUCTION_KINDS as INSTRUCTION_RELATIONS  # the relations the oracle labels
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


def instruction_pool(relation: str, source_name: str) -> tuple[str, ...]:
    """The instructions the bench draws for ``relation`` to an episode of ``source_name``: its own
    (``correct``), its written near misses (a wrong object or direction), or those of every other task
    family (``other_task``; the same task on another object is a near miss, not another task)."""
    if relation not in INSTRUCTION_RELATIONS:
        raise ValueError(f"relation={relation!r}; expected one of {INSTRUCTION_RELATIONS}")
    source = SOURCES[source_name]
    if relation == "correct":
        return source.instructions
    if relation == "near_miss":
        return source.near_miss_instructions
    return tuple(dict.fromkeys(t for s in SOURCES.values() if s.family != source.family for t in s.instructions))


def instruction_relation(instruction: str, source_name: str) -> str | None:
    """The relation of a known instruction (case and surrounding spaces ignored) to ``source_name``'s
    episodes, or None for an instruction no source has. Another source's instruction of the same
    family (the milk carton's on a bread video) is a near miss."""
    key = instruction.strip().lower()
    source = SOURCES[source_name]
    known = lambda texts: key in {t.strip().lower() for t in texts}  # noqa: E731
    if known(source.instructions):
        return "correct"
    kin = (t for s in SOURCES.values() if s.family == source.family for t in s.instructions)
    if known(source.near_miss_instructions) or known(kin):
        return "near_miss"
    return "other_task" if known(instruction_pool("other_task", source_name)) else None
