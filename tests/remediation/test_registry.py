"""The action registry (remediation/actions/): one declaration per action, read by the contract's
validation, the rails, the worker, the cards; the files that cannot import it are checked against it."""

from __future__ import annotations

import asyncio
import json
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from core.request import (
    ACCOUNT_ACTIONS,
    ACTIONS,
    EMAIL_ACTIONS,
    OPTIONAL_TARGET_FIELDS,
    REQUEST_SCHEMA,
    TARGET_FIELDS,
    RequestInvalid,
    request_id,
    utc_iso,
    validate_request,
)
from core.settings import Settings
from core.tenant import TenantConfig
from notifications import entities
from notifications.cards import approval_card
from remediation.actions import get_action
from remediation.actions.registry import ActionDef, Registry, default_registry, discover
from remediation.rails import decide
from tests.remediation.factories import T0, make_rule

ROOT = Path(__file__).resolve().parents[2]
RULE_SCHEMA = ROOT / "detections" / "rule.schema.json"
PERMISSIONS = ROOT / "infra" / "permissions.json"


def differences(registry: Registry) -> list[str]:
    """Where the files that cannot import the registry disagree with it (empty: they agree)."""
    out: list[str] = []
    names = set(registry.names())
    if set(ACTIONS) != names or set(REQUEST_SCHEMA["properties"]["action"]["enum"]) != names:
        out.append(f"core/request.py ACTIONS: {sorted(set(ACTIONS) ^ names)}")
    if set(EMAIL_ACTIONS) != set(registry.family("email")):
        out.append("core/request.py EMAIL_ACTIONS")
    if set(ACCOUNT_ACTIONS) != set(registry.family("account")):
        out.append("core/request.py ACCOUNT_ACTIONS")
    if registry.target_fields() != TARGET_FIELDS:
        out.append("core/request.py TARGET_FIELDS")
    if registry.optional_targets() != OPTIONAL_TARGET_FIELDS:
        out.append("core/request.py OPTIONAL_TARGET_FIELDS")
    action = json.loads(RULE_SCHEMA.read_text(encoding="utf-8"))["$defs"]["action"]["properties"]
    if set(action["action"]["enum"]) != names:
        extra = sorted(set(action["action"]["enum"]) ^ names)
        out.append(f"detections/rule.schema.json action enum: {extra}")
    fields = {f for d in registry for f in (*d.required, *d.optional)}
    if not fields <= set(action["target"]["propertyNames"]["enum"]):
        out.append("detections/rule.schema.json target propertyNames")
    features = json.loads(PERMISSIONS.read_text(encoding="utf-8"))["features"]
    declared = registry.features()
    for key in sorted(set(features) | set(declared)):
        listed = set(features.get(key, {}).get("actions", ())) if key in features else None
        if listed is None or listed != declared.get(key, set()):
            out.append(f"infra/permissions.json features.{key}.actions")
    return out


# --- the files that cannot import the registry agree with it ----------------------------------------------


def test_contract_rule_schema_and_permission_map_agree_with_the_registry() -> None:
    assert differences(default_registry()) == []


def test_the_agreement_check_names_each_file_a_new_action_must_touch() -> None:
    reg = Registry([*default_registry(), ActionDef(name="isolate_device", family="account", label="Isolate",
                                                   executor=lambda _s: None,  # type: ignore[arg-type, return-value]
                                                   required=("device",), features=("isolateDevice",))])
    found = "\n".join(differences(reg))
    for where in ("request.py ACTIONS", "ACCOUNT_ACTIONS", "TARGET_FIELDS", "rule.schema.json action enum",
                  "target propertyNames", "permissions.json features.isolateDevice"):
        assert where in found


def test_every_action_declares_a_label_and_an_executor_that_answers_to_its_name() -> None:
    reg = default_registry()
    assert len({d.label for d in reg}) == len(reg.names()) and all(d.label for d in reg)
    for d in reg:
        strategies = ("defender", "mailbox") if d.family == "email" else ("defender",)
        for strategy in strategies:
            assert get_action(d.name, strategy).name == d.name


def test_what_the_registry_declares_about_families_undo_and_manual_actions() -> None:
    reg = default_registry()
    email = {"move_to_junk", "move_to_inbox", "soft_delete", "move_to_deleted_items"}
    assert set(reg.family("email")) == email
    assert reg.family("connector") == ("disable_connector", "enable_connector")
    assert reg.family("notify") == ("notify",)
    assert {d.name: d.inverse for d in reg if d.inverse} == {"move_to_junk": "move_to_inbox",
                                                             "disable_connector": "enable_connector",
                                                             "disable_user": "enable_user"}
    assert [d.name for d in reg if d.manual] == ["disable_connector", "enable_connector"]
    assert [d.name for d in reg if not d.capped] == ["notify"]
    assert reg.run_by_hand("disable_connector", "manual") and not reg.run_by_hand("disable_connector", "auto")
    assert not reg.run_by_hand("revoke_sessions", "manual") and not reg.run_by_hand(None, "manual")
    request = {"action": "disable_connector", "target": {"connector": "Relay", "connector_type": "inbound"}}
    assert reg.manual_command(request) == "Set-InboundConnector -Identity 'Relay' -Enabled:$false"
    assert reg.manual_command({**request, "action": "enable_connector"}) == (
        "Set-InboundConnector -Identity 'Relay' -Enabled:$true")
    assert reg.manual_command({"action": "notify", "target": {}}) is None


def test_unknown_actions_strategies_and_bad_declarations_are_refused_by_name() -> None:
    with pytest.raises(ValueError, match="unknown action 'wipe_tenant'"):
        get_action("wipe_tenant")
    with pytest.raises(ValueError, match="unknown email strategy 'pigeon'"):
        get_action("move_to_junk", "pigeon")
    d = default_registry().get("notify")
    with pytest.raises(ValueError, match="declared twice"):
        Registry([d, d])
    with pytest.raises(ValueError, match="family must be one of"):
        ActionDef(name="x", family="device", label="X", executor=d.executor)
    with pytest.raises(ValueError, match="both required and optional"):
        ActionDef(name="x", family="account", label="X", executor=d.executor, required=("user",),
                  optional=("user",))
    with pytest.raises(ValueError, match="unknown family"):
        default_registry().family("device")


# --- a new action is one module: it flows to the contract, rails, worker and cards ------------------------

DUMMY_MODULE = '''
from remediation.actions.base import ActionResult
from remediation.actions.registry import ActionDef


class IsolateDevice:
    name = "isolate_device"
    calls: list = []

    async def execute(self, requests, ctx):
        IsolateDevice.calls += [r["target"]["device"] for r in requests]
        return [ActionResult(r["id"], "confirmed", detail="isolated") for r in requests]


DECLARES = (ActionDef(name="isolate_device", family="account", label="Isolate device",
                      executor=lambda _strategy: IsolateDevice(), required=("device",)),)
'''


@pytest.fixture
def with_dummy(tmp_path: Path) -> Iterator[Registry]:
    """The default registry plus one action from a new module in a package of its own."""
    pkg = tmp_path / "dummy_actions"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "isolate_device.py").write_text(textwrap.dedent(DUMMY_MODULE))
    sys.path.insert(0, str(tmp_path))
    try:
        yield Registry([*default_registry(), *discover("dummy_actions")])
    finally:
        sys.path.remove(str(tmp_path))
        for name in [m for m in sys.modules if m.startswith("dummy_actions")]:
            del sys.modules[name]


RULE = make_rule("devices", (("isolate_device", "auto"),), recipients_param=None)


def dummy_request(registry: Registry, mode: str = "auto", **target: Any) -> dict[str, Any]:
    target = target or {"device": "laptop-7"}
    req = {"schema": "remediation-request/1", "rule": RULE.slug, "action": "isolate_device", "mode": mode,
           "target": target, "evidence": {}, "detected_at": utc_iso(T0),
           "run": {"id": "r1", "index": 0, "total": 1}}
    return {"id": request_id(RULE.slug, "isolate_device", target, registry.target_fields()), **req}


def test_a_new_action_module_is_valid_under_its_registrys_contract_only(with_dummy: Registry) -> None:
    req = dummy_request(with_dummy)
    assert with_dummy.contract().validate(req) is req
    with pytest.raises(RequestInvalid, match="action: 'isolate_device' is not one of"):
        validate_request(req)   # the shipped contract does not know it (test above names what to change)
    with pytest.raises(RequestInvalid, match="'device' is a required property"):
        with_dummy.contract().validate(dummy_request(with_dummy, host="laptop-7"))


def test_a_new_action_module_reaches_the_rails_and_the_cards(with_dummy: Registry,
                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    settings = Settings.from_env({}, require=False)
    tenant = TenantConfig.from_mapping({}, source="test")
    req = dummy_request(with_dummy)
    decision = decide(req, settings=settings, tenant=tenant, catalog={RULE.slug: RULE}, registry=with_dummy)
    assert (decision.kind, decision.reason) == ("execute", "auto")
    held = decide(dummy_request(with_dummy, mode="approval"), settings=settings, tenant=tenant,
                  catalog={RULE.slug: RULE}, registry=with_dummy)
    assert held.kind == "hold"
    assert entities.action_label("isolate_device", with_dummy) == "Isolate device"
    monkeypatch.setattr(entities, "default_registry", lambda: with_dummy)
    assert "Isolate device" in json.dumps(approval_card([req]))


@pytest.mark.azurite
def test_a_new_action_module_runs_through_the_worker(with_dummy: Registry, storage_conn: str,
                                                     unique_name: str) -> None:
    from remediation.ledger import Ledger
    from remediation.worker import Worker

    ledger = Ledger.from_connection_string(storage_conn, unique_name)
    worker = Worker(Settings.from_env({}, require=False), TenantConfig.from_mapping({}, source="test"),
                    {RULE.slug: RULE}, ledger, graph=None, exchange=None, registry=with_dummy)
    [out] = asyncio.run(worker.process_message(json.dumps(dummy_request(with_dummy))))
    assert (out.state, out.detail) == ("confirmed", "isolated")
    assert sys.modules["dummy_actions.isolate_device"].IsolateDevice.calls == ["laptop-7"]
