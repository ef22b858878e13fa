"""The fake Graph's push side over HTTP: rich messages, subscriptions and the validation handshake,
notifications (latency, drops, retries, lifecycle events, expiry) and message delta, driven with httpx and
the real msgraph-sdk client as core/graph.py builds it."""

from __future__ import annotations

import asyncio
import json
import threading
import time
from collections.abc import Iterator
from datetime import timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest
from kiota_abstractions.base_request_configuration import RequestConfiguration
from msgraph.generated.models.subscription import Subscription
from msgraph.generated.users.item.mail_folders.item.messages.delta.delta_request_builder import (
    DeltaRequestBuilder,
)
from msgraph.generated.users.item.messages.item.message_item_request_builder import (
    MessageItemRequestBuilder,
)

from core.graph import make_graph_client
from devtools.fakegraph import FakeGraph
from devtools.pushlatency import MAX_S

# --- a notification endpoint the tests script ---------------------------------------------------------------


class Endpoint:
    """A loopback HTTP endpoint: answers the validation handshake as told (``validation``) and records every
    notification POST, answering ``notify_status``."""

    def __init__(self) -> None:
        self.validation = "echo"        # echo | status500 | encoded | json | slow
        self.notify_status = 202
        self.tokens: list[str] = []
        self.posts: list[dict[str, Any]] = []
        self.lock = threading.Lock()
        outer = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *_a: Any) -> None:
                return

            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else b""
                query = parse_qs(urlsplit(self.path).query)
                if "validationToken" in query:
                    outer._validate(self, query["validationToken"][0], urlsplit(self.path).query)
                    return
                with outer.lock:
                    outer.posts.append({"path": urlsplit(self.path).path, "json": json.loads(body),
                                        "content_type": self.headers.get("Content-Type"),
                                        "status": outer.notify_status})
                self.send_response(outer.notify_status)
                self.send_header("Content-Length", "0")
                self.end_headers()

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.05},
                         daemon=True).start()

    def _validate(self, h: BaseHTTPRequestHandler, token: str, raw_query: str) -> None:
        self.tokens.append(token)
        mode = self.validation
        if mode == "slow":
            time.sleep(1.0)
        status, ctype, text = 200, "text/plain; charset=utf-8", token
        if mode == "status500":
            status = 500
        elif mode == "encoded":
            text = raw_query.split("validationToken=", 1)[1]   # echoes it still URL-encoded
        elif mode == "json":
            ctype, text = "application/json", json.dumps(token)
        data = text.encode("utf-8")
        try:
            h.send_response(status)
            h.send_header("Content-Type", ctype)
            h.send_header("Content-Length", str(len(data)))
            h.end_headers()
            h.wfile.write(data)
        except (BrokenPipeError, ConnectionResetError):   # the fake gave up waiting (timeout test)
            pass

    def url(self, path: str = "/api/push/notifications") -> str:
        host, port = self.server.server_address[:2]
        return f"http://{host}:{port}{path}"

    def _accepted(self, key: str) -> list[dict[str, Any]]:
        with self.lock:
            return [p["json"]["value"][0] for p in self.posts
                    if key in p["json"]["value"][0] and 200 <= p["status"] < 300]

    def change_posts(self) -> list[dict[str, Any]]:
        """Change notifications the endpoint accepted (2xx)."""
        return self._accepted("changeType")

    def lifecycle_posts(self) -> list[dict[str, Any]]:
        """Lifecycle notifications the endpoint accepted (2xx)."""
        return self._accepted("lifecycleEvent")

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def fake() -> Iterator[FakeGraph]:
    with FakeGraph() as f:
        f.push.configure(manual=True)
        yield f


@pytest.fixture
def endpoint() -> Iterator[Endpoint]:
    e = Endpoint()
    yield e
    e.close()


@pytest.fixture
def http(fake: FakeGraph) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=fake.base_url, timeout=30) as c:
        yield c


MAILBOX = "support@contoso.com"


def _subscribe(http: httpx.Client, fake: FakeGraph, endpoint: Endpoint, *, folder: str = "inbox",
               minutes: float = 4000, lifecycle: bool = True, **extra: Any) -> httpx.Response:
    uid = fake.users.add(MAILBOX).id
    body = {"changeType": "created", "notificationUrl": endpoint.url(),
            "resource": f"users/{uid}/mailFolders('{folder}')/messages",
            "expirationDateTime": (fake.push.now() + timedelta(minutes=minutes)).isoformat(),
            "clientState": "s3cret", **extra}
    if lifecycle:
        body.setdefault("lifecycleNotificationUrl", endpoint.url())
    return http.post("/subscriptions", json=body)


def _sdk(fake: FakeGraph) -> Any:
    return make_graph_client(base_url=fake.base_url, max_retries=0)


# --- 1. richer messages -------------------------------------------------------------------------------------

def test_inbound_mail_carries_envelope_and_network_id_headers_only_when_selected(fake: FakeGraph,
                                                                                http: httpx.Client) -> None:
    msg = fake.push.deliver_inbound(MAILBOX, sender="Mallory <mallory@outlook.com>",
                                    envelope_sender="bounce@mailer.example", subject="Invoice",
                                    links=["https://evil.example/a?b=1"], network_message_id="nmid-1")
    uid = fake.users.get(MAILBOX).id
    plain = http.get(f"/users/{uid}/messages/{msg.id}").json()
    # internetMessageHeaders is "Returned only on applying a $select query option" (message resource).
    assert "internetMessageHeaders" not in plain
    assert plain["from"] == {"emailAddress": {"name": "Mallory", "address": "mallory@outlook.com"}}
    assert plain["toRecipients"] == [{"emailAddress": {"name": MAILBOX, "address": MAILBOX}}]
    assert plain["body"]["contentType"] == "html"
    assert 'href="https://evil.example/a?b=1"' in plain["body"]["content"]
    assert plain["subject"] == "Invoice" and plain["conversationId"] and plain["sentDateTime"]
    assert plain["parentFolderId"] == http.get(f"/users/{uid}/mailFolders/inbox").json()["id"]

    sel = http.get(f"/users/{uid}/mailFolders/inbox/messages/{msg.id}",
                   params={"$select": "internetMessageHeaders,sender"}).json()
    assert set(sel) == {"@odata.etag", "id", "internetMessageHeaders", "sender"}
    headers = {h["name"]: h["value"] for h in sel["internetMessageHeaders"]}
    assert headers["Return-Path"] == "<bounce@mailer.example>"
    assert headers["X-MS-Exchange-Organization-Network-Message-Id"] == "nmid-1"
    assert headers["From"] == '"Mallory" <mallory@outlook.com>' and headers["Subject"] == "Invoice"

    bad = http.get(f"/users/{uid}/messages/{msg.id}", params={"$select": "subject,nosuch"})
    assert bad.status_code == 400 and "nosuch" in bad.json()["error"]["message"]


def test_messages_from_the_old_add_still_render(fake: FakeGraph, http: httpx.Client) -> None:
    mid = fake.mailboxes.add(MAILBOX, "<old@x>", subject="old")
    got = http.get(f"/users/{MAILBOX}/messages/{mid}").json()
    assert (got["id"], got["internetMessageId"], got["subject"]) == (mid, "<old@x>", "old")
    assert got["from"] is None and got["toRecipients"] == []
    listed = http.get(f"/users/{MAILBOX}/messages", params={"$select": "id,parentFolderId"}).json()["value"]
    assert [set(m) for m in listed] == [{"@odata.etag", "id", "parentFolderId"}]


def test_sent_reply_shares_the_conversation_and_the_sdk_reads_the_headers(fake: FakeGraph) -> None:
    inbound = fake.push.deliver_inbound(MAILBOX, sender="a@outlook.com", subject="Hi")
    reply = fake.push.add_sent(MAILBOX, to=["a@outlook.com"], subject="RE: Hi", reply_to=inbound)
    assert reply.folder == "sentitems" and reply.conversation_id == inbound.conversation_id
    uid = fake.users.get(MAILBOX).id

    async def read() -> Any:
        q = MessageItemRequestBuilder.MessageItemRequestBuilderGetQueryParameters(
            select=["internetMessageHeaders", "from", "toRecipients", "conversationId"])
        return await _sdk(fake).users.by_user_id(uid).messages.by_message_id(reply.id).get(
            request_configuration=RequestConfiguration(query_parameters=q))

    got = asyncio.run(read())
    headers = {h.name: h.value for h in got.internet_message_headers}
    assert headers["In-Reply-To"] == inbound.internet_message_id
    assert got.from_.email_address.address == MAILBOX
    assert [r.email_address.address for r in got.to_recipients] == ["a@outlook.com"]
    assert got.conversation_id == inbound.conversation_id


# --- 2. subscriptions and the handshake ---------------------------------------------------------------------

def test_sdk_creates_a_subscription_after_both_urls_pass_the_handshake(fake: FakeGraph,
                                                                        endpoint: Endpoint) -> None:
    uid = fake.users.add(MAILBOX).id
    expiry = fake.push.now() + timedelta(minutes=10_000)

    async def create() -> Any:
        return await _sdk(fake).subscriptions.post(Subscription(
            change_type="created", notification_url=endpoint.url(), lifecycle_notification_url=endpoint.url(),
            resource=f"/users/{uid}/mailFolders/sentitems/messages", expiration_date_time=expiry,
            client_state="s3cret"))

    sub = asyncio.run(create())
    assert sub.id and sub.change_type == "created" and sub.client_state == "s3cret"
    assert sub.expiration_date_time == expiry
    # notificationUrl and lifecycleNotificationUrl are both validated; the token arrives URL-decoded.
    assert len(endpoint.tokens) == 2
    assert all(t.startswith("Validation: Testing client application reachability") for t in endpoint.tokens)
    assert [v.ok for v in fake.push.validations] == [True, True]
    [stored] = fake.push.subscriptions
    assert (stored.user_id, stored.folder) == (uid, "sentitems")


@pytest.mark.parametrize(("mode", "code", "words"), [
    ("status500", "ValidationError", "must respond with 200 OK"),
    ("encoded", "InvalidRequest", "exactly match validationToken"),
    ("json", "ValidationError", "text/plain"),
    ("slow", "InvalidRequest", "timed out"),
])
def test_a_failed_handshake_creates_nothing(fake: FakeGraph, endpoint: Endpoint, http: httpx.Client,
                                            mode: str, code: str, words: str) -> None:
    fake.push.configure(validation_timeout=0.3)   # the service waits 10 s; "slow" answers after 1 s
    endpoint.validation = mode
    r = _subscribe(http, fake, endpoint)
    assert r.status_code == 400, r.text
    assert r.json()["error"]["code"] == code and words in r.json()["error"]["message"]
    assert fake.push.subscriptions == [] and http.get("/subscriptions").json()["value"] == []


def test_an_unreachable_endpoint_fails_the_handshake(fake: FakeGraph, endpoint: Endpoint,
                                                     http: httpx.Client) -> None:
    endpoint.close()
    r = _subscribe(http, fake, endpoint)
    assert r.status_code == 400 and r.json()["error"]["code"] == "ValidationError"


def test_expiration_limit_for_outlook_messages(fake: FakeGraph, endpoint: Endpoint,
                                               http: httpx.Client) -> None:
    too_long = _subscribe(http, fake, endpoint, minutes=10_081)
    assert too_long.status_code == 400
    assert too_long.json()["error"] == {**too_long.json()["error"], "code": "ExtensionError",
                                        "message": "Subscription expiration can only be 10080 minutes in the "
                                                   "future."}
    assert _subscribe(http, fake, endpoint, minutes=-1).status_code == 400
    assert _subscribe(http, fake, endpoint, minutes=10_079).status_code == 201


@pytest.mark.parametrize(("change", "field"), [
    ({"clientState": "x" * 256}, "clientState"),
    ({"changeType": "created,moved"}, "changeType"),
    ({"notificationUrl": "http://example.com/hook"}, "notificationUrl"),
    ({"lifecycleNotificationUrl": "ftp://127.0.0.1/x"}, "lifecycleNotificationUrl"),
    ({"resource": "users/nobody@contoso.com/mailFolders('inbox')/messages"}, "nobody@contoso.com"),
    ({"resource": "users/x/events"}, "resource"),
    ({"expirationDateTime": "tomorrow"}, "expirationDateTime"),
    ({"includeResourceData": True}, "includeResourceData"),
    ({"notifyMe": True}, "notifyMe"),
])
def test_create_refuses_bad_bodies_naming_the_field(fake: FakeGraph, endpoint: Endpoint, http: httpx.Client,
                                                    change: dict[str, Any], field: str) -> None:
    r = _subscribe(http, fake, endpoint, **change)
    assert r.status_code in (400, 404) and field in r.json()["error"]["message"], r.text
    assert endpoint.tokens == []   # refused before any handshake


def test_client_state_of_255_and_both_resource_forms_are_accepted(fake: FakeGraph, endpoint: Endpoint,
                                                                   http: httpx.Client) -> None:
    uid = fake.users.add(MAILBOX).id
    a = _subscribe(http, fake, endpoint, clientState="x" * 255)
    b = _subscribe(http, fake, endpoint, resource=f"/users/{MAILBOX}/mailFolders/SentItems/messages")
    assert (a.status_code, b.status_code) == (201, 201)
    assert {(s.user_id, s.folder) for s in fake.push.subscriptions} == {(uid, "inbox"), (uid, "sentitems")}
    assert a.json()["resource"] == f"users/{uid}/mailFolders('inbox')/messages"


def test_get_renew_reauthorize_delete(fake: FakeGraph, endpoint: Endpoint, http: httpx.Client) -> None:
    sid = _subscribe(http, fake, endpoint).json()["id"]
    assert http.get(f"/subscriptions/{sid}").json()["id"] == sid
    later = (fake.push.now() + timedelta(minutes=9000)).isoformat()
    renewed = http.patch(f"/subscriptions/{sid}", json={"expirationDateTime": later})
    assert renewed.status_code == 200 and fake.push.get(sid).expiration.isoformat() == later
    assert http.patch(f"/subscriptions/{sid}", json={"clientState": "new"}).status_code == 400
    assert http.patch(f"/subscriptions/{sid}", json={
        "expirationDateTime": (fake.push.now() + timedelta(minutes=20_000)).isoformat()}).status_code == 400
    assert http.post(f"/subscriptions/{sid}/reauthorize").status_code == 204
    assert http.delete(f"/subscriptions/{sid}").status_code == 204
    assert http.get(f"/subscriptions/{sid}").status_code == 404
    assert http.delete(f"/subscriptions/{sid}").status_code == 404


# --- 3. delivery --------------------------------------------------------------------------------------------

def test_notification_arrives_after_the_drawn_latency_in_the_documented_shape(
        fake: FakeGraph, endpoint: Endpoint, http: httpx.Client) -> None:
    fake.push.configure(latency=lambda _rng: 42.0)
    sub = _subscribe(http, fake, endpoint).json()
    msg = fake.push.deliver_inbound(MAILBOX, sender="a@outlook.com", subject="x")
    fake.push.advance(41.9)
    assert endpoint.change_posts() == []
    fake.push.advance(0.2)
    [note] = endpoint.change_posts()
    uid = fake.users.get(MAILBOX).id
    path = f"Users/{uid}/Messages/{msg.id}"
    assert note == {"subscriptionId": sub["id"], "subscriptionExpirationDateTime": sub["expirationDateTime"],
                    "changeType": "created", "resource": path,
                    "resourceData": {"@odata.type": "#Microsoft.Graph.Message", "@odata.id": path,
                                     "@odata.etag": note["resourceData"]["@odata.etag"], "id": msg.id},
                    "clientState": "s3cret", "tenantId": fake.tenant_id}
    assert note["resourceData"]["@odata.etag"].startswith('W/"')
    assert endpoint.posts[0]["content_type"].startswith("application/json")
    assert fake.push.stats["delivered"] == 1
    [notice] = [n for n in fake.push.notices if n.kind == "change"]
    assert (notice.delivered_at - notice.created).total_seconds() == pytest.approx(42.0)


def test_default_latency_stays_within_the_documented_maximum(fake: FakeGraph, endpoint: Endpoint,
                                                             http: httpx.Client) -> None:
    fake.push.configure(seed=7)
    _subscribe(http, fake, endpoint)
    for i in range(20):
        fake.push.deliver_inbound(MAILBOX, sender="a@outlook.com", subject=str(i))
    fake.push.advance(MAX_S)
    assert fake.push.stats["delivered"] == 20
    waits = [(n.delivered_at - n.created).total_seconds() for n in fake.push.notices if n.kind == "change"]
    assert max(waits) <= MAX_S and len(set(waits)) > 10   # drawn, not constant


def test_only_the_subscribed_folder_notifies_and_moves_into_it_count(fake: FakeGraph, endpoint: Endpoint,
                                                                    http: httpx.Client) -> None:
    _subscribe(http, fake, endpoint, folder="sentitems")
    fake.push.deliver_inbound(MAILBOX, sender="a@outlook.com")
    reply = fake.push.add_sent(MAILBOX, to=["a@outlook.com"], subject="RE")
    fake.push.advance(MAX_S)
    assert [p["resourceData"]["id"] for p in endpoint.change_posts()] == [reply.id]


def test_dropped_notifications_become_missed_lifecycle_events(fake: FakeGraph, endpoint: Endpoint,
                                                              http: httpx.Client) -> None:
    fake.push.configure(drop_rate=1.0)
    sub = _subscribe(http, fake, endpoint).json()
    fake.push.deliver_inbound(MAILBOX, sender="a@outlook.com")
    fake.push.advance(MAX_S)
    assert endpoint.change_posts() == []
    assert endpoint.lifecycle_posts() == [{"subscriptionId": sub["id"],
                                           "subscriptionExpirationDateTime": sub["expirationDateTime"],
                                           "lifecycleEvent": "missed", "clientState": "s3cret",
                                           "tenantId": fake.tenant_id}]
    assert (fake.push.stats["dropped"], fake.push.stats["missed"], fake.push.stats["delivered"]) == (1, 1, 0)


def test_drop_rate_is_seeded_and_every_drop_is_reported(fake: FakeGraph, endpoint: Endpoint,
                                                        http: httpx.Client) -> None:
    def run(seed: int) -> list[str]:
        with FakeGraph() as f, httpx.Client(base_url=f.base_url, timeout=30) as c:
            f.push.configure(manual=True, drop_rate=0.3, seed=seed)
            _subscribe(c, f, endpoint)
            for i in range(40):
                f.push.deliver_inbound(MAILBOX, sender="a@outlook.com", subject=str(i))
            f.push.advance(MAX_S)
            stats = f.push.stats
            assert stats["dropped"] + stats["delivered"] == 40 and stats["missed"] == stats["dropped"]
            assert 0 < stats["dropped"] < 40
            return [n.status for n in f.push.notices if n.kind == "change"]

    assert run(3) == run(3)
    assert run(3) != run(4)


def test_a_failing_endpoint_is_retried_then_the_notification_is_discarded(fake: FakeGraph, endpoint: Endpoint,
                                                                          http: httpx.Client) -> None:
    fake.push.configure(latency=lambda _rng: 10.0)
    _subscribe(http, fake, endpoint)
    endpoint.notify_status = 503
    fake.push.deliver_inbound(MAILBOX, sender="a@outlook.com")
    fake.push.advance(10 + 60 + 300 + 900 - 1)   # first attempt and the retries after 60 s and 300 s
    [notice] = [n for n in fake.push.notices if n.kind == "change"]
    assert notice.answers == [503, 503, 503] and notice.status == "pending"
    fake.push.advance(1)                          # the last retry fails too: discarded, `missed` follows
    assert notice.answers == [503, 503, 503, 503] and notice.status == "failed"
    assert fake.push.stats["failed"] == 1 and endpoint.change_posts() == []
    endpoint.notify_status = 202                  # the `missed` event is itself retried until accepted
    fake.push.advance(60)
    assert [p["lifecycleEvent"] for p in endpoint.lifecycle_posts()] == ["missed"]
    assert (fake.push.stats["missed"], fake.push.stats["delivered"]) == (1, 0)


def test_an_endpoint_that_recovers_gets_the_notification_on_a_retry(fake: FakeGraph, endpoint: Endpoint,
                                                                    http: httpx.Client) -> None:
    fake.push.configure(latency=lambda _rng: 10.0)
    _subscribe(http, fake, endpoint)
    endpoint.notify_status = 500
    msg = fake.push.deliver_inbound(MAILBOX, sender="a@outlook.com")
    fake.push.advance(10 + 60)
    endpoint.notify_status = 202
    fake.push.advance(300)
    [notice] = [n for n in fake.push.notices if n.kind == "change"]
    assert notice.answers == [500, 500, 202] and notice.status == "delivered"
    assert [p["resourceData"]["id"] for p in endpoint.change_posts()] == [msg.id]
    assert fake.push.stats["delivered"] == 1 and endpoint.lifecycle_posts() == []


def test_expiry_removes_the_subscription_and_says_so(fake: FakeGraph, endpoint: Endpoint,
                                                     http: httpx.Client) -> None:
    sid = _subscribe(http, fake, endpoint, minutes=60).json()["id"]
    fake.push.advance(3599)
    assert http.get(f"/subscriptions/{sid}").status_code == 200
    fake.push.advance(2)
    assert http.get(f"/subscriptions/{sid}").status_code == 404
    assert [p["lifecycleEvent"] for p in endpoint.lifecycle_posts()] == ["subscriptionRemoved"]
    fake.push.deliver_inbound(MAILBOX, sender="a@outlook.com")
    fake.push.advance(MAX_S)
    assert endpoint.change_posts() == [] and fake.push.stats["subscription_removed"] == 1


def test_renewal_through_the_sdk_keeps_the_subscription_alive(fake: FakeGraph, endpoint: Endpoint,
                                                              http: httpx.Client) -> None:
    sid = _subscribe(http, fake, endpoint, minutes=60).json()["id"]
    fake.push.advance(1800)

    async def renew() -> Any:
        return await _sdk(fake).subscriptions.by_subscription_id(sid).patch(
            Subscription(expiration_date_time=fake.push.now() + timedelta(minutes=120)))

    assert asyncio.run(renew()).id == sid
    fake.push.advance(3600)
    assert http.get(f"/subscriptions/{sid}").status_code == 200 and endpoint.lifecycle_posts() == []


def test_reauthorization_required_pauses_delivery_until_the_app_reauthorizes(
        fake: FakeGraph, endpoint: Endpoint, http: httpx.Client) -> None:
    fake.push.configure(latency=lambda _rng: 5.0)
    sid = _subscribe(http, fake, endpoint).json()["id"]
    fake.push.require_reauthorization(sid, pause_after=0)
    fake.push.advance(1)
    assert [p["lifecycleEvent"] for p in endpoint.lifecycle_posts()] == ["reauthorizationRequired"]
    fake.push.deliver_inbound(MAILBOX, sender="a@outlook.com", subject="lost")
    fake.push.advance(10)
    assert endpoint.change_posts() == [] and fake.push.stats["lost"] == 1

    asyncio.run(_sdk(fake).subscriptions.by_subscription_id(sid).reauthorize.post())
    kept = fake.push.deliver_inbound(MAILBOX, sender="a@outlook.com", subject="kept")
    fake.push.advance(10)
    assert [p["resourceData"]["id"] for p in endpoint.change_posts()] == [kept.id]


def test_service_side_removal_on_demand(fake: FakeGraph, endpoint: Endpoint, http: httpx.Client) -> None:
    sid = _subscribe(http, fake, endpoint).json()["id"]
    fake.push.remove_subscription(sid)
    fake.push.advance(0)
    assert [p["lifecycleEvent"] for p in endpoint.lifecycle_posts()] == ["subscriptionRemoved"]
    assert http.get(f"/subscriptions/{sid}").status_code == 404


def test_without_a_lifecycle_url_drops_are_silent(fake: FakeGraph, endpoint: Endpoint,
                                                  http: httpx.Client) -> None:
    fake.push.configure(drop_rate=1.0)
    _subscribe(http, fake, endpoint, lifecycle=False)
    fake.push.deliver_inbound(MAILBOX, sender="a@outlook.com")
    fake.push.advance(MAX_S)
    assert endpoint.posts == [] and fake.push.stats["dropped"] == 1


def test_scaled_clock_delivers_in_the_background(endpoint: Endpoint) -> None:
    with FakeGraph() as f, httpx.Client(base_url=f.base_url, timeout=30) as c:
        f.push.configure(manual=True)
        _subscribe(c, f, endpoint, minutes=10)
        f.push.configure(manual=False, time_scale=0.002)   # 3 simulated minutes = 0.36 s
        start = time.monotonic()
        for i in range(5):
            f.push.deliver_inbound(MAILBOX, sender="a@outlook.com", subject=str(i))
        assert f.push.wait_idle(timeout=10)
        assert len(endpoint.change_posts()) == 5 and time.monotonic() - start < 5
        with pytest.raises(RuntimeError):
            f.push.advance(1)
        # The expiry scheduled under the manual clock fires under the scaled one (10 min = 1.2 s).
        deadline = time.monotonic() + 10
        while not endpoint.lifecycle_posts() and time.monotonic() < deadline:
            time.sleep(0.05)
        assert [p["lifecycleEvent"] for p in endpoint.lifecycle_posts()] == ["subscriptionRemoved"]


# --- 4. delta -----------------------------------------------------------------------------------------------

def test_delta_pages_then_returns_only_changes_through_the_sdk(fake: FakeGraph, http: httpx.Client) -> None:
    uid = fake.users.add(MAILBOX).id
    first = [fake.push.deliver_inbound(MAILBOX, sender="a@outlook.com", subject=f"m{i}") for i in range(5)]

    async def round_(link: str | None) -> tuple[list[Any], str]:
        builder = _sdk(fake).users.by_user_id(uid).mail_folders.by_mail_folder_id("inbox").messages.delta
        pages, seen = 0, []
        params = DeltaRequestBuilder.DeltaRequestBuilderGetQueryParameters(select=["subject"])
        config = RequestConfiguration(query_parameters=params)
        config.headers.add("Prefer", "odata.maxpagesize=2")
        resp = await (builder.with_url(link).get(request_configuration=config) if link
                      else builder.get(request_configuration=config))
        while True:
            pages += 1
            seen += resp.value
            if resp.odata_next_link:
                assert "$skiptoken=" in resp.odata_next_link and resp.odata_delta_link is None
                resp = await builder.with_url(resp.odata_next_link).get(request_configuration=config)
                continue
            assert "$deltatoken=" in resp.odata_delta_link
            return seen, resp.odata_delta_link

    seen, delta_link = asyncio.run(round_(None))
    assert [m.id for m in seen] == [m.id for m in first] and [m.subject for m in seen][:2] == ["m0", "m1"]
    assert seen[0].from_ is None and seen[0].body is None   # $select honoured
    assert len(fake.calls_to("GET", r"/messages/delta")) == 3   # 2 + 2 + 1 with maxpagesize 2

    new = [fake.push.deliver_inbound(MAILBOX, sender="b@outlook.com", subject=f"n{i}") for i in range(2)]
    moved = http.post(f"/users/{uid}/messages/{first[1].id}/move", json={"destinationId": "junkemail"})
    assert moved.status_code == 201
    changes, _ = asyncio.run(round_(delta_link))
    assert [m.id for m in changes if "@removed" not in m.additional_data] == [m.id for m in new]
    assert [(m.id, m.additional_data["@removed"]) for m in changes if "@removed" in m.additional_data] == [
        (first[1].id, {"reason": "deleted"})]


def test_delta_refuses_unknown_options_and_stale_tokens(fake: FakeGraph, http: httpx.Client) -> None:
    uid = fake.users.add(MAILBOX).id
    url = f"/users/{uid}/mailFolders/inbox/messages/delta"
    assert http.get(url, params={"$search": "x"}).status_code == 400
    forged = http.get(url, params={"$deltatoken": "forged"})
    assert forged.status_code == 400 and forged.json()["error"]["code"] == "ErrorInvalidSyncStateData"
    done = http.get(url).json()
    assert done["value"] == [] and "@odata.deltaLink" in done
    # The delta link answers on a later call; with changeType=created only creations come back.
    fake.push.deliver_inbound(MAILBOX, sender="a@outlook.com")
    again = http.get(done["@odata.deltaLink"]).json()
    assert len(again["value"]) == 1 and "internetMessageId" in again["value"][0]


def test_delta_with_change_type_created_skips_removals(fake: FakeGraph, http: httpx.Client) -> None:
    uid = fake.users.add(MAILBOX).id
    old = fake.push.deliver_inbound(MAILBOX, sender="a@outlook.com")
    link = http.get(f"/users/{uid}/mailFolders/inbox/messages/delta",
                    params={"changeType": "created"}).json()["@odata.deltaLink"]
    http.post(f"/users/{uid}/messages/{old.id}/move", json={"destinationId": "junkemail"})
    new = fake.push.deliver_inbound(MAILBOX, sender="a@outlook.com")
    assert [m["id"] for m in http.get(link).json()["value"]] == [new.id]



def test_a_plugged_transport_replaces_http(fake: FakeGraph, http: httpx.Client) -> None:
    """For an in-process endpoint (a function app's handler called directly)."""
    got: list[tuple[str, dict[str, str], bytes]] = []

    def handler(url: str, headers: dict[str, str], body: bytes, _timeout: float) -> tuple[int, str, str]:
        got.append((url, headers, body))
        token = parse_qs(urlsplit(url).query).get("validationToken")
        return (200, "text/plain", token[0]) if token else (202, "", "")

    fake.push.configure(transport=handler, latency=lambda _rng: 1.0)
    uid = fake.users.add(MAILBOX).id
    r = http.post("/subscriptions", json={
        "changeType": "created", "notificationUrl": "https://push.contoso.com/api/push/notifications?code=x",
        "resource": f"users/{uid}/mailFolders('inbox')/messages", "clientState": "s3cret",
        "expirationDateTime": (fake.push.now() + timedelta(days=2)).isoformat()})
    assert r.status_code == 201
    assert got[0][0].startswith("https://push.contoso.com/api/push/notifications?code=x&validationToken=")
    msg = fake.push.deliver_inbound(MAILBOX, sender="a@outlook.com")
    fake.push.advance(1)
    url, headers, body = got[-1]
    assert url == "https://push.contoso.com/api/push/notifications?code=x"   # query string kept
    assert headers["Content-Type"].startswith("application/json")
    assert json.loads(body)["value"][0]["resourceData"]["id"] == msg.id and fake.push.stats["delivered"] == 1
