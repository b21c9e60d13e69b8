"""Scripted episode collection in real robosuite: parallel, resumable, deterministic per seed.

Each :class:`EpisodeSpec` (source, failure mode, seed) becomes one episode file. Worker processes
keep one env and renderer per source alive across episodes (building a robosuite model takes
seconds). A re-run skips episodes whose file exists; files are written atomically, so a kill loses
only the episodes in flight.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from roboalign_env.data.episodes import (
    FORMAT_VERSION,
    Episode,
    episode_path,
    load_episode,
    save_episode,
    write_manifest,
)
from roboalign_env.sim.sources import SOURCES
from roboalign_env.sim.workers import cached_env, imap_workers


@dataclass(frozen=True)
class EpisodeSpec:
    """What to collect: the source, the policy's failure mode and the seed (placement, noise, policy)."""

    source: str
    failure: str
    seed: int

    @property
    def episode_id(self) -> str:
        return f"{self.source}-{self.failure}-{self.seed:05d}"


def plan_episodes(
    sources: list[str], episodes_per_source: int, nominal_fraction: float = 0.5, first_seed: int = 0
) -> list[EpisodeSpec]:
    """Episode specs for each source: ``nominal_fraction`` nominal, the rest cycling its failure modes.

    Seeds are ``first_seed, first_seed + 1, ...`` per source, so adding episodes later extends the
    same list (and the same files) instead of reshuffling it.
    """
    unknown = sorted(set(sources) - set(SOURCES))
    if unknown:
        raise ValueError(f"unknown source(s) {unknown}; expected some of {list(SOURCES)}")
    if not 0.0 <= nominal_fraction <= 1.0:
        raise ValueError(f"nominal_fraction must be in [0, 1], got {nominal_fraction}")
    specs = []
    for name in sources:
        source = SOURCES[name]
        failures = [f for f in source.failure_modes if f != "nominal"]
        n_nominal = round(episodes_per_source * nominal_fraction)
        for i in range(episodes_per_source):
            seed = first_seed + i
            # Interleave so any prefix of the list has the same mix.
            is_nominal = (i * n_nominal) // episodes_per_source != ((i + 1) * n_nominal) // episodes_per_source
            failure = "nominal" if is_nominal else failures[(i - (i * n_nominal) // episodes_per_source) % len(failures)]
            specs.append(EpisodeSpec(name, failure, seed))
    return specs


def run_episode(spec: EpisodeSpec, image_size: int = 64) -> Episode:
    """Run one scripted episode in robosuite and return it (frames rendered at ``image_size``)."""
    from roboalign_env.sim.rendering import setup_rendering

    setup_rendering()
    import mujoco
    import robosuite

    from roboalign_env import __version__
    from roboalign_env.sim.robosuite_env import read_state, reset_env

    source = SOURCES[spec.source]
    env, renderer = cached_env(spec.source, image_size)
    obs = reset_env(env, spec.seed)
    policy = source.policy(spec.failure, np.random.default_rng([spec.seed, 1]))
    frames, actions, states = [], [], []
    raw = env.sim.data._data
    for _ in range(source.horizon):
        states.append(read_state(env, source))
        frames.append(renderer.render(raw))
        action = policy(obs)
        actions.append(action)
        obs, _, _, _ = env.step(action)
    states.append(read_state(env, source))
    frames.append(renderer.render(raw))
    state = {k: np.stack([s[k] for s in states]) for k in states[0]}
    success = state["success"]
    meta = {
        "format_version": FORMAT_VERSION,
        "episode_id": spec.episode_id,
        "source": source.name,
        "task": source.task,
        "robot": source.robot,
        "failure": spec.failure,
        "seed": spec.seed,
        "instruction": source.instructions[0],
        "instruction_templates": list(source.instructions),
        "objects": list(source.objects),
        "control_freq": source.control_freq,
        "num_steps": source.horizon,
        "image_size": image_size,
        "camera": renderer.camera,
        "success": bool(success[-1]),
        "first_success_step": int(np.argmax(success)) if success.any() else None,
        "versions": {"robosuite": robosuite.__version__, "mujoco": mujoco.__version__, "roboalign_env": __version__},
    }
    return Episode(np.stack(frames), np.stack(actions).astype(np.float32), state, meta)


def _collect_one(args) -> dict:
    spec, root, image_size = args
    path = episode_path(root, spec.source, spec.episode_id)
    episode = run_episode(spec, image_size)
    save_episode(path, episode)
    return _manifest_row(episode.meta, path, root)


def _manifest_row(meta: dict, path: Path, root: str | Path) -> dict:
    return {**meta, "path": str(Path(path).relative_to(root))}


def collect(
    root: str | Path, specs: list[EpisodeSpec], workers: int = 1, image_size: int = 64, progress: bool = True
) -> list[dict]:
    """Collect every spec not yet on disk under ``root``; rewrite the manifest; return its rows."""
    root = Path(root)
    rows, todo = [], []
    for spec in specs:
        path = episode_path(root, spec.source, spec.episode_id)
        if path.is_file():
            meta = load_episode(path, frames=False).meta
            if meta["image_size"] != image_size:
                raise ValueError(
                    f"{path} was collected at image_size={meta['image_size']}, but image_size={image_size} "
                    "was asked for; use another --out folder"
                )
            rows.append(_manifest_row(meta, path, root))
        else:
            todo.append((spec, root, image_size))
    for i, row in enumerate(imap_workers(_collect_one, todo, workers, "collect", progress), 1):
        rows.append(row)
        if i % 50 == 0:
            write_manifest(root, rows)
    write_manifest(root, rows)
    return rows
