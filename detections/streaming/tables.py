"""EmailEvents / EmailUrlInfo rows (as a rule's .tests.yaml gives them) -> MailFacts in time order.

What the push path would have seen of the same mail: one fact per copy in a protected mailbox
(an EmailEvents row whose recipient is protected and which the mailbox did not send), and one outbound
fact per message a protected mailbox sent (its EmailEvents rows, one per recipient, folded together
the way Graph shows one sent item with all its recipients). Mail of other mailboxes is not seen: the
push path only subscribes to the protected ones.

``in_inbox`` is LatestDeliveryLocation =~ "Inbox/folder", as the MailFact contract says (the location
when observed).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from datetime import UTC, datetime
from typing import Any

from detections.streaming import MailFact
from detections.streaming.mailmatch import trim
from detections.timestamps import parse_datetime


def moment(value: Any, now: datetime) -> datetime:
    """A row's Timestamp as the local engine reads it (ISO 8601, naive means UTC, or ``now-10m`` etc.),
    in UTC."""
    return parse_datetime(value, now).astimezone(UTC)


def _text(row: Mapping[str, Any], column: str) -> str:
    value = row.get(column)
    return "" if value is None else str(value)


def _urls(url_rows: Iterable[Mapping[str, Any]]) -> dict[str, tuple[str, ...]]:
    out: dict[str, list[str]] = {}
    for row in url_rows:
        url = _text(row, "Url") or (f"https://{_text(row, 'UrlDomain')}/" if _text(row, "UrlDomain") else "")
        if url:
            out.setdefault(_text(row, "NetworkMessageId"), []).append(url)
    return {k: tuple(dict.fromkeys(v)) for k, v in out.items()}


def facts_from_tables(tables: Mapping[str, Iterable[Mapping[str, Any]]], now: datetime,
                      protected: Iterable[str]) -> list[MailFact]:
    """The facts of ``tables`` for the ``protected`` mailboxes, oldest first (ties keep row order)."""
    guarded = {trim(p).lower() for p in protected}
    urls = _urls(tables.get("EmailUrlInfo") or [])
    facts: list[tuple[datetime, int, MailFact]] = []
    sent: dict[tuple[str, str], tuple[int, dict[str, Any], list[str]]] = {}
    for n, row in enumerate(tables.get("EmailEvents") or []):
        when = moment(row.get("Timestamp"), now)
        direction = _text(row, "EmailDirection")
        nmid = _text(row, "NetworkMessageId")
        recipient = _text(row, "RecipientEmailAddress")
        common = dict(timestamp=when, direction=direction, network_message_id=nmid,
                      internet_message_id=_text(row, "InternetMessageId"),
                      sender_mail_from=_text(row, "SenderMailFromAddress"),
                      sender_from=_text(row, "SenderFromAddress"), subject=_text(row, "Subject"),
                      urls=urls.get(nmid, ()), report_id=_text(row, "ReportId"))
        if direction.lower() in ("outbound", "intra-org"):
            # Mailbox = SenderFromAddress when protected, else SenderMailFromAddress (the rule's choice)
            sender = next((trim(a).lower() for a in (common["sender_from"], common["sender_mail_from"])
                           if trim(a).lower() in guarded), None)
            if sender is not None:
                key = (nmid, sender)
                if key not in sent:
                    sent[key] = (n, {**common, "mailbox": sender, "in_inbox": False}, [])
                sent[key][2].append(recipient)
        if trim(recipient).lower() in guarded and direction.lower() != "outbound":
            cluster = row.get("EmailClusterId")
            facts.append((when, n, MailFact(
                **common, mailbox=trim(recipient).lower(), recipients=(recipient,),
                recipient_object_id=_text(row, "RecipientObjectId"),
                in_inbox=_text(row, "LatestDeliveryLocation").lower() == "inbox/folder",
                cluster_id="" if cluster in (None, "", 0) else str(cluster))))
    for n, body, recipients in sent.values():
        facts.append((body["timestamp"], n, MailFact(**body, recipients=tuple(recipients))))
    facts.sort(key=lambda f: (f[0], f[1]))
    return [f for _, _, f in facts]
