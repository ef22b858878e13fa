"""An in-memory stand-in for azure-data-tables' ``TableClient``, used only by the demo without Azurite.

It implements exactly what ``remediation.ledger.Ledger`` calls, with the same semantics the ledger
relies on: ``create_entity`` fails on an existing key, a conditional ``update_entity`` fails when the
ETag moved, MERGE keeps unspecified properties, filters are ``<col> eq|ne @param`` joined by ``and``.
Tests and benchmarks use Azurite; this exists so the demo still runs (and says so) on a machine
without Node.js.
"""

from __future__ import annotations

import itertools
import re
from collections.abc import Iterator
from typing import Any

from azure.core import MatchConditions
from azure.core.exceptions import ResourceExistsError, ResourceModifiedError, ResourceNotFoundError
from azure.data.tables import UpdateMode

_CLAUSE = re.compile(r"^\s*(\w+)\s+(eq|ne)\s+@(\w+)\s*$")


class MemoryTableClient:
    def __init__(self) -> None:
        self._rows: dict[tuple[str, str], dict[str, Any]] = {}
        self._etags = itertools.count(1)

    def create_table(self) -> None:
        return None

    def _meta(self, key: tuple[str, str]) -> dict[str, Any]:
        etag = f'W/"{next(self._etags)}"'
        self._rows[key]["__etag"] = etag
        return {"etag": etag}

    def create_entity(self, entity: dict[str, Any]) -> dict[str, Any]:
        key = (entity["PartitionKey"], entity["RowKey"])
        if key in self._rows:
            raise ResourceExistsError("The specified entity already exists.")
        self._rows[key] = dict(entity)
        return self._meta(key)

    def get_entity(self, partition_key: str, row_key: str) -> dict[str, Any]:
        row = self._rows.get((partition_key, row_key))
        if row is None:
            raise ResourceNotFoundError("The specified resource does not exist.")
        return _entity(row)

    def update_entity(
        self,
        entity: dict[str, Any],
        *,
        mode: UpdateMode = UpdateMode.MERGE,
        etag: str | None = None,
        match_condition: MatchConditions | None = None,
    ) -> dict[str, Any]:
        key = (entity["PartitionKey"], entity["RowKey"])
        row = self._rows.get(key)
        if row is None:
            raise ResourceNotFoundError("The specified resource does not exist.")
        if match_condition == MatchConditions.IfNotModified and etag != row["__etag"]:
            raise ResourceModifiedError("The update condition specified in the request was not satisfied.")
        self._rows[key] = (
            {**row, **entity} if mode == UpdateMode.MERGE else {**entity, "__etag": row["__etag"]}
        )
        return self._meta(key)

    def delete_entity(self, partition_key: str, row_key: str) -> None:
        if self._rows.pop((partition_key, row_key), None) is None:
            raise ResourceNotFoundError("The specified resource does not exist.")

    def query_entities(self, query_filter: str, *, parameters: dict[str, Any] | None = None) -> Iterator[Any]:
        params = parameters or {}
        tests = []
        for clause in query_filter.split(" and "):
            m = _CLAUSE.match(clause)
            if m is None:
                raise ValueError(f"MemoryTableClient: unsupported filter clause {clause!r}")
            tests.append((m.group(1), m.group(2), params[m.group(3)]))
        for row in list(self._rows.values()):
            if all((row.get(col) == value) == (op == "eq") for col, op, value in tests):
                yield _entity(row)


class _Entity(dict):
    """A dict with ``metadata`` like azure-data-tables' TableEntity."""

    metadata: dict[str, Any]


def _entity(row: dict[str, Any]) -> _Entity:
    ent = _Entity({k: v for k, v in row.items() if k != "__etag"})
    ent.metadata = {"etag": row["__etag"]}
    return ent
