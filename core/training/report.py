"""Metrics as a table for people."""

from __future__ import annotations

import os
import sys
from collections.abc import Mapping


def print_metrics_table(
    rows: Mapping[str, Mapping[str, float]],
    *,
    title: str = "metrics",
    baselines: Mapping[str, Mapping[str, float]] | None = None,
    floors: Mapping[str, Mapping[str, float]] | None = None,
    caption: str | None = None,
) -> None:
    """A rich table: one row per (model, metric), with the chance baseline and floor when given."""
    from rich.console import Console
    from rich.table import Table

    width = None if sys.stdout.isatty() or "COLUMNS" in os.environ else 120
    table = Table(title=title, caption=caption)
    table.add_column("Model")
    table.add_column("Metric")
    table.add_column("Value", justify="right")
    if baselines is not None:
        table.add_column("Chance", justify="right")
    if floors is not None:
        table.add_column("Floor", justify="right")
        table.add_column("Pass")
    for name, metrics in rows.items():
        for metric, value in metrics.items():
            cells = [name, metric, f"{value:.4f}"]
            if baselines is not None:
                base = (baselines.get(name) or {}).get(metric)
                cells.append("-" if base is None else f"{base:.4f}")
            if floors is not None:
                floor = (floors.get(name) or {}).get(metric)
                cells.append("-" if floor is None else f"{floor:.2f}")
                cells.append("-" if floor is None else ("[green]yes[/]" if value >= floor else "[bold red]NO[/]"))
            table.add_row(*cells)
    Console(width=width).print(table)
