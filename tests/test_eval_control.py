"""`roboalign eval-control`: the controllability metrics on hand-made arrays, and the command end to end."""

import json
import math
import sys

import numpy as np
import pytest
import torch
from conftest import tiny_world_model

from roboalign_env.eval.control import (
    DIRECTIONS,
    command_actions,
    confusion,
    direction_hits,
    masked_psnr,
    motion_mask,
    nearest_commands,
    position_error_cm,
    separation_ratio,
)


def counterfactuals(seed: int = 0):
    """A first frame and six real frames that each differ from it by a different moved patch."""
    rng = np.random.default_rng(seed)
    first = rng.integers(0, 256, (16, 16, 3)).astype(np.uint8)
    real = np.repeat(first[None], len(DIRECTIONS), 0)
    for i in range(len(DIRECTIONS)):
        real[i, 2 * i : 2 * i + 3, 2 * i : 2 * i + 3] = 255 - real[i, 2 * i : 2 * i + 3, 2 * i : 2 * i + 3]
    return first, real


def test_a_dream_equal_to_reality_is_fully_controllable():
    first, real = counterfactuals()
    assert direction_hits(real, real, first).all()
    assert direction_hits(real, real, first, by_change=True).all()
    assert separation_ratio(real[0], real[1], real[0], real[1]) == pytest.approx(1.0)
    # half the motion, in the right direction: right by direction of change, half the separation
    half = (first + (real.astype(float) - first) / 2).round().astype(np.uint8)
    assert direction_hits(half, real, first, by_change=True).all()
    assert separation_ratio(half[0], half[1], real[0], real[1]) == pytest.approx(0.5, abs=0.01)


def test_a_dream_that_ignores_actions_scores_chance_and_no_separation():
    first, real = counterfactuals()
    # the confusion report shows where the commands went: every one to the same real frame
    frozen = np.stack([nearest_commands(np.repeat(real[2:3], 6, 0), real, first)] * 3)
    assert confusion(frozen) == {c: {"+y": 3} for c in DIRECTIONS}
    assert confusion(np.stack([nearest_commands(real, real, first)])) == {c: {c: 1} for c in DIRECTIONS}
    for ignored in (np.repeat(first[None], 6, 0), np.repeat(real[2:3], 6, 0)):
        assert direction_hits(ignored, real, first).mean() <= 1 / len(DIRECTIONS)
        assert direction_hits(ignored, real, first, by_change=True).mean() <= 1 / len(DIRECTIONS)
        assert separation_ratio(ignored[0], ignored[1], real[0], real[1]) == 0.0
    assert math.isnan(separation_ratio(real[0], real[1], first, first))  # reality did not separate: undefined


def test_moving_pixel_psnr_counts_only_the_moving_pixels():
    first = torch.zeros(2, 3, 8, 8)
    real = first.clone()
    real[0, :, :2, :2] = 0.5  # 4 moving pixels in frame 0, none in frame 1
    real[1] += 2 / 255  # below the 10/255 threshold
    mask = motion_mask(real, first)
    assert mask.shape == (2, 1, 8, 8) and mask[0].sum() == 4 and mask[1].sum() == 0
    pred = real.clone()
    pred[0, :, :2, :2] += 0.1  # error 0.1 on the moving pixels
    pred[0, :, 4:, 4:] = 1.0  # a large error elsewhere does not count
    out = masked_psnr(pred, real, mask)
    assert out[0].item() == pytest.approx(20.0, abs=1e-3) and math.isnan(out[1].item())


def test_command_actions_and_position_error():
    actions = command_actions(0.8, -1.0, steps=3)
    assert set(actions) == {*DIRECTIONS, "open", "close"}
    assert actions["-y"].shape == (3, 7) and actions["-y"][0].tolist() == pytest.approx([0, -0.8, 0, 0, 0, 0, -1])
    assert actions["close"][0].tolist() == [0, 0, 0, 0, 0, 0, 1] and actions["open"][0, 6] == -1
    assert position_error_cm(np.array([[0.0, 0.0, 0.03]]), np.zeros((1, 3))).tolist() == pytest.approx([3.0])
    objects = np.zeros((2, 2, 3))
    objects[:, 1, 0] = 0.02  # two objects: 0 and 2 cm off -> 1 cm
    assert position_error_cm(objects, np.zeros((2, 2, 3))).tolist() == pytest.approx([1.0, 1.0])


def check_report(res: dict, steps: int, sources: tuple[str, ...], probe: bool, decoding: str = "greedy"):
    sections = {"direction", "separation", "action_swap", "tracking", "frames", "starts"}
    assert set(res["per_source"]) == set(sources) and res["settings"]["decoding"] == decoding
    for section in [res["overall"], *res["per_source"].values()]:
        assert set(section) == sections
        assert list(section["direction"]["accuracy"]) == [str(steps)]
        assert all(0 <= v <= 1 for v in [*section["direction"]["accuracy"].values(),
                                         *section["direction"]["accuracy_by_change"].values()])
        # the confusion counts agree with the accuracy at the last step: hits on the diagonal, one count per start
        nearest = section["direction"]["nearest_real_command_last"]
        assert list(nearest) == list(DIRECTIONS)
        assert all(sum(row.values()) == section["starts"] for row in nearest.values())
        hits = sum(row.get(c, 0) for c, row in nearest.items())
        assert hits / (section["starts"] * len(DIRECTIONS)) == pytest.approx(section["direction"]["accuracy_last"])
        sep = section["separation"]
        ratios = [sep["ratio_median"], sep["gripper_ratio_median"], *sep["ratio_per_axis"].values(),
                  section["action_swap"]["pixel_ratio_own_over_other"]]
        assert all(r is None or r >= 0 for r in ratios) and section["separation"]["ratio_median"] is not None
        frames = section["frames"]
        for key in ("psnr_dream", "psnr_nothing_moves", "moving_psnr_dream", "moving_psnr_nothing_moves"):
            assert math.isfinite(frames[key]) and 0 < frames[key] <= 60
        assert 0 < frames["ssim_dream"] <= 1 and frames["lpips_dream"] >= 0 and 0 < frames["moving_fraction"] < 1
        if probe:
            for part in ("eef", "objects"):
                assert all(math.isfinite(v) and v >= 0 for v in section["tracking"][part].values())
            assert section["tracking"]["eef"]["probe_on_real_cm"] < 15  # the probe reads the real frames right
            assert section["action_swap"]["eef_ratio_own_over_other"] >= 0
        else:
            assert "no state probe" in section["tracking"] and "eef_error_own_cm" not in section["action_swap"]
    assert len(res["per_step"]["psnr_dream"]) == steps and len(res["per_step"]["direction_accuracy"]) == steps
    # the restart is exact: re-simulating the episode's own actions gives its recorded frames
    assert [s["restart_max_pixel_diff"] for s in res["starts"]] == [0] * len(res["starts"])
    assert all(s["other_episode_id"] not in (None, s["episode_id"]) for s in res["starts"])


def test_the_tokenizer_ceiling_starts_each_window_from_its_own_reconstruction():
    """Like a dream, the ceiling re-encodes its own last frame at each SWR window, not the real frame: a tokenizer
    that draws every frame as its context plus 10 shows which context each frame was decoded against."""
    from types import SimpleNamespace

    from roboalign_env.eval.control import reconstruct_all

    tok = SimpleNamespace(device=torch.device("cpu"), context_features=lambda c: [],
                          encode_dynamics=lambda frames, context: torch.zeros(len(frames), 16, dtype=torch.long),
                          decode_dynamics=lambda codes, context, skips: context + 10 / 255)
    frames = np.broadcast_to(np.arange(7, dtype=np.uint8)[None, :, None, None, None], (2, 7, 4, 4, 3))
    # window 3: frames 1-2 against the real first frame (0), 3-4 against frame 2's reconstruction (10), 5-6
    # against frame 4's (20); re-encoding the real frames instead would give 12 and 14
    for window, drawn in ((3, [10, 10, 20, 20, 30, 30]), (None, [10] * 6), (6, [10] * 5 + [20])):
        out = reconstruct_all(SimpleNamespace(tokenizer=tok), frames, window, batch_size=1)
        assert out.shape == (2, 6, 4, 4, 3) and out[:, :, 0, 0, 0].tolist() == [drawn, drawn], window


def test_cached_real_rollouts_are_keyed_by_their_start_and_actions_and_an_unreadable_one_is_redone(tmp_path):
    from roboalign_env.eval.control import ROLLOUTS, Real, Start, _read_real, _rollouts_key

    actions = {name: np.zeros((4, 7), np.float32) for name in ROLLOUTS}
    start = Start("lift_panda-nominal-00001", "lift_panda", 1, None, actions, np.zeros((5, 8, 8, 3), np.uint8))
    key = _rollouts_key(start, 64)
    assert key == _rollouts_key(Start(**{**vars(start)}), 64) and len(key) == 16
    moved = {**actions, "+x": actions["+x"] + np.float32(0.1)}
    assert len({key, _rollouts_key(start, 32), _rollouts_key(Start(**{**vars(start), "seed": 2}), 64),
                _rollouts_key(Start(**{**vars(start), "actions": moved}), 64),
                _rollouts_key(Start(**{**vars(start), "camera": "agentview+50cm"}), 64)}) == 5
    real = Real(np.ones((10, 5, 8, 8, 3), np.uint8), np.zeros((10, 5, 3)), np.zeros((10, 5, 1, 3)))
    np.savez(tmp_path / "ok.npz", frames=real.frames, eef=real.eef, objects=real.objects)
    assert np.array_equal(_read_real(tmp_path / "ok.npz").frames, real.frames)
    (tmp_path / "torn.npz").write_bytes((tmp_path / "ok.npz").read_bytes()[:100])
    np.savez(tmp_path / "other.npz", frames=real.frames)
    assert _read_real(tmp_path / "torn.npz") is None and _read_real(tmp_path / "other.npz") is None


@pytest.mark.sim
def test_eval_control_runs_end_to_end_on_a_tiny_model(collection, tmp_path, capsys, monkeypatch):
    from roboalign_env.cli import main
    from roboalign_env.eval import control
    from roboalign_env.eval.control import evaluate_control

    model = tiny_world_model(tmp_path / "wm")
    cache = tmp_path / "real_cache"
    res = evaluate_control(model, collection, tmp_path / "a", starts_per_source=1, steps=2, sources=("door_kinova3",),
                           window=2, progress=False, tokenizer_only=True, real_cache=cache)
    check_report(res, 2, ("door_kinova3",), probe=False, decoding="tokenizer only")
    for png in ("control_per_step.png", "contact_sheet.png"):
        assert (tmp_path / "a" / png).stat().st_size > 20_000
    # the start's robosuite rollouts were kept: the reports below read them instead of simulating
    assert len(list(cache.glob("door_kinova3-*.npz"))) == 1
    monkeypatch.setattr(control, "simulate", lambda *args: pytest.fail("simulated a start that is in the cache"))
    again = evaluate_control(model, collection, tmp_path / "a2", starts_per_source=1, steps=2, sources=("door_kinova3",),
                             window=2, progress=False, tokenizer_only=True, real_cache=cache)
    assert again["overall"] == res["overall"] and again["starts"] == res["starts"]
    sampled = [evaluate_control(model, collection, tmp_path / f"t{seed}", starts_per_source=1, steps=2, window=2,
                                sources=("door_kinova3",), progress=False, temperature=1.0, real_cache=cache)
               for seed in range(2)]
    monkeypatch.undo()
    check_report(sampled[0], 2, ("door_kinova3",), probe=False, decoding="sampled at temperature 1.0")
    assert sampled[0]["overall"]["frames"] == sampled[1]["overall"]["frames"]  # each rollout from its own seed

    sources = ("door_kinova3", "pickplace_can_ur5e")  # the ones with held-out episodes in the tiny collection
    args = ["eval-control", "--model", str(model), "--episodes", str(collection), "--probe", "checkpoints/probe",
            "--out", str(tmp_path / "b"), "--starts-per-source", "1", "--steps", "3", "--sources", *sources,
            "--device", "cpu", "--window", "None", "--real-cache", "None"]
    monkeypatch.setattr(sys, "argv", ["roboalign", *args])  # what the result file records as the command
    main(args)
    res = json.loads((tmp_path / "b" / "control.json").read_text())
    check_report(res, 3, sources, probe=True)
    assert res["settings"]["window"] is None  # --window None: no re-encoding
    out = capsys.readouterr().out
    assert res["command"].startswith("roboalign eval-control")
    assert "direction accuracy" in out and "end effector over 3 steps" in out


def test_a_window_below_two_frames_is_refused_before_any_work(tmp_path):
    from roboalign_env.eval.control import evaluate_control

    with pytest.raises(ValueError, match="window must be an integer >= 2"):
        evaluate_control(tmp_path / "none", tmp_path, tmp_path / "out", window=1)
    with pytest.raises(ValueError, match="temperature must be a finite number >= 0"):
        evaluate_control(tmp_path / "none", tmp_path, tmp_path / "out", temperature=-1.0)
    assert not (tmp_path / "out").exists()


def test_a_missing_model_is_a_clear_error(tmp_path, capsys):
    from roboalign_env.cli import main

    with pytest.raises(SystemExit) as exit_:
        main(["eval-control", "--model", str(tmp_path / "none"), "--episodes", str(tmp_path), "--probe", "None"])
    err = capsys.readouterr().err
    assert exit_.value.code == 2 and "none" in err and "missing" in err
