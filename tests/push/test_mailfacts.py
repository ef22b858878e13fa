"""push/mailfacts.py: a Graph message (JSON as Graph answers GET /users/{id}/messages/{id}?$select=...)
-> MailFact. Messages are built here in the documented shape
(https://learn.microsoft.com/graph/api/resources/message: internetMessageHeaders [{name, value}],
body {contentType, content}, recipients {emailAddress: {name, address}})."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest

from push.contract import Subscription
from push.mailfacts import (
    MAX_URL_LENGTH,
    MAX_URLS,
    MailFactError,
    MissingNetworkMessageId,
    links,
    mail_fact,
)

USER = "6f1e2d7c-9b10-4d0e-9a43-5b1f3f8e6c7a"
INBOX_ID = "AQMkInboxFolderId"
NMID = "D051C5E4-93C2-4F22-1379-08DC51643222"


def sub(folder: str = "inbox") -> Subscription:
    return Subscription(subscription_id="s-1", mailbox="Support@Contoso.com", user_id=USER, folder=folder,
                        expires_at="2026-11-27T12:00:00Z")


def addr(address: str, name: str = "") -> dict[str, Any]:
    return {"emailAddress": {"name": name or address, "address": address}}


def message(**over: Any) -> dict[str, Any]:
    msg: dict[str, Any] = {
        "id": "AAMkAGI2-1", "internetMessageId": "<CAF=abc@mail.gmail.com>", "subject": "Question",
        "from": addr("Eve.Smith@gmail.com"), "sender": addr("Eve.Smith@gmail.com"),
        "toRecipients": [addr("support@contoso.com")], "ccRecipients": [],
        "receivedDateTime": "2026-11-20T11:58:03Z", "sentDateTime": "2026-11-20T11:58:01Z",
        "parentFolderId": INBOX_ID,
        "internetMessageHeaders": [
            {"name": "Received", "value": "from mail-pg1.google.com by x.outlook.com"},
            {"name": "Return-Path", "value": "<eve.smith+x@gmail.com>"},
            {"name": "X-MS-Exchange-Organization-Network-Message-Id", "value": NMID},
        ],
        "body": {"contentType": "html", "content": "<p>Hello</p>"},
    }
    msg.update(over)
    return msg


def test_inbound_fact_from_headers_and_folder() -> None:
    fact = mail_fact(message(), subscription=sub(), inbox_folder_id=INBOX_ID)
    assert fact.direction == "Inbound"
    assert fact.mailbox == "support@contoso.com"
    assert fact.network_message_id == NMID.lower()
    assert fact.sender_mail_from == "eve.smith+x@gmail.com"      # envelope (Return-Path), not From
    assert fact.sender_from == "Eve.Smith@gmail.com"
    assert fact.recipients == ("support@contoso.com",)
    assert fact.recipient_object_id == USER
    assert fact.internet_message_id == "<CAF=abc@mail.gmail.com>"
    assert fact.timestamp == datetime(2026, 11, 20, 11, 58, 3, tzinfo=UTC)
    assert fact.in_inbox is True


def test_a_message_no_longer_in_the_inbox_is_not_in_inbox() -> None:
    fact = mail_fact(message(parentFolderId="AQMkJunkFolderId"), subscription=sub(), inbox_folder_id=INBOX_ID)
    assert fact.in_inbox is False


def test_header_names_are_case_insensitive_and_the_topmost_return_path_wins() -> None:
    headers = [{"name": "return-path", "value": "<final@gmail.com>"},
               {"name": "Return-Path", "value": "<earlier-hop@example.org>"},
               {"name": "x-ms-exchange-organization-network-message-id", "value": NMID}]
    fact = mail_fact(message(internetMessageHeaders=headers), subscription=sub(), inbox_folder_id=INBOX_ID)
    assert fact.sender_mail_from == "final@gmail.com"


@pytest.mark.parametrize("value", ["<>", "", "   ", "<not an address>", "<a@b@c>",
                                   "<" + "a" * 300 + "@x.com>"])
def test_bounce_or_unusable_return_path_is_an_empty_envelope_sender(value: str) -> None:
    headers = [{"name": "Return-Path", "value": value},
               {"name": "X-MS-Exchange-Organization-Network-Message-Id", "value": NMID}]
    fact = mail_fact(message(internetMessageHeaders=headers), subscription=sub(), inbox_folder_id=INBOX_ID)
    assert fact.sender_mail_from == ""


@pytest.mark.parametrize("headers", [
    None, [], [{"name": "Return-Path", "value": "<a@gmail.com>"}],
    [{"name": "X-MS-Exchange-Organization-Network-Message-Id", "value": ""}],
    [{"name": "X-MS-Exchange-Organization-Network-Message-Id", "value": "id with space"}],
    [{"name": "X-MS-Exchange-Organization-Network-Message-Id", "value": "x" * 129}],
    [{"name": "X-MS-Exchange-Organization-Network-Message-Id", "value": 42}],
    "not a list",
])
def test_inbox_message_without_a_usable_network_message_id_gives_no_fact(headers: Any) -> None:
    with pytest.raises(MissingNetworkMessageId, match="network-message-id"):
        mail_fact(message(internetMessageHeaders=headers), subscription=sub(), inbox_folder_id=INBOX_ID)


def test_sent_items_copy_is_outbound_to_its_recipients_even_without_transport_headers() -> None:
    msg = message(**{"from": addr("Support@contoso.com"), "internetMessageHeaders": [],
                     "toRecipients": [addr("Eve.Smith@gmail.com"), {"emailAddress": {"address": None}},
                                      "junk"],
                     "ccRecipients": [addr("boss@contoso.com"), addr("eve.smith@gmail.com")],
                     "parentFolderId": "AQMkSentItems", "sentDateTime": "2026-11-20T10:00:00Z",
                     "receivedDateTime": "2026-11-20T10:00:05Z"})
    fact = mail_fact(msg, subscription=sub("sentitems"), inbox_folder_id=INBOX_ID)
    assert fact.direction == "Outbound"
    assert fact.network_message_id == ""
    assert fact.sender_mail_from == "Support@contoso.com"
    assert fact.recipients == ("eve.smith@gmail.com", "boss@contoso.com")
    assert fact.timestamp == datetime(2026, 11, 20, 10, 0, tzinfo=UTC)
    assert fact.in_inbox is False


@pytest.mark.parametrize(("field", "value", "error"), [
    ("receivedDateTime", "yesterday", "receivedDateTime: not an ISO"),
])
def test_bad_dates_name_the_field(field: str, value: str, error: str) -> None:
    with pytest.raises(MailFactError, match=error):
        mail_fact(message(**{field: value}), subscription=sub(), inbox_folder_id=INBOX_ID)


def test_missing_dates_name_the_field() -> None:
    msg = message()
    del msg["receivedDateTime"], msg["sentDateTime"]
    with pytest.raises(MailFactError, match="receivedDateTime: missing"):
        mail_fact(msg, subscription=sub(), inbox_folder_id=INBOX_ID)


def test_not_an_object_is_refused() -> None:
    with pytest.raises(MailFactError, match=r"\(message\)"):
        mail_fact(["x"], subscription=sub(), inbox_folder_id=INBOX_ID)


def test_hostile_values_are_bounded_or_dropped() -> None:
    msg = message(subject="a\r\nBcc: x" + "s" * 5000, internetMessageId="<x\n@y>", **{"from": "nope"})
    fact = mail_fact(msg, subscription=sub(), inbox_folder_id=INBOX_ID)
    assert "\n" not in fact.subject and len(fact.subject) == 2048
    assert fact.internet_message_id == ""
    assert fact.sender_from == ""


# --- links -------------------------------------------------------------------------------------------

def html(content: str) -> dict[str, str]:
    return {"contentType": "html", "content": content}


def test_links_from_hrefs_and_bare_text_in_order_without_duplicates() -> None:
    body = html('<div>See <a href="https://www.dropbox.com/s/abc/invoice.pdf?dl=0&amp;x=1">here</a> or '
                'https://forms.gle/XyZ. <area href="http://bit.ly/q"><a href="mailto:x@y.z">m</a>'
                '<a href="javascript:alert(1)">j</a> again (https://www.dropbox.com/s/abc/invoice.pdf?dl=0&x=1)</div>')
    assert links(body) == ["https://www.dropbox.com/s/abc/invoice.pdf?dl=0&x=1", "https://forms.gle/XyZ",
                           "http://bit.ly/q"]


def test_text_body_bare_urls() -> None:
    assert links({"contentType": "text", "content": "go to https://we.tl/t-abc, then reply."}) == [
        "https://we.tl/t-abc"]


def test_safe_links_wrappers_are_unwrapped_to_the_original_url() -> None:
    wrapped = ("https://eur01.safelinks.protection.outlook.com/?url=https%3A%2F%2Fdrive.google.com%2Ffile%2Fd%2F1"
               "&data=05%7C01&sdata=abc&reserved=0")
    assert links(html(f'<a href="{wrapped}">doc</a>')) == ["https://drive.google.com/file/d/1"]


def test_hostile_html_never_raises_and_is_bounded() -> None:
    many = "".join(f'<a href="https://h{i}.example.com/">x</a>' for i in range(MAX_URLS * 3))
    assert len(links(html(many))) == MAX_URLS
    long = "https://evil.example.com/" + "a" * 10_000
    (got,) = links(html(f'<a href="{long}">x</a>'))
    assert got.startswith("https://evil.example.com/") and len(got) == MAX_URL_LENGTH
    for junk in ["<a href=", "<![if x]>", "<!--", "<a href='https://x.com", "<" * 10_000, "&#xffffffff;",
                 "<a href=\"https://[::1\">x</a>", "\x00<script>https://in.script.example/</script>"]:
        links(html(junk))   # no exception


@pytest.mark.parametrize("body", [None, "text", {"content": 3}, {"contentType": "html"}, []])
def test_bodies_of_the_wrong_shape_have_no_links(body: Any) -> None:
    assert links(body) == []
