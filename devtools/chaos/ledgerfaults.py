"""A Table-storage client for the ledger that fails at random, before or after the write is applied.

``FlakyTable(table, rate, seed)`` wraps azure-data-tables' sync ``TableClient`` (what
remediation.ledger.Ledger holds in ``.table``). With probability ``rate`` a call raises, as the SDK would:

* before anything reached the service: ``ServiceRequestError`` (the request could not be sent) or
  ``HttpResponseError`` 503 ``ServerBusy`` ("The server is currently unable to receive requests"),
* after a write was applied (writes only): ``ServiceResponseError`` (the connection dropped before the
  answer) or ``HttpResponseError`` 500 ``OperationTimedOut`` ("The operation could not be completed
  within the permitted time. The operation may or may not have succeeded on the server side").

Error codes: https://learn.microsoft.com/rest/api/storageservices/common-rest-api-error-codes and
https://learn.microsoft.com/rest/api/storageservices/table-service-error-codes. ``enabled`` switches it
(the harness turns faults off to drain). Reads pass through ``query_entities`` lazily: the fault is raised
when the query is made, not while paging.
"""

from __future__ import annotations

import random
import threading
from collections import Counter
from typing import Any

from azure.core.exceptions import HttpResponseError, ServiceRequestError, ServiceResponseError

WRITES = frozenset({"create_entity", "update_entity", "upsert_entity", "delete_entity", "submit_transaction"})
READS = frozenset({"get_entity", "query_entities", "list_entities"})


def _http_error(status: int, code: str, message: str) -> HttpResponseError:
    err = HttpResponseError(message=f"{message}\nErrorCode:{code}")
    err.status_code, err.reason, err.error_code = status, code, code  # type: ignore[attr-defined]
    return err


class FlakyTable:
    def __init__(self, table: Any, rate: float, *, seed: int = 0) -> None:
        self._table, self.rate, self.enabled = table, rate, True
        self._rng, self._lock = random.Random(seed), threading.Lock()
        self.raised: Counter[str] = Counter()

    def _draw(self) -> float:
        with self._lock:
            return self._rng.random()

    def __getattr__(self, name: str) -> Any:
        attr = getattr(self._table, name)
        if name not in WRITES | READS or not callable(attr):
            return attr

        def call(*args: Any, **kw: Any) -> Any:
            if not (self.enabled and self.rate and self._draw() < self.rate):
                return attr(*args, **kw)
            after = name in WRITES and self._draw() < 0.5
            if not after:
                self.raised[f"{name}:before"] += 1
                if self._draw() < 0.5:
                    raise ServiceRequestError("injected: connection refused before the request was sent")
                raise _http_error(503, "ServerBusy", "The server is currently unable to receive requests.")
            attr(*args, **kw)
            self.raised[f"{name}:after"] += 1
            if self._draw() < 0.5:
                raise ServiceResponseError("injected: connection aborted after the request was sent")
            raise _http_error(500, "OperationTimedOut", "The operation could not be completed within the "
                              "permitted time. The operation may or may not have succeeded on the server "
                              "side.")

        return call
