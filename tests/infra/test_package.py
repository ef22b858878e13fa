"""`make package`: the deployment zip holds exactly what the function app imports (issue 10, Deployment).

The zip is built from a copy of the clone with the clutter a real working copy has (an azd
environment with its .env, demo output, a local.settings.json, caches). The set of Python modules
that function_app imports, directly or inside functions (lazily), is computed here from the extracted
zip by reading import statements (ast), independently of the packaging code; then the extracted app
is imported and indexed in a fresh interpreter whose only copy of the project is the zip's, once more
with every distribution that requirements.txt does not bring in blocked (issue 12).
"""

from __future__ import annotations

import ast
import json
import os
import shutil
import subprocess
import sys
import zipfile
from importlib import metadata
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

ROOT = Path(__file__).resolve().parents[2]
MAKE = shutil.which("make")

# What a working copy may hold that must never be deployed.
CLUTTER = {
    ".azure/xdr-prod/.env": 'AZURE_ENV_NAME="xdr-prod"\nRESPONDER_DRY_RUN="true"\n',
    ".azure/config.json": "{}",
    "demo-output/cards/0001-run.json": "{}",
    "local.settings.json": '{"IsEncrypted": false, "Values": {}}',
    "core/__pycache__/settings.cpython-311.pyc": "",
    "out/old.zip": "",
    ".ci/run": "make test\n",
}
NEVER = (".azure/", "demo-output/", ".ci/", "tests/", "docs/", "infra/", "node_modules/", ".venv/", "out/",
         "devtools/", "responder/", "local.settings")


def tracked_files() -> list[str]:
    # the worktree's state: committed files and new ones not yet committed (ignored files excluded)
    out = subprocess.run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"], cwd=ROOT,
                         capture_output=True, check=True).stdout
    return [p for p in out.decode().split("\0") if p and (ROOT / p).is_file()]


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """(the clone copy, the extracted zip) after `make package`."""
    assert MAKE
    clone = tmp_path_factory.mktemp("clone")
    for rel in tracked_files():
        dest = clone / rel
        dest.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(ROOT / rel, dest)
    # uncommitted files of this change set are in the worktree; the copy takes the worktree's state
    for rel, text in CLUTTER.items():
        (clone / rel).parent.mkdir(parents=True, exist_ok=True)
        (clone / rel).write_text(text, encoding="utf-8")
    (clone / "tenant.yaml").write_text("params:\n  protected_recipients: [a@contoso.com]\n", encoding="utf-8")
    env = {"PATH": os.environ["PATH"], "HOME": str(clone)}
    proc = subprocess.run([MAKE, "-s", "-C", str(clone), "package"], env=env, capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 0, proc.stderr
    app = tmp_path_factory.mktemp("app")
    with zipfile.ZipFile(clone / "out" / "app.zip") as zf:
        zf.extractall(app)
    return clone, app


def names(app: Path) -> set[str]:
    return {p.relative_to(app).as_posix() for p in app.rglob("*") if p.is_file()}


def import_closure(app: Path, entry: str = "function_app.py") -> set[str]:
    """Project files reachable from ``entry`` through import statements anywhere in the code."""

    def resolve(dotted: str) -> Path | None:
        base = app.joinpath(*dotted.split("."))
        if (base / "__init__.py").is_file():
            return base / "__init__.py"
        return base.with_suffix(".py") if base.with_suffix(".py").is_file() else None

    seen: set[Path] = set()
    todo = [app / entry]
    while todo:
        path = todo.pop()
        if path in seen:
            continue
        seen.add(path)
        rel = path.relative_to(app).with_suffix("").parts
        package = rel[:-1]
        todo += [app.joinpath(*package[:i], "__init__.py") for i in range(1, len(package) + 1)
                 if app.joinpath(*package[:i], "__init__.py").is_file()]
        tree = ast.parse(path.read_text(encoding="utf-8"))
        # A module that discovers plugins with pkgutil.iter_modules (the action registry) reaches every
        # module of its own package without naming them.
        if any(isinstance(n, ast.Attribute) and n.attr == "iter_modules" for n in ast.walk(tree)):
            todo += [m for m in path.parent.glob("*.py") if m not in seen]
        for node in ast.walk(tree):
            targets: list[str] = []
            if isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    here = list(package) if rel[-1] != "__init__" else list(rel[:-1])
                    here = here[:len(here) - (node.level - 1)]
                    base = ".".join(here + ([node.module] if node.module else []))
                targets = [base] + [f"{base}.{a.name}" for a in node.names]
            for dotted in targets:
                found = resolve(dotted)
                if found is not None and found not in seen:
                    todo.append(found)
    return {p.relative_to(app).as_posix() for p in seen}


def test_zip_ships_nothing_from_the_working_copy_but_the_app(built: tuple[Path, Path]) -> None:
    _, app = built
    shipped = names(app)
    leaked = sorted(n for n in shipped if n.startswith(NEVER) or "__pycache__" in n or n.endswith(".pyc"))
    assert not leaked, leaked
    top = {n.split("/", 1)[0] for n in shipped}
    assert top == {"function_app.py", "host.json", "requirements.txt", "tenant.yaml", "core", "detections",
                   "remediation", "notifications", "push", "app"}


def test_zip_python_modules_are_exactly_what_function_app_imports(built: tuple[Path, Path]) -> None:
    _, app = built
    modules = {n for n in names(app) if n.endswith(".py")}
    closure = import_closure(app)
    assert closure <= modules            # everything imported is there (else a closure file is missing)
    assert modules - closure == set(), "shipped but never imported (dev tools?)"


def test_zip_data_files_are_the_rules_and_their_schema(built: tuple[Path, Path]) -> None:
    clone, app = built
    data = {n for n in names(app) if not n.endswith(".py")}
    rules = {p.relative_to(clone).as_posix() for p in (clone / "detections" / "rules").glob("*.yaml")
             if not p.name.endswith(".tests.yaml")}
    assert rules, "the catalog has rules"
    assert data == {"host.json", "requirements.txt", "tenant.yaml", "detections/rule.schema.json"} | rules


INDEX = """
import importlib.util, json, sys
import function_app
fns = function_app.app.get_functions()
dev = [m for m in ("devtools", "responder") if importlib.util.find_spec(m) is not None]
print(json.dumps({"functions": sorted(f.get_function_name() for f in fns), "dev": dev,
                  "from": function_app.__file__}))
"""


def index(cwd: Path) -> dict[str, object]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("RESPONDER_", "AzureWebJobs", "AZURE_"))}
    env.update({"RESPONDER_TENANT_ID": "00000000-0000-0000-0000-00000000abcd",
                "AZURE_CLIENT_ID": "11111111-1111-1111-1111-111111111111",
                "AzureWebJobsStorage": "UseDevelopmentStorage=true", "PYTHONDONTWRITEBYTECODE": "1"})
    env.pop("PYTHONPATH", None)
    proc = subprocess.run([sys.executable, "-c", INDEX], cwd=cwd, env=env, capture_output=True, text=True,
                          timeout=180)
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout.strip().splitlines()[-1])


def test_extracted_zip_imports_and_indexes_every_function_without_the_dev_tools(
        built: tuple[Path, Path]) -> None:
    clone, app = built
    got = index(app)
    assert str(got["from"]).startswith(str(app))
    assert got["dev"] == []                       # not shipped, and the app did not need them
    assert got["functions"] == index(clone)["functions"]
    assert {"worker", "poison", "health", "scan", "verify", "digest"} <= set(got["functions"])  # type: ignore[arg-type]


def test_zip_is_what_funcignore_leaves_by_git_s_own_reading_of_it(built: tuple[Path, Path],
                                                                   tmp_path: Path) -> None:
    # azd deploy zips the project minus .funcignore (gitignore syntax; cli/azd/pkg/project in
    # Azure/azure-dev). git reads that syntax independently of our packaging code: whatever it does not
    # ignore in the cluttered clone must be exactly the zip, so both deployment paths ship the same.
    clone, app = built
    files = sorted(p.relative_to(clone).as_posix() for p in clone.rglob("*")
                   if p.is_file() and not p.relative_to(clone).as_posix().startswith(("out/", ".git/")))
    files = [f for f in files if f != ".funcignore"]          # azd leaves the ignore file itself out
    subprocess.run(["git", "init", "-q", str(tmp_path)], check=True)
    proc = subprocess.run(["git", "-c", f"core.excludesFile={clone / '.funcignore'}", "check-ignore",
                           "--no-index", "--stdin"], cwd=tmp_path, input="\n".join(files),
                          capture_output=True, text=True)
    assert proc.returncode in (0, 1), proc.stderr
    ignored = set(proc.stdout.splitlines())   # one path a line (names may hold spaces)
    assert {f for f in files if f not in ignored} == names(app)


# Run in the extracted zip with an import blocker installed first: every top-level module of an installed
# distribution that requirements.txt does not bring in (directly or as a dependency) fails to import, as
# on the Flex Consumption plan, whose remote build installs requirements.txt only.
ONLY_REQUIREMENTS = """
import importlib.abc, json, sys
BLOCKED = frozenset(json.loads(sys.argv[1]))
class Blocker(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in BLOCKED:
            raise ModuleNotFoundError(f"{name}: its distribution is not in requirements.txt", name=name)
        return None
sys.meta_path.insert(0, Blocker())
import function_app
names = sorted(f.get_function_name() for f in function_app.app.get_functions())
print(json.dumps({"functions": names, "loaded": sorted({m.split(".")[0] for m in sys.modules})}))
"""
OURS = {"core", "detections", "remediation", "notifications", "push", "app", "responder", "devtools",
        "function_app", "tests"}


def _requirements(path: Path) -> list[tuple[str, set[str]]]:
    found = []
    for line in path.read_text(encoding="utf-8").splitlines():
        line = line.split("#", 1)[0].strip()
        if line and not line.startswith("-"):
            req = Requirement(line)
            found.append((req.name, set(req.extras)))
    return found


def runtime_distributions(requirements: Path) -> set[str]:
    """requirements.txt's distributions and, through their metadata, everything they depend on."""
    todo = _requirements(requirements)
    seen: set[tuple[str, str]] = set()
    names: set[str] = set()
    while todo:
        name, extras = todo.pop()
        try:
            dist = metadata.distribution(name)
        except metadata.PackageNotFoundError:
            continue                       # a dependency for another platform or Python version
        for extra in extras | {""}:
            if (canonicalize_name(name), extra) in seen:
                continue
            seen.add((canonicalize_name(name), extra))
            names.add(canonicalize_name(name))
            for raw in dist.requires or []:
                req = Requirement(raw)
                if req.marker is None or req.marker.evaluate({"extra": extra}):
                    todo.append((req.name, set(req.extras)))
    return names


def blocked_modules(requirements: Path) -> set[str]:
    runtime = runtime_distributions(requirements)
    return {top for top, dists in metadata.packages_distributions().items()
            if top not in OURS and not top.startswith("_")
            and not any(canonicalize_name(d) in runtime for d in dists)}


def only_requirements(app: Path, requirements: Path) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("RESPONDER_", "AzureWebJobs", "AZURE_"))}
    env.update({"RESPONDER_TENANT_ID": "00000000-0000-0000-0000-00000000abcd",
                "AZURE_CLIENT_ID": "11111111-1111-1111-1111-111111111111",
                "AzureWebJobsStorage": "UseDevelopmentStorage=true", "PYTHONDONTWRITEBYTECODE": "1"})
    env.pop("PYTHONPATH", None)
    blocked = json.dumps(sorted(blocked_modules(requirements)))
    return subprocess.run([sys.executable, "-c", ONLY_REQUIREMENTS, blocked], cwd=app, env=env,
                          capture_output=True, text=True, timeout=180)


def test_function_app_imports_from_the_zip_with_only_requirements_txt_installed(
        built: tuple[Path, Path]) -> None:
    clone, app = built
    blocked = blocked_modules(app / "requirements.txt")
    # not vacuous: every distribution requirements-dev.txt adds is installed here, and all its modules blocked
    dev_only = {canonicalize_name(n) for n, _ in _requirements(ROOT / "requirements-dev.txt")} \
        - runtime_distributions(ROOT / "requirements.txt")
    tops: dict[str, set[str]] = {}
    for top, dists in metadata.packages_distributions().items():
        for d in dists:
            tops.setdefault(canonicalize_name(d), set()).add(top)
    assert dev_only and all(tops.get(d) for d in dev_only)
    assert all(t in blocked for d in dev_only for t in tops[d] if not t.startswith("_"))
    assert {"duckdb", "pytest", "respx"} <= blocked
    assert not {"msgraph", "azure", "httpx", "jsonschema", "yaml"} & blocked
    proc = only_requirements(app, app / "requirements.txt")
    assert proc.returncode == 0, proc.stderr
    got = json.loads(proc.stdout.strip().splitlines()[-1])
    assert got["functions"] == index(clone)["functions"]
    assert not set(got["loaded"]) & blocked


def test_the_blocker_stops_a_development_dependency(built: tuple[Path, Path], tmp_path: Path) -> None:
    # the same harness on an app that needs the local engine at import: it fails, so the test above can
    _, app = built
    shutil.copytree(app, tmp_path / "app")
    entry = tmp_path / "app" / "function_app.py"
    entry.write_text("import duckdb\n" + entry.read_text(encoding="utf-8"), encoding="utf-8")
    proc = only_requirements(tmp_path / "app", app / "requirements.txt")
    assert proc.returncode != 0
    assert "duckdb: its distribution is not in requirements.txt" in proc.stderr
