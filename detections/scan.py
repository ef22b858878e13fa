"""Run rules on a backend and turn their rows into remediation requests."""

from __future__ import annotations

import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from core.tenant import TenantConfig
from detections.backends.base import BackendError, QueryBackend
from detections.catalog import Rule
from detections.findings import effective_mode, requests_from_rows
from detections.params import ParamError, bind_query, check_param_names, resolve_params


@dataclass
class RuleRun:
    rule: Rule
    params: dict[str, Any]
    query: str
    rows: list[dict[str, Any]]
    requests: list[dict[str, Any]]
    partial: bool
    error: str | None
    run_id: str
    partial_reason: str | None = None
    columns: list[tuple[str, str]] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)  # rows that could not become requests
    transient: bool = False  # the error may go away on retry (throttling, timeouts)
    retry_after: float | None = None  # the service's hint, in seconds, when it gave one
    refused: bool = False  # parameters did not resolve: the query never ran
    triggered: bool = True  # the row count met the rule's triggerOperator/triggerThreshold


_TRIGGERS = {"gt": lambda n, t: n > t, "lt": lambda n, t: n < t, "eq": lambda n, t: n == t,
             "ne": lambda n, t: n != t}


def triggered(rule: Rule, row_count: int) -> bool:
    """Sentinel's alert condition: the number of result rows compared with the rule's threshold."""
    return _TRIGGERS[rule.trigger_operator](row_count, rule.trigger_threshold)


def with_lookback(overrides: Mapping[str, Any], lookback: timedelta | None) -> dict[str, Any]:
    """``lookback`` is shorthand for the ``window`` override; both at once must agree."""
    merged = dict(overrides)
    if lookback is not None:
        if "window" in merged and merged["window"] != lookback:
            raise ParamError(None, "window", "given both as an override and as the lookback")
        merged["window"] = lookback
    return merged


def resolve_all(rules: Sequence[Rule], tenant: TenantConfig, overrides: Mapping[str, Any]) -> dict[str, dict]:
    """Every selected rule's parameters, or the first ParamError: lets a caller refuse before any query."""
    return {r.slug: resolve_params(r, tenant, overrides) for r in rules}


async def scan(rules: Sequence[Rule], backend: QueryBackend, *, tenant: TenantConfig,
               overrides: Mapping[str, Any], now: datetime, lookback: timedelta | None = None,
               dry_run: bool = False,
               run_id: str | None = None) -> list[RuleRun]:
    """Run each rule once, in order. One rule's failure is recorded in its RuleRun and the rest still run.

    An override name that no rule in ``rules`` declares raises ParamError before anything runs (a
    typo must not silently run rules with their defaults). A rule whose parameters do not resolve
    (a required one missing, a wrong type) is refused: its RuleRun has ``refused`` and the error, and
    its query never runs; the other rules still run. Rules run one after another on
    purpose: the hunting API's quota is per tenant, and parallel queries only reach it sooner.
    """
    if now.tzinfo is None:
        raise ValueError("now must be timezone-aware")
    run_id = run_id or uuid.uuid4().hex
    overrides = with_lookback(overrides, lookback)
    if rules:  # (every rule declares `window`, so a lookback always has a taker)
        check_param_names(rules, overrides)
    runs: list[RuleRun] = []
    for rule in rules:
        try:
            params = resolve_params(rule, tenant, overrides)
            query = bind_query(rule, params)
        except ParamError as exc:
            runs.append(RuleRun(rule=rule, params={}, query="", rows=[], requests=[], partial=False,
                                error=str(exc), run_id=run_id, refused=True))
            continue
        run = RuleRun(rule=rule, params=params, query=query, rows=[], requests=[], partial=False, error=None,
                      run_id=run_id)
        runs.append(run)
        try:
            result = await backend.run(query, timespan=params["window"], shape=rule.platform)
        except BackendError as exc:
            run.error = f"{rule.slug}: {backend.name} backend: {exc}"
            run.transient = exc.transient
            run.retry_after = exc.retry_after
            continue
        except Exception as exc:  # one broken rule or backend bug must not stop the other rules
            run.error = f"{rule.slug}: {backend.name} backend: unexpected {type(exc).__name__}: {exc}"
            continue
        run.rows = result.rows
        run.columns = result.columns
        run.partial = result.partial
        run.partial_reason = result.partial_reason
        # e.g. a local table without a file: "ok, 0 rows" would otherwise look like "nothing found".
        run.problems.extend(f"{rule.slug}: {note}" for note in result.notes)
        run.triggered = triggered(rule, len(result.rows))
        if not run.triggered:
            continue  # as in Sentinel: below the trigger, the rows are kept but nothing is raised
        tenant_mode = tenant.for_rule(rule.slug).mode
        modes = {i: effective_mode(rule, a, tenant_mode=tenant_mode, dry_run=dry_run)
                 for i, a in enumerate(rule.actions)}
        found = requests_from_rows(rule, result.rows, modes=modes, detected_at=now.astimezone(UTC),
                                   run_id=run_id, source="scheduled")
        run.requests = found.requests
        run.problems += found.problems
    return runs
