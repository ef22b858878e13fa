"""``python -m responder rules list|test|export``: what rules exist, whether each passes its own cases, and
a rule's query (or Sentinel rule file) with its parameters bound, to run or import elsewhere."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

from detections.catalog import load_catalog
from detections.params import check_param_names, kql_timespan, resolve_params
from detections.platforms import PLATFORMS
from responder.commands import UsageError, command


def register(subparsers: argparse._SubParsersAction) -> None:
    p = command(subparsers, "rules", help="list detection rules, run their test cases, export a rule",
                description="The detection rules shipped with the app: `rules list`, `rules test`, "
                            "`rules export SLUG`.",
                codes={0: "done", 1: "a test case or check failed (rules test)",
                       2: "bad input (unknown rule, invalid rule or test file, bad parameter)"})
    sub = p.add_subparsers(dest="rules_command", required=True, metavar="SUBCOMMAND")
    lst = command(sub, "list", help="table of rules: slug, name, severity, schedule, lookback, actions",
                  description="A table of every rule: slug, name, severity, how often it runs, how far back "
                              "it looks, and its actions with their modes.",
                  codes={0: "listed", 2: "a rule file is invalid"})
    lst.set_defaults(func=run_list)
    test = command(sub, "test", help="run every rule's own test cases and the KQL parser check",
                   description="Run each rule's <slug>.tests.yaml cases on the local engine and check its "
                               "bound query with Microsoft's KQL parser and binder. On a terminal a progress "
                               "bar counts the cases; elsewhere (pipes, CI) the output is plain lines.",
                   codes={0: "every case and check passed", 1: "a case or check failed",
                          2: "a rule or test file is invalid, or an unknown --rule"})
    test.add_argument("--rule", action="append", default=[], metavar="SLUG",
                      help="only this rule (repeatable)")
    test.set_defaults(func=run_test)
    export = command(
        sub, "export", help="print a rule's query with its parameters bound, or its Sentinel rule file",
        description="Print SLUG's query with every parameter bound as a let statement (rule defaults < "
                    "--config < --param), so it runs on its own in Defender advanced hunting or Sentinel "
                    "Logs; or, with --format sentinel-yaml, the rule file to import into Sentinel (no "
                    "responder block).",
        codes={0: "printed", 2: "bad input (unknown rule, bad config or parameter, a required parameter "
                                "without a value)"})
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
    from responder.commands.tables import print_table

    catalog = load_catalog()
    print_table(("slug", "name", "severity", "frequency", "period", "action/mode"),
                [(rule.slug, rule.name, rule.severity, kql_timespan(rule.query_frequency),
                  kql_timespan(rule.query_period), ", ".join(f"{a.action}/{a.mode}" for a in rule.actions))
                 for rule in catalog.values()],
                whole=("slug",), title=f"{len(catalog)} detection rules", empty="No detection rules.")
    return 0


def run_test(args: argparse.Namespace) -> int:
    from detections.kqlcheck import KqlCheckUnavailable, check_rules
    from detections.ruletests import load_tests, run_case

    catalog = load_catalog()
    rules = catalog.select(args.rule)
    suites = [load_tests(rule) for rule in rules]  # every file is validated before any case runs

    with progress_bar(sum(len(s.cases) for s in suites) + 1) as advance:
        async def run_all() -> list:
            results = []
            for s in suites:
                for c in s.cases:
                    advance(f"{s.rule.slug}: {c.name}")
                    results.append(await run_case(s, c))
            return results

        results = asyncio.run(run_all())
        advance(f"Microsoft's KQL parser: {len(rules)} rules")
        try:
            problems = [p for ps in check_rules(rules).values() for p in ps]
        except KqlCheckUnavailable as exc:
            problems = [f"KQL parser check could not run: {exc}"]
    failed = [r for r in results if not r.passed]
    for r in results:
        print(f"{'PASS' if r.passed else 'FAIL'}  {r.rule}  [{r.kind}] {r.case}")
        if not r.passed:
            print(r.diff())
    for problem in problems:
        print(f"FAIL  parser check: {problem}")
    print(f"\n{len(results) - len(failed)} passed, {len(failed)} failed, {len(suites)} rules, "
          f"{len(problems)} parser-check problems")
    return 1 if failed or problems else 0


@contextlib.contextmanager
def progress_bar(total: int) -> Iterator[Callable[[str], None]]:
    """On a terminal, a rich progress bar (gone when done) that ``advance(text)`` moves one step and
    labels with what runs now; anywhere else nothing, so piped and CI output stays plain lines."""
    if not sys.stdout.isatty():
        yield lambda _text: None
        return
    from rich.markup import escape
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    columns = (TextColumn("rules test"), BarColumn(bar_width=30), MofNCompleteColumn(), TimeElapsedColumn(),
               TextColumn("{task.description}"))
    with Progress(*columns, transient=True) as progress:
        task = progress.add_task("", total=total)
        started = False

        def advance(text: str) -> None:
            nonlocal started
            # Counts what is finished: the first call only names what starts.
            # The case's name gives way on a narrow terminal (the bar and the count keep their place).
            room = max(10, progress.console.width - 62)
            label = text if len(text) <= room else text[:room - 1] + "…"
            progress.update(task, description=escape(label), advance=1 if started else 0)
            started = True

        yield advance
        progress.update(task, advance=1)


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
