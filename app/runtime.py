"""The services the functions use, built from the start-up configuration, lazily and once.

Storage clients (ledger, quota table) are synchronous and shared by every invocation. Graph,
Exchange and query-backend clients are asynchronous and bound to an event loop, so they are built
inside the running loop and kept per loop (the Functions worker runs one loop for the life of the
process; tests run one per call). Everything a test needs to replace (the query backend, the clock,
the worker's retry timing) is a constructor argument, so tests change inputs, never our code.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
import weakref
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from azure.core.exceptions import ResourceNotFoundError
from azure.data.tables import TableClient

from app.bootstrap import AppConfig
from app.ratelimit import ScanQuota
from core.settings import Settings
from detections.backends.base import QueryBackend
from notifications.reporter import CardReporter
from notifications.teams import Notifier, NullNotifier, notifier_from_settings
from remediation.ledger import Ledger

log = logging.getLogger(__name__)

BackendFactory = Callable[["Runtime", Any, Any], QueryBackend]   # (runtime, graph client, credential)


def utcnow() -> datetime:
    return datetime.now(UTC)


@dataclass
class _LoopServices:
    credential: Any
    graph: Any
    exchange: Any
    mailbox_slots: Any = None


@dataclass
class Runtime:
    config: AppConfig
    clock: Callable[[], datetime] = utcnow
    backend_factory: BackendFactory | None = None
    notifier: Notifier | None = None
    worker_options: dict[str, Any] = field(default_factory=dict)
    graph_retries: int = 3          # msgraph-sdk RetryHandler retries (429/503/504, Retry-After honoured)

    def __post_init__(self) -> None:
        self._lock = threading.Lock()
        self._ledger: Ledger | None = None
        self._quota: ScanQuota | None = None
        self._stop: Any = None
        self._loops: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, _LoopServices] = (
            weakref.WeakKeyDictionary())
        if self.notifier is None:
            self.notifier = notifier_from_settings(self.config.settings)
            if isinstance(self.notifier, NullNotifier) and not self.settings.unresolved_references:
                # NullNotifier reports every card as delivered (off is not a failure), so without this
                # line nothing would ever say that held requests and failures reach nobody. The setting
                # is empty here, so naming it reveals nothing.
                log.warning("Teams notifications are off: RESPONDER_TEAMS_WEBHOOK_URL is empty. Remediation "
                            "still runs, but nobody is told about held requests, failures or runs; see "
                            "docs/deploy.md, Teams notifications")

    @property
    def settings(self) -> Settings:
        return self.config.settings

    @property
    def notifications(self) -> bool:
        """Whether cards go anywhere (False: no webhook configured, the NullNotifier swallows them)."""
        return not isinstance(self.notifier, NullNotifier)

    # --- storage (synchronous SDKs, shared) ------------------------------------------------------

    def _sync_credential(self) -> Any:
        # The managed identity and nothing else (see _loop_services): no chain that could pick up a
        # client secret from the environment.
        from azure.identity import ManagedIdentityCredential

        return ManagedIdentityCredential(client_id=self.config.storage.client_id or None)

    def table_client(self, table: str, **options: Any) -> TableClient:
        """``options`` go to the SDK pipeline (e.g. ``retry_total=0`` for a quick probe)."""
        st = self.config.storage
        if st.connection_string:
            return TableClient.from_connection_string(st.connection_string, table, **options)
        return TableClient(endpoint=st.table_endpoint, table_name=table, credential=self._sync_credential(),
                           **options)

    def probe_storage(self) -> None:
        """Raise unless the storage account answers (one point read, no retries, short timeouts)."""
        with contextlib.suppress(ResourceNotFoundError):
            self.table_client(self.settings.ledger_table, retry_total=0, connection_timeout=5,
                              read_timeout=10).get_entity("~health", "probe")

    def ledger(self) -> Ledger:
        with self._lock:
            if self._ledger is None:
                ledger = Ledger(self.table_client(self.settings.ledger_table), clock=self.clock)
                ledger.ensure_table()
                self._ledger = ledger
            return self._ledger

    def stop_switch(self) -> Any:
        """The emergency stop as this instance sees it: one StopSwitch for every invocation, so the row is
        read at most every 10 s per instance (remediation/stop.py)."""
        from remediation.stop import StopSwitch

        ledger = self.ledger()
        with self._lock:
            if self._stop is None:
                self._stop = StopSwitch(ledger)
            return self._stop

    def quota(self) -> ScanQuota:
        with self._lock:
            if self._quota is None:
                # A table of its own: the ledger's queries assume every non-marker row is a request.
                quota = ScanQuota(self.table_client(quota_table(self.settings.ledger_table)),
                                  per_hour=self.settings.scan_rate_per_hour, clock=self.clock)
                quota.ensure_table()
                self._quota = quota
            return self._quota

    # --- per-loop asynchronous clients -------------------------------------------------------------

    async def _loop_services(self) -> _LoopServices:
        loop = asyncio.get_running_loop()
        found = self._loops.get(loop)
        if found is None:
            from core.graph import is_loopback, make_graph_client

            credential = None
            if not is_loopback(self.settings.graph_base_url):
                credential = app_credential(self.settings)
            graph = make_graph_client(base_url=self.settings.graph_base_url, credential=credential,
                                      max_retries=self.graph_retries)
            found = _LoopServices(credential, graph, _exchange_client(self.settings, credential),
                                  await self._mailbox_slots())
            self._loops[loop] = found
        return found

    async def _mailbox_slots(self) -> Any:
        """The mailbox strategy's per-mailbox leases, shared by every instance (remediation/mailbox_slots.py);
        None for the Defender strategy, which never calls a mailbox."""
        if self.settings.email_strategy != "mailbox":
            return None
        from azure.data.tables.aio import TableClient as AsyncTableClient

        from remediation.mailbox_slots import MailboxSlots

        st, table = self.config.storage, slots_table(self.settings.ledger_table)
        if st.connection_string:
            client = AsyncTableClient.from_connection_string(st.connection_string, table)
        else:
            from azure.identity.aio import ManagedIdentityCredential

            client = AsyncTableClient(endpoint=st.table_endpoint, table_name=table,
                                      credential=ManagedIdentityCredential(client_id=st.client_id or None))
        slots = MailboxSlots(client)
        await slots.ensure_table()
        return slots

    async def backend(self) -> QueryBackend:
        svc = await self._loop_services()
        if self.backend_factory is not None:
            return self.backend_factory(self, svc.graph, svc.credential)
        from detections.backends import make_backend

        return make_backend(self.settings, credential=svc.credential, graph_client=svc.graph)

    @contextlib.asynccontextmanager
    async def worker(self) -> AsyncIterator[Any]:
        """A Worker for one invocation (cheap: the clients under it are shared)."""
        from remediation.worker import Worker

        svc = await self._loop_services()
        # The worker's own cards (failures, out of scope). Held requests of a run get no approval card
        # here: the run's outcome card (app/runs.py) carries their approval instructions, so
        # on-call gets one message per run, not an approval card and an outcome card for the same ids.
        reporter = CardReporter(self.notifier, tenant_id=self.settings.tenant_id or None,
                                api_base=self.config.api_base, held_cards=False,
                                connector_actions=self.settings.connector_actions, rules=self.config.catalog)
        yield Worker(self.settings, self.config.tenant, self.config.catalog, self.ledger(), svc.graph,
                     svc.exchange, reporter, mailbox_slots=svc.mailbox_slots,
                     **{"stop": self.stop_switch(), **self.worker_options})


def app_credential(settings: Settings) -> Any:
    """The function app's only credential: its user-assigned managed identity (AZURE_CLIENT_ID).

    Not DefaultAzureCredential: its chain tries EnvironmentCredential first, so an AZURE_CLIENT_SECRET
    app setting (added by hand, or left over) would silently make the app run on a client secret.
    ManagedIdentityCredential can only ever use the identity.
    """
    from azure.identity.aio import ManagedIdentityCredential

    return ManagedIdentityCredential(client_id=settings.client_id or None)


def slots_table(ledger_table: str) -> str:
    """The per-mailbox lease table's name: the ledger's with a suffix (table names are alphanumeric)."""
    return (ledger_table + "slots")[:63]


def quota_table(ledger_table: str) -> str:
    """The re-scan quota table's name: the ledger's with a suffix (table names are alphanumeric)."""
    return (ledger_table + "quota")[:63]


def _exchange_client(settings: Any, credential: Any) -> Any:
    # The Exchange admin client is optional: without it connector actions can only wait for approval.
    try:
        from remediation.exchange import make_exchange_client  # type: ignore[attr-defined]
    except ImportError:
        return None
    return make_exchange_client(settings, credential)
