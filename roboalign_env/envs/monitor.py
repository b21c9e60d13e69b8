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
- ``teacher_success`` (only with a teacher loaded): the teacher judge, given the same window as the
  student (the episode's first frame as the initial frame, the actions between the frames), scores
  Manipulation Success at or above the same share of its maximum that made the student call it;
- ``success_contradicted``: the student called success and the probe (or the teacher) does not see it.

Steps without a success call report ``None`` for the checks and ``success_contradicted = False``:
the checkers only run when the student claims success (an episode's last step), so the monitor
costs nothing on the other steps but keeping the frames and actions.
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

    def __init__(self, probe_folder: str | Path, num_envs: int, frames: int, device="cpu",
                 teacher_folder: str | Path | None = None, success_threshold: float = 0.8):
        from roboalign_env.models.judge import RoboAlignJudge
        from roboalign_env.models.state_probe import StateProbe

        self.probe = _load(probe_folder, StateProbe, "probe", "a state-probe folder (roboalign train-probe)", device)
        self.teacher = None if teacher_folder is None else \
            _load(teacher_folder, RoboAlignJudge, "teacher", "a teacher judge folder (roboalign train-judge)", device)
        self.success_threshold = success_threshold
        self.recent = [deque(maxlen=frames) for _ in range(num_envs)]
        self.actions = [deque(maxlen=frames - 1) for _ in range(num_envs)]
        self.first = [None] * num_envs
        self.instructions = [""] * num_envs

    @property
    def empty_verdict(self) -> dict:
        """What a step without a success call reports."""
        checks = {"probe_success": None} | ({"teacher_success": None} if self.teacher is not None else {})
        return {**checks, "success_contradicted": False}

    def reset_rows(self, rows: Sequence[int], frames: np.ndarray, instructions: Sequence[str]) -> None:
        """Start episodes ``rows`` at ``frames`` (b, 3, H, W) uint8 with their instructions."""
        for r, frame, text in zip(rows, frames, instructions):
            self.instructions[r], self.first[r] = text, frame
            self.recent[r].clear()
            self.actions[r].clear()
            self.recent[r].append(frame)

    def step(self, frames: np.ndarray, actions: np.ndarray, success: np.ndarray) -> list[dict]:
        """Append every environment's new frame (N, 3, H, W) uint8 and the action (N, 7) that led to
        it; check the rows judged successful."""
        from roboalign_env.models.state_probe import probe_labels

        out = []
        for r, (frame, action) in enumerate(zip(frames, actions)):
            self.recent[r].append(frame)
            self.actions[r].append(action)
            verdict = self.empty_verdict
            if success[r]:
                video = np.stack(self.recent[r]).transpose(0, 2, 3, 1)  # (T, H, W, 3)
                labels, _ = probe_labels(self.probe, video, self.instructions[r])
                verdict["probe_success"] = bool(labels.manipulation_success >= MAX_SCORES[MANIPULATION])
                if self.teacher is not None:
                    between = np.stack(self.actions[r])[-(len(video) - 1) :]
                    scores = self.teacher.score(video, self.instructions[r], initial_frames=[self.first[r].transpose(1, 2, 0)],
                                                actions=[between]).expected[0, MANIPULATION]
                    verdict["teacher_success"] = bool(scores / MAX_SCORES[MANIPULATION] >= self.success_threshold)
                verdict["success_contradicted"] = not all(v for k, v in verdict.items() if k.endswith("_success"))
            out.append(verdict)
        return out


def _load(folder: str | Path, cls, role: str, expected: str, device):
    """The scorer in ``folder``, in eval mode on ``device``, refused unless it is a ``cls``."""
    from roboalign_env.models.registry import load_scorer

    model = load_scorer(folder)
    if not isinstance(model, cls):
        raise ValueError(f"monitor {role} {folder}: expected {expected}, got a {type(model).__name__}")
    return model.to(device).eval()
