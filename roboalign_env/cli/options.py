"""Pieces several subcommands share: the nested-config annotation, the loop defaults, the command line."""

from __future__ import annotations

import shlex
import sys
from pathlib import Path
from typing import Annotated, TypeVar

import tyro

from roboalign_env.training.loop import LoopConfig

T = TypeVar("T")
Nested = Annotated[T, tyro.conf.OmitArgPrefixes]
"""A config nested whole as an option group, its fields without a prefix (``--steps``, not ``--loop.steps``)."""


def loop_defaults(out: str, steps: int, lr: float, every: int, **more) -> LoopConfig:
    """A trainer's default ``LoopConfig``: bf16 autocast, saving and evaluating every ``every`` steps."""
    return LoopConfig(out=Path(out), steps=steps, lr=lr, mixed_precision="bf16", eval_every=every, save_every=every,
                      **more)


def command_line() -> str:
    """The command as the user typed it, for result files."""
    return " ".join(["roboalign", *(shlex.quote(a) for a in sys.argv[1:])])
