"""distilbert_heads: a Keras 3 DistilBERT encoder with task heads as plugins.

Importing this package is cheap: the public names below load their modules (and Keras, and
TensorFlow) on first use, so the command line answers ``--help`` at once. Its Keras classes are
registered as soon as Keras is imported, so ``import distilbert_heads`` is still all that
``keras.models.load_model`` needs (no ``custom_objects``). No third-party plugin is imported: those
load on first lookup.
"""

from __future__ import annotations

import importlib
import sys
from types import ModuleType
from typing import Any

from distilbert_heads import _keras_registration

__version__ = "0.1.0"

# public name -> the submodule that defines it
_EXPORTS = {
    "VARIANTS": "config",
    "DistilBertConfig": "config",
    "DistilBERT": "encoder",
    "create_distilbert_with_head": "factory",
    "create_distilbert_with_heads": "factory",
    "HeadOptions": "head",
    "HeadOptionsError": "head",
    "TaskHead": "head",
    "hookimpl": "hookspecs",
    "IGNORE_INDEX": "losses",
    "MaskedSparseCategoricalAccuracy": "losses",
    "MaskedSparseCategoricalCrossentropy": "losses",
    "DistilBertTaskModel": "model",
    "MissingHeadPluginError": "model",
    "Pipeline": "pipeline",
    "pipeline": "pipeline",
    "NLPTaskConfig": "tasks",
    "NLPTaskType": "tasks",
}

__all__ = [
    "VARIANTS",
    "DistilBERT",
    "DistilBertConfig",
    "DistilBertTaskModel",
    "HeadOptions",
    "HeadOptionsError",
    "IGNORE_INDEX",
    "MaskedSparseCategoricalAccuracy",
    "MaskedSparseCategoricalCrossentropy",
    "MissingHeadPluginError",
    "NLPTaskConfig",
    "NLPTaskType",
    "Pipeline",
    "TaskHead",
    "__version__",
    "create_distilbert_with_head",
    "create_distilbert_with_heads",
    "hookimpl",
    "pipeline",
]


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f"{__name__}.{module}"), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))


class _Package(ModuleType):
    def __setattr__(self, name: str, value: Any) -> None:
        # Importing the submodule distilbert_heads.pipeline binds it as an attribute of this
        # package; the public `distilbert_heads.pipeline` is the function of that name.
        if isinstance(value, ModuleType) and _EXPORTS.get(name) == name and hasattr(value, name):
            value = getattr(value, name)
        super().__setattr__(name, value)


sys.modules[__name__].__class__ = _Package
_keras_registration.install()
