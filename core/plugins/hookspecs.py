"""The plugin contract: the hook a head plugin implements, its entry-point group, the control variables.

A plugin is any module with::

    from distilbert_heads import hookimpl

    @hookimpl
    def register_heads(register):
        register(MyHead)                  # task types and aliases from the class
        register(OtherHead, override=True)  # replace a built-in task type, knowingly
"""

from __future__ import annotations

import pluggy

PROJECT_NAME = "distilbert_heads"
ENTRY_POINT_GROUP = "distilbert_heads"
LOAD_ENV = "DISTILBERT_HEADS_LOAD_PLUGINS"  # unset: all plugins; empty: none; "a,b": only these
BLOCK_ENV = "DISTILBERT_HEADS_BLOCK_PLUGINS"  # "a,b": never these (entry-point or distribution names)
STRICT_ENV = "DISTILBERT_HEADS_STRICT_PLUGINS"  # "1": a failed plugin raises instead of warning

hookspec = pluggy.HookspecMarker(PROJECT_NAME)
hookimpl = pluggy.HookimplMarker(PROJECT_NAME)


@hookspec
def register_heads(register):  # type: ignore[no-untyped-def]
    """Call ``register(HeadClass, task_types=None, aliases=None, override=False)`` once per head."""
