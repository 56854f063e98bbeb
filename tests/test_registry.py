"""The head registry against real (throwaway) installed distributions.

Each test builds fake plugin distributions in ``tmp_path`` (see `plugin_fixtures`) and a fresh
`HeadRegistry` whose built-ins are the fake module ``dht_builtin_a`` (sentiment_analysis with
alias ``sentiment``, and text_classification), so most tests do not depend on ``heads/``; the
hostile-plugin tests use the real built-ins and build every built-in head.
"""

from __future__ import annotations

import importlib
import importlib.metadata
import io
import itertools
import json
import os
import signal
import subprocess
import sys
import textwrap
import traceback
import warnings

import keras
import pluggy
import pytest

import distilbert_heads.plugins.registry as registry_module
from distilbert_heads.plugins.registry import (
    BLOCK_ENV,
    BUILTIN_MODULES,
    LOAD_ENV,
    STRICT_ENV,
    HeadRecord,
    HeadRegistry,
    HeadRow,
    PluginConflictError,
    PluginLoadError,
    UnknownTaskTypeError,
    get_registry,
    reset_registry,
)
from distilbert_heads.tasks import NLPTaskType

ROW_KEYS = {"task_type", "aliases", "head_class", "plugin", "distribution", "version", "status", "error"}


def rows_by_plugin(rows: list[HeadRow]) -> dict[str, list[HeadRow]]:
    grouped: dict[str, list[HeadRow]] = {}
    for row in rows:
        grouped.setdefault(row.plugin, []).append(row)
    return grouped


@pytest.fixture(autouse=True)
def fresh_process_warnings(monkeypatch):
    """Each test sees the registry as a new process would: no plugin failure warned about yet."""
    monkeypatch.setattr(registry_module, "_warned", set())


# -- built-ins, aliases, provenance ----------------------------------------------------------
def test_builtin_lookup_by_type_alias_and_member(fake_site):
    registry = fake_site.registry()
    record = registry.get_head("sentiment_analysis")
    assert isinstance(record, HeadRecord)
    assert record.head_class.__module__ == "dht_builtin_a"
    assert record.task_type == "sentiment_analysis"
    assert record.aliases == ("sentiment",)
    assert (record.plugin, record.distribution, record.builtin) == ("builtin.dht_builtin_a", "distilbert-heads", True)
    assert record.version == importlib.metadata.version("distilbert-heads")
    assert registry.get_head("sentiment") is record
    assert registry.get_head(NLPTaskType.SENTIMENT_ANALYSIS) is record
    assert registry.get_head(" Sentiment_Analysis ") is record
    # The second task type of the same class has its own record and no aliases.
    second = registry.get_head(NLPTaskType.TEXT_CLASSIFICATION)
    assert (second.task_type, second.aliases, second.head_class) == ("text_classification", (), record.head_class)


def test_register_arguments_override_class_attributes(fake_site):
    fake_site.head_module(
        "dht_builtin_args",
        ("ignored_type",),
        ("ignored_alias",),
        register_call=("register(DhtBuiltinArgsHead, task_types=[NLPTaskType.RANKING, 'my_rank'], aliases='rk')"),
        preamble="from distilbert_heads.tasks import NLPTaskType",
    )
    registry = fake_site.registry(builtins=("dht_builtin_args",))
    assert registry.get_head("rk").task_type == "ranking"
    assert registry.get_head("my_rank").aliases == ()
    with pytest.raises(UnknownTaskTypeError):
        registry.get_head("ignored_type")


def test_missing_builtin_module_is_a_failed_row_not_a_crash(fake_site):
    registry = fake_site.registry(builtins=("dht_builtin_a", "dht_builtin_missing"))
    with pytest.warns(UserWarning, match="Reinstall it: pip install --force-reinstall distilbert-heads"):
        assert registry.get_head("sentiment").task_type == "sentiment_analysis"
    rows = rows_by_plugin(registry.list_heads())
    (missing,) = rows["builtin.dht_builtin_missing"]
    assert missing.status == "failed"
    assert "dht_builtin_missing" in missing.error
    assert isinstance(registry.failed_plugins()["builtin.dht_builtin_missing"], ModuleNotFoundError)


def test_real_builtins_serve_their_task_types_and_aliases():
    for module in BUILTIN_MODULES:
        pytest.importorskip(module)
    registry = HeadRegistry(entry_point_group="distilbert_heads_no_such_group")
    expected = {
        "sentiment": "sentiment_analysis",
        "ner": "named_entity_recognition",
        "qa": "question_answering",
        "pairwise": "natural_language_inference",
    }
    for alias, task_type in expected.items():
        record = registry.get_head(alias)
        assert record.builtin and record.distribution == "distilbert-heads"
        assert registry.get_head(task_type).head_class is record.head_class
    for member in (NLPTaskType.TEXT_CLASSIFICATION, NLPTaskType.TOKEN_CLASSIFICATION, NLPTaskType.SPAN_EXTRACTION):
        assert registry.get_head(member).builtin
    assert all(row.status == "ok" for row in registry.list_heads())


# -- loading: lazy, then every allowed plugin at once ---------------------------------------
def test_good_plugin_is_found_with_provenance(fake_site):
    module = fake_site.plugin("good", ("good_task",), ("gd",), version="1.2.3")
    registry = fake_site.registry()
    assert module not in sys.modules
    record = registry.get_head("gd")
    assert module in sys.modules
    assert record.task_type == "good_task"
    assert record.head_class.__module__ == module
    assert (record.plugin, record.distribution, record.version, record.builtin) == (
        "good",
        "distilbert-head-good",
        "1.2.3",
        False,
    )


def test_first_lookup_loads_every_allowed_plugin_once(fake_site):
    modules = [fake_site.plugin(name, (f"{name}_task",)) for name in ("alpha", "beta", "gamma")]
    registry = fake_site.registry()
    assert not set(modules) & set(sys.modules)  # creating a registry imports nothing
    assert registry.get_head("sentiment").builtin
    assert set(modules) <= set(sys.modules)  # so conflicts show whichever key is asked first
    for module in modules:
        del sys.modules[module]
    assert registry.get_head("beta_task").plugin == "beta"
    registry.list_heads()
    assert not set(modules) & set(sys.modules)  # loaded once per registry, not per call


@pytest.mark.slow
def test_import_imports_no_plugin_in_a_fresh_process(fake_site):
    """The real entry-point group, a fresh interpreter: ``import distilbert_heads`` runs no plugin code."""
    marker = fake_site.root / "imported.txt"
    module = fake_site.head_module(
        "dht_lazy_pkg", ("dht_lazy_task",), preamble=f"import pathlib\npathlib.Path({str(marker)!r}).write_text('x')"
    )
    fake_site.dist("distilbert-head-dht-lazy", "1.0.0", {"dht_lazy": module}, group="distilbert_heads")
    script = textwrap.dedent(
        f"""
        import pathlib, sys
        import distilbert_heads
        from distilbert_heads.plugins import registry
        assert {module!r} not in sys.modules, "imported by import distilbert_heads"
        assert not pathlib.Path({str(marker)!r}).exists(), "plugin code ran at import distilbert_heads"
        record = registry.get_head("dht_lazy_task")
        assert {module!r} in sys.modules
        print(record.plugin, record.distribution, record.version)
        """
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("DISTILBERT_HEADS_")}
    env["PYTHONPATH"] = os.pathsep.join([str(fake_site.root), env.get("PYTHONPATH", "")])
    result = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.split() == ["dht_lazy", "distilbert-head-dht-lazy", "1.0.0"]
    assert marker.exists()


# -- isolation of broken plugins -------------------------------------------------------------
def test_plugin_raising_on_import_is_recorded_and_others_work(fake_site):
    fake_site.plugin("broken", ("broken_task",), preamble="raise RuntimeError('boom at import')")
    fake_site.plugin("good", ("good_task",))
    registry = fake_site.registry()

    assert registry.get_head("good_task").plugin == "good"
    rows = rows_by_plugin(registry.list_heads())
    (broken,) = rows["broken"]
    assert broken.status == "failed"
    assert broken.error == "RuntimeError: boom at import"
    assert broken.distribution == "distilbert-head-broken" and broken.version == "1.0.0"
    assert rows["good"][0].status == "ok"

    error = registry.failed_plugins()["broken"]
    assert isinstance(error, RuntimeError)
    frames = traceback.extract_tb(error.__traceback__)
    assert any(frame.filename.endswith(os.path.join("broken_pkg", "__init__.py")) for frame in frames)

    # The key the broken plugin is named after: PluginLoadError chaining the original exception.
    with pytest.raises(PluginLoadError, match="broken") as info:
        registry.get_head("broken")
    assert info.value.__cause__ is error


def test_plugin_raising_in_register_heads_registers_nothing(fake_site):
    fake_site.plugin(
        "partial",
        ("partial_first",),
        register_call="register(PartialPkgHead)\nraise KeyError('missing setting')",
    )
    registry = fake_site.registry()
    with pytest.raises(UnknownTaskTypeError) as info:
        registry.get_head("partial_first")  # registered before the raise, rolled back
    original = registry.failed_plugins()["partial"]
    assert isinstance(original, KeyError)
    assert info.value.__cause__ is original
    assert "partial" in str(info.value) and "missing setting" in str(info.value)
    assert registry.get_head("sentiment").builtin


@pytest.mark.parametrize(
    ("register_call", "message"),
    [
        ("register(dict)", "registered the class builtins.dict, which is not a subclass of distilbert_heads.TaskHead"),
        (
            "class Bomb:\n    def __repr__(self):\n        raise RuntimeError('no repr')\nregister(Bomb())",
            "registered a Bomb object, which is not a subclass",
        ),
        ("register('PlainPkgHead')", "not a subclass of distilbert_heads.TaskHead"),
        ("register(PlainPkgHead, task_types=[])", "without task types"),
        ("register(PlainPkgHead, aliases=['Not A Name'])", "not a valid task type name"),
        ("pass", "registered no head"),
        ("register(PlainPkgHead)\nregister(type('Other', (PlainPkgHead,), {}))", "two head classes for 'plain_task'"),
        ("PlainPkgHead.options_schema = dict\nregister(PlainPkgHead)", "options_schema is <class 'dict'>"),
        ("PlainPkgHead.output_names = 'logits'\nregister(PlainPkgHead)", "output_names is 'logits'"),
        ("register(PlainPkgHead, task_types=['t' * 100_000])", "100,000 characters long"),
        ("register(PlainPkgHead, aliases=['x' * 101])", "at most 100"),
    ],
)
def test_bad_registration_is_that_plugins_failure(fake_site, register_call, message):
    fake_site.plugin("plain", ("plain_task",), register_call=register_call)
    fake_site.plugin("good", ("good_task",))
    registry = fake_site.registry()
    rows = rows_by_plugin(registry.list_heads())
    assert rows["plain"][0].status == "failed"
    assert message in rows["plain"][0].error
    assert "'plain'" in rows["plain"][0].error and "distilbert-head-plain" in rows["plain"][0].error
    assert rows["good"][0].status == "ok"


def test_misspelled_hook_is_reported_naming_the_valid_hook(fake_site):
    fake_site.module(
        "typo_pkg",
        "from distilbert_heads import hookimpl\n\n@hookimpl\ndef register_head(register):\n    pass\n",
    )
    fake_site.dist("distilbert-head-typo", "0.1", {"typo": "typo_pkg"})
    fake_site.plugin("good", ("good_task",))
    registry = fake_site.registry()
    rows = rows_by_plugin(registry.list_heads())
    assert rows["typo"][0].status == "failed"
    error = registry.failed_plugins()["typo"]
    assert isinstance(error, pluggy.PluginValidationError)
    assert "unknown hook 'register_head'" in str(error)
    assert "register_heads(register)" in rows["typo"][0].error
    # The bad plugin was unregistered: later plugins still validate and load.
    assert rows["good"][0].status == "ok"


def test_hook_with_wrong_argument_or_no_hookimpl_is_reported(fake_site):
    fake_site.module(
        "wrongarg_pkg",
        "from distilbert_heads import hookimpl\n\n@hookimpl\ndef register_heads(add):\n    pass\n",
    )
    fake_site.module("undecorated_pkg", "def register_heads(register):\n    pass\n")
    fake_site.dist("distilbert-head-wrongarg", "0.1", {"wrongarg": "wrongarg_pkg"})
    fake_site.dist("distilbert-head-undecorated", "0.1", {"undecorated": "undecorated_pkg"})
    registry = fake_site.registry()
    rows = rows_by_plugin(registry.list_heads())
    assert rows["wrongarg"][0].status == "failed" and "add" in rows["wrongarg"][0].error
    assert rows["undecorated"][0].status == "failed"
    assert "defines no hook implementation" in rows["undecorated"][0].error


STRICT_CALLS = {
    "builtin": lambda registry: registry.get_head("sentiment").plugin,
    "healthy plugin": lambda registry: registry.get_head("good_task").plugin,
    "broken plugin's key": lambda registry: registry.get_head("broken_task"),
    "unknown key": lambda registry: registry.get_head("no_such_task"),
    "listing": lambda registry: registry.list_heads(),
}


@pytest.mark.parametrize("order", list(itertools.permutations(STRICT_CALLS))[::7], ids="-".join)
def test_strict_mode_raises_for_the_failed_plugin_only_in_any_order(fake_site, order):
    """Strict mode: lookups no loaded plugin serves, and listings, raise the failed plugin's error
    instead of warning; lookups served by the built-ins or a healthy plugin keep working."""
    fake_site.plugin("broken", ("broken_task",), preamble="raise RuntimeError('boom at import')")
    fake_site.plugin("good", ("good_task",))
    fake_site.env(strict=True)
    registry = fake_site.registry()
    causes = []
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # strict mode raises instead of warning
        for name in order:
            if name in ("builtin", "healthy plugin"):
                assert (
                    STRICT_CALLS[name](registry) == {"builtin": "builtin.dht_builtin_a", "healthy plugin": "good"}[name]
                )
                continue
            with pytest.raises(PluginLoadError) as info:
                STRICT_CALLS[name](registry)
            message = str(info.value)
            assert "'broken'" in message and "distilbert-head-broken" in message and "boom at import" in message
            assert STRICT_ENV in message and f"{BLOCK_ENV}=<distribution>" in message
            causes.append(info.value.__cause__)
    assert isinstance(causes[0], RuntimeError) and all(cause is causes[0] for cause in causes)

    fake_site.env(strict=True, block="distilbert-head-broken")  # the documented way out
    registry = fake_site.registry()
    assert registry.get_head("good_task").plugin == "good"
    assert {row.plugin: row.status for row in registry.list_heads()}["broken"] == "blocked"


def test_unknown_task_type_message_lists_what_is_installed(fake_site):
    fake_site.plugin("good", ("good_task",), ("gd",))
    registry = fake_site.registry()
    with pytest.raises(UnknownTaskTypeError) as info:
        registry.get_head("nothing_serves_this")
    message = str(info.value)
    assert "'nothing_serves_this'" in message
    for name in ("sentiment_analysis", "text_classification", "good_task", "sentiment -> sentiment_analysis"):
        assert name in message
    assert "a plugin may provide it: pip install the plugin's distribution" in message.lower()
    assert "`distilbert-heads heads`" in message
    assert "did you mean" not in message.lower()  # nothing is close
    assert info.value.__cause__ is None
    assert isinstance(info.value, LookupError) and isinstance(info.value, ValueError)


@pytest.mark.parametrize(
    ("typo", "meant"),
    [
        ("sentimnet", "sentiment"),
        ("Text_Clasification", "text_classification"),
        ("god_task", "good_task"),
        ("gdd", "gd"),
        ("shared_tsk", "shared_task"),
    ],
)
def test_mistyped_task_type_suggests_the_nearest_names(fake_site, typo, meant):
    fake_site.plugin("good", ("good_task",), ("gd",))
    for name in ("one", "two"):  # a contested key is a known name too, and not the error reported
        fake_site.plugin(name, ("shared_task",))
    with pytest.raises(UnknownTaskTypeError) as info:
        fake_site.registry().get_head(typo)
    first_line = str(info.value).splitlines()[0]
    assert f"{typo.lower()!r}" in first_line and f"Did you mean {meant!r}" in first_line
    assert not isinstance(info.value, PluginConflictError) and "claimed by" not in str(info.value)


def test_failed_plugin_warns_once_per_process_naming_it_and_the_fix(fake_site):
    fake_site.plugin("broken", ("broken_task",), preamble="raise RuntimeError('boom at import')")
    fake_site.plugin("good", ("good_task",))
    with pytest.warns(UserWarning) as caught:
        for _ in range(2):  # two registries, several calls each: one warning
            registry = fake_site.registry()
            registry.get_head("sentiment")
            registry.list_heads()
            with pytest.raises(UnknownTaskTypeError):
                registry.get_head("nope")
    (warning,) = [w for w in caught if "failed to load" in str(w.message)]
    assert warning.filename == __file__  # it points at the lookup that loaded the plugin
    message = str(warning.message)
    for fact in (
        "'broken'",
        "distilbert-head-broken 1.0.0",
        "RuntimeError: boom at import",
        f"{BLOCK_ENV}=distilbert-head-broken",
    ):
        assert fact in message


def test_registry_lookups_from_inside_register_heads_fail_that_plugin_only(fake_site):
    fake_site.plugin(
        "nosy",
        ("nosy_task",),
        register_call=(
            "from distilbert_heads.plugins.registry import get_head\nget_head('sentiment')\nregister(NosyPkgHead)"
        ),
    )
    fake_site.plugin("good", ("good_task",))
    registry = fake_site.registry()
    registry_module._registry = registry
    try:
        rows = rows_by_plugin(registry.list_heads())
    finally:
        registry_module.reset_registry()
    assert rows["nosy"][0].status == "failed" and "while plugins were loading" in rows["nosy"][0].error
    assert rows["good"][0].status == "ok"


# -- conflicts and overrides -----------------------------------------------------------------
CONFLICT_CALLS = (
    "shared_task", "aaa_task", "bbb_only", "sentiment", "unrelated_task", "no_such_task", "saved shared_task", "listing"
)  # fmt: skip


def _conflict_outcome(registry: HeadRegistry, call: str) -> str:
    try:
        if call == "listing":
            registry.list_heads()
            return "listed"
        if call.startswith("saved "):  # what loading a .keras file asks
            saved = call.removeprefix("saved ")
            return registry.head_for_saved(saved, head_name="h", distribution="distilbert-head-aaa").plugin
        return registry.get_head(call).plugin
    except PluginConflictError as error:
        assert "distilbert-head-aaa" in str(error) and "distilbert-head-bbb" in str(error)
        assert "'shared_task'" in str(error) and f"{BLOCK_ENV}=distilbert-head-bbb" in str(error)
        return "conflict"
    except UnknownTaskTypeError as error:
        assert "No installed head serves task type 'no_such_task'" in str(error)
        assert "claimed by" not in str(error) and not isinstance(error, PluginConflictError)
        return "unknown"


@pytest.mark.parametrize("strict", [False, True], ids=["default", "strict"])
@pytest.mark.parametrize(
    "order",
    [CONFLICT_CALLS, CONFLICT_CALLS[::-1], *itertools.islice(itertools.permutations(CONFLICT_CALLS), 1, 40000, 9973)],
    ids=lambda order: "-".join(order),
)
def test_two_plugins_claiming_one_key_conflict_on_that_key_only_in_any_order(fake_site, order, strict):
    """The contested key raises on every lookup (strict mode too, and for a saved head); every other key,
    and an unknown one, answers as if there were no conflict, whatever was asked first."""
    fake_site.plugin("aaa", ("aaa_task", "shared_task"))
    fake_site.plugin("bbb", ("shared_task", "bbb_only"))
    fake_site.plugin("unrelated", ("unrelated_task",))
    fake_site.env(strict=strict)
    registry = fake_site.registry()
    expected = {
        "shared_task": "conflict",
        "aaa_task": "aaa",
        "bbb_only": "bbb",
        "sentiment": "builtin.dht_builtin_a",
        "unrelated_task": "unrelated",
        "no_such_task": "unknown",
        "saved shared_task": "conflict",
        "listing": "conflict",
    }
    for call in order:
        assert _conflict_outcome(registry, call) == expected[call], call
    rows = {(row.plugin, row.task_type): row for row in registry.list_heads(raise_on_conflict=False)}
    for plugin in ("aaa", "bbb"):
        row = rows[(plugin, "shared_task")]
        assert row.status == "conflict" and "claimed by two plugins" in row.error
    assert rows[("aaa", "aaa_task")].status == rows[("unrelated", "unrelated_task")].status == "ok"

    fake_site.env(block="Distilbert_Head_BBB")
    assert fake_site.registry().get_head("shared_task").distribution == "distilbert-head-aaa"


def test_alias_conflicting_with_another_plugins_task_type(fake_site):
    fake_site.plugin("one", ("thing",))
    fake_site.plugin("two", ("other_thing",), ("thing",))
    registry = fake_site.registry()
    with pytest.raises(PluginConflictError, match="'thing'"):
        registry.list_heads()
    with pytest.raises(PluginConflictError, match="distilbert-head-one.*distilbert-head-two"):
        registry.get_head("thing")
    assert registry.get_head("other_thing").plugin == "two"


@pytest.mark.parametrize(
    "claim", [{"task_types": ("sentiment_analysis",)}, {"task_types": ("my_sentiment",), "aliases": ("sentiment",)}]
)
def test_claiming_a_builtin_key_without_override_is_a_conflict_that_keeps_the_builtin(fake_site, claim):
    fake_site.plugin("sneaky", claim["task_types"], claim.get("aliases", ()))
    registry = fake_site.registry()
    assert registry.get_head("sentiment").builtin  # before and after the listing: never shadowed
    with pytest.raises(PluginConflictError) as info:
        registry.list_heads()
    message = str(info.value)
    assert "distilbert-heads" in message and "distilbert-head-sneaky" in message
    assert "override=True" in message and f"{BLOCK_ENV}=distilbert-head-sneaky" in message
    assert registry.get_head("sentiment").builtin and registry.get_head("sentiment_analysis").builtin
    (row,) = rows_by_plugin(registry.list_heads(raise_on_conflict=False))["sneaky"]
    assert row.status == "conflict"


def test_override_replaces_builtin_with_a_warning(fake_site):
    fake_site.plugin(
        "better",
        ("sentiment_analysis",),
        register_call="register(BetterPkgHead, override=True)",
    )
    registry = fake_site.registry()
    with pytest.warns(UserWarning) as caught:
        rows = registry.list_heads()
    (warning,) = [w for w in caught if "overrides the built-in" in str(w.message)]
    assert "distilbert-head-better" in str(warning.message) and "distilbert-heads" in str(warning.message)
    record = registry.get_head("sentiment")  # the built-in's alias now resolves to the winner
    assert (record.plugin, record.distribution, record.builtin) == ("better", "distilbert-head-better", False)
    statuses = {(row.plugin, row.task_type): row.status for row in rows}
    assert statuses[("builtin.dht_builtin_a", "sentiment_analysis")] == "overridden"
    assert statuses[("builtin.dht_builtin_a", "text_classification")] == "ok"
    assert statuses[("better", "sentiment_analysis")] == "ok"


def test_override_named_after_the_task_type_applies_to_builtin_lookups(fake_site):
    fake_site.plugin(
        "sentiment_analysis",
        ("sentiment_analysis",),
        register_call="register(SentimentAnalysisPkgHead, override=True)",
        dist="distilbert-head-better-sentiment",
    )
    registry = fake_site.registry()
    with pytest.warns(UserWarning, match="overrides the built-in"):
        record = registry.get_head(NLPTaskType.SENTIMENT_ANALYSIS)
    assert record.distribution == "distilbert-head-better-sentiment"

    fresh = fake_site.registry()  # by the built-in's alias: the override is loaded too
    with pytest.warns(UserWarning, match="overrides the built-in"):
        assert fresh.get_head("sentiment").distribution == "distilbert-head-better-sentiment"


def test_two_overrides_of_one_builtin_conflict(fake_site):
    for name in ("first", "second"):
        fake_site.plugin(name, ("sentiment_analysis",), register_call=f"register({name.title()}PkgHead, override=True)")
    registry = fake_site.registry()
    with pytest.raises(PluginConflictError, match="distilbert-heads.*distilbert-head-first.*distilbert-head-second"):
        registry.get_head("sentiment")  # contested: neither override wins by load order
    with pytest.raises(PluginConflictError):
        registry.list_heads()
    assert registry.get_head("text_classification").builtin


# -- LOAD / BLOCK --------------------------------------------------------------------------
@pytest.fixture
def three_plugins(fake_site):
    for name in ("red", "green", "blue"):
        fake_site.plugin(name, (f"{name}_task",))
    return fake_site


def _status(registry: HeadRegistry) -> dict[str, str]:
    return {row.plugin: row.status for row in registry.list_heads() if not row.plugin.startswith("builtin.")}


def test_load_unset_loads_all(three_plugins):
    assert _status(three_plugins.registry()) == {"red": "ok", "green": "ok", "blue": "ok"}


def test_load_empty_loads_none_and_imports_nothing(three_plugins):
    three_plugins.env(load="")
    registry = three_plugins.registry()
    assert _status(registry) == {"red": "blocked", "green": "blocked", "blue": "blocked"}
    assert not {"red_pkg", "green_pkg", "blue_pkg"} & set(sys.modules)
    assert registry.get_head("sentiment").builtin  # built-ins are always loaded
    with pytest.raises(UnknownTaskTypeError, match="DISTILBERT_HEADS_LOAD_PLUGINS"):
        registry.get_head("red_task")


def test_load_list_by_distribution_or_entry_point_name(three_plugins):
    three_plugins.env(load="DISTILBERT_HEAD_RED, blue")
    registry = three_plugins.registry()
    assert _status(registry) == {"red": "ok", "green": "blocked", "blue": "ok"}
    assert "green_pkg" not in sys.modules
    row = next(r for r in registry.list_heads() if r.plugin == "green")
    assert "DISTILBERT_HEADS_LOAD_PLUGINS" in row.error


def test_block_by_distribution_or_entry_point_name(three_plugins):
    three_plugins.env(block="distilbert.head.RED,Green")
    registry = three_plugins.registry()
    with pytest.raises(UnknownTaskTypeError, match="blocked by DISTILBERT_HEADS_BLOCK_PLUGINS"):
        registry.get_head("red_task")
    assert _status(registry) == {"red": "blocked", "green": "blocked", "blue": "ok"}
    assert not {"red_pkg", "green_pkg"} & set(sys.modules)


def test_block_wins_over_load_and_env_is_read_at_creation(three_plugins):
    three_plugins.env(load="red,green", block="green")
    registry = three_plugins.registry()
    three_plugins.env()  # changing the environment later does not affect this registry
    assert _status(registry) == {"red": "ok", "green": "blocked", "blue": "blocked"}


@pytest.mark.parametrize(
    ("load", "block", "loaded", "refused"),
    [
        (None, "distilbert-head-red,Green", {"blue"}, {"red", "green"}),
        ("red, distilbert_head_blue", None, {"red", "blue"}, {"green"}),
        ("red,green", "GREEN", {"red"}, {"green", "blue"}),
        ("", None, set(), {"red", "green", "blue"}),
    ],
    ids=["block", "load", "block-wins", "load-none"],
)
def test_load_and_block_are_pluggy_blocks(three_plugins, load, block, loaded, refused):
    """What the variables keep out is blocked in the registry's pluggy PluginManager (`set_blocked`), so
    pluggy itself refuses to register it; what they let in is registered there under distribution:name."""
    three_plugins.env(load=load, block=block)
    registry = three_plugins.registry()
    registry.get_head("sentiment")
    pm = registry.plugin_manager
    for name in ("red", "green", "blue"):
        key = f"distilbert-head-{name}:{name}"
        assert pm.is_blocked(key) is (name in refused), name
        assert (pm.get_plugin(key) is not None) is (name in loaded), name
        assert (f"{name}_pkg" in sys.modules) is (name in loaded), name
    assert pm.register(object(), name=f"distilbert-head-{min(refused)}:{min(refused)}") is None
    assert {row.plugin for row in registry.list_heads() if row.status == "blocked"} == refused


# -- listing and the singleton -------------------------------------------------------------
def test_listing_rows(fake_site):
    fake_site.plugin("good", ("good_task", "good_other"), ("gd",), version="2.0")
    fake_site.plugin("broken", ("broken_task",), preamble="raise ImportError('needs libfoo')")
    rows = fake_site.registry().list_heads()
    assert all(isinstance(row, HeadRow) and set(row.as_dict()) == ROW_KEYS for row in rows)
    assert [row.plugin for row in rows] == ["builtin.dht_builtin_a"] * 2 + ["broken", "good", "good"]
    good = [row for row in rows if row.plugin == "good"]
    assert good[0].as_dict() == {
        "task_type": "good_task",
        "aliases": ["gd"],
        "head_class": "good_pkg:GoodPkgHead",
        "plugin": "good",
        "distribution": "distilbert-head-good",
        "version": "2.0",
        "status": "ok",
        "error": None,
    }
    assert good[1].task_type == "good_other" and good[1].aliases == ()
    broken = rows[2]
    assert (broken.task_type, broken.head_class, broken.status) == (None, None, "failed")
    assert broken.error == "ImportError: needs libfoo"


def test_get_registry_is_a_singleton_and_reset_rereads_the_environment(monkeypatch):
    reset_registry()
    try:
        monkeypatch.setenv("DISTILBERT_HEADS_LOAD_PLUGINS", "")
        first = get_registry()
        assert get_registry() is first
        assert first.settings.load_only == set()
        monkeypatch.delenv("DISTILBERT_HEADS_LOAD_PLUGINS")
        reset_registry()
        second = get_registry()
        assert second is not first and second.settings.load_only is None
    finally:
        reset_registry()


# -- hostile plugins: nothing a plugin does takes down the listing, the built-ins or other plugins --
BUILTIN_ALIASES = ("sentiment", "ner", "qa", "pairwise")
RECURSE = "def deeper(depth):\n    return deeper(depth + 1)\ndeeper(0)"
HOSTILE = {  # behaviour -> (plugin_fixtures.plugin keywords, the exception type the plugin's failure records)
    "import-SystemExit": ({"preamble": "raise SystemExit(3)"}, "SystemExit"),
    "import-KeyboardInterrupt": ({"preamble": "raise KeyboardInterrupt('from plugin code')"}, "KeyboardInterrupt"),
    "import-GeneratorExit": ({"preamble": "raise GeneratorExit"}, "GeneratorExit"),
    "import-Exception": ({"preamble": "raise RuntimeError('boom')"}, "RuntimeError"),
    "import-RecursionError": ({"preamble": RECURSE}, "RecursionError"),
    "register-SystemExit": ({"register_call": "register({cls})\nraise SystemExit('bye')"}, "SystemExit"),
    "register-KeyboardInterrupt": ({"register_call": "register({cls})\nraise KeyboardInterrupt"}, "KeyboardInterrupt"),
    "register-Exception": ({"register_call": "register({cls})\nraise ValueError('bad')"}, "ValueError"),
    "register-RecursionError": ({"register_call": RECURSE}, "RecursionError"),
    "import-unprintable-exception": (
        {
            "preamble": "class Unprintable(Exception):\n    def __str__(self):\n"
            "        raise RuntimeError('no str')\nraise Unprintable()"
        },
        "Unprintable",
    ),
    "import-10MB-message": ({"preamble": "raise RuntimeError('x' * 10_000_000)"}, "RuntimeError"),
}


def build_every_builtin_head(registry: HeadRegistry) -> None:
    for alias in BUILTIN_ALIASES:
        record = registry.get_head(alias)
        assert record.builtin, alias
        head = record.head_class(hidden_size=8, task_type=record.task_type)
        outputs = head(keras.ops.zeros((2, 5, 8)), keras.ops.ones((2, 5), "int32"))
        assert set(outputs) == set(head.output_names), alias


@pytest.mark.parametrize("entry_point", ["hostile", "sentiment"])  # "sentiment": named like a built-in alias
@pytest.mark.parametrize("behaviour", list(HOSTILE))
def test_hostile_plugin_fails_alone(fake_site, behaviour, entry_point):
    keywords, raised = HOSTILE[behaviour]
    cls = f"{entry_point.title()}PkgHead"
    fake_site.plugin(entry_point, ("hostile_task",), **{k: v.format(cls=cls) for k, v in keywords.items()})
    fake_site.plugin("good", ("good_task",), ("gd",))
    registry = fake_site.registry(builtins=BUILTIN_MODULES)
    before = signal.getsignal(signal.SIGINT)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        build_every_builtin_head(registry)
        rows = rows_by_plugin(registry.list_heads())
        assert registry.get_head("gd").plugin == "good"
        with pytest.raises(UnknownTaskTypeError) as info:
            registry.get_head("hostile_task")  # registered before the raise: rolled back
        build_every_builtin_head(registry)
    assert signal.getsignal(signal.SIGINT) is before
    (row,) = rows[entry_point]
    assert (row.status, row.distribution) == ("failed", f"distilbert-head-{entry_point}")
    assert row.error.startswith(raised) and len(row.error) < 2100  # a 10 MB message is cut
    assert all(row.status == "ok" for name, group in rows.items() if name != entry_point for row in group)
    error = registry.failed_plugins()[entry_point]
    assert type(error).__name__ == raised and info.value.__cause__ is error
    assert f"'{entry_point}'" in str(info.value) and raised in str(info.value)
    (warning,) = [w for w in caught if "failed to load" in str(w.message)]
    assert f"distilbert-head-{entry_point}" in str(warning.message) and raised in str(warning.message)


@pytest.mark.parametrize("entry_point", ["sentiment", "sentiment_analysis", "ner", "question_answering"])
def test_entry_point_named_like_a_builtin_key_is_only_a_plugin_name(fake_site, entry_point):
    fake_site.plugin(entry_point, ("other_task",))
    registry = fake_site.registry(builtins=BUILTIN_MODULES)
    assert registry.get_head(entry_point).builtin  # the first lookup, with the plugin loaded
    build_every_builtin_head(registry)
    assert registry.get_head("other_task").plugin == entry_point
    assert all(row.status == "ok" for row in registry.list_heads())


def test_real_ctrl_c_while_plugins_load_still_stops(fake_site):
    """A KeyboardInterrupt from a real SIGINT is not a plugin failure: it propagates, and the handler is restored."""
    fake_site.plugin("slow", ("slow_task",), preamble="import _thread, time\n_thread.interrupt_main()\ntime.sleep(5)")
    registry = fake_site.registry()
    # Python's own Ctrl-C handler, as in a program: interrupt_main() does nothing while a handler set outside
    # Python (by a native library an earlier test loaded) is in place.
    outer = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        before = signal.getsignal(signal.SIGINT)
        with pytest.raises(KeyboardInterrupt) as info:
            registry.list_heads()
        assert signal.getsignal(signal.SIGINT) is before
    finally:
        if outer is not None:
            signal.signal(signal.SIGINT, outer)
    if sys.version_info >= (3, 11):  # the note says which plugin was loading and how to skip it
        (note,) = info.value.__notes__
        assert "'slow'" in note and f"{BLOCK_ENV}=distilbert-head-slow" in note


def test_builtin_creation_with_a_broken_plugin_named_like_it_in_the_real_group(fake_site, monkeypatch):
    """The factory path through the process-wide registry and the real entry-point group."""
    from distilbert_heads import create_distilbert_with_head
    from distilbert_heads.testing import TINY_ENCODER

    module = fake_site.head_module("dht_named_pkg", ("dht_named_task",), preamble="raise SystemExit(1)")
    fake_site.dist("distilbert-head-dht-named", "1.0.0", {"sentiment": module}, group="distilbert_heads")
    reset_registry()
    try:
        with pytest.warns(UserWarning, match="distilbert-head-dht-named"):
            model = create_distilbert_with_head(task_type="sentiment", distilbert_variant="tiny", **TINY_ENCODER)
        assert model.head_provenance["sentiment"]["distribution"] == "distilbert-heads"
    finally:
        reset_registry()


def test_loading_a_model_whose_task_type_became_contested_fails_naming_both(fake_site, tmp_path):
    from distilbert_heads.testing import sample_inputs, tiny_model

    first = fake_site.head_module("dht_first_pkg", ("dht_shared",))
    fake_site.dist("distilbert-head-dht-first", "1.0.0", {"dht_first": first}, group="distilbert_heads")
    reset_registry()
    try:
        path = tmp_path / "shared.keras"
        tiny_model("dht_shared").save(path)
        second = fake_site.head_module("dht_second_pkg", ("dht_shared", "dht_second_only"))
        fake_site.dist("distilbert-head-dht-second", "2.0.0", {"dht_second": second}, group="distilbert_heads")
        reset_registry()
        importlib.invalidate_caches()
        with pytest.raises(PluginConflictError) as info:
            keras.models.load_model(path)
        message = str(info.value)
        for fact in (
            "'dht_shared'",
            "distilbert-head-dht-first 1.0.0",
            "distilbert-head-dht-second 2.0.0",
            "Uninstall one",
            f"{BLOCK_ENV}=distilbert-head-dht",
        ):
            assert fact in message
        assert registry_module.get_head("dht_second_only").plugin == "dht_second"  # the rest still works
        assert registry_module.get_head("sentiment").builtin

        fake_site.env(block="distilbert-head-dht-second")
        reset_registry()
        loaded = keras.models.load_model(path)
        assert loaded.head_provenance["dht_shared"]["distribution"] == "distilbert-head-dht-first"
        loaded(sample_inputs())
    finally:
        reset_registry()


def test_threads_share_one_load_and_a_plugins_keyboardinterrupt_off_the_main_thread_is_its_failure(fake_site):
    from concurrent.futures import ThreadPoolExecutor

    fake_site.plugin("hostile", ("hostile_task",), preamble="raise KeyboardInterrupt")
    fake_site.plugin("good", ("good_task",), preamble="import time\ntime.sleep(0.2)  # widen the race")
    registry = fake_site.registry()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        with ThreadPoolExecutor(4) as pool:
            records = list(pool.map(lambda _: registry.get_head("good_task"), range(8)))
    assert all(record is records[0] for record in records)
    assert isinstance(registry.failed_plugins()["hostile"], KeyboardInterrupt)


def test_registering_one_head_twice_is_one_registration(fake_site):
    fake_site.plugin(
        "dht_twice", ("twice_task",), ("tw",), register_call="register(DhtTwicePkgHead)\nregister(DhtTwicePkgHead)"
    )
    rows = [row for row in fake_site.registry().list_heads() if row.plugin == "dht_twice"]
    assert [(row.task_type, row.aliases, row.status) for row in rows] == [("twice_task", ("tw",), "ok")]


def test_two_distributions_may_use_one_entry_point_name(fake_site):
    """Entry-point names are chosen by each distribution: a clash between two is no failure of either."""
    fake_site.dist("distilbert-head-one", "1.0", {"heads": fake_site.head_module("one_pkg", ("one_task",))})
    fake_site.dist("distilbert-head-two", "2.0", {"heads": fake_site.head_module("two_pkg", ("two_task",))})
    registry = fake_site.registry()
    rows = {row.distribution: row for row in registry.list_heads() if row.plugin == "heads"}
    assert {name: row.status for name, row in rows.items()} == {
        "distilbert-head-one": "ok",
        "distilbert-head-two": "ok",
    }
    assert registry.get_head("one_task").distribution == "distilbert-head-one"
    assert registry.get_head("two_task").distribution == "distilbert-head-two"


def test_plugin_output_goes_to_stderr_so_heads_json_stays_json(fake_site, monkeypatch, capsys):
    """Plugin code that prints (at import, in register_heads, or by rebinding sys.stdout) never reaches stdout."""
    from distilbert_heads.cli import main

    fake_site.plugin(
        "chatty",
        ("chatty_task",),
        preamble="print('hello from import')",
        register_call="print('hello from register')\nregister(ChattyPkgHead)",
    )
    fake_site.plugin("rebinder", ("rebinder_task",), preamble="import io, sys\nsys.stdout = io.StringIO()")
    monkeypatch.setattr(registry_module, "_registry", fake_site.registry())
    try:
        assert main(["heads", "--json"]) == 0
    finally:
        reset_registry()
    captured = capsys.readouterr()
    rows = json.loads(captured.out)
    assert {row["plugin"]: row["status"] for row in rows if not row["plugin"].startswith("builtin.")} == {
        "chatty": "ok",
        "rebinder": "ok",
    }
    assert "hello from import" in captured.err and "hello from register" in captured.err
    assert sys.stdout is sys.__stdout__ or not isinstance(sys.stdout, io.StringIO)


@pytest.mark.parametrize(
    ("env", "facts"),
    [
        ({LOAD_ENV: "no_such_plugin"}, [LOAD_ENV, "'no-such-plugin'", "Installed plugins: red (distilbert-head-red)"]),
        ({LOAD_ENV: " red , Gren"}, ["'gren'", "loads only the built-in heads and red (distilbert-head-red)"]),
        ({STRICT_ENV: "maybe"}, [STRICT_ENV, "'maybe'", "non-strict"]),
        ({BLOCK_ENV: "builtin.sentiment"}, [BLOCK_ENV, "built-in heads cannot be blocked", "override=True"]),
        ({BLOCK_ENV: "distilbert-heads"}, ["'distilbert-heads'", "built-in heads cannot be blocked"]),
    ],
    ids=["load-unknown", "load-typo", "strict-odd", "block-builtin-plugin", "block-builtin-dist"],
)
def test_environment_values_that_cannot_work_warn_once(fake_site, monkeypatch, env, facts):
    fake_site.plugin("red", ("red_task",))
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    registry = fake_site.registry()
    with pytest.warns(UserWarning) as caught:
        registry.get_head("sentiment")
        registry.list_heads()
    messages = [str(w.message) for w in caught if "failed to load" not in str(w.message)]
    assert len(messages) == 1, messages
    assert {w.filename for w in caught} == {__file__}
    for fact in facts:
        assert fact in messages[0]


@pytest.mark.parametrize(
    ("env", "red"),
    [
        ({LOAD_ENV: "RED, distilbert_head_red"}, "ok"),
        ({STRICT_ENV: " TRUE "}, "ok"),
        ({STRICT_ENV: "off"}, "ok"),
        ({BLOCK_ENV: "not-installed-anyway"}, "ok"),
        ({LOAD_ENV: " , "}, "blocked"),
    ],
)
def test_environment_values_that_work_do_not_warn(fake_site, monkeypatch, env, red):
    fake_site.plugin("red", ("red_task",))
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert _status(fake_site.registry()) == {"red": red}


# -- head code that raises: the error names the head and the plugin that provides it ------------------------
BROKEN_HEAD_CODE = {  # what the plugin does -> (preamble, the method named in the error, the original message)
    "call-raises": (
        "def _call(self, h, m, training=None):\n    raise ZeroDivisionError('call exploded')\n{cls}.call = _call",
        "call()",
        "ZeroDivisionError: call exploded",
    ),
    "init-raises": (
        "def _init(self, *a, **k):\n    raise RuntimeError('init exploded')\n{cls}.__init__ = _init",
        "__init__()",
        "RuntimeError: init exploded",
    ),
    "options-validator-typeerror": (
        "from pydantic import model_validator\nfrom distilbert_heads import HeadOptions\n"
        "class _Opts(HeadOptions):\n    @model_validator(mode='after')\n    def _check(self):\n"
        "        raise TypeError('validator exploded')\n{cls}.options_schema = _Opts",
        "options",
        "validator exploded",
    ),
}


@pytest.mark.parametrize("behaviour", list(BROKEN_HEAD_CODE))
def test_head_code_raising_while_building_names_the_head_and_plugin(fake_site, behaviour):
    from distilbert_heads.plugins.head import HeadContractError, HeadOptionsError
    from distilbert_heads.testing import tiny_model

    code, method, original = BROKEN_HEAD_CODE[behaviour]
    module = fake_site.head_module("dht_bad_code_pkg", ("dht_bad_task",))
    (fake_site.root / module / "__init__.py").open("a").write("\n" + code.format(cls="DhtBadCodePkgHead") + "\n")
    fake_site.dist("distilbert-head-dht-bad", "3.1.4", {"dht_bad": module}, group="distilbert_heads")
    reset_registry()
    try:
        with pytest.raises((HeadContractError, HeadOptionsError)) as info:
            tiny_model("dht_bad_task")
    finally:
        reset_registry()
    message = str(info.value)
    for fact in (method, original, "dht_bad_code_pkg:DhtBadCodePkgHead"):
        assert fact in message
    if behaviour != "options-validator-typeerror":
        assert "plugin dht_bad (distilbert-head-dht-bad 3.1.4)" in message and "Exception encountered" not in message
        assert "\x1b[" not in message


@pytest.mark.parametrize("raised", ["ZeroDivisionError('decode exploded')", "ValueError('decode exploded')"])
def test_decode_raising_in_a_pipeline_names_the_head_and_plugin(fake_site, raised):
    from distilbert_heads import pipeline
    from distilbert_heads.plugins.head import HeadContractError
    from distilbert_heads.testing import tiny_model
    from distilbert_heads.text.tokenizer import DistilBertTokenizer

    module = fake_site.head_module("dht_decode_pkg", ("dht_decode_task",))
    (fake_site.root / module / "__init__.py").open("a").write(
        f"\ndef _decode(self, outputs, encoding=None):\n    raise {raised}\nDhtDecodePkgHead.decode = _decode\n"
    )
    fake_site.dist("distilbert-head-dht-decode", "0.2", {"dht_decode": module}, group="distilbert_heads")
    reset_registry()
    try:
        model = tiny_model("dht_decode_task")
    finally:
        reset_registry()
    model.tokenizer = DistilBertTokenizer.from_vocab(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "hello"])
    with pytest.raises(HeadContractError) as info:
        pipeline(model)(["hello", "hello"])
    message = str(info.value)
    for fact in (
        "decode()",
        "decode exploded",
        raised.split("(")[0],
        "plugin dht_decode (distilbert-head-dht-decode 0.2)",
        "dht_decode_pkg:DhtDecodePkgHead",
        "2 input(s)",
    ):
        assert fact in message
    assert type(info.value.__cause__).__name__ == raised.split("(")[0]


UPGRADES = {  # what changed in the plugin's head since the model was saved -> (module body, error, facts)
    "options": (
        "from distilbert_heads import HeadOptions\nclass _Opts(HeadOptions):\n    {option}: int = 2\n"
        "{cls}.options_schema = _Opts\n",
        "HeadOptionsError",
        ["width", "depth", "takes other options"],
    ),
    "layer-size": (
        "import keras\ndef _init(self, hidden_size, task_type, options=None, **kw):\n"
        "    TaskHead.__init__(self, hidden_size, task_type, options, **kw)\n"
        "    self.dense = keras.layers.Dense({units}, name='dense')\n"
        "def _call(self, h, m, training=None):\n    return {{'logits': self.dense(h[:, 0, :])}}\n"
        "{cls}.__init__, {cls}.call = _init, _call\n",
        "CheckpointError",
        ["do not fit", "Layer 'dense' expected 2 variables", "whose layers differ"],
    ),
}


@pytest.mark.parametrize("change", list(UPGRADES))
def test_model_saved_with_an_older_plugin_version_says_which_version_to_install(fake_site, tmp_path, change):
    """A .keras file whose plugin was upgraded (here from 1.0 to 2.0) in an incompatible way since it was saved."""
    import shutil

    from distilbert_heads.model.loading import load_task_model
    from distilbert_heads.testing import tiny_model

    body, error_name, facts = UPGRADES[change]

    def release(version: str, option: str, units: int) -> None:
        module = fake_site.head_module(f"dht_up_{version.replace('.', '_')}_pkg", ("dht_up_task",))
        cls = "".join(part.title() for part in module.split("_")) + "Head"
        (fake_site.root / module / "__init__.py").open("a").write(
            "\n" + body.format(cls=cls, option=option, units=units)
        )
        for info in fake_site.root.glob("distilbert_head_dht_up-*.dist-info"):
            shutil.rmtree(info)  # "pip install --upgrade": the old release is gone
        fake_site.dist("distilbert-head-dht-up", version, {"dht_up": module}, group="distilbert_heads")
        reset_registry()
        importlib.invalidate_caches()

    path = tmp_path / "upgraded.keras"
    try:
        release("1.0", "width", 2)
        tiny_model("dht_up_task").save(path)
        release("2.0", "depth", 3)
        with pytest.raises(ValueError) as info:
            load_task_model(path)
    finally:
        reset_registry()
    message = str(info.value)
    assert error_name in {cls.__name__ for cls in type(info.value).__mro__}
    for fact in (
        "distilbert-head-dht-up 1.0",
        "distilbert-head-dht-up 2.0",
        "pip install distilbert-head-dht-up==1.0",
        *facts,
    ):
        assert fact in message


@pytest.mark.parametrize(
    ("version", "install"),
    [
        ("1.2", "pip install distilbert-head-gone==1.2"),
        ("unknown", "pip install distilbert-head-gone"),
        (None, "pip install distilbert-head-gone"),
    ],
)
def test_saved_head_of_a_missing_plugin_names_a_pip_command_that_works(fake_site, version, install):
    """A distribution without a Version in its metadata is listed as version 'unknown'.

    Its pip command is never 'pip install x==unknown'."""
    info = fake_site.root / "distilbert_head_nover-0.dist-info"
    fake_site.dist("distilbert-head-nover", "0", {"nover": fake_site.head_module("nover_pkg", ("nover_task",))})
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: distilbert-head-nover\n")
    registry = fake_site.registry()
    assert registry.get_head("nover_task").version == "unknown"
    with pytest.raises(registry_module.MissingHeadPluginError) as error:
        registry.head_for_saved("gone_task", head_name="gone", distribution="distilbert-head-gone", version=version)
    message = str(error.value)
    assert f"{install}\n" in message or message.endswith(install) or f"{install} " in message
    assert "==unknown" not in message and "==None" not in message
