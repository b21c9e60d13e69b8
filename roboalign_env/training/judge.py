"""Training the teacher judge on RobotWorldBench.

``train_judge`` runs the shared loop (:mod:`roboalign_env.training.loop`) with a cross-entropy per
dimension against the oracle's levels. Batches are random train pairs drawn from a generator seeded
by the step; actions are dropped from a fraction of them so the judge also scores videos that come
without actions, except from pairs whose labels depend on them (a video given actions that did not
make it). With ``augment``, each clip gets the clip-wise photometric and geometric jitter of
:func:`~roboalign_env.data.clips.augment_clip`, one draw for its frames and its initial frame.
Validation logs the mean per-dimension accuracy and the aggregate's Spearman.
"""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from roboalign_env.data.bench import labels_need_actions
from roboalign_env.data.bench_cache import VideoSet, open_split
from roboalign_env.data.clips import augment_clip
from roboalign_env.models.batch_scoring import TextMemo, cache_batch, model_inputs, predict
from roboalign_env.models.judge import RoboAlignJudge, RoboAlignJudgeConfig
from roboalign_env.rubric import DIMENSIONS
from roboalign_env.sim.oracle import actions_match
from roboalign_env.training.loop import LoopConfig, step_seed, train


def quick_metrics(pred: dict, labels: np.ndarray) -> dict[str, float]:
    from roboalign_env.extras import require

    spearmanr = require("scipy.stats", "eval", "Spearman correlations").spearmanr

    acc = (pred["argmax"] == labels).mean(0)
    rho = spearmanr(pred["expected"].sum(1), labels.sum(1)).statistic
    return {"mean_acc": float(acc.mean()), "spearman": float(rho),
            **{f"acc_{d}": float(a) for d, a in zip(DIMENSIONS, acc)}}


def train_judge(bench: str | Path, loop: LoopConfig, config: RoboAlignJudgeConfig | None = None,
                batch_size: int = 32, action_dropout: float = 0.5, eval_pairs: int = 512,
                augment: bool = True, heldout_source: str | None = None,
                init_from: str | Path | None = None, swap_actions: float = 0.125) -> RoboAlignJudge:
    """Train (or resume) the teacher on the bench's train split, validating on its val split.

    ``heldout_source`` trains on the bench seen with that source held out instead of the one it was
    built without ('' holds none out: a judge for every source, no held-out measurement) and records it
    in the model's config (``heldout_source``), which evaluation and distillation read.

    ``init_from`` starts from a trained judge's weights and config instead of a new judge (fine-tuning,
    for example on new pairs added to the bench); ``config`` must then be None. The judge must have been
    trained on the same view of the bench (the same held-out source), or be fine-tuned on every source
    (``heldout_source=''``), which only adds the source it never saw: fine-tuning cannot take back what a
    judge has seen.
    """
    action_twins_per_batch(swap_actions, batch_size)
    model = RoboAlignJudge(config or RoboAlignJudgeConfig()) if init_from is None else \
        initial_judge(init_from, config, heldout_source)
    val = open_split(bench, "val", heldout_source=heldout_source)
    val_idx = np.random.default_rng(0).permutation(len(val))[:eval_pairs]
    train_set = open_split(bench, "train", heldout_source=heldout_source)
    if heldout_source is not None:
        model.config.heldout_source = heldout_source
    return fit_judge(model, train_set, loop, batch_size, action_dropout, (val, val_idx), augment, swap_actions)


def initial_judge(folder: str | Path, config: RoboAlignJudgeConfig | None, heldout_source: str | None) -> RoboAlignJudge:
    """The trained judge in ``folder`` (float32, train mode) to fine-tune, checked against the view asked for."""
    from roboalign_env.models.registry import load_scorer

    if config is not None:
        raise ValueError(f"init_from {folder}: the judge's own config is used; pass no config")
    model = load_scorer(folder)
    if not isinstance(model, RoboAlignJudge):
        raise ValueError(f"init_from {folder}: holds a {type(model).__name__}, not a teacher judge (RoboAlignJudge)")
    trained = getattr(model.config, "heldout_source", None)
    if trained != heldout_source and heldout_source != "":
        seen = "the bench's own held-out source" if trained is None else repr(trained) if trained else "no source"
        raise ValueError(f"init_from {folder}: it was trained with {seen} held out, and heldout_source={heldout_source!r} "
                         "asks for another view, which would hold out a source it has seen; fine-tune on the view it was "
                         "trained on, or on every source (heldout_source='')")
    return model.train()


def augment_batch(batch: dict, rng: np.random.Generator) -> dict:
    """Clip-wise jitter of a batch's videos and initial frames (one draw per clip, padding stays black)."""
    video, initial = batch["video"], batch["initial"]
    jittered = [augment_clip(torch.cat([i[None], v]), torch.Generator().manual_seed(int(rng.integers(2**62))))
                for v, i in zip(video, initial)]
    clips = torch.stack(jittered)
    return {**batch, "initial": clips[:, 0], "video": clips[:, 1:] * batch["mask"][:, :, None, None, None]}


def action_twins_per_batch(swap_actions: float, batch_size: int) -> int:
    """How many action twins a batch holds (each beside its clip), checked to leave room for other pairs."""
    twins = int(round(swap_actions * batch_size))
    if not 0.0 <= swap_actions or 2 * twins >= batch_size:
        raise ValueError(f"swap_actions={swap_actions}: expected a fraction >= 0 whose twins and their clips leave "
                         f"room for other pairs in a batch of {batch_size} (below 0.5)")
    return twins


class ActionTwins:
    """Clips of a labelled video set paired with the actions of another clip of the same source and length.

    Only clips shown with the actions that made them are twinned (not the bench's wrong-action pairs, not
    rollouts). A twin keeps its clip's labels, except Action–Outcome Consistency, which is 0 where the
    donor's actions command something else (the oracle's :func:`~roboalign_env.sim.oracle.actions_match`).
    Donors of the same source and length are the hard case: the same robot doing the same task a little
    differently, as a dream that ignores its command shows.
    """

    def __init__(self, videos: VideoSet, own_actions: np.ndarray):
        groups = defaultdict(list)
        for i, row in enumerate(videos.rows):
            if own_actions[i] and videos.num_actions[i] > 0:
                groups[(row["source"], int(videos.num_actions[i]))].append(i)
        self.groups = [np.array(g) for g in groups.values() if len(g) > 1]
        if not self.groups:
            raise ValueError("swap_actions: no two clips of one source with their own actions share a length; "
                             "expected a labelled set of real clips (a bench split)")
        self.group_of = {int(i): g for g in self.groups for i in g}
        self.clips = np.concatenate(self.groups)
        self.videos = videos

    def draw(self, rng: np.random.Generator, count: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """``count`` random clips, a donor for each (another clip of its group) and whether the donor's
        actions command something else than the clip's."""
        clips = self.clips[rng.integers(0, len(self.clips), count)]
        donors = np.empty_like(clips)
        for k, i in enumerate(clips):
            group = self.group_of[int(i)]
            j = int(rng.integers(0, len(group) - 1))  # uniform over the others: the clip's own draw takes the last
            donors[k] = group[j if group[j] != i else len(group) - 1]
        n = self.videos.num_actions
        differ = np.array([not actions_match(self.videos.actions[i, : n[i]], self.videos.actions[j, : n[j]])
                           for i, j in zip(clips, donors)])
        return clips, donors, differ


def fit_judge(model: RoboAlignJudge, videos: VideoSet, loop: LoopConfig, batch_size: int = 32,
              action_dropout: float = 0.5, val: tuple[VideoSet, np.ndarray] | None = None,
              augment: bool = False, swap_actions: float = 0.0) -> RoboAlignJudge:
    """Cross-entropy training of ``model`` on the labelled ``videos`` with the shared loop.

    ``swap_actions`` is the fraction of each batch given to :class:`ActionTwins`; each twin comes with its
    clip under its own actions, so twice that fraction of the batch is spent on them.
    """
    if videos.labels is None:
        raise ValueError("fit_judge needs labelled videos (oracle levels)")
    twins_per_batch = action_twins_per_batch(swap_actions, batch_size)
    text = TextMemo(model)
    labels = torch.from_numpy(np.array(videos.labels))
    keep_actions = np.array([labels_need_actions(r) for r in videos.rows], dtype=bool)
    twins = ActionTwins(videos, ~keep_actions) if twins_per_batch else None
    aoc = DIMENSIONS.index("action_outcome_consistency")

    def make_batch(step: int, rank: int) -> dict:
        rng = np.random.default_rng(step_seed(loop.seed, step, rank))
        idx = rng.integers(0, len(videos), batch_size - 2 * twins_per_batch)
        keep = (rng.random(len(idx)) >= action_dropout) | keep_actions[idx]
        if twins is not None:
            clips, donors, differ = twins.draw(rng, twins_per_batch)
            idx, keep = np.concatenate([idx, clips, clips]), np.concatenate([keep, np.ones(2 * len(clips), bool)])
        batch = cache_batch(videos, idx, text, keep)
        batch_labels = labels[idx].clone()
        if twins is not None:
            swapped = slice(len(idx) - len(clips), len(idx))  # donors have the clips' length, zero-padded alike
            batch["actions"][swapped] = torch.from_numpy(np.asarray(videos.actions[donors, : batch["actions"].shape[1]]))
            batch_labels[swapped, aoc] = torch.where(torch.from_numpy(differ), 0, batch_labels[swapped, aoc])
        batch["labels"] = batch_labels
        return augment_batch(batch, rng) if augment else batch

    def compute_loss(m, batch):
        scores = m(**model_inputs(batch))
        losses = [F.cross_entropy(lg.float(), batch["labels"][:, k]) for k, lg in enumerate(scores.logits)]
        acc = (scores.argmax == batch["labels"]).float().mean(0)
        return sum(losses), {"acc": acc.mean().item()}

    def evaluate(m, step):
        val_videos, idx = val
        return quick_metrics(predict(m, val_videos, idx), np.asarray(val_videos.labels)[idx])

    return train(loop, model, make_batch, compute_loss, evaluate if val is not None else None)
