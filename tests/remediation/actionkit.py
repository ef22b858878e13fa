"""Running an action through the real msgraph-sdk client against a loopback FakeGraph."""

from __future__ import annotations

from typing import Any

from core.graph import make_graph_client
from core.settings import Settings
from core.tenant import TenantConfig
from devtools.fakegraph import FakeGraph
from remediation.actions import ActionContext, ActionResult, get_action
from remediation.exchange import ExchangeClient


def settings_for(fake: FakeGraph, strategy: str = "defender",
                 connector_actions: str = "approval") -> Settings:
    # Connector actions default to "approval" here: an action only ever runs once the rails allowed it,
    # which a manual deployment never does (its own test passes "manual").
    return Settings.from_env({"RESPONDER_GRAPH_BASE_URL": fake.base_url, "RESPONDER_EMAIL_STRATEGY": strategy,
                              "RESPONDER_TENANT_ID": fake.tenant_id,
                              "RESPONDER_EXCHANGE_BASE_URL": fake.exchange_base_url,
                              "RESPONDER_CONNECTOR_ACTIONS": connector_actions}, require=False)


async def execute(fake: FakeGraph, action: str, requests: list[dict[str, Any]], *, strategy: str = "defender",
                  max_retries: int = 0, exchange: ExchangeClient | None = None,
                  connector_actions: str = "approval", prior_attempts: dict[str, str] | None = None,
                  http_timeout: float = 180.0, **knobs: Any) -> list[ActionResult]:
    """``prior_attempts``: what Execution passes for a retry or a recovered crash. ``knobs``: attributes
    set on the action object (e.g. ``concurrency``, ``timeout`` of the bounded account/connector actions)."""
    graph = make_graph_client(base_url=fake.base_url, max_retries=max_retries, timeout=http_timeout)
    ctx = ActionContext(settings=settings_for(fake, strategy, connector_actions), tenant=TenantConfig(),
                        graph=graph, exchange=exchange)
    # Set after construction: the same test then runs against code without the field (it is ignored).
    ctx.prior_attempts = dict(prior_attempts or {})
    executor = get_action(action, strategy)
    for name, value in knobs.items():
        setattr(executor, name, value)
    return await executor.execute(requests, ctx)
