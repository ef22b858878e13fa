"""Kusto's null semantics for the local engine: a ``string`` is never null.

Kusto has no null string: a missing value is the empty string, and so is the unmatched side of an outer
join or a column one side of a ``union`` lacks ("The string data type doesn't support null values",
https://learn.microsoft.com/kusto/query/scalar-data-types/null-values). Numbers, datetimes, guids and
``dynamic`` do have null. DuckDB, under duckdb-kql 1.1.2, gives SQL NULL for all of them, so ``col == ""``,
``isnull(col)``, ``summarize by col`` and outer joins answer differently than the service.

The wrap, kept out of the engine's package (see docs/kql-corpus.md for the upstream notes):
- loading: string cells that are missing or null are stored as ``""`` (:func:`fill_missing_strings`);
- querying: the translated SQL is rewritten so every step that can make a null string (an outer
  join, ``lookup``, an outer ``union``) fills its string columns with ``""`` before the next step reads
  them (:func:`fill_outer_steps`); which columns are strings is asked of DuckDB, not guessed;
- results: a null in a string column is ``""``, as the service's JSON carries it (:func:`result_cell`).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from typing import Any

# SQL that can give a null to a column whose inputs had none.
_OUTER = re.compile(r"\b(?:LEFT|RIGHT|FULL(?:\s+OUTER)?)\s+JOIN\b|\bUNION\s+ALL\s+BY\s+NAME\b", re.I)
_CTE_NAME = re.compile(r'\s*("(?:[^"]|"")+"|[A-Za-z_][A-Za-z0-9_]*)\s+AS\s*\(', re.A)

Describe = Callable[[str], Sequence[tuple[str, str]]]
"""Given a SQL query, its result columns as (name, DuckDB type name)."""


def fill_missing_strings(types: Sequence[str], values: Sequence[Any]) -> tuple[Any, ...]:
    """A row as Kusto stores it: a missing or null ``String`` cell is ``""``; other types keep null."""
    return tuple("" if v is None and t == "String" else v for t, v in zip(types, values, strict=True))


def result_cell(value: Any, ktype: str) -> Any:
    """A result cell as the service returns it: a string column has no null."""
    return "" if value is None and ktype == "string" else value


def _skip_quoted(sql: str, i: int) -> int:
    """Index just past the quoted literal/identifier starting at ``sql[i]`` (doubled quote escapes)."""
    quote = sql[i]
    i += 1
    while i < len(sql):
        if sql[i] == quote:
            if i + 1 < len(sql) and sql[i + 1] == quote:
                i += 2
                continue
            return i + 1
        i += 1
    raise ValueError("unterminated quote in translated SQL")


def _close(sql: str, i: int) -> int:
    """Index of the parenthesis closing the one at ``sql[i]``."""
    depth = 0
    while i < len(sql):
        ch = sql[i]
        if ch in "'\"":
            i = _skip_quoted(sql, i)
            continue
        if ch == "(":
            depth += 1
        elif ch == ")":
            depth -= 1
            if depth == 0:
                return i
        i += 1
    raise ValueError("unbalanced parentheses in translated SQL")


def _code_only(sql: str) -> str:
    """The SQL with literals and quoted identifiers blanked, so keywords inside them do not count."""
    out, i = [], 0
    while i < len(sql):
        if sql[i] in "'\"":
            j = _skip_quoted(sql, i)
            out.append(" " * (j - i))
            i = j
        else:
            out.append(sql[i])
            i += 1
    return "".join(out)


def _split_with(sql: str) -> tuple[list[tuple[str, str]], str] | None:
    """``WITH a AS (..), b AS (..) <tail>`` -> ([(a, body), (b, body)], tail); None if not that shape."""
    head = sql.lstrip()
    if not re.match(r"WITH\s", head[:5], re.I):
        return None
    i, ctes = 4, []
    while True:
        m = _CTE_NAME.match(head, i)
        if not m:
            return None
        start = m.end() - 1
        end = _close(head, start)
        ctes.append((m.group(1), head[start + 1:end]))
        i = end + 1
        rest = head[i:].lstrip()
        if rest.startswith(","):
            i = len(head) - len(rest) + 1
            continue
        return ctes, rest


def _with(ctes: Sequence[tuple[str, str]], tail: str) -> str:
    if not ctes:
        return tail
    return "WITH " + ",\n     ".join(f"{n} AS ({b})" for n, b in ctes) + "\n" + tail


def _nest(scopes: Sequence[Sequence[tuple[str, str]]], query: str) -> str:
    """``query`` placed where it sits in the original: inside each enclosing WITH scope, outermost
    first, so its names resolve as they do there (inner CTEs shadow outer ones of the same name)."""
    for ctes in reversed(scopes):
        query = _with(ctes, f"SELECT * FROM ({query})") if ctes else query
    return query


def fill_outer_steps(sql: str, describe: Describe) -> str:
    """``sql`` with every CTE that holds an outer join or outer union wrapped so its string columns
    are ``coalesce(col, '')``: what Kusto gives for the unmatched side. Later steps then compare,
    group and join on ``""`` as the service does."""
    return _fill_query(sql, [], describe)


def _fill_query(sql: str, scopes: list[list[tuple[str, str]]], describe: Describe) -> str:
    parsed = _split_with(sql)
    if parsed is None:
        return _fill_nested(sql, scopes, describe)
    ctes, tail = parsed
    done: list[tuple[str, str]] = []
    for name, body in ctes:
        body = _fill_nested(body, [*scopes, done], describe)
        if _OUTER.search(_code_only(body)):
            probe = _nest([*scopes, [*done, (name, body)]], f"SELECT * FROM {name} LIMIT 0")
            strings = [c for c, t in describe(probe) if t == "VARCHAR"]
            if strings:
                fills = ", ".join(f"coalesce({_ident(c)}, '') AS {_ident(c)}" for c in strings)
                body = f"SELECT * REPLACE ({fills}) FROM ({body})"
        done.append((name, body))
    return _with(done, _fill_nested(tail, [*scopes, done], describe))


def _fill_nested(sql: str, scopes: list[list[tuple[str, str]]], describe: Describe) -> str:
    """Each parenthesised ``(WITH ...)`` subquery in ``sql``, filled as a query of its own."""
    out, i = [], 0
    while i < len(sql):
        ch = sql[i]
        if ch in "'\"":
            j = _skip_quoted(sql, i)
            out.append(sql[i:j])
            i = j
            continue
        if ch == "(" and re.match(r"\(\s*WITH\s", sql[i:i + 12], re.I):
            j = _close(sql, i)
            out.append("(" + _fill_query(sql[i + 1:j], scopes, describe) + ")")
            i = j + 1
            continue
        out.append(ch)
        i += 1
    return "".join(out)


def _ident(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'
