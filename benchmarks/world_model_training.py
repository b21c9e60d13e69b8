"""Train the small world model on this machine from a collection, then evaluate it on held-out episodes.

Runs `roboalign train-tokenizer`, `roboalign train-world-model` and `roboalign eval-world-model`
in sequence (each resumes, so a finished stage is skipped) and records the wall time of each
training stage (from its metrics log) with the evaluation's numbers.

    python benchmarks/world_model_training.py --episodes data/episodes --runs runs --export roboalign_env/assets/default/world_model

``--export`` writes the trained model with bf16 weights (half the size), as committed in
``roboalign_env/assets/default/world_model``.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import tyro

from roboalign_env.data.io import read_jsonl


@dataclass(frozen=True)
class Args:
    episodes: Path = Path("data/episodes")
    """Collection folder (`roboalign collect`)."""
    runs: Path = Path("runs")
    """Where runs/tokenizer, runs/world_model and runs/world_model/eval go."""
    tokenizer_steps: int = 2500
    """Tokenizer optimizer steps (batch 8 clips)."""
    dynamics_grid: int = 8
    """`train-tokenizer --dynamics-grid`: 8x8 dynamics codes per frame (the default model's; 4 draws too
    little of the arm's motion, see docs/world_model.md)."""
    world_model_steps: tuple[int, ...] = (7000,)
    """Transformer optimizer steps, as cosine cycles: each entry resumes the run to that many steps with a
    fresh cosine schedule over the whole run (a warm restart)."""
    fine_tune_steps: tuple[int, ...] = (7000,)
    """Then cycles each started from the model before it (`train-world-model --init-from`, a fresh warm-up of
    `fine_tune_warmup` steps and a cosine decay over these steps), in runs/world_model_fine_tune{1,2,..}."""
    anchor_steps: tuple[int, ...] = (4000,)
    """Then cycles that turn on `--anchor-frames` (each frame of an SWR window predicted from the window's
    first frame and the actions summed since; docs/world_model.md), in runs/world_model_anchor{1,2,..}."""
    fine_tune_warmup: int = 100
    """`train-world-model --warmup-steps` of those cycles."""
    long_clip_cycles: tuple[tuple[int, float, int], ...] = ((1250, 5e-4, 100), (2600, 3e-4, 50))
    """Then anchor-frames cycles on 16-frame clips (every step since a window's first frame up to 15 trained;
    the model's own SWR window becomes 16), each (steps, peak lr, warm-up steps) from the model before it, at
    `long_clip_batch_size` clips per step on --episodes pooled with --pooled-with, in
    runs/world_model_long_clips{1,2,..}. Sized for a GPU (docs/rebuild.md); () skips them."""
    long_clip_batch_size: int = 64
    """`train-world-model --batch-size` of the long-clip cycles."""
    pooled_with: tuple[Path, ...] = ()
    """Collections pooled with --episodes in the long-clip cycles (the default's: `explore_push` episodes,
    docs/data_engine.md)."""
    loader_workers: int = 0
    """`train-world-model --loader-workers` of every cycle (processes making batches while a GPU trains)."""
    batch_size: int = 8
    """`train-world-model --batch-size` (clips per step)."""
    lr: float = 5e-4
    """`train-world-model --lr` (peak)."""
    action_dropout: float = 0.1
    """`train-world-model --action-dropout` (with --action-to-codes, --parallel-frames and
    --markov-frames: the default model's recipe; see docs/world_model.md)."""
    change_weight: float = 10.0
    """`train-world-model --change-weight`."""
    out: Path = Path("benchmarks/results/world_model_training.json")
    """Result file."""
    export: Path | None = None
    """Also save the trained world model here with bf16 weights."""


def roboalign(*args) -> float:
    tic = time.perf_counter()
    subprocess.run([sys.executable, "-m", "roboalign_env.cli", *map(str, args)], check=True)
    return time.perf_counter() - tic


def train_minutes(run: Path) -> float:
    """Wall time of a training run from its own log (seconds since the loop started)."""
    rows = [r for r in read_jsonl(run / "metrics.jsonl") if r["split"] == "train"]
    return rows[-1]["sec"] / 60


def main(args: Args) -> None:
    tok, wm = args.runs / "tokenizer", args.runs / "world_model"
    roboalign("train-tokenizer", "--episodes", args.episodes, "--out", tok, "--steps", args.tokenizer_steps,
              "--dynamics-grid", args.dynamics_grid)
    recipe = ["--episodes", args.episodes, "--tokenizer", tok / "model", "--batch-size", args.batch_size, "--lr",
              args.lr, "--parallel-frames", "--markov-frames", "--action-to-codes", "--action-dropout",
              args.action_dropout, "--change-weight", args.change_weight]
    recipe += ["--loader-workers", args.loader_workers]
    for steps in args.world_model_steps:
        roboalign("train-world-model", *recipe, "--out", wm, "--steps", steps)
    runs = [wm]
    cycles = [(f"fine_tune{i}", steps, []) for i, steps in enumerate(args.fine_tune_steps, 1)]
    cycles += [(f"anchor{i}", steps, ["--anchor-frames"]) for i, steps in enumerate(args.anchor_steps, 1)]
    for name, steps, flags in cycles:
        run = args.runs / f"world_model_{name}"
        roboalign("train-world-model", *recipe, *flags, "--out", run, "--init-from", runs[-1] / "world_model",
                  "--steps", steps, "--warmup-steps", args.fine_tune_warmup)
        runs.append(run)
    for i, (steps, lr, warmup) in enumerate(args.long_clip_cycles, 1):
        run = args.runs / f"world_model_long_clips{i}"
        pooled = ["--episodes", args.episodes, *args.pooled_with]
        roboalign("train-world-model", *recipe, *pooled, "--anchor-frames", "--clip-frames", 16, "--swr-window", 16,
                  "--batch-size", args.long_clip_batch_size, "--lr", lr, "--warmup-steps", warmup, "--out", run,
                  "--init-from", runs[-1] / "world_model", "--steps", steps)
        runs.append(run)
    final = runs[-1]
    eval_seconds = roboalign("eval-world-model", "--model", final / "world_model", "--episodes", args.episodes,
                             "--out", final / "eval")
    results = json.loads((final / "eval" / "results.json").read_text())
    summary = {
        "tokenizer_train_minutes": train_minutes(tok), "tokenizer_steps": args.tokenizer_steps,
        "world_model_train_minutes": sum(map(train_minutes, runs)), "world_model_steps": args.world_model_steps,
        "fine_tune_steps": args.fine_tune_steps, "anchor_steps": args.anchor_steps,
        "fine_tune_warmup": args.fine_tune_warmup, "long_clip_cycles": args.long_clip_cycles,
        "long_clip_batch_size": args.long_clip_batch_size, "pooled_with": [str(p) for p in args.pooled_with],
        "dynamics_grid": args.dynamics_grid, "batch_size": args.batch_size, "lr": args.lr,
        "eval_minutes": eval_seconds / 60, "evaluation": results,
        "command": "python benchmarks/world_model_training.py " + " ".join(sys.argv[1:]),
    }
    if args.export is not None:
        import torch

        from roboalign_env.models.world_model import WorldModel

        WorldModel.load(final / "world_model").save(args.export, dtype=torch.bfloat16)
        summary["exported"] = str(args.export)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(summary, indent=1))
    print(f"wrote {args.out}\nreproduce: {summary['command']}")


if __name__ == "__main__":
    main(tyro.cli(Args))
