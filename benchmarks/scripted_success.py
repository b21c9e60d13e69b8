"""Scripted policy success per source: nominal over 50 seeds, each failure mode over 10 seeds.

Runs in real robosuite without rendering (success depends on physics only).

    python benchmarks/scripted_success.py
"""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import tyro

from roboalign_env.sim.robosuite_env import make_env, reset_env
from roboalign_env.sim.sources import SOURCES


@dataclass(frozen=True)
class Args:
    nominal_seeds: int = 50
    """Seeded nominal episodes per source."""
    failure_seeds: int = 10
    """Seeded episodes per failure mode."""
    out: Path = Path("benchmarks/results/scripted_success.json")
    """Result file."""


def rollout(env, source, failure: str, seed: int) -> tuple[bool, int | None]:
    obs = reset_env(env, seed)
    policy = source.policy(failure, np.random.default_rng([seed, 1]))
    first = None
    for step in range(source.horizon):
        obs, _, _, _ = env.step(policy(obs))
        if first is None and env._check_success():
            first = step + 1
    return bool(env._check_success()), first


def main(args: Args) -> None:
    results = {}
    for name, source in SOURCES.items():
        env = make_env(source)
        runs = [rollout(env, source, "nominal", s) for s in range(args.nominal_seeds)]
        firsts = [f for ok, f in runs if ok]
        entry = {
            "control_freq": source.control_freq,
            "horizon": source.horizon,
            "nominal_success": float(np.mean([ok for ok, _ in runs])),
            "first_success_step": [min(firsts), max(firsts)] if firsts else None,
            "failure_success": {},
        }
        for failure in source.failure_modes[1:]:
            entry["failure_success"][failure] = float(np.mean([rollout(env, source, failure, s)[0] for s in range(args.failure_seeds)]))
        results[name] = entry
        print(f"{name:22s} nominal {entry['nominal_success']:.2f} (first success at steps {entry['first_success_step']}, "
              f"{source.control_freq} Hz); failure modes: {entry['failure_success']}")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"benchmark": "scripted_success", "per_source": results, "command": "python " + " ".join(sys.argv)}, indent=1))
    print(f"wrote {args.out}\nreproduce: python benchmarks/scripted_success.py")


if __name__ == "__main__":
    main(tyro.cli(Args))
