"""Per-process robosuite envs, and per-episode jobs run in worker processes with a progress bar.

Workers are *spawned* (not forked): each builds its own MuJoCo models and OpenGL context, which
must not be shared across a fork.
"""

from __future__ import annotations

import multiprocessing as mp
import os
from typing import Callable, Iterable, Iterator

from tqdm import tqdm

from roboalign_env.sim.rendering import CAMERA

_CACHE: dict[tuple[str, int, str], tuple] = {}


def cached_env(source_name: str, image_size: int, camera: str = CAMERA):
    """This process's (robosuite env, renderer) for a source and camera setting
    (:func:`~roboalign_env.sim.rendering.parse_camera`), built once: a model takes seconds."""
    from roboalign_env.sim.rendering import env_renderer, setup_rendering

    setup_rendering()
    from roboalign_env.sim.robosuite_env import make_env
    from roboalign_env.sim.sources import SOURCES

    key = (source_name, image_size, camera)
    if key not in _CACHE:
        env = make_env(SOURCES[source_name])
        _CACHE[key] = (env, env_renderer(env, image_size, camera))
    return _CACHE[key]


def init_worker() -> None:
    from roboalign_env.sim.rendering import setup_rendering

    setup_rendering()
    os.environ.setdefault("LP_NUM_THREADS", "1")  # one llvmpipe render thread per worker process


def imap_workers(fn: Callable, items: list, workers: int, desc: str, progress: bool = True) -> Iterator:
    """Yield ``fn(item)`` for every item (in completion order with ``workers > 1``)."""
    bar = tqdm(total=len(items), desc=desc, unit="ep", disable=not progress)
    pool = None
    try:
        if workers <= 1:
            init_worker()
            results: Iterable = map(fn, items)
        else:
            pool = mp.get_context("spawn").Pool(workers, initializer=init_worker)
            results = pool.imap_unordered(fn, items)
        for result in results:
            bar.update()
            yield result
    finally:
        bar.close()
        if pool is not None:
            pool.terminate()
