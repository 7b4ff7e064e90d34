"""Print the README's settings table (env var, default, meaning) from WorkerSettings, or rewrite it in place.

    .venv/bin/python scripts/settings_table.py           # print the table
    .venv/bin/python scripts/settings_table.py --write   # replace it in README.md between the markers

tests/test_deploy.py fails when the README's table differs from this output.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from config.settings import WorkerSettings  # noqa: E402

START = "<!-- settings-table:start -->"
END = "<!-- settings-table:end -->"


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


def replace_table(readme: str) -> str:
    head, start, rest = readme.partition(START)
    _old, end, tail = rest.partition(END)
    if not start or not end:
        raise SystemExit(f"README.md has no {START} ... {END} block")
    return f"{head}{START}\n{render_table()}\n{END}{tail}"


if __name__ == "__main__":
    if sys.argv[1:] == ["--write"]:
        readme = ROOT / "README.md"
        readme.write_text(replace_table(readme.read_text()))
    else:
        print(render_table())
