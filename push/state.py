"""``StreamState`` on Table storage: what a streaming rule remembers, shared by every push worker instance.

One row per key: PartitionKey ``stream-<rule slug>`` (a rule's state never mixes with another's, nor
with the subscription rows in the same table), RowKey the SHA-256 of the key (keys are sender addresses
or campaign keys: any characters, any length; RowKey forbids ``/ \\ # ?`` and control characters,
https://learn.microsoft.com/rest/api/storageservices/understanding-the-table-service-data-model), the value
as JSON in one string property.

Optimistic concurrency with the row's ETag: ``save`` with a version is a Replace with ``If-Match``; with
None it is an Insert, which fails if the row exists. Either way a writer that lost the race gets False
and loads again (the copies of one campaign arrive in several mailboxes at once). The service answers
412 Precondition Failed on an ETag mismatch and 409 Conflict on inserting an existing row
(https://learn.microsoft.com/rest/api/storageservices/update-entity2,
https://learn.microsoft.com/rest/api/storageservices/insert-entity); the SDK raises
ResourceModifiedError / ResourceExistsError for them.

Size: a string property holds at most 64 KiB (UTF-16, so 32 K characters; same data model page). The
value is JSON with ``ensure_ascii`` (one character per byte) and is refused above ``MAX_VALUE_CHARS``:
a streaming rule must keep its state bounded, and a value that cannot be stored must fail loudly, not
be cut.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
from typing import Any

from azure.core import MatchConditions
from azure.core.exceptions import ResourceExistsError, ResourceModifiedError, ResourceNotFoundError
from azure.data.tables import UpdateMode
from azure.data.tables.aio import TableClient

log = logging.getLogger(__name__)

PARTITION_PREFIX = "stream-"
MAX_VALUE_CHARS = 32_000          # below the 64 KiB (32 K UTF-16 characters) string property limit
KEY_KEPT_CHARS = 512              # the key itself, kept beside its hash for people reading the table
VALUE_PROPERTY = "value"


class StateTooLarge(ValueError):
    """A value whose JSON is longer than MAX_VALUE_CHARS."""


def row_key(key: str) -> str:
    return hashlib.sha256(key.encode("utf-8")).hexdigest()


def partition(rule_slug: str) -> str:
    return PARTITION_PREFIX + rule_slug


class TableState:
    """``detections.streaming.StreamState`` for one rule, on an async azure-data-tables TableClient."""

    def __init__(self, table: TableClient, rule_slug: str) -> None:
        self.table = table
        self.rule = rule_slug
        self.partition = partition(rule_slug)

    async def ensure_table(self) -> None:
        with contextlib.suppress(ResourceExistsError):
            await self.table.create_table()

    async def load(self, key: str) -> tuple[dict[str, Any], str | None]:
        try:
            entity = await self.table.get_entity(self.partition, row_key(key))
        except ResourceNotFoundError:
            return {}, None
        etag = entity.metadata["etag"]
        raw = entity.get(VALUE_PROPERTY)
        try:
            value = json.loads(raw) if isinstance(raw, str) else None
        except (json.JSONDecodeError, RecursionError):
            value = None
        if not isinstance(value, dict):
            # A row this code did not write (or a broken one): start the key over. Its etag is returned,
            # so the next save replaces it instead of failing for ever on an insert.
            log.warning("stream state %s: row %s holds no JSON object; starting it over", self.partition,
                        row_key(key))
            return {}, etag
        return value, etag

    async def save(self, key: str, value: dict[str, Any], version: str | None) -> bool:
        text = json.dumps(value, ensure_ascii=True, separators=(",", ":"), sort_keys=True)
        if len(text) > MAX_VALUE_CHARS:
            raise StateTooLarge(f"stream state {self.partition}: value of {len(text)} characters is over "
                                f"{MAX_VALUE_CHARS} (the rule must bound what it keeps)")
        entity = {"PartitionKey": self.partition, "RowKey": row_key(key), "key": key[:KEY_KEPT_CHARS],
                  VALUE_PROPERTY: text}
        try:
            if version is None:
                await self.table.create_entity(entity)
            else:
                await self.table.update_entity(entity, mode=UpdateMode.REPLACE, etag=version,
                                               match_condition=MatchConditions.IfNotModified)
        except (ResourceExistsError, ResourceModifiedError, ResourceNotFoundError):
            return False   # another writer got there first (or deleted the row): load again
        return True
