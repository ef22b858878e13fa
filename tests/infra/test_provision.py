"""The first `azd up` and later `azd provision` runs (issue 10, Deployment): grants ordered after the slow
resources, azd/Bicep versions pinned, every parameter reachable from azd, and parameter values the
Flex Consumption plan rejects (or the deployment would override) refused before anything is deployed.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from tests.infra import bicepmodel as bm

SCRIPT = bm.INFRA / "scripts" / "check_parameters.py"
RESERVED = json.loads((bm.INFRA / "app-settings-reserved.json").read_text(encoding="utf-8"))
AZURE_YAML = yaml.safe_load((bm.ROOT / "azure.yaml").read_text(encoding="utf-8"))
DOC = (bm.ROOT / "docs" / "deploy.md").read_text(encoding="utf-8")


# --- grants after the slow resources (msgraph-bicep-types issue 193) -------------------------------

def depends_on(file: bm.BicepFile, module: str) -> set[str]:
    node = file.modules[module].prop("dependsOn")
    return {bm.text(c) for c in node.named_children if c.type != "comment"} if node is not None else set()


def test_graph_grants_wait_for_key_vault_role_assignments_and_function_app() -> None:
    main = bm.load("infra/main.bicep")
    assert {"keyVault", "rbac", "functionApp"} <= depends_on(main, "graphPermissions")
    # and nothing waits for the grants, so the ordering cannot form a cycle
    assert all("graphPermissions" not in depends_on(main, m) for m in main.modules if m != "graphPermissions")


def test_the_rerun_for_the_replication_error_is_documented() -> None:
    assert "Not a valid reference update" in DOC and "msgraph-bicep-types/issues/193" in DOC
    assert "azd provision" in DOC[DOC.index("Not a valid reference update"):][:600]


# --- versions ----------------------------------------------------------------------------------------

def version(text: str) -> tuple[int, ...]:
    return tuple(int(x) for x in text.split("."))


def test_azd_minimum_version_is_pinned_and_documented() -> None:
    constraint = AZURE_YAML["requiredVersions"]["azd"]
    m = re.fullmatch(r">=\s*(\d+\.\d+\.\d+)", constraint)
    assert m, constraint
    # 1.23.4: object/array parameters from environment variables (Azure/azure-dev#6694), Bicep 0.39.26
    assert version(m.group(1)) >= (1, 23, 4)
    assert f"azd {m.group(1)}" in DOC and "Bicep CLI 0.39.26" in DOC


# --- every parameter reachable from azd -------------------------------------------------------------

PARAMS_FILE = json.loads((bm.INFRA / "main.parameters.json").read_text(encoding="utf-8"))["parameters"]
# The webhook URL is a secret: azd would write it into .azure/<env>/.env in clear (docs/deploy.md, Teams);
# so is the push path's clientState, which the deployment generates (docs/push.md).
NOT_MAPPED = {"teamsWebhookUrl", "alertTeamsWorkflowUrl", "pushClientState"}


def test_every_main_parameter_but_the_secret_is_in_the_azd_parameters_file() -> None:
    main = bm.load("infra/main.bicep")
    assert set(main.params) - set(PARAMS_FILE) == NOT_MAPPED


def test_object_and_array_parameters_come_from_json_environment_variables() -> None:
    # "${VAR}" with no default: unset, azd leaves the parameter out and the Bicep default applies; set,
    # azd (>= 1.23.4) parses the value as JSON for an object or array parameter.
    main = bm.load("infra/main.bicep")
    for name, decl in main.params.items():
        if decl.type in ("object", "array"):
            assert re.fullmatch(r"\$\{RESPONDER_[A-Z_]+\}", PARAMS_FILE[name]["value"]), name
    assert PARAMS_FILE["operatorAppSettings"]["value"] == "${RESPONDER_OPERATOR_APP_SETTINGS}"


def test_operator_settings_reach_the_function_app() -> None:
    main = bm.load("infra/main.bicep")
    values = {**bm.coerce_to_param_types(main, bm.azd_parameter_values()),
              "operatorAppSettings": {"RESPONDER_PARAMS": '{"params": {}}'}}
    params = bm.module_params(main, "functionApp", main.environment(values))
    assert params["extraAppSettings"] == {"RESPONDER_PARAMS": '{"params": {}}'}


# --- refused before deployment ------------------------------------------------------------------------

def run_hook(**env: str) -> subprocess.CompletedProcess[str]:
    """The preprovision hook as azd runs it: the azd environment's values in the process environment."""
    return subprocess.run([sys.executable, str(SCRIPT)], cwd=bm.ROOT, env={"PATH": "/usr/bin:/bin", **env},
                          capture_output=True, text=True, timeout=60)


def test_azd_runs_the_check_before_provisioning() -> None:
    hook = AZURE_YAML["hooks"]["preprovision"]
    for platform in ("posix", "windows"):
        run = hook[platform]["run"]
        assert run.split()[-1] == "infra/scripts/check_parameters.py" and run.split()[0].startswith("python")
        assert hook[platform].get("continueOnError", False) is False
    assert (bm.ROOT / hook["posix"]["run"].split()[-1]).is_file()


@pytest.mark.parametrize("name", ["FUNCTIONS_WORKER_RUNTIME", "FUNCTIONS_EXTENSION_VERSION",
                                  "WEBSITE_RUN_FROM_PACKAGE", "functions_worker_runtime",
                                  "WEBSITE_CONTENTSHARE", "SCM_DO_BUILD_DURING_DEPLOYMENT"])
def test_flex_consumption_unsupported_settings_are_refused(name: str) -> None:
    proc = run_hook(RESPONDER_OPERATOR_APP_SETTINGS=json.dumps({"RESPONDER_PARAMS": "{}", name: "python"}))
    assert proc.returncode == 1
    assert f"{name}: the Flex Consumption plan does not support this app setting" in proc.stderr
    assert "functions-app-settings#flex-consumption-plan-deprecations" in proc.stderr
    assert "RESPONDER_PARAMS" not in proc.stderr


@pytest.mark.parametrize("name", ["RESPONDER_BACKEND", "RESPONDER_TEAMS_WEBHOOK_URL", "AzureWebJobsStorage",
                                  "azurewebjobsstorage__accountName"])
def test_settings_the_deployment_sets_are_refused_naming_them(name: str) -> None:
    # union(extraAppSettings, settings) in function.bicep lets the deployment win: the operator's value
    # would be dropped without a word.
    proc = run_hook(RESPONDER_OPERATOR_APP_SETTINGS=json.dumps({name: "x"}))
    assert proc.returncode == 1 and f"{name}: set by the deployment itself" in proc.stderr


@pytest.mark.parametrize(("raw", "message"), [
    ("{not json", "RESPONDER_OPERATOR_APP_SETTINGS: not valid JSON"),
    ('["RESPONDER_PARAMS"]', "expected a JSON object of app settings"),
    ('{"RESPONDER_SCHEDULE_CONNECTOR_MAIL_VOLUME": 5}', "app setting values are strings"),
])
def test_malformed_operator_settings_are_refused(raw: str, message: str) -> None:
    proc = run_hook(RESPONDER_OPERATOR_APP_SETTINGS=raw)
    assert proc.returncode == 1 and message in proc.stderr


def test_operator_settings_the_app_reads_pass() -> None:
    ok = {"RESPONDER_PARAMS": '{"params": {"threshold": 3}}', "RESPONDER_DIGEST_SCHEDULE": "0 0 6 * * *",
          "RESPONDER_SCHEDULE_CONNECTOR_MAIL_VOLUME": "0 */2 * * * *",
          "RESPONDER_TENANT_CONFIG": "tenant.yaml"}
    proc = run_hook(RESPONDER_OPERATOR_APP_SETTINGS=json.dumps(ok))
    assert proc.returncode == 0, proc.stderr
    assert "4 setting(s)" in proc.stdout and '"threshold"' not in proc.stdout   # names only, never values
    assert run_hook().returncode == 0                   # nothing set: the Bicep defaults apply


@pytest.mark.parametrize(("raw", "code"), [('[{"name": "function:worker", "instanceCount": 1}]', 0),
                                           ('{"name": "function:worker"}', 1),
                                           ('[{"name": "function:worker", "count": 1}]', 1)])
def test_always_ready_shape(raw: str, code: int) -> None:
    assert run_hook(RESPONDER_ALWAYS_READY=raw).returncode == code


def test_az_cli_users_can_run_the_same_check_with_an_argument(tmp_path: Path) -> None:
    proc = subprocess.run([sys.executable, str(SCRIPT), "--operator-app-settings",
                           '{"WEBSITE_RUN_FROM_PACKAGE": "1"}'], capture_output=True, text=True, timeout=60,
                          env={"PATH": "/usr/bin:/bin"})
    assert proc.returncode == 1 and "WEBSITE_RUN_FROM_PACKAGE" in proc.stderr
    assert "check_parameters.py --operator-app-settings" in DOC


def test_the_reserved_lists_match_the_issue_the_docs_and_function_bicep() -> None:
    flex = set(RESERVED["flexConsumptionUnsupported"]["names"])
    assert {"FUNCTIONS_WORKER_RUNTIME", "FUNCTIONS_EXTENSION_VERSION", "WEBSITE_RUN_FROM_PACKAGE"} <= flex
    function = bm.load("infra/app/function.bicep")
    written = [key for key, _, _ in bm.object_items(function.vars["settings"].value)]
    assert sorted(RESERVED["setByDeployment"]) == sorted(written)
    # the deployment itself must not write what the plan rejects
    assert not {k.upper() for k in written} & {n.upper() for n in flex}


# The same rule inside the template, for `az deployment` (Bicep fail(): Azure/bicep#15958, in every
# Bicep since 0.33; the pinned floor is 0.39.26).

def function_app_settings(operator: dict[str, str]) -> object:
    main = bm.load("infra/main.bicep")
    values = {**bm.coerce_to_param_types(main, bm.azd_parameter_values()), "operatorAppSettings": operator}
    return bm.module_params(main, "functionApp", main.environment(values))["extraAppSettings"]


@pytest.mark.parametrize("name", ["FUNCTIONS_WORKER_RUNTIME", "website_run_from_package", "RESPONDER_BACKEND",
                                  "AzureWebJobsStorage"])
def test_the_template_fails_on_a_refused_operator_setting(name: str) -> None:
    with pytest.raises(bm.BicepFail, match=rf"operatorAppSettings: {name}: not allowed"):
        function_app_settings({"RESPONDER_PARAMS": "{}", name: "x"})


def test_the_template_passes_allowed_operator_settings_unchanged() -> None:
    ok = {"RESPONDER_PARAMS": "{}", "RESPONDER_SCHEDULE_CONNECTOR_MAIL_VOLUME": "0 */2 * * * *"}
    assert function_app_settings(ok) == ok
    assert function_app_settings({}) == {}
