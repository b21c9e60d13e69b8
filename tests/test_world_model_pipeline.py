"""The world-model commands end to end on a tiny real collection: train both stages, evaluate."""

import json
import subprocess
import sys

import imageio.v3 as iio
import pytest
from conftest import renamed_copy


def roboalign(*args, check: bool = True):
    out = subprocess.run([sys.executable, "-m", "roboalign_env.cli", *map(str, args)], capture_output=True, text=True)
    assert not check or out.returncode == 0, out.stderr[-3000:]
    return out


@pytest.mark.sim
@pytest.mark.slow
def test_train_tokenizer_world_model_then_evaluate(collection, tmp_path):
    # three steps cannot beat copying the context frame: the guard is what refuses that (next test)
    roboalign("train-tokenizer", "--episodes", collection, "--out", tmp_path / "tok", "--steps", 3, "--batch-size", 2,
              "--min-dynamics-gain", "None")
    assert (tmp_path / "tok" / "model" / "model.safetensors").is_file()
    roboalign("train-world-model", "--episodes", collection, "--tokenizer", tmp_path / "tok" / "model",
              "--out", tmp_path / "wm", "--steps", 3, "--batch-size", 2, "--layers", 1, "--hidden-size", 32)
    model = tmp_path / "wm" / "world_model"
    assert {p.name for p in model.iterdir()} >= {"tokenizer", "transformer", "manifest.json"}

    # Fine-tuning starts from that transformer (its sizes, its weights), not from a new one; here on two
    # collections pooled (as a scripted collection and an explore_push one would be).
    other = renamed_copy(collection, tmp_path / "other")
    roboalign("train-world-model", "--episodes", collection, other, "--tokenizer", tmp_path / "tok" / "model",
              "--out", tmp_path / "tuned", "--steps", 1, "--batch-size", 2, "--lr", 1e-12, "--init-from", model)
    from safetensors.torch import load_file

    start = load_file(str(model / "transformer" / "model.safetensors"))
    tuned = load_file(str(tmp_path / "tuned" / "world_model" / "transformer" / "model.safetensors"))
    assert start.keys() == tuned.keys()
    assert max((start[k] - tuned[k]).abs().max().item() for k in start) < 1e-6  # one step at lr 1e-12
    assert json.loads((tmp_path / "tuned" / "world_model" / "transformer" / "config.json").read_text())["hidden_size"] == 32
    out = roboalign("eval-world-model", "--model", model, "--episodes", collection, "--out", tmp_path / "eval",
                    "--horizon", 16, "--limit", 2, "--window", 4)
    res = json.loads((tmp_path / "eval" / "results.json").read_text())
    assert res["perceptual_metric"] in out.stdout
    use = res["action_use"]  # teacher-forced: does the model read the motion from the action?
    assert use["clips"] == 4 and 0 < use["moving_fraction"] <= 1 and use["moving_digit_error_copy"] > 0
    val = [json.loads(line) for line in (tmp_path / "wm" / "metrics.jsonl").read_text().splitlines()]
    assert any("action_information" in row for row in val if row.get("split") == "val")
    assert res["baseline_window"] is None  # a Markov model's baseline: no re-encoding
    default, swr = res["runs"]["baseline"], res["runs"]["swr_w4"]
    assert set(default["at_horizon"]) == {"8", "16"}
    frame_tokens = 16 + 7  # dynamics codes + the 7 binned action tokens (the default action encoding)
    assert swr["peak_sequence_length"] == 64 + 3 * frame_tokens - 1
    assert default["peak_sequence_length"] == 64 + 16 * frame_tokens - 1
    assert len(default["per_frame"]["ssim"]) == 16 and 0 < default["at_horizon"]["16"]["ssim"] <= 1
    assert (tmp_path / "eval" / "metrics_vs_horizon.png").stat().st_size > 5000
    video = iio.imread(tmp_path / "eval" / "side_by_side.mp4")
    assert len(video) == 2 * 16 and video.shape[2] > 2.5 * video.shape[1]  # real | default | SWR, side by side

    # An anchor-frames model cannot go 16 frames without re-encoding: its baseline is its longest window.
    roboalign("train-world-model", "--episodes", collection, "--tokenizer", tmp_path / "tok" / "model", "--out",
              tmp_path / "anchor", "--steps", 1, "--batch-size", 2, "--layers", 1, "--hidden-size", 32,
              "--parallel-frames", "--markov-frames", "--anchor-frames")
    roboalign("eval-world-model", "--model", tmp_path / "anchor" / "world_model", "--episodes", collection,
              "--out", tmp_path / "eval_anchor", "--horizon", 16, "--limit", 1, "--window", 4)
    res = json.loads((tmp_path / "eval_anchor" / "results.json").read_text())
    assert res["baseline_window"] == 16
    baseline, swr = (res["runs"][k]["per_frame"]["psnr"] for k in ("baseline", "swr_w4"))
    assert baseline[:3] == swr[:3] and baseline[3:] != swr[3:]  # the same first window, then re-encoded apart

    # Pack it with the default student as a user's own model, and make the environment from it.
    from roboalign_env.assets import DEFAULT_MODEL

    roboalign("pack-default", "--world-model", model, "--student", DEFAULT_MODEL / "student", "--collection",
              collection, "--out", tmp_path / "mine", "--seeds-per-source", 1, "--seed-steps", 4, "--split", "all")
    import gymnasium as gym
    import numpy as np

    import roboalign_env  # noqa: F401

    env = gym.make("RoboAlignWorld-v0", checkpoint=str(tmp_path / "mine"), device="cpu")
    assert env.unwrapped.core.model.transformer.config.hidden_size == 32  # the user's model, not the default
    obs, info = env.reset(seed=0)
    assert len(env.unwrapped.core.seeds) == 4 and info["seed_index"] in range(4)
    seeds = env.unwrapped.core.seeds  # each clip records its collection's camera, which `compare` renders through
    assert seeds.camera == "agentview" and all(m["camera"] == "agentview" for m in seeds.meta)
    obs, reward, *_ = env.step(np.zeros(7, np.float32))
    assert obs["image"].shape == (3, 64, 64) and np.isfinite(reward)


def test_a_tokenizer_that_decodes_no_better_than_copying_the_context_is_refused_but_kept(tmp_path):
    """The guard compares the dynamics frames' validation SSIM with copying the context frame: a gain below the
    margin is refused with both numbers and the folder named (the s16 far-view tokenizer read 0.920 vs 0.920)."""
    from roboalign_env.training.tokenizer import MIN_DYNAMICS_GAIN, check_uses_dynamics

    folder = tmp_path / "tok" / "model"
    check_uses_dynamics({"ssim_dynamics": 0.951, "ssim_copy_context": 0.920}, MIN_DYNAMICS_GAIN, folder)
    for dynamics in (0.920, 0.9230, float("nan")):
        with pytest.raises(ValueError, match=r"SSIM .* against 0.9200 for copying the context frame") as err:
            check_uses_dynamics({"ssim_dynamics": dynamics, "ssim_copy_context": 0.920}, MIN_DYNAMICS_GAIN, folder)
        assert str(folder) in str(err.value) and "--seed" in str(err.value)


@pytest.mark.sim
def test_train_tokenizer_refuses_a_tokenizer_that_copies_the_context(collection, tmp_path):
    out = roboalign("train-tokenizer", "--episodes", collection, "--out", tmp_path / "tok", "--steps", 2,
                    "--batch-size", 2, check=False)
    assert out.returncode == 2 and "copying the context frame" in out.stderr and "Traceback" not in out.stderr
    assert (tmp_path / "tok" / "model" / "model.safetensors").is_file()  # kept for inspection


def test_eval_of_a_missing_model_is_a_clear_error(tmp_path):
    out = subprocess.run([sys.executable, "-m", "roboalign_env.cli", "eval-world-model", "--model", tmp_path / "nope",
                          "--episodes", tmp_path], capture_output=True, text=True)
    assert out.returncode == 2 and "nope" in out.stderr and "Traceback" not in out.stderr


@pytest.mark.sim
def test_longer_clips_train_an_anchor_model_on_more_steps_since_a_window_starts(collection, tmp_path):
    """An anchor-frames model learns one input per step since a window's first frame: clips of 12 frames
    train the first 11 of them and leave the rest at zero; clips longer than its windows are refused before
    anything is read."""
    from conftest import TINY_TRANSFORMER, tiny_world_model

    from roboalign_env.models.transformer import DynamicsTransformerConfig
    from roboalign_env.training.loop import LoopConfig
    from roboalign_env.training.world_model import train_world_model

    tokenizer = tiny_world_model(tmp_path / "tiny") / "tokenizer"
    config = DynamicsTransformerConfig(**TINY_TRANSFORMER, parallel_frames=True, markov_frames=True, anchor_frames=True)
    loop = LoopConfig(out=tmp_path / "run", steps=1, warmup_steps=0, progress=False)
    model = train_world_model(collection, tokenizer, loop, 2, config, val_clips=2, clip_frames=12)
    trained = model.transformer.anchor_steps.detach().abs().sum(-1) > 0
    assert trained.tolist() == [True] * 11 + [False] * (config.anchor_horizon - 11)
    with pytest.raises(ValueError, match="clip_frames 17: an anchor_frames model predicts at most 15"):
        train_world_model(collection, tokenizer, LoopConfig(out=tmp_path / "r2"), 2, config, clip_frames=17)
    assert not (tmp_path / "r2").exists()


def test_a_trained_model_keeps_the_swr_window_it_was_given_and_refuses_one_past_its_reach(collection, tmp_path):
    """``swr_window`` is saved with the model (what ``window="model"`` decodes at); an anchor-frames model is
    refused a window longer than it can predict before anything is read."""
    from conftest import TINY_TRANSFORMER, tiny_world_model

    from roboalign_env.models.transformer import DynamicsTransformerConfig
    from roboalign_env.models.world_model import WorldModel
    from roboalign_env.training.loop import LoopConfig
    from roboalign_env.training.world_model import train_world_model

    tokenizer = tiny_world_model(tmp_path / "tiny") / "tokenizer"
    flags = dict(**TINY_TRANSFORMER, parallel_frames=True, markov_frames=True, anchor_frames=True, anchor_horizon=7)
    loop = LoopConfig(out=tmp_path / "run", steps=1, warmup_steps=0, progress=False)
    train_world_model(collection, tokenizer, loop, 2, DynamicsTransformerConfig(**flags, swr_window=8), val_clips=2)
    assert WorldModel.load(tmp_path / "run" / "world_model").transformer.config.swr_window == 8
    with pytest.raises(ValueError, match="swr_window 9: an anchor_frames model predicts at most 7"):
        train_world_model(collection, tokenizer, LoopConfig(out=tmp_path / "r2"), 2,
                          DynamicsTransformerConfig(**flags, swr_window=9))
    assert not (tmp_path / "r2").exists()
