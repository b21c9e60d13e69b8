"""Collection throughput: rendered 64x64 frames/s per worker, ours vs robosuite's default camera path.

Both paths run the same scripted nominal episodes in the same process, one after the other, so the
ratio is robust to a shared, noisy machine. "Ours" is the full collector step (policy, physics,
privileged-state readout, fast render); "robosuite default" is ``use_camera_obs=True`` with
robosuite's own offscreen renderer at 64x64 (shadows, reflections and multisampling on).

    python benchmarks/collection_throughput.py --episodes 3
"""

from __future__ import annotations

import json
import platform
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import tyro

from roboalign_env.sim.collect import EpisodeSpec, run_episode
from roboalign_env.sim.sources import SOURCES


@dataclass(frozen=True)
class Args:
    episodes: int = 3
    """Nominal episodes per source and path."""
    out: Path = Path("benchmarks/results/collection_throughput.json")
    """Result file."""


def ours(name: str, episodes: int) -> float:
    run_episode(EpisodeSpec(name, "nominal", 999))  # build env + renderer outside the timing
    start, frames = time.perf_counter(), 0
    for seed in range(episodes):
        frames += len(run_episode(EpisodeSpec(name, "nominal", seed)).frames)
    return frames / (time.perf_counter() - start)


def robosuite_default(name: str, episodes: int) -> float:
    import robosuite

    from roboalign_env.sim.robosuite_env import reset_env

    source = SOURCES[name]
    env = robosuite.make(
        source.task, robots=source.robot, has_renderer=False, has_offscreen_renderer=True,
        use_camera_obs=True, camera_names="agentview", camera_heights=64, camera_widths=64,
        control_freq=source.control_freq, horizon=source.horizon, hard_reset=False, ignore_done=True,
        **source.env_kwargs,
    )
    reset_env(env, 999)
    start, frames = time.perf_counter(), 0
    for seed in range(episodes):
        obs = reset_env(env, seed)
        policy = source.policy("nominal", np.random.default_rng([seed, 1]))
        for _ in range(source.horizon):
            obs, _, _, _ = env.step(policy(obs))
            frames += 1
    fps = frames / (time.perf_counter() - start)
    env.close()
    return fps


def main(args: Args) -> None:
    results = {}
    for name in SOURCES:
        fast, default = ours(name, args.episodes), robosuite_default(name, args.episodes)
        results[name] = {"ours_fps": round(fast, 1), "robosuite_default_fps": round(default, 1), "speedup": round(fast / default, 2)}
        print(f"{name:22s} ours {fast:6.1f} frames/s   robosuite default {default:6.1f} frames/s   x{fast / default:.2f}")
    summary = {
        "benchmark": "collection_throughput",
        "machine": f"{platform.processor() or platform.machine()}, {__import__('os').cpu_count()} cores, no GPU",
        "episodes_per_source": args.episodes,
        "per_source": results,
        "ours_fps_mean": round(float(np.mean([r["ours_fps"] for r in results.values()])), 1),
        "ours_fps_min": round(float(np.min([r["ours_fps"] for r in results.values()])), 1),
        "command": "python " + " ".join(sys.argv),
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(summary, indent=1))
    print(f"mean {summary['ours_fps_mean']} frames/s per worker; wrote {args.out}")
    print(f"reproduce: python benchmarks/collection_throughput.py --episodes {args.episodes}")


if __name__ == "__main__":
    main(tyro.cli(Args))
