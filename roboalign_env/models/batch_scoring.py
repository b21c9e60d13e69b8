"""Batched scoring of a :class:`~roboalign_env.data.bench_cache.VideoSet` by any six-dimension scorer.

Training (judge, distillation, GRPO's online rounds), evaluation (``eval-judge``) and the CLI read a
scorer's outputs on a video set through :func:`predict`; :func:`cached_predict` keeps them on disk.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import torch
from einops import rearrange

from roboalign_env.data.bench_cache import VideoSet
from roboalign_env.data.io import atomic_savez
from roboalign_env.models.scoring import Scores
from roboalign_env.rubric import DIMENSIONS


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
        "video": rearrange(torch.from_numpy(video), "n t h w c -> n t c h w").float() / 255.0,
        "mask": torch.arange(frames)[None] < torch.from_numpy(lengths)[:, None],
        "initial": rearrange(torch.from_numpy(cache.initial[idx]), "n h w c -> n c h w").float() / 255.0,
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


def cached_predict(teacher, videos: VideoSet, path: str | Path, progress: bool = True) -> dict:
    """The teacher's :func:`predict` output on ``videos``, kept in ``path`` (npz) for later runs.

    The file records digests of the teacher's weights and of the videos' rows (which name each video's
    pair, or its episode, window, edit and instruction) and lengths; a mismatch recomputes it.
    """
    digest = hashlib.sha256(b"".join(p.detach().float().numpy().tobytes() for p in teacher.parameters())).hexdigest()
    inputs = hashlib.sha256(json.dumps(videos.rows, sort_keys=True, default=str).encode()
                            + np.asarray(videos.length).tobytes() + np.asarray(videos.num_actions).tobytes()).hexdigest()
    path = Path(path)
    if path.is_file():
        with np.load(path, allow_pickle=False) as f:
            if str(f["teacher"]) == digest and "inputs" in f.files and str(f["inputs"]) == inputs:
                heads = sorted((k for k in f.files if k.startswith("log_probs_")), key=lambda k: int(k.rsplit("_", 1)[1]))
                return {"expected": f["expected"], "argmax": f["argmax"], "log_probs": [f[k] for k in heads]}
    pred = predict(teacher, videos, progress=progress)
    atomic_savez(path, teacher=np.array(digest), inputs=np.array(inputs), expected=pred["expected"], argmax=pred["argmax"],
                 **{f"log_probs_{k}": lp for k, lp in enumerate(pred["log_probs"])})
    return pred
