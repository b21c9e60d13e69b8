"""The same scripted actions in real robosuite and in the dream, frame by frame.

    python examples/real_vs_dream.py           # ~20 s: one held-out Stack/Sawyer start, 16 steps
"""

import gymnasium as gym
import numpy as np
import torch

import roboalign_env  # noqa: F401
from roboalign_env.eval.metrics import psnr, ssim
from roboalign_env.sim.sources import SOURCES

real = gym.make("RoboAlignReal-v0", source="stack_sawyer")
dream = gym.make("RoboAlignWorld-v0")
obs, info = real.reset(seed=0)
# The dream starts from the very frame and instruction the simulator starts from.
dream.reset(options={"frame": obs["image"], "instruction": info["instruction"], "source": "stack_sawyer"})
policy = SOURCES["stack_sawyer"].policy("nominal", np.random.default_rng(0))
real_frames, dream_frames = [], []
for step in range(16):
    action = policy(info["robosuite_obs"])  # the scripted policy reads the simulator's state
    obs, _, _, _, info = real.step(action)
    dream_obs, *_ = dream.step(action)
    real_frames.append(obs["image"])
    dream_frames.append(dream_obs["image"])
to_float = lambda frames: torch.from_numpy(np.stack(frames)).float() / 255  # noqa: E731
print("per-step SSIM:", np.round(ssim(to_float(dream_frames), to_float(real_frames)).numpy(), 3))
print("per-step PSNR:", np.round(psnr(to_float(dream_frames), to_float(real_frames)).numpy(), 1))
print("for plots, videos and student scores: roboalign compare --sources stack_sawyer")
