"""Issue 13: no caller value reaches a log line raw; no URL's sig in any spelling."""

from __future__ import annotations

import json
from urllib.parse import quote

import pytest

from core.logsafe import REDACTED, clean, redact_url

SIG = "Zm9vYmFyU2VjcmV0U2lnbmF0dXJl0123"
HOOK = ("https://prod-12.westeurope.logic.azure.com:443/workflows/abc/triggers/manual/paths/invoke"
        f"?api-version=2016-06-01&sp=%2Ftriggers%2Fmanual%2Frun&sv=1.0&sig={SIG}")

SPELLINGS = [
    HOOK,
    HOOK.replace("sig=", "SIG="),
    HOOK.replace("sig=", "%73ig="),
    quote(HOOK, safe=""),                    # the whole URL percent-encoded
    quote(quote(HOOK, safe=""), safe=""),    # twice
    json.dumps(HOOK).strip('"').replace("/", "\\/"),   # JSON-escaped slashes
    HOOK.replace("&", "&amp;"),
    HOOK.replace("https://", "HTTPS://"),
]


@pytest.mark.parametrize("spelling", SPELLINGS, ids=range(len(SPELLINGS)))
def test_the_webhook_sig_never_survives_in_any_spelling(spelling: str) -> None:
    line = clean(f"Teams card not delivered: POST '{spelling}' failed")
    assert SIG not in line and "/workflows/abc" not in line and REDACTED in line
    assert "logic.azure.com" in line          # what failed stays readable


def test_a_url_without_secrets_is_left_alone() -> None:
    url = "https://graph.microsoft.com/v1.0/users/a@contoso.com/messages?$top=5"
    assert redact_url(url) == url


@pytest.mark.parametrize("value", ["x\nERROR forged line", "x\r\ny", "a\x1b[31mred", "a\u2028b", "\x00"])
def test_control_characters_are_escaped_so_one_call_is_one_line(value: str) -> None:
    line = clean(f"request {value} done")
    assert "\n" not in line and "\r" not in line and "\x1b" not in line and "\u2028" not in line
    assert "\x00" not in line and line.startswith("request ")
