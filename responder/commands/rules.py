"""``python -m responder rules list|test|export``: what rules exist, whether each passes its own cases, and
a rule's query (or Sentinel rule file) with its parameters bound, to run or import elsewhere."""

from __future__ import annotations

import argparse
import asyncio
from pathlib import Path

from detections.catalog import load_catalog
from detections.params import check_param_names, kql_timespan, resolve_params
from detections.platforms import PLATFORMS
from responder.commands import UsageError


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
    export = sub.add_parser(
        "export", help="print a rule's query with its parameters bound, or its Sentinel rule file",
        description="Print SLUG's query with every parameter bound as a let statement (rule defaults < "
                    "--config < --param), so it runs on its own in Defender advanced hunting or Sentinel "
                    "Logs; or, with --format sentinel-yaml, the rule file to import into Sentinel (no "
                    "responder block). Exit 0 printed, 2 bad input (unknown rule, bad config or parameter, "
                    "a required parameter without a value).")
    export.add_argument("slug", metavar="SLUG", help="the rule (its file name without .yaml)")
    export.add_argument("--platform", choices=PLATFORMS,
                        help="where the query will run (default: the rule's own platform; sentinel for "
                             "--format sentinel-yaml)")
    export.add_argument("--format", choices=("kql", "sentinel-yaml"), default="kql",
                        help="kql: the bound query (default); sentinel-yaml: a Sentinel analytics-rule file")
    export.add_argument("--config", type=Path, metavar="FILE",
                        help="tenant config YAML whose params / rules.<slug>.params override the defaults")
    export.add_argument("--param", action="append", default=[], metavar="NAME=VALUE",
                        help="parameter value (repeatable; lists comma-separated); wins over --config")
    export.set_defaults(func=run_export)


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


def run_export(args: argparse.Namespace) -> int:
    from core.tenant import TenantConfig, load_tenant_config
    from detections.export import bound_query, sentinel_yaml
    from responder.commands.scan import parse_overrides

    if args.format == "sentinel-yaml" and args.platform not in (None, "sentinel"):
        raise UsageError("--format sentinel-yaml writes the Sentinel form of the query; drop --platform "
                         f"{args.platform} (or use --format kql)")
    catalog = load_catalog()
    rule = catalog.select([args.slug])[0]
    if args.config is not None and not args.config.is_file():
        raise UsageError(f"--config {args.config}: no such file")
    tenant = load_tenant_config(args.config.resolve()) if args.config is not None else TenantConfig()
    overrides = parse_overrides(args.param)
    check_param_names([rule], overrides, all_rules=catalog.values(), tenant=tenant)
    values = resolve_params(rule, tenant, overrides)
    if args.format == "sentinel-yaml":
        print(sentinel_yaml(rule, values), end="")
    else:
        print(bound_query(rule, values, args.platform or rule.platform), end="")
    return 0
