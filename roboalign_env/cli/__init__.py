"""The ``roboalign`` command: one frozen dataclass per subcommand, each with a ``run()`` that calls a
library function, grouped by stage (:mod:`.data`, :mod:`.world_model`, :mod:`.judge`,
:mod:`.post_training`, :mod:`.env`).

Run ``roboalign --help`` or ``roboalign SUBCOMMAND --help``; every field's docstring is its help.
Settings that a library already defines as a config (``LoopConfig``, ``GRPOConfig``,
``DreamSettings`` with its ``RewardConfig``) are nested whole, so each of their fields is an option.
"""

from __future__ import annotations

import sys

from roboalign_env.cli import data, env, judge, post_training, world_model

COMMANDS = {**data.COMMANDS, **world_model.COMMANDS, **judge.COMMANDS, **post_training.COMMANDS, **env.COMMANDS}
"""Every subcommand by name."""


def main(args: list[str] | None = None) -> None:
    import tyro

    command = tyro.extras.subcommand_cli_from_dict(COMMANDS, args=args)
    try:
        command.run()
    except (FileNotFoundError, ValueError) as err:  # bad input: say what, without a traceback
        print(f"error: {err}", file=sys.stderr)
        raise SystemExit(2) from None
