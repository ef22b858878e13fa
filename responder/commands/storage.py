"""The command line's way to the ledger: open it, say in one line why it cannot be opened, find a request
by a shortened id.

A broken storage setting is the operator's to fix (exit 2); an endpoint that does not answer may come
back (exit 1). Either is one line on stderr, never a traceback, and never the connection string (it
holds the account key).
"""

from __future__ import annotations

import argparse
import base64
import os
import re
from typing import Any
from urllib.parse import urlsplit

from azure.core.exceptions import (
    AzureError,
    ClientAuthenticationError,
    HttpResponseError,
    ServiceRequestError,
    ServiceResponseError,
)
from azure.data.tables import TableClient

from core.settings import Settings
from remediation.ledger import INVALID, Ledger, Record
from responder.commands import UsageError, cli_credential

STORAGE_ENV = "RESPONDER_STORAGE_CONNECTION"
# An operator waits at the keyboard: an endpoint that does not accept a connection within this many
# seconds is reported, instead of azure-core's default of 300 s per try.
CONNECT_TIMEOUT = 10
_ID = re.compile(r"^[0-9a-f]{1,32}$")


class StorageFailure(Exception):
    """Storage could not be used; ``code`` is the exit code (2 bad configuration, 1 unreachable or failed)."""

    def __init__(self, message: str, code: int) -> None:
        super().__init__(message)
        self.code = code


class AmbiguousId(Exception):
    """A shortened id matches more than one request; ``candidates`` are the rows it matches."""

    def __init__(self, prefix: str, candidates: list[Record]) -> None:
        super().__init__(f"id {prefix} matches {len(candidates)} requests; give more characters")
        self.candidates = candidates


class UnknownId(Exception):
    """No request has this id or id prefix."""


def open_ledger(args: argparse.Namespace, settings: Settings) -> Ledger:
    """The ledger named by --storage / RESPONDER_STORAGE_CONNECTION, else identity-based access to
    AzureWebJobsStorage__accountName; its table is created when missing (the first real round trip, so a
    wrong key or an endpoint that does not answer is found here, before any work)."""
    table = args.table or settings.ledger_table
    conn = args.storage or os.environ.get(STORAGE_ENV, "")
    opts: dict[str, Any] = {"connection_timeout": CONNECT_TIMEOUT}
    if conn:
        try:
            client = TableClient.from_connection_string(conn, table, **opts)
        except ValueError as exc:   # azure-data-tables: "Connection string is either blank or malformed."
            raise StorageFailure(f"the storage connection string (--storage or {STORAGE_ENV}) is not "
                                 f"usable: {first_line(exc)}", 2) from None
        keyed = True
    else:
        account = os.environ.get("AzureWebJobsStorage__accountName", "")  # noqa: SIM112 - the host's name
        if not account:
            raise UsageError(f"no storage: pass --storage, or set {STORAGE_ENV} (a connection string) or "
                             "AzureWebJobsStorage__accountName (identity-based)")
        # No client secret from the environment, ever (responder.commands.cli_credential).
        client = TableClient(endpoint=f"https://{account}.table.core.windows.net", table_name=table,
                             credential=cli_credential(settings.client_id, aio=False), **opts)
        keyed = False
    ledger = Ledger(client)
    try:
        ledger.ensure_table()
    except AzureError as exc:
        raise storage_failure(exc, ledger, keyed=keyed) from None
    return ledger


def endpoint(ledger: Ledger | None) -> str:
    """scheme://host[:port] of the ledger's table service: never a path or query (a SAS lives there)."""
    url = getattr(getattr(ledger, "table", None), "url", "") or ""
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}" if parts.netloc else "the storage account"


def storage_failure(exc: AzureError, ledger: Ledger | None = None, *, keyed: bool = True) -> StorageFailure:
    """One line and an exit code for an azure-core error from the table service."""
    where = endpoint(ledger)
    if isinstance(exc, (ServiceRequestError, ServiceResponseError)):
        return StorageFailure(f"cannot reach the storage endpoint {where}: {first_line(exc)}", 1)
    if isinstance(exc, ClientAuthenticationError):
        if keyed:
            return StorageFailure(f"{where} refused the account key of the storage connection string "
                                  f"(--storage or {STORAGE_ENV}): {first_line(exc)}", 2)
        return StorageFailure(f"no token for {where}: {first_line(exc)} (sign in with `az login`, or run "
                              "where the managed identity is available)", 1)
    if isinstance(exc, HttpResponseError):
        error_code = getattr(exc, "error_code", None)
        code = str(getattr(error_code, "value", error_code) or "")
        if exc.status_code == 403:
            # 403 is AuthenticationFailed for a key the account does not hold, AuthorizationPermissionMismatch
            # for an identity without the data role (Azurite says AuthorizationFailure for both):
            # https://learn.microsoft.com/rest/api/storageservices/common-rest-api-error-codes
            if keyed:
                return StorageFailure(f"{where} refused the account key of the storage connection string "
                                      f"(--storage or {STORAGE_ENV}): HTTP 403 {code}".rstrip(), 2)
            return StorageFailure(f"{where} refused access (HTTP 403 {code}): the identity needs Storage "
                                  "Table Data Contributor on the account (docs/deploy.md)", 2)
        status = f"HTTP {exc.status_code}" + (f" {code}" if code else "")
        return StorageFailure(f"the storage service at {where} failed ({status}): {first_line(exc)}", 1)
    return StorageFailure(f"storage at {where} failed: {first_line(exc)}", 1)


def first_line(exc: BaseException) -> str:
    """The first non-empty line of an exception's text, whitespace collapsed (SDK errors span lines)."""
    for line in str(exc).splitlines():
        if line.strip():
            return " ".join(line.split())
    return type(exc).__name__


# --- ids ---------------------------------------------------------------------------------------------------

def resolve(ledger: Ledger, text: str, *, invalid: bool = True) -> Record:
    """The one request whose id is ``text`` or starts with it (like a short git commit id).

    A whole id is a point query; a prefix is a RowKey range over all partitions, so only matching rows
    come back from the service. ``invalid``: whether rows of messages that were not requests count.
    """
    prefix = text.strip().lower()
    if not _ID.match(prefix):
        raise UsageError(f"{text!r} is not a request id: ids are 32 hexadecimal characters (any unique "
                         "beginning of one will do)")
    if len(prefix) == 32:
        found = ledger.get(prefix)
        matches = [found] if found is not None else []
    else:
        matches = ledger.find_prefix(prefix)
    if not invalid:
        matches = [m for m in matches if m.rule != INVALID]
    if not matches:
        raise UnknownId(f"no request {prefix}{'' if len(prefix) == 32 else '...'} in the ledger")
    if len(matches) > 1:
        raise AmbiguousId(prefix, matches)
    return matches[0]


def open_queue(args: argparse.Namespace, settings: Settings) -> Any:
    """The requests queue the worker reads (RESPONDER_REQUESTS_QUEUE), on the same storage as the ledger:
    --storage / RESPONDER_STORAGE_CONNECTION, else identity-based (the signed-in person then needs
    Storage Queue Data Message Sender on the account: docs/deploy.md)."""
    from azure.storage.queue import QueueClient

    conn = args.storage or os.environ.get(STORAGE_ENV, "")
    if conn:
        return QueueClient.from_connection_string(conn, settings.requests_queue,
                                                  connection_timeout=CONNECT_TIMEOUT)
    account = os.environ.get("AzureWebJobsStorage__accountName", "")  # noqa: SIM112 - the host's name
    if not account:
        raise UsageError(f"no storage: pass --storage, or set {STORAGE_ENV} (a connection string) or "
                         "AzureWebJobsStorage__accountName (identity-based)")
    return QueueClient(account_url=f"https://{account}.queue.core.windows.net",
                       queue_name=settings.requests_queue,
                       credential=cli_credential(settings.client_id, aio=False),
                       connection_timeout=CONNECT_TIMEOUT)


def enqueue(queue: Any, body: str) -> None:
    """One request for the worker, base64-encoded as the Functions queue trigger reads it (host.json
    messageEncoding)."""
    queue.send_message(base64.b64encode(body.encode("utf-8")).decode("ascii"))
