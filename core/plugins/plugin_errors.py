"""Every error and warning text of the head registry, and the diagnostics for saved heads whose plugin is
missing, blocked, broken or another release. `distilbert_heads.plugins.registry` holds the mechanism and
re-exports these names; nothing here imports it.
"""

from __future__ import annotations

import difflib
import re
import warnings
from collections.abc import Iterable, Iterator, Mapping
from typing import TYPE_CHECKING, Any

import pluggy

from distilbert_heads.plugins.hookspecs import BLOCK_ENV, LOAD_ENV, STRICT_ENV
from distilbert_heads.tasks import normalize_task_type

if TYPE_CHECKING:
    from distilbert_heads.plugins.registry import HeadRecord, HeadRegistry, PluginSettings, _Plugin

UNKNOWN_VERSION = "unknown"  # a distribution whose metadata has no Version
BUILTIN_DISTRIBUTION = "distilbert-heads"
TRUE, FALSE = frozenset({"1", "true", "yes", "on"}), frozenset({"", "0", "false", "no", "off"})


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


def canonical(name: str) -> str:
    """A distribution or plugin name as PEP 503 compares them."""
    return re.sub(r"[-_.]+", "-", name.strip()).lower()


def pip_requirement(distribution: str, version: str | None) -> str:
    """``distribution==version`` for a pip command, or just the distribution when the version is unknown."""
    return f"{distribution}=={version}" if version and version != UNKNOWN_VERSION else distribution


def describe(error: BaseException, limit: int = 2000) -> str:
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


# -- the registry's own messages ---------------------------------------------------------------
def setting_problems(settings: PluginSettings, installed: Iterable[_Plugin]) -> Iterator[str]:
    """Sentences about control-variable values that cannot mean what the user wanted (typos, mostly)."""
    values, load_only, strict = settings.values, settings.load_only, settings.values[STRICT_ENV] or ""
    if strict.strip().lower() not in TRUE | FALSE:
        yield (
            f"{STRICT_ENV}={strict!r} is not one of {', '.join(sorted(TRUE))} (strict) or "
            f"{', '.join(sorted(FALSE - {''}))} (not strict); plugins load in the default, non-strict mode."
        )
    known = {canonical(n): f"{p.name} ({p.distribution})" for p in installed for n in (p.name, p.distribution)}
    if unknown := sorted((load_only or set()) - set(known)):
        loads = sorted({known[n] for n in load_only or () if n in known})
        yield (
            f"{LOAD_ENV}={values[LOAD_ENV]!r} names {', '.join(map(repr, unknown))}, which no installed plugin is "
            f"called; it loads only the built-in heads and {', '.join(loads) or 'no plugin'}. Installed plugins: "
            f"{', '.join(sorted(set(known.values()))) or 'none'}. Built-in heads are always loaded."
        )
    if builtin := sorted(n for n in settings.blocked if n == BUILTIN_DISTRIBUTION or n.startswith("builtin-")):
        yield (
            f"{BLOCK_ENV} names {', '.join(map(repr, builtin))}: built-in heads cannot be blocked (only plugins "
            "can); to replace a built-in, install a plugin that registers it with override=True."
        )


def blocked_reason(variable: str, load_value: str | None) -> str:
    return (
        f"blocked by {BLOCK_ENV}"
        if variable == BLOCK_ENV
        else f"not loaded: {LOAD_ENV}={load_value!r} does not name it"
    )


def registration_keys(plugin: _Plugin, head_class: Any, task_types: Any, aliases: Any) -> tuple[tuple[str, ...], ...]:
    """The checked task types and aliases of one ``register(...)`` call, or the error that fails the plugin."""
    from distilbert_heads.plugins.head import TaskHead, check_head_class  # imports keras: only once a plugin registers

    if not (isinstance(head_class, type) and issubclass(head_class, TaskHead)):
        what = (  # not its repr: that is plugin code too
            f"the class {head_class.__module__}.{head_class.__qualname__}"
            if isinstance(head_class, type)
            else f"a {type(head_class).__name__} object"
        )
        raise TypeError(
            f"{plugin} registered {what}, which is not a subclass of distilbert_heads.TaskHead; "
            "register(HeadClass) takes the head class itself."
        )
    try:
        check_head_class(head_class)
        names = [
            head_class.task_types if task_types is None else task_types,
            head_class.aliases if aliases is None else aliases,
        ]
        keys, alias_keys = (
            tuple(dict.fromkeys(map(normalize_task_type, [n] if isinstance(n, str) else n))) for n in names
        )
    except (TypeError, ValueError) as error:
        raise ValueError(f"{plugin} registered {head_class.__qualname__}, whose {error}") from error
    if not keys:
        raise ValueError(
            f"{plugin} registered {head_class.__qualname__} without task types: set the class "
            "attribute task_types = (...) or pass register(..., task_types=[...])."
        )
    return keys, alias_keys


def failed_warning(plugin: _Plugin) -> str:
    fix = (
        f"Reinstall it: pip install --force-reinstall {BUILTIN_DISTRIBUTION}"
        if plugin.builtin
        else f"Fix or uninstall it, or block it with {BLOCK_ENV}={plugin.distribution}"
    )
    return f"{plugin} failed to load and provides no heads: {describe(plugin.error)}. {fix}."  # type: ignore[arg-type]


def override_warning(key: str, winner: HeadRecord, replaced: HeadRecord) -> str:
    return (
        f"{winner.plugin!r} ({winner.distribution} {winner.version}) overrides the built-in head for task type "
        f"{key!r} ({replaced.head_class.__qualname__} from {replaced.distribution} {replaced.version}). Block it "
        f"with {BLOCK_ENV}={winner.distribution} to use the built-in."
    )


def conflict_error(key: str, records: list[HeadRecord], builtin_keeps: bool) -> PluginConflictError:
    names = " and ".join(f"{r.plugin!r} ({r.distribution} {r.version}, {r.head_class.__qualname__})" for r in records)
    advice = (
        "To replace the built-in on purpose the plugin must call register(..., override=True); otherwise "
        f"uninstall it or set {BLOCK_ENV}={records[-1].distribution}."
        if builtin_keeps
        else f"Uninstall one, or block one with {BLOCK_ENV}={records[-1].distribution} (or ={records[0].distribution})."
    )
    count = "two" if len(records) == 2 else len(records)
    return PluginConflictError(f"Task type or alias {key!r} is claimed by {count} plugins: {names}. {advice}")


def strict_error(failed: list[_Plugin]) -> PluginLoadError:
    error = PluginLoadError(
        "; ".join(f"{p} failed to load: {describe(p.error)}" for p in failed)  # type: ignore[arg-type]
        + f". Strict mode ({STRICT_ENV}=1) allows no failed plugin: fix or uninstall it, or block it with "
        f"{BLOCK_ENV}=<distribution>."
    )
    error.__cause__ = failed[0].error
    return error


def unknown_task_type(
    key: str, plugins: list[_Plugin], heads: Mapping[str, Any], aliases: Mapping[str, str], other: Iterable[str]
) -> Exception:
    """`PluginLoadError` when a failed plugin is named ``key``; else `UnknownTaskTypeError` naming what is
    installed, the nearest names (among ``heads``, ``aliases`` and ``other``), failed and blocked plugins."""
    failed = sorted((p for p in plugins if p.error is not None), key=lambda p: p.builtin)
    named = next((p for p in failed if not p.builtin and canonical(p.name) == canonical(key)), None)
    if named is not None:
        error: Exception = PluginLoadError(
            f"Task type {key!r} would come from {named}, which failed to load: {describe(named.error)}. "  # type: ignore[arg-type]
            f"Fix or reinstall {named.distribution}, then check `distilbert-heads heads`."
        )
        error.__cause__ = named.error
        return error
    close = difflib.get_close_matches(key, [*heads, *aliases, *other], n=3)
    lines = [
        f"No installed head serves task type {key!r}."
        + (f" Did you mean {' or '.join(map(repr, close))}?" if close else ""),
        f"Installed task types: {', '.join(sorted(heads)) or 'none'}.",
        f"Aliases: {', '.join(f'{a} -> {t}' for a, t in sorted(aliases.items())) or 'none'}.",
    ]
    if failed:
        lines += ["These plugins failed to load and might provide it:"]
        lines += [f"  - {p}: {describe(p.error)}" for p in failed]  # type: ignore[arg-type]
    if blocked := [p for p in plugins if p.reason]:
        lines += ["Not loaded:", *(f"  - {p}: {p.reason}" for p in blocked)]
    lines.append("A plugin may provide it: pip install the plugin's distribution, then check `distilbert-heads heads`.")
    error = UnknownTaskTypeError("\n".join(lines))
    error.__cause__ = failed[0].error if failed else None
    return error


# -- saved heads -------------------------------------------------------------------------------
def head_for_saved(
    registry: HeadRegistry,
    task_type: str,
    *,
    head_name: str,
    distribution: str | None = None,
    version: str | None = None,
    plugin: str | None = None,
) -> HeadRecord:
    """`HeadRegistry.head_for_saved`: the record for a head a saved model names (saved with
    ``distribution``, ``version``, ``plugin``), or `MissingHeadPluginError` saying what to do. A contested
    task type raises `PluginConflictError`, as any lookup does; another distribution now serving it warns."""
    try:
        record = registry.get_head(task_type)
    except (UnknownTaskTypeError, PluginLoadError) as error:
        names = {canonical(n) for n in (distribution, plugin) if n}
        mine = [p for p in registry.load() if not p.builtin and {canonical(p.name), canonical(p.distribution)} & names]
        failure = next((p.error for p in mine if p.error is not None), None)
        by = registry.settings.blocked_by(distribution, plugin) if names else None
        blocked = (by, registry.settings.values[by] or "") if by else None
        raise missing_head_error(
            task_type, head_name, distribution, version, plugin=plugin, failure=failure, blocked=blocked, cause=error
        ) from error
    if distribution and canonical(record.distribution) != canonical(distribution):
        message = release_change(head_name, distribution, version, record, layers_differ=False)
        warnings.warn(message, UserWarning, stacklevel=2)
    return record


def missing_head_error(
    task_type: str,
    head_name: str,
    distribution: str | None,
    version: str | None,
    *,
    plugin: str | None,
    failure: BaseException | None,
    blocked: tuple[str, str] | None,
    cause: Exception,
) -> MissingHeadPluginError:
    """The error for a saved head no plugin serves: the plugin that failed (``failure``), or the
    ``(variable, value)`` of the setting that blocks it, or what to install."""
    requirement = pip_requirement(distribution, version) if distribution else "<the plugin that provides it>"
    install = f"pip install {requirement}"
    known = version if version and version != UNKNOWN_VERSION else "(version unknown)"
    origin = (
        f"it was provided by {distribution} {known} when saved"
        if distribution
        else "the file does not record which distribution provided it"
    )
    if failure is not None:
        lines = [
            f"Cannot load head {head_name!r}: the plugin that provides task type {task_type!r} is installed but "
            f"failed to load ({origin}): {describe(failure)}",
            f"Fix or reinstall it: pip install --force-reinstall {requirement}",
        ]
    else:
        lines = [f"Cannot load head {head_name!r}: no available plugin provides task type {task_type!r} ({origin})."]
        if blocked is not None:
            (variable, value), name = blocked, distribution or plugin
            fix = f"remove {name} from it" if variable == BLOCK_ENV else f"add {name} to it"
            lines.append(
                f"Loading {name} is blocked by the environment variable {variable}={value!r}: unset {variable} "
                f"or {fix} (and {install} if it is not installed)."
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
        blocked_by=blocked[0] if blocked else None,
    )


def release_change(
    head_name: str, distribution: str | None, version: str | None, record: HeadRecord, *, layers_differ: bool
) -> str:
    """A sentence naming the release that saved head ``head_name``, the one that builds it now and the pip
    command that restores the first; empty when it was saved with the release installed now."""
    if not distribution or (distribution, version) == (record.distribution, record.version):
        return ""
    cls = f"{record.head_class.__module__}:{record.head_class.__qualname__}"
    now = f"{record.distribution} {record.version} ({cls})"
    install = f"pip install {pip_requirement(distribution, version)}"
    return f"Head {head_name!r} was saved with {distribution} {version or '(version unknown)'} and is now built by " + (
        f"{now}, whose layers differ: install the version that saved it ({install}) or retrain."
        if layers_differ
        else f"{now}; its weights load only if both heads have the same layout (else {install})."
    )
