"""``score``: one video file against an instruction, by the teacher, the student or the state probe."""

from __future__ import annotations

from pathlib import Path

from roboalign_env.eval.media import read_video
from roboalign_env.models.registry import load_scorer, scorer_kind
from roboalign_env.rubric import TOTAL


def read_actions(video: str | Path, key: str, frames: int):
    """The (A, 7) actions stored beside an .npz video as ``key``, or None (an .mp4, or no such array)."""
    import numpy as np

    if Path(video).suffix != ".npz":
        return None
    with np.load(video, allow_pickle=False) as data:
        if key not in data.files:
            return None
        actions = np.asarray(data[key], np.float32)
    if actions.ndim != 2 or actions.shape[1] != 7 or len(actions) == 0:
        raise ValueError(f"{video}: array {key!r} has shape {actions.shape}; expected (A, 7) actions, A >= 1 "
                         f"(one per transition between the video's {frames} frames, or a multiple)")
    return actions


def score_video(video: str | Path, instruction: str, model_dir: str | Path, npz_key: str = "video",
                actions_key: str = "actions") -> dict:
    """The scorer's six scores (levels, expected scores and the normalized aggregate) of the video,
    read with the actions stored beside it in an .npz (as ``actions_key``) when there are any."""
    frames = read_video(video, npz_key)
    actions = read_actions(video, actions_key, len(frames))
    kind = scorer_kind(model_dir)
    model = load_scorer(model_dir)
    if kind == "probe":
        from roboalign_env.models.state_probe import probe_labels

        try:
            labels, trace = probe_labels(model, frames, instruction)
        except ValueError as err:
            raise ValueError(f"{video}: {err}") from None
        result = {"levels": labels.as_dict(), "aggregate": labels.aggregate / TOTAL, "source": trace["source"]}
    else:
        try:
            result = model.score(frames, instruction, actions=None if actions is None else [actions]).as_dicts()[0]
        except ValueError as err:
            raise ValueError(f"{video}: {err}") from None
    return {"video": str(video), "instruction": instruction, "model": str(model_dir), "scorer": kind,
            "actions": None if actions is None or kind == "probe" else len(actions), **result}
