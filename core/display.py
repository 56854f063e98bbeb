"""Answers and tables as people read them: one line per answer, JSON-safe values, a console."""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Mapping
from typing import Any


def console() -> Any:
    from rich.console import Console

    # Piped output gets a fixed width so tables are not folded mid-word.
    return Console(width=None if sys.stdout.isatty() or "COLUMNS" in os.environ else 120)


def describe_answer(answer: Any) -> str:
    """A decoded answer as one readable line."""
    if isinstance(answer, Mapping):
        if "answer" in answer:
            where = f" [chars {answer.get('start')}-{answer.get('end')}]" if answer.get("start") is not None else ""
            return f"{answer['answer']!r} (score {float(answer.get('score', 0.0)):.3f}){where}"
        if "label" in answer:
            return f"{answer['label']} (score {float(answer.get('score', 0.0)):.3f})"
        if set(answer) == {"score"}:
            return f"score {float(answer['score']):.4f}"
    if isinstance(answer, list):
        if not answer:
            return "(none)"
        if all(isinstance(item, Mapping) and "entity" in item for item in answer):
            return "; ".join(
                f"{item.get('word', '')} [{item['entity']}] {float(item.get('score', 0.0)):.2f}" for item in answer
            )
        if all(isinstance(item, Mapping) and "label" in item for item in answer):
            return ", ".join(f"{item['label']} ({float(item.get('score', 0.0)):.3f})" for item in answer)
    return json.dumps(jsonable(answer), ensure_ascii=False)


def jsonable(value: Any) -> Any:
    """Answers as plain JSON data (numpy scalars and tuples converted)."""
    if isinstance(value, Mapping):
        return {str(key): jsonable(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [jsonable(item) for item in value]
    if hasattr(value, "item") and callable(value.item):
        return value.item()
    return value
