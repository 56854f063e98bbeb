"""Discovery and lookup of task heads: built-ins plus third-party pluggy plugins.

A plugin is a module with ``@hookimpl def register_heads(register)``. The four built-in
modules (`BUILTIN_MODULES`) are always loaded; third-party plugins are found through the
entry-point group ``distilbert_heads``::

    [project.entry-points.distilbert_heads]
    foo = "distilbert_head_foo"

Rules this module owns:

* Lazy. Importing it imports no plugin. A lookup loads the built-ins, then (only if the
  key is still unknown) third-party plugins one by one until one provides it: first those
  whose entry-point name is the key, then the rest in sorted order. Listing loads all.
  An entry point whose name is the key is loaded even when a built-in serves the key, so an
  overriding plugin named after the task type it replaces always takes effect.
* Provenance. Every `HeadRecord` names its plugin, distribution and version.
* Conflicts. Two plugins claiming one task type or alias raise `PluginConflictError` when
  the second one loads (in a lookup or a listing): that whole call fails, the second plugin
  is recorded as failed (it registers nothing) and every later listing raises again. Between
  two third-party plugins the key stays *conflicted*: every later lookup of it raises too,
  instead of silently picking a winner. (A lookup stops at the first plugin providing a key,
  so a conflict shows only once the second plugin loads; ``distilbert-heads heads`` loads all.)
  Replacing a built-in needs ``register(..., override=True)``: the plugin then wins, with a
  `UserWarning`; without it the plugin conflicts and the built-in keeps the key.
* Isolation. A plugin that fails to import, to validate (a misspelled hook) or to register
  is recorded with its exception and contributes nothing; other heads keep working.
  ``DISTILBERT_HEADS_STRICT_PLUGINS=1`` raises `PluginLoadError` instead.
* Control. ``DISTILBERT_HEADS_LOAD_PLUGINS`` (unset: all third-party plugins, empty: none,
  comma list: only those distributions or entry-point names) and
  ``DISTILBERT_HEADS_BLOCK_PLUGINS`` (never load these). Both are read when a registry is
  created; names match case-insensitively with ``-``/``_``/``.`` treated alike (PEP 503).
"""

from __future__ import annotations

import importlib
import importlib.metadata
import os
import re
import sys
import threading
import warnings
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from types import ModuleType
from typing import TYPE_CHECKING, Any

import pluggy

from distilbert_heads import hookspecs
from distilbert_heads.hookspecs import ENTRY_POINT_GROUP, PROJECT_NAME
from distilbert_heads.tasks import NLPTaskType, normalize_task_type

if TYPE_CHECKING:
    from distilbert_heads.head import TaskHead

__all__ = [
    "BLOCK_ENV",
    "BUILTIN_DISTRIBUTION",
    "BUILTIN_MODULES",
    "ENTRY_POINT_GROUP",
    "LOAD_ENV",
    "STRICT_ENV",
    "HeadRecord",
    "HeadRegistry",
    "PluginConflictError",
    "PluginLoadError",
    "UnknownTaskTypeError",
    "get_head",
    "get_registry",
    "list_heads",
    "reset_registry",
]

BUILTIN_MODULES: tuple[str, ...] = (
    "distilbert_heads.heads.sentiment",
    "distilbert_heads.heads.ner",
    "distilbert_heads.heads.qa_span",
    "distilbert_heads.heads.pairwise",
)
BUILTIN_DISTRIBUTION = "distilbert-heads"
LOAD_ENV = "DISTILBERT_HEADS_LOAD_PLUGINS"
BLOCK_ENV = "DISTILBERT_HEADS_BLOCK_PLUGINS"
STRICT_ENV = "DISTILBERT_HEADS_STRICT_PLUGINS"
HOOK_NAME = "register_heads"


class UnknownTaskTypeError(LookupError, ValueError):
    """No installed, loadable plugin serves the requested task type."""


class PluginLoadError(RuntimeError):
    """A plugin failed to import, validate or register (strict mode, or a lookup that needed it)."""


class PluginConflictError(RuntimeError):
    """Two plugins claim the same task type or alias."""


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


def _canonical_name(name: str) -> str:
    """PEP 503 normalisation, used to compare distribution and entry-point names."""
    return re.sub(r"[-_.]+", "-", name.strip()).lower()


def _parse_name_list(value: str) -> frozenset[str]:
    return frozenset(_canonical_name(part) for part in value.split(",") if part.strip())


def _describe_error(error: BaseException) -> str:
    return f"{type(error).__name__}: {error}"


def _builtin_version() -> str:
    try:
        return importlib.metadata.version(BUILTIN_DISTRIBUTION)
    except importlib.metadata.PackageNotFoundError:
        return str(getattr(sys.modules.get("distilbert_heads"), "__version__", "unknown"))


@dataclass(eq=False)
class _Plugin:
    """Book-keeping for one plugin, whether loaded or not."""

    name: str
    distribution: str
    version: str
    builtin: bool
    target: str  # module to import, e.g. "distilbert_head_foo"
    entry_point: importlib.metadata.EntryPoint | None = None
    status: str = "pending"  # pending | ok | failed | blocked
    reason: str | None = None  # why a plugin is blocked
    error: BaseException | None = None
    records: list[HeadRecord] = field(default_factory=list)

    @property
    def label(self) -> str:
        return f"plugin {self.name!r} ({self.distribution} {self.version})"

    def matches(self, names: frozenset[str]) -> bool:
        return _canonical_name(self.name) in names or _canonical_name(self.distribution) in names


class HeadRegistry:
    """Finds, loads and looks up head plugins. Use `get_registry()` for the process-wide one.

    Environment variables are read here, at creation; third-party entry points are read on
    first need and imported one at a time, only when a lookup or listing needs them.
    """

    def __init__(
        self,
        *,
        builtin_modules: Sequence[str] = BUILTIN_MODULES,
        entry_point_group: str = ENTRY_POINT_GROUP,
    ) -> None:
        self.builtin_modules = tuple(builtin_modules)
        self.entry_point_group = entry_point_group
        load = os.environ.get(LOAD_ENV)
        self._load_only: frozenset[str] | None = None if load is None else _parse_name_list(load)
        self._load_env_value = load
        self._blocked = _parse_name_list(os.environ.get(BLOCK_ENV, ""))
        self._strict = os.environ.get(STRICT_ENV, "").strip().lower() in {"1", "true", "yes", "on"}

        self._pm = pluggy.PluginManager(PROJECT_NAME)
        self._pm.add_hookspecs(hookspecs)
        self._lock = threading.RLock()
        self._builtins: list[_Plugin] | None = None
        self._third_party: list[_Plugin] | None = None
        self._heads: dict[str, HeadRecord] = {}  # canonical task type -> winning record
        self._aliases: dict[str, str] = {}  # alias -> canonical task type
        self._overridden: list[HeadRecord] = []
        self._conflicts: list[PluginConflictError] = []  # every conflict seen; listing raises the first
        self._conflicted_keys: dict[str, PluginConflictError] = {}  # keys claimed by two third-party plugins

    # -- public API -------------------------------------------------------------------
    def get_head(self, task_type: str | NLPTaskType) -> HeadRecord:
        """Return the head record serving ``task_type`` (a member, its value or an alias).

        Raises `UnknownTaskTypeError` when nothing installed serves it (chaining a failed
        plugin's exception when one might have), `PluginLoadError` when the plugin named
        after the key failed to load (or, strict mode, any plugin it loads fails), and
        `PluginConflictError` when a plugin this lookup loads conflicts with one already
        loaded, or when two third-party plugins claim the key: a conflicted key never
        resolves, so the choice of head is never an accident of load order.
        """
        key = normalize_task_type(task_type)
        with self._lock:
            self._load_builtins()
            # Entry points named after the key (or the task type a built-in alias names) first:
            # the convention `foo = "distilbert_head_foo"`, and how an override of a built-in is seen.
            named = {_canonical_name(key), _canonical_name(self._aliases.get(key, key))}
            for plugin in self._third_party_plugins():
                if _canonical_name(plugin.name) in named:
                    self._load(plugin)
            record = self._find(key)
            if record is not None:
                return record
            for plugin in sorted(self._third_party_plugins(), key=lambda p: (p.name, p.distribution)):
                self._load(plugin)
                record = self._find(key)
                if record is not None:
                    return record
            raise self._unknown(key)

    def list_heads(self, *, raise_on_conflict: bool = True) -> list[dict[str, Any]]:
        """Load every plugin and return one row per task type and per failed or blocked plugin.

        Row keys: task_type, aliases, head_class (``"module:Qualname"``), plugin,
        distribution, version, status (``ok``, ``failed``, ``blocked``, ``overridden``) and
        error. Raises `PluginConflictError` while any conflict exists unless
        ``raise_on_conflict=False`` (the CLI uses that to still show the table), and
        `PluginLoadError` in strict mode when any plugin failed.
        """
        with self._lock:
            self._load_builtins()
            for plugin in sorted(self._third_party_plugins(), key=lambda p: (p.name, p.distribution)):
                try:
                    self._load(plugin)
                except PluginConflictError:
                    pass  # recorded; raised below once every plugin is loaded
            if self._strict:
                for plugin in self._all_plugins():
                    if plugin.status == "failed" and not isinstance(plugin.error, PluginConflictError):
                        assert plugin.error is not None
                        raise PluginLoadError(self._failure_message(plugin)) from plugin.error
            if self._conflicts and raise_on_conflict:
                raise self._conflicts[0]
            return self._rows()

    def failed_plugins(self) -> dict[str, BaseException]:
        """Plugins loaded so far that failed, by plugin name, with their original exception."""
        with self._lock:
            return {p.name: p.error for p in self._all_plugins() if p.status == "failed" and p.error is not None}

    # -- loading ----------------------------------------------------------------------
    def _all_plugins(self) -> list[_Plugin]:
        return [*(self._builtins or []), *(self._third_party or [])]

    def _load_builtins(self) -> None:
        if self._builtins is None:
            version = _builtin_version()
            self._builtins = [
                _Plugin(
                    name=f"builtin.{module.rsplit('.', 1)[-1]}",
                    distribution=BUILTIN_DISTRIBUTION,
                    version=version,
                    builtin=True,
                    target=module,
                )
                for module in self.builtin_modules
            ]
        for plugin in self._builtins:  # a no-op for those already loaded
            self._load(plugin)

    def _third_party_plugins(self) -> list[_Plugin]:
        """Read the entry points (metadata only, nothing imported) and apply LOAD/BLOCK."""
        if self._third_party is not None:
            return self._third_party
        plugins: list[_Plugin] = []
        seen: set[tuple[str, str]] = set()
        for entry_point in importlib.metadata.entry_points(group=self.entry_point_group):
            dist = entry_point.dist
            dist_name = (dist.name if dist is not None else None) or "unknown"
            ident = (_canonical_name(dist_name), entry_point.name)
            if ident in seen:
                continue
            seen.add(ident)
            plugin = _Plugin(
                name=entry_point.name,
                distribution=dist_name,
                version=(dist.version if dist is not None else None) or "unknown",
                builtin=False,
                target=entry_point.value,
                entry_point=entry_point,
            )
            if plugin.matches(self._blocked):
                plugin.status, plugin.reason = "blocked", f"blocked by {BLOCK_ENV}"
            elif self._load_only is not None and not plugin.matches(self._load_only):
                plugin.status = "blocked"
                plugin.reason = f"not loaded: {LOAD_ENV}={self._load_env_value!r} does not name it"
            plugins.append(plugin)
        self._third_party = plugins
        return plugins

    def _load(self, plugin: _Plugin) -> None:
        """Import, validate and register one pending plugin; record a failure, raise a conflict."""
        if plugin.status != "pending":
            return
        module: ModuleType | None = None
        try:
            if plugin.entry_point is not None:
                module = plugin.entry_point.load()
            else:
                module = self._import_builtin(plugin)
            self._validate(plugin, module)
            self._call_register_heads(plugin, module)
        except PluginConflictError as error:
            self._unregister(plugin, module)
            self._record_failure(plugin, error, strict_raise=False)
            raise
        except Exception as error:
            self._unregister(plugin, module)
            self._record_failure(plugin, error)
            return
        plugin.status = "ok"

    @staticmethod
    def _import_builtin(plugin: _Plugin) -> ModuleType:
        try:
            return importlib.import_module(plugin.target)
        except ModuleNotFoundError as error:
            if error.name != plugin.target:
                raise
            raise ModuleNotFoundError(
                f"built-in head module {plugin.target!r} is missing from {plugin.distribution} {plugin.version}; "
                f"reinstall it (pip install --force-reinstall {plugin.distribution})",
                name=plugin.target,
            ) from error

    def _validate(self, plugin: _Plugin, module: Any) -> None:
        """Register the module with pluggy and let it check the hook names and arguments."""
        if self._pm.has_plugin(plugin.name):
            raise ValueError(
                f"{plugin.label}: another loaded plugin already uses the name {plugin.name!r}; entry-point "
                f"names must be unique. Block one with {BLOCK_ENV}=<distribution>."
            )
        try:
            self._pm.register(module, name=plugin.name)
            self._pm.check_pending()
        except pluggy.PluginValidationError as error:
            raise pluggy.PluginValidationError(
                module,
                f"{plugin.label} is not a valid head plugin: {error}. The only hook is "
                f"`@hookimpl def {HOOK_NAME}(register)` (from distilbert_heads import hookimpl); "
                "check the function's name and argument.",
            ) from error
        if not self._pm.get_hookcallers(module):
            raise pluggy.PluginValidationError(
                module,
                f"{plugin.label} ({plugin.target}) defines no hook implementation: expected "
                f"`@hookimpl def {HOOK_NAME}(register)` with `from distilbert_heads import hookimpl`.",
            )

    def _unregister(self, plugin: _Plugin, module: Any) -> None:
        if module is not None and self._pm.get_plugin(plugin.name) is module:
            self._pm.unregister(name=plugin.name)

    def _call_register_heads(self, plugin: _Plugin, module: Any) -> None:
        """Run this plugin's hook alone, collect its heads, then commit them all or none."""
        pending: list[tuple[HeadRecord, bool]] = []
        open_for_registration = True

        def register(
            head_class: type[TaskHead],
            *,
            task_types: Iterable[str | NLPTaskType] | str | NLPTaskType | None = None,
            aliases: Iterable[str] | str | None = None,
            override: bool = False,
        ) -> None:
            if not open_for_registration:
                raise RuntimeError(f"{plugin.label} called register() after {HOOK_NAME} returned")
            pending.extend((record, override) for record in self._make_records(plugin, head_class, task_types, aliases))

        others = [p for p in self._pm.get_plugins() if p is not module]
        try:
            self._pm.subset_hook_caller(HOOK_NAME, remove_plugins=others)(register=register)
        finally:
            open_for_registration = False
        if not pending:
            raise ValueError(f"{plugin.label}: {HOOK_NAME} ran but registered no head; call register(HeadClass)")
        self._commit(plugin, pending)

    def _make_records(
        self,
        plugin: _Plugin,
        head_class: Any,
        task_types: Iterable[str | NLPTaskType] | str | NLPTaskType | None,
        aliases: Iterable[str] | str | None,
    ) -> list[HeadRecord]:
        from distilbert_heads.head import TaskHead  # imports keras: only once a plugin registers

        if not (isinstance(head_class, type) and issubclass(head_class, TaskHead)):
            raise TypeError(
                f"{plugin.label} registered {head_class!r}, which is not a subclass of "
                "distilbert_heads.TaskHead; register(HeadClass) takes the head class itself."
            )
        raw_types = head_class.task_types if task_types is None else task_types
        raw_aliases = head_class.aliases if aliases is None else aliases
        if isinstance(raw_types, str):
            raw_types = (raw_types,)
        if isinstance(raw_aliases, str):
            raw_aliases = (raw_aliases,)
        try:
            keys = tuple(dict.fromkeys(normalize_task_type(t) for t in raw_types))
            alias_keys = tuple(dict.fromkeys(normalize_task_type(a) for a in raw_aliases))
        except (TypeError, ValueError) as error:
            raise ValueError(f"{plugin.label} registered {head_class.__qualname__} with a bad name: {error}") from error
        if not keys:
            raise ValueError(
                f"{plugin.label} registered {head_class.__qualname__} without task types: set the class "
                "attribute task_types = (...) or pass register(..., task_types=[...])."
            )
        return [
            HeadRecord(
                task_type=key,
                head_class=head_class,
                aliases=alias_keys if index == 0 else (),  # aliases name the first task type
                plugin=plugin.name,
                distribution=plugin.distribution,
                version=plugin.version,
                builtin=plugin.builtin,
            )
            for index, key in enumerate(keys)
        ]

    def _commit(self, plugin: _Plugin, pending: list[tuple[HeadRecord, bool]]) -> None:
        """Check every key of this plugin against what is registered, then install them."""
        claimed: dict[str, HeadRecord] = {}  # key (task type or alias) -> record within this plugin
        replaced: list[HeadRecord] = []
        for record, override in pending:
            for key in (record.task_type, *record.aliases):
                if key in claimed and claimed[key].head_class is not record.head_class:
                    raise self._conflict(key, claimed[key], record)
                claimed[key] = record
                owner = self._owner(key)
                if owner is None:
                    continue
                if owner.builtin and not record.builtin and override:
                    if key == owner.task_type and owner not in replaced:
                        replaced.append(owner)
                    continue
                raise self._conflict(key, owner, record)

        for owner in replaced:
            winner = next(r for r, _ in pending if owner.task_type in (r.task_type, *r.aliases))
            warnings.warn(
                f"{winner.plugin!r} ({winner.distribution} {winner.version}) overrides the built-in head for "
                f"task type {owner.task_type!r} ({owner.head_class.__qualname__} from {owner.distribution} "
                f"{owner.version}). Block it with {BLOCK_ENV}={winner.distribution} to use the built-in.",
                UserWarning,
                stacklevel=2,
            )
            # The built-in's aliases keep pointing at the task type, which now resolves to the winner.
            self._overridden.append(owner)
        for record, _ in pending:
            self._heads[record.task_type] = record
            for alias in record.aliases:
                self._aliases[alias] = record.task_type
            plugin.records.append(record)

    def _owner(self, key: str) -> HeadRecord | None:
        if key in self._heads:
            return self._heads[key]
        if key in self._aliases:
            return self._heads.get(self._aliases[key])
        return None

    def _conflict(self, key: str, first: HeadRecord, second: HeadRecord) -> PluginConflictError:
        if first.builtin and not second.builtin:
            advice = (
                f"To replace the built-in on purpose the plugin must call register(..., override=True); "
                f"otherwise uninstall it or set {BLOCK_ENV}={second.distribution}."
            )
        else:
            advice = f"Uninstall one, or block one with {BLOCK_ENV}={second.distribution} (or ={first.distribution})."
        error = PluginConflictError(
            f"Task type or alias {key!r} is claimed by two plugins: {first.plugin!r} "
            f"({first.distribution} {first.version}, {first.head_class.__qualname__}) and {second.plugin!r} "
            f"({second.distribution} {second.version}, {second.head_class.__qualname__}). {advice}"
        )
        self._conflicts.append(error)
        if not first.builtin:  # a built-in keeps its key; between two plugins, neither gets it
            self._conflicted_keys[key] = error
        return error

    def _record_failure(self, plugin: _Plugin, error: BaseException, *, strict_raise: bool = True) -> None:
        plugin.status = "failed"
        plugin.error = error
        if self._strict and strict_raise:
            raise PluginLoadError(self._failure_message(plugin)) from error

    def _failure_message(self, plugin: _Plugin) -> str:
        return (
            f"{plugin.label} failed to load: {_describe_error(plugin.error)}"  # type: ignore[arg-type]
            if plugin.error is not None
            else f"{plugin.label} failed to load"
        )

    # -- lookup -----------------------------------------------------------------------
    def _find(self, key: str) -> HeadRecord | None:
        canonical = self._aliases.get(key, key)
        for name in (key, canonical):
            if name in self._conflicted_keys:
                raise self._conflicted_keys[name]
        return self._heads.get(canonical)

    def _unknown(self, key: str) -> Exception:
        """The error for a key no loaded plugin serves, chaining the likely culprit if any."""
        plugins = self._all_plugins()
        for plugin in plugins:
            if plugin.status == "failed" and not plugin.builtin and _canonical_name(plugin.name) == _canonical_name(key):
                error = PluginLoadError(
                    f"Task type {key!r} would come from {plugin.label}, which failed to load: "
                    f"{_describe_error(plugin.error)}. Fix or reinstall {plugin.distribution}, "  # type: ignore[arg-type]
                    "then check `distilbert-heads heads`."
                )
                error.__cause__ = plugin.error
                return error
        types = ", ".join(sorted(self._heads)) or "none"
        aliases = ", ".join(f"{a} -> {t}" for a, t in sorted(self._aliases.items())) or "none"
        lines = [
            f"No installed head serves task type {key!r}.",
            f"Installed task types: {types}.",
            f"Aliases: {aliases}.",
        ]
        failed = [p for p in plugins if p.status == "failed"]
        failed.sort(key=lambda p: p.builtin)  # a third-party failure is the likelier culprit
        if failed:
            lines.append("These plugins failed to load and might provide it:")
            for p in failed:
                described = _describe_error(p.error)  # type: ignore[arg-type]
                lines.append(f"  - {described}" if p.label in described else f"  - {p.label}: {described}")
        blocked = [p for p in plugins if p.status == "blocked"]
        if blocked:
            lines.append("Not loaded:")
            lines.extend(f"  - {p.label}: {p.reason}" for p in blocked)
        lines.append(
            "A plugin may provide it: pip install the plugin's distribution, then check `distilbert-heads heads`."
        )
        error = UnknownTaskTypeError("\n".join(lines))
        if failed:
            error.__cause__ = failed[0].error
        return error

    # -- listing ----------------------------------------------------------------------
    def _rows(self) -> list[dict[str, Any]]:
        rows: list[dict[str, Any]] = []
        overridden = {id(r) for r in self._overridden}
        for plugin in [*(self._builtins or []), *sorted(self._third_party or [], key=lambda p: p.name)]:
            base = {"plugin": plugin.name, "distribution": plugin.distribution, "version": plugin.version}
            if plugin.status in {"failed", "blocked"}:
                error = _describe_error(plugin.error) if plugin.error is not None else plugin.reason
                rows.append(
                    {"task_type": None, "aliases": [], "head_class": None, **base, "status": plugin.status, "error": error}
                )
                continue
            for record in plugin.records:
                rows.append(
                    {
                        "task_type": record.task_type,
                        "aliases": list(record.aliases),
                        "head_class": f"{record.head_class.__module__}:{record.head_class.__qualname__}",
                        **base,
                        "status": "overridden" if id(record) in overridden else "ok",
                        "error": None,
                    }
                )
        return rows


_registry: HeadRegistry | None = None
_registry_lock = threading.Lock()


def get_registry() -> HeadRegistry:
    """The process-wide registry, created (and the environment read) on first use."""
    global _registry
    with _registry_lock:
        if _registry is None:
            _registry = HeadRegistry()
        return _registry


def reset_registry() -> None:
    """Forget every loaded plugin; the next use re-reads the environment. For tests."""
    global _registry
    with _registry_lock:
        _registry = None


def get_head(task_type: str | NLPTaskType) -> HeadRecord:
    """Look up the head serving ``task_type`` in the process-wide registry (see `HeadRegistry.get_head`)."""
    return get_registry().get_head(task_type)


def list_heads() -> list[dict[str, Any]]:
    """Every head of every plugin, plus failed and blocked plugins (see `HeadRegistry.list_heads`)."""
    return get_registry().list_heads()

