"""App Service authentication (authsettingsV2) for the approval page, as infra/app/function.bicep deploys it.

Each check runs on the real file and on copies with the checked property removed, and must fail on
every copy (tests/infra/test_bicep_resources.py does the same for the other resources).
"""

from __future__ import annotations

from typing import Any

import pytest

from tests.infra import bicepmodel as bm
from tests.infra.test_app_settings import app_settings_object

FUNCTION = "infra/app/function.bicep"
MAIN = "infra/main.bicep"
CLIENT = "5a0c1f2e-0000-4000-8000-00000000a991"
GROUP = "6f1e3d2c-0000-4000-8000-00000000c411"


def _env(file: bm.BicepFile, **overrides: Any) -> bm.Env:
    main = bm.load(MAIN)
    values = {**bm.coerce_to_param_types(main, bm.azd_parameter_values()), **overrides}
    return file.environment(bm.module_params(main, "functionApp", main.environment(values)))


def _auth(file: bm.BicepFile) -> bm.Decl:
    (auth,) = [r for r in file.resources("Microsoft.Web/sites/config")
               if file.evaluate(r.prop("name")) == "authsettingsV2"]
    return auth


def check_auth(file: bm.BicepFile) -> None:
    env = _env(file, approvalPageClientId=CLIENT, onCallGroupId=GROUP)
    auth = _auth(file)
    assert auth.condition is not None and file.evaluate(auth.condition, env) is True
    props = file.evaluate(auth.prop("properties"), env)
    assert props["platform"]["enabled"] is True
    glob = props["globalValidation"]
    assert glob["requireAuthentication"] is True
    assert glob["unauthenticatedClientAction"] == "RedirectToLoginPage"
    # Automation keeps working: the function-key API and the health probe are not behind sign-in;
    # nothing else is excluded (the page must never be).
    assert glob["excludedPaths"] == ["/api/*"]
    aad = props["identityProviders"]["azureActiveDirectory"]
    assert aad["enabled"] is True and aad["registration"]["clientId"] == CLIENT
    assert aad["validation"]["defaultAuthorizationPolicy"]["allowedPrincipals"]["groups"] == [GROUP]
    assert props["httpSettings"]["requireHttps"] is True
    settings = file.evaluate(app_settings_object(file), env)
    assert settings["RESPONDER_EASY_AUTH"] == "entra" and settings["RESPONDER_ONCALL_GROUP"] == GROUP
    # The vault's name is known at deployment only; the value is the Key Vault reference.
    assert bm.text(file.vars["approvalPageKeyReference"].value).startswith("'@Microsoft.KeyVault(")
    assert settings["RESPONDER_PAGE_KEY"] is bm.UNKNOWN
    # Off by default: no client id, no authentication, and the app is told so (it then refuses the page).
    off = _env(file)
    assert file.evaluate(auth.condition, off) is False
    assert file.evaluate(app_settings_object(file), off)["RESPONDER_EASY_AUTH"] == ""


def test_authsettings_v2_requires_sign_in_for_the_page_only() -> None:
    check_auth(bm.load(FUNCTION))


@pytest.mark.parametrize("path", [
    ("properties", "platform", "enabled"),
    ("properties", "globalValidation", "requireAuthentication"),
    ("properties", "globalValidation", "excludedPaths"),
    ("properties", "identityProviders", "azureActiveDirectory", "validation", "defaultAuthorizationPolicy"),
    ("properties", "httpSettings"),
], ids=lambda p: ".".join(p))
def test_auth_check_fails_without_each_property(path: tuple[str, ...]) -> None:
    file = bm.load(FUNCTION)
    copy = bm.BicepFile(file.path, bm.without_property(file, _auth(file), *path))
    assert not copy.errors
    with pytest.raises((AssertionError, KeyError, TypeError)):
        check_auth(copy)


def test_auth_check_fails_when_more_is_excluded() -> None:
    file = bm.load(FUNCTION)
    node = _auth(file).prop("properties", "globalValidation", "excludedPaths")
    copy = bm.BicepFile(file.path, bm.replace_node(file, node, "['/api/*', '/requests/*']"))
    with pytest.raises(AssertionError):
        check_auth(copy)


def test_main_passes_the_sign_in_parameters() -> None:
    main = bm.load(MAIN)
    params = main.modules["functionApp"]
    assert bm.text(params.prop("params", "approvalPageClientId")) == "approvalPageClientId"
    assert bm.text(params.prop("params", "onCallGroupId")) == "onCallGroupId"
