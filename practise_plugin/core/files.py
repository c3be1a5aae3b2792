"""Files a run writes: atomic, strict, checked before the work, and one run per work directory at a time.

Why it exists: every artifact (checkpoints, IR files, reports, caches) goes to a temporary name in its
destination folder and is renamed into place only once complete (``os.replace`` is atomic on POSIX), so a
crash or Ctrl-C never leaves a half-written output. Output paths are checked before any work starts, JSON
is strict (no ``NaN``/``Infinity``, which strict readers reject), and a lock keeps two runs from sharing
one work directory (and one resumable checkpoint).
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import math
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from .errors import ExportError, PractiseError


def umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def check_writable_dir(path: Path | str) -> Path:
    """Check, creating nothing, that ``path`` is a folder files can be written to, or could be made one.

    Why it creates nothing: bad input found afterwards (an unreadable image, an unknown option) must leave the
    disk as it was, not an empty output folder. A missing folder is judged by its nearest existing ancestor."""
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise ExportError(f"output folder {path} is not writable: a file stands there; choose another with --out")
    if path.is_dir():
        try:
            with tempfile.NamedTemporaryFile(dir=path, prefix=".practise-probe-"):
                pass
        except OSError as e:
            raise ExportError(f"output folder {path} is not writable ({e.strerror}); choose another with --out") from e
        return path
    ancestor = path.absolute().parent
    while not ancestor.exists():
        ancestor = ancestor.parent
    if not ancestor.is_dir():
        raise ExportError(f"output folder {path} is not writable: {ancestor} is a file; choose another with --out")
    if not os.access(ancestor, os.W_OK | os.X_OK):
        raise ExportError(f"output folder {path} is not writable ({ancestor} is not writable); choose another with --out")
    return path


def ensure_writable_dir(path: Path | str) -> Path:
    """:func:`check_writable_dir`, then create the folder: for the moment work is about to be written there."""
    path = check_writable_dir(path)
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise ExportError(f"output folder {path} is not writable ({e.strerror}); choose another with --out") from e
    return path


def check_output_file(path: Path | str) -> Path:
    """Fail now, not after the work, if a file cannot be written at ``path`` (a folder stands there, or
    its parent is a file or unwritable). Creates nothing."""
    path = Path(path)
    if path.is_dir():
        raise ExportError(f"{path} is a folder, but a file is written there; remove or rename the folder")
    check_writable_dir(path.parent)
    return path


@contextlib.contextmanager
def atomic_path(dest: Path | str) -> Iterator[Path]:
    """Yield a temporary path next to ``dest``; rename it onto ``dest`` only if the block succeeds."""
    dest = check_output_file(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)  # checked just above, as atomic_dir does for its parent
    fd, tmp = tempfile.mkstemp(dir=dest.parent, prefix=f".{dest.name}.", suffix=".tmp")
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        os.chmod(tmp_path, 0o666 & ~umask())  # mkstemp creates 0600; give the file the usual permissions
        os.replace(tmp_path, dest)
    finally:
        if tmp_path.exists():
            tmp_path.unlink()


@contextlib.contextmanager
def atomic_dir(dest: Path | str) -> Iterator[Path]:
    """Yield a temporary folder; on success it replaces ``dest`` (files of an IR travel together)."""
    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=dest.parent, prefix=f".{dest.name}.", suffix=".tmp"))
    try:
        yield tmp
        os.chmod(tmp, 0o777 & ~umask())  # mkdtemp creates 0700; give the folder the usual permissions
        if dest.exists():
            old = dest.with_name(f".{dest.name}.old")
            shutil.rmtree(old, ignore_errors=True)
            os.replace(dest, old)
            os.replace(tmp, dest)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, dest)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def atomic_torch_save(obj: Any, dest: Path | str) -> None:
    import torch

    with atomic_path(dest) as tmp:
        torch.save(obj, tmp)


def atomic_write_text(dest: Path | str, text: str) -> None:
    with atomic_path(dest) as tmp:
        tmp.write_text(text)


def strict_json(obj: Any) -> Any:
    """``obj`` with every non-finite float replaced by None: what strict JSON readers accept."""
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {str(k): strict_json(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [strict_json(v) for v in obj]
    return _plain(obj)


def _plain(o: Any) -> Any:
    """numpy scalars, paths and tensors as plain JSON values; anything else unchanged."""
    if type(o).__module__ == "numpy":
        return strict_json(o.item() if hasattr(o, "item") and getattr(o, "ndim", 0) == 0 else o.tolist())
    if isinstance(o, Path):
        return str(o)
    if type(o).__module__.startswith("torch") and hasattr(o, "tolist"):
        return strict_json(o.tolist())
    return o


def dumps_json(obj: Any) -> str:
    """Strict, indented JSON text (non-finite numbers become null)."""
    return json.dumps(strict_json(obj), indent=2, allow_nan=False) + "\n"


def atomic_write_json(dest: Path | str, obj: Any) -> None:
    atomic_write_text(dest, dumps_json(obj))


def atomic_save_npz(dest: Path | str, **arrays: Any) -> None:
    import numpy as np

    with atomic_path(dest) as tmp:
        with open(tmp, "wb") as f:
            np.savez_compressed(f, **arrays)


def save_png(fig: Any, dest: Path | str, dpi: int = 110) -> Path:
    """Lay out, write atomically as PNG and close a matplotlib figure (every report and benchmark plot)."""
    import matplotlib.pyplot as plt

    fig.tight_layout()
    with atomic_path(dest) as tmp:
        fig.savefig(tmp, format="png", dpi=dpi)
    plt.close(fig)
    return Path(dest)


LOCK_NAME = ".practise.lock"


@contextlib.contextmanager
def work_dir_lock(path: Path | str, *, wait: bool = False) -> Iterator[Path]:
    """Hold an exclusive lock on the work directory ``path`` for the block.

    A second run into the same directory would share its resumable checkpoints; it fails at once with
    the first run's pid (or waits for it with ``wait=True``). The lock is an ``flock`` on
    ``path/.practise.lock``, so it is released even when the holder is killed.
    """
    folder = ensure_writable_dir(path)
    lock = folder / LOCK_NAME
    fd = os.open(lock, os.O_RDWR | os.O_CREAT, 0o666 & ~umask())
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | (0 if wait else fcntl.LOCK_NB))
        except OSError as e:
            if e.errno not in (errno.EAGAIN, errno.EACCES):
                raise
            holder = os.pread(fd, 32, 0).decode(errors="replace").strip() or "unknown"
            raise PractiseError(
                f"another practise run (pid {holder}) is using {folder}; wait for it to finish, or give this run "
                "another output folder (--out)"
            ) from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        yield folder
    finally:
        os.close(fd)  # closing the descriptor releases the flock
