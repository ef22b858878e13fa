"""The sample's bulk loader and the local backend's own loader give the same tables."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from detections.backends.local import LocalBackend
from devtools.sample import SAMPLE_NOW, generate
from devtools.sample.bulkload import bulk_load


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


def test_bulk_loaded_missing_strings_are_empty_and_live_tables_list_only_real_names(tmp_path: Path) -> None:
    # Kusto has no null string (detections/backends/kustonulls.py): the bulk loader stores "" like the
    # row loader, and the fake Exchange's connector list and directory skip "" as they skipped null.
    from devtools.sample.live import LiveTables

    (tmp_path / "EmailEvents.jsonl").write_text(
        json.dumps({"NetworkMessageId": "m1", "Connectors": "Relay A"})
        + "\n"
        + json.dumps({"NetworkMessageId": "m2", "Connectors": None})
        + "\n",
        encoding="utf-8",
    )
    (tmp_path / "IdentityLogonEvents.jsonl").write_text(
        json.dumps({"AccountUpn": "a@contoso.com", "AccountObjectId": "o1"})
        + "\n"
        + json.dumps({"AccountObjectId": "o2"})
        + "\n",
        encoding="utf-8",
    )
    fast = LocalBackend(None, SAMPLE_NOW)
    bulk_load(fast, tmp_path)
    assert fast.con.execute('SELECT "Connectors", "Subject" FROM "EmailEvents" ORDER BY 1').fetchall() == [
        ("", ""),
        ("Relay A", ""),
    ]
    live = LiveTables(tmp_path, SAMPLE_NOW)
    try:
        assert live.connectors() == ["Relay A"]
        assert live.people() == [("a@contoso.com", "o1")]
    finally:
        live.close()
