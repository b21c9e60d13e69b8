"""Train PPO inside the dream: 8 envs batched in one world-model forward pass, through the SB3 adapter.

    python examples/ppo_in_dream.py            # a few minutes on a laptop CPU
"""

import numpy as np
from stable_baselines3 import PPO

from roboalign_env.envs.policies import save_policy
from roboalign_env.envs.sb3 import make_sb3_env

# Episodes of 32 dream steps; reward = change of the student judge's weighted six-dimension score,
# here weighting Manipulation Success and Instruction Following double.
venv = make_sb3_env(num_envs=8, max_episode_steps=32, bf16=True, reward_weights=(2, 2, 1, 1, 1, 1))
model = PPO("MultiInputPolicy", venv, n_steps=64, batch_size=128, n_epochs=4, learning_rate=3e-4, seed=0, verbose=1)
model.learn(total_timesteps=2048)
save_policy(model, "ppo_dream")  # weights + JSON: loading it unpickles nothing

# Evaluate: mean return over a few dream episodes.
obs, returns, episode = venv.reset(), np.zeros(venv.num_envs), []
while len(episode) < 8:
    action, _ = model.predict(obs, deterministic=True)
    obs, rewards, dones, infos = venv.step(action)
    returns += rewards
    for i in np.flatnonzero(dones):
        episode.append(returns[i])
        returns[i] = 0.0
print(f"mean dream return over {len(episode)} episodes: {np.mean(episode):+.4f}")
print("compare it with real robosuite: roboalign compare --policy ppo:ppo_dream --sources lift_panda")
