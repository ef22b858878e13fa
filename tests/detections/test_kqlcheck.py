"""The parser/binder check itself: it must catch what it is there to catch.

node start-up dominates the cost, so each test module asks for its queries in one batch.
"""

from __future__ import annotations

import pytest

from detections.catalog import Rule, load_rule
from detections.kqlcheck import KqlCheck, check_queries, check_rules, table_schemas
from tests.detections.helpers import write_rule

pytestmark = pytest.mark.node

QUERIES = {
    "valid": "EmailEvents | summarize n = count() by SenderFromAddress | extend s = tostring(n)",
    "trailing comma": 'let d = dynamic(["outlook.com", "gmail.com",]);\n'
    "EmailEvents | where SenderMailFromDomain in~ (d)",
    "unknown column": "EmailEvents | where NoSuchColumn == 1",
    "unknown table": "NoSuchTable | take 1",
    "incomplete": "EmailEvents | where",
    "time generated": "EmailEvents | where TimeGenerated > ago(1h) | project TimeGenerated",
}


@pytest.fixture(scope="module")
def defender() -> dict[str, KqlCheck]:
    return dict(zip(QUERIES, check_queries(list(QUERIES.values()), platform="defender"), strict=True))


def test_valid_query_result_columns(defender: dict[str, KqlCheck]) -> None:
    check = defender["valid"]
    assert check.errors == []
    assert check.columns == [("SenderFromAddress", "string"), ("n", "long"), ("s", "string")]


@pytest.mark.parametrize(
    ("name", "code", "column"),
    [
        ("trailing comma", "KS006", 45),
        ("unknown column", "KS142", 21),
        ("unknown table", "KS204", 1),
        ("incomplete", "KS006", 20),
    ],
)
def test_errors_are_reported_with_positions(
    defender: dict[str, KqlCheck], name: str, code: str, column: int
) -> None:
    errors = defender[name].errors
    assert [(d.code, d.line, d.column) for d in errors] == [(code, 1, column)]


def test_time_generated_exists_only_for_sentinel(defender: dict[str, KqlCheck]) -> None:
    assert defender["time generated"].errors
    assert check_queries([QUERIES["time generated"]], platform="sentinel")[0].errors == []
    assert ["TimeGenerated", "datetime"] in table_schemas("sentinel")["CloudAppEvents"]
    assert "TimeGenerated" not in {c for c, _ in table_schemas("defender")["CloudAppEvents"]}


@pytest.fixture(scope="module")
def rule_problems(tmp_path_factory: pytest.TempPathFactory) -> tuple[dict[str, list[str]], dict[str, Rule]]:
    folder = tmp_path_factory.mktemp("rules")

    def reads_more(data: dict) -> None:
        data["id"] = "00000000-0000-4000-8000-000000000001"
        data["responder"]["remediation"][0]["evidence"].append("SenderIPv4")
        data["responder"]["remediation"][0]["when"] = {"column": "Stage", "equals": "x"}

    def typo(data: dict) -> None:
        data["query"] = data["query"].replace("RecipientEmailAddress in~", "RecipientEmailAdress in~", 1)

    rules = {
        slug: load_rule(write_rule(folder, slug, edit, with_tests=False))
        for slug, edit in (("reads-more", reads_more), ("typo", typo))
    }
    return check_rules(list(rules.values())), rules


def test_rule_reading_a_column_its_result_lacks_is_a_problem(rule_problems) -> None:
    problems = rule_problems[0]["reads-more"]
    assert len(problems) == 2
    assert (
        "responder.remediation.0: reads column SenderIPv4, which the query's result does not have"
        in problems[0]
    )
    assert "reads column Stage" in problems[1]


def test_rule_with_a_bad_query_is_a_problem_at_its_own_line(rule_problems) -> None:
    problems, rules = rule_problems
    path = rules["typo"].path
    # The typo's line and column in the rule's query text (not in the bound query with its let statements).
    lines = rules["typo"].query.splitlines()
    line = next(i for i, text in enumerate(lines, 1) if "RecipientEmailAdress" in text)
    column = lines[line - 1].index("RecipientEmailAdress") + 1
    assert f"{path}: query: line {line}, column {column}: KS142 The name 'RecipientEmailAdress'" in "\n".join(
        problems["typo"]
    )
