"""The native batched ``RoboAlignWorld-v0``: ``gym.make_vec("RoboAlignWorld-v0", num_envs=N)``.

All N dream episodes advance in one world-model forward pass per step. Episodes that end
(judged success, or ``max_episode_steps`` reached: the vector env truncates itself) are reset in
the same step (``AutoresetMode.SAME_STEP``): the returned observation is the new episode's first,
and ``info["final_obs"]`` / ``info["final_info"]`` (masked by ``info["_final_obs"]``) hold the
ended episode's last ones, as Gymnasium's own vector envs do.
"""

from __future__ import annotations

import numpy as np
from gymnasium.utils import seeding
from gymnasium.vector import AutoresetMode, VectorEnv
from gymnasium.vector.utils import batch_space

from roboalign_env.envs.core import DreamCore, DreamSettings, action_space, check_actions, observation_space


class RoboAlignWorldVectorEnv(VectorEnv):
    metadata = {"render_modes": ["rgb_array"], "render_fps": 10, "autoreset_mode": AutoresetMode.SAME_STEP}

    def __init__(self, num_envs: int = 1, max_episode_steps: int | None = 64, render_mode: str | None = None, **settings):
        if render_mode not in (None, "rgb_array"):
            raise ValueError(f"render_mode={render_mode!r}: expected None or 'rgb_array'")
        if max_episode_steps is not None and max_episode_steps < 1:
            raise ValueError(f"max_episode_steps: expected >= 1 or None, got {max_episode_steps}")
        self.render_mode = render_mode
        self.num_envs = num_envs
        self.max_episode_steps = max_episode_steps
        self.single_observation_space = observation_space()
        self.single_action_space = action_space()
        self.observation_space = batch_space(self.single_observation_space, num_envs)
        self.action_space = batch_space(self.single_action_space, num_envs)
        self.core = DreamCore(num_envs, DreamSettings.from_kwargs(settings, "RoboAlignWorld-v0"))
        self._rngs = [seeding.np_random()[0] for _ in range(num_envs)]
        self._steps = np.zeros(num_envs, np.int64)
        self._started = False

    def reset(self, *, seed: int | list[int | None] | None = None, options: dict | None = None):
        """Reset every env; ``seed`` is an int (env i gets ``seed + i``) or one seed per env."""
        self._check_open("reset()")
        if isinstance(seed, (list, tuple)):
            seeds = list(seed)
        else:
            seeds = [None if seed is None else seed + i for i in range(self.num_envs)]
        if len(seeds) != self.num_envs:
            raise ValueError(f"seed: got {len(seeds)} seeds for {self.num_envs} envs")
        self._rngs = [seeding.np_random(s)[0] for s in seeds]
        self._np_random, self._np_random_seed = seeding.np_random(seeds[0])
        infos = self.core.reset_rows(range(self.num_envs), self._rngs, [options] * self.num_envs)
        self._steps[:] = 0
        self._started = True
        return self.core.observations(), self._merge(infos)

    def step(self, actions):
        self._check_open("step()")
        if not self._started:
            raise RuntimeError("step() called before reset(); call reset() first")
        actions = check_actions(actions, (self.num_envs, self.single_action_space.shape[0]))  # before anything changes
        self._steps += 1
        truncated = self._steps >= self.max_episode_steps if self.max_episode_steps else np.zeros(self.num_envs, bool)
        rewards, terminated, infos = self.core.step(actions, truncated)
        ended = np.flatnonzero(terminated | truncated)
        if len(ended):
            final_obs = {r: self.core.observation(r) for r in ended}
            final_info = {r: infos[r] for r in ended}
            fresh = self.core.reset_rows(ended, [self._rngs[r] for r in ended], [None] * len(ended))
            for r, info in zip(ended, fresh):
                infos[r] = {**info, "final_obs": final_obs[r], "final_info": final_info[r]}
            self._steps[ended] = 0
        return self.core.observations(), rewards, terminated.copy(), truncated.copy(), self._merge(infos)

    def close_extras(self, **kwargs) -> None:
        """Release the models; any later ``reset`` or ``step`` is an error."""
        self.core = None

    def _check_open(self, call: str) -> None:
        if self.closed:
            raise RuntimeError(f"{call} called after close(); make a new environment")

    def render(self) -> tuple[np.ndarray, ...] | None:
        if self.render_mode != "rgb_array" or self.core is None:
            return None
        return tuple(frame.transpose(1, 2, 0).copy() for frame in self.core.frames)

    def _merge(self, infos: list[dict]) -> dict:
        merged: dict = {}
        for i, info in enumerate(infos):
            merged = self._add_info(merged, info, i)
        return merged
