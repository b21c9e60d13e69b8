"""The `roboalign` command line: help, bad arguments, and the README's main job."""

import json
import subprocess
import sys

import imageio.v3 as iio
import pytest


def roboalign(*args, **kw):
    return subprocess.run([sys.executable, "-m", "roboalign_env.cli", *args], capture_output=True, text=True, **kw)


def test_help_lists_every_subcommand():
    out = roboalign("--help")
    assert out.returncode == 0
    for name in ("collect", "build-bench", "bench-stats", "demo", "compare", "pack-default"):
        assert name in out.stdout


def test_unknown_source_is_a_clear_error(tmp_path):
    out = roboalign("collect", "--out", str(tmp_path), "--sources", "lift_panda", "juggle_robot")
    assert out.returncode != 0
    assert "juggle_robot" in out.stderr + out.stdout and "lift_panda" in out.stderr + out.stdout
    assert not (tmp_path / "manifest.jsonl").exists()


def test_missing_collection_names_the_folder(tmp_path):
    out = roboalign("build-bench", "--collection", str(tmp_path / "none"), "--out", str(tmp_path / "b"))
    assert out.returncode == 2 and "none" in out.stderr and "Traceback" not in out.stderr


def test_add_dream_pairs_checks_the_kinds_before_loading_the_adversary(tmp_path):
    """An adversary without its kind is refused by the kind check, not by a failure to load the reward."""
    out = roboalign("add-dream-pairs", "--name", "x", "--adversary", str(tmp_path / "no_reward"), "--kinds", "own",
                    "--bench", str(tmp_path / "bench"), "--collection", str(tmp_path / "episodes"))
    assert out.returncode == 2 and "Traceback" not in out.stderr
    assert "'adversary' kind" in out.stderr and "no_reward" in out.stderr


@pytest.mark.sim
def test_demo_compares_the_dream_with_real_robosuite(tmp_path):
    out = roboalign("demo", "--out", str(tmp_path), "--sources", "lift_panda", "door_kinova3",
                    "--episodes-per-source", "1", "--steps", "3", "--device", "cpu")
    assert out.returncode == 0, out.stderr[-2000:]
    results = json.loads((tmp_path / "results.json").read_text())
    assert results["episodes"] == 2 and results["policy"] == "scripted"
    assert len(results["per_step"]["ssim"]) == 3 and 0 < results["mean"]["ssim"] <= 1
    assert len(results["student"]["real_aggregate_per_step"]) == 4  # the first frame, then 3 steps
    assert results["command"].startswith("roboalign demo")
    from roboalign_env.assets import DEFAULT_MODEL
    from roboalign_env.models.world_model import WorldModel

    shipped = WorldModel.load(DEFAULT_MODEL / "world_model").transformer.config
    assert results["dream"]["window"] == shipped.swr_window and results["dream"]["guidance"] == shipped.guidance
    import imageio

    with imageio.get_reader(tmp_path / "side_by_side.mp4") as reader:
        assert reader.count_frames() == 4
    assert iio.imread(tmp_path / "compare.png").shape[1] > 800
    assert "SSIM" in out.stdout


def test_compare_refuses_an_unknown_policy(tmp_path):
    out = roboalign("compare", "--out", str(tmp_path), "--policy", "nonsense", "--sources", "lift_panda")
    assert out.returncode == 2 and "nonsense" in out.stderr and "Traceback" not in out.stderr


def test_compare_refuses_more_episodes_than_the_seed_clips_hold(tmp_path):
    out = roboalign("compare", "--out", str(tmp_path / "c"), "--sources", "lift_panda", "--episodes-per-source", "1000")
    assert out.returncode == 2 and "Traceback" not in out.stderr
    from roboalign_env.assets import DEFAULT_MODEL
    from roboalign_env.envs.seeds import SeedClips

    held = len(SeedClips.load(DEFAULT_MODEL / "seeds").of_source("lift_panda"))
    assert "1000" in out.stderr and f"'lift_panda': {held}" in out.stderr
    assert not (tmp_path / "c").exists()
