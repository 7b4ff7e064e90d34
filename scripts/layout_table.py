"""Print the layout of docs/development.md (every module of the product, with the first sentence of its
docstring), or rewrite it in place.

    .venv/bin/python scripts/layout_table.py           # print it
    .venv/bin/python scripts/layout_table.py --write   # replace it in docs/development.md between the markers

tests/test_structure.py fails when the page's layout differs from this output.
"""

from __future__ import annotations

import ast
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from scripts.docs_block import replace_block  # noqa: E402

PAGE = ROOT / "docs" / "development.md"
START = "<!-- layout:start -->"
END = "<!-- layout:end -->"
PACKAGES = ("config", "worker", "devtools", "bench")


def first_sentence(path: Path) -> str:
    doc = ast.get_docstring(ast.parse(path.read_text())) or ""
    text = " ".join(doc.split())
    end = text.find(". ")
    return text if end < 0 else text[: end + 1]


def render_table() -> str:
    paths = [ROOT / "handler.py"] + sorted(p for top in PACKAGES for p in (ROOT / top).rglob("*.py"))
    rows = ["| module | what it is |", "| --- | --- |"]
    for path in paths:
        name = path.relative_to(ROOT)
        shown = f"`{name.parent}/`" if path.name == "__init__.py" else f"`{name}`"
        rows.append(f"| {shown} | {first_sentence(path).replace('|', chr(92) + '|')} |")
    return "\n".join(rows)


if __name__ == "__main__":
    if sys.argv[1:] == ["--write"]:
        PAGE.write_text(replace_block(PAGE.read_text(), START, END, render_table()))
    else:
        print(render_table())
