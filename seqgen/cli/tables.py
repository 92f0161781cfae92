"""Tables on stdout for people (``--json`` prints the same rows for scripts)."""

from __future__ import annotations


def table(title: str, columns: list[str], rows: list[list[str]]) -> None:
    """A rich table on stdout; ``columns`` of empty names: a two-column key / value list."""
    from rich.console import Console
    from rich.table import Table

    out = Table(title=title, title_justify="left", show_header=any(columns))
    for c in columns:
        out.add_column(c, overflow="fold")
    for r in rows:
        out.add_row(*r)
    console = Console()
    if not console.is_terminal:  # logs and pipes: wider than the 80-column default
        console = Console(width=160)
    console.print(out)


def num(value, digits: int = 4) -> str:
    return "" if value is None else f"{value:.{digits}g}" if isinstance(value, float) else str(value)
