"""costcl's checkpoint format: data only, checksummed, tied to the run that wrote it.

Why a format of its own: ``torch.load(weights_only=False)`` runs whatever a
pickle names, so a crafted ``checkpoint.pt`` handed to ``--resume`` could run
code; torch's zip reader does not check its records' CRCs, so bytes overwritten
in the middle of a tensor load silently and train on as NaNs; and a checkpoint
of another run (other epochs, seed, buffer) would silently mix configurations.

A checkpoint is still a plain torch file, a dict that
``torch.load(path, weights_only=True)`` reads without running any code (so
``torch.load(path, weights_only=True)["model"]`` gives anyone the weights),
holding only tensors, dicts, lists, ints, floats, strings, bools and None:

* ``"costcl_checkpoint": 1``: the format and its version;
* ``"sha256"``: SHA-256 of a canonical encoding of every other key (each
  tensor's dtype, shape and bytes included), checked on every read;
* the run, :class:`RunCheckpoint`'s fields: ``scenario`` (the resolved
  scenario's JSON), ``seed``, ``data`` (class order and image counts),
  ``next_task``, ``model`` (the state dict), ``state`` (the method's tensors
  between tasks), ``memory`` (the exemplars), ``results`` (per-task results so
  far) and ``rng`` (every random generator the run draws from).

Reading never trusts the bytes: a file that is empty, truncated, garbage,
another tool's pickle, a bare state dict, damaged or from another run is a
one-line :class:`~costmodel.errors.CostclError` naming the file and the fix.
"""
from __future__ import annotations

import hashlib
import os
import random
import re
import tempfile
import warnings
from collections import OrderedDict
from collections.abc import Callable, Mapping
from dataclasses import MISSING, dataclass, fields
from pathlib import Path
from typing import IO, Any

import numpy as np
import torch

from costmodel.errors import CostclError
from costmodel.files import atomic_write_all, check_can_create
from costmodel.scenario import Scenario

FORMAT_KEY = "costcl_checkpoint"
FORMAT_VERSION = 1
HASH_KEY = "sha256"
SCENARIO_IGNORED = ("device",)
"""Scenario fields a resume may change: the same run continues on another device."""


# -- plain data ------------------------------------------------------------------
def plain(obj: Any, where: str = "checkpoint") -> Any:
    """``obj`` as only what a ``weights_only`` load reads back: tensors (detached, on
    the CPU, no larger storage than they show), dicts, lists, ints, floats, strings,
    bools and None.  Tuples become lists, numpy values tensors or Python numbers."""
    if obj is None or type(obj) in (bool, int, float, str):
        return obj
    if isinstance(obj, torch.Tensor):
        t = obj.detach().cpu()
        if not t.is_contiguous() or t.untyped_storage().nbytes() != t.nbytes:
            t = t.clone(memory_format=torch.contiguous_format)
        return t
    if isinstance(obj, np.ndarray):
        return torch.from_numpy(np.ascontiguousarray(obj).copy())
    if isinstance(obj, (bool, np.bool_)):
        return bool(obj)
    if isinstance(obj, (int, np.integer)):
        return int(obj)
    if isinstance(obj, (float, np.floating)):
        return float(obj)
    if isinstance(obj, str):
        return str(obj)
    if isinstance(obj, Mapping):
        out: dict[Any, Any] = OrderedDict() if isinstance(obj, OrderedDict) else {}
        for k, v in obj.items():
            if type(k) not in (str, int):
                raise TypeError(f"{where} has a key {k!r} of type {type(k).__name__}; "
                                "checkpoint keys must be strings or ints")
            out[k] = plain(v, f"{where}[{k!r}]")
        meta = getattr(obj, "_metadata", None)  # a state dict's module versions
        if meta is not None:
            out._metadata = plain(meta, f"{where}._metadata")  # type: ignore[attr-defined]
        return out
    if isinstance(obj, (list, tuple)):
        return [plain(v, f"{where}[{i}]") for i, v in enumerate(obj)]
    raise TypeError(f"{where} is a {type(obj).__name__}, which a weights_only load cannot "
                    "read; keep tensors, dicts, lists, numbers, strings or None there")


def digest(payload: Mapping[str, Any]) -> str:
    """SHA-256 of a canonical encoding of ``payload`` (type tags, lengths, tensor bytes),
    so it is the same before saving and after loading, whatever the zip layout."""
    h = hashlib.sha256()
    _feed(h, payload)
    return h.hexdigest()


def _feed(h: Any, obj: Any) -> None:
    if obj is None:
        h.update(b"N")
    elif isinstance(obj, bool):
        h.update(b"B1" if obj else b"B0")
    elif isinstance(obj, int):
        h.update(b"I%d;" % obj)
    elif isinstance(obj, float):
        h.update(b"F" + obj.hex().encode() + b";")
    elif isinstance(obj, str):
        data = obj.encode("utf-8", "surrogatepass")
        h.update(b"S%d;" % len(data) + data)
    elif isinstance(obj, torch.Tensor):
        t = obj.detach().cpu().contiguous().reshape(-1)
        h.update(f"T{t.dtype}|{','.join(map(str, obj.shape))};".encode())
        h.update(t.view(torch.uint8).numpy().data)
    elif isinstance(obj, Mapping):
        h.update(b"D%d;" % len(obj))
        for k, v in obj.items():
            _feed(h, k)
            _feed(h, v)
    elif isinstance(obj, (list, tuple)):
        h.update(b"L%d;" % len(obj))
        for v in obj:
            _feed(h, v)
    else:
        raise TypeError(f"cannot hash a {type(obj).__name__} in a checkpoint")


# -- the run's random generators ------------------------------------------------------
def capture_rng(shuffle: torch.Generator, device: str) -> dict[str, Any]:
    """Every generator a training run draws from: torch's global one (reservoir and
    replay sampling, dropout), the trainer's shuffling one, Python's and numpy's
    (user models and transforms may draw from them) and CUDA's on a GPU."""
    version, words, gauss = random.getstate()
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    state: dict[str, Any] = {
        "torch": torch.get_rng_state(), "shuffle": shuffle.get_state(),
        "python": [version, list(words), gauss],
        "numpy": {"kind": str(kind), "keys": torch.from_numpy(keys.astype(np.int64)),
                  "pos": int(pos), "has_gauss": int(has_gauss), "cached": float(cached)}}
    if device.startswith("cuda") and torch.cuda.is_available():
        state["cuda"] = list(torch.cuda.get_rng_state_all())
    return state


def restore_rng(state: Mapping[str, Any], shuffle: torch.Generator, device: str) -> None:
    torch.set_rng_state(state["torch"].cpu())
    shuffle.set_state(state["shuffle"].cpu())
    version, words, gauss = state["python"]
    random.setstate((int(version), tuple(int(w) for w in words), gauss))
    n = state["numpy"]
    np.random.set_state((n["kind"], n["keys"].numpy().astype(np.uint32), int(n["pos"]),
                         int(n["has_gauss"]), float(n["cached"])))
    cuda = state.get("cuda")
    if cuda and device.startswith("cuda") and torch.cuda.is_available() \
            and len(cuda) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all([t.cpu() for t in cuda])


# -- the run ------------------------------------------------------------------------
_FIELD_DEFAULTS = {f.name: f.default for f in fields(Scenario) if f.default is not MISSING}
"""Scenario fields at their defaults: what a checkpoint written before a field existed meant."""


@dataclass
class RunCheckpoint:
    """What the trainer needs to continue a run exactly where its last finished task left it."""

    scenario: dict[str, Any]
    seed: int
    data: dict[str, Any]
    """``class_order``, ``train_images``, ``test_images``: the same data, or refuse."""
    next_task: int
    model: dict[str, Any]
    state: dict[str, Any]
    memory: dict[str, Any]
    results: list[Any]
    rng: dict[str, Any]

    def payload(self) -> dict[str, Any]:
        return {f.name: plain(getattr(self, f.name), f.name) for f in fields(self)}

    @classmethod
    def from_payload(cls, d: Mapping[str, Any], path: Path) -> RunCheckpoint:
        types = {"scenario": dict, "seed": int, "data": dict, "next_task": int, "model": dict,
                 "state": dict, "memory": dict, "results": list, "rng": dict}
        for name, kind in types.items():
            if not isinstance(d.get(name), kind):
                raise CostclError(f"{str(path)!r} is a costcl checkpoint without a valid "
                                  f"{name!r} entry; delete it and rerun without --resume "
                                  "(or choose a new --out)")
        return cls(**{name: d[name] for name in types})

    def first_difference(self, scenario: Mapping[str, Any], seed: int,
                         data: Mapping[str, Any]) -> tuple[str, Any, Any] | None:
        """The first field in which this run differs from the checkpoint's:
        (name, checkpoint's value, this run's value), or None."""
        saved, now = plain(self.scenario), plain(dict(scenario))
        for key in now:
            if key not in saved and now[key] == _FIELD_DEFAULTS.get(key, ...):
                continue  # a field added since the checkpoint was written, at its default
            if key not in SCENARIO_IGNORED and saved.get(key) != now[key]:
                return key.replace("_", "-"), saved.get(key), now[key]
        if self.seed != seed:
            return "seed", self.seed, seed
        for key, value in plain(dict(data)).items():
            if self.data.get(key) != value:
                return key.replace("_", "-"), self.data.get(key), value
        return None


# -- files ----------------------------------------------------------------------------
def write(path: Path, checkpoint: RunCheckpoint, beside: Mapping[Path, str] | None = None) -> None:
    """Write the checkpoint and the text files ``beside`` it (results.json) together:
    all are staged in full first, then renamed into place, so a crash, Ctrl-C or full
    disk leaves the previous consistent set and no temporary file."""
    payload = checkpoint.payload()
    sealed = {FORMAT_KEY: FORMAT_VERSION, HASH_KEY: digest(payload), **payload}
    files: list[tuple[Path, Callable[[IO[bytes]], None]]] = [
        (Path(path), lambda f: torch.save(sealed, f))]
    files += [(Path(p), lambda f, text=text: f.write(text.encode())) for p, text in (beside or {}).items()]
    try:
        atomic_write_all(files, fsync=True)
    except OSError as e:
        raise CostclError(f"cannot write the checkpoint {str(path)!r}: "
                          f"{e.strerror or type(e).__name__}; free disk space or choose another "
                          "--out (the previous checkpoint, if any, is intact)") from None


def load_file(path: Path | str, fix: str) -> Any:
    """``torch.load(path, weights_only=True)`` on the CPU, every failure one line."""
    p = Path(path)
    try:
        if p.is_dir():
            raise CostclError(f"{str(p)!r} is a folder, not a checkpoint file; {fix}")
        if p.stat().st_size == 0:
            raise CostclError(f"{str(p)!r} is empty (a write that never finished?); {fix}")
        with warnings.catch_warnings():  # torch warns about pickle protocols on stderr
            warnings.simplefilter("ignore")
            return torch.load(p, map_location="cpu", weights_only=True)
    except CostclError:
        raise
    except FileNotFoundError:
        raise CostclError(f"checkpoint {str(p)!r} does not exist; {fix}") from None
    except Exception as e:  # noqa: BLE001 - pickle, zip and torch errors alike
        raise CostclError(f"{str(p)!r} is not a readable checkpoint ({_why(e)}); {fix}") from None


def _why(e: Exception) -> str:
    """One short clause for a failed weights_only load (torch's own text is many lines
    and suggests weights_only=False, which would run the file's code)."""
    text = str(e)
    found = re.search(r"Unsupported global: GLOBAL ([\w.]+)", text)
    if found:
        return f"it names Python code, {found.group(1)}, that loading would run; refused"
    if "Weights only load failed" in text or isinstance(e, (KeyError, EOFError)):
        return "not a torch file, or truncated"
    if "zip archive" in text or "PytorchStreamReader" in text:
        return "truncated or damaged zip archive"
    line = text.strip().splitlines()[0] if text.strip() else ""
    return f"{type(e).__name__}: {line[:120]}" if line else type(e).__name__


def verify(obj: Any, path: Path | str, fix: str) -> dict[str, Any]:
    """The payload of a loaded costcl checkpoint, after its marker and checksum are checked."""
    where = repr(str(path))
    if not isinstance(obj, Mapping) or FORMAT_KEY not in obj:
        what = "a bare state dict" if _looks_like_state_dict(obj) else "another tool's file"
        raise CostclError(f"{where} is not a costcl checkpoint (no {FORMAT_KEY!r} key: "
                          f"{what}); {fix}")
    version = obj[FORMAT_KEY]
    if version != FORMAT_VERSION:
        newer = isinstance(version, int) and version > FORMAT_VERSION
        raise CostclError(f"{where} is costcl checkpoint format {version!r}, this costcl reads "
                          f"format {FORMAT_VERSION}; "
                          + (f"upgrade costcl (or {fix})" if newer else fix))
    payload = {k: v for k, v in obj.items() if k not in (FORMAT_KEY, HASH_KEY)}
    try:
        ok = obj.get(HASH_KEY) == digest(payload)
    except TypeError:
        ok = False
    if not ok:
        raise CostclError(f"{where} is damaged: its SHA-256 does not match its contents "
                          f"(truncated or overwritten); {fix}")
    return payload


def _looks_like_state_dict(obj: Any) -> bool:
    return isinstance(obj, Mapping) and bool(obj) and all(
        isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in obj.items())


RESUME_FIX = "delete it and rerun without --resume, or choose a new --out"


def read(path: Path) -> RunCheckpoint:
    """The run in ``path``, checked (readable, costcl's, intact) before anything uses it."""
    return RunCheckpoint.from_payload(verify(load_file(path, RESUME_FIX), path, RESUME_FIX), path)


# -- the output folder ------------------------------------------------------------------
def check_out_folder(folder: Path) -> None:
    """Refuse an ``--out`` that cannot hold the run, before anything trains, writing
    nothing: a regular file, a path through a file, a folder without write permission."""
    folder = Path(folder)
    if folder.exists() and not folder.is_dir():
        raise CostclError(f"--out {str(folder)!r} is a file, not a folder; choose a folder "
                          "for the checkpoint and results.json")
    check_can_create(folder, "--out", "choose a folder you can write to")


def prepare_out_folder(folder: Path) -> None:
    """Create ``--out`` and prove a file can be written there (a read-only file system
    passes a permission check), so the first task's checkpoint cannot be the first failure."""
    check_out_folder(folder)
    try:
        folder.mkdir(parents=True, exist_ok=True)
        fd, probe = tempfile.mkstemp(dir=folder, prefix=".costcl-write-test.")
        os.close(fd)
        os.unlink(probe)
    except OSError as e:
        raise CostclError(f"--out {str(folder)!r} is not writable ({e.strerror or e}); "
                          "choose a folder you can write to") from None
