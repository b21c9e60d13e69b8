"""GRPO rewards, picked by name from ``REWARDS``.

A reward builder takes the run's :class:`~roboalign_env.training.grpo.trainer.GRPOConfig` and a
callable returning the current student (``None`` for rewards that do not read it) and returns the
reward function ``reward(frames, codes, prompt) -> (N,)`` over N rollouts: ``frames`` (N, F, 3, H, W)
in [0, 1], ``codes`` the sampled dynamics codes, ``prompt`` the repeated prompt dict (``first``,
``real``, ``actions``, ``instructions``). ``register_reward`` adds one.

- ``student`` (RoboAlign-R1): ``sum_k w_k * student_k / 10`` on (first frame + rollout, instruction);
- ``rlvr`` (the RLVR-World-style verifiable baseline): ``-(MAE + perceptual)`` against the real frames;
- ``hybrid``: ``student + rlvr_weight * rlvr``.
"""

from __future__ import annotations

from typing import Callable

import torch

from roboalign_env.rubric import aggregate, check_weights

RewardFn = Callable[[torch.Tensor, torch.Tensor, dict], torch.Tensor]
StudentGetter = Callable[[], torch.nn.Module]


def student_reward(student: StudentGetter, weights) -> RewardFn:
    """The current student's weighted aggregate of the video the rollout shows (first frame + frames)."""
    w = torch.tensor(check_weights(weights, "weights"), dtype=torch.float32)

    def reward(frames, codes, prompt) -> torch.Tensor:
        video = torch.cat([prompt["first"][:, None], frames.float().cpu()], 1)
        expected = student().score(video, prompt["instructions"]).expected.float().cpu()
        return aggregate(expected, w)

    return reward


def rlvr_reward(metric: str = "st-lpips") -> RewardFn:
    """-(MAE + perceptual distance ``metric``) against the real frames, mean over frames."""
    from roboalign_env.eval.metrics import load_perceptual, perceptual

    load_perceptual(metric)

    def reward(frames, codes, prompt) -> torch.Tensor:
        pred, real = frames.float().cpu().clamp(0, 1), prompt["real"].float()
        mae = (pred - real).abs().mean(dim=(2, 3, 4))
        lp = perceptual(pred.flatten(0, 1), real.flatten(0, 1), metric).view(mae.shape)
        return -(mae + lp).mean(1)

    return reward


def weighted_sum(first: RewardFn, second: RewardFn, weight: float) -> RewardFn:
    """``first + weight * second``."""

    def reward(frames, codes, prompt) -> torch.Tensor:
        return first(frames, codes, prompt) + weight * second(frames, codes, prompt)

    return reward


def _student(cfg, student: StudentGetter | None) -> RewardFn:
    if student is None:
        raise ValueError(f"reward {cfg.reward!r}: the student reward checkpoint is needed (--student)")
    return student_reward(student, cfg.weights)


def _hybrid(cfg, student: StudentGetter | None) -> RewardFn:
    if not cfg.rlvr_weight:
        raise ValueError("reward 'hybrid': set rlvr_weight (--rlvr-weight) to the RLVR term's non-zero weight")
    return weighted_sum(_student(cfg, student), rlvr_reward(cfg.perceptual), cfg.rlvr_weight)


REWARDS: dict[str, Callable[..., RewardFn]] = {
    "student": _student,
    "rlvr": lambda cfg, student: rlvr_reward(cfg.perceptual),
    "hybrid": _hybrid,
}
"""Reward builders by name."""
READS_STUDENT = {"student", "hybrid"}
"""Rewards that pay the student's scores: online re-distillation keeps that student honest."""


def register_reward(name: str, builder: Callable[..., RewardFn], reads_student: bool = False) -> None:
    """Add a reward builder under ``name`` (``reads_student``: turn on online distillation for it)."""
    REWARDS[name] = builder
    if reads_student:
        READS_STUDENT.add(name)


def build_reward(cfg, student: StudentGetter | None = None) -> RewardFn:
    """The reward ``cfg.reward`` names, built for this run."""
    if cfg.reward not in REWARDS:
        raise ValueError(f"reward {cfg.reward!r}; expected one of {sorted(REWARDS)}")
    return REWARDS[cfg.reward](cfg, student)
