"""The generated blocks of the docs (docs/*.md): a table between a start and an end marker, which the table scripts
(routes_table.py, settings_table.py) rewrite in place."""

from __future__ import annotations


def replace_block(page: str, start: str, end: str, content: str) -> str:
    """`page` with what lies between `start` and `end` replaced by `content`."""
    head, found_start, rest = page.partition(start)
    _old, found_end, tail = rest.partition(end)
    if not found_start or not found_end:
        raise SystemExit(f"the page has no {start} ... {end} block")
    return f"{head}{start}\n{content}\n{end}{tail}"
