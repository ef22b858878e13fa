"""Render Adaptive Cards with the real renderer (npm ``adaptivecards``) in headless Chromium.

Used by the card tests and to refresh docs/cards/*.png. ``harness/render.mjs`` drives the system
Chromium through playwright-core (which downloads no browser); ``harness/page.js`` renders with
Action.Submit/Execute unregistered, as a Teams Workflows post would show them, and with a Teams-like
host config (``harness/hostconfig.json``) and Markdown subset.

    python -m devtools.cardrender.render card.json [more.json ...] [--out DIR]   # card or Workflows message
    python -m devtools.cardrender.render --examples docs/cards                   # the four example cards
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from core.settings import ROOT

HARNESS = Path(__file__).resolve().parent / "harness" / "render.mjs"
# Renderer events that are advice, not errors.
WARNING_EVENTS = frozenset({"Hint", "Deprecated"})


class RenderError(RuntimeError):
    """The harness itself could not run (no Chromium, no node, a crash): not a verdict on a card."""


@dataclass(frozen=True)
class RenderResult:
    errors: list[str]                 # parse/validation errors, page errors: empty when the card is fine
    warnings: list[str]
    text: str                         # the visible text of the rendered card, buttons included
    actions: list[dict[str, Any]]     # {"type", "title", "url"} for every action the renderer kept
    anchors: list[dict[str, Any]]     # {"text", "href"} for every link inside the card body
    png: Path | None


def chromium_path() -> str:
    """The Chromium binary: $RESPONDER_CHROMIUM, else Debian's real binary, else chromium on PATH."""
    configured = os.environ.get("RESPONDER_CHROMIUM")
    if configured:
        return configured
    # Debian's /usr/bin/chromium is a shell wrapper that adds its own flags; drive the binary itself.
    candidates = ("/usr/lib/chromium/chromium", shutil.which("chromium"), shutil.which("chromium-browser"))
    for candidate in candidates:
        if candidate and Path(candidate).exists():
            return candidate
    raise RenderError("Chromium not found: install Debian's chromium (make browser) "
                      "or set RESPONDER_CHROMIUM")


def _card_of(payload: dict[str, Any]) -> dict[str, Any]:
    return payload if payload.get("type") != "message" else payload["attachments"][0]["content"]


def render_cards(cards: Mapping[str, dict[str, Any]], out_dir: Path | None = None, *, width: int = 540,
                 timeout: float = 180.0) -> dict[str, RenderResult]:
    """Render several cards (or Workflows messages) in one browser; PNGs go to ``out_dir/<name>.png``."""
    node = shutil.which("node")
    if node is None:
        raise RenderError("node not found: the card renderer runs on Node.js")
    if out_dir is not None:
        out_dir.mkdir(parents=True, exist_ok=True)
    jobs = [{"name": name, "card": _card_of(card),
             "png": str((out_dir / f"{name}.png").resolve()) if out_dir is not None else None}
            for name, card in cards.items()]
    with tempfile.TemporaryDirectory(prefix="render-") as tmp:
        spec = Path(tmp) / "jobs.json"
        spec.write_text(json.dumps({"chromium": chromium_path(), "width": width, "jobs": jobs}),
                        encoding="utf-8")
        try:
            proc = subprocess.run([node, str(HARNESS), str(spec)], cwd=ROOT, capture_output=True, text=True,
                                  timeout=timeout, check=False)
        except subprocess.TimeoutExpired:
            raise RenderError(f"the renderer did not finish within {timeout:.0f}s") from None
    if proc.returncode != 0:
        raise RenderError(f"the renderer failed (exit {proc.returncode}): {proc.stderr.strip()[-2000:]}")
    raw = json.loads(proc.stdout)["results"]
    return {name: _result(raw[name]) for name in cards}


def _result(raw: dict[str, Any]) -> RenderResult:
    errors, warnings = [], []
    for issue in raw["issues"]:
        line = f"{issue['phase']}/{issue['event']}: {issue['message']}"
        (warnings if issue["event"] in WARNING_EVENTS else errors).append(line)
    errors += [f"page: {e}" for e in raw["pageErrors"]]
    return RenderResult(errors=errors, warnings=warnings, text=raw["text"], actions=raw["actions"],
                        anchors=raw["anchors"], png=Path(raw["png"]) if raw.get("png") else None)


def render_card(card: dict[str, Any], png: Path | None = None, *, width: int = 540) -> RenderResult:
    """Render one card; with ``png``, write the screenshot there."""
    with tempfile.TemporaryDirectory(prefix="card-") as tmp:
        out = Path(tmp) if png is not None else None
        result = render_cards({"card": card}, out, width=width)["card"]
        if png is not None and result.png is not None:
            png.parent.mkdir(parents=True, exist_ok=True)
            shutil.move(result.png, png)
            result = RenderResult(result.errors, result.warnings, result.text, result.actions,
                                  result.anchors, png)
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m devtools.cardrender.render",
                                     description=(__doc__ or "").splitlines()[0])
    parser.add_argument("files", nargs="*", type=Path, help="card or Workflows message JSON files")
    parser.add_argument("--out", type=Path, default=Path("."), help="directory for the PNGs")
    parser.add_argument("--examples", type=Path, metavar="DIR", help="render the example cards into DIR")
    args = parser.parse_args(argv)
    if args.examples:
        from devtools.cardrender.examples import all_cards

        cards, out = all_cards(), args.examples
    elif args.files:
        cards = {f.stem: json.loads(f.read_text(encoding="utf-8")) for f in args.files}
        out = args.out
    else:
        parser.error("give card files or --examples DIR")
    failed = False
    for name, result in render_cards(cards, out).items():
        status = "ok" if not result.errors else "ERRORS"
        print(f"{name}: {status} -> {result.png}")
        for line in result.errors + result.warnings:
            print(f"  {line}")
        failed = failed or bool(result.errors)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
