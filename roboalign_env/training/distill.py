"""Distilling the teacher judge into the student reward, offline and online.

The student learns the teacher's soft outputs (its level distributions), never the oracle's labels.
Data: bench videos plus *unlabelled extra videos* the teacher scores: re-windowed clips of the
bench's training episodes, some with a temporal or pixel degradation and a swapped instruction
(:func:`episode_clips`), and, during RL, the world model's rollouts (:class:`OnlineDistiller`).

Online iterative distillation (the paper's defence against reward hacking)::

    online = OnlineDistiller(student, teacher, out="runs/online")
    online.add(VideoSet.from_videos(videos, instructions))  # the teacher labels fresh rollouts
    student = online.train(steps=200)     # continue from the current weights on old + new data
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from pathlib import Path

import numpy as np
import torch

from roboalign_env.data.bench_cache import VideoSet
from roboalign_env.models.batch_scoring import TextMemo, cache_batch, model_inputs, predict
from roboalign_env.models.student import StudentReward, distill_loss
from roboalign_env.training.judge import augment_batch
from roboalign_env.training.loop import LoopConfig, step_seed, train


class DistillData:
    """Video sets with the teacher's level log-probabilities; a batch draws each video uniformly, a set's
    videos weighted by the set's ``weight`` (2: drawn twice as often as a video of weight 1)."""

    def __init__(self):
        self.sets: list[VideoSet] = []
        self.targets: list[list[np.ndarray]] = []
        self.weights: list[float] = []

    def __len__(self) -> int:
        return sum(len(s) for s in self.sets)

    def add(self, videos: VideoSet, log_probs: list[np.ndarray], weight: float = 1.0) -> None:
        if any(len(lp) != len(videos) for lp in log_probs):
            raise ValueError(f"teacher targets cover {[len(lp) for lp in log_probs]} videos, the set has {len(videos)}")
        if not weight > 0:
            raise ValueError(f"weight={weight}: expected > 0")
        self.sets.append(videos)
        self.targets.append([np.asarray(lp, np.float32) for lp in log_probs])
        self.weights.append(float(weight))

    def label(self, teacher, videos: VideoSet, batch_size: int = 64) -> None:
        """Score ``videos`` with the teacher (with their actions, where they have any) and add them."""
        self.add(videos, predict(teacher, videos, batch_size=batch_size)["log_probs"])

    def batch(self, rng: np.random.Generator, size: int, text) -> dict:
        """A random batch: model inputs plus ``teacher`` (six (B, levels) log-prob tensors)."""
        sizes = np.array([len(s) for s in self.sets])
        mass = sizes * np.array(self.weights)
        which = rng.choice(len(sizes), size, p=mass / mass.sum())
        picks = rng.integers(0, sizes[which])
        parts = []
        for k in np.unique(which):
            idx = picks[which == k]
            part = cache_batch(self.sets[k], idx, text)
            part["teacher"] = [torch.from_numpy(lp[idx]) for lp in self.targets[k]]
            parts.append(part)
        return _concat(parts)


def _concat(parts: list[dict]) -> dict:
    """Concatenate batches whose videos may differ in length (pads frames and words)."""
    out = {}
    frames = max(p["video"].shape[1] for p in parts)
    words = max(p["text"].shape[1] for p in parts) if parts[0]["text"].ndim == 2 and not parts[0]["text"].is_floating_point() else None
    width = max(p["actions"].shape[1] for p in parts)
    for key in parts[0]:
        if key == "teacher":
            out[key] = [torch.cat([p[key][k] for p in parts]) for k in range(len(parts[0][key]))]
            continue
        values = []
        for p in parts:
            v = p[key]
            if key in ("video", "mask"):
                v = torch.nn.functional.pad(v, [0, 0] * (v.ndim - 2) + [0, frames - v.shape[1]])
            elif key == "text" and words is not None:
                v = torch.nn.functional.pad(v, [0, words - v.shape[1]])
            elif key in ("actions", "action_mask"):
                v = torch.nn.functional.pad(v, [0, 0] * (v.ndim - 2) + [0, width - v.shape[1]])
            values.append(v)
        out[key] = torch.cat(values)
    return out


def episode_clips(collection: str | Path | Sequence[str | Path], episode_ids: set[str], count: int, seed: int = 0,
                  degrade: float = 0.4, swap: float = 0.3, mirror: float = 0.15, other: float = 0.15,
                  no_actions: float = 0.25, exclude_instructions: Collection[str] = ()) -> VideoSet:
    """``count`` random windows (8-32 frames, stride 1-2) of the named episodes of one or more collections,
    unlabelled, with the window's actions. Windows are drawn uniformly over the episodes.

    A fraction ``degrade`` gets one of the bench's temporal or pixel degradations and a fraction
    ``swap`` a near-miss or other-task instruction, so the teacher's scores on them spread over
    the levels. Fractions ``mirror`` and ``other`` come with commands the video does not follow: its
    own actions negated, or the same span of another episode's of the same source (the one drawn
    before it; negated where there is none long enough). A fraction ``no_actions`` comes without
    actions. No clip carries one of ``exclude_instructions`` (lower-case; the held-out source's, as
    in the bench's training splits). The draw is a pure function of ``seed``.
    """
    from roboalign_env.data.episodes import load_episode, read_manifests
    from roboalign_env.sim import degradations as deg
    from roboalign_env.sim.build_bench import instruction_for, random_window

    entries = [(root, r) for root, r in read_manifests(collection) if r["episode_id"] in episode_ids]
    if not entries:
        raise ValueError(f"{collection}: none of the requested episodes is in the manifest")
    rng = np.random.default_rng([seed, 11])
    picks = np.sort(rng.integers(0, len(entries), count))
    videos, rows, actions = [], [], []
    previous: dict[str, np.ndarray] = {}  # per source, the actions of the episode drawn last
    for e in np.unique(picks):
        root, entry = entries[e]
        ep = load_episode(root / entry["path"])
        donor = previous.get(ep.meta["source"])
        for _ in range(int((picks == e).sum())):
            window = random_window(ep, rng)
            video, kind = ep.frames[window.frames], "clean"
            if rng.random() < degrade:
                if rng.random() < 0.5 and window.length >= deg.TEMPORAL_MIN_FRAMES:
                    kind = deg.TEMPORAL[int(rng.integers(len(deg.TEMPORAL)))]
                    order, _ = deg.temporal_indices(kind, window.length, rng)
                    video = video[order]
                    if kind == "flicker":
                        video, _ = deg.flicker(video, rng)
                else:
                    kind = deg.PIXEL[int(rng.integers(len(deg.PIXEL)))]
                    video, _ = deg.pixel_artifact(video, kind, deg.STRENGTHS[int(rng.integers(2))], rng)
            relation = "correct" if rng.random() >= swap else ("near_miss" if rng.random() < 0.5 else "other_task")
            span = window.actions
            given, draw = ep.actions[span], rng.random()
            if mirror <= draw < mirror + other and donor is not None and len(donor) >= span.stop:
                given, commands = donor[span], "other_episode"
            else:
                given, commands = (-given, "mirrored") if draw < mirror + other else \
                    (given[:0], "none") if draw < mirror + other + no_actions else (given, "own")
            videos.append(video)
            actions.append(given)
            instruction = instruction_for(relation, ep.meta["source"], rng, exclude_instructions)
            rows.append({"instruction": instruction, "episode_id": ep.episode_id,
                         "window": window.as_dict(), "edit": kind, "relation": relation, "actions": commands})
        previous[ep.meta["source"]] = ep.actions
    return VideoSet.from_videos(videos, [r["instruction"] for r in rows], rows, actions=actions)


def distill(student: StudentReward, data: DistillData, loop: LoopConfig, loss: str = "kl", temperature: float = 2.0,
            batch_size: int = 64, val: tuple[VideoSet, dict] | None = None, augment: bool = False) -> StudentReward:
    """Train ``student`` on ``data`` with the chosen distillation loss (resumes from ``loop.out``).

    ``val`` is a video set with the teacher's :func:`predict` output on it; validation logs the
    student's mean per-dimension agreement with the teacher's argmax and the aggregate's Spearman.

    With ``augment`` the student sees each clip under the teacher's training jitter
    (:func:`~roboalign_env.training.judge.augment_batch`) and learns the teacher's outputs on the clip as it is:
    the teacher was trained to score both alike, and the student learns the same invariance to colour, framing
    and scale, which a scene it has not seen needs.
    """
    if not len(data):
        raise ValueError("no teacher-labelled videos to distil on")
    text = TextMemo(student)

    def make_batch(step: int, rank: int) -> dict:
        rng = np.random.default_rng(step_seed(loop.seed, step, rank))
        batch = data.batch(rng, batch_size, text)
        return augment_batch(batch, rng) if augment else batch

    def compute_loss(model, batch):
        scores = model(**model_inputs(batch))
        value = distill_loss(scores, batch["teacher"], loss, temperature)
        agree = (scores.argmax == torch.stack([lp.argmax(-1) for lp in batch["teacher"]], -1)).float().mean()
        return value, {"teacher_agreement": agree.item()}

    def evaluate(model, step):
        from roboalign_env.extras import require

        spearmanr = require("scipy.stats", "eval", "Spearman correlations").spearmanr

        videos, teacher = val
        pred = predict(model, videos)
        return {"teacher_agreement": float((pred["argmax"] == teacher["argmax"]).mean()),
                "teacher_spearman": float(spearmanr(pred["expected"].sum(1), teacher["expected"].sum(1)).statistic)}

    return train(loop, student, make_batch, compute_loss, evaluate if val is not None else None)


def teacher_data(teacher, bench: str | Path, collection: str | Path | Sequence[str | Path], extra_clips: int,
                 seed: int, targets: str | Path) -> tuple[DistillData, tuple[VideoSet, dict]]:
    """What a student distils from ``teacher``: the bench's train split plus ``extra_clips`` unlabelled clips of
    its training episodes (in the collections the bench was built from, :func:`episode_clips`), with the
    teacher's outputs; and the val split with them (for validation).

    The splits are the ones the teacher was trained on (its recorded ``heldout_source``). The teacher's
    outputs are kept in ``targets`` and reused by later runs with the same teacher.
    """
    from roboalign_env.data.bench import heldout_instructions, read_index, trained_view
    from roboalign_env.data.bench_cache import open_split
    from roboalign_env.models.batch_scoring import cached_predict

    targets = Path(targets)
    view = trained_view(teacher)
    data = DistillData()
    train_set = open_split(bench, "train", heldout_source=view)
    data.add(train_set, cached_predict(teacher, train_set, targets / "bench_train.npz")["log_probs"])
    if extra_clips:
        held = heldout_instructions(read_index(bench, heldout_source=view))
        clips = episode_clips(collection, {r["episode_id"] for r in train_set.rows}, extra_clips, seed,
                              exclude_instructions=held)
        data.add(clips, cached_predict(teacher, clips, targets / f"clips_{extra_clips}_{seed}.npz")["log_probs"])
    val = open_split(bench, "val", heldout_source=view)
    return data, (val, cached_predict(teacher, val, targets / "bench_val.npz"))


def distill_from_bench(teacher_dir: str | Path, bench: str | Path, collection: str | Path | Sequence[str | Path],
                       loop: LoopConfig,
                       loss: str = "kl", temperature: float = 2.0, extra_clips: int = 3000, batch_size: int = 64,
                       targets: str | Path = "runs/teacher_targets", config=None, augment: bool = False) -> StudentReward:
    """Distil the teacher in ``teacher_dir`` into a new student (``config``: a
    :class:`~roboalign_env.models.student.StudentRewardConfig`, default one that reads actions) on
    :func:`teacher_data`, validating on the val split; the student records the teacher's view of the bench.
    ``augment`` as for :func:`distill`.
    """
    from roboalign_env.data.bench import trained_view
    from roboalign_env.models.registry import load_scorer
    from roboalign_env.models.student import LOSSES, StudentRewardConfig

    if loss not in LOSSES:
        raise ValueError(f"loss {loss!r}; expected one of {LOSSES}")
    teacher = load_scorer(teacher_dir)
    data, val = teacher_data(teacher, bench, collection, extra_clips, loop.seed, targets)
    student = StudentReward(config or StudentRewardConfig(read_actions=True))
    if trained_view(teacher) is not None:
        student.config.heldout_source = trained_view(teacher)
    return distill(student, data, loop, loss, temperature, batch_size, val, augment)


class OnlineDistiller:
    """Keeps a student in step with the teacher while a policy or world model is being optimized.

    ``label`` has the teacher score new videos (e.g. GRPO rollouts); ``add`` keeps labelled videos
    next to the earlier data; ``train`` continues the current student on all of it for a few steps
    as round ``r`` (its own folder ``out/round_XXX`` with a checkpoint) and returns it; ``restore``
    loads the student a finished round saved (a resumed run picks up there).
    """

    def __init__(self, student: StudentReward | str | Path, teacher, out: str | Path, data: DistillData | None = None,
                 loss: str = "kl", lr: float = 1e-4, batch_size: int = 64, temperature: float = 2.0,
                 mixed_precision: str = "no"):
        if isinstance(student, (str, Path)):
            student = StudentReward.from_pretrained(student)
        self.student, self.teacher, self.out = student, teacher, Path(out)
        self.data = data or DistillData()
        self.loss, self.lr, self.batch_size, self.temperature = loss, lr, batch_size, temperature
        self.mixed_precision = mixed_precision  # must match an enclosing loop's (Accelerate keeps one state per process)
        self.round = len(list(self.out.glob("round_*"))) if self.out.is_dir() else 0

    def label(self, videos: VideoSet) -> list[np.ndarray]:
        """The teacher's level log-probabilities of ``videos`` (six (N, levels) arrays)."""
        return predict(self.teacher, videos)["log_probs"]

    def add(self, videos: VideoSet, labels: list[np.ndarray] | None = None, weight: float = 1.0) -> int:
        """Keep ``videos`` with their teacher ``labels`` (labelled now when None), drawn ``weight`` times as often
        as a video of weight 1 (:class:`DistillData`); returns how many videos are held."""
        self.data.add(videos, self.label(videos) if labels is None else labels, weight)
        return len(self.data)

    def train(self, steps: int = 100, round: int | None = None, seed: int | None = None) -> StudentReward:
        """Continue distilling the current student for ``steps`` steps as round ``round`` (default:
        the next one; a half-finished folder of that round is redone); returns it, in eval mode."""
        import shutil

        self.round = self.round if round is None else round
        folder = self._round_dir(self.round)
        shutil.rmtree(folder, ignore_errors=True)
        loop = LoopConfig(out=folder, steps=steps, lr=self.lr, warmup_steps=min(20, steps // 5),
                          seed=self.round if seed is None else seed, save_every=steps, eval_every=steps,
                          log_every=max(1, steps // 10), progress=False, mixed_precision=self.mixed_precision)
        self.student = distill(self.student, self.data, loop, self.loss, self.temperature, self.batch_size).eval()
        self.round += 1
        return self.student

    def restore(self, round: int) -> StudentReward:
        """Load the student round ``round`` saved; the next ``train`` is round ``round + 1``."""
        from safetensors.torch import load_file

        path = self._round_dir(round) / "model" / "model.safetensors"
        if not path.is_file():
            raise FileNotFoundError(f"{path}: distillation round {round} left no student to restore")
        self.student.load_state_dict(load_file(str(path)))
        self.student.eval()
        self.round = round + 1
        return self.student

    def _round_dir(self, r: int) -> Path:
        return self.out / f"round_{r:03d}"
