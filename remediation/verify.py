"""Confirming Defender email submissions from EmailEvents.

``analyzedEmails/remediate`` is asynchronous and has no status API, so a submitted request is
confirmed by looking at where the message is now: one hunting query over EmailEvents for all the
submitted NetworkMessageIds, reading ``LatestDeliveryLocation`` per recipient. The ids come from
mail (attacker-influenced), so they reach the query only as KQL string literals (detections.params).
On Sentinel the backend puts its EmailEvents prelude in front (detections/platforms.py), so the same
query reads the latest of the streamed rows there.

The query's timespan reaches back to the *mail's* own time: an EmailEvents row carries the delivery
time, and an undo or a late approval of a week-old message must still find it. Advanced hunting keeps
30 days (https://learn.microsoft.com/defender-xdr/api-advanced-hunting, quotas), so no timespan is
longer, and a message older than that cannot be confirmed at all: it is reported so at once.

Unconfirmed submissions (``unconfirmed_submission``: the remediate call got a 5xx, 408, timeout or reset,
so Defender may or may not have taken it) get one more chance, sooner than the grace period: when
EmailEvents still shows the message in a mailbox folder other than the expected one ``short_grace``
(15 minutes, remediation/resubmit.py) after submission, it is resubmitted once through the worker's path
(``resubmit``, wired in by the worker), never twice; after that the normal rules apply (``confirmed``, or
``not_applied`` after ``grace`` from the resubmission, reported). So a call the service had not taken is
sent again within the short grace plus one verify period (the timer runs every 5 minutes), and one it had
taken but applies later than the short grace costs one duplicate Action-center entry per email. A
missing EmailEvents row does not trigger it (the message may be anywhere): it waits for ``grace``.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import replace
from datetime import datetime, timedelta
from typing import Any

from detections.params import kql_string
from remediation.actions.registry import default_registry
from remediation.ledger import IllegalTransition, Ledger, LedgerConflict, Record
from remediation.outcome import Outcome
from remediation.reporting import Report

log = logging.getLogger(__name__)

# Location values are compared case-insensitively; each action declares the ones that confirm it
# (``ActionDef.confirmed_in``, remediation/actions/email.py, with the documented spellings).
EXPECTED_LOCATION: dict[str, frozenset[str]] = {
    d.name: d.confirmed_in for d in default_registry() if d.confirmed_in
}
# Every location value documented or seen from the service (lower case). Anything else is a value this
# code does not understand: it is logged once and the request is settled with that reason, instead of
# being waited on, silently, until the grace period ends.
KNOWN_LOCATIONS = frozenset({
    "inbox/folder", "inbox", "junk folder", "junk", "deleted items", "quarantine",
    "on-premises/external", "failed", "dropped",
})
# Ids per query: keeps the query text small enough for the hunting API (about 40 bytes per id).
MAX_IDS_PER_QUERY = 500
# How far back advanced hunting (and so verification) can see.
HUNTING_RETENTION = timedelta(days=30)
# Margin in front of the mail's time: clocks and the evidence's own Timestamp are not exact.
SPAN_MARGIN = timedelta(days=1)

# Where a resubmission can still act: the cloud mailbox folders. Not on-premises/external, failed or
# dropped ("Not actionable"), nor quarantine (no Junk move for quarantined items): Microsoft's list of
# actionable locations, https://learn.microsoft.com/defender-office-365/remediate-malicious-email-delivered-office-365
RESUBMITTABLE_FROM = frozenset({"inbox/folder", "inbox", "junk folder", "junk", "deleted items"})

_unseen: set[str] = set()


def verification_query(network_message_ids: Iterable[str]) -> str:
    """Latest location of each (message, recipient) among ``network_message_ids``."""
    ids = sorted({i for i in network_message_ids if i})
    if not ids:
        raise ValueError("no NetworkMessageIds to verify")
    literals = ", ".join(kql_string(i) for i in ids)
    return (
        "EmailEvents\n"
        f"| where NetworkMessageId in ({literals})\n"
        "| summarize arg_max(Timestamp, LatestDeliveryLocation) by NetworkMessageId, RecipientEmailAddress\n"
        "| project NetworkMessageId, RecipientEmailAddress, LatestDeliveryLocation"
    )


def _moment(value: Any) -> datetime | None:
    if not isinstance(value, str) or not value.strip():
        return None
    try:
        moment = datetime.fromisoformat(value.strip().replace("Z", "+00:00"))
    except ValueError:
        return None
    return moment if moment.tzinfo else None


def mail_time(request: Mapping[str, Any] | None, fallback: datetime) -> datetime:
    """When the mail arrived, as well as the request tells: its evidence ``Timestamp`` (the EmailEvents
    row's time), else its ``detected_at``, else ``fallback``. The request is a queue message (hostile
    input): a value that is not an aware ISO 8601 datetime is ignored, and no time later than
    ``fallback`` is believed."""
    evidence = request.get("evidence") if isinstance(request, Mapping) else None
    for value in ((evidence or {}).get("Timestamp") if isinstance(evidence, Mapping) else None,
                  request.get("detected_at") if isinstance(request, Mapping) else None):
        moment = _moment(value)
        if moment is not None:
            return min(moment, fallback)
    return fallback


def verification_timespan(mail_times: Iterable[datetime], now: datetime) -> timedelta:
    """From a day before the oldest mail to now, at most the 30 days hunting keeps, whole seconds (an
    ISO 8601 duration with a fraction is refused by the Defender backend)."""
    oldest = min(mail_times)
    span = min(max(now - oldest, timedelta(0)) + SPAN_MARGIN, HUNTING_RETENTION)
    return timedelta(seconds=-(-span // timedelta(seconds=1)))


def locations(rows: Iterable[Mapping[str, Any]]) -> dict[tuple[str, str], str]:
    """(NetworkMessageId, recipient), both lower-case -> LatestDeliveryLocation."""
    out: dict[tuple[str, str], str] = {}
    for row in rows:
        key = (str(row.get("NetworkMessageId", "")).lower(),
               str(row.get("RecipientEmailAddress", "")).lower())
        out[key] = str(row.get("LatestDeliveryLocation") or "")
    return out


def _unknown(location: str) -> bool:
    """``location`` is not a value this code knows; the first time a process sees a value, it says so."""
    key = location.strip().lower()
    if key in KNOWN_LOCATIONS:
        return False
    if key not in _unseen:
        _unseen.add(key)
        log.warning("EmailEvents reports delivery location %r, which verification does not know (known: %s); "
                    "requests in that location are settled as not applied for a person to check",
                    location, ", ".join(sorted(KNOWN_LOCATIONS)))
    return True


def classify(action: str, location: str | None, *, submitted_at: datetime, now: datetime,
             grace: timedelta, mailed_at: datetime | None = None) -> tuple[str | None, str]:
    """(new state or None to keep waiting, detail) for one submitted request.

    A location that matches the action confirms it. A known location that does not match is only
    ``not_applied`` once ``grace`` has passed since submission: Defender applies remediations minutes
    later, and EmailEvents shows the change later still. A location this code does not know is
    ``not_applied`` at once, with the value in the detail (logged once per value): waiting cannot make
    it understood. So is a missing row for mail older than hunting's 30 days (``mailed_at``).
    """
    expected = EXPECTED_LOCATION.get(action, frozenset())
    seen = (location or "").strip()
    if seen.lower() in expected:
        return "confirmed", f"EmailEvents shows the message in {seen}"
    if seen and _unknown(seen):
        return "not_applied", (f"EmailEvents shows the message in {seen!r}, a location this app does not "
                               f"know, so it cannot tell whether {action} took effect: check the message "
                               "in Defender's Explorer")
    late = now - submitted_at >= grace
    if not seen:
        if mailed_at is not None and now - mailed_at > HUNTING_RETENTION:
            return "not_applied", ("the message is older than the 30 days advanced hunting keeps, so "
                                   "EmailEvents cannot confirm it: check the message in Defender's Explorer")
        if late:
            return "not_applied", f"no EmailEvents row for the message {grace} after submission"
        return None, "not yet visible in EmailEvents"
    if late:
        return "not_applied", f"EmailEvents still shows the message in {seen} {grace} after submission"
    return None, f"still in {seen}; waiting for Defender to apply the remediation"


# --- the ledger side: confirm what the worker submitted ----------------------------------------------------


# Hands (row, why) pairs to the worker's path for one more submission (remediation/resubmit.py).
Resubmit = Callable[[list[tuple[Record, str]]], Awaitable[list[Outcome]]]


async def verify_submitted(ledger: Ledger, backend: Any, *, grace: timedelta, report: Any,
                           short_grace: timedelta | None = None,
                           resubmit: Resubmit | None = None) -> list[Outcome]:
    """Confirm (or settle as not applied) every ``submitted`` email request with a NetworkMessageId, one
    hunting query per ``MAX_IDS_PER_QUERY``; ``report(Report)`` is told of each one not applied.

    With ``resubmit``: an unconfirmed submission (``unconfirmed_submission``: its call got an ambiguous
    answer) that EmailEvents still shows in another mailbox folder ``short_grace`` after submission is
    resubmitted once through it (``resubmission_due``); and a resubmission that did not go through (still
    ``received``) is handed to it again, until ``grace`` has passed since it was reopened."""
    email = set(EXPECTED_LOCATION)
    submitted = [r for r in ledger.list(state="submitted")
                 if r.action in email and r.target.get("network_message_id")]
    outcomes: list[Outcome] = []
    if resubmit is not None:
        outcomes += await _resume(ledger, grace=grace, report=report, resubmit=resubmit)
    for start in range(0, len(submitted), MAX_IDS_PER_QUERY):
        chunk = submitted[start:start + MAX_IDS_PER_QUERY]
        outcomes += await _verify_chunk(ledger, backend, chunk, grace=grace, report=report,
                                        short_grace=short_grace, resubmit=resubmit)
    return outcomes


def resubmission_due(rec: Record, location: str | None, *, now: datetime, short_grace: timedelta) -> bool:
    """``rec`` is an unconfirmed submission never resubmitted, EmailEvents shows its message in a mailbox
    folder that is not the expected one (``RESUBMITTABLE_FROM``), and ``short_grace`` has passed since it
    was submitted. A missing row proves nothing (the message may be anywhere): it waits for the normal
    grace, as does a message a resubmission could not act on (on-premises, quarantine...)."""
    if rec.extra.get("unconfirmed_submission") is not True or rec.extra.get("resubmitted_at"):
        return False
    seen = (location or "").strip().lower()
    if seen not in RESUBMITTABLE_FROM or seen in EXPECTED_LOCATION.get(rec.action, frozenset()):
        return False
    return now - _parse(rec.state_times.get("submitted") or rec.created_at) >= short_grace


async def _resume(ledger: Ledger, *, grace: timedelta, report: Any, resubmit: Resubmit) -> list[Outcome]:
    """Resubmissions left ``received`` (transient, or the process died): run again, or ``failed`` once
    ``grace`` has passed since the row was reopened (no queue message will ever come for them)."""
    now = ledger.clock()
    again: list[tuple[Record, str]] = []
    out: list[Outcome] = []
    for rec in ledger.list(state="received"):
        reopened = rec.extra.get("resubmitted_at")
        if not reopened or rec.claimed(now):
            continue
        if now - _parse(reopened) < grace:
            again.append((rec, f"the resubmission did not go through ({rec.error or 'no result'})"))
            continue
        detail = f"resubmitted at {reopened} but no submission went through within {grace}"
        try:
            rec = ledger.transition(rec, "failed", detail=detail)
        except (LedgerConflict, IllegalTransition):
            continue
        report(Report("failed", f"{rec.action} was not resubmitted: {detail}", [rec.outcome()],
                      [rec.request or {}]))
        out.append(rec.outcome())
    return out + (await resubmit(again) if again else [])


async def _verify_chunk(ledger: Ledger, backend: Any, chunk: list[Record], *, grace: timedelta,
                        report: Any, short_grace: timedelta | None = None,
                        resubmit: Resubmit | None = None) -> list[Outcome]:
    now = ledger.clock()
    # The EmailEvents row carries the mail's own time, which may be days before the submission (an undo, a
    # late approval): the timespan reaches back to the oldest mail (module doc).
    mailed = {r.request_id: mail_time(r.request, _parse(r.state_times.get("submitted") or r.created_at))
              for r in chunk}
    span = verification_timespan(mailed.values(), now)
    result = await backend.run(verification_query(r.target["network_message_id"] for r in chunk),
                               timespan=span)
    where = locations(result.rows)
    out: list[Outcome] = []
    again: list[tuple[Record, str]] = []
    for rec in chunk:
        key = (rec.target["network_message_id"].lower(), str(rec.target.get("recipient", "")).lower())
        location = where.get(key)
        if location is None and result.partial:
            out.append(replace(rec.outcome(), detail="partial hunting result; not judged"))
            continue
        submitted_at = _parse(rec.state_times.get("submitted") or rec.created_at)
        if resubmit is not None and short_grace is not None and resubmission_due(
                rec, location, now=now, short_grace=short_grace):
            again.append((rec, f"the first call got an ambiguous answer and EmailEvents still shows the "
                               f"message in {location} {now - submitted_at} after submission"))
            continue
        state, detail = classify(rec.action, location, submitted_at=submitted_at, now=now, grace=grace,
                                 mailed_at=mailed[rec.request_id])
        if state is None:
            out.append(replace(rec.outcome(), detail=detail))
            continue
        try:
            rec = ledger.transition(rec, state, detail=detail)
        except (LedgerConflict, IllegalTransition):
            rec = ledger.read(rec.rule, rec.request_id) or rec
        outcome = rec.outcome()
        if outcome.state == "not_applied":
            report(Report("failed", f"{rec.action} was submitted but not applied: {detail}", [outcome],
                          [rec.request or {}]))
        out.append(outcome)
    if again and resubmit is not None:
        out += await resubmit(again)
    return out


def _parse(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00"))
