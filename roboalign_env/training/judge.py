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
                init_from: str | Path | None = None) -> RoboAlignJudge:
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
    model = RoboAlignJudge(config or RoboAlignJudgeConfig()) if init_from is None else \
        initial_judge(init_from, config, heldout_source)
    val = open_split(bench, "val", heldout_source=heldout_source)
    val_idx = np.random.default_rng(0).permutation(len(val))[:eval_pairs]
    train_set = open_split(bench, "train", heldout_source=heldout_source)
    if heldout_source is not None:
        model.config.heldout_source = heldout_source
    return fit_judge(model, train_set, loop, batch_size, action_dropout, (val, val_idx), augment)


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


def fit_judge(model: RoboAlignJudge, videos: VideoSet, loop: LoopConfig, batch_size: int = 32,
              action_dropout: float = 0.5, val: tuple[VideoSet, np.ndarray] | None = None,
              augment: bool = False) -> RoboAlignJudge:
    """Cross-entropy training of ``model`` on the labelled ``videos`` with the shared loop."""
    if videos.labels is None:
        raise ValueError("fit_judge needs labelled videos (oracle levels)")
    text = TextMemo(model)
    labels = torch.from_numpy(np.array(videos.labels))
    keep_actions = np.array([labels_need_actions(r) for r in videos.rows], dtype=bool)

    def make_batch(step: int, rank: int) -> dict:
        rng = np.random.default_rng(step_seed(loop.seed, step, rank))
        idx = rng.integers(0, len(videos), batch_size)
        batch = cache_batch(videos, idx, text, (rng.random(batch_size) >= action_dropout) | keep_actions[idx])
        if augment:
            batch = augment_batch(batch, rng)
        batch["labels"] = labels[idx]
        return batch

    def compute_loss(m, batch):
        scores = m(**model_inputs(batch))
        losses = [F.cross_entropy(lg.float(), batch["labels"][:, k]) for k, lg in enumerate(scores.logits)]
        acc = (scores.argmax == batch["labels"]).float().mean(0)
        return sum(losses), {"acc": acc.mean().item()}

    def evaluate(m, step):
        val_videos, idx = val
        return quick_metrics(predict(m, val_videos, idx), np.asarray(val_videos.labels)[idx])

    return train(loop, model, make_batch, compute_loss, evaluate if val is not None else None)
