"""A run is a file: ``train --config run.toml``, the training record saved in the model, and ``info``."""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import subprocess
import sys
import typing
from pathlib import Path

import pytest
from helpers import assert_mentions
from test_training import task_files

import distilbert_heads
from distilbert_heads.cli import build_parser, main
from distilbert_heads.training.run_config import run_file_fields


def _train_parser() -> argparse.ArgumentParser:
    commands = next(action for action in build_parser()._actions if isinstance(action, argparse._SubParsersAction))
    return commands.choices["train"]


def _parse(*argv: str) -> argparse.Namespace:
    args, extra = build_parser().parse_known_args(["train", *argv])
    assert not extra
    return args


def _write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return path


@pytest.fixture
def data(tmp_path) -> Path:
    return _write(tmp_path / "data" / "train.jsonl", '{"text": "good", "label": "positive"}\n')


# -- the file's values, and flags over them ------------------------------------------------------------
def test_run_file_values_are_used_and_flags_override_them(tmp_path, data):
    config = _write(
        tmp_path / "run.toml",
        f'task = "sentiment"\ntrain = "{data}"\nout = "{tmp_path / "m.keras"}"\n'
        'batch-size = 4\nepochs = 7\ncased = true\nschedule = "cosine"\npretrained = "some/checkpoint"\n'
        "learning-rate = 1\n",
    )
    args = _parse("--config", str(config), "--epochs", "2", "--variant", "small")
    assert (args.task, args.train, args.out) == ("sentiment", str(data), str(tmp_path / "m.keras"))
    assert (args.batch_size, args.cased, args.schedule) == (4, True, "cosine")  # from the file
    assert args.learning_rate == 1.0 and isinstance(args.learning_rate, float)  # as --learning-rate 1 gives
    assert args.epochs == 2  # the flag over the file's 7
    # --variant on the command line replaces the file's choice in their group: no pretrained checkpoint.
    assert (args.variant, args.pretrained) == ("small", None)
    assert args.run_file["from_flags"] == ["epochs", "variant"]
    assert "epochs" not in args.run_file["from_file"] and "batch-size" in args.run_file["from_file"]
    assert args.run_file["values"]["epochs"] == 2 and args.run_file["values"]["cased"] is True
    assert args.run_file["sha256"] == hashlib.sha256(config.read_bytes()).hexdigest()
    assert not hasattr(_parse("--task", "sentiment", "--train", str(data), "--out", "x.keras"), "run_file")


def test_relative_paths_are_relative_to_the_run_file(tmp_path, data, monkeypatch):
    config = _write(
        tmp_path / "runs" / "run.toml",
        'task = "sentiment"\ntrain = "../data/train.jsonl"\nout = "models/m.keras"\nlogdir = "logs"\n'
        'pretrained = "distilbert-base-uncased"\n',
    )
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    args = _parse("--config", str(config))
    assert Path(args.train).resolve() == data.resolve()
    assert Path(args.out) == config.parent / "models" / "m.keras"
    assert Path(args.logdir) == config.parent / "logs"
    assert args.pretrained == "distilbert-base-uncased"  # no such folder beside the file: a hub id, kept


# Flags whose text has a structure of its own, by metavar: a value each accepts.
STRUCTURED_SAMPLES = {"[NAME:]TASK=FILE": "sentiment={data}", "NAME=FILE": "sentiment={data}", "NAME=WEIGHT": "ner=0.5"}


def _sample(action: argparse.Action, kind: object, tmp_path: Path, data: Path) -> object:
    """A value of a flag's run-file type that the flag itself accepts."""
    if kind is bool:
        return True
    if typing.get_origin(kind) is typing.Literal:
        return typing.get_args(kind)[-1]
    if typing.get_origin(kind) is list:
        return [_sample(action, typing.get_args(kind)[0], tmp_path, data)]
    if kind is int:
        return 2
    if kind is float:
        return 0.5
    if kind is str and str(action.metavar) in STRUCTURED_SAMPLES:
        return STRUCTURED_SAMPLES[str(action.metavar)].format(data=data)
    if kind is str:
        metavar = str(action.metavar)
        if metavar.endswith(".keras"):
            return str(tmp_path / "sample.keras")
        return str(data) if metavar == "FILE" else str(tmp_path / "sample")
    raise AssertionError(f"no sample value for {action.option_strings} of run-file type {kind}: teach this test")


def _flag_tokens(action: argparse.Action, value: object) -> list[str]:
    flag = max(action.option_strings, key=len)
    if value is True and action.nargs == 0:
        return [flag]
    return [flag, *map(str, value if isinstance(value, list) else [value])]


@pytest.mark.parametrize("key", list(run_file_fields(_train_parser())))
def test_every_train_flag_is_a_run_file_key_meaning_what_the_flag_means(tmp_path, data, key):
    action, kind = run_file_fields(_train_parser())[key]
    value = _sample(action, kind, tmp_path, data)
    others = {"task": "sentiment", "train": str(data), "out": str(tmp_path / "m.keras")}  # the required flags
    required = [token for name, given in others.items() if name != key for token in (f"--{name}", given)]
    config = _write(tmp_path / "run.toml", f"{json.dumps(key)} = {json.dumps(value)}\n")
    from_file = _parse("--config", str(config), *required)
    from_flag = _parse(*required, *_flag_tokens(action, value))
    assert getattr(from_file, action.dest) == getattr(from_flag, action.dest)
    assert from_file.run_file["from_file"] == [key]


# -- hostile run files ---------------------------------------------------------------------------------
_HEAD = 'task = "sentiment"\n'


@pytest.mark.parametrize(
    ("body", "facts"),
    [
        (_HEAD + "bach-size = 4\n", ["line 2", "'bach-size'", "did you mean 'batch-size'", "valid keys", "epochs"]),
        (_HEAD + "batch_size = 4\n", ["line 2", "'batch_size'", "did you mean 'batch-size'"]),
        (_HEAD + 'epochs = "3"\n', ["line 2", "'epochs'", "'3' (str)", "an integer", "--epochs"]),
        (_HEAD + "seed = true\n", ["line 2", "'seed'", "an integer"]),
        (_HEAD + "\nlearning-rate = 'fast'\n", ["line 3", "'learning-rate'", "a number"]),
        (_HEAD + 'schedule = "cos"\n', ["line 2", "'schedule'", "'linear', 'cosine', 'constant'"]),
        (_HEAD + 'precision = "fp16"\n', ["line 2", "'precision'", "'mixed_bfloat16'"]),
        (_HEAD + "epochs = 0\n", ["line 2", "'epochs'", "at least 1", "--epochs"]),
        (_HEAD + 'train = "missing.jsonl"\n', ["line 2", "'train'", "missing.jsonl", "does not exist"]),
        (_HEAD + 'out = "model.h5"\n', ["line 2", "'out'", ".keras"]),
        (_HEAD + "batch-size = \n", ["line 2", "batch-size =", "not valid TOML", "key = value"]),
        (_HEAD + 'variant = "small"\npretrained = "x"\n', ["'variant' (line 2)", "'pretrained' (line 3)", "one"]),
        (_HEAD + "[train]\nfile = 'x'\n", ["line 2", "'train'", "a string"]),
    ],
    ids=[
        "unknown-key",
        "underscore-key",
        "string-for-int",
        "bool-for-int",
        "text-for-number",
        "bad-choice",
        "bad-precision",
        "below-minimum",
        "missing-file",
        "not-keras",
        "syntax",
        "exclusive-keys",
        "table",
    ],
)
def test_hostile_run_files_name_the_file_key_and_line(tmp_path, capsys, body, facts):
    config = _write(tmp_path / "run.toml", body)
    code = main(["train", "--config", str(config), "--train", str(config), "--out", str(tmp_path / "m.keras")])
    err = capsys.readouterr().err
    assert code == 2
    lines = [line for line in err.splitlines() if line.startswith("error:")]
    assert len(lines) == 1, err
    assert_mentions(lines[0], str(config), *facts)


def test_required_flags_may_come_from_either_and_missing_ones_are_named(tmp_path, capsys, data):
    config = _write(tmp_path / "run.toml", f'train = "{data}"\n')
    assert main(["train", "--config", str(config), "--out", str(tmp_path / "m.keras")]) == 2
    assert_mentions(capsys.readouterr().err, "--task", "--train", "--head")


# -- the record in the saved model, and info -------------------------------------------------------------
@pytest.mark.slow
@pytest.mark.filterwarnings("ignore::distilbert_heads.training.ChanceLevelWarning")  # one epoch stays at chance
def test_info_in_a_fresh_process_shows_how_a_run_file_model_was_made(tmp_path, capsys):
    (tmp_path / "data").mkdir()
    train_file, eval_file = task_files(tmp_path / "data", "sentiment")
    config = _write(
        tmp_path / "runs" / "run.toml",
        'task = "sentiment"\ntrain = "../data/sentiment.train.jsonl"\neval = "../data/sentiment.test.jsonl"\n'
        'out = "sentiment.keras"\nepochs = 3\nbatch-size = 8\nmax-length = 48\nvocab-size = 200\nseed = 7\n',
    )
    code = main(["train", "--config", str(config), "--epochs", "1", "--json"])
    assert code == 0, capsys.readouterr().err
    model = config.parent / "sentiment.keras"

    command = [sys.executable, "-m", "distilbert_heads.cli", "info", str(model)]
    done = subprocess.run([*command, "--json"], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    info = json.loads(done.stdout)
    assert [(head["name"], sorted(head["labels"])) for head in info["heads"]] == [
        ("sentiment", ["negative", "positive"])
    ]
    assert info["max_length"] == 48 and info["tokenizer"]["case"] == "uncased"
    assert info["parameters"] > info["encoder"]["parameters"] > 0
    record = info["training_record"]
    assert record["versions"]["distilbert_heads"] == distilbert_heads.__version__
    settings = record["settings"]
    assert (settings["epochs"], settings["batch_size"], settings["seed"], settings["vocab_size"]) == (1, 8, 7, 200)
    assert settings["schedule"] == "constant" and settings["learning_rate"] == 1e-3  # the defaults it resolved
    for role, path in (("train", train_file), ("eval", eval_file)):
        assert record["data"][role]["sha256"] == hashlib.sha256(path.read_bytes()).hexdigest()
        assert Path(record["data"][role]["path"]).resolve() == path.resolve()
    run = record["run"]
    assert run["path"] == str(config) and run["from_flags"] == ["epochs", "json"]
    assert "batch-size" in run["from_file"] and run["values"]["epochs"] == 1

    table = subprocess.run(command, capture_output=True, text=True, timeout=300, env={**os.environ, "COLUMNS": "250"})
    assert table.returncode == 0, table.stderr
    for fact in (record["data"]["train"]["sha256"], distilbert_heads.__version__, "sentiment_analysis", str(config)):
        assert fact in table.stdout


def test_info_on_a_converted_model_says_it_has_no_training_record(tmp_path, capsys):
    from hf_reference import make_hf_model  # optional torch and transformers: skip when missing
    from test_cli import _tiny_vocab

    from distilbert_heads.text.tokenizer import DistilBertTokenizer

    vocab = _tiny_vocab()
    checkpoint = tmp_path / "hf"
    make_hf_model("DistilBertForSequenceClassification", vocab_size=len(vocab), num_labels=2).save_pretrained(
        checkpoint
    )
    DistilBertTokenizer.from_vocab(vocab).save(checkpoint)
    out = tmp_path / "converted.keras"
    assert main(["convert", str(checkpoint), "--task", "sentiment", "--out", str(out)]) == 0
    capsys.readouterr()

    assert main(["info", str(out)]) == 0
    assert_mentions(capsys.readouterr().out, "training record: none", "convert", "sentiment_analysis")
    assert main(["info", str(out), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["training_record"] is None


@pytest.mark.parametrize("name", ["rows.jsonl", "absent.keras"])
def test_info_on_a_file_that_is_no_model_exits_2_naming_it(tmp_path, capsys, name):
    path = tmp_path / name
    if name.endswith(".jsonl"):
        _write(path, '{"text": "good", "label": "positive"}\n')
    assert main(["info", str(path)]) == 2
    assert_mentions(capsys.readouterr().err, str(path), ".keras")


def test_train_help_shows_the_required_flags_and_the_run_file(capsys):
    assert main(["train", "--help"]) == 0
    usage = capsys.readouterr().out
    # --out is required (on the command line or in the file); --task/--train or --head say what to train on
    assert "--out MODEL.keras" in usage and "[--out" not in usage
    assert_mentions(usage, "--config RUN.toml", "relative to the run file", "distilbert-heads info")
