"""Door with Kinova3: grasp the door handle and pull the door open (latch disabled).

Phases: turn the gripper horizontal and move in front of the handle bar, approach it along the
door normal, close on the bar from above and below, pull the grasp point along an arc around the
hinge, hold the door open.

Choices forced by the simulation:

- The Kinova3's default Robotiq 2F-85 does not close past ~6 cm between its pads in robosuite 1.5
  (its linkage collides with itself), so it cannot pinch any part of the handle; the env uses the
  Robotiq 2F-140, the other gripper Kinova sells for the Gen3.
- The base class sends no wrist rotation; this policy adds a proportional rotation command towards a
  fixed horizontal gripper orientation (fingers closing vertically). A top-down grasp would straddle
  the bar so that open fingers hook it and still pull the door open; pinching the bar from above and
  below needs a closed gripper to pull.
- The latch is disabled: it only releases after turning the handle by ~1.25 rad, which a parallel
  gripper cannot follow without re-grasping.
- ``misaligned_grasp`` is not a failure mode here: the handle is a 15 cm bar and the 2F-140 opens
  13 cm and self-centres, so a 3-5 cm offset still grasps it (81% success over 16 seeds).
"""

from __future__ import annotations

import functools

import numpy as np

from roboalign_env.sim.scripted.base import COMMON_FAILURES, Command, ScriptedPolicy, Source

PREGRASP = 0.10  # metres in front of the handle (along the door normal) before approaching it
GRASP_DEPTH = 0.01  # metres past the handle site (into the door normal) so the pads cover the bar
CLOSE_STEPS = 10  # steps spent closing the gripper in place
OPEN_ANGLE = 0.38  # radians of hinge rotation the pull aims for (joint limit 0.4)
SUCCESS_ANGLE = 0.3  # robosuite's Door success threshold on the hinge angle
OSC_ROT_SCALE = 0.5  # OSC_POSE maps a rotation action of 1.0 to this many radians per step
ORI_TOL = 0.1  # radians of orientation error accepted before approaching or grasping the handle
# Gripper (robot0_eef_quat frame) pointing along -y with the fingers closing along z: the default
# top-down orientation (180 degrees about x) turned by -90 degrees about the world x axis.
TOP_DOWN = np.diag([1.0, -1.0, -1.0])
# Hinge and handle site in the door body's frame (robosuite door.xml).
HINGE_IN_DOOR = np.array([0.255, 0.0])
HANDLE_IN_DOOR = np.array([-0.05, -0.10])
NORMAL_IN_DOOR = np.array([0.0, -1.0])  # the side the handle sticks out to, towards the robot


@functools.cache
def grasp_orientation() -> np.ndarray:
    """The gripper's orientation for pinching the handle (robosuite is imported on first use)."""
    import robosuite.utils.transform_utils as T

    return T.quat2mat(T.axisangle2quat(np.array([-np.pi / 2, 0.0, 0.0]))) @ TOP_DOWN


def _rot_z(angle: float) -> np.ndarray:
    """2-D rotation matrix by ``angle`` about the vertical axis."""
    c, s = np.cos(angle), np.sin(angle)
    return np.array([[c, -s], [s, c]])


def _heading(vec: np.ndarray) -> float:
    """Angle of a horizontal vector from the x axis."""
    return float(np.arctan2(vec[1], vec[0]))


class DoorPolicy(ScriptedPolicy):
    """Pinch the handle bar from the front, then swing it around the hinge."""

    failure_modes = (
        "nominal",
        *(mode for mode in COMMON_FAILURES if mode != "misaligned_grasp"),
        "wrong_direction",
    )

    def __call__(self, obs: dict) -> np.ndarray:
        """Compute the wrist rotation towards :func:`grasp_orientation`, then the base class's action."""
        self._ori_error = self._orientation_error(obs)
        return super().__call__(obs)

    @staticmethod
    def _orientation_error(obs: dict) -> np.ndarray:
        """Axis-angle (world frame) turning the gripper onto :func:`grasp_orientation`."""
        import robosuite.utils.transform_utils as T

        current = T.quat2mat(obs["robot0_eef_quat"])
        return T.quat2axisangle(T.mat2quat(grasp_orientation() @ current.T))

    def _apply_failure(self, action: np.ndarray) -> np.ndarray:
        """Add the wrist rotation before the common failures perturb the arm part of the action."""
        action[3:6] = np.clip(self._ori_error / OSC_ROT_SCALE, -1.0, 1.0)
        return super()._apply_failure(action)

    def plan(self, obs: dict) -> Command:
        if self.phase == 0:  # read the door pose while it is still shut (its yaw is randomised)
            seen = (obs["handle_pos"] - obs["door_pos"])[:2]
            door_rot = _rot_z(_heading(seen) - _heading(HANDLE_IN_DOOR))
            self._hinge = obs["door_pos"][:2] + door_rot @ HINGE_IN_DOOR
            normal = np.r_[door_rot @ NORMAL_IN_DOOR, 0.0]
            self._grasp = obs["handle_pos"] - normal * GRASP_DEPTH
            self._pregrasp = self._grasp + normal * PREGRASP
            self.phase = 1
        aligned = np.linalg.norm(self._ori_error) < ORI_TOL
        if self.phase == 1:  # turn the gripper and move in front of the handle
            if aligned and self.reached(obs, self._pregrasp, 0.02):
                self.phase = 2
            return Command(self._pregrasp, close=False, gain=1.5)
        if self.phase == 2:  # approach the bar along the door normal; close only when square to it
            if aligned and self.reached(obs, self._grasp, 0.012):
                self.phase, self._closing = 3, 0
            return Command(self._grasp, close=False, gain=1.5)
        if self.phase == 3:  # close in place
            self._closing += 1
            if self._closing >= CLOSE_STEPS:
                self.phase = 4
            return Command(self._grasp, close=True)
        angle = -OPEN_ANGLE if self.failure == "wrong_direction" else OPEN_ANGLE
        arm = self._grasp[:2] - self._hinge
        target = np.r_[self._hinge + _rot_z(angle) @ arm, self._grasp[2]]
        return Command(target, close=True, gain=1.5)  # pull along the arc and hold


def door_progress(env) -> float:
    """Hinge angle as a fraction of robosuite's 0.3 rad success threshold, clipped to [0, 1]."""
    return float(np.clip(env.sim.data.qpos[env.hinge_qpos_addr] / SUCCESS_ANGLE, 0.0, 1.0))


SOURCE = Source(
    name="door_kinova3",
    task="Door",
    robot="Kinova3",
    policy=DoorPolicy,
    control_freq=10,
    horizon=64,
    instructions=(
        "open the door",
        "pull the door open by its handle",
        "grasp the door handle and swing the door open",
        "pull the door toward you",
    ),
    near_miss_instructions=(
        "close the door",
        "push the door shut",
        "push the door away from you",
    ),
    objects=("Door_handle",),  # the handle site: its pose and its body's geoms stand for the door
    progress=door_progress,
    env_kwargs={"use_latch": False, "gripper_types": "Robotiq140Gripper"},
    edit_joint="Door_hinge",
)
