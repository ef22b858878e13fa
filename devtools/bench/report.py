"""BENCHMARKS.md from the figures: what was measured, how, with the command and the machine."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any


def _f(value: Any, digits: int = 2) -> str:
    if value is None:
        return "n/a"
    if isinstance(value, float):
        return f"{value:,.{digits}f}"
    if isinstance(value, int):
        return f"{value:,}"
    return str(value)


def render(results: dict[str, Any], *, command: str, machine: dict[str, str], elapsed_s: float) -> str:
    lines = [
        "# Benchmarks",
        "",
        f"Produced by `{command}` on {datetime.now(UTC):%Y-%m-%d %H:%M} UTC in {elapsed_s:,.0f} s. "
        "Figures are measurements of this one machine (shared with other work while it ran), not "
        "guarantees; the test suite asserts behaviour only.",
        "",
        "## Machine",
        "",
        "| | |",
        "|---|---|",
    ]
    lines += [f"| {k} | {v} |" for k, v in machine.items()]
    lines.append("")
    for name, section in (
        ("ttr", _ttr),
        ("pipeline", _pipeline),
        ("throughput", _throughput),
        ("engine", _engine),
        ("coldstart", _coldstart),
        ("quality", _quality),
        ("chaos", _chaos),
    ):
        if name in results:
            lines += section(results[name])
            lines.append("")
    return "\n".join(lines).rstrip() + "\n"


def _ttr(r: dict[str, Any]) -> list[str]:
    d = r["ingestion_delay_min"]
    out = [
        "## Time to remediate (simulated)",
        "",
        f"{r['trials']} seeded trials of the seed's campaign ({r['copies_per_trial']} copies: one message "
        "to three "
        "shared mailboxes, then three separate messages within 20 minutes) over the small sample tenant's "
        "background mail. Each row becomes queryable after an ingestion delay (this run: median "
        f"{d['p50']:.1f} min, p90 {d['p90']:.1f} min, max {d['max']:.1f} min). The real rule "
        "(`consumer-sender-to-shared-mailboxes`: copies within a 1-hour correlation window, read over a "
        "2-hour lookback that allows for ingestion delay; the seed's variant reads the seed's 1-hour "
        "lookback) runs on the real engine with `now()` pinned "
        "to each scheduled run (random phase); each copy it returns is moved after the variant's latency, "
        "and the move reaches EmailEvents after another ingestion delay, which is when verification "
        "confirms it. Same arrival traces for every variant.",
        "",
        "The push variants (devtools/bench/ttr_push.py) run on the same traces: each copy that lands in a "
        "protected Inbox (the campaign's and the background mail's) is announced by a change notification "
        "after the documented latency model (`devtools.pushlatency`: average under 1 minute, at most 3); "
        "a dropped notification is never delivered and a `missed` lifecycle notification (same latency "
        "model) makes the worker resynchronise that mailbox's Inbox with a delta query from its last "
        "delta link. Once the rule flags a campaign, the hot-campaign sweep (push/sweep.py, modelled with "
        "its own `SWEEP_EVERY` and hot-until) resyncs every protected Inbox the same way at flag time and "
        "then every 60 s while the campaign is hot (last flagged copy + `correlation_window`), so a later "
        "copy is read without waiting for its own notification. Every message read goes through the "
        "streaming form of the rule "
        f"(`{r.get('observe', 'detections.streaming')}`, parameters resolved from the rule YAML and the "
        "sample tenant as for the scheduled variants), its rows become requests through "
        "`requests_from_rows` (same ids as the scheduled path), each new one a mailbox-strategy move. "
        "Queue hops 0-5 s (host.json `maxPollingInterval`), queue puts 0.03-0.3 s, Graph calls "
        "0.1-1.0 s, Table operations 0.01-0.08 s, worker 30-40 ms a request: where each figure comes "
        "from is in that module's docstring.",
        "",
        "Evidence complete is the arrival of the copy that takes the campaign past the rule's threshold "
        "(more than `threshold` distinct protected mailboxes within `correlation_window`; here the first "
        "message's three copies). Evidence complete -> last copy in Junk is the longest, over the "
        "campaign's copies, of the time from when the copy could be known (the evidence, or the copy's "
        "own arrival when it came later) to its move; over trials where every copy was moved. The plain "
        "difference (last copy's move minus the evidence) also counts the later copies' arrival, up to "
        "20 minutes after the first, and is in the JSON as `evidence_to_last_copy_junk_s`. Each copy's "
        "time in the Inbox is over the copies that were moved; those never moved (within 6 hours) are "
        "counted apart.",
        "",
        "| variant | evidence complete -> last copy in Junk (p50 / p95 / max, s) "
        "| each copy's time in the Inbox (p50 / p95 / max, s) | copies never moved (6 h) "
        "| notifications dropped | first mail -> last copy in Junk (p50 / p95 / max, min) "
        "| first mail -> last copy confirmed (min) |",
        "|---|---|---|---|---|---|---|",
    ]
    for v in r["variants"]:
        if "apply_s" in v:
            name = f"{v['name']} (move applied {v['apply_s'][0]:.0f}-{v['apply_s'][1]:.0f} s after the run)"
            dropped = "n/a"
        else:
            name = v["name"]
            dropped = (f"{v['dropped_notifications']:.0%} ({v['dropped_notifications_count']} of "
                       f"{v['notifications']}; {v['missed_resyncs']} delta resyncs)")
        out.append(
            f"| {name} | {_secs(v['evidence_to_junk_s'])} | {_secs(v['inbox_time_s'])} | "
            f"{v['copies_never_moved']} ({v['trials_with_missed_copies']} of {r['trials']} trials) | "
            f"{dropped} | {_trio(v['to_junk'])} | {_trio(v.get('to_confirmed'))} |"
        )
    push = [v for v in r["variants"] if "with_schedule_backstop" in v]
    if push:
        out += [
            "",
            "The push path alone is what the table shows. In production the 5-min schedule keeps running "
            "beside it: with it as the backstop (each copy in Junk at the earlier of the two moves, from "
            "the mailbox-strategy scheduled variant on the same trace; the ledger dedups the second "
            "request):",
            "",
            "| push variant with the schedule beside it | evidence complete -> last copy in Junk (s) "
            "| each copy's time in the Inbox (s) | copies never moved | copies the schedule moved first "
            "| copies push never moved that the schedule caught |",
            "|---|---|---|---|---|---|",
        ]
        for v in push:
            b = v["with_schedule_backstop"]
            out.append(
                f"| {v['name']} | {_secs(b['evidence_to_junk_s'])} | {_secs(b['inbox_time_s'])} | "
                f"{b['copies_never_moved']} | {b['copies_moved_first_by_schedule']} | "
                f"{b['copies_push_never_moved_caught_by_schedule']} |"
            )
        n = push[0]["push_alone_more_traces"]["trials"]
        out += [
            "",
            f"With {r['trials']} trials the p95 is one of the slowest few, so the push variants (cheap to "
            f"simulate) also ran alone on {n} traces (the first {r['trials']} the ones above):",
            "",
            "| push variant, alone | trials | evidence complete -> last copy in Junk (s) "
            "| each copy's time in the Inbox (s) | copies never moved | campaign copies whose notification "
            "was dropped | their time in the Inbox (s) |",
            "|---|---|---|---|---|---|---|",
        ]
        for v in push:
            m = v["push_alone_more_traces"]
            out.append(f"| {v['name']} | {m['trials']} | {_secs(m['evidence_to_junk_s'])} | "
                       f"{_secs(m['inbox_time_s'])} | {m['copies_never_moved']} | "
                       f"{m['dropped_campaign_notifications']} | {_secs(m['dropped_copies_inbox_time_s'])} |")
        verdicts = []
        for v in push:
            for label, figures in ((f"{r['trials']} traces", v),
                                   (f"{n} traces", v["push_alone_more_traces"])):
                p95 = figures["evidence_to_junk_s"]["p95"]
                met = p95 is not None and p95 <= 180 and figures["copies_never_moved"] == 0
                verdicts.append(f"{v['name']}, {label}: p95 {_f(p95, 0)} s, {figures['copies_never_moved']} "
                                f"copies never moved: {'met' if met else 'NOT met'}")
        out += [
            "",
            "Targets (issue 15): push p95 evidence complete -> all copies in Junk <= 180 s and 0 copies "
            "never moved, including with 5% of notifications dropped. " + "; ".join(verdicts) + ". "
            "Graph's latency tail (documented maximum 3 minutes; the model puts about 1.5% of notifications "
            "there) now only matters before the flag: a copy that arrives after it is found by the next "
            "sweep, within 60 s plus the queue hop and Graph calls, whatever its notification does. What "
            "remains is the evidence itself: the campaign is flagged when the worker has read the copy that "
            "crosses the threshold (here the first message's three copies), so when one of those is "
            "announced at or near 180 s the flag and the moves come that plus a few seconds later (the "
            "max column). The sweep cannot start earlier without reading the Inboxes for senders that are "
            "not (yet) a campaign. A dropped notification costs a `missed` notification (same latency) and "
            "a delta resync, or is found sooner by a sweep when its campaign is hot.",
            "",
            "What the sweep costs, over the " + str(r["trials"]) + " traces: "
            + "; ".join(f"{v['name']}: {v['sweeps']} sweeps, {v['sweep_delta_calls']} delta calls "
                        f"({v['sweep_delta_calls'] / r['trials']:.0f} a campaign: one per protected Inbox "
                        f"per sweep while it is hot), {v['sweep_messages']} messages read again"
                        for v in push if "sweeps" in v) + ".",
        ]
    out += [
        "",
        "The hourly custom "
        "detection also misses copies outright: with a 1-hour lookback, a run that comes after the first "
        "message has aged out of the window no longer counts more than two copies for the sender. "
        "False-positive rows over all runs: "
        + ", ".join(f"{v['name']}: {v['false_positive_rows']}" for v in r["variants"])
        + ".",
    ]
    return out


def _secs(s: dict[str, float | None]) -> str:
    if s["p50"] is None or s["p95"] is None or s["max"] is None:
        return "n/a"
    return f"{s['p50']:.0f} / {s['p95']:.0f} / {s['max']:.0f}"


def _trio(s: dict[str, float] | None) -> str:
    if not s:
        return "n/a"
    return f"{s['p50_min']:.1f} / {s['p95_min']:.1f} / {s['max_min']:.1f}"


def _pipeline(r: dict[str, Any]) -> list[str]:
    d = r["demo"]
    t = d["timings_s"]
    out = [
        "## Pipeline overhead",
        "",
        f"The demo on the small tenant ({d['requests']} remediation requests; defender backend against "
        "the fake "
        "Graph, Azurite queue and ledger):",
        "",
        "| phase | seconds |",
        "|---|---|",
    ]
    out += [f"| {k} | {_f(v, 3)} |" for k, v in t.items()]
    out += [
        "",
        f"Scan + enqueue + remediate + verify: {_f(d['scan_queue_remediate_verify_s'], 2)} s; "
        "worker time per "
        f"request in the demo: {_f(1000 * (d['worker_s_per_request'] or 0), 0)} ms.",
        "",
        "The queue worker alone (`process_message` per request, Azurite ledger, Defender strategy "
        "against the "
        "fake Graph):",
        "",
        "| mode | requests | seconds | ms per request | remediate calls |",
        "|---|---|---|---|---|",
    ]
    for key, label in (
        ("worker_grouped", "run registered first (grouped submission)"),
        ("worker_one_call_each", "not registered (one call per message)"),
    ):
        w = r[key]
        out.append(
            f"| {label} | {w['requests']} | {_f(w['seconds'])} | {_f(w['ms_per_request'], 1)} | "
            f"{w['remediate_calls']} |"
        )
    out += [
        "",
        "Grouping is not about speed against a local fake (registering the run first costs one "
        "ledger write per request): it turns 200 Action-center entries into 2, under Defender's limit of "
        "50 active remediations per organisation.",
    ]
    return out


def _throughput(r: dict[str, Any]) -> list[str]:
    return [
        "## Remediation throughput (mailbox strategy, Outlook limits enforced by the fake)",
        "",
        f"{_f(r['moves'])} moves across {r['mailboxes']} mailboxes through "
        "`remediation.actions.email_mailbox` "
        "and the real msgraph-sdk client; the fake enforces 4 concurrent requests and 10,000 requests per "
        "10 minutes per mailbox (429 with Retry-After past them).",
        "",
        "| moves | seconds | moves/s | HTTP calls | 429s | peak concurrency per mailbox | in Junk | lost "
        "| doubled |",
        "|---|---|---|---|---|---|---|---|---|",
        f"| {_f(r['moves'])} | {_f(r['seconds'], 1)} | {_f(r['moves_per_s'], 1)} | {_f(r['http_calls'])} | "
        f"{r['throttled_429']} | {r['peak_concurrency_per_mailbox']} | {_f(r['in_junk'])} | {r['lost']} | "
        f"{r['doubled']} |",
        "",
        "Each move is a lookup (`$filter` on internetMessageId, `$select` of three fields) plus a move, "
        "built with the SDK's request builders and sent through its request adapter, answers read as JSON "
        "(the SDK's model deserialization cost about 20 ms of CPU per message). Requests in flight are "
        "capped at the HTTP pool's size (20) on top of 4 per mailbox, so connections are reused; with 100 "
        "mailboxes and 20 slots a mailbox seldom has more than one or two requests in flight, hence the "
        "low peak. "
        f"At this rate 10,000 moves take {_f(10_000 / r['moves_per_s'] / 60, 1)} minutes on this machine."
        + (
            " (This run used fewer than 10,000 moves; "
            "`python -m responder.bench --only throughput --moves 10000` runs the full figure.)"
            if r["moves"] < 10_000
            else ""
        ),
    ]


def _engine(r: dict[str, Any]) -> list[str]:
    out = [
        "## Engine cost (local engine, duckdb-kql)",
        "",
        f"`{r['rule']}` as bound for the sample tenant, median of {r['repeats']} runs after a warm-up, on "
        "generated tenants of growing size (bulk-loaded).",
        "",
        "| EmailEvents rows | generate (s) | load (s) | query median (s) | query max (s) | result rows |",
        "|---|---|---|---|---|---|",
    ]
    for s in r["sizes"]:
        out.append(
            f"| {_f(s['email_events'])} | {_f(s['generate_s'], 1)} | {_f(s['load_s'], 2)} | "
            f"{_f(s['query_s_median'], 3)} | {_f(s['query_s_max'], 3)} | {s['result_rows']} |"
        )
    return out


def _coldstart(r: dict[str, Any]) -> list[str]:
    out = ["## Cold start", ""]
    if "skipped" in r:
        return [*out, f"Not measured: {r['skipped']}."]
    return [
        *out,
        f"A fresh interpreter imports `function_app` and indexes its functions (`app.get_functions()`), "
        f"{r['repeats']} times: {r['functions']} functions.",
        "",
        "| import (median s) | index (median s) | total (median s) | total (max s) |",
        "|---|---|---|---|",
        f"| {_f(r['import_s_median'], 3)} | {_f(r['index_s_median'], 4)} | {_f(r['total_s_median'], 3)} | "
        f"{_f(r['total_s_max'], 3)} |",
    ]


def _quality(r: dict[str, Any]) -> list[str]:
    benign = ", ".join(f"{k} {_f(v)}" for k, v in r["benign_rows"].items())
    out = [
        "## Detection quality",
        "",
        "Per rule: its test cases (`detections/rules/<slug>.tests.yaml`), the adversarial classes of issue "
        "11 its cases are tagged with (`classes:`; names in docs/rules.md), and its false positives on the "
        f"{r['size']} sample tenant (seed {r['seed']}, now {r['now']}, {_f(r['counts']['EmailEvents'])} "
        "EmailEvents rows). The tenant's benign look-alikes (rows added: "
        f"{benign}) sit among the ordinary background. Each rule is scanned as its schedule would, over the "
        f"last {r['span_h']:.0f} hours: every `window` back from now, or once at now over its whole "
        "window when that is longer, each scan seeing only rows up to its own time. A false positive is a "
        "distinct request that matches "
        "nothing truth.json expects of the rule; the rate is per 100,000 background rows of the tables the "
        "rule reads in the scanned span (planted rows excluded); where its target is one of the benign "
        "classes' messages, connector or accounts, the class is named.",
        "",
        "| rule | cases (+ / -) | classes covered | scans | found / expected | false positives "
        "| per 100k rows | from benign classes |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for x in r["rules"]:
        if not x["enabled"]:
            out.append(
                f"| {x['slug']} | {x['positive']} / {x['negative']} | "
                f"{', '.join(x['classes']) or 'none tagged'} | not enabled | | | | |"
            )
            continue
        rate = "n/a" if x["fp_per_100k_rows"] is None else f"{x['fp_per_100k_rows']:.1f}"
        by_class = ", ".join(f"{k}: {v}" for k, v in sorted(x["fp_by_class"].items())) or "-"
        err = f" (error: {x['error'][:80]})" if x["error"] else ""
        classes = ", ".join(x["classes"]) or "none tagged"
        out.append(
            f"| {x['slug']} | {x['positive']} / {x['negative']} | {classes} | {x['scans']} | "
            f"{x['found']} / {x['expected']} | {x['false_positives']}{err} | {rate} | {by_class} |"
        )
    return out


def chaos_table(r: dict[str, Any]) -> list[str]:
    """The chaos harness's table (devtools/bench/chaos.py); also what the CLI prints without --json."""
    out = ["| scenario | requests | lost | of which pending | acted twice | mismatched "
           "| confirmed without undo | Defender resubmissions | left in queue | calls | faults injected "
           "| wall (s) |",
           "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for s in r["scenarios"]:
        injected = sum(s["faults_injected"].values())
        extra = f"{injected} Graph/Exchange" if injected else ""
        if s.get("workers_killed"):
            extra = (extra + ", " if extra else "") + f"{s['workers_killed']} workers killed"
        out.append(f"| {s['name']} | {s['requests']} | {s['lost']} | {s.get('pending', 0)} | "
                   f"{s['acted_twice']} | "
                   f"{s['mismatched']} | {s['confirmed_without_undo']} | {s['resubmissions']} | "
                   f"{s['undrained']} | "
                   f"{_f(s['calls'])} | {extra or '-'} | {_f(s['wall_s'], 0)} |")
    return out


def _chaos(r: dict[str, Any]) -> list[str]:
    out = [
        "## Exactly once under faults (chaos harness)",
        "",
        f"`{r.get('command', 'python -m responder.bench chaos')}`: {r['requests']} remediation requests "
        f"(Defender and mailbox-strategy moves, connector disables, session revokes, account disables, "
        f"confirm-compromised) per scenario through `Worker.process_message`, {r['workers']} worker "
        f"processes driven like the Functions host (Azurite queue, poison queue and ledger; fake Graph and "
        f"Exchange), fault rate {r['fault_rate']:.0%}, seed {r['seed']}. Definitions of lost, acted twice "
        "and mismatched: docs/remediation.md, \"Fault-injection harness\" (judged after the verify "
        "timer's rounds; a Defender request still pending then is counted lost). Target: 0 in those three "
        "columns for every scenario.",
        "",
        *chaos_table(r),
    ]
    examples = [(s["name"], k, e) for s in r["scenarios"] for k, es in s.get("examples", {}).items()
                for e in es[:2]]
    if examples:
        out += ["", "Examples (two per kind and scenario):", ""]
        out += [f"- {name}, {kind}: {e}" for name, kind, e in examples]
    return out
