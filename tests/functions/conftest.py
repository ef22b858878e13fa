"""The function app as the host loads it: imported once with app settings in the environment, indexed
once (``get_functions()`` may run only once per app), then called directly with azure.functions
objects. Each test gets its own Runtime (fresh ledger table and queue names on Azurite) put in place
of the module's, so tests never share state."""

from __future__ import annotations

import asyncio
import dataclasses
import importlib
import json
import os
import sys
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import ModuleType
from typing import Any
from unittest import mock

import azure.functions as func
import pytest

from app.runtime import Runtime
from detections.backends.base import QueryResult
from devtools.azurite import Azurite
from devtools.indexing import by_name
from notifications.teams import MemoryNotifier

NOW = datetime(2026, 11, 20, 12, 0, tzinfo=UTC)
PROTECTED = ["support@contoso.com", "sales@contoso.com", "info@contoso.com"]
TENANT_YAML = "params:\n  protected_recipients: [" + ", ".join(PROTECTED) + "]\n"
RULE = "consumer-sender-to-shared-mailboxes"


def base_env(storage: str, tenant_file: Path) -> dict[str, str]:
    return {
        "RESPONDER_TENANT_ID": "00000000-0000-0000-0000-00000000abcd",
        "AZURE_CLIENT_ID": "11111111-1111-1111-1111-111111111111",
        "AzureWebJobsStorage": storage,
        "RESPONDER_TENANT_CONFIG": str(tenant_file),
        "RESPONDER_GRAPH_BASE_URL": "http://127.0.0.1:9/v1.0",
    }


@pytest.fixture(scope="session")
def tenant_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("tenant") / "tenant.yaml"
    path.write_text(TENANT_YAML, encoding="utf-8")
    return path


@pytest.fixture(scope="session")
def fa(azurite: Azurite, tenant_file: Path) -> ModuleType:
    """function_app imported as the host imports it (settings only in the environment, during import)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("RESPONDER_")}
    env.update(base_env(azurite.connection_string, tenant_file))
    sys.modules.pop("function_app", None)
    with mock.patch.dict(os.environ, env, clear=True):
        return importlib.import_module("function_app")


@pytest.fixture(scope="session")
def functions(fa: ModuleType) -> dict[str, Any]:
    return by_name(fa.app)


class Out(func.Out):
    """What the host hands a function for an output binding."""

    def __init__(self) -> None:
        self.value: Any = None
        self.calls = 0

    def set(self, val: Any) -> None:
        self.value = val
        self.calls += 1

    def get(self) -> Any:
        return self.value


class SpyBackend:
    """A query backend that records every query and answers with fixed rows (or raises)."""

    name = "spy"

    def __init__(self, rows: list[dict[str, Any]] | None = None, error: Exception | None = None):
        self.rows, self.error = rows or [], error
        self.queries: list[tuple[str, timedelta]] = []

    async def run(self, query: str, *, timespan: timedelta, shape: str = "defender") -> QueryResult:
        self.queries.append((query, timespan))
        if self.error is not None:
            raise self.error
        return QueryResult(columns=[], rows=[dict(r) for r in self.rows])


def inbox_row(nmid: str, recipient: str, sender: str = "bad@gmail.com",
              minutes_ago: int = 10) -> dict[str, Any]:
    """A result row of the consumer-sender rule (its projected columns)."""
    return {"Timestamp": (NOW - timedelta(minutes=minutes_ago)).isoformat().replace("+00:00", "Z"),
            "SenderMailFromAddress": sender, "RecipientEmailAddress": recipient, "Subject": "Question",
            "TotalEmailCount": 3, "LatestDeliveryLocation": "Inbox/folder",
            "LatestDeliveryAction": "Delivered",
            "NetworkMessageId": nmid, "InternetMessageId": f"<{nmid}@mail.gmail.com>", "ReportId": nmid}


class Clock:
    """The runtime's clock; tests move it forward."""

    def __init__(self, now: datetime = NOW) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now


@dataclasses.dataclass
class Env:
    fa: ModuleType
    rt: Runtime
    backend: SpyBackend
    notifier: MemoryNotifier
    clock: Clock

    def call(self, name: str, *args: Any) -> Any:
        fn = by_name(self.fa.app)[name].get_user_function()
        return asyncio.run(fn(*args))


@pytest.fixture
def make_env(fa: ModuleType, storage_conn: str, unique_name: str,
             monkeypatch: pytest.MonkeyPatch) -> Callable[..., Env]:
    def build(*, backend: Any = None, notifier: Any = None, api_base: str | None = None,
              **settings: Any) -> Env:
        config = dataclasses.replace(fa.runtime.config, api_base=api_base)
        new_settings = dataclasses.replace(config.settings, ledger_table=unique_name,
                                           requests_queue=unique_name + "q", **settings)
        clock = Clock()
        real = backend == "real"     # the app's own backend (RESPONDER_BACKEND) on its Graph client
        spy = SpyBackend() if real or backend is None else backend
        rt = Runtime(dataclasses.replace(config, settings=new_settings), clock=clock,
                     backend_factory=None if real else (lambda _rt, _graph, _cred: spy),
                     # "from-settings": the app's own notifier, built from RESPONDER_TEAMS_WEBHOOK_URL
                     notifier=None if notifier == "from-settings" else (notifier or MemoryNotifier()),
                     worker_options={"sleep": _no_sleep, "max_attempts": 1}, graph_retries=0)
        monkeypatch.setattr(fa, "runtime", rt)
        return Env(fa, rt, spy, rt.notifier, clock)  # type: ignore[arg-type]

    return build


async def _no_sleep(_seconds: float) -> None:
    return None


def http(method: str, url: str, body: Any = b"", *, route_params: dict[str, str] | None = None,
         params: dict[str, str] | None = None, headers: dict[str, str] | None = None) -> func.HttpRequest:
    raw = body if isinstance(body, bytes) else json.dumps(body).encode("utf-8")
    return func.HttpRequest(method=method, url=url, body=raw, route_params=route_params or {},
                            params=params or {}, headers=headers or {})


@pytest.fixture
def env(make_env: Callable[..., Env]) -> Iterator[Env]:
    yield make_env()
