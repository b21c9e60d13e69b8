"""GRPO prompts: (first frame, action sequence, instruction) windows of real episodes.

Post-training draws its prompts from a bench split's episodes; evaluation draws held-out ones the
same way, so both read them through :func:`load_prompts`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from einops import rearrange

from roboalign_env.data.episodes import load_episode, read_manifest
from roboalign_env.data.splits import HELDOUT_SOURCE, split_of


@dataclass
class Prompts:
    """Prompt pool: real frames (E, L+1, H, W, 3) uint8 and actions (E, L, 7) of episodes, the allowed
    start frames per episode, and instruction templates. A prompt is (episode, start, instruction)."""

    frames: np.ndarray
    actions: np.ndarray
    starts: list[np.ndarray]
    instructions: list[list[str]]
    episode_ids: list[str]
    horizon: int
    pool: np.ndarray = field(init=False)

    def __post_init__(self):
        self.pool = np.array([(e, s) for e, st in enumerate(self.starts) for s in st], np.int64).reshape(-1, 2)
        if not len(self.pool):
            raise ValueError("no prompts: every episode is shorter than the horizon")

    def __len__(self) -> int:
        return len(self.pool)

    def take(self, picks: np.ndarray, rng: np.random.Generator | None = None) -> dict:
        """Prompts ``pool[picks]``: first (P, 3, H, W) and real (P, F, 3, H, W) frames in [0, 1],
        actions (P, F, 7), instructions (a random template when ``rng`` is given, else the first)."""
        e, s = self.pool[picks, 0], self.pool[picks, 1]
        idx = s[:, None] + np.arange(self.horizon + 1)
        frames = rearrange(torch.from_numpy(self.frames[e[:, None], idx]), "p t h w c -> p t c h w").float() / 255
        actions = torch.from_numpy(self.actions[e[:, None], idx[:, :-1]]).float()
        texts = [self.instructions[i][int(rng.integers(len(self.instructions[i])))] if rng is not None
                 else self.instructions[i][0] for i in e]
        return {"first": frames[:, 0], "real": frames[:, 1:], "actions": actions, "instructions": texts,
                "episodes": [self.episode_ids[i] for i in e], "starts": s.tolist()}


def allowed_starts(num_steps: int, horizon: int, first_success: int | None) -> np.ndarray:
    """Start frames whose window of ``horizon`` steps contains the moment of first success (at an
    offset of 2..horizon-2), so the rollout must show the manipulation completing; every start when
    the episode never succeeds."""
    last = num_steps - horizon
    if last < 0:
        return np.zeros(0, np.int64)
    if first_success is None:
        return np.arange(0, last + 1)
    lo, hi = max(0, first_success - horizon + 2), min(last, max(0, first_success - 2))
    return np.arange(lo, max(lo, hi) + 1)


def load_prompts(episodes: str | Path, split: str, horizon: int, heldout_source: str = HELDOUT_SOURCE,
                 successful_only: bool = True, limit: int | None = None) -> Prompts:
    """Prompts from one bench split's episodes (``split_of`` with ``heldout_source`` held out).

    ``successful_only``: keep episodes whose real run succeeds. On a failure-mode episode a faithful
    model must show the failure, so a reward for manipulation success there pays for hallucination;
    on successful ones a higher score means the dream shows what the robot really did.
    """
    rows = [r for r in read_manifest(episodes) if split_of(r["episode_id"], r["source"], heldout_source) == split
            and (r.get("success") or not successful_only)]
    rows = sorted(rows, key=lambda r: r["episode_id"])[:limit]
    if not rows:
        raise ValueError(f"{episodes}: no {'successful ' if successful_only else ''}episodes in split {split!r}")
    frames, actions, starts, texts, ids = [], [], [], [], []
    for r in rows:
        ep = load_episode(Path(episodes) / r["path"])
        frames.append(ep.frames)
        actions.append(ep.actions)
        starts.append(allowed_starts(ep.num_steps, horizon, r.get("first_success_step")))
        texts.append(list(ep.meta.get("instruction_templates") or [ep.meta["instruction"]]))
        ids.append(ep.episode_id)
    return Prompts(np.stack(frames), np.stack(actions).astype(np.float32), starts, texts, ids, horizon)
