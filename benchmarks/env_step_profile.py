"""Where a step of the vector dream env goes: the time of each stage, per step and as a share of the step.

Steps ``gym.make_vec("RoboAlignWorld-v0", num_envs=N)`` with random actions under cProfile (after warm-up
steps) and reads the cumulative time of the functions that make up a step. The stages overlap where one
calls another: the SWR re-encoding includes a transformer pass (the context prefill), so the shares do
not add up to 1.

    python benchmarks/env_step_profile.py --num-envs 16 --threads 1
"""

from __future__ import annotations

import cProfile
import json
import pstats
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import tyro
from env_throughput import env_options  # a sibling script: run this file from anywhere with python

from roboalign_env.data.io import atomic_write

#: stage -> (path suffix of its module, function) whose cumulative time is the stage's.
STAGES = {
    "env_step": ("roboalign_env/envs/core.py", "step"),
    "transformer_passes": ("roboalign_env/models/decoding.py", "_decode"),
    "tokenizer_decoder": ("roboalign_env/models/tokenizer.py", "decode_dynamics"),
    "sampling": ("roboalign_env/models/transformer.py", "sample_codes"),
    "swr_reencoding": ("roboalign_env/models/world_model.py", "_restart"),
    "student_reward": ("roboalign_env/envs/reward.py", "step"),
}


@dataclass(frozen=True)
class Args:
    num_envs: int = 16
    """Dream envs stepped together."""
    steps: int = 20
    """Profiled steps (a multiple of the SWR window minus one, 5, re-encodes equally often in every run)."""
    warmup: int = 5
    """Steps before profiling."""
    precision: str = "float32"
    """'float32', 'bf16', 'int8' or 'int8+bf16' (as in env_throughput.py)."""
    device: str = "auto"
    checkpoint: Path | None = None
    """A model folder to profile instead of the shipped default: packed (`roboalign pack-default --out ...`) or a
    bare world-model folder (tokenizer/, transformer/; the default's student and seeds then)."""
    threads: int | None = None
    """torch CPU threads (default: torch's choice)."""
    out: Path = Path("benchmarks/results/env_step_profile.json")


def stage_seconds(stats: pstats.Stats) -> dict[str, float]:
    totals = dict.fromkeys(STAGES, 0.0)
    for (filename, _, function), (_, _, _, cumulative, _) in stats.stats.items():
        for stage, (suffix, name) in STAGES.items():
            if function == name and filename.replace("\\", "/").endswith(suffix):
                totals[stage] += cumulative
    return totals


def main(args: Args) -> dict:
    import gymnasium as gym
    import torch

    if args.threads is not None:
        torch.set_num_threads(args.threads)
    env = gym.make_vec("RoboAlignWorld-v0", num_envs=args.num_envs, max_episode_steps=1000,
                       **env_options(args.precision, args.device, args.checkpoint))
    env.reset(seed=0)
    rng = np.random.default_rng(0)
    actions = [rng.uniform(-1, 1, (args.num_envs, 7)).astype(np.float32) for _ in range(args.warmup + args.steps)]
    for a in actions[: args.warmup]:
        env.step(a)
    profiler = cProfile.Profile()
    profiler.enable()
    for a in actions[args.warmup :]:
        env.step(a)
    profiler.disable()
    env.close()
    seconds = stage_seconds(pstats.Stats(profiler))
    step = seconds["env_step"]
    result = {
        "command": "python benchmarks/env_step_profile.py " + " ".join(sys.argv[1:]),
        "num_envs": args.num_envs, "steps": args.steps, "precision": args.precision, "threads": torch.get_num_threads(),
        "ms_per_step": {k: 1000 * v / args.steps for k, v in seconds.items()},
        "share_of_step": {k: v / step for k, v in seconds.items() if k != "env_step"},
    }
    atomic_write(args.out, lambda f: f.write(json.dumps(result, indent=1)), mode="w")
    for stage, share in result["share_of_step"].items():
        print(f"{stage}: {result['ms_per_step'][stage]:.1f} ms per step ({100 * share:.0f}%)")
    print(f"step: {result['ms_per_step']['env_step']:.1f} ms (N={args.num_envs}, {args.precision}, "
          f"{result['threads']} threads; profiled)\nwrote {args.out}\nreproduce: {result['command']}")
    return result


if __name__ == "__main__":
    main(tyro.cli(Args))
