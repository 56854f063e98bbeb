"""0.1 import paths: every module path and public name of 0.1 still imports (the modules moved into
subpackages in 0.2; `distilbert_heads._moved` aliases them), except the few helpers listed below that
0.1 only used internally and that now have one owner elsewhere."""

from __future__ import annotations

import importlib
import json
from pathlib import Path

import pytest

from distilbert_heads import _moved

PUBLIC_NAMES_0_1 = json.loads((Path(__file__).parent / "fixtures" / "v0_1" / "public_names.json").read_text())

# 0.1 name -> why it is gone (never shown in README or the plugin guide)
REMOVED = {
    ("distilbert_heads.training", "select_head"): "the task model chooses: DistilBertTaskModel.select_head",
    ("distilbert_heads.training", "pipeline_inputs"): "the input kind builds items: training.example_items",
    ("distilbert_heads.pipeline", "INPUT_KINDS"): "input kinds are objects: distilbert_heads.input_kinds",
}


@pytest.mark.parametrize("module", sorted(PUBLIC_NAMES_0_1))
def test_every_0_1_module_path_and_public_name_still_imports(module):
    imported = importlib.import_module(module)
    missing = [
        name for name in PUBLIC_NAMES_0_1[module] if (module, name) not in REMOVED and not hasattr(imported, name)
    ]
    assert not missing, f"{module} lost {missing}"


@pytest.mark.parametrize(("old", "new"), sorted(_moved.MOVED.items()))
def test_a_moved_module_is_one_module_under_both_names(old, new):
    before = importlib.import_module(f"distilbert_heads.{old}")
    after = importlib.import_module(f"distilbert_heads.{new}")
    assert before is after
    assert after.__spec__.name == f"distilbert_heads.{new}"  # the alias leaves the real module's spec alone


def test_the_removed_names_are_really_gone_and_their_replacements_exist():
    from distilbert_heads.model import DistilBertTaskModel
    from distilbert_heads.training import example_items

    for module, name in REMOVED:
        assert not hasattr(importlib.import_module(module), name), f"{module}.{name} exists: drop it from REMOVED"
    assert callable(DistilBertTaskModel.select_head) and callable(example_items)
