"""Scoring throughput: teacher judge vs student reward, batched, same process, same CPU, same clips.

Both score the same 16-frame 64x64 uint8 clips with one instruction each (drawn from the bench's
instruction pool, so batches repeat instructions as a GRPO group does) and the 15 actions between
their frames (both judges read actions), from input validation and
uint8 conversion to the six distributions, text encoding included (each scorer encodes a batch's
distinct instructions once). The two are timed alternately, in rounds, and the ratio is taken
per round, so a shared, noisy machine shifts both alike. bf16 autocast is used for both when
``--bf16`` (the default; it is the faster setting for both on CPUs with bf16 instructions, AMX or AVX512-BF16).

    python benchmarks/judge_throughput.py --teacher checkpoints/judge --student roboalign_env/assets/default/student
"""

from __future__ import annotations

import json
import os
import platform
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import tyro

from roboalign_env.models.registry import load_scorer


@dataclass(frozen=True)
class Args:
    teacher: Path = Path("checkpoints/judge")
    """Teacher checkpoint folder."""
    student: Path = Path("roboalign_env/assets/default/student")
    """Student checkpoint folder."""
    batch_size: int = 256
    """Clips per scoring call."""
    frames: int = 16
    """Frames per clip."""
    rounds: int = 3
    """Timed rounds (each times the teacher once and the student several times)."""
    bf16: bool = True
    """Score under bf16 autocast (both models)."""
    out: Path = Path("benchmarks/results/judge_throughput.json")
    """Result file."""


INSTRUCTIONS = ["lift the red cube", "open the door", "stack the red cube on the green cube", "put the can in the bin",
                "pick up the red block from the table", "pull the door toward you", "push the red cube to the left",
                "place the red cube onto the green cube"]


def clips_per_second(model, videos: np.ndarray, texts: list[str], actions: list, bf16: bool, repeats: int) -> float:
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
        start = time.perf_counter()
        for _ in range(repeats):
            model.score(videos, texts, actions=actions)
        return repeats * len(videos) / (time.perf_counter() - start)


def main(args: Args) -> None:
    teacher, student = load_scorer(args.teacher), load_scorer(args.student)
    rng = np.random.default_rng(0)
    videos = rng.integers(0, 256, (args.batch_size, args.frames, 64, 64, 3), dtype=np.uint8)
    texts = [INSTRUCTIONS[i] for i in rng.integers(0, len(INSTRUCTIONS), args.batch_size)]
    actions = list(rng.uniform(-1, 1, (args.batch_size, args.frames - 1, 7)).astype(np.float32))
    for model in (teacher, student):  # warm-up (MiniLM load, oneDNN kernels)
        clips_per_second(model, videos, texts, actions, args.bf16, 1)
    rows = []
    for r in range(args.rounds):
        t = clips_per_second(teacher, videos, texts, actions, args.bf16, 1)
        s = clips_per_second(student, videos, texts, actions, args.bf16, 4)
        rows.append({"round": r, "teacher_clips_per_s": round(t, 1), "student_clips_per_s": round(s, 1), "ratio": round(s / t, 2)})
        print(f"round {r}: teacher {t:7.1f} clips/s   student {s:7.1f} clips/s   x{s / t:.1f}")
    summary = {
        "benchmark": "judge_throughput",
        "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, torch threads {torch.get_num_threads()}, no GPU",
        "clip": f"{args.frames} frames of 64x64 uint8 with {args.frames - 1} actions", "batch_size": args.batch_size,
        "bf16_autocast": args.bf16,
        "teacher_params_m": round(sum(p.numel() for p in teacher.parameters()) / 1e6, 2),
        "student_params_m": round(sum(p.numel() for p in student.parameters()) / 1e6, 2),
        "rounds": rows,
        "teacher_clips_per_s_median": float(np.median([r["teacher_clips_per_s"] for r in rows])),
        "student_clips_per_s_median": float(np.median([r["student_clips_per_s"] for r in rows])),
        "speedup_median": float(np.median([r["ratio"] for r in rows])),
        "command": "python " + " ".join(sys.argv),
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(summary, indent=1) + "\n")
    print(f"median: teacher {summary['teacher_clips_per_s_median']} clips/s, student {summary['student_clips_per_s_median']} "
          f"clips/s, student/teacher x{summary['speedup_median']}\nwrote {args.out}\nreproduce: {summary['command']}")


if __name__ == "__main__":
    main(tyro.cli(Args))
