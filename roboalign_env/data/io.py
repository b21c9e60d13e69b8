"""Atomic file writing and JSONL helpers: a killed job never leaves a half-written file behind."""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Callable, Iterable, Iterator

import numpy as np


def atomic_write(path: str | Path, write: Callable[[object], None], mode: str = "wb") -> Path:
    """Call ``write(fileobj)`` on a temporary file next to ``path``, then rename it into place."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, mode) as f:
            write(f)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def atomic_savez(path: str | Path, **arrays: np.ndarray) -> Path:
    """``np.savez_compressed`` to ``path`` atomically (no pickled objects allowed in ``arrays``)."""
    for key, value in arrays.items():
        if np.asarray(value).dtype == object:
            raise TypeError(f"array {key!r} has dtype object; only plain numeric/string arrays are stored")
    return atomic_write(path, lambda f: np.savez_compressed(f, **arrays))


def write_jsonl(path: str | Path, rows: Iterable[dict]) -> Path:
    """Write ``rows`` as JSON lines, atomically."""
    text = "".join(json.dumps(row, sort_keys=True) + "\n" for row in rows)
    return atomic_write(path, lambda f: f.write(text), mode="w")


def read_jsonl(path: str | Path) -> Iterator[dict]:
    """Yield the rows of a JSONL file; a malformed line raises ``ValueError`` naming file and line."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such JSONL file")
    with path.open() as f:
        for number, line in enumerate(f, 1):
            if line.strip():
                try:
                    yield json.loads(line)
                except json.JSONDecodeError as err:
                    raise ValueError(f"{path}:{number}: not valid JSON ({err.msg})") from err


def save_checkpoint(model, folder: str | Path) -> Path:
    """A transformers-style model's ``save_pretrained`` (config.json + model.safetensors) into a
    temporary folder, then swapped into place (never half-written)."""
    folder = Path(folder)
    tmp = folder.with_name(f".{folder.name}.tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    model.save_pretrained(tmp, safe_serialization=True)
    old = folder.with_name(f".{folder.name}.old")
    shutil.rmtree(old, ignore_errors=True)
    if folder.exists():
        folder.rename(old)
    tmp.rename(folder)
    shutil.rmtree(old, ignore_errors=True)
    return folder
