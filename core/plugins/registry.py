"""Discovery and lookup of task heads: the built-in modules plus pluggy plugins (see `hookspecs`).

Importing this imports no plugin; the first lookup or listing loads every allowed plugin, so no
result depends on call order. A key (task type or alias) two plugins claim raises
`PluginConflictError` on every lookup of it, unless a built-in claims it (it keeps it) or exactly one
plugin replaces that built-in with ``override=True``. A plugin that raises anything fails alone and
warns once; in strict mode it raises instead, on listings and on lookups no loaded plugin serves.
Messages live in `plugin_errors`.
"""

from __future__ import annotations

import contextlib
import functools
import importlib.metadata
import os
import signal
import sys
import threading
import warnings
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import asdict, dataclass, field
from functools import partial
from importlib import import_module
from typing import TYPE_CHECKING, Any

import pluggy

from distilbert_heads.plugins import hookspecs
from distilbert_heads.plugins import plugin_errors as say
from distilbert_heads.plugins.hookspecs import BLOCK_ENV, ENTRY_POINT_GROUP, LOAD_ENV, PROJECT_NAME, STRICT_ENV
from distilbert_heads.plugins.plugin_errors import (  # noqa: F401  (re-exported: callers import them from here)
    BUILTIN_DISTRIBUTION,
    UNKNOWN_VERSION,
    MissingHeadPluginError,
    PluginConflictError,
    PluginLoadError,
    UnknownTaskTypeError,
    canonical,
    pip_requirement,
    release_change,
)
from distilbert_heads.tasks import NLPTaskType, normalize_task_type

if TYPE_CHECKING:
    from distilbert_heads.plugins.head import TaskHead

BUILTIN_MODULES = tuple(f"distilbert_heads.heads.{name}" for name in ("sentiment", "ner", "qa_span", "pairwise", "mlm"))
_lock = threading.RLock()  # guards loading and the process-wide registry
_warned: set[tuple[str, str]] = set()  # (distribution, plugin) whose failure was already warned about


@dataclass(frozen=True)
class HeadRecord:
    """One task type served by one head class, with where it came from."""

    task_type: str
    head_class: type[TaskHead]
    aliases: tuple[str, ...]
    plugin: str
    distribution: str
    version: str
    builtin: bool


@dataclass(frozen=True)
class HeadRow:
    """One listing row: a task type (status ok, overridden or conflict), or a failed or blocked plugin."""

    task_type: str | None
    aliases: tuple[str, ...]
    head_class: str | None  # "module:Qualname"
    plugin: str
    distribution: str
    version: str
    status: str
    error: str | None

    def as_dict(self) -> dict[str, Any]:
        return {**asdict(self), "aliases": list(self.aliases)}


@dataclass(eq=False)
class _Plugin:
    name: str  # the entry-point name (built-ins: builtin.<module>)
    distribution: str
    version: str
    load: Callable[[], Any]
    builtin: bool = False
    error: BaseException | None = None  # why it failed
    reason: str | None = None  # why it is blocked
    records: list[HeadRecord] = field(default_factory=list)
    key = property(lambda self: f"{self.distribution}:{self.name}")  # its pluggy name: unique per distribution
    status = property(lambda self: "failed" if self.error is not None else "blocked" if self.reason else "ok")

    def __str__(self) -> str:
        return f"plugin {self.name!r} ({self.distribution} {self.version})"


class PluginSettings:
    """The control variables, read when a registry is created; the one place they are parsed."""

    def __init__(self, environ: Mapping[str, str] = os.environ) -> None:
        self.values = {name: environ.get(name) for name in (LOAD_ENV, BLOCK_ENV, STRICT_ENV)}
        load, block = self.values[LOAD_ENV], self.values[BLOCK_ENV] or ""
        self.load_only = None if load is None else {canonical(n) for n in load.split(",") if n.strip()}
        self.blocked = {canonical(n) for n in block.split(",") if n.strip()}
        self.strict = (self.values[STRICT_ENV] or "").strip().lower() in say.TRUE

    def blocked_by(self, *names: str | None) -> str | None:
        """The variable that keeps a plugin with any of these names from loading, if one does."""
        names_ = {canonical(name) for name in names if name}
        if names_ & self.blocked:
            return BLOCK_ENV
        return LOAD_ENV if self.load_only is not None and not names_ & self.load_only else None


@contextlib.contextmanager
def _noting_sigint() -> Iterator[list[int]]:
    """Note real Ctrl-C presses while plugin code runs: a `KeyboardInterrupt` a plugin raises itself is
    its failure, one from a real SIGINT stops the program. Off the main thread none is real."""
    received: list[int] = []
    previous = signal.getsignal(signal.SIGINT)

    def note(signum: int, frame: Any) -> None:
        received.append(signum)
        if callable(previous):
            previous(signum, frame)
        elif previous != signal.SIG_IGN:
            raise KeyboardInterrupt

    if previous is not None:
        try:
            signal.signal(signal.SIGINT, note)
        except ValueError:  # not the main thread of the main interpreter: no signal reaches this code
            previous = None
    try:
        yield received
    finally:
        if previous is not None:
            signal.signal(signal.SIGINT, previous)


class HeadRegistry:
    """Finds, loads and looks up head plugins. Use `get_registry()` for the process-wide one."""

    def __init__(self, *, builtin_modules: Iterable[str] = BUILTIN_MODULES, entry_point_group: str = ENTRY_POINT_GROUP):
        self.builtin_modules, self.entry_point_group = tuple(builtin_modules), entry_point_group
        self.settings = PluginSettings()
        self._plugins: list[_Plugin] | None = None
        self.plugin_manager: pluggy.PluginManager | None = None  # set by the first load
        self._loading = False
        self._heads: dict[str, HeadRecord] = {}  # task type -> the record serving it
        self._aliases: dict[str, str] = {}  # alias -> task type
        # key -> (error, the records listed as conflict); contested (every lookup raises) if it has no winner
        self._conflicts: dict[str, tuple[PluginConflictError, tuple[HeadRecord, ...]]] = {}

    def get_head(self, task_type: str | NLPTaskType) -> HeadRecord:
        """The record serving ``task_type`` (a member, its value or an alias); `PluginConflictError` for a
        contested key, else `UnknownTaskTypeError` (or `PluginLoadError`: strict, or a failed plugin's name)."""
        key = normalize_task_type(task_type)
        plugins = self.load()
        for name in (key, self._aliases.get(key, key)):
            if name in self._heads:
                return self._heads[name]
            if name in self._conflicts and name not in self._aliases:
                raise self._conflicts[name][0]
        error = say.unknown_task_type(key, plugins, self._heads, self._aliases, self._conflicts)
        if isinstance(error, UnknownTaskTypeError):  # not a failed plugin named like the key
            error = self._strict_error() or error
        raise error

    def list_heads(self, *, raise_on_conflict: bool = True) -> list[HeadRow]:
        """One row per task type and per failed or blocked plugin; raises in strict mode while a plugin is
        failed, and (unless ``raise_on_conflict=False``) while any conflict exists."""
        plugins = self.load()
        if strict := self._strict_error():
            raise strict
        if raise_on_conflict and self._conflicts:
            raise self._conflicts[min(self._conflicts)][0]
        marked = {record: str(error) for error, records in self._conflicts.values() for record in records}
        rows = []
        for plugin in plugins:
            common = {"plugin": plugin.name, "distribution": plugin.distribution, "version": plugin.version}
            if plugin.status != "ok":
                error = say.describe(plugin.error) if plugin.error is not None else plugin.reason
                rows.append(HeadRow(None, (), None, status=plugin.status, error=error, **common))
            for record in plugin.records:
                status, error = ("conflict", marked[record]) if record in marked else ("ok", None)
                if status == "ok" and (winner := self._heads.get(record.task_type, record)) is not record:
                    status, error = "overridden", f"replaced by {winner.plugin!r}"
                head_class = f"{record.head_class.__module__}:{record.head_class.__qualname__}"
                rows.append(HeadRow(record.task_type, record.aliases, head_class, status=status, error=error, **common))
        return rows

    def failed_plugins(self) -> dict[str, BaseException]:
        """Plugins that failed to load, by plugin name, with their original exception."""
        return {p.name: p.error for p in self.load() if p.error is not None}

    head_for_saved = say.head_for_saved  # a saved head's record, or what to install (plugin_errors)

    def _strict_error(self) -> PluginLoadError | None:
        failed = [p for p in self._plugins or () if p.error is not None]
        return say.strict_error(failed) if self.settings.strict and failed else None

    def load(self) -> list[_Plugin]:
        """Every plugin, built-in first, each loaded (or failed, or blocked) once per registry."""
        with _lock:
            if self._loading:
                raise RuntimeError("a plugin looked up heads while plugins were loading; do it outside register_heads")
            if self._plugins is None:
                self._loading = True
                try:
                    self._plugins = self._load_all()
                finally:
                    self._loading = False
        return self._plugins

    def _load_all(self) -> list[_Plugin]:
        self.plugin_manager = pm = pluggy.PluginManager(PROJECT_NAME)  # names blocked plugins; holds loaded ones
        pm.add_hookspecs(hookspecs)
        builtin = (BUILTIN_DISTRIBUTION, _builtin_version())
        plugins = [
            _Plugin(f"builtin.{m.rsplit('.', 1)[-1]}", *builtin, partial(import_module, m), builtin=True)
            for m in self.builtin_modules
        ]
        found: dict[tuple[str, str], _Plugin] = {}
        for ep in importlib.metadata.entry_points(group=self.entry_point_group):
            meta = ep.dist.metadata if ep.dist is not None else {}  # parsed once: it is most of the cost
            name, ver = meta.get("Name") or "unknown", meta.get("Version") or UNKNOWN_VERSION
            found.setdefault((ep.name, canonical(name)), _Plugin(ep.name, name, ver, ep.load))
        for problem in say.setting_problems(self.settings, found.values()):
            warnings.warn(problem, UserWarning, stacklevel=4)  # the caller of get_head
        for _, plugin in sorted(found.items()):
            if by := self.settings.blocked_by(plugin.name, plugin.distribution):
                plugin.reason = say.blocked_reason(by, self.settings.values[LOAD_ENV])
                pm.set_blocked(plugin.key)  # pluggy then refuses to register it
            plugins.append(plugin)
        claims: dict[str, dict[str, tuple[HeadRecord, bool]]] = {}  # key -> plugin -> (record, override)
        with _noting_sigint() as interrupted:
            for plugin in plugins:
                if not pm.is_blocked(plugin.key):
                    self._register(pm, plugin, claims, interrupted)
        for key, claimed in sorted(claims.items()):
            self._resolve(key, sorted(claimed.values(), key=lambda c: (not c[0].builtin, c[0].plugin)))
        return plugins

    def _register(self, pm: pluggy.PluginManager, plugin: _Plugin, claims: dict, interrupted: list[int]) -> None:
        """Import, validate and run one plugin's hook; record its claims, or its failure."""
        pending: dict[HeadRecord, bool] = {}  # record -> override; the same call twice registers once
        owners: dict[str, type] = {}  # key -> the head class this plugin registered for it
        is_open = True

        def register(head_class: type[TaskHead], *, task_types=None, aliases=None, override=False) -> None:
            if not is_open:
                raise RuntimeError(f"{plugin} called register() after register_heads returned")
            for record in _records(plugin, head_class, task_types, aliases):
                for key in (record.task_type, *record.aliases):
                    if owners.setdefault(key, head_class) is not head_class:
                        raise ValueError(
                            f"{plugin} registered two head classes for {key!r}: "
                            f"{owners[key].__qualname__} and {head_class.__qualname__}"
                        )
                pending.setdefault(record, bool(override))

        module = None
        try:
            with contextlib.redirect_stdout(sys.stderr):  # stdout belongs to the caller (`heads --json`)
                module = plugin.load()
                pm.register(module, name=plugin.key)  # pluggy validates the hook's name and arguments
                pm.check_pending()
                impls = [impl for impl in pm.hook.register_heads.get_hookimpls() if impl.plugin is module]
                if not impls:
                    raise pluggy.PluginValidationError(module, f"{plugin} defines no hook implementation")
                for impl in impls:
                    impl.function(**dict.fromkeys(impl.argnames, register))
            if not pending:
                raise ValueError(f"{plugin}: register_heads ran but registered no head; call register(HeadClass)")
        except BaseException as error:  # plugin code: SystemExit, RecursionError... are its own failure
            if isinstance(error, KeyboardInterrupt) and interrupted:  # a real Ctrl-C: say what was running
                if hasattr(error, "add_note"):  # Python 3.11+
                    error.add_note(f"while loading {plugin}; if it hangs, set {BLOCK_ENV}={plugin.distribution}")
                raise
            if module is not None and pm.get_plugin(plugin.key) is module:
                pm.unregister(name=plugin.key)
            plugin.error = error
            if not self.settings.strict and (plugin.distribution, plugin.name) not in _warned:
                _warned.add((plugin.distribution, plugin.name))
                warnings.warn(say.failed_warning(plugin), UserWarning, stacklevel=5)
            return
        finally:
            is_open = False
        for record, override in pending.items():
            plugin.records.append(record)
            for key in (record.task_type, *record.aliases):
                claims.setdefault(key, {}).setdefault(plugin.key, (record, override))

    def _resolve(self, key: str, claimed: list[tuple[HeadRecord, bool]]) -> None:
        """Who serves ``key`` (built-ins first in ``claimed``): the one claimant; a built-in over plugins
        without override; the one plugin overriding a built-in (with a warning); else nobody."""
        records = [record for record, _ in claimed]
        builtins = [record for record in records if record.builtin]
        overriding = [record for record, override in claimed if override and not record.builtin]
        winner: HeadRecord | None = records[0]
        if len(records) == 2 and len(builtins) == len(overriding) == 1:
            winner = overriding[0]
            if key == builtins[0].task_type:
                warnings.warn(say.override_warning(key, winner, builtins[0]), UserWarning, stacklevel=5)
        elif len(records) > 1:
            keeps = len(builtins) == 1 and not overriding  # the built-in keeps its key; the claims are listed
            self._conflicts[key] = (say.conflict_error(key, records, keeps), tuple(records[1:] if keeps else records))
            winner = winner if keeps else None
        if winner is not None:
            if key == winner.task_type:
                self._heads[key] = winner
            else:
                self._aliases[key] = winner.task_type


@functools.cache
def _builtin_version() -> str:
    try:
        return importlib.metadata.version(BUILTIN_DISTRIBUTION)
    except importlib.metadata.PackageNotFoundError:
        return str(getattr(sys.modules.get("distilbert_heads"), "__version__", UNKNOWN_VERSION))


def _records(plugin: _Plugin, head_class: Any, task_types: Any, aliases: Any) -> list[HeadRecord]:
    """One record per task type of a ``register(...)`` call (checked first); its aliases name the first."""
    keys, alias_keys = say.registration_keys(plugin, head_class, task_types, aliases)
    info = (plugin.name, plugin.distribution, plugin.version, plugin.builtin)
    return [HeadRecord(key, head_class, alias_keys if i == 0 else (), *info) for i, key in enumerate(keys)]


_registry: HeadRegistry | None = None


def get_registry() -> HeadRegistry:
    """The process-wide registry, created (and the environment read) on first use."""
    global _registry
    with _lock:
        _registry = _registry or HeadRegistry()
        return _registry


def reset_registry() -> None:
    """Forget every loaded plugin; the next use re-reads the environment. For tests."""
    global _registry
    with _lock:
        _registry = None


def get_head(task_type: str | NLPTaskType) -> HeadRecord:
    """The head serving ``task_type`` in the process-wide registry (see `HeadRegistry.get_head`)."""
    return get_registry().get_head(task_type)


def list_heads() -> list[HeadRow]:
    """Every head of every plugin, plus failed and blocked plugins (see `HeadRegistry.list_heads`)."""
    return get_registry().list_heads()
