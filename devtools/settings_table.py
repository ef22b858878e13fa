"""The app-settings table for the docs, generated from ``core.settings.APP_SETTINGS``.

``python -m devtools.settings_table`` prints it as Markdown, so the README and
docs/function-app.md can include exactly what the code reads; ``--write FILE`` replaces the table
between the ``BEGIN``/``END`` markers in FILE (a test keeps docs/function-app.md in step).
"""

from __future__ import annotations

import sys
from pathlib import Path

from app.bootstrap import STORAGE_CONNECTION
from app.schedules import SCHEDULE_SETTING_PREFIX
from core.settings import APP_SETTINGS, AppSetting

# Settings read by name pattern or owned by the Functions host: not in APP_SETTINGS (no fixed name,
# or not ours to default), listed so the table is complete.
EXTRA: tuple[AppSetting, ...] = (
    AppSetting(f"{SCHEDULE_SETTING_PREFIX}<SLUG>", "Overrides one rule's timer with a 6-field NCRONTAB "
               "expression; `<SLUG>` is the rule's slug upper-cased with `-` as `_` (e.g. "
               f"`{SCHEDULE_SETTING_PREFIX}CONSUMER_SENDER_TO_SHARED_MAILBOXES`). Wins over the tenant "
               "config's `rules.<slug>.schedule`; a name matching no rule stops start-up.", default="",
               source="operator"),
    AppSetting(STORAGE_CONNECTION, "The host's storage connection as a connection string (local use: "
               "Azurite). In Azure leave it unset and use the identity-based "
               f"`{STORAGE_CONNECTION}__accountName` (plus `__credential=managedidentity` and "
               "`__clientId`).", default="", secret=True, source="operator"),
)


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def markdown_table() -> str:
    lines = ["| setting | default | required | secret | set by | meaning |",
             "|---|---|---|---|---|---|"]
    for s in (*APP_SETTINGS, *EXTRA):
        default = f"`{s.default}`" if s.default else "(empty)"
        lines.append(f"| `{s.name}` | {default} | {'yes' if s.required else 'no'} | "
                     f"{'yes' if s.secret else 'no'} | {s.source} | {_cell(s.description)} |")
    return "\n".join(lines) + "\n"


BEGIN = "<!-- BEGIN app-settings (generated: python -m devtools.settings_table --write FILE) -->"
END = "<!-- END app-settings -->"


def replace_table(text: str) -> str:
    """``text`` with the block between the markers replaced by the current table."""
    head, sep, rest = text.partition(BEGIN)
    _, sep2, tail = rest.partition(END)
    if not (sep and sep2):
        raise ValueError("the file has no app-settings markers")
    return f"{head}{BEGIN}\n{markdown_table()}{END}{tail}"


def main(argv: list[str]) -> int:
    if len(argv) == 2 and argv[0] == "--write":
        path = Path(argv[1])
        path.write_text(replace_table(path.read_text(encoding="utf-8")), encoding="utf-8")
        return 0
    if argv:
        print("usage: python -m devtools.settings_table [--write FILE]", file=sys.stderr)
        return 2
    print(markdown_table(), end="")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
