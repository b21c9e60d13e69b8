"""Distilling the teacher judge into the student reward, offline and online.

The student learns the teacher's soft outputs (its level distributions), never the oracle's labels.
Data: bench videos plus *unlabelled extra videos* the teacher scores: re-windowed clips of the
bench's training episodes, some with a temporal or pixel degradation and a swapped instruction
(:func:`episode_clips`), and, during RL, the world model's rollouts (:class:`OnlineDistiller`).

Online iterative distillation (the paper's defence against reward hacking)::

    online = OnlineDistiller(student, teacher, out="runs/online")
    online.add(videos, instructions)      # the teacher labels fresh rollouts
    student = online.update(steps=200)    # continue from the current weights on old + new data
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from roboalign_env.data.bench_cache import VideoSet
from roboalign_env.models.student import StudentReward, distill_loss
from roboalign_env.training.judge import TextMemo, cache_batch, model_inputs, predict
from roboalign_env.training.loop import LoopConfig, step_seed, train


class DistillData:
    """Video sets with the teacher's level log-probabilities, drawn from uniformly per video."""

    def __init__(self):
        self.sets: list[VideoSet] = []
        self.targets: list[list[np.ndarray]] = []

    def __len__(self) -> int:
        return sum(len(s) for s in self.sets)

    def add(self, videos: VideoSet, log_probs: list[np.ndarray]) -> None:
        if any(len(lp) != len(videos) for lp in log_probs):
            raise ValueError(f"teacher targets cover {[len(lp) for lp in log_probs]} videos, the set has {len(videos)}")
        self.sets.append(videos)
        self.targets.append([np.asarray(lp, np.float32) for lp in log_probs])

    def label(self, teacher, videos: VideoSet, batch_size: int = 64) -> None:
        """Score ``videos`` with the teacher (with their actions, where they have any) and add them."""
        self.add(videos, predict(teacher, videos, batch_size=batch_size)["log_probs"])

    def batch(self, rng: np.random.Generator, size: int, text) -> dict:
        """A random batch: model inputs plus ``teacher`` (six (B, levels) log-prob tensors)."""
        sizes = np.array([len(s) for s in self.sets])
        picks = rng.integers(0, sizes.sum(), size)
        which = np.searchsorted(np.cumsum(sizes), picks, side="right")
        parts = []
        for k in np.unique(which):
            idx = picks[which == k] - (sizes[:k].sum() if k else 0)
            part = cache_batch(self.sets[k], idx, text, with_actions=False)
            part["teacher"] = [torch.from_numpy(lp[idx]) for lp in self.targets[k]]
            parts.append(part)
        return _concat(parts)


def _concat(parts: list[dict]) -> dict:
    """Concatenate batches whose videos may differ in length (pads frames and words)."""
    out = {}
    frames = max(p["video"].shape[1] for p in parts)
    words = max(p["text"].shape[1] for p in parts) if parts[0]["text"].ndim == 2 and not parts[0]["text"].is_floating_point() else None
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
                v = v[:, :1]  # the student does not read actions
            values.append(v)
        out[key] = torch.cat(values)
    return out


def episode_clips(collection: str | Path, episode_ids: set[str], count: int, seed: int = 0,
                  degrade: float = 0.4, swap: float = 0.3) -> VideoSet:
    """``count`` random windows (8-32 frames, stride 1-2) of the named episodes, unlabelled.

    A fraction ``degrade`` gets one of the bench's temporal or pixel degradations and a fraction
    ``swap`` a near-miss or other-task instruction, so the teacher's scores on them spread over
    the levels. The draw is a pure function of ``seed``.
    """
    from roboalign_env.data.episodes import load_episode, read_manifest
    from roboalign_env.sim import degradations as deg
    from roboalign_env.sim.build_bench import _instruction, _random_window

    collection = Path(collection)
    entries = [r for r in read_manifest(collection) if r["episode_id"] in episode_ids]
    if not entries:
        raise ValueError(f"{collection}: none of the requested episodes is in the manifest")
    rng = np.random.default_rng([seed, 11])
    picks = np.sort(rng.integers(0, len(entries), count))
    videos, rows = [], []
    for e in np.unique(picks):
        ep = load_episode(collection / entries[e]["path"])
        for _ in range(int((picks == e).sum())):
            window = _random_window(ep, rng)
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
            videos.append(video)
            rows.append({"instruction": _instruction(relation, ep.meta["source"], rng), "episode_id": ep.episode_id,
                         "window": window.as_dict(), "edit": kind, "relation": relation})
    return VideoSet.from_videos(videos, [r["instruction"] for r in rows], rows)


def cached_predict(teacher, videos: VideoSet, path: str | Path, progress: bool = True) -> dict:
    """The teacher's :func:`predict` output on ``videos``, kept in ``path`` (npz) for later runs.

    The file records a digest of the teacher's weights and the number of videos; a mismatch recomputes it.
    """
    import hashlib

    from roboalign_env.data.io import atomic_savez

    digest = hashlib.sha256(b"".join(p.detach().float().numpy().tobytes() for p in teacher.parameters())).hexdigest()
    path = Path(path)
    if path.is_file():
        with np.load(path, allow_pickle=False) as f:
            if str(f["teacher"]) == digest and len(f["expected"]) == len(videos):
                return {"expected": f["expected"], "argmax": f["argmax"],
                        "log_probs": [f[f"log_probs_{k}"] for k in range(len(f.files) - 3)]}
    pred = predict(teacher, videos, progress=progress)
    atomic_savez(path, teacher=np.array(digest), expected=pred["expected"], argmax=pred["argmax"],
                 **{f"log_probs_{k}": lp for k, lp in enumerate(pred["log_probs"])})
    return pred


def distill(student: StudentReward, data: DistillData, loop: LoopConfig, loss: str = "kl", temperature: float = 2.0,
            batch_size: int = 64, val: tuple[VideoSet, dict] | None = None) -> StudentReward:
    """Train ``student`` on ``data`` with the chosen distillation loss (resumes from ``loop.out``).

    ``val`` is a video set with the teacher's :func:`predict` output on it; validation logs the
    student's mean per-dimension agreement with the teacher's argmax and the aggregate's Spearman.
    """
    if not len(data):
        raise ValueError("no teacher-labelled videos to distil on")
    text = TextMemo(student)

    def make_batch(step: int, rank: int) -> dict:
        return data.batch(np.random.default_rng(step_seed(loop.seed, step, rank)), batch_size, text)

    def compute_loss(model, batch):
        scores = model(**model_inputs(batch))
        value = distill_loss(scores, batch["teacher"], loss, temperature)
        agree = (scores.argmax == torch.stack([lp.argmax(-1) for lp in batch["teacher"]], -1)).float().mean()
        return value, {"teacher_agreement": agree.item()}

    def evaluate(model, step):
        from scipy.stats import spearmanr

        videos, teacher = val
        pred = predict(model, videos)
        return {"teacher_agreement": float((pred["argmax"] == teacher["argmax"]).mean()),
                "teacher_spearman": float(spearmanr(pred["expected"].sum(1), teacher["expected"].sum(1)).statistic)}

    return train(loop, student, make_batch, compute_loss, evaluate if val is not None else None)


class OnlineDistiller:
    """Keeps a student in step with the teacher while a policy or world model is being optimized.

    ``add`` has the teacher label new videos (e.g. GRPO rollouts, (N, T, 3, H, W) float in [0, 1] or
    (N, T, H, W, 3) uint8) and keeps them next to the earlier data; ``update`` continues training
    the current student on all of it for a few steps (a new round folder ``out/round_XXX`` each
    time, with its own checkpoint) and returns it.
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

    def add(self, videos, instructions) -> int:
        """Teacher-label new videos and add them; returns how many videos the data now holds."""
        self.data.label(self.teacher, VideoSet.from_videos(videos, instructions))
        return len(self.data)

    def update(self, steps: int = 100, seed: int | None = None) -> StudentReward:
        """Continue distilling the current student for ``steps`` steps; returns it (also saved)."""
        loop = LoopConfig(out=self.out / f"round_{self.round:03d}", steps=steps, lr=self.lr,
                          warmup_steps=min(20, steps // 5), seed=self.round if seed is None else seed,
                          save_every=steps, eval_every=steps, log_every=max(1, steps // 10), progress=False,
                          mixed_precision=self.mixed_precision)
        self.student = distill(self.student, self.data, loop, self.loss, self.temperature, self.batch_size)
        self.round += 1
        return self.student
