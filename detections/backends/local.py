"""The local engine: real KQL on DuckDB (duckdb-kql) over a folder of table files.

One ``<Table>.jsonl`` (one JSON object per line) or ``<Table>.csv`` (header row of column names)
per table, typed by ``detections/schemas/<Table>.json``. Tables without a file exist and are empty,
so a query over a table nobody wrote rows for still runs. ``now()``/``ago()`` are pinned to ``now``.

duckdb-kql is young and kept behind this one module: its refusals and DuckDB's raw binder errors
are turned into :class:`BackendError` messages that say what to do. Unlike the services, this
engine applies no outer time filter (``timespan``): a rule must filter its own window, and its test
cases prove it does.
"""

from __future__ import annotations

import csv
import json
import re
import uuid
from collections.abc import Iterable, Mapping
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import duckdb
import duckdb_kql
from duckdb_kql.types import kusto_type

from detections.backends import kustonulls
from detections.backends.base import BackendError, QueryResult, TableError
from detections.catalog import SCHEMAS_DIR
from detections.platforms import PLATFORMS, for_platform, sentinel_columns
from detections.timestamps import parse_datetime

_SQL_TYPES = {"String": "VARCHAR", "DateTime": "TIMESTAMPTZ", "Int": "INTEGER", "Long": "BIGINT",
              "Real": "DOUBLE", "Bool": "BOOLEAN", "Dynamic": "JSON", "Guid": "UUID"}


def load_schemas(schemas_dir: Path = SCHEMAS_DIR) -> dict[str, list[tuple[str, str]]]:
    """Table name -> [(column, type)] from the Sentinel CustomTables JSON files."""
    out: dict[str, list[tuple[str, str]]] = {}
    for path in sorted(Path(schemas_dir).glob("*.json")):
        data = json.loads(path.read_text(encoding="utf-8"))
        cols = [(p["Name"], p["Type"]) for p in data["Properties"]]
        bad = [t for _, t in cols if t not in _SQL_TYPES]
        if data["Name"] != path.stem or bad:
            raise TableError(f"{path}: Name must be {path.stem!r} and types one of {sorted(_SQL_TYPES)}")
        out[data["Name"]] = cols
    return out


def with_time_generated(cols: list[tuple[str, str]]) -> list[tuple[str, str]]:
    """Sentinel stores the Defender tables with ``TimeGenerated`` beside ``Timestamp``; so does this
    engine, so sentinel-platform rules run here too (defender rules may not use it: the parser check
    rejects it for them). Rows that do not give it get their ``Timestamp``."""
    if any(c == "TimeGenerated" for c, _ in cols):
        return cols
    return [*cols, ("TimeGenerated", "DateTime")]


def _typed(ctype: str, value: Any, now: datetime, *, from_text: bool) -> Any:
    """The Python value DuckDB stores for one cell; ValueError says why it does not fit."""
    if value is None or (from_text and value == ""):
        return None
    if ctype == "String":
        if not isinstance(value, str):
            # Test cases are YAML, where unquoted yes/no/on/off, numbers and dates are not strings.
            raise ValueError(f"expected a string, got {value!r} (quote it)")
        return value
    if ctype == "DateTime":
        return parse_datetime(value, now)
    if ctype in ("Int", "Long"):
        if from_text and isinstance(value, str) and re.fullmatch(r"-?\d+", value.strip()):
            return int(value)
        if isinstance(value, bool) or not isinstance(value, int):
            raise ValueError(f"expected a whole number, got {value!r}")
        return value
    if ctype == "Real":
        if from_text and isinstance(value, str):
            try:
                return float(value)
            except ValueError:
                raise ValueError(f"expected a number, got {value!r}") from None
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ValueError(f"expected a number, got {value!r}")
        return float(value)
    if ctype == "Bool":
        if from_text and isinstance(value, str) and value.strip().lower() in ("true", "false"):
            return value.strip().lower() == "true"
        if not isinstance(value, bool):
            raise ValueError(f"expected true or false, got {value!r}")
        return value
    if ctype == "Dynamic":
        if from_text:
            try:
                value = json.loads(value)
            except json.JSONDecodeError as exc:
                raise ValueError(f"expected JSON text for a dynamic column: {exc.msg}") from None
        return json.dumps(value, default=str)
    if ctype == "Guid":
        return uuid.UUID(str(value))
    raise ValueError(f"unknown column type {ctype!r}")


def _json_value(value: Any, ktype: str) -> Any:
    """A result cell as the service's JSON would carry it (datetimes as ISO strings, dynamic parsed)."""
    if value is None:
        return None
    if isinstance(value, datetime):
        value = value.astimezone(UTC)
        text = value.strftime("%Y-%m-%dT%H:%M:%S")
        return text + (f".{value.microsecond:06d}" if value.microsecond else "") + "Z"
    if ktype == "dynamic" and isinstance(value, str):
        return json.loads(value)
    if isinstance(value, Decimal):
        return float(value)
    if isinstance(value, uuid.UUID):
        return str(value)
    if isinstance(value, timedelta):
        return str(value)
    return value


class LocalBackend:
    name = "local"

    def __init__(self, tables_dir: Path | None, now: datetime, *,
                 schemas: Mapping[str, list[tuple[str, str]]] | None = None, platform: str = "defender"):
        """``platform="sentinel"`` gives the tables Sentinel's shape (EmailEvents without the Latest*
        columns) and puts Sentinel's prelude in front of queries, as the Sentinel backend does
        (detections/platforms.py); the default keeps advanced hunting's shape."""
        if now.tzinfo is None:
            raise ValueError("now must be timezone-aware (UTC)")
        if platform not in PLATFORMS:
            raise ValueError(f"unknown platform {platform!r} (expected one of {', '.join(PLATFORMS)})")
        self.now = now.astimezone(UTC)
        self.platform = platform
        base = dict(schemas) if schemas is not None else load_schemas()
        self.schemas = {t: sentinel_columns(t, c) if platform == "sentinel" else with_time_generated(c)
                        for t, c in base.items()}
        # Tables given as files when loaded from a folder (None: tables come from rows, e.g. rule test
        # cases, where an absent table is deliberately empty).
        self.tables_dir: Path | None = None
        self.files: set[str] | None = None
        self.con = duckdb_kql.connect()
        for table, cols in self.schemas.items():
            col_sql = ", ".join(f'"{c}" {_SQL_TYPES[t]}' for c, t in cols)
            self.con.execute(f'CREATE TABLE "{table}" ({col_sql})')
        if tables_dir is not None:
            self._load_dir(Path(tables_dir))

    @classmethod
    def from_rows(cls, tables: Mapping[str, Iterable[Mapping[str, Any]]], now: datetime, *,
                  source: str, schemas: Mapping[str, list[tuple[str, str]]] | None = None,
                  platform: str = "defender") -> LocalBackend:
        """Tables given as rows (rule test cases); errors name ``source`` + ``.<Table>[<n>].<Column>``."""
        backend = cls(None, now, schemas=schemas, platform=platform)
        for table, rows in tables.items():
            if table not in backend.schemas:
                raise TableError(f"{source}.{table}: unknown table (known: {', '.join(backend.schemas)})")
            typed = []
            for i, row in enumerate(rows):
                where = f"{source}.{table}[{i}]"
                if not isinstance(row, Mapping):
                    raise TableError(f"{where}: expected a mapping of column to value")
                typed.append(backend._row(table, row, where, from_text=False))
            backend._insert(table, typed)
        return backend

    # --- loading -----------------------------------------------------------------------------------

    def _load_dir(self, folder: Path) -> None:
        if not folder.is_dir():
            raise TableError(f"{folder}: tables folder does not exist")
        seen: dict[str, Path] = {}
        self.tables_dir, self.files = folder, set()
        for path in sorted(folder.iterdir()):
            if path.name.startswith(".") or path.suffix.lower() not in (".jsonl", ".csv", ".json", ".ndjson"):
                continue  # notes such as a README are not tables
            if path.suffix.lower() in (".json", ".ndjson"):
                raise TableError(f"{path}: table files are <Table>.jsonl (one JSON object per line) "
                                 "or <Table>.csv")
            if path.stem not in self.schemas:
                raise TableError(f"{path}: unknown table {path.stem!r} (known: {', '.join(self.schemas)})")
            if path.stem in seen:
                raise TableError(f"{path}: table {path.stem} also given as {seen[path.stem].name}")
            seen[path.stem] = path
            rows = self._read_jsonl(path) if path.suffix.lower() == ".jsonl" else self._read_csv(path)
            self._insert(path.stem, rows)
            self.files.add(path.stem)

    def _read_jsonl(self, path: Path) -> list[tuple[Any, ...]]:
        rows = []
        with path.open(encoding="utf-8") as fh:
            for n, line in enumerate(fh, start=1):
                if not line.strip():
                    continue
                try:
                    obj = json.loads(line)
                except json.JSONDecodeError as exc:
                    raise TableError(f"{path}: line {n}: not valid JSON: {exc.msg} "
                                     f"(column {exc.colno})") from None
                if not isinstance(obj, dict):
                    raise TableError(f"{path}: line {n}: expected a JSON object, got {type(obj).__name__}")
                rows.append(self._row(path.stem, obj, f"{path}: line {n}", from_text=False))
        return rows

    def _read_csv(self, path: Path) -> list[tuple[Any, ...]]:
        rows = []
        with path.open(encoding="utf-8", newline="") as fh:
            reader = csv.reader(fh)
            header = next(reader, None)
            if header is None:
                return rows
            known = dict(self.schemas[path.stem])
            for name in header:
                if name not in known:
                    raise TableError(f"{path}: line 1: unknown column {name!r} for table {path.stem}")
            for values in reader:
                n = reader.line_num
                if not values:
                    continue
                if len(values) != len(header):
                    raise TableError(f"{path}: line {n}: {len(values)} values for {len(header)} columns")
                rows.append(self._row(path.stem, dict(zip(header, values, strict=True)), f"{path}: line {n}",
                                      from_text=True))
        return rows

    def _row(self, table: str, row: Mapping[str, Any], where: str, *, from_text: bool) -> tuple[Any, ...]:
        cols = self.schemas[table]
        known = {c for c, _ in cols}
        for name in row:
            if name not in known:
                raise TableError(f"{where}: unknown column {name!r} for table {table} "
                                 f"(columns are in detections/schemas/{table}.json)")
        typed: dict[str, Any] = {}
        for col, ctype in cols:
            try:
                typed[col] = _typed(ctype, row.get(col), self.now, from_text=from_text)
            except ValueError as exc:
                raise TableError(f"{where}: column {col}: {exc}") from None
        if typed.get("TimeGenerated") is None:
            typed["TimeGenerated"] = typed.get("Timestamp")
        return kustonulls.fill_missing_strings([t for _, t in cols], [typed[c] for c, _ in cols])

    def _insert(self, table: str, rows: list[tuple[Any, ...]]) -> None:
        if rows:
            marks = ", ".join("?" for _ in self.schemas[table])
            self.con.executemany(f'INSERT INTO "{table}" VALUES ({marks})', rows)

    # --- running ------------------------------------------------------------------------------------

    async def run(self, query: str, *, timespan: timedelta, shape: str = "defender") -> QueryResult:
        # Fast enough (well under a second for a million rows) to run on the event loop's thread,
        # and DuckDB connections are not meant to be shared across threads.
        query = for_platform(query, self.platform, shape)
        try:
            rel = self._kusto_relation(query)
            names = list(rel.columns)
            types = [kusto_type(t) for t in rel.types]
            raw = rel.fetchall()
        except Exception as exc:
            raise BackendError(explain_engine_error(exc)) from exc
        rows = [{n: kustonulls.result_cell(_json_value(v, t), t)
                 for n, t, v in zip(names, types, r, strict=True)} for r in raw]
        return QueryResult(columns=list(zip(names, types, strict=True)), rows=rows,
                           notes=self._missing_notes(query))

    # --- Kusto semantics (detections/backends/kustonulls.py) -----------------------------------------

    def _kusto_relation(self, query: str) -> duckdb.DuckDBPyRelation:
        """What ``duckdb_kql.kql`` does, with the translated SQL rewritten so outer joins and outer
        unions give ``""`` rather than null in string columns, as Kusto does."""
        self.con.execute("SET TimeZone='UTC'")  # the translated SQL assumes it (duckdb_kql.to_sql docs)
        schema = {t: [c for c, _ in cols] for t, cols in self.schemas.items()}
        translated = duckdb_kql.to_sql(query, schema=schema, query_now=self.now)
        if translated.unbound:
            raise duckdb_kql.KqlSchemaError(", ".join(translated.unbound),
                                            hint="declared query parameter with no value and no default")
        params = dict(translated.parameters)
        sql = kustonulls.fill_outer_steps(str(translated), lambda probe: self._describe(probe, params))
        return self._sql(sql, params)

    def _sql(self, sql: str, params: Mapping[str, Any]) -> duckdb.DuckDBPyRelation:
        used = {k: v for k, v in params.items() if re.search(rf"\${re.escape(k)}\b", sql)}
        return self.con.sql(sql, params=used) if used else self.con.sql(sql)

    def _describe(self, sql: str, params: Mapping[str, Any]) -> list[tuple[str, str]]:
        rel = self._sql(sql, params)
        return [(c, str(t)) for c, t in zip(rel.columns, rel.types, strict=True)]

    def missing_tables(self, query: str) -> list[str]:
        """Tables the query reads that had no file in the folder (they ran as empty tables)."""
        if self.files is None:
            return []
        return sorted(t for t in referenced_tables(query, self.schemas) if t not in self.files)

    def _missing_notes(self, query: str) -> list[str]:
        missing = self.missing_tables(query)
        if not missing:
            return []
        noun = "table" if len(missing) == 1 else "tables"
        files = " / ".join(f"{t}.jsonl" for t in missing)
        return [f"no file for {noun} {', '.join(missing)} in {self.tables_dir} (expected {files} or .csv): "
                "read as empty, so this rule's result says nothing about that data"]


_STRING_OR_COMMENT = re.compile(r"""//[^\n]*|@?"(?:[^"\\\n]|\\.)*"|@?'(?:[^'\\\n]|\\.)*'""")


def referenced_tables(query: str, tables: Iterable[str]) -> set[str]:
    """Known table names that appear in the query as names (string literals and comments removed).

    A textual check, not a parse: good enough to tell a person that a table had no file, and it can only
    err towards naming a table a query mentions as a bare identifier without reading it."""
    code = _STRING_OR_COMMENT.sub(" ", query)
    return {t for t in tables if re.search(rf"(?<![\w.]){re.escape(t)}(?!\w)", code)}


def explain_engine_error(exc: BaseException) -> str:
    """A message that says what went wrong and what to do, for any duckdb-kql or DuckDB failure."""
    first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    if isinstance(exc, duckdb_kql.KqlSyntaxError):
        return f"local engine: the query does not parse: {first}"
    if isinstance(exc, duckdb_kql.KqlUnsupportedError):
        return (f"local engine: duckdb-kql does not support part of this query ({first}); the query may "
                "still be valid on Defender/Sentinel, but rules must run on both: rewrite that part")
    if isinstance(exc, duckdb_kql.KqlSchemaError):
        return f"local engine: unknown table, column or name: {first}"
    if isinstance(exc, duckdb.BinderException):
        detail = first.removeprefix("Binder Error: ")
        return (f"local engine: the translated query failed to bind ({detail}). Either the query names a "
                "column its input does not have, or it uses a form duckdb-kql translates wrongly: a known "
                "case is `mv-expand x = SomeLetBoundList`; write `extend x = SomeLetBoundList | mv-expand x`")
    if isinstance(exc, duckdb.CatalogException):
        return f"local engine: {first.removeprefix('Catalog Error: ')}"
    if isinstance(exc, duckdb.Error):
        return f"local engine: DuckDB failed to run the translated query: {first}"
    return f"local engine: {type(exc).__name__}: {first}"
