"""RobotWorldBench builder: (video, instruction) pairs with six-dimension oracle labels.

From every collected episode the builder draws a fixed recipe of pairs (:data:`RECIPE`): clean
clips (the full episode, an incomplete prefix, a random window, and for a successful episode a window
ending as the success happens), instruction swaps, temporal
re-orderings, pixel artifacts, real videos paired with actions that did not make them (another
episode's of the same source, or their own mirrored), and simulator state edits that are re-rendered in robosuite (see
:mod:`roboalign_env.sim.degradations`). Every pair is labelled by :mod:`roboalign_env.sim.oracle`
from the state of the frames it displays. An edit that cannot apply to an episode (a grasp edit
on an episode with no grasp) is replaced by another edit of the same family, then of any family.

Output (see :mod:`roboalign_env.data.bench` for reading it)::

    videos/<source>/<episode_id>.npz   every pair drawn from that episode: <pair_id>/video,
                                       <pair_id>/initial_frame, <pair_id>/actions, and ``rows``
    pairs.jsonl                        the index: one row per pair (labels, split, provenance)

Splits are by episode: the held-out source's episodes form ``heldout``; the others are hashed
into ``train``/``val``/``test``, so no episode is in two splits. A re-run skips episodes whose
shard exists and was built with the current recipe (:func:`recipe_id`); shards are written atomically.
"""

from __future__ import annotations

import json
import zlib
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Collection, Sequence

import numpy as np

from roboalign_env.data.bench import INDEX, is_external, shard_path
from roboalign_env.data.episodes import Episode, load_episode, read_manifests
from roboalign_env.data.io import atomic_savez, read_jsonl, write_jsonl
from roboalign_env.data.splits import split_of
from roboalign_env.sim import degradations as deg
from roboalign_env.sim.oracle import actions_match, label_trace
from roboalign_env.sim.rendering import CAMERA
from roboalign_env.sim.sources import INSTRUCTION_RELATIONS, SOURCES, instruction_pool
from roboalign_env.sim.workers import cached_env, imap_workers

FULL_FRAMES = 32
RECIPE = (
    ("clean", "full"), ("clean", "prefix"), ("clean", "random"),
    ("swap", "other_task"), ("swap", "near_miss"),
    ("temporal", None), ("temporal", None), ("pixel", None),
    ("physics", None), ("physics", None), ("physics", None), ("contact", None), ("aoc", None), ("aoc", None),
    ("dream", "ghost_arm"), ("actions", "other_episode"), ("actions", "mirrored"), ("clean", "onset"),
)
# The onset pair: a stride-1 window ending 0 to ONSET_LAG steps after robosuite first reports success,
# as the env's reward sees a success the step it happens (random windows rarely end there).
ONSET_LAG = 2
# Raised by hand whenever what an episode's pairs are drawn from changes in a way RECIPE and the sources'
# instructions do not show (oracle rules, degradations); a shard of another recipe is rebuilt (recipe_id).
RECIPE_VERSION = 2
# How often each state edit is tried first within its family: float and sink come in a minor
# (PA 1) and a severe (PA 0) version, teleport and vanish only severe, so they get more draws to
# keep both Physics Adherence levels well populated.
EDIT_WEIGHTS = {"teleport": 1.0, "vanish": 1.0, "float": 2.0, "sink": 2.0}
EDIT_FAMILIES = {"physics": deg.PHYSICS_EDITS, "contact": deg.CONTACT_EDITS, "aoc": deg.AOC_EDITS}


@dataclass(frozen=True)
class Window:
    """Frames ``start, start + stride, ...`` (``length`` of them) of an episode."""

    start: int
    stride: int
    length: int

    @property
    def frames(self) -> np.ndarray:
        return self.start + self.stride * np.arange(self.length)

    @property
    def actions(self) -> slice:
        """The episode's actions between the first and the last frame (``(length - 1) * stride`` of them)."""
        return slice(self.start, self.start + (self.length - 1) * self.stride)

    def as_dict(self) -> dict:
        return {"start": self.start, "stride": self.stride, "length": self.length}


def _full_window(ep: Episode) -> Window:
    last = ep.num_steps
    stride = max(1, last // (FULL_FRAMES - 1))
    return Window(0, stride, min(FULL_FRAMES, last // stride + 1))


def onset_window(ep: Episode, rng) -> Window | None:
    """A stride-1 window of 8 to ``FULL_FRAMES`` frames whose last frame is 0 to ``ONSET_LAG`` steps after the
    episode's first success; None for an episode that never succeeds or succeeds before a window fits."""
    first = ep.meta.get("first_success_step")
    if first is None:
        return None
    end = min(int(first) + int(rng.integers(0, ONSET_LAG + 1)), ep.num_steps)
    length = min(int(rng.integers(deg.MIN_FRAMES, FULL_FRAMES + 1)), end + 1)
    return Window(end - length + 1, 1, length) if length >= deg.MIN_FRAMES else None


def random_window(ep: Episode, rng, min_length: int = deg.MIN_FRAMES) -> Window:
    """A random window of ``ep`` (stride 1 or 2, ``min_length`` to ``FULL_FRAMES`` frames)."""
    n = ep.num_steps + 1
    stride = int(rng.integers(1, 3))
    length = int(rng.integers(min_length, min(FULL_FRAMES, (n - 1) // stride + 1) + 1))
    start = int(rng.integers(0, n - (length - 1) * stride))
    return Window(start, stride, length)


def _untouched_window(ep: Episode) -> Window | None:
    """The longest stride-1 clip from the start in which the robot has not touched the target."""
    touched = ep.state["robot_contact"][:, 0]
    free = int(np.argmax(touched)) if touched.any() else len(touched)
    length = min(free, FULL_FRAMES)
    return Window(0, 1, length) if length >= 10 else None


class Rerenderer:
    """Re-renders recorded (possibly edited) simulator states of one source's episodes, through the camera
    setting they were recorded with."""

    def __init__(self, source_name: str, image_size: int, camera: str = CAMERA):
        from roboalign_env.sim.robosuite_env import reset_env, task_objects

        self.source = SOURCES[source_name]
        self.env, self.renderer = cached_env(source_name, image_size, camera)
        reset_env(self.env, 0)
        self.free_joint = task_objects(self.env, self.source)[0].free_qpos
        model = self.env.sim.model
        self.edit_joint = model.get_joint_qpos_addr(self.source.edit_joint) if self.source.edit_joint else None
        robot = self.env.robots[0]
        self.gripper_idx = robot._ref_gripper_joint_pos_indexes["right"]
        self.pad_geoms = [model.geom_name2id(robot.gripper["right"].important_geoms["left_fingerpad"][0])]

    @property
    def can_edit(self) -> bool:
        return self.free_joint is not None or self.edit_joint is not None

    def plan(self, kind: str, ep: Episode, window: Window, rng) -> deg.StateEdit | None:
        """Plan edit ``kind`` on ``window``: in object positions if the target is free-floating,
        else in the angle of the source's edit joint."""
        trace = _window_trace(ep, window.frames)
        if self.free_joint is not None:
            return deg.plan_state_edit(kind, trace, rng)
        return deg.plan_hinge_edit(kind, trace, ep.state["qpos"][window.frames, self.edit_joint], rng)

    def _set(self, qpos: np.ndarray) -> None:
        import mujoco

        data = self.env.sim.data._data
        data.qpos[:] = qpos
        data.qvel[:] = 0.0
        mujoco.mj_forward(self.env.sim.model._model, data)

    def render(self, ep: Episode, window: Window, edit: deg.StateEdit) -> tuple[np.ndarray, dict]:
        from roboalign_env.sim.robosuite_env import read_state

        qposes = ep.state["qpos"][window.frames].copy()
        # The widest the fingers opened in this episode (the reset pose is not fully open).
        open_fingers = ep.state["qpos"][np.argmax(ep.state["gripper_opening"]), self.gripper_idx]
        a = self.free_joint
        if edit.kind == "pass_through":
            first = edit.params["frame"]
            self._set(qposes[first])
            pad = self.env.sim.data.geom_xpos[self.pad_geoms[0]]
            offset = np.array([pad[0] - qposes[first, a], pad[1] - qposes[first, a + 1], 0.0])
            edit.object_pos[first:] = qposes[first:, a : a + 3] + offset
            edit.params["offset"] = np.round(offset, 4).tolist()
        frames, states = [], []
        for i, qpos in enumerate(qposes):
            if not np.isnan(edit.object_pos[i]).any():
                qpos[a : a + 3] = edit.object_pos[i]
            if not np.isnan(edit.joint[i]):
                qpos[self.edit_joint] = edit.joint[i]
            if edit.hidden[i]:
                qpos[a + 2] -= 50.0
            if edit.open_gripper[i]:
                qpos[self.gripper_idx] = open_fingers
            self._set(qpos)
            state = read_state(self.env, self.source)
            state["visible"][0] = not edit.hidden[i]
            states.append(state)
            frames.append(self.renderer.render(self.env.sim.data._data))
        trace = {k: np.stack([s[k] for s in states]) for k in states[0]}
        return np.stack(frames), trace


def _window_trace(ep: Episode, frames: np.ndarray) -> dict:
    return {k: v[frames] for k, v in ep.state.items()}


def instruction_for(kind: str, source_name: str, rng, exclude: Collection[str] = ()) -> str:
    """A random instruction of relation ``kind`` (:func:`~roboalign_env.sim.sources.instruction_pool`) to a
    source's episode, none of ``exclude`` (lower-case)."""
    pool = [t for t in instruction_pool(kind, source_name) if t.strip().lower() not in exclude]
    if not pool:
        raise ValueError(f"no {kind} instruction for source {source_name!r} is left once {sorted(exclude)} are excluded")
    return str(pool[int(rng.integers(len(pool)))])


def episode_pairs(ep: Episode, rerenderer: Rerenderer | None, split: str,
                  donor_actions: np.ndarray | None = None) -> list[tuple[dict, dict]]:
    """All pairs drawn from one episode, as (index row, arrays) tuples.

    ``donor_actions`` are another episode's actions, paired with this episode's video; without
    them (or when they are too short) that pair takes this episode's actions mirrored instead.
    """
    rng = np.random.default_rng([zlib.crc32(ep.episode_id.encode()), 7])
    rest_z = ep.state["object_pos"][0, :, 2]
    failure = ep.meta["failure"]
    pairs = []

    def add(family, kind, window, video, trace, instruction_kind="correct", consistent=True, params=None, caps=None,
            actions=None):
        labels = label_trace(trace, rest_z, instruction_kind, failure, consistent)
        executed = ep.actions[window.actions]
        if actions is not None and not actions_match(executed, actions):
            caps = {**(caps or {}), "action_outcome_consistency": 0}
        if caps:
            labels = replace(labels, **{k: min(getattr(labels, k), v) for k, v in caps.items()})
        pair_id = f"{ep.episode_id}-{len(pairs):02d}"
        row = {
            "pair_id": pair_id,
            "episode_id": ep.episode_id,
            "source": ep.meta["source"],
            "task": ep.meta["task"],
            "robot": ep.meta["robot"],
            "failure": failure,
            "split": split,
            "instruction": instruction_for(instruction_kind, ep.meta["source"], rng),
            "instruction_kind": instruction_kind,
            "labels": labels.as_dict(),
            "aggregate": labels.aggregate,
            "num_frames": int(len(video)),
            "provenance": {"family": family, "kind": kind, "params": params or {}, "window": window.as_dict()},
        }
        shown = executed if actions is None else actions
        arrays = {"video": video, "initial_frame": ep.frames[window.start], "actions": shown}
        pairs.append((row, arrays))

    for family, kind in RECIPE:
        if kind == "onset":
            window = onset_window(ep, rng)
            if window is not None:
                add(family, kind, window, ep.frames[window.frames], _window_trace(ep, window.frames))
        elif family == "clean":
            window = {"full": _full_window(ep), "prefix": Window(0, 1, int(rng.integers(8, 25))), "random": random_window(ep, rng)}[kind]
            add(family, kind, window, ep.frames[window.frames], _window_trace(ep, window.frames))
        elif family == "swap":
            window = _full_window(ep)
            add(family, kind, window, ep.frames[window.frames], _window_trace(ep, window.frames), instruction_kind=kind)
        elif family == "temporal":
            window = _full_window(ep) if rng.random() < 0.5 else random_window(ep, rng, deg.TEMPORAL_MIN_FRAMES)
            kind = deg.TEMPORAL[int(rng.integers(len(deg.TEMPORAL)))]
            order, params = deg.temporal_indices(kind, window.length, rng)
            frames = window.frames[order]
            video = ep.frames[frames]
            if kind == "flicker":
                video, params = deg.flicker(video, rng)
            add(family, kind, window, video, _window_trace(ep, frames), consistent=False, params=params)
        elif family == "pixel":
            window = _full_window(ep) if rng.random() < 0.5 else random_window(ep, rng)
            kind = deg.PIXEL[int(rng.integers(len(deg.PIXEL)))]
            strength = deg.STRENGTHS[int(rng.integers(2))]
            video, params = deg.pixel_artifact(ep.frames[window.frames], kind, strength, rng)
            add(family, kind, window, video, _window_trace(ep, window.frames), consistent=strength == "mild",
                params={**params, "strength": strength})
        elif family == "dream":
            window = _full_window(ep)
            video, params = deg.ghost_arm(ep.frames[window.frames], rng)
            shown, caps = deg.ghost_trace(_window_trace(ep, window.frames))
            add(family, kind, window, video, shown, consistent=False, params=params, caps=caps)
        elif family == "actions":
            window = _full_window(ep)
            span = window.actions
            if kind == "other_episode" and donor_actions is not None and len(donor_actions) >= span.stop:
                actions = donor_actions[span]
            else:
                kind, actions = "mirrored", -ep.actions[span]
            add(family, kind, window, ep.frames[window.frames], _window_trace(ep, window.frames), actions=actions)
        elif rerenderer is not None and rerenderer.can_edit:
            made = _state_edit_pair(ep, rerenderer, family, rng)
            if made is not None:
                kind, window, video, trace, params = made
                add(_family_of(kind), kind, window, video, trace, params=params)
    return pairs


def recipe_id(source_name: str) -> str:
    """What a shard of ``source_name`` was drawn with: the recipe version and a digest of RECIPE, ONSET_LAG and
    the source's instruction pools (its swaps draw from them), so a change to one source's pools redraws only
    its shards."""
    pools = [instruction_pool(r, source_name) for r in INSTRUCTION_RELATIONS]
    digest = zlib.crc32(json.dumps([RECIPE, ONSET_LAG, pools], sort_keys=True).encode())
    return f"{RECIPE_VERSION}-{digest:08x}"


def _shard_rows(shard: Path, source_name: str) -> list[dict] | None:
    """The rows of a shard built with the source's current recipe; None if there is none or it was built with another."""
    if not shard.is_file():
        return None
    with np.load(shard, allow_pickle=False) as data:
        if "recipe" not in data.files or str(data["recipe"]) != recipe_id(source_name):
            return None
        return json.loads(str(data["rows"]))


def _family_of(kind: str) -> str:
    return next(f for f, kinds in EDIT_FAMILIES.items() if kind in kinds)


def _violates(family: str, labels) -> bool:
    """Whether an edit of ``family`` had its intended effect on the oracle's labels."""
    if family == "physics":
        return labels.physics_adherence < 2
    if family == "contact":
        return labels.contact_realism == 0
    return labels.action_outcome_consistency == 0


def _state_edit_pair(ep: Episode, rerenderer: Rerenderer, family: str, rng):
    """Try the family's edits in random order, then every other edit; first that works wins.

    An edit works when it applies to the clip and the oracle sees its intended violation in the
    re-rendered state (e.g. a finger offset that misses the object is not kept as a pass-through).
    """
    kinds = EDIT_FAMILIES[family]
    weights = np.array([EDIT_WEIGHTS.get(k, 1.0) for k in kinds])
    own = list(rng.choice(kinds, size=len(kinds), replace=False, p=weights / weights.sum()))
    others = [k for k in rng.permutation(deg.STATE_EDITS) if k not in own]
    untouched = _untouched_window(ep)
    for kind in own + others:
        needs_untouched = kind in ("teleport", "float", "sink", "slide")
        window = untouched if needs_untouched else _full_window(ep)
        if window is None:
            continue
        edit = rerenderer.plan(kind, ep, window, rng)
        if edit is None:
            continue
        video, edited = rerenderer.render(ep, window, edit)
        rest_z = ep.state["object_pos"][0, :, 2]
        if _violates(_family_of(kind), label_trace(edited, rest_z, failure=ep.meta["failure"])):
            return kind, window, video, edited, edit.params
    return None


def _donors(entries: list[dict], splits: list[str]) -> list[dict | None]:
    """Each episode's action donor: the next episode of the same source and split in the manifest
    (cyclic), so donated actions never cross a split; None for an episode alone in its group."""
    groups: dict[tuple[str, str], list[int]] = {}
    for i, (entry, split) in enumerate(zip(entries, splits)):
        groups.setdefault((entry["source"], split), []).append(i)
    donors: list[dict | None] = [None] * len(entries)
    for members in groups.values():
        for k, i in enumerate(members):
            if len(members) > 1:
                donors[i] = entries[members[(k + 1) % len(members)]]
    return donors


# -- driver ------------------------------------------------------------------------------------
_RERENDERERS: dict[tuple[str, int, str], Rerenderer] = {}


def _build_one(args) -> list[dict]:
    ep_path, donor_path, out, split = args
    ep = load_episode(ep_path)
    key = (ep.meta["source"], ep.meta["image_size"], ep.meta.get("camera", CAMERA))
    if key not in _RERENDERERS:
        _RERENDERERS[key] = Rerenderer(*key)
    donor = load_episode(donor_path).actions if donor_path is not None else None
    pairs = episode_pairs(ep, _RERENDERERS[key], split, donor)
    arrays = {f"{row['pair_id']}/{name}": value for row, a in pairs for name, value in a.items()}
    rows = [row for row, _ in pairs]
    path = shard_path(out, ep.meta["source"], ep.episode_id)
    for row in rows:
        row["file"] = str(path.relative_to(out))
    atomic_savez(path, rows=np.array(json.dumps(rows)), recipe=np.array(recipe_id(ep.meta["source"])), **arrays)
    return rows


def build_bench(
    collection: str | Path | Sequence[str | Path],
    out: str | Path,
    heldout_source: str,
    workers: int = 1,
    progress: bool = True,
) -> list[dict]:
    """Build (or resume) the bench at ``out`` from the episodes of one or more collections; return its rows.

    Pairs added to the bench from outside (:func:`roboalign_env.data.bench.add_external`: dream
    rollouts, attacks) stay in the index. Episode ids must be unique across the collections.
    """
    if heldout_source not in SOURCES:
        raise ValueError(f"heldout_source={heldout_source!r}; expected one of {sorted(SOURCES)}")
    out = Path(out)
    found = read_manifests(collection)
    entries, roots = [row for _, row in found], [root for root, _ in found]
    seen = {row["episode_id"]: root for root, row in found}
    splits = [split_of(e["episode_id"], e["source"], heldout_source) for e in entries]
    donors = _donors(entries, splits)
    rows, todo = [], []
    for entry, root, split, donor in zip(entries, roots, splits, donors):
        shard = shard_path(out, entry["source"], entry["episode_id"])
        done = _shard_rows(shard, entry["source"])
        if done is not None:
            rows.extend(done)
        else:
            donor_path = None if donor is None else seen[donor["episode_id"]] / donor["path"]
            todo.append((root / entry["path"], donor_path, out, split))
    for new in imap_workers(_build_one, todo, workers, "build-bench", progress):
        rows.extend(new)
    if (out / INDEX).is_file():
        rows.extend(row for row in read_jsonl(out / INDEX) if is_external(row))
    rows.sort(key=lambda r: r["pair_id"])
    write_jsonl(out / INDEX, rows)
    return rows
