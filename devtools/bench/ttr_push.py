"""The push path in the time-to-remediate benchmark: an event simulation on the ttr arrival traces.

Each copy that lands in a protected mailbox's Inbox is announced by a Graph change notification after
``devtools.pushlatency.draw_latency`` (documented: average under 1 minute, at most 3 minutes,
https://learn.microsoft.com/graph/change-notifications-overview#latency). A dropped notification is
never delivered; Graph sends a ``missed`` lifecycle notification instead (its latency drawn the same
way), and the push path resynchronises that mailbox's Inbox with a delta query from its last delta
link, which returns every message still in the Inbox that arrived since then
(https://learn.microsoft.com/graph/change-notifications-lifecycle-events,
https://learn.microsoft.com/graph/delta-query-overview). Each message reaches the streaming rule (the
real ``Observe``, ``detections.streaming.registry.STREAMING[slug]``) as a ``MailFact``; its rows become
requests through ``detections.findings.requests_from_rows`` exactly as the scheduled path's rows do
(same ids, so a copy found twice is acted on once), and each new request is a mailbox-strategy move.

The hot-campaign sweep (push/sweep.py, modelled with its own ``SWEEP_EVERY``, ``hot_window`` and
``hot_until`` so the model and the product cannot drift): when the rule returns rows, each campaign they
name gets a sweep chain (or its hot-until moved later): a sweep at flag time (one queue put and hop), then
one every ``SWEEP_EVERY`` (the successor's visibility delay, then the queue hop) while the previous ran
before hot-until. A sweep reads the marker and claims its step (two Table operations, one queue put), then
resyncs every protected Inbox at once (one delta page each) from the folder's delta link, the same link a
``missed`` resync uses; each message found is read and observed like a notified one.

Processing latencies (``Latencies``, seconds, uniform draws; the figures and where they come from):

* queue hop (endpoint -> push worker, and request -> remediation worker): 0-5 s. Our host.json sets the
  queue trigger's ``maxPollingInterval`` to 5 s: an idle queue is polled at most that far apart
  (https://learn.microsoft.com/azure/azure-functions/functions-bindings-storage-queue#polling-algorithm).
* endpoint (clientState check, one queue put) and each queue put: 0.03-0.3 s. The pipeline benchmark
  (BENCHMARKS.md, "Pipeline overhead") enqueued 18 requests in 0.41 s against Azurite, ~23 ms a put;
  the upper end allows for a storage account over the network.
* Graph call (GET of the message with ``$select``, a delta page, the move's lookup and the move):
  0.1-1.0 s each. Microsoft documents no latency; the throughput benchmark's calls against the local fake
  take ~10 ms (10,000 moves, 20,100 calls in 160 s at 20 in flight), so this is that plus a round trip
  to Graph, an assumption stated as such.
* state read or write (push state, subscription row, ledger write of a request): 0.01-0.08 s each
  (Table storage point operations; the pipeline benchmark's queue worker does its ledger work in
  30-40 ms a request against Azurite).
* remediation worker per request: 0.03-0.04 s of its own (pipeline benchmark: 30.4-40.3 ms a request),
  then the mailbox strategy's two Graph calls (lookup by internetMessageId, move).

Nothing here contends for a resource: a campaign is six moves, far below Outlook's 4 concurrent requests
and 10,000 per 10 minutes per mailbox that the throughput benchmark exercises.
"""

from __future__ import annotations

import heapq
import itertools
import random
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from typing import Any

from detections.catalog import Rule
from detections.findings import requests_from_rows
from detections.streaming import MailFact, MemoryState, Observe
from detections.streaming.tables import facts_from_tables
from devtools.pushlatency import draw_latency
from push.sweep import SWEEP_EVERY, campaigns, hot_until, hot_window


@dataclass(frozen=True)
class Latencies:
    queue_hop: tuple[float, float] = (0.0, 5.0)
    queue_put: tuple[float, float] = (0.03, 0.3)
    graph_call: tuple[float, float] = (0.1, 1.0)
    state_op: tuple[float, float] = (0.01, 0.08)
    worker: tuple[float, float] = (0.03, 0.04)


@dataclass
class InboxCopy:
    """One message as one protected mailbox holds it."""

    fact: MailFact
    arrived: datetime
    campaign: bool  # one of the trace's campaign copies (the rest is background mail)
    moved: datetime | None = None
    requested: datetime | None = None
    dropped: bool = False  # its change notification was never delivered

    @property
    def key(self) -> tuple[str, str]:
        return (self.fact.network_message_id, self.fact.mailbox)


@dataclass
class PushOutcome:
    copies: list[InboxCopy]
    notifications: int = 0  # change notifications Graph meant to send
    dropped: int = 0
    dropped_campaign: int = 0  # of which the campaign's copies
    missed_resyncs: int = 0
    resync_messages: int = 0  # messages the delta resyncs handed to the worker again
    sweeps: int = 0  # sweep messages processed (hot-campaign sweep)
    sweep_delta_calls: int = 0  # delta rounds those sweeps ran (one per protected Inbox each)
    sweep_messages: int = 0  # messages the sweeps handed to the worker
    false_positive_rows: int = 0
    observe_calls: int = 0
    request_ids: set[str] = field(default_factory=set)


def fact_from_row(row: Mapping[str, Any], ts: datetime, protected: Iterable[str]) -> MailFact:
    """What the push worker builds from the Graph message of this EmailEvents row's Inbox copy: the
    streaming rules' own rows -> facts converter, less what Graph does not have (EmailClusterId,
    ReportId)."""
    mailbox = str(row["RecipientEmailAddress"]).lower()
    facts = [f for f in facts_from_tables({"EmailEvents": [{**row, "Timestamp": ts}]}, ts, protected)
             if f.mailbox == mailbox and f.direction.lower() != "outbound"]
    if len(facts) != 1:
        raise ValueError(f"{row.get('NetworkMessageId')!r}: not one protected Inbox copy for {mailbox!r}")
    return replace(facts[0], cluster_id="", report_id="")


def _u(rng: random.Random, bounds: tuple[float, float]) -> timedelta:
    return timedelta(seconds=rng.uniform(*bounds))


async def simulate_push(
    copies: Sequence[InboxCopy],
    *,
    rule: Rule,
    observe: Observe,
    params: Mapping[str, Any],
    drop_rate: float,
    seed: int,
    horizon: datetime,
    delta_since: datetime,
    latencies: Latencies = Latencies(),
    sweep: bool = True,
) -> PushOutcome:
    """Deliver every copy's notification (or drop it and resync through ``missed``), run the streaming
    rule on each message the worker reads, move every copy it returns, and (``sweep``) sweep the protected
    Inboxes while a flagged campaign is hot. ``copies`` may hold background mail; only Inbox copies belong
    here (an Inbox subscription hears of nothing else).

    The notification latencies come from their own generator (``seed``), drawn in the copies' order
    before anything else, so two runs of one trace that differ only in ``drop_rate`` share them.
    """
    lat_rng = random.Random(seed)
    drop_rng = random.Random(seed + 1)
    rng = random.Random(seed + 2)
    state = MemoryState()
    out = PushOutcome(list(copies))
    by_key = {c.key: c for c in out.copies}
    by_mailbox: dict[str, list[InboxCopy]] = {}
    for c in out.copies:
        by_mailbox.setdefault(c.fact.mailbox, []).append(c)
    last_link = dict.fromkeys(by_mailbox, delta_since)
    protected = sorted({str(m).strip().lower() for m in params.get("protected_recipients") or ()})
    window = hot_window(params) if sweep else None
    hot: dict[str, datetime] = {}  # campaign key -> hot-until of its running chain (the marker row)
    seq = itertools.count()
    events: list[tuple[datetime, int, str, Any]] = []

    def at(when: datetime, kind: str, payload: Any) -> None:
        if when <= horizon:
            heapq.heappush(events, (when, next(seq), kind, payload))

    ordered = sorted(out.copies, key=lambda c: (c.arrived, c.key))
    latency = {c.key: timedelta(seconds=draw_latency(lat_rng)) for c in ordered}
    for c in ordered:
        out.notifications += 1
        if drop_rate and drop_rng.random() < drop_rate:
            out.dropped += 1
            out.dropped_campaign += c.campaign
            c.dropped = True
            # Graph tells of the loss with a `missed` lifecycle notification (no message id in it).
            at(c.arrived + timedelta(seconds=draw_latency(drop_rng)), "missed", c.fact.mailbox)
        else:
            at(c.arrived + latency[c.key], "change", c)

    def resync(mailbox: str, t2: datetime) -> list[InboxCopy]:
        """One delta round of the mailbox's Inbox answered at ``t2``: what arrived since the last one."""
        since, last_link[mailbox] = last_link.get(mailbox, delta_since), t2 + _u(rng, latencies.state_op)
        # Messages moved out of the Inbox since come back as @removed: nothing to do for them.
        return [c for c in by_mailbox.get(mailbox, ())
                if since < c.arrived <= t2 and (c.moved is None or c.moved > t2)]

    while events:
        t, _, kind, payload = heapq.heappop(events)
        if kind == "sweep":  # marker read + claim, successor put, then every protected Inbox at once
            out.sweeps += 1
            key = payload
            t1 = t + _u(rng, latencies.state_op) + _u(rng, latencies.state_op)
            if t < hot[key]:
                nxt = t1 + _u(rng, latencies.queue_put) + SWEEP_EVERY  # visible after the delay
                at(nxt + _u(rng, latencies.queue_hop), "sweep", key)
            else:
                del hot[key]  # the chain ends (marker deleted): the next flag starts another
            for mailbox in protected:
                out.sweep_delta_calls += 1
                t2 = t1 + _u(rng, latencies.graph_call)
                for c in resync(mailbox, t2):
                    out.sweep_messages += 1
                    at(t2 + _u(rng, latencies.queue_put) + _u(rng, latencies.queue_hop), "read", c)
        elif kind == "change":  # endpoint: clientState check, one queue put; then the queue hop
            at(t + _u(rng, latencies.queue_put) + _u(rng, latencies.queue_hop), "read", payload)
        elif kind == "missed":  # endpoint, queue, then the resync: subscription row, delta page(s)
            out.missed_resyncs += 1
            t2 = (t + _u(rng, latencies.queue_put) + _u(rng, latencies.queue_hop)
                  + _u(rng, latencies.state_op) + _u(rng, latencies.graph_call))
            for c in resync(payload, t2):
                out.resync_messages += 1
                at(t2 + _u(rng, latencies.queue_put) + _u(rng, latencies.queue_hop), "read", c)
        elif kind == "read":  # push worker: GET the message, state load + save around the rule
            c = payload
            t2 = (t + _u(rng, latencies.graph_call) + _u(rng, latencies.state_op)
                  + _u(rng, latencies.state_op))
            in_inbox = c.moved is None or c.moved > t2
            fact = c.fact if in_inbox else _moved(c.fact)
            out.observe_calls += 1
            rows = await observe(fact, params, state)
            if not rows:
                continue
            if window is not None:  # start (or extend) each campaign's sweep: marker read + write
                for key, last in campaigns(rows).items():
                    until = hot_until(last, window, t2)
                    if key in hot:
                        hot[key] = max(hot[key], until)
                    elif until > t2:
                        hot[key] = until
                        at(t2 + _u(rng, latencies.state_op) * 2 + _u(rng, latencies.queue_put)
                           + _u(rng, latencies.queue_hop), "sweep", key)
            findings = requests_from_rows(rule, rows, modes={i: a.mode for i, a in enumerate(rule.actions)},
                                          detected_at=t2,
                                          run_id=f"push-{c.fact.network_message_id}")
            for req in findings.requests:
                target = req["target"]
                hit = by_key.get((target.get("network_message_id", ""), target.get("recipient", "").lower()))
                if hit is None or not hit.campaign:
                    out.false_positive_rows += 1
                if req["id"] in out.request_ids or hit is None:
                    continue  # the ledger keeps the first request with this id
                out.request_ids.add(req["id"])
                hit.requested = t2
                # register + queue the request, queue hop, worker, lookup and move (mailbox strategy)
                moved = (t2 + _u(rng, latencies.state_op) + _u(rng, latencies.queue_put)
                         + _u(rng, latencies.queue_hop) + _u(rng, latencies.worker)
                         + _u(rng, latencies.graph_call) + _u(rng, latencies.graph_call))
                if hit.moved is None or moved < hit.moved:
                    hit.moved = moved
    return out


def _moved(fact: MailFact) -> MailFact:
    return replace(fact, in_inbox=False)
