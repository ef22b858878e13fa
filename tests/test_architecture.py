"""Imports run one way (issue 12, docs/architecture.md): every import in every module, wherever it is.

The checker reads the source (ast), not what Python happened to load: ``import`` and ``from`` nodes at
module level, inside functions and classes, under ``if TYPE_CHECKING:`` and in try/except, relative
imports resolved, plus ``importlib.import_module("...")`` / ``__import__("...")`` with a literal name.
There is no exceptions list: a wrong edge is fixed in the code (move the code, or invert the dependency
through an interface the upper layer wires in).
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

# What each top-level unit may import of ours (besides itself). Top to bottom: devtools, responder (the
# CLI), app, notifications, remediation, detections, core; function_app.py is the Functions entry point.
ALLOWED: dict[str, frozenset[str]] = {
    "function_app": frozenset({"app"}),
    # dev tools use anything of the product, never the CLI
    "devtools": frozenset({"app", "notifications", "remediation", "push", "detections", "core"}),
    # the command line may run the dev tools (demo, sandbox, bench)
    "responder": frozenset({"devtools", "app", "notifications", "remediation", "push", "detections", "core"}),
    "app": frozenset({"notifications", "remediation", "push", "detections", "core"}),
    # cards read remediation's outcome and record types; remediation reports through an interface
    "notifications": frozenset({"remediation", "detections", "core"}),
    "remediation": frozenset({"detections", "core"}),
    # the push path (issue 15): subscriptions, notifications, the streaming rules' state; it hands
    # remediation requests to the app, which queues them like the scheduled path's
    "push": frozenset({"detections", "core"}),
    "detections": frozenset({"core"}),
    "core": frozenset(),
}
OURS = frozenset(ALLOWED)


@dataclass(frozen=True)
class Edge:
    source: str        # the importing unit (package or function_app)
    target: str        # the imported unit
    where: str         # path:line
    module: str        # the dotted name as imported

    def __str__(self) -> str:
        return f"{self.where}: {self.source} -> {self.module}"


def _module_name(root: Path, path: Path) -> tuple[str, bool]:
    parts = path.relative_to(root).with_suffix("").parts
    is_package = parts[-1] == "__init__"
    return ".".join(parts[:-1] if is_package else parts), is_package


def _imported(node: ast.AST, module: str, is_package: bool) -> list[str]:
    if isinstance(node, ast.Import):
        return [a.name for a in node.names]
    if isinstance(node, ast.ImportFrom):
        if not node.level:
            return [node.module or ""]
        here = module.split(".") if is_package else module.split(".")[:-1]
        base = here[:len(here) - (node.level - 1)]
        if node.module:
            return [".".join([*base, node.module])]
        return [".".join([*base, a.name]) for a in node.names]     # from .. import x: x is a module
    if isinstance(node, ast.Call) and node.args and isinstance(node.args[0], ast.Constant) \
            and isinstance(node.args[0].value, str):
        func = node.func
        name = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", "")
        if name in ("import_module", "__import__"):
            return [node.args[0].value]
    return []


def modules(root: Path) -> Iterator[Path]:
    if (root / "function_app.py").is_file():
        yield root / "function_app.py"
    for unit in sorted(OURS - {"function_app"}):
        if (root / unit).is_dir():
            yield from sorted((root / unit).rglob("*.py"))


def edges(root: Path) -> list[Edge]:
    """Every import from one of our units to another, anywhere in every module."""
    found: list[Edge] = []
    for path in modules(root):
        module, is_package = _module_name(root, path)
        source = module.split(".")[0]
        rel = path.relative_to(root).as_posix()
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), filename=rel)):
            for dotted in _imported(node, module, is_package):
                target = dotted.split(".")[0]
                if target in OURS and target != source:
                    found.append(Edge(source, target, f"{rel}:{getattr(node, 'lineno', 0)}", dotted))
    return found


def violations(root: Path) -> list[Edge]:
    return [e for e in edges(root) if e.target not in ALLOWED[e.source]]


def test_every_top_level_package_has_a_place_in_the_map() -> None:
    packages = {p.parent.name for p in ROOT.glob("*/__init__.py")} - {"tests"}
    assert packages == OURS - {"function_app"}, "a new top-level package needs its row in ALLOWED"


def test_imports_point_down_the_package_map() -> None:
    seen = edges(ROOT)
    # the walk saw the real structure (so a broken walker cannot pass by finding nothing)
    assert {("function_app", "app"), ("app", "remediation"), ("remediation", "core"),
            ("detections", "core"), ("notifications", "remediation"),
            ("responder", "devtools")} <= {(e.source, e.target) for e in seen}
    bad = violations(ROOT)
    assert not bad, ("imports against the direction in docs/architecture.md (responder -> devtools -> app "
                     "-> notifications -> remediation -> detections -> core; function_app -> app; nothing "
                     "imports responder). remediation must not import notifications: it reports outcomes "
                     "through remediation.reporting's interface, which app wires to the cards. Edges: "
                     + "; ".join(map(str, bad)))


def _tree(tmp: Path, files: dict[str, str]) -> Path:
    for rel, text in files.items():
        (tmp / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp / rel).write_text(text, encoding="utf-8")
    return tmp


def test_the_checker_catches_edges_hidden_anywhere_in_a_module(tmp_path: Path) -> None:
    root = _tree(tmp_path, {
        "function_app.py": "from app import handlers\nimport notifications\n",
        "app/__init__.py": "", "app/handlers.py": "",
        "core/__init__.py": "",
        "core/settings.py": "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n"
                            "    from detections.catalog import Rule\n",
        "detections/__init__.py": "",
        "detections/scan.py": "def run():\n    import remediation.worker\n",
        "detections/backends/__init__.py": "from ...responder import cli\n",
        "remediation/__init__.py": "",
        "remediation/reporting.py": "class R:\n    def f(self):\n        try:\n"
                                    "            from notifications.cards import card\n"
                                    "        except ImportError:\n            pass\n",
        "remediation/worker.py": "from . import reporting\nfrom .. import app\n",
        "notifications/__init__.py": "import importlib\nimportlib.import_module('app.runtime')\n",
        "devtools/__init__.py": "from responder import cli\nfrom app import handlers\n",
        "responder/__init__.py": "from devtools import demo\n",
    })
    got = sorted((e.where, e.module) for e in violations(root))
    assert got == [
        ("core/settings.py:3", "detections.catalog"),                  # under TYPE_CHECKING
        ("detections/backends/__init__.py:1", "responder"),             # relative, two levels up
        ("detections/scan.py:2", "remediation.worker"),                 # inside a function
        ("devtools/__init__.py:1", "responder"),                        # dev tools never use the CLI
        ("function_app.py:2", "notifications"),                         # the entry point wires app only
        ("notifications/__init__.py:2", "app.runtime"),                 # importlib with a literal
        ("remediation/reporting.py:4", "notifications.cards"),          # method, try block
        ("remediation/worker.py:2", "app"),                             # relative to the parent
    ]
    # allowed edges and imports inside a unit are not reported
    allowed = {(e.source, e.target) for e in edges(root)} - {(e.source, e.target) for e in violations(root)}
    assert allowed == {("function_app", "app"), ("devtools", "app"), ("responder", "devtools")}
