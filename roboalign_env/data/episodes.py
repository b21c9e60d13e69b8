"""The episode format: one compressed ``.npz`` per episode plus a JSONL manifest.

An episode of ``L`` control steps holds ``L + 1`` frames: ``frames[t]`` is what the camera saw
before ``actions[t]`` was sent, and ``frames[L]`` the final state. Per-frame privileged state
arrays (``eef_pos``, ``object_pos``, contact facts, ``success``, ``qpos``...) are aligned with
``frames``. ``meta`` is a JSON string (source, task, robot, failure mode, seed, instruction
templates, versions...). Nothing is pickled: :func:`load_episode` opens files with
``allow_pickle=False``.

Layout of a collection folder::

    episodes/<source>/<episode_id>.npz
    manifest.jsonl          one row per finished episode (its ``meta`` plus the relative path)
"""

from __future__ import annotations

import json
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np

from roboalign_env.data.io import atomic_savez, read_jsonl, write_jsonl
from roboalign_env.data.paths import check_id, folders, inside

FORMAT_VERSION = 1
MANIFEST = "manifest.jsonl"
# Per-frame arrays every episode must carry (besides ``frames``), checked on load.
FRAME_KEYS = (
    "eef_pos", "eef_quat", "gripper_opening", "gripper_qpos", "joint_pos", "object_pos",
    "object_quat", "gripper_contact", "robot_contact", "grasp", "support_contact",
    "support_penetration", "robot_penetration", "visible", "success", "progress", "qpos", "qvel",
)


class EpisodeFormatError(ValueError):
    """An episode file is missing, truncated or does not follow the episode format."""


@dataclass
class Episode:
    """A loaded episode: ``frames`` (L+1, H, W, 3) uint8, ``actions`` (L, 7), ``state`` per frame."""

    frames: np.ndarray
    actions: np.ndarray
    state: dict[str, np.ndarray]
    meta: dict

    @property
    def num_steps(self) -> int:
        return len(self.actions)

    @property
    def episode_id(self) -> str:
        return self.meta["episode_id"]


def episode_path(root: str | Path, source: str, episode_id: str) -> Path:
    return Path(root) / "episodes" / check_id(source, "source") / f"{check_id(episode_id, 'episode_id')}.npz"


def save_episode(path: str | Path, episode: Episode) -> Path:
    """Write ``episode`` atomically to ``path`` after checking its shapes."""
    _check(episode, Path(path))
    return atomic_savez(
        path,
        frames=episode.frames,
        actions=episode.actions,
        meta=np.array(json.dumps(episode.meta, sort_keys=True)),
        **{f"state/{k}": v for k, v in episode.state.items()},
    )


def load_episode(path: str | Path, frames: bool = True) -> Episode:
    """Load and validate an episode file; any problem raises :class:`EpisodeFormatError` naming it."""
    path = Path(path)
    if not path.is_file():
        raise EpisodeFormatError(f"{path}: episode file not found (re-run `roboalign collect` to create it)")
    try:
        with np.load(path, allow_pickle=False) as data:
            names = set(data.files)
            missing = {"actions", "meta"} - names
            if frames:
                missing |= {"frames"} - names
            missing |= {f"state/{k}" for k in FRAME_KEYS} - names
            if missing:
                raise EpisodeFormatError(f"{path}: not an episode file, missing arrays {sorted(missing)}")
            meta = json.loads(str(data["meta"]))
            episode = Episode(
                frames=data["frames"] if frames else np.zeros((0, 0, 0, 3), np.uint8),
                actions=data["actions"],
                state={k: data[f"state/{k}"] for k in FRAME_KEYS},
                meta=meta,
            )
    except (zipfile.BadZipFile, EOFError, OSError, json.JSONDecodeError, KeyError) as err:
        raise EpisodeFormatError(f"{path}: corrupt or truncated episode file ({type(err).__name__}: {err})") from err
    _check(episode, path, frames=frames)
    return episode


def _check(episode: Episode, path: Path, frames: bool = True) -> None:
    steps = len(episode.actions)
    if episode.actions.ndim != 2 or episode.actions.shape[1] != 7:
        raise EpisodeFormatError(f"{path}: actions must have shape (L, 7), got {episode.actions.shape}")
    if not np.all(np.abs(episode.actions) <= 1.0):
        raise EpisodeFormatError(f"{path}: actions must lie in [-1, 1]")
    if frames:
        f = episode.frames
        if f.dtype != np.uint8 or f.ndim != 4 or f.shape[-1] != 3 or len(f) != steps + 1:
            raise EpisodeFormatError(
                f"{path}: frames must be uint8 of shape (L+1, H, W, 3) = ({steps + 1}, H, W, 3), "
                f"got {f.dtype} {f.shape}"
            )
    for key, value in episode.state.items():
        if len(value) != steps + 1:
            raise EpisodeFormatError(f"{path}: state {key!r} has {len(value)} rows, expected {steps + 1}")
    for key in ("episode_id", "source"):
        try:
            check_id(episode.meta.get(key), f"{path}: meta.{key}")
        except ValueError as err:
            raise EpisodeFormatError(str(err)) from None
    if episode.meta.get("format_version") != FORMAT_VERSION:
        raise EpisodeFormatError(
            f"{path}: episode format version {episode.meta.get('format_version')!r}, expected {FORMAT_VERSION}"
        )


def write_manifest(root: str | Path, rows: list[dict]) -> Path:
    """Write the collection manifest (sorted by episode id) atomically."""
    return write_jsonl(Path(root) / MANIFEST, sorted(rows, key=lambda r: r["episode_id"]))


def read_manifest(root: str | Path) -> list[dict]:
    """Rows of a collection's manifest; each has ``path`` relative to ``root`` (checked to stay inside
    it) and a safe ``episode_id`` and ``source`` (see :mod:`roboalign_env.data.paths`)."""
    path = Path(root) / MANIFEST
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no manifest; run `roboalign collect --out {root}` first")
    rows = list(read_jsonl(path))
    for i, row in enumerate(rows, 1):
        if not isinstance(row, dict):
            raise ValueError(f"{path}, line {i}: expected a JSON object, got {type(row).__name__}")
        check_id(row.get("episode_id"), f"{path}, line {i}: episode_id")
        check_id(row.get("source"), f"{path}, line {i}: source")
        inside(root, row.get("path"), f"{path}, line {i}: path")
    return rows


def read_manifests(collections: str | Path | Sequence[str | Path]) -> list[tuple[Path, dict]]:
    """``(root, row)`` for every manifest row of one or more collections (:func:`read_manifest`), in order;
    an episode id found in two of them is an error naming both."""
    found: list[tuple[Path, dict]] = []
    seen: dict[str, Path] = {}
    for root in folders(collections):
        for row in read_manifest(root):
            if row["episode_id"] in seen:
                raise ValueError(f"episode {row['episode_id']!r} is in {seen[row['episode_id']]} and again in {root}; "
                                 "expected collections with distinct episodes (collect the extra one with another --first-seed)")
            seen[row["episode_id"]] = root
            found.append((root, row))
    return found
