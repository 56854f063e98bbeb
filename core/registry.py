"""Discovery and lookup of task heads: the built-in modules plus third-party pluggy plugins.

A plugin is a module with ``@hookimpl def register_heads(register)`` in the entry-point group
``distilbert_heads`` (``foo = "distilbert_head_foo"``). Rules this module owns:

* Lazy, then whole. Importing it imports no plugin; the first lookup or listing loads every allowed
  plugin, so results never depend on call order. An entry-point name never shadows a task type.
* Provenance. Every `HeadRecord` names its plugin, distribution and version.
* Conflicts. A key (task type or alias) two third-party plugins claim is contested: every lookup of
  it raises `PluginConflictError` naming both, their other keys keep working. A built-in keeps its
  keys unless exactly one plugin claims one with ``register(..., override=True)`` (it wins, with a
  warning). Listing raises while any conflict exists.
* Isolation. A plugin failing to import, validate or register contributes nothing, is listed as
  failed and warns once per process. ``DISTILBERT_HEADS_STRICT_PLUGINS=1``: every lookup and listing
  raises `PluginLoadError` while any allowed plugin is failed, whatever key is asked for.
* Control. ``DISTILBERT_HEADS_LOAD_PLUGINS`` (unset: all, empty: none, ``a,b``: only these) and
  ``DISTILBERT_HEADS_BLOCK_PLUGINS`` name entry points or distributions (PEP 503 normalised); they
  are read when a registry is created.
"""

from __future__ import annotations

import contextlib
import difflib
import functools
import importlib
import importlib.metadata
import os
import re
import signal
import sys
import threading
import warnings
from collections.abc import Callable, Iterable, Iterator
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any

import pluggy

from distilbert_heads import hookspecs
from distilbert_heads.hookspecs import ENTRY_POINT_GROUP, PROJECT_NAME
from distilbert_heads.tasks import NLPTaskType, normalize_task_type

if TYPE_CHECKING:
    from distilbert_heads.head import TaskHead

BUILTIN_MODULES = tuple(f"distilbert_heads.heads.{name}" for name in ("sentiment", "ner", "qa_span", "pairwise"))
BUILTIN_DISTRIBUTION = "distilbert-heads"
LOAD_ENV = "DISTILBERT_HEADS_LOAD_PLUGINS"
BLOCK_ENV = "DISTILBERT_HEADS_BLOCK_PLUGINS"
STRICT_ENV = "DISTILBERT_HEADS_STRICT_PLUGINS"
UNKNOWN_VERSION = "unknown"  # a distribution whose metadata has no Version
_TRUE, _FALSE = frozenset({"1", "true", "yes", "on"}), frozenset({"", "0", "false", "no", "off"})
_lock = threading.RLock()  # guards loading and the process-wide registry
_warned: set[tuple[str, str]] = set()  # (distribution, plugin) whose failure was already warned about


class UnknownTaskTypeError(LookupError, ValueError):
    """No installed, loadable plugin serves the requested task type."""


class PluginLoadError(RuntimeError):
    """A plugin failed to import, validate or register (strict mode, or a lookup of its name)."""


class PluginConflictError(RuntimeError):
    """Two plugins claim the same task type or alias."""


class MissingHeadPluginError(ImportError):
    """A saved model names a head that no installed (or no unblocked) plugin provides.

    Attributes: ``task_type``, ``distribution`` and ``version`` (what provided the head when the
    model was saved), ``head_name``, and ``blocked_by`` (the environment variable blocking it, if any).
    """

    def __init__(
        self,
        message: str,
        *,
        task_type: str,
        head_name: str,
        distribution: str | None,
        version: str | None,
        blocked_by: str | None = None,
    ) -> None:
        super().__init__(message)
        self.task_type, self.head_name, self.blocked_by = task_type, head_name, blocked_by
        self.distribution, self.version = distribution, version


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
    """One listing row: a task type of a loaded plugin, or one failed or blocked plugin.

    ``status`` is ok, failed, blocked, overridden (a built-in a plugin replaced) or conflict.
    """

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
    name: str
    distribution: str
    version: str
    load: Callable[[], Any]
    builtin: bool = False
    status: str = "ok"  # ok | failed | blocked
    error: BaseException | None = None
    reason: str | None = None  # why it is blocked
    records: list[HeadRecord] = field(default_factory=list)

    def __str__(self) -> str:
        return f"plugin {self.name!r} ({self.distribution} {self.version})"


def _canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name.strip()).lower()


def _names(value: str) -> frozenset[str]:
    return frozenset(_canonical(part) for part in value.split(",") if part.strip())


def _describe(error: BaseException, limit: int = 2000) -> str:
    """``Type: message`` of a plugin's exception, safe for any exception a plugin can raise."""
    try:
        message = str(error)
    except Exception as failure:  # noqa: BLE001 - a plugin's __str__ is plugin code too
        message = f"<its message cannot be shown: str() raised {type(failure).__name__}>"
    if len(message) > limit:
        message = f"{message[:limit]}... ({len(message):,} characters)"
    text = f"{type(error).__name__}: {message}" if message else type(error).__name__
    if isinstance(error, pluggy.PluginValidationError):
        text += " (a head plugin defines `@hookimpl def register_heads(register)`, hookimpl from distilbert_heads)"
    return text.rstrip(".")  # callers add their own sentence end


@functools.cache
def _builtin_version() -> str:
    try:
        return importlib.metadata.version(BUILTIN_DISTRIBUTION)
    except importlib.metadata.PackageNotFoundError:
        return str(getattr(sys.modules.get("distilbert_heads"), "__version__", UNKNOWN_VERSION))


@contextlib.contextmanager
def _noting_sigint() -> Iterator[list[int]]:
    """Note real Ctrl-C presses while plugin code runs.

    A `KeyboardInterrupt` that a plugin raises itself is that plugin's failure, like `SystemExit`
    or any other exception; one caused by a real SIGINT must still stop the program. Signals are
    only delivered to the main thread, so elsewhere every KeyboardInterrupt comes from code.
    """
    received: list[int] = []
    previous = signal.getsignal(signal.SIGINT)

    def note(signum: int, frame: Any) -> None:
        received.append(signum)
        if callable(previous):
            previous(signum, frame)
        elif previous != signal.SIG_IGN:
            raise KeyboardInterrupt

    installed = False
    if threading.current_thread() is threading.main_thread() and previous is not None:
        with contextlib.suppress(ValueError):  # not the main interpreter
            signal.signal(signal.SIGINT, note)
            installed = True
    try:
        yield received
    finally:
        if installed:
            signal.signal(signal.SIGINT, previous)


class HeadRegistry:
    """Finds, loads and looks up head plugins. Use `get_registry()` for the process-wide one."""

    def __init__(
        self, *, builtin_modules: Iterable[str] = BUILTIN_MODULES, entry_point_group: str = ENTRY_POINT_GROUP
    ) -> None:
        self.builtin_modules, self.entry_point_group = tuple(builtin_modules), entry_point_group
        self._env = {name: os.environ.get(name) for name in (LOAD_ENV, BLOCK_ENV)}
        self._load_only = None if self._env[LOAD_ENV] is None else _names(self._env[LOAD_ENV])
        self._blocked = _names(self._env[BLOCK_ENV] or "")
        self._strict_value = os.environ.get(STRICT_ENV, "")
        self._strict = self._strict_value.strip().lower() in _TRUE
        self._plugins: list[_Plugin] | None = None
        self._loading = False
        self._heads: dict[str, HeadRecord] = {}  # task type -> the record serving it
        self._aliases: dict[str, str] = {}  # alias -> task type
        self._conflicts: dict[str, tuple[PluginConflictError, bool]] = {}  # key -> (error, lookups fail)
        self._row_status: dict[HeadRecord, tuple[str, str | None]] = {}  # overridden / conflict rows

    # -- public API ---------------------------------------------------------------------------
    def get_head(self, task_type: str | NLPTaskType) -> HeadRecord:
        """The record serving ``task_type`` (a member, its value or an alias).

        Raises `UnknownTaskTypeError` (with the nearest names), `PluginConflictError` for a
        contested key, and `PluginLoadError` in strict mode or when the plugin named like the key failed.
        """
        key = normalize_task_type(task_type)
        self._load()
        task = self._aliases.get(key, key)
        for name in (key, task):
            if self._conflicts.get(name, (None, False))[1]:
                raise self._conflicts[name][0]
        if task in self._heads:
            return self._heads[task]
        raise self._unknown(key)

    def list_heads(self, *, raise_on_conflict: bool = True) -> list[HeadRow]:
        """One row per task type and per failed or blocked plugin; raises while any conflict exists."""
        plugins = self._load()
        if raise_on_conflict and self._conflicts:
            raise self._conflicts[min(self._conflicts)][0]
        rows = []
        for plugin in plugins:
            common = {"plugin": plugin.name, "distribution": plugin.distribution, "version": plugin.version}
            if plugin.status != "ok":
                error = _describe(plugin.error) if plugin.error is not None else plugin.reason
                rows.append(HeadRow(None, (), None, status=plugin.status, error=error, **common))
            for record in plugin.records:
                status, error = self._row_status.get(record, ("ok", None))
                head_class = f"{record.head_class.__module__}:{record.head_class.__qualname__}"
                rows.append(HeadRow(record.task_type, record.aliases, head_class, status=status, error=error, **common))
        return rows

    def failed_plugins(self) -> dict[str, BaseException]:
        """Plugins that failed to load, by plugin name, with their original exception."""
        return {p.name: p.error for p in self._load(strict=False) if p.error is not None}

    def head_for_saved(
        self,
        task_type: str,
        *,
        head_name: str,
        distribution: str | None = None,
        version: str | None = None,
        plugin: str | None = None,
    ) -> HeadRecord:
        """The record for a head a saved model names, or `MissingHeadPluginError` saying what to do.

        ``distribution``, ``version`` and ``plugin`` are what provided the head when it was saved.
        A contested task type raises `PluginConflictError`, as any lookup does.
        """
        self._load()
        try:
            record = self.get_head(task_type)
        except (UnknownTaskTypeError, PluginLoadError) as error:
            raise self._missing(task_type, head_name, distribution, version, plugin, error) from error
        if distribution and _canonical(record.distribution) != _canonical(distribution):
            warnings.warn(
                f"Head {head_name!r} (task type {task_type!r}) was saved with {distribution} {version} "
                f"and is now provided by {record.distribution} {record.version} "
                f"({record.head_class.__qualname__}); its weights load only if both heads have the same "
                "layout.",
                UserWarning,
                stacklevel=2,
            )
        return record

    # -- loading ------------------------------------------------------------------------------
    def _load(self, strict: bool = True) -> list[_Plugin]:
        with _lock:
            if self._loading:
                raise RuntimeError(
                    "a plugin looked up heads while plugins were loading; do it after import, outside register_heads"
                )
            if self._plugins is None:
                self._loading = True
                try:
                    self._plugins = self._load_all()
                finally:
                    self._loading = False
        failed = [p for p in self._plugins if p.status == "failed"]
        if strict and self._strict and failed:
            lines = [f"{p} failed to load: {_describe(p.error)}" for p in failed if p.error is not None]
            raise PluginLoadError(
                f"{'; '.join(lines)}. Strict mode ({STRICT_ENV}=1) allows no failed plugin: fix or "
                f"uninstall it, or block it with {BLOCK_ENV}=<distribution>."
            ) from failed[0].error
        return self._plugins

    def _load_all(self) -> list[_Plugin]:
        plugins = self._discover()
        claims: dict[str, dict[str, tuple[HeadRecord, bool]]] = {}  # key -> plugin -> (record, override)
        pm = pluggy.PluginManager(PROJECT_NAME)
        pm.add_hookspecs(hookspecs)
        with _noting_sigint() as interrupted:
            for plugin in plugins:
                if plugin.status == "ok":
                    self._register(pm, plugin, claims, interrupted)
        for key, claimed in sorted(claims.items()):
            self._resolve(key, list(claimed.values()))
        return plugins

    def _blocked_by(self, *names: str | None) -> str | None:
        """The environment variable that keeps a plugin with any of these names from loading."""
        canonical = {_canonical(name) for name in names if name}
        if canonical & self._blocked:
            return BLOCK_ENV
        return LOAD_ENV if self._load_only is not None and not canonical & self._load_only else None

    def _discover(self) -> list[_Plugin]:
        plugins = [
            _Plugin(
                f"builtin.{m.rsplit('.', 1)[-1]}",
                BUILTIN_DISTRIBUTION,
                _builtin_version(),
                functools.partial(importlib.import_module, m),
                builtin=True,
            )
            for m in self.builtin_modules
        ]
        found = {}
        for ep in importlib.metadata.entry_points(group=self.entry_point_group):
            meta = ep.dist.metadata if ep.dist is not None else {}  # parsed once: it is most of the cost
            name, ver = meta.get("Name") or "unknown", meta.get("Version") or UNKNOWN_VERSION
            found.setdefault((ep.name, _canonical(name)), _Plugin(ep.name, name, ver, ep.load))
        self._warn_about_settings(found.values())
        for _, plugin in sorted(found.items()):
            blocked_by = self._blocked_by(plugin.name, plugin.distribution)
            if blocked_by:
                plugin.status = "blocked"
                plugin.reason = (
                    f"blocked by {BLOCK_ENV}"
                    if blocked_by == BLOCK_ENV
                    else f"not loaded: {LOAD_ENV}={self._env[LOAD_ENV]!r} does not name it"
                )
            plugins.append(plugin)
        return plugins

    def _warn_about_settings(self, installed: Iterable[_Plugin]) -> None:
        """Warn about environment values that cannot mean what the user wanted (typos, mostly)."""
        if self._strict_value.strip().lower() not in _TRUE | _FALSE:
            warnings.warn(
                f"{STRICT_ENV}={self._strict_value!r} is not one of {', '.join(sorted(_TRUE))} (strict) or "
                f"{', '.join(sorted(_FALSE - {''}))} (not strict); plugins load in the default, non-strict "
                "mode.",
                UserWarning,
                stacklevel=6,
            )
        names = {_canonical(n): f"{p.name} ({p.distribution})" for p in installed for n in (p.name, p.distribution)}
        unknown = sorted((self._load_only or frozenset()) - set(names))
        if unknown:
            warnings.warn(
                f"{LOAD_ENV}={self._env[LOAD_ENV]!r} names {', '.join(map(repr, unknown))}, which no installed "
                f"plugin is called; it loads only the built-in heads and "
                f"{', '.join(sorted({names[n] for n in self._load_only or () if n in names})) or 'no plugin'}. "
                f"Installed plugins: {', '.join(sorted(set(names.values()))) or 'none'}. Built-in heads are "
                "always loaded.",
                UserWarning,
                stacklevel=6,
            )
        builtin = sorted(n for n in self._blocked if n == BUILTIN_DISTRIBUTION or n.startswith("builtin-"))
        if builtin:
            warnings.warn(
                f"{BLOCK_ENV} names {', '.join(map(repr, builtin))}: built-in heads cannot be blocked (only "
                "plugins can); to replace a built-in, install a plugin that registers it with "
                "override=True.",
                UserWarning,
                stacklevel=6,
            )

    def _register(self, pm: pluggy.PluginManager, plugin: _Plugin, claims: dict, interrupted: list[int]) -> None:
        """Import, validate and run one plugin's hook; record its claims, or its failure."""
        pending: list[tuple[HeadRecord, bool]] = []
        owners: dict[str, type] = {}  # key -> the head class this plugin registered for it
        open_ = [True]

        def register(
            head_class: type[TaskHead],
            *,
            task_types: Iterable[str | NLPTaskType] | str | None = None,
            aliases: Iterable[str] | str | None = None,
            override: bool = False,
        ) -> None:
            if not open_[0]:
                raise RuntimeError(f"{plugin} called register() after register_heads returned")
            for record in _records(plugin, head_class, task_types, aliases):
                for key in (record.task_type, *record.aliases):
                    if owners.setdefault(key, head_class) is not head_class:
                        raise ValueError(
                            f"{plugin} registered two head classes for {key!r}: "
                            f"{owners[key].__qualname__} and {head_class.__qualname__}"
                        )
                if (record, override) not in pending:  # the same call twice registers once
                    pending.append((record, override))

        module = None
        # Two distributions may use one entry-point name; pluggy needs a name unique to this one.
        pluggy_name = f"{plugin.distribution}:{plugin.name}"
        try:
            # Plugin code may print; stdout belongs to the caller (`heads --json` must stay JSON).
            with contextlib.redirect_stdout(sys.stderr):
                module = plugin.load()
                pm.register(module, name=pluggy_name)
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
                    error.add_note(
                        f"while loading {plugin}; if it hangs, block it with {BLOCK_ENV}={plugin.distribution}"
                    )
                raise
            if module is not None and pm.get_plugin(pluggy_name) is module:
                pm.unregister(name=pluggy_name)
            plugin.status, plugin.error = "failed", error
            if not self._strict and (plugin.distribution, plugin.name) not in _warned:
                _warned.add((plugin.distribution, plugin.name))
                fix = (
                    f"Reinstall it: pip install --force-reinstall {BUILTIN_DISTRIBUTION}"
                    if plugin.builtin
                    else f"Fix or uninstall it, or block it with {BLOCK_ENV}={plugin.distribution}"
                )
                warnings.warn(
                    f"{plugin} failed to load and provides no heads: {_describe(error)}. {fix}.",
                    UserWarning,
                    stacklevel=5,
                )  # the caller of get_head / list_heads
            return
        finally:
            open_[0] = False
        for record, override in pending:
            plugin.records.append(record)
            for key in (record.task_type, *record.aliases):
                claims.setdefault(key, {}).setdefault(plugin.name, (record, override))

    def _resolve(self, key: str, claimed: list[tuple[HeadRecord, bool]]) -> None:
        claimed.sort(key=lambda claim: (not claim[0].builtin, claim[0].plugin))
        builtins = [record for record, _ in claimed if record.builtin]
        overriding = [record for record, override in claimed if override and not record.builtin]
        winner: HeadRecord | None = claimed[0][0]
        if len(claimed) > 1 and len(builtins) == 1 and len(overriding) == len(claimed) - 1 == 1:
            winner, (replaced,) = overriding[0], builtins
            if key == replaced.task_type:
                self._row_status[replaced] = ("overridden", f"replaced by {winner.plugin!r}")
                warnings.warn(
                    f"{winner.plugin!r} ({winner.distribution} {winner.version}) overrides the built-in head for task "
                    f"type {key!r} ({replaced.head_class.__qualname__} from {replaced.distribution} "
                    f"{replaced.version}). Block it with {BLOCK_ENV}={winner.distribution} to use the built-in.",
                    UserWarning,
                    stacklevel=5,
                )
        elif len(claimed) > 1:
            contested = len(builtins) != 1 or bool(overriding)  # else the built-in keeps its key
            names = " and ".join(
                f"{r.plugin!r} ({r.distribution} {r.version}, {r.head_class.__qualname__})" for r, _ in claimed
            )
            last = claimed[-1][0].distribution
            advice = (
                f"Uninstall one, or block one with {BLOCK_ENV}={last} (or ={claimed[0][0].distribution})."
                if contested
                else "To replace the built-in on purpose the plugin must call register(..., "
                f"override=True); otherwise uninstall it or set {BLOCK_ENV}={last}."
            )
            count = "two" if len(claimed) == 2 else len(claimed)
            error = PluginConflictError(f"Task type or alias {key!r} is claimed by {count} plugins: {names}. {advice}")
            self._conflicts[key] = (error, contested)
            for record, _ in claimed[0 if contested else 1 :]:
                self._row_status.setdefault(record, ("conflict", str(error)))
            winner = None if contested else winner
        if winner is None:
            return
        if key == winner.task_type:
            self._heads[key] = winner
        else:
            self._aliases[key] = winner.task_type

    # -- errors -------------------------------------------------------------------------------
    def _unknown(self, key: str) -> Exception:
        plugins = self._plugins or []
        failed = sorted((p for p in plugins if p.status == "failed"), key=lambda p: p.builtin)
        named = next((p for p in failed if not p.builtin and _canonical(p.name) == _canonical(key)), None)
        cause = named.error if named is not None else failed[0].error if failed else None
        if named is not None:
            error: Exception = PluginLoadError(
                f"Task type {key!r} would come from {named}, which failed to load: {_describe(named.error)}. Fix or "
                f"reinstall {named.distribution}, then check `distilbert-heads heads`."
            )
        else:
            close = difflib.get_close_matches(key, [*self._heads, *self._aliases, *self._conflicts], n=3)
            aliases = ", ".join(f"{a} -> {t}" for a, t in sorted(self._aliases.items())) or "none"
            lines = [
                f"No installed head serves task type {key!r}."
                + (f" Did you mean {' or '.join(map(repr, close))}?" if close else ""),
                f"Installed task types: {', '.join(sorted(self._heads)) or 'none'}.",
                f"Aliases: {aliases}.",
            ]
            if failed:
                lines.append("These plugins failed to load and might provide it:")
                lines += [f"  - {p}: {_describe(p.error)}" for p in failed]
            if blocked := [p for p in plugins if p.status == "blocked"]:
                lines += ["Not loaded:", *(f"  - {p}: {p.reason}" for p in blocked)]
            lines.append(
                "A plugin may provide it: pip install the plugin's distribution, then check `distilbert-heads heads`."
            )
            error = UnknownTaskTypeError("\n".join(lines))
        error.__cause__ = cause
        return error

    def _missing(
        self,
        task_type: str,
        head_name: str,
        distribution: str | None,
        version: str | None,
        plugin_name: str | None,
        cause: Exception,
    ) -> MissingHeadPluginError:
        names = {_canonical(n) for n in (distribution, plugin_name) if n}
        state = next(
            (
                p
                for p in self._plugins or []
                if not p.builtin and names & {_canonical(p.name), _canonical(p.distribution)}
            ),
            None,
        )
        blocked_by = self._blocked_by(distribution, plugin_name) if names else None
        requirement = pip_requirement(distribution, version) if distribution else None
        install = f"pip install {requirement or '<the plugin that provides it>'}"
        known = version if version and version != UNKNOWN_VERSION else "(version unknown)"
        origin = (
            f"it was provided by {distribution} {known} when saved"
            if distribution
            else "the file does not record which distribution provided it"
        )
        if state is not None and state.error is not None:
            lines = [
                (
                    f"Cannot load head {head_name!r}: the plugin that provides task type {task_type!r} is "
                    f"installed but failed to load ({origin}): {_describe(state.error)}"
                ),
                f"Fix or reinstall it: {install.replace('pip install', 'pip install --force-reinstall')}",
            ]
        else:
            lines = [
                f"Cannot load head {head_name!r}: no available plugin provides task type {task_type!r} ({origin})."
            ]
            if blocked_by:
                name = distribution or plugin_name
                fix = f"remove {name} from it" if blocked_by == BLOCK_ENV else f"add {name} to it"
                lines.append(
                    f"Loading {name} is blocked by the environment variable "
                    f"{blocked_by}={self._env[blocked_by] or ''!r}: unset {blocked_by} or {fix} "
                    f"(and {install} if it is not installed)."
                )
            else:
                lines.append(f"Install it with: {install}")
        lines.append(f"Registry said: {cause}")
        return MissingHeadPluginError(
            "\n".join(lines),
            task_type=task_type,
            head_name=head_name,
            distribution=distribution,
            version=version,
            blocked_by=blocked_by,
        )


def pip_requirement(distribution: str, version: str | None) -> str:
    """``distribution==version`` for a pip command, or just the distribution when the version is unknown."""
    return f"{distribution}=={version}" if version and version != UNKNOWN_VERSION else distribution


def _records(plugin: _Plugin, head_class: Any, task_types: Any, aliases: Any) -> list[HeadRecord]:
    """Validate one ``register(...)`` call; its aliases name the first task type."""
    from distilbert_heads.head import TaskHead, check_head_class  # imports keras: only once a plugin registers

    if not (isinstance(head_class, type) and issubclass(head_class, TaskHead)):
        what = (
            f"the class {head_class.__module__}.{head_class.__qualname__}"
            if isinstance(head_class, type)
            else f"a {type(head_class).__name__} object"
        )  # not its repr: that is plugin code too
        raise TypeError(
            f"{plugin} registered {what}, which is not a subclass of distilbert_heads.TaskHead; "
            "register(HeadClass) takes the head class itself."
        )
    try:
        check_head_class(head_class)
    except ValueError as error:
        raise ValueError(f"{plugin} registered {head_class.__qualname__}, whose {error}") from error
    raw = (
        head_class.task_types if task_types is None else task_types,
        head_class.aliases if aliases is None else aliases,
    )
    try:
        keys, alias_keys = (
            tuple(dict.fromkeys(map(normalize_task_type, [n] if isinstance(n, str) else n))) for n in raw
        )
    except (TypeError, ValueError) as error:
        raise ValueError(f"{plugin} registered {head_class.__qualname__} with a bad name: {error}") from error
    if not keys:
        raise ValueError(
            f"{plugin} registered {head_class.__qualname__} without task types: set the class attribute "
            "task_types = (...) or pass register(..., task_types=[...])."
        )
    return [
        HeadRecord(
            key,
            head_class,
            alias_keys if i == 0 else (),
            plugin.name,
            plugin.distribution,
            plugin.version,
            plugin.builtin,
        )
        for i, key in enumerate(keys)
    ]


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
