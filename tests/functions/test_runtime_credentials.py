"""The function app authenticates as its managed identity only: never a chain that could pick up a
client secret (EnvironmentCredential is DefaultAzureCredential's first choice)."""

from __future__ import annotations

import asyncio
import dataclasses
from typing import Any

import azure.identity
import azure.identity.aio
import pytest

from app.bootstrap import StorageConfig
from app.runtime import Runtime
from detections.backends.base import QueryResult
from tests.functions.conftest import Env

CLIENT_ID = "11111111-1111-1111-1111-111111111111"


class _Backend:
    name = "spy"

    async def run(self, query: str, *, timespan: Any, shape: str = "defender") -> QueryResult:
        return QueryResult(columns=[], rows=[])


def test_graph_and_backends_get_a_managed_identity_credential_with_the_configured_client_id(
        env: Env, monkeypatch: pytest.MonkeyPatch) -> None:
    # A client secret in the environment is exactly what DefaultAzureCredential would have used.
    monkeypatch.setenv("AZURE_CLIENT_SECRET", "not-a-real-secret")
    monkeypatch.setenv("AZURE_TENANT_ID", "00000000-0000-0000-0000-00000000abcd")
    built: list[dict[str, Any]] = []

    class Recording(azure.identity.aio.ManagedIdentityCredential):
        def __init__(self, **kwargs: Any) -> None:
            built.append(kwargs)
            super().__init__(**kwargs)

    monkeypatch.setattr(azure.identity.aio, "ManagedIdentityCredential", Recording)
    seen: list[Any] = []

    def factory(_rt: Runtime, _graph: Any, credential: Any) -> _Backend:
        seen.append(credential)
        return _Backend()

    settings = dataclasses.replace(env.rt.settings, graph_base_url="https://graph.microsoft.com/v1.0")
    rt = Runtime(dataclasses.replace(env.rt.config, settings=settings), backend_factory=factory,
                 notifier=env.notifier)

    async def go() -> None:
        await rt.backend()
        await seen[0].close()

    asyncio.run(go())
    assert built == [{"client_id": CLIENT_ID}]
    assert isinstance(seen[0], azure.identity.aio.ManagedIdentityCredential)
    assert not isinstance(seen[0], azure.identity.aio.DefaultAzureCredential)


def test_identity_based_storage_uses_the_managed_identity(env: Env, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AZURE_CLIENT_SECRET", "not-a-real-secret")
    storage = StorageConfig(table_endpoint="https://st.table.core.windows.net",
                            queue_endpoint="https://st.queue.core.windows.net", client_id=CLIENT_ID)
    rt = Runtime(dataclasses.replace(env.rt.config, storage=storage), notifier=env.notifier)
    credential = rt.table_client("ledger").credential
    assert isinstance(credential, azure.identity.ManagedIdentityCredential)
