"""The safety rails: the one place that decides whether a request may run, before any action does.

``decide`` returns a Decision: ``execute``, ``dry_run`` (record what would happen), ``hold`` (wait for
a person: approval mode or past the per-run cap) or ``skip`` (out of scope; never executed). The
worker calls it for every request, including approved ones, and never executes anything else.

Order matters and is deliberate:
1. an unknown rule or an out-of-scope target is a ``skip`` whatever the mode: scope is about *what*
   may be touched, so no approval and no mode can widen it;
2. a human approval lifts the mode and the cap (that is what approving means), nothing else;
3. the mode (``effective_mode``): the request's own mode is never loosened here; the rule file's
   action mode applies unless the tenant config sets ``rules.<slug>.mode``, which *replaces* it and so
   may loosen it (``approval`` -> ``auto``): the tenant config is the operator's explicit, reviewed
   choice for their tenant. The one exception: connector actions stay in approval unless
   RESPONDER_CONNECTOR_ACTIONS is ``auto``, whatever the rule or tenant config says (the Exchange admin
   endpoint is undocumented, see remediation/exchange.py); under ``manual`` the hold is for a person to
   run the command by hand (Worker.approve refuses to run it and records ``done``);
   then, email actions only: when a sender allowlist is configured and the request names no sender
   (neither evidence nor target), the allowlist cannot be checked, so it is held (``unverifiable``);
4. the cap on targets per rule per run, counted per action (``run.index``, detections/findings.py);
   ``notify`` is not capped: it changes nothing. A request with no ``run`` block has no known place
   in a run, so the cap cannot be checked: it is held (``cap``). Every producer in this project
   numbers its requests (scans, the function app's runs, ``remediate --queue-file`` for hand-written
   input, undo), so only a message written to the queue by something else lands there, and a person
   approving it lifts the hold;
5. the emergency stop (remediation/stop.py): while it is on, every would-be execution is ``hold``
   (``emergency_stop``), approved or not; only an undo (``restore``) still runs, because putting back what
   a misfiring rule did is why on-call pulls the switch;
6. the global dry-run switch last, turning every would-be execution or hold into ``dry_run`` so that
   a dry run still shows what each rail would have done.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from core.settings import Settings
from core.tenant import TenantConfig
from detections.catalog import Rule
from detections.params import ParamError, resolve_params
from remediation.actions.registry import Registry, default_registry
from remediation.stop import HOLD_REASON as STOP_HOLD_REASON
from remediation.stop import StopState

KINDS = ("execute", "dry_run", "hold", "skip")
_STRICTNESS = {"auto": 0, "approval": 1, "dry_run": 2}
# Families and the cap come from the action registry (remediation/actions/): ``decide`` takes a registry
# so a new action needs no edit here. These names are the default registry's, for callers and tests.
_REGISTRY = default_registry()
EMAIL_ACTIONS = _REGISTRY.family("email")
ACCOUNT_ACTIONS = _REGISTRY.family("account")
CONNECTOR_ACTIONS = _REGISTRY.family("connector")
# Actions the per-run cap does not count (``capped=False``: notify changes nothing in the tenant, and
# capping it would only hide findings from on-call).
UNCAPPED_ACTIONS = tuple(d.name for d in _REGISTRY if not d.capped)

# Evidence columns that name the sender (P1 header From and P2 envelope MailFrom) or its domain.
SENDER_COLUMNS = ("SenderFromAddress", "SenderMailFromAddress")
SENDER_DOMAIN_COLUMNS = ("SenderFromDomain", "SenderMailFromDomain")
# Target fields a rule may map the sender to (target accepts extra string fields): checked as well, so
# a rule whose evidence leaves the sender out still meets the allowlist.
SENDER_TARGET_FIELDS = ("sender", "sender_from_address", "sender_mail_from_address")
# Evidence columns that name the account an account action targets (UPN or object id).
ACCOUNT_COLUMNS = ("AccountUpn", "AccountObjectId", "UserPrincipalName", "AccountId")
# Every evidence column a rail reads, plus the recipient and connector for the person approving: the
# ledger keeps these when it trims large evidence (remediation/ledger.py).
RAILS_EVIDENCE_COLUMNS = (*SENDER_COLUMNS, *SENDER_DOMAIN_COLUMNS, *ACCOUNT_COLUMNS, "RecipientEmailAddress",
                          "Connector", "ConnectorId", "ConnectorName")


@dataclass(frozen=True)
class Decision:
    kind: str                       # execute | dry_run | hold | skip
    reason: str
    hold_reason: str | None = None  # "approval" | "cap" | "unverifiable" | "emergency_stop" when held
    notify: bool = False            # on-call should hear of it (cap reached, scope surprise, approval)


def decide(request: Mapping[str, Any], *, settings: Settings, tenant: TenantConfig,
           catalog: Mapping[str, Rule], approved: bool = False, restore: bool = False,
           registry: Registry | None = None, stop: StopState | None = None) -> Decision:
    """``approved``: a person approved this request. ``restore``: an undo that puts mail back; the
    allowlists exist to keep mail from being *removed*, so they do not stop an undo. ``registry``: the
    actions' declarations (default: remediation/actions/). ``stop``: the emergency stop as last read."""
    decision = _decide(request, tenant=tenant, catalog=catalog, settings=settings, approved=approved,
                       restore=restore, reg=registry or _REGISTRY)
    if stop is not None and stop.on and decision.kind == "execute" and not restore:
        decision = Decision("hold", stop.describe(), hold_reason=STOP_HOLD_REASON, notify=True)
    if settings.dry_run and decision.kind in ("execute", "hold"):
        would = "execute" if decision.kind == "execute" else f"hold ({decision.reason})"
        return Decision("dry_run", f"global dry run (RESPONDER_DRY_RUN): would {would}")
    return decision


def _decide(request: Mapping[str, Any], *, settings: Settings, tenant: TenantConfig,
            catalog: Mapping[str, Rule], approved: bool, restore: bool, reg: Registry) -> Decision:
    rule = catalog.get(request["rule"])
    if rule is None:
        return Decision("skip", f"rule {request['rule']!r} is not in the catalog; scope cannot be checked",
                        notify=True)
    # The rule file is the authority, never the message (issue 13): a rule the tenant switched off
    # runs nothing, and an action the rule does not declare is refused whatever mode the message claims.
    if not tenant.for_rule(rule.slug).enabled:
        return Decision("skip", f"rule {rule.slug} is disabled by the tenant config "
                        f"(rules.{rule.slug}.enabled: false)", notify=True)
    undeclared = undeclared_action(request["action"], rule, restore=restore, registry=reg)
    if undeclared:
        return Decision("skip", undeclared, notify=True)
    out_of_scope = scope_violation(request, rule, tenant, restore=restore, registry=reg)
    if out_of_scope:
        return Decision("skip", f"out of scope: {out_of_scope}", notify=True)
    if approved:
        return Decision("execute", "approved")
    mode = effective_mode(request, rule, settings, tenant, registry=reg)
    if mode == "dry_run":
        return Decision("dry_run", "mode dry_run: nothing executed")
    family = _family(request["action"], reg)
    if not restore and family == "email" and not _sender_checkable(request, tenant):
        return Decision("hold", "the sender allowlist cannot be checked: the request names no sender "
                        "(no sender column in its evidence, no sender field in its target)",
                        hold_reason="unverifiable",
                        notify=True)
    if _capped(request["action"], reg):
        limit = max_targets(rule, tenant)
        run = request.get("run")
        if not isinstance(run, Mapping) or not isinstance(run.get("index"), int):
            return Decision("hold", "no run block: the request's place in a run is unknown, so the cap "
                            f"of {limit} targets per run cannot be checked", hold_reason="cap", notify=True)
        index = run["index"]
        if index >= limit:
            return Decision("hold", f"past the cap of {limit} targets for this rule in one run "
                            f"(target #{index + 1})", hold_reason="cap", notify=True)
    if mode == "approval":
        why = "mode approval"
        if _org_wide_held(request, rule, tenant, reg):
            why = (f"rule {rule.slug} covers every mailbox (scope all_mailboxes): its email actions wait for "
                   f"approval unless the tenant config sets rules.{rule.slug}.allow_all_mailboxes: true")
        if family == "connector" and settings.connector_actions == "manual":
            why = ("connector actions are manual (RESPONDER_CONNECTOR_ACTIONS=manual): run the command by "
                   "hand, then mark the request done (approve --done)")
        elif family == "connector" and settings.connector_actions != "auto":
            why = "connector actions wait for approval unless RESPONDER_CONNECTOR_ACTIONS is auto"
        return Decision("hold", why, hold_reason="approval", notify=True)
    return Decision("execute", "auto")


def effective_mode(request: Mapping[str, Any], rule: Rule, settings: Settings, tenant: TenantConfig, *,
                   registry: Registry | None = None) -> str:
    """The strictest of: the request's own mode; the tenant config's ``rules.<slug>.mode`` when set,
    else the rule file's mode for this action (the tenant override replaces the rule's mode, so it may
    loosen it: module doc, item 3); and ``approval`` for connector actions without the opt-in."""
    modes = [request["mode"]]
    override = tenant.for_rule(rule.slug).mode
    if override:
        modes.append(override)
    else:
        modes += [a.mode for a in rule.actions if a.action == request["action"]][:1]
    reg = registry or _REGISTRY
    if _family(request["action"], reg) == "connector" and settings.connector_actions != "auto":
        modes.append("approval")
    if _org_wide_held(request, rule, tenant, reg):
        modes.append("approval")
    return max(modes, key=lambda m: _STRICTNESS[m])


def undeclared_action(action: str, rule: Rule, *, restore: bool = False,
                      registry: Registry | None = None) -> str | None:
    """Why ``action`` is not one ``rule`` may request, or None. An undo (``restore``) may run the declared
    inverse of an action the rule declares (move_to_inbox after move_to_junk)."""
    declared = {a.action for a in rule.actions}
    if action in declared:
        return None
    if restore:
        reg = registry or _REGISTRY
        inverses = {d.inverse for d in (reg.find(a) for a in declared) if d is not None and d.inverse}
        if action in inverses:
            return None
    return (f"action {action} is not declared by rule {rule.slug} (it declares "
            f"{', '.join(sorted(declared)) or 'none'}): refused whatever mode the message claims")


def _org_wide_held(request: Mapping[str, Any], rule: Rule, tenant: TenantConfig, reg: Registry) -> bool:
    """An org-wide rule (no protected list) may move anyone's mail: never in auto mode unless allowed."""
    return (rule.all_mailboxes and _family(request["action"], reg) == "email"
            and not tenant.for_rule(rule.slug).allow_all_mailboxes)


def max_targets(rule: Rule, tenant: TenantConfig) -> int:
    override = tenant.for_rule(rule.slug).max_targets
    return rule.max_targets if override is None else override


def scope_violation(request: Mapping[str, Any], rule: Rule, tenant: TenantConfig, *,
                    restore: bool = False, registry: Registry | None = None) -> str | None:
    """Why ``request`` may not touch its target, or None when it may."""
    action, target = request["action"], request["target"]
    family = _family(action, registry or _REGISTRY)
    evidence = request.get("evidence") or {}
    if family == "email":
        return _email_violation(target, evidence, rule, tenant, restore=restore)
    if family == "account":
        names = _lower([target.get("user"), *(evidence.get(c) for c in ACCOUNT_COLUMNS)])
        hit = names & tenant.break_glass_accounts
        if hit:
            return f"{sorted(hit)[0]} is a break-glass account"
    connector = str(target.get("connector", "")).strip().lower()
    if family == "connector" and connector in tenant.allow_connectors:
        return f"connector {target['connector']!r} is allowlisted"
    return None


def _email_violation(target: Mapping[str, Any], evidence: Mapping[str, Any], rule: Rule,
                     tenant: TenantConfig, *, restore: bool) -> str | None:
    recipient = str(target.get("recipient", "")).strip().lower()
    if rule.recipients_param:
        try:
            protected = resolve_params(rule, tenant, {})[rule.recipients_param] or []
        except ParamError as exc:
            return f"the protected recipient list cannot be resolved ({exc})"
        if recipient not in _lower(protected):
            return f"recipient {recipient} is not in the rule's {rule.recipients_param} list"
    if restore:
        return None
    if recipient in tenant.allow_mailboxes:
        return f"mailbox {recipient} is allowlisted"
    # Both P1 and P2 senders are checked: an allowlist entry means "never touch", so a spoofed
    # header From that matches it also stops the action (and is reported for a human to judge).
    senders = _senders(target, evidence)
    hit = senders & tenant.allow_senders
    if hit:
        return f"sender {sorted(hit)[0]} is allowlisted"
    domains = _lower(evidence.get(c) for c in SENDER_DOMAIN_COLUMNS) | {s.rpartition("@")[2] for s in senders}
    for domain in sorted(d for d in domains if d):
        for allowed in tenant.allow_sender_domains:
            if domain == allowed or domain.endswith("." + allowed):  # subdomains of an allowed domain too
                return f"sender domain {domain} is allowlisted ({allowed})"
    return None


def _senders(target: Mapping[str, Any], evidence: Mapping[str, Any]) -> set[str]:
    """Every sender address the request names (evidence columns and target fields), lower-cased."""
    return _lower([*(evidence.get(c) for c in SENDER_COLUMNS),
                   *(target.get(f) for f in SENDER_TARGET_FIELDS)])


def _sender_checkable(request: Mapping[str, Any], tenant: TenantConfig) -> bool:
    """Whether the configured sender allowlists can be checked against what the request carries. A
    request that names no sender would pass them unchecked: that is fail-open, so the caller holds it."""
    evidence = request.get("evidence") or {}
    senders = _senders(request["target"], evidence)
    domains = _lower(evidence.get(c) for c in SENDER_DOMAIN_COLUMNS)
    if tenant.allow_senders and not senders:
        return False
    return not (tenant.allow_sender_domains and not senders and not domains)


def _family(action: str, reg: Registry) -> str | None:
    d = reg.find(action)
    return d.family if d else None


def _capped(action: str, reg: Registry) -> bool:
    d = reg.find(action)
    return d.capped if d else True


def _lower(values: Iterable[Any]) -> set[str]:
    return {str(v).strip().lower() for v in values if v not in (None, "")}
