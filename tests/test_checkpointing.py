"""Checkpoints and resume: a run killed with SIGKILL mid-epoch resumes at the same step and data position and
ends with the uninterrupted run's weights; a failed checkpoint write never breaks the last good one; a resume
of another run is refused; ``best.keras`` holds the best held-out epoch."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path
from types import SimpleNamespace

import keras
import numpy as np
import pytest
from helpers import TINY_TRAINING as TINY
from helpers import assert_mentions, demo_rows, train_worker_command

import distilbert_heads  # noqa: F401  (registers the Keras classes)
from distilbert_heads.cli import main
from distilbert_heads.training import checkpointing
from distilbert_heads.training.callbacks import TokenDropoutBatches
from distilbert_heads.training.checkpointing import (
    BEST,
    LAST,
    STATE,
    TrainingCheckpoints,
    find_checkpoint,
    load_checkpoint,
    setting_differences,
)
from distilbert_heads.training.loop import train
from distilbert_heads.training.settings import TrainingError

pytestmark = pytest.mark.filterwarnings("ignore::distilbert_heads.training.ChanceLevelWarning")  # tiny runs

# 24 rows in batches of 4: 6 steps an epoch, 12 in 2 epochs, 2 batches accumulated per update.
RUN = {"epochs": 2, "batch_size": 4, "max_length": 32, "seed": 3, "token_dropout": 0.2, **TINY}
RUN["gradient_accumulation_steps"] = 2


@pytest.fixture(scope="module")
def sentiment_file(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("runs") / "sentiment.jsonl"
    path.write_text("".join(json.dumps(row) + "\n" for row in demo_rows("sentiment", 24)), encoding="utf-8")
    return path


def assert_same_weights(first, second, atol: float = 1e-6) -> None:
    assert len(first) == len(second)
    for a, b in zip(first, second):
        np.testing.assert_allclose(a, b, rtol=0, atol=atol)


@pytest.fixture(scope="module")
def uninterrupted(sentiment_file, demo_tokenizer, tmp_path_factory):
    directory = tmp_path_factory.mktemp("uninterrupted")
    return train("sentiment", sentiment_file, tokenizer=demo_tokenizer, verbose=0, checkpoint_dir=directory, **RUN)


@pytest.fixture
def finished_run_checkpoints(uninterrupted, tmp_path) -> Path:
    """A copy of the checkpoint folder of a finished `RUN` (trained once per module), for a test to change."""
    return Path(shutil.copytree(uninterrupted.checkpoint_dir, tmp_path / "checkpoints"))


@pytest.mark.parametrize(
    ("every", "kill_at", "position", "control"),
    [
        # Checkpoints at steps 3 and 9 (step 6 is an epoch end, checkpointed there); killed after step 10: resumes
        # at epoch 2, batch 3, half-way through an accumulated update (the partial gradient is in the checkpoint).
        pytest.param(3, 10, (1, 3, 9), True, id="mid-epoch"),
        # Checkpoints at step 4 and the epoch end (step 6); killed after step 7: resumes at the start of epoch 2.
        # The control run (see the test) shows the same run's sensitivity to the random state: needed once only.
        pytest.param(4, 7, (1, 0, 6), False, id="epoch-start"),
    ],
)
def test_run_killed_with_sigkill_resumes_to_the_uninterrupted_runs_weights(
    sentiment_file, uninterrupted, tmp_path, every, kill_at, position, control
):

    killed_dir = tmp_path / "killed"
    # Trains like `RUN` in a process of its own, which kills itself with SIGKILL right after step `kill_at`.
    arguments = {**RUN, "checkpoint_dir": str(killed_dir), "checkpoint_every": every}
    done = subprocess.run(
        train_worker_command("sentiment", str(sentiment_file), arguments, kill_at=kill_at),
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
        env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"},
    )
    assert done.returncode == -9, done.stdout[-2000:] + done.stderr[-3000:]  # killed by SIGKILL, not finished
    checkpoint = load_checkpoint(killed_dir)
    assert (checkpoint.epoch, checkpoint.batch, checkpoint.state["global_step"]) == position
    assert not checkpoint.finished and len(checkpoint.state["history"]["loss"]) == 1

    copy = tmp_path / "copy of the checkpoint"
    shutil.copytree(killed_dir, copy)

    # No tokenizer given: the resumed run takes the checkpoint's. Same seed, same settings.
    resumed = train("sentiment", sentiment_file, verbose=0, checkpoint_dir=killed_dir, resume=True, **RUN)
    assert int(resumed.model.optimizer.iterations) == int(uninterrupted.model.optimizer.iterations) == 6
    assert_same_weights(resumed.model.get_weights(), uninterrupted.model.get_weights())
    assert resumed.epochs_run == 2 and resumed.history["loss"][0] == uninterrupted.history["loss"][0]
    final = load_checkpoint(killed_dir)
    assert (final.epoch, final.batch, final.finished) == (2, 0, True)

    if not control:
        return
    # The control: resuming from the same checkpoint without its random state (dropout masks) ends elsewhere, so
    # the equality above depends on that state being restored.
    restore_all = checkpointing.Checkpoint.restore

    def restore_all_but_random_state(self, model):
        fresh = [keras.ops.convert_to_numpy(v) for v in checkpointing.seed_state_variables(model)]
        restore_all(self, model)
        for variable, value in zip(checkpointing.seed_state_variables(model), fresh):
            variable.assign(value)

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(checkpointing.Checkpoint, "restore", restore_all_but_random_state)
        patch.setattr(checkpointing.Checkpoint, "resume_callbacks", lambda self: [])  # torch's generator, on PyTorch
        drifted = train("sentiment", sentiment_file, verbose=0, checkpoint_dir=copy, resume=True, **RUN)
    differences = [np.abs(a - b).max() for a, b in zip(drifted.model.get_weights(), resumed.model.get_weights())]
    assert max(differences) > 1e-5


def test_batches_are_a_pure_function_of_seed_epoch_and_batch(demo_tokenizer):
    encoding = demo_tokenizer.encode([row["text"] for row in demo_rows("sentiment", 24)], max_length=16)
    inputs, labels = encoding.as_model_inputs(), {"head": np.arange(24)}

    def batches():
        return TokenDropoutBatches(inputs, labels, batch_size=5, rate=0.3, tokenizer=demo_tokenizer, seed=11)

    whole = batches()
    whole.start_at(2, 0)
    served = [whole[i] for i in range(len(whole))]
    skipped = batches()
    skipped.start_at(2, 3)  # epoch 2 from its batch 3, with no batch of epochs 0 and 1 ever drawn
    assert len(skipped) == len(whole) - 3 == 2
    for index in range(len(skipped)):
        (x_a, y_a), (x_b, y_b) = skipped[index], served[index + 3]
        np.testing.assert_array_equal(x_a["input_ids"], x_b["input_ids"])
        np.testing.assert_array_equal(y_a["head"], y_b["head"])
    other_epoch = batches()
    other_epoch.start_at(1, 0)
    assert not np.array_equal(other_epoch[0][1]["head"], served[0][1]["head"])
    with pytest.raises(ValueError) as error:
        whole.start_at(0, 5)
    assert_mentions(error, "start_at(0, 5)", "5 batches")


# -- atomic checkpoint writes ----------------------------------------------------------------------------------
def _fail_weights(callback, monkeypatch):
    def partial_save(path, *args, **kwargs):
        Path(path).write_bytes(b"\x89HDF\r\n half a file")
        raise OSError("disk full while writing the weights")

    monkeypatch.setattr(callback.model, "save_weights", partial_save)


def _fail_random_state(callback, monkeypatch):
    def partial_savez(path, **arrays):
        Path(path).write_bytes(b"PK\x03\x04 half an archive")
        raise OSError("disk full while writing the random state")

    monkeypatch.setattr(checkpointing.np, "savez", partial_savez)


def _fail_state(callback, monkeypatch):
    real_write_text = Path.write_text

    def partial_write(self, text, *args, **kwargs):
        if self.name == STATE:
            real_write_text(self, text[:10], *args, **kwargs)
            raise OSError("disk full while writing state.json")
        return real_write_text(self, text, *args, **kwargs)

    monkeypatch.setattr(Path, "write_text", partial_write)


@pytest.mark.parametrize("fail", [_fail_weights, _fail_random_state, _fail_state])
def test_a_failed_checkpoint_write_leaves_the_previous_checkpoint_whole(
    sentiment_file, demo_tokenizer, finished_run_checkpoints, monkeypatch, fail
):
    directory = finished_run_checkpoints
    # Resuming a finished run loads its last checkpoint and trains nothing: the model that checkpoint holds.
    result = train("sentiment", sentiment_file, verbose=0, checkpoint_dir=directory, resume=True, **RUN)
    good = load_checkpoint(directory)
    saved_weights = result.model.get_weights()

    model = result.model
    callback = TrainingCheckpoints(
        directory,
        batches=SimpleNamespace(seed=0, batches_per_epoch=2, epoch=0, first_batch=0),  # what a save reads
        tokenizer=demo_tokenizer,
        settings={},
        epochs=1,
    )
    callback.set_model(model)
    for variable in model.trainable_variables:  # the failed checkpoint would hold other weights
        variable.assign(keras.ops.zeros(variable.shape, variable.dtype))
    with monkeypatch.context() as patch:
        fail(callback, patch)
        with pytest.raises(OSError, match="disk full"):
            callback.save(0, 1)

    assert sorted(p.name for p in directory.iterdir()) == [LAST]  # no temporary left behind
    again = load_checkpoint(directory)
    assert again.state == good.state
    fresh = train(
        "sentiment", sentiment_file, verbose=0, checkpoint_dir=directory, resume=True, **RUN
    )  # a finished run: loads the checkpoint and saves, nothing to train
    assert_same_weights(fresh.model.get_weights(), saved_weights, atol=0)


def test_a_kill_between_the_folder_renames_still_resumes(finished_run_checkpoints):
    directory = finished_run_checkpoints
    # atomic_directory renames last/ to .last.old-<random>, then the new one to last/: a kill in between.
    (directory / LAST).rename(directory / f".{LAST}.old-1234abcd")
    checkpoint = find_checkpoint(directory)
    assert checkpoint is not None and checkpoint.path.name == f".{LAST}.old-1234abcd" and checkpoint.finished


# -- refusals -------------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("change", "keys"),
    [
        ({"learning_rate": 2e-3}, ["learning_rate", "0.002"]),
        ({"epochs": 3}, ["epochs is 2 there and 3 here"]),
        ({"max_length": 24}, ["max_length", "effective_max_length"]),
        ({"token_dropout": 0.0, "batch_size": 8}, ["token_dropout", "batch_size"]),
        ({"seed": 4}, ["seed is 3 there and 4 here"]),
        ({"train_file": "other"}, ["train_file_bytes", "train_sample_sha256"]),
        # The best epoch so far was scored on the run's eval file (here: none); another file's scores do not compare.
        ({"eval_file": "given"}, ["eval_file_bytes is None there"]),
    ],
)
def test_resume_refuses_a_checkpoint_of_a_different_run(
    sentiment_file, finished_run_checkpoints, tmp_path, change, keys
):
    directory = finished_run_checkpoints
    change = dict(change)
    train_file = sentiment_file
    if change.pop("train_file", None):
        train_file = tmp_path / "other.jsonl"
        train_file.write_text(sentiment_file.read_text(encoding="utf-8").split("\n", 1)[1], encoding="utf-8")
    if change.pop("eval_file", None):
        change["eval_file"] = tmp_path / "eval.jsonl"
        change["eval_file"].write_text(sentiment_file.read_text(encoding="utf-8"), encoding="utf-8")
    with pytest.raises(TrainingError) as error:
        train("sentiment", train_file, verbose=0, checkpoint_dir=directory, resume=True, **{**RUN, **change})
    assert_mentions(error, str(directory), "different run", "without --resume", *keys)


def test_a_setting_recorded_on_one_side_only_differs_unless_it_is_unset():
    recorded = {"epochs": 2, "heads": {"ner": {"loss_weight": 0.5}}}
    # A checkpoint written before a setting was recorded resumes while this run leaves that setting unset.
    assert setting_differences(recorded, {**recorded, "eval_file_bytes": None}) == []
    assert setting_differences({**recorded, "eval_file_bytes": None}, recorded) == []
    assert setting_differences(recorded, {**recorded, "eval_file_bytes": 120}) == [
        "eval_file_bytes is 120 here and not set there"
    ]
    nested = {"epochs": 2, "heads": {"ner": {"loss_weight": 0.5, "eval_file_bytes": 7}}}
    assert setting_differences(recorded, nested) == ["heads.ner.eval_file_bytes is 7 here and not set there"]


def test_resume_without_a_checkpoint_names_where_it_looked(sentiment_file, tmp_path, capsys):
    empty = tmp_path / "nothing here"
    with pytest.raises(TrainingError) as error:
        train("sentiment", sentiment_file, checkpoint_dir=empty, resume=True)
    assert_mentions(error, str(empty), str(empty / LAST), "without --resume")
    with pytest.raises(TrainingError) as error:
        train("sentiment", sentiment_file, resume=True)
    assert_mentions(error, "--resume", "--checkpoint-dir")

    out = tmp_path / "model.keras"
    code = main(["train", "--task", "sentiment", "--train", str(sentiment_file), "--out", str(out), "--resume"])
    assert code == 2
    assert_mentions(capsys.readouterr().err, str(tmp_path / "model.checkpoints"), "--resume")
    assert not out.exists()


# -- best.keras and the command line ------------------------------------------------------------------------------
def test_best_keras_holds_the_best_epoch_and_the_cli_keeps_its_checkpoints(sentiment_file, tmp_path, capsys):
    out = tmp_path / "model.keras"
    flags = ["--epochs", "3", "--batch-size", "4", "--max-length", "32", "--vocab-size", "200", "--seed", "1"]
    flags += ["--learning-rate", "0.01", "--patience", "0", "--checkpoint-every", "4", "--json"]
    arguments = ["train", "--task", "sentiment", "--train", str(sentiment_file), "--eval", str(sentiment_file)]
    assert main([*arguments, "--out", str(out), *flags]) == 0
    captured = capsys.readouterr()
    directory = tmp_path / "model.checkpoints"  # the default, beside --out
    assert json.loads(captured.out)["checkpoint_dir"] == str(directory)
    assert_mentions(captured.err, f"checkpoints kept in {directory}", "best.keras")

    state = json.loads((directory / LAST / STATE).read_text(encoding="utf-8"))
    history, best_epoch = state["history"], state["evaluation"]["best_epoch"]
    assert len(history["val_accuracy"]) == 3 and state["finished"]
    assert history["val_accuracy"][best_epoch] == max(history["val_accuracy"])
    best = keras.saving.load_model(directory / BEST)  # a full model, tokenizer inside
    assert best.tokenizer is not None
    # Best-weight restoring is on: the saved final model is the best epoch's.
    assert_same_weights(best.get_weights(), keras.saving.load_model(out).get_weights(), atol=0)
    # The last checkpoint links the best model of its time.
    assert_same_weights(best.get_weights(), keras.saving.load_model(directory / LAST / BEST).get_weights(), atol=0)

    # A new run (no --resume) in the same folder says it replaces the earlier run and drops its best.keras.
    capsys.readouterr()
    again = train(
        "sentiment",
        sentiment_file,
        checkpoint_dir=directory,
        verbose=1,
        vocab_size=200,
        epochs=1,
        max_length=32,
        **TINY,
    )
    assert_mentions(capsys.readouterr().out, str(directory), "earlier run", "best.keras is removed", "--resume")
    assert not (directory / BEST).exists() and again.checkpoint_dir == directory
    assert json.loads((directory / LAST / STATE).read_text(encoding="utf-8"))["evaluation"] is None
