"""The ``distilbert-heads`` command line. Subcommands: ``heads`` (more to come: train, predict).

Each subcommand is a ``_cmd_<name>(args) -> int`` function plus a ``_add_<name>(subparsers)``
that declares its arguments; `main` only parses and dispatches.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Sequence
from typing import Any

_STATUS_STYLE = {"ok": "green", "failed": "bold red", "blocked": "yellow", "overridden": "dim"}


def _cmd_heads(args: argparse.Namespace) -> int:
    from distilbert_heads.registry import PluginConflictError, PluginLoadError, get_registry

    registry = get_registry()
    try:
        rows = registry.list_heads(raise_on_conflict=False)
    except PluginLoadError as error:  # strict mode
        print(f"error: {error}", file=sys.stderr)
        return 1
    if args.json:
        print(json.dumps(rows, indent=2))
    else:
        _print_table(rows)
    try:
        registry.list_heads()
    except PluginConflictError as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    return 0


def _print_table(rows: list[dict[str, Any]]) -> None:
    from rich.console import Console
    from rich.table import Table

    # Piped output gets a wide fixed width so names are not folded mid-word.
    width = None if sys.stdout.isatty() or "COLUMNS" in os.environ else 200
    console = Console(width=width)
    table = Table(title="distilbert-heads: installed task heads")
    for header in ("Task type", "Aliases", "Head class", "Plugin", "Distribution", "Version", "Status"):
        table.add_column(header, no_wrap=header != "Head class")
    table.add_column("Error", overflow="fold")
    for row in rows:
        status = row["status"]
        table.add_row(
            row["task_type"] or "-",
            ", ".join(row["aliases"]) or "-",
            row["head_class"] or "-",
            row["plugin"],
            row["distribution"],
            row["version"],
            f"[{_STATUS_STYLE.get(status, '')}]{status}[/]",
            row["error"] or "",
        )
    console.print(table)


def _add_heads(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "heads",
        help="list the installed task heads and the plugins that provide them",
        description=(
            "Load every head plugin (built-in and third-party) and list each task type with its aliases, "
            "head class, plugin, distribution, version and status (ok, failed, blocked, overridden). "
            "Failed plugins are listed with their error. Exits 1 on a plugin conflict, or in strict mode "
            "(DISTILBERT_HEADS_STRICT_PLUGINS=1) when a plugin failed."
        ),
        epilog=(
            "examples:\n"
            "  distilbert-heads heads\n"
            "  distilbert-heads heads --json | jq '.[] | select(.status != \"ok\")'\n"
            "  DISTILBERT_HEADS_BLOCK_PLUGINS=distilbert-head-foo distilbert-heads heads"
        ),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--json", action="store_true", help="print a JSON list of rows instead of a table")
    parser.set_defaults(handler=_cmd_heads)


def build_parser() -> argparse.ArgumentParser:
    """The argument parser with every subcommand."""
    parser = argparse.ArgumentParser(
        prog="distilbert-heads",
        description="DistilBERT with pluggable task heads.",
        epilog="example:\n  distilbert-heads heads --json",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    subparsers = parser.add_subparsers(title="commands", dest="command", metavar="COMMAND", required=True)
    _add_heads(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line with ``argv`` (default: ``sys.argv[1:]``) and return the exit code."""
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exit_:  # --help and usage errors: return the code instead of exiting
        return exit_.code if isinstance(exit_.code, int) else 2
    return int(args.handler(args))


if __name__ == "__main__":
    raise SystemExit(main())
