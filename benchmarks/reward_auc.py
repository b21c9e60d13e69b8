"""Does the reward tell real success from failure? AUC on fresh real episodes.

Collect episodes with seeds the project never trained on (half nominal, half failure modes), e.g.

    roboalign collect --out data/fresh --episodes-per-source 40 --first-seed 700000

Each episode's last ``steps`` steps are scored as one video (its ``steps`` + 1 frames, the
episode's first frame as the initial frame, the actions between the frames), as the env's reward
scores a window. Its label is whether robosuite reports success on any frame of that window.
Reported per scorer (student, teacher, and the state probe read through the oracle's rules): the
ROC AUC of expected Manipulation Success and of the six-dimension aggregate, overall and per source.

    python benchmarks/reward_auc.py --collection data/fresh
"""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import tyro
from scipy.stats import mannwhitneyu

from roboalign_env.data.episodes import load_episode, read_manifest
from roboalign_env.data.io import atomic_write
from roboalign_env.models.registry import load_scorer, scorer_kind
from roboalign_env.models.state_probe import probe_labels
from roboalign_env.rubric import DIMENSIONS

MANIPULATION = DIMENSIONS.index("manipulation_success")


@dataclass(frozen=True)
class Args:
    collection: Path = Path("data/fresh")
    """Collection of fresh episodes (`roboalign collect --first-seed ...`)."""
    scorers: tuple[str, ...] = ("student=roboalign_env/assets/default/student", "teacher=checkpoints/judge",
                                "probe=roboalign_env/assets/default/probe")
    """Scorers as name=folder (a student, a teacher or a state probe)."""
    steps: int = 32
    """Steps per scored window (the video has one frame more)."""
    out: Path = Path("benchmarks/results/reward_auc.json")
    """Result file."""


def auc(scores: np.ndarray, positive: np.ndarray) -> float | None:
    """ROC AUC (probability a positive scores above a negative, ties half), None with one class only."""
    if positive.all() or not positive.any():
        return None
    return float(mannwhitneyu(scores[positive], scores[~positive]).statistic / (positive.sum() * (~positive).sum()))


def windows(collection: Path, steps: int) -> list[dict]:
    out = []
    for row in read_manifest(collection):
        ep = load_episode(collection / row["path"])
        if ep.num_steps < steps:
            continue
        start = ep.num_steps - steps
        out.append({"source": row["source"], "failure": row["failure"], "instruction": ep.meta["instruction"],
                    "video": ep.frames[start:], "initial": ep.frames[0], "actions": ep.actions[start:],
                    "success": bool(np.asarray(ep.state["success"][start:]).any())})
    return out


def scores_of(folder: str, clips: list[dict]) -> np.ndarray:
    """(N, 6) expected scores (levels, for the probe) of every clip."""
    model = load_scorer(folder)
    if scorer_kind(folder) == "probe":
        return np.array([[getattr(probe_labels(model, c["video"], c["instruction"])[0], d) for d in DIMENSIONS]
                         for c in clips], float)
    parts = []
    for s in range(0, len(clips), 32):
        batch = clips[s : s + 32]
        with torch.no_grad():
            parts.append(model.score([c["video"] for c in batch], [c["instruction"] for c in batch],
                                     initial_frames=[c["initial"] for c in batch],
                                     actions=[c["actions"] for c in batch]).expected.cpu().numpy())
    return np.concatenate(parts)


def main(args: Args) -> dict:
    clips = windows(args.collection, args.steps)
    if not clips:
        raise SystemExit(f"{args.collection}: no episode has {args.steps} steps")
    success = np.array([c["success"] for c in clips])
    sources = np.array([c["source"] for c in clips])
    result = {"command": "python benchmarks/reward_auc.py " + " ".join(sys.argv[1:]), "episodes": len(clips),
              "successes": int(success.sum()), "steps": args.steps, "scorers": {}}
    for spec in args.scorers:
        name, folder = spec.split("=", 1)
        expected = scores_of(folder, clips)
        entry = {"folder": folder, "overall": {}, "per_source": {}}
        for key, mask in [("overall", np.ones(len(clips), bool))] + [(s, sources == s) for s in sorted(set(sources))]:
            values = {"ms_auc": auc(expected[mask, MANIPULATION], success[mask]),
                      "aggregate_auc": auc(expected[mask].sum(1), success[mask]),
                      "episodes": int(mask.sum()), "successes": int(success[mask].sum())}
            if key == "overall":
                entry["overall"] = values
            else:
                entry["per_source"][key] = values
        result["scorers"][name] = entry
        o = entry["overall"]
        print(f"{name}: Manipulation Success AUC {o['ms_auc']:.3f}, aggregate AUC {o['aggregate_auc']:.3f} "
              f"({len(clips)} episodes, {int(success.sum())} successes)")
    atomic_write(args.out, lambda f: f.write(json.dumps(result, indent=1)), mode="w")
    print(f"wrote {args.out}\nreproduce: {result['command']}")
    return result


if __name__ == "__main__":
    main(tyro.cli(Args))
