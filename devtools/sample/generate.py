"""Write a sample tenant: ``tables/<Table>.jsonl`` per hunting table, ``truth.json``, ``tenant.yaml``.

The tables sit in their own folder because that folder is what the local engine (``scan --tables``)
reads, and it refuses files that are not tables.

Deterministic: the same seed, size and row count give byte-identical files. The planted attacks
draw from their own random stream, so they are the same whatever the tenant's size.
"""

from __future__ import annotations

import json
import random
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import yaml

from devtools.sample.attacks import all_plants
from devtools.sample.benign import Benign
from devtools.sample.clock import Clock
from devtools.sample.model import SAMPLE_NOW, Tenant, build_tenant
from devtools.sample.noise import Noise
from devtools.sample.rows import (
    Mail,
    attachment_rows,
    email_rows,
    finalize,
    iso,
    load_columns,
    shape,
    url_rows,
)
from devtools.sample.truth import build_truth, tenant_config

DEFAULT_SEED = 20261120
MAX_EMAIL_EVENTS = 1_000_000


@dataclass(frozen=True)
class Size:
    users: int
    days: int
    email_events: int


SIZES = {
    "small": Size(users=40, days=3, email_events=3_000),
    "medium": Size(users=300, days=5, email_events=30_000),
    "large": Size(users=2_000, days=7, email_events=250_000),
}


@dataclass(frozen=True)
class Generated:
    out_dir: Path
    tables_dir: Path
    counts: dict[str, int]
    truth_path: Path
    tenant_path: Path
    now: datetime
    truth: dict[str, Any]
    # Rows each benign class of devtools.sample.benign added (EmailEvents rows; logon rows for passwords).
    benign_rows: dict[str, int] = field(default_factory=dict)
    # What the benign classes' rows are, for attributing a rule's false positives: network message id,
    # connector name or account object id -> class.
    benign_keys: dict[str, str] = field(default_factory=dict)
    # Timestamps (ISO) of the rows the planted scenarios (attacks, the legitimate connector change) added.
    planted_times: dict[str, list[str]] = field(default_factory=dict)


def generate(
    out_dir: Path,
    *,
    size: str = "small",
    seed: int = DEFAULT_SEED,
    email_events: int | None = None,
    now: datetime = SAMPLE_NOW,
) -> Generated:
    if size not in SIZES:
        raise ValueError(f"size {size!r}: expected one of {', '.join(SIZES)}")
    spec = SIZES[size]
    target = spec.email_events if email_events is None else email_events
    if not 0 < target <= MAX_EMAIL_EVENTS:
        raise ValueError(f"email_events {target}: expected 1..{MAX_EMAIL_EVENTS}")
    rng = random.Random(seed)
    attack_rng = random.Random(seed * 7919 + 1)
    tenant = build_tenant(rng, spec.users)
    clock = Clock(rng, now - timedelta(days=spec.days), now - timedelta(minutes=2))
    noise = Noise(rng, tenant, clock, now)
    plants = all_plants(attack_rng, tenant, now, Noise(attack_rng, tenant, clock, now))
    planted = [finalize(m, attack_rng) for p in plants for m in p.mails]
    # The busy tenant's benign look-alikes (issue 11) draw from their own stream: the older background
    # stays as it was, whatever they add.
    benign_rng = random.Random(seed * 104729 + 7)
    benign = Benign(benign_rng, tenant, Clock(benign_rng, clock.start, clock.end), now).generate()
    fixed = (
        planted
        + [finalize(m, rng) for m in noise.newsletters()]
        + [finalize(m, benign_rng) for m in benign.mails]
    )
    budget = target - sum(len(m.recipients) for m in fixed)
    if budget < 0:
        need = target - budget
        raise ValueError(f"email_events {target}: the planted attacks and newsletters alone need {need} rows")
    mails = fixed + list(_background(noise, rng, budget))
    mails.sort(key=lambda m: (m.ts, m.network_message_id))

    tables = out_dir / "tables"
    tables.mkdir(parents=True, exist_ok=True)
    columns = load_columns()
    counts = {
        "EmailEvents": _write(tables, "EmailEvents", columns, (r for m in mails for r in email_rows(m))),
        "EmailUrlInfo": _write(tables, "EmailUrlInfo", columns, (r for m in mails for r in url_rows(m))),
        "EmailAttachmentInfo": _write(
            tables, "EmailAttachmentInfo", columns, (r for m in mails for r in attachment_rows(m))
        ),
    }
    cae = noise.cloud_app_events(per_user_per_day=3) + [r for p in plants for r in p.cloud_app_events]
    logons = noise.logons() + benign.logons + [r for p in plants for r in p.logons]
    counts["CloudAppEvents"] = _write(tables, "CloudAppEvents", columns, _sorted(cae))
    counts["IdentityLogonEvents"] = _write(tables, "IdentityLogonEvents", columns, _sorted(logons))

    truth = build_truth(plants, tenant, now=now, seed=seed, size=size, counts=counts)
    truth_path = out_dir / "truth.json"
    truth_path.write_text(json.dumps(truth, indent=2, sort_keys=False) + "\n", encoding="utf-8")
    tenant_path = out_dir / "tenant.yaml"
    tenant_path.write_text(_tenant_yaml(tenant), encoding="utf-8")
    planted_times = {
        "EmailEvents": [iso(m.ts) for m in planted for _ in m.recipients],
        "EmailUrlInfo": [r["Timestamp"] for m in planted for r in url_rows(m)],
        "EmailAttachmentInfo": [r["Timestamp"] for m in planted for r in attachment_rows(m)],
        "CloudAppEvents": [r["Timestamp"] for p in plants for r in p.cloud_app_events],
        "IdentityLogonEvents": [r["Timestamp"] for p in plants for r in p.logons],
    }
    return Generated(
        out_dir,
        tables,
        counts,
        truth_path,
        tenant_path,
        now,
        truth,
        benign.rows_by_class,
        benign.keys(),
        planted_times,
    )


def _background(noise: Noise, rng: random.Random, budget: int) -> Iterable[Mail]:
    """Background mail until exactly ``budget`` EmailEvents rows (the last mail loses recipients)."""
    left = budget
    for mail in noise.mail_stream():
        if left <= 0:
            return
        if mail.ts > noise.clock.end:
            continue  # the later part of a thread that has not happened yet
        if len(mail.recipients) > left:
            mail.recipients = mail.recipients[:left]
        left -= len(mail.recipients)
        yield finalize(mail, rng)


def _sorted(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return sorted(rows, key=lambda r: (r["Timestamp"], r["ReportId"]))


def _write(out_dir: Path, table: str, columns: dict[str, list[str]], rows: Iterable[dict[str, Any]]) -> int:
    n = 0
    cols = columns[table]
    known = frozenset(cols)
    dumps = json.JSONEncoder(ensure_ascii=False, separators=(",", ":")).encode
    with (out_dir / f"{table}.jsonl").open("w", encoding="utf-8", newline="\n") as fh:
        for row in rows:
            fh.write(dumps(shape(row, cols, table, known)))
            fh.write("\n")
            n += 1
    return n


def _tenant_yaml(tenant: Tenant) -> str:
    header = (
        "# Tenant config of the embedded sample tenant (written by devtools.sample; the demo scans\n"
        "# with it). Same shape as a production tenant.yaml: see docs/architecture.md.\n"
    )
    return header + yaml.safe_dump(tenant_config(tenant), sort_keys=False)
