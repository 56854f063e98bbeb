"""Throwaway plugin distributions for registry tests, and real plugin projects to pip-install.

`FakeSite` writes modules and ``*.dist-info`` directories (``METADATA`` + ``entry_points.txt``)
into a temporary directory on ``sys.path``, which is all `importlib.metadata` needs to see an
installed distribution. Use it through the `fake_site` fixture::

    from plugin_fixtures import fake_site  # noqa: F401  (pytest fixture)

The folders beside this file (``distilbert-head-choice``, ``-embed``, ``-intent``) are real plugin
projects; `installed_plugins` installs them with pip for the length of a test module.
"""

from __future__ import annotations

import contextlib
import importlib
import os
import shutil
import subprocess
import sys
import tempfile
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest

from distilbert_heads.plugins.registry import BLOCK_ENV, LOAD_ENV, STRICT_ENV, HeadRegistry, reset_registry

# Real plugin projects (pyproject.toml + src/), installed by `installed_plugins`.
PROJECTS = Path(__file__).parent


@contextlib.contextmanager
def installed_plugins(target: Path, *projects: str, modules: tuple[str, ...]) -> Iterator[Path]:
    """The plugin projects named (folders beside this file) ``pip install``-ed for real into ``target``,
    which is put on ``sys.path`` and ``PYTHONPATH`` (so fresh processes and the ``distilbert-heads``
    script see them) with the head registry reset; on exit all is undone and ``modules`` forgotten.

    Each project is built from a copy, so the build leaves nothing in the source tree; no network, no
    dependencies (distilbert-heads is already installed).
    """
    with tempfile.TemporaryDirectory() as scratch:
        copies = [shutil.copytree(PROJECTS / name, Path(scratch) / name) for name in projects]
        result = subprocess.run(
            [sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--no-index", "--no-build-isolation"]
            + ["--target", str(target), *map(str, copies)],
            capture_output=True,
            text=True,
            timeout=600,
        )
    assert result.returncode == 0, f"pip install {' '.join(projects)} failed:\n{result.stderr[-3000:]}"
    with pytest.MonkeyPatch.context() as patch:
        patch.syspath_prepend(str(target))
        patch.setenv("PYTHONPATH", os.pathsep.join(filter(None, [str(target), os.environ.get("PYTHONPATH")])))
        importlib.invalidate_caches()
        reset_registry()
        try:
            yield target
        finally:
            for name in [name for name in sys.modules if name.split(".")[0] in modules]:
                del sys.modules[name]
    importlib.invalidate_caches()
    reset_registry()


# Entry-point group for tests, so plugins installed in the environment (the example plugin)
# never take part unless a test asks for the real group.
TEST_GROUP = "distilbert_heads_tests"


def head_source(
    class_name: str,
    task_types: tuple[str, ...],
    aliases: tuple[str, ...] = (),
    register_call: str | None = None,
    preamble: str = "",
) -> str:
    """Source of a plugin module with one tiny `TaskHead` subclass and its hookimpl."""
    call = register_call or f"register({class_name})"
    return _TEMPLATE.format(
        preamble=preamble,
        class_name=class_name,
        task_types=task_types,
        aliases=aliases,
        call=textwrap.indent(textwrap.dedent(call).strip(), "    "),
    )


_TEMPLATE = """\
from distilbert_heads import hookimpl
from distilbert_heads.plugins.head import TaskHead
{preamble}

class {class_name}(TaskHead):
    task_types = {task_types!r}
    aliases = {aliases!r}
    output_names = ("logits",)

    def call(self, hidden_states, attention_mask, training=None):
        return {{"logits": hidden_states[:, 0, :1]}}


@hookimpl
def register_heads(register):
{call}
"""


class FakeSite:
    """A temporary site directory for fake plugin modules and distributions."""

    def __init__(self, root: Path, monkeypatch: pytest.MonkeyPatch) -> None:
        self.root = root
        self.monkeypatch = monkeypatch
        self.module_names: set[str] = set()

    def module(self, name: str, source: str) -> str:
        """Write top-level module ``name`` (a package ``name/__init__.py``) and return its name."""
        package = self.root / name
        package.mkdir()
        (package / "__init__.py").write_text(source)
        self.module_names.add(name)
        return name

    def head_module(self, name: str, task_types: tuple[str, ...], aliases: tuple[str, ...] = (), **kw: str) -> str:
        class_name = "".join(part.title() for part in name.split("_")) + "Head"
        return self.module(name, head_source(class_name, task_types, aliases, **kw))

    def dist(self, name: str, version: str, entry_points: dict[str, str], group: str = TEST_GROUP) -> None:
        """Write ``<name>-<version>.dist-info`` declaring ``entry_points`` in ``group``."""
        info = self.root / f"{name.replace('-', '_')}-{version}.dist-info"
        info.mkdir()
        (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n")
        lines = "".join(f"{key} = {value}\n" for key, value in entry_points.items())
        (info / "entry_points.txt").write_text(f"[{group}]\n{lines}")

    def plugin(
        self,
        entry_point: str,
        task_types: tuple[str, ...],
        aliases: tuple[str, ...] = (),
        *,
        dist: str | None = None,
        version: str = "1.0.0",
        **kw: str,
    ) -> str:
        """One distribution with one plugin module; returns the module name."""
        module = self.head_module(f"{entry_point}_pkg", task_types, aliases, **kw)
        self.dist(dist or f"distilbert-head-{entry_point}", version, {entry_point: module})
        return module

    def env(self, load: str | None = None, block: str | None = None, strict: bool = False) -> None:
        for var, value in ((LOAD_ENV, load), (BLOCK_ENV, block), (STRICT_ENV, "1" if strict else None)):
            if value is None:
                self.monkeypatch.delenv(var, raising=False)
            else:
                self.monkeypatch.setenv(var, value)

    def registry(self, builtins: tuple[str, ...] = ("dht_builtin_a",), group: str = TEST_GROUP) -> HeadRegistry:
        importlib.invalidate_caches()
        return HeadRegistry(builtin_modules=builtins, entry_point_group=group)

    def cleanup(self) -> None:
        for name in list(sys.modules):
            if name.split(".")[0] in self.module_names:
                del sys.modules[name]


@pytest.fixture
def fake_site(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """A `FakeSite` on ``sys.path`` with one fake built-in module ``dht_builtin_a``.

    ``dht_builtin_a`` serves sentiment_analysis (alias ``sentiment``) and text_classification.
    The registry environment variables are cleared; fake modules leave ``sys.modules`` after.
    """
    monkeypatch.syspath_prepend(str(tmp_path))
    site = FakeSite(tmp_path, monkeypatch)
    site.env()
    site.head_module("dht_builtin_a", ("sentiment_analysis", "text_classification"), ("sentiment",))
    yield site
    site.cleanup()
    importlib.invalidate_caches()
