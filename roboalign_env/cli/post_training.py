"""Post-training commands: ``post-train`` (GRPO, RoboAlign-R1) and ``eval-alignment``."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from roboalign_env.assets import DEFAULT_MODEL
from roboalign_env.cli.options import Nested, command_line
from roboalign_env.data.splits import HELDOUT_SOURCE
from roboalign_env.models.transformer import MODEL_WINDOW, Window
from roboalign_env.training.grpo.trainer import GRPOConfig
from roboalign_env.training.loop import LoopConfig


@dataclass(frozen=True)
class PostTrain:
    """RoboAlign-R1 post-training: GRPO of the world model against the student reward, with online
    re-distillation of the student (or, with --reward rlvr, the RLVR-World-style baseline). Resumable."""

    world_model: Path = Path("runs/world_model/world_model")
    """The SFT world model to start from and the frozen KL reference (train-world-model's output, or the
    package default's world_model/, which is SFT)."""
    episodes: Path = Path("data/episodes")
    """Collection folder: prompts are (first frame, actions, instruction) windows of its bench-train episodes."""
    student: Path = DEFAULT_MODEL / "student"
    """Student reward checkpoint (the reward of --reward student and hybrid)."""
    teacher: Path = Path("checkpoints/judge")
    """Teacher judge: labels fresh rollouts for online re-distillation of the student."""
    heldout_source: str = HELDOUT_SOURCE
    """The bench's held-out source: its episodes are never prompts."""
    export_to: Path | None = None
    """Also write the aligned world model here (bf16 weights, e.g. the package's default world_model/)."""
    grpo: Nested[GRPOConfig] = GRPOConfig()
    """GRPO: reward, group size, rollouts, clipping, KL, online distillation."""
    loop: Nested[LoopConfig] = LoopConfig(out=Path("runs/post_train"), steps=160, lr=1e-4, warmup_steps=5,
                                          min_lr_ratio=1.0, mixed_precision="bf16", log_every=1, eval_every=25,
                                          save_every=25)
    """The training loop (run folder: model/ (transformer), world_model/ (full folder), distill/, student/,
    metrics.jsonl, curves.png, grpo_curves.png). 160 updates take about 25 minutes on 2 CPU cores with the
    defaults; the RLVR reward's perceptual distance makes its steps ~1.5x slower."""

    def run(self) -> None:
        from roboalign_env.training.grpo.trainer import post_train

        post_train(self.grpo, self.loop, self.world_model, self.episodes, self.student, self.teacher,
                   self.heldout_source, self.export_to)
        out = self.loop.out
        print(f"aligned world model in {out / 'world_model'}; metrics in {out / 'metrics.jsonl'}, "
              f"curves in {out / 'curves.png'}" + (f"; exported to {self.export_to}" if self.export_to else ""))


@dataclass(frozen=True)
class EvalAlignment:
    """Compare world models (SFT, RLVR-style baseline, RoboAlign-R1) on held-out prompts: teacher and
    state-probe six-dimension scores, PSNR/SSIM/LPIPS vs real frames, paired bootstrap intervals."""

    models: tuple[str, ...] = ("sft=runs/world_model/world_model", "rlvr=runs/post_train_rlvr/world_model",
                               "r1=runs/post_train/world_model")
    """NAME=FOLDER world models; the first is the baseline every other is compared with, the last is
    also compared with each one in between."""
    episodes: Path = Path("data/episodes")
    """Collection folder: prompts come from its bench-test episodes whose real run succeeds."""
    teacher: Path = Path("checkpoints/judge")
    """Teacher judge (the scorer of record; not the student that was optimized)."""
    probe: Path = Path("checkpoints/probe")
    """State probe: labels through the oracle's rules (independent cross-check)."""
    out: Path = Path("runs/eval_alignment")
    """Output folder: results.json, alignment_bars.png, side_by_side.mp4."""
    horizon: int = 16
    """Frames per rollout (as in post-training)."""
    window: Window = MODEL_WINDOW
    """SWR window in frames ("model": the world model's own; None: no re-encoding)."""
    temperature: float = 1.0
    """Sampling temperature (every model, same seed per prompt)."""
    seed: int = 0
    """Prompt i is sampled with seed + i for every model."""
    starts_per_episode: int = 3
    """Windows per held-out episode (evenly spaced among those containing the moment of success)."""
    resamples: int = 10_000
    """Paired bootstrap resamples (over episodes)."""
    limit: int | None = None
    """Only the first this-many held-out episodes."""
    heldout_source: str = HELDOUT_SOURCE
    """The bench's held-out source (its episodes are excluded: the teacher does not transfer to it)."""
    benchmark_out: Path | None = None
    """Also write the results here (e.g. benchmarks/results/alignment_eval.json), without per-prompt rows."""
    split: Literal["test", "val"] = "test"
    """Bench split of the prompts: test (what is reported) or val (to choose between training variants
    without looking at the test episodes)."""
    perceptual: Literal["st-lpips", "lpips"] = "st-lpips"
    """Perceptual distance ('lpips' needs torchvision's AlexNet weights on disk)."""

    def run(self) -> None:
        from roboalign_env.eval.alignment import evaluate_alignment, named_folders

        res = evaluate_alignment(named_folders(self.models), self.episodes, self.teacher, self.probe, self.out,
                                 self.horizon, self.window, self.temperature, self.seed, self.starts_per_episode,
                                 self.heldout_source, self.limit, self.resamples, command=command_line(),
                                 split=self.split, perceptual=self.perceptual, benchmark_out=self.benchmark_out)
        for pair, comp in res["comparisons"].items():
            for key in ("teacher_aggregate", "teacher_manipulation_success", "teacher_instruction_following",
                        "probe_aggregate", "psnr", "ssim", "lpips"):
                c = comp[key]
                print(f"{pair:>14} {key:<30} {c['mean_a']:.4f} vs {c['mean_b']:.4f}: {100 * c['rel']:+.1f}% "
                      f"[{100 * c['rel_ci95'][0]:+.1f}, {100 * c['rel_ci95'][1]:+.1f}], p={c['p_value']:.4f}")
        real = res["real_clips_scored"]
        print(f"real clips, for scale: teacher aggregate {real['teacher_aggregate']:.4f}, probe {real['probe_aggregate']:.4f}")
        print(f"{res['prompts']} prompts from {res['episodes']} episodes; wrote {self.out}")


COMMANDS = {"post-train": PostTrain, "eval-alignment": EvalAlignment}
