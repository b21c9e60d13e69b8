"""World-model rollouts as RobotWorldBench pairs: the paper's second annotation source, generated videos.

Each rollout starts at a bench episode's first frame under one of :data:`ACTION_KINDS` and runs
twice from the same state: in the dream (sampled at ``temperature``, the environment's default, SWR
on) and in robosuite (the episode restarted from its seed). The pair is the dreamed video (the first
frame, then ``steps`` dreamed frames) with its instruction and actions, in the episode's split.

The ``policy`` kind closes the loop: a policy (for example PPO trained in the dream) sees each dreamed
frame and picks the next action, as it does in ``RoboAlignWorld-v0``; its actions are then replayed in
robosuite. These are the rollouts where a policy has learned what the reward pays for in the dream
(an arm smeared over an object that never moves) rather than the task. The ``adversary`` kind searches
the actions instead (:mod:`roboalign_env.eval.adversary`): those that a reward pays most in the dream.

Labels come from what the dreamed frames show and from robosuite, never from a judge:

- the state probe reads the dreamed frames and the oracle's rules label that trace
  (:func:`~roboalign_env.models.state_probe.probe_labels`): an object that never leaves its pixels
  has not been lifted (Manipulation Success 0), an arm that jumps breaks Temporal Consistency;
- where the dream stays close to robosuite under the same actions (probe-read end effector within
  :data:`CLOSE_CM` on average and every object within :data:`CLOSE_CM` at every step), robosuite's
  own trace is labelled instead (exact contacts and success), Temporal Consistency still from the
  dreamed frames;
- where the dream's end effector strays from robosuite's by :data:`STRAY_CM` or more on average,
  the video does not show what its actions command: Action-Outcome Consistency 0. These pairs are
  read with their actions in training (:func:`~roboalign_env.data.bench.labels_need_actions`).
"""

from __future__ import annotations

import zlib
from pathlib import Path
from typing import Callable

import numpy as np
import torch
from tqdm import tqdm

from roboalign_env.data.bench import ROLLOUT_KIND, add_external, read_index
from roboalign_env.data.episodes import load_episode, read_manifest
from roboalign_env.data.splits import SPLITS
from roboalign_env.eval.adversary import Objective, SearchConfig, search_actions
from roboalign_env.eval.control import load_probe, position_error_cm, to_float, to_uint8
from roboalign_env.models.state_probe import probe_labels
from roboalign_env.models.transformer import MODEL_WINDOW, Window
from roboalign_env.models.world_model import WorldModel
from roboalign_env.rubric import DIMENSIONS
from roboalign_env.sim.oracle import label_trace
from roboalign_env.sim.rendering import CAMERA
from roboalign_env.sim.replay import replay

ACTION_KINDS = ("own", "random", "constant", "zero")
"""The episode's recorded actions; random commands held 4 steps; one constant direction at 0.8; no motion."""
POLICY_KIND = "policy"
"""A policy acting on the dreamed frames (closed loop); added to the kinds when one is given."""
ADVERSARY_KIND = "adversary"
"""Actions searched in the dream to maximize an objective (a reward); added to the kinds when one is given."""
Policy = Callable[[np.ndarray, list], np.ndarray]
"""A policy on the dream: (current frames uint8 (B, 3, H, W), each row's source) -> actions (B, 7)."""
CLOSE_CM = 4.0
STRAY_CM = 8.0


def rollout_actions(kind: str, recorded: np.ndarray, steps: int, rng: np.random.Generator) -> np.ndarray:
    """(steps, 7) actions of one :data:`ACTION_KINDS` rollout (rotation commands stay 0 but in ``own``)."""
    gripper = float(np.sign(recorded[0, 6]) or -1.0)
    out = np.zeros((steps, 7), np.float32)
    out[:, 6] = gripper
    if kind == "own":
        out = recorded[:steps].astype(np.float32)
    elif kind == "random":
        for start in range(0, steps, 4):
            out[start : start + 4, :3] = rng.uniform(-1, 1, 3)
            out[start : start + 4, 6] = rng.choice([-1.0, 1.0])
    elif kind == "constant":
        axis = int(rng.integers(3))
        out[:, axis] = 0.8 * rng.choice([-1.0, 1.0])
    elif kind != "zero":
        raise ValueError(f"rollout kind {kind!r}; expected one of {ACTION_KINDS}")
    return out


def label_rollout(probe, video: np.ndarray, instruction: str, real: dict, failure: str) -> tuple[dict, dict]:
    """Labels of one dreamed video (see the module's rules) and what decided them.

    ``real`` is robosuite's trace under the same actions (the oracle's fields); ``failure`` the
    scripted intent behind them (``nominal`` for none).
    """
    labels, shown = probe_labels(probe, video, instruction)
    eef_cm = float(position_error_cm(shown["eef_pos"][1:], real["eef_pos"][1:]).mean())
    k = min(shown["object_pos"].shape[1], real["object_pos"].shape[1])
    object_cm = float(position_error_cm(shown["object_pos"][1:, :k], real["object_pos"][1:, :k]).max())
    by = "probe"
    out = labels.as_dict()
    if eef_cm <= CLOSE_CM and object_cm <= CLOSE_CM:
        exact = label_trace(real, real["object_pos"][0, :, 2], "correct", failure).as_dict()
        out = {**exact, "temporal_consistency": out["temporal_consistency"]}
        by = "robosuite"
    elif eef_cm >= STRAY_CM:
        out["action_outcome_consistency"] = 0
        by = "probe, strays from robosuite"
    return out, {"labelled_by": by, "eef_error_cm": round(eef_cm, 2), "object_error_cm": round(object_cm, 2),
                 "real_success": bool(real["success"][-1])}


def choose_episodes(collection: Path, bench: Path, per_source: int, seed: int, sources: tuple[str, ...] | None = None,
                    splits: tuple[str, ...] | None = None, heldout_source: str | None = None) -> list[tuple[dict, str]]:
    """Up to ``per_source`` bench episodes of each source (random, by ``seed``; of ``sources`` and ``splits`` only
    when given), with their split (in the bench's ``heldout_source`` view, :func:`read_index`)."""
    split = {r["episode_id"]: r["split"] for r in read_index(bench, heldout_source=heldout_source)}
    if splits is not None:
        if not splits or set(splits) - set(SPLITS):
            raise ValueError(f"splits={splits}: expected one or more of {SPLITS}")
        split = {e: s for e, s in split.items() if s in splits}
    entries = [e for e in read_manifest(collection) if e["episode_id"] in split]
    if not entries:
        raise ValueError(f"{collection}: none of its episodes is in the bench at {bench}"
                         f"{'' if splits is None else f' split {splits}'}; pass the collection it was built from")
    if sources is not None:
        present = sorted({e["source"] for e in entries})
        if not sources or set(sources) - set(present):
            raise ValueError(f"sources={sources}: expected one or more of the bench's sources {present}")
        entries = [e for e in entries if e["source"] in sources]
    rng = np.random.default_rng([seed, 13])
    chosen = []
    for source in sorted({e["source"] for e in entries}):
        same = [e for e in entries if e["source"] == source]
        for i in sorted(rng.permutation(len(same))[:per_source]):
            chosen.append((same[i], split[same[i]["episode_id"]]))
    return chosen


def check_kinds(kinds: tuple[str, ...], policy: str | None, adversary: str | None) -> None:
    """Raise ValueError unless ``kinds`` are known rollout kinds and the 'policy' / 'adversary' kinds
    come exactly with a policy / an adversary (named here, so a caller can check before loading them)."""
    allowed = ACTION_KINDS + (POLICY_KIND, ADVERSARY_KIND)
    if not kinds or set(kinds) - set(allowed):
        raise ValueError(f"kinds={kinds}: expected one or more of {allowed}")
    for kind, given in ((POLICY_KIND, policy), (ADVERSARY_KIND, adversary)):
        if (kind in kinds) != (given is not None):
            article = "an" if kind[0] in "aeiou" else "a"
            raise ValueError(f"kinds={kinds}, {kind}={given}: the {kind!r} kind needs {article} {kind}, and "
                             f"{article} {kind} needs the {kind!r} kind")


def dream_pairs(model_dir: Path, probe_dir: Path, collection: Path, bench: Path, name: str, per_source: int = 30,
                steps: int = 16, temperature: float = 1.0, window: Window = MODEL_WINDOW, batch_size: int = 32,
                device: str = "cpu", seed: int = 0, progress: bool = True, kinds: tuple[str, ...] = ACTION_KINDS,
                sources: tuple[str, ...] | None = None, policy: Policy | None = None,
                policy_name: str | None = None, adversary: Objective | None = None, adversary_name: str | None = None,
                search: SearchConfig = SearchConfig(), splits: tuple[str, ...] | None = None) -> list[dict]:
    """Dream, replay and label rollouts of bench episodes, and add them to the bench as ``external/<name>``.

    Returns the new index rows. ``model_dir`` is a world-model folder or a packed model folder.
    ``kinds`` picks the rollouts of each episode (:data:`ACTION_KINDS`; :data:`POLICY_KIND` with a
    ``policy``, recorded by ``policy_name``; :data:`ADVERSARY_KIND` with an ``adversary`` objective, recorded
    by ``adversary_name``, searched as ``search`` says); ``sources`` and ``splits`` restrict the episodes (default: every
    source and split).
    """
    if not 7 <= steps <= 31:
        raise ValueError(f"steps={steps}: expected 7..31 (a bench video holds 8 to 32 frames)")
    if temperature < 0:
        raise ValueError(f"temperature={temperature}: expected >= 0 (0 is greedy)")
    check_kinds(kinds, None if policy is None else str(policy_name), None if adversary is None else str(adversary_name))
    model_dir, collection, bench = Path(model_dir), Path(collection), Path(bench)
    if (model_dir / "world_model").is_dir():
        model_dir = model_dir / "world_model"
    episodes = choose_episodes(collection, bench, per_source, seed, sources, splits)
    model = WorldModel.load(model_dir, device)
    window = model.transformer.config.resolve_window(window)  # recorded with each rollout
    probe = load_probe(Path(probe_dir), model.image_size)
    plan = []
    for entry, split in tqdm(episodes, desc="robosuite", unit="episode", disable=not progress):
        ep = load_episode(collection / entry["path"])
        if ep.num_steps < steps:
            continue
        rng = np.random.default_rng([zlib.crc32(ep.episode_id.encode()), seed])
        for kind in kinds:
            actions = None if kind in (POLICY_KIND, ADVERSARY_KIND) else rollout_actions(kind, ep.actions, steps, rng)
            frames, trace = replay(ep.meta["source"], int(ep.meta["seed"]), np.zeros((0, 7)) if actions is None else actions,
                                   model.image_size, ep.meta.get("camera", CAMERA))
            plan.append({"episode": ep, "split": split, "kind": kind, "actions": actions, "first": frames[0], "trace": trace})
    dreamed = []  # (plan entry, dreamed frames, actions, what the kind adds to the params)
    searched = [p for p in plan if p["kind"] == ADVERSARY_KIND]
    for i, p in enumerate(tqdm(searched, desc="adversary", unit="rollout", disable=not progress)):
        frames, acted, score, trace = search_actions(model, p["first"], p["episode"].meta["instruction"], adversary, steps,
                                                     window, temperature, seed * 100_003 + i, search)
        dreamed.append((p, frames, acted, {"adversary": adversary_name, "adversary_score": round(score, 4),
                                           "search_trace": [round(t, 4) for t in trace], "search": search.as_dict()}))
    rest = [p for p in plan if p["kind"] != ADVERSARY_KIND]
    for start in tqdm(range(0, len(rest), batch_size), desc="dream", unit="batch", disable=not progress):
        chunk = rest[start : start + batch_size]
        generators = [torch.Generator(device=model.tokenizer.device).manual_seed(seed * 100_003 + start + i) for i in range(len(chunk))]
        frames, actions = dream_chunk(model, chunk, steps, window, temperature, generators, policy)
        dreamed += [(p, f, a, {"policy": policy_name} if p["kind"] == POLICY_KIND else {})
                    for p, f, a in zip(chunk, frames, actions)]
    items = []
    for p, frames, acted, extra in dreamed:
        ep = p["episode"]
        if p["actions"] is None:  # the policy's or the adversary's actions, now known: what robosuite does under them
            p["actions"] = acted
            p["trace"] = replay(ep.meta["source"], int(ep.meta["seed"]), acted, model.image_size,
                                ep.meta.get("camera", CAMERA))[1]
        video = np.concatenate([p["first"][None], frames])
        failure = ep.meta["failure"] if p["kind"] == "own" else "nominal"  # other actions carry no scripted intent
        labels, why = label_rollout(probe, video, ep.meta["instruction"], p["trace"], failure)
        params = {"episode_id": ep.episode_id, "model": str(model_dir), "temperature": temperature, "window": window,
                  **extra, **why}
        items.append({
            "video": video, "initial_frame": p["first"], "actions": p["actions"], "instruction": ep.meta["instruction"],
            "labels": labels, "source": ep.meta["source"], "split": p["split"],
            "provenance": {"family": "dream", "kind": ROLLOUT_KIND.format(p["kind"]), "params": params},
        })
    return add_external(bench, name, items)


@torch.no_grad()
def dream_chunk(model: WorldModel, chunk: list[dict], steps: int, window: Window, temperature: float,
                generators: list[torch.Generator], policy: Policy | None) -> tuple[np.ndarray, np.ndarray]:
    """Dream ``chunk``'s rollouts in one batch: (frames uint8 (B, steps, H, W, 3), actions (B, steps, 7)).

    A rollout with actions follows them; one without (the policy kind) takes, at each step, the
    policy's action for the frame it is shown: the first frame, then the dream's own, as uint8 like an
    environment's observation.
    """
    device = model.tokenizer.device
    first = np.stack([p["first"] for p in chunk])
    acting = [i for i, p in enumerate(chunk) if p["actions"] is None]
    actions = np.stack([np.zeros((steps, 7), np.float32) if p["actions"] is None else p["actions"] for p in chunk])
    dream = model.dream(to_float(first).to(device), steps, window, temperature, generators=generators, record=False)
    shown, frames = first.transpose(0, 3, 1, 2), []
    for t in range(steps):
        if acting:
            chosen = np.asarray(policy(shown[acting], [chunk[i]["episode"].meta["source"] for i in acting]), np.float32)
            actions[acting, t] = np.clip(chosen.reshape(len(acting), 7), -1, 1)
        frame = to_uint8(dream.step(torch.from_numpy(actions[:, t]).to(device)))
        frames.append(frame)
        shown = frame.transpose(0, 3, 1, 2)
    return np.stack(frames, 1), actions


def summarize_rows(rows: list[dict]) -> dict:
    """Counts and mean labels of dream rows, per rollout kind and by what labelled them."""
    out = {}
    for kind in sorted({r["provenance"]["kind"] for r in rows}):
        these = [r for r in rows if r["provenance"]["kind"] == kind]
        out[kind] = {"pairs": len(these),
                     "labelled_by": {b: sum(r["provenance"]["params"]["labelled_by"] == b for r in these)
                                     for b in sorted({r["provenance"]["params"]["labelled_by"] for r in these})},
                     "mean_labels": {d: round(float(np.mean([r["labels"][d] for r in these])), 3) for d in DIMENSIONS},
                     "real_success": sum(r["provenance"]["params"]["real_success"] for r in these)}
    return out
