"""Plain listing tables (models, datasets, methods, devices).

Names and numbers never wrap or get cut: only the last, descriptive column
folds, so the listing stays usable on an 80-column terminal.
"""
from __future__ import annotations

from collections.abc import Iterable, Sequence

from rich.console import Console
from rich.table import Table


def listing(console: Console, columns: Sequence[str], rows: Iterable[Sequence[str]],
            title: str | None = None) -> None:
    t = Table(header_style="bold", title=title)
    for i, col in enumerate(columns):
        last = i == len(columns) - 1
        t.add_column(col, no_wrap=not last, overflow="fold" if last else "ignore",
                     ratio=1 if last else None)
    for row in rows:
        t.add_row(*row)
    console.print(t)
