"""``score``: one video file against an instruction, by the teacher, the student or the state probe."""

from __future__ import annotations

from pathlib import Path

from roboalign_env.eval.media import read_video
from roboalign_env.models.registry import load_scorer, scorer_kind
from roboalign_env.rubric import TOTAL


def score_video(video: str | Path, instruction: str, model_dir: str | Path, npz_key: str = "video") -> dict:
    """The scorer's six scores (levels, expected scores and the normalized aggregate) of the video."""
    frames = read_video(video, npz_key)
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
            result = model.score(frames, instruction).as_dicts()[0]
        except ValueError as err:
            raise ValueError(f"{video}: {err}") from None
    return {"video": str(video), "instruction": instruction, "model": str(model_dir), "scorer": kind, **result}
