"""Training the teacher judge on RobotWorldBench, and batched prediction over a cached split.

``train_judge`` runs the shared loop (:mod:`roboalign_env.training.loop`) with a cross-entropy per
dimension against the oracle's levels. Batches are random train pairs drawn from a generator seeded
by the step; actions are dropped from a fraction of them so the judge also scores videos that come
without actions. Validation logs the mean per-dimension accuracy and the aggregate's Spearman.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from roboalign_env.data.bench_cache import VideoSet, open_split
from roboalign_env.models.judge import RoboAlignJudge, RoboAlignJudgeConfig
from roboalign_env.models.scoring import Scores
from roboalign_env.sim.oracle import DIMENSIONS
from roboalign_env.training.loop import LoopConfig, step_seed, train


class TextMemo:
    """``model.encode_text`` with MiniLM embeddings remembered per instruction (token ids are cheap)."""

    def __init__(self, model):
        self.model, self.memo = model, {}

    def __call__(self, texts: list[str]) -> torch.Tensor:
        if getattr(self.model.config, "text_encoder", "trained") != "minilm":
            return self.model.encode_text(texts)
        missing = sorted({t for t in texts if t not in self.memo})
        if missing:
            self.memo.update(zip(missing, self.model.encode_text(missing)))
        return torch.stack([self.memo[t] for t in texts])


def cache_batch(cache: VideoSet, idx: np.ndarray, text, with_actions: np.ndarray | bool = True) -> dict:
    """Inputs of pairs ``idx`` of a cached split as model tensors (frames trimmed to the longest clip).

    ``with_actions`` (bool, or one bool per pair) says whose actions are kept.
    """
    idx = np.asarray(idx)
    lengths = cache.length[idx]
    frames = int(lengths.max())
    video = cache.video[idx, :frames]
    keep = np.broadcast_to(np.asarray(with_actions), idx.shape)
    num_actions = np.where(keep, cache.num_actions[idx], 0)
    width = max(1, int(num_actions.max()))
    actions = torch.from_numpy(cache.actions[idx, :width])
    action_mask = torch.arange(width)[None] < torch.from_numpy(num_actions)[:, None]
    return {
        "video": torch.from_numpy(video).permute(0, 1, 4, 2, 3).float() / 255.0,
        "mask": torch.arange(frames)[None] < torch.from_numpy(lengths)[:, None],
        "initial": torch.from_numpy(cache.initial[idx]).permute(0, 3, 1, 2).float() / 255.0,
        "text": text([cache.rows[i]["instruction"] for i in idx]),
        "actions": actions * action_mask[..., None],
        "action_mask": action_mask,
    }


def model_inputs(batch: dict) -> dict:
    return {k: batch[k] for k in ("video", "mask", "initial", "text", "actions", "action_mask")}


@torch.no_grad()
def predict(model, cache: VideoSet, indices=None, batch_size: int = 64, with_actions: bool = True,
            progress: bool = False) -> dict[str, np.ndarray]:
    """Scores of a video set: ``probs`` and ``log_probs`` (six (N, levels) arrays), ``expected`` and ``argmax`` (N, 6)."""
    from tqdm.auto import tqdm

    indices = np.arange(len(cache)) if indices is None else np.asarray(indices)
    text = TextMemo(model)
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    parts = []
    for start in tqdm(range(0, len(indices), batch_size), disable=not progress, desc="predict"):
        batch = cache_batch(cache, indices[start : start + batch_size], text, with_actions)
        scores = model(**{k: v.to(device) for k, v in model_inputs(batch).items()})
        parts.append(scores)
    model.train(was_training)
    logits = [torch.cat([s.logits[k] for s in parts]) for k in range(len(DIMENSIONS))]
    scores = Scores(logits)
    return {"probs": [p.cpu().numpy() for p in scores.probs], "expected": scores.expected.cpu().numpy(),
            "argmax": scores.argmax.cpu().numpy(),
            "log_probs": [torch.log_softmax(lg.float(), -1).cpu().numpy() for lg in logits]}


def quick_metrics(pred: dict, labels: np.ndarray) -> dict[str, float]:
    from scipy.stats import spearmanr

    acc = (pred["argmax"] == labels).mean(0)
    rho = spearmanr(pred["expected"].sum(1), labels.sum(1)).statistic
    return {"mean_acc": float(acc.mean()), "spearman": float(rho),
            **{f"acc_{d}": float(a) for d, a in zip(DIMENSIONS, acc)}}


def train_judge(bench: str | Path, loop: LoopConfig, config: RoboAlignJudgeConfig | None = None,
                batch_size: int = 32, action_dropout: float = 0.5, eval_pairs: int = 512) -> RoboAlignJudge:
    """Train (or resume) the teacher on the bench's train split, validating on its val split."""
    val = open_split(bench, "val")
    val_idx = np.random.default_rng(0).permutation(len(val))[:eval_pairs]
    model = RoboAlignJudge(config or RoboAlignJudgeConfig())
    return fit_judge(model, open_split(bench, "train"), loop, batch_size, action_dropout, (val, val_idx))


def fit_judge(model: RoboAlignJudge, videos: VideoSet, loop: LoopConfig, batch_size: int = 32,
              action_dropout: float = 0.5, val: tuple[VideoSet, np.ndarray] | None = None) -> RoboAlignJudge:
    """Cross-entropy training of ``model`` on the labelled ``videos`` with the shared loop."""
    if videos.labels is None:
        raise ValueError("fit_judge needs labelled videos (oracle levels)")
    text = TextMemo(model)
    labels = torch.from_numpy(np.array(videos.labels))

    def make_batch(step: int, rank: int) -> dict:
        rng = np.random.default_rng(step_seed(loop.seed, step, rank))
        idx = rng.integers(0, len(videos), batch_size)
        batch = cache_batch(videos, idx, text, rng.random(batch_size) >= action_dropout)
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
