"""The four data sources: (robosuite task, robot) pairs with their scripted policy and instructions.

Each task module in :mod:`roboalign_env.sim.scripted` defines one
:class:`~roboalign_env.sim.scripted.base.Source`; this module collects them into ``SOURCES``
(name -> Source), the single registry every other part reads. Importing it does not import
robosuite (the task modules import it where they use it).
"""

from __future__ import annotations

from roboalign_env.sim.scripted import door, lift, pick_place, stack
from roboalign_env.sim.scripted.base import Source

SOURCES: dict[str, Source] = {s.name: s for s in (lift.SOURCE, stack.SOURCE, pick_place.SOURCE, door.SOURCE)}
ALL_SOURCES = tuple(SOURCES)
"""Every source's name, in a fixed order: lift_panda, stack_sawyer, pickplace_can_ur5e, door_kinova3."""
