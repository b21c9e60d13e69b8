"""Seed clips: the real starts a dream resets to.

A seed clip is the beginning of a held-out ("test" split) scripted episode: its first ``T + 1``
frames, its first ``T`` actions, and what is needed to start the same episode again in robosuite
(source and robosuite seed) or to instruct it (the source's instruction templates). The dream
resets to a clip's first frame; ``roboalign compare`` and the tests also use the rest of the clip
as the real reference. Every clip records the camera setting its collection was recorded through
(:attr:`SeedClips.camera`; clips saved before it was recorded were seen through the default camera),
so that robosuite is rendered as the dream was trained to draw it. Stored as ``seeds.npz`` (arrays,
no pickle) + ``seeds.json`` (metadata).
"""

from __future__ import annotations

import json
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from roboalign_env.data.io import atomic_savez, atomic_write
from roboalign_env.sim.rendering import CAMERA
from roboalign_env.sim.sources import ALL_SOURCES


@dataclass(frozen=True)
class SeedClips:
    frames: np.ndarray  # (M, T + 1, H, W, 3) uint8
    actions: np.ndarray  # (M, T, 7) float32
    meta: list[dict]  # per clip: source, episode_id, seed, failure, instructions, camera

    def __len__(self) -> int:
        return len(self.meta)

    @property
    def camera(self) -> str:
        """The camera setting every clip was recorded through (what robosuite must render to compare)."""
        return self.meta[0].get("camera", CAMERA)

    def of_source(self, source: str | None) -> np.ndarray:
        """Indices of the clips of ``source`` (every clip for ``None``); a clear error if there are none."""
        if source is None:
            return np.arange(len(self))
        if source not in ALL_SOURCES:
            raise ValueError(f"source {source!r} is unknown; expected one of {list(ALL_SOURCES)}")
        found = np.array([i for i, m in enumerate(self.meta) if m["source"] == source], dtype=np.int64)
        if not len(found):
            raise ValueError(f"source {source!r} has no seed clip in this model's seeds")
        return found

    def save(self, folder: str | Path) -> Path:
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        atomic_savez(folder / "seeds.npz", frames=self.frames, actions=self.actions)
        atomic_write(folder / "seeds.json", lambda f: f.write(json.dumps(self.meta, indent=1)), mode="w")
        return folder

    @classmethod
    def load(cls, folder: str | Path) -> "SeedClips":
        folder = Path(folder)
        for name in ("seeds.npz", "seeds.json"):
            if not (folder / name).is_file():
                raise FileNotFoundError(f"{folder / name}: missing; a seeds folder holds seeds.npz and seeds.json "
                                        "(written by `roboalign pack-default`)")
        try:
            with np.load(folder / "seeds.npz", allow_pickle=False) as data:
                frames, actions = data["frames"], data["actions"]
        except (zipfile.BadZipFile, EOFError, OSError, KeyError, ValueError) as err:
            raise ValueError(f"{folder / 'seeds.npz'}: corrupt or truncated, or not a seeds archive "
                             f"({type(err).__name__}: {err}); expected arrays 'frames' and 'actions'") from None
        try:
            meta = json.loads((folder / "seeds.json").read_text())
        except (json.JSONDecodeError, UnicodeDecodeError) as err:
            raise ValueError(f"{folder / 'seeds.json'}: not valid JSON ({err})") from None
        if not isinstance(meta, list) or not all(isinstance(m, dict) and m.get("source") in ALL_SOURCES
                                                  and m.get("instructions") for m in meta):
            raise ValueError(f"{folder / 'seeds.json'}: expected a list of clips, each with a known 'source' and "
                             "'instructions'")
        if not (len(frames) == len(actions) == len(meta)) or frames.dtype != np.uint8 or frames.ndim != 5:
            raise ValueError(f"{folder}: seeds.npz and seeds.json disagree or frames are not uint8 (M, T+1, H, W, 3)")
        cameras = sorted({m.get("camera", CAMERA) for m in meta})
        if len(cameras) != 1:
            raise ValueError(f"{folder / 'seeds.json'}: clips recorded through several cameras {cameras}; "
                             "expected one camera setting for all of them")
        return cls(frames, actions.astype(np.float32), meta)

    @classmethod
    def from_collection(cls, collection: str | Path, per_source: int = 6, steps: int = 16,
                        split: str = "test") -> "SeedClips":
        """The first ``steps`` steps of ``per_source`` episodes of every source from ``split``
        ("train", "val", "test", or "all" for every episode)."""
        from roboalign_env.data.episodes import load_episode, read_manifest
        from roboalign_env.data.splits import split_episode_ids

        rows = read_manifest(collection)
        if split != "all":
            keep = set(split_episode_ids(collection, split))
            rows = [r for r in rows if r["episode_id"] in keep]
        rows = sorted(rows, key=lambda r: r["episode_id"])
        frames, actions, meta = [], [], []
        for source in ALL_SOURCES:
            picked = [r for r in rows if r["source"] == source][:per_source]
            if len(picked) < per_source:
                raise ValueError(f"{collection}: only {len(picked)} {split!r} episodes of {source}; need {per_source}")
            for row in picked:
                ep = load_episode(Path(collection) / row["path"])
                frames.append(ep.frames[: steps + 1])
                actions.append(ep.actions[:steps])
                meta.append({k: ep.meta[k] for k in ("source", "episode_id", "seed", "failure")}
                            | {"instructions": ep.meta["instruction_templates"], "camera": ep.meta.get("camera", CAMERA)})
        return cls(np.stack(frames), np.stack(actions).astype(np.float32), meta)
