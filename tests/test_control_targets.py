"""The control shortfall and the rule that chooses between two eval-control reports."""

import pytest

from roboalign_env.eval.control_targets import SELECTION_MARGIN, control_shortfall, frame_targets_met, prefer


def headline(direction=0.9, separation=0.6, gripper=0.5, swap=0.5, tracking=6.0, moving=13.0, ssim=0.91, psnr=23.0):
    """A report headline; the defaults sit exactly on every target (nothing moves: 15 cm, 8 dB, SSIM 0.90)."""
    return {"direction_accuracy": direction, "separation_ratio_median": separation,
            "gripper_separation_ratio_median": gripper, "swap_eef_ratio_own_over_other": swap,
            "tracking_eef_cm": {"dream": tracking, "nothing_moves": 15.0, "probe_on_real": 4.0},
            "moving_psnr": {"dream": moving, "nothing_moves": 8.0},
            "ssim": {"dream": ssim, "nothing_moves": 0.90}, "psnr": {"dream": psnr, "nothing_moves": 22.5}}


def test_shortfall_is_zero_on_the_targets_and_six_at_the_references():
    assert control_shortfall(headline())["total"] == 0.0
    # better than every target still scores 0: the score only counts what is missing
    assert control_shortfall(headline(0.95, 1.4, 0.9, 0.3, 5.0, 14.0))["total"] == 0.0
    worst = control_shortfall(headline(1 / 6, 0.0, 0.0, 1.0, 15.0, 8.0))
    assert worst["total"] == pytest.approx(6.0)
    assert all(worst[k] == pytest.approx(1.0) for k in ("direction", "separation", "gripper", "swap", "tracking",
                                                          "moving_psnr"))


def test_shortfall_is_the_fraction_of_the_way_from_reference_to_target_clipped():
    s = control_shortfall(headline(direction=(0.9 + 1 / 6) / 2, swap=0.75, tracking=10.5, moving=10.5))
    assert s["direction"] == pytest.approx(0.5)
    assert s["swap"] == pytest.approx(0.5)  # lower is better: halfway from 1.0 (actions ignored) to 0.5
    assert s["tracking"] == pytest.approx(0.5)  # halfway from nothing-moves (15 cm) to 6 cm
    assert s["moving_psnr"] == pytest.approx(0.5)  # halfway from nothing-moves to nothing-moves + 5 dB
    # worse than the reference is clipped at 1, not counted beyond it
    assert control_shortfall(headline(swap=1.3, tracking=20.0))["swap"] == 1.0
    assert control_shortfall(headline(swap=1.3, tracking=20.0))["tracking"] == 1.0


def test_a_report_without_probe_numbers_is_refused_and_an_unmeasured_number_gives_no_total():
    h = headline()
    del h["tracking_eef_cm"]
    with pytest.raises(ValueError, match="state probe"):
        control_shortfall(h)
    unmeasured = control_shortfall(headline(swap=None))
    assert unmeasured["swap"] is None and unmeasured["total"] is None
    with pytest.raises(ValueError, match="lacks a control number"):
        prefer(headline(swap=None), headline())


def test_prefer_needs_more_than_the_margin_and_keeps_the_frame_targets():
    incumbent = headline(direction=0.4)  # direction shortfall about 0.68, the rest met
    step = (0.9 - 1 / 6) * SELECTION_MARGIN
    assert prefer(headline(direction=0.4 + 1.5 * step), incumbent)
    assert not prefer(headline(direction=0.4 + 0.5 * step), incumbent)  # inside the margin: keep the incumbent
    assert not prefer(incumbent, incumbent)
    # far better control, but the SSIM falls to nothing-moves, which the incumbent beats: fidelity comes first
    blurred = headline(direction=0.9, ssim=0.90)
    assert frame_targets_met(blurred) == {"ssim": False, "psnr": True}
    assert not prefer(blurred, incumbent)
    # a frame target the incumbent misses too does not hold the candidate back
    assert prefer(headline(direction=0.9, psnr=21.0), headline(direction=0.4, psnr=21.5))
