"""A small model of Bicep files built on the tree-sitter-bicep syntax tree, for the infra tests.

No Bicep compiler runs here, so the tests read the source: ``BicepFile`` lists a file's declarations
(params, vars, resources with their nested children, modules, outputs) and ``evaluate`` computes
what can be known before deployment (literals, parameters and their defaults, variables, ``?:``,
``&&``, ``==``, ``flatten``, ``loadJsonContent``, ...). Anything only Azure knows (a resource's
runtime properties, ``tenant()``, ``uniqueString``) evaluates to ``UNKNOWN``.

``without_property`` and ``replace_node`` make mutated copies of a file, so each test can show that
its assertion fails when the property it checks is removed.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Any

import tree_sitter_bicep
from tree_sitter import Language, Node, Parser, Tree

ROOT = Path(__file__).resolve().parents[2]
INFRA = ROOT / "infra"

# tree-sitter-bicep 1.1.0 predates Bicep's `extension <alias>` statement (it knows the older
# `import`/`provider '<ref>'` forms only). Exactly that one-line form is blanked (same length, so
# positions stay right) before parsing; tests check separately that the alias is in bicepconfig.json.
EXTENSION_STATEMENT = re.compile(rb"(?m)^[ \t]*extension[ \t]+([A-Za-z_][A-Za-z0-9_]*)[ \t]*(?://[^\n]*)?$")


class _Unknown:
    def __repr__(self) -> str:
        return "UNKNOWN"

    def __bool__(self) -> bool:
        raise TypeError("UNKNOWN has no truth value: the expression depends on deployment-time values")


UNKNOWN: Any = _Unknown()


class BicepFail(Exception):
    """``fail('message')`` was evaluated: the deployment would stop with this message."""


@cache
def _parser() -> Parser:
    return Parser(Language(tree_sitter_bicep.language()))


def extension_aliases(source: bytes) -> list[str]:
    return [m.group(1).decode() for m in EXTENSION_STATEMENT.finditer(source)]


def parse(source: bytes) -> Tree:
    shimmed = EXTENSION_STATEMENT.sub(lambda m: b" " * len(m.group(0)), source)
    return _parser().parse(shimmed)


def syntax_errors(tree: Tree) -> list[tuple[int, int, str]]:
    """(line, column, what) of every ERROR or MISSING node, 1-based lines and columns."""
    found: list[tuple[int, int, str]] = []

    def walk(node: Node) -> None:
        if node.type == "ERROR" or node.is_missing:
            what = f"missing {node.type}" if node.is_missing else f"cannot parse {node.text.decode()[:60]!r}"
            found.append((node.start_point[0] + 1, node.start_point[1] + 1, what))
        for child in node.children:
            walk(child)

    walk(tree.root_node)
    return found


def text(node: Node | None) -> str:
    """The node's source text; "" for an absent node (so a comparison fails rather than crashes)."""
    return "" if node is None else (node.text or b"").decode()


def _named(node: Node) -> list[Node]:
    return [c for c in node.named_children if c.type != "comment"]


@dataclass
class Decorator:
    name: str
    args: list[Node]


@dataclass
class Decl:
    kind: str  # param | var | resource | module | output
    name: str
    node: Node
    decorators: list[Decorator] = field(default_factory=list)
    type: str = ""  # param/output: its type; resource: 'Type@api'; module: its path
    value: Node | None = None  # param default / var / output value
    body: Node | None = None  # resource or module: the object
    condition: Node | None = None  # `if (...)`
    loop_var: str | None = None  # `[for x in xs: ...]`
    loop_over: Node | None = None
    existing: bool = False
    parent: Decl | None = None  # nested resource: its parent

    def decorator(self, name: str) -> Decorator | None:
        return next((d for d in self.decorators if d.name == name), None)

    @property
    def full_type(self) -> str:
        """Resource type without the api version; a nested resource gets its parent's prefix."""
        own = self.type.split("@", 1)[0]
        if self.parent is not None and "/" not in own and "." not in own:
            return f"{self.parent.full_type}/{own}"
        return own

    def prop(self, *path: str) -> Node | None:
        """The value node at ``path`` inside the body object (None when absent)."""
        return get_path(self.body, *path) if self.body is not None else None


def object_items(node: Node | None) -> Iterator[tuple[str, Node, Node]]:
    """(key, value node, object_property node) of an object literal; keys as written."""
    if node is None or node.type != "object":
        return
    for prop in _named(node):
        if prop.type != "object_property":
            continue
        parts = _named(prop)
        if len(parts) < 2 or parts[0].type == "resource_declaration":
            continue
        key_node, value = parts[0], parts[-1]
        key = text(key_node)
        if key_node.type == "string":
            key = key[1:-1]
        yield key, value, prop


def get_path(node: Node | None, *path: str) -> Node | None:
    for key in path:
        found = None
        for k, value, _ in object_items(node):
            if k == key:
                found = value
        if found is None:
            return None
        node = found
    return node


class BicepFile:
    def __init__(self, path: Path, source: bytes | None = None) -> None:
        self.path = path
        self.source = path.read_bytes() if source is None else source
        self.tree = parse(self.source)
        self.errors = syntax_errors(self.tree)
        self.decls: list[Decl] = []
        self._collect(self.tree.root_node, parent=None)

    # --- declarations -------------------------------------------------------------------------

    def _collect(self, container: Node, parent: Decl | None) -> None:
        pending: list[Decorator] = []
        for node in _named(container):
            if node.type == "decorators":
                pending += [self._decorator(d) for d in _named(node) if d.type == "decorator"]
                continue
            if (
                node.type == "object_property"
                and _named(node)
                and _named(node)[0].type == "resource_declaration"
            ):
                node = _named(node)[0]
            decl = self._decl(node, pending, parent)
            pending = []
            if decl is not None:
                self.decls.append(decl)
                if decl.kind == "resource" and decl.body is not None:
                    self._collect(decl.body, parent=decl)

    @staticmethod
    def _decorator(node: Node) -> Decorator:
        call = _named(node)[0]
        if call.type == "call_expression":
            fn = call.child_by_field_name("function")
            args = call.child_by_field_name("arguments")
            return Decorator(text(fn) if fn else "", _named(args) if args else [])
        return Decorator(text(call), [])

    def _decl(self, node: Node, decorators: list[Decorator], parent: Decl | None) -> Decl | None:
        kinds = {
            "parameter_declaration": "param",
            "variable_declaration": "var",
            "resource_declaration": "resource",
            "module_declaration": "module",
            "output_declaration": "output",
        }
        kind = kinds.get(node.type)
        if kind is None:
            return None
        parts = _named(node)
        decl = Decl(kind, text(parts[0]), node, decorators, parent=parent)
        rest = parts[1:]
        if kind in ("param", "output"):
            if rest and rest[0].type == "type":
                decl.type = text(rest[0])
                rest = rest[1:]
            decl.value = rest[-1] if rest else None
        elif kind == "var":
            decl.value = rest[-1] if rest else None
        else:
            decl.type = text(rest[0])[1:-1]
            decl.existing = any(c.type == "existing" for c in node.children)
            body = rest[-1]
            if body.type == "if_statement":
                cond, body = _named(body)[0], _named(body)[-1]
                decl.condition = cond
            elif body.type == "for_statement":
                names = _named(body)
                decl.loop_var = text(names[0])
                decl.loop_over = names[1]
                inner = body.child_by_field_name("body") or names[-1]
                if inner.type == "if_statement":
                    decl.condition = _named(inner)[0]
                    inner = _named(inner)[-1]
                body = inner
            decl.body = body
        return decl

    def of_kind(self, kind: str) -> list[Decl]:
        return [d for d in self.decls if d.kind == kind]

    @property
    def params(self) -> dict[str, Decl]:
        return {d.name: d for d in self.of_kind("param")}

    @property
    def vars(self) -> dict[str, Decl]:
        return {d.name: d for d in self.of_kind("var")}

    @property
    def modules(self) -> dict[str, Decl]:
        return {d.name: d for d in self.of_kind("module")}

    def resources(self, full_type: str | None = None) -> list[Decl]:
        return [d for d in self.of_kind("resource") if full_type is None or d.full_type == full_type]

    def resource(self, full_type: str, *, existing: bool = False) -> Decl:
        found = [d for d in self.resources(full_type) if d.existing == existing]
        assert len(found) == 1, f"{self.path.name}: expected one {full_type} resource, found {len(found)}"
        return found[0]

    def line(self, node: Node) -> str:
        return f"{self.path.relative_to(ROOT)}:{node.start_point[0] + 1}"

    # --- evaluation ---------------------------------------------------------------------------

    def environment(self, param_values: Mapping[str, Any] | None = None) -> Env:
        return Env(self, dict(param_values or {}))

    def evaluate(self, node: Node | None, env: Env | None = None) -> Any:
        return (env or self.environment()).eval(node)


class Env:
    """Values of one instantiation of a file: given parameter values, else their defaults."""

    def __init__(self, file: BicepFile, param_values: dict[str, Any], local: dict[str, Any] | None = None):
        self.file = file
        self.param_values = param_values
        self.local = local or {}
        self._vars: dict[str, Any] = {}

    def with_local(self, name: str, value: Any) -> Env:
        env = Env(self.file, self.param_values, {**self.local, name: value})
        env._vars = self._vars
        return env

    def lookup(self, name: str) -> Any:
        if name in self.local:
            return self.local[name]
        if name in self.param_values:
            return self.param_values[name]
        params, variables = self.file.params, self.file.vars
        if name in params:
            default = params[name].value
            return self.eval(default) if default is not None else UNKNOWN
        if name in variables:
            if name not in self._vars:
                self._vars[name] = UNKNOWN  # guards against cycles
                self._vars[name] = self.eval(variables[name].value)
            return self._vars[name]
        return UNKNOWN  # resources, modules, outputs: deployment-time

    def eval(self, node: Node | None) -> Any:  # one branch per node kind
        if node is None:
            return None
        kind = node.type
        parts = _named(node)
        if kind == "string":
            out = ""
            for child in node.children:
                if child.type == "string_content":
                    out += text(child)
                elif child.type == "escape_sequence":
                    out += {"\\'": "'", "\\\\": "\\", "\\n": "\n", "\\r": "\r", "\\t": "\t", "\\$": "$"}.get(
                        text(child), text(child)
                    )
                elif child.type == "interpolation":
                    value = self.eval(_named(child)[0])
                    if value is UNKNOWN:
                        return UNKNOWN
                    out += _to_string(value)
            return out
        if kind == "number":
            return int(text(node))
        if kind == "boolean":
            return text(node) == "true"
        if kind == "null":
            return None
        if kind == "identifier":
            return self.lookup(text(node))
        if kind == "array":
            return [self.eval(p) for p in parts]
        if kind == "object":
            out_obj: dict[str, Any] = {}
            for key, value, prop in object_items(node):
                key_node = _named(prop)[0]
                real_key = self.eval(key_node) if key_node.type == "string" else key
                if real_key is UNKNOWN:
                    return UNKNOWN
                out_obj[real_key] = self.eval(value)
            return out_obj
        if kind == "parenthesized_expression":
            return self.eval(parts[0])
        if kind == "ternary_expression":
            cond = self.eval(node.child_by_field_name("condition"))
            if cond is UNKNOWN:
                return UNKNOWN
            return self.eval(node.child_by_field_name("consequence" if cond else "alternative"))
        if kind == "unary_expression":
            value = self.eval(node.child_by_field_name("argument"))
            op = text(node.child_by_field_name("operator"))
            if value is UNKNOWN:
                return UNKNOWN
            return (not value) if op == "!" else -value
        if kind == "binary_expression":
            return self._binary(node)
        if kind == "member_expression":
            obj = self.eval(node.child_by_field_name("object"))
            prop = text(node.child_by_field_name("property"))
            if isinstance(obj, dict):
                return obj.get(prop, UNKNOWN)
            return UNKNOWN
        if kind == "subscript_expression":
            obj = self.eval(node.child_by_field_name("object"))
            index = self.eval(node.child_by_field_name("index"))
            if obj is UNKNOWN or index is UNKNOWN:
                return UNKNOWN
            try:
                return obj[index]
            except (IndexError, KeyError, TypeError):
                return UNKNOWN
        if kind == "call_expression":
            return self._call(node)
        return UNKNOWN

    def _binary(self, node: Node) -> Any:
        left_node, right_node = node.child_by_field_name("left"), node.child_by_field_name("right")
        op = next(text(c) for c in node.children if not c.is_named)
        left = self.eval(left_node)
        if op == "&&" and left is not UNKNOWN and not left:
            return False
        if op == "||" and left is not UNKNOWN and left:
            return True
        if op == "??" and left is not UNKNOWN:
            return left if left is not None else self.eval(right_node)
        right = self.eval(right_node)
        if left is UNKNOWN or right is UNKNOWN:
            return UNKNOWN
        ops = {
            "&&": lambda a, b: bool(a and b),
            "||": lambda a, b: bool(a or b),
            "==": lambda a, b: a == b,
            "!=": lambda a, b: a != b,
            "=~": lambda a, b: str(a).lower() == str(b).lower(),
            "!~": lambda a, b: str(a).lower() != str(b).lower(),
            "<": lambda a, b: a < b,
            "<=": lambda a, b: a <= b,
            ">": lambda a, b: a > b,
            ">=": lambda a, b: a >= b,
            "+": lambda a, b: a + b,
            "-": lambda a, b: a - b,
            "*": lambda a, b: a * b,
        }
        return ops[op](left, right) if op in ops else UNKNOWN

    def _call(self, node: Node) -> Any:
        fn = text(node.child_by_field_name("function"))
        args_node = node.child_by_field_name("arguments")
        arg_nodes = _named(args_node) if args_node is not None else []
        if fn == "loadJsonContent":
            rel = self.eval(arg_nodes[0])
            return json.loads((self.file.path.parent / rel).read_text(encoding="utf-8"))
        if fn == "loadTextContent":
            rel = self.eval(arg_nodes[0])
            return (self.file.path.parent / rel).read_text(encoding="utf-8")
        if fn in ("filter", "map") and len(arg_nodes) == 2 and arg_nodes[1].type == "lambda_expression":
            items = self.eval(arg_nodes[0])
            if items is UNKNOWN:
                return UNKNOWN
            var, body = _named(arg_nodes[1])[0], _named(arg_nodes[1])[-1]
            results = [self.with_local(text(var), item).eval(body) for item in items]
            if any(r is UNKNOWN for r in results):
                return UNKNOWN
            return [i for i, keep in zip(items, results, strict=True) if keep] if fn == "filter" else results
        args = [self.eval(a) for a in arg_nodes]
        if any(a is UNKNOWN for a in args):
            return UNKNOWN
        simple: dict[str, Any] = {
            "empty": lambda v: not v,
            "flatten": lambda v: [x for sub in v for x in sub],
            "concat": lambda *v: [x for sub in v for x in sub] if isinstance(v[0], list) else "".join(v),
            "union": _union,
            "length": len,
            "toLower": str.lower,
            "toUpper": str.upper,
            "string": _to_string,
            "split": lambda s, sep: s.split(sep),
            "last": lambda v: v[-1] if v else UNKNOWN,
            "first": lambda v: v[0] if v else UNKNOWN,
            "contains": lambda c, x: x in c,
            "take": lambda v, n: v[:n],
            "objectKeys": lambda o: list(o),
            "startsWith": lambda v, prefix: v.startswith(prefix),
            "join": lambda v, sep: sep.join(v),
            "range": lambda start, count: list(range(start, start + count)),
            "fail": _fail,
        }
        if fn in simple:
            return simple[fn](*args)
        return UNKNOWN


def _fail(message: str) -> Any:
    raise BicepFail(message)


def _union(*values: Any) -> Any:
    if all(isinstance(v, dict) for v in values):
        out: dict[str, Any] = {}
        for v in values:
            out.update(v)
        return out
    seen: list[Any] = []
    for v in values:
        seen += [x for x in v if x not in seen]
    return seen


def _to_string(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (dict, list)):
        return json.dumps(value)
    return str(value)


# --- whole-template helpers --------------------------------------------------------------------


def bicep_files() -> list[Path]:
    return sorted(INFRA.rglob("*.bicep"))


def load(rel: str, source: bytes | None = None) -> BicepFile:
    return BicepFile(ROOT / rel, source)


AZD_VAR = re.compile(r"^\$\{(?P<name>[A-Za-z_][A-Za-z0-9_]*)(?::?=(?P<default>[^}]*))?\}$")


def azd_parameter_values(path: Path = INFRA / "main.parameters.json") -> dict[str, Any]:
    """What azd passes when no environment variable is set: ``${VAR=default}`` gives its default;
    ``${VAR}`` without default is left out (azd asks for it or uses the Bicep default)."""
    raw = json.loads(path.read_text(encoding="utf-8"))["parameters"]
    out: dict[str, Any] = {}
    for name, body in raw.items():
        value = body.get("value")
        if isinstance(value, str):
            m = AZD_VAR.match(value)
            if m:
                if m.group("default") is None:
                    continue
                value = m.group("default")
        out[name] = value
    return out


def coerce_to_param_types(main: BicepFile, values: Mapping[str, Any]) -> dict[str, Any]:
    """azd substitutes strings; it converts them to the parameter's declared type."""
    out: dict[str, Any] = {}
    for name, value in values.items():
        decl = main.params.get(name)
        if decl is not None and isinstance(value, str):
            if decl.type == "bool":
                value = {"true": True, "false": False}.get(value.lower(), value)
            elif decl.type == "int" and value.strip().lstrip("-").isdigit():
                value = int(value)
        out[name] = value
    return out


def module_params(main: BicepFile, module: str, env: Env) -> dict[str, Any]:
    """The parameter values ``main`` passes to one of its modules (UNKNOWN where deployment-time)."""
    decl = main.modules[module]
    params = env.eval(decl.prop("params"))
    assert isinstance(params, dict), f"{main.path.name}: module {module} has no params object"
    return params


def module_file(main: BicepFile, module: str, source: bytes | None = None) -> BicepFile:
    return BicepFile(main.path.parent / main.modules[module].type, source)


# --- mutation helpers: prove each assertion fails without its property -------------------------


def _cut(source: bytes, node: Node) -> bytes:
    start, end = node.start_byte, node.end_byte
    # take the whole line when the node is alone on it
    line_start = source.rfind(b"\n", 0, start) + 1
    line_end = source.find(b"\n", end)
    line_end = len(source) if line_end < 0 else line_end
    if source[line_start:start].strip() == b"" and source[end:line_end].strip() in (b"", b","):
        start, end = line_start, min(line_end + 1, len(source))
    return source[:start] + source[end:]


def without_property(file: BicepFile, decl: Decl, *path: str) -> bytes:
    """A copy of ``file``'s source with the property at ``path`` in ``decl``'s body deleted."""
    *parents, last = path
    container = get_path(decl.body, *parents) if parents else decl.body
    for key, _, prop in object_items(container):
        if key == last:
            return _cut(file.source, prop)
    raise KeyError(f"{file.path.name}: {decl.name} has no property {'.'.join(path)}")


def without_key(file: BicepFile, obj: Node, key: str) -> bytes:
    """A copy of the source with ``key`` deleted from the object literal ``obj``."""
    for k, _, prop in object_items(obj):
        if k == key:
            return _cut(file.source, prop)
    raise KeyError(f"{file.path.name}: no key {key}")


def replace_node(file: BicepFile, node: Node, new_text: str) -> bytes:
    return file.source[: node.start_byte] + new_text.encode() + file.source[node.end_byte :]


def without_decorator(file: BicepFile, decl: Decl, name: str) -> bytes:
    """A copy of the source with ``@name(...)`` removed from the decorators before ``decl``."""
    prev = decl.node.prev_named_sibling
    while prev is not None and prev.type == "comment":
        prev = prev.prev_named_sibling
    assert prev is not None and prev.type == "decorators", f"{decl.name} has no decorators"
    for dec in _named(prev):
        call = _named(dec)[0]
        fn = call.child_by_field_name("function") if call.type == "call_expression" else call
        if fn is not None and text(fn) == name:
            return _cut(file.source, dec)
    raise KeyError(f"{decl.name} has no @{name}()")
