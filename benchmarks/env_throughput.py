"""Dream env steps/s against real robosuite steps/s on the same machine, in one run.

- Dream: the native vector ``RoboAlignWorld-v0`` (world model with SWR, the env's default window
  unless ``--window``, + student reward every step) for N = 1, 4, 16, 64 in four precisions:
  float32, bf16 (autocast, bf16 transformer weights), int8 (int8 transformer weights) and
  int8+bf16. Steps/s = N x timed steps / seconds, after warm-up steps.
- Single-env step latency: ``gym.make("RoboAlignWorld-v0")`` (one env, wrappers included), each
  precision's env stepped in turn for ``latency_rounds`` rounds of ``latency_steps`` steps (so a
  shared machine's slow minutes hit every precision alike); the median step time is reported.
- Real: robosuite stepping + MuJoCo's fast 64x64 render (no judge), one process per CPU core
  running concurrently, for every source; steps/s summed over the processes.
- Memory per env: the dream's per-env state (KV cache, context frames and features, judge
  tokens; the weights are shared) and the process's resident set at each N; the resident set
  of one robosuite process (real).

Writes ``benchmarks/results/env_throughput.json`` and ``env_throughput.png``::

    python benchmarks/env_throughput.py

``--checkpoint`` times another model (a packed model folder or a bare world-model folder) instead of
the shipped default.
"""

from __future__ import annotations

import json
import os
import platform
import sys
import time
from dataclasses import dataclass
from multiprocessing import get_context
from pathlib import Path

import numpy as np
import tyro

import roboalign_env  # noqa: F401  (registers the envs)
from roboalign_env.models.transformer import MODEL_WINDOW, Window
from roboalign_env.sim.sources import ALL_SOURCES


@dataclass(frozen=True)
class Args:
    batch_sizes: tuple[int, ...] = (1, 4, 16, 64)
    """Numbers of dream envs N stepped in one forward pass."""
    dream_steps: int = 12
    """Timed dream steps per measurement (after 2 warm-up steps); at least 64 / N, so small N
    are timed over more steps."""
    precisions: tuple[str, ...] = ("float32", "bf16", "int8", "int8+bf16")
    """Dream precisions timed at every N."""
    latency_rounds: int = 5
    """Rounds over the precisions for the single-env latency."""
    latency_steps: int = 40
    """Timed single-env steps per precision per round."""
    real_steps: int = 40
    """Timed robosuite steps per process (after 2 warm-up steps)."""
    processes: int = os.cpu_count() or 1
    """Concurrent robosuite processes (one per core)."""
    sources: tuple[str, ...] = ALL_SOURCES
    """Sources whose real robosuite env is timed."""
    device: str = "auto"
    """Device of the dream ('auto', 'cpu', 'cuda')."""
    window: Window = MODEL_WINDOW
    """SWR window of the dream envs in frames ("model": the model's own, the env's default; None: no re-encoding)."""
    guidance: float | None = None
    """Classifier-free guidance scale of the dream envs (None: the model's default)."""
    checkpoint: Path | None = None
    """A model folder to time instead of the shipped default: packed (`roboalign pack-default --out ...`) or a
    bare world-model folder (tokenizer/, transformer/; the default's student and seeds then)."""
    threads: int | None = None
    """torch CPU threads for the dream (default: torch's choice, one per core). With --processes 1
    --threads 1 both sides get one core: a per-core comparison on a machine shared with other jobs."""
    out: Path = Path("benchmarks/results/env_throughput.json")
    """Result file (the PNG goes next to it)."""


def rss_mb() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def precision_flags(precision: str) -> dict:
    return {"bf16": "bf16" in precision, "int8": "int8" in precision}


def env_options(precision: str, device: str, checkpoint: Path | None = None, window: Window = MODEL_WINDOW,
                guidance: float | None = None) -> dict:
    """The env keywords of a dream env timed at ``precision`` (a model folder and decoding settings
    other than the env's defaults when given)."""
    return {"device": device, "window": window, "guidance": guidance, **precision_flags(precision),
            **({} if checkpoint is None else {"checkpoint": str(checkpoint)})}


def dream_settings(args: Args) -> dict:
    """``env_options``' model and decoding keywords from the command line."""
    return {"checkpoint": args.checkpoint, "window": args.window, "guidance": args.guidance}


def dream_rate(n: int, steps: int, precision: str, device: str, args: Args) -> dict:
    import gymnasium as gym

    env = gym.make_vec("RoboAlignWorld-v0", num_envs=n, max_episode_steps=1000,
                       **env_options(precision, device, **dream_settings(args)))
    env.reset(seed=0)
    rng = np.random.default_rng(0)
    for _ in range(2):
        env.step(rng.uniform(-1, 1, (n, 7)).astype(np.float32))
    tic = time.perf_counter()
    for _ in range(steps):
        env.step(rng.uniform(-1, 1, (n, 7)).astype(np.float32))
    seconds = time.perf_counter() - tic
    state = env.unwrapped.core.state_bytes() / n / 2**20
    env.close()
    return {"n": n, "precision": precision, "steps_per_s": n * steps / seconds, "ms_per_step": 1000 * seconds / steps,
            "state_mb_per_env": state, "process_rss_mb": rss_mb()}


def single_env_latency(precisions: tuple[str, ...], rounds: int, steps: int, device: str, args: Args) -> dict:
    """Median (and 90th percentile) ms per ``env.step`` of one env per precision, interleaved."""
    import gymnasium as gym

    envs = {p: gym.make("RoboAlignWorld-v0", **env_options(p, device, **dream_settings(args))) for p in precisions}
    times: dict[str, list[float]] = {p: [] for p in precisions}
    rng = np.random.default_rng(0)
    for p, env in envs.items():
        env.reset(seed=0)
        for _ in range(2):
            env.step(rng.uniform(-1, 1, 7).astype(np.float32))
    for _ in range(rounds):
        for p, env in envs.items():
            for _ in range(steps):
                action = rng.uniform(-1, 1, 7).astype(np.float32)
                tic = time.perf_counter()
                _, _, terminated, truncated, _ = env.step(action)
                times[p].append(1000 * (time.perf_counter() - tic))
                if terminated or truncated:
                    env.reset()
    return {p: {"median_ms": float(np.median(t)), "p90_ms": float(np.percentile(t, 90)), "steps": len(t)}
            for p, t in times.items()}


def real_worker(args: tuple[str, int]) -> dict:
    """Time robosuite step + fast render in this process."""
    source_name, steps = args
    from roboalign_env.sim.rendering import env_renderer
    from roboalign_env.sim.robosuite_env import make_env, reset_env
    from roboalign_env.sim.sources import SOURCES

    source = SOURCES[source_name]
    env = make_env(source)
    renderer = env_renderer(env, 64)
    obs = reset_env(env, os.getpid())
    policy = source.policy("nominal", np.random.default_rng(0))
    for _ in range(2):
        obs, *_ = env.step(policy(obs))
        renderer.render(env.sim.data._data)
    tic = time.perf_counter()
    for _ in range(steps):
        obs, *_ = env.step(policy(obs))
        renderer.render(env.sim.data._data)
    seconds = time.perf_counter() - tic
    return {"steps_per_s": steps / seconds, "rss_mb": rss_mb()}


def real_rate(source: str, steps: int, processes: int) -> dict:
    from roboalign_env.sim.workers import init_worker

    with get_context("spawn").Pool(processes, initializer=init_worker) as pool:
        results = pool.map(real_worker, [(source, steps)] * processes)
    return {"source": source, "processes": processes, "steps_per_s": sum(r["steps_per_s"] for r in results),
            "rss_mb_per_process": float(np.mean([r["rss_mb"] for r in results]))}


def plot(results: dict, png: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from roboalign_env.eval.media import save_figure

    fig, ax = plt.subplots(figsize=(6.5, 4))
    for precision in dict.fromkeys(r["precision"] for r in results["dream"]):
        rows = [r for r in results["dream"] if r["precision"] == precision]
        ax.plot([r["n"] for r in rows], [r["steps_per_s"] for r in rows], "o-", label=f"dream, {precision}")
    for r in results["real"]:
        ax.axhline(r["steps_per_s"], ls=":", lw=1, color="grey")
        ax.text(1, r["steps_per_s"], f"real {r['source']} ({r['processes']} procs)", fontsize=7, va="bottom")
    ax.set_xscale("log", base=2)
    ax.set_yscale("log")
    ax.set_xlabel("dream envs N (one batch)")
    ax.set_ylabel("env steps / s")
    ax.legend(fontsize=8)
    fig.tight_layout()
    return save_figure(fig, png)


def main(args: Args) -> None:
    import torch

    from roboalign_env.device import resolve_device

    device = resolve_device(args.device)
    if args.threads:
        torch.set_num_threads(args.threads)
    real = []
    for source in args.sources:
        real.append(real_rate(source, args.real_steps, args.processes))
        print(f"real {source}: {real[-1]['steps_per_s']:.1f} steps/s ({args.processes} processes)", flush=True)
    dream = []
    for n in args.batch_sizes:
        for precision in args.precisions:
            dream.append(dream_rate(n, max(args.dream_steps, 64 // n), precision, device, args))
            print(f"dream N={n:>2} {precision:>9}: {dream[-1]['steps_per_s']:7.1f} steps/s, "
                  f"{dream[-1]['ms_per_step']:.1f} ms/step", flush=True)
    latency = single_env_latency(args.precisions, args.latency_rounds, args.latency_steps, device, args)
    for p, r in latency.items():
        print(f"single env {p:>9}: median {r['median_ms']:.1f} ms/step (p90 {r['p90_ms']:.1f})", flush=True)
    best_real = max(r["steps_per_s"] for r in real)
    n16 = max(r["steps_per_s"] for r in dream if r["n"] == 16)
    default = {r["n"]: r for r in dream if r["precision"] == "float32"}
    results = {
        "command": "python benchmarks/env_throughput.py " + " ".join(sys.argv[1:]),
        "checkpoint": "shipped default" if args.checkpoint is None else str(args.checkpoint),
        "window": args.window, "guidance": args.guidance,
        "machine": {"cpu_count": os.cpu_count(), "torch_threads": torch.get_num_threads(), "device": device,
                    "platform": platform.platform()},
        "dream": dream, "real": real, "single_env_latency": latency,
        "summary": {
            "dream_n16_steps_per_s": n16,
            "real_fastest_source_steps_per_s": best_real,
            "ratio_dream_n16_over_fastest_real": n16 / best_real,
            "ratio_dream_n16_over_mean_real": n16 / float(np.mean([r["steps_per_s"] for r in real])),
            "best_precision_n16": max((r for r in dream if r["n"] == 16), key=lambda r: r["steps_per_s"])["precision"],
            "float32_n16_steps_per_s": default[16]["steps_per_s"] if 16 in default else None,
            "single_env_median_ms": {p: r["median_ms"] for p, r in latency.items()},
            "dream_state_mb_per_env": dream[0]["state_mb_per_env"],
            "real_mb_per_process": float(np.mean([r["rss_mb_per_process"] for r in real])),
        },
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    from roboalign_env.data.io import atomic_write

    atomic_write(args.out, lambda f: f.write(json.dumps(results, indent=1)), mode="w")
    plot(results, args.out.with_suffix(".png"))
    print("| N | precision | dream steps/s | ms/step | state MB/env |\n|---|---|---|---|---|")
    for r in dream:
        print(f"| {r['n']} | {r['precision']} | {r['steps_per_s']:.1f} | {r['ms_per_step']:.1f} | "
              f"{r['state_mb_per_env']:.2f} |")
    print(json.dumps(results["summary"], indent=1))
    print(f"wrote {args.out} and {args.out.with_suffix('.png')}\nreproduce: {results['command']}")


if __name__ == "__main__":
    main(tyro.cli(Args))
