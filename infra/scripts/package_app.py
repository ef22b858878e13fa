"""Build the function app's deployment zip: ``python3 infra/scripts/package_app.py [OUT.zip]``.

What goes in is an allowlist (``APP``: the entry point, host.json, requirements.txt and the product
packages) minus everything ``.funcignore`` names (gitignore syntax: a pattern without a slash matches
a name at any depth, one with a slash matches a path from the app root). So azd environment files
(``.azure/``), ``demo-output/``, ``.ci/``, tests and dev tools never ship, whatever lies in the clone.
Dependencies are not vendored: the Flex Consumption plan installs requirements.txt (remote build).
Standard library only, so it runs before ``make install``.
"""

from __future__ import annotations

import fnmatch
import sys
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
# never devtools/ or responder/ (the command line): docs/architecture.md
APP = ("function_app.py", "host.json", "requirements.txt", "core", "detections", "remediation",
       "notifications", "push", "app")
# The tenant config the app reads by default (RESPONDER_TENANT_CONFIG=tenant.yaml), when there is one.
OPTIONAL = ("tenant.yaml",)
DEFAULT_OUT = "out/app.zip"
# Fixed timestamp: the same tree gives a byte-identical zip.
EPOCH = (2026, 1, 1, 0, 0, 0)


def ignore_patterns(root: Path = ROOT) -> list[str]:
    path = root / ".funcignore"
    lines = path.read_text(encoding="utf-8").splitlines() if path.exists() else []
    return [ln.strip().rstrip("/") for ln in lines if ln.strip() and not ln.lstrip().startswith("#")]


def ignored(rel: str, patterns: list[str]) -> bool:
    parts = rel.split("/")
    for pat in patterns:
        if pat.startswith("!"):
            raise ValueError(f".funcignore: negated patterns ({pat}) are not supported here")
        if "/" in pat.lstrip("/"):
            anchored = pat.lstrip("/")
            # the path itself or any of its parent folders
            if any(fnmatch.fnmatchcase("/".join(parts[:i]), anchored) for i in range(1, len(parts) + 1)):
                return True
        elif any(fnmatch.fnmatchcase(part, pat.lstrip("/")) for part in parts):
            return True
    return False


def app_files(root: Path = ROOT) -> list[str]:
    patterns = ignore_patterns(root)
    found: list[str] = []
    for entry in APP + OPTIONAL:
        path = root / entry
        if not path.exists():
            if entry in OPTIONAL:
                continue
            raise FileNotFoundError(f"{entry} is missing from {root}")
        candidates = [path] if path.is_file() else sorted(p for p in path.rglob("*") if p.is_file())
        for p in candidates:
            rel = p.relative_to(root).as_posix()
            if not ignored(rel, patterns):
                found.append(rel)
    return sorted(found)


def build(out: Path, root: Path = ROOT) -> list[str]:
    files = app_files(root)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_suffix(".tmp")
    with zipfile.ZipFile(tmp, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        for rel in files:
            info = zipfile.ZipInfo(rel, date_time=EPOCH)
            info.external_attr = 0o644 << 16
            info.compress_type = zipfile.ZIP_DEFLATED
            zf.writestr(info, (root / rel).read_bytes())
    tmp.replace(out)
    return files


def main(argv: list[str]) -> int:
    out = Path(argv[0]) if argv else ROOT / DEFAULT_OUT
    if not out.is_absolute():
        out = Path.cwd() / out
    files = build(out)
    print(f"{out}: {len(files)} files")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
