"""Per-run counters: how many of a run's requests are settled, for the run's outcome card, in O(1).

The outcome card goes out when a run's last request is settled (app/runs.py). Reading the whole run
after every message to find that out cost 3 s per message at 10,000 requests (issue 13). Instead, the
message that leaves its own request settled counts it, once, on a per-run counter; the one message that
takes the counter to ``run.total`` does the full read that builds the card.

Exactly once, whatever the deliveries: counting writes two entities of the ledger's marker partition in
one entity group transaction, which the Table service applies atomically (all or nothing, entities of
one partition): the request's marker ``run-counted:<rule>:<run>:<id>`` (create: fails if it exists) and
the run's counter ``run-count:<rule>:<run>`` (create, or merge with the ETag just read). A duplicate
delivery fails on the marker and counts nothing; two deliveries counting together conflict on the
counter's ETag and the loser re-reads and tries again; a crash between the two writes cannot happen,
as there is only one write. https://learn.microsoft.com/rest/api/storageservices/performing-entity-group-transactions
(the failing operation's index starts the error message; azure-data-tables exposes it as
``TableTransactionError.index``). Per message: one read of the counter and one transaction, plus one
more of each per concurrent writer it collides with.
"""

from __future__ import annotations

import random
import time
from typing import Any

from azure.core import MatchConditions
from azure.core.exceptions import ResourceNotFoundError
from azure.data.tables import TableErrorCode, TableTransactionError, UpdateMode

from remediation.ledger import MARKERS, Ledger, LedgerConflict, Record, _safe_key

# States in which the worker still has work of its own to do on a request (not settled for its run).
IN_FLIGHT = frozenset({"received", "approved"})
# Collisions on the counter: at most this many tries, with a short random pause between them.
MAX_TRIES = 64
_PAUSE = 0.01
# Another delivery created the counter first, or moved it since we read it.
_COLLISIONS = (TableErrorCode.ENTITY_ALREADY_EXISTS, TableErrorCode.UPDATE_CONDITION_NOT_SATISFIED)


def settled_for_run(rec: Record, run_id: str) -> bool:
    """The row is settled as far as run ``run_id`` is concerned: it belongs to the run and the worker
    is done with it, or the run settled it as a dry run and a later live run has since reopened it
    (re-tagged with that run's id; for this run it stays done, as its dry-run outcome)."""
    if rec.run_id == run_id:
        return rec.state not in IN_FLIGHT
    return rec.extra.get("dry_run_run_id") == run_id


def count_key(rule: str, run_id: str) -> str:
    return f"run-count:{rule}:{run_id}"


def settled_count(ledger: Ledger, rule: str, run_id: str) -> int:
    """The run's counter now (0 before anything was counted)."""
    return _read(ledger, rule, run_id)[0]


def count_once(ledger: Ledger, rule: str, run_id: str, request_id: str) -> tuple[int, bool]:
    """Count ``request_id`` as settled for the run unless it was counted before. Returns the run's count
    after this call and whether this call counted it. LedgerConflict after MAX_TRIES collisions (the
    message is retried by the queue; nothing was counted)."""
    marker = {"PartitionKey": MARKERS, "RowKey": _safe_key(f"run-counted:{rule}:{run_id}:{request_id}"),
              "run": run_id[:200]}
    table = ledger.table
    for attempt in range(MAX_TRIES):
        n, etag = _read(ledger, rule, run_id)
        counter: dict[str, Any] = {"PartitionKey": MARKERS, "RowKey": _safe_key(count_key(rule, run_id)),
                                   "key": count_key(rule, run_id)[:1000], "n": n + 1}
        write: tuple[Any, ...] = (("create", counter) if etag is None else
                                  ("update", counter, {"mode": UpdateMode.MERGE, "etag": etag,
                                                       "match_condition": MatchConditions.IfNotModified}))
        try:
            table.submit_transaction([("create", marker), write])
        except TableTransactionError as exc:
            # The client reports index 0 when the service named no operation, so check the code too.
            code = getattr(exc, "error_code", None)   # absent when the answer had no error body
            if exc.index == 0 and code == TableErrorCode.ENTITY_ALREADY_EXISTS:
                return n, False         # the marker exists: counted by an earlier delivery
            if exc.index != 1 or code not in _COLLISIONS:
                raise                   # not a collision (throttling, outage): the queue retries
            time.sleep(random.uniform(0, _PAUSE * (1 + attempt % 8)))
            continue
        return n + 1, True
    raise LedgerConflict(f"run {run_id}: the settled-request counter kept changing ({MAX_TRIES} tries)")


def _read(ledger: Ledger, rule: str, run_id: str) -> tuple[int, str | None]:
    try:
        ent = ledger.table.get_entity(MARKERS, _safe_key(count_key(rule, run_id)))
    except ResourceNotFoundError:
        return 0, None
    return int(ent.get("n") or 0), ent.metadata["etag"]
