"""Detection quality: per rule, its test cases, the adversarial classes they cover, and its false positives
on the large sample tenant's benign background.

Cases and classes come from each rule's ``<slug>.tests.yaml`` (``kind`` and the optional ``classes`` tag of
each case; the tag names are listed in docs/rules.md and enforced by detections/rule-tests.schema.json).
False positives come from scanning a generated sample tenant (its noise includes the benign classes of
devtools/sample/benign.py) with every enabled rule on the local engine and scoring the requests against
``truth.json``: a false positive is a distinct request that matches nothing the truth expects of that rule.
The rate is per 100,000 background rows of the tables the rule reads (the planted scenarios' rows
excluded). Where a false positive's target belongs to a benign class (its message, connector or account),
the class is named.
"""

from __future__ import annotations

import asyncio
import tempfile
from collections import Counter
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from core.tenant import load_tenant_config
from detections.backends.local import LocalBackend, referenced_tables
from detections.catalog import Rule, load_catalog, load_yaml
from detections.params import resolve_params
from detections.scan import scan
from devtools.sample import generate
from devtools.sample.bulkload import bulk_load
from devtools.sample.generate import DEFAULT_SEED
from devtools.sample.rows import iso
from devtools.sample.scoring import score

CLASSES = (
    "count-distinct",
    "sliding-window",
    "address-forms",
    "consumer-list",
    "lure-hosts",
    "auto-reply",
    "alignment",
    "p1-equals-p2",
    "spray-rotation",
    "password-spray",
    "scope",
    "ingestion-delay",
    "campaign",
)
# The last day of the sample tenant is scanned: every benign class occurs every day of it.
SPAN = timedelta(days=1)


def case_summary(rule: Rule) -> dict[str, Any]:
    """Positive and negative case counts and the classes the cases are tagged with (sorted, known order)."""
    data = load_yaml(rule.tests_path) or {}
    cases = data.get("cases") or []
    kinds = Counter(c.get("kind") for c in cases)
    tagged = {t for c in cases for t in (c.get("classes") or [])}
    return {
        "positive": kinds["positive"],
        "negative": kinds["negative"],
        "classes": [c for c in CLASSES if c in tagged],
    }


def _target_keys(request: dict[str, Any]) -> list[str]:
    target = request.get("target") or {}
    return [str(v).lower() for v in target.values()]


def _as_of(backend: LocalBackend, moment: datetime) -> None:
    """Each table becomes a view of the rows ingested by ``moment``: a scan at ``moment`` must not see later
    rows (the rules filter ``Timestamp > ago(window)`` and trust the service to have nothing newer)."""
    backend.now = moment
    # A literal (views take no parameters); the value is a datetime of ours, never outside input.
    cutoff = f"TIMESTAMPTZ '{moment.isoformat()}'"
    for table in backend.schemas:
        backend.con.execute(
            f'CREATE OR REPLACE VIEW "{table}" AS SELECT * FROM "_full_{table}" WHERE "Timestamp" <= {cutoff}'
        )


def scan_times(window: timedelta, now: datetime, span: timedelta) -> list[datetime]:
    """When a rule is scanned: every ``window`` back from ``now`` across ``span`` (windows tile the span),
    or once at ``now`` when the window already covers it."""
    if window >= span:
        return [now]
    return [now - k * window for k in range(int(span / window))]


def run(
    size: str = "large", seed: int = DEFAULT_SEED, span: timedelta = SPAN, rules_dir: Path | None = None
) -> dict[str, Any]:
    """``rules_dir``: another rules folder (default the catalog's), e.g. to compare rule versions."""
    catalog = load_catalog(rules_dir)
    with tempfile.TemporaryDirectory(prefix="bench-quality-") as tmp:
        gen = generate(Path(tmp), size=size, seed=seed)
        backend = LocalBackend(None, gen.now)
        bulk_load(backend, gen.tables_dir)
        for table in backend.schemas:
            backend.con.execute(f'ALTER TABLE "{table}" RENAME TO "_full_{table}"')
        tenant = load_tenant_config(gen.tenant_path)
        rules = [r for r in catalog.values() if tenant.for_rule(r.slug).enabled]
        requests: dict[str, dict[str, Any]] = {}
        errors: dict[str, str] = {}
        scanned: dict[str, tuple[datetime, int]] = {}
        for rule in rules:
            window = resolve_params(rule, tenant, {})["window"]
            times = scan_times(window, gen.now, span)
            for moment in times:
                _as_of(backend, moment)
                (result,) = asyncio.run(scan([rule], backend, tenant=tenant, overrides={}, now=moment))
                if result.error:
                    errors.setdefault(rule.slug, result.error)
                for req in result.requests:
                    requests.setdefault(req["id"], req)
            scanned[rule.slug] = (gen.now - max(window, span), len(times))
        rows_since = {
            (table, since): backend.con.execute(
                f'SELECT count(*) FROM "_full_{table}" WHERE "Timestamp" > ?', [since]
            ).fetchone()[0]
            for table in backend.schemas
            for since, _ in scanned.values()
        }
        backend.con.close()
    scores = score(gen.truth, requests.values(), slugs=[r.slug for r in rules])
    out_rules = []
    for slug in sorted(catalog):
        rule = catalog[slug]
        tables = sorted(referenced_tables(rule.query, gen.counts))
        since, n_scans = scanned.get(slug, (gen.now, 0))
        planted = sum(1 for t in tables for ts in gen.planted_times.get(t, []) if ts > iso(since))
        background = sum(rows_since.get((t, since), 0) for t in tables) - planted
        s = scores.get(slug)
        fps = s.extras if s and slug in scanned else []
        by_class = Counter(
            next((gen.benign_keys[k] for k in _target_keys(x) if k in gen.benign_keys), "other background")
            for x in fps
        )
        out_rules.append(
            {
                "slug": slug,
                **case_summary(rule),
                "enabled": slug in scanned,
                "error": errors.get(slug),
                "tables": tables,
                "scans": n_scans,
                "background_rows": background,
                "requests": sum(1 for r in requests.values() if r["rule"] == slug),
                "expected": len(gen.truth["rules"].get(slug, {}).get("expected", [])),
                "found": s.found if s else 0,
                "false_positives": len(fps),
                "fp_per_100k_rows": (100_000 * len(fps) / background) if background > 0 else None,
                "fp_by_class": dict(by_class),
                # A few false positives' targets, to look them up (JSON output only).
                "fp_samples": [x["target"] for x in fps[:3]],
            }
        )
    return {
        "size": size,
        "seed": seed,
        "now": gen.truth["now"],
        "span_h": span.total_seconds() / 3600,
        "counts": gen.counts,
        "benign_rows": gen.benign_rows,
        "rules": out_rules,
    }
