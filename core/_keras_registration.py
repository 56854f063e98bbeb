"""Register this package's Keras classes as soon as Keras is imported, not when the package is.

``keras.models.load_model`` finds ``distilbert_heads>DistilBertTaskModel`` only once the module
defining it has run, and Keras never imports a non-Keras module named in a file. The package
``__init__`` is lazy (so the command line answers ``--help`` without TensorFlow), so something must
import :data:`REGISTERING_MODULES` once Keras is there: an import hook. It watches the import of
``keras`` and of this package's submodules, and imports the registering module after whichever
finishes last, never while one of ours is half-initialised (that would be a circular import).
After that it removes itself.
"""

from __future__ import annotations

import importlib
import importlib.abc
import sys
import warnings
from types import ModuleType
from typing import Any

PACKAGE = "distilbert_heads"
REGISTERING_MODULES = (
    f"{PACKAGE}.model.task_model",  # defines DistilBertTaskModel and imports the encoder
    f"{PACKAGE}.training.optimization",  # the learning-rate schedules saved in a trained model's compile config
)


def _initializing(module: ModuleType | None) -> bool:
    # importlib marks a module's spec with _initializing while its body runs.
    return bool(getattr(getattr(module, "__spec__", None), "_initializing", False))


def _is_watched(name: str) -> bool:
    return name == "keras" or name.startswith(f"{PACKAGE}.")


def register_when_ready(just_finished: str | None = None) -> None:
    """Import the registering modules now if Keras is imported and none of our modules is mid-import."""
    modules = dict(sys.modules)
    keras = modules.get("keras")
    if keras is None or (just_finished != "keras" and _initializing(keras)):
        return
    registering = [modules.get(name) for name in REGISTERING_MODULES]
    if all(module is not None and not _initializing(module) for module in registering):
        _uninstall()
        return
    if any(
        _is_watched(name) and name not in {"keras", just_finished} and _initializing(module)
        for name, module in modules.items()
    ):
        return  # the outermost of our imports runs this again when it finishes
    _uninstall()
    for name in REGISTERING_MODULES:
        try:
            importlib.import_module(name)
        except Exception as error:  # noqa: BLE001  (never let our module break `import keras` for the program)
            warnings.warn(
                f"{PACKAGE} could not register its Keras classes ({type(error).__name__}: {error}); "
                f"keras.models.load_model will need `import {name}` first.",
                RuntimeWarning,
                stacklevel=2,
            )


class _RegisterAfter(importlib.abc.Loader):
    """A module's own loader, then `register_when_ready`."""

    def __init__(self, loader: Any) -> None:
        self._loader = loader

    def create_module(self, spec: Any) -> ModuleType | None:
        return self._loader.create_module(spec)

    def exec_module(self, module: ModuleType) -> None:
        self._loader.exec_module(module)
        register_when_ready(just_finished=module.__name__)

    def __getattr__(self, name: str) -> Any:  # get_source, get_resource_reader, ...
        return getattr(self._loader, name)


class _Hook(importlib.abc.MetaPathFinder):
    def find_spec(self, fullname: str, path: Any, target: Any = None) -> Any:
        if not _is_watched(fullname) or self not in sys.meta_path:
            return None
        for finder in sys.meta_path[sys.meta_path.index(self) + 1 :]:
            find_spec = getattr(finder, "find_spec", None)
            spec = find_spec(fullname, path, target) if find_spec is not None else None
            if spec is not None:
                if spec.loader is not None and hasattr(spec.loader, "exec_module"):
                    spec.loader = _RegisterAfter(spec.loader)
                return spec
        return None


_HOOK = _Hook()


def _uninstall() -> None:
    try:
        sys.meta_path.remove(_HOOK)
    except ValueError:
        pass


def install() -> None:
    """Register now if Keras is already imported, else as soon as it is."""
    if _HOOK not in sys.meta_path:
        sys.meta_path.insert(0, _HOOK)
    register_when_ready()
