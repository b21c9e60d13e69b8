"""Which episodes train, validate and test each model: one deterministic rule for every stage.

An episode's split is a hash of its id, so it never changes when more episodes are collected.
Two views use the same hash:

- the **bench** view (judges, post-training prompts): one whole source, ``HELDOUT_SOURCE``, is held
  out of every training split to measure how a judge carries over to a scene it has never seen;
- the **world-model** view (tokenizer, transformer, probe, seed clips): no source is held out, since
  a world model must have seen a robot to dream it; its "test" episodes are the held-out ones.
"""

from __future__ import annotations

import zlib
from collections.abc import Sequence
from pathlib import Path

from roboalign_env.data.paths import folders

HELDOUT_SOURCE = "pickplace_can_ur5e"
"""The bench's held-out source: never used to train the teacher, the student or GRPO prompts."""
SPLITS = ("train", "val", "test", "heldout")
"""Bench splits (the world-model view has no "heldout")."""
VAL_FRACTION = 0.1
TEST_FRACTION = 0.1


def split_of(episode_id: str, source: str, heldout_source: str = HELDOUT_SOURCE) -> str:
    """The split of an episode: "heldout" for ``heldout_source`` ('' holds none out), else by hash."""
    if source == heldout_source:
        return "heldout"
    u = zlib.crc32(episode_id.encode()) / 2**32
    return "val" if u < VAL_FRACTION else "test" if u < VAL_FRACTION + TEST_FRACTION else "train"


def split_episode_ids(root: str | Path | Sequence[str | Path], split: str) -> list[str]:
    """Episode ids of one world-model split ("train", "val" or "test") of a collection, or of several
    pooled (no source held out)."""
    from roboalign_env.data.episodes import read_manifest

    if split not in ("train", "val", "test"):
        raise ValueError(f"split must be one of train, val, test; got {split!r}")
    return [r["episode_id"] for folder in folders(root) for r in read_manifest(folder)
            if split_of(r["episode_id"], r["source"], "") == split]
