"""The local engine: typed tables from files, pinned now(), clear errors."""

from __future__ import annotations

import asyncio
import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from detections.backends import make_backend
from detections.backends.base import BackendError, TableError
from detections.backends.local import LocalBackend

NOW = datetime(2026, 11, 20, 12, tzinfo=UTC)
HOUR = timedelta(hours=1)


def run(backend: LocalBackend, query: str) -> list[dict]:
    return asyncio.run(backend.run(query, timespan=HOUR)).rows


def test_jsonl_and_csv_tables_are_typed_by_the_schemas(tmp_path: Path) -> None:
    (tmp_path / "EmailEvents.jsonl").write_text(
        json.dumps(
            {
                "Timestamp": "2026-11-20T11:30:00Z",
                "NetworkMessageId": "m1",
                "Subject": "10:30",
                "AttachmentCount": 2,
                "AdditionalFields": {"k": [1, "two"]},
            }
        )
        + "\n\n"
        + json.dumps({"Timestamp": "now-5m", "NetworkMessageId": "00000000-0000-0000-0000-000000000001"})
        + "\n",
        encoding="utf-8",
    )
    (tmp_path / "CloudAppEvents.csv").write_text(
        "Timestamp,ActionType,IsAdminOperation,RawEventData\n"
        "2026-11-20T10:00:00Z,New-InboundConnector,true,"
        '"{""Parameters"": [{""Name"": ""Name"", ""Value"": ""c1""}]}"\n',
        encoding="utf-8",
    )
    (tmp_path / "README.md").write_text("notes are not tables", encoding="utf-8")
    backend = make_backend(tables_dir=tmp_path, now=NOW)
    rows = run(
        backend,
        "EmailEvents | sort by Timestamp asc "
        "| project Timestamp, NetworkMessageId, Subject, n = AttachmentCount + 1, AdditionalFields",
    )
    assert rows == [
        {
            "Timestamp": "2026-11-20T11:30:00Z",
            "NetworkMessageId": "m1",
            "Subject": "10:30",
            "n": 3,
            "AdditionalFields": {"k": [1, "two"]},
        },
        # "Looks like a GUID/date/time" values stay strings: rows arrive as the service sent them.
        {
            "Timestamp": "2026-11-20T11:55:00Z",
            "NetworkMessageId": "00000000-0000-0000-0000-000000000001",
            "Subject": "",  # Kusto has no null string: a missing one is "" (test_kusto_semantics.py)
            "n": None,
            "AdditionalFields": None,
        },
    ]
    rows = run(
        backend,
        "CloudAppEvents | mv-expand p = RawEventData.Parameters "
        "| project ActionType, IsAdminOperation, Name = tostring(p.Value)",
    )
    assert rows == [{"ActionType": "New-InboundConnector", "IsAdminOperation": True, "Name": "c1"}]


def test_now_is_pinned() -> None:
    backend = LocalBackend(None, NOW)
    assert run(backend, "print t = now(), a = ago(1h)") == [
        {"t": "2026-11-20T12:00:00Z", "a": "2026-11-20T11:00:00Z"}
    ]


def test_tables_without_files_exist_and_are_empty(tmp_path: Path) -> None:
    backend = LocalBackend(tmp_path, NOW)
    result = asyncio.run(backend.run("IdentityLogonEvents | take 5", timespan=HOUR))
    assert result.rows == []
    assert ("AccountUpn", "string") in result.columns


@pytest.mark.parametrize(
    ("name", "text", "message"),
    [
        (
            "EmailEvents.jsonl",
            '{"NetworkMessageId": "m1"}\n{"NetworkMessageId": "m2"\n',
            r"EmailEvents.jsonl: line 2: not valid JSON",
        ),
        ("EmailEvents.jsonl", '{"NetworkMessageId": "m1"}\n\n[1, 2]\n', r"line 3: expected a JSON object"),
        ("EmailEvents.jsonl", '{"Nope": 1}\n', r"line 1: unknown column 'Nope' for table EmailEvents"),
        (
            "EmailEvents.jsonl",
            '{"AttachmentCount": "two"}\n',
            r"line 1: column AttachmentCount: expected a whole number",
        ),
        (
            "EmailEvents.jsonl",
            '{"Timestamp": "yesterday"}\n',
            r"line 1: column Timestamp: expected an ISO 8601",
        ),
        ("EmailEvents.jsonl", '{"Subject": 5}\n', r"line 1: column Subject: expected a string"),
        ("EmailEvents.csv", "Subject,Nope\nx,y\n", r"EmailEvents.csv: line 1: unknown column 'Nope'"),
        ("EmailEvents.csv", "Subject,AttachmentCount\nx,1\ny,2,3\n", r"line 3: 3 values for 2 columns"),
        (
            "CloudAppEvents.csv",
            "RawEventData\n{not json\n",
            r"line 2: column RawEventData: expected JSON text",
        ),
        ("Emails.jsonl", "{}\n", r"unknown table 'Emails'"),
        ("EmailEvents.json", "{}\n", r"table files are <Table>.jsonl"),
    ],
)
def test_malformed_tables_name_file_and_line(tmp_path: Path, name: str, text: str, message: str) -> None:
    (tmp_path / name).write_text(text, encoding="utf-8")
    with pytest.raises(TableError, match=message) as exc:
        LocalBackend(tmp_path, NOW)
    assert str(exc.value).startswith(str(tmp_path / name))


def test_same_table_twice_is_an_error(tmp_path: Path) -> None:
    (tmp_path / "EmailEvents.jsonl").write_text("{}\n", encoding="utf-8")
    (tmp_path / "EmailEvents.csv").write_text("Subject\nx\n", encoding="utf-8")
    with pytest.raises(TableError, match="also given as"):
        LocalBackend(tmp_path, NOW)


def test_missing_folder_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(TableError, match="does not exist"):
        LocalBackend(tmp_path / "nope", NOW)


@pytest.mark.parametrize(
    ("query", "message"),
    [
        (
            "let L = dynamic(['a']); EmailEvents | take 1 | mv-expand x = L",
            "extend x = SomeLetBoundList | mv-expand x",
        ),
        ("EmailEvents | project-reorder Subject", "does not support part of this query"),
        ("EmailEvents | where", "does not parse"),
        ("NoSuchTable | take 1", "NoSuchTable does not exist"),
        ("EmailEvents | where NoSuchColumn == 1", "NoSuchColumn"),
    ],
)
def test_engine_errors_become_clear_backend_errors(query: str, message: str) -> None:
    backend = LocalBackend.from_rows({"EmailEvents": [{"Subject": "x"}]}, NOW, source="t")
    with pytest.raises(BackendError, match=message) as exc:
        run(backend, query)
    assert str(exc.value).startswith("local engine: ")
    assert exc.value.transient is False


def test_the_documented_workaround_for_let_bound_mv_expand_runs() -> None:
    backend = LocalBackend.from_rows({"EmailEvents": [{"Subject": "x"}]}, NOW, source="t")
    rows = run(
        backend,
        "let L = dynamic(['a', 'b']); EmailEvents | extend x = L | mv-expand x | project v = tostring(x)",
    )
    assert rows == [{"v": "a"}, {"v": "b"}]


def test_rows_for_test_cases_name_the_case_field() -> None:
    with pytest.raises(TableError, match=r"^f: cases.0.tables.EmailEvents\[1\]: unknown column 'Sbject'"):
        LocalBackend.from_rows(
            {"EmailEvents": [{"Subject": "a"}, {"Sbject": "b"}]}, NOW, source="f: cases.0.tables"
        )
    with pytest.raises(TableError, match="unknown table"):
        LocalBackend.from_rows({"Mail": []}, NOW, source="f")


def test_naive_now_is_refused() -> None:
    with pytest.raises(ValueError, match="timezone"):
        LocalBackend(None, datetime(2026, 11, 20, 12))


def test_time_generated_is_there_for_sentinel_rules_and_defaults_to_timestamp() -> None:
    backend = LocalBackend.from_rows(
        {"EmailEvents": [{"Timestamp": "now-5m"}, {"Timestamp": "now-9m", "TimeGenerated": "now-2m"}]},
        NOW,
        source="t",
    )
    rows = run(backend, "EmailEvents | sort by Timestamp desc | project Timestamp, TimeGenerated")
    assert rows == [
        {"Timestamp": "2026-11-20T11:55:00Z", "TimeGenerated": "2026-11-20T11:55:00Z"},
        {"Timestamp": "2026-11-20T11:51:00Z", "TimeGenerated": "2026-11-20T11:58:00Z"},
    ]
