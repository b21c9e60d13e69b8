"""Stable-Baselines3 adapter for the native batched dream.

SB3 cannot consume ``gym.make_vec`` output (its ``VecEnv`` has its own API), so this wraps the
native vector env without copying its batching away::

    from stable_baselines3 import PPO
    from roboalign_env.envs.sb3 import make_sb3_env

    venv = make_sb3_env(num_envs=8)
    PPO("MultiInputPolicy", venv, n_steps=64).learn(10_000)

Episodes that end are reset in the same step (SB3's convention as well): ``infos[i]`` then carries
``terminal_observation`` (the true last frame of the ended episode) and ``TimeLimit.truncated``
(True when the step limit, not judged success, ended it).
"""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np

from roboalign_env.envs.vector import RoboAlignWorldVectorEnv
from roboalign_env.extras import require

VecEnv = require("stable_baselines3.common.vec_env", "sb3", "the Stable-Baselines3 adapter").VecEnv


class RoboAlignSB3VecEnv(VecEnv):
    def __init__(self, venv: RoboAlignWorldVectorEnv):
        self.venv = venv
        self.render_mode = venv.render_mode  # SB3 reads it in VecEnv.__init__
        super().__init__(venv.num_envs, venv.single_observation_space, venv.single_action_space)
        self._actions: np.ndarray | None = None

    def reset(self):
        seeds = self._seeds if any(s is not None for s in self._seeds) else None
        options = self._options[0] if self._options and self._options[0] else None
        obs, info = self.venv.reset(seed=seeds, options=options)
        self.reset_infos = [_row(info, i) for i in range(self.num_envs)]
        self._reset_seeds()
        self._reset_options()
        return obs

    def step_async(self, actions: np.ndarray) -> None:
        self._actions = np.asarray(actions, dtype=np.float32).reshape(self.num_envs, -1)

    def step_wait(self):
        obs, rewards, terminated, truncated, info = self.venv.step(self._actions)
        dones = terminated | truncated
        infos = []
        for i in range(self.num_envs):
            row = _row(info, i)
            final_obs, final_info = row.pop("final_obs", None), row.pop("final_info", None)
            if dones[i]:  # as SB3's DummyVecEnv: the ended episode's info, the new one's in reset_infos
                self.reset_infos[i] = row
                row = {**final_info, "terminal_observation": final_obs,
                       "TimeLimit.truncated": bool(truncated[i] and not terminated[i])}
            infos.append(row)
        return obs, rewards.astype(np.float32), dones, infos

    def close(self) -> None:
        self.venv.close()

    def get_images(self) -> Sequence[np.ndarray | None]:
        return [frame.transpose(1, 2, 0).copy() for frame in self.venv.core.frames]

    def get_attr(self, attr_name: str, indices=None) -> list[Any]:
        return [getattr(self.venv, attr_name)] * len(self._indices(indices))

    def set_attr(self, attr_name: str, value: Any, indices=None) -> None:
        setattr(self.venv, attr_name, value)

    def env_method(self, method_name: str, *args, indices=None, **kwargs) -> list[Any]:
        return [getattr(self.venv, method_name)(*args, **kwargs)] * len(self._indices(indices))

    def env_is_wrapped(self, wrapper_class, indices=None) -> list[bool]:
        return [False] * len(self._indices(indices))

    def _indices(self, indices) -> list[int]:
        if indices is None:
            return list(range(self.num_envs))
        return [indices] if isinstance(indices, int) else list(indices)


def _row(info: dict, i: int) -> dict:
    """Env ``i``'s entries of a Gymnasium vector ``info`` (dict of arrays with ``_key`` masks)."""
    row = {}
    for key, value in info.items():
        if key.startswith("_") or not info.get(f"_{key}", np.ones(i + 1, bool))[i]:
            continue
        row[key] = _row(value, i) if isinstance(value, dict) else _item(value[i])
    return row


def _item(value):
    return value.item() if isinstance(value, np.generic) else value


def make_sb3_env(num_envs: int = 1, max_episode_steps: int = 64, **settings) -> RoboAlignSB3VecEnv:
    """The native vector dream with ``num_envs`` envs, as an SB3 ``VecEnv`` (``settings``: see
    :class:`~roboalign_env.envs.core.DreamSettings`)."""
    return RoboAlignSB3VecEnv(RoboAlignWorldVectorEnv(num_envs, max_episode_steps, **settings))
