"""Reading RobotWorldBench, and adding externally generated labelled videos to it.

A bench folder holds ``pairs.jsonl`` (the index) and ``videos/<source>/<shard>.npz`` files; each
index row names its shard in ``file`` and its arrays by ``pair_id``: ``<pair_id>/video``
(T, H, W, 3) uint8, ``<pair_id>/initial_frame`` (H, W, 3) uint8, ``<pair_id>/actions`` (A, 7).
"""

from __future__ import annotations

import json
from collections import defaultdict
from pathlib import Path

import numpy as np

from roboalign_env.data.io import atomic_savez, read_jsonl, write_jsonl
from roboalign_env.data.paths import check_id, inside
from roboalign_env.data.splits import SPLITS, split_of
from roboalign_env.rubric import DIMENSIONS, MAX_SCORES

INDEX = "pairs.jsonl"


def shard_path(root: str | Path, source: str, shard: str) -> Path:
    """Where the pairs of one episode (``shard``) of ``source`` are stored; both names must be safe ids."""
    return Path(root) / "videos" / check_id(source, "source") / f"{check_id(shard, 'shard (episode id)')}.npz"


def read_index(root: str | Path, split: str | None = None, heldout_source: str | None = None) -> list[dict]:
    """Rows of the bench index, optionally only one split (train and val without the pairs that carry the
    held-out source's instructions: :func:`heldout_instructions`).

    With ``heldout_source``, the rows are seen with that source held out instead of the one the bench
    was built without ('' holds none out): each row's ``split`` is :func:`view_split`'s.
    """
    path = Path(root) / INDEX
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no bench index; run `roboalign build-bench --out {root}` first")
    rows = list(read_jsonl(path))
    if heldout_source is not None:
        sources = sorted({r["source"] for r in rows})
        if heldout_source and heldout_source not in sources:
            raise ValueError(f"heldout_source={heldout_source!r}: {path} has no pairs of it; "
                             f"expected one of {sources}, or '' to hold none out")
        rows = [{**r, "split": view_split(r, heldout_source)} for r in rows]
    if split is None:
        return rows
    picked = [r for r in rows if r["split"] == split]
    if split in TRAINING_SPLITS:
        held = heldout_instructions(rows)
        picked = [r for r in picked if r["instruction"].strip().lower() not in held]
    return picked


TRAINING_SPLITS = ("train", "val")
"""The splits a judge trains and validates on: they hold no pair whose instruction is the held-out source's."""


def heldout_instructions(rows: list[dict]) -> set[str]:
    """The instructions of the held-out source (those of its pairs with a correct instruction), lower-case.

    The bench swaps every source's instructions into other sources' videos as mismatches (Instruction
    Following 0). Trained on those, a judge would only ever have seen the held-out source's instructions as
    wrong, and would call its videos mismatched: so :func:`read_index` leaves such pairs out of
    :data:`TRAINING_SPLITS`, and the held-out source stays unseen, text included.
    """
    return {r["instruction"].strip().lower() for r in rows
            if r["split"] == "heldout" and r.get("instruction_kind") == "correct"}


def trained_view(model) -> str | None:
    """The ``heldout_source`` view of the bench a judge was trained on (recorded in its config when training
    was given one), or None: the bench's own splits."""
    return getattr(model.config, "heldout_source", None)


def view_split(row: dict, heldout_source: str) -> str:
    """The split of an index row when ``heldout_source`` is held out ('' holds none out) instead of the
    source the bench was built without: its pairs become "heldout", and the pairs held out when the bench
    was built take their episode's hash split (a rollout, the split of the episode it restarts)."""
    if row["source"] == heldout_source:
        return "heldout"
    if row["split"] != "heldout":
        return row["split"]
    episode = row["provenance"]["params"]["episode_id"] if is_rollout(row) else row["episode_id"]
    return split_of(episode, row["source"], "")


def load_pair(root: str | Path, row: dict) -> dict[str, np.ndarray]:
    """The arrays of one pair: ``video``, ``initial_frame`` and ``actions``."""
    path = inside(root, row.get("file"), f"{Path(root) / INDEX}: pair {row.get('pair_id')!r} file")
    if not path.is_file():
        raise FileNotFoundError(f"{path}: video shard of pair {row['pair_id']} not found")
    with np.load(path, allow_pickle=False) as data:
        return {k: data[f"{row['pair_id']}/{k}"] for k in ("video", "initial_frame", "actions")}


def check_labels(labels: dict) -> dict[str, int]:
    """Validate a six-dimension label dict against the paper's ranges; return it with int values."""
    missing = set(DIMENSIONS) - set(labels)
    if missing:
        raise ValueError(f"labels miss dimensions {sorted(missing)}; expected all of {DIMENSIONS}")
    out = {}
    for dim, top in zip(DIMENSIONS, MAX_SCORES):
        value = labels[dim]
        if int(value) != value or not 0 <= value <= top:
            raise ValueError(f"label {dim}={value!r} is outside the integer range 0..{top}")
        out[dim] = int(value)
    return out


ROLLOUT_KIND = "rollout_{}"
"""Provenance kind of a world-model rollout pair driven by actions of one kind (``roboalign add-dream-pairs``)."""


def is_rollout(row: dict) -> bool:
    """Whether an index row is a world-model rollout (see :data:`ROLLOUT_KIND`)."""
    return str(row.get("provenance", {}).get("kind", "")).startswith(ROLLOUT_KIND.format(""))


def is_external(row: dict) -> bool:
    """Whether an index row was added from outside the collections (:func:`add_external`)."""
    return Path(row.get("file", "")).parent == shard_path("", "external", "x").parent


def labels_need_actions(row: dict) -> bool:
    """Whether a pair's labels depend on its actions: a real video given actions that did not make it
    (the ``actions`` family) or a rollout, always judged against the actions that drove it."""
    return row.get("provenance", {}).get("family") == "actions" or is_rollout(row)


def episodes_by_split(rows: list[dict]) -> dict[str, set[str]]:
    """Which episodes appear in each split (a leak shows as an episode in two of them)."""
    found = defaultdict(set)
    for row in rows:
        found[row["split"]].add(row["episode_id"])
    return dict(found)


def add_external(root: str | Path, name: str, items: list[dict]) -> list[dict]:
    """Add externally generated labelled videos (e.g. world-model rollouts) to the bench at ``root``.

    Each item has ``video`` (T, H, W, 3) uint8 with 8 <= T <= 32, ``instruction``, ``labels``
    (the six dimensions), ``source``, ``split``, and optionally ``initial_frame``, ``actions`` and
    ``provenance``. They are stored in one new shard ``videos/external/<name>.npz``; the index is
    rewritten atomically with the new rows appended. Returns the new rows.
    """
    root = Path(root)
    rows = read_index(root)
    taken = {r["pair_id"] for r in rows}
    path = shard_path(root, "external", name)
    if path.exists():
        raise FileExistsError(f"{path}: an external shard named {name!r} already exists; pick another name")
    new, arrays = [], {}
    for i, item in enumerate(items):
        video = np.asarray(item["video"])
        if video.dtype != np.uint8 or video.ndim != 4 or video.shape[-1] != 3 or not 8 <= len(video) <= 32:
            raise ValueError(f"item {i}: video must be uint8 (T, H, W, 3) with 8 <= T <= 32, got {video.dtype} {video.shape}")
        if not str(item.get("instruction", "")).strip():
            raise ValueError(f"item {i}: missing instruction")
        if item.get("split") not in SPLITS:
            raise ValueError(f"item {i}: split={item.get('split')!r}; expected one of {SPLITS}")
        labels = check_labels(item["labels"])
        pair_id = f"external-{name}-{i:05d}"
        if pair_id in taken:
            raise ValueError(f"pair id {pair_id} already in the bench")
        arrays[f"{pair_id}/video"] = video
        arrays[f"{pair_id}/initial_frame"] = np.asarray(item.get("initial_frame", video[0]), np.uint8)
        arrays[f"{pair_id}/actions"] = np.asarray(item.get("actions", np.zeros((0, 7))), np.float32)
        new.append({
            "pair_id": pair_id, "episode_id": f"external-{name}-{i:05d}", "source": item["source"],
            "split": item["split"], "instruction": item["instruction"], "instruction_kind": "external",
            "labels": labels, "aggregate": sum(labels.values()), "num_frames": len(video),
            "provenance": item.get("provenance", {"family": "external", "kind": name}),
            "file": str(path.relative_to(root)),
        })
    atomic_savez(path, rows=np.array(json.dumps(new)), **arrays)
    write_jsonl(root / INDEX, rows + new)
    return new
