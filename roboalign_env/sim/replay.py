"""Replaying actions in robosuite from an episode's exact start (its seed)."""

from __future__ import annotations

import numpy as np

from roboalign_env.sim.rendering import CAMERA


def replay(source_name: str, seed: int, actions: np.ndarray, image_size: int,
           camera: str = CAMERA) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """Restart ``source_name`` from ``seed`` and step it through ``actions`` (A, 7), seen through ``camera`` (a
    camera setting, :func:`~roboalign_env.sim.rendering.parse_camera`).

    Returns the rendered frames (A + 1, H, W, 3) uint8, the start's included, and the privileged
    state trace behind them (:func:`~roboalign_env.sim.robosuite_env.read_state`, stacked per frame:
    what the oracle labels).
    """
    from roboalign_env.sim.robosuite_env import read_state, reset_env
    from roboalign_env.sim.sources import SOURCES
    from roboalign_env.sim.workers import cached_env

    source = SOURCES[source_name]
    env, renderer = cached_env(source_name, image_size, camera)
    reset_env(env, seed)
    frames, states = [], []
    for t in range(len(actions) + 1):
        if t:
            env.step(actions[t - 1])
        states.append(read_state(env, source))
        frames.append(renderer.render(env.sim.data._data))
    return np.stack(frames), {k: np.stack([s[k] for s in states]) for k in states[0]}
