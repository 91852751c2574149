"""Markdown tables for the evaluation and backtest reports."""

from __future__ import annotations

from collections.abc import Sequence


def table(header: Sequence[str], rows: Sequence[Sequence[object]], digits: int = 4) -> list[str]:
    """Lines of a table: the first column left-aligned, the others right; floats rounded."""

    def cell(value: object) -> str:
        return f"{value:.{digits}f}" if isinstance(value, float) else str(value)

    return [
        "| " + " | ".join(header) + " |",
        "| --- | " + " | ".join("---:" for _ in header[1:]) + " |",
        *("| " + " | ".join(cell(v) for v in row) + " |" for row in rows),
    ]
