"""Tables that never cut what an operator copies (request ids, rule slugs) or must read whole (a connector's
PowerShell command).

On a terminal: a rich table whose id and slug columns never wrap and whose other columns fold (wrap inside
the cell, nothing dropped); when the terminal is too narrow even for that, the plain form. Anywhere else
(a pipe, a file, CI logs): the plain form, one line per row, columns padded, every value whole.
"""

from __future__ import annotations

import re
import sys
from collections.abc import Sequence
from typing import TextIO

# Narrowest a folding column is given before the table is considered too wide for the terminal.
_MIN_FOLD = 10
# Control characters (newlines above all) in values from mail and services would break a row in two.
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029]+")


def clean(value: object) -> str:
    return _CONTROL.sub(" ", "" if value is None else str(value))


def print_table(columns: Sequence[str], rows: Sequence[Sequence[object]], *, empty: str,
                whole: Sequence[str] = ("id", "rule", "action"), title: str | None = None,
                out: TextIO | None = None) -> None:
    """``whole``: the columns never wrapped or cut."""
    out = out or sys.stdout
    if not rows:
        print(empty, file=out)
        return
    cells = [[clean(v) for v in row] for row in rows]
    if not out.isatty():
        if title:
            print(title, file=out)
        plain(columns, cells, out)
        return
    from rich.console import Console
    from rich.markup import escape
    from rich.table import Table

    console = Console(file=out)
    keep = [i for i, c in enumerate(columns) if c in whole]
    widths = [max(len(columns[i]), *(len(r[i]) for r in cells)) for i in range(len(columns))]
    # Each column has one space of padding on either side and a border: 3 characters, plus the last border.
    needed = sum(widths[i] for i in keep) + _MIN_FOLD * (len(columns) - len(keep)) + 3 * len(columns) + 1
    if needed > console.width:
        if title:
            print(title, file=out)
        plain(columns, cells, out)
        return
    table = Table(title=escape(title) if title else None, title_justify="left")
    for i, col in enumerate(columns):
        if i in keep:
            table.add_column(col, no_wrap=True, min_width=widths[i])
        else:
            table.add_column(col, overflow="fold")
    for row in cells:
        # Values come from mail and services: escaped so rich does not read them as markup.
        table.add_row(*(escape(v) for v in row))
    console.print(table)


def plain(columns: Sequence[str], cells: Sequence[Sequence[str]], out: TextIO) -> None:
    """Columns padded to their widest value, two spaces apart, the last one unpadded; an empty value is
    ``-``, so a missing value does not read as the next column's."""
    cells = [[v or "-" for v in row] for row in cells]
    widths = [max(len(columns[i]), *(len(r[i]) for r in cells)) for i in range(len(columns))]
    for row in [list(columns), *cells]:
        line = "  ".join(v.ljust(w) for v, w in zip(row[:-1], widths[:-1], strict=True))
        print(f"{line}  {row[-1]}".rstrip() if len(row) > 1 else row[0], file=out)
