"""The demo's summary: per rule what was found, done and held, compared with the sample's truth.

How "found" is counted is defined once, in ``devtools.sample.scoring``: an expected target counts
as found when its rule flagged it *and* the request ended where its mode says (auto: confirmed or
already done; approval: held for a person). A flagged target whose remediation failed is a miss.
"""

from __future__ import annotations

from collections import Counter
from typing import Any

from devtools.demo import DemoRun
from devtools.sample.scoring import score, totals

FOUND_MEANS = (
    "an expected target counts as found when its rule produced the request and the request "
    "ended where its mode says: auto -> confirmed (or skipped: already done), approval -> held "
    "for a person; a benign change the rule must flag by design (the connector renewal) is "
    "expected and held, not a false positive"
)


def summarize(run: DemoRun) -> dict[str, Any]:
    requests = {r["id"]: r for rr in run.runs for r in rr.requests}
    states = {rid: o.state for rid, o in run.outcomes.items()}
    scores = score(run.truth, requests.values(), states, slugs=run.catalog_slugs)
    second = [r for rr in run.second_runs for r in rr.requests]
    rules: dict[str, Any] = {}
    by_slug = {rr.rule.slug: rr for rr in run.runs}
    for slug, s in scores.items():
        rr = by_slug.get(slug)
        mine = [r for r in requests.values() if r["rule"] == slug]
        outcome_states = Counter(states.get(r["id"], "not processed") for r in mine)
        rules[slug] = {
            **s.counts(),
            "expected": len(run.truth["rules"].get(slug, {}).get("expected", [])),
            "name": rr.rule.name if rr else None,
            "ran": rr is not None,
            "error": rr.error if rr else "rule not in the catalog",
            "rows": len(rr.rows) if rr else 0,
            "requests": len(mine),
            "actions": dict(Counter(f"{r['action']} ({r['mode']})" for r in mine)),
            "outcomes": dict(outcome_states),
            "done": sum(outcome_states[k] for k in ("confirmed", "skipped")),
            "held": outcome_states["held"],
            "failed": sum(outcome_states[k] for k in ("failed", "not_applied")),
            "misses": s.misses,
            "false_positive_targets": s.extras,
        }
    return {
        "tenant": {
            "size": run.options.size,
            "seed": run.options.seed,
            "now": run.truth["now"],
            "tables": run.tables,
            "output": str(run.options.output),
        },
        "environment": run.environment,
        "notes": run.notes,
        # `truth` and `rules` hold exactly the three integer counts (what scripts and outside tests read);
        # everything else about a rule is under `rule_details`.
        "truth": totals(scores),
        "rules": {
            slug: {k: r[k] for k in ("found", "missed", "false_positives")} for slug, r in rules.items()
        },
        "expected_total": sum(v["expected"] for v in rules.values()),
        "found_means": FOUND_MEANS,
        "rule_details": rules,
        "second_scan": {"requests": len(second), "deduplicated": run.duplicates, "acted": run.second_actions},
        "email_moves_applied": len(run.moves),
        # The push phase (devtools/demo_push.py): a new campaign junked from Graph change notifications.
        "push": run.push,
        "graph_calls": run.graph_calls,
        "timings_s": run.timings,
        "cards": run.cards,
        "pngs": run.pngs,
    }


def print_summary(summary: dict[str, Any], console: Any) -> None:
    from rich.markup import escape
    from rich.table import Table

    t = summary["tenant"]
    console.print(
        f"\n[bold]Sample tenant[/bold] {t['size']} (seed {t['seed']}, now {t['now']}): "
        + ", ".join(f"{k} {v:,}" for k, v in t["tables"].items())
    )
    for key in ("backend", "queue", "ledger", "telemetry"):
        if key in summary["environment"]:
            console.print(f"  {key}: {escape(str(summary['environment'][key]))}")
    table = Table(title="Per rule", title_justify="left")
    for col in ("rule", "rows", "req", "done", "held", "fail", "found", "miss", "FP"):
        if col == "rule":
            table.add_column(col, no_wrap=True, overflow="fold")
        else:
            table.add_column(col, justify="right")
    for slug, r in summary["rule_details"].items():
        table.add_row(
            slug,
            str(r["rows"]),
            str(r["requests"]),
            str(r["done"]),
            str(r["held"]),
            str(r["failed"]),
            f"{r['found']}/{r['expected']}",
            str(r["missed"]),
            str(r["false_positives"]),
        )
    console.print(table)
    for slug, r in summary["rule_details"].items():
        if r["actions"]:
            console.print(
                f"  {slug}: "
                + ", ".join(f"{n} x {a}" for a, n in r["actions"].items())
                + " -> "
                + ", ".join(f"{n} {s}" for s, n in r["outcomes"].items())
            )
        if r["error"]:
            console.print(f"  [red]{slug}: {escape(str(r['error']))}[/red]")
        for miss in r["misses"]:
            console.print(
                f"  [red]missed[/red] {slug}: {miss['action']} {escape(str(miss['target']))}: {miss['why']}"
            )
        for fp in r["false_positive_targets"]:
            console.print(
                f"  [yellow]false positive[/yellow] {slug}: {fp['action']} {escape(str(fp['target']))}"
            )
    tr = summary["truth"]
    colour = "green" if tr["missed"] == 0 and tr["false_positives"] == 0 else "red"
    console.print(
        f"\n[bold {colour}]Truth: found {tr['found']} of {summary['expected_total']}, missed {tr['missed']}, "
        f"false positives {tr['false_positives']}[/bold {colour}]"
    )
    s = summary["second_scan"]
    console.print(
        f"Second scan over the same window: {s['requests']} requests, {s['deduplicated']} already in the "
        f"ledger (nothing done twice), {s['acted']} new."
    )
    console.print(f"Messages moved in the tables by the fake Defender: {summary['email_moves_applied']}")
    _print_push(summary.get("push") or {}, console)
    console.print(
        f"Cards: {len(summary['cards'])} JSON, {len(summary['pngs'])} PNG in "
        f"{escape(summary['environment'].get('cards', ''))}"
    )
    for note in summary["notes"]:
        console.print(f"[yellow]note:[/yellow] {escape(note)}")
    console.print("Timings (s): " + ", ".join(f"{k} {v}" for k, v in summary["timings_s"].items()))


def _print_push(push: dict[str, Any], console: Any) -> None:
    """The push phase in a few lines: subscriptions, notifications, each copy's time in the Inbox."""
    from rich.markup import escape

    if not push or push.get("skipped"):
        return
    colour = "green" if push["copies_in_junk"] == push["copies"] and push["card_says_push"] else "red"
    console.print(
        f"\n[bold]Push path[/bold] (Graph change notifications, simulated clock): {push['subscriptions']} "
        f"subscriptions ({push['handshakes_ok']} validation handshakes answered: each notification and "
        "lifecycle URL), notifications "
        + ", ".join(f"{k} {v}" for k, v in push["notifications"].items())
        + "; endpoint answers " + ", ".join(f"{k}: {v}" for k, v in push["endpoint_answers"].items()))
    for c in push["timeline"]:
        junk = f"in Junk at {c['in_junk_s']:.0f} s" if c["in_junk_s"] is not None else "[red]not moved[/red]"
        notified = f"{c['notified_s']:.0f} s" if c["notified_s"] is not None else "-"
        console.print(f"  {escape(c['mailbox'])}: arrived {c['arrived_s']:.0f} s, notified {notified}, "
                      f"{junk}")
    times = push["inbox_time_s"] or {}
    console.print(
        f"[bold {colour}]Push path: {push['copies_in_junk']} of {push['copies']} copies in Junk"
        + (f" (time in Inbox p50 {times['p50']:.0f} s, max {times['max']:.0f} s)" if times else "")
        + f"; ledger sources {push['sources']}; card says 'found by the push path': "
        f"{push['card_says_push']}; "
        f"partner mail in {push['partner_mail_folder']}; hunting queries {push['hunting_queries']}"
        f"[/bold {colour}]")
