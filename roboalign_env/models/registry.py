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
    try:
        model_type = json.loads(config.read_text()).get("model_type")
    except (json.JSONDecodeError, UnicodeDecodeError, AttributeError) as err:
        raise ValueError(f"{config}: not a valid JSON config object ({err})") from None
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
    try:
        with quiet_loading():
            model = AutoModel.from_pretrained(str(path))
    except Exception as err:  # a corrupt or truncated safetensors file, a bad config: name the folder
        raise ValueError(f"{path}: could not load the checkpoint ({type(err).__name__}: {err})") from None
    return check_finite(model, Path(path) / "model.safetensors").float().eval()


def check_finite(model, where):
    """``model`` if every floating-point weight is finite, else a ``ValueError`` naming ``where``."""
    import torch

    bad = [name for name, t in model.state_dict().items() if t.is_floating_point() and not torch.isfinite(t).all()]
    if bad:
        raise ValueError(f"{where}: {len(bad)} weight tensor(s) hold NaN or inf (e.g. {bad[0]}); "
                         "the checkpoint is damaged or came from a diverged run")
    return model


def export_scorer(model_dir: str | Path, dest: str | Path, half: bool = False) -> Path:
    """Copy a trained scorer (config.json + model.safetensors) to ``dest``, optionally in float16."""
    from roboalign_env.data.io import save_checkpoint

    model = load_scorer(model_dir)
    return save_checkpoint(model.half() if half else model, dest)
