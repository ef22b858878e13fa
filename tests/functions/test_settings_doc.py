"""docs/function-app.md and the README document every app setting, exactly as the code declares them."""

from __future__ import annotations

from pathlib import Path

import pytest

from core.settings import APP_SETTINGS, ROOT
from devtools import settings_table

DOCS = (ROOT / "docs" / "function-app.md", ROOT / "README.md")


def test_every_setting_is_in_the_generated_table() -> None:
    table = settings_table.markdown_table()
    for s in (*APP_SETTINGS, *settings_table.EXTRA):
        assert f"| `{s.name}` |" in table


@pytest.mark.parametrize("doc", DOCS, ids=lambda p: p.name)
def test_doc_holds_the_current_table(doc: Path) -> None:
    text = doc.read_text(encoding="utf-8")
    assert settings_table.replace_table(text) == text, (
        f"{doc.name} is out of date: run "
        f"python -m devtools.settings_table --write {doc.relative_to(ROOT)}")


def test_write_fills_the_markers(tmp_path: Path) -> None:
    path = tmp_path / "doc.md"
    path.write_text(f"intro\n{settings_table.BEGIN}\nold\n{settings_table.END}\noutro\n", encoding="utf-8")
    assert settings_table.main(["--write", str(path)]) == 0
    text = path.read_text(encoding="utf-8")
    assert "old" not in text and text.startswith("intro\n") and text.endswith("outro\n")
    assert "| `RESPONDER_TENANT_ID` |" in text
