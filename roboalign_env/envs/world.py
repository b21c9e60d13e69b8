"""``RoboAlignWorld-v0``: one dream episode at a time (see :mod:`roboalign_env.envs.core`).

    >>> import gymnasium as gym, roboalign_env
    >>> env = gym.make("RoboAlignWorld-v0")                      # the default model, no download
    >>> obs, info = env.reset(seed=0, options={"source": "lift_panda"})
    >>> obs["image"].shape, info["instruction"]
    ((3, 64, 64), 'lift the red cube')
    >>> obs, reward, terminated, truncated, info = env.step(env.action_space.sample())

``gym.make`` wraps it in ``TimeLimit`` (64 steps by default, ``max_episode_steps=`` to change), which
sets ``truncated``; ``terminated`` means the student judged the manipulation a success.
"""

from __future__ import annotations

import gymnasium as gym
import numpy as np

from roboalign_env.envs.core import (
    DreamCore,
    DreamSettings,
    EpisodeClock,
    action_space,
    check_actions,
    observation_space,
)


class RoboAlignWorldEnv(gym.Env):
    metadata = {"render_modes": ["rgb_array"], "render_fps": 10}

    def __init__(self, render_mode: str | None = None, **settings):
        if render_mode not in (None, "rgb_array"):
            raise ValueError(f"render_mode={render_mode!r}: expected None or 'rgb_array'")
        self.render_mode = render_mode
        self.observation_space = observation_space()
        self.action_space = action_space()
        self.core = DreamCore(1, DreamSettings.from_kwargs(settings, "RoboAlignWorld-v0"))
        self._clock = EpisodeClock()

    def reset(self, *, seed: int | None = None, options: dict | None = None):
        self._clock.check_open("reset()")
        super().reset(seed=seed)
        (info,) = self.core.reset_rows([0], [self.np_random], [options])
        self._clock.start()
        return self.core.observation(0), info

    def step(self, action):
        self._clock.check_open("step()")
        action = check_actions(action, self.action_space.shape)  # before anything changes
        truncating = np.array([self._clock.tick(self.spec.max_episode_steps if self.spec is not None else None)])
        rewards, success, (info,) = self.core.step(action[None], truncating)
        terminated = bool(success[0])
        if terminated:
            self._clock.end()
        return self.core.observation(0), float(rewards[0]), terminated, False, info

    def close(self) -> None:
        """Release the models; any later ``reset`` or ``step`` is an error."""
        self._clock.close()
        self.core = None
        super().close()

    def render(self) -> np.ndarray | None:
        if self.render_mode != "rgb_array" or self.core is None:
            return None
        return self.core.frames[0].transpose(1, 2, 0).copy()
