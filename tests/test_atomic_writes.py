"""Every file the library writes is replaced atomically: a save that raises part way, a full disk,
a failing fsync or rename, or a kill mid-save leaves the previous file (or folder) loadable and
unchanged, and (short of a kill) no temporary file behind."""

from __future__ import annotations

import builtins
import errno
import functools
import io
import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import keras
import numpy as np
import pytest
from helpers import TINY_ENCODER, TINY_TRAINING, tiny_vocab
from test_training import task_files

from distilbert_heads import atomic
from distilbert_heads.cli import main
from distilbert_heads.encoder.distilbert import DistilBERT
from distilbert_heads.model.loading import load_task_model
from distilbert_heads.model.task_model import DistilBertTaskModel
from distilbert_heads.testing import tiny_model
from distilbert_heads.text.tokenizer import DistilBertTokenizer

TEXTS = ["the film was great", "a bad movie", "zebra"]


def make_tokenizer(version: int) -> DistilBertTokenizer:
    """Two tokenizers that give different ids for TEXTS (version 1 lacks the ## pieces)."""
    words = ["the", "film", "was", "great", "bad", "movie"]
    return DistilBertTokenizer.from_vocab(tiny_vocab(words, letters=True, letter_pieces=version == 2))


def make_model(version: int) -> DistilBertTaskModel:
    keras.utils.set_random_seed(version)
    model = tiny_model("sentiment")
    model.tokenizer = make_tokenizer(version)
    return model


def model_answers(path: Path) -> np.ndarray:
    model = load_task_model(path)
    ids = model.tokenizer.encode(TEXTS).as_model_inputs()
    return keras.ops.convert_to_numpy(model(ids, training=False)["sentiment"]["logits"])


def encoder_answers(encoder: Any) -> np.ndarray:
    ids = make_tokenizer(2).encode(TEXTS).as_model_inputs()
    return keras.ops.convert_to_numpy(encoder(ids, training=False)["last_hidden_state"])


def tokenizer_answers(path: Path) -> np.ndarray:
    """The ids from each of the folder's files: tokenizer.json and vocab.txt (and tokenizer_config.json)."""
    from_json = DistilBertTokenizer.from_pretrained(path).encode(TEXTS).input_ids
    from_vocab = DistilBertTokenizer.from_vocab(path / "vocab.txt").encode(TEXTS).input_ids
    json.loads((path / "tokenizer_config.json").read_text(encoding="utf-8"))
    return np.concatenate([from_json, from_vocab])


def serving_answers(path: Path) -> np.ndarray:
    import tensorflow as tf

    tokenizer = DistilBertTokenizer.from_pretrained(path / "tokenizer")
    encoding = tokenizer.encode(TEXTS)
    serve = tf.saved_model.load(str(path)).signatures["serving_default"]
    outputs = serve(input_ids=tf.constant(encoding.input_ids), attention_mask=tf.constant(encoding.attention_mask))
    return outputs["sentiment__logits"].numpy()


def export(model: DistilBertTaskModel, path: Path) -> None:
    if keras.backend.backend() != "tensorflow":
        pytest.skip("export needs the TensorFlow backend")
    from distilbert_heads.serving.export import export_saved_model

    export_saved_model(model, path, overwrite=True)


@dataclass
class Writer:
    """One way the library writes: ``write(version, target)`` writes that version; ``read(target)`` answers."""

    name: str
    target: str
    write: Callable[[int, Path], None]
    read: Callable[[Path], np.ndarray]


WRITERS = [
    Writer("model.save", "model.keras", lambda v, p: make_model(v).save(p), model_answers),
    Writer(
        "DistilBERT.save",
        "encoder.keras",
        lambda v, p: make_model(v).encoder.save(p),
        lambda p: encoder_answers(keras.models.load_model(p)),
    ),
    Writer(
        "save_pretrained",
        "checkpoint",
        lambda v, p: make_model(v).encoder.save_pretrained(p),
        lambda p: encoder_answers(DistilBERT.from_pretrained(p)),
    ),
    Writer("tokenizer.save", "tokenizer", lambda v, p: make_tokenizer(v).save(p), tokenizer_answers),
    Writer("export", "serving", lambda v, p: export(make_model(v), p), serving_answers),
]


# -- faults ----------------------------------------------------------------------------------------------
class _FillingDisk(io.FileIO):
    """A file on a disk with ``room`` bytes left (shared by all files): a longer write fails with ``error``."""

    room = 0
    error: BaseException = OSError(errno.ENOSPC, "No space left on device")

    def write(self, data: Any) -> int:
        data = bytes(data)
        if len(data) > _FillingDisk.room:
            super().write(data[: _FillingDisk.room])
            _FillingDisk.room = 0
            raise _FillingDisk.error
        _FillingDisk.room -= len(data)
        return super().write(data)


def fill_disk(monkeypatch: pytest.MonkeyPatch, under: Path, error: BaseException, room: int = 200) -> None:
    """Make every file opened for writing below ``under`` fail with ``error`` after ``room`` bytes in all."""
    real_open = builtins.open
    _FillingDisk.room, _FillingDisk.error = room, error

    def fake_open(file: Any, mode: str = "r", *args: Any, **kwargs: Any) -> Any:
        writing = any(flag in mode for flag in "wax+")
        if not writing or not isinstance(file, (str, os.PathLike)) or under not in Path(file).parents:
            return real_open(file, mode, *args, **kwargs)
        raw = _FillingDisk(file, mode.replace("t", "").replace("b", "") or "w")
        if "b" in mode:
            return raw
        return io.TextIOWrapper(
            io.BufferedWriter(raw), encoding=kwargs.get("encoding") or "utf-8", newline=kwargs.get("newline")
        )

    monkeypatch.setattr(builtins, "open", fake_open)
    monkeypatch.setattr(io, "open", fake_open)


def fail_fsync(monkeypatch: pytest.MonkeyPatch, under: Path) -> None:
    def fsync(descriptor: int) -> None:
        raise OSError(errno.EIO, "Input/output error")

    monkeypatch.setattr(os, "fsync", fsync)


def fail_move_in(monkeypatch: pytest.MonkeyPatch, under: Path) -> None:
    """Renaming a finished temporary onto its target fails (after a folder's old copy was moved aside)."""
    real_replace = os.replace

    def replace(source: Any, destination: Any) -> None:
        if ".tmp-" in Path(source).name:
            raise OSError(errno.EACCES, "Permission denied")
        real_replace(source, destination)

    monkeypatch.setattr(os, "replace", replace)


FAULTS: dict[str, Callable[[pytest.MonkeyPatch, Path], None]] = {
    "raises part way": lambda mp, under: fill_disk(mp, under, RuntimeError("injected failure")),
    "disk full": lambda mp, under: fill_disk(mp, under, OSError(errno.ENOSPC, "No space left on device")),
    "fsync fails": fail_fsync,
    "rename fails": fail_move_in,
}


def leftovers(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.iterdir() if ".tmp-" in p.name or ".old-" in p.name)


@pytest.fixture(scope="module")
def old_files(tmp_path_factory):
    """Writer name -> (a good previous file or folder, written by version 1; its answers)."""
    cache: dict[str, tuple[Path, np.ndarray]] = {}

    def get(writer: Writer) -> tuple[Path, np.ndarray]:
        if writer.name not in cache:
            path = tmp_path_factory.mktemp(writer.name) / writer.target
            writer.write(1, path)
            cache[writer.name] = (path, writer.read(path))
        return cache[writer.name]

    return get


def copy_of(source: Path, directory: Path) -> Path:
    import shutil

    target = directory / source.name
    directory.mkdir(parents=True, exist_ok=True)
    if source.is_dir():
        shutil.copytree(source, target)
    else:
        shutil.copy2(source, target)
    return target


def assert_unchanged(writer: Writer, target: Path, expected: np.ndarray) -> None:
    np.testing.assert_array_equal(writer.read(target), expected)
    assert leftovers(target.parent) == []


# -- tests -------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("writer", WRITERS, ids=lambda w: w.name)
def test_a_save_replaces_the_previous_file_and_leaves_nothing_else(writer, old_files, tmp_path):
    old, old_answers = old_files(writer)
    target = copy_of(old, tmp_path)
    writer.write(2, target)
    new_answers = writer.read(target)
    assert new_answers.shape != old_answers.shape or not np.array_equal(new_answers, old_answers)
    assert sorted(p.name for p in tmp_path.iterdir()) == [target.name]


@pytest.mark.parametrize("fault", FAULTS)
@pytest.mark.parametrize("writer", WRITERS, ids=lambda w: w.name)
def test_a_failed_save_keeps_the_previous_file(writer, fault, old_files, tmp_path, monkeypatch):
    old, old_answers = old_files(writer)
    target = copy_of(old, tmp_path)
    with monkeypatch.context() as patch:
        FAULTS[fault](patch, tmp_path)
        with pytest.raises((OSError, RuntimeError)):
            writer.write(2, target)
    assert_unchanged(writer, target, old_answers)


@pytest.mark.parametrize("fault", ["raises part way", "disk full"])
@pytest.mark.parametrize("command", ["train", "convert"])
def test_a_failed_train_or_convert_keeps_the_previous_model(command, fault, old_files, tmp_path, monkeypatch, capsys):
    writer = WRITERS[0]
    old, old_answers = old_files(writer)
    target = copy_of(old, tmp_path / "models")
    if command == "train":
        from distilbert_heads.training.loop import train

        train_file, _ = task_files(tmp_path, "sentiment")
        run = functools.partial(
            train,
            "sentiment",
            train_file,
            epochs=1,
            batch_size=8,
            max_length=32,
            out=target,
            vocab_size=200,
            verbose=0,
            **TINY_TRAINING,
        )
    else:
        checkpoint = tmp_path / "hf"
        make_model(2).encoder.save_pretrained(checkpoint)
        make_tokenizer(2).save(checkpoint)
        run = functools.partial(main, ["convert", str(checkpoint), "--task", "sentiment", "--out", str(target)])
    with monkeypatch.context() as patch:
        FAULTS[fault](patch, target.parent)
        try:
            code = run()
        except (OSError, RuntimeError):
            code = None
    if command == "convert" and fault == "disk full":
        assert code == 2 and "No space left on device" in capsys.readouterr().err
    else:
        assert code is None
    assert_unchanged(writer, target, old_answers)


def gap_tokenizer(tmp_path: Path) -> DistilBertTokenizer:
    """A tokenizer read from a tokenizer.json whose vocabulary skips the ids 7 and 8."""
    make_tokenizer(2).save(tmp_path / "good")
    spec = json.loads((tmp_path / "good" / "tokenizer.json").read_text(encoding="utf-8"))
    spec["model"]["vocab"] = {token: index + 2 * (index >= 7) for token, index in spec["model"]["vocab"].items()}
    (tmp_path / "gap.json").write_text(json.dumps(spec), encoding="utf-8")
    return DistilBertTokenizer.from_tokenizer_json(tmp_path / "gap.json")


@pytest.mark.parametrize(
    "writer", [w for w in WRITERS if w.name in ("model.save", "tokenizer.save", "export")], ids=lambda w: w.name
)
def test_a_tokenizer_with_missing_ids_is_refused_and_the_previous_file_kept(writer, old_files, tmp_path):
    old, old_answers = old_files(writer)
    target = copy_of(old, tmp_path / "out")
    tokenizer = gap_tokenizer(tmp_path)
    assert tokenizer.encode(["the film"]).input_ids.size  # it loads and tokenizes
    model = make_model(2)
    model.tokenizer = tokenizer
    save = {
        "model.save": lambda: model.save(target),
        "tokenizer.save": lambda: tokenizer.save(target),
        "export": lambda: export(model, target),
    }[writer.name]
    with pytest.raises(ValueError) as raised:
        save()
    message = str(raised.value)
    assert "vocab.txt" in message and "no token has id 7, 8" in message and "[unused<N>]" in message
    assert_unchanged(writer, target, old_answers)


def test_save_keeps_keras_overwrite_prompt(old_files, tmp_path, monkeypatch):
    old, old_answers = old_files(WRITERS[0])
    target = copy_of(old, tmp_path)
    answers = iter(["n", "y"])
    monkeypatch.setattr(builtins, "input", lambda prompt="": next(answers))
    make_model(2).save(target, overwrite=False)  # "n": nothing written
    assert_unchanged(WRITERS[0], target, old_answers)
    make_model(2).save(target, overwrite=False)  # "y"
    assert not np.array_equal(model_answers(target), old_answers)


def test_folders_keep_files_the_save_does_not_write(tmp_path):
    checkpoint = tmp_path / "checkpoint"
    make_tokenizer(1).save(checkpoint)
    (checkpoint / "README.md").write_text("notes", encoding="utf-8")
    make_model(2).encoder.save_pretrained(checkpoint)
    assert sorted(p.name for p in checkpoint.iterdir()) == sorted(
        ["README.md", "config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json", "vocab.txt"]
    )
    assert (checkpoint / "README.md").read_text(encoding="utf-8") == "notes"
    assert DistilBertTokenizer.from_pretrained(checkpoint).vocab_size == make_tokenizer(1).vocab_size


def test_a_replaced_file_keeps_its_permissions(tmp_path):
    target = tmp_path / "data.jsonl"
    target.write_text("old\n", encoding="utf-8")
    target.chmod(0o640)
    with atomic.atomic_path(target) as temp:
        assert temp.parent == tmp_path and temp.name.startswith(".data.jsonl.tmp-") and temp.suffix == ".jsonl"
        temp.write_text("new\n", encoding="utf-8")
    assert target.read_text(encoding="utf-8") == "new\n" and (target.stat().st_mode & 0o777) == 0o640


KILLED_CHILD = textwrap.dedent("""
    import sys, time
    from pathlib import Path
    import keras
    import distilbert_heads
    from distilbert_heads.model.task_model import DistilBertTaskModel
    from distilbert_heads.testing import tiny_model

    target, marker = Path(sys.argv[1]), Path(sys.argv[2])
    real_save_assets = DistilBertTaskModel.save_assets

    def save_assets_then_hang(self, dir_path):
        real_save_assets(self, dir_path)
        marker.write_text("config and weights are being written")
        time.sleep(600)

    DistilBertTaskModel.save_assets = save_assets_then_hang
    keras.utils.set_random_seed(2)
    tiny_model("sentiment").save(target)
""")


@pytest.mark.slow
def test_a_save_killed_midway_keeps_the_previous_file(old_files, tmp_path):
    old, old_answers = old_files(WRITERS[0])
    target = copy_of(old, tmp_path)
    marker = tmp_path / "marker"
    child = subprocess.Popen(
        [sys.executable, "-c", KILLED_CHILD, str(target), str(marker)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        deadline = time.monotonic() + 300
        while not marker.exists():
            assert child.poll() is None, child.stderr.read().decode()[-2000:]
            assert time.monotonic() < deadline, "the child never reached the middle of its save"
            time.sleep(0.1)
        temporaries = leftovers(tmp_path)
        assert len(temporaries) == 1 and temporaries[0].startswith(".model.keras.tmp-")
        assert (tmp_path / temporaries[0]).stat().st_size > 0  # the new model was part written
    finally:
        child.send_signal(signal.SIGKILL)
        child.wait()
    np.testing.assert_array_equal(model_answers(target), old_answers)
    assert leftovers(tmp_path) == temporaries  # only the documented, safe-to-delete temporary


# -- where the target is not a plain path ------------------------------------------------------------------
@pytest.mark.parametrize("writer", WRITERS, ids=lambda w: w.name)
def test_a_save_through_a_symlink_updates_what_it_points_to(writer, old_files, tmp_path):
    old, old_answers = old_files(writer)
    real = copy_of(old, tmp_path / "versions")
    link = tmp_path / f"latest-{writer.target}"
    link.symlink_to(real, target_is_directory=real.is_dir())
    writer.write(2, link)
    assert link.is_symlink() and link.resolve() == real.resolve()  # the link is kept, not replaced by a copy
    new_answers = writer.read(real)
    assert new_answers.shape != old_answers.shape or not np.array_equal(new_answers, old_answers)
    np.testing.assert_array_equal(writer.read(link), new_answers)
    assert leftovers(real.parent) == [] and leftovers(tmp_path) == []


@pytest.mark.parametrize("writer", WRITERS, ids=lambda w: w.name)
def test_a_save_under_a_file_names_the_file_in_the_way(writer, tmp_path):
    blocking = tmp_path / "model.keras"
    blocking.write_bytes(b"a file, not a folder")
    with pytest.raises(NotADirectoryError) as error:
        writer.write(2, blocking / "sub" / writer.target)
    assert str(blocking) in str(error.value) and "is a file, not a folder" in str(error.value)
    assert "Errno" not in str(error.value)
    assert blocking.read_bytes() == b"a file, not a folder"


@pytest.mark.parametrize("command", ["train", "convert"])
@pytest.mark.parametrize("in_the_way", ["directory", "file above"])
def test_cli_out_that_cannot_be_written_is_refused_before_any_work(command, in_the_way, tmp_path, capsys, monkeypatch):
    if in_the_way == "directory":
        out = tmp_path / "model.keras"
        out.mkdir()
        expected = "a directory is in the way"
    else:
        (tmp_path / "file").write_text("x", encoding="utf-8")
        out = tmp_path / "file" / "model.keras"
        expected = "is a file, not a folder"
    data = tmp_path / "train.jsonl"
    data.write_text('{"text": "a", "label": "x"}\n', encoding="utf-8")
    # The check is argparse's: no command runs (training or loading would fail differently here).
    monkeypatch.setattr("distilbert_heads.cli._start_keras_quietly", lambda: pytest.fail("work started"))
    argv = (
        ["train", "--task", "sentiment", "--train", str(data)]
        if command == "train"
        else ["convert", str(tmp_path), "--task", "sentiment"]
    ) + ["--out", str(out)]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and expected in err and len(err.strip().splitlines()) == 1


def test_save_pretrained_into_the_working_directory_keeps_it_and_its_other_files(tmp_path, monkeypatch):
    from distilbert_heads import DistilBERT

    monkeypatch.chdir(tmp_path)
    (tmp_path / "notes.txt").write_text("mine", encoding="utf-8")
    encoder = DistilBERT(**TINY_ENCODER)
    encoder.save_pretrained(".")
    encoder.save_pretrained(".")  # over the first save
    assert Path.cwd() == tmp_path and tmp_path.is_dir()
    assert (tmp_path / "notes.txt").read_text(encoding="utf-8") == "mine"
    assert not [entry.name for entry in tmp_path.iterdir() if ".tmp-" in entry.name or ".old-" in entry.name]
    reloaded = DistilBERT.from_pretrained(".")
    for ours, theirs in zip(encoder.weights, reloaded.weights, strict=True):
        np.testing.assert_array_equal(np.asarray(ours), np.asarray(theirs))


def test_export_over_the_working_directory_is_refused(tmp_path, monkeypatch):
    from distilbert_heads import atomic

    monkeypatch.chdir(tmp_path)
    (tmp_path / "notes.txt").write_text("mine", encoding="utf-8")
    with pytest.raises(IsADirectoryError, match="current working directory"):
        with atomic.atomic_directory("."):
            pass
    assert (tmp_path / "notes.txt").read_text(encoding="utf-8") == "mine"
