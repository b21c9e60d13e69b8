"""The controllability targets a world model is held to, and the rule that chooses between two checkpoints.

The numbers come from an ``eval-control`` report's headline (:func:`roboalign_env.eval.control.headline`).
No model reaches the targets yet, and changes tend to trade one number for another (more training picks the
commanded direction more often and tracks the recorded actions worse). So that a trade is decided the same
way every time, each control number's *shortfall* is how far it is from its target, as a fraction of the way
from an uninformed reference (chance, actions ignored, nothing moves) to the target, clipped to [0, 1]:
0 when the target is met, 1 at or below the reference. Their sum (0 to 6) is the checkpoint's control
shortfall. Fidelity comes first: a candidate replaces the incumbent only if it meets every frame target the
incumbent meets and lowers the control shortfall by more than :data:`SELECTION_MARGIN`.
"""

from __future__ import annotations

from dataclasses import dataclass

DIRECTION_TARGET = 0.9
SEPARATION_TARGET = 0.6
GRIPPER_TARGET = 0.5
SWAP_TARGET = 0.5
"""End-effector error with the episode's own actions over the error with another episode's."""
TRACKING_TARGET_CM = 6.0
MOVING_PSNR_GAIN_DB = 5.0
"""Moving-pixel PSNR over nothing-moves."""
PSNR_TARGET_DB = 22.0
SELECTION_MARGIN = 0.1
"""How much lower a candidate's control shortfall must be. Over 32 starts the direction accuracy alone has a
binomial standard error of about 0.035, 0.05 of its range from chance to target: 0.1 is two of them."""


@dataclass(frozen=True)
class Target:
    """One control number: where it is read in the headline, its target and its uninformed reference."""

    value: float | None
    target: float
    reference: float

    def shortfall(self) -> float | None:
        """0 at or past the target, 1 at or past the reference (either direction of better); None when the
        report could not measure the number (for example no start had another episode to swap in)."""
        if self.value is None or self.value != self.value:
            return None
        span = self.target - self.reference
        return min(1.0, max(0.0, (self.target - self.value) / span))


def control_targets(headline: dict) -> dict[str, Target]:
    """The six control numbers of a report with a state probe (tracking and the end-effector swap need one)."""
    missing = [k for k in ("swap_eef_ratio_own_over_other", "tracking_eef_cm") if k not in headline]
    if missing:
        raise ValueError(f"headline: {missing} missing; the control shortfall needs a report run with a state "
                         "probe (eval-control --probe, the default)")
    moving = headline["moving_psnr"]
    return {
        "direction": Target(headline["direction_accuracy"], DIRECTION_TARGET, 1 / 6),
        "separation": Target(headline["separation_ratio_median"], SEPARATION_TARGET, 0.0),
        "gripper": Target(headline["gripper_separation_ratio_median"], GRIPPER_TARGET, 0.0),
        "swap": Target(headline["swap_eef_ratio_own_over_other"], SWAP_TARGET, 1.0),
        "tracking": Target(headline["tracking_eef_cm"]["dream"], TRACKING_TARGET_CM,
                           headline["tracking_eef_cm"]["nothing_moves"]),
        "moving_psnr": Target(moving["dream"], moving["nothing_moves"] + MOVING_PSNR_GAIN_DB, moving["nothing_moves"]),
    }


def control_shortfall(headline: dict) -> dict[str, float | None]:
    """Each control number's shortfall and their sum (``total``: 0 when every target is met, 6 at worst;
    None when a number is missing)."""
    parts = {name: t.shortfall() for name, t in control_targets(headline).items()}
    total = None if None in parts.values() else sum(parts.values())
    return {**parts, "total": total}


def frame_targets_met(headline: dict) -> dict[str, bool]:
    """Whole-frame fidelity: SSIM above nothing-moves, PSNR at least :data:`PSNR_TARGET_DB`."""
    return {"ssim": headline["ssim"]["dream"] > headline["ssim"]["nothing_moves"],
            "psnr": headline["psnr"]["dream"] >= PSNR_TARGET_DB}


def prefer(candidate: dict, incumbent: dict, margin: float = SELECTION_MARGIN) -> bool:
    """Whether the candidate's report (headline) should replace the incumbent's: it keeps every frame target
    the incumbent meets and its control shortfall is lower by more than ``margin``."""
    kept = frame_targets_met(candidate)
    if any(met and not kept[name] for name, met in frame_targets_met(incumbent).items()):
        return False
    totals = control_shortfall(candidate)["total"], control_shortfall(incumbent)["total"]
    if None in totals:
        raise ValueError("prefer: a report lacks a control number (its shortfall is None); compare reports "
                         "that measured all six")
    return totals[0] < totals[1] - margin
