"""Streaming form of consumer-sender-to-shared-mailboxes (detections/rules/ of that name).

The KQL reads 2 h of EmailEvents every 5 minutes; this sees one copy at a time, as the push path
announces it, and keeps per campaign (one normalised sender, and one EmailClusterId when there is one)
the copies of the last ``window``. A copy counts as in the KQL: recipient a protected mailbox, envelope
sender at a consumer domain. The campaign is flagged when some ``correlation_window`` (sliding, opened
by each copy) holds strictly more than ``threshold`` distinct protected mailboxes; then every
remembered copy that was in the Inbox when seen is returned as a row, and from then on each new copy
as it arrives, while the flagging burst is within ``window`` (the KQL's lookback). Rows have the KQL
projection's columns, so ``requests_from_rows`` gives the scheduled path's request ids.

State per campaign key (``sender:<normalised sender>`` / ``cluster:<EmailClusterId>``): the copies,
pruned to ``window`` before the newest and at most :data:`MAX_COPIES` and STATE_BUDGET characters
(the newest kept), each marked once returned. Older copies dropped by those bounds (a flood from one
sender) are left to the scheduled path, which reads the whole lookback. Graph has no EmailClusterId,
so on the push path only the sender key is used: the throw-away-senders-one-content campaign is left
to the scheduled path.

Window edges: the streaming window runs back from the newest copy seen, the KQL's lookback from the
run time, so a burst is acted on as it arrives even when a run at a later `now` no longer reads all of
it (tests/detections/test_streaming_rules.py, "window edge").
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from functools import lru_cache
from typing import Any

from detections.params import ParamError
from detections.streaming import MailFact, StreamState
from detections.streaming.mailmatch import (
    is_consumer,
    iso,
    lowered,
    norm_sender,
    parse_iso,
    recipient_as_written,
    sender_domain,
    trim,
)
from detections.streaming.update import STATE_BUDGET, SUBJECT_KEPT, size, update

SLUG = "consumer-sender-to-shared-mailboxes"
# Copies kept per campaign: far above any threshold (the protected list is a handful of shared
# mailboxes); at ~300 characters a copy they fit STATE_BUDGET.
MAX_COPIES = 100
PARAMS = ("window", "correlation_window", "threshold", "sender_domains", "extra_sender_domains",
          "excluded_sender_domains", "dotless_domains", "correlate_content", "protected_recipients")


@dataclass(frozen=True)
class Prepared:
    window: timedelta
    correlation_window: timedelta
    threshold: int
    sender_domains: frozenset[str]
    extra: frozenset[str]
    excluded: frozenset[str]
    dotless: frozenset[str]
    correlate_content: bool
    protected: frozenset[str]


def _hashable(value: Any) -> Any:
    return tuple(value) if isinstance(value, list | tuple) else value


def prepare(params: Mapping[str, Any]) -> Prepared:
    """The resolved parameters this rule reads, checked (a missing one is a ParamError naming it)."""
    for name in PARAMS:
        if params.get(name) is None:
            raise ParamError(SLUG, name, "missing from the resolved parameters (use registry.rule_params)")
    return _prepare(tuple((n, _hashable(params[n])) for n in PARAMS))


@lru_cache(maxsize=16)
def _prepare(items: tuple[tuple[str, Any], ...]) -> Prepared:
    p = dict(items)
    return Prepared(window=p["window"], correlation_window=p["correlation_window"],
                    threshold=int(p["threshold"]), sender_domains=lowered(p["sender_domains"]),
                    extra=lowered(p["extra_sender_domains"]), excluded=lowered(p["excluded_sender_domains"]),
                    dotless=lowered(p["dotless_domains"]), correlate_content=bool(p["correlate_content"]),
                    protected=lowered(trim(r) for r in p["protected_recipients"]))


def campaign_keys(fact: MailFact, p: Prepared) -> list[str]:
    """The state keys this copy belongs to; [] when the rule ignores it (not a protected recipient's
    copy, or not from a consumer envelope sender)."""
    if fact.direction.strip().lower() == "outbound":
        return []  # the mailbox's own sent mail is not a copy it received
    if trim(fact.mailbox).lower() not in p.protected:
        return []
    if not is_consumer(sender_domain(fact.sender_mail_from), p.sender_domains, p.extra, p.excluded):
        return []
    keys = [f"sender:{norm_sender(fact.sender_mail_from, p.dotless)}"]
    cluster = fact.cluster_id.strip()
    if p.correlate_content and cluster and cluster != "0":
        keys.append(f"cluster:{cluster}")
    return keys


async def observe(fact: MailFact, params: Mapping[str, Any], state: StreamState) -> list[dict[str, Any]]:
    """Rows (the KQL projection) for the copies this fact makes actionable: none until the campaign is
    flagged, then every remembered Inbox copy once, then each new one as it comes."""
    p = prepare(params)
    keys = campaign_keys(fact, p)
    if not keys or not fact.network_message_id.strip():
        return []  # without the id no request can be made (nor told apart from another copy)
    mailbox = trim(fact.mailbox).lower()
    copy = {
        "t": iso(fact.timestamp), "mb": mailbox, "nm": fact.network_message_id,
        "rcpt": recipient_as_written(mailbox, fact.recipients), "ro": fact.recipient_object_id,
        "im": fact.internet_message_id, "smf": fact.sender_mail_from, "sf": fact.sender_from,
        "sk": norm_sender(fact.sender_mail_from, p.dotless), "sub": fact.subject[:SUBJECT_KEPT],
        "rep": fact.report_id,
        "in": bool(fact.in_inbox), "e": False,
    }
    rows: dict[tuple[str, str], dict[str, Any]] = {}
    for key in keys:
        found = await update(state, key, lambda value, key=key: _apply(value, key, copy, p))
        for row in found:
            ident = (row["NetworkMessageId"], row["RecipientEmailAddress"].lower())
            if ident in rows:  # flagged under both keys: one row, both campaigns (make_set(CampaignKey))
                seen = rows[ident]
                seen["Campaigns"] = sorted({*seen["Campaigns"], *row["Campaigns"]})
                seen["DistinctMailboxes"] = max(seen["DistinctMailboxes"], row["DistinctMailboxes"])
            else:
                rows[ident] = row
    return sorted(rows.values(), key=lambda r: r["Timestamp"], reverse=True)


_FIELDS = {"t", "mb", "nm", "rcpt", "ro", "im", "smf", "sf", "sk", "sub", "rep", "in", "e"}


def _copies(value: Mapping[str, Any]) -> list[dict[str, Any]]:
    out = []
    for c in value.get("copies") or []:
        try:
            parse_iso(c["t"])
            if isinstance(c["mb"], str) and isinstance(c["nm"], str) and set(c) >= _FIELDS:
                out.append(dict(c))
        except (KeyError, TypeError, ValueError):
            continue  # a damaged entry is dropped, not fatal: the scheduled path still sees that copy
    return out


def _apply(value: Mapping[str, Any], key: str, copy: dict[str, Any],
           p: Prepared) -> tuple[dict[str, Any] | None, list[dict[str, Any]]]:
    copies = _copies(value)
    changed = False
    if not any(c["nm"] == copy["nm"] and c["mb"] == copy["mb"] for c in copies):
        copies.append(dict(copy))  # a notification seen twice is one copy
        changed = True
    stamps = {id(c): parse_iso(c["t"]) for c in copies}
    newest = max(stamps.values())
    kept = [c for c in copies if stamps[id(c)] > newest - p.window]  # Timestamp > ago(window)
    kept.sort(key=lambda c: stamps[id(c)])
    kept = kept[-MAX_COPIES:]
    while kept and size(kept) > STATE_BUDGET:  # hostile-sized fields: the oldest copies go first
        kept.pop(0)
    changed = changed or len(kept) != len(copies)
    distinct, anchor = _flagging(kept, stamps, p)
    rows = []
    if distinct > p.threshold and anchor is not None and anchor > newest - p.window:
        for c in kept:
            if c["in"] and not c["e"]:  # only copies still in the Inbox; each returned once
                c["e"] = True
                changed = True
                rows.append(_row(c, distinct, key))
    if not changed:
        return None, []
    return {"copies": kept, "expires_at": iso(newest + p.window)}, rows


def _flagging(copies: list[dict[str, Any]], stamps: Mapping[int, datetime],
              p: Prepared) -> tuple[int, datetime | None]:
    """The KQL's self-join: each copy opens a window of correlation_window; count the distinct
    mailboxes in it. Returns the largest count and the latest anchor whose window is over the threshold."""
    best, anchor = 0, None
    in_window: Counter[str] = Counter()
    end = 0
    for first in copies:  # copies are in time order: a two-pointer sweep
        start = stamps[id(first)]
        while end < len(copies) and stamps[id(copies[end])] <= start + p.correlation_window:
            in_window[copies[end]["mb"]] += 1
            end += 1
        best = max(best, len(in_window))
        if len(in_window) > p.threshold:
            anchor = start
        in_window[first["mb"]] -= 1
        if not in_window[first["mb"]]:
            del in_window[first["mb"]]
    return best, anchor


def _row(c: Mapping[str, Any], distinct: int, key: str) -> dict[str, Any]:
    return {
        "Timestamp": c["t"], "SenderMailFromAddress": c["smf"], "SenderFromAddress": c["sf"] or None,
        "SenderKey": c["sk"], "RecipientEmailAddress": c["rcpt"], "RecipientObjectId": c["ro"] or None,
        "Subject": c["sub"], "DistinctMailboxes": distinct, "Campaigns": [key],
        "LatestDeliveryLocation": "Inbox/folder", "LatestDeliveryAction": None,
        "NetworkMessageId": c["nm"], "InternetMessageId": c["im"] or None, "ReportId": c["rep"] or None,
    }
