"""Writing output files atomically: a temporary file beside the target, then a rename.

A crash or Ctrl-C leaves either the old file or the new one, never half of one.
The file gets the permissions any new file would (the umask's), not mkstemp's 0600.
:func:`check_can_create` refuses an output location before any work starts.
"""
from __future__ import annotations

import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import IO

from costmodel.errors import CostclError


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def atomic_write(path: Path, write: Callable[[IO[bytes]], None]) -> None:
    atomic_write_all([(Path(path), write)])


def atomic_write_all(files: list[tuple[Path, Callable[[IO[bytes]], None]]],
                     fsync: bool = False) -> None:
    """Write several files as one: each is staged in full beside its target, then all
    are renamed into place, so a failure leaves the previous set and no temporary file.
    ``fsync``: flush each to disk before any rename (a checkpoint survives power loss)."""
    mask = _umask()
    staged: list[tuple[str, Path]] = []
    try:
        for path, write in files:
            path.parent.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
            staged.append((tmp, path))
            with os.fdopen(fd, "wb") as f:
                write(f)
                if fsync:
                    f.flush()
                    os.fsync(f.fileno())
            os.chmod(tmp, 0o666 & ~mask)
        for tmp, path in staged:
            os.replace(tmp, path)
    except BaseException:
        for tmp, _ in staged:
            Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write_text(text: str, path: Path) -> None:
    atomic_write(path, lambda f: f.write(text.encode()))


def atomic_save(obj: object, path: Path) -> None:
    """``torch.save`` atomically."""
    import torch

    atomic_write(path, lambda f: torch.save(obj, f))


def check_can_create(path: Path, flag: str, fix: str) -> None:
    """``path`` (to be created, or written in) can be: its nearest existing ancestor is a
    folder this process may write.  Checked before any work, so an hour of training or
    two minutes of a report cannot end on a read-only or mistyped ``--out``."""
    existing = Path(path)
    while not existing.exists() and not existing.is_symlink() and existing.parent != existing:
        existing = existing.parent
    if not existing.is_dir():
        raise CostclError(f"{flag} {str(path)!r} goes through the file {str(existing)!r}, which "
                          f"is a file, not a folder; {fix}")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise CostclError(f"{flag} {str(path)!r}: {str(existing)!r} is not writable "
                          f"(permission denied); {fix}")


def read_toml(path: str | os.PathLike[str], what: str) -> dict:
    """A TOML file's tables; a missing, unreadable or malformed file is one line naming
    ``what`` it is ('config file', 'sweep file') and where."""
    import tomllib

    p = Path(path)
    try:
        return tomllib.loads(p.read_text())
    except FileNotFoundError:
        raise CostclError(f"{what} {str(p)!r} does not exist") from None
    except tomllib.TOMLDecodeError as e:
        raise CostclError(f"{what} {str(p)!r} is not valid TOML: {e}") from None
    except (OSError, UnicodeDecodeError) as e:
        raise CostclError(f"cannot read {what} {str(p)!r}: {e}") from None
