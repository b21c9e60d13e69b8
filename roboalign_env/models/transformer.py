"""Stage 2: an action-conditioned autoregressive transformer over tokenizer codes.

The model is a stock ``transformers`` ``LlamaForCausalLM`` built from a config (nothing is
downloaded) whose vocabulary is the tokenizer's code space. A clip of T frames becomes::

    [ ctx (64 codes of frame 0) | act_0 | dyn_1 (16 codes) | act_1 | dyn_2 | ... | act_{T-2} | dyn_{T-1} ]

where ``act_t`` is the action sent after frame ``t``. Two action encodings are available:

- ``"bins"`` (default): 7 tokens per action, each dimension quantized into ``action_bins`` uniform
  bins over ``[action_low, action_high]`` (stored in the config), with their own vocabulary entries;
- ``"embed"``: one slot per action whose input embedding is a learned slot vector plus a
  zero-initialized linear projection of the 7-D action (the model starts as an unconditional video
  model and learns to use actions).

"bins" reached a lower validation loss than "embed" side by side (docs/world_model.md); its 6 extra
tokens per frame are fed in the same forward pass as the previous frame's last code (no extra
sequential step).

Two options make every generated code depend on the action (a model trained on scripted runs
alone learns to guess the motion from the frames and ignore the action slots):

- ``action_to_codes``: the normalized action of the step that led to a frame also enters each of
  that frame's dynamics positions, through a zero-initialized linear layer added to the code's input
  embedding (so a checkpoint trained without it starts out unchanged);
- ``action_dropout`` > 0: during training the whole clip's actions are replaced, with that
  probability, by a learned "no action" input (the action slots and the per-code term alike). The
  model then also predicts without actions, which classifier-free guidance uses at decoding time:
  ``logits = uncond + guidance * (cond - uncond)``; ``guidance`` in the config is the model's
  default scale (1: plain conditional decoding).

Codes are predicted one at a time by default: the code at a position comes from the output one
position before it. With ``parallel_frames`` a frame's codes are predicted together instead, in one
forward pass (so more codes per frame do not cost more sequential steps)::

    [ ctx | act_0 | start (16 learned inputs) | act_1 | dyn_1 | ... | act_{T-2} | dyn_{T-2} ]

Each frame's block holds its action slots and, at each dynamics position, the code the *previous*
frame had there (a learned start input for the first frame); attention is block-causal (a position
sees the context, every earlier block and its whole own block) and the output at dynamics position j
of a block predicts code j of the frame that block leads to. The codes of a frame are then
independent given the past, so a frame's log-probability is still the exact sum of its codes'.

``markov_frames`` (with ``parallel_frames``) narrows what a block sees to the context and itself: the
next frame is predicted from the previous frame's codes and the action alone, never from the frames
before, so the model cannot extrapolate the motion of a clip from its history (scripted motion is
smooth enough that a model which can, learns to ignore the action) and has to read it from the action.
Every block then takes the same positions, right after the context, and a rollout's cache holds only
the context.

``anchor_frames`` (with ``markov_frames``) predicts every frame of a window from the window's first frame
(the context) and the actions since, never from a predicted frame: each block holds the learned start
inputs, and each of its dynamics positions also gets a zero-initialized projection of the sum of the
(normalized) actions since the context plus a learned input for the number of steps since it. A Markov
model decoded greedily loses every motion smaller than what changes a code in one step (the most likely
code of a cell is then the one it had, step after step); here the motion adds up in the actions instead,
and a window's frames do not compound each other's errors. Windows are at most ``anchor_horizon`` + 1
frames (an SWR window re-anchors on its last frame).

With ``refine_passes`` K > 1 (and ``parallel_frames``) a frame is decoded in K passes over its block
instead of one, as in MaskGIT: each dynamics position may also be shown the code already decoded there
(a zero-initialized projection of its embedding, :meth:`DynamicsTransformer.reveal_inputs`). The first
pass sees none and is the one-pass prediction; each pass commits the codes it is surest of
(:func:`commit_mask`), and the next predicts the rest knowing them. Codes predicted together are
independent given the past, so where the next frame is uncertain (the moving arm) a single pass lets
each code take its own mode or draw, which need not add up to one arm; committing a few codes first
lets their neighbours agree with them. Training shows each frame a random subset of its true codes (a
hidden fraction ``cos(pi u / 2)``, ``u`` uniform) and scores the hidden ones. A code's log-probability
is the one of the pass that committed it, given the codes committed before: the rollout records each
code's pass and GRPO replays the passes in that order (the log-probability of the frame given its
commit order, the order itself not scored).

A code is predicted by one softmax over all codes, or with ``digit_head`` by one softmax per FSQ
digit (7 + 5 + 5 + 5 + 5 outputs instead of 4375): the digits are the tokenizer's latent levels, so
a digit's neighbours decode to similar pixels and what is learned for one code carries to its
neighbours, where the joint softmax treats every code as unrelated.

Only dynamics codes are predicted (cross-entropy over the code range); context and actions are
given. Positions are plain token indices fed to LLaMA's rotary embedding, so a sequence longer than
the training clips simply uses positions the model never saw (how default autoregression drifts);
Sliding Window Re-encoding restarts them at 0 every window.
"""

from __future__ import annotations

import math
from numbers import Integral
from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn
from transformers import LlamaConfig, LlamaForCausalLM, PretrainedConfig, PreTrainedModel

from roboalign_env.models.tokenizer import code_digits

SWR_WINDOW = 6
"""Sliding Window Re-encoding's window W in frames (the paper's): context + W-1 generated; a model's
``swr_window`` unless it was trained for another."""
MODEL_WINDOW = "model"
"""The ``window`` setting that decodes with the model's own ``swr_window``."""
Window = int | None | Literal["model"]
"""An SWR window setting: W frames (>= 2), None (no re-encoding) or :data:`MODEL_WINDOW`."""


def check_window(window: Window) -> None:
    """An SWR window setting: at least the context and one generated frame, None (no re-encoding) or
    :data:`MODEL_WINDOW`; refused otherwise."""
    if window is None or window == MODEL_WINDOW:
        return
    if isinstance(window, bool) or not isinstance(window, Integral) or window < 2:
        raise ValueError(f"window must be an integer >= 2 (context + one generated frame), None (no re-encoding) "
                         f"or {MODEL_WINDOW!r} (the model's own), got {window!r}")


class DynamicsTransformerConfig(PretrainedConfig):
    model_type = "roboalign_world_model"

    def __init__(
        self,
        codebook_size: int = 4375,
        context_tokens: int = 64,
        dynamics_tokens: int = 16,
        action_dim: int = 7,
        action_mode: str = "bins",
        action_bins: int = 256,
        action_low: float = -1.0,
        action_high: float = 1.0,
        hidden_size: int = 256,
        num_layers: int = 4,
        num_heads: int = 4,
        intermediate_size: int = 768,
        max_positions: int = 8192,
        dropout: float = 0.0,
        action_to_codes: bool = False,
        action_dropout: float = 0.0,
        guidance: float = 1.0,
        parallel_frames: bool = False,
        digit_head: bool = False,
        code_levels: list[int] | None = None,
        markov_frames: bool = False,
        refine_passes: int = 1,
        anchor_frames: bool = False,
        anchor_horizon: int = 15,
        swr_window: int | None = SWR_WINDOW,
        **kwargs,
    ):
        if action_mode not in ("embed", "bins"):
            raise ValueError(f"action_mode must be 'embed' or 'bins', got {action_mode!r}")
        if not 0.0 <= action_dropout < 1.0:
            raise ValueError(f"action_dropout must be in [0, 1), got {action_dropout}")
        if markov_frames and not parallel_frames:
            raise ValueError("markov_frames needs parallel_frames (a block that holds the previous frame's codes)")
        if anchor_frames and not markov_frames:
            raise ValueError("anchor_frames needs markov_frames (a block that sees the context and itself only)")
        if isinstance(anchor_horizon, bool) or not isinstance(anchor_horizon, int) or anchor_horizon < 1:
            raise ValueError(f"anchor_horizon must be an integer >= 1, got {anchor_horizon!r}")
        if swr_window == MODEL_WINDOW:
            raise ValueError(f"swr_window: a model's own window must be a number of frames or None, got {swr_window!r}")
        check_window(swr_window)
        if isinstance(refine_passes, bool) or not isinstance(refine_passes, int) or refine_passes < 1:
            raise ValueError(f"refine_passes must be an integer >= 1, got {refine_passes!r}")
        if refine_passes > 1 and not parallel_frames:
            raise ValueError("refine_passes > 1 needs parallel_frames (a frame's codes decoded together, then refined)")
        if guidance != 1.0 and action_dropout == 0.0:
            raise ValueError(f"guidance {guidance} needs a model trained with action_dropout > 0 "
                             "(classifier-free guidance contrasts it with the no-action prediction)")
        self.codebook_size = codebook_size
        self.context_tokens = context_tokens
        self.dynamics_tokens = dynamics_tokens
        self.action_dim = action_dim
        self.action_mode = action_mode
        self.action_bins = action_bins
        self.action_low = action_low
        self.action_high = action_high
        self.hidden_size = hidden_size
        self.num_layers = num_layers
        self.num_heads = num_heads
        self.intermediate_size = intermediate_size
        self.max_positions = max_positions
        self.dropout = dropout
        self.action_to_codes = action_to_codes
        self.action_dropout = action_dropout
        self.guidance = guidance
        self.parallel_frames = parallel_frames
        self.digit_head = digit_head
        self.markov_frames = markov_frames
        self.refine_passes = refine_passes
        self.anchor_frames = anchor_frames
        self.anchor_horizon = anchor_horizon
        self.swr_window = None if swr_window is None else int(swr_window)
        self.code_levels = None if code_levels is None else list(code_levels)
        super().__init__(**kwargs)

    @property
    def guidable(self) -> bool:
        """Whether the model has the "no action" input that classifier-free guidance needs."""
        return self.action_dropout > 0

    def resolve_guidance(self, guidance: float | None) -> float:
        """The guidance scale to decode with: ``guidance``, or this model's default when None. Refused
        unless a finite number >= 0, and unless 1 for a model without the "no action" input."""
        scale = self.guidance if guidance is None else guidance
        if isinstance(scale, bool) or not isinstance(scale, (int, float)) or not 0 <= scale < float("inf"):
            raise ValueError(f"guidance must be None or a finite number >= 0 (1: no guidance), got {guidance!r}")
        if scale != 1 and not self.guidable:
            raise ValueError(f"guidance {scale} needs a model trained with action_dropout > 0; this one has no "
                             "'no action' input to guide against (use guidance=None or 1)")
        return float(scale)

    def resolve_passes(self, passes: int | None) -> int:
        """The refinement passes per frame to decode with: ``passes``, or this model's default when None;
        more than one needs a model trained to refine (``refine_passes`` > 1)."""
        count = self.refine_passes if passes is None else passes
        if isinstance(count, bool) or not isinstance(count, int) or count < 1:
            raise ValueError(f"passes must be None or an integer >= 1, got {passes!r}")
        if count > 1 and not self.refinable:
            raise ValueError(f"passes {count} needs a model trained with refine_passes > 1; this one predicts a "
                             "frame in one pass (use passes=None or 1)")
        return count

    def resolve_window(self, window: Window) -> int | None:
        """The SWR window to decode with: ``window``, or this model's ``swr_window`` for
        :data:`MODEL_WINDOW` (the window it was chosen to decode at)."""
        chosen = self.swr_window if window == MODEL_WINDOW else window
        check_window(chosen)
        return None if chosen is None else int(chosen)

    @property
    def longest_window(self) -> int | None:
        """The longest SWR window this model decodes (None: any length, and no re-encoding at all)."""
        return self.anchor_horizon + 1 if self.anchor_frames else None

    def check_reach(self, frames: int, what: str) -> None:
        """Refuse to predict more than ``frames`` frames from one context where this model cannot (``what``
        names the setting that asks for them, for the message)."""
        if self.longest_window is not None and frames > self.longest_window - 1:
            raise ValueError(f"{what}: an anchor_frames model predicts at most {self.anchor_horizon} frames from a "
                             f"window's first (an SWR window of at most {self.longest_window} frames)")

    def check_window_reach(self, window: int | None, horizon: int, what: str) -> None:
        """:meth:`check_reach` for decoding with SWR window ``window`` (its W-1 generated frames per context) or,
        with None, ``horizon`` frames from one context."""
        self.check_reach(window - 1 if window is not None else horizon, what)

    @property
    def refinable(self) -> bool:
        """Whether the model reads a frame's already decoded codes (trained to fill in the rest)."""
        return self.refine_passes > 1

    @property
    def head_size(self) -> int:
        """Outputs of the prediction head per position: one per code, or with ``digit_head`` one per
        level of each FSQ digit."""
        return sum(self.code_levels) if self.digit_head else self.codebook_size

    @property
    def action_slots(self) -> int:
        """Sequence positions one action takes."""
        return 1 if self.action_mode == "embed" else self.action_dim

    @property
    def frame_tokens(self) -> int:
        """Sequence positions one generated frame takes (its action slots plus its dynamics codes)."""
        return self.action_slots + self.dynamics_tokens

    def sequence_length(self, frames: int) -> int:
        """Tokens in a window of ``frames`` frames (the context frame plus ``frames - 1`` generated)."""
        return self.context_tokens + (frames - 1) * self.frame_tokens

    def llama(self) -> LlamaConfig:
        vocab = self.codebook_size + (self.action_dim * self.action_bins if self.action_mode == "bins" else 0)
        return LlamaConfig(
            vocab_size=vocab, hidden_size=self.hidden_size, intermediate_size=self.intermediate_size,
            num_hidden_layers=self.num_layers, num_attention_heads=self.num_heads,
            num_key_value_heads=self.num_heads, max_position_embeddings=self.max_positions,
            attention_dropout=self.dropout, tie_word_embeddings=False, bos_token_id=None,
            eos_token_id=None, pad_token_id=None,
        )


class DynamicsTransformer(PreTrainedModel):
    """Predicts the dynamics codes of each next frame from the context codes and the actions."""

    config_class = DynamicsTransformerConfig
    main_input_name = "context_codes"

    def __init__(self, config: DynamicsTransformerConfig):
        super().__init__(config)
        self.llama = LlamaForCausalLM(config.llama())
        if config.digit_head:
            if not config.code_levels or math.prod(config.code_levels) != config.codebook_size:
                raise ValueError(f"digit_head needs the tokenizer's FSQ levels, whose product is the codebook size "
                                 f"{config.codebook_size}; got code_levels={config.code_levels}")
            self.llama.lm_head = nn.Linear(config.hidden_size, config.head_size, bias=False)
        if config.action_mode == "embed":
            self.action_slot = nn.Parameter(torch.zeros(config.hidden_size))
            self.action_proj = nn.Linear(config.action_dim, config.hidden_size)
        if config.action_to_codes:
            self.code_action_proj = nn.Linear(config.action_dim, config.hidden_size)
        if config.guidable:
            self.null_slots = nn.Parameter(torch.zeros(config.action_slots, config.hidden_size))
            self.null_codes = nn.Parameter(torch.zeros(config.hidden_size))
        if config.parallel_frames:
            self.start_codes = nn.Parameter(torch.zeros(config.dynamics_tokens, config.hidden_size))
        if config.refinable:
            self.reveal_proj = nn.Linear(config.hidden_size, config.hidden_size)
        if config.anchor_frames:
            self.anchor_action_proj = nn.Linear(config.action_dim, config.hidden_size)
            self.anchor_steps = nn.Parameter(torch.zeros(config.anchor_horizon, config.hidden_size))
        self.post_init()

    #: Modules that a checkpoint trained without the conditioning options lacks; they start at
    #: their initial values when such a checkpoint is fine-tuned with the options on.
    CONDITIONING_PARAMETERS = ("code_action_proj.weight", "code_action_proj.bias", "null_slots", "null_codes",
                               "reveal_proj.weight", "reveal_proj.bias", "anchor_action_proj.weight",
                               "anchor_action_proj.bias", "anchor_steps")

    def _init_weights(self, module: nn.Module) -> None:
        super()._init_weights(module)  # also restores LLaMA's rotary buffers after from_pretrained
        if any(module is getattr(self, name, None) for name in ("action_proj", "code_action_proj", "reveal_proj",
                                                                 "anchor_action_proj")):
            nn.init.zeros_(module.weight)
            nn.init.zeros_(module.bias)
        elif isinstance(module, DynamicsTransformer):
            for name in ("action_slot", "null_slots", "start_codes"):
                if hasattr(module, name):
                    nn.init.normal_(getattr(module, name), std=0.02)

    # --- inputs -----------------------------------------------------------------------------
    def check_actions(self, actions: torch.Tensor) -> None:
        """Actions must be finite float (..., action_dim)."""
        dim = self.config.action_dim
        if not torch.is_tensor(actions) or not actions.is_floating_point():
            raise TypeError(f"actions: expected a float tensor (..., {dim}), got "
                            f"{actions.dtype if torch.is_tensor(actions) else type(actions).__name__}")
        if actions.shape[-1] != dim:
            raise ValueError(f"actions: expected last dimension {dim} (the controller's action size), "
                             f"got shape {tuple(actions.shape)}")
        if not torch.isfinite(actions).all():
            raise ValueError("actions: contain NaN or inf")

    def embed_codes(self, codes: torch.Tensor) -> torch.Tensor:
        return self.llama.get_input_embeddings()(codes)

    def normalized_actions(self, actions: torch.Tensor) -> torch.Tensor:
        """Actions clamped to the config's range and mapped to [-1, 1]."""
        cfg = self.config
        mid, half = (cfg.action_high + cfg.action_low) / 2, (cfg.action_high - cfg.action_low) / 2
        return (actions.clamp(cfg.action_low, cfg.action_high) - mid) / half

    def embed_actions(self, actions: torch.Tensor) -> torch.Tensor:
        """Actions (..., 7) → slot embeddings (..., action_slots, hidden)."""
        cfg = self.config
        if cfg.action_mode == "embed":
            return (self.action_slot + self.action_proj(actions.to(self.action_proj.weight.dtype))).unsqueeze(-2)
        return self.embed_codes(self.action_token_ids(actions))

    def action_inputs(self, actions: torch.Tensor, null: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """What one action puts into the sequence: its slot embeddings (..., action_slots, hidden) and
        the term added to the input embedding of each dynamics code of the frame it leads to
        (..., hidden; zero without ``action_to_codes``). Where the bool mask ``null`` (...) is set,
        both are the learned "no action" input instead."""
        slots = self.embed_actions(actions)
        if self.config.action_to_codes:
            weight = self.code_action_proj.weight
            codes = self.code_action_proj(self.normalized_actions(actions).to(weight.dtype))
        else:
            codes = slots.new_zeros(*actions.shape[:-1], self.config.hidden_size)
        if null is not None and bool(null.any()):
            if not self.config.guidable:
                raise ValueError("this model has no 'no action' input (it was trained with action_dropout = 0)")
            slots = torch.where(null[..., None, None], self.null_slots.to(slots.dtype), slots)
            codes = torch.where(null[..., None], self.null_codes.to(codes.dtype), codes)
        return slots, codes

    def reveal_inputs(self, codes: torch.Tensor, revealed: torch.Tensor) -> torch.Tensor:
        """The term (..., 16, hidden) a ``refine_passes`` model adds to the input of each dynamics position of a
        block: a zero-initialized projection of the code already decoded there, where ``revealed`` (..., 16)
        is set, and nothing where it is not (a block with nothing revealed is the one-pass prediction)."""
        shown = self.reveal_proj(self.embed_codes(codes))
        return torch.where(revealed[..., None], shown, torch.zeros((), dtype=shown.dtype, device=shown.device))

    def anchor_inputs(self, summed: torch.Tensor, steps: torch.Tensor,
                      null: torch.Tensor | None = None) -> torch.Tensor:
        """The term (..., hidden) an ``anchor_frames`` model adds to every dynamics position of a block: the
        projection of ``summed`` (..., 7), the sum of the normalized actions from the context's to this block's,
        plus the learned input of ``steps`` (...), the block's index since the context (0: the frame right after
        it). Where ``null`` is set (no action), the step's input alone."""
        if bool((steps < 0).any()) or bool((steps >= self.config.anchor_horizon).any()):
            raise ValueError(f"anchor_frames: a window predicts at most anchor_horizon={self.config.anchor_horizon} "
                             f"frames from its first; got step {int(steps.max())} (use a shorter SWR window)")
        weight = self.anchor_action_proj.weight
        term = self.anchor_action_proj(summed.to(weight.dtype))
        if null is not None:
            term = torch.where(null[..., None], torch.zeros((), dtype=term.dtype, device=term.device), term)
        return term + self.anchor_steps[steps].to(term.dtype)

    def action_token_ids(self, actions: torch.Tensor) -> torch.Tensor:
        cfg = self.config
        unit = (self.normalized_actions(actions) + 1) / 2
        bins = (unit * cfg.action_bins).long().clamp(0, cfg.action_bins - 1)
        offsets = torch.arange(cfg.action_dim, device=actions.device) * cfg.action_bins
        return cfg.codebook_size + offsets + bins

    def code_logits(self, head: torch.Tensor) -> torch.Tensor:
        """The prediction head's outputs (..., >= head_size) → code logits (..., K) in float32.

        A joint head's logits are restricted to the code range (actions are never predicted). A
        ``digit_head`` predicts each FSQ digit of the code with its own softmax; a code's logit is
        then the sum of its digits' log-probabilities, an exact, normalized log-probability (the
        digits independent given the past), so sampling, guidance, cross-entropy and GRPO's
        log-probabilities treat both heads alike."""
        cfg = self.config
        if not cfg.digit_head:
            return head[..., : cfg.codebook_size].float()
        parts = head[..., : cfg.head_size].float().split(cfg.code_levels, -1)
        digits = code_digits(torch.arange(cfg.codebook_size, device=head.device), cfg.code_levels)  # (K, D)
        return sum(part.log_softmax(-1)[..., digits[:, d]] for d, part in enumerate(parts))

    # --- teacher-forced pass (training, GRPO log-probabilities) -------------------------------
    def forward(self, context_codes: torch.Tensor, actions: torch.Tensor, dynamics_codes: torch.Tensor,
                null: torch.Tensor | None = None, guidance: float = 1.0,
                held_codes: torch.Tensor | None = None, revealed: torch.Tensor | None = None) -> torch.Tensor:
        """Logits (B, F, 16, K) of every dynamics code given the context (B, 64), the actions
        (B, F, 7) and the true dynamics codes (B, F, 16) of the previous frames.

        ``null`` (B,) bool replaces those clips' actions by the "no action" input (training with
        action dropout); ``guidance`` != 1 returns classifier-free guided logits, the distribution
        a rollout with that guidance samples from. ``held_codes`` (B, F-1, 16), for a
        ``parallel_frames`` model, are the codes blocks 1..F-1 hold in place of the true codes of
        frames 1..F-1 (what training on the model's own predictions feeds). ``revealed`` (B, F, 16) bool,
        for a ``refine_passes`` model, marks the codes each block is shown (the true code of its own
        frame at that position, :meth:`reveal_inputs`); the logits at the others are those of a
        refinement pass that knows the revealed codes."""
        self.check_actions(actions)
        if revealed is not None:
            if not self.config.refinable:
                raise ValueError("revealed needs a model with refine_passes > 1 (one that reads decoded codes)")
            if revealed.shape != dynamics_codes.shape:
                raise ValueError(f"revealed: expected shape {tuple(dynamics_codes.shape)}, got {tuple(revealed.shape)}")
        if held_codes is not None:
            if not self.config.parallel_frames:
                raise ValueError("held_codes needs a parallel_frames model (one whose blocks hold the previous frame's codes)")
            b, f, n = dynamics_codes.shape
            if self.config.anchor_frames:
                raise ValueError("held_codes: an anchor_frames model reads no previous frame (nothing to hold)")
            if held_codes.shape != (b, f - 1, n):
                raise ValueError(f"held_codes: expected shape {(b, f - 1, n)}, got {tuple(held_codes.shape)}")
        if guidance != 1.0:
            if null is not None:
                raise ValueError("null and guidance != 1 do not combine: guidance contrasts actions with no action")
            both = self._logits(context_codes.repeat(2, 1), actions.repeat(2, 1, 1), dynamics_codes.repeat(2, 1, 1),
                                torch.arange(2 * len(actions), device=actions.device) >= len(actions),
                                None if held_codes is None else held_codes.repeat(2, 1, 1),
                                None if revealed is None else revealed.repeat(2, 1, 1))
            cond, uncond = both.chunk(2)
            return uncond + guidance * (cond - uncond)
        return self._logits(context_codes, actions, dynamics_codes, null, held_codes, revealed)

    def _logits(self, context_codes, actions, dynamics_codes, null, held_codes=None, revealed=None) -> torch.Tensor:
        b, f, n = dynamics_codes.shape
        cfg = self.config
        nulls = None if null is None else null[:, None].expand(b, f)
        slots, code_terms = self.action_inputs(actions, nulls)
        if cfg.anchor_frames:  # every block from the context and the actions since: the start inputs
            codes = self.start_codes.expand(b, f, n, -1).to(slots.dtype)
            summed = self.normalized_actions(actions).cumsum(1)
            code_terms = code_terms + self.anchor_inputs(summed, torch.arange(f, device=actions.device).expand(b, f),
                                                         nulls)
        elif cfg.parallel_frames:  # each block holds the previous frame's codes
            codes = self.embed_codes(dynamics_codes[:, :-1] if held_codes is None else held_codes)
            codes = torch.cat([self.start_codes.expand(b, 1, n, -1).to(codes.dtype), codes], 1)
        else:
            codes = self.embed_codes(dynamics_codes)
        codes = codes + code_terms[:, :, None]
        if revealed is not None:
            codes = codes + self.reveal_inputs(dynamics_codes, revealed)
        blocks = torch.cat([slots, codes], 2)
        embeds = torch.cat([self.embed_codes(context_codes), blocks.flatten(1, 2)], 1)
        mask = self.block_mask(f, embeds.device) if cfg.parallel_frames else None
        positions = self.positions(f, embeds.device)
        logits = self.llama(inputs_embeds=embeds, attention_mask=mask, position_ids=positions, use_cache=False,
                            logits_to_keep=0).logits
        # One at a time, the code at position p is predicted by the output at p - 1; in parallel, by the output at p.
        starts = cfg.context_tokens + torch.arange(f, device=embeds.device) * cfg.frame_tokens + cfg.action_slots
        shift = 0 if cfg.parallel_frames else 1
        where = (starts[:, None] + torch.arange(n, device=embeds.device)[None, :] - shift).flatten()
        return self.code_logits(logits[:, where]).view(b, f, n, -1)

    def block_mask(self, frames: int, device: torch.device) -> torch.Tensor:
        """Bool attention mask (1, 1, L, L) of a ``parallel_frames`` sequence: a position sees every
        position of its own block and of the blocks before it (the context is block 0); with
        ``markov_frames``, of its own block and the context only."""
        cfg = self.config
        block = torch.cat([torch.zeros(cfg.context_tokens, dtype=torch.long, device=device),
                           torch.arange(1, frames + 1, device=device).repeat_interleave(cfg.frame_tokens)])
        if cfg.markov_frames:
            return ((block[None, :] == block[:, None]) | (block[None, :] == 0))[None, None]
        return (block[None, :] <= block[:, None])[None, None]

    def positions(self, frames: int, device: torch.device) -> torch.Tensor | None:
        """Rotary position ids (1, L) of a sequence of ``frames`` blocks: None (token indices) unless
        ``markov_frames``, where every block takes the positions right after the context (it is the
        only block its positions see, so a rollout keeps just the context in its cache)."""
        cfg = self.config
        if not cfg.markov_frames:
            return None
        block = cfg.context_tokens + torch.arange(cfg.frame_tokens, device=device).repeat(frames)
        return torch.cat([torch.arange(cfg.context_tokens, device=device), block])[None]

    def loss(self, context_codes, actions, dynamics_codes) -> torch.Tensor:
        logits = self(context_codes, actions, dynamics_codes)
        return F.cross_entropy(logits.flatten(0, 2), dynamics_codes.flatten())

    def log_probs(self, context_codes, actions, dynamics_codes, temperature: float = 1.0,
                  guidance: float = 1.0, commits: torch.Tensor | None = None) -> torch.Tensor:
        """Log-probabilities (B, F, 16) of given dynamics codes under softmax(logits / temperature)
        (see :func:`code_log_probs`)."""
        return code_log_probs(self, context_codes, actions, dynamics_codes, temperature, guidance, commits)


def code_log_probs(model, context_codes: torch.Tensor, actions: torch.Tensor, codes: torch.Tensor,
                   temperature: float = 1.0, guidance: float = 1.0,
                   commits: torch.Tensor | None = None) -> torch.Tensor:
    """Teacher-forced log-probabilities (B, F, 16) of ``codes`` under softmax(logits / temperature), where
    ``model`` is a :class:`DynamicsTransformer` or a wrapper that calls it (DDP). ``commits`` (B, F, 16),
    a rollout's record of the refinement pass that committed each code, replays those passes: a code's
    log-probability is the one of its pass, shown the codes committed before it (None: one pass)."""
    order = torch.zeros_like(codes) if commits is None else commits
    log_probs = None
    for k in range(int(order.max()) + 1):
        logits = model(context_codes, actions, codes, guidance=guidance, revealed=order < k if k else None)
        of_pass = (logits.float() / temperature).log_softmax(-1).gather(-1, codes.unsqueeze(-1)).squeeze(-1)
        log_probs = of_pass if log_probs is None else torch.where(order == k, of_pass, log_probs)
    return log_probs


def sample_codes(logits: torch.Tensor, temperature: float, top_k: int | None,
                 generators: list[torch.Generator] | torch.Generator | None) -> tuple[torch.Tensor, torch.Tensor]:
    """Draw one code per vector of ``logits`` (B, ..., K) and return (codes, log-probabilities), (B, ...).

    ``temperature == 0`` is greedy. Otherwise codes are drawn from softmax(logits / temperature)
    restricted to the ``top_k`` largest (Gumbel-max with noise from ``generators``: one generator
    per row makes a batched draw equal to the same rows drawn one at a time). The returned
    log-probability is under the untruncated softmax(logits / temperature), the quantity GRPO's
    importance ratio uses.
    """
    logits = logits.float()
    if temperature == 0:
        codes = logits.argmax(-1)
        return codes, logits.log_softmax(-1).gather(-1, codes[..., None]).squeeze(-1)
    scaled = logits / temperature
    masked = scaled
    if top_k is not None and top_k < scaled.shape[-1]:
        kth = scaled.topk(top_k, -1).values[..., -1:]
        masked = scaled.masked_fill(scaled < kth, float("-inf"))
    if isinstance(generators, (list, tuple)):
        if len(generators) != len(logits):
            raise ValueError(f"got {len(generators)} generators for a batch of {len(logits)}")
        uniform = torch.stack([torch.rand(scaled.shape[1:], generator=g) for g in generators])
    else:
        uniform = torch.rand(scaled.shape, generator=generators)
    exponential = -torch.log(uniform.clamp_min(1e-20))
    gumbel = -torch.log(exponential.clamp_min(1e-20)).to(scaled.device)
    codes = (masked + gumbel).argmax(-1)
    return codes, scaled.log_softmax(-1).gather(-1, codes[..., None]).squeeze(-1)


CONFIDENT = 0.9
"""A refinement pass commits every code it predicts with at least this probability (the static scene
mostly), besides its share of the uncertain ones."""


def commit_mask(hidden: torch.Tensor, confidence: torch.Tensor, pass_index: int, passes: int) -> torch.Tensor:
    """Which still hidden codes (B, n) pass ``pass_index`` of ``passes`` commits: on the last pass all of
    them; before it, those predicted with probability ``confidence`` >= :data:`CONFIDENT`, and at least the
    most confident ``ceil(hidden / passes left)`` of each row, so the uncertain codes (where the frame
    moves) are spread over the passes and each later pass sees the earlier ones."""
    if pass_index == passes - 1:
        return hidden.clone()
    share = (hidden.sum(-1, keepdim=True) + passes - pass_index - 1) // (passes - pass_index)
    ranks = confidence.masked_fill(~hidden, -1.0).argsort(-1, descending=True).argsort(-1)
    return hidden & ((confidence >= CONFIDENT) | (ranks < share))


def _register() -> None:
    from transformers import AutoConfig, AutoModel

    AutoConfig.register(DynamicsTransformerConfig.model_type, DynamicsTransformerConfig, exist_ok=True)
    AutoModel.register(DynamicsTransformerConfig, DynamicsTransformer, exist_ok=True)


_register()
