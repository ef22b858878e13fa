"""Assertions over the parsed Bicep: storage, function app, monitoring, Key Vault, role assignments.

Each check is a function over a parsed file. The test runs it on the real file, then on copies with
the checked property deleted (or weakened), and requires the check to fail on every copy.
"""

from __future__ import annotations

from collections.abc import Callable

import pytest

from app.runtime import quota_table
from core.settings import APP_SETTINGS
from tests.infra import bicepmodel as bm

MAIN = "infra/main.bicep"


def _default_env() -> tuple[bm.BicepFile, bm.Env]:
    main = bm.load(MAIN)
    return main, main.environment(bm.coerce_to_param_types(main, bm.azd_parameter_values()))


def _module(name: str, source: bytes | None = None, **overrides: object) -> tuple[bm.BicepFile, bm.Env]:
    """A module file instantiated with the values main.bicep passes it (defaults + overrides)."""
    main = bm.load(MAIN)
    values = {**bm.coerce_to_param_types(main, bm.azd_parameter_values()), **overrides}
    params = bm.module_params(main, name, main.environment(values))
    file = bm.module_file(main, name, source)
    return file, file.environment(params)


def _must_fail(check: Callable[[bm.BicepFile], None], file: bm.BicepFile, mutated: bytes, why: str) -> None:
    copy = bm.BicepFile(file.path, mutated)
    assert not copy.errors, f"mutation broke the syntax: {copy.errors}"
    with pytest.raises(AssertionError):
        check(copy)
    assert mutated != file.source, why


def _value(file: bm.BicepFile, decl: bm.Decl, *path: str, env: bm.Env | None = None) -> object:
    node = decl.prop(*path)
    assert node is not None, f"{file.line(decl.node)}: {decl.name} has no {'.'.join(path)}"
    return file.evaluate(node, env)


# --- storage ------------------------------------------------------------------------------------

STORAGE_HARDENING = {
    "allowSharedKeyAccess": False,
    "minimumTlsVersion": "TLS1_2",
    "supportsHttpsTrafficOnly": True,
    "allowBlobPublicAccess": False,
}


def check_storage(file: bm.BicepFile) -> None:
    account = file.resource("Microsoft.Storage/storageAccounts")
    for prop, expected in STORAGE_HARDENING.items():
        got = _value(file, account, "properties", prop)
        assert got == expected, f"{file.line(account.node)}: properties.{prop} is {got!r}, not {expected!r}"


def test_storage_is_hardened() -> None:
    check_storage(bm.load("infra/app/storage.bicep"))


@pytest.mark.parametrize("prop", sorted(STORAGE_HARDENING))
def test_storage_check_fails_without_each_property(prop: str) -> None:
    file = bm.load("infra/app/storage.bicep")
    account = file.resource("Microsoft.Storage/storageAccounts")
    _must_fail(check_storage, file, bm.without_property(file, account, "properties", prop), prop)
    weakened = bm.replace_node(
        file,
        account.prop("properties", prop),
        {"minimumTlsVersion": "'TLS1_0'"}.get(prop, "true" if prop.startswith("allow") else "false"),
    )
    _must_fail(check_storage, file, weakened, prop)


def _queue_and_table_names(file: bm.BicepFile, env: bm.Env) -> tuple[set[str], set[str]]:
    queues = {
        env.eval(q.prop("name"))
        for q in file.resources("Microsoft.Storage/storageAccounts/queueServices/queues")
    }
    tables = {
        env.eval(t.prop("name"))
        for t in file.resources("Microsoft.Storage/storageAccounts/tableServices/tables")
    }
    return queues, tables


_DEFAULTS = {s.name: str(s.default) for s in APP_SETTINGS}
PUSH_QUEUE, PUSH_TABLE = _DEFAULTS["RESPONDER_PUSH_QUEUE"], _DEFAULTS["RESPONDER_PUSH_TABLE"]


def check_storage_names(file: bm.BicepFile, env: bm.Env, queue: str, ledger: str,
                        push_queue: str = PUSH_QUEUE, push_table: str = PUSH_TABLE) -> None:
    """Every queue and table the code uses exists in the Bicep, named as the code names it."""
    queues, tables = _queue_and_table_names(file, env)
    # The push path's queue (and the poison queue the host moves failing messages to) exists whether or
    # not the path is on, so turning it on needs no storage change.
    assert queues == {queue, f"{queue}-poison", push_queue, f"{push_queue}-poison"}, queues
    # The ledger, the re-scan quota table the app derives from it (app/runtime.py), the push table.
    assert tables == {ledger, quota_table(ledger), push_table}, tables


def test_queues_and_tables_match_the_code_defaults() -> None:
    defaults = {s.name: s.default for s in APP_SETTINGS}
    file, env = _module("storage")
    check_storage_names(file, env, str(defaults["RESPONDER_REQUESTS_QUEUE"]),
                        str(defaults["RESPONDER_LEDGER_TABLE"]))


def test_quota_table_name_is_derived_like_the_code_for_any_ledger_name() -> None:
    file, env = _module("storage")
    for ledger in ("xdrledger", "L" * 60):   # 60 + "quota" is past the 63-character limit: both cut
        params = {**env.param_values, "ledgerTableName": ledger}
        check_storage_names(file, file.environment(params), "remediation-requests", ledger)


def test_storage_names_check_fails_without_the_quota_table() -> None:
    file, env = _module("storage")
    quota = next(t for t in file.resources("Microsoft.Storage/storageAccounts/tableServices/tables")
                 if "quota" in bm.text(t.prop("name")))
    mutated = bm.BicepFile(file.path, bm.without_property(file, quota, "name"))
    with pytest.raises(AssertionError):
        check_storage_names(mutated, mutated.environment(env.param_values), "remediation-requests", "ledger")


def test_queue_check_fails_without_the_poison_queue() -> None:
    file, env = _module("storage")
    poison = next(
        q
        for q in file.resources("Microsoft.Storage/storageAccounts/queueServices/queues")
        if str(env.eval(q.prop("name"))).endswith("-poison")
    )
    mutated = bm.BicepFile(file.path, bm.replace_node(file, poison.prop("name"), "'other'"))
    queues, _ = _queue_and_table_names(mutated, mutated.environment(env.param_values))
    assert "remediation-requests-poison" not in queues
    with pytest.raises(AssertionError):
        check_storage_names(mutated, mutated.environment(env.param_values), "remediation-requests", "ledger")


@pytest.mark.parametrize("name", ["push-notifications", "push-notifications-poison", "pushstate"])
def test_storage_names_check_fails_without_a_push_queue_or_table(name: str) -> None:
    file, env = _module("storage")
    kinds = ("Microsoft.Storage/storageAccounts/queueServices/queues",
             "Microsoft.Storage/storageAccounts/tableServices/tables")
    (decl,) = [r for kind in kinds for r in file.resources(kind) if env.eval(r.prop("name")) == name]
    mutated = bm.BicepFile(file.path, bm.replace_node(file, decl.prop("name"), "'other'"))
    with pytest.raises(AssertionError, match=name):
        check_storage_names(mutated, mutated.environment(env.param_values), "remediation-requests", "ledger")


def test_main_gives_storage_and_the_app_the_same_push_names() -> None:
    main = bm.load("infra/main.bicep")
    env = main.environment({})
    storage, app = bm.module_params(main, "storage", env), bm.module_params(main, "functionApp", env)
    assert storage["pushQueueName"] == app["pushQueueName"] == PUSH_QUEUE
    assert storage["pushTableName"] == app["pushTableName"] == PUSH_TABLE


def test_deployment_container_is_created_private_and_used_by_the_app() -> None:
    file, env = _module("storage")
    container = file.resource("Microsoft.Storage/storageAccounts/blobServices/containers")
    assert file.evaluate(container.prop("properties", "publicAccess"), env) == "None"
    assert bm.text(container.prop("name")) == "deploymentContainerName"
    main = bm.load(MAIN)
    # main passes the same variable to the storage module (creates it) and the app (deploys from it)
    passed = {
        bm.text(main.modules[m].prop("params", "deploymentContainerName")) for m in ("storage", "functionApp")
    }
    assert passed == {"deploymentContainerName"} and "deploymentContainerName" in main.vars
    fn = bm.load("infra/app/function.bicep")
    value = bm.text(
        fn.resource("Microsoft.Web/sites").prop(
            "properties", "functionAppConfig", "deployment", "storage", "value"
        )
    )
    assert "primaryEndpoints.blob" in value and "${deploymentContainerName}" in value


# --- function app -------------------------------------------------------------------------------


def check_function_app(file: bm.BicepFile) -> None:
    plan = file.resource("Microsoft.Web/serverfarms")
    assert _value(file, plan, "sku", "name") == "FC1", "plan sku must be FC1 (Flex Consumption)"
    assert _value(file, plan, "sku", "tier") == "FlexConsumption"
    site = file.resource("Microsoft.Web/sites")
    assert _value(file, site, "properties", "functionAppConfig", "runtime", "name") == "python"
    assert _value(file, site, "properties", "functionAppConfig", "runtime", "version") == "3.11"
    assert _value(file, site, "identity", "type") == "UserAssigned"
    identities = site.prop("identity", "userAssignedIdentities")
    keys = [bm.text(prop) for _, _, prop in bm.object_items(identities)]
    assert len(keys) == 1 and "identityId" in keys[0], f"user-assigned identity must be identityId: {keys}"
    auth = ("properties", "functionAppConfig", "deployment", "storage", "authentication")
    assert _value(file, site, *auth, "type") == "UserAssignedIdentity"
    assert bm.text(site.prop(*auth, "userAssignedIdentityResourceId")) == "identityId"
    assert (
        _value(file, site, "properties", "functionAppConfig", "deployment", "storage", "type")
        == "blobContainer"
    )
    assert bm.text(site.prop("properties", "keyVaultReferenceIdentity")) == "identityId"
    assert _value(file, site, "properties", "httpsOnly") is True
    assert (
        bm.text(site.prop("properties", "functionAppConfig", "scaleAndConcurrency", "alwaysReady"))
        == "alwaysReady"
    ), "always-ready instances must come from the alwaysReady parameter"
    assert "alwaysReady" in file.params


FUNCTION_APP_PROPS = [
    ("Microsoft.Web/serverfarms", ("sku", "name")),
    ("Microsoft.Web/serverfarms", ("sku", "tier")),
    ("Microsoft.Web/sites", ("properties", "functionAppConfig", "runtime", "name")),
    ("Microsoft.Web/sites", ("properties", "functionAppConfig", "runtime", "version")),
    ("Microsoft.Web/sites", ("identity", "type")),
    ("Microsoft.Web/sites", ("identity", "userAssignedIdentities")),
    ("Microsoft.Web/sites", ("properties", "functionAppConfig", "deployment", "storage", "authentication")),
    ("Microsoft.Web/sites", ("properties", "keyVaultReferenceIdentity")),
    ("Microsoft.Web/sites", ("properties", "httpsOnly")),
    ("Microsoft.Web/sites", ("properties", "functionAppConfig", "scaleAndConcurrency", "alwaysReady")),
]


def test_function_app_is_flex_python_311_with_the_user_assigned_identity() -> None:
    check_function_app(bm.load("infra/app/function.bicep"))


@pytest.mark.parametrize(
    ("rtype", "path"), FUNCTION_APP_PROPS, ids=lambda v: v if isinstance(v, str) else ".".join(v)
)
def test_function_app_check_fails_without_each_property(rtype: str, path: tuple[str, ...]) -> None:
    file = bm.load("infra/app/function.bicep")
    _must_fail(
        check_function_app, file, bm.without_property(file, file.resource(rtype), *path), ".".join(path)
    )


def test_function_app_check_fails_on_other_sku_or_runtime() -> None:
    file = bm.load("infra/app/function.bicep")
    plan, site = file.resource("Microsoft.Web/serverfarms"), file.resource("Microsoft.Web/sites")
    _must_fail(check_function_app, file, bm.replace_node(file, plan.prop("sku", "name"), "'Y1'"), "sku")
    runtime = site.prop("properties", "functionAppConfig", "runtime", "version")
    _must_fail(check_function_app, file, bm.replace_node(file, runtime, "'3.12'"), "version")
    _must_fail(
        check_function_app,
        file,
        bm.replace_node(file, site.prop("identity", "type"), "'SystemAssigned'"),
        "identity",
    )


def test_main_passes_the_identity_to_the_function_app() -> None:
    main = bm.load(MAIN)
    params = main.modules["functionApp"]
    assert bm.text(params.prop("params", "identityId")) == "identity.outputs.id"
    assert bm.text(params.prop("params", "identityClientId")) == "identity.outputs.clientId"
    assert bm.text(main.modules["functionApp"].prop("params", "alwaysReady")) == "alwaysReady"
    assert main.evaluate(main.params["alwaysReady"].value) == [], "always-ready is opt-in (costs money)"


def test_main_is_subscription_scope_and_creates_the_resource_group() -> None:
    main = bm.load(MAIN)
    assert b"targetScope = 'subscription'" in main.source
    rg = main.resource("Microsoft.Resources/resourceGroups")
    for module in main.modules.values():
        if module.name != "sentinel":
            assert bm.text(module.prop("scope")) == rg.name, (
                f"module {module.name} must deploy into the group"
            )


# --- monitoring, Key Vault ---------------------------------------------------------------------


def check_monitoring(file: bm.BicepFile) -> None:
    ai = file.resource("Microsoft.Insights/components")
    assert _value(file, ai, "properties", "DisableLocalAuth") is True, (
        "Application Insights local auth must be off"
    )
    workspace = file.resource("Microsoft.OperationalInsights/workspaces")
    assert bm.text(ai.prop("properties", "WorkspaceResourceId")) == f"{workspace.name}.id"


@pytest.mark.parametrize("prop", ["DisableLocalAuth", "WorkspaceResourceId"])
def test_application_insights_has_local_auth_disabled_on_a_workspace(prop: str) -> None:
    file = bm.load("infra/app/monitoring.bicep")
    check_monitoring(file)
    ai = file.resource("Microsoft.Insights/components")
    _must_fail(check_monitoring, file, bm.without_property(file, ai, "properties", prop), prop)


def test_monitoring_check_fails_when_local_auth_is_enabled() -> None:
    file = bm.load("infra/app/monitoring.bicep")
    ai = file.resource("Microsoft.Insights/components")
    _must_fail(
        check_monitoring, file, bm.replace_node(file, ai.prop("properties", "DisableLocalAuth"), "false"), ""
    )


KEY_VAULT = {"enableRbacAuthorization": True, "enablePurgeProtection": True}


def check_key_vault(file: bm.BicepFile) -> None:
    vault = file.resource("Microsoft.KeyVault/vaults")
    for prop, expected in KEY_VAULT.items():
        assert _value(file, vault, "properties", prop) == expected, (
            f"Key Vault properties.{prop} must be {expected}"
        )
    secrets = {bm.text(s.prop("name")): s for s in file.resources("Microsoft.KeyVault/vaults/secrets")}
    assert set(secrets) == {"teamsWebhookSecretName", "pushClientStateSecretName"}, set(secrets)
    for secret in secrets.values():
        value = secret.prop("properties", "value")
        assert value is not None and value.type == "identifier", "the secret's value must be a parameter"
        param = file.params[bm.text(value)]
        assert param.decorator("secure") is not None, f"parameter {param.name} must be @secure()"
        assert file.evaluate(param.value) == "", f"the parameter {param.name}'s default must be empty"
        assert secret.condition is not None, f"{param.name}: a secret is written only when it is wanted"
    assert "empty" in bm.text(secrets["teamsWebhookSecretName"].condition), (
        "no secret is written when the URL is empty"
    )
    # The clientState is written only when the push path is on (main.bicep passes pushEnabled).
    assert bm.text(secrets["pushClientStateSecretName"].condition) == "(writePushClientState)"


@pytest.mark.parametrize("prop", sorted(KEY_VAULT))
def test_key_vault_is_rbac_mode_with_purge_protection(prop: str) -> None:
    file = bm.load("infra/app/keyvault.bicep")
    check_key_vault(file)
    vault = file.resource("Microsoft.KeyVault/vaults")
    _must_fail(check_key_vault, file, bm.without_property(file, vault, "properties", prop), prop)


@pytest.mark.parametrize("which", [0, 1])
def test_key_vault_check_fails_without_secure_or_with_a_literal_secret(which: int) -> None:
    file = bm.load("infra/app/keyvault.bicep")
    secret = file.resources("Microsoft.KeyVault/vaults/secrets")[which]
    param = file.params[bm.text(secret.prop("properties", "value"))]
    _must_fail(check_key_vault, file, bm.without_decorator(file, param, "secure"), "@secure")
    _must_fail(
        check_key_vault,
        file,
        bm.replace_node(file, secret.prop("properties", "value"), "'https://x'"),
        "literal",
    )


def test_main_writes_the_client_state_secret_only_with_the_push_path_on() -> None:
    main = bm.load("infra/main.bicep")
    cases = ((False, False, False), (True, False, True), (True, True, False), (False, True, False))
    for on, kept, write in cases:
        values = {"pushEnabled": on, "pushClientStateInKeyVault": kept}
        params = bm.module_params(main, "keyVault", main.environment(values))
        assert params["writePushClientState"] is write, values
        assert params["pushClientStateSecretName"] == "push-client-state"
    # azd: off by default, so a first deployment with the push path on writes the secret.
    assert bm.azd_parameter_values()["pushClientStateInKeyVault"] == "false"
    # The value is the secure parameter itself, passed through (never built from public values).
    assert bm.text(main.modules["keyVault"].prop("params", "pushClientState")) == "pushClientState"


# --- role assignments ---------------------------------------------------------------------------

ROLE_IDS = {
    "Storage Blob Data Owner": "b7e6dc6d-f1e8-4753-8033-0f276bb0955b",
    "Storage Queue Data Contributor": "974c5e8b-45b9-4653-ba55-5f855dd0fb88",
    "Storage Table Data Contributor": "0a9a7e1f-b9d0-4cc4-a60d-0319b160aaa3",
    "Monitoring Metrics Publisher": "3913510d-42f4-4e42-8a64-420c390055eb",
    "Key Vault Secrets User": "4633458b-17de-408a-b874-0445c86b69e6",
}
ROLE_SCOPES = {
    "Storage Blob Data Owner": "Microsoft.Storage/storageAccounts",
    "Storage Queue Data Contributor": "Microsoft.Storage/storageAccounts",
    "Storage Table Data Contributor": "Microsoft.Storage/storageAccounts",
    "Monitoring Metrics Publisher": "Microsoft.Insights/components",
    "Key Vault Secrets User": "Microsoft.KeyVault/vaults",
}


def role_assignments(file: bm.BicepFile) -> dict[str, tuple[str, str]]:
    """role definition id -> (scope resource type, principalId expression)."""
    out: dict[str, tuple[str, str]] = {}
    by_name = {d.name: d for d in file.resources()}
    for ra in file.resources("Microsoft.Authorization/roleAssignments"):
        call = ra.prop("properties", "roleDefinitionId")
        assert call is not None and call.type == "call_expression", file.line(ra.node)
        args = [a for a in call.child_by_field_name("arguments").named_children if a.type != "comment"]
        role_id = file.evaluate(args[-1])
        scope = by_name[bm.text(ra.prop("scope"))].full_type
        assert file.evaluate(ra.prop("properties", "principalType")) == "ServicePrincipal"
        out[role_id] = (scope, bm.text(ra.prop("properties", "principalId")))
    return out


def check_rbac(file: bm.BicepFile) -> None:
    got = role_assignments(file)
    for role, role_id in ROLE_IDS.items():
        assert role_id in got, f"the identity lacks {role}"
        assert got[role_id] == (ROLE_SCOPES[role], "principalId"), f"{role}: {got[role_id]}"
    assert set(got) == set(ROLE_IDS.values()), "no role beyond the ones the app needs"


def test_identity_has_its_data_roles_on_the_right_resources() -> None:
    check_rbac(bm.load("infra/app/rbac.bicep"))
    main = bm.load(MAIN)
    assert bm.text(main.modules["rbac"].prop("params", "principalId")) == "identity.outputs.principalId"


@pytest.mark.parametrize("role", sorted(ROLE_IDS))
def test_rbac_check_fails_without_each_role(role: str) -> None:
    file = bm.load("infra/app/rbac.bicep")
    target = next(
        ra
        for ra in file.resources("Microsoft.Authorization/roleAssignments")
        if ROLE_IDS[role]
        in {
            file.evaluate(a)
            for a in ra.prop("properties", "roleDefinitionId").child_by_field_name("arguments").named_children
        }
    )
    _must_fail(
        check_rbac, file, file.source[: target.node.start_byte] + file.source[target.node.end_byte :], role
    )


def test_sentinel_reader_only_when_the_sentinel_backend_is_chosen() -> None:
    main, env = _default_env()
    module = main.modules["sentinel"]
    assert module.condition is not None and env.eval(module.condition) is False
    sentinel_env = main.environment(
        {
            "queryBackend": "sentinel",
            "sentinelWorkspaceResourceId": "/subscriptions/s/resourceGroups/g/providers/"
            "Microsoft.OperationalInsights/workspaces/w",
        }
    )
    assert sentinel_env.eval(module.condition) is True
    assert bm.module_params(main, "sentinel", sentinel_env)["workspaceName"] == "w"
    assert sentinel_env.lookup("sentinelResourceGroup") == "g"
    file = bm.module_file(main, "sentinel")
    ra = file.resource("Microsoft.Authorization/roleAssignments")
    assert file.evaluate(file.vars["logAnalyticsReader"].value) == "73c42c96-874c-492b-b04d-ab87d138a893"
    assert "logAnalyticsReader" in bm.text(ra.prop("properties", "roleDefinitionId"))
    assert bm.text(ra.prop("scope")) == "workspace"
    fn = bm.module_params(main, "functionApp", sentinel_env)
    assert fn["queryBackend"] == "sentinel"
    assert fn["sentinelWorkspaceId"] is bm.UNKNOWN, (
        "the workspace GUID comes from the workspace at deploy time"
    )
    assert bm.module_params(main, "functionApp", env)["sentinelWorkspaceId"] == ""
