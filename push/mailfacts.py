"""A Graph message, as the push worker reads it, -> ``detections.streaming.MailFact`` (issue 15).

The worker reads one message with ``$select`` = ``MESSAGE_SELECT`` (``internetMessageHeaders`` is
"returned only on applying a $select query option", https://learn.microsoft.com/graph/api/resources/message)
and hands the JSON object, as Graph sent it, to :func:`mail_fact`. Everything in it is mail content an
outsider wrote, so every value is checked, bounded, and never trusted to be of the documented type.

Where each field comes from:

* ``network_message_id``: the ``X-MS-Exchange-Organization-Network-Message-Id`` header, the GUID Exchange
  Online stamps on a message in transport; Microsoft documents it as the place to find a message's
  Network Message ID ("a GUID value that's available in the X-MS-Exchange-Organization-Network-Message-Id
  header", https://learn.microsoft.com/defender-office-365/submissions-admin and
  https://learn.microsoft.com/defender-office-365/campaigns), and it is EmailEvents.NetworkMessageId, which
  the request id is made of. A sender cannot plant it: Exchange's header firewall removes
  ``X-MS-Exchange-Organization-*`` headers from mail that arrives from outside the organisation
  (https://learn.microsoft.com/exchange/mail-flow/mail-routing/header-firewall). An Inbox message without
  it gives no fact (:class:`MissingNetworkMessageId`): no request could be made of it. A Sent Items copy
  never went through transport on the way into the folder and may carry no transport headers; it still
  gives a fact (the reply-chain rule needs to know the mailbox replied) with an empty id.
* ``sender_mail_from``: the ``Return-Path`` header, which the delivering server writes from the SMTP
  MAIL FROM (RFC 5321 4.4), i.e. EmailEvents.SenderMailFromAddress. ``<>`` (a bounce) is empty. For a
  Sent Items copy, the mailbox's own address.
* ``urls``: ``href`` of ``<a>``/``<area>`` in an HTML body (stdlib ``html.parser``, which never raises on
  malformed markup) and bare ``http(s)://`` URLs in the text; Safe Links wrappers
  (``*.safelinks.protection.outlook.com/?url=...``, https://learn.microsoft.com/defender-office-365/safe-links-about)
  are unwrapped to the original URL, which is what EmailUrlInfo.Url holds. Bounded: ``MAX_BODY_CHARS`` of
  body, ``MAX_URLS`` URLs, each cut to ``MAX_URL_LENGTH``.
* ``in_inbox``: ``parentFolderId`` equals the mailbox's Inbox folder id (folder ids are opaque: the
  worker reads the Inbox's id once per mailbox).
* ``direction``: from the subscription's folder: inbox -> Inbound, sentitems -> Outbound.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from datetime import UTC, datetime
from email.utils import parseaddr
from html.parser import HTMLParser
from typing import Any
from urllib.parse import parse_qs, urlsplit

from detections.streaming import MailFact
from push.contract import Subscription

MESSAGE_SELECT = ("id", "internetMessageId", "subject", "from", "sender", "toRecipients", "ccRecipients",
                  "receivedDateTime", "sentDateTime", "parentFolderId", "internetMessageHeaders", "body")
NETWORK_MESSAGE_ID_HEADER = "x-ms-exchange-organization-network-message-id"
RETURN_PATH_HEADER = "return-path"
DIRECTIONS = {"inbox": "Inbound", "sentitems": "Outbound"}

MAX_BODY_CHARS = 512 * 1024      # of body text parsed for links (a hostile body may be megabytes)
MAX_URLS = 100                   # URLs kept per message (EmailUrlInfo rows of one message, in practice)
MAX_URL_LENGTH = 2048            # characters kept of one URL (the host, which the rules read, comes first)
MAX_HEADERS = 1000               # header entries looked at
MAX_RECIPIENTS = 500             # Exchange Online's limit on to+cc+bcc of one message (message resource doc)
MAX_SUBJECT = 2048
ADDRESS_MAX = 254                # RFC 5321 path limit (core/request.py)
NETWORK_MESSAGE_ID_MAX = 128
INTERNET_MESSAGE_ID_MAX = 998
_SAFELINKS_NEST = 3              # wrappers unwrapped at most (a wrapped wrapper happens on forwards)

_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029]")
_CONTROL_OR_SPACE = re.compile(r"[\x00-\x20\x7f-\x9f\u2028\u2029]")
_OBJECT_ID = re.compile(r"^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$")
_BARE_URL = re.compile(r"https?://[^\s<>\"'`\x00-\x1f]+", re.IGNORECASE)
_TRAILING = ".,;:!?)]}'\""


class MailFactError(ValueError):
    """The message cannot become a fact; the message names the field."""


class MissingNetworkMessageId(MailFactError):
    """An Inbox message without a usable X-MS-Exchange-Organization-Network-Message-Id header."""


def mail_fact(message: Any, *, subscription: Subscription, inbox_folder_id: str) -> MailFact:
    """The fact of ``message`` (Graph JSON) in ``subscription``'s mailbox; raises MailFactError."""
    if not isinstance(message, Mapping):
        raise MailFactError("(message): not a JSON object")
    direction = DIRECTIONS.get(subscription.folder)
    if direction is None:
        raise MailFactError(f"subscription folder: {subscription.folder!r} is not inbox or sentitems")
    mailbox = subscription.mailbox.strip().lower()
    headers = _headers(message.get("internetMessageHeaders"))
    nmid = _network_message_id(headers.get(NETWORK_MESSAGE_ID_HEADER, []))
    inbound = direction == "Inbound"
    if inbound and not nmid:
        raise MissingNetworkMessageId(f"internetMessageHeaders: no valid {NETWORK_MESSAGE_ID_HEADER} header")
    sender_from = _address_of(message.get("from"))
    if inbound:
        mail_from = _return_path(headers.get(RETURN_PATH_HEADER, []))
        recipients: tuple[str, ...] = (mailbox,)
        moment = _when(message, "receivedDateTime", "sentDateTime")
    else:
        # The mailbox sent it: the envelope sender is the mailbox (or who it sent as).
        mail_from = _return_path(headers.get(RETURN_PATH_HEADER, [])) or sender_from or mailbox
        recipients = _recipients(message)
        moment = _when(message, "sentDateTime", "receivedDateTime")
    parent = message.get("parentFolderId")
    return MailFact(
        timestamp=moment, direction=direction, mailbox=mailbox, network_message_id=nmid,
        internet_message_id=_bounded_text(message.get("internetMessageId"), INTERNET_MESSAGE_ID_MAX),
        recipient_object_id=subscription.user_id if _OBJECT_ID.match(subscription.user_id or "") else "",
        sender_mail_from=mail_from, sender_from=sender_from, recipients=recipients,
        subject=_subject(message.get("subject")), urls=tuple(links(message.get("body"))),
        in_inbox=inbound and isinstance(parent, str) and bool(inbox_folder_id) and parent == inbox_folder_id)


# --- headers ----------------------------------------------------------------------------------------

def _headers(raw: Any) -> dict[str, list[str]]:
    """``[{name, value}]`` -> lower-case name -> values in the order Graph listed them (top first)."""
    out: dict[str, list[str]] = {}
    if not isinstance(raw, list):
        return out
    for item in raw[:MAX_HEADERS]:
        if not isinstance(item, Mapping):
            continue
        name, value = item.get("name"), item.get("value")
        if isinstance(name, str) and isinstance(value, str):
            out.setdefault(name.strip().lower(), []).append(value)
    return out


def _network_message_id(values: list[str]) -> str:
    """The first value that is a plausible id (Exchange writes a GUID; bounded as core/request.py does)."""
    for value in values:
        value = value.strip()
        if 0 < len(value) <= NETWORK_MESSAGE_ID_MAX and not _CONTROL_OR_SPACE.search(value):
            return value.lower() if _OBJECT_ID.match(value) else value
    return ""


def _return_path(values: list[str]) -> str:
    """The envelope sender from the topmost Return-Path (the final delivery's, RFC 5321 4.4); ``<>`` -> ""."""
    if not values:
        return ""
    value = values[0].strip()
    if value in ("<>", ""):
        return ""
    _, address = parseaddr(value)
    return _valid_address(address)


def _valid_address(address: Any) -> str:
    if not isinstance(address, str):
        return ""
    address = address.strip()
    if not 0 < len(address) <= ADDRESS_MAX or _CONTROL_OR_SPACE.search(address) or address.count("@") != 1:
        return ""
    local, domain = address.split("@")
    return address if local and domain else ""


def _address_of(recipient: Any) -> str:
    """``{"emailAddress": {"address": ..}}`` -> the address, or ""."""
    if not isinstance(recipient, Mapping):
        return ""
    email = recipient.get("emailAddress")
    return _valid_address(email.get("address")) if isinstance(email, Mapping) else ""


def _recipients(message: Mapping[str, Any]) -> tuple[str, ...]:
    seen: dict[str, None] = {}
    for key in ("toRecipients", "ccRecipients"):
        items = message.get(key)
        for item in items[:MAX_RECIPIENTS] if isinstance(items, list) else []:
            address = _address_of(item).lower()
            if address:
                seen.setdefault(address)
    return tuple(seen)[:MAX_RECIPIENTS]


def _when(message: Mapping[str, Any], first: str, fallback: str) -> datetime:
    for key in (first, fallback):
        value = message.get(key)
        if isinstance(value, str) and value:
            try:
                moment = datetime.fromisoformat(value.strip().replace("Z", "+00:00"))
            except ValueError:
                raise MailFactError(f"{key}: not an ISO 8601 date and time") from None
            return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)
    raise MailFactError(f"{first}: missing")


def _bounded_text(value: Any, limit: int) -> str:
    if not isinstance(value, str):
        return ""
    value = value.strip()
    return value if len(value) <= limit and not _CONTROL.search(value) else ""


def _subject(value: Any) -> str:
    if not isinstance(value, str):
        return ""
    return _CONTROL.sub(" ", value)[:MAX_SUBJECT]


# --- links -------------------------------------------------------------------------------------------

class _LinkParser(HTMLParser):
    """hrefs of <a>/<area> and the bare URLs in the text, in document order."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.found: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag in ("a", "area"):
            for name, value in attrs:
                if name == "href" and value:
                    self.found.append(value)

    def handle_data(self, data: str) -> None:
        self.found.extend(_BARE_URL.findall(data))


def links(body: Any) -> list[str]:
    """The http(s) URLs of a Graph ``body`` (``{"contentType": "html"|"text", "content": ...}``)."""
    if not isinstance(body, Mapping) or not isinstance(body.get("content"), str):
        return []
    content = body["content"][:MAX_BODY_CHARS]
    if str(body.get("contentType", "")).lower() == "html":
        parser = _LinkParser()
        try:
            parser.feed(content)
            parser.close()
        except Exception:   # html.parser is lenient, but a hostile body must never cost the message
            pass
        raw: Iterable[str] = parser.found
    else:
        raw = _BARE_URL.findall(content)
    out: dict[str, None] = {}
    for candidate in raw:
        url = _clean_url(candidate)
        if url:
            out.setdefault(url)
            if len(out) >= MAX_URLS:
                break
    return list(out)


def _clean_url(candidate: str) -> str:
    url = _CONTROL_OR_SPACE.sub("", candidate.strip()).rstrip(_TRAILING)
    for _ in range(_SAFELINKS_NEST):
        original = _unwrap_safelinks(url)
        if original is None:
            break
        url = original
    url = url[:MAX_URL_LENGTH]
    try:
        parts = urlsplit(url)
    except ValueError:
        return ""
    if parts.scheme.lower() not in ("http", "https") or not parts.hostname:
        return ""
    return url


def _unwrap_safelinks(url: str) -> str | None:
    try:
        parts = urlsplit(url)
        host = (parts.hostname or "").lower()
    except ValueError:
        return None
    if not host.endswith(".safelinks.protection.outlook.com"):
        return None
    original = parse_qs(parts.query).get("url")
    return _CONTROL_OR_SPACE.sub("", original[0]) if original else None
