"""Stack with Sawyer: put the red cube (cubeA) on top of the green cube (cubeB).

Phases: hover above cubeA, descend around it, close, lift and carry it above cubeB, lower it until
it almost touches cubeB, open until the fingers have let go, rise and hold clear of the stack.
robosuite counts a stack only once the gripper has let go, so success comes after the release; at
5 Hz a nominal episode first succeeds around step 30-47 of 64.
"""

from __future__ import annotations

import numpy as np

from roboalign_env.sim.scripted.base import COMMON_FAILURES, Command, ScriptedPolicy, Source

HALF_SIZE = {"cubeA": 0.02, "cubeB": 0.025}  # half edge lengths of the robosuite Stack cubes
HOVER = 0.08  # metres above the grasp point
GRASP_HEIGHT = 0.01  # above the cube centre: any lower and the long fingertips hit the table
CARRY_CLEARANCE = 0.03  # held cube's bottom this far above the other cube's top while carrying
PLACE_CLEARANCE = 0.002  # ... and when it is let go
RETREAT = 0.08  # rise this far after letting go
CLOSE_STEPS = 4
# The Sawyer gripper ramps its command over several steps, so a grip held for long takes a few
# steps to loosen: open until the fingers have spread this much (or for at most MAX_OPEN_STEPS).
RELEASE_GAP = 0.006
MAX_OPEN_STEPS = 12
XY_TOL = 0.006  # the open fingers clear the cube by only ~1 cm a side
Z_TOL = 0.008
GAIN = 2.5  # the Sawyer OSC settles ~7 mm short of a target at gain 1; this cuts that offset
# progress: robosuite places the cubes 1 cm above the table at reset (they drop on the first
# step), so that much height (which also covers a cube tipped onto an edge) does not count as lift;
# cubeA counts as not over cubeB at all from ALIGN_RANGE away horizontally.
RESET_DROP = 0.012
ALIGN_RANGE = 0.1


class StackPolicy(ScriptedPolicy):
    failure_modes = ("nominal", *COMMON_FAILURES, "wrong_object")

    def plan(self, obs: dict) -> Command:
        # wrong_object: stack the green cube on the red one instead
        pick, place = ("cubeB", "cubeA") if self.failure == "wrong_object" else ("cubeA", "cubeB")
        eef = obs["robot0_eef_pos"]
        if self.phase <= 2:
            grasp = obs[f"{pick}_pos"] + self.grasp_offset + [0, 0, GRASP_HEIGHT]
            hover = grasp + [0, 0, HOVER]
            if self.phase == 0:  # hover
                if self.near(obs, hover, XY_TOL, 2 * Z_TOL):
                    self.phase = 1
                return Command(hover, close=False, gain=GAIN)
            if self.phase == 1:  # descend
                if self.near(obs, grasp, XY_TOL, Z_TOL):
                    self.phase, self._count = 2, 0
                return Command(grasp, close=False, gain=GAIN)
            self._count += 1  # close in place
            if self._count >= CLOSE_STEPS:
                self.phase = 3
                # where the cube sits in the hand; kept fixed so that a dropped cube is not chased
                self._held = obs[f"{pick}_pos"] - eef
            return Command(grasp, close=True, gain=GAIN)
        if self.phase <= 4:
            # eef targets that put the held cube's centre over the other cube, clearances above it
            xy = obs[f"{place}_pos"][:2] - self._held[:2]
            top = obs[f"{place}_pos"][2] + HALF_SIZE[place] + HALF_SIZE[pick] - self._held[2]
            if self.phase == 3:  # lift, and carry over the other cube once high enough to clear it
                carry = np.array([*xy, top + CARRY_CLEARANCE])
                if eef[2] < carry[2] - CARRY_CLEARANCE / 2:
                    carry[:2] = eef[:2]
                if self.near(obs, carry, XY_TOL, Z_TOL):
                    self.phase = 4
                return Command(carry, close=True, gain=GAIN)
            place_at = np.array([*xy, top + PLACE_CLEARANCE])  # lower onto it
            if self.near(obs, place_at, XY_TOL, Z_TOL / 2):
                self.phase, self._count = 5, 0
                self._release, self._held_gap = place_at, self.finger_gap(obs)
            return Command(place_at, close=True, gain=GAIN)
        if self.phase == 5:  # open in place until the fingers have let go
            self._count += 1
            let_go = self.finger_gap(obs) > self._held_gap + RELEASE_GAP
            if let_go or self._count >= MAX_OPEN_STEPS:
                self.phase = 6
            return Command(self._release, close=False, gain=GAIN)
        return Command(self._release + [0, 0, RETREAT], close=False, gain=GAIN)  # rise and hold

    @staticmethod
    def finger_gap(obs: dict) -> float:
        """How far the fingers are apart, from the gripper joint positions (grows as they open)."""
        return float(obs["robot0_gripper_qpos"][0] - obs["robot0_gripper_qpos"][1])

    @staticmethod
    def near(obs: dict, target: np.ndarray, xy_tol: float, z_tol: float) -> bool:
        """Whether the end effector is within ``xy_tol`` of ``target`` horizontally and within
        ``z_tol`` vertically."""
        err = obs["robot0_eef_pos"] - target
        return bool(np.linalg.norm(err[:2]) < xy_tol and abs(err[2]) < z_tol)


def stack_progress(env) -> float:
    """``lift * (1 + align) / 2``, in [0, 1].

    ``lift``: cubeA's height gain over resting on the table, less ``RESET_DROP``, as a fraction of
    the gain that puts it on top of cubeB (clipped to [0, 1]). ``align``: 1 when cubeA is centred
    over cubeB, falling linearly to 0 at ``ALIGN_RANGE`` horizontally. So 0 while cubeA rests on
    the table (wherever it is), 0.5 when it is at stacking height but not over cubeB, 1 when it
    sits (or is held) centred on cubeB; robosuite's success additionally needs the gripper to have
    let go.
    """
    cube_a = env.sim.data.body_xpos[env.cubeA_body_id]
    cube_b = env.sim.data.body_xpos[env.cubeB_body_id]
    rest = env.table_offset[2] + env.cubeA.size[2] + RESET_DROP
    stacked = cube_b[2] + env.cubeB.size[2] + env.cubeA.size[2]
    lift = np.clip((cube_a[2] - rest) / (stacked - rest), 0.0, 1.0)
    align = np.clip(1.0 - np.linalg.norm(cube_a[:2] - cube_b[:2]) / ALIGN_RANGE, 0.0, 1.0)
    return float(lift * (1.0 + align) / 2.0)


SOURCE = Source(
    name="stack_sawyer",
    task="Stack",
    robot="Sawyer",
    policy=StackPolicy,
    # 5 Hz: the Sawyer arm covers only ~1-2 cm per 10 Hz step and its gripper ramps per step, so at
    # 10 Hz a nominal stack first succeeds only around step 42-62 of 64.
    control_freq=5,
    horizon=64,
    instructions=(
        "stack the red cube on the green cube",
        "put the red block on top of the green block",
        "place the red cube onto the green cube",
        "pick up the red cube and set it down on the green one",
        "stack the small red block on the larger green block",
    ),
    near_miss_instructions=(
        "stack the green cube on the red cube",
        "put the red cube next to the green cube",
        "put the red cube under the green cube",
        "pick up the green cube",
    ),
    objects=("cubeA", "cubeB"),
    progress=stack_progress,
)
