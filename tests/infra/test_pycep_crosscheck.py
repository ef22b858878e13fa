"""A second, independent parser (pycep-parser, Lark grammar) reads every file and agrees with the
tree-sitter model on the facts the other tests assert, so a quirk of one grammar cannot hide a gap."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from pycep import BicepParser

from core.settings import APP_SETTINGS
from tests.infra import bicepmodel as bm


def pycep(rel: str) -> dict[str, Any]:
    return BicepParser().parse(file_path=bm.ROOT / rel)


@pytest.mark.parametrize("path", bm.bicep_files(), ids=lambda p: p.relative_to(bm.ROOT).as_posix())
def test_pycep_parses_every_file(path: Path) -> None:
    model = BicepParser().parse(file_path=path)
    assert model["resources"] or model.get("modules"), f"{path.name}: pycep found no resource"


def test_pycep_agrees_on_storage_hardening() -> None:
    props = pycep("infra/app/storage.bicep")["resources"]["account"]["config"]["properties"]
    assert props["allowSharedKeyAccess"] is False
    assert props["minimumTlsVersion"] == "TLS1_2"
    assert props["supportsHttpsTrafficOnly"] is True


def test_pycep_agrees_on_the_function_app() -> None:
    model = pycep("infra/app/function.bicep")
    assert model["resources"]["plan"]["config"]["sku"] == {"name": "FC1", "tier": "FlexConsumption"}
    site = model["resources"]["site"]["config"]
    assert site["properties"]["functionAppConfig"]["runtime"] == {"name": "python", "version": "3.11"}
    assert site["identity"]["type"] == "UserAssigned"
    settings = set(model["variables"]["settings"]["value"])
    assert {s.name for s in APP_SETTINGS if s.source == "bicep"} <= settings
    file = bm.load("infra/app/function.bicep")
    ours = {k for k, _, _ in bm.object_items(file.vars["settings"].value)}
    assert ours == settings


def test_pycep_agrees_on_graph_and_secrets() -> None:
    graph = pycep("infra/app/graph-permissions.bicep")
    assert "microsoftGraphV1" in graph["extensions"]
    app_ids = {
        r["config"]["appId"]
        for r in graph["resources"].values()
        if r["type"] == "Microsoft.Graph/servicePrincipals"
    }
    assert app_ids == {"00000003-0000-0000-c000-000000000000", "00000002-0000-0ff1-ce00-000000000000"}
    for rel in ("infra/main.bicep", "infra/app/keyvault.bicep"):
        param = pycep(rel)["parameters"]["teamsWebhookUrl"]
        assert {"type": "secure"} in param["decorators"] and param["default"] == ""


def test_pycep_agrees_on_the_push_client_state() -> None:
    main = pycep("infra/main.bicep")["parameters"]["pushClientState"]
    assert {"type": "secure"} in main["decorators"]
    assert {"type": "min_length", "argument": 32} in main["decorators"]
    assert "newGuid()" in main["default"] and "'" not in main["default"].replace("'-', ''", "")
    vault = pycep("infra/app/keyvault.bicep")["parameters"]["pushClientState"]
    assert {"type": "secure"} in vault["decorators"] and vault["default"] == ""
    storage = pycep("infra/app/storage.bicep")["parameters"]
    assert storage["pushQueueName"]["default"] == "push-notifications"
    assert storage["pushTableName"]["default"] == "pushstate"
