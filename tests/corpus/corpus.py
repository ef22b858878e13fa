"""Microsoft's public hunting queries over our tables, run through Microsoft's parser and the local engine.

Each ``queries/*.yaml`` holds one query exactly as published (trailing blanks trimmed) with its source
repository, path and commit. ``python -m tests.corpus.corpus`` rewrites docs/kql-corpus.md's results
table; tests/corpus/test_corpus.py checks the doc against a fresh run.
"""

from __future__ import annotations

import asyncio
import re
import sys
from collections import Counter
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import duckdb_kql
import yaml

from detections.backends.base import BackendError
from detections.backends.local import LocalBackend
from detections.kqlcheck import check_queries

HERE = Path(__file__).parent
QUERIES = HERE / "queries"
DOC = HERE.parents[1] / "docs" / "kql-corpus.md"
NOW = datetime(2026, 11, 20, 12, tzinfo=UTC)
BEGIN, END = "<!-- corpus-results:begin -->", "<!-- corpus-results:end -->"


@dataclass(frozen=True)
class Entry:
    file: str
    name: str
    source: dict[str, Any]
    query: str


@dataclass(frozen=True)
class Outcome:
    entry: Entry
    parser_errors: list[str]
    local_error: str | None
    rows: int | None
    # Rows under SQL's NULL strings (duckdb-kql run directly, missing strings NULL), as before
    # detections/backends/kustonulls.py; None when that run failed.
    rows_sql_nulls: int | None = None

    @property
    def construct(self) -> str | None:
        return None if self.local_error is None else construct_of(self.local_error)


def load() -> list[Entry]:
    out = []
    for path in sorted(QUERIES.glob("*.yaml")):
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
        out.append(Entry(path.name, data["name"], data["source"], data["query"]))
    return out


def sample_tables() -> dict[str, list[dict[str, Any]]]:
    """Small tables with the shapes the queries look for: delivered, quarantined and threat mail, a reply
    from a new domain, URLs (one QR code), a malware attachment, Exchange audit events and logons."""
    auth = '{"SPF":"fail","DKIM":"none","DMARC":"fail","CompAuth":"fail"}'
    mail = [
        # Old, delivered history (beyond 4 h and 30 d lookbacks for the "first contact" queries).
        dict(
            Timestamp="now-40d",
            NetworkMessageId="m0",
            SenderMailFromAddress="news@microsoft.com",
            SenderFromAddress="news@microsoft.com",
            SenderDisplayName="Microsoft",
            SenderFromDomain="microsoft.com",
            RecipientEmailAddress="ann@contoso.com",
            DeliveryAction="Delivered",
            EmailDirection="Inbound",
            DeliveryLocation="Inbox/folder",
            LatestDeliveryLocation="Inbox/folder",
            Subject="News",
        ),
        dict(
            Timestamp="now-1d",
            NetworkMessageId="m1",
            SenderMailFromAddress="bob@fabrikam.com",
            SenderFromAddress="bob@fabrikam.com",
            SenderFromDomain="fabrikam.com",
            SenderMailFromDomain="fabrikam.com",
            RecipientEmailAddress="ann@contoso.com",
            DeliveryAction="Delivered",
            EmailDirection="Inbound",
            DeliveryLocation="Inbox/folder",
            LatestDeliveryLocation="Inbox/folder",
            Subject="Order",
        ),
        # Recent: a reply from a never-seen domain (conversation take-over shape), empty Threat columns.
        dict(
            Timestamp="now-1h",
            NetworkMessageId="m2",
            SenderMailFromAddress="bob@fabrikam-invoices.com",
            SenderFromAddress="bob@fabrikam-invoices.com",
            SenderFromDomain="fabrikam-invoices.com",
            SenderMailFromDomain="fabrikam-invoices.com",
            RecipientEmailAddress="ann@contoso.com",
            DeliveryAction="Delivered",
            EmailDirection="Inbound",
            DeliveryLocation="Inbox/folder",
            LatestDeliveryLocation="Inbox/folder",
            Subject="RE: Order",
            AuthenticationDetails=auth,
            SenderIPv4="203.0.113.7",
        ),
        # Recent: phish/malware caught, quarantined, spoof detection, admin allow override.
        dict(
            Timestamp="now-2h",
            NetworkMessageId="m3",
            SenderMailFromAddress="x@bad.example",
            SenderFromAddress="x@bad.example",
            SenderFromDomain="bad.example",
            SenderMailFromDomain="bad.example",
            RecipientEmailAddress="ann@contoso.com",
            DeliveryAction="Blocked",
            EmailDirection="Inbound",
            DeliveryLocation="Quarantine",
            LatestDeliveryLocation="Quarantine",
            Subject="Invoice",
            ThreatTypes="Phish, Malware",
            DetectionMethods='{"Phish":["Spoof external domain"],"Malware":["File detonation"]}',
            AuthenticationDetails=auth,
            SenderIPv4="198.51.100.9",
            OrgLevelAction="Allow",
            OrgLevelPolicy="Tenant Allow/Block List",
            AttachmentCount=1,
            UrlCount=1,
        ),
        dict(
            Timestamp="now-3h",
            NetworkMessageId="m4",
            SenderMailFromAddress="x@bad.example",
            SenderFromAddress="x@bad.example",
            SenderFromDomain="bad.example",
            RecipientEmailAddress="cy@contoso.com",
            DeliveryAction="Delivered",
            EmailDirection="Inbound",
            DeliveryLocation="Inbox/folder",
            LatestDeliveryLocation="Inbox/folder",
            Subject="Invoice",
            ThreatTypes="Spam",
            DetectionMethods='{"Spam":["General filter"]}',
        ),
        dict(
            Timestamp="now-30m",
            NetworkMessageId="m5",
            SenderMailFromAddress="ann@contoso.com",
            SenderFromAddress="ann@contoso.com",
            SenderFromDomain="contoso.com",
            RecipientEmailAddress="zed@contoso.com",
            DeliveryAction="Delivered",
            EmailDirection="Intra-org",
            DeliveryLocation="Inbox/folder",
            ThreatTypes="Malware",
            Subject="Payroll.jar",
        ),
    ]
    return {
        "EmailEvents": mail,
        "EmailUrlInfo": [
            dict(
                Timestamp="now-2h",
                NetworkMessageId="m3",
                Url="https://bad.appspot.com/login?x=1",
                UrlDomain="bad.appspot.com",
                UrlLocation="QRCode",
            ),
            dict(
                Timestamp="now-1h",
                NetworkMessageId="m2",
                Url="file://10.1.2.3/share/invoice.lnk",
                UrlDomain="10.1.2.3",
                UrlLocation="Body",
            ),
        ],
        "EmailAttachmentInfo": [
            dict(
                Timestamp="now-30m",
                NetworkMessageId="m5",
                SenderFromAddress="ann@contoso.com",
                RecipientEmailAddress="zed@contoso.com",
                FileName="Payroll.jar",
                FileType="jar",
                ThreatTypes="Malware",
                SHA256="00" * 32,
            ),
        ],
        "CloudAppEvents": [
            dict(
                Timestamp="now-1h",
                ActionType="MailItemsAccessed",
                Application="Microsoft Exchange Online",
                AccountObjectId="u1",
                AccountDisplayName="Ann",
                IPAddress="203.0.113.7",
                RawEventData={
                    "ClientAppId": "app1",
                    "MailboxOwnerUPN": "cy@contoso.com",
                    "OperationCount": 5,
                    "Operation": "MailItemsAccessed",
                },
            ),
            dict(
                Timestamp="now-2h",
                ActionType="Add service principal credentials.",
                Application="Office 365",
                AccountDisplayName="Admin",
                IsAdminOperation=True,
                RawEventData={"ModifiedProperties": [{"Name": "KeyDescription", "NewValue": "x"}]},
            ),
        ],
        "IdentityLogonEvents": [
            dict(
                Timestamp="now-20m",
                ActionType="LogonSuccess",
                AccountName="ann",
                AccountUpn="ann@contoso.com",
                DeviceName="ws1",
                IPAddress="203.0.113.7",
                Protocol="Kerberos",
            ),
        ],
    }


def construct_of(message: str) -> str:
    """A short label for why the local engine refused a query (grouped in the doc's table)."""
    m = re.search(r"unsupported KQL construct '([^']+)'(?: at \d+:\d+)?(?: \((.*)\))?\); the query", message)
    if m:
        what, detail = m.group(1), m.group(2) or ""
        if what == "EvaluateOperator":
            plugin = re.search(r"near 'evaluate([a-z_]+)\(", detail)
            return f"evaluate {plugin.group(1)}" if plugin else "evaluate"
        if what == "MakeSeriesOperator":
            return "make-series"
        if what.startswith("function:"):
            args = re.search(r"takes \((.*?)\) argument", detail)
            name = what.removeprefix("function:")
            return f"{name}() with other arity" if args else f"{name}()"
        if what.startswith("let function:"):
            return "let-bound tabular function"
        if what == "source:ParenthesizedExpression":
            return "parenthesised tabular source, e.g. (union ...)"
        return what
    if "does not parse" in message:
        return "syntax the engine cannot parse"
    if "unknown table, column or name" in message or "failed to bind" in message:
        return "unknown name (placeholder left in the published query)"
    if "DuckDB failed" in message:
        return "translated SQL fails in DuckDB"
    return message.split(":", 2)[-1].strip()[:60]


def run() -> list[Outcome]:
    entries = load()
    checks = check_queries([e.query for e in entries], platform="defender")
    tables = sample_tables()
    out = []
    for entry, check in zip(entries, checks, strict=True):
        backend = LocalBackend.from_rows(tables, NOW, source=entry.file)
        try:
            rows = len(asyncio.run(backend.run(entry.query, timespan=timedelta(days=60))).rows)
            error = None
        except BackendError as exc:
            rows, error = None, str(exc)
        before = None if error else sql_null_rows(backend, entry.query)
        backend.con.close()
        out.append(Outcome(entry, [str(d) for d in check.errors], error, rows, before))
    return out


def sql_null_rows(backend: LocalBackend, query: str) -> int | None:
    """The query's row count under SQL's NULL semantics: missing strings NULL again (the sample tables
    hold no deliberate ""), and duckdb-kql run directly, without the outer-join fill."""
    for table, cols in backend.schemas.items():
        sets = ", ".join(f'"{c}" = NULLIF("{c}", \'\')' for c, t in cols if t == "String")
        backend.con.execute(f'UPDATE "{table}" SET {sets}')
    try:
        return len(duckdb_kql.kql(backend.con, query, query_now=NOW).fetchall())
    except Exception:  # only a comparison figure: the real run above reports errors
        return None


def results_markdown(outcomes: list[Outcome]) -> str:
    total = len(outcomes)
    parsed = sum(1 for o in outcomes if not o.parser_errors)
    ran = sum(1 for o in outcomes if o.local_error is None)
    both = sum(1 for o in outcomes if not o.parser_errors and o.local_error is None)
    changed = sum(1 for o in outcomes if o.local_error is None and o.rows_sql_nulls != o.rows)
    lines = [
        BEGIN,
        "",
        "| Check | Queries |",
        "|---|---|",
        f"| In the corpus | {total} |",
        f"| Pass Microsoft's parser (no error diagnostics) | {parsed} |",
        f"| Run on the local engine | {ran} |",
        f"| Both | {both} |",
        f"| Of those run, answer differs under SQL's NULL strings (before the wrap) | {changed} |",
        "",
        "Top constructs the local engine refuses:",
        "",
        "| Construct | Queries |",
        "|---|---|",
    ]
    for construct, n in Counter(o.construct for o in outcomes if o.construct).most_common():
        lines.append(f"| {construct} | {n} |")
    lines += ["", "Per query:", "", "| Query | Source | Parser | Local engine |", "|---|---|---|---|"]
    for o in outcomes:
        src = o.entry.source
        parser = "ok" if not o.parser_errors else "error: " + o.parser_errors[0].split(" ", 2)[-1][:70]
        local = f"ok ({o.rows} rows)" if o.local_error is None else f"refused: {o.construct}"
        if o.local_error is None and o.rows_sql_nulls != o.rows:
            local += f"; {o.rows_sql_nulls} with NULL strings"
        where = f"{src['repo']}: {src['path']}"
        lines.append(f"| `{o.entry.file}` | {where} | {_cell(parser)} | {_cell(local)} |")
    lines += ["", END]
    return "\n".join(lines)


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def doc_section(text: str) -> str:
    start, end = text.index(BEGIN), text.index(END) + len(END)
    return text[start:end]


def write_doc(outcomes: list[Outcome]) -> None:
    text = DOC.read_text(encoding="utf-8")
    DOC.write_text(text.replace(doc_section(text), results_markdown(outcomes)), encoding="utf-8")


if __name__ == "__main__":
    results = run()
    if "--write" in sys.argv:
        write_doc(results)
    print(results_markdown(results))
