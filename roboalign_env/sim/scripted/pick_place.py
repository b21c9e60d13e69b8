"""PickPlace with one object: move it from the left bin into its compartment of the right bin.

``pickplace_can_ur5e`` (PickPlaceCan with UR5e) is a source of the env and the world model and the
bench's held-out source. The judge-training sources put other objects and robots in the same arena:
``pickplace_milk_panda`` (PickPlaceMilk, Panda), ``pickplace_bread_panda`` (PickPlaceBread, Panda)
``pickplace_milk_kinova3`` (PickPlaceMilk, Kinova3 with the held-out source's Robotiq140) and
``pickplace_cereal_panda`` (PickPlaceCereal, Panda with the Robotiq140), so a judge sees
pick-and-place with several objects, arms and grippers, and objects placed in both rows of
compartments, never the held-out (task, robot) pair.

Phases: hover above the can, descend around it (closing on the way), lift, carry over the target
compartment while rising above the bin walls, lower, open, rise and hold. robosuite counts the can
as placed when its centre lies inside the target compartment (a quarter of the right bin, bounded
by 10 cm walls and dividers) below the rim, with the gripper more than ~4 cm away: hence the rise.

The UR5e gets robosuite's Robotiq140 gripper: its default Robotiq85 has a loosely coupled finger
linkage that collapses after a few seconds of squeezing (robosuite issue #772) and flings the can.
At 4 Hz the arm moves ~4 cm per saturated step, so a can episode first succeeds after ~35-45 steps.
"""

from __future__ import annotations

import dataclasses
import functools

import numpy as np

from roboalign_env.sim.scripted.base import COMMON_FAILURES, Command, ScriptedPolicy, Source

# robosuite PickPlace defaults: right bin centre (bin2_pos) and bin size; the can's compartment is
# its (+x, +y) quarter, i.e. env.target_bin_placements[env.object_id].
BIN2_XY = np.array([0.1, 0.28])
BIN_SIZE_XY = np.array([0.39, 0.49])
COMPARTMENT_OFFSETS = {  # compartment centre relative to BIN2_XY, in robosuite's object order
    "milk": BIN_SIZE_XY * [-0.25, -0.25],
    "bread": BIN_SIZE_XY * [0.25, -0.25],
    "cereal": BIN_SIZE_XY * [-0.25, 0.25],
    "can": BIN_SIZE_XY * [0.25, 0.25],
}
BIN1_XY = np.array([0.1, -0.25])  # left (start) bin centre, a wrong_place destination
BIN1_Y_EDGE = BIN1_XY[1] + BIN_SIZE_XY[1] / 2  # right-hand edge of the start bin
# The held-out source's object. The judge-only sources' ``wrong_place`` never drops their object in
# its compartment, so no judge is taught that an object placed there is a mistake.
HELDOUT_OBJECT = "can"
REST_Z = {"can": 0.86, "milk": 0.89, "bread": 0.845, "cereal": 0.895}  # height of the object's centre resting on a bin floor
LIFT_SATURATION = 0.10  # progress: lifting this high counts fully
LIFT_WEIGHT, CARRY_WEIGHT = 0.3, 0.6  # progress: weights of lift and carry before placement

HOVER_Z = 0.95  # approach height: the open fingers clear the bin walls (top at 0.90) and the can
HOVER_TOL = 0.02  # horizontal distance to the can at which the descent starts
GRASP_DZ = -0.01  # grasp slightly below the can's centre
CLOSE_NEAR = 0.03  # start closing this near the grasp point: the wide-open fingers need a few steps
LIFT_CLEAR_Z = 0.93  # end-effector height after which the arm may move sideways while still rising
CARRY_Z = 1.0  # end-effector height while carrying, then holding after release: the can's bottom
# clears walls and dividers, and the arm waits well clear of it
LOWER_NEAR = 0.06  # start lowering when this close (xy) to the place point: the can is then inside
RELEASE_Z = 0.91  # end-effector height at release: the can drops ~2 cm onto the bin floor
RELEASE_TOL = 0.02  # distance to the release point at which the gripper opens
CLOSE_STEPS = 5  # robosuite ramps the Robotiq command by 0.2 a step: it takes steps to close
OPEN_STEPS = 3  # ... and to open far enough to let the can go
NOISY_SIGMA = 0.8  # std of the Gaussian noise on the arm action in the ``noisy`` failure mode


def target_xy(obj: str) -> np.ndarray:
    """Centre of ``obj``'s compartment of the right bin (robosuite's target_bin_placements)."""
    return BIN2_XY + COMPARTMENT_OFFSETS[obj]


class PickPlacePolicy(ScriptedPolicy):
    """Phase machine for PickPlace with the object ``obj``; ``wrong_place`` puts it in another
    compartment (none of ``spared_compartments``) or back in the start bin. Subclasses set ``obj``
    (a key of ``COMPARTMENT_OFFSETS``) and, for taller objects, the approach and carry heights."""

    obj: str
    hover_z: float = HOVER_Z
    carry_z: float = CARRY_Z  # also where the arm holds after release
    spared_compartments: tuple[str, ...] = ()

    failure_modes = ("nominal", *COMMON_FAILURES, "wrong_place")
    # The base's 0.4 is mostly corrected away by this closed-loop policy (~40% still place the can).
    noise_sigma = NOISY_SIGMA

    def __init__(self, failure: str = "nominal", rng: np.random.Generator | None = None):
        super().__init__(failure, rng)
        if failure == "misaligned_grasp":
            # The open Robotiq140 spans 14 cm along y and centres the can as it closes, so only an
            # offset across the fingers misses: keep the base's 3-5 cm length, aim it along +-x.
            length = np.linalg.norm(self.grasp_offset)
            self.grasp_offset = np.array([np.copysign(length, self.grasp_offset[0]), 0.0, 0.0])
        self.place_xy = target_xy(self.obj)
        if failure == "wrong_place":
            spared = {self.obj, *self.spared_compartments}
            wrong = [BIN2_XY + off for name, off in COMPARTMENT_OFFSETS.items() if name not in spared]
            wrong.append(BIN1_XY)
            self.place_xy = wrong[int(self.rng.integers(len(wrong)))]
        self._count = 0  # steps spent closing (phase 2) or opening (phase 6)
        self._grasp = np.zeros(3)  # grasp point, frozen when closing starts

    def plan(self, obs: dict) -> Command:
        self._advance(obs)
        if self.phase == 0:  # hover above the can
            return Command(np.array([*self._grasp_point(obs)[:2], self.hover_z]), close=False, gain=1.5)
        if self.phase == 1:  # descend around it
            return Command(self._grasp_point(obs), close=False, gain=1.5)
        if self.phase == 2:  # close while settling on the grasp point
            self._count += 1
            return Command(self._grasp, close=True, gain=1.5)
        if self.phase == 3:  # lift straight up
            return Command(np.array([*self._grasp[:2], self.carry_z]), close=True, gain=1.5)
        if self.phase == 4:  # carry over the place point, rising to the carry height on the way
            return Command(np.array([*self.place_xy, self.carry_z]), close=True, gain=1.5)
        if self.phase == 5:  # lower onto the place point
            return Command(self._release_point(), close=True, gain=1.5)
        if self.phase == 6:  # open in place
            self._count += 1
            return Command(self._release_point(), close=False)
        return Command(np.array([*self.place_xy, self.carry_z]), close=False, gain=1.5)  # rise, hold

    def _advance(self, obs: dict) -> None:
        """Move through every phase whose goal ``obs`` already meets, so no step is spent idle."""
        eef = obs["robot0_eef_pos"]
        if self.phase == 0 and np.linalg.norm(eef[:2] - self._grasp_point(obs)[:2]) < HOVER_TOL:
            self.phase = 1
        if self.phase == 1 and self.reached(obs, self._grasp_point(obs), CLOSE_NEAR):
            self.phase, self._count, self._grasp = 2, 0, self._grasp_point(obs)
        if self.phase == 2 and self._count >= CLOSE_STEPS:
            self.phase = 3
        if self.phase == 3 and eef[2] > LIFT_CLEAR_Z:
            self.phase = 4
        if self.phase == 4 and np.linalg.norm(eef[:2] - self.place_xy) < LOWER_NEAR:
            self.phase = 5
        if self.phase == 5 and self.reached(obs, self._release_point(), RELEASE_TOL):
            self.phase, self._count = 6, 0
        if self.phase == 6 and self._count >= OPEN_STEPS:
            self.phase = 7

    def _grasp_point(self, obs: dict) -> np.ndarray:
        return obs[f"{self.obj.capitalize()}_pos"] + self.grasp_offset + [0, 0, GRASP_DZ]

    def _release_point(self) -> np.ndarray:
        return np.array([*self.place_xy, RELEASE_Z])


class PickPlaceCanPolicy(PickPlacePolicy):
    obj = "can"


class PickPlaceMilkPolicy(PickPlacePolicy):
    obj = "milk"
    spared_compartments = (HELDOUT_OBJECT,)
    hover_z = 1.04  # the carton stands 15 cm tall: lower open fingers catch its top and tip it over


class PickPlaceBreadPolicy(PickPlacePolicy):
    obj = "bread"
    spared_compartments = (HELDOUT_OBJECT,)


class PickPlaceCerealPolicy(PickPlacePolicy):
    """The cereal box belongs in the far row, beside the can's compartment: with it a judge sees
    objects correctly placed in that row, not only mistakes there."""

    obj = "cereal"
    spared_compartments = (HELDOUT_OBJECT,)
    hover_z = 1.04  # the box is tall, as the milk carton is
    carry_z = 1.08  # a lower box catches on the right bin's wall


def object_progress(env, obj: str) -> float:
    """Task progress of ``obj``, in [0, 1].

    1 once its centre is inside its target compartment (robosuite's placement test, ignoring the
    gripper). Before that, up to 0.9: 30% for lifting it (full at 10 cm, or once it is above the
    target compartment, so lowering it there loses nothing) plus 60% for how far it has moved from
    the start bin toward the target row of the right bin (along y). 0 while it rests in the start
    bin.
    """
    pos = env.sim.data.body_xpos[env.obj_body_id[env.objects[env.object_id].name]]
    if not env.not_in_bin(pos, env.object_id):
        return 1.0
    target = target_xy(obj)
    over_target = np.all(np.abs(pos[:2] - target) < BIN_SIZE_XY / 4)
    lifted = 1.0 if over_target else np.clip((pos[2] - REST_Z[obj]) / LIFT_SATURATION, 0.0, 1.0)
    crossed = np.clip((pos[1] - BIN1_Y_EDGE) / (target[1] - BIN1_Y_EDGE), 0.0, 1.0)
    return float(LIFT_WEIGHT * lifted + CARRY_WEIGHT * crossed)


SOURCE = Source(
    name="pickplace_can_ur5e",
    task="PickPlaceCan",
    robot="UR5e",
    policy=PickPlaceCanPolicy,
    control_freq=4,
    horizon=64,
    instructions=(
        "put the can in the bin",
        "pick up the soda can and place it in the right bin",
        "move the can from the left bin to the right bin",
        "grab the can and drop it into its compartment of the other bin",
        "transfer the soda can into the bin on the right",
    ),
    near_miss_instructions=(
        "put the milk carton in the bin",
        "put the can in the left bin",
        "put the cereal box in the right bin",
        "put the loaf of bread in the right bin",
    ),
    objects=("Can",),
    progress=functools.partial(object_progress, obj="can"),
    env_kwargs={"gripper_types": "Robotiq140Gripper"},
)

MILK_SOURCE = Source(
    name="pickplace_milk_panda",
    task="PickPlaceMilk",
    robot="Panda",
    policy=PickPlaceMilkPolicy,
    control_freq=4,
    horizon=64,
    instructions=(
        "put the milk carton in the bin",
        "pick up the milk and place it in the right bin",
        "move the milk carton from the left bin to the right bin",
        "grab the milk carton and drop it into its compartment of the other bin",
    ),
    near_miss_instructions=(
        "put the milk carton in the left bin",
        "put the loaf of bread in the right bin",
        "put the cereal box in the right bin",
    ),
    objects=("Milk",),
    progress=functools.partial(object_progress, obj="milk"),
)

BREAD_SOURCE = Source(
    name="pickplace_bread_panda",
    task="PickPlaceBread",
    robot="Panda",
    policy=PickPlaceBreadPolicy,
    control_freq=4,
    horizon=64,
    instructions=(
        "put the bread in the bin",
        "pick up the loaf of bread and place it in the right bin",
        "move the bread from the left bin to the right bin",
        "grab the bread and drop it into its compartment of the other bin",
    ),
    near_miss_instructions=(
        "put the bread in the left bin",
        "put the milk carton in the right bin",
        "put the cereal box in the right bin",
    ),
    objects=("Bread",),
    progress=functools.partial(object_progress, obj="bread"),
)

MILK_KINOVA3_SOURCE = dataclasses.replace(
    MILK_SOURCE,
    name="pickplace_milk_kinova3",
    robot="Kinova3",
    env_kwargs={"gripper_types": "Robotiq140Gripper"},  # as for the can: the Robotiq85 linkage collapses
)

CEREAL_SOURCE = Source(
    name="pickplace_cereal_panda",
    task="PickPlaceCereal",
    robot="Panda",
    policy=PickPlaceCerealPolicy,
    control_freq=4,
    horizon=64,
    instructions=(
        "put the cereal box in the bin",
        "pick up the cereal and place it in the right bin",
        "move the cereal box from the left bin to the right bin",
        "grab the cereal box and drop it into its compartment of the other bin",
    ),
    near_miss_instructions=(
        "put the cereal box in the left bin",
        "put the milk carton in the right bin",
        "put the loaf of bread in the right bin",
    ),
    objects=("Cereal",),
    progress=functools.partial(object_progress, obj="cereal"),
    # The Panda's own gripper cannot hold the box through the carry; the Robotiq140 can.
    env_kwargs={"gripper_types": "Robotiq140Gripper"},
)
