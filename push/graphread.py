"""What the push worker reads from Graph: one message, and a mailbox's Inbox folder id.

Requests are built with msgraph-sdk's request builders and sent through its request adapter (auth, base
URL, RetryHandler: 429/503/504 retried honouring Retry-After), but the answer is read as plain JSON:
``push.mailfacts`` wants the message as Graph sent it (the SDK's models turn strings into dates and
cost ~20 ms of CPU per message; remediation/actions/graph_json.py does the same for the mailbox strategy).

Errors: 404 (the message was moved or deleted before we read it; a move gives it a new id) is
``None``: nothing to do. 429, 408, 5xx, timeouts and connection errors raise :class:`GraphTransient`
(the queue message is retried). Any other status raises :class:`GraphRefused` (403: the mailbox is out
of the app's RBAC scope or Mail.Read is missing; retrying cannot help).
"""

from __future__ import annotations

import json
from collections import OrderedDict
from typing import Any

import httpx
from kiota_abstractions.api_error import APIError
from kiota_abstractions.base_request_configuration import RequestConfiguration
from msgraph.generated.models.o_data_errors.o_data_error import ODataError
from msgraph.generated.users.item.mail_folders.item.mail_folder_item_request_builder import (
    MailFolderItemRequestBuilder,
)
from msgraph.generated.users.item.messages.item.message_item_request_builder import MessageItemRequestBuilder

from push.mailfacts import MESSAGE_SELECT

ERROR_MAPPING: dict[str, Any] = {"XXX": ODataError}
FOLDER_CACHE_SIZE = 2048     # mailboxes whose Inbox id this process remembers (ids never change)


class GraphTransient(Exception):
    """A Graph failure a later retry may not meet (throttling, 5xx, timeouts)."""


class GraphRefused(Exception):
    """A Graph answer retrying will not change (403, 400, ...)."""


def _status_failure(exc: APIError, what: str) -> Exception:
    status = exc.response_status_code
    err = getattr(exc, "error", None)
    code = getattr(err, "code", None)
    reason = f"{what}: HTTP {status}" + (f" {code}" if code else "")
    if status is None or status in (408, 429) or status >= 500:
        return GraphTransient(reason)
    return GraphRefused(reason)


class MessageReader:
    def __init__(self, graph: Any) -> None:
        self.graph = graph
        self.adapter = graph.request_adapter
        self._inbox: OrderedDict[str, str] = OrderedDict()

    async def _send(self, info: Any, what: str, *, missing_ok: bool) -> dict[str, Any] | None:
        try:
            body = await self.adapter.send_primitive_async(info, "bytes", ERROR_MAPPING)
        except APIError as exc:
            if exc.response_status_code == 404 and missing_ok:
                return None
            raise _status_failure(exc, what) from None
        except httpx.TimeoutException:
            raise GraphTransient(f"{what}: timed out") from None
        except httpx.TransportError as exc:
            raise GraphTransient(f"{what}: connection failed: {type(exc).__name__}") from None
        try:
            data = json.loads(body) if body else None
        except (json.JSONDecodeError, UnicodeDecodeError, RecursionError):
            data = None
        if not isinstance(data, dict):
            # Graph always answers a JSON object here: a broken answer is the service's (or a proxy's) fault.
            raise GraphTransient(f"{what}: the answer is not a JSON object")
        return data

    async def message(self, user_id: str, message_id: str) -> dict[str, Any] | None:
        """``GET /users/{user}/messages/{id}?$select=MESSAGE_SELECT``; None when it is gone (404)."""
        q = MessageItemRequestBuilder.MessageItemRequestBuilderGetQueryParameters(select=list(MESSAGE_SELECT))
        info = (self.graph.users.by_user_id(user_id).messages.by_message_id(message_id)
                .to_get_request_information(RequestConfiguration(query_parameters=q)))
        return await self._send(info, "read message", missing_ok=True)

    async def inbox_id(self, user_id: str) -> str:
        """The mailbox's Inbox folder id (``GET /users/{user}/mailFolders/inbox?$select=id``), once per
        mailbox per process: folder ids are opaque, so ``parentFolderId`` is compared with this."""
        key = user_id.lower()
        if key in self._inbox:
            self._inbox.move_to_end(key)
            return self._inbox[key]
        q = MailFolderItemRequestBuilder.MailFolderItemRequestBuilderGetQueryParameters(select=["id"])
        info = (self.graph.users.by_user_id(user_id).mail_folders.by_mail_folder_id("inbox")
                .to_get_request_information(RequestConfiguration(query_parameters=q)))
        folder = await self._send(info, "read the Inbox folder id", missing_ok=False)
        folder_id = folder.get("id") if folder else None
        if not isinstance(folder_id, str) or not folder_id:
            raise GraphTransient("read the Inbox folder id: the answer has no id")
        self._inbox[key] = folder_id
        while len(self._inbox) > FOLDER_CACHE_SIZE:
            self._inbox.popitem(last=False)
        return folder_id
