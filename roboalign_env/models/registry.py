"""Loading any scorer checkpoint (teacher judge, student reward, state probe) by its config's model type."""

from __future__ import annotations

import json
from contextlib import contextmanager
from pathlib import Path

SCORERS = {"roboalign_judge": "teacher", "roboalign_student": "student", "roboalign_state_probe": "probe"}


def scorer_kind(path: str | Path) -> str:
    """``teacher``, ``student`` or ``probe`` for a checkpoint folder; a clear error for anything else."""
    config = Path(path) / "config.json"
    if not config.is_file():
        raise FileNotFoundError(f"{path}: no config.json; expected a checkpoint folder (config.json + model.safetensors) "
                                "such as checkpoints/judge, roboalign_env/assets/default/student or checkpoints/probe")
    model_type = json.loads(config.read_text()).get("model_type")
    if model_type not in SCORERS:
        raise ValueError(f"{path}: model_type {model_type!r} is not a scorer; expected one of {sorted(SCORERS)}")
    return SCORERS[model_type]


@contextmanager
def quiet_loading():
    """Load weights without transformers' per-file progress bar (an env is made many times)."""
    from transformers.utils import logging

    was_enabled = logging.is_progress_bar_enabled()
    logging.disable_progress_bar()
    try:
        yield
    finally:
        if was_enabled:
            logging.enable_progress_bar()


def load_scorer(path: str | Path):
    """The model in ``path`` in float32 eval mode (weights stored in 16 bits are widened)."""
    from transformers import AutoModel

    import roboalign_env.models.judge  # noqa: F401  (registers the model types with AutoModel)
    import roboalign_env.models.state_probe  # noqa: F401
    import roboalign_env.models.student  # noqa: F401

    scorer_kind(path)
    with quiet_loading():
        return AutoModel.from_pretrained(str(path)).float().eval()


def export_scorer(model_dir: str | Path, dest: str | Path, half: bool = False) -> Path:
    """Copy a trained scorer (config.json + model.safetensors) to ``dest``, optionally in float16."""
    from roboalign_env.data.io import save_checkpoint

    model = load_scorer(model_dir)
    return save_checkpoint(model.half() if half else model, dest)
