"""core.retry_after: one Retry-After parser, used by every client that reads the header (issue 12)."""

from __future__ import annotations

import ast
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from pathlib import Path
from types import SimpleNamespace

import httpx
import pytest
from azure.core.exceptions import HttpResponseError

from core.retry_after import parse_retry_after
from detections.backends import defender, sentinel
from notifications import teams
from remediation import exchange

ROOT = Path(__file__).resolve().parents[2]
NOW = datetime(2026, 11, 20, 12, 0, 0, tzinfo=UTC)
# RFC 9110 10.2.3: delay-seconds or an HTTP-date (IMF-fixdate)
DATE_IN_45S = "Fri, 20 Nov 2026 12:00:45 GMT"


@pytest.mark.parametrize(("raw", "seconds"), [
    ("30", 30.0), (" 2.5 ", 2.5), ("-3", 0.0), ("0", 0.0),
    (DATE_IN_45S, 45.0), ("Fri, 20 Nov 2026 11:00:00 GMT", 0.0),
    ("soon", None), ("", None), (None, None), ("nan", None), ("inf", None), ("Fri, 99 Foo", None),
])
def test_parse_retry_after(raw: str | None, seconds: float | None) -> None:
    assert parse_retry_after(raw, now=NOW) == seconds


def test_a_date_without_zone_is_utc() -> None:
    assert parse_retry_after("Fri, 20 Nov 2026 12:00:45 -0000", now=NOW) == 45.0


def _in_the_future(value: float | None) -> bool:
    # the callers use the wall clock: a date 10 minutes ahead is roughly 600 s away
    return value is not None and 590 < value <= 600


def _future_date() -> str:
    return format_datetime(datetime.now(UTC).replace(microsecond=0) + timedelta(seconds=600), usegmt=True)


def test_every_client_reads_seconds_and_http_dates_alike() -> None:
    date = _future_date()
    # Log Analytics (azure-core HttpResponseError carries the response)
    err = HttpResponseError(message="throttled")
    err.response = SimpleNamespace(headers={"Retry-After": date})  # type: ignore[assignment]
    assert _in_the_future(sentinel._retry_after(err))
    err.response = SimpleNamespace(headers={"Retry-After": "7"})  # type: ignore[assignment]
    assert sentinel._retry_after(err) == 7.0
    # Graph advanced hunting (kiota response headers)
    assert _in_the_future(defender._retry_after({"retry-after": date}))
    assert defender._retry_after({"retry-after": "7"}) == 7.0
    # Exchange admin endpoint and the Teams webhook (httpx responses)
    for read in (exchange._retry_after, teams._retry_after):
        assert _in_the_future(read(httpx.Response(429, headers={"Retry-After": date})))
        assert read(httpx.Response(429, headers={"Retry-After": "7"})) == 7.0
        assert read(httpx.Response(429)) is None


def test_no_product_module_parses_retry_after_by_itself() -> None:
    # the HTTP-date half of the parser is the tell: only core/retry_after.py may call parsedate_to_datetime
    found = []
    for pkg in ("core", "detections", "remediation", "notifications", "app"):
        for path in sorted((ROOT / pkg).rglob("*.py")):
            for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
                if isinstance(node, ast.ImportFrom) and node.module == "email.utils" and any(
                        a.name == "parsedate_to_datetime" for a in node.names):
                    found.append(path.relative_to(ROOT).as_posix())
    assert found == ["core/retry_after.py"]
