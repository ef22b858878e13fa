"""Streaming form of consumer-reply-chain-file-link (detections/rules/ of that name).

One chain per (protected mailbox, normalised peer) holds, for the rule's ``window`` (7 d):

* the peer's inbound mails to the mailbox (consumer envelope sender only; at most :data:`MAX_INBOUND`,
  newest kept): the ``earlier`` rows, the ``link`` candidates, and the inbound times that make a
  reply automatic (sent within ``auto_reply_max_delay`` after one);
* the mailbox's replies to the peer whose subject is not an automatic one (``auto_reply_subject_regex``,
  RE2; at most :data:`MAX_REPLIES`): a reply arms the chain unless it left within
  ``auto_reply_max_delay`` of an inbound mail of the chain, which is decided when the chain is read, so
  an inbound notification processed after the reply's (they come from two subscriptions) still
  disarms it.

A link mail is an inbound mail of the chain, still in the Inbox when seen, with a URL under
``file_share_domains``/``extra_lure_domains`` (label boundary) and not under ``excluded_url_domains``,
sent after the chain's first human reply. When the chain has one, its rows are returned as the KQL
returns them: ``link`` (moved to Junk), and the ``reply`` and ``earlier`` rows before the last link
(on-call is told); each row once. A link mail arriving with an armed chain gets its row at once; a
reply arriving after a link mail it precedes (notifications out of order) returns that link then.

Left to the scheduled path: rows of mails without a Network Message ID (a Sent Items copy may have
none: the reply still arms the chain, its ``reply`` row comes from the scheduled run with the id the
request needs); ``earlier`` rows beyond the newest :data:`MAX_INBOUND` mails of a chain
(or beyond STATE_BUDGET characters of state),
and a mail moved out of the Inbox after it was seen (the push path acts on what it saw; the move
verifies the message's folder).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from functools import lru_cache
from typing import Any

from detections.params import ParamError
from detections.streaming import MailFact, StreamState
from detections.streaming.mailmatch import (
    compile_re2,
    is_consumer,
    iso,
    lowered,
    lure_links,
    norm_sender,
    parse_iso,
    recipient_as_written,
    sender_domain,
    trim,
)
from detections.streaming.update import STATE_BUDGET, SUBJECT_KEPT, size, update

SLUG = "consumer-reply-chain-file-link"
MAX_INBOUND = 60   # a peer's mails to one mailbox in a week; the opener and the link are the newest ones
MAX_REPLIES = 30
PARAMS = ("window", "sender_domains", "extra_sender_domains", "excluded_sender_domains", "dotless_domains",
          "protected_recipients", "auto_reply_subject_regex", "auto_reply_max_delay", "file_share_domains",
          "extra_lure_domains", "excluded_url_domains")


@dataclass(frozen=True)
class Prepared:
    window: timedelta
    sender_domains: frozenset[str]
    extra: frozenset[str]
    excluded: frozenset[str]
    dotless: frozenset[str]
    protected: frozenset[str]
    auto_reply: Any  # compiled RE2
    auto_reply_max_delay: timedelta
    lure_domains: tuple[str, ...]
    excluded_url_domains: tuple[str, ...]

    def consumer(self, domain: str) -> bool:
        return is_consumer(domain, self.sender_domains, self.extra, self.excluded)


def prepare(params: Mapping[str, Any]) -> Prepared:
    """The resolved parameters this rule reads, checked: a missing one, or a subject pattern RE2 does
    not compile, is a ParamError naming it."""
    for name in PARAMS:
        if params.get(name) is None:
            raise ParamError(SLUG, name, "missing from the resolved parameters (use registry.rule_params)")
    return _prepare(tuple((n, tuple(v) if isinstance(v, list | tuple) else v)
                          for n, v in ((n, params[n]) for n in PARAMS)))


@lru_cache(maxsize=16)
def _prepare(items: tuple[tuple[str, Any], ...]) -> Prepared:
    p = dict(items)
    try:
        auto_reply = compile_re2(p["auto_reply_subject_regex"])
    except Exception as exc:  # re2.error: the message says what RE2 refused
        raise ParamError(SLUG, "auto_reply_subject_regex", f"not a valid RE2 pattern: {exc}") from None

    def hosts(items: Any) -> tuple[str, ...]:
        return tuple(dict.fromkeys(str(d).lower() for d in items if str(d).strip()))

    return Prepared(window=p["window"], sender_domains=lowered(p["sender_domains"]),
                    extra=lowered(p["extra_sender_domains"]), excluded=lowered(p["excluded_sender_domains"]),
                    dotless=lowered(p["dotless_domains"]),
                    protected=lowered(trim(r) for r in p["protected_recipients"]),
                    auto_reply=auto_reply, auto_reply_max_delay=p["auto_reply_max_delay"],
                    lure_domains=hosts([*p["file_share_domains"], *p["extra_lure_domains"]]),
                    excluded_url_domains=hosts(p["excluded_url_domains"]))


def chain_key(mailbox: str, peer: str) -> str:
    return "chain:" + json.dumps([mailbox, peer], separators=(",", ":"))


def _reply_mailbox(fact: MailFact, p: Prepared) -> str | None:
    """Mailbox = SenderFromAddress when protected, else SenderMailFromAddress when protected."""
    for address in (fact.sender_from, fact.sender_mail_from):
        if trim(address).lower() in p.protected:
            return trim(address).lower()
    return None


async def observe(fact: MailFact, params: Mapping[str, Any], state: StreamState) -> list[dict[str, Any]]:
    """Rows (the KQL projection, with Stage) that this fact makes actionable; see the module doc."""
    p = prepare(params)
    direction = fact.direction.strip().lower()
    items: list[tuple[str, str, dict[str, Any]]] = []   # (chain key, kind, entry)
    if direction in ("outbound", "intra-org"):
        mailbox = _reply_mailbox(fact, p)
        if mailbox is None or p.auto_reply.search(fact.subject or ""):
            return []  # not the mailbox writing, or an automatic reply by its subject
        for recipient in dict.fromkeys(fact.recipients):
            peer = norm_sender(recipient, p.dotless)
            # Only a consumer peer can send the link mail; other replies need no state.
            if not (p.consumer(sender_domain(recipient)) or p.consumer(peer.rsplit("@", 1)[-1])):
                continue
            items.append((chain_key(mailbox, peer), "replies", {
                "t": iso(fact.timestamp), "nm": fact.network_message_id, "im": fact.internet_message_id,
                "rcpt": recipient, "smf": fact.sender_mail_from, "sub": fact.subject[:SUBJECT_KEPT],
                "rep": fact.report_id,
                "e": []}))
    elif direction == "inbound":
        mailbox = trim(fact.mailbox).lower()
        if mailbox not in p.protected or not p.consumer(sender_domain(fact.sender_mail_from)):
            return []
        urls, hosts = lure_links(fact.urls, p.lure_domains, p.excluded_url_domains)
        items.append((chain_key(mailbox, norm_sender(fact.sender_mail_from, p.dotless)), "inbound", {
            "t": iso(fact.timestamp), "nm": fact.network_message_id, "im": fact.internet_message_id,
            "rcpt": recipient_as_written(mailbox, fact.recipients), "ro": fact.recipient_object_id,
            "smf": fact.sender_mail_from, "sub": fact.subject[:SUBJECT_KEPT], "rep": fact.report_id,
            "in": bool(fact.in_inbox), "urls": urls, "hosts": hosts, "e": []}))
    rows: list[dict[str, Any]] = []
    for key, kind, entry in items:
        rows += await update(state, key, lambda value, key=key, kind=kind, entry=entry:
                             _apply(value, key, kind, entry, p))
    return rows


_FIELDS = {"inbound": {"t", "nm", "im", "rcpt", "ro", "smf", "sub", "rep", "in", "urls", "hosts", "e"},
           "replies": {"t", "nm", "im", "rcpt", "smf", "sub", "rep", "e"}}


def _entries(value: Mapping[str, Any], kind: str) -> list[dict[str, Any]]:
    out = []
    for e in value.get(kind) or []:
        try:
            parse_iso(e["t"])
            if isinstance(e["nm"], str) and isinstance(e["e"], list) and set(e) >= _FIELDS[kind]:
                out.append(dict(e))
        except (KeyError, TypeError, ValueError):
            continue  # a damaged entry is dropped: the scheduled path still sees that mail
    return out


def _same(a: Mapping[str, Any], b: Mapping[str, Any]) -> bool:
    """One mail notified twice. A Sent Items copy may carry no Network Message ID (it never went through
    transport into that folder; push/mailfacts.py), so then the Internet Message ID, or the time and
    subject, tell two replies apart."""
    if str(a.get("rcpt", "")).lower() != str(b.get("rcpt", "")).lower():
        return False
    for field in ("nm", "im"):
        if a.get(field) or b.get(field):
            return a.get(field) == b.get(field)
    return (a["t"], a.get("sub")) == (b["t"], b.get("sub"))


def _apply(value: Mapping[str, Any], key: str, kind: str, entry: dict[str, Any],
           p: Prepared) -> tuple[dict[str, Any] | None, list[dict[str, Any]]]:
    mailbox, peer = json.loads(key.removeprefix("chain:"))
    chain = {k: _entries(value, k) for k in ("inbound", "replies")}
    before = sum(len(v) for v in chain.values())
    changed = False
    if not any(_same(e, entry) for e in chain[kind]):
        chain[kind].append(dict(entry))
        changed = True
    stamps = {id(e): parse_iso(e["t"]) for v in chain.values() for e in v}
    newest = max(stamps.values())
    for k, cap in (("inbound", MAX_INBOUND), ("replies", MAX_REPLIES)):
        kept = sorted((e for e in chain[k] if stamps[id(e)] > newest - p.window), key=lambda e: stamps[id(e)])
        chain[k] = kept[-cap:]
    while size(chain) > STATE_BUDGET:  # hostile-sized fields: the oldest entry of either list goes first
        oldest = min((k for k in chain if chain[k]), key=lambda k: stamps[id(chain[k][0])])
        chain[oldest].pop(0)
    changed = changed or sum(len(v) for v in chain.values()) != before + (1 if changed else 0)
    rows = _rows(chain, stamps, mailbox, peer, p)
    if rows:
        changed = True
    if not changed:
        return None, []
    return {**chain, "expires_at": iso(newest + p.window)}, rows


def _rows(chain: Mapping[str, list[dict[str, Any]]], stamps: Mapping[int, datetime], mailbox: str,
          peer: str, p: Prepared) -> list[dict[str, Any]]:
    inbound_times = [stamps[id(e)] for e in chain["inbound"]]

    def automatic(t: datetime) -> bool:  # left within auto_reply_max_delay of an inbound mail of the chain
        return any(i <= t and t - i <= p.auto_reply_max_delay for i in inbound_times)

    human = [r for r in chain["replies"] if not automatic(stamps[id(r)])]
    if not human:
        return []
    first_reply = min(stamps[id(r)] for r in human)
    links = [e for e in chain["inbound"] if e["in"] and e["urls"] and stamps[id(e)] > first_reply]
    if not links:
        return []
    last_link = max(stamps[id(e)] for e in links)
    link_ids = {id(e) for e in links}
    common = {"FirstReplyTime": iso(first_reply), "ChainMailbox": mailbox, "ChainSender": peer}
    rows = []
    for stage, entries in (("link", links),
                           ("earlier", [e for e in chain["inbound"]
                                        if stamps[id(e)] < last_link and id(e) not in link_ids]),
                           ("reply", [r for r in human if stamps[id(r)] < last_link])):
        for e in entries:
            # No Network Message ID, no request with the scheduled path's id: that row is left to it.
            if stage in e["e"] or not e["nm"]:
                continue
            e["e"].append(stage)
            rows.append({
                "Stage": stage, "Timestamp": e["t"], "NetworkMessageId": e["nm"],
                "InternetMessageId": e["im"] or None, "SenderMailFromAddress": e["smf"],
                "RecipientEmailAddress": e["rcpt"], "RecipientObjectId": e.get("ro") or None,
                "Subject": e["sub"],
                "LatestDeliveryLocation": "Inbox/folder" if e.get("in") else None,
                "FileShareUrls": list(e.get("urls") or []), "FileShareHosts": list(e.get("hosts") or []),
                **common, "ReportId": e["rep"] or None,
            })
    return rows
