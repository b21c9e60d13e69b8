"""Policies saved as weights (safetensors + JSON) load without unpickling; an SB3 .zip needs an opt-in."""

import base64
import json
import pickle
import subprocess
import sys
import zipfile

import gymnasium as gym
import numpy as np
import pytest
from gymnasium import spaces

pytest.importorskip("stable_baselines3")

from roboalign_env.envs.compare import check_policy, load_model  # noqa: E402
from roboalign_env.envs.policies import load_policy, load_sb3_zip, save_policy  # noqa: E402


class TinyEnv(gym.Env):
    """The spaces of RoboAlignWorld-v0, smaller: a uint8 image, a task vector, 7-D actions."""

    observation_space = spaces.Dict({"image": spaces.Box(0, 255, (3, 36, 36), np.uint8),
                                     "task": spaces.Box(0.0, 1.0, (4,), np.float32)})
    action_space = spaces.Box(-1.0, 1.0, (7,), np.float32)

    def reset(self, seed=None, options=None):
        super().reset(seed=seed)
        return self.observation_space.sample(), {}

    def step(self, action):
        return self.observation_space.sample(), float(-np.square(action).sum()), False, False, {}


def train(algorithm: str):
    import stable_baselines3

    env = TinyEnv()
    env.observation_space.seed(0)
    if algorithm in ("ppo", "a2c"):
        kwargs = {"n_steps": 16, **({"batch_size": 16, "n_epochs": 1} if algorithm == "ppo" else {})}
    else:
        kwargs = {"buffer_size": 64, "learning_starts": 8, "batch_size": 8}
    model = getattr(stable_baselines3, algorithm.upper())("MultiInputPolicy", env, seed=0, device="cpu", **kwargs)
    return model.learn(32)


@pytest.fixture(scope="module")
def ppo_folder(tmp_path_factory):
    folder = tmp_path_factory.mktemp("ppo") / "policy"
    save_policy(train("ppo"), folder)
    return folder


def observations(n: int = 6) -> list[dict]:
    space = TinyEnv.observation_space
    space.seed(1)
    return [space.sample() for _ in range(n)]


@pytest.mark.parametrize("algorithm", ["ppo", "a2c", "sac", "td3"])
def test_saved_weights_predict_like_the_trained_model(tmp_path, monkeypatch, algorithm):
    model = train(algorithm)
    save_policy(model, tmp_path / "policy")
    config = json.loads((tmp_path / "policy" / "policy.json").read_text())
    assert config["format"] == "roboalign_policy/1" and config["algorithm"] == algorithm
    assert config["observation_space"]["spaces"]["image"] == {"type": "Box", "shape": [3, 36, 36], "dtype": "uint8",
                                                              "low": 0, "high": 255}

    def refuse(*args, **kwargs):
        raise AssertionError("loading a saved policy must not unpickle")

    monkeypatch.setattr(pickle, "load", refuse)
    monkeypatch.setattr(pickle, "loads", refuse)
    monkeypatch.setattr("torch.load", refuse)
    loaded = load_policy(tmp_path / "policy")
    assert loaded.algorithm == algorithm and not loaded.policy.training
    for obs in observations():
        np.testing.assert_array_equal(loaded.predict(obs)[0], model.predict(obs, deterministic=True)[0])
    batch = {k: np.stack([o[k] for o in observations()]) for k in ("image", "task")}
    np.testing.assert_array_equal(loaded.predict(batch)[0], model.predict(batch, deterministic=True)[0])


def test_compare_takes_a_weights_folder_with_or_without_the_algorithm(ppo_folder):
    assert check_policy(str(ppo_folder)) == (None, ppo_folder)
    obs = observations(1)[0]
    action = load_model(str(ppo_folder)).predict(obs, deterministic=True)[0]
    np.testing.assert_array_equal(load_model(f"ppo:{ppo_folder}").predict(obs)[0], action)
    with pytest.raises(ValueError, match="holds a ppo policy, not sac"):
        load_model(f"sac:{ppo_folder}")
    with pytest.raises(ValueError, match="not a saved policy folder"):
        check_policy(f"ppo:{ppo_folder.parent}")


def crafted_zip(path, marker):
    """An SB3-looking zip whose observation space unpickles to ``open(marker, "w")``: it runs code."""

    class Payload:
        def __reduce__(self):
            return open, (str(marker), "w")

    serialized = {":type:": "<class 'gymnasium.spaces.box.Box'>",
                  ":serialized:": base64.b64encode(pickle.dumps(Payload())).decode()}
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("data", json.dumps({"observation_space": serialized}))
    return path


def test_an_sb3_zip_is_refused_without_the_opt_in(tmp_path):
    marker = tmp_path / "pwned"
    path = crafted_zip(tmp_path / "model.zip", marker)
    for policy in (f"ppo:{path}", str(path)):
        with pytest.raises(ValueError, match="--trust-sb3-zip") as err:
            load_model(policy)
        assert "pickle" in str(err.value) and "save_policy" in str(err.value)
    assert not marker.exists()
    with pytest.raises(Exception):  # the opt-in path is SB3's own load: the payload really runs
        load_model(f"ppo:{path}", trust_pickle=True)
    assert marker.exists()


def test_a_trusted_sb3_zip_still_loads(tmp_path):
    model = train("ppo")
    model.save(tmp_path / "model")
    obs = observations(1)[0]
    expected = model.predict(obs, deterministic=True)[0]
    np.testing.assert_array_equal(load_sb3_zip(tmp_path / "model.zip", "ppo").predict(obs, deterministic=True)[0],
                                  expected)
    trusted = load_model(f"{tmp_path}/model.zip", trust_pickle=True)  # a bare PATH.zip means PPO
    np.testing.assert_array_equal(trusted.predict(obs, deterministic=True)[0], expected)


def copy_folder(src, dst):
    dst.mkdir()
    for name in ("policy.json", "policy.safetensors"):
        (dst / name).write_bytes((src / name).read_bytes())
    return dst


def test_a_truncated_weights_file_names_the_file(ppo_folder, tmp_path):
    folder = copy_folder(ppo_folder, tmp_path / "policy")
    weights = folder / "policy.safetensors"
    weights.write_bytes(weights.read_bytes()[:1000])
    with pytest.raises(ValueError, match="policy.safetensors"):
        load_policy(folder)
    weights.write_bytes(b"\xff" * 64)
    with pytest.raises(ValueError, match="policy.safetensors"):
        load_policy(folder)
    weights.unlink()
    with pytest.raises(FileNotFoundError, match="policy.safetensors"):
        load_policy(folder)


def test_bad_json_names_the_file_or_the_class(ppo_folder, tmp_path):
    folder = copy_folder(ppo_folder, tmp_path / "policy")
    path = folder / "policy.json"
    config = json.loads(path.read_text())
    path.write_text("{not json")
    with pytest.raises(ValueError, match="policy.json.*not valid JSON"):
        load_policy(folder)
    for key, value, message in [("policy_class", "os.system", "'os.system' is not an allowed PPO policy"),
                                ("algorithm", "dqn", "algorithm 'dqn'"), ("format", "sb3", "format 'sb3'")]:
        path.write_text(json.dumps({**config, key: value}))
        with pytest.raises(ValueError, match=message):
            load_policy(folder)
    for key in ("activation_fn", "features_extractor_class"):
        path.write_text(json.dumps({**config, "policy_kwargs": {**config["policy_kwargs"], key: "builtins.eval"}}))
        with pytest.raises(ValueError, match=f"{key} 'builtins.eval' is not allowed"):
            load_policy(folder)
    path.write_text(json.dumps({**config, "action_space": {**config["action_space"], "shape": [6]}}))
    with pytest.raises(ValueError, match="policy.safetensors: weights do not fit"):
        load_policy(folder)
    path.unlink()
    with pytest.raises(FileNotFoundError, match="policy.json"):
        load_policy(folder)


def test_cli_refuses_a_zip_without_the_flag(tmp_path):
    marker = tmp_path / "pwned"
    path = crafted_zip(tmp_path / "x.zip", marker)
    out = subprocess.run([sys.executable, "-m", "roboalign_env.cli", "compare", "--out", str(tmp_path / "out"),
                          "--policy", f"ppo:{path}", "--sources", "lift_panda"], capture_output=True, text=True)
    assert out.returncode == 2 and "--trust-sb3-zip" in out.stderr and "Traceback" not in out.stderr
    assert not marker.exists() and not (tmp_path / "out").exists()


def test_frame_policy_acts_on_a_batch_of_frames_as_on_the_envs_observations(ppo_folder):
    """What add-dream-pairs' policy kind calls: a batch of frames and their sources in, the actions the
    policy takes on each env observation (frame + the source's task vector) out, deterministic."""
    from roboalign_env.envs.core import task_vector
    from roboalign_env.envs.policies import frame_policy
    from roboalign_env.sim.sources import ALL_SOURCES

    policy = load_policy(ppo_folder)
    frames = np.random.default_rng(2).integers(0, 256, (6, 3, 36, 36), dtype=np.uint8)
    sources = [ALL_SOURCES[i % len(ALL_SOURCES)] for i in range(6)]
    actions = frame_policy(policy)(frames, sources)
    assert actions.shape == (6, 7) and actions.dtype == np.float32
    for frame, source, action in zip(frames, sources, actions):
        alone = policy.predict({"image": frame, "task": task_vector(source)}, deterministic=True)[0]
        np.testing.assert_allclose(action, alone, atol=1e-5)
