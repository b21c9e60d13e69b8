"""The paper's six-dimension rubric: the one place its dimensions, ranges and aggregate are defined.

Every scorer (the oracle, the teacher judge, the student reward, the state probe, an optional VLM)
reports one level per dimension in ``0..MAX_SCORES[k]``; the aggregate is their weighted sum divided
by ``TOTAL`` (10), so default weights of 1 give a number in [0, 1].
"""

from __future__ import annotations

from typing import Sequence

DIMENSIONS = (
    "instruction_following",
    "manipulation_success",
    "action_outcome_consistency",
    "temporal_consistency",
    "contact_realism",
    "physics_adherence",
)
MAX_SCORES = (3, 2, 1, 1, 1, 2)
"""The paper's ranges, in the order of ``DIMENSIONS``."""
TOTAL = sum(MAX_SCORES)
"""The largest aggregate before normalization (10)."""
SHORT_NAMES = dict(zip(DIMENSIONS, ("IF", "MS", "AOC", "TC", "CR", "PA")))
"""Each dimension's abbreviation."""


def check_weights(weights: Sequence[float], what: str = "weights") -> tuple[float, ...]:
    """``weights`` as a tuple of 6 finite floats (one per dimension), or a ``ValueError`` naming ``what``."""
    try:
        values = tuple(float(w) for w in weights)
    except (TypeError, ValueError):
        values = ()
    if len(values) != len(DIMENSIONS) or not all(abs(w) != float("inf") and w == w for w in values):
        raise ValueError(f"{what}: expected {len(DIMENSIONS)} finite numbers (one per dimension: "
                         f"{', '.join(SHORT_NAMES.values())}), got {tuple(weights) if hasattr(weights, '__iter__') else weights!r}")
    return values


def aggregate(scores, weights=None):
    """Normalized aggregate ``sum_k w_k * score_k / TOTAL`` over the last axis of ``scores``.

    ``scores`` is a torch tensor or numpy array whose last axis holds the six dimensions (levels or
    expected scores); ``weights`` (six numbers, or a tensor/array of shape (6,)) default to 1: the
    paper's aggregate out of 10, divided by 10.
    """
    if scores.shape[-1] != len(DIMENSIONS):
        raise ValueError(f"scores: expected a last axis of {len(DIMENSIONS)} dimensions, got shape {tuple(scores.shape)}")
    if weights is None:
        return scores.sum(-1) / TOTAL
    if not hasattr(weights, "shape"):
        weights = check_weights(weights)
    if hasattr(scores, "device"):  # torch
        import torch

        dtype = scores.dtype if scores.is_floating_point() else torch.float32
        weights = torch.as_tensor(weights, dtype=dtype, device=scores.device)
    return (scores * weights).sum(-1) / TOTAL
