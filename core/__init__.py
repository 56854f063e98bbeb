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
from distilbert_heads._lazy import lazy_exports

__version__ = "0.1.0"

# public name -> the submodule that defines it
_EXPORTS = {
    "VARIANTS": "encoder.config",
    "DistilBertConfig": "encoder.config",
    "DistilBERT": "encoder.distilbert",
    "DistilBertTaskModel": "model.task_model",
    "create_distilbert_with_head": "model.factory",
    "create_distilbert_with_heads": "model.factory",
    "default_layer_map": "distillation.student",
    "distill": "distillation.run",
    "student_from_teacher": "distillation.student",
    "DistillationTarget": "plugins.head",
    "HeadOptions": "plugins.head",
    "HeadOptionsError": "plugins.head",
    "TaskHead": "plugins.head",
    "hookimpl": "plugins.hookspecs",
    "MissingHeadPluginError": "plugins.plugin_errors",
    "InputKind": "plugins.input_kinds",
    "TEXT": "plugins.input_kinds",
    "PAIR": "plugins.input_kinds",
    "QUESTION_CONTEXT": "plugins.input_kinds",
    "IGNORE_INDEX": "losses",
    "MaskedSparseCategoricalAccuracy": "losses",
    "MaskedSparseCategoricalCrossentropy": "losses",
    "Pipeline": "text.pipeline",
    "pipeline": "text.pipeline",
    "BatchPredictor": "serving.batch",
    "NLPTaskConfig": "tasks",
    "NLPTaskType": "tasks",
}
__all__ = sorted([*_EXPORTS, "export", "__version__"])
_exported, _listed = lazy_exports(__name__, _EXPORTS)


def __getattr__(name: str) -> Any:
    if name == "export":
        # The module distilbert_heads.export (0.1's path of serving.export), callable as export(model, out, format=...),
        # so both `distilbert_heads.export(...)` and 0.1's `import distilbert_heads.export as e` keep working.
        return importlib.import_module(f"{__name__}.export")
    return _exported(name)


def __dir__() -> list[str]:
    return sorted({*_listed(), "export"})


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
