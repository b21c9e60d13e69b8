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

MIN_DYNAMICS_GAIN = 0.005
"""How much higher than copying the context frame a trained tokenizer's validation SSIM on its dynamics frames
must be. A tokenizer below it has learned to decode every later frame as the context and ignore its dynamics
codes (it happens to the 8x8 recipe on some seeds), so no world model trained on its codes can follow actions."""


def check_uses_dynamics(metrics: dict[str, float], min_gain: float, folder: Path) -> None:
    """Refuse a tokenizer whose dynamics frames (``metrics`` from
    :func:`~roboalign_env.eval.world_model_eval.reconstruction_metrics`) are not ``min_gain`` SSIM better than
    copying the context frame; ``folder`` (where it was saved anyway) is named in the message."""
    gain = metrics["ssim_dynamics"] - metrics["ssim_copy_context"]
    if not gain >= min_gain:
        raise ValueError(
            f"{folder}: the tokenizer reconstructs its dynamics frames with SSIM {metrics['ssim_dynamics']:.4f}, "
            f"against {metrics['ssim_copy_context']:.4f} for copying the context frame (gain {gain:+.4f}, at least "
            f"{min_gain} expected): it ignores its dynamics codes. Train it again with another --seed (or more "
            f"steps); it was saved for inspection")


def train_tokenizer(episodes: Path, loop: LoopConfig, batch_size: int, config: TokenizerConfig,
                    val_clips: int = 32, min_dynamics_gain: float | None = MIN_DYNAMICS_GAIN) -> VideoTokenizer:
    """Train (or resume) a tokenizer on clips of the collection at ``episodes``; then refuse it (after saving it)
    unless it beats copying the context frame by ``min_dynamics_gain`` (:func:`check_uses_dynamics`; None: no check)."""
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
    tokenizer = train(loop, VideoTokenizer(config), make_batch, compute_loss, evaluate)
    if min_dynamics_gain is not None:
        check_uses_dynamics(evaluate(tokenizer.eval(), loop.steps), min_dynamics_gain, Path(loop.out) / "model")
    return tokenizer
