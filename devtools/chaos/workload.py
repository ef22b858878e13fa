"""The request mix: rows as a rule's query would return them, turned into requests by the app's own
builder (detections.findings.requests_from_rows), and the fake tenant those requests act on.

Actions and rules (the rule is the authority, so each request comes from a rule that declares its action):

* ``move_to_junk``: ``consumer-sender-to-shared-mailboxes`` (auto), half through the mailbox strategy
  (the message is seeded in the recipient's Inbox), half through the Defender strategy;
* ``disable_connector``: ``connector-sender-mismatch``, mode ``auto`` by tenant override and
  ``RESPONDER_CONNECTOR_ACTIONS=auto`` (the Exchange admin endpoint, fake connectors seeded enabled);
* ``revoke_sessions``: ``password-spray-then-success``, mode ``auto`` by tenant override;
* ``disable_user`` and ``confirm_compromised``: no shipped rule declares them, so the harness adds one
  rule, ``chaos-account-takeover``, a copy of ``password-spray-then-success`` declaring both (auto).

Every rule's cap is raised by tenant override (``max_targets``) so no request is held for the cap. Ids are
deterministic (the request id hashes rule, action and target; targets derive from ``seed`` and the index).
"""

from __future__ import annotations

import dataclasses
import random
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from core.tenant import TenantConfig
from detections.catalog import ActionSpec, Rule, load_catalog
from detections.findings import effective_mode, requests_from_rows

MAIL = "consumer-sender-to-shared-mailboxes"
CONNECTOR = "connector-sender-mismatch"
REVOKE = "password-spray-then-success"
ACCOUNT = "chaos-account-takeover"
BOXES = ("support@contoso.com", "sales@contoso.com", "info@contoso.com", "jobs@contoso.com")
STRATEGIES = ("mailbox", "defender")
RUN_SIZE = 50          # requests per rule run (a Defender run is submitted in one grouped call)
DETECTED_AT = datetime(2026, 11, 20, 12, 0, tzinfo=UTC)
# Share of the requests per kind (the rest, after rounding, goes to mailbox moves).
MIX = {"move_to_junk/defender": 0.3, "disable_connector": 0.1, "revoke_sessions": 0.1,
       "disable_user+confirm_compromised": 0.2}


@dataclass
class Workload:
    catalog: dict[str, Rule]
    tenant: TenantConfig
    # strategy -> the request dicts that strategy's queue carries
    queues: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    connectors: list[str] = field(default_factory=list)
    users: list[tuple[str, str]] = field(default_factory=list)           # (upn, object id)
    messages: list[tuple[str, str]] = field(default_factory=list)        # (recipient, internet message id)

    @property
    def requests(self) -> list[dict[str, Any]]:
        return [r for rs in self.queues.values() for r in rs]


def _catalog() -> dict[str, Rule]:
    catalog = dict(load_catalog())
    spray = catalog[REVOKE]
    user = {"user": "AccountObjectId"}
    evidence = ["AccountUpn", "AccountObjectId", "SuccessTime"]
    catalog[ACCOUNT] = dataclasses.replace(
        spray, slug=ACCOUNT, id="00000000-0000-4000-8000-00000000c4a0", name="Chaos: account takeover",
        actions=[ActionSpec("disable_user", "auto", user, evidence),
                 ActionSpec("confirm_compromised", "auto", user, evidence)])
    return catalog


def tenant_mapping(n: int) -> dict[str, Any]:
    """The tenant config (as its JSON) the harness's workers run with."""
    cap = {"max_targets": max(1000, n)}
    return {"params": {"protected_recipients": list(BOXES)},
            "rules": {MAIL: cap, CONNECTOR: {**cap, "mode": "auto"}, REVOKE: {**cap, "mode": "auto"},
                      ACCOUNT: cap}}


def _tenant(n: int) -> TenantConfig:
    return TenantConfig.from_mapping(tenant_mapping(n), source="chaos harness")


def _runs(rule: Rule, tenant: TenantConfig, rows: list[dict[str, Any]], tag: str) -> list[dict[str, Any]]:
    modes = {i: effective_mode(rule, a, tenant_mode=tenant.for_rule(rule.slug).mode, dry_run=False)
             for i, a in enumerate(rule.actions)}
    out: list[dict[str, Any]] = []
    for k in range(0, len(rows), RUN_SIZE):
        found = requests_from_rows(rule, rows[k:k + RUN_SIZE], modes=modes, detected_at=DETECTED_AT,
                                   run_id=f"chaos-{tag}-{k // RUN_SIZE}")
        if found.problems:
            raise RuntimeError(f"workload: {found.problems[0]}")
        out += found.requests
    return out


def build(n: int, seed: int = 0) -> Workload:
    """``n`` requests (at least 10), split over the two email strategies' queues."""
    if n < 10:
        raise ValueError("the chaos workload needs at least 10 requests (one of each kind)")
    rng = random.Random(seed)
    catalog, tenant = _catalog(), _tenant(n)
    w = Workload(catalog, tenant, {s: [] for s in STRATEGIES})
    n_def = round(n * MIX["move_to_junk/defender"])
    n_conn = max(1, round(n * MIX["disable_connector"]))
    n_rev = max(1, round(n * MIX["revoke_sessions"]))
    n_acct = max(1, round(n * MIX["disable_user+confirm_compromised"]) // 2)   # two requests per row
    n_box = n - n_def - n_conn - n_rev - 2 * n_acct
    tag = f"{seed}"

    def mail_rows(count: int, kind: str) -> list[dict[str, Any]]:
        rows = []
        for i in range(count):
            box = BOXES[i % len(BOXES)]
            imid = f"<chaos-{kind}-{tag}-{i}@mail.example>"
            rows.append({"NetworkMessageId": f"{uuid_like(rng)}", "RecipientEmailAddress": box,
                         "InternetMessageId": imid, "SenderFromAddress": f"sender{i % 7}@gmail.com",
                         "SenderMailFromAddress": f"sender{i % 7}@gmail.com", "Subject": "invoice",
                         "Timestamp": "2026-11-20T11:50:00Z"})
            if kind == "mailbox":
                w.messages.append((box, imid))
        return rows

    w.queues["mailbox"] += _runs(catalog[MAIL], tenant, mail_rows(n_box, "mailbox"), "mailbox")
    w.queues["defender"] += _runs(catalog[MAIL], tenant, mail_rows(n_def, "defender"), "defender")

    conn_rows = []
    for i in range(n_conn):
        name = f"Chaos partner {tag}-{i}"
        w.connectors.append(name)
        conn_rows.append({"Connector": name, "ConnectorType": "inbound", "Signals": "mismatch"})
    rev_rows, acct_rows = [], []
    for i in range(n_rev + n_acct):
        upn, oid = f"user{tag}-{i}@contoso.com", uuid_like(rng)
        w.users.append((upn, oid))
        (rev_rows if i < n_rev else acct_rows).append({"AccountObjectId": oid, "AccountUpn": upn,
                                                        "SuccessTime": "2026-11-20T11:55:00Z"})
    others = (_runs(catalog[CONNECTOR], tenant, conn_rows, "connector")
              + _runs(catalog[REVOKE], tenant, rev_rows, "revoke")
              + _runs(catalog[ACCOUNT], tenant, acct_rows, "account"))
    for req in others:   # account and connector requests go to both queues' workers
        w.queues[rng.choice(STRATEGIES)].append(req)
    for reqs in w.queues.values():
        rng.shuffle(reqs)
    return w


def uuid_like(rng: random.Random) -> str:
    import uuid

    return str(uuid.UUID(int=rng.getrandbits(128), version=4))


def seed_fake(fake: Any, w: Workload) -> None:
    """The tenant the requests act on: messages in Inboxes, enabled connectors, enabled users."""
    for box, imid in w.messages:
        fake.mailboxes.add(box, imid, "inbox", subject="invoice")
    for name in w.connectors:
        fake.connectors.add(name, "inbound", enabled=True)
    for upn, oid in w.users:
        fake.users.add(upn, id=oid)
