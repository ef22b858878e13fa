"""Loading rule files: every mistake is an error that names the file and the field."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from detections.catalog import RuleError, load_catalog, load_rule
from detections.ruletests import load_tests
from tests.detections.helpers import write_rule


def _load_error(tmp_path: Path, edit) -> RuleError:
    path = write_rule(tmp_path, "edited-rule", edit)
    with pytest.raises(RuleError) as exc:
        load_rule(path)
    assert exc.value.file == str(path)
    assert str(exc.value).startswith(f"{path}: {exc.value.field}: ")
    return exc.value


def _set(key_path: str, value: Any):
    def edit(data: dict) -> None:
        *parents, last = key_path.split(".")
        node = data
        for p in parents:
            node = node[int(p)] if isinstance(node, list) else node[p]
        node[last] = value

    return edit


def _delete(key_path: str):
    def edit(data: dict) -> None:
        *parents, last = key_path.split(".")
        node = data
        for p in parents:
            node = node[p]
        del node[last]

    return edit


@pytest.mark.parametrize(
    ("edit", "field", "message"),
    [
        (_set("colour", "red"), "colour", "unknown key"),
        (_set("responder.colour", "red"), "responder.colour", "unknown key"),
        (
            _set("responder.parameters.threshold.colour", 1),
            "responder.parameters.threshold.colour",
            "unknown key",
        ),
        (_delete("severity"), "(top level)", "'severity' is a required property"),
        (_set("severity", "Critical"), "severity", "is not one of"),
        (_set("id", "not-a-guid"), "id", "does not match"),
        (_set("queryPeriod", "3h"), "queryPeriod", "must equal the window parameter's default (2h)"),
        (
            _set("responder.parameters.threshold.default", "two"),
            "responder.parameters.threshold.default",
            "not a valid int",
        ),
        (
            _set("responder.parameters.window.default", "soon"),
            "responder.parameters.window.default",
            "timespan",
        ),
        (
            _set("responder.parameters.threshold.type", "float"),
            "responder.parameters.threshold.type",
            "is not one of",
        ),
        (_delete("responder.parameters.window"), "responder.parameters", "'window' is a required property"),
        (
            _set(
                "responder.remediation",
                [
                    {
                        "action": "move_to_junk",
                        "mode": "auto",
                        "evidence": ["Subject"],
                        "target": {"network_message_id": "NetworkMessageId"},
                    }
                ],
            ),
            "responder.remediation.0.target",
            "needs target field(s): recipient",
        ),
        (
            _set(
                "responder.remediation",
                [
                    {
                        "action": "move_to_junk",
                        "mode": "auto",
                        "evidence": ["Subject"],
                        "target": {
                            "network_message_id": "NetworkMessageId",
                            "recipient": "RecipientEmailAddress",
                            "user": "AccountUpn",
                        },
                    }
                ],
            ),
            "responder.remediation.0.target.user",
            "takes no such target field",
        ),
        (
            _set(
                "responder.remediation",
                [{"action": "explode", "mode": "auto", "evidence": ["Subject"], "target": {"user": "A"}}],
            ),
            "responder.remediation.0.action",
            "is not one of",
        ),
        (
            _set(
                "responder.remediation",
                [{"action": "notify", "mode": "auto", "evidence": ["Subject"], "target": {}}],
            ),
            "responder.remediation.0.target",
            "a notify action needs at least one target field",
        ),
        (
            _set("responder.scope.recipients_param", "threshold"),
            "responder.scope.recipients_param",
            "must name a string_list parameter",
        ),
        (
            _set("responder.parameters.extra", {"type": "int", "description": "no default"}),
            "responder.parameters.extra",
            "needs a default",
        ),
    ],
)
def test_bad_rule_names_file_and_field(tmp_path: Path, edit, field: str, message: str) -> None:
    err = _load_error(tmp_path, edit)
    assert err.field == field
    assert message in err.message


def test_duplicate_yaml_keys_are_errors(tmp_path: Path) -> None:
    path = write_rule(tmp_path, "dup")
    path.write_text(path.read_text(encoding="utf-8") + "severity: High\n", encoding="utf-8")
    with pytest.raises(RuleError, match="duplicate key 'severity'") as exc:
        load_rule(path)
    assert exc.value.field.startswith("line ")


def test_bad_file_name(tmp_path: Path) -> None:
    path = write_rule(tmp_path, "Bad_Name")
    with pytest.raises(RuleError, match="slug"):
        load_rule(path)


def test_duplicate_ids_across_files(tmp_path: Path) -> None:
    write_rule(tmp_path, "first")
    write_rule(tmp_path, "second")
    with pytest.raises(RuleError, match="duplicate rule id") as exc:
        load_catalog(tmp_path)
    assert exc.value.field == "id"
    assert exc.value.file.endswith("second.yaml")


def test_tests_file_without_rule(tmp_path: Path) -> None:
    write_rule(tmp_path, "only")
    (tmp_path / "ghost.tests.yaml").write_text("now: x\ncases: []\n", encoding="utf-8")
    with pytest.raises(RuleError, match="does not exist"):
        load_catalog(tmp_path)


def test_unknown_slug_selected() -> None:
    with pytest.raises(RuleError, match="no such rule"):
        load_catalog().select(["no-such-rule"])


def _tests_error(tmp_path: Path, text: str) -> RuleError:
    rule = load_rule(write_rule(tmp_path, "r"))
    rule.tests_path.write_text(text, encoding="utf-8")
    with pytest.raises(RuleError) as exc:
        load_tests(rule)
    assert exc.value.file == str(rule.tests_path)
    return exc.value


CASE_P = (
    "  - {name: p, kind: positive, tables: {}, expect: [{action: move_to_junk, "
    "target: {network_message_id: m, recipient: r}}]}\n"
)
CASE_N = "  - {name: n, kind: negative, tables: {}, expect: []}\n"


@pytest.mark.parametrize(
    ("text", "field", "message"),
    [
        ("now: 2026-11-20T12:00:00Z\ncolour: red\ncases:\n" + CASE_P + CASE_N, "colour", "unknown key"),
        (
            "now: 2026-11-20T12:00:00Z\ncases:\n" + CASE_P + CASE_N.replace("[]}", "[], extra: 1}"),
            "cases.1.extra",
            "unknown key",
        ),
        (
            "now: 2026-11-20T12:00:00Z\ncases:\n" + CASE_P + CASE_P.replace("name: p", "name: q"),
            "cases",
            "needs at least one negative case",
        ),
        (
            "now: 2026-11-20T12:00:00Z\nparams: {treshold: 1}\ncases:\n" + CASE_P + CASE_N,
            "params.treshold",
            "declares no such parameter",
        ),
        ("now: 2026-11-20T12:00:00\ncases:\n" + CASE_P + CASE_N, "now", "time zone"),
        (
            "now: 2026-11-20T12:00:00Z\ncases:\n" + CASE_P.replace("recipient: r", "") + CASE_N,
            "cases.0.expect.0.target",
            "recipient",
        ),
        (
            "now: 2026-11-20T12:00:00Z\ncases:\n" + CASE_P.replace("move_to_junk", "disable_user") + CASE_N,
            "cases.0.expect.0.action",
            "has no disable_user action",
        ),
        (
            "now: 2026-11-20T12:00:00Z\ncases:\n"
            + CASE_P.replace("kind: positive", "kind: negative")
            + CASE_N,
            "cases.0.expect",
            "a negative case expects no requests",
        ),
    ],
)
def test_bad_tests_file_names_field(tmp_path: Path, text: str, field: str, message: str) -> None:
    err = _tests_error(tmp_path, text)
    assert err.field == field
    assert message in err.message


def test_rule_may_declare_that_it_covers_every_mailbox(tmp_path: Path) -> None:
    # An org-wide rule (issue 11): email actions without a protected list, declared explicitly.
    def org_wide(data: dict) -> None:
        data["responder"]["scope"] = {"all_mailboxes": True}

    rule = load_rule(write_rule(tmp_path, "org-wide", org_wide))
    assert rule.all_mailboxes and rule.recipients_param is None
    assert not load_catalog()["consumer-sender-to-shared-mailboxes"].all_mailboxes


def test_scope_is_a_protected_list_or_every_mailbox_not_both(tmp_path: Path) -> None:
    err = _load_error(tmp_path, _set("responder.scope.all_mailboxes", True))
    assert err.field == "responder.scope" and "not both" in str(err)


def test_email_rule_without_any_scope_is_refused(tmp_path: Path) -> None:
    err = _load_error(tmp_path, _set("responder.scope", {}))
    assert err.field == "responder.scope.recipients_param" and "all_mailboxes" in str(err)
