"""Does the reward read the actions? A real clip under its own actions against the same clip under actions
that did not make it, on a bench split.

Every wrong-action pair of the split (family ``actions``, Action–Outcome Consistency 0: another episode's
actions over the same span, or the clip's own mirrored) is scored beside its episode's clean full clip under
its own actions, the same frames. Reported per scorer, per kind and per source: the fraction of pairs whose
wrong actions get the lower expected AOC (1.0: the scorer always tells them apart; 0.5: it does not read
them), and both mean AOC scores. Another episode's actions are the hard kind: the same robot doing the same
task a little differently.

    python benchmarks/aoc_wrong_actions.py --bench data/bench_onset
"""

from __future__ import annotations

import json
import os
import platform
import sys
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import tyro

from roboalign_env.data.bench import load_pair, read_index
from roboalign_env.data.io import atomic_write
from roboalign_env.models.registry import load_scorer
from roboalign_env.rubric import DIMENSIONS

AOC = DIMENSIONS.index("action_outcome_consistency")


@dataclass(frozen=True)
class Args:
    bench: Path = Path("data/bench")
    """Bench folder (`roboalign build-bench`)."""
    scorers: tuple[str, ...] = ("student=roboalign_env/assets/default/student", "teacher=checkpoints/judge")
    """Scorers as name=folder (students or teachers)."""
    split: str = "test"
    """Bench split whose pairs are scored (as the bench was built: the held-out source's are 'heldout')."""
    out: Path = Path("benchmarks/results/aoc_wrong_actions.json")
    """Result file."""


def pairs_of(bench: Path, split: str) -> list[tuple[dict, dict]]:
    """(clean full clip, wrong-action pair) of every wrong-action pair of ``split`` whose episode has its clean clip."""
    rows = read_index(bench, split)
    own = {r["episode_id"]: r for r in rows if r["provenance"]["family"] == "clean" and r["provenance"]["kind"] == "full"}
    return [(own[r["episode_id"]], r) for r in rows if r["provenance"]["family"] == "actions"
            and r["labels"]["action_outcome_consistency"] == 0 and r["episode_id"] in own]


@torch.no_grad()
def aoc_scores(model, bench: Path, pairs: list[tuple[dict, dict]]) -> np.ndarray:
    """(N, 2) expected AOC of each pair: the clip under its own actions, under the wrong ones."""
    out = []
    for own_row, wrong_row in pairs:
        a, b = load_pair(bench, own_row), load_pair(bench, wrong_row)
        scores = model.score([a["video"], b["video"]], [wrong_row["instruction"]] * 2,
                             initial_frames=[a["initial_frame"], b["initial_frame"]], actions=[a["actions"], b["actions"]])
        out.append(scores.expected[:, AOC].float().cpu().numpy())
    return np.array(out).reshape(-1, 2)


def summary(scores: np.ndarray) -> dict:
    return {"pairs": len(scores), "wrong_lower": float((scores[:, 1] < scores[:, 0]).mean()),
            "mean_aoc_own": float(scores[:, 0].mean()), "mean_aoc_wrong": float(scores[:, 1].mean())}


def main(args: Args) -> dict:
    pairs = pairs_of(args.bench, args.split)
    if not pairs:
        raise SystemExit(f"{args.bench}: no wrong-action pair with its clean clip in split {args.split!r}")
    kinds = np.array([w["provenance"]["kind"] for _, w in pairs])
    sources = np.array([w["source"] for _, w in pairs])
    result = {"command": "python benchmarks/aoc_wrong_actions.py " + " ".join(sys.argv[1:]),
              "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, no GPU",
              "split": args.split, "scorers": {}}
    for spec in args.scorers:
        name, folder = spec.split("=", 1)
        scores = aoc_scores(load_scorer(folder), args.bench, pairs)
        entry = {"folder": folder, "per_kind": {}, "per_source": defaultdict(dict)}
        for kind in sorted(set(kinds)):
            entry["per_kind"][kind] = summary(scores[kinds == kind])
            for source in sorted(set(sources[kinds == kind])):
                entry["per_source"][source][kind] = summary(scores[(kinds == kind) & (sources == source)])
        result["scorers"][name] = entry
        print(f"{name}: wrong actions score lower AOC on " + ", ".join(
            f"{k} {v['wrong_lower']:.3f} ({v['pairs']} pairs)" for k, v in entry["per_kind"].items()))
    atomic_write(args.out, lambda f: f.write(json.dumps(result, indent=1)), mode="w")
    print(f"wrote {args.out}\nreproduce: {result['command']}")
    return result


if __name__ == "__main__":
    main(tyro.cli(Args))
