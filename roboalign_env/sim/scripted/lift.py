"""Lift with Panda (and, for judge training only, UR5e): pick the cube up off the table.

Phases: hover above the cube, descend around it, close in place long enough for the fingers to
reach the cube, lift to 15 cm above the grasp point, hold. At 20 Hz a nominal episode first
succeeds around step 27-33 of 64.
"""

from __future__ import annotations

import numpy as np

from roboalign_env.sim.scripted.base import Command, ScriptedPolicy, Source

HOVER = 0.08  # metres above the grasp point
GRASP_DEPTH = 0.005  # grasp this far below the cube centre
LIFT = 0.15  # metres above the grasp point
CLOSE_STEPS = 8  # the Panda fingers need ~6 steps at 20 Hz to close on the cube
# The closed-loop plan corrects the base's sigma-0.4 arm noise at 20 Hz (about half the episodes
# still succeed), so ``noisy`` here perturbs every action dimension, gripper included, harder.
NOISY_SIGMA = 0.8
# robosuite places the cube 1 cm above the table at reset (it drops on the first step); progress
# ignores that much height, which also covers a cube tipped onto an edge.
RESET_DROP = 0.012
LIFT_SPAN = 0.04


class LiftPolicy(ScriptedPolicy):
    noise_sigma, noise_dims = NOISY_SIGMA, 7

    def plan(self, obs: dict) -> Command:
        cube = obs["cube_pos"] + self.grasp_offset
        hover = cube + [0, 0, HOVER]
        grasp = cube + [0, 0, -GRASP_DEPTH]
        if self.phase == 0:  # hover
            if self.reached(obs, hover, 0.02):
                self.phase = 1
            return Command(hover, close=False, gain=1.5)
        if self.phase == 1:  # descend
            if self.reached(obs, grasp, 0.012):
                self.phase, self._closing = 2, 0
            return Command(grasp, close=False, gain=1.5)
        if self.phase == 2:  # close in place
            self._closing += 1
            if self._closing >= CLOSE_STEPS:
                self.phase = 3
                self._lift_target = grasp + [0, 0, LIFT]
            return Command(grasp, close=True)
        return Command(self._lift_target, close=True, gain=1.5)  # lift and hold


def lift_progress(env) -> float:
    """Cube height gained over its resting height, less ``RESET_DROP``, as a fraction of
    ``LIFT_SPAN``: 0 at reset and while the cube rests (or is tipped) on the table, 1 once it is
    clearly lifted. robosuite's success (cube centre 4 cm above the table) comes at about
    0.15-0.2."""
    cube_z = env.sim.data.body_xpos[env.cube_body_id][2]
    table_z = env.model.mujoco_arena.table_offset[2]
    rest = table_z + env.cube.size[2]
    return float(np.clip((cube_z - rest - RESET_DROP) / LIFT_SPAN, 0.0, 1.0))


SOURCE = Source(
    name="lift_panda",
    task="Lift",
    robot="Panda",
    policy=LiftPolicy,
    control_freq=20,
    horizon=64,
    instructions=(
        "lift the red cube",
        "pick up the red block from the table",
        "grasp the red cube and raise it",
        "raise the small red cube off the table",
    ),
    near_miss_instructions=(
        "lift the green cube",
        "push the red cube to the left",
        "press the red cube down onto the table",
    ),
    objects=("cube",),
    progress=lift_progress,
)

UR5E_SOURCE = Source(
    name="lift_ur5e",
    task="Lift",
    robot="UR5e",
    policy=LiftPolicy,
    control_freq=20,
    horizon=64,
    instructions=SOURCE.instructions,
    near_miss_instructions=SOURCE.near_miss_instructions,
    objects=("cube",),
    progress=lift_progress,
    env_kwargs={"gripper_types": "Robotiq140Gripper"},  # see pick_place: the Robotiq85 linkage collapses
)
"""A judge-training source: Lift with the held-out source's robot (and gripper)."""
