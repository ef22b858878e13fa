"""Load ``<Table>.jsonl`` files into a local-engine backend with DuckDB's own JSON reader.

The local backend types every cell in Python and inserts row by row, which is right for hand-written
tables (its errors name the file, line and column) but takes seconds per thousand rows. The sample
tenant is machine-written and already shaped by the same schemas, so the demo and the benchmarks
load it in bulk: ``read_json`` with the schema's column types, one statement per table. A test
checks that both loaders give the same tables.
"""

from __future__ import annotations

from pathlib import Path

from detections.backends.local import _SQL_TYPES, LocalBackend


def bulk_load(backend: LocalBackend, tables_dir: Path) -> dict[str, int]:
    """Append every ``<Table>.jsonl`` in ``tables_dir`` to ``backend``'s tables; returns rows per table."""
    counts: dict[str, int] = {}
    for table, cols in backend.schemas.items():
        path = Path(tables_dir) / f"{table}.jsonl"
        if not path.exists():
            continue
        spec = ", ".join(f"'{c}': '{_SQL_TYPES[t]}'" for c, t in cols)
        names = ", ".join(f'"{c}"' for c, _ in cols)
        # Like the local backend: TimeGenerated (Sentinel's ingestion time) defaults to Timestamp.
        # And, as Kusto stores them, a missing string is "" (detections/backends/kustonulls.py).
        values = ", ".join(
            'coalesce("TimeGenerated", "Timestamp")'
            if c == "TimeGenerated"
            else (f"coalesce(\"{c}\", '')" if t == "String" else f'"{c}"')
            for c, t in cols
        )
        before = backend.con.execute(f'SELECT count(*) FROM "{table}"').fetchone()[0]
        # The path is ours (a folder the generator wrote), passed as a parameter, never spliced.
        backend.con.execute(
            f'INSERT INTO "{table}" ({names}) SELECT {values} FROM '
            f"read_json(?, format='newline_delimited', columns={{{spec}}})",
            [str(path)],
        )
        counts[table] = backend.con.execute(f'SELECT count(*) FROM "{table}"').fetchone()[0] - before
    return counts
