"""Every .bicep file parses with tree-sitter-bicep: no ERROR or MISSING node anywhere."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from tests.infra import bicepmodel as bm

BICEP_FILES = bm.bicep_files()


def test_infra_has_the_expected_files() -> None:
    names = {p.relative_to(bm.INFRA).as_posix() for p in BICEP_FILES}
    assert {
        "main.bicep",
        "app/function.bicep",
        "app/storage.bicep",
        "app/monitoring.bicep",
        "app/keyvault.bicep",
        "app/rbac.bicep",
        "app/identity.bicep",
        "app/graph-permissions.bicep",
        "app/sentinel.bicep",
    } <= names


@pytest.mark.parametrize("path", BICEP_FILES, ids=lambda p: p.relative_to(bm.ROOT).as_posix())
def test_bicep_file_parses_without_errors(path: Path) -> None:
    errors = bm.BicepFile(path).errors
    where = [f"{path.relative_to(bm.ROOT)}:{line}:{col}: {what}" for line, col, what in errors]
    assert not where, "syntax errors:\n" + "\n".join(where)


def test_a_syntax_error_is_reported_with_file_and_line() -> None:
    path = bm.INFRA / "app" / "storage.bicep"
    source = path.read_bytes()
    broken = source.replace(b"allowSharedKeyAccess: false", b"allowSharedKeyAccess: = false", 1)
    line = source[: source.index(b"allowSharedKeyAccess")].count(b"\n") + 1
    errors = bm.BicepFile(path, broken).errors
    assert errors, "a broken copy must not parse"
    assert any(abs(err_line - line) <= 1 for err_line, _, _ in errors), errors

    unclosed = bm.BicepFile(path, source.rstrip().rsplit(b"}", 1)[0])
    assert unclosed.errors, "a file missing its closing brace must not parse"


def test_missing_nodes_count_as_errors() -> None:
    tree = bm.parse(b"param x string = 'a'\nvar y = [\n  'b'\n")
    assert bm.syntax_errors(tree)


def test_extension_shim_only_hides_the_plain_extension_statement() -> None:
    # tree-sitter-bicep 1.1.0 does not know `extension <alias>`; only that exact form is blanked.
    assert not bm.syntax_errors(bm.parse(b"extension microsoftGraphV1\nparam x string\n"))
    assert bm.syntax_errors(bm.parse(b"extension microsoftGraphV1 oops(\nparam x string\n"))
    assert bm.syntax_errors(bm.parse(b"extensionx = 1\n"))


def _jsonc(path: Path) -> dict:
    # bicepconfig.json may carry // comments; this file has none, but stay tolerant.
    return json.loads(re.sub(r"(?m)^\s*//.*$", "", path.read_text(encoding="utf-8")))


def test_extension_aliases_are_declared_in_bicepconfig() -> None:
    config = _jsonc(bm.ROOT / "bicepconfig.json")
    extensions = config.get("extensions", {})
    used = {alias for p in BICEP_FILES for alias in bm.extension_aliases(p.read_bytes())}
    assert used == {"microsoftGraphV1"}, used
    for alias in used:
        assert alias in extensions, f"extension {alias} is used but not declared in bicepconfig.json"
        assert extensions[alias].startswith("br:mcr.microsoft.com/bicep/extensions/microsoftgraph/v1.0:")


def test_graph_resources_live_only_in_files_with_the_extension() -> None:
    for path in BICEP_FILES:
        source = path.read_bytes()
        if b"'Microsoft.Graph/" in source:
            assert bm.extension_aliases(source), f"{path.name} declares Graph resources without the extension"


def test_azure_yaml_points_azd_at_the_bicep_and_the_function_app() -> None:
    import yaml

    doc = yaml.safe_load((bm.ROOT / "azure.yaml").read_text(encoding="utf-8"))
    assert doc["infra"] == {"provider": "bicep", "path": "infra", "module": "main"}
    service = doc["services"]["api"]
    assert service["host"] == "function" and service["language"] == "python"
    assert (bm.ROOT / service["project"] / "function_app.py").exists()
    assert (bm.ROOT / service["project"] / "host.json").exists()


def test_main_parameters_name_only_declared_parameters() -> None:
    main = bm.load("infra/main.bicep")
    raw = json.loads((bm.INFRA / "main.parameters.json").read_text(encoding="utf-8"))["parameters"]
    unknown = sorted(set(raw) - set(main.params))
    assert not unknown, f"main.parameters.json sets parameters main.bicep does not declare: {unknown}"
    required = {n for n, d in main.params.items() if d.value is None}
    assert required <= set(raw), f"required parameters azd cannot fill: {sorted(required - set(raw))}"
