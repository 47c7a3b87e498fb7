"""A cache on disk for work a fresh process would otherwise redo: traces, results, answers.

Tracing a step on the meta device is most of what a command costs, and every
``costcl`` process used to redo it.  Three stores live under one folder:

* ``traces/``: a traced step as plain data (:mod:`costmodel.trace.serialize`),
  keyed by everything the trace depends on (:func:`costmodel.engine.step_model`);
* ``results/``: what costmodel computed from traces and a scenario (an
  :func:`~costmodel.estimation.estimate`, LightCL's feature-map shapes), :func:`remembered`;
* ``answers/``: what ``costcl estimate`` printed for a command line, so a
  repeated one answers without importing torch (:mod:`cli.cache_commands`).

An entry is gzip'd text: one header line (schema, kind, key, the versions it
was made under, the SHA-256 of the rest) and a JSON payload.  Nothing in it
can run code.  An entry that does not decompress, parse, match its key and
the running versions, or hash to its checksum is a miss: the caller rebuilds
it and overwrites it.  The cache is an optimisation only: an unwritable
folder, a full disk or a racing writer means "no cache", never an error.

Where: ``COSTCL_CACHE_DIR``, else ``$XDG_CACHE_HOME/costcl``, else
``~/.cache/costcl``.  ``COSTCL_NO_CACHE=1`` (or ``--no-cache``, via
:func:`disabled`) turns it off.  This module imports neither torch nor numpy,
so a warm ``costcl estimate`` can use it.
"""
from __future__ import annotations

import contextlib
import contextvars
import functools
import gzip
import hashlib
import json
import os
import re
import sys
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, TypeVar

SCHEMA = 1
"""Bump when the entry layout changes; older entries are then misses."""
KINDS = ("traces", "results", "answers")
ENTRY_SUFFIX = ".json.gz"

_OFF: contextvars.ContextVar[bool] = contextvars.ContextVar("costcl_cache_off", default=False)


# -- where ------------------------------------------------------------------------

def env_disabled() -> bool:
    return os.environ.get("COSTCL_NO_CACHE", "").strip().lower() not in ("", "0", "false", "no")


def location() -> Path:
    """The cache folder, whether or not it exists (``costcl cache info`` shows it)."""
    explicit = os.environ.get("COSTCL_CACHE_DIR")
    if explicit:
        return Path(explicit).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "costcl"


def active_root() -> Path | None:
    """The folder to read and write, or ``None`` when caching is off."""
    if _OFF.get() or env_disabled():
        return None
    return location()


@contextlib.contextmanager
def disabled(off: bool = True) -> Iterator[None]:
    """No cache reads or writes inside (``--no-cache``); restores the previous state."""
    token = _OFF.set(_OFF.get() or off)
    try:
        yield
    finally:
        _OFF.reset(token)


# -- what an entry depends on -------------------------------------------------------

TRACE_PACKAGES = ("costmodel",)
"""A trace depends on the engine, methods and models only (an answer's packages are
the command line's business: :data:`cli.cache_commands.ANSWER_PACKAGES`)."""

@dataclass(frozen=True)
class Versions:
    """What makes an entry stale when it changes: costcl (its version and, so that
    editing the code in development invalidates entries, its source files), torch
    and torchvision (their op decompositions and models shape a trace)."""

    costcl: str
    source: str
    torch: str
    torchvision: str
    packages: tuple[str, ...] = TRACE_PACKAGES
    """Whose source ``source`` fingerprints: the code that computed the entry."""

    def to_json(self) -> dict[str, Any]:
        return {**asdict(self), "packages": list(self.packages)}


@functools.cache
def dist_version(name: str) -> str:
    """An installed distribution's version from its ``*.dist-info`` folder name.

    ``importlib.metadata`` answers the same but costs 60 ms to import, a tenth of a
    warm estimate's budget; the first match on ``sys.path`` wins, as it does there.
    """
    pattern = re.compile(rf"^{re.escape(name)}-([^-]+)\.(dist|egg)-info$", re.IGNORECASE)
    for entry in sys.path:
        try:
            with os.scandir(entry or ".") as it:
                for item in it:
                    m = pattern.match(item.name)
                    if m:
                        return m.group(1)
        except OSError:
            continue
    return "unknown"


def source_fingerprint(packages: tuple[str, ...]) -> str:
    """Path, size and modification time of every ``.py`` file of ``packages``, hashed.

    Cheap (a few ``stat`` calls, no reading), and any edit to costcl's code changes it.
    Packages are found without importing them.
    """
    import importlib.util

    h = hashlib.sha256()
    for name in packages:
        spec = importlib.util.find_spec(name)
        dirs = list(spec.submodule_search_locations or []) if spec else []
        h.update(f"{name}:{len(dirs)}\0".encode())
        for d in sorted(dirs):
            for path, size, mtime in sorted(_py_files(d)):
                h.update(f"{os.path.relpath(path, d)}\0{size}\0{mtime}\0".encode())
    return h.hexdigest()[:20]


def _py_files(folder: str) -> Iterator[tuple[str, int, int]]:
    try:
        with os.scandir(folder) as it:
            entries = list(it)
    except OSError:
        return
    for e in entries:
        if e.is_dir(follow_symlinks=False) and e.name != "__pycache__":
            yield from _py_files(e.path)
        elif e.name.endswith(".py"):
            st = e.stat()
            yield e.path, st.st_size, st.st_mtime_ns




@functools.cache
def versions(packages: tuple[str, ...] = TRACE_PACKAGES) -> Versions:
    return Versions(dist_version("costcl"), source_fingerprint(packages),
                    dist_version("torch"), dist_version("torchvision"), tuple(packages))


def digest(*parts: Any) -> str:
    """A cache key: the SHA-256 of ``parts`` as canonical JSON (``repr`` for the rest)."""
    text = json.dumps(parts, sort_keys=True, separators=(",", ":"), default=repr)
    return hashlib.sha256(text.encode()).hexdigest()


def file_digest(path: str | os.PathLike[str]) -> str | None:
    """SHA-256 of a file's bytes, ``None`` when it cannot be read."""
    try:
        return hashlib.sha256(Path(path).read_bytes()).hexdigest()
    except OSError:
        return None


def model_source(name: str) -> str | None:
    """What a model's code is where costcl's source fingerprint does not cover it.

    Built-in and ``torchvision:`` models: costcl's and torchvision's versions say it.
    A ``package.module:callable`` factory: its module file, by content (found without
    importing it; a helper module it imports is not followed).  ``None``: not found,
    so not cacheable (building it will say why).
    """
    if ":" not in name or name.startswith("torchvision:"):
        return "costcl"
    module = name.partition(":")[0]
    found = _module_digest(module)
    return f"{module}:{found}" if found else None


def method_source(name: str) -> str | None:
    """What a method's code is where costcl's source fingerprint does not cover it:
    a plugin's module file, by content (:mod:`costmodel.plugins`); ``None``: not found."""
    from costmodel import plugins

    target = plugins.target(name.partition("@")[0])  # NAME@IMPL
    if target is None:
        return "costcl"
    found = _module_digest(target.partition(":")[0])
    return f"{target}:{found}" if found else None


def _module_digest(module: str) -> str | None:
    """SHA-256 of a module's source file, found without importing it; ``None``: not found."""
    try:
        import importlib.util
        spec = importlib.util.find_spec(module)  # imports the parent package, if dotted
    except Exception:  # noqa: BLE001 - a user's package can raise anything: not cacheable
        return None
    origin = getattr(spec, "origin", None)
    return file_digest(origin) if origin and origin.endswith(".py") else None


def scenario_source(model: str, *methods: str) -> str | None:
    """The code outside costcl's fingerprint that answers about ``model`` and ``methods``
    depend on; ``None``: some of it not found (not cacheable)."""
    parts = (model_source(model), *map(method_source, methods))
    return None if None in parts else "|".join(parts)  # type: ignore[arg-type]


# -- entries ------------------------------------------------------------------------

@dataclass(frozen=True)
class Store:
    """One kind of entry under a cache root."""

    root: Path
    kind: str

    def path(self, key: str) -> Path:
        return self.root / self.kind / f"{key}{ENTRY_SUFFIX}"

    def load(self, key: str, expected: Versions) -> Any | None:
        """The payload stored under ``key`` by these versions, or ``None`` (a miss).

        Anything wrong with the file is a miss, never an error and never trusted.
        """
        try:
            raw = gzip.decompress(self.path(key).read_bytes())
            head, _, body = raw.partition(b"\n")
            header = json.loads(head)
            if not (isinstance(header, dict) and header.get("schema") == SCHEMA
                    and header.get("kind") == self.kind and header.get("key") == key
                    and header.get("versions") == expected.to_json()
                    and header.get("sha256") == hashlib.sha256(body).hexdigest()):
                return None
            return json.loads(body)
        except Exception:  # noqa: BLE001 - missing, truncated, garbage: all mean "rebuild"
            return None

    def save(self, key: str, versions: Versions, payload: Any) -> bool:
        """Write an entry atomically; ``False`` (quietly) when it cannot be written."""
        from costmodel.files import atomic_write

        try:
            body = json.dumps(payload, separators=(",", ":")).encode()
            header = {"schema": SCHEMA, "kind": self.kind, "key": key,
                      "versions": versions.to_json(), "sha256": hashlib.sha256(body).hexdigest()}
            data = gzip.compress(json.dumps(header).encode() + b"\n" + body, compresslevel=3,
                                 mtime=0)
            atomic_write(self.path(key), lambda f: f.write(data))
            return True
        except (OSError, ValueError, TypeError, RecursionError):
            return False


def store(kind: str) -> Store | None:
    """The store for ``kind`` when caching is on, else ``None``."""
    root = active_root()
    return Store(root, kind) if root is not None else None


T = TypeVar("T")


def _result_key(name: str, parts: Any, model: str | None, methods: tuple[str, ...]) -> str | None:
    from costmodel.trace import serialize

    source = scenario_source(model or "", *methods)
    try:
        return digest(name, serialize.encode(parts), source) if source else None
    except (serialize.DecodeError, TypeError):
        return None


def stored(name: str, parts: Any, model: str | None = None,
           methods: tuple[str, ...] = ()) -> bool:
    """Whether :func:`remembered` holds an entry for these ``parts`` (its file exists;
    not read, so a stale one says yes and is computed again when asked)."""
    results = store("results")
    key = _result_key(name, parts, model, methods) if results is not None else None
    return key is not None and results.path(key).exists()


def remembered(name: str, parts: Any, compute: Callable[[], T], tp: Any,
               model: str | None = None, packages: tuple[str, ...] = TRACE_PACKAGES,
               methods: tuple[str, ...] = ()) -> T:
    """``compute()``, or what it returned in an earlier process with the same ``parts``
    and the same source of ``packages`` (the code that computes it), torch and
    torchvision (``results/``).

    ``tp`` is the result's type: a stored result must decode into exactly it, and a
    result is stored only if it is exactly of it, so that it comes back equal (a warm
    answer is the cold one: :func:`~costmodel.trace.serialize.encoder`).
    ``model``, ``methods``: the model and methods the result depends on, for the source
    of a user's factory or method plugins.
    """
    from costmodel.trace import serialize

    results = store("results")
    if results is None:
        return compute()
    key = _result_key(name, parts, model, methods)
    try:
        decode, encode = serialize.decoder(tp), serialize.encoder(tp)
    except (serialize.DecodeError, TypeError, NameError):  # a field type it cannot store
        key = None
    if key is None:
        return compute()
    payload = results.load(key, versions(packages))
    if payload is not None:
        try:
            return decode(payload)
        except (serialize.DecodeError, TypeError, ValueError, RecursionError):
            pass  # never trusted: computed again and overwritten
    value = compute()
    try:
        data = encode(value)
    except (serialize.DecodeError, TypeError, ValueError, RecursionError):
        return value  # not exactly of its declared type: not stored
    results.save(key, versions(packages), data)
    return value


# -- info and clear --------------------------------------------------------------------

@dataclass
class KindInfo:
    kind: str
    entries: int
    size_bytes: int
    current: int
    """Entries made by the running versions (the others are never read again)."""


@dataclass
class CacheInfo:
    location: Path
    enabled: bool
    kinds: list[KindInfo]
    versions: Versions
    """The running versions (of costmodel's source, for traces)."""

    @property
    def entries(self) -> int:
        return sum(k.entries for k in self.kinds)

    @property
    def size_bytes(self) -> int:
        return sum(k.size_bytes for k in self.kinds)

    def to_json(self) -> dict[str, Any]:
        return {"location": str(self.location), "enabled": self.enabled,
                "entries": self.entries, "size_bytes": self.size_bytes,
                "kinds": [asdict(k) for k in self.kinds], "versions": self.versions.to_json()}


def _entries(root: Path, kind: str, temporaries: bool = False) -> list[Path]:
    """Entry files of a kind (and, with ``temporaries``, a crashed writer's leftovers)."""
    try:
        with os.scandir(root / kind) as it:
            return [Path(e.path) for e in it if e.is_file(follow_symlinks=False)
                    and (e.name.endswith(ENTRY_SUFFIX)
                         or (temporaries and e.name.startswith(".")))]
    except OSError:
        return []


def _header(path: Path) -> dict[str, Any] | None:
    try:
        with gzip.open(path, "rb") as f:
            header = json.loads(f.readline())
        return header if isinstance(header, dict) else None
    except Exception:  # noqa: BLE001 - a corrupt entry is simply not current
        return None


def info(root: Path | None = None) -> CacheInfo:
    """What the cache holds, and how much of it the running code would read."""
    root = root or location()
    kinds = []
    for kind in KINDS:
        files = _entries(root, kind)
        size = current = 0
        for p in files:
            with contextlib.suppress(OSError):
                size += p.stat().st_size
            current += _current(_header(p))
        kinds.append(KindInfo(kind, len(files), size, current))
    return CacheInfo(root, active_root() is not None, kinds, versions(TRACE_PACKAGES))


_PACKAGE_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


def _current(header: dict[str, Any] | None) -> bool:
    """Whether an entry was made by the running versions of the packages it names.
    Only plain top-level names are looked up: finding one imports nothing."""
    try:
        named = header["versions"]["packages"]  # type: ignore[index]
        if header.get("schema") != SCHEMA or not all(  # type: ignore[union-attr]
                isinstance(n, str) and _PACKAGE_NAME.match(n) for n in named):
            return False
        return header["versions"] == versions(tuple(named)).to_json()  # type: ignore[index]
    except (KeyError, TypeError, AttributeError):
        return False


def clear(root: Path | None = None) -> tuple[int, int]:
    """Remove every entry (and leftover temporary file); (files, bytes) removed.

    Only files this module names are removed, never the folder's other contents:
    ``COSTCL_CACHE_DIR`` may point anywhere.
    """
    root = root or location()
    count = size = 0
    for kind in KINDS:
        for p in _entries(root, kind, temporaries=True):
            try:
                n = p.stat().st_size
                p.unlink()
            except OSError:
                continue
            count, size = count + 1, size + n
        with contextlib.suppress(OSError):
            (root / kind).rmdir()  # only if empty
    return count, size
