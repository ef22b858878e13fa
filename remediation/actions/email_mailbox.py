"""Email remediation in the recipient's mailbox (Graph ``Mail.ReadWrite``, scoped with RBAC for Applications).

Per target: find the message by ``internetMessageId`` in the recipient's mailbox (addressed by the
recipient's object id when the rule maps RecipientObjectId, else by its address), compare its folder
with the destination, and move it only when it is elsewhere. Synchronous, so the result is
``confirmed`` at once (or ``skipped`` when it was already there: re-running a request, or a message
the user moved, is not a failure). ``undo`` records the folder it came from, so an undo puts it back
exactly there rather than in the Inbox.

Outlook allows an app at most 4 concurrent requests per mailbox: every request to one mailbox takes
that mailbox's semaphore (``MAILBOX_CONCURRENCY``) for as long as it is in flight, while different
mailboxes proceed in parallel, up to ``MAX_IN_FLIGHT`` requests in all (what the HTTP pool keeps open).
Outlook's limit is per app across all instances, so with ``ctx.mailbox_slots`` set (the function app)
each request also holds one of the mailbox's 4 leases in Table storage (remediation/mailbox_slots.py),
shared by every instance; a 429 that still comes back is reported transient with its Retry-After.

Work done by an earlier attempt: a request in ``ctx.prior_attempts`` (a crashed delivery, or an attempt
that answered 503/timeout/reset after Exchange had moved the message) whose message is already in the
destination is ``confirmed``, not ``skipped``: the move was ours. Its undo names the Inbox as the
original folder (the folder it came from is no longer known; the detail says so). Without a prior
attempt, a message already in the destination stays ``skipped`` (the user or somebody else moved it).

SDK retries: the RetryHandler replays a move that got 503/504. If the service had processed it, the
message already has a new id and the replay answers 404; the action then re-reads the mailbox and,
finding the message in the destination, reports ``confirmed`` rather than a false failure.

Folder ids are opaque: the destination's id is fetched once per mailbox (``GET mailFolders/junkemail``)
and compared with the message's ``parentFolderId``; a folder name is never compared with an id.

Speed: requests are built with the SDK's request builders and sent through its request adapter (auth,
RetryHandler, error mapping all as usual), but the answers are read as JSON for the two or three fields
needed (``remediation.actions.graph_json``) instead of being deserialized into SDK ``Message`` models,
which cost about 20 ms of CPU each and made this strategy CPU-bound. The lookup selects
``internetMessageId`` too, so a message is only acted on when the service's answer names the id we
asked for: a filter the service did not apply can never turn into moving a whole mailbox.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, TypeVar

from kiota_abstractions.api_error import APIError
from kiota_abstractions.base_request_configuration import RequestConfiguration
from msgraph.generated.users.item.mail_folders.item.mail_folder_item_request_builder import (
    MailFolderItemRequestBuilder,
)
from msgraph.generated.users.item.messages.item.move.move_post_request_body import MovePostRequestBody
from msgraph.generated.users.item.messages.messages_request_builder import MessagesRequestBuilder

from core.graph_json import GraphResponseError, send_json, string_field
from remediation.actions.base import ActionContext, ActionResult, failed
from remediation.actions.errors import describe

MAILBOX_CONCURRENCY = 4
# At most this many requests in flight per execute, across all mailboxes. httpx's default pool keeps
# 20 connections alive; with more requests in flight httpcore closes every connection that goes idle
# (a new TCP/TLS connection per request) and its queue bookkeeping grows with queued x open
# connections: 100 mailboxes x 4 made the client spend most of its CPU there, not on Graph's answers.
MAX_IN_FLIGHT = 20
# soft_delete as Defender means it: "Soft delete" puts the message in Recoverable Items\Deletions, out of
# the user's folders
# (https://learn.microsoft.com/defender-office-365/remediate-malicious-email-delivered-office-365),
# which Graph names by the well-known folder name ``recoverableitemsdeletions``
# (https://learn.microsoft.com/graph/api/resources/mailfolder#well-known-folder-names). A move, not
# DELETE /messages/{id}: the move answers the message's new id and folder, so it is confirmed and undone
# like the other moves. move_to_deleted_items is Defender's moveToDeletedItems (Deleted Items).
DESTINATION = {"move_to_junk": "junkemail", "move_to_inbox": "inbox",
               "soft_delete": "recoverableitemsdeletions", "move_to_deleted_items": "deleteditems"}
FOLDER_LABEL = {"junkemail": "Junk Email", "inbox": "Inbox", "deleteditems": "Deleted Items",
                "recoverableitemsdeletions": "Recoverable Items (Deletions)"}
# Folders GET /users/{id}/messages does not list ("including the Deleted Items and Clutter folders",
# https://learn.microsoft.com/graph/api/user-list-messages): a message there is looked up in the folder.
HIDDEN_FOLDERS = ("recoverableitemsdeletions",)

T = TypeVar("T")


class _NotFound(Exception):
    """The target cannot be acted on; permanent, the message says why."""


@dataclass(frozen=True)
class FoundMessage:
    """The fields of a message this strategy reads: its id and the id of the folder it is in."""

    id: str
    parent_folder_id: str | None


def odata_string(value: str) -> str:
    """An OData string literal: single quotes doubled, so the id cannot change the filter."""
    return "'" + value.replace("'", "''") + "'"


def restore_folder(request: dict[str, Any]) -> str | None:
    """For an undo (``move_to_inbox`` carrying ``undo_of``): the folder the original move recorded."""
    undo = (request.get("undo_of") or {}).get("undo") or {}
    folder = undo.get("original_folder")
    return folder if isinstance(folder, str) and folder else None


class MailboxEmailAction:
    """``move_to_junk`` / ``move_to_inbox`` / ``soft_delete`` / ``move_to_deleted_items`` by moving the
    message in the mailbox."""

    def __init__(self, action: str):
        if action not in DESTINATION:
            raise ValueError(f"the mailbox email strategy cannot do {action!r}")
        self.name = action

    async def execute(self, requests: list[dict[str, Any]], ctx: ActionContext) -> list[ActionResult]:
        run = _Run(ctx)
        return list(await asyncio.gather(*(self._one(req, run) for req in requests)))

    async def _one(self, req: dict[str, Any], run: _Run) -> ActionResult:
        if req.get("action") != self.name:
            return failed(req, f"{req.get('action')!r} request given to {self.name}")
        target = req.get("target") or {}
        address = str(target.get("recipient") or "").strip()
        imid = str(target.get("internet_message_id") or "").strip()
        if "@" not in address:
            return failed(req, "target needs the recipient's mailbox address")
        # Graph addresses a user as /users/{id | userPrincipalName}
        # (https://learn.microsoft.com/graph/api/user-list-messages#http-request): the recipient address in
        # EmailEvents is the SMTP address, which for a shared mailbox or a renamed user is often not the
        # UPN (404). The object id always works; the address is the fallback when the rule has no id.
        mailbox = str(target.get("recipient_object_id") or "").strip() or address
        if not imid:
            return failed(req, "the mailbox strategy needs the message's internet_message_id (the rule "
                               "must map InternetMessageId), and this target has none")
        step = "find message"
        hidden = DESTINATION[self.name] if DESTINATION[self.name] in HIDDEN_FOLDERS else None
        try:
            found = await run.find(mailbox, imid)
            if not found and hidden:
                # Already soft-deleted (a re-run, a redelivery): /messages does not list Recoverable Items.
                found = await run.find(mailbox, imid, folder=hidden)
            if not found:
                raise _NotFound(f"message {imid} not found in mailbox {address} (deleted, or never delivered "
                                "there)")
            step = "resolve destination folder"
            dest_ref, note = restore_folder(req) or DESTINATION[self.name], ""
            try:
                dest_id = await run.folder_id(mailbox, dest_ref)
            except APIError as exc:
                if exc.response_status_code != 404 or dest_ref == DESTINATION[self.name]:
                    raise
                # The folder it came from is gone: the Inbox is the honest fallback for an undo.
                dest_ref, note = DESTINATION[self.name], " (original folder no longer exists)"
                dest_id = await run.folder_id(mailbox, dest_ref)
            label = FOLDER_LABEL.get(dest_ref, "its original folder")
            to_move = [m for m in found if m.parent_folder_id != dest_id]
            if not to_move:
                if req["id"] in run.prior:
                    return _recognised(req, address, imid, found[0].id, label)
                return ActionResult(req["id"], "skipped", detail=f"already in {label} in {address}")
            step = "move"
            destination = dest_ref if dest_ref in FOLDER_LABEL else dest_id
            moved_ids: list[str] = []
            for m in to_move:
                try:
                    moved_ids.append(await run.move(mailbox, m.id, destination))
                except APIError as exc:
                    # A 404 on move after the SDK replayed it (503/504 that the service had in fact
                    # processed): the first attempt moved the message and gave it a new id. Re-read.
                    if exc.response_status_code != 404:
                        raise
                    again = [x for x in await run.find(mailbox, imid, folder=hidden)
                             if x.parent_folder_id == dest_id]
                    if not again:
                        raise
                    moved_ids.append(str(again[0].id))
                    note = " (the service had applied an attempt that answered an error)"
        except _NotFound as exc:
            return ActionResult(req["id"], "failed", detail=str(exc), error=str(exc))
        except Exception as exc:
            return describe(exc).result(req["id"], f"{step} in {address}")
        undo = {"strategy": "mailbox", "mailbox": address, "internet_message_id": imid,
                "original_folder": to_move[0].parent_folder_id, "moved_message_id": moved_ids[0]}
        return ActionResult(req["id"], "confirmed", undo=undo,
                            detail=f"moved {len(to_move)} message(s) to {label} in {address}{note}")


def _recognised(req: dict[str, Any], address: str, imid: str, message_id: str, label: str) -> ActionResult:
    """Already in the destination after an earlier attempt at this request: that attempt moved it."""
    undo = {"strategy": "mailbox", "mailbox": address, "internet_message_id": imid,
            "original_folder": "inbox", "moved_message_id": message_id}
    return ActionResult(req["id"], "confirmed", undo=undo,
                        detail=f"already in {label} in {address}: moved by an earlier attempt (recorded now; "
                               "the folder it came from is not known, an undo puts it in the Inbox)")


class _Run:
    """Per-execute state: one semaphore per mailbox, destination folder ids cached per mailbox."""

    def __init__(self, ctx: ActionContext):
        self.graph = ctx.graph
        self.adapter = ctx.graph.request_adapter
        self.slots = ctx.mailbox_slots
        self.prior = ctx.prior_attempts
        self.sems: dict[str, asyncio.Semaphore] = {}
        self.in_flight = asyncio.Semaphore(MAX_IN_FLIGHT)
        self.folders: dict[tuple[str, str], asyncio.Task[str]] = {}

    async def _limited(self, mailbox: str, call: Callable[[], Awaitable[T]]) -> T:
        sem = self.sems.setdefault(mailbox.lower(), asyncio.Semaphore(MAILBOX_CONCURRENCY))
        # Always this process's mailbox slot, then the mailbox's lease shared by all instances, then the
        # overall one: one order, so no deadlock.
        shared = self.slots.hold(mailbox) if self.slots is not None else contextlib.nullcontext()
        async with sem, shared, self.in_flight:
            return await call()

    async def find(self, mailbox: str, imid: str, folder: str | None = None) -> list[FoundMessage]:
        """The copies of ``imid`` in the mailbox's folders, or only in ``folder`` when given."""
        q = MessagesRequestBuilder.MessagesRequestBuilderGetQueryParameters(
            filter=f"internetMessageId eq {odata_string(imid)}",
            select=["id", "parentFolderId", "internetMessageId"])
        user = self.graph.users.by_user_id(mailbox)
        messages = user.mail_folders.by_mail_folder_id(folder).messages if folder else user.messages
        info = messages.to_get_request_information(RequestConfiguration(query_parameters=q))
        page = await self._limited(mailbox, lambda: send_json(self.adapter, info))
        if page is None or not isinstance(page.get("value"), list):
            # Graph always answers a collection; anything else is not evidence that the message is gone.
            raise GraphResponseError(f"the message lookup in {mailbox} answered no `value` list")
        found = []
        for item in page["value"]:
            msg_id = string_field(item, "id") if isinstance(item, dict) else None
            if msg_id is None:
                raise GraphResponseError(f"the message lookup in {mailbox} answered an item without an id")
            # Only messages the answer says carry the requested id: if the filter were ever not applied
            # (a proxy, an API change), acting on every message returned would empty the mailbox.
            # Exchange's string filters ignore case, so this check does too (no false "not found").
            got = string_field(item, "internetMessageId")
            if got is not None and got.casefold() == imid.casefold():
                found.append(FoundMessage(msg_id, string_field(item, "parentFolderId")))
        return found

    async def folder_id(self, mailbox: str, ref: str) -> str:
        key = (mailbox.lower(), ref.lower())
        if key not in self.folders:   # one lookup per mailbox and folder, shared by concurrent targets
            self.folders[key] = asyncio.ensure_future(self._fetch_folder(mailbox, ref))
        return await asyncio.shield(self.folders[key])

    async def _fetch_folder(self, mailbox: str, ref: str) -> str:
        q = MailFolderItemRequestBuilder.MailFolderItemRequestBuilderGetQueryParameters(select=["id"])
        info = (self.graph.users.by_user_id(mailbox).mail_folders.by_mail_folder_id(ref)
                .to_get_request_information(RequestConfiguration(query_parameters=q)))
        folder = await self._limited(mailbox, lambda: send_json(self.adapter, info))
        folder_id = string_field(folder, "id") if folder is not None else None
        if folder_id is None:
            raise _NotFound(f"folder {ref} has no id in mailbox {mailbox}")
        return folder_id

    async def move(self, mailbox: str, message_id: str, destination: str) -> str:
        """Move one message; the moved copy's new id ("" if the answer has none: the move still happened)."""
        body = MovePostRequestBody(destination_id=destination)
        # The SDK's builder serializes the body (as ``DestinationId``) exactly as ``.post(body)`` would.
        info = (self.graph.users.by_user_id(mailbox).messages.by_message_id(message_id).move
                .to_post_request_information(body))
        moved = await self._limited(mailbox, lambda: send_json(self.adapter, info))
        return (string_field(moved, "id") or "") if moved is not None else ""
