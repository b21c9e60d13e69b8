"""The environment's reward: the student judge's six scores of each episode's frames so far.

Every step the student scores, per environment, the most recent ``frames`` frames (its initial
frame is the episode's first frame, so the judge always knows where the episode started), with the
actions that led to them, which a student that reads actions (``read_actions``) compares with what
the frames show; each frame is encoded once, when it arrives (:class:`JudgeReward`). The
weighted aggregate ``phi = sum_k w_k * score_k / 10`` (default weights 1: the normalized
six-dimension aggregate in [0, 1]) becomes the reward in one of three modes:

- ``potential`` (default): ``phi_t - phi_{t-1}``, with ``phi_0`` scored on the first frame alone.
  Potential-based shaping: the episode's return telescopes to ``phi_T - phi_0``, so a policy is
  rewarded for what it changed, not for starting in a well-judged scene.
- ``absolute``: ``phi_t`` every step.
- ``terminal``: ``phi_T`` on the last step of an episode, 0 before.

An episode is judged successful when the student's expected Manipulation Success, as a fraction
of its maximum (2), reaches ``success_threshold``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, Sequence

import numpy as np
import torch

from roboalign_env.models.scoring import ACTION_DIM
from roboalign_env.rubric import DIMENSIONS, MAX_SCORES, aggregate, check_weights

RewardMode = Literal["potential", "absolute", "terminal"]
MANIPULATION = DIMENSIONS.index("manipulation_success")


def is_int(value) -> bool:
    """An int (Python or numpy), not a bool."""
    return isinstance(value, (int, np.integer)) and not isinstance(value, (bool, np.bool_))


def is_real(value) -> bool:
    """A real number (Python or numpy), not a bool, not NaN."""
    return isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(value, (bool, np.bool_)) \
        and value == value


def expect(ok: bool, name: str, value, expected: str) -> None:
    """A settings check: ``ValueError`` naming the argument, what it got and what was expected."""
    if not ok:
        raise ValueError(f"{name}={value!r}: expected {expected}")


@dataclass(frozen=True)
class RewardConfig:
    mode: RewardMode = "potential"
    """potential (change of the weighted aggregate), absolute (the aggregate) or terminal (at the end only)."""
    weights: tuple[float, ...] = (1.0,) * len(MAX_SCORES)
    """One weight per dimension (IF, MS, AOC, TC, CR, PA); the aggregate is sum w_k * score_k / 10."""
    frames: int = 16
    """How many of the most recent frames the student scores each step."""
    success_threshold: float = 0.8
    """Terminate when expected Manipulation Success / 2 reaches this."""

    def __post_init__(self):
        if self.mode not in ("potential", "absolute", "terminal"):
            raise ValueError(f"reward mode {self.mode!r}: expected potential, absolute or terminal")
        object.__setattr__(self, "weights", check_weights(self.weights, "reward weights"))
        expect(is_int(self.frames) and self.frames >= 2, "reward frames", self.frames, "an int >= 2")
        expect(is_real(self.success_threshold) and 0 <= self.success_threshold <= 1, "success_threshold",
               self.success_threshold, "a number in [0, 1] (the share of the maximum Manipulation Success that "
               "ends an episode)")


class JudgeReward:
    """Per-environment judge state and the student's scores of it, batched over environments.

    The judge scores ``[initial frame, last frames...]`` every step, but it does not re-encode
    them: a frame's token depends only on the frame and its previous frame (see
    :class:`~roboalign_env.models.scoring.FrameEncoder`), so each new frame is encoded once, and
    only the temporal Transformer runs over the window. Each frame keeps two tokens: against its
    previous frame, and against itself (what the window's first frame gets). The instruction is
    encoded once per episode.
    """

    def __init__(self, student, num_envs: int, config: RewardConfig, autocast: bool = False):
        if config.frames > student.config.max_frames:
            raise ValueError(f"reward frames {config.frames} > the student's max_frames {student.config.max_frames}")
        self.student, self.config, self.autocast = student.eval(), config, autocast
        self.encoder = student.tower.frames
        device = next(student.parameters()).device
        self.weights = torch.tensor(config.weights, dtype=torch.float32, device=device)
        self.length = torch.zeros(num_envs, dtype=torch.long, device=device)
        self.phi = torch.zeros(num_envs, device=device)
        self.words = self.initial = self.tokens = self.alone = self.last = self.actions = None  # sized at the first reset

    @torch.no_grad()
    def reset_rows(self, rows: Sequence[int], frames: torch.Tensor, instructions: Sequence[str]) -> torch.Tensor:
        """Start episodes ``rows`` at ``frames`` (b, 3, H, W) in [0, 1]; return their (b, 6) scores."""
        rows = torch.as_tensor(rows, dtype=torch.long)
        with self._autocast():
            embedded = self.encoder.embed(frames)
            alone = self.encoder.tokens(embedded, embedded).float()  # the first frame is its own previous frame
            words = self.student.text_features(self.student.encode_text(list(instructions)).to(frames.device)).float()
        embedded = embedded.float()
        if self.words is None:
            n, f, dim = len(self.length), self.config.frames, alone.shape[-1]
            zeros = dict(dtype=torch.float32, device=frames.device)
            self.words = torch.zeros(n, words.shape[-1], **zeros)
            self.initial = torch.zeros(n, dim, **zeros)
            self.tokens = torch.zeros(n, f, dim, **zeros)
            self.alone = torch.zeros(n, f, dim, **zeros)
            self.last = torch.zeros(n, *embedded.shape[1:], **zeros)
            self.actions = torch.zeros(n, f, ACTION_DIM, **zeros)  # slot k: the action that led to window frame k
        self.words[rows], self.initial[rows], self.last[rows] = words, alone, embedded
        self.actions[rows] = 0
        self.tokens[rows], self.alone[rows] = 0, 0
        self.tokens[rows, 0] = self.alone[rows, 0] = alone
        self.length[rows] = 1
        scores = self._score(rows)
        self.phi[rows] = self._aggregate(scores)
        return scores

    @torch.no_grad()
    def step(self, frames: torch.Tensor, actions: torch.Tensor, truncating: torch.Tensor
             ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Append every environment's new frame (N, 3, H, W) and the action (N, 7) that led to it;
        ``truncating`` (N,) marks episodes that hit their step limit this step (the terminal mode
        pays them, and those judged successful). Returns (reward (N,), scores (N, 6), success (N,))."""
        n = len(frames)
        with self._autocast():
            embedded = self.encoder.embed(frames)
            embedded = embedded.float()
            both = self.encoder.tokens(torch.cat([embedded, embedded]), torch.cat([self.last, embedded])).float()
        full = self.length >= self.config.frames
        if full.any():
            self.tokens[full] = torch.roll(self.tokens[full], -1, dims=1)
            self.alone[full] = torch.roll(self.alone[full], -1, dims=1)
            self.actions[full] = torch.roll(self.actions[full], -1, dims=1)
        slot = self.length.clamp(max=self.config.frames - 1)
        everyone = torch.arange(n)
        self.tokens[everyone, slot], self.alone[everyone, slot] = both[:n], both[n:]
        self.actions[everyone, slot] = actions.to(self.actions)
        self.last = embedded
        self.length += 1
        scores = self._score(slice(None))
        phi = self._aggregate(scores)
        success = self.success(scores)
        mode = self.config.mode
        if mode == "potential":
            reward = phi - self.phi
        elif mode == "absolute":
            reward = phi
        else:
            reward = torch.where(truncating.to(phi.device) | success, phi, torch.zeros_like(phi))
        self.phi = phi
        return reward, scores, success

    def success(self, scores: torch.Tensor) -> torch.Tensor:
        return scores[:, MANIPULATION] / MAX_SCORES[MANIPULATION] >= self.config.success_threshold

    def state_tensors(self) -> list[torch.Tensor]:
        """The per-environment tensors (what an environment's memory per env counts)."""
        return [self.words, self.initial, self.tokens, self.alone, self.last, self.actions, self.length, self.phi]

    def _aggregate(self, scores: torch.Tensor) -> torch.Tensor:
        return aggregate(scores, self.weights)

    def _autocast(self):
        return torch.autocast(self.weights.device.type, torch.bfloat16, enabled=self.autocast)

    def _score(self, rows: torch.Tensor | slice) -> torch.Tensor:
        """Expected scores (b, 6) of ``rows``' windows: the initial frame's token, then the
        window's, the first of them against itself, and the actions between the window's frames."""
        count = self.length[rows].clamp(max=self.config.frames)
        mask = torch.arange(self.config.frames, device=count.device)[None] < count[:, None]
        window = torch.cat([self.alone[rows, :1], self.tokens[rows, 1:]], 1)
        tokens = torch.cat([self.initial[rows, None], window], 1)
        with self._autocast():
            scores = self.student.score_tokens(tokens, mask, self.words[rows], self.actions[rows, 1:], mask[:, 1:])
        return scores.expected.float()
