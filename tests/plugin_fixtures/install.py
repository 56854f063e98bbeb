"""Install a plugin source tree for real, with pip, into a throwaway site directory.

`installed_plugin` copies the tree (so the build leaves nothing beside the sources), runs
``pip install --no-deps --no-build-isolation --target <site>`` on it, puts the site on
``sys.path`` and ``PYTHONPATH`` (so fresh processes and the ``distilbert-heads`` script see it
too) and resets the head registry, which then finds the plugin through its entry point. On exit
everything is undone and the registry is reset again.
"""

from __future__ import annotations

import contextlib
import importlib
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from distilbert_heads.plugins.registry import reset_registry

FIXTURES = Path(__file__).resolve().parent


@contextlib.contextmanager
def installed_plugin(source: str | Path, scratch: Path, module: str) -> Iterator[Path]:
    """``source`` (a directory with a pyproject.toml) pip-installed into ``scratch/site``; yields the site."""
    tree = scratch / "src-copy"
    shutil.copytree(source, tree)
    site = scratch / "site"
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "install",
            "-q",
            "--no-deps",
            "--no-build-isolation",
            "--target",
            str(site),
            str(tree),
        ],
        capture_output=True,
        text=True,
        timeout=600,
    )
    if result.returncode != 0:
        pytest.fail(f"pip could not install {source}:\n{result.stdout[-2000:]}\n{result.stderr[-4000:]}")
    with pytest.MonkeyPatch.context() as patch:
        patch.syspath_prepend(str(site))
        patch.setenv("PYTHONPATH", os.pathsep.join(filter(None, [str(site), os.environ.get("PYTHONPATH")])))
        importlib.invalidate_caches()
        reset_registry()
        try:
            yield site
        finally:
            for name in [name for name in sys.modules if name.split(".")[0] == module]:
                del sys.modules[name]
    importlib.invalidate_caches()
    reset_registry()
