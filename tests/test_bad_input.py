"""Bad or unusual input: every case gets a clear error naming the argument or file (and what was
expected) before any state changes, or a documented behaviour; a fuzz test over the envs' inputs."""

import json
import shutil
import subprocess
import sys
import zipfile

import gymnasium as gym
import numpy as np
import pytest
import torch
from safetensors.torch import load_file, save_file

import roboalign_env  # noqa: F401
from roboalign_env.assets import DEFAULT_MODEL
from roboalign_env.data.episodes import FORMAT_VERSION, FRAME_KEYS, EpisodeFormatError, load_episode, read_manifest
from roboalign_env.data.io import atomic_savez, write_jsonl
from roboalign_env.envs.core import DreamSettings


@pytest.fixture(scope="module")
def env():
    env = gym.make("RoboAlignWorld-v0", device="cpu")
    # Gymnasium's passive checker compares the first reset and steps' outputs; a first reset that
    # raises leaves it without one and it then fails on its own, so the first calls are valid ones.
    env.reset(seed=0)
    env.step(np.zeros(7, np.float32))
    env.step(np.zeros(7, np.float32))
    yield env
    env.close()


@pytest.fixture(scope="module")
def venv():
    venv = gym.make_vec("RoboAlignWorld-v0", num_envs=3, max_episode_steps=3, device="cpu")
    yield venv
    venv.close()


@pytest.fixture
def model_copy(tmp_path):
    """A writable copy of the shipped model folder (world_model/, student/, seeds/)."""
    return shutil.copytree(DEFAULT_MODEL, tmp_path / "model")


def _episode_file(path, episode_id="ep-0", source="lift_panda", steps=3):
    """A small, well-formed episode file whose metadata the test chooses."""
    state = {f"state/{k}": np.zeros((steps + 1, 1), np.float32) for k in FRAME_KEYS}
    meta = {"episode_id": episode_id, "source": source, "format_version": FORMAT_VERSION}
    atomic_savez(path, frames=np.zeros((steps + 1, 8, 8, 3), np.uint8), actions=np.zeros((steps, 7), np.float32),
                 meta=np.array(json.dumps(meta)), **state)
    return path


# --- 2. paths from files stay inside their folder ------------------------------------------------

def test_an_episode_id_with_a_path_is_refused(tmp_path):
    good = _episode_file(tmp_path / "good.npz")
    assert load_episode(good).episode_id == "ep-0"
    bad = _episode_file(tmp_path / "bad.npz", episode_id="../../../escaped")
    with pytest.raises(EpisodeFormatError, match=r"bad\.npz: meta\.episode_id: '\.\./\.\./\.\./escaped'"):
        load_episode(bad)
    with pytest.raises(EpisodeFormatError, match="meta.source"):
        load_episode(_episode_file(tmp_path / "src.npz", source="lift/../../x"))


@pytest.mark.parametrize("row, what", [
    ({"episode_id": "a", "source": "lift_panda", "path": "../outside.npz"}, "path"),
    ({"episode_id": "a", "source": "lift_panda", "path": "/etc/passwd"}, "path"),
    ({"episode_id": "../a", "source": "lift_panda", "path": "episodes/a.npz"}, "episode_id"),
    ({"episode_id": "a", "source": "..", "path": "episodes/a.npz"}, "source"),
])
def test_manifest_rows_may_not_leave_the_collection(tmp_path, row, what):
    write_jsonl(tmp_path / "manifest.jsonl", [row])
    with pytest.raises(ValueError, match=rf"manifest\.jsonl, line 1: {what}"):
        read_manifest(tmp_path)


def test_bench_index_files_may_not_leave_the_bench(tmp_path):
    from roboalign_env.data.bench import load_pair, shard_path

    with pytest.raises(ValueError, match="points outside"):
        load_pair(tmp_path, {"pair_id": "p", "file": "../../secret.npz"})
    with pytest.raises(ValueError, match="shard"):
        shard_path(tmp_path, "lift_panda", "../../escaped")


# --- 3. a rejected step changes nothing ----------------------------------------------------------

def test_rejected_vector_steps_do_not_count(venv):
    venv.reset(seed=0)
    for bad in (np.full((3, 7), np.nan), np.zeros((2, 7)), "hello", np.ones((3, 7), bool)):
        with pytest.raises(ValueError, match="action"):
            venv.step(bad)
    _, _, terminated, truncated, _ = venv.step(np.zeros((3, 7), np.float32))
    assert not truncated.any() and not terminated.any()
    venv.step(np.zeros((3, 7), np.float32))
    assert venv.step(np.zeros((3, 7), np.float32))[3].all()  # the third valid step is the limit


# --- 4. invalid settings and inputs --------------------------------------------------------------

@pytest.mark.parametrize("kwargs, name", [
    ({"temperature": float("nan")}, "temperature"), ({"temperature": -1.0}, "temperature"),
    ({"temperature": float("inf")}, "temperature"), ({"success_threshold": float("nan")}, "success_threshold"),
    ({"success_threshold": 2.0}, "success_threshold"), ({"top_k": 0}, "top_k"), ({"top_k": 2.5}, "top_k"),
    ({"window": 1}, "window"), ({"horizon": 0}, "horizon"), ({"source": "juggle"}, "source"),
    ({"passes": 0}, "passes"), ({"passes": 2.0}, "passes"),
    ({"int8": "yes"}, "int8"), ({"reward_frames": 1}, "frames"), ({"reward_mode": "sometimes"}, "mode"),
    ({"reward_weights": [1, float("nan"), 1, 1, 1, 1]}, "weights"), ({"reward_weights": [1, 1]}, "weights"),
])
def test_invalid_settings_are_refused_before_anything_loads(kwargs, name):
    with pytest.raises(ValueError, match=name):
        DreamSettings.from_kwargs(kwargs, "RoboAlignWorld-v0")


def test_top_k_larger_than_the_codebook_is_refused():
    with pytest.raises(ValueError, match=r"top_k=100000: expected None or 1\.\.4375 \(this model.s codebook size\)"):
        gym.make("RoboAlignWorld-v0", device="cpu", top_k=100_000)


def test_world_model_with_nan_weights_is_refused(model_copy):
    path = model_copy / "world_model" / "transformer" / "model.safetensors"
    weights = load_file(str(path))
    name = next(k for k, v in weights.items() if v.is_floating_point())
    weights[name] = torch.full_like(weights[name], float("nan"))
    save_file(weights, str(path))
    with pytest.raises(ValueError, match=r"transformer/model\.safetensors: 1 weight tensor\(s\) hold NaN"):
        gym.make("RoboAlignWorld-v0", device="cpu", checkpoint=str(model_copy))


def test_student_with_nan_weights_is_refused(model_copy):
    path = model_copy / "student" / "model.safetensors"
    weights = load_file(str(path))
    name = next(k for k, v in weights.items() if v.is_floating_point())
    weights[name][..., 0] = float("inf")
    save_file(weights, str(path))
    with pytest.raises(ValueError, match=r"student/model\.safetensors: .*NaN or inf"):
        gym.make("RoboAlignWorld-v0", device="cpu", checkpoint=str(model_copy))


@pytest.mark.parametrize("index", [1.7, "abc", None, -1, 10_000, True])
def test_bad_seed_index_is_a_clear_error(env, index):
    with pytest.raises(ValueError, match=r"options\['seed_index'\]=.*expected an int in 0\.\.31"):
        env.reset(seed=0, options={"seed_index": index})


@pytest.mark.parametrize("action", [
    np.ones(7, bool), np.ones(7, complex), np.array(["0.1"] * 7), "hello", {"x": 1}, [[0.1] * 7, [0.2]], None,
])
def test_actions_that_are_not_real_numbers_are_refused(env, action):
    env.reset(seed=0)
    with pytest.raises(ValueError, match="action: expected"):
        env.step(action)
    env.step(np.zeros(7, np.float32))  # still steps


# --- 5. loaders name the file ------------------------------------------------------------------

@pytest.mark.parametrize("damage", ["empty", "truncated", "huge_header"])
def test_damaged_safetensors_name_the_folder(model_copy, damage):
    path = model_copy / "world_model" / "tokenizer" / "model.safetensors"
    data = path.read_bytes()
    path.write_bytes({"empty": b"", "truncated": data[: len(data) // 3],
                      "huge_header": (2**62).to_bytes(8, "little") + data[8:]}[damage])
    with pytest.raises(ValueError, match=r"world_model/tokenizer: could not load VideoTokenizer"):
        gym.make("RoboAlignWorld-v0", device="cpu", checkpoint=str(model_copy))


@pytest.mark.parametrize("file", ["world_model/manifest.json", "student/config.json", "seeds/seeds.json"])
def test_invalid_json_names_the_file(model_copy, file):
    (model_copy / file).write_text("{not json")
    with pytest.raises(ValueError, match=file.replace(".", r"\.")):
        gym.make("RoboAlignWorld-v0", device="cpu", checkpoint=str(model_copy))


def test_seed_clips_recorded_through_several_cameras_are_refused(model_copy):
    path = model_copy / "seeds" / "seeds.json"
    meta = json.loads(path.read_text())
    meta[0]["camera"] = "agentview+50cm"
    path.write_text(json.dumps(meta))
    with pytest.raises(ValueError, match=r"seeds\.json: clips recorded through several cameras .*expected one"):
        gym.make("RoboAlignWorld-v0", device="cpu", checkpoint=str(model_copy))


def test_truncated_seeds_names_the_file(model_copy):
    path = model_copy / "seeds" / "seeds.npz"
    path.write_bytes(path.read_bytes()[:1000])
    with pytest.raises(ValueError, match=r"seeds/seeds\.npz: corrupt or truncated"):
        gym.make("RoboAlignWorld-v0", device="cpu", checkpoint=str(model_copy))


def _mp4(path, frames):
    from roboalign_env.eval.media import write_mp4

    return write_mp4(path, frames)


@pytest.mark.parametrize("case, message", [
    ("empty.mp4", "cannot decode this mp4"), ("half.mp4", "cannot decode this mp4"),
    ("noise.mp4", "cannot decode this mp4"), ("empty.npz", "not an .npz archive"),
    ("text.npz", "not an .npz archive"), ("nokey.npz", "no array 'video'"), ("one.npz", "1 frame"),
    ("float.npz", "expected uint8 frames"), ("clip.avi", "expected an .mp4 or .npz"),
    ("actions.npz", "expected \\(A, 7\\) actions"),
])
def test_score_names_a_bad_video_file(tmp_path, case, message):
    from roboalign_env.eval.score import score_video

    path = tmp_path / case
    video = np.random.default_rng(0).integers(0, 255, (8, 64, 64, 3), dtype=np.uint8)
    if case == "empty.mp4" or case == "empty.npz":
        path.write_bytes(b"")
    elif case == "half.mp4":
        whole = _mp4(tmp_path / "whole.mp4", video).read_bytes()
        path.write_bytes(whole[: len(whole) // 2])
    elif case == "noise.mp4":
        path.write_bytes(np.random.default_rng(1).bytes(5000))
    elif case == "text.npz":
        path.write_text("this is not an archive")
    elif case == "nokey.npz":
        np.savez(path, frames=video)
    elif case == "one.npz":
        np.savez(path, video=video[:1])
    elif case == "float.npz":
        np.savez(path, video=video.astype(np.float32))
    elif case == "actions.npz":
        np.savez(path, video=video, actions=np.zeros((7, 3), np.float32))
    else:
        path.write_bytes(b"RIFF")
    with pytest.raises(ValueError, match=message) as err:
        score_video(path, "lift the red cube", DEFAULT_MODEL / "student")
    assert str(path) in str(err.value)


def test_score_cli_reports_a_bad_file_without_a_traceback(tmp_path):
    (tmp_path / "v.mp4").write_bytes(b"\x00" * 100)
    out = subprocess.run([sys.executable, "-m", "roboalign_env.cli", "score", "--video", str(tmp_path / "v.mp4"),
                          "--instruction", "lift the red cube"], capture_output=True, text=True)
    assert out.returncode == 2 and "v.mp4" in out.stderr and "Traceback" not in out.stderr


def test_a_zip_that_is_not_an_episode_names_the_file(tmp_path):
    path = tmp_path / "ep.npz"
    with zipfile.ZipFile(path, "w") as z:
        z.writestr("frames.npy", b"garbage")
    with pytest.raises(EpisodeFormatError, match="ep.npz"):
        load_episode(path)


# --- 6. order of calls -----------------------------------------------------------------------------

def test_step_after_close_and_reset_after_close_are_errors():
    env = gym.make("RoboAlignWorld-v0", device="cpu")
    env.reset(seed=0)
    env.step(np.zeros(7, np.float32))
    env.close()
    with pytest.raises(RuntimeError, match=r"step\(\) called after close\(\)"):
        env.step(np.zeros(7, np.float32))
    with pytest.raises(RuntimeError, match=r"reset\(\) called after close\(\)"):
        env.reset(seed=0)
    venv = gym.make_vec("RoboAlignWorld-v0", num_envs=2, device="cpu")
    venv.reset(seed=0)
    venv.close()
    with pytest.raises(RuntimeError, match=r"step\(\) called after close\(\)"):
        venv.step(np.zeros((2, 7), np.float32))


def test_a_step_past_the_limit_is_an_error_where_the_env_knows_the_limit():
    """With ``gym.make`` the limit belongs to ``TimeLimit`` (Gymnasium's contract: reset after
    ``truncated``); an env whose own spec carries the limit refuses the step after it."""
    from dataclasses import replace

    env = gym.make("RoboAlignWorld-v0", device="cpu").unwrapped
    env.spec = replace(gym.spec("RoboAlignWorld-v0"), max_episode_steps=3)  # a spec that carries the limit
    env.reset(seed=0)
    for _ in range(3):
        env.step(np.zeros(7, np.float32))
    with pytest.raises(RuntimeError, match="reached max_episode_steps"):
        env.step(np.zeros(7, np.float32))
    env.reset(seed=0)
    env.step(np.zeros(7, np.float32))


# --- the fuzz test --------------------------------------------------------------------------------

def _random_action(rng, shape):
    """A random action and whether it is valid (real numbers of ``shape``, all finite)."""
    kind = rng.integers(9)
    if kind == 0:
        return rng.uniform(-3, 3, shape).astype(rng.choice([np.float32, np.float64])), True
    if kind == 1:
        return rng.integers(-2, 3, shape), True
    if kind == 2:
        a = rng.uniform(-1, 1, shape)
        a.flat[rng.integers(a.size)] = rng.choice([np.nan, np.inf, -np.inf])
        return a, False
    if kind == 3:
        return rng.uniform(-1, 1, (shape[0] + 1,) + shape[1:]), False
    if kind == 4:
        return rng.uniform(-1, 1, shape).astype(complex), False
    if kind == 5:
        return rng.uniform(-1, 1, shape) > 0, False
    if kind == 6:
        return rng.choice(["hello", "", "0.5", None, {"a": 1}, object()]), False
    if kind == 7:
        return rng.uniform(-1, 1, shape).astype(str), False
    return rng.uniform(-1, 1, shape).tolist(), True


def _random_options(rng):
    """Random reset options and whether they are valid."""
    options, valid = {}, True
    if rng.random() < 0.4:
        value = rng.choice([0, 5, 31, 32, -1, 1.5, "3", None])
        options["seed_index"] = value
        valid &= isinstance(value, (int, np.integer)) and 0 <= value <= 31
    if rng.random() < 0.3:
        value = rng.choice(["lift_panda", "door_kinova3", "nope", ""])
        options["source"] = value
        valid &= value in ("lift_panda", "door_kinova3")
    if rng.random() < 0.3:
        value = rng.choice(["lift it", "", "  ", 7])
        options["instruction"] = value
        valid &= isinstance(value, str) and bool(value.strip())
    if rng.random() < 0.2:
        shape = [(64, 64, 3), (3, 64, 64), (32, 32, 3)][rng.integers(3)]
        dtype = rng.choice([np.uint8, np.float32])
        options["frame"] = np.zeros(shape, dtype)
        valid &= dtype == np.uint8 and shape != (32, 32, 3)
        valid &= "instruction" in options or "source" in options
    if rng.random() < 0.1:
        options["colour"] = "red"
        valid = False
    return options, bool(valid)


def test_fuzz_actions_and_options_get_clear_errors_or_valid_output(env, venv):
    rng = np.random.default_rng(2026)
    env.reset(seed=0)
    venv.reset(seed=0)
    counts = {"valid": 0, "refused": 0}
    for i in range(300):
        target, shape = (env, (7,)) if i % 2 else (venv, (3, 7))
        if i % 10 == 0:
            options, valid = _random_options(rng)
            call = lambda: target.reset(seed=int(rng.integers(100)), options=options)  # noqa: E731
        else:
            action, valid = _random_action(rng, shape)
            call = lambda: target.step(action)  # noqa: E731
        try:
            out = call()
        except (ValueError, TypeError) as err:
            assert not valid, f"case {i}: a valid input was refused: {err}"
            assert len(str(err)) > 20 and ("action" in str(err) or "option" in str(err) or "source" in str(err)
                                           or "frame" in str(err) or "instruction" in str(err)), str(err)
            counts["refused"] += 1
        except RuntimeError as err:  # a step after the single env's judged success: reset and go on
            assert "call reset()" in str(err)
            env.reset(seed=i)
            continue
        else:
            assert valid, f"case {i}: an invalid input was accepted"
            obs = out[0]
            assert obs["image"].dtype == np.uint8 and np.isfinite(obs["task"]).all()
            if len(out) == 5:
                assert np.all(np.isfinite(out[1]))
                if target is env and (out[2] or out[3]):
                    env.reset(seed=i)
            counts["valid"] += 1
    assert counts["valid"] > 50 and counts["refused"] > 50
    obs, reward, *_ = env.step(np.zeros(7, np.float32))  # both still step correctly afterwards
    assert np.isfinite(reward) and obs["image"].shape == (3, 64, 64)
    assert np.isfinite(venv.step(np.zeros((3, 7), np.float32))[1]).all()


def test_fuzz_settings_get_clear_errors_or_valid_settings():
    rng = np.random.default_rng(7)
    values = {"temperature": [0, 1, 0.5, -1, float("nan"), float("inf"), "1", None],
              "top_k": [None, 1, 16, 0, -3, 2.5, "8"], "window": [None, 2, 6, "model", 1, 0, 6.0, "wide"],
              "horizon": [1, 64, 0, -5, 3.3], "source": [None, "lift_panda", "x"], "bf16": [True, False, 1, "no"],
              "int8": [True, False, None], "device": ["auto", "cpu", 3], "reward_frames": [2, 16, 1, 2.0],
              "success_threshold": [0.0, 0.8, 1.0, 1.5, float("nan")], "reward_mode": ["potential", "terminal", "x"],
              "colour": ["red"]}
    accepted = refused = 0
    for _ in range(300):
        kwargs = {k: v[rng.integers(len(v))] for k, v in values.items() if rng.random() < 0.3}
        try:
            settings = DreamSettings.from_kwargs(kwargs, "RoboAlignWorld-v0")
        except (ValueError, TypeError) as err:
            named = [k for k in kwargs if k.removeprefix("reward_") in str(err)]
            assert named, f"{kwargs}: {err}"
            refused += 1
        else:
            assert settings.temperature >= 0 and settings.temperature == settings.temperature
            assert settings.top_k is None or (isinstance(settings.top_k, int) and settings.top_k >= 1)
            assert 0 <= settings.reward.success_threshold <= 1
            accepted += 1
    assert accepted > 20 and refused > 100
