"""Time to remediate, simulated on the real rule and the real engine.

A consumer-sender campaign (the seed's shape: one message to three shared mailboxes, then three
separate messages within 20 minutes) arrives over the small sample tenant's background mail. Each
EmailEvents row becomes visible to hunting only after an ingestion delay (a few minutes, with a tail).
The rule (``consumer-sender-to-shared-mailboxes``, its real KQL on the local engine, ``now()`` pinned
to each run) runs on a schedule with a random phase; every copy it returns is remediated after a
latency; the move itself reaches EmailEvents after another ingestion delay, which is when the next
run's verification confirms it (and the rule stops returning it).

Variants on the same arrival traces:

* this app, every 5 minutes, Defender strategy (the Action center applies a move minutes later);
* this app, every 5 minutes, mailbox strategy (moved synchronously by the worker);
* the seed's custom detection: the same query every hour, remediated by Defender's own action;
* the push path (ttr_push.py: change notifications, the streaming form of the rule, mailbox-strategy
  moves), with 0% and 5% of notifications dropped (each drop answered by `missed` and a delta resync),
  also reported with the 5-min schedule beside it as its backstop.

Reported per variant (``python -m responder.bench ttr --json``): p50/p95/max of the time from the
evidence being complete (the copy that takes the campaign past the threshold) to the last copy in
Junk, of each copy's time in the Inbox, copies never moved and the notification drop rate; the report
adds the time from the first campaign mail to the last copy in Junk and to the last copy confirmed.
"""

from __future__ import annotations

import asyncio
import math
import random
import statistics
import tempfile
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from core.tenant import load_tenant_config
from detections.backends.kustonulls import fill_missing_strings
from detections.backends.local import LocalBackend
from detections.catalog import load_catalog
from detections.params import bind_query, resolve_params
from detections.streaming import Observe
from detections.streaming.registry import STREAMING
from devtools.bench.ttr_push import InboxCopy, fact_from_row, simulate_push
from devtools.sample import SAMPLE_NOW, generate
from devtools.sample.bulkload import bulk_load
from devtools.sample.rows import Mail, Recipient, email_rows

RULE = "consumer-sender-to-shared-mailboxes"
# The streaming form of RULE that the push variants run (detections.streaming, issue 15).
OBSERVE: Observe = STREAMING[RULE]
HORIZON = timedelta(hours=6)


@dataclass(frozen=True)
class Variant:
    name: str
    period: timedelta  # schedule
    verify: bool  # this app verifies; the seed's custom detection does not
    sync: bool  # the action confirms at once (mailbox strategy)
    apply_min: float  # seconds from the run to the message being in Junk
    apply_max: float
    # Parameter overrides: the seed's detection looks back one hour (its TimeSpan), this app's rule
    # reads its own lookback (correlation window plus an ingestion allowance).
    params: tuple[tuple[str, str], ...] = ()
    push: bool = False  # the push path (devtools/bench/ttr_push.py) instead of a schedule
    drop_rate: float = 0.0  # push: share of change notifications Graph never delivers


SCHEDULED_MAILBOX = "this app, 5-min schedule, mailbox strategy"
VARIANTS = (
    Variant("this app, 5-min schedule, Defender strategy", timedelta(minutes=5), True, False, 90.0, 300.0),
    Variant(SCHEDULED_MAILBOX, timedelta(minutes=5), True, True, 5.0, 30.0),
    Variant("seed: hourly custom detection", timedelta(hours=1), False, False, 90.0, 300.0,
            params=(("window", "1h"), ("correlation_window", "1h"))),
    # The push path moves with the mailbox strategy (its latencies: ttr_push.Latencies); the 5-min
    # schedule keeps running beside it in production, reported as its backstop.
    Variant("this app, push, mailbox strategy, 0% notifications dropped", timedelta(0), True, True, 0.0, 0.0,
            push=True),
    Variant("this app, push, mailbox strategy, 5% notifications dropped", timedelta(0), True, True, 0.0, 0.0,
            push=True, drop_rate=0.05),
)


def ingestion_delay(rng: random.Random) -> float:
    """Seconds from an event to its row being queryable: ~1 min floor, median ~3 min, 10% tail of 5-20 min."""
    delay = 60.0 + rng.lognormvariate(math.log(120.0), 0.5)
    if rng.random() < 0.10:
        delay += rng.uniform(300.0, 1200.0)
    return delay


@dataclass
class Copy:
    nmid: str
    recipient: str
    arrived: datetime
    ingested: datetime
    requested: datetime | None = None
    moved: datetime | None = None
    visible: datetime | None = None  # when EmailEvents shows the move
    confirmed: datetime | None = None


@dataclass
class Trace:
    first: datetime
    mails: list[Mail]
    ingest: dict[tuple[str, str], datetime] = field(default_factory=dict)


def make_trace(trial: int, protected: list[str]) -> Trace:
    rng = random.Random(1000 + trial)
    first = SAMPLE_NOW - timedelta(hours=8) + timedelta(seconds=rng.uniform(0, 3600))
    sender = f"campaign{trial}.desk@gmail.com"
    boxes = rng.sample(protected, 6)
    mails = [Mail(first, sender, sender, None, [Recipient(b) for b in boxes[:3]], "Quick question")]
    for b in boxes[3:]:
        mails.append(
            Mail(
                first + timedelta(seconds=rng.uniform(60, 1200)),
                sender,
                sender,
                None,
                [Recipient(b)],
                "Quick question",
            )
        )
    trace = Trace(first, mails)
    for k, m in enumerate(mails):
        m.network_message_id = f"campaign-{trial}-{k}"
        m.internet_message_id = f"<campaign-{trial}-{k}@mail.gmail.com>"
        m.cluster = 1
        for r in m.recipients:
            trace.ingest[(m.network_message_id, r.address)] = m.ts + timedelta(seconds=ingestion_delay(rng))
    return trace


class World:
    """One trial's tables: background mail plus the campaign, each row queryable from its ingestion time."""

    def __init__(self, background: Path, trace: Trace, campaign_senders: list[str]):
        self.backend = LocalBackend(None, SAMPLE_NOW)
        bulk_load(self.backend, background)
        con = self.backend.con
        self.cols = [c for c, _ in self.backend.schemas["EmailEvents"]]
        types = [t for _, t in self.backend.schemas["EmailEvents"]]
        names = ", ".join(f'"{c}"' for c in self.cols)
        self.names = names
        marks = ", ".join("?" for _ in campaign_senders) or "''"
        # Background rows: queryable three minutes after they happened (they never change the outcome).
        con.execute(
            f'CREATE TABLE "Staging" AS SELECT {names}, "Timestamp" + INTERVAL 3 MINUTE AS "IngestAt" '
            f'FROM "EmailEvents" WHERE "SenderMailFromAddress" NOT IN ({marks})',
            campaign_senders,
        )
        con.execute('DELETE FROM "EmailEvents"')
        rows = []
        for m in trace.mails:
            for row in email_rows(m):
                values = list(fill_missing_strings(types, [row.get(c) for c in self.cols]))
                values[self.cols.index("Timestamp")] = m.ts
                rows.append([*values, trace.ingest[(m.network_message_id, row["RecipientEmailAddress"])]])
        con.executemany(
            f'INSERT INTO "Staging" VALUES ({", ".join("?" for _ in range(len(self.cols) + 1))})', rows
        )
        self.until: datetime | None = None

    def ingest_until(self, moment: datetime) -> None:
        lo = self.until or datetime(1970, 1, 1, tzinfo=moment.tzinfo)
        self.backend.con.execute(
            f'INSERT INTO "EmailEvents" SELECT {self.names} FROM "Staging" '
            'WHERE "IngestAt" > ? AND "IngestAt" <= ?',
            [lo, moment],
        )
        self.until = moment

    def show_junk(self, nmid: str, recipient: str) -> None:
        for table in ("EmailEvents", "Staging"):  # a row not ingested yet arrives already moved
            self.backend.con.execute(
                f'UPDATE "{table}" SET "LatestDeliveryLocation" = \'Junk folder\' '
                'WHERE "NetworkMessageId" = ? AND "RecipientEmailAddress" = ?',
                [nmid, recipient],
            )

    def close(self) -> None:
        self.backend.con.close()


def simulate(variant: Variant, trace: Trace, world: World, query: str, trial: int,
             lookback: timedelta = timedelta(hours=1)) -> dict[str, Any]:
    rng = random.Random(5000 + trial)
    copies = {
        (m.network_message_id, r.address): Copy(
            m.network_message_id, r.address, m.ts, trace.ingest[(m.network_message_id, r.address)]
        )
        for m in trace.mails
        for r in m.recipients
    }
    phase = timedelta(seconds=rng.uniform(0, variant.period.total_seconds()))
    t = trace.first - variant.period + phase
    runs, false_positives = 0, 0
    while t < trace.first + HORIZON:
        t += variant.period
        runs += 1
        for c in copies.values():
            if c.visible is not None and c.visible <= t and not c.confirmed:
                world.show_junk(c.nmid, c.recipient)
        world.ingest_until(t)
        if variant.verify:
            for c in copies.values():
                if c.visible is not None and c.visible <= t and c.confirmed is None:
                    c.confirmed = t
        world.backend.now = t
        result = asyncio.run(world.backend.run(query, timespan=lookback))
        for row in result.rows:
            c = copies.get((row["NetworkMessageId"], row["RecipientEmailAddress"]))
            if c is None:
                false_positives += 1
                continue
            if c.requested is None:  # later runs return it again until the move shows: the ledger dedups
                c.requested = t
                c.moved = t + timedelta(seconds=rng.uniform(variant.apply_min, variant.apply_max))
                c.visible = c.moved + timedelta(seconds=ingestion_delay(rng))
                if variant.sync or not variant.verify:
                    c.confirmed = c.moved  # synchronous move (or nothing to confirm: the seed's action)
        if all(c.confirmed is not None for c in copies.values()):
            break
    done = all(c.moved is not None for c in copies.values())
    return {
        "junk_s": (max(c.moved for c in copies.values()) - trace.first).total_seconds() if done else None,
        "confirmed_s": (max(c.confirmed for c in copies.values()) - trace.first).total_seconds()  # type: ignore[type-var]
        if done and variant.verify
        else None,
        "missed": sum(c.moved is None for c in copies.values()),
        # per copy: how long it sat in an Inbox (the user's exposure), None if never moved
        "exposure_s": [(c.moved - c.arrived).total_seconds() if c.moved else None for c in copies.values()],
        "runs": runs,
        "false_positives": false_positives,
        "copies": [(c.recipient, c.arrived, c.moved) for c in copies.values()],
    }


def _pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, math.ceil(q * len(ordered)) - 1))]


def _stats(values: list[float]) -> dict[str, float] | None:
    if not values:
        return None
    return {
        "p50_min": statistics.median(values) / 60,
        "p95_min": _pct(values, 0.95) / 60,
        "max_min": max(values) / 60,
    }


def evidence_complete(copies: list[tuple[str, datetime]], threshold: int,
                      window: timedelta) -> datetime | None:
    """When the campaign crossed the rule's threshold: the arrival of the copy that made more than
    ``threshold`` distinct mailboxes fall within ``window`` (the rule's sliding window), None if never."""
    ordered = sorted(copies, key=lambda c: c[1])
    for _, last in ordered:
        if len({m for m, t in ordered if last - window <= t <= last}) > threshold:
            return last
    return None


def outcome(copies: list[tuple[str, datetime, datetime | None]], evidence: datetime | None) -> dict[str, Any]:
    """One trial's figures from its copies (mailbox, arrived, moved).

    ``evidence_s``: from the evidence being complete to the last copy in Junk, each copy counted from
    when it could be known (its own arrival when it came after the evidence): the longest over the
    copies of moved - max(evidence, arrived). ``evidence_to_last_s``: plainly the last copy's move
    minus the evidence, which also counts the campaign's later copies' arrival (up to 20 minutes)."""
    done = evidence is not None and all(m is not None for _, _, m in copies)
    return {
        "evidence_s": max((m - max(evidence, a)).total_seconds() for _, a, m in copies)  # type: ignore[operator,type-var]
        if done else None,
        "evidence_to_last_s": (max(m for _, _, m in copies) - evidence).total_seconds()  # type: ignore[type-var,operator]
        if done else None,
        "inbox_s": [(m - a).total_seconds() for _, a, m in copies if m is not None],
        "missed": sum(m is None for _, _, m in copies),
    }


def _seconds(values: list[float]) -> dict[str, float | None]:
    if not values:  # nothing to measure (every trial left a copy unmoved): the shape stays
        return {"p50": None, "p95": None, "max": None}
    return {"p50": statistics.median(values), "p95": _pct(values, 0.95), "max": max(values)}


def background_inbox_rows(tables_dir: Path, protected: list[str], planted: list[str]) -> list[dict[str, Any]]:
    """The sample tenant's mail that lands in a protected mailbox's Inbox (what its Inbox subscription
    hears of besides the campaign), without the tenant's own planted campaigns (as World does)."""
    backend = LocalBackend(None, SAMPLE_NOW)
    try:
        bulk_load(backend, tables_dir)
        cur = backend.con.execute(
            'SELECT * FROM "EmailEvents" WHERE lower("RecipientEmailAddress") IN '
            f'({", ".join("?" for _ in protected)}) AND "LatestDeliveryLocation" = \'Inbox/folder\' '
            f'AND "EmailDirection" <> \'Outbound\' AND "SenderMailFromAddress" NOT IN '
            f'({", ".join("?" for _ in planted)})',
            [*protected, *planted],
        )
        names = [d[0] for d in cur.description]
        return [dict(zip(names, row, strict=True)) for row in cur.fetchall()]
    finally:
        backend.con.close()


def push_copies(trace: Trace, background: list[dict[str, Any]], since: datetime,
                protected: list[str]) -> list[InboxCopy]:
    """The Inbox copies a push trial delivers: the campaign's and the background's from ``since`` on."""
    out = []
    for m in trace.mails:
        for row in email_rows(m):
            out.append(InboxCopy(fact_from_row(row, m.ts, protected), m.ts, campaign=True))
    for row in background:
        ts = row["Timestamp"]
        if since <= ts <= trace.first + HORIZON:
            out.append(InboxCopy(fact_from_row(row, ts, protected), ts, campaign=False))
    return out


def run(trials: int = 30, observe: Observe | None = None, push_trials: int = 1000) -> dict[str, Any]:
    """``trials`` traces through every variant; the push variants, cheap to simulate, also run on
    ``push_trials`` traces (the first ``trials`` of them the same) for a steadier p95."""
    rule = load_catalog()[RULE]
    observe = observe or OBSERVE
    with tempfile.TemporaryDirectory(prefix="bench-ttr-") as tmp:
        gen = generate(Path(tmp), size="small")
        tenant = load_tenant_config(gen.tenant_path)
        bound = {v.name: resolve_params(rule, tenant, dict(v.params)) for v in VARIANTS}
        queries = {name: bind_query(rule, values) for name, values in bound.items()}
        protected = list(gen.truth["protected_mailboxes"])
        planted = ["recruiting.desk.eu@gmail.com", "d.okafor.orders@outlook.com"]
        background = background_inbox_rows(gen.tables_dir, protected, planted)
        per_variant: dict[str, list[dict[str, Any]]] = {v.name: [] for v in VARIANTS}
        delays = []
        for trial in range(trials):
            trace = make_trace(trial, protected)
            delays += [
                (i - m.ts).total_seconds()
                for m in trace.mails
                for (n, _), i in trace.ingest.items()
                if n == m.network_message_id
            ]
            for v in VARIANTS:
                params = bound[v.name]
                campaign = [(r.address.lower(), m.ts) for m in trace.mails for r in m.recipients]
                evidence = evidence_complete(campaign, params["threshold"], params["correlation_window"])
                if v.push:
                    per_variant[v.name].append(run_push(v, trace, background, rule, observe, params, trial,
                                                        evidence))
                    continue
                world = World(gen.tables_dir, trace, planted)
                try:
                    res = simulate(v, trace, world, queries[v.name], trial, params["window"])
                finally:
                    world.close()
                res.update(outcome(res["copies"], evidence))
                per_variant[v.name].append(res)
        for v in VARIANTS:  # the schedule beside the push path: each copy moved by whichever came first
            if v.push:
                for res, sched in zip(per_variant[v.name], per_variant[SCHEDULED_MAILBOX], strict=True):
                    res["backstop"] = backstop(res, sched)
        pushed = [v for v in VARIANTS if v.push]
        more: dict[str, list[dict[str, Any]]] = {v.name: list(per_variant[v.name]) for v in pushed}
        for trial in range(trials, push_trials):
            trace = make_trace(trial, protected)
            campaign = [(r.address.lower(), m.ts) for m in trace.mails for r in m.recipients]
            for v in pushed:
                params = bound[v.name]
                evidence = evidence_complete(campaign, params["threshold"], params["correlation_window"])
                more[v.name].append(run_push(v, trace, background, rule, observe, params, trial, evidence))
    out: dict[str, Any] = {
        "trials": trials,
        "observe": f"{observe.__module__}.{observe.__qualname__}",
        "copies_per_trial": 6,
        "ingestion_delay_min": {
            "p50": statistics.median(delays) / 60,
            "p90": _pct(delays, 0.9) / 60,
            "max": max(delays) / 60,
        },
        "variants": [],
    }
    for v in VARIANTS:
        res = per_variant[v.name]
        row: dict[str, Any] = {
            "name": v.name,
            "evidence_to_junk_s": _seconds([r["evidence_s"] for r in res if r["evidence_s"] is not None]),
            "inbox_time_s": _seconds([e for r in res for e in r["inbox_s"]]),
            "copies_never_moved": sum(r["missed"] for r in res),
            # the variant's drop rate (0 for the scheduled ones, which hear of no notification)
            "dropped_notifications": v.drop_rate,
            "evidence_to_last_copy_junk_s": _seconds([r["evidence_to_last_s"] for r in res
                                                      if r["evidence_to_last_s"] is not None]),
            "to_junk": _stats([r["junk_s"] for r in res if r["junk_s"] is not None]),
            "per_copy_in_inbox": _stats([e for r in res for e in r["exposure_s"] if e is not None]),
            "trials_with_missed_copies": sum(1 for r in res if r["missed"]),
            "false_positive_rows": sum(r["false_positives"] for r in res),
        }
        if v.push:
            row.update(push_summary(res))
            big = more[v.name]
            row["push_alone_more_traces"] = {
                "trials": len(big),
                "evidence_to_junk_s": _seconds([r["evidence_s"] for r in big if r["evidence_s"] is not None]),
                "inbox_time_s": _seconds([e for r in big for e in r["inbox_s"]]),
                "copies_never_moved": sum(r["missed"] for r in big),
                "dropped_campaign_notifications": sum(r["dropped_campaign"] for r in big),
                # the copies whose notification was lost: found by `missed` + delta resync (or by an
                # earlier resync of their mailbox)
                "dropped_copies_inbox_time_s": _seconds([e for r in big for e in r["dropped_inbox_s"]]),
            }
        else:
            row.update({
                "schedule_min": v.period.total_seconds() / 60,
                "apply_s": [v.apply_min, v.apply_max],
                "to_confirmed": _stats([r["confirmed_s"] for r in res if r["confirmed_s"] is not None]),
                "rule_runs_median": statistics.median(r["runs"] for r in res),
            })
        out["variants"].append(row)
    return out


def run_push(v: Variant, trace: Trace, background: list[dict[str, Any]], rule: Any, observe: Observe,
             params: dict[str, Any], trial: int, evidence: datetime | None) -> dict[str, Any]:
    since = trace.first - params["window"]  # the subscriptions' last delta link predates the trial
    copies = push_copies(trace, background, since, params["protected_recipients"])
    res = asyncio.run(simulate_push(copies, rule=rule, observe=observe,
                                    params=params, drop_rate=v.drop_rate, seed=7000 + trial,
                                    horizon=trace.first + HORIZON, delta_since=since))
    campaign = [c for c in res.copies if c.campaign]
    moved = [c.moved for c in campaign if c.moved is not None]
    found = outcome([(c.fact.mailbox, c.arrived, c.moved) for c in campaign], evidence)
    return {
        **found,
        "copies": [(c.fact.mailbox, c.arrived, c.moved) for c in campaign],
        "keys": [c.key for c in campaign],
        "junk_s": (max(moved) - trace.first).total_seconds() if len(moved) == len(campaign) else None,
        "exposure_s": [(c.moved - c.arrived).total_seconds() if c.moved else None for c in campaign],
        "false_positives": res.false_positive_rows,
        "notifications": res.notifications,
        "dropped": res.dropped,
        "dropped_campaign": res.dropped_campaign,
        "dropped_inbox_s": [(c.moved - c.arrived).total_seconds() for c in campaign if c.dropped and c.moved],
        "missed_resyncs": res.missed_resyncs,
        "resync_messages": res.resync_messages,
        "sweeps": res.sweeps,
        "sweep_delta_calls": res.sweep_delta_calls,
        "sweep_messages": res.sweep_messages,
        "observe_calls": res.observe_calls,
        "evidence": evidence,
    }


def backstop(push: dict[str, Any], sched: dict[str, Any]) -> dict[str, Any]:
    """The push trial with the 5-min schedule (mailbox strategy) running beside it on the same trace:
    a copy is in Junk when the first of the two moved it (the ledger dedups the second request)."""
    later = {(m.lower(), a): moved for m, a, moved in sched["copies"]}
    merged, by_schedule, caught_later = [], 0, 0
    for mailbox, arrived, moved in push["copies"]:
        other = later.get((mailbox, arrived))
        first = min((t for t in (moved, other) if t is not None), default=None)
        if other is not None and (moved is None or other < moved):
            by_schedule += 1
            caught_later += moved is None
        merged.append((mailbox, arrived, first))
    return {**outcome(merged, push["evidence"]), "first_by_schedule": by_schedule,
            "caught_by_schedule": caught_later}


def push_summary(res: list[dict[str, Any]]) -> dict[str, Any]:
    both = [r["backstop"] for r in res]
    return {
        "notifications": sum(r["notifications"] for r in res),
        "dropped_notifications_count": sum(r["dropped"] for r in res),
        "dropped_campaign_notifications": sum(r["dropped_campaign"] for r in res),
        "missed_resyncs": sum(r["missed_resyncs"] for r in res),
        "resync_messages": sum(r["resync_messages"] for r in res),
        # the hot-campaign sweep (push/sweep.py): sweep messages, their delta rounds, messages they found
        "sweeps": sum(r["sweeps"] for r in res),
        "sweep_delta_calls": sum(r["sweep_delta_calls"] for r in res),
        "sweep_messages": sum(r["sweep_messages"] for r in res),
        "observe_calls": sum(r["observe_calls"] for r in res),
        "with_schedule_backstop": {
            "evidence_to_junk_s": _seconds([b["evidence_s"] for b in both if b["evidence_s"] is not None]),
            "inbox_time_s": _seconds([e for b in both for e in b["inbox_s"]]),
            "copies_never_moved": sum(b["missed"] for b in both),
            "copies_moved_first_by_schedule": sum(b["first_by_schedule"] for b in both),
            "copies_push_never_moved_caught_by_schedule": sum(b["caught_by_schedule"] for b in both),
        },
    }
