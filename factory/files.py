"""Local output files written the one safe way: to a hidden temp name beside the target, then renamed into
place (atomic on POSIX: a reader sees the old file or the new one, never half of one), with one sentence
for the errors a user can fix (no space, no permission). Store files go through factory.store.location."""
from __future__ import annotations

import contextlib
import errno
import os
import uuid
from pathlib import Path
from typing import Iterator

from factory.errors import FactoryError


def os_error_sentence(path, exc: OSError) -> FactoryError:
    if exc.errno == errno.ENOSPC:
        return FactoryError(f"no space left on the device while writing {path}; free space and rerun.")
    if exc.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
        return FactoryError(f"cannot write {path}: permission denied or read-only filesystem.")
    return FactoryError(f"cannot write {path}: {exc.strerror or exc}.")


def check_parent_writable(path: str | Path) -> None:
    """The folder that will hold ``path`` exists and is writable, else one sentence."""
    parent = Path(path).resolve().parent
    if not parent.is_dir():
        raise FactoryError(f"cannot write {path}: folder {parent} does not exist.")
    if not os.access(parent, os.W_OK):
        raise FactoryError(f"cannot write {path}: folder {parent} is not writable.")


@contextlib.contextmanager
def atomic_write(path: str | Path) -> Iterator[Path]:
    """``with atomic_write(p) as tmp: write(tmp)`` -> ``tmp`` renamed to ``p`` on success, removed on failure."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex[:12]}.tmp")
    try:
        yield tmp
        os.replace(tmp, path)
    except OSError as exc:
        raise os_error_sentence(path, exc) from None
    finally:
        with contextlib.suppress(OSError):
            tmp.unlink()
