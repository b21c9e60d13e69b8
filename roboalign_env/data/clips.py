"""Streaming T-frame clips from a collection, following the paper's sampling protocol.

Each sample: a uniformly chosen episode of ``L`` steps, a uniform start ``s`` in ``[0, L - T]``,
frames ``s .. s+T-1`` at stride 1 with the paired actions ``a_s .. a_{s+T-1}`` (the action taken
after each frame), optionally augmented
with parameters shared by all T frames, and images scaled to [0, 1]. Only the chosen episode is
read from disk (a small LRU cache keeps recent ones), so a dataset of any size streams in constant
memory.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from roboalign_env.data.episodes import Episode, load_episode, read_manifests
from roboalign_env.data.paths import folders


class ClipStream(torch.utils.data.IterableDataset):
    """Endless stream of ``{"frames": (T, 3, H, W) float in [0, 1], "actions": (T, 7)}`` clips.

    ``root`` is one collection folder or several (their episodes pooled; ids must not repeat).
    ``episode_ids`` restricts sampling (e.g. to one split's episodes); ``augment`` applies clip-wise
    photometric (brightness, contrast, saturation, hue) and geometric (resized crop) jitter with one
    parameter draw per clip. Each DataLoader worker gets its own random stream from ``seed``.
    """

    def __init__(
        self,
        root: str | Path | Sequence[str | Path],
        clip_len: int = 8,
        episode_ids: list[str] | None = None,
        augment: bool = False,
        seed: int = 0,
        cache_size: int = 16,
    ):
        self.roots = folders(root)
        rows = [{**r, "root": folder} for folder, r in read_manifests(self.roots)]
        if episode_ids is not None:
            wanted = set(episode_ids)
            rows = [r for r in rows if r["episode_id"] in wanted]
        if not rows:
            raise ValueError(f"{', '.join(str(r) for r in self.roots)}: no episodes to sample clips from")
        short = [r["episode_id"] for r in rows if r["num_steps"] < clip_len]
        if short:
            raise ValueError(f"episodes shorter than clip_len={clip_len}: {short[:3]}")
        self.rows = rows
        self.clip_len = clip_len
        self.augment = augment
        self.seed = seed
        self.cache_size = cache_size
        self._cache: OrderedDict[str, Episode] = OrderedDict()

    def _episode(self, row: dict) -> Episode:
        key = row["episode_id"]
        if key not in self._cache:
            self._cache[key] = load_episode(row["root"] / row["path"])
            if len(self._cache) > self.cache_size:
                self._cache.popitem(last=False)
        self._cache.move_to_end(key)
        return self._cache[key]

    def sample(self, rng: np.random.Generator) -> dict[str, torch.Tensor]:
        """One clip drawn with ``rng`` (uniform episode, uniform start)."""
        ep = self._episode(self.rows[int(rng.integers(len(self.rows)))])
        start = int(rng.integers(0, ep.num_steps - self.clip_len + 1))
        frames = torch.from_numpy(ep.frames[start : start + self.clip_len]).permute(0, 3, 1, 2).float() / 255.0
        actions = ep.actions[start : start + self.clip_len]
        if self.augment:
            frames = augment_clip(frames, torch.Generator().manual_seed(int(rng.integers(2**62))))
        return {"frames": frames, "actions": torch.from_numpy(np.ascontiguousarray(actions))}

    def batch(self, rng: np.random.Generator, size: int) -> dict[str, torch.Tensor]:
        """``size`` clips drawn with ``rng``, stacked: frames (B, T, 3, H, W), actions (B, T, 7)."""
        clips = [self.sample(rng) for _ in range(size)]
        return {key: torch.stack([c[key] for c in clips]) for key in clips[0]}

    def __iter__(self):
        info = torch.utils.data.get_worker_info()
        rng = np.random.default_rng([self.seed, info.id if info else 0])
        while True:
            yield self.sample(rng)


def augment_clip(frames: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """Photometric and geometric jitter of a (T, 3, H, W) clip in [0, 1], one draw for all frames."""
    from torchvision.transforms.v2 import functional as F

    def uniform(lo: float, hi: float) -> float:
        return float(lo + (hi - lo) * torch.rand((), generator=gen))

    h, w = frames.shape[-2:]
    frames = F.adjust_brightness(frames, uniform(0.85, 1.15))
    frames = F.adjust_contrast(frames, uniform(0.85, 1.15))
    frames = F.adjust_saturation(frames, uniform(0.85, 1.15))
    frames = F.adjust_hue(frames, uniform(-0.03, 0.03))
    scale = uniform(0.9, 1.0)
    ch, cw = round(h * scale), round(w * scale)
    top, left = round(uniform(0, h - ch)), round(uniform(0, w - cw))
    frames = F.resized_crop(frames, top, left, ch, cw, [h, w], antialias=True)
    return frames.clamp(0.0, 1.0)
