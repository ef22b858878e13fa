"""A minimal stand-in for the fake Graph's subscription and delta endpoints, used until devtools' own
(devtools/fakegraph_push.py, branch wt/fakepush) lands. It extends the loopback FakeGraph (real HTTP, the
real msgraph-sdk client) with what the docs say these endpoints do:

* ``POST /subscriptions`` -> 201 with the subscription; 400 when a required property is missing, the
  clientState is over 128 characters, or expirationDateTime is past now + 10,080 minutes (Outlook
  messages, https://learn.microsoft.com/graph/api/resources/subscription,
  https://learn.microsoft.com/graph/api/subscription-post-subscriptions). No validation handshake here.
* ``GET|PATCH|DELETE /subscriptions/{id}`` (200 / 200 / 204, 404 for an unknown id:
  https://learn.microsoft.com/graph/api/subscription-get, subscription-update, subscription-delete);
  ``POST /subscriptions/{id}/reauthorize`` -> 204 (https://learn.microsoft.com/graph/api/subscription-reauthorize).
* ``GET /users/{id}/mailFolders/{folder}/messages/delta`` (https://learn.microsoft.com/graph/api/message-delta):
  query options only in the first request (``changeType``, ``$select``, ``$filter=receivedDateTime ge``),
  pages of ``Prefer: odata.maxpagesize`` (default 10), ``@odata.nextLink`` (``$skiptoken``) and
  ``@odata.deltaLink`` (``$deltatoken``) as absolute URLs; a round from a delta link returns the messages
  that arrived in the folder since. ``delta_extra`` items are added to the next first page (``@removed``
  entries, malformed items); ``delta_answer`` is the whole body of the next answer (malformed answers).
"""

from __future__ import annotations

import base64
import json
import re
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

from devtools.fakegraph import _USER, FakeGraph, _error, _Reply

MAX_MINUTES = 10_080


def _ts(value: str) -> datetime:
    return datetime.fromisoformat(value.replace("Z", "+00:00")).astimezone(UTC)


def _seq(message_id: str) -> int:
    # FakeGraph's ids carry a counter (MailboxStore.new_message_id): arrival order.
    m = re.match(r"AAMkAGI2(\d{8})", message_id)
    return int(m.group(1)) if m else 0


class StandInGraph(FakeGraph):
    def __init__(self, **kw: Any) -> None:
        super().__init__(**kw)
        self.subscriptions: dict[str, dict[str, Any]] = {}
        self.delta_extra: list[Any] = []
        self.delta_answer: dict[str, Any] | None = None   # the next delta request gets this body, as given
        sid = r"^/v1\.0/subscriptions/(?P<sid>[^/]+)"
        self._routes[:0] = [
            ("POST", re.compile(r"^/v1\.0/subscriptions$"), self._create_sub),
            ("POST", re.compile(sid + r"/reauthorize$"), self._reauthorize),
            ("GET", re.compile(sid + "$"), self._get_sub),
            ("PATCH", re.compile(sid + "$"), self._patch_sub),
            ("DELETE", re.compile(sid + "$"), self._delete_sub),
            ("GET", re.compile(_USER + r"/mailFolders(?:/(?P<folder>[^/(]+)|\('(?P<qfolder>[^']+)'\))"
                               r"/messages/delta(\(\))?$"), self._delta),
        ]
        self.reauthorized: list[str] = []

    # --- subscriptions ---------------------------------------------------------------------------------

    def _expiry(self, value: Any) -> str:
        try:
            when = _ts(value)
        except (TypeError, ValueError, AttributeError):
            raise _error(400, "expirationDateTime is not a valid DateTimeOffset.", "InvalidRequest") from None
        if when > datetime.now(UTC) + timedelta(minutes=MAX_MINUTES):
            raise _error(400, f"Subscription expiration can only be {MAX_MINUTES} minutes in the future.",
                         "InvalidRequest")
        return when.strftime("%Y-%m-%dT%H:%M:%SZ")

    def _create_sub(self, _m: re.Match[str], _q: dict[str, str], body: Any) -> _Reply:
        if not isinstance(body, dict):
            raise _error(400, "Empty Payload.", "InvalidRequest")
        for name in ("changeType", "notificationUrl", "resource", "expirationDateTime"):
            if not body.get(name):
                raise _error(400, f"Property {name} is required.", "InvalidRequest")
        if len(body.get("clientState") or "") > 128:
            raise _error(400, "clientState is limited to 128 characters.", "InvalidRequest")
        m = re.fullmatch(r"users/([^/]+)/mailFolders\('([^']+)'\)/messages", body["resource"])
        if m is None or self.users.get(m.group(1)) is None:
            raise _error(404, "Resource not found.", "ResourceNotFound")
        sub = {"id": str(uuid.uuid4()), "resource": body["resource"], "changeType": body["changeType"],
               "clientState": body.get("clientState"), "notificationUrl": body["notificationUrl"],
               "lifecycleNotificationUrl": body.get("lifecycleNotificationUrl"),
               "expirationDateTime": self._expiry(body["expirationDateTime"])}
        with self._lock:
            self.subscriptions[sub["id"]] = sub
        return _Reply(201, sub)

    def _sub(self, m: re.Match[str]) -> dict[str, Any]:
        sub = self.subscriptions.get(m.group("sid"))
        if sub is None:
            raise _error(404, f"The object '{m.group('sid')}' doesn't exist.", "ResourceNotFound")
        return sub

    def _get_sub(self, m: re.Match[str], _q: dict[str, str], _b: Any) -> _Reply:
        return _Reply(200, self._sub(m))

    def _patch_sub(self, m: re.Match[str], _q: dict[str, str], body: Any) -> _Reply:
        sub = self._sub(m)
        if not isinstance(body, dict) or set(body) - {"expirationDateTime", "notificationUrl"}:
            raise _error(400, "Only expirationDateTime and notificationUrl can be updated.", "InvalidRequest")
        sub["expirationDateTime"] = self._expiry(body.get("expirationDateTime"))
        return _Reply(200, sub)

    def _delete_sub(self, m: re.Match[str], _q: dict[str, str], _b: Any) -> _Reply:
        self._sub(m)
        with self._lock:
            self.subscriptions.pop(m.group("sid"), None)
        return _Reply(204)

    def _reauthorize(self, m: re.Match[str], _q: dict[str, str], _b: Any) -> _Reply:
        self._sub(m)
        self.reauthorized.append(m.group("sid"))
        return _Reply(204)

    # --- delta -----------------------------------------------------------------------------------------

    def _delta(self, m: re.Match[str], q: dict[str, str], _b: Any) -> _Reply:
        user = self._user(m)
        if self.delta_answer is not None:
            answer, self.delta_answer = self.delta_answer, None
            return _Reply(200, answer)
        folder = (m.group("folder") or m.group("qfolder")).lower()
        if "$deltatoken" in q:
            state = self._decode(q["$deltatoken"])
            state = {"floor": state["top"], "since": "", "offset": 0, "select": state["select"]}
        elif "$skiptoken" in q:
            state = self._decode(q["$skiptoken"])
        else:
            flt = q.get("$filter", "")
            fm = re.fullmatch(r"receivedDateTime ge (\S+)", flt) if flt else None
            if flt and fm is None:
                raise _error(400, f"Unsupported filter: {flt}", "ErrorInvalidUrlQueryFilter")
            if q.get("changeType", "created") != "created":
                raise _error(400, "This stand-in serves changeType=created only.", "BadRequest")
            state = {"floor": 0, "since": fm.group(1) if fm else "", "offset": 0,
                     "select": q.get("$select", "")}
        msgs = sorted((x for x in self.mailboxes.messages(user.id) if x.folder.lower() == folder),
                      key=lambda x: _seq(x.id))
        msgs = [x for x in msgs if _seq(x.id) > state["floor"]
                and (not state["since"] or _ts(x.received) >= _ts(state["since"]))]
        if "top" in state:   # later pages of a round: only what was there when the round began
            msgs = [x for x in msgs if _seq(x.id) <= state["top"]]
        else:
            state["top"] = max([_seq(x.id) for x in msgs] + [state["floor"]])
        size = 10
        pm = re.search(r"odata\.maxpagesize=(\d+)", (self._local.headers or {}).get("prefer", ""))
        if pm:
            size = max(1, int(pm.group(1)))
        page = msgs[state["offset"]:state["offset"] + size]
        value: list[Any] = [self._delta_item(user.id, x, state["select"]) for x in page]
        if state["offset"] == 0 and self.delta_extra:
            value, self.delta_extra = self.delta_extra + value, []
        base = f"{self.base_url}/users/{user.id}/mailFolders('{folder}')/messages/delta"
        out: dict[str, Any] = {"value": value}
        if state["offset"] + size < len(msgs):
            out["@odata.nextLink"] = base + "?$skiptoken=" + self._encode({**state,
                                                                           "offset": state["offset"] + size})
        else:
            out["@odata.deltaLink"] = base + "?$deltatoken=" + self._encode({"top": state["top"],
                                                                             "select": state["select"]})
        return _Reply(200, out)

    @staticmethod
    def _delta_item(user_id: str, msg: Any, select: str) -> dict[str, Any]:
        full = {"id": msg.id, "receivedDateTime": msg.received, "internetMessageId": msg.internet_message_id,
                "subject": msg.subject}
        wanted = [s for s in select.split(",") if s] or list(full)
        return {k: full[k] for k in full if k in wanted or k == "id"}

    @staticmethod
    def _encode(state: dict[str, Any]) -> str:
        return base64.urlsafe_b64encode(json.dumps(state).encode()).decode().rstrip("=")

    @staticmethod
    def _decode(token: str) -> dict[str, Any]:
        try:
            return json.loads(base64.urlsafe_b64decode(token + "=" * (-len(token) % 4)))
        except ValueError:
            raise _error(400, "Invalid delta token.", "SyncStateInvalid") from None
