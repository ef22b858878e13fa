"""Start-up: read and validate every piece of configuration once, before the host indexes a function.

``load(env)`` returns an :class:`AppConfig` or raises :class:`ConfigError` naming what is wrong (an
app setting, a tenant-config field, a rule file, a rule parameter, a schedule). ``function_app``
calls it at import time, so a bad deployment fails at start-up with that message in the host log
instead of failing one trigger at a time hours later.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from dataclasses import dataclass

from app import schedules, telemetry
from app.schedules import ScheduleError, TimerSpec
from core import logsafe
from core.settings import ConfigError, PushSettings, Settings
from core.tenant import TenantConfig, load_tenant_config
from detections.catalog import Catalog, RuleError, load_catalog
from detections.params import ParamError, check_param_names, resolve_params

log = logging.getLogger(__name__)

# The host's own storage connection (its name is fixed by the Functions runtime). A connection
# string locally (Azurite), identity-based in Azure: `__accountName` or the per-service URIs, with
# `__credential=managedidentity` and `__clientId` for a user-assigned identity.
STORAGE_CONNECTION = "AzureWebJobsStorage"
DIGEST_SETTING = "RESPONDER_DIGEST_SCHEDULE"
DIGEST_DEFAULT = "0 0 7 * * *"
VERIFY_SETTING = "RESPONDER_VERIFY_SCHEDULE"
VERIFY_DEFAULT = "30 */5 * * * *"


@dataclass(frozen=True)
class StorageConfig:
    """Where the app's queues and tables live (the same account the host's bindings use)."""

    connection_string: str = ""          # secret: never logged
    table_endpoint: str = ""
    queue_endpoint: str = ""
    client_id: str = ""                   # user-assigned identity for identity-based access

    def __repr__(self) -> str:
        kind = "connection string" if self.connection_string else self.table_endpoint
        return f"StorageConfig({kind})"


@dataclass(frozen=True)
class AppConfig:
    settings: Settings
    tenant: TenantConfig
    catalog: Catalog
    timers: tuple[TimerSpec, ...]
    storage: StorageConfig
    api_base: str | None = None          # https://<app host>: approval cards show the HTTP commands
    digest_schedule: str | None = None   # None: no daily digest
    verify_schedule: str | None = None   # None: no verify timer (submitted mail is confirmed elsewhere)
    # What runs degraded (e.g. Teams notifications off because their Key Vault reference did not
    # resolve): reported by /api/health. Names and reasons only, never a setting's value.
    problems: tuple[str, ...] = ()
    push: PushSettings | None = None     # the push path's settings (issue 15); None only in old tests


def storage_from_env(env: Mapping[str, str], settings: Settings) -> StorageConfig:
    conn = env.get(STORAGE_CONNECTION, "").strip()
    if conn:
        return StorageConfig(connection_string=conn)
    account = env.get(f"{STORAGE_CONNECTION}__accountName", "").strip()
    table = env.get(f"{STORAGE_CONNECTION}__tableServiceUri", "").strip()
    queue = env.get(f"{STORAGE_CONNECTION}__queueServiceUri", "").strip()
    if account:
        table = table or f"https://{account}.table.core.windows.net"
        queue = queue or f"https://{account}.queue.core.windows.net"
    if not (table and queue):
        raise ConfigError(f"app setting {STORAGE_CONNECTION}__accountName is not set (or "
                          f"{STORAGE_CONNECTION} as a connection string, or both __tableServiceUri and "
                          "__queueServiceUri): the queue and the ledger need a storage account")
    client_id = env.get(f"{STORAGE_CONNECTION}__clientId", "").strip() or settings.client_id
    return StorageConfig(table_endpoint=table.rstrip("/"), queue_endpoint=queue.rstrip("/"),
                         client_id=client_id)


@telemetry.startup
def load(env: Mapping[str, str] | None = None) -> AppConfig:
    """Everything the functions need, validated; ConfigError names the first problem."""
    env = os.environ if env is None else env
    logsafe.install()   # before anything logs: caller values and URL secrets never reach a log line raw
    settings = Settings.from_env(env)
    push, push_problem = _push_settings(env, settings.unresolved_references)
    storage = storage_from_env(env, settings)
    tenant = load_tenant_config(settings.tenant_config_path, settings.params_json)
    try:
        catalog = load_catalog()
    except RuleError as exc:
        raise ConfigError(f"rule catalog: {exc}") from None
    try:
        # Typos in the tenant config (unknown rule, unknown parameter) refuse to start.
        check_param_names(catalog.values(), {}, all_rules=catalog.values(), tenant=tenant)
        enabled = [r for r in catalog.values() if tenant.for_rule(r.slug).enabled]
        # A rule whose parameters do not resolve (a required one missing) would refuse every run:
        # say so now. Disable it in the tenant config (rules.<slug>.enabled: false) to start without it.
        for rule in enabled:
            resolve_params(rule, tenant, {})
    except ParamError as exc:
        raise ConfigError(f"tenant config: {exc}") from None
    try:
        timers = tuple(schedules.resolve(r.slug, r.query_frequency,
                                         tenant_schedule=tenant.for_rule(r.slug).schedule, env=env)
                       for r in enabled)
    except ScheduleError as exc:
        raise ConfigError(str(exc)) from None
    stray = sorted(k for k in env if k.startswith(schedules.SCHEDULE_SETTING_PREFIX)
                   and k not in {schedules.schedule_setting(r.slug) for r in catalog.values()})
    if stray:
        raise ConfigError(f"app setting {stray[0]}: no rule has this slug (schedule settings are "
                          f"{schedules.SCHEDULE_SETTING_PREFIX}<SLUG>, slug upper-cased, - as _)")
    host = env.get("WEBSITE_HOSTNAME", "").strip()   # set by the platform in Azure
    digest = _timer_schedule(env, DIGEST_SETTING, DIGEST_DEFAULT)
    verify = _timer_schedule(env, VERIFY_SETTING, VERIFY_DEFAULT)
    problems = tuple(f"app setting {name}: unresolved Key Vault reference" for name in
                     settings.unresolved_references) + push_problem
    for name in settings.unresolved_references:
        what = {"RESPONDER_TEAMS_WEBHOOK_URL": "Teams notification",
                "RESPONDER_PUSH_CLIENT_STATE": "the push path"}.get(name, "what it configures")
        # An error, not a stop: the worker, poison handler and timers still run; only what needs this
        # secret is off. The value is never logged (it names the vault and secret).
        log.error("app setting %s is an unresolved Key Vault reference: %s is OFF until it resolves. "
                  "Check the vault and secret names, the identity's Key Vault Secrets User role and the "
                  "vault's network access, then restart the app; see docs/deploy.md, Key Vault references",
                  name, what)
    log.info("configuration loaded: %d rule(s), %d timer(s), backend %s", len(catalog), len(timers),
             settings.backend)
    return AppConfig(settings=settings, tenant=tenant, catalog=catalog, timers=timers, storage=storage,
                     api_base=f"https://{host}" if host else None, digest_schedule=digest or None,
                     verify_schedule=verify or None, problems=problems, push=push)


def _push_settings(env: Mapping[str, str],
                   unresolved: tuple[str, ...]) -> tuple[PushSettings | None, tuple[str, ...]]:
    """The push path's settings; when they are wrong, the push path is off and health says why.

    Not a stop: the push path is optional and the scheduled rules still catch everything, later; a bad
    push setting (an http:// URL, a short secret) must not take them down with it. An unresolved Key Vault
    reference is already reported (and logged) as one, like the Teams webhook's."""
    try:
        return PushSettings.from_env(env), ()
    except ConfigError as exc:
        if any(str(exc).startswith(f"app setting {name}:") for name in unresolved):
            return None, ()
        # The message names the setting, never its value (core/settings.py).
        log.error("%s: the push path is OFF until it is fixed (the scheduled rules still run); see "
                  "docs/push.md", exc)
        return None, (f"{exc} (push path off)",)


def _timer_schedule(env: Mapping[str, str], setting: str, default: str) -> str:
    """A timer's NCRONTAB schedule from its app setting ("" turns the timer off)."""
    value = env.get(setting, default).strip()
    if not value:
        return value
    try:
        return schedules.validate(value)
    except ScheduleError as exc:
        raise ConfigError(f"app setting {setting}: {exc}") from None
