"""The world model: tokenizer + dynamics transformer, rolled out with or without SWR.

A checkpoint is a folder::

    tokenizer/     config.json + model.safetensors   (VideoTokenizer)
    transformer/   config.json + model.safetensors   (DynamicsTransformer)
    manifest.json  image size, action space, versions

:class:`Dream` advances a batch of N rollouts one frame per :meth:`Dream.step`, all N in one
forward pass, with a KV cache. Each step feeds the previous frame's last sampled code together with
the new action, samples the next frame's dynamics codes one by one, and decodes them to pixels
against the current context frame's features. A ``parallel_frames`` transformer instead gets the
action and the previous frame's codes as one block and samples all of the new frame's codes from
that one forward pass.

Sliding Window Re-encoding (SWR): a window holds ``window`` frames, the context plus
``window - 1`` generated ones. When a window is full, the last generated frame (already decoded to
pixels) is re-encoded as fresh context codes and context features, the KV cache is dropped and
positions restart at 0; the sequence never grows past ``sequence_length(window)`` tokens.
With ``window=None`` (plain autoregression) the context stays the first frame and the sequence
grows by ``frame_tokens`` (23 with binned actions) per frame, past the 8-frame length seen in training.
The default, ``window="model"``, is the model's own ``swr_window`` (its config's): the window it was
chosen to decode at, as a model trained on longer clips decodes best with longer windows.
"""

from __future__ import annotations

import copy
import json
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch

from roboalign_env.data.io import atomic_write, replace_folder
from roboalign_env.models.decoding import IncrementalDecoder
from roboalign_env.models.registry import check_finite, quiet_loading
from roboalign_env.models.tokenizer import VideoTokenizer
from roboalign_env.models.transformer import MODEL_WINDOW, DynamicsTransformer, Window, commit_mask, sample_codes

MANIFEST = "manifest.json"
COMPONENTS = ("tokenizer", "transformer")


class CheckpointError(ValueError):
    """A world-model folder is missing a file or its parts do not fit together."""


class WorldModel(torch.nn.Module):
    """Tokenizer and transformer together, with the checks that they match."""

    def __init__(self, tokenizer: VideoTokenizer, transformer: DynamicsTransformer):
        super().__init__()
        t, w = tokenizer.config, transformer.config
        if (t.codebook_size, t.context_tokens, t.dynamics_tokens) != (w.codebook_size, w.context_tokens, w.dynamics_tokens):
            raise CheckpointError(
                f"tokenizer ({t.codebook_size} codes, {t.context_tokens}+{t.dynamics_tokens} tokens) does not match "
                f"transformer ({w.codebook_size} codes, {w.context_tokens}+{w.dynamics_tokens} tokens)")
        if w.digit_head and list(w.code_levels) != list(t.levels):
            raise CheckpointError(f"the transformer predicts the digits of FSQ levels {w.code_levels}, "
                                  f"the tokenizer quantizes with {t.levels}")
        self.tokenizer = tokenizer.eval().requires_grad_(False)
        self.transformer = transformer

    @property
    def image_size(self) -> int:
        return self.tokenizer.config.image_size

    def save(self, folder: str | Path, dtype: torch.dtype | None = None) -> Path:
        """Write ``tokenizer/``, ``transformer/`` and ``manifest.json`` (safetensors, no pickle) as one
        folder that replaces an existing one whole (a kill never mixes an old part with a new one).

        ``dtype=torch.bfloat16`` stores the weights at half size (what the package ships);
        :meth:`load` always returns float32 weights.
        """
        import roboalign_env

        cfg = self.transformer.config
        manifest = {
            "format": "roboalign_world_model/1", "image_size": self.image_size,
            "action_dim": cfg.action_dim, "action_low": cfg.action_low, "action_high": cfg.action_high,
            "roboalign_env": roboalign_env.__version__, "torch": torch.__version__,
        }

        def fill(tmp: Path) -> None:
            tmp.mkdir(parents=True)
            for name, part in (("tokenizer", self.tokenizer), ("transformer", self.transformer)):
                (copy.deepcopy(part).to(dtype) if dtype else part).save_pretrained(tmp / name, safe_serialization=True)
            atomic_write(tmp / MANIFEST, lambda f: f.write(json.dumps(manifest, indent=1)), mode="w")

        return replace_folder(folder, fill)

    @classmethod
    def load(cls, folder: str | Path, device: str | torch.device = "cpu") -> "WorldModel":
        """Load a folder written by :meth:`save`; a missing or mismatched file raises CheckpointError."""
        folder = Path(folder)
        for name in COMPONENTS:
            for file in ("config.json", "model.safetensors"):
                if not (folder / name / file).is_file():
                    raise CheckpointError(f"{folder / name / file}: missing (a world-model folder needs "
                                          f"tokenizer/ and transformer/, each with config.json and model.safetensors)")
        tokenizer = load_component(VideoTokenizer, folder / "tokenizer")
        transformer = load_component(DynamicsTransformer, folder / "transformer")
        model = cls(tokenizer, transformer)
        if (folder / MANIFEST).is_file():
            try:
                manifest = json.loads((folder / MANIFEST).read_text())
            except (json.JSONDecodeError, UnicodeDecodeError) as err:
                raise CheckpointError(f"{folder / MANIFEST}: not valid JSON ({err})") from None
            if not isinstance(manifest, dict):
                raise CheckpointError(f"{folder / MANIFEST}: expected a JSON object")
            if manifest.get("image_size") != model.image_size:
                raise CheckpointError(f"{folder / MANIFEST}: image_size {manifest.get('image_size')} does not "
                                      f"match the tokenizer's {model.image_size}")
        return model.to(device=device, dtype=torch.float32).eval()

    def dream(self, first_frames: torch.Tensor, horizon: int, window: Window = MODEL_WINDOW, temperature: float = 0.0,
              top_k: int | None = None, generators: list[torch.Generator] | torch.Generator | None = None,
              record: bool = True, precision: str = "float32", guidance: float | None = None,
              passes: int | None = None) -> "Dream":
        return Dream(self, first_frames, horizon, window, temperature, top_k, generators, record, precision, guidance,
                     passes)

    @torch.no_grad()
    def rollout(self, first_frames: torch.Tensor, actions: torch.Tensor, window: Window = MODEL_WINDOW,
                temperature: float = 0.0, top_k: int | None = None,
                generators: list[torch.Generator] | torch.Generator | None = None,
                guidance: float | None = None, passes: int | None = None) -> "Rollout":
        """Predict frames 1..F from first frames (B, 3, H, W) and actions (B, F, 7)."""
        if actions.ndim != 3:
            raise ValueError(f"actions: expected shape (batch, frames, {self.transformer.config.action_dim}), "
                             f"got {tuple(actions.shape)}")
        dream = self.dream(first_frames, actions.shape[1], window, temperature, top_k, generators, guidance=guidance,
                           passes=passes)
        tic = time.perf_counter()
        frames = [dream.step(actions[:, i]) for i in range(actions.shape[1])]
        return Rollout(torch.stack(frames, 1), torch.stack(dream.codes, 1), torch.stack(dream.log_probs, 1),
                       dream.windows, dream.peak_sequence, time.perf_counter() - tic, torch.stack(dream.commits, 1))


def load_component(cls, folder: Path):
    """``from_pretrained`` that refuses weights which do not cover the model exactly."""
    try:
        with quiet_loading():
            model, info = cls.from_pretrained(folder, output_loading_info=True)
    except Exception as err:  # a truncated or corrupt safetensors file, a bad config.json: name the folder
        raise CheckpointError(f"{folder}: could not load {cls.__name__} ({type(err).__name__}: {err})") from None
    try:
        check_finite(model, folder / "model.safetensors")
    except ValueError as err:
        raise CheckpointError(str(err)) from None
    problems = {k: v for k, v in info.items() if k in ("missing_keys", "unexpected_keys", "mismatched_keys") and v}
    if problems:
        raise CheckpointError(f"{folder}: weights do not match its config.json ({problems})")
    return model


@dataclass
class Rollout:
    frames: torch.Tensor  # (B, F, 3, H, W) in [0, 1]
    codes: torch.Tensor  # (B, F, 16) sampled dynamics codes
    log_probs: torch.Tensor  # (B, F, 16) their log-probabilities
    windows: list[tuple[int, torch.Tensor]]  # (first generated frame index, context codes (B, 64)) per window
    peak_sequence: int  # longest token sequence the transformer attended over
    seconds: float
    commits: torch.Tensor  # (B, F, 16) the refinement pass that committed each code (all 0 with one pass)


@dataclass
class Dream:
    """N rollouts advanced together; see the module docstring for the token and SWR mechanics.

    ``horizon`` is the most frames :meth:`step` will be asked for; it sizes the static KV cache
    when SWR is off (with SWR the cache holds one window). Each row keeps its own window and
    cache length, so :meth:`reset_rows` can start some rollouts afresh while the others go on
    (what an environment's autoreset needs).

    With ``record=True`` (rollouts) every step's codes and log-probabilities are kept, and
    ``windows`` lists each window's context codes; an environment that runs for ever sets
    ``record=False`` and keeps nothing.

    ``precision`` is the transformer's during decoding (see :mod:`roboalign_env.models.decoding`):
    float32 (exact), bfloat16, or int8 weights (CPU).

    ``guidance`` is the classifier-free guidance scale (None: the model's default, its config's
    ``guidance``). Above 1 every rollout is decoded twice in the same batch, once with its actions
    and once with the "no action" input, and codes are drawn from
    ``uncond + guidance * (cond - uncond)``; both halves are fed the drawn code.

    ``passes`` is the number of refinement passes per frame of a ``refine_passes`` transformer (None: its
    config's; 1: the one-pass prediction); ``commits`` records the pass that committed each code.

    ``window`` is resolved on creation: the model's ``swr_window`` for ``"model"``.
    """

    model: WorldModel
    first_frames: torch.Tensor
    horizon: int
    window: Window = MODEL_WINDOW
    temperature: float = 0.0
    top_k: int | None = None
    generators: list[torch.Generator] | torch.Generator | None = None
    record: bool = True
    precision: str = "float32"
    guidance: float | None = None
    passes: int | None = None
    codes: list[torch.Tensor] = field(default_factory=list)
    commits: list[torch.Tensor] = field(default_factory=list)
    windows: list[tuple[int, torch.Tensor]] = field(default_factory=list)
    log_probs: list[torch.Tensor] = field(default_factory=list)
    peak_sequence: int = 0

    def __post_init__(self):
        tf = self.model.transformer
        self.window = tf.config.resolve_window(self.window)
        frames = self._check_frames(self.first_frames, "first_frames")
        self.guidance = tf.config.resolve_guidance(self.guidance)
        self.passes = tf.config.resolve_passes(self.passes)
        self._halves = 2 if self.guidance != 1 else 1  # guided: rows B..2B-1 decode without actions
        tf.config.check_window_reach(self.window, self.horizon, f"window {self.window}, horizon {self.horizon}")
        capacity = tf.config.sequence_length(self.window if self.window is not None else self.horizon + 1)
        self._decoder = IncrementalDecoder(tf, self.precision)
        self._cache = self._decoder.new_cache(self._halves * len(frames), capacity)
        self._context = torch.empty_like(frames)
        self._skips: list[torch.Tensor] = []
        self._pending = None
        self._frames_in_window = torch.zeros(len(frames), dtype=torch.long)
        self._summed = torch.zeros(self._halves * len(frames), tf.config.action_dim, device=tf.device)
        self._restart(torch.arange(len(frames)), frames)

    @property
    def batch_size(self) -> int:
        return len(self._context)

    def _check_frames(self, frames: torch.Tensor, name: str) -> torch.Tensor:
        size = self.model.image_size
        if not torch.is_tensor(frames) or frames.ndim != 4:
            raise ValueError(f"{name}: expected a tensor (batch, 3, {size}, {size}), got "
                             f"{tuple(frames.shape) if torch.is_tensor(frames) else type(frames).__name__}")
        self.model.tokenizer.check_frames(frames, name)
        return frames.to(self.model.tokenizer.device)

    @torch.no_grad()
    def reset_rows(self, rows: torch.Tensor | list[int], frames: torch.Tensor) -> None:
        """Start rollouts ``rows`` afresh from ``frames`` (len(rows), 3, H, W); the others go on."""
        if self.record:
            raise ValueError("reset_rows needs record=False: recorded codes and windows are batch-wide")
        rows = torch.as_tensor(rows, dtype=torch.long).flatten()
        frames = self._check_frames(frames, "frames")
        if len(frames) != len(rows):
            raise ValueError(f"frames: got {len(frames)} frames for {len(rows)} rows")
        self._restart(rows, frames)

    @torch.no_grad()
    def _restart(self, rows: torch.Tensor, context: torch.Tensor) -> None:
        """Make ``context`` the new window context of ``rows``: encode it, refill their cache with
        its codes but the last, which is fed with the next action (so every row feeds the same
        number of tokens per step)."""
        tok, tf = self.model.tokenizer, self.model.transformer
        self._context[rows] = context.to(self._context.dtype)
        skips = tok.context_features(context)
        if not self._skips:
            self._skips = [torch.empty((self.batch_size, *f.shape[1:]), dtype=f.dtype, device=f.device) for f in skips]
        for full, part in zip(self._skips, skips):
            full[rows] = part.to(full.dtype)
        context_codes = tok.encode_context(context)
        if self.record:
            self.windows.append((len(self.codes), context_codes))
        everyone = len(rows) == self.batch_size and bool((rows == torch.arange(self.batch_size)).all())
        cache_rows = torch.cat([rows + h * self.batch_size for h in range(self._halves)])
        self._cache.lengths[cache_rows] = 0
        context_codes = context_codes.repeat(self._halves, 1)
        embeds = tf.embed_codes(context_codes)
        if tf.config.parallel_frames:  # the whole context now; the next block starts from the learned inputs
            self._decoder(embeds, self._cache, None if everyone else cache_rows, causal=False)
            last = tf.start_codes.to(embeds.dtype).repeat(len(cache_rows), 1, 1)  # own memory: rows are written later
        else:
            self._decoder(embeds[:, :-1], self._cache, None if everyone else cache_rows)
            last = embeds[:, -1:]
        if self._pending is None:
            self._pending = last
        else:
            self._pending[cache_rows] = last
        self._summed[cache_rows] = 0  # anchor_frames: the actions since the new context
        self._frames_in_window[rows] = 1

    @torch.no_grad()
    def step(self, actions: torch.Tensor) -> torch.Tensor:
        """Advance every rollout by one frame under ``actions`` (B, 7); return frames (B, 3, H, W)."""
        tf = self.model.transformer
        tf.check_actions(actions)
        if actions.shape != (self.batch_size, tf.config.action_dim):
            raise ValueError(f"actions: expected shape ({self.batch_size}, {tf.config.action_dim}), got {tuple(actions.shape)}")
        if self.window is not None:
            full = (self._frames_in_window == self.window).nonzero().flatten()
            if len(full):
                self._restart(full, self._last_frame[full])
        elif int(self._frames_in_window.max()) == self.horizon + 1:
            raise ValueError(f"this dream was sized for horizon={self.horizon} frames without SWR; "
                             "make a new one with a longer horizon or turn SWR on")
        actions = actions.to(tf.device).repeat(self._halves, 1)
        null = torch.arange(len(actions), device=tf.device) >= self.batch_size
        slots, code_terms = tf.action_inputs(actions, null)
        if tf.config.anchor_frames:
            self._summed += tf.normalized_actions(actions)
            steps = (self._frames_in_window - 1).to(tf.device).repeat(self._halves)
            code_terms = code_terms + tf.anchor_inputs(self._summed, steps, null)
        commits = None
        if tf.config.parallel_frames:
            codes, log_probs, commits = self._sample_block(torch.cat([slots, self._pending + code_terms[:, None]], 1))
            if not tf.config.anchor_frames:  # an anchor_frames block keeps the start inputs
                self._pending = tf.embed_codes(codes.repeat(self._halves, 1))  # the next block's input
            if tf.config.markov_frames:  # the next block sees the context only: forget this one
                self._cache.lengths[:] = tf.config.context_tokens
        else:
            codes, log_probs = self._sample_one_by_one(torch.cat([self._pending, slots], 1), code_terms)
        if self.record:
            self.codes.append(codes)
            self.log_probs.append(log_probs)
            self.commits.append(torch.zeros_like(codes) if commits is None else commits)
        self._last_frame = self.model.tokenizer.decode_dynamics(codes, self._context, self._skips).float().clamp(0, 1)
        self._frames_in_window += 1
        return self._last_frame

    def _sample_one_by_one(self, embeds: torch.Tensor, code_terms: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Sample a frame's codes one per forward pass, starting from ``embeds`` (the previous frame's
        last code and the action slots); keep the new last code pending for the next step."""
        tf = self.model.transformer
        codes, log_probs = [], []
        for _ in range(tf.config.dynamics_tokens):
            code, log_prob = self._sample(self._forward(embeds))
            codes.append(code)
            log_probs.append(log_prob)
            embeds = tf.embed_codes(code.repeat(self._halves)[:, None]) + code_terms[:, None]
        self._pending = embeds  # the last code is fed with the next action
        return torch.stack(codes, 1), torch.stack(log_probs, 1)

    def _sample_block(self, block: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Sample all of a frame's codes (``parallel_frames``): codes, log-probabilities and the pass that
        committed each. One forward pass over its block, then, with ``passes`` > 1, one more per pass, each
        showing the block the codes committed so far (:func:`~roboalign_env.models.transformer.commit_mask`
        picks what a pass commits); every pass but the last is taken out of the cache again."""
        n = self.model.transformer.config.dynamics_tokens
        filled = self._cache.lengths.clone()
        codes, log_probs = self._sample(self._forward(block, keep=n, causal=False))
        commits = torch.zeros_like(codes)
        hidden = ~commit_mask(torch.ones_like(codes, dtype=torch.bool), log_probs.exp(), 0, self.passes)
        for k in range(1, self.passes):
            self._cache.lengths.copy_(filled)
            shown = block.clone()
            shown[:, -n:] += self.model.transformer.reveal_inputs(codes, ~hidden).repeat(self._halves, 1, 1)
            drawn, drawn_log_probs = self._sample(self._forward(shown, keep=n, causal=False))
            commit = commit_mask(hidden, drawn_log_probs.exp(), k, self.passes)
            codes = torch.where(commit, drawn, codes)
            log_probs = torch.where(commit, drawn_log_probs, log_probs)
            commits = torch.where(commit, k, commits)
            hidden &= ~commit
        return codes, log_probs, commits

    def _sample(self, logits: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if self._halves == 2:
            cond, uncond = logits.chunk(2)
            logits = uncond + self.guidance * (cond - uncond)
        return sample_codes(logits, self.temperature, self.top_k, self.generators)

    def _forward(self, embeds: torch.Tensor, **kw) -> torch.Tensor:
        head = self._decoder(embeds, self._cache, **kw)
        self.peak_sequence = max(self.peak_sequence, self._cache.length)
        return self.model.transformer.code_logits(head)
