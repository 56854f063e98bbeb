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

from distilbert_heads import _keras_registration, _moved

__version__ = "0.1.0"

# public name -> the submodule that defines it
_EXPORTS = {
    "VARIANTS": "encoder.config",
    "DistilBertConfig": "encoder.config",
    "DistilBERT": "encoder.distilbert",
    "create_distilbert_with_head": "model.factory",
    "create_distilbert_with_heads": "model.factory",
    "HeadOptions": "plugins.head",
    "HeadOptionsError": "plugins.head",
    "TaskHead": "plugins.head",
    "hookimpl": "plugins.hookspecs",
    "IGNORE_INDEX": "losses",
    "MaskedSparseCategoricalAccuracy": "losses",
    "MaskedSparseCategoricalCrossentropy": "losses",
    "DistilBertTaskModel": "model.task_model",
    "MissingHeadPluginError": "model.task_model",
    "Pipeline": "text.pipeline",
    "pipeline": "text.pipeline",
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
        # Importing the module distilbert_heads.pipeline (0.1's path of text.pipeline) binds it as an
        # attribute of this package; the public `distilbert_heads.pipeline` is the function of that name.
        if isinstance(value, ModuleType) and name in _EXPORTS and hasattr(value, name):
            value = getattr(value, name)
        super().__setattr__(name, value)


sys.modules[__name__].__class__ = _Package
_moved.install()
_keras_registration.install()
