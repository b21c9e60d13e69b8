"""Stage 2 training: the dynamics transformer learns next-code prediction on tokenized clips.

Clips are drawn exactly as for the tokenizer (same stream, same augmentations); the frozen
tokenizer turns each into context codes, dynamics codes and the paired actions
``a_0 .. a_{T-2}``. The loss is cross-entropy on dynamics codes only. At the end the run folder
also gets ``world_model/``: tokenizer + transformer + manifest, loadable with
:meth:`~roboalign_env.models.world_model.WorldModel.load`.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from roboalign_env.data.clips import ClipStream
from roboalign_env.data.splits import split_episode_ids
from roboalign_env.models.tokenizer import VideoTokenizer
from roboalign_env.models.transformer import DynamicsTransformer, DynamicsTransformerConfig
from roboalign_env.models.world_model import WorldModel, load_component
from roboalign_env.training.loop import LoopConfig, step_seed, train


def clip_loss(model: DynamicsTransformer, tokenizer: VideoTokenizer, batch: dict) -> tuple[torch.Tensor, dict]:
    """Cross-entropy of the dynamics codes of a batch of clips, and the code accuracy."""
    with torch.no_grad():
        context, dynamics = tokenizer.encode_clip(batch["frames"])
    actions = batch["actions"][:, : dynamics.shape[1]]
    logits = model(context, actions, dynamics)
    loss = torch.nn.functional.cross_entropy(logits.flatten(0, 2), dynamics.flatten())
    accuracy = (logits.argmax(-1) == dynamics).float().mean().item()
    return loss, {"code_accuracy": accuracy}


def initial_transformer(config: DynamicsTransformerConfig, tokenizer: VideoTokenizer,
                        init_from: Path | None = None) -> DynamicsTransformer:
    """A new transformer sized by ``config`` for ``tokenizer``'s codes, or, with ``init_from``, the
    transformer of that world-model folder (``transformer/`` inside it) or transformer folder, to
    fine-tune; it must use the tokenizer's codebook and token counts."""
    tc = tokenizer.config
    if init_from is None:
        config.codebook_size, config.context_tokens, config.dynamics_tokens = (
            tc.codebook_size, tc.context_tokens, tc.dynamics_tokens)
        return DynamicsTransformer(config)
    folder = Path(init_from)
    folder = folder / "transformer" if (folder / "transformer").is_dir() else folder
    transformer = load_component(DynamicsTransformer, folder)
    own = transformer.config
    if (own.codebook_size, own.context_tokens, own.dynamics_tokens) != (tc.codebook_size, tc.context_tokens,
                                                                          tc.dynamics_tokens):
        raise ValueError(f"init_from {folder}: its transformer predicts {own.codebook_size} codes "
                         f"({own.context_tokens}+{own.dynamics_tokens} tokens), the tokenizer has {tc.codebook_size} "
                         f"({tc.context_tokens}+{tc.dynamics_tokens}); start from the tokenizer it was trained with")
    return transformer.float()


def train_world_model(episodes: Path, tokenizer_dir: Path, loop: LoopConfig, batch_size: int,
                      config: DynamicsTransformerConfig, val_clips: int = 32,
                      init_from: Path | None = None) -> WorldModel:
    """Train (or resume) the transformer against a frozen tokenizer; write ``<out>/world_model``.

    ``init_from`` starts from an existing world model's transformer (fine-tuning; ``config``'s sizes
    are then those of that transformer); a resumed run continues from its own checkpoint either way.
    """
    tokenizer = VideoTokenizer.from_pretrained(tokenizer_dir).float().eval().requires_grad_(False)  # shipped: bf16
    stream = ClipStream(episodes, clip_len=8, episode_ids=split_episode_ids(episodes, "train"),
                        augment=True, seed=loop.seed, cache_size=4096)
    val = ClipStream(episodes, clip_len=8, episode_ids=split_episode_ids(episodes, "val"), cache_size=4096)
    val_batch = val.batch(np.random.default_rng([loop.seed, 1]), val_clips)

    def make_batch(step: int, rank: int) -> dict:
        return stream.batch(np.random.default_rng(step_seed(loop.seed, step, rank)), batch_size)

    def compute_loss(model, batch):
        tokenizer.to(batch["frames"].device)
        return clip_loss(model, tokenizer, batch)

    def evaluate(model, step):
        loss, metrics = clip_loss(model, tokenizer.to(model.device), {k: v.to(model.device) for k, v in val_batch.items()})
        return {"loss": loss.item(), **metrics}

    torch.manual_seed(loop.seed)
    transformer = train(loop, initial_transformer(config, tokenizer, init_from), make_batch, compute_loss, evaluate)
    world_model = WorldModel(tokenizer, transformer.eval())
    world_model.save(Path(loop.out) / "world_model")
    return world_model
