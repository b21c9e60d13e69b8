"""Stage 1 training: the video tokenizer learns to reconstruct T=8 clips from its tokens.

Clips follow the paper's protocol (:class:`~roboalign_env.data.clips.ClipStream` with clip-wise
augmentation) over the "train" episodes; a fixed set of un-augmented "val" clips measures
reconstruction PSNR/SSIM of context and dynamics frames during training.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from roboalign_env.data.clips import ClipStream
from roboalign_env.data.splits import split_episode_ids
from roboalign_env.eval.world_model_eval import reconstruction_metrics
from roboalign_env.models.tokenizer import TokenizerConfig, VideoTokenizer
from roboalign_env.training.loop import LoopConfig, step_seed, train


def train_tokenizer(episodes: Path, loop: LoopConfig, batch_size: int, config: TokenizerConfig,
                    val_clips: int = 32) -> VideoTokenizer:
    """Train (or resume) a tokenizer on clips of the collection at ``episodes``."""
    stream = ClipStream(episodes, clip_len=8, episode_ids=split_episode_ids(episodes, "train"),
                        augment=True, seed=loop.seed, cache_size=4096)
    val = ClipStream(episodes, clip_len=8, episode_ids=split_episode_ids(episodes, "val"), cache_size=4096)
    val_frames = val.batch(np.random.default_rng([loop.seed, 1]), val_clips)["frames"]

    def make_batch(step: int, rank: int) -> torch.Tensor:
        return stream.batch(np.random.default_rng(step_seed(loop.seed, step, rank)), batch_size)["frames"]

    def compute_loss(model, frames):
        out = model(frames)
        return out["loss"], {"loss_context": out["loss_context"].item(), "loss_dynamics": out["loss_dynamics"].item()}

    def evaluate(model, step):
        return reconstruction_metrics(model, val_frames.to(model.device))

    torch.manual_seed(loop.seed)
    return train(loop, VideoTokenizer(config), make_batch, compute_loss, evaluate)
