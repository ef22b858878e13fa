"""App settings and tenant configuration.

Every app setting the code reads is declared once in ``APP_SETTINGS``; the README table, the Bicep
check and start-up validation all read this table, so a setting cannot exist in one place only.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import jsonschema
import yaml

ROOT = Path(__file__).resolve().parent.parent


class ConfigError(ValueError):
    """A setting or tenant-config value is missing or wrong; the message names it."""


@dataclass(frozen=True)
class AppSetting:
    name: str
    description: str
    default: str | None = None
    required: bool = False
    secret: bool = False
    # "bicep": set by infra/ ; "operator": documented, supplied by whoever deploys
    source: str = "bicep"


APP_SETTINGS: tuple[AppSetting, ...] = (
    AppSetting("RESPONDER_BACKEND", "Where detection queries run: `defender` (Graph advanced hunting) or "
               "`sentinel` (Log Analytics).", default="defender"),
    AppSetting("RESPONDER_TENANT_ID", "Entra tenant id (used for the Exchange admin endpoint and portal "
               "links).",
               required=True),
    AppSetting("AZURE_CLIENT_ID", "Client id of the user-assigned managed identity the app runs as.",
               required=True),
    AppSetting("RESPONDER_GRAPH_BASE_URL", "Microsoft Graph base URL, without trailing slash.",
               default="https://graph.microsoft.com/v1.0"),
    AppSetting("RESPONDER_SENTINEL_WORKSPACE_ID", "Log Analytics workspace id (GUID) when the backend is "
               "`sentinel`.", default=""),
    AppSetting("RESPONDER_REQUESTS_QUEUE", "Storage queue that carries remediation requests; the host moves "
               "failing messages to `<name>-poison`.", default="remediation-requests"),
    AppSetting("RESPONDER_LEDGER_TABLE", "Table storage table that records every request and outcome.",
               default="ledger"),
    AppSetting("RESPONDER_TEAMS_WEBHOOK_URL", "Teams Workflows webhook URL (a Key Vault reference). Empty "
               "disables notifications.", default="", secret=True),
    AppSetting("RESPONDER_DRY_RUN", "Global dry-run switch: `true` records what would be done and does "
               "nothing, overriding every rule's mode.", default="false"),
    AppSetting("RESPONDER_EMAIL_STRATEGY", "How email is moved: `defender` (analyzedEmails/remediate, "
               "needs MDO P2) or `mailbox` (Mail.ReadWrite scoped with RBAC for Applications).",
               default="defender"),
    AppSetting("RESPONDER_EXCHANGE_BASE_URL", "Exchange Online admin API base URL, without trailing "
               "slash (InvokeCommand is posted to `<base>/<tenant id>/InvokeCommand`).",
               default="https://outlook.office365.com/adminapi/beta"),
    AppSetting("RESPONDER_CONNECTOR_ACTIONS", "Exchange connector actions: `manual` (the app has no "
               "Exchange permission: on-call runs the command the card shows, then marks the request done), "
               "`approval` (an approval runs it through the Exchange admin endpoint) or `auto` (connector "
               "rules in `auto` mode run without waiting). Same value as the Bicep parameter "
               "`connectorActions`.", default="manual"),
    AppSetting("RESPONDER_TENANT_CONFIG", "Path of the tenant config YAML (parameters, allowlists, "
               "break-glass accounts) relative to the app root; optional.", default="tenant.yaml",
               source="operator"),
    AppSetting("RESPONDER_PARAMS", "JSON object of rule parameters, same shape as the tenant config's "
               "`params`/`rules` sections; overrides the file.", default="", source="operator"),
    AppSetting("RESPONDER_SCAN_RATE_PER_HOUR", "Most on-demand re-scans (`POST /api/scan`) accepted per "
               "hour, to protect the hunting quota.", default="12"),
    AppSetting("RESPONDER_STORAGE_CONNECTION", "Storage connection string for the command line's ledger "
               "(local use: Azurite). Leave unset in Azure, where storage is identity-based "
               "(AzureWebJobsStorage__accountName).", default="", secret=True, source="operator"),
    AppSetting("RESPONDER_DIGEST_SCHEDULE", "When the daily digest card goes out (6-field NCRONTAB, UTC); "
               "empty: no digest.", default="0 0 7 * * *", source="operator"),
    AppSetting("RESPONDER_VERIFY_SCHEDULE", "When submitted Defender email remediations are confirmed from "
               "EmailEvents (`LatestDeliveryLocation`), as 6-field NCRONTAB (UTC); empty: no verify timer "
               "(then run `python -m responder verify`). No query runs while nothing is submitted.",
               default="30 */5 * * * *"),
    AppSetting("AzureWebJobsStorage__accountName", "Storage account of the app (identity-based "
               "connection); queues and the ledger table live here.", default=""),
)

APP_SETTING_NAMES = frozenset(s.name for s in APP_SETTINGS)
# RESPONDER_CONNECTOR_ACTIONS, mirroring what the deployment granted (infra/main.bicep connectorActions):
# manual: no Exchange permission, so the app must never call Exchange; approval: an approval calls it;
# auto: connector rules in auto mode call it without waiting.
CONNECTOR_MODES = ("manual", "approval", "auto")
# App Service leaves a Key Vault reference it cannot resolve in the setting as written ("If a reference
# isn't resolved properly, the reference string is used instead"):
# https://learn.microsoft.com/azure/app-service/app-service-key-vault-references#troubleshoot-key-vault-references
KEY_VAULT_REFERENCE_PREFIX = "@microsoft.keyvault("
_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off", ""}


def _bool(name: str, raw: str) -> bool:
    low = raw.strip().lower()
    if low in _TRUE:
        return True
    if low in _FALSE:
        return False
    raise ConfigError(f"app setting {name}: expected true or false, got {raw!r}")


@dataclass(frozen=True)
class Settings:
    backend: str
    tenant_id: str
    client_id: str
    graph_base_url: str
    sentinel_workspace_id: str
    requests_queue: str
    ledger_table: str
    teams_webhook_url: str = field(repr=False)  # a secret: never in repr, logs or errors
    dry_run: bool
    email_strategy: str
    connector_actions: str          # manual | approval | auto (CONNECTOR_MODES)
    tenant_config_path: str
    params_json: str
    scan_rate_per_hour: int
    exchange_base_url: str = "https://outlook.office365.com/adminapi/beta"
    # Optional secret settings whose Key Vault reference did not resolve: treated as unset (feature off),
    # named in the start-up log and in /api/health, so the rest of the app keeps running.
    unresolved_references: tuple[str, ...] = ()

    @property
    def poison_queue(self) -> str:
        return f"{self.requests_queue}-poison"

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None, *, require: bool = True) -> Settings:
        """Read and validate app settings. With ``require``, a missing required setting is an error."""
        env = os.environ if env is None else env
        values: dict[str, str] = {}
        unresolved: list[str] = []
        for s in APP_SETTINGS:
            raw = env.get(s.name)
            if raw is not None and is_key_vault_reference(raw):
                if not s.secret or s.required:
                    raise ConfigError(f"app setting {s.name}: unresolved Key Vault reference (the platform "
                                      "could not read the secret: check the vault and secret names and the "
                                      "identity's Key Vault Secrets User role; see docs/deploy.md)")
                unresolved.append(s.name)
                raw = ""
            if raw is None or (raw == "" and s.required):
                if s.required and require:
                    raise ConfigError(f"required app setting {s.name} is not set ({s.description})")
                raw = s.default or ""
            values[s.name] = raw
        backend = values["RESPONDER_BACKEND"]
        if backend not in ("defender", "sentinel"):
            raise ConfigError(f"app setting RESPONDER_BACKEND: expected defender or sentinel, "
                              f"got {backend!r}")
        if backend == "sentinel" and require and not values["RESPONDER_SENTINEL_WORKSPACE_ID"]:
            raise ConfigError("app setting RESPONDER_SENTINEL_WORKSPACE_ID is required when the backend "
                              "is sentinel")
        strategy = values["RESPONDER_EMAIL_STRATEGY"]
        if strategy not in ("defender", "mailbox"):
            raise ConfigError(f"app setting RESPONDER_EMAIL_STRATEGY: expected defender or mailbox, "
                              f"got {strategy!r}")
        connectors = values["RESPONDER_CONNECTOR_ACTIONS"].strip().lower()
        if connectors not in CONNECTOR_MODES:
            raise ConfigError(f"app setting RESPONDER_CONNECTOR_ACTIONS: expected one of "
                              f"{', '.join(CONNECTOR_MODES)}, got {values['RESPONDER_CONNECTOR_ACTIONS']!r}")
        try:
            rate = int(values["RESPONDER_SCAN_RATE_PER_HOUR"])
        except ValueError:
            raise ConfigError("app setting RESPONDER_SCAN_RATE_PER_HOUR: expected a whole number") from None
        if rate < 1:
            raise ConfigError("app setting RESPONDER_SCAN_RATE_PER_HOUR: must be at least 1")
        return cls(
            backend=backend,
            tenant_id=values["RESPONDER_TENANT_ID"],
            client_id=values["AZURE_CLIENT_ID"],
            graph_base_url=values["RESPONDER_GRAPH_BASE_URL"].rstrip("/"),
            sentinel_workspace_id=values["RESPONDER_SENTINEL_WORKSPACE_ID"],
            requests_queue=values["RESPONDER_REQUESTS_QUEUE"],
            ledger_table=values["RESPONDER_LEDGER_TABLE"],
            teams_webhook_url=values["RESPONDER_TEAMS_WEBHOOK_URL"],
            dry_run=_bool("RESPONDER_DRY_RUN", values["RESPONDER_DRY_RUN"]),
            email_strategy=strategy,
            connector_actions=connectors,
            tenant_config_path=values["RESPONDER_TENANT_CONFIG"],
            params_json=values["RESPONDER_PARAMS"],
            scan_rate_per_hour=rate,
            exchange_base_url=values["RESPONDER_EXCHANGE_BASE_URL"].rstrip("/"),
            unresolved_references=tuple(unresolved),
        )


def is_key_vault_reference(value: str) -> bool:
    """The setting still holds ``@Microsoft.KeyVault(...)``: App Service could not resolve it."""
    return value.strip().lower().startswith(KEY_VAULT_REFERENCE_PREFIX)


# --- tenant configuration (a YAML file and/or the RESPONDER_PARAMS app setting) ---------------------

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
            p = ROOT / p
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
