"""Crash-safe file writing and JSONL helpers: a killed job never leaves a half-written file behind.

Every file is written under a temporary name, flushed and fsynced, renamed into place, and its folder
fsynced, so after a crash (even a power cut) a path holds either its old or its new content. Files and
folders get the mode a plain ``open()``/``mkdir()`` would give them (0o666 / 0o777 less the umask), so
a shared data folder stays readable by others.
"""

from __future__ import annotations

import ctypes
import errno
import json
import os
import shutil
from pathlib import Path
from typing import Callable, Iterable, Iterator

import numpy as np


def fsync_dir(folder: str | Path) -> None:
    """fsync a folder, so that renames and new entries in it survive a crash (a no-op on the few file
    systems, some network and FUSE ones, that refuse to sync a folder with EINVAL)."""
    fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    except OSError as err:
        if err.errno != errno.EINVAL:
            raise
    finally:
        os.close(fd)


def umask() -> int:
    """The process's umask, read without changing it where Linux reports it (so no other thread ever
    sees it changed); elsewhere by setting it and putting it back."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    except OSError:
        pass
    old = os.umask(0)
    os.umask(old)
    return old


def sync_tree(folder: str | Path) -> None:
    """Give every file under ``folder`` the umask's default mode (safetensors writes its files 0600)
    and fsync every file and folder, deepest first, ``folder`` included."""
    mode = 0o666 & ~umask()
    for root, _, files in os.walk(folder, topdown=False):
        for name in files:
            fd = os.open(os.path.join(root, name), os.O_RDONLY)
            try:
                os.fchmod(fd, mode)
                os.fsync(fd)
            finally:
                os.close(fd)
        fsync_dir(root)


def atomic_write(path: str | Path, write: Callable[[object], None], mode: str = "wb") -> Path:
    """Call ``write(fileobj)`` on a temporary file next to ``path``, fsync it, rename it into place and
    fsync the folder. The file gets the umask's default mode, as ``open(path, "w")`` would give it."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{os.urandom(4).hex()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)  # the kernel applies the umask, as open() does
    try:
        with os.fdopen(fd, mode) as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    fsync_dir(path.parent)
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
    """A transformers-style model's ``save_pretrained`` (config.json + model.safetensors) as ``folder``,
    crash-safe (see :func:`replace_folder`)."""
    return replace_folder(folder, lambda tmp: model.save_pretrained(tmp, safe_serialization=True))


def replace_folder(folder: str | Path, fill: Callable[[Path], None]) -> Path:
    """Write a whole folder with ``fill(tmp)``, crash-safe: at every instant ``folder`` is either the
    complete old content or the complete new one.

    ``fill`` writes into ``.NAME.tmp`` next to ``folder``, which is then fsynced. A new ``folder`` is
    one rename; an existing one is swapped with it in one atomic exchange (Linux ``renameat2`` with
    ``RENAME_EXCHANGE``) and the old copy, now at ``.NAME.tmp``, is deleted. Where the system has no
    such exchange, ``folder`` is renamed to ``.NAME.old`` before the new one is renamed in, and a kill
    between those two renames is rolled back by the next ``replace_folder`` to the same folder.
    """
    folder = Path(folder)
    tmp, old = folder.with_name(f".{folder.name}.tmp"), folder.with_name(f".{folder.name}.old")
    if old.exists() and not folder.exists():
        old.rename(folder)  # a fallback swap was killed halfway: put the old checkpoint back
    for leftover in (tmp, old):
        if leftover.exists():
            shutil.rmtree(leftover)
    fill(tmp)
    sync_tree(tmp)
    if not folder.exists():
        tmp.rename(folder)
        fsync_dir(folder.parent)
        return folder
    if _exchange(tmp, folder):
        stale = tmp
    else:
        folder.rename(old)
        tmp.rename(folder)
        stale = old
    fsync_dir(folder.parent)
    shutil.rmtree(stale)
    return folder


def _exchange(a: Path, b: Path) -> bool:
    """Swap two existing paths atomically (Linux ``renameat2(RENAME_EXCHANGE)``); False where the
    C library, the kernel or the file system can't."""
    renameat2 = getattr(ctypes.CDLL(None, use_errno=True), "renameat2", None)
    if renameat2 is None:
        return False
    renameat2.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_uint]
    at_fdcwd, rename_exchange = -100, 2
    if renameat2(at_fdcwd, os.fsencode(a), at_fdcwd, os.fsencode(b), rename_exchange) == 0:
        return True
    err = ctypes.get_errno()
    if err in (errno.EINVAL, errno.ENOSYS, errno.EOPNOTSUPP):
        return False
    raise OSError(err, os.strerror(err), str(a), None, str(b))
