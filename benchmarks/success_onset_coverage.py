"""How often the bench shows a success the moment it happens.

The env's reward scores the frames up to the current step, so a success must be called on the step
robosuite first reports it. This counts, per source, the bench's clean pairs of successful episodes
(correct instruction) by where their window's last frame falls against the episode's first success:
before it, 0-2 steps after (what the env's reward sees at success), 3-8 steps after, or later; with
the oracle's mean Manipulation Success in each group.

    python benchmarks/success_onset_coverage.py --bench data/bench \
        --collection data/ctl data/extra data/extra2 data/extra3 --split train
"""

from __future__ import annotations

import json
import sys
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import tyro

from roboalign_env.data.bench import read_index
from roboalign_env.data.episodes import read_manifests
from roboalign_env.data.io import atomic_write

GROUPS = ("before", "0-2 after", "3-8 after", "later")


@dataclass(frozen=True)
class Args:
    bench: Path = Path("data/bench")
    collection: tuple[Path, ...] = (Path("data/episodes"),)
    """The collections the bench was built from (for each episode's first success step)."""
    split: str = "train"
    """Bench split counted, in the bench's own view."""
    out: Path = Path("benchmarks/results/success_onset_coverage.json")


def group_of(last_frame: int, first_success: int) -> str:
    lag = last_frame - first_success
    return GROUPS[0] if lag < 0 else GROUPS[1] if lag <= 2 else GROUPS[2] if lag <= 8 else GROUPS[3]


def main(args: Args) -> dict:
    first = {row["episode_id"]: row["first_success_step"] for _, row in read_manifests(args.collection)}
    found: dict[str, dict[str, list[int]]] = defaultdict(lambda: {g: [] for g in GROUPS})
    for row in read_index(args.bench, args.split):
        step = first.get(row["episode_id"])
        if step is None or row["provenance"]["family"] != "clean" or row["instruction_kind"] != "correct":
            continue
        window = row["provenance"]["window"]
        last = window["start"] + (window["length"] - 1) * window["stride"]
        found[row["source"]][group_of(last, step)].append(row["labels"]["manipulation_success"])
    if not found:
        raise ValueError(f"{args.bench} split {args.split!r}: no clean pair of a successful episode of "
                         f"{[str(c) for c in args.collection]}; expected the collections the bench was built from")
    per_source = {s: {g: {"pairs": len(v), "ms_mean": round(float(np.mean(v)), 3) if v else None}
                      for g, v in groups.items()} for s, groups in sorted(found.items())}
    result = {"command": "python benchmarks/success_onset_coverage.py " + " ".join(sys.argv[1:]),
              "split": args.split, "per_source": per_source}
    atomic_write(args.out, lambda f: f.write(json.dumps(result, indent=1)), mode="w")
    for source, groups in per_source.items():
        print(source, "  ".join(f"{g}: {v['pairs']} (MS {v['ms_mean']})" for g, v in groups.items()))
    print(f"wrote {args.out}\nreproduce: {result['command']}")
    return result


if __name__ == "__main__":
    main(tyro.cli(Args))
