"""The `roboalign` command line: help, bad arguments, and the README's main job."""

import subprocess
import sys

import imageio.v3 as iio
import pytest


def roboalign(*args, **kw):
    return subprocess.run([sys.executable, "-m", "roboalign_env.cli", *args], capture_output=True, text=True, **kw)


def test_help_lists_every_subcommand():
    out = roboalign("--help")
    assert out.returncode == 0
    for name in ("collect", "build-bench", "bench-stats", "demo"):
        assert name in out.stdout


def test_unknown_source_is_a_clear_error(tmp_path):
    out = roboalign("collect", "--out", str(tmp_path), "--sources", "lift_panda", "juggle_robot")
    assert out.returncode != 0
    assert "juggle_robot" in out.stderr + out.stdout and "lift_panda" in out.stderr + out.stdout
    assert not (tmp_path / "manifest.jsonl").exists()


def test_missing_collection_names_the_folder(tmp_path):
    out = roboalign("build-bench", "--collection", str(tmp_path / "none"), "--out", str(tmp_path / "b"))
    assert out.returncode == 2 and "none" in out.stderr and "Traceback" not in out.stderr


@pytest.mark.sim
def test_demo_writes_contact_sheet_and_video(tmp_path):
    out = roboalign("demo", "--out", str(tmp_path), "--episodes-per-source", "1", "--workers", "1")
    assert out.returncode == 0, out.stderr[-2000:]
    sheet = iio.imread(tmp_path / "contact_sheet.png")
    assert sheet.shape[0] > 4 * 128  # one row of frames per source
    import imageio

    with imageio.get_reader(tmp_path / "episodes.mp4") as reader:
        assert reader.count_frames() == 4 * 65  # every frame of one 64-step episode per source
    assert str(tmp_path / "contact_sheet.png") in out.stdout
