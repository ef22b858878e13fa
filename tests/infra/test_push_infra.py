"""The push path as the Bicep deploys it (issue 15, docs/push.md): the per-tenant switch, the notification
URL Graph posts to, the clientState reference, and App Service authentication letting Graph through."""

from __future__ import annotations

import json
from typing import Any

import pytest

from core.settings import ConfigError, PushSettings
from tests.infra import bicepmodel as bm
from tests.infra.test_app_settings import app_settings_object
from tests.infra.test_approval_auth import CLIENT, GROUP, _auth

FUNCTION = "infra/app/function.bicep"
MAIN = "infra/main.bicep"
# The HTTP route of the notification function (PUSH.md contract: push_notifications, route
# api/push/notifications; host.json routePrefix "", so the route is the URL path after the host).
ROUTE = "api/push/notifications"


def _settings(file: bm.BicepFile, **overrides: Any) -> dict[str, Any]:
    main = bm.load(MAIN)
    values = {**bm.coerce_to_param_types(main, bm.azd_parameter_values()), **overrides}
    env = file.environment(bm.module_params(main, "functionApp", main.environment(values)))
    return file.evaluate(app_settings_object(file), env)


def _rendered(file: bm.BicepFile, name: str, **deployment: str) -> str:
    """A setting's expression with the deployment-time values filled in (host name, vault name)."""
    node = bm.get_path(app_settings_object(file), name)
    assert node is not None and node.type == "ternary_expression", f"{name} must depend on pushEnabled"
    assert bm.text(node.child_by_field_name("condition")).strip("() ") == "pushEnabled", name
    text = bm.text(node.child_by_field_name("consequence"))
    if text in file.vars:
        text = bm.text(file.vars[text].value)
    assert text.startswith("'") and text.endswith("'"), text
    text = text[1:-1]
    for expr, value in deployment.items():
        text = text.replace("${" + expr + "}", value)
    assert "${" not in text, f"{name}: unknown interpolation left in {text}"
    return text


def check_push_settings(file: bm.BicepFile) -> None:
    off = _settings(file)
    names = ("RESPONDER_PUSH", "RESPONDER_PUSH_NOTIFICATION_URL", "RESPONDER_PUSH_CLIENT_STATE")
    assert tuple(off[n] for n in names) == ("off", "", ""), "a default deployment leaves the push path off"
    on = _settings(file, pushEnabled=True)
    assert on["RESPONDER_PUSH"] == "on"
    assert on["RESPONDER_PUSH_QUEUE"] == off["RESPONDER_PUSH_QUEUE"] == "push-notifications"
    assert on["RESPONDER_PUSH_TABLE"] == off["RESPONDER_PUSH_TABLE"] == "pushstate"
    host = "func-xdr-abc.azurewebsites.net"
    url = _rendered(file, "RESPONDER_PUSH_NOTIFICATION_URL", **{"site.properties.defaultHostName": host})
    assert url == f"https://{host}/{ROUTE}", url
    ref = _rendered(file, "RESPONDER_PUSH_CLIENT_STATE",
                    **{"vault.name": "kv-x", "pushClientStateSecretName": "push-client-state"})
    assert ref == "@Microsoft.KeyVault(VaultName=kv-x;SecretName=push-client-state)", ref
    # What the app reads once App Service has resolved the reference: accepted by the code's own check.
    push = PushSettings.from_env({"RESPONDER_PUSH": on["RESPONDER_PUSH"],
                                  "RESPONDER_PUSH_NOTIFICATION_URL": url,
                                  "RESPONDER_PUSH_CLIENT_STATE": "a" * 64})
    assert push.enabled and push.notification_url == url
    # Unresolved (the literal reference reaches the app): refused, naming the setting.
    with pytest.raises(ConfigError, match="RESPONDER_PUSH_CLIENT_STATE"):
        PushSettings.from_env({"RESPONDER_PUSH": "on", "RESPONDER_PUSH_NOTIFICATION_URL": url,
                               "RESPONDER_PUSH_CLIENT_STATE": ref})


def test_push_settings_follow_the_switch_and_point_graph_at_the_route() -> None:
    check_push_settings(bm.load(FUNCTION))
    host_json = json.loads((bm.ROOT / "host.json").read_text(encoding="utf-8"))
    assert host_json["extensions"]["http"]["routePrefix"] == "", "the URL path is the route itself"


@pytest.mark.parametrize(("name", "replacement"), [
    ("pushNotificationUrl", "'https://${site.properties.defaultHostName}/api/notifications'"),
    ("pushNotificationUrl", "'http://${site.properties.defaultHostName}/api/push/notifications'"),
    ("pushClientStateReference",
     "'@Microsoft.KeyVault(VaultName=${vault.name};SecretName=teams-webhook-url)'"),
])
def test_push_settings_check_fails_on_a_wrong_url_or_secret(name: str, replacement: str) -> None:
    file = bm.load(FUNCTION)
    mutated = bm.BicepFile(file.path, bm.replace_node(file, file.vars[name].value, replacement))
    with pytest.raises(AssertionError):
        check_push_settings(mutated)


def test_push_settings_check_fails_when_push_is_on_by_default() -> None:
    file = bm.load(FUNCTION)
    node = bm.get_path(app_settings_object(file), "RESPONDER_PUSH")
    mutated = bm.BicepFile(file.path, bm.replace_node(file, node, "'on'"))
    with pytest.raises(AssertionError, match="off"):
        check_push_settings(mutated)


def test_the_switch_is_off_by_default_everywhere() -> None:
    main = bm.load(MAIN)
    assert main.evaluate(main.params["pushEnabled"].value) is False
    assert bm.azd_parameter_values()["pushEnabled"] == "false"
    function = bm.load(FUNCTION)
    assert function.evaluate(function.params["pushEnabled"].value) is False
    assert bm.text(main.modules["functionApp"].prop("params", "pushEnabled")) == "pushEnabled"


# --- App Service authentication must let Graph's POST through ---------------------------------------


def excluded(path: str, patterns: list[str]) -> bool:
    """App Service excludedPaths: an exact path, or "/folder/*" for everything under it
    (https://learn.microsoft.com/azure/app-service/configure-authentication-file-based)."""
    return any(path == p or (p.endswith("/*") and path.startswith(p[:-1])) for p in patterns)


def check_graph_gets_through(file: bm.BicepFile) -> None:
    main = bm.load(MAIN)
    values = {**bm.coerce_to_param_types(main, bm.azd_parameter_values()),
              "approvalPageClientId": CLIENT, "onCallGroupId": GROUP, "pushEnabled": True}
    env = file.environment(bm.module_params(main, "functionApp", main.environment(values)))
    auth = _auth(file)
    assert file.evaluate(auth.condition, env) is True
    glob = file.evaluate(auth.prop("properties"), env)["globalValidation"]
    # With sign-in required everywhere else, Graph (which cannot sign in) must be excluded, for the
    # validation handshake (?validationToken=...) and for every notification.
    assert glob["requireAuthentication"] is True
    assert excluded(f"/{ROUTE}", glob["excludedPaths"]), glob["excludedPaths"]
    assert not excluded("/requests/abc", glob["excludedPaths"]), "the approval page must stay behind sign-in"


def test_easy_auth_lets_graph_post_notifications() -> None:
    check_graph_gets_through(bm.load(FUNCTION))


def test_graph_check_fails_when_only_other_api_routes_are_excluded() -> None:
    file = bm.load(FUNCTION)
    node = _auth(file).prop("properties", "globalValidation", "excludedPaths")
    mutated = bm.BicepFile(file.path, bm.replace_node(file, node, "['/api/health', '/api/scan']"))
    with pytest.raises(AssertionError):
        check_graph_gets_through(mutated)
