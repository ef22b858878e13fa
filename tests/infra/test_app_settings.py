"""Every app setting the code reads (APP_SETTINGS, read here at test time) is set by the Bicep or
documented for the operator, under the same name, with the code's default in a default deployment."""

from __future__ import annotations

import json
import re

import pytest

from core.settings import APP_SETTINGS, AppSetting
from tests.infra import bicepmodel as bm

FUNCTION = "infra/app/function.bicep"
DEPLOY_DOC = bm.ROOT / "docs" / "deploy.md"
# Settings the platform reads (host storage, telemetry), not the app's code.
PLATFORM_SETTINGS = {
    "AzureWebJobsStorage__credential",
    "AzureWebJobsStorage__clientId",
    "AzureWebJobsStorage__blobServiceUri",
    "AzureWebJobsStorage__queueServiceUri",
    "AzureWebJobsStorage__tableServiceUri",
    "APPLICATIONINSIGHTS_CONNECTION_STRING",
    "APPLICATIONINSIGHTS_AUTHENTICATION_STRING",
}


def bicep_settings() -> list[AppSetting]:
    return [s for s in APP_SETTINGS if s.source == "bicep"]


def operator_settings() -> list[AppSetting]:
    return [s for s in APP_SETTINGS if s.source == "operator"]


def app_settings_object(file: bm.BicepFile) -> bm.Node:
    """The object literal of the settings Bicep sets: ``properties: union(extraAppSettings, settings)``."""
    config = [
        r
        for r in file.resources("Microsoft.Web/sites/config")
        if file.evaluate(r.prop("name")) == "appsettings"
    ]
    assert len(config) == 1, "function.bicep must set the app settings in one sites/config 'appsettings'"
    node = config[0].prop("properties")
    assert node is not None
    if node.type == "call_expression":
        assert bm.text(node.child_by_field_name("function")) == "union"
        args = [a for a in node.child_by_field_name("arguments").named_children if a.type != "comment"]
        assert bm.text(args[0]) == "extraAppSettings", "operator settings first, so Bicep's settings win"
        node = args[-1]
    if node.type == "identifier":
        node = file.vars[bm.text(node)].value
    assert node is not None and node.type == "object", "the app settings must be one object literal"
    return node


def app_settings_resource(file: bm.BicepFile) -> bm.Decl:
    (config,) = [r for r in file.resources("Microsoft.Web/sites/config")
                 if file.evaluate(r.prop("name")) == "appsettings"]
    return config


def setting_names(file: bm.BicepFile) -> set[str]:
    return {key for key, _, _ in bm.object_items(app_settings_object(file))}


def check_bicep_sets(file: bm.BicepFile, names: list[str]) -> None:
    missing = sorted(set(names) - setting_names(file))
    assert not missing, f"app settings with source 'bicep' that {file.path.name} does not set: {missing}"


def test_the_table_has_settings_of_both_sources() -> None:
    assert bicep_settings() and operator_settings()
    assert {s.source for s in APP_SETTINGS} <= {"bicep", "operator"}, "unknown source in APP_SETTINGS"


def test_every_bicep_setting_is_set_by_the_bicep() -> None:
    check_bicep_sets(bm.load(FUNCTION), [s.name for s in bicep_settings()])


@pytest.mark.parametrize("name", [s.name for s in bicep_settings()])
def test_setting_check_fails_when_the_setting_is_removed(name: str) -> None:
    file = bm.load(FUNCTION)
    mutated = bm.BicepFile(file.path, bm.without_key(file, app_settings_object(file), name))
    assert not mutated.errors
    with pytest.raises(AssertionError, match=name):
        check_bicep_sets(mutated, [s.name for s in bicep_settings()])


def test_no_unknown_app_setting_in_the_bicep() -> None:
    # A typo (RESPONDER_BACKNED) would be set and silently ignored by the code.
    known = {s.name for s in APP_SETTINGS} | PLATFORM_SETTINGS
    extra = sorted(setting_names(bm.load(FUNCTION)) - known)
    assert not extra, f"function.bicep sets settings the code does not declare in APP_SETTINGS: {extra}"


def test_operator_settings_are_not_set_but_documented() -> None:
    names = setting_names(bm.load(FUNCTION))
    doc = DEPLOY_DOC.read_text(encoding="utf-8")
    for setting in operator_settings():
        assert setting.name not in names or setting.name == "RESPONDER_STORAGE_CONNECTION", setting.name
        assert f"`{setting.name}`" in doc, f"docs/deploy.md must document operator setting {setting.name}"
    assert "RESPONDER_STORAGE_CONNECTION" not in names, (
        "Azure uses identity-based storage, never a connection string"
    )


def _default_values(**overrides: object) -> dict[str, object]:
    main = bm.load("infra/main.bicep")
    values = {**bm.coerce_to_param_types(main, bm.azd_parameter_values()), **overrides}
    params = bm.module_params(main, "functionApp", main.environment(values))
    file = bm.load(FUNCTION)
    return file.evaluate(app_settings_object(file), file.environment(params))


def test_a_default_deployment_gives_the_code_defaults() -> None:
    values = _default_values()
    for setting in bicep_settings():
        got = values[setting.name]
        if got is bm.UNKNOWN:  # known at deployment only: tenant id, client id, account name
            assert setting.required or setting.name.startswith("AzureWebJobsStorage"), setting.name
            continue
        if setting.secret:
            continue
        assert got == (setting.default or ""), (
            f"{setting.name}: Bicep sets {got!r}, the code's default is {setting.default!r}"
        )


def test_operator_settings_pass_through_a_parameter_and_never_override() -> None:
    main = bm.load("infra/main.bicep")
    # through the check of refused names (test_provision.py), unchanged when none is refused
    passed = bm.text(main.modules["functionApp"].prop("params", "extraAppSettings"))
    assert passed == "checkedOperatorAppSettings"
    assert main.evaluate(main.params["operatorAppSettings"].value) == {}
    file = bm.load(FUNCTION)
    values = file.evaluate(
        app_settings_resource(file).prop("properties"),
        file.environment(
            {
                "extraAppSettings": {"RESPONDER_BACKEND": "x", "RESPONDER_PARAMS": "{}"},
                "queryBackend": "defender",
            }
        ),
    )
    assert values["RESPONDER_BACKEND"] == "defender" and values["RESPONDER_PARAMS"] == "{}"


def test_identity_and_tenant_settings_come_from_the_deployment() -> None:
    file = bm.load(FUNCTION)
    obj = app_settings_object(file)
    expr = {key: bm.text(value) for key, value, _ in bm.object_items(obj)}
    assert expr["AZURE_CLIENT_ID"] == "identityClientId"
    assert expr["AzureWebJobsStorage__clientId"] == "identityClientId"
    assert expr["AzureWebJobsStorage__credential"] == "'managedidentity'"
    assert expr["RESPONDER_TENANT_ID"] == "tenant().tenantId"
    assert expr["AzureWebJobsStorage__accountName"] == "storageAccount.name"
    for service in ("blob", "queue", "table"):
        assert (
            expr[f"AzureWebJobsStorage__{service}ServiceUri"]
            == f"storageAccount.properties.primaryEndpoints.{service}"
        )
    assert (
        "ClientId=${identityClientId};Authorization=AAD" in expr["APPLICATIONINSIGHTS_AUTHENTICATION_STRING"]
    )


def test_settings_follow_the_feature_parameters() -> None:
    values = _default_values(
        queryBackend="sentinel",
        sentinelWorkspaceResourceId="/subscriptions/s/resourceGroups/"
        "g/providers/Microsoft.OperationalInsights/workspaces/w",
        emailStrategy="mailbox",
        connectorActions="auto",
        dryRun=True,
        scanRatePerHour=3,
    )
    assert values["RESPONDER_BACKEND"] == "sentinel"
    assert values["RESPONDER_SENTINEL_WORKSPACE_ID"] is bm.UNKNOWN  # the workspace's GUID, at deploy time
    assert values["RESPONDER_EMAIL_STRATEGY"] == "mailbox"
    assert values["RESPONDER_CONNECTOR_ACTIONS"] == "auto"
    assert values["RESPONDER_DRY_RUN"] == "true"
    assert values["RESPONDER_SCAN_RATE_PER_HOUR"] == "3"


@pytest.mark.parametrize("mode", ["manual", "approval", "auto"])
def test_the_app_is_told_the_connector_mode_the_deployment_granted(mode: str) -> None:
    # All three values reach the app: with a boolean only, a manual deployment (nothing granted)
    # looked like approval to the code, and approving called Exchange without permission.
    assert _default_values(connectorActions=mode)["RESPONDER_CONNECTOR_ACTIONS"] == mode
    from core.settings import CONNECTOR_MODES

    main = bm.load("infra/main.bicep")
    allowed = main.params["connectorActions"].decorator("allowed")
    assert allowed is not None and set(CONNECTOR_MODES) == set(main.evaluate(allowed.args[0]))


# Parameters whose azd variable feeds an app setting under another name on purpose: the flag says
# where the webhook secret is, the setting is a Key Vault reference built from it.
AZD_NAMED_APART = {"teamsWebhookInKeyVault"}


def test_an_azd_variable_that_sets_an_app_setting_has_the_setting_s_name() -> None:
    # `azd env set RESPONDER_BACKEND sentinel` must do what the app setting's name says: an azd variable
    # spelled differently from the setting it sets (RESPONDER_QUERY_BACKEND) is a trap.
    main = bm.load("infra/main.bicep")
    raw = json.loads((bm.INFRA / "main.parameters.json").read_text(encoding="utf-8"))["parameters"]
    azd_vars = {name: m.group(1) for name, v in raw.items()
                if (m := re.match(r"^\$\{([A-Z0-9_]+)", str(v.get("value", ""))))}
    base = _default_values()
    defaults = bm.coerce_to_param_types(main, bm.azd_parameter_values())
    names = {s.name for s in APP_SETTINGS}
    checked = 0
    for param, var in sorted(azd_vars.items()):
        decl = main.params[param]
        allowed = decl.decorator("allowed")
        if param not in defaults:   # no default: asked by azd (environment name, location)
            continue
        default = defaults[param]
        if allowed is not None:
            others = [v for v in main.evaluate(allowed.args[0]) if v != default]
        elif isinstance(default, bool):
            others = [not default]
        else:
            continue
        extra = {"sentinelWorkspaceResourceId": "/subscriptions/s/resourceGroups/g/providers/"
                 "Microsoft.OperationalInsights/workspaces/w"} if param == "queryBackend" else {}
        for other in others:
            values = _default_values(**{param: other}, **extra)
            changed = {k for k in names if values.get(k) != base.get(k) and values.get(k) is not bm.UNKNOWN}
            if changed and param not in AZD_NAMED_APART:
                checked += 1
                assert var in changed, (f"azd variable {var} (parameter {param}) sets app setting(s) "
                                        f"{sorted(changed)}: name it after the setting")
    assert checked >= 3   # queryBackend, emailStrategy, connectorActions, dryRun at least


def check_secret_settings_are_key_vault_references(file: bm.BicepFile) -> None:
    secrets = [s for s in bicep_settings() if s.secret]
    assert secrets, "APP_SETTINGS marks the Teams webhook as a secret"
    for notifications, expect_ref in ((True, True), (False, False)):
        params = {"teamsNotifications": notifications, "teamsWebhookSecretName": "teams-webhook-url"}
        values = file.evaluate(app_settings_object(file), file.environment(params))
        for setting in secrets:
            got = values[setting.name]
            if expect_ref:
                assert isinstance(got, str) or got is bm.UNKNOWN, got
                node = bm.get_path(app_settings_object(file), setting.name)
                if node is not None and node.type == "ternary_expression":
                    node = node.child_by_field_name("consequence")
                if node is not None and node.type == "identifier" and bm.text(node) in file.vars:
                    node = file.vars[bm.text(node)].value
                ref = bm.text(node)
                assert "@Microsoft.KeyVault(" in ref and "SecretName=" in ref, (
                    f"{setting.name} must be a Key Vault reference, is {ref}"
                )
            else:
                assert got == "", f"{setting.name} must be empty when notifications are off"


def test_secret_settings_are_key_vault_references() -> None:
    check_secret_settings_are_key_vault_references(bm.load(FUNCTION))


def test_key_vault_reference_check_fails_on_a_plain_value() -> None:
    file = bm.load(FUNCTION)
    node = bm.get_path(app_settings_object(file), "RESPONDER_TEAMS_WEBHOOK_URL")
    mutated = bm.BicepFile(file.path, bm.replace_node(file, node, "teamsNotifications ? name : ''"))
    with pytest.raises(AssertionError):
        check_secret_settings_are_key_vault_references(mutated)
    ref = file.vars["teamsWebhookReference"].value
    mutated = bm.BicepFile(file.path, bm.replace_node(file, ref, "'${vault.properties.vaultUri}'"))
    with pytest.raises(AssertionError):
        check_secret_settings_are_key_vault_references(mutated)


def test_teams_reference_is_on_when_a_url_or_the_vault_flag_is_given() -> None:
    main = bm.load("infra/main.bicep")
    base = bm.coerce_to_param_types(main, bm.azd_parameter_values())
    for extra, expected in (
        ({}, False),
        ({"teamsWebhookUrl": "https://example.invalid/x"}, True),
        ({"teamsWebhookInKeyVault": True}, True),
    ):
        params = bm.module_params(main, "functionApp", main.environment({**base, **extra}))
        assert params["teamsNotifications"] is expected, extra
