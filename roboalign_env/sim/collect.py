"""Episode collection in real robosuite: parallel, resumable, deterministic per seed.

Each :class:`EpisodeSpec` (source, scripted failure mode or exploration mode, seed) becomes one
episode file. Worker processes keep one env and renderer per source alive across episodes (building
a robosuite model takes seconds). A re-run skips episodes whose file exists; files are written
atomically, so a kill loses only the episodes in flight.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable

import numpy as np

from roboalign_env.data.episodes import (
    FORMAT_VERSION,
    Episode,
    episode_path,
    load_episode,
    read_manifest,
    save_episode,
    write_manifest,
)
from roboalign_env.sim.exploration import DEFAULT_EXPLORATION_MODES, EXPLORATION_MODES, exploration_policy
from roboalign_env.sim.rendering import CAMERA, place_camera, setup_rendering
from roboalign_env.sim.sources import SOURCES
from roboalign_env.sim.workers import cached_env, imap_workers

EXPLORATION_SEED_OFFSET = 50_000
"""Exploration episodes of a plan use seeds ``first_seed + EXPLORATION_SEED_OFFSET + i``: apart from
the scripted seeds, so that more scripted episodes never shift the exploration ones (or back)."""


@dataclass(frozen=True)
class EpisodeSpec:
    """What to collect: the source, the policy and the seed (placement, noise, policy).

    ``failure`` names a failure mode of the source's scripted policy (``nominal`` included) or one
    of :data:`~roboalign_env.sim.exploration.EXPLORATION_MODES`; the episode's ``meta["failure"]``
    records it.
    """

    source: str
    failure: str
    seed: int

    @property
    def episode_id(self) -> str:
        return f"{self.source}-{self.failure}-{self.seed:05d}"


def plan_episodes(
    sources: list[str],
    episodes_per_source: int,
    nominal_fraction: float = 0.5,
    first_seed: int = 0,
    exploration_fraction: float = 0.0,
    exploration_modes: Iterable[str] = DEFAULT_EXPLORATION_MODES,
) -> list[EpisodeSpec]:
    """Episode specs for each source: ``episodes_per_source`` scripted ones (``nominal_fraction``
    nominal, the rest cycling its failure modes), then exploration episodes cycling
    ``exploration_modes``, as many as make them ``exploration_fraction`` of the source's episodes
    (0.5: as many as the scripted ones).

    Scripted seeds are ``first_seed, first_seed + 1, ...`` per source, so adding episodes later
    extends the same list (and the same files) instead of reshuffling it; exploration seeds start at
    ``first_seed + EXPLORATION_SEED_OFFSET``, so the scripted specs do not depend on the exploration
    arguments.
    """
    unknown = sorted(set(sources) - set(SOURCES))
    if unknown:
        raise ValueError(f"unknown source(s) {unknown}; expected some of {list(SOURCES)}")
    if episodes_per_source < 0:
        raise ValueError(f"episodes_per_source must be >= 0, got {episodes_per_source}")
    if not 0.0 <= nominal_fraction <= 1.0:
        raise ValueError(f"nominal_fraction must be in [0, 1], got {nominal_fraction}")
    if not 0.0 <= exploration_fraction < 1.0:
        raise ValueError(f"exploration_fraction must be in [0, 1), got {exploration_fraction}")
    exploration_modes = tuple(exploration_modes)
    bad = sorted(set(exploration_modes) - set(EXPLORATION_MODES))
    if bad:
        raise ValueError(f"unknown exploration_modes {bad}; expected some of {list(EXPLORATION_MODES)}")
    if exploration_fraction > 0 and not exploration_modes:
        raise ValueError("exploration_modes is empty, but exploration_fraction > 0 asks for exploration episodes")
    if len(set(exploration_modes)) != len(exploration_modes):
        raise ValueError(f"exploration_modes lists a mode twice: {list(exploration_modes)}")
    n_explore = round(episodes_per_source * exploration_fraction / (1.0 - exploration_fraction))
    specs = []
    for name in sources:
        source = SOURCES[name]
        failures = [f for f in source.failure_modes if f != "nominal"]
        n_nominal = round(episodes_per_source * nominal_fraction)
        for i in range(episodes_per_source):
            seed = first_seed + i
            # Interleave so any prefix of the list has the same mix.
            is_nominal = (i * n_nominal) // episodes_per_source != ((i + 1) * n_nominal) // episodes_per_source
            n_failures_before = i - (i * n_nominal) // episodes_per_source
            failure = "nominal" if is_nominal else failures[n_failures_before % len(failures)]
            specs.append(EpisodeSpec(name, failure, seed))
        for i in range(n_explore):
            seed = first_seed + EXPLORATION_SEED_OFFSET + i
            specs.append(EpisodeSpec(name, exploration_modes[i % len(exploration_modes)], seed))
    return specs


def run_episode(spec: EpisodeSpec, image_size: int = 64, steps: int | None = None,
                camera: str = CAMERA) -> Episode:
    """Run one episode in robosuite and return it (frames rendered at ``image_size`` through ``camera``, a camera
    setting of :func:`~roboalign_env.sim.rendering.parse_camera`).

    ``steps`` shortens (or lengthens) the episode from the source's horizon (for tests); a
    policy's own schedule (e.g. ``explore_prefix``'s switch step) still follows the horizon.
    """
    if steps is not None and steps < 1:
        raise ValueError(f"steps must be >= 1, got {steps}")
    setup_rendering()
    import mujoco
    import robosuite

    from roboalign_env import __version__
    from roboalign_env.sim.robosuite_env import read_state, reset_env

    source = SOURCES[spec.source]
    env, renderer = cached_env(spec.source, image_size, camera)
    obs = reset_env(env, spec.seed)
    rng = np.random.default_rng([spec.seed, 1])
    if spec.failure in EXPLORATION_MODES:
        policy = exploration_policy(spec.failure, source, rng)
    else:
        policy = source.policy(spec.failure, rng)
    num_steps = source.horizon if steps is None else steps
    frames, actions, states = [], [], []
    raw = env.sim.data._data
    for _ in range(num_steps):
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
        "num_steps": num_steps,
        "image_size": image_size,
        "camera": renderer.camera,
        "success": bool(success[-1]),
        "first_success_step": int(np.argmax(success)) if success.any() else None,
        "versions": {"robosuite": robosuite.__version__, "mujoco": mujoco.__version__, "roboalign_env": __version__},
    }
    return Episode(np.stack(frames), np.stack(actions).astype(np.float32), state, meta)


def _collect_one(args) -> dict:
    spec, root, image_size, camera = args
    path = episode_path(root, spec.source, spec.episode_id)
    episode = run_episode(spec, image_size, camera=camera)
    save_episode(path, episode)
    return _manifest_row(episode.meta, path, root)


def _manifest_row(meta: dict, path: Path, root: str | Path) -> dict:
    return {**meta, "path": str(Path(path).relative_to(root))}


def collect(
    root: str | Path, specs: list[EpisodeSpec], workers: int = 1, image_size: int = 64, progress: bool = True,
    camera: str = CAMERA,
) -> list[dict]:
    """Collect every spec not yet on disk under ``root``; rewrite the manifest; return its rows. Every episode
    is seen through ``camera`` (checked against every source's scene before anything runs)."""
    root = Path(root)
    for source in sorted({spec.source for spec in specs}):
        camera_view(source, camera)
    rows, todo = [], []
    for spec in specs:
        path = episode_path(root, spec.source, spec.episode_id)
        if path.is_file():
            meta = load_episode(path, frames=False).meta
            recorded = {"image_size": meta["image_size"], "camera": meta.get("camera", CAMERA)}
            for name, asked in (("image_size", image_size), ("camera", camera)):
                if recorded[name] != asked:
                    raise ValueError(f"{path} was collected with {name}={recorded[name]!r}, but "
                                     f"{name}={asked!r} was asked for; use another --out folder")
            rows.append(_manifest_row(meta, path, root))
        else:
            todo.append((spec, root, image_size, camera))
    for i, row in enumerate(imap_workers(_collect_one, todo, workers, "collect", progress), 1):
        rows.append(row)
        if i % 50 == 0:
            write_manifest(root, rows)
    write_manifest(root, rows)
    return rows


@dataclass(frozen=True)
class CameraView:
    """A fixed pinhole camera: world position, world-from-camera rotation (MuJoCo: the camera looks
    along its -z axis, x right, y up) and the tangent of half its vertical field of view."""

    position: np.ndarray
    rotation: np.ndarray
    tan_half_fovy: float

    def in_view(self, points: np.ndarray, aspect: float = 1.0, margin: float = 0.0) -> np.ndarray:
        """Whether each world point (..., 3) is in front of the camera and projects inside the image,
        or with ``margin`` inside its central ``1 - margin`` part (0.1: the central 90% of each side).

        The test is on normalised image coordinates, so it holds at every resolution of that aspect.
        """
        local = (np.asarray(points, float) - self.position) @ self.rotation
        depth = -local[..., 2]
        with np.errstate(divide="ignore", invalid="ignore"):
            x, y = local[..., 0] / depth, local[..., 1] / depth
        half = (1.0 - margin) * self.tan_half_fovy
        return (depth > 0) & (np.abs(x) < half * aspect) & (np.abs(y) < half)

    def pixels(self, points: np.ndarray, size: int) -> np.ndarray:
        """Where each world point (..., 3) lands in a ``size`` x ``size`` upright image: (..., 2) as (column,
        row) in pixels from the top-left corner (outside [0, size) when the point is out of view)."""
        local = (np.asarray(points, float) - self.position) @ self.rotation
        depth = -local[..., 2]
        with np.errstate(divide="ignore", invalid="ignore"):
            x, y = local[..., 0] / depth, local[..., 1] / depth
        scale = size / (2 * self.tan_half_fovy)
        return np.stack([size / 2 + x * scale, size / 2 - y * scale], -1)


_VIEWS: dict[str, CameraView] = {}


def camera_view(source_name: str, camera: str = CAMERA) -> CameraView:
    """A camera of a source's scene (a camera setting of :func:`~roboalign_env.sim.rendering.parse_camera`), read
    from its robosuite model (built once per process and setting).

    The agentview camera hangs from the world body, so one reset gives its pose for every episode.
    """
    if (source_name, camera) not in _VIEWS:
        setup_rendering()  # before mujoco is first imported: the process may render later
        import mujoco

        from roboalign_env.sim.robosuite_env import make_env, reset_env

        env = make_env(SOURCES[source_name])
        try:
            reset_env(env, 0)
            model, data = env.sim.model._model, env.sim.data._data
            try:
                cam = mujoco.mj_name2id(model, mujoco.mjtObj.mjOBJ_CAMERA, place_camera(model, camera))
            except ValueError as err:
                raise ValueError(f"{source_name}: {err}") from err
            mujoco.mj_forward(model, data)  # the camera's world pose after a move
            _VIEWS[source_name, camera] = CameraView(
                np.array(data.cam_xpos[cam]), np.array(data.cam_xmat[cam]).reshape(3, 3),
                float(np.tan(np.deg2rad(model.cam_fovy[cam]) / 2)),
            )
        finally:
            env.close()
    return _VIEWS[source_name, camera]


def eef_in_view_fraction(episodes: str | Path | Iterable[Episode], by_mode: bool = False) -> dict[str, float]:
    """Fraction of frames whose end effector (``state["eef_pos"]``) projects inside the image.

    Computed after the fact from the recorded positions and each source's camera
    (:func:`camera_view`), so it also covers episodes collected before it existed. ``episodes`` is a
    collection folder (its manifest's episodes, loaded without frames) or episodes. Keys are source
    names, or with ``by_mode`` ``"<source>/<mode>"`` where the mode is the exploration mode, or
    ``scripted`` for every scripted episode (nominal and failures alike).
    """
    if isinstance(episodes, (str, Path)):
        root = Path(episodes)
        episodes = (load_episode(root / row["path"], frames=False) for row in read_manifest(root))
    inside, total = defaultdict(int), defaultdict(int)
    for ep in episodes:
        source = ep.meta["source"]
        key = source
        if by_mode:
            mode = ep.meta["failure"]
            key = f"{source}/{mode if mode in EXPLORATION_MODES else 'scripted'}"
        camera = ep.meta.get("camera", CAMERA)
        inside[key] += int(camera_view(source, camera).in_view(ep.state["eef_pos"]).sum())
        total[key] += len(ep.state["eef_pos"])
    return {key: inside[key] / total[key] for key in sorted(total)}
