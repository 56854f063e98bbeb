"""``distilbert-heads heads``: the listing as a table and as JSON, in process and as the installed script."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

import distilbert_heads.plugins.registry as registry_module
from distilbert_heads.cli import main

SCRIPT = Path(sys.executable).with_name("distilbert-heads")


@pytest.fixture
def use_registry(fake_site, monkeypatch):
    """Install a registry over the fake site as the process-wide one for `main`."""

    def install(**kwargs):
        monkeypatch.setattr(registry_module, "_registry", fake_site.registry(**kwargs))

    yield install
    registry_module.reset_registry()


def test_heads_prints_a_table(fake_site, use_registry, capsys):
    fake_site.plugin("good", ("good_task",), ("gd",), version="1.2.3")
    fake_site.plugin("broken", ("broken_task",), preamble="raise RuntimeError('boom at import')")
    use_registry()
    assert main(["heads"]) == 0
    out = capsys.readouterr().out
    lines = out.splitlines()
    header = next(line for line in lines if "Task type" in line)
    for column in ("Aliases", "Head class", "Plugin", "Distribution", "Version", "Status", "Error"):
        assert column in header
    good = next(line for line in lines if "good_task" in line)
    for cell in ("gd", "good_pkg:GoodPkgHead", "distilbert-head-good", "1.2.3", "ok"):
        assert cell in good
    broken = next(line for line in lines if "distilbert-head-broken" in line)
    assert "failed" in broken and "RuntimeError: boom at import" in broken
    assert any("sentiment_analysis" in line and "builtin.dht_builtin_a" in line for line in lines)


def test_heads_json_is_the_listing(fake_site, use_registry, capsys):
    fake_site.plugin("good", ("good_task",), ("gd",))
    use_registry()
    assert main(["heads", "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert rows == [row.as_dict() for row in registry_module.get_registry().list_heads()]
    assert {row["task_type"] for row in rows} == {"sentiment_analysis", "text_classification", "good_task"}
    good = next(row for row in rows if row["plugin"] == "good")
    assert good["aliases"] == ["gd"] and good["status"] == "ok" and good["error"] is None


def test_heads_on_conflict_still_lists_then_exits_1(fake_site, use_registry, capsys):
    fake_site.plugin("one", ("shared_task",))
    fake_site.plugin("two", ("shared_task",))
    use_registry()
    assert main(["heads", "--json"]) == 1
    captured = capsys.readouterr()
    rows = json.loads(captured.out)
    assert next(row for row in rows if row["plugin"] == "two")["status"] == "conflict"
    assert "distilbert-head-one" in captured.err and "DISTILBERT_HEADS_BLOCK_PLUGINS" in captured.err


@pytest.mark.parametrize("broken", [True, False], ids=["a-plugin-failed", "all-healthy"])
def test_heads_in_strict_mode_exits_1_only_while_a_plugin_failed(fake_site, use_registry, capsys, broken):
    if broken:
        fake_site.plugin("broken", ("broken_task",), preamble="raise RuntimeError('boom at import')")
    fake_site.plugin("good", ("good_task",))
    fake_site.env(strict=True)
    use_registry()
    assert main(["heads", "--json"]) == (1 if broken else 0)
    captured = capsys.readouterr()
    if broken:
        assert "boom at import" in captured.err and "distilbert-head-broken" in captured.err
        assert registry_module.get_head("good_task").plugin == "good"  # strict mode breaks only the listing
    else:
        assert {row["plugin"]: row["status"] for row in json.loads(captured.out)}["good"] == "ok"


def test_help_says_what_each_command_does_with_an_example(capsys):
    assert main(["--help"]) == 0
    out = capsys.readouterr().out
    assert "heads" in out and "example" in out
    assert main(["heads", "--help"]) == 0
    out = capsys.readouterr().out
    assert "list the installed task heads" in out.lower() or "list each task type" in out
    assert "distilbert-heads heads --json" in out


@pytest.mark.parametrize(("argv", "expected"), [([], "COMMAND"), (["nope"], "'nope'")], ids=["missing", "unknown"])
def test_missing_or_unknown_command_is_one_error_line(capsys, argv, expected):
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("error:") and len(err.splitlines()) == 1 and "usage:" not in err
    assert expected in err and "distilbert-heads --help" in err


@pytest.mark.slow
def test_installed_console_script_prints_json(fake_site):
    """The real entry-point group and the real console script, in a fresh process."""
    module = fake_site.head_module("dht_cli_pkg", ("dht_cli_task",), ("dcli",))
    fake_site.dist("distilbert-head-dht-cli", "0.3.0", {"dht_cli": module}, group="distilbert_heads")
    assert SCRIPT.exists(), f"console script {SCRIPT} missing: reinstall with pip install -e ."
    command = [str(SCRIPT), "heads", "--json"]
    env = {k: v for k, v in os.environ.items() if not k.startswith("DISTILBERT_HEADS_")}
    env["PYTHONPATH"] = os.pathsep.join([str(fake_site.root), env.get("PYTHONPATH", "")])
    result = subprocess.run(command, env=env, capture_output=True, text=True, timeout=180)
    assert result.returncode == 0, result.stderr[-3000:]
    rows = json.loads(result.stdout)
    (row,) = [row for row in rows if row["plugin"] == "dht_cli"]
    assert row == {
        "task_type": "dht_cli_task",
        "aliases": ["dcli"],
        "head_class": "dht_cli_pkg:DhtCliPkgHead",
        "plugin": "dht_cli",
        "distribution": "distilbert-head-dht-cli",
        "version": "0.3.0",
        "status": "ok",
        "error": None,
    }
    assert {r["distribution"] for r in rows if r["plugin"].startswith("builtin.")} == {"distilbert-heads"}


@pytest.mark.slow
def test_module_entry_point_runs_main():
    result = subprocess.run(
        [sys.executable, "-m", "distilbert_heads.cli", "heads", "--help"], capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert "usage: distilbert-heads heads" in result.stdout


def test_warnings_print_as_one_line_each(monkeypatch, capsys):
    monkeypatch.setenv(registry_module.STRICT_ENV, "maybe")  # a value that cannot mean what was meant: warns
    monkeypatch.delenv("DISTILBERT_HEADS_DEBUG", raising=False)
    registry_module.reset_registry()
    registry_module._warned.clear()
    try:
        assert main(["heads", "--json"]) == 0
    finally:
        registry_module.reset_registry()
    captured = capsys.readouterr()
    json.loads(captured.out)
    warning_lines = [line for line in captured.err.splitlines() if "maybe" in line]
    assert len(warning_lines) == 1 and warning_lines[0].startswith("warning: "), captured.err
    assert ".py:" not in captured.err
