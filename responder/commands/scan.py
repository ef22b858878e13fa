"""``python -m responder scan``: run rules now and print the remediation requests they produce."""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from core.settings import Settings
from core.tenant import TenantConfig, load_tenant_config
from detections.catalog import Catalog, Rule, load_catalog
from detections.params import check_param_names
from detections.scan import RuleRun, resolve_all, scan
from responder.commands import UsageError, check_token, cli_credential, command

LOGS_SCOPE = "https://api.loganalytics.io/.default"


def register(subparsers: argparse._SubParsersAction) -> None:
    p = command(
        subparsers, "scan", help="run detection rules now and print the remediation requests",
        description="Run detection rules and print the remediation requests they produce (nothing is "
                    "queued or changed).",
        codes={0: "every rule ran", 1: "a backend failed, returned partial results, or no token could be had",
               2: "bad input (unknown rule, bad parameter, config or --now)"})
    p.add_argument("--rule", action="append", default=[], metavar="SLUG",
                   help="run only this rule (repeatable); default: every rule enabled in the tenant config")
    p.add_argument("--tables", type=Path, metavar="DIR",
                   help="run on the local engine over DIR/<Table>.jsonl|.csv instead of the "
                        "configured backend")
    p.add_argument("--now", metavar="ISO8601", help="what now() means on the local engine (needs --tables)")
    p.add_argument("--param", action="append", default=[], metavar="NAME=VALUE",
                   help="parameter override for the selected rules (repeatable; lists comma-separated)")
    p.add_argument("--config", type=Path, metavar="FILE",
                   help="tenant config YAML (default: the RESPONDER_TENANT_CONFIG app setting)")
    p.add_argument("--json", action="store_true",
                   help="print only a JSON array of remediation-request/1 objects on stdout")
    p.set_defaults(func=run)


def parse_overrides(items: list[str]) -> dict[str, str]:
    out: dict[str, str] = {}
    for item in items:
        name, sep, value = item.partition("=")
        name = name.strip()
        if not sep or not name:
            raise UsageError(f"--param {item!r}: expected NAME=VALUE")
        if name in out:
            raise UsageError(f"--param {name}: given more than once")
        out[name] = value
    return out


def parse_now(text: str) -> datetime:
    try:
        moment = datetime.fromisoformat(text.strip().replace("Z", "+00:00"))
    except ValueError:
        raise UsageError(f"--now {text!r}: expected an ISO 8601 time such as 2026-11-20T12:00:00Z") from None
    if moment.tzinfo is None:
        raise UsageError(f"--now {text!r}: give the time zone, e.g. 2026-11-20T12:00:00Z")
    return moment.astimezone(UTC)


def load_tenant(args: argparse.Namespace, settings: Settings) -> TenantConfig:
    if args.config is not None:
        if not args.config.is_file():
            raise UsageError(f"--config {args.config}: no such file")
        return load_tenant_config(args.config.resolve(), settings.params_json)
    return load_tenant_config(settings.tenant_config_path, settings.params_json)


def select_rules(catalog: Catalog, slugs: list[str], tenant: TenantConfig) -> list[Rule]:
    """Named rules always run; without names, rules the tenant config disables are left out."""
    known = [r.slug for r in catalog.select([])]
    for slug in slugs:
        if slug not in known:
            raise UsageError(f"unknown rule {slug!r} (known: {', '.join(sorted(known)) or 'none'})")
    rules = catalog.select(slugs)
    if slugs:
        return rules
    return [r for r in rules if tenant.for_rule(r.slug).enabled]


def run(args: argparse.Namespace) -> int:
    settings = Settings.from_env(require=False)
    catalog = load_catalog()
    tenant = load_tenant(args, settings)
    rules = select_rules(catalog, args.rule, tenant)
    overrides = parse_overrides(args.param)
    check_param_names(rules, overrides, all_rules=catalog.values(), tenant=tenant)
    if args.now is not None and args.tables is None:
        raise UsageError("--now needs --tables: only the local engine's clock can be pinned")
    now = parse_now(args.now) if args.now else datetime.now(UTC)
    resolve_all(rules, tenant, overrides)  # refuse bad or missing parameters before any query runs
    runs = asyncio.run(_scan(args, settings, rules, tenant, overrides, now))
    requests = [req for r in runs for req in r.requests]
    if args.json:
        sys.stdout.write(json.dumps(requests, indent=2, ensure_ascii=False) + "\n")
    else:
        print_table(runs)
    failed = False
    for r in runs:
        for problem in r.problems:
            print(f"warning: {problem}", file=sys.stderr)
        if r.error:
            # One line per failed rule: some SDK errors (azure-identity's above all) span many lines.
            print(f"error: {' '.join(r.error.split())}", file=sys.stderr)
            failed = True
        elif r.partial:
            print(f"error: {r.rule.slug}: partial results ({r.partial_reason or 'no reason given'}); "
                  "the requests above may be incomplete", file=sys.stderr)
            failed = True
    return 1 if failed else 0


async def _scan(args: argparse.Namespace, settings: Settings, rules: list[Rule], tenant: TenantConfig,
                overrides: dict[str, Any], now: datetime) -> list[RuleRun]:
    from detections.backends import make_backend

    if args.tables is not None:
        backend = make_backend(tables_dir=args.tables, now=now)
        return await scan(rules, backend, tenant=tenant, overrides=overrides, now=now,
                          dry_run=settings.dry_run)
    from core.graph import is_loopback  # imports msgraph: only when a service is queried

    if settings.backend == "defender" and is_loopback(settings.graph_base_url):
        # The fake Graph (or another local stand-in): no token is sent, so no credential is built.
        return await _scan_and_close(make_backend(settings, credential=None), rules, tenant, overrides,
                                     now, settings)
    # The real services: credentials and SDK clients are built inside the running event loop.
    credential = cli_credential(settings.client_id)
    try:
        await check_token(credential, token_scope(settings))
        return await _scan_and_close(make_backend(settings, credential=credential), rules, tenant,
                                     overrides, now, settings)
    finally:
        await credential.close()


async def _scan_and_close(backend: Any, rules: list[Rule], tenant: TenantConfig,
                          overrides: dict[str, Any], now: datetime, settings: Settings) -> list[RuleRun]:
    try:
        return await scan(rules, backend, tenant=tenant, overrides=overrides, now=now,
                          dry_run=settings.dry_run)
    finally:
        close = getattr(backend, "close", None)
        if close is not None:
            await close()


def token_scope(settings: Settings) -> str:
    """The scope the configured backend asks tokens for."""
    if settings.backend == "sentinel":
        return LOGS_SCOPE
    return f"https://{urlsplit(settings.graph_base_url).hostname or 'graph.microsoft.com'}/.default"


def print_table(runs: list[RuleRun]) -> None:
    from responder.commands.tables import print_table as table

    table(("rule", "rows", "requests", "status"),
          [(r.rule.slug, len(r.rows), len(r.requests),
            "refused" if r.refused else "failed" if r.error else "partial" if r.partial else "ok")
           for r in runs],
          title="Rules run", empty="No rules ran.")
    requests = [req for r in runs for req in r.requests]
    print()
    # Values come from mail and logs; the table escapes them and never cuts a rule slug or an id.
    table(("rule", "action", "mode", "target", "id"),
          [(req["rule"], req["action"], req["mode"], ", ".join(f"{k}={v}" for k, v in req["target"].items()),
            req["id"]) for req in requests],
          title="Remediation requests", empty="No remediation requests.")
