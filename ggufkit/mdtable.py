"""One markdown-table writer for the command layer's tables (bench, the server's load generator)."""
from __future__ import annotations


def md_table(head: list[str], rules: list[str], rows: list[list]) -> str:
    """``| a | b |`` lines: the header cells, the rule cells ("---:", "-----", ...) and one line per row
    (cells formatted with str), ending in a newline."""
    lines = ["| " + " | ".join(head) + " |", "| " + " | ".join(rules) + " |"]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines) + "\n"
