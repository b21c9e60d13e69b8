"""Degradations for RobotWorldBench: ways a video can go wrong, with known effects on the labels.

Four families:

- **Temporal** (:data:`TEMPORAL`): re-order the displayed frames (drop, repeat, reverse, shuffle,
  sudden jump) or flicker their brightness. Temporal Consistency becomes 0 by construction; the
  other labels come from the oracle on the re-ordered state trace.
- **Pixel artifacts** (:data:`PIXEL`): blur, noise, blocking, colour drift, each ``mild`` or
  ``strong``. A mild artifact leaves every label unchanged (a judge must be robust to it); a strong
  one is a visible generation artifact, so Temporal Consistency becomes 0 ("flickering ... or
  artifacts" in the rubric). The state trace is unchanged.
- **State edits** (:data:`STATE_EDITS`): the object's pose (or the gripper's fingers) is edited in
  the simulator state and the frame re-rendered by MuJoCo, with contacts recomputed; the oracle then
  labels the edited trace. Each edit targets one dimension: ``teleport``, ``vanish``, ``float``,
  ``sink`` -> Physics Adherence (0 or 1 by severity); ``slide`` (object moves with no contact),
  ``pass_through`` (gripper passes through the object) -> Contact Realism 0; ``follow_open``
  (object follows an open gripper), ``stays_behind`` (object stays behind a closed lifting grasp)
  -> Action-Outcome Consistency 0.

- **Dream artifacts** (:data:`DREAM_ARTIFACTS`): how a world model that ignores the action draws a
  real episode. ``ghost_arm``: the scene stays the first frame and whatever moved (the arm, and an
  object it carried) is drawn as a faint trail smeared over the last few frames. Labels come from
  what the frames show (:func:`ghost_trace`): no object leaves its pixels and a ghost neither grasps
  nor touches, so Manipulation Success is 0; the dissolving arm makes Temporal Consistency 0 and
  Physics Adherence at most 1; where the real arm grasped or touched an object, the frames show a
  grasp with no effect (Action-Outcome Consistency 0) and an arm passing through it (Contact
  Realism 0).

All randomness comes from the ``np.random.Generator`` passed in.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

TEMPORAL = ("frame_drop", "repeat", "reverse", "shuffle", "flicker", "sudden_jump")
PIXEL = ("blur", "noise", "blocking", "colour_drift")
STRENGTHS = ("mild", "strong")
PHYSICS_EDITS = ("teleport", "vanish", "float", "sink")
CONTACT_EDITS = ("slide", "pass_through")
AOC_EDITS = ("follow_open", "stays_behind")
STATE_EDITS = PHYSICS_EDITS + CONTACT_EDITS + AOC_EDITS
DREAM_ARTIFACTS = ("ghost_arm",)
MIN_FRAMES = 8
TEMPORAL_MIN_FRAMES = 12  # a re-ordering needs room: drop >= 2 frames and keep >= MIN_FRAMES
SLIDE_MIN_FRAMES = 11  # 4 still frames, then >= 6 frames of sliding
SEVERE_FRACTION = 0.3  # of float and sink edits; side effects already push some minor ones to PA 0


# -- temporal ----------------------------------------------------------------------------------
def temporal_indices(kind: str, n: int, rng: np.random.Generator) -> tuple[np.ndarray, dict]:
    """Positions (into an ``n``-frame clip) to display for a re-ordering degradation, and its params."""
    if n < TEMPORAL_MIN_FRAMES:
        raise ValueError(f"temporal degradations need clips of >= {TEMPORAL_MIN_FRAMES} frames, got {n}")
    idx = np.arange(n)
    if kind == "frame_drop":
        k = int(rng.integers(2, max(3, n // 3)))
        drop = rng.choice(np.arange(1, n - 1), size=min(k, n - MIN_FRAMES), replace=False)
        return np.delete(idx, drop), {"dropped": sorted(drop.tolist())}
    if kind == "repeat":
        at, k = int(rng.integers(1, n - 2)), int(rng.integers(3, 7))
        out = np.concatenate([idx[: at + 1], np.full(k, at), idx[at + 1 :]])[:n]
        return out, {"frame": at, "times": k}
    if kind == "reverse":
        return idx[::-1].copy(), {}
    if kind == "shuffle":
        length = int(rng.integers(4, max(5, n // 2)))
        start = int(rng.integers(0, n - length))
        out = idx.copy()
        seg = out[start : start + length]
        while np.array_equal(seg, idx[start : start + length]):
            seg = rng.permutation(seg)
        out[start : start + length] = seg
        return out, {"start": start, "length": length}
    if kind == "sudden_jump":
        skip = min(int(rng.integers(6, 12)), n - MIN_FRAMES)  # >= 4 since n >= TEMPORAL_MIN_FRAMES
        at = int(rng.integers(2, n - skip - 1))  # at least one frame after the jump
        return np.concatenate([idx[:at], idx[at + skip :]]), {"at": at, "skipped": skip}
    if kind == "flicker":
        return idx, {}
    raise ValueError(f"unknown temporal degradation {kind!r}; expected one of {TEMPORAL}")


def flicker(frames: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, dict]:
    """Scale the brightness of a few random frames by 0.45-0.65 or 1.5-1.9."""
    n = len(frames)
    which = rng.choice(n, size=max(2, n // 5), replace=False)
    gains = np.where(rng.random(len(which)) < 0.5, rng.uniform(0.45, 0.65, len(which)), rng.uniform(1.5, 1.9, len(which)))
    out = frames.astype(np.float32)
    out[which] *= gains[:, None, None, None]
    return _to_uint8(out), {"frames": sorted(which.tolist()), "gains": np.round(gains, 3).tolist()}


# -- pixel artifacts ---------------------------------------------------------------------------
PIXEL_PARAMS = {
    # (mild, strong) parameter of each artifact
    "blur": (0.6, 2.0),  # Gaussian sigma, pixels
    "noise": (4.0, 28.0),  # Gaussian std, grey levels
    "blocking": (2, 8),  # block size, pixels
    "colour_drift": (0.04, 0.35),  # peak per-channel gain change over the clip
}


def pixel_artifact(frames: np.ndarray, kind: str, strength: str, rng: np.random.Generator) -> tuple[np.ndarray, dict]:
    """Apply a generation-like artifact to a (T, H, W, 3) uint8 clip."""
    if strength not in STRENGTHS:
        raise ValueError(f"strength={strength!r}; expected one of {STRENGTHS}")
    if kind not in PIXEL_PARAMS:
        raise ValueError(f"unknown pixel artifact {kind!r}; expected one of {PIXEL}")
    p = PIXEL_PARAMS[kind][STRENGTHS.index(strength)]
    x = frames.astype(np.float32)
    if kind == "blur":
        x = _gaussian_blur(x, p)
    elif kind == "noise":
        x = x + rng.normal(0.0, p, size=x.shape)
    elif kind == "blocking":
        t, h, w, c = x.shape
        x = x.reshape(t, h // p, p, w // p, p, c).mean(axis=(2, 4), keepdims=True)
        x = np.broadcast_to(x, (t, h // p, p, w // p, p, c)).reshape(t, h, w, c)
    elif kind == "colour_drift":
        direction = rng.uniform(-1.0, 1.0, size=3)
        direction /= np.abs(direction).max()
        ramp = np.linspace(0.0, 1.0, len(x))[:, None]
        x = x * (1.0 + p * ramp * direction)[:, None, None, :]
    return _to_uint8(x), {"param": p}


# -- dream artifacts ---------------------------------------------------------------------------
def ghost_arm(frames: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, dict]:
    """The first frame, with what changed since it (the moving arm) averaged over the last ``trail``
    frames, blurred and faded: a (T, H, W, 3) uint8 clip of a grey ghost over a frozen scene."""
    trail, alpha, sigma = int(rng.integers(3, 7)), float(rng.uniform(0.35, 0.6)), float(rng.uniform(1.0, 2.5))
    x = frames.astype(np.float32)
    change = np.cumsum(x - x[0], axis=0)
    lagged = np.concatenate([np.zeros_like(change[:trail]), change[:-trail]]) if trail < len(x) else np.zeros_like(change)
    counts = np.minimum(np.arange(1, len(x) + 1), trail)[:, None, None, None]
    smeared = (change - lagged) / counts
    return _to_uint8(x[0] + alpha * _gaussian_blur(smeared, sigma)), {"trail": trail, "alpha": round(alpha, 3),
                                                                     "sigma": round(sigma, 3)}


def ghost_trace(trace: dict) -> tuple[dict, dict]:
    """The state a ``ghost_arm`` clip displays, and the label caps its artifact implies.

    Objects stay where they were in the first frame, nothing is grasped, touched or achieved (the
    end effector still moves: its ghost does). Caps: Temporal Consistency 0, Physics Adherence <= 1,
    and Action-Outcome Consistency / Contact Realism 0 where the real arm grasped / touched an object.
    """
    shown = {k: v.copy() for k, v in trace.items()}
    shown["object_pos"][:] = trace["object_pos"][:1]
    for flag in ("grasp", "gripper_contact", "robot_contact"):
        shown[flag][:] = False
    shown["support_contact"][:] = trace["support_contact"][:1]
    shown["success"][:] = False
    shown["progress"][:] = np.minimum(trace["progress"], trace["progress"][:1])
    caps = {"temporal_consistency": 0, "physics_adherence": 1}
    if trace["grasp"].any():
        caps["action_outcome_consistency"] = 0
    if trace["robot_contact"].any():
        caps["contact_realism"] = 0
    return shown, caps


def _gaussian_blur(x: np.ndarray, sigma: float) -> np.ndarray:
    radius = max(1, int(round(3 * sigma)))
    kernel = np.exp(-0.5 * (np.arange(-radius, radius + 1) / sigma) ** 2)
    kernel /= kernel.sum()
    for axis in (1, 2):
        pad = [(0, 0)] * x.ndim
        pad[axis] = (radius, radius)
        padded = np.pad(x, pad, mode="edge")
        x = sum(w * np.take(padded, np.arange(i, i + x.shape[axis]), axis=axis) for i, w in enumerate(kernel))
    return x


def _to_uint8(x: np.ndarray) -> np.ndarray:
    return np.clip(np.rint(x), 0, 255).astype(np.uint8)


# -- state edits -------------------------------------------------------------------------------
@dataclass
class StateEdit:
    """An edit of a clip's simulator state, applied before re-rendering each displayed frame.

    ``object_pos`` replaces the target object's position in the frames where it is not NaN (a
    free-floating target); ``joint`` replaces the value of the source's edit joint likewise (a
    hinged target such as a door); ``hidden`` frames move the object out of the scene;
    ``open_gripper`` frames set the fingers to their widest opening in the episode.
    """

    kind: str
    object_pos: np.ndarray
    hidden: np.ndarray
    open_gripper: np.ndarray
    joint: np.ndarray
    params: dict = field(default_factory=dict)

    @classmethod
    def empty(cls, kind: str, n: int) -> "StateEdit":
        return cls(kind, np.full((n, 3), np.nan), np.zeros(n, bool), np.zeros(n, bool), np.full(n, np.nan))


def plan_state_edit(kind: str, trace: dict, rng: np.random.Generator) -> StateEdit | None:
    """Plan edit ``kind`` on a clip with state ``trace`` (target = object 0); ``None`` if it cannot apply.

    Edits that need the object left alone (teleport, float, sink, slide) require the target to be
    untouched by the robot during the affected frames; the grasp edits require a grasp followed by a
    lift of at least 3 cm.
    """
    n = len(trace["eef_pos"])
    pos = trace["object_pos"][:, 0].astype(np.float64)
    touched = trace["robot_contact"][:, 0]
    untouched_run = _leading_untouched(touched)
    edit = StateEdit.empty(kind, n)
    if kind == "teleport":
        if untouched_run < n:
            return None  # the robot would reach for a ghost: keep teleports on untouched clips
        at = int(rng.integers(4, n - 1))
        shift = _horizontal(rng, rng.uniform(0.06, 0.12))
        edit.object_pos[at:] = pos[at:] + shift
        edit.params = {"frame": at, "shift": np.round(shift, 4).tolist()}
    elif kind == "vanish":
        at = int(rng.integers(2, n - 2))
        edit.hidden[at:] = True
        edit.params = {"frame": at}
    elif kind in ("float", "sink"):
        if untouched_run < n:
            return None
        severe = bool(rng.random() < SEVERE_FRACTION)
        if kind == "float":
            dz = rng.uniform(0.05, 0.10) if severe else rng.uniform(0.015, 0.03)
        else:
            dz = -(rng.uniform(0.03, 0.045) if severe else rng.uniform(0.011, 0.017))
        edit.object_pos[:] = pos + [0.0, 0.0, dz]
        edit.params = {"severity": "severe" if severe else "minor", "dz": round(float(dz), 4)}
    elif kind == "slide":
        if untouched_run < n or n < SLIDE_MIN_FRAMES:
            return None
        at = int(rng.integers(4, n - 6))
        speed = rng.uniform(0.012, 0.022)
        step = _horizontal(rng, speed)
        edit.object_pos[at:] = pos[at:] + step * np.arange(1, n - at + 1)[:, None]
        edit.params = {"frame": at, "speed": round(float(speed), 4)}
    elif kind == "pass_through":
        if not trace["gripper_contact"][:, 0].any():
            return None
        first = int(np.argmax(trace["gripper_contact"][:, 0]))
        # The renderer centres the object on a finger pad from first contact on (see
        # ``finger_pad_offset``), so the finger passes through it.
        edit.params = {"frame": first}
    elif kind in ("follow_open", "stays_behind"):
        carry = _grasp_then_carry(trace)
        if carry is None:
            return None
        g, carried = carry
        if kind == "follow_open":
            edit.open_gripper[g + 1 :] = True
            edit.params = {"frame": g + 1}
        else:
            edit.object_pos[g:] = pos[g]
            edit.params = {"frame": g, "carry_frame": carried}
    else:
        raise ValueError(f"unknown state edit {kind!r}; expected one of {STATE_EDITS}")
    return edit


def _leading_untouched(touched: np.ndarray) -> int:
    return int(np.argmax(touched)) if touched.any() else len(touched)


def _horizontal(rng: np.random.Generator, length: float) -> np.ndarray:
    angle = rng.uniform(0, 2 * np.pi)
    return np.array([np.cos(angle), np.sin(angle), 0.0]) * length


def _grasp_then_carry(trace: dict) -> tuple[int, int] | None:
    """(first grasp frame, first frame the target is >= 3 cm from where it was grasped), if any."""
    grasp = trace["grasp"][:, 0]
    if not grasp.any():
        return None
    g = int(np.argmax(grasp))
    pos = trace["object_pos"][:, 0]
    away = np.flatnonzero(np.linalg.norm(pos[g:] - pos[g], axis=-1) >= 0.03)
    if not len(away) or g + 1 >= len(pos) - 2:
        return None
    return g, g + int(away[0])


HINGE_EDITS = ("teleport", "slide", "stays_behind")


def plan_hinge_edit(kind: str, trace: dict, angle: np.ndarray, rng: np.random.Generator) -> StateEdit | None:
    """Plan edit ``kind`` for a hinged target (a door) by overriding its joint ``angle`` per frame.

    ``teleport``: the door jumps 0.3-0.4 rad at once; ``slide``: it swings 0.04-0.06 rad per frame
    with nothing touching it; ``stays_behind``: it stays shut while the closed gripper pulls away.
    The other edits have no hinged counterpart and return ``None``.
    """
    n = len(angle)
    touched = trace["robot_contact"][:, 0]
    edit = StateEdit.empty(kind, n)
    sign = 1.0 if angle.max() < 0.2 else -1.0  # move towards the open side, or back if already open
    if kind == "teleport":
        if touched.any():
            return None
        at = int(rng.integers(4, n - 1))
        jump = sign * rng.uniform(0.3, 0.4)
        edit.joint[at:] = angle[at:] + jump
        edit.params = {"frame": at, "jump_rad": round(float(jump), 3)}
    elif kind == "slide":
        if touched.any() or n < SLIDE_MIN_FRAMES:
            return None
        at = int(rng.integers(4, n - 6))
        speed = sign * rng.uniform(0.04, 0.06)
        edit.joint[at:] = angle[at:] + speed * np.arange(1, n - at + 1)
        edit.params = {"frame": at, "rad_per_frame": round(float(speed), 3)}
    elif kind == "stays_behind":
        carry = _grasp_then_carry(trace)
        if carry is None:
            return None
        g, carried = carry
        edit.joint[g:] = angle[g]
        edit.params = {"frame": g, "carry_frame": carried}
    else:
        return None
    return edit
