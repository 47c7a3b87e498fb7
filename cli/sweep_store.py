"""Appending a sweep's results: one line per finished point, each line whole or absent.

Why not :mod:`costmodel.files`' rename: a sweep of hundreds of points would rewrite
the whole file for each one.  Instead each line is appended with a single
``write`` on an ``O_APPEND`` descriptor and ``fsync``'d before the point counts as
done.  A crash mid-write can tear only the last line; :class:`ResultStore` cuts a
torn tail off before it appends anything (the point it belonged to runs again).
One ``costcl sweep run`` at a time writes a folder: a second is refused (a lock
held with ``flock``, released by the kernel if the first one dies).
"""
from __future__ import annotations

import fcntl
import json
import os
from pathlib import Path
from typing import Any

from costmodel.errors import CostclError
from costmodel.files import check_can_create
from reports.sweep_results import RESULTS, read

LOCK = ".costcl-sweep.lock"


def check_out(out: Path | str) -> Path:
    """``--out`` can hold the results: checked before any planning, writing nothing."""
    if not str(out).strip():
        raise CostclError("--out is empty; give a folder for the sweep's results, e.g. --out sweep")
    path = Path(out)
    if path.exists() and not path.is_dir():
        raise CostclError(f"--out {str(out)!r} is a file; give a folder for the sweep's results")
    if (path / RESULTS).is_dir():
        raise CostclError(f"--out {str(out)!r} holds a folder named {RESULTS}; give another folder")
    check_can_create(path, "--out", "give a folder you can write for the sweep's results")
    return path


class ResultStore:
    """``with ResultStore(folder) as store:`` locks the folder, repairs a torn tail, reads
    what is finished (:attr:`finished`), and appends with :meth:`append`."""

    def __init__(self, folder: Path) -> None:
        self.folder = Path(folder)
        self.path = self.folder / RESULTS
        self.finished: dict[str, dict[str, Any]] = {}
        self.repaired_bytes = 0
        self._lock_fd: int | None = None
        self._fd: int | None = None

    def __enter__(self) -> ResultStore:
        self.folder.mkdir(parents=True, exist_ok=True)
        self._lock_fd = os.open(self.folder / LOCK, os.O_RDWR | os.O_CREAT, 0o666)
        try:
            fcntl.flock(self._lock_fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(self._lock_fd)
            self._lock_fd = None
            raise CostclError(f"another `costcl sweep run` is writing {str(self.folder)!r}; wait "
                              "for it to end or give another --out") from None
        results = read(self.path)
        self._fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o666)
        if results.torn_bytes:  # a crash mid-append: drop the half line, its point runs again
            os.ftruncate(self._fd, results.complete_bytes)
            os.fsync(self._fd)
            self.repaired_bytes = results.torn_bytes
        self.finished = results.lines
        return self

    def append(self, line: dict[str, Any]) -> None:
        """One whole line, in one write, on disk before it returns."""
        data = (json.dumps(line, default=str) + "\n").encode()  # in file order: axes as written
        assert self._fd is not None, "append outside `with ResultStore(...)`"
        written = os.write(self._fd, data)
        if written != len(data):  # a full disk: leave no half line for the next reader
            os.ftruncate(self._fd, os.lseek(self._fd, 0, os.SEEK_END) - written)
            raise OSError(f"wrote {written} of {len(data)} bytes to {self.path}")
        os.fsync(self._fd)
        self.finished[line["point"]] = line

    def __exit__(self, *exc: object) -> None:
        for fd in (self._fd, self._lock_fd):
            if fd is not None:
                os.close(fd)
        self._fd = self._lock_fd = None
