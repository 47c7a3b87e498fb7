"""Reading a sweep's ``results.jsonl``: one JSON object a line, one line per finished point.

The writer (``cli/sweep_store.py``) appends each line with one ``write`` and an
``fsync``, so a crash can leave at most one torn line, the last, with no newline.
Reading never trusts it: a last line without its newline is not a result (the
point did not finish being recorded; the next run repeats it), and a line that
is not a JSON object with a point key is skipped and counted.  When a point
appears twice (``--retry-failed`` ran a failed one again), the later line wins.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from costmodel.errors import CostclError

RESULTS = "results.jsonl"


@dataclass
class SweepResults:
    lines: dict[str, dict[str, Any]] = field(default_factory=dict)
    """The newest line of each point, by point key, in the order points first finished."""
    complete_bytes: int = 0
    """Where the last complete line ends: what a writer keeps of the file."""
    torn_bytes: int = 0
    """Length of a torn last line (no newline), 0 if the file ends cleanly."""
    bad_lines: int = 0


def point_label(coordinates: dict[str, Any], without: tuple[str, ...] = ()) -> str:
    """``method=er(replay_batch=4) seed=1``: a point's axis values, a table entry by its
    own axis's key with the keys it sets beside it in brackets."""
    def shown(axis: str, v: Any) -> str:
        if not isinstance(v, dict):
            return str(v)
        rest = ",".join(f"{k}={shown(k, x)}" for k, x in v.items() if k != axis)
        return f"{shown(axis, v[axis]) if axis in v else ''}({rest})" if rest else shown(axis, v[axis])
    return " ".join(f"{k}={shown(k, v)}" for k, v in coordinates.items() if k not in without) or "the base"


def read(path: Path) -> SweepResults:
    """The results in ``path`` (an absent file holds none)."""
    try:
        data = Path(path).read_bytes()
    except FileNotFoundError:
        return SweepResults()
    end = data.rfind(b"\n") + 1
    out = SweepResults(complete_bytes=end, torn_bytes=len(data) - end)
    for raw in data[:end].splitlines():
        if not raw.strip():
            continue
        try:
            line = json.loads(raw)
        except ValueError:
            out.bad_lines += 1
            continue
        if not isinstance(line, dict) or not isinstance(line.get("point"), str):
            out.bad_lines += 1
            continue
        out.lines[line["point"]] = line
    return out


def load(folder: Path | str) -> SweepResults:
    """A sweep folder's results for a report; an empty or missing one is one line."""
    folder = Path(folder)
    if not folder.is_dir():
        raise CostclError(f"--sweep {str(folder)!r} is not a folder; give the --out of "
                          "`costcl sweep run`")
    results = read(folder / RESULTS)
    if not results.lines:
        raise CostclError(f"no sweep results in {str(folder)!r}: expected {RESULTS} written by "
                          "`costcl sweep run FILE --out FOLDER`")
    return results
