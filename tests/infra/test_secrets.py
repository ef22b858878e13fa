"""No secret literal anywhere in the deployment files; secret inputs are @secure() and never output."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from tests.infra import bicepmodel as bm

DEPLOYMENT_FILES = sorted(
    [
        *bm.INFRA.rglob("*.bicep"),
        *bm.INFRA.rglob("*.json"),
        *bm.INFRA.rglob("*.ps1"),
        bm.ROOT / "azure.yaml",
        bm.ROOT / "bicepconfig.json",
        bm.ROOT / "docs" / "deploy.md",
    ]
)

# What a leaked credential looks like in these files.
SECRET_PATTERNS: dict[str, re.Pattern[str]] = {
    "storage account key or connection string": re.compile(
        r"AccountKey\s*=|DefaultEndpointsProtocol\s*=", re.I
    ),
    "SAS token": re.compile(r"SharedAccessSignature\s*=|[?&]sig=[A-Za-z0-9%+/=]{10,}", re.I),
    "Application Insights key literal": re.compile(r"InstrumentationKey\s*=\s*[0-9a-f]{8}-", re.I),
    "key listing function": re.compile(r"\blist(Keys|Secrets|AccountSas|ServiceSas|ConnectionStrings)\s*\("),
    "client secret": re.compile(
        r"client[_-]?secret|AZURE_CLIENT_SECRET|passwordCredentials|"
        r"addPassword|ClientSecretCredential",
        re.I,
    ),
    "webhook URL": re.compile(
        r"https://[^\s'\"]*(logic\.azure\.com|webhook\.office\.com|powerplatform\.com|"
        r"powerautomate\.com)[^\s'\"]*sig",
        re.I,
    ),
    "Teams connector webhook": re.compile(r"webhook\.office\.com/webhookb2/[0-9a-f-]{36}", re.I),
    "base64 key (88 chars)": re.compile(r"(?<![A-Za-z0-9+/])[A-Za-z0-9+/]{86}==(?![A-Za-z0-9+/=])"),
    "private key": re.compile(r"-----BEGIN [A-Z ]*PRIVATE KEY-----"),
}

# The deployment doc explains what must never be used; those explanatory lines are allowed there.
DOC_ALLOWED = re.compile(r"never|not |no |must not|instead of", re.I)

SECRET_NAMED = re.compile(r"secret|password|webhook|token|connectionstring|apikey|accountkey|clientstate",
                          re.I)
# The one default a secure parameter may have: a value generated at deployment by newGuid() (Bicep linter
# rule secure-parameter-default: "unless it's an empty string or an expression calling the newGuid()
# function", https://learn.microsoft.com/azure/azure-resource-manager/bicep/linter-rule-secure-parameter-default).
# Only newGuid() calls and string glue around them: no literal characters of a secret.
GENERATED_DEFAULT = re.compile(r"'(\$\{replace\(newGuid\(\), '-', ''\)\}|\$\{newGuid\(\)\})+'|newGuid\(\)")


def find_secrets(path: Path, text: str) -> list[str]:
    found = []
    for lineno, line in enumerate(text.splitlines(), 1):
        for what, pattern in SECRET_PATTERNS.items():
            if pattern.search(line) and not (path.suffix == ".md" and DOC_ALLOWED.search(line)):
                found.append(f"{path.relative_to(bm.ROOT)}:{lineno}: {what}")
    return found


@pytest.mark.parametrize("path", DEPLOYMENT_FILES, ids=lambda p: p.relative_to(bm.ROOT).as_posix())
def test_no_secret_literal(path: Path) -> None:
    assert path.exists(), path
    hits = find_secrets(path, path.read_text(encoding="utf-8"))
    assert not hits, "secret-looking literals:\n" + "\n".join(hits)


LEAKS = [
    "AzureWebJobsStorage: 'DefaultEndpointsProtocol=https;AccountName=x;AccountKey=abc'",
    "var sas = 'https://x.blob.core.windows.net/c?sv=2022&sig=AbCdEfGhIjKlMnOp%3D'",
    "var k = st.listKeys().keys[0].value",
    "param clientSecret string = ''",
    "var hook = 'https://prod-01.westeurope.logic.azure.com:443/workflows/abc/triggers/manual/paths/invoke?"
    "api-version=2016-06-01&sp=%2Ftriggers&sv=1.0&sig=abcdefghijklmnop'",
    "var hook = 'https://default0000.environment.api.powerplatform.com:443/powerautomate/automations/direct/"
    "workflows/abc/triggers/manual/paths/invoke?api-version=1&sig=abcdefghijk'",
    "var key = '" + "A" * 86 + "=='",
    "APPLICATIONINSIGHTS_CONNECTION_STRING: 'InstrumentationKey=00000000-0000-0000-0000-000000000000'",
]


@pytest.mark.parametrize("leak", LEAKS)
def test_secret_scan_catches_each_kind_of_leak(leak: str) -> None:
    path = bm.INFRA / "app" / "function.bicep"
    text = path.read_text(encoding="utf-8") + "\n" + leak + "\n"
    assert find_secrets(path, text), f"not caught: {leak}"


def _secret_named_params() -> list[tuple[Path, bm.Decl]]:
    out = []
    for path in bm.bicep_files():
        file = bm.BicepFile(path)
        out += [
            (path, p)
            for p in file.params.values()
            if SECRET_NAMED.search(p.name)
            and p.type == "string"
            and not p.name.endswith(("Name", "InKeyVault"))
        ]
    return out


def check_secure_params(file: bm.BicepFile) -> None:
    for param in file.params.values():
        if SECRET_NAMED.search(param.name) and param.type == "string" and not param.name.endswith(("Name",)):
            assert param.decorator("secure") is not None, (
                f"{file.line(param.node)}: {param.name} must be @secure()"
            )
        if param.decorator("secure") is not None:
            generated = param.value is not None and GENERATED_DEFAULT.fullmatch(bm.text(param.value))
            default = "" if generated or param.value is None else file.evaluate(param.value)
            assert default == "", (
                f"{file.line(param.node)}: secure parameter {param.name} has a default value"
            )
            for output in file.of_kind("output"):
                assert not re.search(rf"\b{param.name}\b", bm.text(output.value)), (
                    f"{file.line(output.node)}: output {output.name} exposes {param.name}"
                )


def test_secret_parameters_are_secure_without_defaults_and_never_output() -> None:
    assert _secret_named_params(), "the Teams webhook parameter is expected"
    for path in bm.bicep_files():
        check_secure_params(bm.BicepFile(path))


@pytest.mark.parametrize("rel", ["infra/main.bicep", "infra/app/keyvault.bicep"])
def test_secure_check_fails_without_the_decorator(rel: str) -> None:
    file = bm.load(rel)
    param = file.params["teamsWebhookUrl"]
    mutated = bm.BicepFile(file.path, bm.without_decorator(file, param, "secure"))
    assert not mutated.errors
    with pytest.raises(AssertionError, match="must be @secure"):
        check_secure_params(mutated)


def test_secure_check_fails_on_a_default_or_an_output() -> None:
    file = bm.load("infra/main.bicep")
    param = file.params["teamsWebhookUrl"]
    with_default = bm.BicepFile(
        file.path, bm.replace_node(file, param.value, "'https://example.invalid/hook'")
    )
    with pytest.raises(AssertionError, match="has a default"):
        check_secure_params(with_default)
    leaked = bm.BicepFile(file.path, file.source + b"\noutput hook string = teamsWebhookUrl\n")
    with pytest.raises(AssertionError, match="exposes teamsWebhookUrl"):
        check_secure_params(leaked)


def test_client_state_default_is_generated_long_enough_and_never_output() -> None:
    main = bm.load("infra/main.bicep")
    param = main.params["pushClientState"]
    assert param.decorator("secure") is not None
    assert GENERATED_DEFAULT.fullmatch(bm.text(param.value)), bm.text(param.value)
    # The app refuses a clientState under 32 characters (core/settings.py PushSettings).
    assert main.evaluate(param.decorator("minLength").args[0]) >= 32
    assert main.evaluate(param.decorator("maxLength").args[0]) <= 255   # Graph's clientState limit
    for output in main.of_kind("output"):
        assert "pushClientState" not in bm.text(output.value), output.name


def test_secure_check_fails_on_a_client_state_default_with_literal_characters() -> None:
    file = bm.load("infra/main.bicep")
    param = file.params["pushClientState"]
    for literal in ("'${newGuid()}-fixed-suffix'", "'0123456789abcdef0123456789abcdef'"):
        mutated = bm.BicepFile(file.path, bm.replace_node(file, param.value, literal))
        with pytest.raises(AssertionError, match="pushClientState has a default"):
            check_secure_params(mutated)


def test_client_state_is_not_an_azd_environment_value() -> None:
    # azd would keep it in .azure/<env>/.env in clear; it is generated by the deployment instead.
    raw = json.loads((bm.INFRA / "main.parameters.json").read_text(encoding="utf-8"))["parameters"]
    assert "pushClientState" not in raw
    assert not any("pushClientState" in str(v) for v in raw.values())


def test_webhook_url_is_not_an_azd_environment_value() -> None:
    # azd writes parameters file values into .azure/<env>/.env in clear: the URL goes to Key Vault instead.
    assert "teamsWebhookUrl" not in (bm.INFRA / "main.parameters.json").read_text(encoding="utf-8")


def test_no_storage_connection_string_setting() -> None:
    file = bm.load("infra/app/function.bicep")
    source = file.source.decode()
    assert not re.search(r"^\s*AzureWebJobsStorage\s*:", source, re.M), "host storage must be identity-based"
    assert "AzureWebJobsStorage__credential: 'managedidentity'" in source
