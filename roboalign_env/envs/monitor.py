"""Reward-hacking monitor: is the student's success call backed by what the frames show?

A policy trained against a learned reward can find frames the reward likes without doing the task
(in the first dream, a blurred arm over a cube that never moved scored as a lift). The monitor reads
the most recent ``frames`` frames of the episode (the ones the student judged; the episode's first
frame too while the episode is that short) through the state probe, a model trained on real frames
only to read the robot's and objects' positions and contacts, and labels them with the bench
oracle's own Manipulation Success rule (:func:`~roboalign_env.models.state_probe.probe_labels`).
The frames must be consecutive: the oracle credits a success to the robot only if it touched the
object just before, so the student's extra copy of the first frame is left out. Each step, for every environment whose
episode the student judged successful, ``info`` reports:

- ``probe_success``: the probe's reading of the frames reaches full Manipulation Success;
- ``success_contradicted``: the student called success and the probe does not see it.

Steps without a success call report ``probe_success = None`` and ``success_contradicted = False``:
the probe only runs when the student claims success (an episode's last step), so the monitor costs
nothing on the other steps but keeping the frames.
"""

from __future__ import annotations

from collections import deque
from pathlib import Path
from typing import Sequence

import numpy as np

from roboalign_env.rubric import DIMENSIONS, MAX_SCORES

MANIPULATION = DIMENSIONS.index("manipulation_success")


class HackMonitor:
    """Per-environment frame windows and the probe's verdict on the student's success calls."""

    def __init__(self, probe_folder: str | Path, num_envs: int, frames: int, device="cpu"):
        from roboalign_env.models.registry import load_scorer
        from roboalign_env.models.state_probe import StateProbe

        probe = load_scorer(probe_folder)
        if not isinstance(probe, StateProbe):
            raise ValueError(f"monitor probe {probe_folder}: expected a state-probe folder (roboalign train-probe), "
                             f"got a {type(probe).__name__}")
        self.probe = probe.to(device).eval()
        self.recent = [deque(maxlen=frames) for _ in range(num_envs)]
        self.instructions = [""] * num_envs

    def reset_rows(self, rows: Sequence[int], frames: np.ndarray, instructions: Sequence[str]) -> None:
        """Start episodes ``rows`` at ``frames`` (b, 3, H, W) uint8 with their instructions."""
        for r, frame, text in zip(rows, frames, instructions):
            self.instructions[r] = text
            self.recent[r].clear()
            self.recent[r].append(frame)

    def step(self, frames: np.ndarray, success: np.ndarray) -> list[dict]:
        """Append every environment's new frame (N, 3, H, W) uint8; check the rows judged successful."""
        from roboalign_env.models.state_probe import probe_labels

        out = []
        for r, frame in enumerate(frames):
            self.recent[r].append(frame)
            verdict = {"probe_success": None, "success_contradicted": False}
            if success[r]:
                video = np.stack(self.recent[r]).transpose(0, 2, 3, 1)  # (T, H, W, 3)
                labels, _ = probe_labels(self.probe, video, self.instructions[r])
                seen = labels.manipulation_success >= MAX_SCORES[MANIPULATION]
                verdict = {"probe_success": bool(seen), "success_contradicted": not seen}
            out.append(verdict)
        return out
