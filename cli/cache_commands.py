"""``costcl cache info|clear``, and the answer cache that lets a repeated
``costcl estimate`` print without importing torch.

The trace cache (:mod:`costmodel.cache`, used by the engine) saves the tracing
but a fresh process still imports torch (~5 s here) to rebuild the network.
An *answer* is what ``costcl estimate`` printed, stored under a key made of
the command line exactly as typed, the working folder, the ``--config`` file's
bytes, what sets torch's thread count (``OMP_NUM_THREADS``, the CPUs), how the
terminal renders (width, colours) and costcl's, torch's and torchvision's versions
and costcl's source fingerprint.  A user factory's
module file is checked by content on every hit.  :func:`answering` looks it
up before typer parses anything (parsing itself imports pydantic, 0.3 s): a
hit prints the stored bytes, identical to the cold output by construction.
Only a successful estimate is stored, so an error is always recomputed.
"""
from __future__ import annotations

import contextlib
import contextvars
import os
import sys
from collections.abc import Iterator

import typer

from cli.app import AsJson, app, console, emit_json
from costmodel import cache

cache_app = typer.Typer(help="The trace and answer cache: where it is, what it holds; clear it.",
                        no_args_is_help=True)
app.add_typer(cache_app, name="cache")

CACHED_COMMANDS = ("estimate",)
ANSWER_PACKAGES = ("costmodel", "reports", "budgets", "lightcl", "cli")
"""What a printed answer depends on: the numbers and how they are printed."""
_PENDING: contextvars.ContextVar[tuple[list[str], str] | None] = contextvars.ContextVar(
    "costcl_answer_request", default=None)
"""The running command line and its answer key, while :func:`answering` runs it."""


# -- the answer cache --------------------------------------------------------------

def _config_path(argv: list[str], flag: str = "--config") -> str | None:
    for i, arg in enumerate(argv):
        if arg == flag and i + 1 < len(argv):
            return argv[i + 1]
        if arg.startswith(f"{flag}="):
            return arg.split("=", 1)[1]
    return None


def _profiles_digest(argv: list[str]) -> tuple | None:
    """The device profiles an estimate's time block may read: ``--device-profile FILE``
    and the ones ``costcl calibrate`` wrote for this machine (``None``: unreadable)."""
    from costmodel.time_profile import default_path

    given = _config_path(argv, "--device-profile")
    digest = cache.file_digest(given) if given is not None else None
    if given is not None and digest is None:
        return None
    own = tuple(cache.file_digest(default_path(d)) for d in ("cpu", "cuda"))
    return (digest, own)


def answer_key(argv: list[str]) -> str | None:
    """The key of this command line's answer, or ``None`` when it is not cached
    (another command, ``--help``, ``--no-cache``, caching off, an unreadable config)."""
    if not argv or argv[0] not in CACHED_COMMANDS or cache.active_root() is None:
        return None
    if any(a in ("--no-cache", "--help") for a in argv):
        return None
    config = _config_path(argv)
    config_digest = cache.file_digest(config) if config is not None else None
    if config is not None and config_digest is None:
        return None
    try:
        cwd = os.getcwd()  # relative paths (--config, a factory on sys.path) mean other files
    except OSError:
        return None
    profiles = _profiles_digest(argv)
    if profiles is None:
        return None
    terminal = (console.width, console.color_system, console.is_terminal, console.encoding,
                console.no_color, console.legacy_windows, console.is_dumb_terminal)
    # the threads torch will run with (an estimate's kernel scratch is per thread)
    threads = (os.environ.get("OMP_NUM_THREADS"), os.environ.get("MKL_NUM_THREADS"),
               os.cpu_count())
    return cache.digest("answer", argv, cwd, config_digest, terminal, profiles, threads)


def _answer_versions() -> cache.Versions:
    return cache.versions(ANSWER_PACKAGES)


def _lookup(key: str) -> str | None:
    store = cache.store("answers")
    payload = store.load(key, _answer_versions()) if store is not None else None
    if not (isinstance(payload, dict) and isinstance(payload.get("stdout"), str)
            and isinstance(payload.get("models"), list)):
        return None
    for model in payload["models"]:  # a user factory's module, by content
        if not (isinstance(model, list) and len(model) == 2 and isinstance(model[0], str)
                and cache.model_source(model[0]) == model[1]):
            return None
    for method in payload.get("methods", []):  # a method plugin's module, by content
        if not (isinstance(method, list) and len(method) == 2 and isinstance(method[0], str)
                and cache.method_source(method[0]) == method[1]):
            return None
    return payload["stdout"]


@contextlib.contextmanager
def answering(argv: list[str]) -> Iterator[bool]:
    """Yield ``True`` after printing a stored answer for ``argv``; else ``False``,
    with ``argv`` remembered so the command can store what it prints (:func:`remember`)."""
    key = answer_key(argv)
    stdout = _lookup(key) if key is not None else None
    if stdout is not None:
        sys.stdout.write(stdout)
        sys.stdout.flush()
        yield True
        return
    token = _PENDING.set((list(argv), key) if key is not None else None)
    try:
        yield False
    finally:
        _PENDING.reset(token)


def remember(stdout: str, model: str, method: str = "") -> None:
    """Store what the running command printed, for its command line (see :func:`answering`).

    The key is computed again: when it changed while the command ran (a config file
    edited meanwhile), which bytes the command read is unknown, so nothing is stored.
    """
    pending = _PENDING.get()
    store = cache.store("answers")
    if pending is None or store is None:
        return
    argv, key = pending
    source, method_source = cache.model_source(model), cache.method_source(method)
    if answer_key(argv) != key or source is None or method_source is None:
        return
    methods = [[method, method_source]] if method_source != "costcl" else []
    store.save(key, _answer_versions(), {"stdout": stdout, "models": [[model, source]],
                                         "methods": methods})


# -- costcl cache info | clear -----------------------------------------------------

def _size(nbytes: int) -> str:
    for unit in ("bytes", "KiB", "MiB", "GiB"):
        if nbytes < 1024 or unit == "GiB":
            return f"{nbytes:,} {unit}" if unit == "bytes" else f"{nbytes:.1f} {unit}"
        nbytes /= 1024  # type: ignore[assignment]
    raise AssertionError


@cache_app.command("info")
def info(as_json: AsJson = False) -> None:
    """Where the cache is, how many entries and bytes it holds, and the versions it is for."""
    result = cache.info()
    if as_json:
        emit_json(result.to_json())
        return
    state = "" if result.enabled else " (off: COSTCL_NO_CACHE is set)"
    lines = [f"cache: {result.location}{state}"]
    for k in result.kinds:
        stale = k.entries - k.current
        lines.append(f"  {k.kind}: {k.entries} entries, {_size(k.size_bytes)}"
                     + (f" ({stale} from other versions, never read again)" if stale else ""))
    v = result.versions
    lines.append(f"versions: costcl {v.costcl} (source {v.source}), torch {v.torch}, "
                 f"torchvision {v.torchvision}")
    lines.append(f"total: {result.entries} entries, {_size(result.size_bytes)}; "
                 "COSTCL_CACHE_DIR moves it, COSTCL_NO_CACHE=1 turns it off")
    print("\n".join(lines))  # plain text: a path is not rich markup


@cache_app.command("clear")
def clear() -> None:
    """Remove every cached trace and answer (they are rebuilt when next needed)."""
    where = cache.location()
    count, size = cache.clear(where)
    print(f"removed {count} entries ({_size(size)}) from {where}")
