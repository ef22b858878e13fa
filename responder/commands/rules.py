"""``python -m responder rules list|test``: what rules exist, and whether each passes its own cases."""

from __future__ import annotations

import argparse
import asyncio

from detections.catalog import load_catalog
from detections.params import kql_timespan


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("rules", help="list detection rules or run their test cases")
    sub = p.add_subparsers(dest="rules_command", required=True, metavar="SUBCOMMAND")
    lst = sub.add_parser("list", help="table of rules: slug, name, severity, schedule, lookback, actions")
    lst.set_defaults(func=run_list)
    test = sub.add_parser("test", help="run every rule's own test cases and the KQL parser check",
                          description="Run each rule's <slug>.tests.yaml cases on the local engine and check "
                                      "its bound query with Microsoft's KQL parser and binder. Exit 0 all "
                                      "pass, 1 a case or check failed, 2 a rule or test file is invalid.")
    test.add_argument("--rule", action="append", default=[], metavar="SLUG",
                      help="only this rule (repeatable)")
    test.set_defaults(func=run_test)


def run_list(args: argparse.Namespace) -> int:
    from rich.markup import escape
    from rich.table import Table

    from responder.commands import console as rich_console

    catalog = load_catalog()
    table = Table(title=f"{len(catalog)} detection rules", title_justify="left")
    for col in ("slug", "name", "severity", "frequency", "period", "action/mode"):
        table.add_column(col, overflow="fold")
    for rule in catalog.values():
        actions = ", ".join(f"{a.action}/{a.mode}" for a in rule.actions)
        table.add_row(rule.slug, escape(rule.name), rule.severity, kql_timespan(rule.query_frequency),
                      kql_timespan(rule.query_period), actions)
    rich_console().print(table)
    return 0


def run_test(args: argparse.Namespace) -> int:
    from detections.kqlcheck import KqlCheckUnavailable, check_rules
    from detections.ruletests import load_tests, run_case

    catalog = load_catalog()
    rules = catalog.select(args.rule)
    suites = [load_tests(rule) for rule in rules]  # every file is validated before any case runs

    async def run_all() -> list:
        return [await run_case(s, c) for s in suites for c in s.cases]

    results = asyncio.run(run_all())
    failed = [r for r in results if not r.passed]
    for r in results:
        print(f"{'PASS' if r.passed else 'FAIL'}  {r.rule}  [{r.kind}] {r.case}")
        if not r.passed:
            print(r.diff())
    try:
        problems = [p for ps in check_rules(rules).values() for p in ps]
    except KqlCheckUnavailable as exc:
        problems = [f"KQL parser check could not run: {exc}"]
    for problem in problems:
        print(f"FAIL  parser check: {problem}")
    print(f"\n{len(results) - len(failed)} passed, {len(failed)} failed, {len(suites)} rules, "
          f"{len(problems)} parser-check problems")
    return 1 if failed or problems else 0
