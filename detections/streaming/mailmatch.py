"""What the two mail rules' KQL computes per row, in Python, for their streaming forms.

Each function mirrors one expression of detections/rules/consumer-*.yaml and says which; the
conformance runner (detections/streaming/conformance.py) runs every test case of both rules through
the streaming form, so a drift between these and the KQL shows up as a failing case.

Kusto regular expressions are RE2 (learn.microsoft.com/kusto/query/re2), so the rule's
``auto_reply_subject_regex`` is compiled with RE2 itself (google-re2, the official bindings), not with
Python's ``re``: ``\\s`` and ``\\d`` are ASCII in RE2 and Unicode in ``re``, and a pattern ``re`` accepts
may be invalid RE2 (backreferences, lookaround) or the reverse.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from datetime import UTC, datetime
from functools import lru_cache
from typing import Any
from urllib.parse import urlsplit

import re2

# KQL trim(@"\s+", s): RE2's \s is [\t\n\f\r ] (github.com/google/re2/wiki/Syntax), narrower than str.strip()
_TRIM = re.compile(r"^[\t\n\f\r ]+|[\t\n\f\r ]+\Z")
_DOMAIN = re.compile(r"@([^@]+)\Z")            # extract(@"@([^@]+)$", 1, a)
_LOCAL = re.compile(r"^(.*)@[^@]+\Z")          # extract(@"^(.*)@[^@]+$", 1, a)
# let consumer_family = @"^[a-z0-9-]+\.(?:[a-z]{2,3}|(?:co|com|net|org|ne|or)\.[a-z]{2})$";
CONSUMER_FAMILY = re.compile(r"[a-z0-9-]+\.(?:[a-z]{2,3}|(?:co|com|net|org|ne|or)\.[a-z]{2})")


def trim(value: str) -> str:
    return _TRIM.sub("", value or "")


def sender_domain(address: str) -> str:
    """tolower(extract(@"@([^@]+)$", 1, trim(@"\\s+", address))): "" when there is no domain."""
    m = _DOMAIN.search(trim(address))
    return m.group(1).lower() if m else ""


def norm_sender(address: str, dotless_domains: Iterable[str]) -> str:
    """The rules' ``norm_sender``: lower case, googlemail.com folded into gmail.com, ``+tag`` removed,
    dots removed from the local part at ``dotless_domains``. Eve.Smith+1@GMail.com -> evesmith@gmail.com.

    (consumer-sender-to-shared-mailboxes tests ``domain in (dotless)`` case-sensitively, the reply-chain
    rule ``in~``; the domain is already lower case, so the two agree for lower-case list entries, and this
    compares case-insensitively like the reply-chain rule.)
    """
    a = trim(address).lower()
    m = _DOMAIN.search(a)
    domain = (m.group(1) if m else "").replace("googlemail.com", "gmail.com")
    lm = _LOCAL.match(a)
    local = (lm.group(1) if lm else "").split("+")[0]
    if domain in {d.lower() for d in dotless_domains}:
        local = local.replace(".", "")
    return f"{local}@{domain}"


def lowered(items: Iterable[str]) -> frozenset[str]:
    return frozenset(str(i).lower() for i in items)


def is_consumer(domain: str, sender_domains: frozenset[str], extra: frozenset[str],
                excluded: frozenset[str]) -> bool:
    """The reply-chain rule's ``is_consumer`` (the same test as the campaign rule's ``SenderDomain in~
    (sender_domains) or SenderFamily in~ (sender_domains) or SenderDomain in~ (extra_sender_domains)``,
    minus ``excluded_sender_domains``). Sets must be lower case (:func:`lowered`); ``domain`` too."""
    if not domain or domain in excluded:
        return False
    if domain in sender_domains or domain in extra:
        return True
    return bool(CONSUMER_FAMILY.fullmatch(domain)) and f"{domain.split('.')[0]}.*" in sender_domains


def url_host(url: str) -> str:
    """tolower(parse_url(Url).Host): "" for text that is not an absolute URL. (EmailUrlInfo also has
    UrlDomain, the same host; a Graph message only has its links, so the host comes from the URL.)"""
    try:
        host = urlsplit(url.strip()).hostname
    except ValueError:  # e.g. an unbalanced IPv6 bracket: not a link anyone can follow
        return ""
    return (host or "").lower()


def under(host: str, domains: Iterable[str]) -> str | None:
    """The first of ``domains`` (lower case) that ``host`` is, or is a subdomain of (label boundary:
    ``UrlHost == D or UrlHost endswith strcat(".", D)``)."""
    for d in domains:
        if d and (host == d or host.endswith("." + d)):
            return d
    return None


URL_KEPT = 512  # characters of a lure URL kept (evidence only): ten long URLs must not evict the mail's state


def lure_links(urls: Iterable[str], lure_domains: tuple[str, ...],
               excluded_url_domains: tuple[str, ...]) -> tuple[list[str], list[str]]:
    """(FileShareUrls, FileShareHosts) of one message: URLs whose host is under a lure domain and not
    under an excluded one; each list at most 10 distinct items, as ``make_set(Url, 10)`` keeps. A URL
    longer than URL_KEPT is cut, with a marker."""
    found_urls: list[str] = []
    found_hosts: list[str] = []
    for url in urls:
        host = url_host(url)
        if not host or under(host, excluded_url_domains) or not under(host, lure_domains):
            continue
        kept = url if len(url) <= URL_KEPT else url[:URL_KEPT] + f"\u2026(+{len(url) - URL_KEPT} more)"
        if kept not in found_urls and len(found_urls) < 10:
            found_urls.append(kept)
        if host not in found_hosts and len(found_hosts) < 10:
            found_hosts.append(host)
    return found_urls, found_hosts


@lru_cache(maxsize=32)
def compile_re2(pattern: str) -> Any:
    """The pattern as RE2 compiles it (``matches regex`` is an unanchored search). re2.error if invalid."""
    return re2.compile(pattern)


def iso(moment: datetime) -> str:
    """A timestamp as the hunting API returns it (and detections.findings.json_safe writes it)."""
    moment = moment.astimezone(UTC)
    text = moment.strftime("%Y-%m-%dT%H:%M:%S")
    return text + (f".{moment.microsecond:06d}" if moment.microsecond else "") + "Z"


def parse_iso(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00")).astimezone(UTC)


def recipient_as_written(mailbox: str, recipients: Iterable[str]) -> str:
    """The mailbox's address as the message carries it (RecipientEmailAddress keeps its case, and the
    test cases compare it), falling back to the lower-case mailbox."""
    for r in recipients:
        if trim(r).lower() == mailbox:
            return r
    return mailbox
