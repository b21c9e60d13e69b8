"""Checking and converting the videos users hand to a scorer or a video set.

Videos in: one video ``(T, H, W, 3)`` uint8, a list of such videos (lengths may differ), a batch
``(N, T, H, W, 3)`` uint8, or a batch ``(N, T, 3, H, W)`` float in [0, 1] (what a world model
decodes). Out: ``(N, T, 3, H, W)`` floats in [0, 1] and a valid-frame mask; bad input raises a
``ValueError`` that names what was wrong and what was expected.

uint8 frames are converted straight to the dtype the scorer computes in (bfloat16 under autocast)
and keep their channel-last memory layout (the tensor is a channel-first view of it): no
full-resolution float32 copy and no transposing copy, which cost more than a small scorer's
network itself.
"""

from __future__ import annotations

import numpy as np
import torch


def prepare_videos(videos, image_size: int = 64, max_frames: int = 64,
                   dtype: torch.dtype = torch.float32) -> tuple[torch.Tensor, torch.Tensor]:
    """Check and convert videos to ``(N, T, 3, H, W)`` ``dtype`` in [0, 1] plus a ``(N, T)`` valid-frame mask.

    Shorter videos of a list are padded at the end (mask False). Raises ``ValueError`` naming what
    was wrong (empty video, wrong frame size, wrong layout or dtype) and what was expected.
    """
    expected = (f"expected uint8 (T, {image_size}, {image_size}, 3) videos, a list of them, or a "
                f"batch (N, T, {image_size}, {image_size}, 3) uint8 / (N, T, 3, {image_size}, {image_size}) float in [0, 1]")
    if isinstance(videos, (list, tuple)):
        if not videos:
            raise ValueError(f"video: got an empty list; {expected}")
        items = [_as_frames(v, image_size, expected, f"video {i}", dtype) for i, v in enumerate(videos)]
    else:
        array = videos
        ndim = array.ndim
        if ndim == 4:
            items = [_as_frames(array, image_size, expected, "video", dtype)]
        elif ndim == 5:
            if len(array) == 0:
                raise ValueError(f"video: got an empty batch {tuple(array.shape)}; {expected}")
            batch = _as_frames(torch.as_tensor(array).flatten(0, 1), image_size, expected, "video batch", dtype)
            if array.shape[1] > max_frames:
                raise ValueError(f"video: {array.shape[1]} frames; this model takes at most {max_frames}")
            batch = batch.unflatten(0, tuple(array.shape[:2]))
            return batch, torch.ones(batch.shape[:2], dtype=torch.bool)
        else:
            raise ValueError(f"video: got shape {tuple(array.shape)}; {expected}")
    longest = max(len(v) for v in items)
    if longest > max_frames:
        raise ValueError(f"video: {longest} frames; this model takes at most {max_frames}")
    out = torch.zeros(len(items), longest, image_size, image_size, 3, dtype=dtype).permute(0, 1, 4, 2, 3)  # channel-last memory
    mask = torch.zeros(len(items), longest, dtype=torch.bool)
    for i, v in enumerate(items):
        out[i, : len(v)] = v
        mask[i, : len(v)] = True
    return out, mask


def _as_frames(video, image_size: int, expected: str, name: str, dtype: torch.dtype) -> torch.Tensor:
    """One video as (T, 3, H, W) ``dtype`` in [0, 1]."""
    t = torch.as_tensor(np.asarray(video)) if not torch.is_tensor(video) else video
    if t.ndim != 4:
        raise ValueError(f"{name}: got shape {tuple(t.shape)}; {expected}")
    if len(t) == 0:
        raise ValueError(f"{name}: is empty (0 frames); {expected}")
    if t.dtype == torch.uint8:
        if t.shape[-1] != 3:
            raise ValueError(f"{name}: uint8 video of shape {tuple(t.shape)} is not channel-last; {expected}")
        t = t.permute(0, 3, 1, 2).to(dtype).div_(255.0)  # one pass, channel-last memory kept
    elif t.is_floating_point():
        if t.shape[1] != 3:
            raise ValueError(f"{name}: float video of shape {tuple(t.shape)} is not channel-first; {expected}")
        t = t.to(dtype).clamp(0.0, 1.0)
    else:
        raise ValueError(f"{name}: dtype {t.dtype}; {expected}")
    if tuple(t.shape[2:]) != (image_size, image_size):
        raise ValueError(f"{name}: frames are {t.shape[2]}x{t.shape[3]}, this model takes "
                         f"{image_size}x{image_size}; {expected}")
    return t


def check_instructions(instructions, count: int) -> list[str]:
    """One non-empty instruction per video (a single string is used for every video)."""
    if isinstance(instructions, str):
        instructions = [instructions] * count
    if instructions is None or len(instructions) != count:
        got = "none" if instructions is None else len(instructions)
        raise ValueError(f"instruction: got {got} for {count} video(s); expected one non-empty string per video")
    for i, text in enumerate(instructions):
        if not isinstance(text, str) or not text.strip():
            raise ValueError(f"instruction {i}: missing (got {text!r}); expected a non-empty string such as 'lift the red cube'")
    return list(instructions)
