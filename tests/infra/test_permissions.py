"""Graph and Exchange application permissions: only documented roles, each behind its feature's
parameter, and a default deployment grants ThreatHunting.Read.All plus what the default rules need."""

from __future__ import annotations

import json
import re
from typing import Any

import pytest

from core.request import ACCOUNT_ACTIONS, EMAIL_ACTIONS
from core.settings import APP_SETTINGS
from detections.catalog import load_catalog
from tests.infra import bicepmodel as bm

MAIN = "infra/main.bicep"
PERMISSIONS = bm.INFRA / "permissions.json"
GRAPH_APP_ID = "00000003-0000-0000-c000-000000000000"
EXCHANGE_APP_ID = "00000002-0000-0ff1-ce00-000000000000"
HUNTING = "ThreatHunting.Read.All"

# What each action calls and the application permission that call needs (design brief, hard facts).
# Email actions depend on the strategy; the mailbox strategy's Mail.ReadWrite is granted by Exchange
# RBAC for Applications (scoped), not in Entra, unless mailboxAccessScope=tenantWide.
EMAIL_ROLES = {"defender": {"SecurityAnalyzedMessage.ReadWrite.All"}, "mailbox": set()}
ACCOUNT_ROLES = {
    "revoke_sessions": {"User.RevokeSessions.All"},
    "disable_user": {"User.EnableDisableAccount.All", "User.Read.All"},
    "confirm_compromised": {"IdentityRiskyUser.ReadWrite.All", "IdentityRiskyUser.Read.All"},
}
CONNECTOR_ROLES = {"Exchange.ManageAsApp"}
# The push path reads each new message's body (links) and headers: Mail.Read. Mail.ReadBasic "includes all
# properties except body, previewBody, attachments and any extended properties"
# (https://learn.microsoft.com/graph/permissions-reference#mailreadbasicall).
PUSH_ROLES = {"Mail.Read"}
# Features that serve no action: what they are for instead.
NO_ACTION_NEEDS = {"hunting": {HUNTING}, "pushTenantWide": PUSH_ROLES}


def permission_map() -> dict[str, Any]:
    return json.loads(PERMISSIONS.read_text(encoding="utf-8"))


def _defaults() -> dict[str, str]:
    return {s.name: s.default or "" for s in APP_SETTINGS}


def needed_by_default_rules() -> tuple[set[str], set[str]]:
    """(Graph roles, Exchange roles) the rules in the catalog need with the code's default settings."""
    defaults = _defaults()
    strategy = defaults["RESPONDER_EMAIL_STRATEGY"]
    # approval and auto both call Exchange (an approval runs it); manual never does.
    app_runs_connectors = defaults["RESPONDER_CONNECTOR_ACTIONS"] != "manual"
    graph, exchange = {HUNTING}, set()
    for rule in load_catalog().values():
        for spec in rule.actions:
            if spec.mode == "dry_run":
                continue
            if spec.action in EMAIL_ACTIONS:
                graph |= EMAIL_ROLES[strategy]
            elif spec.action in ACCOUNT_ACTIONS:  # auto, or approval (an approval runs it)
                graph |= ACCOUNT_ROLES[spec.action]
            elif spec.action == "disable_connector" and app_runs_connectors:
                # Undocumented Exchange endpoint: opt-in only. In manual mode on-call runs the command.
                exchange |= CONNECTOR_ROLES
    return graph, exchange


def granted(main: bm.BicepFile, **params: Any) -> tuple[list[str], list[str]]:
    env = main.environment(params)
    graph, exchange = env.lookup("graphAppRoles"), env.lookup("exchangeAppRoles")
    assert isinstance(graph, list) and isinstance(exchange, list), (graph, exchange)
    module = bm.module_params(main, "graphPermissions", env)
    assert module["graphAppRoles"] == graph and module["exchangeAppRoles"] == exchange
    return graph, exchange


def azd_defaults(main: bm.BicepFile) -> dict[str, Any]:
    return bm.coerce_to_param_types(main, bm.azd_parameter_values())


# --- the map itself --------------------------------------------------------------------------------


def test_permission_map_rows_match_what_each_action_needs() -> None:
    features = permission_map()["features"]
    assert features["hunting"]["roles"] == [HUNTING]
    for name, feature in features.items():
        assert feature["resource"] in permission_map()["resources"], name
        needed: set[str] = set()
        for action in feature["actions"]:
            if action in EMAIL_ACTIONS:
                needed |= {"defenderEmail": EMAIL_ROLES["defender"], "mailboxTenantWide": {"Mail.ReadWrite"}}[
                    name
                ]
            elif action in ACCOUNT_ROLES:
                needed |= ACCOUNT_ROLES[action]
            elif action == "disable_connector":
                needed |= CONNECTOR_ROLES
        if not feature["actions"]:
            assert name in NO_ACTION_NEEDS, f"feature {name} serves no action: say what it is for"
            needed = NO_ACTION_NEEDS[name]
        assert set(feature["roles"]) == needed, (
            f"feature {name}: roles {feature['roles']}, needs {needed}"
        )
    assert permission_map()["resources"] == {
        "microsoftGraph": GRAPH_APP_ID,
        "exchangeOnline": EXCHANGE_APP_ID,
    }


def test_every_role_in_the_map_is_documented_in_deploy_md() -> None:
    doc = (bm.ROOT / "docs" / "deploy.md").read_text(encoding="utf-8")
    rows = [line for line in doc.splitlines() if line.startswith("|")]
    for name, feature in permission_map()["features"].items():
        for role in feature["roles"]:
            documented = [r for r in rows if f"`{role}`" in r]
            assert documented, f"docs/deploy.md has no permission-table row for {role}"
            assert any(f"`{feature['parameter']}`" in r or feature["parameter"] in r for r in documented), (
                f"docs/deploy.md: the row for {role} must name its parameter ({feature['parameter']})"
            )
        assert name


# --- what main.bicep grants ----------------------------------------------------------------------


def check_grants_only_documented_roles(main: bm.BicepFile) -> None:
    features = permission_map()["features"]
    graph_roles = {r for f in features.values() if f["resource"] == "microsoftGraph" for r in f["roles"]}
    exo_roles = {r for f in features.values() if f["resource"] == "exchangeOnline" for r in f["roles"]}
    everything = dict(
        emailRemediation=True,
        enableRevokeSessions=True,
        enableDisableUser=True,
        enableConfirmCompromised=True,
        connectorActions="auto",
        pushEnabled=True,
    )
    for strategy, scope in (
        ("defender", "exchangeRbac"),
        ("mailbox", "exchangeRbac"),
        ("mailbox", "tenantWide"),
    ):
        graph, exchange = granted(main, **everything, emailStrategy=strategy, mailboxAccessScope=scope)
        assert set(graph) <= graph_roles, f"undocumented Graph roles: {set(graph) - graph_roles}"
        assert set(exchange) <= exo_roles, f"undocumented Exchange roles: {set(exchange) - exo_roles}"
        assert len(graph) == len(set(graph))


def test_main_grants_only_roles_from_the_documented_map() -> None:
    check_grants_only_documented_roles(bm.load(MAIN))


def test_documented_roles_check_fails_on_an_extra_role() -> None:
    main = bm.load(MAIN)
    node = main.vars["graphAppRoles"].value
    mutated = bm.replace_node(
        main, node, bm.text(node).replace("flatten([", "flatten([\n  ['Directory.ReadWrite.All']", 1)
    )
    with pytest.raises(AssertionError, match=r"Directory\.ReadWrite\.All"):
        check_grants_only_documented_roles(bm.BicepFile(main.path, mutated))


def check_default_grants(main: bm.BicepFile, values: dict[str, Any]) -> None:
    graph, exchange = granted(main, **values)
    need_graph, need_exchange = needed_by_default_rules()
    assert set(graph) == need_graph, (
        f"default deployment grants {sorted(graph)}, default rules need {sorted(need_graph)}"
    )
    assert set(exchange) == need_exchange, f"default deployment grants Exchange roles {exchange}"


def test_default_deployment_grants_hunting_and_what_the_default_rules_need() -> None:
    main = bm.load(MAIN)
    check_default_grants(main, azd_defaults(main))  # azd up
    check_default_grants(main, {})  # az deployment sub create without the parameters file
    graph, _ = granted(main)
    assert HUNTING in graph


@pytest.mark.parametrize("param", ["enableRevokeSessions", "enableDisableUser", "enableConfirmCompromised"])
def test_default_grants_check_fails_when_a_feature_default_flips(param: str) -> None:
    main = bm.load(MAIN)
    node = main.params[param].value
    flipped = "false" if main.evaluate(node) else "true"
    mutated = bm.BicepFile(main.path, bm.replace_node(main, node, flipped))
    with pytest.raises(AssertionError, match="default deployment grants"):
        check_default_grants(mutated, {})


def test_default_grants_check_fails_when_connector_actions_default_to_auto() -> None:
    main = bm.load(MAIN)
    mutated = bm.BicepFile(main.path, bm.replace_node(main, main.params["connectorActions"].value, "'auto'"))
    with pytest.raises(AssertionError, match="Exchange roles"):
        check_default_grants(mutated, {})


def test_default_grants_check_fails_when_email_remediation_is_off_but_a_default_rule_needs_it() -> None:
    main = bm.load(MAIN)
    need_graph, _ = needed_by_default_rules()
    # The shipped catalog moves mail by default (consumer-sender-to-shared-mailboxes). Should that ever
    # change, this check would test nothing: fail and make someone rewrite it, never skip silently.
    assert need_graph != {HUNTING}, "no default rule moves mail: the mutation below proves nothing"
    mutated = bm.BicepFile(main.path, bm.replace_node(main, main.params["emailRemediation"].value, "false"))
    with pytest.raises(AssertionError):
        check_default_grants(mutated, {})


def test_azd_parameter_defaults_agree_with_the_bicep_defaults() -> None:
    main = bm.load(MAIN)
    for name, value in azd_defaults(main).items():
        decl = main.params[name]
        if decl.value is not None:
            assert value == main.evaluate(decl.value), (
                f"{name}: main.parameters.json {value!r} vs Bicep default"
            )


def test_email_strategy_default_matches_the_code() -> None:
    main = bm.load(MAIN)
    assert main.evaluate(main.params["emailStrategy"].value) == _defaults()["RESPONDER_EMAIL_STRATEGY"]
    assert main.evaluate(main.params["queryBackend"].value) == _defaults()["RESPONDER_BACKEND"]


FEATURES = [
    ({"enableRevokeSessions": True}, {"User.RevokeSessions.All"}, set()),
    ({"enableDisableUser": True}, {"User.EnableDisableAccount.All", "User.Read.All"}, set()),
    ({"enableConfirmCompromised": True},
     {"IdentityRiskyUser.ReadWrite.All", "IdentityRiskyUser.Read.All"}, set()),
    ({"connectorActions": "approval"}, set(), {"Exchange.ManageAsApp"}),
    ({"connectorActions": "auto"}, set(), {"Exchange.ManageAsApp"}),
    (
        {"emailRemediation": True, "emailStrategy": "mailbox", "mailboxAccessScope": "tenantWide"},
        {"Mail.ReadWrite"},
        set(),
    ),
    (
        {"emailRemediation": True, "emailStrategy": "defender"},
        {"SecurityAnalyzedMessage.ReadWrite.All"},
        set(),
    ),
    # The push path: nothing in Entra by default (Exchange RBAC scopes Mail.Read to the protected
    # mailboxes); Mail.Read tenant-wide only when asked; nothing more when Mail.ReadWrite, which
    # includes reading, is granted tenant-wide already.
    ({"pushEnabled": True}, set(), set()),
    ({"pushEnabled": True, "mailboxAccessScope": "tenantWide"}, {"Mail.Read"}, set()),
    (
        {"pushEnabled": True, "emailRemediation": True, "emailStrategy": "mailbox",
         "mailboxAccessScope": "tenantWide"},
        {"Mail.ReadWrite"},
        set(),
    ),
]


@pytest.mark.parametrize(("params", "graph_extra", "exchange_extra"), FEATURES, ids=lambda v: str(v))
def test_each_feature_adds_exactly_its_roles(
    params: dict[str, Any], graph_extra: set[str], exchange_extra: set[str]
) -> None:
    main = bm.load(MAIN)
    # Starting from the least: every feature off.
    least = {"emailRemediation": False, "enableRevokeSessions": False}
    base_graph, base_exchange = granted(main, **least)
    assert base_graph == [HUNTING] and base_exchange == []
    graph, exchange = granted(main, **{**least, **params})
    assert set(graph) - set(base_graph) == graph_extra
    assert set(exchange) - set(base_exchange) == exchange_extra


def test_mailbox_strategy_by_default_grants_no_tenant_wide_mail_access() -> None:
    main = bm.load(MAIN)
    graph, _ = granted(main, emailStrategy="mailbox")
    assert "Mail.ReadWrite" not in graph and "SecurityAnalyzedMessage.ReadWrite.All" not in graph
    assert HUNTING in graph


def test_defender_strategy_grants_the_analyzed_email_role() -> None:
    graph, _ = granted(bm.load(MAIN), emailStrategy="defender", emailRemediation=True)
    assert "SecurityAnalyzedMessage.ReadWrite.All" in graph


# --- the Graph module ------------------------------------------------------------------------------


def check_graph_module(file: bm.BicepFile) -> None:
    sps = {
        file.evaluate(sp.prop("appId")): sp.name
        for sp in file.resources("Microsoft.Graph/servicePrincipals")
        if sp.existing
    }
    assert sps.keys() == {GRAPH_APP_ID, EXCHANGE_APP_ID}, f"service principals resolved by appId: {sps}"
    grants = file.resources("Microsoft.Graph/appRoleAssignedTo")
    assert len(grants) == 2
    loops = {}
    for grant in grants:
        assert grant.loop_var and grant.loop_over is not None, "a grant must iterate over its role parameter"
        over = bm.text(grant.loop_over)
        assert over in file.params, f"{file.line(grant.node)}: grants must loop over a parameter, not {over}"
        loops[over] = grant
        assert bm.text(grant.prop("principalId")) == "principalId"
        resource = bm.text(grant.prop("resourceId"))
        app_role = bm.text(grant.prop("appRoleId"))
        sp_name = resource.removesuffix(".id")
        assert sp_name in sps.values(), resource
        assert f"{sp_name}.appRoles" in app_role and grant.loop_var in app_role, app_role
    assert set(loops) == {"graphAppRoles", "exchangeAppRoles"}
    graph_sp, exo_sp = sps[GRAPH_APP_ID], sps[EXCHANGE_APP_ID]
    assert bm.text(loops["graphAppRoles"].prop("resourceId")) == f"{graph_sp}.id"
    assert bm.text(loops["exchangeAppRoles"].prop("resourceId")) == f"{exo_sp}.id"
    assert not re.search(r"'[A-Za-z]+\.[A-Za-z.]+(\.All|AsApp)'", file.source.decode()), (
        "graph-permissions.bicep must not name a role itself"
    )


def test_graph_module_grants_exactly_the_roles_it_is_given() -> None:
    check_graph_module(bm.load("infra/app/graph-permissions.bicep"))
    main = bm.load(MAIN)
    module = main.modules["graphPermissions"]
    assert bm.text(module.prop("params", "principalId")) == "identity.outputs.principalId"
    assert module.condition is None, "the hunting grant is unconditional"


def test_graph_module_check_fails_on_a_literal_role_or_wrong_service_principal() -> None:
    file = bm.load("infra/app/graph-permissions.bicep")
    grant = file.resources("Microsoft.Graph/appRoleAssignedTo")[0]
    with pytest.raises(AssertionError):
        check_graph_module(
            bm.BicepFile(file.path, bm.replace_node(file, grant.loop_over, "['Mail.ReadWrite']"))
        )
    sp = file.resources("Microsoft.Graph/servicePrincipals")[0]
    with pytest.raises(AssertionError):
        check_graph_module(
            bm.BicepFile(
                file.path, bm.replace_node(file, sp.prop("appId"), "'11111111-0000-0000-c000-000000000000'")
            )
        )
    with pytest.raises(AssertionError):
        check_graph_module(bm.BicepFile(file.path, bm.without_property(file, grant, "principalId")))


# --- the push path ---------------------------------------------------------------------------------


def test_push_calls_need_no_more_than_mail_read() -> None:
    push = permission_map()["pushCalls"]
    assert set([push["needs"]]) == PUSH_ROLES
    order = ["Mail.ReadBasic", "Mail.Read"]      # least to most (message-get, permissions)
    calls = push["calls"]
    assert any("body" in c["call"] and c["least"] == "Mail.Read" for c in calls), (
        "reading the body (links) is why the push path needs Mail.Read"
    )
    for call in calls:
        assert call["least"] in order, call
        assert call["source"].startswith("https://learn.microsoft.com/graph/"), call


def check_push_permission_docs(deploy: str, push: str, script: str) -> None:
    for call in permission_map()["pushCalls"]["calls"]:
        verb, path = call["call"].split(" ", 1)
        assert f"`{verb} {path.split(' ')[0]}" in push, f"docs/push.md does not list {call['call']}"
    rbac = permission_map()["exchangeRbac"]
    assert rbac["source"] == "https://learn.microsoft.com/exchange/permissions-exo/application-rbac"
    rows = [line for line in deploy.splitlines() if line.startswith("|")]
    for role, spec in rbac["roles"].items():
        assert f"'{role}'" in script, f"Set-MailboxScope.ps1 cannot grant {role}"
        documented = [r for r in rows if f"`{role}`" in r]
        assert documented, f"docs/deploy.md has no permission-table row for {role}"
        assert any(f"`{spec['graphPermission']}`" in r for r in documented), role
        assert f"`{role}`" in push, f"docs/push.md does not name {role}"
    assert rbac["source"] in push and rbac["source"] in deploy


def _push_docs() -> tuple[str, str, str]:
    return ((bm.ROOT / "docs" / "deploy.md").read_text(encoding="utf-8"),
            (bm.ROOT / "docs" / "push.md").read_text(encoding="utf-8"),
            (bm.INFRA / "scripts" / "Set-MailboxScope.ps1").read_text(encoding="utf-8"))


def test_push_permissions_are_documented_where_an_admin_reads_them() -> None:
    check_push_permission_docs(*_push_docs())


def test_push_permission_docs_check_fails_on_a_gap() -> None:
    deploy, push, script = _push_docs()
    with pytest.raises(AssertionError, match=re.escape("cannot grant Application Mail.Read")):
        check_push_permission_docs(deploy, push, script.replace("'Application Mail.Read'", "'x'"))
    without_row = "\n".join(line for line in deploy.splitlines() if "`Application Mail.Read`" not in line)
    with pytest.raises(AssertionError, match=re.escape("no permission-table row for Application Mail.Read")):
        check_push_permission_docs(without_row, push, script)
    with pytest.raises(AssertionError, match=re.escape("docs/push.md does not list")):
        check_push_permission_docs(deploy, push.replace("`GET /users/{id}/messages/{id}", "`GET"), script)
