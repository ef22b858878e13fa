"""The push worker: one ``push-notification/1`` queue message -> remediation requests (issue 15).

``change`` / ``message``:

1. The subscription is looked up in our own table (``SubscriptionLookup.by_id``). An id we never created,
   or one whose mailbox is not the notification's user, is a forged (or stale) notification: dropped,
   logged, counted, and Graph is never called for it.
2. The streaming rules that protect the mailbox (the rule enabled for the tenant, its resolved
   ``protected_recipients`` holding the subscription's mailbox) are chosen. None: nothing is read.
3. The message is read once (push/graphread.py) and made a MailFact (push/mailfacts.py). Gone (404:
   moved or deleted before we read it): nothing to do. No Network Message Id: no fact (no request could
   be made of it), logged and counted.
4. Each chosen rule observes the fact with its state (push/state.py) and returns rows with its KQL
   projection's columns; ``detections.findings.requests_from_rows`` makes the requests exactly as a scan
   does (same ids; modes from ``effective_mode``, the dry run honoured), with ``"source": "push"``. They
   go to ``emit`` (the app registers them in the ledger and queues them, as for a scan).

``lifecycle``: handed to ``on_lifecycle`` (push/lifecycle.py, wired by the app).

Failures: an invalid message raises NotificationInvalid (the app logs it and drops it: retrying cannot
fix it). Graph throttling/5xx/timeouts raise GraphTransient, and storage errors propagate, so the host
retries the queue message and moves it to ``<queue>-poison`` after maxDequeueCount (host.json), like the
requests queue. Graph refusing (403 out of RBAC scope) is an outcome, logged as an error.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from core.tenant import TenantConfig
from detections.catalog import Rule
from detections.findings import effective_mode, requests_from_rows
from detections.params import ParamError, resolve_params
from detections.streaming import MailFact, Observe, StreamState
from push.contract import Subscription, SubscriptionLookup
from push.graphread import GraphRefused, MessageReader
from push.mailfacts import MailFactError, MissingNetworkMessageId, mail_fact
from push.notification import Notification, parse_notification

log = logging.getLogger(__name__)
SOURCE = "push"

# What became of one queue message (PushResult.outcome); the app counts them in telemetry.
OUTCOMES = ("requests", "no_match", "gone", "forged", "not_protected", "no_network_message_id",
            "bad_message", "graph_refused", "lifecycle", "lifecycle_unhandled")


@dataclass
class PushRun:
    """One rule's findings for one message: what ``emit`` receives (a scan's RuleRun, for one mail)."""

    rule: Rule
    rows: list[dict[str, Any]]
    requests: list[dict[str, Any]]
    problems: list[str]
    run_id: str
    fact: MailFact


@dataclass
class PushResult:
    notification: Notification
    outcome: str
    detail: str = ""
    runs: list[PushRun] = field(default_factory=list)

    @property
    def requests(self) -> list[dict[str, Any]]:
        return [r for run in self.runs for r in run.requests]


Emit = Callable[[PushRun], Awaitable[None]]
OnLifecycle = Callable[[Notification], Awaitable[None]]
StateFor = Callable[[str], StreamState]


class PushWorker:
    """Everything it needs is passed in (tests pass fakes; app/push_worker.py wires the real ones)."""

    def __init__(self, *, graph: Any, subscriptions: SubscriptionLookup, state_for: StateFor,
                 catalog: Mapping[str, Rule], streaming: Mapping[str, Observe], tenant: TenantConfig,
                 emit: Emit, on_lifecycle: OnLifecycle | None = None, dry_run: bool = False,
                 tenant_id: str = "", clock: Callable[[], datetime] = lambda: datetime.now(UTC)) -> None:
        self.reader = graph if isinstance(graph, MessageReader) else MessageReader(graph)
        self.subscriptions = subscriptions
        self.state_for = state_for
        self.catalog = catalog
        self.streaming = streaming
        self.tenant = tenant
        self.emit = emit
        self.on_lifecycle = on_lifecycle
        self.dry_run = dry_run
        self.tenant_id = tenant_id.lower()
        self.clock = clock
        self._params: dict[str, dict[str, Any] | None] = {}

    async def process(self, body: str | bytes) -> PushResult:
        n = parse_notification(body)   # NotificationInvalid: the caller drops it
        if self.tenant_id and n.tenant_id and n.tenant_id != self.tenant_id:
            return self._drop(n, "forged", "another tenant's notification")
        if n.kind == "lifecycle":
            if self.on_lifecycle is None:
                log.warning("push: %s: no lifecycle handler wired; ignored", n.describe())
                return PushResult(n, "lifecycle_unhandled")
            await self.on_lifecycle(n)
            return PushResult(n, "lifecycle")
        sub = await self.subscriptions.by_id(n.subscription_id)
        if sub is None:
            return self._drop(n, "forged", "no such subscription of ours")
        if sub.user_id.lower() != n.user_id:
            return self._drop(n, "forged", "the subscription watches another mailbox")
        rules = self._rules_for(sub)
        if not rules:
            log.info("push: %s: mailbox %s is protected by no streaming rule now; nothing read",
                     n.describe(), sub.mailbox)
            return PushResult(n, "not_protected")
        try:
            message = await self.reader.message(sub.user_id, n.message_id)
            if message is None:
                return PushResult(n, "gone", "moved or deleted before it was read")
            inbox = await self.reader.inbox_id(sub.user_id) if sub.folder == "inbox" else ""
        except GraphRefused as exc:
            log.error("push: %s: Graph refused (%s); check the app's Mail.Read grant and its RBAC scope on "
                      "%s", n.describe(), exc, sub.mailbox)
            return PushResult(n, "graph_refused", str(exc))
        try:
            fact = mail_fact(message, subscription=sub, inbox_folder_id=inbox)
        except MissingNetworkMessageId as exc:
            log.warning("push: %s in %s: %s: no fact, no request (the request id needs it); the scheduled "
                        "path still sees the message", n.describe(), sub.mailbox, exc)
            return PushResult(n, "no_network_message_id", str(exc))
        except MailFactError as exc:
            log.warning("push: %s in %s: unusable message: %s", n.describe(), sub.mailbox, exc)
            return PushResult(n, "bad_message", str(exc))
        runs = []
        for rule, params, observe in rules:
            rows = await observe(fact, params, self.state_for(rule.slug))
            if rows:
                runs.append(self._requests(rule, rows, fact))
        for run in runs:
            if run.problems:
                log.warning("push: %s: %s", run.rule.slug, "; ".join(run.problems[:5]))
            if run.requests:
                await self.emit(run)
        return PushResult(n, "requests" if any(r.requests for r in runs) else "no_match", runs=runs)

    def _drop(self, n: Notification, outcome: str, why: str) -> PushResult:
        log.warning("push: %s dropped: %s (forged or stale)", n.describe(), why)
        return PushResult(n, outcome, why)

    def _rules_for(self, sub: Subscription) -> list[tuple[Rule, dict[str, Any], Observe]]:
        out = []
        mailbox = sub.mailbox.strip().lower()
        for slug, observe in self.streaming.items():
            rule = self.catalog.get(slug)
            params = self._resolved(slug) if rule is not None else None
            if rule is None or params is None:
                continue
            protected = {str(p).strip().lower() for p in params.get("protected_recipients") or ()}
            if mailbox in protected:
                out.append((rule, params, observe))
        return out

    def _resolved(self, slug: str) -> dict[str, Any] | None:
        """The rule's parameters as a scheduled run resolves them (None: disabled or not resolvable)."""
        if slug not in self._params:
            rule = self.catalog[slug]
            if not self.tenant.for_rule(slug).enabled:
                self._params[slug] = None
            else:
                try:
                    self._params[slug] = resolve_params(rule, self.tenant, {})
                except ParamError as exc:
                    log.error("push: rule %s: parameters do not resolve (%s); its streaming form is off",
                              slug, exc)
                    self._params[slug] = None
        return self._params[slug]

    def _requests(self, rule: Rule, rows: list[dict[str, Any]], fact: MailFact) -> PushRun:
        tenant_mode = self.tenant.for_rule(rule.slug).mode
        modes = {i: effective_mode(rule, a, tenant_mode=tenant_mode, dry_run=self.dry_run)
                 for i, a in enumerate(rule.actions)}
        run_id = uuid.uuid4().hex
        found = requests_from_rows(rule, rows, modes=modes, detected_at=self.clock().astimezone(UTC),
                                   run_id=run_id, source=SOURCE)
        return PushRun(rule=rule, rows=list(rows), requests=found.requests, problems=found.problems,
                       run_id=run_id, fact=fact)
