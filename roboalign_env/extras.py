"""Optional dependencies: import one, or fail with the extra that installs it.

The base install is what ``gym.make("RoboAlignWorld-v0")`` needs; robosuite, training, SB3 and
evaluation libraries come with the extras named in ``pyproject.toml``.
"""

from __future__ import annotations

import importlib
from types import ModuleType

EXTRAS = {"sim": "robosuite + mujoco (collection, the real env, compare/demo)",
          "train": "training, post-training and the teacher judge",
          "sb3": "the stable-baselines3 adapter and agents",
          "eval": "image metrics and plots"}


def require(module: str, extra: str, purpose: str) -> ModuleType:
    """``import module``, or an ``ImportError`` that says which extra installs it and what needs it."""
    if extra not in EXTRAS:
        raise ValueError(f"unknown extra {extra!r}; expected one of {sorted(EXTRAS)}")
    try:
        return importlib.import_module(module)
    except ImportError as err:
        raise ImportError(f"{purpose} needs the optional dependency {module.split('.')[0]!r} "
                          f"({err}); install it with: pip install 'roboalign_env[{extra}]'") from err
