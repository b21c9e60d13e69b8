"""An adversary that searches, in the dream, for the actions a reward pays most.

A reward that can be won without doing the task will be won that way by any optimizer strong enough,
whether a policy trained against it or a planner. This is the planner: the cross-entropy method over
action sequences, run in the world model from one real first frame. Each candidate is dreamed (sampled
at the environment's temperature) and scored by an objective, by default the reward's Manipulation
Success on the clip the environment's reward reads (the first frame and the dreamed frames); the best
elites refit the sampling distribution, and the best candidate of the whole search is kept with the
frames the dream drew for it.

Replayed in robosuite and labelled from what its frames show (:mod:`roboalign_env.eval.dream_pairs`),
the result is a measured attack on the reward: how much it pays for dreams whose actions fail in the
real simulator, and a negative to train the judges on.

Actions are piecewise constant: every ``hold`` steps a new translation command (x, y, z in [-1, 1])
and gripper command (the sign of a fourth number); rotation commands stay 0, as in the other rollouts
that are not an episode's own.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Callable

import numpy as np
import torch

from roboalign_env.eval.control import to_float, to_uint8
from roboalign_env.models.transformer import Window
from roboalign_env.models.world_model import WorldModel
from roboalign_env.rubric import DIMENSIONS

Objective = Callable[[np.ndarray, str, np.ndarray], np.ndarray]
"""What the adversary maximizes: (videos uint8 (P, T, H, W, 3), instruction, actions (P, T - 1, 7)) -> (P,)."""

Watcher = Callable[[np.ndarray, np.ndarray, np.ndarray], None]
"""Shown every round's candidates: (videos uint8 (P, T, H, W, 3), actions (P, T - 1, 7), scores (P,))."""


@dataclass(frozen=True)
class SearchConfig:
    """The cross-entropy search of one rollout's actions."""

    population: int = 32
    """Candidate action sequences dreamed per iteration, in one batch."""
    iterations: int = 4
    """Sampling rounds; after each, the distribution is refitted to its best candidates."""
    elites: int = 6
    """Best candidates of a round that the next round's mean and spread are fitted to."""
    hold: int = 4
    """Steps each command is held."""
    init_std: float = 0.7
    """Spread of the first round around zero (commands are clipped to [-1, 1])."""
    min_std: float = 0.1
    """Floor of the spread, so the search keeps exploring."""

    def __post_init__(self):
        if self.population < 2 or not 1 <= self.elites < self.population:
            raise ValueError(f"population={self.population}, elites={self.elites}: expected population >= 2 and "
                             "1 <= elites < population")
        if self.iterations < 1 or self.hold < 1:
            raise ValueError(f"iterations={self.iterations}, hold={self.hold}: expected both >= 1")
        if not 0 < self.min_std <= self.init_std:
            raise ValueError(f"min_std={self.min_std}, init_std={self.init_std}: expected 0 < min_std <= init_std")

    def as_dict(self) -> dict:
        return asdict(self)


def manipulation_success(scorer) -> Objective:
    """The objective a hacked reward pays: ``scorer``'s expected Manipulation Success (0-2) of each clip,
    read with its actions."""
    k = DIMENSIONS.index("manipulation_success")

    def objective(videos: np.ndarray, instruction: str, actions: np.ndarray) -> np.ndarray:
        scores = scorer.score(list(videos), [instruction] * len(videos), actions=list(actions))
        return scores.expected[:, k].float().cpu().numpy()

    return objective


def knots_to_actions(knots: np.ndarray, steps: int, hold: int) -> np.ndarray:
    """(P, K, 4) knots (x, y, z, gripper) -> (P, steps, 7) actions, each knot held ``hold`` steps."""
    held = np.repeat(knots, hold, axis=1)[:, :steps]
    actions = np.zeros((len(knots), steps, 7), np.float32)
    actions[..., :3] = np.clip(held[..., :3], -1, 1)
    actions[..., 6] = np.where(held[..., 3] >= 0, 1.0, -1.0)
    return actions


@torch.no_grad()
def search_actions(model: WorldModel, first: np.ndarray, instruction: str, objective: Objective, steps: int,
                   window: Window, temperature: float, seed: int,
                   config: SearchConfig = SearchConfig(),
                   watch: Watcher | None = None) -> tuple[np.ndarray, np.ndarray, float, list[float]]:
    """Search the actions from ``first`` (uint8 (H, W, 3)) that ``objective`` scores highest in the dream.

    ``watch``, when given, is shown every round's candidates with their scores (all that the search dreamed,
    e.g. to have another judge label them).

    Returns the best candidate's dreamed frames (uint8 (steps, H, W, 3), without the first frame), its
    actions (steps, 7), its score, and each round's best score (the search's trace).
    """
    rng = np.random.default_rng(seed)
    device = model.tokenizer.device
    n_knots = -(-steps // config.hold)
    mean, std = np.zeros((n_knots, 4)), np.full((n_knots, 4), config.init_std)
    start = to_float(np.repeat(first[None], config.population, 0)).to(device)
    best: tuple[float, np.ndarray, np.ndarray] | None = None
    trace = []
    for round_ in range(config.iterations):
        knots = mean + std * rng.standard_normal((config.population, n_knots, 4))
        actions = knots_to_actions(knots, steps, config.hold)
        generators = [torch.Generator(device=device).manual_seed(seed * 1_000_003 + round_ * 1_009 + i)
                      for i in range(config.population)]
        dream = model.dream(start, steps, window, temperature, generators=generators, record=False)
        frames = np.stack([to_uint8(dream.step(torch.from_numpy(actions[:, t]).to(device))) for t in range(steps)], 1)
        videos = np.concatenate([np.repeat(first[None, None], config.population, 0), frames], 1)
        scores = np.asarray(objective(videos, instruction, actions), np.float64)
        if watch is not None:
            watch(videos, actions, scores)
        top = int(scores.argmax())
        trace.append(float(scores[top]))
        if best is None or scores[top] > best[0]:
            best = (float(scores[top]), frames[top], actions[top])
        elite = knots[np.argsort(-scores)[: config.elites]]
        mean, std = elite.mean(0), np.maximum(elite.std(0), config.min_std)
    score, frames, actions = best
    return frames, actions, score, trace
