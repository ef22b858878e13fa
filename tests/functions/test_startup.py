"""Start-up: configuration is validated once, at import; anything wrong stops the app with its name."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from app import bootstrap, schedules
from core.settings import ROOT, ConfigError
from detections.catalog import load_catalog
from tests.functions.conftest import RULE, base_env

STORAGE = "UseDevelopmentStorage=true"


def import_app(env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    """Import function_app in a fresh interpreter, as the host's Python worker does."""
    clean = {k: v for k, v in os.environ.items()
             if not k.startswith(("RESPONDER_", "AzureWebJobsStorage", "AZURE_CLIENT_ID"))}
    return subprocess.run([sys.executable, "-c", "import function_app"], cwd=ROOT, env={**clean, **env},
                          capture_output=True, text=True, timeout=120)


@pytest.mark.parametrize("missing", ["RESPONDER_TENANT_ID", "AZURE_CLIENT_ID"])
def test_missing_required_setting_fails_start_up_naming_it(tenant_file: Path, missing: str) -> None:
    env = base_env(STORAGE, tenant_file)
    del env[missing]
    proc = import_app(env)
    assert proc.returncode != 0
    last = proc.stderr.strip().splitlines()[-1]
    assert last.startswith("core.settings.ConfigError") and missing in last


def test_missing_storage_fails_start_up_naming_the_setting(tenant_file: Path) -> None:
    env = base_env(STORAGE, tenant_file)
    del env["AzureWebJobsStorage"]
    proc = import_app(env)
    assert proc.returncode != 0
    assert "AzureWebJobsStorage__accountName" in proc.stderr.strip().splitlines()[-1]


def test_good_settings_import_cleanly(tenant_file: Path) -> None:
    proc = import_app(base_env(STORAGE, tenant_file))
    assert proc.returncode == 0, proc.stderr


def env_with(tenant_file: Path, **extra: str) -> dict[str, str]:
    return {**base_env(STORAGE, tenant_file), **extra}


def needing_recipients() -> list[str]:
    """Rules whose protected_recipients parameter has no default."""
    return [slug for slug, r in load_catalog().items()
            if "protected_recipients" in r.parameters and r.parameters["protected_recipients"].required]


def test_missing_required_rule_parameter_fails_naming_rule_and_parameter(tmp_path: Path) -> None:
    empty = tmp_path / "tenant.yaml"
    empty.write_text("params: {}\n", encoding="utf-8")
    with pytest.raises(ConfigError) as err:
        bootstrap.load(env_with(empty))
    named = [slug for slug in needing_recipients()
             if f"rule {slug}: parameter protected_recipients" in str(err.value)]
    assert len(named) == 1


def test_disabled_rule_has_no_timer_and_needs_no_parameters(tmp_path: Path) -> None:
    off = needing_recipients()
    assert RULE in off
    cfg = tmp_path / "tenant.yaml"
    cfg.write_text("rules:\n" + "".join(f"  {slug}:\n    enabled: false\n" for slug in off), encoding="utf-8")
    config = bootstrap.load(env_with(cfg))
    assert {t.slug for t in config.timers} == set(load_catalog()) - set(off)


def test_schedule_sources_app_setting_beats_tenant_config_beats_frequency(tmp_path: Path) -> None:
    cfg = tmp_path / "tenant.yaml"
    cfg.write_text("params:\n  protected_recipients: [a@contoso.com]\n"
                   f"rules:\n  {RULE}:\n    schedule: '0 */2 * * * *'\n", encoding="utf-8")
    (timer,) = [t for t in bootstrap.load(env_with(cfg)).timers if t.slug == RULE]
    assert (timer.schedule, timer.source) == ("0 */2 * * * *", f"tenant config rules.{RULE}.schedule")
    setting = schedules.schedule_setting(RULE)
    assert setting == "RESPONDER_SCHEDULE_CONSUMER_SENDER_TO_SHARED_MAILBOXES"
    config = bootstrap.load(env_with(cfg, **{setting: "30 * * * * *"}))
    (timer,) = [t for t in config.timers if t.slug == RULE]
    assert (timer.schedule, timer.source) == ("30 * * * * *", f"app setting {setting}")


@pytest.mark.parametrize(("value", "problem"), [("*/5 * * * *", "needs 6 fields"),
                                                 ("0 */5 * * * * *", "needs 6 fields"),
                                                 ("0 61 * * * *", "minute field: 61 is outside 0-59"),
                                                 ("0 0 25 * * *", "hour field"),
                                                 ("0 0 0 * foo *", "month field"),
                                                 ("0 5-1 * * * *", "runs backwards"),
                                                 ("0 */0 * * * *", "step must be at least 1")])
def test_bad_schedule_setting_fails_start_up(tenant_file: Path, value: str, problem: str) -> None:
    setting = schedules.schedule_setting(RULE)
    with pytest.raises(ConfigError, match=setting) as err:
        bootstrap.load(env_with(tenant_file, **{setting: value}))
    assert problem in str(err.value)


def test_schedule_setting_for_no_rule_is_refused(tenant_file: Path) -> None:
    with pytest.raises(ConfigError, match="RESPONDER_SCHEDULE_NO_SUCH_RULE: no rule has this slug"):
        bootstrap.load(env_with(tenant_file, RESPONDER_SCHEDULE_NO_SUCH_RULE="0 */5 * * * *"))


def test_tenant_config_typo_is_refused(tmp_path: Path) -> None:
    cfg = tmp_path / "tenant.yaml"
    cfg.write_text("params:\n  protected_recipients: [a@contoso.com]\n  treshold: 3\n", encoding="utf-8")
    with pytest.raises(ConfigError, match="treshold"):
        bootstrap.load(env_with(cfg))


def test_app_url_and_digest_schedule(tenant_file: Path) -> None:
    config = bootstrap.load(env_with(tenant_file, WEBSITE_HOSTNAME="func-xdr.azurewebsites.net"))
    assert config.api_base == "https://func-xdr.azurewebsites.net"
    assert config.digest_schedule == "0 0 7 * * *"
    assert bootstrap.load(env_with(tenant_file, RESPONDER_DIGEST_SCHEDULE="")).digest_schedule is None
    with pytest.raises(ConfigError, match=r"RESPONDER_DIGEST_SCHEDULE: .*6 fields"):
        bootstrap.load(env_with(tenant_file, RESPONDER_DIGEST_SCHEDULE="daily"))


def test_identity_based_storage_from_account_name(tenant_file: Path) -> None:
    env = env_with(tenant_file)
    del env["AzureWebJobsStorage"]
    env["AzureWebJobsStorage__accountName"] = "stresponder"
    storage = bootstrap.load(env).storage
    assert storage.table_endpoint == "https://stresponder.table.core.windows.net"
    assert storage.queue_endpoint == "https://stresponder.queue.core.windows.net"
    assert storage.client_id == env["AZURE_CLIENT_ID"] and not storage.connection_string


def test_connection_string_never_in_repr(tenant_file: Path) -> None:
    secret = "DefaultEndpointsProtocol=https;AccountName=x;AccountKey=c2VjcmV0c2VjcmV0"
    config = bootstrap.load(env_with(tenant_file, AzureWebJobsStorage=secret))
    assert "c2VjcmV0c2VjcmV0" not in repr(config)


def test_verify_schedule_default_override_off_and_bad(tenant_file: Path) -> None:
    assert bootstrap.load(env_with(tenant_file)).verify_schedule == "30 */5 * * * *"
    custom = bootstrap.load(env_with(tenant_file, RESPONDER_VERIFY_SCHEDULE="0 */15 * * * *"))
    assert custom.verify_schedule == "0 */15 * * * *"
    assert bootstrap.load(env_with(tenant_file, RESPONDER_VERIFY_SCHEDULE="")).verify_schedule is None
    with pytest.raises(ConfigError, match=r"RESPONDER_VERIFY_SCHEDULE: .*6 fields"):
        bootstrap.load(env_with(tenant_file, RESPONDER_VERIFY_SCHEDULE="every 5 minutes"))


def test_a_tenant_config_setting_naming_a_missing_file_stops_start_up(tmp_path: Path) -> None:
    # Running without the file would silently drop the allowlists and break-glass accounts.
    missing = tmp_path / "tennant.yaml"
    with pytest.raises(ConfigError, match=r"tennant\.yaml does not exist"):
        bootstrap.load(env_with(missing))


# --- an unresolved Key Vault reference (issue 10, Deployment) -----------------------------------------

# What App Service leaves in the setting when it cannot resolve the reference ("the reference string is
# used instead"): learn.microsoft.com/azure/app-service/app-service-key-vault-references
# (Troubleshoot Key Vault references).
UNRESOLVED = "@Microsoft.KeyVault(SecretUri=https://kv-xdr-secretvaultname.vault.azure.net/secrets/teams-webhook-url/)"

INDEX_AND_PROBE = """
import asyncio, json, logging, sys
logging.basicConfig(level=logging.INFO, stream=sys.stderr, format="%(levelname)s %(name)s %(message)s")
import azure.functions as func
import function_app
from devtools.indexing import by_name
functions = by_name(function_app.app)
req = func.HttpRequest("GET", "http://localhost/api/health", body=b"", headers={}, params={}, route_params={})
resp = asyncio.run(functions["health"].get_user_function()(req))
print(json.dumps({"functions": sorted(functions), "status": resp.status_code,
                  "health": json.loads(resp.get_body())}))
"""


def index_in_subprocess(env: dict[str, str]) -> tuple[dict[str, Any], str]:
    clean = {k: v for k, v in os.environ.items()
             if not k.startswith(("RESPONDER_", "AzureWebJobsStorage", "AZURE_CLIENT_ID"))}
    proc = subprocess.run([sys.executable, "-c", INDEX_AND_PROBE], cwd=ROOT, env={**clean, **env},
                          capture_output=True, text=True, timeout=180)
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout.strip().splitlines()[-1]), proc.stderr


def test_unresolved_key_vault_reference_turns_notifications_off_and_keeps_every_function(
        tenant_file: Path, storage_conn: str) -> None:
    good, _ = index_in_subprocess(base_env(storage_conn, tenant_file))
    env = {**base_env(storage_conn, tenant_file), "RESPONDER_TEAMS_WEBHOOK_URL": UNRESOLVED}
    got, log = index_in_subprocess(env)
    # Same functions as a healthy deployment: the worker, poison handler, timers and HTTP routes.
    assert got["functions"] == good["functions"]
    assert {"worker", "poison", "verify", "digest", "health", "scan"} <= set(got["functions"])
    assert got["status"] == 503
    assert got["health"]["status"] == "degraded" and got["health"]["config"] == "degraded"
    assert got["health"]["notifications"] is False and got["health"]["storage"] == "reachable"
    assert got["health"]["problems"] == ["app setting RESPONDER_TEAMS_WEBHOOK_URL: unresolved Key Vault "
                                         "reference"]
    errors = [ln for ln in log.splitlines() if ln.startswith("ERROR app.bootstrap")]
    assert len(errors) == 1 and "RESPONDER_TEAMS_WEBHOOK_URL" in errors[0] and "OFF" in errors[0]
    # Neither the log nor health repeats the value (it names the vault and the secret).
    assert "kv-xdr-secretvaultname" not in log and "kv-xdr-secretvaultname" not in json.dumps(got)
    assert good["status"] == 200 and "problems" not in good["health"]


@pytest.mark.parametrize("setting", ["RESPONDER_PARAMS", "RESPONDER_DRY_RUN"])
def test_unresolved_key_vault_reference_in_a_non_secret_setting_names_it(tenant_file: Path,
                                                                         setting: str) -> None:
    # Only an optional secret can be switched off; anything else would run with a wrong value.
    with pytest.raises(ConfigError, match=f"app setting {setting}: unresolved Key Vault reference") as err:
        bootstrap.load(env_with(tenant_file, **{setting: UNRESOLVED}))
    assert "secretvaultname" not in str(err.value)


# --- the push path's settings (issue 15) ------------------------------------------------------------------

def test_push_settings_are_loaded_with_the_rest(tenant_file: Path) -> None:
    config = bootstrap.load(env_with(tenant_file, RESPONDER_PUSH="on",
                                     RESPONDER_PUSH_NOTIFICATION_URL="https://app.example/api/push/notifications",
                                     RESPONDER_PUSH_CLIENT_STATE="c" * 40))
    assert config.push is not None and config.push.enabled and config.push.queue == "push-notifications"
    assert config.problems == ()
    off = bootstrap.load(env_with(tenant_file))
    assert off.push is not None and not off.push.enabled and off.problems == ()


@pytest.mark.parametrize(("extra", "setting"), [
    ({"RESPONDER_PUSH_NOTIFICATION_URL": "http://app.example/api/push/notifications",
      "RESPONDER_PUSH_CLIENT_STATE": "c" * 40}, "RESPONDER_PUSH_NOTIFICATION_URL"),
    ({"RESPONDER_PUSH_NOTIFICATION_URL": "https://app.example/api/push/notifications",
      "RESPONDER_PUSH_CLIENT_STATE": UNRESOLVED}, "RESPONDER_PUSH_CLIENT_STATE")])
def test_a_wrong_push_setting_turns_the_push_path_off_not_the_app(tenant_file: Path, extra: dict[str, str],
                                                                   setting: str) -> None:
    # The scheduled rules must keep running: the push path is optional (docs/push.md).
    config = bootstrap.load(env_with(tenant_file, RESPONDER_PUSH="on", **extra))
    assert config.push is None
    (problem,) = config.problems        # once, also when it is an unresolved Key Vault reference
    assert problem.startswith(f"app setting {setting}:")
    assert "kv-xdr-secretvaultname" not in problem and config.timers
