"""The oracle: six-dimension labels of a video from the privileged state of the frames it shows.

Labels follow the paper's rubric and ranges (Instruction Following 0-3, Manipulation Success 0-2,
Action-Outcome Consistency 0-1, Temporal Consistency 0-1, Contact Realism 0-1, Physics Adherence
0-2). They are a function of

- the *displayed trace*: per displayed frame, the robosuite state behind it (end-effector position,
  gripper opening, object poses, contact facts, success). For a clean clip it is the recorded state;
  for a bench degradation it is the state actually rendered (re-ordered frames, or object poses
  edited and contacts recomputed by MuJoCo), so the same rules label real and corrupted videos;
- the instruction's relation to the episode (``correct``, ``near_miss`` for the same task with a
  wrong object or direction, ``other_task``);
- the episode's scripted intent (its failure mode: a ``wrong_*`` mode acts on the wrong target);
- pixel-level facts a state cannot show (temporal re-ordering, flicker, strong artifacts), which set
  Temporal Consistency by construction.

Rules (object = a task object; the *target* is object 0; distances in metres, per displayed frame):

Manipulation Success: 2 if the last frame passes robosuite's success check and the robot did it
(it touched the target in one of the 3 frames before the first success frame, or the clip opens on
the task done with the target resting or held); 1 if, without that, the target was grasped, or the
robot touched it in one of the 3 frames before it first moved >= 2 cm or reached progress >= 0.1
(partial); else 0. An object that moves by itself does not count.
With a wrong instruction the instructed task is not what happened: 0.

Instruction Following: ``other_task`` 0, ``near_miss`` 1; with the correct instruction: 3 on
success; 1 for a wrong-target failure mode; 2 if the gripper came within 5 cm of the target or the
task partially succeeded (correct action, incomplete or imprecise); 1 if it closed >= 30 % of its
initial distance to the target (vaguely related); else 0.

Physics Adherence (the minimum over violations, 2 if none):
- teleport: a free object (see ``_steps``: left alone for ``SETTLE`` frames, not falling, not
  riding with the gripper) moves > 4 cm between two frames -> 0;
- vanish: an object that was visible disappears -> 0;
- float: an object without any contact stays still >= 3 frames while >= 1 cm above rest ->
  1 below 4 cm, 0 from 4 cm up;
- sink: penetration into the table or bin > 8 mm -> 1; > 20 mm -> 0.

Contact Realism: 0 if a free object drifts >= 3 cm in total through steps below the teleport size
(moves with no contact), or if the robot penetrates an object by > 10 mm (passes through it); else 1.

Action-Outcome Consistency: 0 if a lifted, ungrasped, untouched object moves with the end effector
for >= 2 frames (follows an open gripper), or if, after a grasp, the fingers stay at the holding
width while the object, no longer grasped, stays within 1 cm of where it was grasped and ends up
>= 3 cm further from the gripper (stays behind a closed grasp; a real release or slip moves the
object or the fingers); else 1.
When the video comes with actions that are not the ones that made it (another episode's, or the
same ones mirrored), it is 0 if those actions command something else (:func:`actions_match`): the
paths of their summed translation commands part by >= 1.5 action units (about 2.5-6 cm of
end-effector travel in these sources), or their gripper commands disagree on >= 4 steps.

The thresholds were checked against clean episodes of all four sources: real physics (a push's
coasting, a dropped can rolling, a cube tumbling after a release) does not trip them.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from roboalign_env.rubric import DIMENSIONS

INSTRUCTION_KINDS = ("correct", "near_miss", "other_task")
WRONG_TARGET_FAILURES = ("wrong_object", "wrong_place", "wrong_direction")

MOVED = 0.02
PROGRESS_PARTIAL = 0.1
APPROACH = 0.05
MOTION_NOISE = 0.003
TELEPORT = 0.04
DRIFT = 0.03
COMOVE = 0.01
LIFTED = 0.01
FLOAT_MINOR_MAX = 0.04
FLOAT_FRAMES = 3
SINK_MINOR = 0.008
SINK_SEVERE = 0.02
PASS_THROUGH = 0.01
HOLD_WIDTH = 0.004
SETTLE = 4  # transitions an object must be left alone before its motion counts as free
STAYS_BEHIND = 0.03
STILL = 0.01
COMMAND_PATH_GAP = 1.5  # summed translation commands, in action units
GRIPPER_DISAGREEMENT = 4  # steps
CAUSE_FRAMES = 3  # a change counts as the robot's doing if it touched the target this recently


@dataclass(frozen=True)
class Labels:
    instruction_following: int
    manipulation_success: int
    action_outcome_consistency: int
    temporal_consistency: int
    contact_realism: int
    physics_adherence: int

    def as_dict(self) -> dict[str, int]:
        return {d: getattr(self, d) for d in DIMENSIONS}

    @property
    def aggregate(self) -> int:
        return sum(self.as_dict().values())


def label_trace(
    trace: dict[str, np.ndarray],
    rest_z: np.ndarray,
    instruction_kind: str = "correct",
    failure: str = "nominal",
    temporally_consistent: bool = True,
) -> Labels:
    """Six-dimension labels of the video whose displayed frames have state ``trace``.

    ``rest_z`` holds each object's resting height (its z in the episode's first frame).
    """
    if instruction_kind not in INSTRUCTION_KINDS:
        raise ValueError(f"instruction_kind={instruction_kind!r}; expected one of {INSTRUCTION_KINDS}")
    ms = manipulation_success(trace, instruction_kind)
    return Labels(
        instruction_following=instruction_following(trace, instruction_kind, failure, ms),
        manipulation_success=ms,
        action_outcome_consistency=action_outcome_consistency(trace, rest_z),
        temporal_consistency=int(temporally_consistent),
        contact_realism=contact_realism(trace),
        physics_adherence=physics_adherence(trace, rest_z),
    )


# -- task dimensions ---------------------------------------------------------------------------
def manipulation_success(trace, instruction_kind: str) -> int:
    if instruction_kind != "correct":
        return 0
    touch = trace["robot_contact"][:, 0]
    success = trace["success"].astype(bool)
    if success[-1]:
        if success[0]:  # the clip opens on the task done: it counts if the target rests or is held
            if trace["support_contact"][0, 0] or touch[0]:
                return 2
        elif _touched_before(touch, _first(success)):  # the robot brought the success about
            return 2
    target = trace["object_pos"][:, 0]
    moved = np.linalg.norm(target - target[0], axis=-1) >= MOVED
    progressed = (trace["progress"] >= PROGRESS_PARTIAL) & (trace["progress"][0] < PROGRESS_PARTIAL)
    changed = _first(moved | progressed)
    if trace["grasp"][:, 0].any() or _touched_before(touch, changed):
        return 1
    return 0


def _touched_before(touch: np.ndarray, frame: int) -> bool:
    """Whether the robot touched the target in one of the ``CAUSE_FRAMES`` frames before ``frame``."""
    return frame < len(touch) and bool(touch[max(0, frame - CAUSE_FRAMES) : frame].any())


def _first(mask: np.ndarray) -> int:
    """Index of the first true entry, or ``len(mask)`` if none."""
    return int(np.argmax(mask)) if mask.any() else len(mask)


def instruction_following(trace, instruction_kind: str, failure: str, ms: int) -> int:
    if instruction_kind == "other_task":
        return 0
    if instruction_kind == "near_miss":
        return 1
    if ms == 2:
        return 3
    if failure in WRONG_TARGET_FAILURES:
        return 1
    distance = np.linalg.norm(trace["eef_pos"] - trace["object_pos"][:, 0], axis=-1)
    if distance.min() < APPROACH or ms == 1:
        return 2
    if distance.min() <= 0.7 * distance[0]:
        return 1
    return 0


# -- physical dimensions -----------------------------------------------------------------------
def _steps(trace, j: int):
    """Per transition i -> i+1 of object j: displacement, and whether it is *free* motion.

    Free motion is what no physics explains: the object is visible, untouched and not falling in this
    and the ``SETTLE - 1`` previous transitions (so a push's or a fall's aftermath is not counted), not falling, and not
    riding along with the end effector.
    Also returned: the co-moving and touched masks, which the other rules need.
    """
    pos = trace["object_pos"][:, j]
    d = np.diff(pos, axis=0)
    e = np.diff(trace["eef_pos"], axis=0)
    touch = trace["robot_contact"][:, j]
    touched = touch[:-1] | touch[1:]
    horizontal = np.linalg.norm(d[:, :2], axis=-1)
    falling = (d[:, 2] < 0) & (horizontal <= np.maximum(0.01, 0.5 * -d[:, 2])) & ~trace["support_contact"][:-1, j]
    comoving = (np.linalg.norm(d - e, axis=-1) < COMOVE) & (np.linalg.norm(e, axis=-1) > 0.005)
    visible = trace["visible"][:-1, j] & trace["visible"][1:, j]
    untouched = ~touched & ~falling
    settled = untouched.copy()
    for lag in range(1, SETTLE):
        settled[lag:] &= untouched[:-lag]
    free = visible & settled & ~comoving
    return np.linalg.norm(d, axis=-1), free, touched, comoving, visible


def physics_adherence(trace, rest_z: np.ndarray) -> int:
    score = 2
    n_obj = trace["object_pos"].shape[1]
    for j in range(n_obj):
        dist, free, _, _, _ = _steps(trace, j)
        if (free & (dist > TELEPORT)).any():
            score = 0
        vis = trace["visible"][:, j]
        if vis.any() and not vis[np.argmax(vis):].all():
            score = 0
        height = trace["object_pos"][:, j, 2] - rest_z[j]
        no_contact = ~trace["robot_contact"][:, j] & ~trace["support_contact"][:, j] & vis
        still = np.concatenate([[True], dist < MOTION_NOISE])
        hovering = no_contact & still & (height >= LIFTED)
        run = _longest_run(hovering)
        if run >= FLOAT_FRAMES:
            score = min(score, 1 if height[hovering].max() < FLOAT_MINOR_MAX else 0)
        sink = trace["support_penetration"][:, j].max()
        if sink > SINK_SEVERE:
            score = 0
        elif sink > SINK_MINOR:
            score = min(score, 1)
    return score


def contact_realism(trace) -> int:
    for j in range(trace["object_pos"].shape[1]):
        dist, free, _, _, _ = _steps(trace, j)
        drift = free & (dist > MOTION_NOISE) & (dist <= TELEPORT)
        if dist[drift].sum() >= DRIFT:
            return 0
        if trace["robot_penetration"][:, j].max() > PASS_THROUGH:
            return 0
    return 1


def action_outcome_consistency(trace, rest_z: np.ndarray) -> int:
    for j in range(trace["object_pos"].shape[1]):
        _, _, touched, comoving, visible = _steps(trace, j)
        lifted = (trace["object_pos"][1:, j, 2] - rest_z[j] >= LIFTED) & ~trace["support_contact"][1:, j]
        follow = visible & ~touched & comoving & lifted & ~trace["grasp"][1:, j]
        if _longest_run(follow) >= 2:
            return 0
        grasped = np.flatnonzero(trace["grasp"][:, j])
        if len(grasped):
            g = grasped[0]
            width = trace["gripper_opening"][g]
            gap = np.linalg.norm(trace["object_pos"][:, j] - trace["eef_pos"], axis=-1)
            holding = np.abs(trace["gripper_opening"][g:] - width) <= HOLD_WIDTH
            released = ~trace["grasp"][g:, j]
            still = np.linalg.norm(trace["object_pos"][g:, j] - trace["object_pos"][g, j], axis=-1) < STILL
            behind = holding & released & still & (gap[g:] - gap[g] >= STAYS_BEHIND) & trace["visible"][g:, j]
            if behind.any():
                return 0
    return 1


def _longest_run(mask: np.ndarray) -> int:
    best = run = 0
    for value in mask:
        run = run + 1 if value else 0
        best = max(best, run)
    return best


def actions_match(executed: np.ndarray, given: np.ndarray) -> bool:
    """Whether ``given`` (A, 7) actions command what the ``executed`` (A, 7) ones did (see the module's AOC rule).

    Translation is compared as cumulative paths (a lag or a small detour is not a different
    command); the gripper as the sign of its command at each step.
    """
    if executed.shape != given.shape:
        raise ValueError(f"actions of shapes {executed.shape} and {given.shape}; expected two equal (A, 7) arrays")
    gap = np.linalg.norm(np.cumsum(executed[:, :3] - given[:, :3], axis=0), axis=-1)
    gripper = np.sign(executed[:, 6]) != np.sign(given[:, 6])
    return not (len(gap) and gap.max() >= COMMAND_PATH_GAP) and int(gripper.sum()) < GRIPPER_DISAGREEMENT
