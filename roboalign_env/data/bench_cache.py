"""Fixed-shape arrays of one bench split, memory-mapped, for fast random batches.

The bench stores each episode's pairs in a compressed shard; training draws random pairs every
step, so each split is unpacked once into ``<bench>/cache/<split>/`` (uncompressed ``.npy`` files
opened with ``mmap_mode="r"``, no pickle): ``video`` (N, F, H, W, 3) uint8 padded with zeros to the
longest clip, ``length`` (N,), ``initial`` (N, H, W, 3), ``actions`` (N, A, 7) padded, ``num_actions``
(N,), ``labels`` (N, 6), and ``rows.jsonl`` (the index rows, same order). A cache older than the
index, or holding other pairs than the split's, is rebuilt.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from roboalign_env.data.bench import INDEX, read_index
from roboalign_env.data.io import atomic_write, read_jsonl, write_jsonl
from roboalign_env.data.paths import inside
from roboalign_env.data.splits import SPLITS
from roboalign_env.rubric import DIMENSIONS

ARRAYS = ("video", "length", "initial", "actions", "num_actions", "labels")


@dataclass
class VideoSet:
    """Videos with what a scorer needs, as arrays (memory maps for a cached split)."""

    video: np.ndarray
    """(N, F, H, W, 3) uint8, zero-padded after each video's ``length`` frames."""
    length: np.ndarray
    initial: np.ndarray
    """(N, H, W, 3) uint8 initial frames."""
    actions: np.ndarray
    """(N, A, 7) float32, zero-padded after ``num_actions``."""
    num_actions: np.ndarray
    rows: list[dict]
    """One dict per video with at least ``instruction``."""
    labels: np.ndarray | None = None
    """(N, 6) oracle levels, when known."""

    def __len__(self) -> int:
        return len(self.rows)

    @property
    def instructions(self) -> list[str]:
        return [r["instruction"] for r in self.rows]

    @classmethod
    def from_videos(cls, videos, instructions: list[str], rows: list[dict] | None = None,
                    image_size: int = 64, actions: list | None = None) -> "VideoSet":
        """From a list of (T, H, W, 3) uint8 videos or an (N, T, H, W, 3) uint8 / (N, T, 3, H, W) float batch,
        with optionally one (A, 7) action array per video (an empty one: no actions).

        Videos are checked and converted one at a time, so a large set never exists in float.
        """
        import torch

        from roboalign_env.data.videos import check_instructions, prepare_videos

        single = not isinstance(videos, (list, tuple)) and np.ndim(videos) == 4
        items = [videos] if single else list(videos)
        if not items:
            raise ValueError("videos: got none")
        texts = check_instructions(instructions, len(items))
        clips = []
        for v in items:
            frames, _ = prepare_videos([v], image_size, max_frames=10_000)
            clips.append((frames[0] * 255).round().to(torch.uint8).permute(0, 2, 3, 1).numpy())
        n, longest = len(clips), max(len(c) for c in clips)
        video = np.zeros((n, longest, image_size, image_size, 3), np.uint8)
        for i, c in enumerate(clips):
            video[i, : len(c)] = c
        acts = [np.zeros((0, 7), np.float32)] * n if actions is None else \
            [np.asarray(a, np.float32).reshape(-1, 7) for a in actions]
        if len(acts) != n:
            raise ValueError(f"actions: got {len(acts)} arrays for {n} videos; expected one (A, 7) array per video")
        padded = np.zeros((n, max([1] + [len(a) for a in acts]), 7), np.float32)
        for i, a in enumerate(acts):
            padded[i, : len(a)] = a
        return cls(video=video, length=np.array([len(c) for c in clips]), initial=video[:, 0].copy(),
                   actions=padded, num_actions=np.array([len(a) for a in acts], np.int64),
                   rows=rows or [{"instruction": t} for t in texts])

    @classmethod
    def open(cls, folder: Path) -> "VideoSet":
        folder = Path(folder)
        arrays = {name: np.load(folder / f"{name}.npy", mmap_mode="r", allow_pickle=False) for name in ARRAYS}
        return cls(rows=list(read_jsonl(folder / "rows.jsonl")), **arrays)


def open_split(bench: str | Path, split: str, progress: bool = True, heldout_source: str | None = None) -> VideoSet:
    """The cache of ``split`` of the bench at ``bench``, built first if missing or stale.

    ``heldout_source`` views the bench with that source held out instead ('' none; see
    :func:`~roboalign_env.data.bench.read_index`), cached in ``cache/<split>.heldout-<source or none>``.
    """
    if split not in SPLITS:
        raise ValueError(f"split={split!r}; expected one of {SPLITS}")
    bench = Path(bench)
    folder = bench / "cache" / (split if heldout_source is None else f"{split}.heldout-{heldout_source or 'none'}")
    done = folder / "rows.jsonl"
    if not done.is_file() or done.stat().st_mtime < (bench / INDEX).stat().st_mtime or \
            [r["pair_id"] for r in read_jsonl(done)] != [r["pair_id"] for r in read_index(bench, split, heldout_source)]:
        build_split(bench, split, folder, progress, heldout_source)
    return VideoSet.open(folder)


def build_split(bench: Path, split: str, folder: Path, progress: bool = True, heldout_source: str | None = None) -> None:
    from tqdm.auto import tqdm

    rows = read_index(bench, split, heldout_source)
    if not rows:
        held = "" if heldout_source is None else f" with heldout_source={heldout_source!r}"
        raise ValueError(f"{bench}: split {split!r}{held} has no pairs")
    by_file = defaultdict(list)
    for i, row in enumerate(rows):
        by_file[row["file"]].append(i)
    frames = max(r["num_frames"] for r in rows)
    first = _load_shard(bench, rows[by_file[rows[0]["file"]][0]]["file"])
    h, w = first[rows[0]["pair_id"] + "/video"].shape[1:3]
    n = len(rows)
    arrays = {
        "video": np.zeros((n, frames, h, w, 3), np.uint8), "length": np.zeros(n, np.int64),
        "initial": np.zeros((n, h, w, 3), np.uint8), "labels": np.zeros((n, len(DIMENSIONS)), np.int64),
        "num_actions": np.zeros(n, np.int64),
    }
    actions = [None] * n
    for file, indices in tqdm(by_file.items(), desc=f"cache {split}", disable=not progress):
        shard = _load_shard(bench, file)
        for i in indices:
            pid = rows[i]["pair_id"]
            video = shard[f"{pid}/video"]
            arrays["video"][i, : len(video)] = video
            arrays["length"][i] = len(video)
            arrays["initial"][i] = shard[f"{pid}/initial_frame"]
            actions[i] = shard[f"{pid}/actions"].astype(np.float32).reshape(-1, 7)
            arrays["num_actions"][i] = len(actions[i])
            arrays["labels"][i] = [rows[i]["labels"][d] for d in DIMENSIONS]
    arrays["actions"] = np.zeros((n, max(1, arrays["num_actions"].max()), 7), np.float32)
    for i, a in enumerate(actions):
        arrays["actions"][i, : len(a)] = a
    folder.mkdir(parents=True, exist_ok=True)
    for name, value in arrays.items():
        atomic_write(folder / f"{name}.npy", lambda f, v=value: np.save(f, v, allow_pickle=False))
    write_jsonl(folder / "rows.jsonl", rows)  # last: its presence marks the cache complete


def _load_shard(bench: Path, file: str) -> dict[str, np.ndarray]:
    path = inside(bench, file, f"{bench / INDEX}: shard file")
    if not path.is_file():
        raise FileNotFoundError(f"{path}: bench shard not found")
    with np.load(path, allow_pickle=False) as data:
        return {k: data[k] for k in data.files if k != "rows"}
