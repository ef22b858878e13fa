"""App settings (``Settings``), read from the environment; the app root (``ROOT``).

Every app setting the code reads is declared once in ``APP_SETTINGS``; the README table, the Bicep
check and start-up validation all read this table, so a setting cannot exist in one place only.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path

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
    AppSetting("RESPONDER_HELD_EXPIRY", "How long a held request (waiting for approval) can still be "
               "approved, as an ISO-8601 duration from `PT1H` to `P30D` (e.g. `P7D`, `PT12H`, `P1DT6H`); "
               "after that it is recorded `expired`, announced, and approving it is refused.", default="P7D"),
    AppSetting("RESPONDER_EASY_AUTH", "`entra` when the Bicep deployed App Service authentication for the "
               "approval page (with `approvalPageClientId`); empty: the page refuses everyone, since a "
               "principal header cannot be trusted without it.", default=""),
    AppSetting("RESPONDER_ONCALL_GROUP", "Object id of the on-call Entra group (or app role value) allowed "
               "to use the approval page.", default=""),
    AppSetting("RESPONDER_PAGE_KEY", "The approval page's CSRF key (Key Vault reference to the "
               "`approval-page-key` secret).", default="", secret=True),
    # Push path (issue 15, docs/push.md): Graph change notifications on the protected mailboxes.
    AppSetting("RESPONDER_PUSH", "`on` runs the push path (Graph change notifications on the protected "
               "mailboxes, docs/push.md) beside the scheduled rules; `off` (the default) turns it off for "
               "this tenant: no subscriptions are made and the notification endpoint answers 404.",
               default="off"),
    AppSetting("RESPONDER_PUSH_NOTIFICATION_URL", "Public HTTPS URL of the notification endpoint "
               "(`https://<app>.azurewebsites.net/api/push/notifications`); Graph posts change and "
               "lifecycle notifications there.", default=""),
    AppSetting("RESPONDER_PUSH_CLIENT_STATE", "The subscriptions' clientState (Key Vault reference to the "
               "`push-client-state` secret): every notification must carry it.", default="", secret=True),
    AppSetting("RESPONDER_PUSH_QUEUE", "Storage queue that carries accepted notifications to the push "
               "worker.", default="push-notifications"),
    AppSetting("RESPONDER_PUSH_TABLE", "Table storage table with the subscriptions, their delta links and "
               "the streaming rules' per-sender state.", default="pushstate"),
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

    # RESPONDER_HELD_EXPIRY: a held request older than this cannot be approved (remediation/expiry.py).
    held_expiry: timedelta = timedelta(days=7)

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
            # empty: the default, like an unset setting (azd passes unset variables as empty)
            held_expiry=parse_held_expiry(values["RESPONDER_HELD_EXPIRY"] or "P7D"),
            unresolved_references=tuple(unresolved),
        )


# ISO-8601 durations in weeks, days, hours, minutes, seconds. Years and months are refused: their length
# depends on the date, and an approval window is never that long (HELD_EXPIRY_BOUNDS).
_DURATION = re.compile(r"P(?:(?P<w>\d+)W)?(?:(?P<d>\d+)D)?"
                       r"(?:T(?:(?P<h>\d+)H)?(?:(?P<m>\d+)M)?(?:(?P<s>\d+)S)?)?")
# At least an hour (on-call must have time to read the card), at most 30 days (an approval given weeks
# after the evidence was gathered acts on a mailbox or account that may have changed since).
HELD_EXPIRY_BOUNDS = (timedelta(hours=1), timedelta(days=30))


def parse_held_expiry(raw: str) -> timedelta:
    """RESPONDER_HELD_EXPIRY as a timedelta; a ConfigError naming the setting when it is not a duration
    this app accepts."""
    text = raw.strip().upper()
    match = _DURATION.fullmatch(text)
    if not match or text in ("P", "PT") or text.endswith("T"):
        raise ConfigError(f"app setting RESPONDER_HELD_EXPIRY: expected an ISO-8601 duration in weeks, days, "
                          f"hours or minutes (e.g. P7D, PT12H, P1DT6H), got {raw!r}")
    n = {k: int(v or 0) for k, v in match.groupdict().items()}
    value = timedelta(weeks=n["w"], days=n["d"], hours=n["h"], minutes=n["m"], seconds=n["s"])
    low, high = HELD_EXPIRY_BOUNDS
    if not low <= value <= high:
        raise ConfigError(f"app setting RESPONDER_HELD_EXPIRY: {raw!r} is outside PT1H to P30D")
    return value


def is_key_vault_reference(value: str) -> bool:
    """The setting still holds ``@Microsoft.KeyVault(...)``: App Service could not resolve it."""
    return value.strip().lower().startswith(KEY_VAULT_REFERENCE_PREFIX)


@dataclass(frozen=True)
class PushSettings:
    """The push path's settings (issue 15). ``enabled`` False: nothing of the push path runs."""

    enabled: bool
    notification_url: str
    client_state: str = field(repr=False)   # a secret: never in repr, logs or errors
    queue: str = "push-notifications"
    table: str = "pushstate"

    @property
    def poison_queue(self) -> str:
        return f"{self.queue}-poison"

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> PushSettings:
        """Read RESPONDER_PUSH*. When the push path is on, its URL must be HTTPS and the clientState a
        resolved secret of at least 32 characters (Graph allows up to 255); otherwise a ConfigError
        names the setting. When it is off, the other settings are not checked."""
        env = os.environ if env is None else env
        defaults = {s.name: s.default or "" for s in APP_SETTINGS}

        def get(name: str) -> str:
            return env.get(name, defaults[name]) or defaults[name]

        enabled = _bool("RESPONDER_PUSH", get("RESPONDER_PUSH"))
        url, state = get("RESPONDER_PUSH_NOTIFICATION_URL").strip(), get("RESPONDER_PUSH_CLIENT_STATE")
        if enabled:
            if not url.lower().startswith("https://"):
                raise ConfigError("app setting RESPONDER_PUSH_NOTIFICATION_URL: Graph delivers change "
                                  "notifications to HTTPS URLs only; expected https://...")
            if is_key_vault_reference(state):
                raise ConfigError("app setting RESPONDER_PUSH_CLIENT_STATE: unresolved Key Vault reference "
                                  "(see docs/deploy.md)")
            if not 32 <= len(state) <= 255:
                raise ConfigError("app setting RESPONDER_PUSH_CLIENT_STATE: expected a secret of 32 to 255 "
                                  "characters")
        return cls(enabled=enabled, notification_url=url, client_state=state,
                   queue=get("RESPONDER_PUSH_QUEUE"), table=get("RESPONDER_PUSH_TABLE"))
