"""Soak: the native vector env stepped for a long time with random actions and autoreset.

Samples the process's resident memory every ``--every`` steps and counts non-finite rewards,
observations and scores. Memory growth is measured after a warm-up (the first samples include
one-time allocations: the compiled decoding step, allocator pools), as
``(last - warm) / warm`` where ``warm`` is the resident memory at the end of the warm-up.

    python benchmarks/soak.py --num-envs 8 --steps 20000
"""

from __future__ import annotations

import json
import os
import platform
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import gymnasium as gym
import numpy as np
import torch
import tyro

import roboalign_env  # noqa: F401
from roboalign_env.data.io import atomic_write


@dataclass(frozen=True)
class Args:
    num_envs: int = 8
    """N: environments stepped together."""
    steps: int = 20_000
    """Vector steps (each advances every environment)."""
    every: int = 500
    """Sample memory every this many steps."""
    warmup: int = 2_000
    """Steps before the memory baseline is taken."""
    max_episode_steps: int = 64
    """Episode length (the vector env truncates itself and resets in the same step)."""
    threads: int = 1
    """torch threads."""
    settings: dict[str, str] = field(default_factory=dict)
    """Extra env keyword arguments as strings, e.g. int8=True (parsed with json where possible)."""
    out: Path = Path("benchmarks/results/soak.json")
    """Result file."""


def resident_mb() -> float:
    """Resident set size of this process in MB (from /proc; ru_maxrss is a peak, not a level)."""
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def _value(text: str):
    try:
        return json.loads(text.lower() if text in ("True", "False") else text)
    except json.JSONDecodeError:
        return text


def main(args: Args) -> dict:
    torch.set_num_threads(args.threads)
    settings = {k: _value(v) for k, v in args.settings.items()}
    env = gym.make_vec("RoboAlignWorld-v0", num_envs=args.num_envs, max_episode_steps=args.max_episode_steps,
                       device="cpu", **settings)
    rng = np.random.default_rng(0)
    env.reset(seed=0)
    samples, non_finite, episodes = [], {"reward": 0, "observation": 0, "scores": 0}, 0
    tic = time.perf_counter()
    for step in range(1, args.steps + 1):
        actions = rng.uniform(-1, 1, (args.num_envs, 7)).astype(np.float32)
        obs, reward, terminated, truncated, info = env.step(actions)
        non_finite["reward"] += int((~np.isfinite(reward)).sum())
        non_finite["observation"] += int((~np.isfinite(obs["task"])).sum())
        non_finite["scores"] += sum(int(not np.isfinite(v).all()) for v in info["scores"].values())
        episodes += int((terminated | truncated).sum())
        if step % args.every == 0:
            samples.append({"step": step, "resident_mb": round(resident_mb(), 2),
                            "seconds": round(time.perf_counter() - tic, 1)})
            print(f"step {step}: {samples[-1]['resident_mb']:.1f} MB, {episodes} episodes, "
                  f"non-finite {sum(non_finite.values())}", flush=True)
    env.close()
    warm = next(s for s in samples if s["step"] >= args.warmup)
    after = [s["resident_mb"] for s in samples if s["step"] >= warm["step"]]
    result = {
        "command": "python benchmarks/soak.py " + " ".join(sys.argv[1:]),
        "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, torch threads {args.threads}",
        "num_envs": args.num_envs, "steps": args.steps, "env_steps": args.steps * args.num_envs,
        "episodes_ended": episodes, "settings": settings, "seconds": round(time.perf_counter() - tic, 1),
        "warmup_steps": warm["step"], "resident_mb_at_warmup": warm["resident_mb"],
        "resident_mb_last": after[-1], "resident_mb_max_after_warmup": max(after),
        "growth_after_warmup": (after[-1] - warm["resident_mb"]) / warm["resident_mb"],
        "max_growth_after_warmup": (max(after) - warm["resident_mb"]) / warm["resident_mb"],
        "non_finite": non_finite, "samples": samples,
    }
    atomic_write(args.out, lambda f: f.write(json.dumps(result, indent=1)), mode="w")
    print(f"growth after warm-up {100 * result['growth_after_warmup']:+.2f}% (max {100 * result['max_growth_after_warmup']:+.2f}%), "
          f"non-finite {non_finite}; wrote {args.out}\nreproduce: {result['command']}")
    return result


if __name__ == "__main__":
    main(tyro.cli(Args))
