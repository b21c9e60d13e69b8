"""RoboAlignWorld-v0 (single, native vector, SB3 adapter) on the shipped default model."""

import subprocess
import sys
import warnings

import gymnasium as gym
import numpy as np
import pytest
from conftest import TINY_TOKENIZER, TINY_TRANSFORMER

import roboalign_env
from roboalign_env.assets import DEFAULT_MODEL
from roboalign_env.envs.seeds import SeedClips


@pytest.fixture(scope="module")
def env():
    env = gym.make("RoboAlignWorld-v0", device="cpu", render_mode="rgb_array")
    yield env
    env.close()


@pytest.fixture(scope="module")
def seeds():
    return SeedClips.load(DEFAULT_MODEL / "seeds")


def rollout(env, seed, steps, actions_seed=0, options=None):
    obs, info = env.reset(seed=seed, options=options)
    rng = np.random.default_rng(actions_seed)
    images, rewards = [obs["image"]], []
    for _ in range(steps):
        obs, reward, terminated, truncated, info = env.step(rng.uniform(-1, 1, 7).astype(np.float32))
        images.append(obs["image"])
        rewards.append(reward)
        assert not truncated
        if terminated:
            break
    return np.stack(images), np.array(rewards)


def test_import_does_not_load_torch_and_registers_both_envs():
    code = ("import sys, gymnasium as gym, roboalign_env; "
            "assert 'torch' not in sys.modules, 'importing roboalign_env imported torch'; "
            "assert {'RoboAlignWorld-v0', 'RoboAlignReal-v0'} <= set(gym.registry)")
    subprocess.run([sys.executable, "-c", code], check=True)


def test_make_without_prior_import_in_a_fresh_process():
    code = ("import sys, gymnasium as gym; "
            "env = gym.make('roboalign_env:RoboAlignWorld-v0', device='cpu'); "
            "obs, info = env.reset(seed=0); "
            "assert obs['image'].shape == (3, 64, 64) and obs['image'].dtype.name == 'uint8'; "
            "print(type(env.unwrapped).__name__)")
    out = subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, text=True).stdout
    assert "RoboAlignWorldEnv" in out


def test_no_network_is_used():
    """Block every socket connection: making, resetting and stepping the default env must still work."""
    code = ("import socket\n"
            "def refuse(*a, **k): raise RuntimeError('network use: ' + repr(a))\n"
            "socket.socket.connect = refuse; socket.create_connection = refuse; socket.getaddrinfo = refuse\n"
            "import gymnasium as gym, roboalign_env\n"
            "env = gym.make('RoboAlignWorld-v0', device='cpu'); env.reset(seed=0)\n"
            "env.step(env.action_space.sample()); print('ok')\n")
    out = subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, text=True).stdout
    assert out.strip().endswith("ok")


def test_both_env_checkers_pass_with_warnings_as_errors(env):
    from gymnasium.utils.env_checker import check_env
    from stable_baselines3.common.env_checker import check_env as sb3_check_env

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        check_env(env.unwrapped)
        sb3_check_env(env.unwrapped, warn=True)


def test_spaces_step_types_and_info(env):
    obs, info = env.reset(seed=0, options={"source": "lift_panda"})
    assert env.observation_space.contains(obs) and env.action_space.shape == (7,)
    assert obs["task"].tolist() == [1.0, 0.0, 0.0, 0.0]
    assert info["source"] == "lift_panda" and info["instruction"]
    obs, reward, terminated, truncated, info = env.step(env.action_space.sample())
    assert type(reward) is float and type(terminated) is bool and type(truncated) is bool
    assert set(info["scores"]) == {"instruction_following", "manipulation_success", "action_outcome_consistency",
                                   "temporal_consistency", "contact_realism", "physics_adherence"}
    assert 0.0 <= info["aggregate"] <= 1.0
    frame = env.render()
    assert frame.shape == (64, 64, 3) and np.array_equal(frame, obs["image"].transpose(1, 2, 0))


def test_reset_starts_from_a_real_seed_frame_or_a_given_one(env, seeds):
    obs, info = env.reset(seed=1, options={"seed_index": 5})
    assert np.array_equal(obs["image"].transpose(1, 2, 0), seeds.frames[5, 0])
    assert info["instruction"] in seeds.meta[5]["instructions"]
    frame = seeds.frames[9, 3]
    obs, info = env.reset(options={"frame": frame, "instruction": "open the door"})
    assert np.array_equal(obs["image"].transpose(1, 2, 0), frame) and info["instruction"] == "open the door"
    with pytest.raises(ValueError, match="instruction"):
        env.reset(options={"frame": frame})
    with pytest.raises(ValueError, match="uint8"):
        env.reset(options={"frame": frame.astype(np.float32), "instruction": "x"})
    with pytest.raises(ValueError, match="source"):
        env.reset(options={"source": "cartpole"})


@pytest.mark.parametrize("temperature", [0.0, 1.0])
def test_same_seed_same_observations_and_rewards(temperature):
    env = gym.make("RoboAlignWorld-v0", device="cpu", temperature=temperature, top_k=50)
    a_images, a_rewards = rollout(env, seed=7, steps=20)
    b_images, b_rewards = rollout(env, seed=7, steps=20)
    assert len(a_rewards) == 20
    assert np.array_equal(a_images, b_images) and np.array_equal(a_rewards, b_rewards)
    assert not np.array_equal(a_images[0], a_images[-1])  # the dream moved
    # reset(seed); reset() continues the same random stream, so it is deterministic too.
    env.reset(seed=3)
    first = env.reset()[0]["image"]
    env.reset(seed=3)
    assert np.array_equal(env.reset()[0]["image"], first)


@pytest.mark.parametrize("precision", [{"bf16": True}, {"int8": True}])
def test_reduced_precision_dream_stays_close_to_float32(precision):
    images = {}
    for name, flags in (("float32", {}), ("reduced", precision)):
        env = gym.make("RoboAlignWorld-v0", device="cpu", temperature=0.0, **flags)
        images[name], rewards = rollout(env, seed=0, steps=3)
        assert np.isfinite(rewards).all()
    assert np.array_equal(images["float32"][0], images["reduced"][0])
    # the same frames up to rounding (another start differs by ~120 grey levels)
    assert np.abs(images["float32"][1:].astype(int) - images["reduced"][1:]).mean() < 2


def test_sampling_depends_on_the_seed():
    env = gym.make("RoboAlignWorld-v0", device="cpu", temperature=1.0)
    options = {"seed_index": 0}
    a, _ = rollout(env, seed=1, steps=4, options=options)
    b, _ = rollout(env, seed=2, steps=4, options=options)
    assert np.array_equal(a[0], b[0]) and not np.array_equal(a[1:], b[1:])


def test_single_env_matches_the_vector_env_with_one_env(env):
    images, rewards = rollout(env, seed=11, steps=6)
    venv = gym.make_vec("RoboAlignWorld-v0", num_envs=1, device="cpu")
    assert isinstance(venv.unwrapped, roboalign_env.envs.vector.RoboAlignWorldVectorEnv)  # native, not Sync
    obs, _ = venv.reset(seed=11)
    rng = np.random.default_rng(0)
    v_images, v_rewards = [obs["image"][0]], []
    for _ in range(6):
        obs, reward, *_ = venv.step(rng.uniform(-1, 1, (1, 7)).astype(np.float32))
        v_images.append(obs["image"][0])
        v_rewards.append(reward[0])
    assert np.array_equal(images, np.stack(v_images))
    np.testing.assert_allclose(rewards, v_rewards, atol=1e-6)


def test_vector_env_autoresets_in_the_same_step(env):
    from gymnasium.vector import AutoresetMode

    venv = gym.make_vec("RoboAlignWorld-v0", num_envs=3, max_episode_steps=3, device="cpu")
    assert venv.metadata["autoreset_mode"] == AutoresetMode.SAME_STEP
    obs, _ = venv.reset(seed=0)
    actions = np.zeros((3, 7), np.float32)
    for step in range(3):
        obs, reward, terminated, truncated, info = venv.step(actions)
    assert truncated.all() and not terminated.any()
    assert info["_final_obs"].all() and info["_final_info"].all()
    # The final observation is what the episode's third step produced: replay env 1 alone.
    env.reset(seed=1)  # the vector env seeds env i with seed + i
    for _ in range(3):
        single_obs, *_ = env.step(actions[0])
    assert np.array_equal(info["final_obs"][1]["image"], single_obs["image"])
    # The returned observation already starts the next episode, from a real seed frame.
    seeds = SeedClips.load(DEFAULT_MODEL / "seeds")
    for i in range(3):
        assert any(np.array_equal(obs["image"][i].transpose(1, 2, 0), f) for f in seeds.frames[:, 0])
        assert not np.array_equal(obs["image"][i], info["final_obs"][i]["image"])
    # Counters restarted: the next two steps do not truncate.
    for _ in range(2):
        obs, reward, terminated, truncated, info = venv.step(actions)
        assert not truncated.any() and "final_obs" not in info


def test_judged_success_terminates_and_a_step_after_it_is_an_error():
    env = gym.make("RoboAlignWorld-v0", device="cpu", success_threshold=0.0, reward_mode="terminal")
    env.reset(seed=0)
    _, reward, terminated, truncated, info = env.step(np.zeros(7, np.float32))
    assert terminated and not truncated and info["success"]
    assert reward == pytest.approx(info["aggregate"])  # terminal mode pays the aggregate at the end
    with pytest.raises(RuntimeError, match="reset"):
        env.step(np.zeros(7, np.float32))
    fresh = gym.make("RoboAlignWorld-v0", device="cpu").unwrapped  # without Gymnasium's order check
    with pytest.raises(RuntimeError, match="reset"):
        fresh.step(np.zeros(7, np.float32))


def test_the_env_decodes_with_the_models_own_window_unless_told(tmp_path):
    """The default ``window="model"`` is the checkpoint's ``swr_window``; a window asked for replaces it, and
    one its anchor-frames model cannot decode is refused when the env is made, naming the window."""
    import torch

    from roboalign_env.models.tokenizer import TokenizerConfig, VideoTokenizer
    from roboalign_env.models.transformer import DynamicsTransformer, DynamicsTransformerConfig
    from roboalign_env.models.world_model import WorldModel

    torch.manual_seed(0)
    config = DynamicsTransformerConfig(**TINY_TRANSFORMER, parallel_frames=True, markov_frames=True,
                                       anchor_frames=True, anchor_horizon=4, swr_window=3)
    WorldModel(VideoTokenizer(TokenizerConfig(**TINY_TOKENIZER)), DynamicsTransformer(config)).eval().save(tmp_path)
    for kwargs, window in (({}, 3), ({"window": 5}, 5)):
        env = gym.make("RoboAlignWorld-v0", device="cpu", checkpoint=str(tmp_path), **kwargs)
        env.reset(seed=0)
        assert env.unwrapped.core.dream.window == window
        env.step(np.zeros(7, np.float32))
        env.close()
    with pytest.raises(ValueError, match="window 6: an anchor_frames model predicts at most 4"):
        gym.make("RoboAlignWorld-v0", device="cpu", checkpoint=str(tmp_path), window=6)


def test_potential_rewards_telescope_and_absolute_mode_pays_the_aggregate():
    env = gym.make("RoboAlignWorld-v0", device="cpu")
    _, info = env.reset(seed=4)
    start, total = info["aggregate"], 0.0
    for _ in range(5):
        _, reward, _, _, info = env.step(np.full(7, 0.5, np.float32))
        total += reward
    assert total == pytest.approx(info["aggregate"] - start, abs=1e-5)
    absolute = gym.make("RoboAlignWorld-v0", device="cpu", reward_mode="absolute", reward_weights=[0, 1, 0, 0, 0, 0])
    absolute.reset(seed=4)
    _, reward, _, _, info = absolute.step(np.zeros(7, np.float32))
    assert reward == pytest.approx(info["scores"]["manipulation_success"] / 10, abs=1e-5)


@pytest.mark.parametrize("bad, match", [
    (np.full(7, np.nan, np.float32), "NaN or inf"),
    (np.array([np.inf] + [0] * 6, np.float32), "NaN or inf"),
    (np.zeros(6, np.float32), r"shape \(7,\)"),
    (np.zeros((2, 7), np.float32), r"shape \(7,\)"),
])
def test_bad_actions_get_clear_errors(env, bad, match):
    env.reset(seed=0)
    with pytest.raises(ValueError, match=match):
        env.step(bad)


def test_out_of_range_actions_are_clipped(env):
    env.reset(seed=2)
    clipped = env.step(np.clip(np.linspace(-3, 3, 7), -1, 1).astype(np.float32))[0]["image"]
    env.reset(seed=2)
    assert np.array_equal(env.step(np.linspace(-3, 3, 7).astype(np.float32))[0]["image"], clipped)


def test_unknown_keyword_is_refused():
    with pytest.raises(TypeError, match="unknown keyword"):
        gym.make("RoboAlignWorld-v0", windw=3)


def test_sb3_adapter_sets_terminal_observation_and_ppo_trains():
    from stable_baselines3 import PPO

    from roboalign_env.envs.sb3 import make_sb3_env

    venv = make_sb3_env(num_envs=2, max_episode_steps=4, device="cpu")
    venv.seed(5)
    obs = venv.reset()
    assert obs["image"].shape == (2, 3, 64, 64)
    for step in range(4):
        last = venv.step(np.zeros((2, 7), np.float32))
    obs, rewards, dones, infos = last
    assert dones.all() and rewards.dtype == np.float32
    for info in infos:
        assert info["TimeLimit.truncated"] is True
        assert info["terminal_observation"]["image"].shape == (3, 64, 64)
        assert not np.array_equal(info["terminal_observation"]["image"], obs["image"][0])
    model = PPO("MultiInputPolicy", venv, n_steps=128, batch_size=64, n_epochs=1, seed=0, device="cpu")
    before = [p.detach().clone() for p in model.policy.parameters()]
    model.learn(256)
    assert model.num_timesteps >= 256
    assert any(not np.allclose(b.numpy(), p.detach().numpy()) for b, p in zip(before, model.policy.parameters()))


def test_sac_trains_through_the_adapter():
    from stable_baselines3 import SAC

    from roboalign_env.envs.sb3 import make_sb3_env

    venv = make_sb3_env(num_envs=2, max_episode_steps=8, device="cpu")
    model = SAC("MultiInputPolicy", venv, buffer_size=64, learning_starts=8, batch_size=8, seed=0, device="cpu")
    before = [p.detach().clone() for p in model.actor.parameters()]
    model.learn(24)
    assert model.num_timesteps >= 24 and model.replay_buffer.size() > 0
    assert any(not np.allclose(b.numpy(), p.detach().numpy()) for b, p in zip(before, model.actor.parameters()))
