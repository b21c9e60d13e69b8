"""Names and paths read from files a user hands us: ids match a safe pattern, paths stay in their folder.

A manifest, an episode's metadata or a bench index is data, not a program: an id such as
``../../escaped`` or a path such as ``/etc/passwd`` must never decide where we read or write.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from pathlib import Path

SAFE_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,127}")
"""Episode ids, source names and shard names: letters, digits, ``_ . -``; no separators, no leading dot."""


def check_id(value, what: str) -> str:
    """``value`` if it is a safe id (see ``SAFE_ID``), else a ``ValueError`` naming ``what``."""
    if not isinstance(value, str) or not SAFE_ID.fullmatch(value) or ".." in value:
        raise ValueError(f"{what}: {value!r} is not a valid id; expected 1-128 letters, digits, '_', '.' or '-' "
                         "(no path separators, no '..', not starting with '.')")
    return value


def inside(root: str | Path, relative, what: str) -> Path:
    """``root / relative`` resolved, or a ``ValueError`` naming ``what`` if it leaves ``root``."""
    if not isinstance(relative, str) or not relative:
        raise ValueError(f"{what}: expected a relative path inside {root}, got {relative!r}")
    base = Path(root).resolve()
    path = (base / relative).resolve()
    if path != base and base not in path.parents:
        raise ValueError(f"{what}: {relative!r} points outside {root}; expected a path inside that folder")
    return path


def folders(root: str | Path | Sequence[str | Path]) -> list[Path]:
    """One folder or several (e.g. collections pooled for training) as a list of paths; an empty list is an error."""
    if isinstance(root, (str, Path)):
        return [Path(root)]
    paths = [Path(r) for r in root]
    if not paths:
        raise ValueError("no folder given; expected one folder or more (e.g. --collection data/ctl data/extra)")
    return paths
