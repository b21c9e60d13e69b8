"""What the student reward gives to dream-style ghosts of real failures, beside real successes.

From a collection's scripted episodes: each real success as its 17 consecutive frames ending at the
step robosuite first reports success, and each real failure (a scripted failure mode that never
succeeded) as the last 17 frames of its ``ghost_arm`` rendering
(``roboalign_env.sim.degradations``: the first frame held, the motion drawn as a faded smear, how the
first dream drew the arm). With ``--bench``, also the ghosts the dream draws itself: the bench's
world-model rollouts (``roboalign add-dream-pairs``) of its test and held-out episodes whose actions
failed in robosuite and whose frames show no manipulation (label MS 0); test and held-out (``--splits``) as the student
saw the bench (a student distilled for every source trained on the held-out source's train episodes). Every clip is scored with the
actions that made it. Reports the student's expected Manipulation Success (0-2) of each group per
source, and the share of ghosts scored <= 1.0.

    python benchmarks/reward_on_artifacts.py --collection data/episodes --bench data/bench
"""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import tyro

from roboalign_env.data.bench import is_rollout, load_pair, read_index, shard_path, trained_view
from roboalign_env.data.episodes import load_episode, read_manifest
from roboalign_env.data.io import atomic_write
from roboalign_env.models.registry import load_scorer
from roboalign_env.rubric import DIMENSIONS
from roboalign_env.sim.degradations import ghost_arm
from roboalign_env.sim.exploration import EXPLORATION_MODES

MANIPULATION = DIMENSIONS.index("manipulation_success")


@dataclass(frozen=True)
class Args:
    collection: Path = Path("data/episodes")
    """Collection folder (`roboalign collect`); its scripted episodes are used."""
    student: Path = Path("roboalign_env/assets/default/student")
    """Student reward folder."""
    frames: int = 17
    """Frames per clip (the env's reward reads the first frame and the last 16)."""
    bench: Path | None = None
    """Bench with dream rollouts (`roboalign add-dream-pairs`); None skips the dream's own ghosts."""
    shard: tuple[str, ...] | None = None
    """Only the rollouts of these `add-dream-pairs --name` shards (e.g. one world model's dreams); None: every shard."""
    splits: tuple[str, ...] = ("test", "heldout")
    """Splits of the dream rollouts scored; every split is fair for a shard no judge was trained on yet (e.g. a fresh
    `add-dream-pairs --adversary` attack)."""
    out: Path = Path("benchmarks/results/reward_on_artifacts.json")
    """Result file."""


def clips(collection: Path, frames: int) -> dict[str, dict[str, list]]:
    """Per source: ``success`` and ``ghost`` lists of (clip (T, H, W, 3) uint8, instruction, actions (T - 1, 7))."""
    rng = np.random.default_rng(0)
    out: dict[str, dict[str, list]] = {}
    for row in read_manifest(collection):
        if row["failure"] in EXPLORATION_MODES:
            continue
        ep = load_episode(collection / row["path"])
        groups = out.setdefault(row["source"], {"success": [], "ghost": []})
        first = row.get("first_success_step")
        if first is not None and first >= frames - 1:
            groups["success"].append((ep.frames[first - frames + 1 : first + 1], ep.meta["instruction"],
                                      ep.actions[first - frames + 1 : first]))
        elif first is None and row["failure"] != "nominal" and len(ep.frames) >= frames:
            video, _ = ghost_arm(ep.frames, rng)
            groups["ghost"].append((video[-frames:], ep.meta["instruction"], ep.actions[-(frames - 1) :]))
    return out


def dream_ghosts(bench: Path, shards: tuple[str, ...] | None, heldout_source: str | None = None,
                 splits: tuple[str, ...] = ("test", "heldout")) -> dict[str, list]:
    """Per source: the bench's dream rollouts (of ``shards``, or all) of episodes in ``splits`` (in the
    ``heldout_source`` view) that failed in robosuite and show no manipulation."""
    out: dict[str, list] = {}
    wanted = None if shards is None else {str(shard_path(bench, "external", s).relative_to(bench)) for s in shards}
    for row in read_index(bench, heldout_source=heldout_source):
        params = row["provenance"].get("params", {})
        if (is_rollout(row) and row["split"] in splits and (wanted is None or row["file"] in wanted)
                and not params["real_success"] and row["labels"]["manipulation_success"] == 0):
            pair = load_pair(bench, row)
            out.setdefault(row["source"], []).append((pair["video"], row["instruction"], pair["actions"]))
    return out


def manipulation_scores(student, group: list) -> np.ndarray:
    if not group:
        return np.zeros(0)
    videos = [v for v, _, _ in group]
    with torch.no_grad():
        return student.score(videos, [t for _, t, _ in group], actions=[a for _, _, a in group]
                             ).expected[:, MANIPULATION].cpu().numpy()


def ghost_summary(scores: np.ndarray, name: str) -> dict:
    return {f"{name}": len(scores), f"{name}_ms_mean": float(scores.mean()) if len(scores) else None,
            f"{name}_share_at_most_1": float((scores <= 1.0).mean()) if len(scores) else None}


def main(args: Args) -> dict:
    student = load_scorer(args.student)
    dreams = dream_ghosts(args.bench, args.shard, trained_view(student), args.splits) if args.bench is not None else {}
    per_source, pooled = {}, {"real": [], "ghost": [], "dream": []}
    for source, groups in sorted(clips(args.collection, args.frames).items()):
        real, ghost = manipulation_scores(student, groups["success"]), manipulation_scores(student, groups["ghost"])
        dream = manipulation_scores(student, dreams.get(source, []))
        for key, value in (("real", real), ("ghost", ghost), ("dream", dream)):
            pooled[key].append(value)
        per_source[source] = {"real_successes": len(real), "real_success_ms_mean": float(real.mean()) if len(real) else None,
                              **ghost_summary(ghost, "ghosts_of_failures"), **ghost_summary(dream, "dream_ghosts")}
    pooled = {k: np.concatenate(v) for k, v in pooled.items()}
    overall = {"real_successes": len(pooled["real"]), "real_success_ms_mean": float(pooled["real"].mean()),
               **ghost_summary(pooled["ghost"], "ghosts_of_failures"), **ghost_summary(pooled["dream"], "dream_ghosts")}
    result = {"command": "python benchmarks/reward_on_artifacts.py " + " ".join(sys.argv[1:]),
              "student": str(args.student), "frames": args.frames, "shard": args.shard, "splits": list(args.splits),
              "overall": overall,
              "per_source": per_source}
    atomic_write(args.out, lambda f: f.write(json.dumps(result, indent=1)), mode="w")
    for source, r in {**per_source, "overall": overall}.items():
        print(f"{source}: real successes MS {r['real_success_ms_mean']} (n={r['real_successes']}); pixel ghosts of "
              f"failures MS {r['ghosts_of_failures_ms_mean']} (n={r['ghosts_of_failures']}, share <= 1.0: "
              f"{r['ghosts_of_failures_share_at_most_1']}); the dream's own ghosts MS {r['dream_ghosts_ms_mean']} "
              f"(n={r['dream_ghosts']}, share <= 1.0: {r['dream_ghosts_share_at_most_1']})")
    print(f"wrote {args.out}\nreproduce: {result['command']}")
    return result


if __name__ == "__main__":
    main(tyro.cli(Args))
