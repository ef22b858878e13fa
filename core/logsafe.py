"""Log lines carry nothing a caller sent raw, and no URL secret (issue 13).

``install()`` wraps the logging record factory, so every record, whatever logger or handler (the
Functions host adds its own), is cleaned once when it is made: the formatted message has control
characters escaped (no forged log lines through a newline in a queue message or HTTP body) and every
URL's secret query parameters (a Workflows webhook's ``sig``, SAS ``sig``, ``code``, tokens) redacted
by parsing the URL, in any spelling: percent-encoded, JSON-escaped slashes, HTML ``&amp;``, any case.
"""

from __future__ import annotations

import logging
import re
from typing import Any
from urllib.parse import parse_qsl, unquote, urlsplit

# Query parameters whose value is a credential: Logic Apps / Workflows and SAS signatures (sig), function
# keys (code), OAuth tokens. Compared after decoding, lower-cased.
SECRET_PARAMS = frozenset({"sig", "signature", "code", "key", "token", "access_token", "refresh_token",
                           "client_secret", "password"})
REDACTED = "redacted"
# A URL in plain, percent-encoded (https%3A%2F%2F, also twice), or JSON-escaped (https:\/\/) spelling.
_URL = re.compile(r"(?i)\bhttps?(?::|%(?:25)*3a)(?:/|\\/|%(?:25)*2f){2}[^\s'\"<>`]+")
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029]")


def escape_controls(text: str) -> str:
    r"""Control characters as visible escapes (``\n``, ``\x1b``), so one log call is one line."""
    return _CONTROL.sub(lambda m: m.group().encode("unicode_escape").decode("ascii"), text)


def _decode(text: str) -> str:
    text = text.replace("\\/", "/").replace("&amp;", "&").replace("\\u0026", "&")
    for _ in range(3):       # double-encoded spellings too
        decoded = unquote(text)
        if decoded == text:
            break
        text = decoded
    return text


def _secret_key(key: str) -> bool:
    words = re.split(r"[^a-z0-9_]", _decode(key).lower())
    return bool(words) and words[-1] in SECRET_PARAMS


def redact_url(url: str) -> str:
    """``url``, or a placeholder naming only its host when it carries a secret parameter."""
    plain = _decode(url)
    try:
        parts = urlsplit(plain)
        query = parse_qsl(parts.query, keep_blank_values=True)
        parts.hostname  # noqa: B018 - raises ValueError on a malformed netloc
    except ValueError:
        return f"[{REDACTED} unparseable URL]"
    if not any(_secret_key(k) for k, _ in query) and not _secret_key_in(parts.fragment):
        return url if plain == url else plain
    # The whole URL goes, path included: a signed URL's path names the workflow (or blob) it unlocks.
    # The host stays, so the line still says which service failed.
    return f"[{REDACTED} URL: {parts.scheme}://{parts.hostname or '?'}]"


def _secret_key_in(fragment: str) -> bool:
    try:
        return any(_secret_key(k) for k, _ in parse_qsl(fragment, keep_blank_values=True))
    except ValueError:
        return True


def clean(text: str) -> str:
    """URLs redacted, then control characters escaped."""
    return escape_controls(_URL.sub(lambda m: redact_url(m.group()), text))


def _clean_record(record: logging.LogRecord) -> logging.LogRecord:
    try:
        message = record.getMessage()
    except Exception:
        message = f"{record.msg!r} {record.args!r}"
    record.msg, record.args = clean(message), None
    if record.exc_info and not record.exc_text:
        # Tracebacks keep their lines; only URLs in them are redacted.
        record.exc_text = _URL.sub(lambda m: redact_url(m.group()),
                                   logging.Formatter().formatException(record.exc_info))
    return record


_installed: dict[str, Any] = {}


def install() -> None:
    """Clean every log record from now on (idempotent)."""
    if _installed:
        return
    previous = logging.getLogRecordFactory()

    def factory(*args: Any, **kwargs: Any) -> logging.LogRecord:
        return _clean_record(previous(*args, **kwargs))

    _installed["previous"] = previous
    logging.setLogRecordFactory(factory)
