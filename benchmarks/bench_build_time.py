"""Wall time of the full data engine from nothing: collect the episodes, then build RobotWorldBench.

Uses the same functions as `roboalign collect` and `roboalign build-bench` with their defaults
(200 episodes per source, 2 workers), in a fresh folder, and reports pair counts and label balance.

    python benchmarks/bench_build_time.py --out runs/bench_build
"""

from __future__ import annotations

import json
import shutil
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import tyro

from roboalign_env.data.splits import HELDOUT_SOURCE
from roboalign_env.eval.bench_stats import bench_stats
from roboalign_env.sim.build_bench import build_bench
from roboalign_env.sim.collect import collect, plan_episodes
from roboalign_env.sim.sources import ALL_SOURCES


@dataclass(frozen=True)
class Args:
    out: Path = Path("data/bench_build_time")
    """Scratch folder (emptied first): <out>/episodes and <out>/bench."""
    episodes_per_source: int = 200
    """Episodes per source."""
    workers: int = 2
    """Worker processes for both stages."""
    result: Path = Path("benchmarks/results/bench_build_time.json")
    """Result file."""


def main(args: Args) -> None:
    shutil.rmtree(args.out, ignore_errors=True)
    start = time.perf_counter()
    episodes = collect(args.out / "episodes", plan_episodes(list(ALL_SOURCES), args.episodes_per_source), args.workers)
    collected = time.perf_counter()
    rows = build_bench(args.out / "episodes", args.out / "bench", HELDOUT_SOURCE, args.workers)
    built = time.perf_counter()
    stats = bench_stats(args.out / "bench")
    frames = sum(e["num_steps"] + 1 for e in episodes)
    result = {
        "benchmark": "bench_build_time",
        "workers": args.workers,
        "episodes": len(episodes),
        "pairs": len(rows),
        "collect_s": round(collected - start, 1),
        "collect_frames_per_s_per_worker": round(frames / (collected - start) / args.workers, 1),
        "build_bench_s": round(built - collected, 1),
        "total_min": round((built - start) / 60, 2),
        "min_level_fraction": round(stats["min_level_fraction"], 4),
        "level_fraction": stats["fraction"],
        "splits": stats["splits"],
        "nominal_success": {s: round(sum(e["success"] for e in episodes if e["source"] == s and e["failure"] == "nominal")
                                     / max(1, sum(e["source"] == s and e["failure"] == "nominal" for e in episodes)), 3)
                            for s in ALL_SOURCES},
        "command": "python " + " ".join(sys.argv),
    }
    args.result.parent.mkdir(parents=True, exist_ok=True)
    args.result.write_text(json.dumps(result, indent=1))
    print(json.dumps(result, indent=1))
    print(f"reproduce: python benchmarks/bench_build_time.py --out {args.out}")


if __name__ == "__main__":
    main(tyro.cli(Args))
