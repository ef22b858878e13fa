"""Tenant configuration: a YAML file (``RESPONDER_TENANT_CONFIG``) and/or the ``RESPONDER_PARAMS`` app
setting: parameters, per-rule overrides, allowlists and break-glass accounts."""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import jsonschema
import yaml

from core import settings
from core.settings import ConfigError

TENANT_CONFIG_SCHEMA: dict[str, Any] = {
    "$schema": "https://json-schema.org/draft/2020-12/schema",
    "type": "object",
    "additionalProperties": False,
    "properties": {
        "params": {"type": "object", "description": "Values for every rule that declares the parameter."},
        "rules": {
            "type": "object",
            "additionalProperties": {
                "type": "object",
                "additionalProperties": False,
                "properties": {
                    "enabled": {"type": "boolean"},
                    "mode": {"enum": ["auto", "approval", "dry_run"]},
                    "schedule": {"type": "string"},
                    "max_targets": {"type": "integer", "minimum": 0},
                    "params": {"type": "object"},
                    # Lets a rule declaring scope all_mailboxes act in auto mode (else held for approval).
                    "allow_all_mailboxes": {"type": "boolean"},
                },
            },
        },
        "allowlist": {
            "type": "object",
            "additionalProperties": False,
            "properties": {
                "senders": {"type": "array", "items": {"type": "string"}},
                "sender_domains": {"type": "array", "items": {"type": "string"}},
                "mailboxes": {"type": "array", "items": {"type": "string"}},
                "connectors": {"type": "array", "items": {"type": "string"}},
            },
        },
        "break_glass_accounts": {"type": "array", "items": {"type": "string"}},
    },
}


@dataclass(frozen=True)
class RuleOverrides:
    enabled: bool = True
    mode: str | None = None
    schedule: str | None = None
    max_targets: int | None = None
    params: dict[str, Any] = field(default_factory=dict)
    allow_all_mailboxes: bool = False


@dataclass(frozen=True)
class TenantConfig:
    """Per-tenant choices. Parameter values here are raw (validated later against each rule's types)."""

    params: dict[str, Any] = field(default_factory=dict)
    rules: dict[str, RuleOverrides] = field(default_factory=dict)
    allow_senders: frozenset[str] = frozenset()
    allow_sender_domains: frozenset[str] = frozenset()
    allow_mailboxes: frozenset[str] = frozenset()
    allow_connectors: frozenset[str] = frozenset()
    break_glass_accounts: frozenset[str] = frozenset()

    def for_rule(self, slug: str) -> RuleOverrides:
        return self.rules.get(slug, RuleOverrides())

    @classmethod
    def from_mapping(cls, data: Mapping[str, Any] | None, *, source: str) -> TenantConfig:
        data = dict(data or {})
        errors = sorted(jsonschema.Draft202012Validator(TENANT_CONFIG_SCHEMA).iter_errors(data),
                        key=lambda e: list(e.absolute_path))
        if errors:
            e = errors[0]
            where = ".".join(str(p) for p in e.absolute_path) or "(top level)"
            raise ConfigError(f"{source}: {where}: {e.message}")
        allow = data.get("allowlist", {})

        def low(items: Any) -> frozenset[str]:
            return frozenset(str(i).strip().lower() for i in items or [])

        return cls(
            params=dict(data.get("params", {})),
            rules={slug: RuleOverrides(**body) for slug, body in data.get("rules", {}).items()},
            allow_senders=low(allow.get("senders")),
            allow_sender_domains=low(allow.get("sender_domains")),
            allow_mailboxes=low(allow.get("mailboxes")),
            allow_connectors=low(allow.get("connectors")),
            break_glass_accounts=low(data.get("break_glass_accounts")),
        )

    def merged(self, other: TenantConfig) -> TenantConfig:
        """``other`` wins: used to lay the RESPONDER_PARAMS app setting over the file."""
        rules = dict(self.rules)
        for slug, o in other.rules.items():
            base = rules.get(slug, RuleOverrides())
            rules[slug] = RuleOverrides(
                enabled=o.enabled if "enabled" in _set_fields(o) else base.enabled,
                mode=o.mode or base.mode,
                schedule=o.schedule or base.schedule,
                max_targets=o.max_targets if o.max_targets is not None else base.max_targets,
                params={**base.params, **o.params},
                allow_all_mailboxes=o.allow_all_mailboxes or base.allow_all_mailboxes,
            )
        return TenantConfig(
            params={**self.params, **other.params},
            rules=rules,
            allow_senders=self.allow_senders | other.allow_senders,
            allow_sender_domains=self.allow_sender_domains | other.allow_sender_domains,
            allow_mailboxes=self.allow_mailboxes | other.allow_mailboxes,
            allow_connectors=self.allow_connectors | other.allow_connectors,
            break_glass_accounts=self.break_glass_accounts | other.break_glass_accounts,
        )


def _set_fields(o: RuleOverrides) -> set[str]:
    return {"enabled"} if o.enabled is False else set()


# The RESPONDER_TENANT_CONFIG default: a deployment without a tenant config is legitimate.
DEFAULT_TENANT_CONFIG = "tenant.yaml"


def load_tenant_config(path: str | Path | None, params_json: str = "") -> TenantConfig:
    """Tenant config from a YAML file with RESPONDER_PARAMS laid over it.

    Only the built-in default name (``tenant.yaml``, the setting left at its default) may be absent
    (= empty config). Any other path that does not exist is a ConfigError naming it: the file holds
    the allowlists and break-glass accounts, so a typo must not silently run without them.
    """
    config = TenantConfig()
    if path:
        p = Path(path)
        if not p.is_absolute():
            p = settings.ROOT / p   # read at call time: tests point the app root elsewhere
        if not p.exists() and str(path) != DEFAULT_TENANT_CONFIG:
            raise ConfigError(f"tenant config {p} does not exist (RESPONDER_TENANT_CONFIG or --config); "
                              "refusing to run without its allowlists and break-glass accounts")
        if p.exists():
            try:
                data = yaml.safe_load(p.read_text(encoding="utf-8"))
            except yaml.YAMLError as exc:
                raise ConfigError(f"{p}: not valid YAML: {exc}") from None
            config = TenantConfig.from_mapping(data, source=str(p))
    if params_json.strip():
        try:
            data = json.loads(params_json)
        except json.JSONDecodeError as exc:
            raise ConfigError(f"app setting RESPONDER_PARAMS: not valid JSON: {exc}") from None
        config = config.merged(TenantConfig.from_mapping(data, source="app setting RESPONDER_PARAMS"))
    return config
