"""Markdown tables, as the reports, results and tools print them."""

from __future__ import annotations


def markdown_row(cells) -> str:
    """One table line; for tables printed a row at a time as their numbers come in."""
    return "| " + " | ".join(str(c) for c in cells) + " |"


def markdown_table(head: list[str], rows: list[list]) -> str:
    """Header, separator and one line per row (cells through ``str``); no trailing newline."""
    lines = [markdown_row(head), "|" + "---|" * len(head)]
    lines += [markdown_row(row) for row in rows]
    return "\n".join(lines)
