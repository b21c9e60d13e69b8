"""Assembling a model folder like the one shipped in the package (``pack-default``)."""

from __future__ import annotations

from pathlib import Path

import torch


def pack_default(world_model: str | Path, student: str | Path, collection: str | Path, out: str | Path,
                 seeds_per_source: int = 8, seed_steps: int = 16, split: str = "test",
                 probe: str | Path | None = None) -> float:
    """Write ``out/world_model`` (bf16), ``out/student`` (float16), ``out/seeds`` (held-out seed
    clips of every source) and, given a state probe, ``out/probe`` (float32: the reward-hacking
    monitor reads positions in centimetres); returns the folder's size in MB."""
    from roboalign_env.data.io import save_checkpoint
    from roboalign_env.envs.seeds import SeedClips
    from roboalign_env.models.registry import load_scorer
    from roboalign_env.models.world_model import WorldModel

    out = Path(out)
    WorldModel.load(world_model).save(out / "world_model", dtype=torch.bfloat16)
    save_checkpoint(load_scorer(student).half(), out / "student")
    if probe is not None:
        save_checkpoint(load_scorer(probe), out / "probe")
    SeedClips.from_collection(collection, seeds_per_source, seed_steps, split).save(out / "seeds")
    return sum(f.stat().st_size for f in out.rglob("*") if f.is_file()) / 2**20
