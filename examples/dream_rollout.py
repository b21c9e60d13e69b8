"""Roll out random actions in the dream (the default model shipped in the package) and save a gif.

    python examples/dream_rollout.py
"""

import gymnasium as gym
import imageio.v3 as iio

import roboalign_env  # noqa: F401  (registers RoboAlignWorld-v0)

env = gym.make("RoboAlignWorld-v0", render_mode="rgb_array")
obs, info = env.reset(seed=0, options={"source": "lift_panda"})
print("instruction:", info["instruction"])
frames, total = [env.render()], 0.0
for step in range(24):
    obs, reward, terminated, truncated, info = env.step(env.action_space.sample())
    frames.append(env.render())
    total += reward
    if terminated or truncated:
        break
print(f"return {total:+.4f}; judge scores at the end: {info['scores']}")
iio.imwrite("dream_rollout.gif", frames, duration=100, loop=0)
print("wrote dream_rollout.gif")
