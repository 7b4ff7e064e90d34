"""Print the route table of docs/openai-routes.md from the one route table (worker/routes/table.py), or rewrite it in place.

    .venv/bin/python scripts/routes_table.py           # print the table
    .venv/bin/python scripts/routes_table.py --write   # replace it in docs/openai-routes.md between the markers

tests/routes/test_routes.py fails when the page's table differs from this output.
"""

from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from scripts.docs_block import replace_block  # noqa: E402
from worker.routes.table import routes_markdown  # noqa: E402

PAGE = ROOT / "docs" / "openai-routes.md"
START = "<!-- routes-table:start -->"
END = "<!-- routes-table:end -->"


def render_table() -> str:
    return routes_markdown()


if __name__ == "__main__":
    if sys.argv[1:] == ["--write"]:
        PAGE.write_text(replace_block(PAGE.read_text(), START, END, render_table()))
    else:
        print(render_table())
