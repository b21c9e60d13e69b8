"""The GRPO objective: group-normalized advantages, the clipped surrogate with a k3 KL, and the
teacher-forced log-probabilities of a rollout's sampled codes (one pass per SWR window and refinement pass)."""

from __future__ import annotations

from typing import Callable

import torch

from roboalign_env.models.transformer import code_log_probs


def group_advantages(rewards: torch.Tensor, group_size: int, eps: float = 1e-4) -> torch.Tensor:
    """(N,) rewards of N = prompts x G rollouts (grouped contiguously) -> (N,) normalized advantages."""
    if rewards.ndim != 1 or len(rewards) % group_size:
        raise ValueError(f"rewards: expected (prompts * {group_size},), got {tuple(rewards.shape)}")
    r = rewards.float().view(-1, group_size)
    std = r.std(1, keepdim=True) if group_size > 1 else torch.zeros_like(r[:, :1])
    centered = r - r.mean(1, keepdim=True)
    # a group whose rollouts all score the same carries no signal: advantage 0 (never 0 / 0)
    return torch.where(std > 0, centered / (std + eps), torch.zeros_like(centered)).flatten()


def grpo_loss(log_probs: torch.Tensor, old_log_probs: torch.Tensor, ref_log_probs: torch.Tensor | None,
              advantages: torch.Tensor, clip: float = 0.2, beta: float = 0.04) -> tuple[torch.Tensor, dict]:
    """Clipped surrogate with k3 KL; log-probs (N, ...) per token, advantages (N,). Returns (loss, metrics)."""
    n = log_probs.shape[0]
    lp, old = log_probs.reshape(n, -1), old_log_probs.reshape(n, -1).to(log_probs.dtype)
    adv = advantages.reshape(n, 1).to(lp.dtype)
    ratio = torch.exp(lp - old)
    surr = torch.minimum(ratio * adv, ratio.clamp(1 - clip, 1 + clip) * adv)
    if ref_log_probs is not None and beta:
        delta = ref_log_probs.reshape(n, -1).to(lp.dtype) - lp
        kl = torch.exp(delta) - delta - 1
    else:
        kl = torch.zeros_like(lp)
    per_token = surr - beta * kl
    loss = -per_token.mean(1).mean()
    with torch.no_grad():
        clipped = ((ratio - 1).abs() > clip).float().mean()
    return loss, {"kl": kl.detach().mean().item(), "clip_fraction": clipped.item(),
                  "ratio_mean": ratio.detach().mean().item(), "surrogate": surr.detach().mean().item()}


def rollout_log_probs(model: Callable, windows: list[tuple[int, torch.Tensor]], actions: torch.Tensor,
                      codes: torch.Tensor, temperature: float = 1.0, guidance: float = 1.0,
                      commits: torch.Tensor | None = None) -> torch.Tensor:
    """Teacher-forced log-probabilities (B, F, 16) of a rollout's codes, one pass per SWR window and
    refinement pass.

    ``model`` is the transformer (or its DDP wrapper): ``model(context_codes, actions, codes)`` gives
    logits (``guidance``: the scale the rollout was sampled with). Window ``i`` starts at generated
    frame ``windows[i][0]`` with context ``windows[i][1]``. ``commits`` (B, F, 16) is the rollout's
    record of the refinement pass that committed each code (:func:`code_log_probs` replays them).
    """
    t = temperature if temperature > 0 else 1.0
    bounds = [s for s, _ in windows] + [codes.shape[1]]
    out = []
    for (start, context), end in zip(windows, bounds[1:]):
        if end <= start:
            continue
        out.append(code_log_probs(model, context, actions[:, start:end], codes[:, start:end], t, guidance,
                                  None if commits is None else commits[:, start:end]))
    return torch.cat(out, 1)
