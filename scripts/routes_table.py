"""Print the README's route table from the one route table (worker/routes/table.py), or rewrite it in place.

    .venv/bin/python scripts/routes_table.py           # print the table
    .venv/bin/python scripts/routes_table.py --write   # replace it in README.md between the markers

tests/test_routes.py fails when the README's table differs from this output.
"""

from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from scripts.readme_block import replace_block  # noqa: E402
from worker.routes.table import routes_markdown  # noqa: E402

START = "<!-- routes-table:start -->"
END = "<!-- routes-table:end -->"


def render_table() -> str:
    return routes_markdown()


if __name__ == "__main__":
    if sys.argv[1:] == ["--write"]:
        readme = ROOT / "README.md"
        readme.write_text(replace_block(readme.read_text(), START, END, render_table()))
    else:
        print(render_table())
