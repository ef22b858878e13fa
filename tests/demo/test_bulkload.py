"""The sample's bulk loader and the local backend's own loader give the same tables."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from detections.backends.local import LocalBackend
from responder.sample import SAMPLE_NOW, generate
from responder.sample.bulkload import bulk_load


def dump(backend: LocalBackend, table: str) -> list[tuple[Any, ...]]:
    types = dict(backend.schemas[table])
    cols = [c for c, _ in backend.schemas[table]]
    rows = backend.con.execute(f'SELECT * FROM "{table}" ORDER BY "ReportId", "Timestamp"').fetchall()
    # Dynamic cells are JSON text; the two loaders may space it differently, so compare parsed values.
    return [
        tuple(
            json.loads(v) if types[c] == "Dynamic" and v is not None else v
            for c, v in zip(cols, r, strict=True)
        )
        for r in rows
    ]


def test_bulk_load_matches_the_local_backend(tmp_path: Path) -> None:
    # Small enough for the row-by-row loader, large enough for the planted and benign shapes (~950 rows).
    gen = generate(tmp_path, size="small", email_events=1_200)
    slow = LocalBackend(gen.tables_dir, SAMPLE_NOW)
    fast = LocalBackend(None, SAMPLE_NOW)
    counts = bulk_load(fast, gen.tables_dir)
    assert counts == gen.counts
    for table in slow.schemas:
        assert dump(fast, table) == dump(slow, table), table
