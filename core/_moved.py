"""The 0.1 import paths of modules that moved into subpackages in 0.2.

``import distilbert_heads.tokenizer`` still works and gives the very module now at
``distilbert_heads.text.tokenizer`` (one module object under both names, so classes, registries
and monkeypatches are shared). No warning: README and plugins written to the 0.1 guide use these
paths. The subpackages ``encoder``, ``model``, ``training`` and ``demo`` kept their 0.1 names and
re-export what those modules offered.
"""

from __future__ import annotations

import importlib
import importlib.abc
import importlib.machinery
import importlib.util
import sys
from types import ModuleType

PACKAGE = "distilbert_heads"
MOVED = {
    "config": "encoder.config",
    "layers": "encoder.layers",
    "checkpoints": "encoder.checkpoints",
    "hookspecs": "plugins.hookspecs",
    "registry": "plugins.registry",
    "plugin_errors": "plugins.plugin_errors",
    "head": "plugins.head",
    "input_kinds": "plugins.input_kinds",
    "factory": "model.factory",
    "tokenizer": "text.tokenizer",
    "pipeline": "text.pipeline",
    "data": "training.data_files",
    "export": "serving.export",
    "demo_data": "demo.datasets",
}


class _Alias(importlib.abc.Loader):
    def __init__(self, target: str) -> None:
        self.target = target

    def create_module(self, spec: importlib.machinery.ModuleSpec) -> ModuleType:
        module = importlib.import_module(self.target)
        self._spec = module.__spec__
        return module

    def exec_module(self, module: ModuleType) -> None:
        module.__spec__ = self._spec  # the import system set the alias's spec on the shared module; put it back


class _AliasFinder(importlib.abc.MetaPathFinder):
    def find_spec(
        self, fullname: str, path: object = None, target: object = None
    ) -> importlib.machinery.ModuleSpec | None:
        package, _, name = fullname.rpartition(".")
        if package != PACKAGE or name not in MOVED:
            return None
        return importlib.util.spec_from_loader(fullname, _Alias(f"{PACKAGE}.{MOVED[name]}"))


def install() -> None:
    if not any(isinstance(finder, _AliasFinder) for finder in sys.meta_path):
        sys.meta_path.insert(0, _AliasFinder())  # before path finders: an old name always means the moved module
