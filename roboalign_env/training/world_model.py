"""Stage 2 training: the dynamics transformer learns next-code prediction on tokenized clips.

Clips are drawn exactly as for the tokenizer (same stream, same augmentations); the frozen
tokenizer turns each into context codes, dynamics codes and the paired actions
``a_0 .. a_{T-2}``. The loss is cross-entropy on dynamics codes only, optionally weighted up on
the codes that differ from the same position of the previous frame (where motion shows;
frame 0's own dynamics codes stand for the frame before frame 1), and with action dropout (the
transformer config's ``action_dropout``) for classifier-free guidance. At the end the run folder
also gets ``world_model/``: tokenizer + transformer + manifest, loadable with
:meth:`~roboalign_env.models.world_model.WorldModel.load`.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from roboalign_env.data.clips import ClipStream
from roboalign_env.data.paths import folders
from roboalign_env.data.splits import split_episode_ids
from roboalign_env.eval.metrics import MOTION_THRESHOLD
from roboalign_env.eval.world_model_eval import action_use_metrics
from roboalign_env.models.tokenizer import VideoTokenizer
from roboalign_env.models.transformer import DynamicsTransformer, DynamicsTransformerConfig
from roboalign_env.models.world_model import WorldModel, load_component
from roboalign_env.training.loop import LoopConfig, step_seed, train


def own_predictions(model: DynamicsTransformer, context: torch.Tensor, actions: torch.Tensor, dynamics: torch.Tensor,
                    null: torch.Tensor | None, depth: int, generator: torch.Generator | None) -> torch.Tensor:
    """Codes (B, F-1, 16) for blocks 1..F-1 of a ``parallel_frames`` model to hold in place of the true
    previous frames: for each clip, the model's own greedy prediction ``d`` steps deep, ``d`` drawn
    uniformly from 0 (the true codes) to ``depth``.

    Pass ``k`` (no gradient) feeds pass ``k - 1``'s predictions, so its prediction of frame ``f`` is a
    ``k``-step greedy rollout from the true frame ``f - k``. Trained to reach the true next frame from
    such inputs, the model learns to correct its own drift and lag, the states a rollout visits (a
    model trained only on true frames meets its own frames first in a rollout: exposure bias)."""
    held = [dynamics[:, :-1]]
    with torch.no_grad():
        for _ in range(depth):
            held.append(model(context, actions, dynamics, null=null, held_codes=held[-1]).argmax(-1)[:, :-1])
    choice = torch.randint(0, depth + 1, (len(dynamics),), generator=generator).to(dynamics.device)
    return torch.stack(held)[choice, torch.arange(len(dynamics), device=dynamics.device)]


def random_reveals(shape: tuple[int, ...], generator: torch.Generator | None) -> torch.Tensor:
    """Bool (B, F, n): the codes a ``refine_passes`` model is shown while it learns to fill in the rest.
    Each frame hides a fraction ``cos(pi u / 2)`` of its codes (``u`` uniform; MaskGIT's schedule, which
    often hides nearly all, the first pass of decoding), each code independently."""
    hidden_fraction = torch.cos(torch.rand(shape[:-1], generator=generator) * torch.pi / 2)
    return torch.rand(shape, generator=generator) >= hidden_fraction[..., None]


def clip_loss(model: DynamicsTransformer, tokenizer: VideoTokenizer, batch: dict, change_weight: float = 1.0,
              generator: torch.Generator | None = None, hold_still: bool = False,
              rollout_depth: int = 0, revealed_fraction: float | None = None) -> tuple[torch.Tensor, dict]:
    """Weighted cross-entropy of the dynamics codes of a batch of clips (weight ``change_weight`` on the
    codes that change, 1 elsewhere; normalized by the total weight), with the code accuracy overall and
    on changing codes. ``hold_still`` trains on codes held where no pixel moved
    (:meth:`~roboalign_env.models.tokenizer.VideoTokenizer.hold_still_codes`). In training mode, each
    clip's actions are dropped with the config's ``action_dropout`` probability (drawn from ``generator``).
    With ``rollout_depth`` > 0 each clip's previous frames are the model's own predictions up to that many
    steps deep (:func:`own_predictions`, depths drawn from ``generator``). A ``refine_passes`` model in
    training mode is shown a random subset of each frame's codes (:func:`random_reveals`), or with
    ``revealed_fraction`` that fraction of them in any mode, and is scored on the hidden ones only."""
    with torch.no_grad(), torch.autocast(batch["frames"].device.type, enabled=False):  # fp32 codes under bf16 too
        context, dynamics = tokenizer.encode_clip(batch["frames"])
        if hold_still:
            dynamics = tokenizer.hold_still_codes(batch["frames"], dynamics, MOTION_THRESHOLD)
        changed = tokenizer.changed_codes(batch["frames"], dynamics)
    actions = batch["actions"][:, : dynamics.shape[1]]
    p = getattr(model, "module", model).config.action_dropout if model.training else 0.0  # model may be DDP-wrapped
    null = torch.rand(len(actions), generator=generator) < p if p > 0 else None
    null = None if null is None else null.to(actions.device)
    held = None
    if rollout_depth:
        held = own_predictions(model, context, actions, dynamics, null, rollout_depth, generator)
    revealed = None
    if revealed_fraction is not None:
        revealed = (torch.rand(dynamics.shape, generator=generator) < revealed_fraction).to(dynamics.device)
    elif model.training and getattr(model, "module", model).config.refinable:
        revealed = random_reveals(dynamics.shape, generator).to(dynamics.device)
    logits = model(context, actions, dynamics, null=null, held_codes=held, revealed=revealed)
    per_code = torch.nn.functional.cross_entropy(logits.flatten(0, 2), dynamics.flatten(), reduction="none")
    weights = 1.0 + (change_weight - 1.0) * changed.flatten().float()
    scored = torch.ones_like(changed) if revealed is None else ~revealed  # a code shown to its position is not
    weights = weights * scored.flatten().float()
    loss = (per_code * weights).sum() / weights.sum()
    hits = logits.argmax(-1) == dynamics
    moved = changed & scored
    return loss, {"code_accuracy": hits[scored].float().mean().item(),
                  "changed_code_accuracy": hits[moved].float().mean().item() if moved.any() else float("nan"),
                  "changed_fraction": changed.float().mean().item()}


#: Transformer config fields that a fine-tuning run may set anew on a loaded checkpoint (the rest, the
#: sizes, come from the checkpoint).
CONDITIONING_FIELDS = ("action_to_codes", "action_dropout", "guidance", "refine_passes", "anchor_frames", "swr_window")


def initial_transformer(config: DynamicsTransformerConfig, tokenizer: VideoTokenizer,
                        init_from: Path | None = None) -> DynamicsTransformer:
    """A new transformer sized by ``config`` for ``tokenizer``'s codes, or, with ``init_from``, the
    transformer of that world-model folder (``transformer/`` inside it) or transformer folder, to
    fine-tune; it must use the tokenizer's codebook and token counts. A fine-tuned transformer takes
    ``config``'s conditioning options (:data:`CONDITIONING_FIELDS`); parts it did not have start at
    their initial values (zero action projections: the loaded model's predictions are unchanged).
    ``config.markov_frames`` switches a parallel-frames transformer to Markov frames (it adds no weights);
    without it the checkpoint keeps its own setting."""
    tc = tokenizer.config
    if init_from is None:
        config.codebook_size, config.context_tokens, config.dynamics_tokens, config.code_levels = (
            tc.codebook_size, tc.context_tokens, tc.dynamics_tokens, list(tc.levels))
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
    options = {name: getattr(config, name) for name in CONDITIONING_FIELDS}
    if config.markov_frames and not own.markov_frames:  # no new weights: only what each block attends to
        if not own.parallel_frames:
            raise ValueError(f"init_from {folder}: markov_frames needs a --parallel-frames transformer; this one "
                             "predicts one code per pass")
        options["markov_frames"] = True
    if all(getattr(own, name) == value for name, value in options.items()):
        return transformer.float()
    merged = DynamicsTransformerConfig(**{**own.to_dict(), **options})
    fresh = DynamicsTransformer(merged)
    missing, unexpected = fresh.load_state_dict(transformer.state_dict(), strict=False)
    dropped = [k for k in unexpected if k not in DynamicsTransformer.CONDITIONING_PARAMETERS]
    if dropped or any(k not in DynamicsTransformer.CONDITIONING_PARAMETERS for k in missing):
        raise ValueError(f"init_from {folder}: its weights do not fit the new conditioning options "
                         f"(missing {missing}, unexpected {unexpected})")
    if unexpected:
        raise ValueError(f"init_from {folder}: it was trained with {sorted(unexpected)}; turning that option "
                         "off would discard trained weights (keep it on, or train from scratch)")
    return fresh.float()


def train_world_model(episodes: Path | Sequence[Path], tokenizer_dir: Path, loop: LoopConfig, batch_size: int,
                      config: DynamicsTransformerConfig, val_clips: int = 32,
                      init_from: Path | None = None, change_weight: float = 1.0, hold_still: bool = False,
                      rollout_depth: int = 0, clip_frames: int = 8) -> WorldModel:
    """Train (or resume) the transformer against a frozen tokenizer; write ``<out>/world_model``.

    ``episodes`` is one collection or several, pooled (each one's train and val split). ``init_from``
    starts from an existing world model's transformer (fine-tuning; ``config``'s sizes are then those of
    that transformer); a resumed run continues from its own checkpoint either way.
    ``change_weight`` weights the loss on codes that change, ``hold_still`` holds the codes where no pixel
    moved and ``rollout_depth`` trains on the model's own predictions (see :func:`clip_loss`).
    ``clip_frames`` is the length of the training and validation clips (the first frame is the context); an
    anchor_frames model is trained on every step since the window's first frame up to ``clip_frames - 1``.
    """
    if not 1.0 <= change_weight < float("inf"):
        raise ValueError(f"change_weight must be a finite number >= 1 (1: plain cross-entropy), got {change_weight}")
    if isinstance(clip_frames, bool) or not isinstance(clip_frames, int) or clip_frames < 2:
        raise ValueError(f"clip_frames must be an integer >= 2 (the context and a predicted frame), "
                         f"got {clip_frames!r}")
    if isinstance(rollout_depth, bool) or not isinstance(rollout_depth, int) or not 0 <= rollout_depth < clip_frames:
        raise ValueError(f"rollout_depth must be an integer from 0 (true previous frames) to {clip_frames - 1} "
                         f"(a clip has {clip_frames - 1} predicted frames), got {rollout_depth!r}")
    roots = folders(episodes)
    tokenizer = VideoTokenizer.from_pretrained(tokenizer_dir).float().eval().requires_grad_(False)  # shipped: bf16
    torch.manual_seed(loop.seed)  # seeds a new transformer's initial weights
    initial = initial_transformer(config, tokenizer, init_from)
    if rollout_depth and not initial.config.parallel_frames:
        raise ValueError("rollout_depth needs a parallel_frames transformer (whose blocks hold the previous "
                         "frame's codes)")
    initial.config.check_reach(clip_frames - 1, f"clip_frames {clip_frames}")
    initial.config.check_window_reach(initial.config.swr_window, clip_frames - 1,
                                      f"swr_window {initial.config.swr_window}")
    stream = ClipStream(roots, clip_len=clip_frames, episode_ids=split_episode_ids(roots, "train"), augment=True,
                        seed=loop.seed, cache_size=4096)
    val = ClipStream(roots, clip_len=clip_frames, episode_ids=split_episode_ids(roots, "val"), cache_size=4096)
    val_batch = val.batch(np.random.default_rng([loop.seed, 1]), val_clips)

    def make_batch(step: int, rank: int) -> dict:
        rng = np.random.default_rng(step_seed(loop.seed, step, rank))
        return {**stream.batch(rng, batch_size), "drop_seed": int(rng.integers(2**62))}

    def compute_loss(model, batch):
        tokenizer.to(batch["frames"].device)
        generator = torch.Generator().manual_seed(batch["drop_seed"])
        return clip_loss(model, tokenizer, batch, change_weight, generator, hold_still, rollout_depth)

    def evaluate(model, step):
        batch = {k: v.to(model.device) for k, v in val_batch.items()}
        loss, metrics = clip_loss(model, tokenizer.to(model.device), batch, change_weight, hold_still=hold_still)
        plain = clip_loss(model, tokenizer, batch, hold_still=hold_still)[0] if change_weight != 1.0 else loss
        use = action_use_metrics(tokenizer, model, batch["frames"], batch["actions"][:, : batch["frames"].shape[1] - 1])
        own = {}
        if model.config.refinable:  # how much knowing half of a frame's codes helps predict the other half
            own["half_revealed_changed_accuracy"] = clip_loss(
                model, tokenizer, batch, change_weight, torch.Generator().manual_seed(0), hold_still,
                revealed_fraction=0.5)[1]["changed_code_accuracy"]
        if rollout_depth:  # the same clips from the model's own predictions (fixed depths)
            own["own_predictions_loss"] = clip_loss(model, tokenizer, batch, change_weight, torch.Generator().manual_seed(0),
                                                    hold_still, rollout_depth)[0].item()
        return {"loss": loss.item(), "plain_loss": plain.item(), **metrics, **own,
                **{k: use[k] for k in ("action_information", "moving_digit_error", "moving_digit_error_copy")}}

    transformer = train(loop, initial, make_batch, compute_loss, evaluate)
    world_model = WorldModel(tokenizer, transformer.eval())
    world_model.save(Path(loop.out) / "world_model")
    return world_model
