"""The report's folder: checked before any work, then replaced whole in one swap.

Why a swap: a report is a set of files (``index.html``, ``report.md``, the PNGs)
that only make sense together.  Writing them one by one into ``--out`` lets a
reader (a browser reloading, a CI step copying the folder) see the old
``index.html`` beside the new PNGs.  So the new report is built complete in a
staging folder beside ``--out`` (same file system, so a rename is possible) and
then takes ``--out``'s place:

* On Linux, ``renameat2(RENAME_EXCHANGE)`` swaps the two folders in one atomic
  step: every path lookup sees either the whole old report or the whole new one,
  and ``--out`` never stops existing.  The old report, now at the staging path,
  is then removed.
* Where that call is missing (another OS, a file system that refuses it), the old
  folder is renamed aside, the staging folder renamed in, and the aside folder
  removed.  Between the two renames ``--out`` is briefly absent; a reader sees no
  report or a whole one, never a mix.  If the second rename fails, the first is
  undone.

A reader that already holds the old folder open (a shell whose current folder it
is) keeps reading the old files until it lets go; that is the file system's
rule, not a mix.

Whose folder may be swapped away: only an empty folder or a costcl report, known
by the marker file costcl writes into every report (it lists the report's files).
Anything else in it (a user's notes) makes costcl refuse, before any work: a
user's file is never deleted.  Reports written before the marker existed are
recognized by their ``index.html`` and their fixed file names.

A run killed mid-way leaves its staging (or aside) folder behind, named with its
process id; the next run for the same ``--out`` removes those whose process is
gone, so none survives unnoticed.
"""
from __future__ import annotations

import contextlib
import ctypes
import errno
import json
import os
import re
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

from costmodel.errors import CostclError
from costmodel.files import check_can_create

MARKER = ".costcl-report"
"""The file that says "costcl wrote this folder"; JSON with the files it wrote."""
STAGING, ASIDE = "costcl-staging", "costcl-old"
LEGACY_FILES = frozenset({"index.html", "report.md", "memory.png", "flops.png", "batch.png",
                          "budget.png", "lightcl_table.png", "validation.png", "layers.png"})
"""What a report written before the marker existed may hold."""
LEGACY_SIGNATURE = "Made by costcl."

T = TypeVar("T")


def _quoted(path: Path | str) -> str:
    return repr(str(path))


def check_out(out: Path | str) -> Path:
    """``--out`` as an absolute path that a report may replace, or one line that says why not.

    Runs before any costing, so a bad folder fails in a second, not after the
    minute a report takes, and nothing is written.
    """
    if not str(out).strip():
        raise CostclError("--out is empty; give a folder for the report, e.g. --out report")
    given = Path(out)
    if given.is_symlink() and given.is_dir():
        given = given.resolve()  # replace the folder it points to, keep the link
    if given.exists() and not given.is_dir():
        raise CostclError(f"--out {_quoted(out)} is a file; give a folder for the report")
    path = Path(os.path.abspath(given))
    if path.parent == path or Path.cwd().resolve().is_relative_to(path.resolve()):
        raise CostclError(f"--out {_quoted(out)} is the current folder or holds it; give a "
                          "new folder for the report, e.g. --out report")
    check_can_create(path.parent, "--out", "give a folder you can write for the report")
    if path.is_dir():
        _check_replaceable(path, out)
    return path


def _written_files(folder: Path) -> frozenset[str] | None:
    """The files costcl wrote into ``folder``, from its marker (or a legacy report's names)."""
    marker = folder / MARKER
    if marker.is_file():
        try:
            files = json.loads(marker.read_text()).get("files", [])
        except (OSError, ValueError, AttributeError):
            return None
        return frozenset(str(f) for f in files) | {MARKER}
    index = folder / "index.html"
    try:
        legacy = index.is_file() and LEGACY_SIGNATURE in index.read_text(errors="replace")
    except OSError:
        legacy = False
    return LEGACY_FILES if legacy else None


def _check_replaceable(path: Path, given: Path | str) -> None:
    """An empty folder or a costcl report with nothing added; else refuse (never delete)."""
    try:
        entries = sorted(p.name for p in path.iterdir())
    except OSError as e:
        raise CostclError(f"--out {_quoted(given)} cannot be read ({e.strerror}); "
                          "give an empty or new folder") from None
    if not entries:
        return
    ours = _written_files(path)
    if ours is None:
        raise CostclError(f"--out {_quoted(given)} is a folder that is not a costcl report "
                          f"(it holds {entries[0]!r}); costcl replaces the whole folder, so pick "
                          "an empty or new folder")
    foreign = [e for e in entries if e not in ours]
    if foreign:
        raise CostclError(f"--out {_quoted(given)} holds {foreign[0]!r}, which costcl did not "
                          "write; costcl replaces the whole folder, so move it or pick an empty "
                          "or new folder")


def _side(path: Path, kind: str, pid: int | None = None) -> Path:
    return path.parent / f".{path.name}.{kind}-{os.getpid() if pid is None else pid}"


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process
        return True
    return True


def remove_stale(path: Path) -> list[Path]:
    """Remove staging and aside folders of earlier runs for ``path`` whose process is gone
    (or is this one: an earlier build in the same process that was interrupted)."""
    pattern = re.compile(re.escape(f".{path.name}.") + f"(?:{STAGING}|{ASIDE})-([0-9]+)")
    removed = []
    if not path.parent.is_dir():
        return removed
    for entry in path.parent.iterdir():
        m = pattern.fullmatch(entry.name)
        if m and entry.is_dir() and not entry.is_symlink():
            pid = int(m.group(1))
            if pid == os.getpid() or not _alive(pid):
                shutil.rmtree(entry, ignore_errors=True)
                removed.append(entry)
    return removed


def _exchange(a: Path, b: Path) -> bool:
    """Swap two folders atomically (Linux renameat2 RENAME_EXCHANGE); False if unsupported."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        renameat2 = libc.renameat2
    except (OSError, AttributeError):
        return False
    at_fdcwd, rename_exchange = -100, 2
    renameat2.argtypes = (ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p,
                          ctypes.c_uint)
    if renameat2(at_fdcwd, os.fsencode(a), at_fdcwd, os.fsencode(b), rename_exchange) == 0:
        return True
    err = ctypes.get_errno()
    if err in (errno.EINVAL, errno.ENOSYS, errno.EOPNOTSUPP):  # the file system cannot: fall back
        return False
    raise OSError(err, os.strerror(err), str(b))


def _swap_in(stage: Path, path: Path) -> None:
    """Put ``stage`` at ``path``; whatever was at ``path`` is removed afterwards."""
    if not path.exists():
        os.rename(stage, path)
        return
    if _exchange(stage, path):
        shutil.rmtree(stage, ignore_errors=True)  # it now holds the old report
        return
    aside = _side(path, ASIDE)
    os.rename(path, aside)
    try:
        os.rename(stage, path)
    except BaseException:
        os.rename(aside, path)
        raise
    shutil.rmtree(aside, ignore_errors=True)


def publish(out: Path, write: Callable[[Path], T]) -> T:
    """Let ``write`` fill a fresh staging folder, then make it ``out`` in one swap.

    ``write`` returns what the caller wants back; the files it leaves in the
    folder are listed in the marker.  If it raises, ``out`` is untouched and the
    staging folder is removed.
    """
    path = check_out(out)
    path.parent.mkdir(parents=True, exist_ok=True)
    remove_stale(path)
    stage = _side(path, STAGING)
    stage.mkdir()
    try:
        result = write(stage)
        files = sorted(p.name for p in stage.iterdir() if p.name != MARKER)
        (stage / MARKER).write_text(json.dumps({"written_by": "costcl report", "files": files}))
        if path.is_dir():
            _check_replaceable(path, out)  # still ours after the minute of work?
        _swap_in(stage, path)
    finally:
        with contextlib.suppress(FileNotFoundError):
            shutil.rmtree(stage)
    return result
