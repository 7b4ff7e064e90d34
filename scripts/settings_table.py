"""Print the docs' generated tables, or rewrite them in place: the settings table (env var, default,
meaning) from WorkerSettings, and the migration table (the official worker's env vars and job fields, and
what each becomes here) from config/migration.py.

    .venv/bin/python scripts/settings_table.py           # print the tables
    .venv/bin/python scripts/settings_table.py --write   # replace them in docs/settings.md and docs/migration.md between their markers

tests/test_deploy.py fails when the pages' tables differ from this output.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from config.migration import MIGRATION  # noqa: E402
from config.settings import WorkerSettings  # noqa: E402
from scripts.docs_block import replace_block  # noqa: E402
from worker.jobs.official_fields import OFFICIAL_JOB_FIELDS, SAME_JOB_FIELDS  # noqa: E402

SETTINGS_PAGE = ROOT / "docs" / "settings.md"
MIGRATION_PAGE = ROOT / "docs" / "migration.md"
START = "<!-- settings-table:start -->"
END = "<!-- settings-table:end -->"
MIGRATION_START = "<!-- migration-table:start -->"
MIGRATION_END = "<!-- migration-table:end -->"
_KIND = {"same": "works", "alias": "works", "vllm": "works", "refused": "stops the worker at start"}


def default_text(name: str) -> str:
    field = WorkerSettings.model_fields[name]
    value: Any = field.get_default(call_default_factory=True)
    if name == "model_name":
        return "required"
    if value is None or value in ({}, "", []):
        return "unset"
    if isinstance(value, bool):
        return f"`{str(value).lower()}`"
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    return f"`{json.dumps(value) if isinstance(value, dict) else value}`"


def render_table() -> str:
    rows = ["| Env var | Default | Meaning |", "| --- | --- | --- |"]
    for name, field in WorkerSettings.model_fields.items():
        meaning = (field.description or "").replace("|", "\\|")
        rows.append(f"| `{name.upper()}` | {default_text(name)} | {meaning} |")
    return "\n".join(rows)


def render_migration_table() -> str:
    rows = ["| worker-vllm | Here | What it becomes |", "| --- | --- | --- |"]
    for name, entry in MIGRATION.items():
        here = _KIND[entry.kind]
        if entry.accepted:
            here += f" (unless {' / '.join(f'`{v}`' for v in entry.accepted)})"
        rows.append(f"| env `{name}` | {here} | {entry.becomes.replace('|', chr(92) + '|')} |")
    for name, note in SAME_JOB_FIELDS.items():
        rows.append(f"| job `{name}` | works | {note.removeprefix('works: ')} |")
    for name, (honoured, instead) in OFFICIAL_JOB_FIELDS.items():
        here = "job fails with this fix" if not honoured else f"works for {' / '.join(json.dumps(v) for v in honoured)}"
        rows.append(f"| job `{name}` | {here} | {instead.replace('|', chr(92) + '|')} |")
    return "\n".join(rows)


if __name__ == "__main__":
    if sys.argv[1:] == ["--write"]:
        for page, start, end, table in ((SETTINGS_PAGE, START, END, render_table()),
                                        (MIGRATION_PAGE, MIGRATION_START, MIGRATION_END, render_migration_table())):
            page.write_text(replace_block(page.read_text(), start, end, table))
    else:
        print(render_table(), render_migration_table(), sep="\n\n")
