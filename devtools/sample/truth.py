"""What the rules must find in the sample tenant (``truth.json``) and the tenant config they run with.

Truth is written from what was planted, never from what the rules return. Per rule slug, the
expected remediation requests by action and identifying target (the fields the request id is built
from), with the mode the rule's remediation declares and which planted scenario it belongs to.

The one legitimate connector change is expected too, marked ``benign``: the connector-change rule
flags every change in its window by design (the playbook's first signal) and holds it for approval,
because nothing in the audit record tells a renewal from an attack. A person rejects it. Counting it
as a false positive would punish the rule for doing its job; leaving it out of the sample would
hide the approval gate that exists for exactly this case.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from devtools.sample.attacks import MALICIOUS_CONNECTOR, Plant
from devtools.sample.model import Tenant
from devtools.sample.rows import Mail, iso

TRUTH_SCHEMA = "sample-truth/1"

CONSUMER_RULE = "consumer-sender-to-shared-mailboxes"
CHAIN_RULE = "consumer-reply-chain-file-link"
CONNECTOR_CHANGE_RULE = "exchange-connector-created-or-modified"
CONNECTOR_VOLUME_RULE = "connector-mail-volume"
CONNECTOR_MISMATCH_RULE = "connector-sender-mismatch"
BURST_RULE = "outbound-external-burst"
LOGON_RULE = "admin-logon-failures-then-success"
SPRAY_RULE = "password-spray-then-success"
RULES = (
    CONSUMER_RULE,
    CHAIN_RULE,
    CONNECTOR_CHANGE_RULE,
    CONNECTOR_VOLUME_RULE,
    CONNECTOR_MISMATCH_RULE,
    BURST_RULE,
    LOGON_RULE,
    SPRAY_RULE,
)


def _inbox_copies(mails: list[Mail], protected: set[str]) -> list[tuple[Mail, str]]:
    return [
        (m, r.address)
        for m in mails
        for r in m.recipients
        if r.address.lower() in protected and (r.location or m.delivery_location) == "Inbox/folder"
    ]


def _email(rule: str, action: str, mode: str, mail: Mail, recipient: str, plant: Plant) -> dict[str, Any]:
    return {
        "action": action,
        "mode": mode,
        "scenario": plant.name,
        "benign": plant.benign,
        "target": {"network_message_id": mail.network_message_id, "recipient": recipient},
        "internet_message_id": mail.internet_message_id,
        "subject": mail.subject,
        "timestamp": iso(mail.ts),
    }


def expectations(plants: list[Plant], tenant: Tenant) -> dict[str, list[dict[str, Any]]]:
    protected = {a.lower() for a in tenant.protected}
    by_name = {p.name: p for p in plants}
    rules: dict[str, list[dict[str, Any]]] = {slug: [] for slug in RULES}

    campaign = by_name["consumer-campaign"]
    for mail, rcpt in _inbox_copies(campaign.mails, protected):
        rules[CONSUMER_RULE].append(_email(CONSUMER_RULE, "move_to_junk", "auto", mail, rcpt, campaign))

    chain = by_name["reply-chain"]
    for mail, rcpt in _inbox_copies([m for m in chain.mails if m.urls], protected):
        rules[CHAIN_RULE].append(_email(CHAIN_RULE, "move_to_junk", "auto", mail, rcpt, chain))
    # Issue 7: on-call hears about the earlier messages of the thread (the first mail, the reply).
    for mail in (m for m in chain.mails if not m.urls):
        for r in mail.recipients:
            rules[CHAIN_RULE].append(_email(CHAIN_RULE, "notify", "auto", mail, r.address, chain))

    admin = by_name["compromised-admin"]
    for plant in (admin, by_name["benign-connector-change"]):
        for name in plant.connectors:
            rules[CONNECTOR_CHANGE_RULE].append(
                {
                    "action": "disable_connector",
                    "mode": "approval",
                    "scenario": plant.name,
                    "benign": plant.benign,
                    "target": {"connector": name},
                }
            )
    for slug in (CONNECTOR_VOLUME_RULE, CONNECTOR_MISMATCH_RULE):
        rules[slug].append(
            {
                "action": "disable_connector",
                "mode": "approval",
                "scenario": admin.name,
                "benign": False,
                "target": {"connector": MALICIOUS_CONNECTOR},
            }
        )
    # The burst against the admin, the phish from its mailbox, and the spray against 25 accounts from
    # the attacker's address that ends in the admin's success there: each rule names the admin.
    for user in admin.users:
        for slug in (LOGON_RULE, BURST_RULE, SPRAY_RULE):
            rules[slug].append(
                {
                    "action": "revoke_sessions",
                    "mode": "approval",
                    "scenario": admin.name,
                    "benign": False,
                    "target": {"user": user.upn},
                    "aliases": {"user": [user.object_id]},
                }
            )
    return rules


def build_truth(
    plants: list[Plant], tenant: Tenant, *, now: datetime, seed: int, size: str, counts: dict[str, int]
) -> dict[str, Any]:
    return {
        "schema": TRUTH_SCHEMA,
        "now": iso(now),
        "seed": seed,
        "size": size,
        "tables": counts,
        "tenant_config": "tenant.yaml",
        "protected_mailboxes": tenant.protected,
        "scenarios": [{"name": p.name, "benign": p.benign, "description": p.description} for p in plants],
        "rules": {slug: {"expected": items} for slug, items in expectations(plants, tenant).items()},
    }


def tenant_config(tenant: Tenant) -> dict[str, Any]:
    """The demo's tenant.yaml: the protected shared mailboxes, and a break-glass account."""
    return {
        "params": {"protected_recipients": tenant.protected},
        "break_glass_accounts": [tenant.break_glass.upn],
    }
