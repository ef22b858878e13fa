"""The local engine answers as Kusto does where strings and nulls meet.

Kusto's ``string`` has no null: a missing value is ``""``, and so is the unmatched side of an outer join
(https://learn.microsoft.com/kusto/query/scalar-data-types/null-values: "The string data type doesn't
support null values"). Numbers, datetimes and dynamic do have null. Each test is one semantic point and
failed before detections/backends/kustonulls.py, when the engine kept SQL's NULL.
"""

from __future__ import annotations

import asyncio
import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

from detections.backends.kustonulls import fill_outer_steps
from detections.backends.local import LocalBackend

NOW = datetime(2026, 11, 20, 12, tzinfo=UTC)

# m1 has no Subject and no URL; m2 has a subject and one URL row that lacks UrlDomain.
TABLES = {
    "EmailEvents": [
        {"Timestamp": "now-10m", "NetworkMessageId": "m1", "SenderFromAddress": "a@contoso.com"},
        {"Timestamp": "now-5m", "NetworkMessageId": "m2", "Subject": "Invoice",
         "SenderFromAddress": "b@contoso.com"},
    ],
    "EmailUrlInfo": [{"Timestamp": "now-5m", "NetworkMessageId": "m2", "Url": "https://x.example/a"}],
}


def rows(query: str, tables: dict | None = None) -> list[dict]:
    backend = LocalBackend.from_rows(TABLES if tables is None else tables, NOW, source="case")
    return asyncio.run(backend.run(query, timespan=timedelta(hours=1))).rows


def ids(query: str) -> list[str]:
    return sorted(r["NetworkMessageId"] for r in rows(query))


def test_missing_string_cells_load_as_empty_strings_from_rows_jsonl_and_csv(tmp_path: Path) -> None:
    (tmp_path / "EmailEvents.jsonl").write_text(
        json.dumps({"NetworkMessageId": "j1", "Subject": None}) + "\n", encoding="utf-8")
    (tmp_path / "EmailUrlInfo.csv").write_text("NetworkMessageId,Url,UrlLocation\nc1,,\n", encoding="utf-8")
    backend = LocalBackend(tmp_path, NOW)
    out = asyncio.run(backend.run("EmailEvents | project NetworkMessageId, Subject, SenderFromAddress",
                                  timespan=timedelta(hours=1))).rows
    assert out == [{"NetworkMessageId": "j1", "Subject": "", "SenderFromAddress": ""}]
    out = asyncio.run(backend.run("EmailUrlInfo | project Url, UrlLocation, UrlDomain",
                                  timespan=timedelta(hours=1))).rows
    assert out == [{"Url": "", "UrlLocation": "", "UrlDomain": ""}]


def test_equals_empty_string_matches_a_missing_value() -> None:
    assert ids('EmailEvents | where Subject == ""') == ["m1"]
    assert ids('EmailEvents | where Subject != "Invoice"') == ["m1"]


def test_isempty_and_isnotempty_on_a_missing_value() -> None:
    assert ids("EmailEvents | where isempty(Subject)") == ["m1"]
    assert ids("EmailEvents | where isnotempty(Subject)") == ["m2"]


def test_isnull_on_a_string_is_always_false() -> None:
    assert ids("EmailEvents | where isnull(Subject)") == []
    assert ids("EmailEvents | where isnotnull(Subject)") == ["m1", "m2"]


def test_summarize_by_a_missing_key_groups_with_empty_string() -> None:
    out = rows('EmailEvents | extend Subject = iff(NetworkMessageId == "m2", "", Subject) '
               "| summarize n = count() by Subject")
    assert out == [{"Subject": "", "n": 2}]


def test_leftouter_join_unmatched_side_is_empty_string_for_strings_and_null_for_others() -> None:
    out = rows("EmailEvents | join kind=leftouter (EmailUrlInfo | project NetworkMessageId, Url, Timestamp) "
               'on NetworkMessageId | where Url == "" | project NetworkMessageId, Url, Timestamp1')
    assert out == [{"NetworkMessageId": "m1", "Url": "", "Timestamp1": None}]


def test_outer_join_fill_is_seen_by_the_next_operators_not_only_in_the_result() -> None:
    # After the join, m1's Url and m2's (loaded) UrlDomain are both "": one group, as in Kusto.
    out = rows("EmailEvents | join kind=leftouter EmailUrlInfo on NetworkMessageId "
               "| summarize n = count() by UrlDomain")
    assert out == [{"UrlDomain": "", "n": 2}]
    out = rows("EmailEvents | lookup (EmailUrlInfo | project NetworkMessageId, Url) on NetworkMessageId "
               '| where Url == "" | project NetworkMessageId')
    assert out == [{"NetworkMessageId": "m1"}]


def test_rightouter_and_fullouter_fill_the_left_side() -> None:
    tables = {**TABLES, "EmailUrlInfo": [*TABLES["EmailUrlInfo"],
                                         {"NetworkMessageId": "m9", "Url": "https://orphan.example/"}]}
    out = rows("EmailEvents | project NetworkMessageId, Subject "
               "| join kind=rightouter (EmailUrlInfo | project NetworkMessageId, Url) on NetworkMessageId "
               '| where Subject == "" | project NetworkMessageId1', tables)
    assert out == [{"NetworkMessageId1": "m9"}]
    out = rows("EmailEvents | project NetworkMessageId, Subject "
               "| join kind=fullouter (EmailUrlInfo | project NetworkMessageId, Url) on NetworkMessageId "
               '| where Subject == "" or Url == "" | summarize n = count() by Subject, Url', tables)
    assert sorted((r["Subject"], r["Url"], r["n"]) for r in out) == [
        ("", "", 1), ("", "https://orphan.example/", 1)]


def test_outer_union_fills_a_string_column_one_side_lacks() -> None:
    out = rows("union (EmailEvents | project NetworkMessageId, Subject), (EmailUrlInfo | project Url) "
               '| where Subject == "" | summarize n = count()')
    assert out == [{"n": 2}]


def test_numbers_and_dynamic_keep_null() -> None:
    assert ids("EmailEvents | where isnull(AttachmentCount) and isnull(Timestamp) == false") == ["m1", "m2"]
    out = rows("EmailEvents | where NetworkMessageId == 'm1' | project AttachmentCount, AdditionalFields")
    assert out == [{"AttachmentCount": None, "AdditionalFields": None}]


def test_nested_and_let_bound_outer_joins_are_filled() -> None:
    assert ids("let X = EmailEvents | join kind=leftouter EmailUrlInfo on NetworkMessageId; "
               'X | where Url == "" | project NetworkMessageId') == ["m1"]
    assert ids("EmailEvents | join kind=inner (EmailEvents | join kind=leftouter (EmailUrlInfo) "
               'on NetworkMessageId | where Url == "" | project NetworkMessageId) on NetworkMessageId '
               "| project NetworkMessageId") == ["m1"]


def test_fill_rewrite_leaves_quoted_text_alone_and_queries_without_outer_steps_unchanged() -> None:
    sql = "WITH _s0 AS (SELECT 'LEFT JOIN (' AS \"a\")\nSELECT * FROM _s0"
    assert fill_outer_steps(sql, lambda probe: (_ for _ in ()).throw(AssertionError(probe))) == sql
