"""Row builders: one sample event -> rows shaped exactly like the hunting tables.

Column names and order come from ``detections/schemas/<Table>.json`` (the same files the local
engine types its tables with), so a generated file can never carry a column the schema does not
know; columns an event does not set are written as null, as the service returns them.
"""

from __future__ import annotations

import hashlib
import json
import random
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from detections.catalog import SCHEMAS_DIR
from devtools.sample.model import DOMAIN, new_guid

TABLES = ("EmailEvents", "EmailUrlInfo", "EmailAttachmentInfo", "CloudAppEvents", "IdentityLogonEvents")


def load_columns(schemas_dir: Path = SCHEMAS_DIR) -> dict[str, list[str]]:
    out = {}
    for table in TABLES:
        data = json.loads((schemas_dir / f"{table}.json").read_text(encoding="utf-8"))
        out[table] = [p["Name"] for p in data["Properties"]]
    return out


def iso(moment: datetime) -> str:
    moment = moment.astimezone(UTC)
    text = moment.strftime("%Y-%m-%dT%H:%M:%S")
    return text + (f".{moment.microsecond // 1000:03d}" if moment.microsecond else "") + "Z"


def domain_of(address: str) -> str:
    return address.rsplit("@", 1)[-1].lower()


def is_internal(address: str) -> bool:
    return domain_of(address) == DOMAIN


@dataclass(slots=True)
class Recipient:
    address: str
    object_id: str | None = None
    # Where the copy is now (LatestDeliveryLocation); the delivery-time location is DeliveryLocation.
    location: str | None = None


@dataclass(slots=True)
class Mail:
    """One message as sent: one EmailEvents row per recipient, all sharing the NetworkMessageId."""

    ts: datetime
    mail_from: str  # P2, envelope sender
    header_from: str  # P1, header From
    sender_object_id: str | None
    recipients: list[Recipient]
    subject: str
    sender_display: str = ""
    connector: str | None = None
    urls: list[str] = field(default_factory=list)
    attachments: list[tuple[str, str, int]] = field(default_factory=list)  # (name, type, size)
    sender_ip: str = "203.0.113.10"
    delivery_location: str = "Inbox/folder"
    threat: str | None = None
    network_message_id: str = ""
    internet_message_id: str = ""
    cluster: int = 0
    language: str = "en"
    direction: str | None = None  # EmailDirection when not implied by the addresses (relays)


def direction(sender: str, recipient: str) -> str:
    if is_internal(sender):
        return "Intra-org" if is_internal(recipient) else "Outbound"
    return "Inbound"


def finalize(mail: Mail, rng: random.Random) -> Mail:
    """Give the mail its ids (drawn from ``rng`` so they are reproducible)."""
    if not mail.network_message_id:
        mail.network_message_id = new_guid(rng)
    if not mail.internet_message_id:
        mail.internet_message_id = f"<{rng.getrandbits(64):016x}@{domain_of(mail.mail_from)}>"
    if not mail.cluster:
        # EmailClusterId groups messages by content. Different people who happen to write the same
        # subject ("Refund request") send different text, so the sample keys it by sender and subject: a
        # mass mailing from one sender shares one id, strangers' look-alike subjects do not.
        content = f"{mail.header_from.lower()}\n{mail.subject}"
        mail.cluster = int.from_bytes(hashlib.sha256(content.encode()).digest()[:6], "big")
    return mail


def email_rows(mail: Mail) -> list[dict[str, Any]]:
    rows = []
    auth = (
        "SPF=pass;DKIM=pass;DMARC=pass;CompAuth=pass"
        if not mail.connector
        else "SPF=none;DKIM=none;DMARC=none;CompAuth=none"
    )
    stamp = iso(mail.ts)
    for i, rcpt in enumerate(mail.recipients):
        d = mail.direction or direction(mail.mail_from, rcpt.address)
        delivered = mail.delivery_location if d != "Outbound" else "On-premises/external"
        latest = rcpt.location or delivered
        rows.append(
            {
                "Timestamp": stamp,
                "NetworkMessageId": mail.network_message_id,
                "InternetMessageId": mail.internet_message_id,
                "SenderMailFromAddress": mail.mail_from,
                "SenderFromAddress": mail.header_from,
                "SenderDisplayName": mail.sender_display or mail.header_from.split("@")[0],
                "SenderObjectId": mail.sender_object_id,
                "SenderMailFromDomain": domain_of(mail.mail_from),
                "SenderFromDomain": domain_of(mail.header_from),
                "SenderIPv4": mail.sender_ip,
                "RecipientEmailAddress": rcpt.address,
                "RecipientObjectId": rcpt.object_id,
                "Subject": mail.subject,
                "EmailClusterId": mail.cluster,
                "EmailDirection": d,
                "DeliveryAction": "Junked" if delivered == "Junk folder" else "Delivered",
                "DeliveryLocation": delivered,
                "ThreatTypes": mail.threat,
                "DetectionMethods": None if not mail.threat else '{"Spam":["Mixed analysis detection"]}',
                "ConfidenceLevel": None if not mail.threat else '{"Phish":null,"Spam":"Normal"}',
                "BulkComplaintLevel": 6 if mail.connector else 0,
                "AuthenticationDetails": auth,
                "AttachmentCount": len(mail.attachments),
                "UrlCount": len(mail.urls),
                "EmailLanguage": mail.language,
                "Connectors": mail.connector,
                "OrgLevelAction": None,
                "ReportId": f"{mail.network_message_id}-{i}",
                "AdditionalFields": None,
                "LatestDeliveryLocation": latest,
                "LatestDeliveryAction": "Moved to junk folder"
                if latest == "Junk folder" and delivered != latest
                else ("Delivered" if latest != "Junk folder" else "Junked"),
                "RecipientDomain": domain_of(rcpt.address),
                "EmailSize": 4200 + 900 * len(mail.urls) + sum(a[2] for a in mail.attachments),
                "IsFirstContact": None,
            }
        )
    return rows


def url_rows(mail: Mail) -> list[dict[str, Any]]:
    return [
        {
            "Timestamp": iso(mail.ts),
            "NetworkMessageId": mail.network_message_id,
            "Url": url,
            "UrlDomain": (urlsplit(url).hostname or "").lower(),
            "UrlLocation": "Body",
            "ReportId": f"{mail.network_message_id}-u{i}",
        }
        for i, url in enumerate(mail.urls)
    ]


def attachment_rows(mail: Mail) -> list[dict[str, Any]]:
    rows = []
    for rcpt in mail.recipients:
        for i, (name, ftype, size) in enumerate(mail.attachments):
            digest = hashlib.sha256(f"{mail.network_message_id}/{name}".encode()).hexdigest()
            rows.append(
                {
                    "Timestamp": iso(mail.ts),
                    "NetworkMessageId": mail.network_message_id,
                    "SenderFromAddress": mail.header_from,
                    "SenderDisplayName": mail.sender_display,
                    "SenderObjectId": mail.sender_object_id,
                    "RecipientEmailAddress": rcpt.address,
                    "RecipientObjectId": rcpt.object_id,
                    "FileName": name,
                    "FileType": ftype,
                    "SHA256": digest,
                    "FileSize": size,
                    "ReportId": f"{mail.network_message_id}-a{i}",
                }
            )
    return rows


def shape(
    row: dict[str, Any], columns: list[str], table: str, known: frozenset[str] | None = None
) -> dict[str, Any]:
    """The row in schema order with every column present; a column the schema lacks is a bug here."""
    if not row.keys() <= (known if known is not None else frozenset(columns)):
        unknown = sorted(set(row) - set(columns))
        raise ValueError(f"{table}: columns not in detections/schemas/{table}.json: {unknown}")
    get = row.get
    return {c: get(c) for c in columns}
