"""Run controls of `train` and ``distilbert-heads train``: seed, AdamW weight decay, learning-rate schedule,
clipping, gradient accumulation, mixed precision, user callbacks and TensorBoard logs."""

from __future__ import annotations

import importlib.util
import json
import math
import os
import subprocess
import sys
from pathlib import Path

import keras
import numpy as np
import pytest
from helpers import TINY_ENCODER, assert_mentions, demo_rows, demo_vocab_tokenizer
from helpers import TINY_TRAINING as TINY

import distilbert_heads  # noqa: F401  (registers the Keras classes)
from distilbert_heads.cli import main
from distilbert_heads.model.factory import create_distilbert_with_head
from distilbert_heads.training.loop import train
from distilbert_heads.training.optimization import (
    PerOptimizerUpdate,
    WarmupDecay,
    build_optimizer,
    learning_rate_schedule,
)
from distilbert_heads.training.settings import TrainingError, check_train_settings

pytestmark = pytest.mark.filterwarnings("ignore::distilbert_heads.training.ChanceLevelWarning")  # tiny runs

NO_DROPOUT = {"dropout_rate": 0.0, "attention_dropout_rate": 0.0}


@pytest.fixture(scope="module")
def sentiment_file(tmp_path_factory) -> Path:
    """24 sentiment rows: 3 batches of 8, 6 of 4."""
    path = tmp_path_factory.mktemp("runs") / "sentiment.jsonl"
    path.write_text("".join(json.dumps(row) + "\n" for row in demo_rows("sentiment", 24)), encoding="utf-8")
    return path


def run(path: Path, tokenizer, **settings):
    """A tiny silent run on ``path`` with a fixed vocabulary (one learnt from scratch is not reproducible)."""
    options = {"epochs": 2, "batch_size": 8, "max_length": 32, "verbose": 0, **TINY, **settings}
    return train("sentiment", path, tokenizer=tokenizer, **options)


def weights_of(result) -> list[np.ndarray]:
    return result.model.get_weights()


# -- seed ---------------------------------------------------------------------------------------------------
def test_same_seed_gives_identical_weights_and_another_seed_does_not(sentiment_file, demo_tokenizer):
    # Dropout and token dropout on: every random draw (initial weights, dropout masks, row order, [UNK]s) is seeded.
    first = weights_of(run(sentiment_file, demo_tokenizer, seed=7, token_dropout=0.2))
    again = weights_of(run(sentiment_file, demo_tokenizer, seed=7, token_dropout=0.2))
    other = weights_of(run(sentiment_file, demo_tokenizer, seed=8, token_dropout=0.2))
    assert all(np.array_equal(a, b) for a, b in zip(first, again))
    assert not all(np.array_equal(a, b) for a, b in zip(first, other))


# -- AdamW weight decay ---------------------------------------------------------------------------------------
def test_weight_decay_spares_layer_norms_and_biases_only():
    keras.utils.set_random_seed(0)
    model = create_distilbert_with_head(
        "sentiment", distilbert_variant="tiny", head_options={"num_classes": 2}, encoder_options=TINY_ENCODER
    )
    settings = check_train_settings(
        epochs=1,
        batch_size=1,
        learning_rate=0.5,
        max_length=8,
        token_dropout=0.0,
        patience=0,
        weight_decay=0.1,
        schedule="constant",
    )
    model.compile(optimizer=build_optimizer(model, settings, learning_rate=0.5, batches_per_epoch=1))
    before = [keras.ops.convert_to_numpy(v) for v in model.trainable_variables]
    # Zero gradients: Adam's own step is 0, so any change is the decoupled decay, w <- w - lr * wd * w.
    model.optimizer.apply(
        [keras.ops.zeros(v.shape, v.dtype) for v in model.trainable_variables], model.trainable_variables
    )
    spared, decayed = [], []
    for variable, old in zip(model.trainable_variables, before):
        new = keras.ops.convert_to_numpy(variable)
        if variable.name == "bias" or "layernorm" in variable.path.replace("_", "").lower():
            spared.append(variable.path)
            np.testing.assert_array_equal(new, old, err_msg=variable.path)
        else:
            decayed.append(variable.path)
            np.testing.assert_allclose(new, old * (1 - 0.5 * 0.1), rtol=1e-6, err_msg=variable.path)
    assert any("LayerNorm/gamma" in p for p in spared) and any(p.endswith("q_lin/bias") for p in spared)
    assert any(p.endswith("q_lin/kernel") for p in decayed) and any("word_embeddings" in p for p in decayed)


# -- learning-rate schedules ----------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("schedule", "at_start", "at_warmup_end", "halfway_through_decay", "at_end"),
    [
        ("linear", 0.0, 1.0, 0.5, 0.0),
        ("cosine", 0.0, 1.0, 0.5, 0.0),
        ("constant", 0.0, 1.0, 1.0, 1.0),
    ],
)
@pytest.mark.parametrize("accumulation", [1, 3])
def test_schedules_warm_up_then_decay_over_optimizer_updates(
    schedule, at_start, at_warmup_end, halfway_through_decay, at_end, accumulation
):
    peak, total, warmup = 2e-3, 10, 2
    rate = learning_rate_schedule(peak, schedule, total, warmup, accumulation)
    restored = keras.optimizers.schedules.deserialize(keras.optimizers.schedules.serialize(rate))
    # Keras calls a schedule with the batch count; with accumulation the weights move once every `accumulation`.
    for update, expected in [(0, at_start), (1, at_warmup_end / 2), (2, at_warmup_end), (6, halfway_through_decay)]:
        for batch in (update * accumulation, update * accumulation + accumulation - 1):
            for each in (rate, restored):
                assert float(each(batch)) == pytest.approx(expected * peak, abs=1e-9), (schedule, update, batch)
    assert float(rate(total * accumulation)) == pytest.approx(at_end * peak, abs=1e-9)
    assert float(rate(5 * total * accumulation)) == pytest.approx(at_end * peak, abs=1e-9)  # never below 0
    assert isinstance(restored, PerOptimizerUpdate) == (accumulation > 1)


def test_schedule_spans_the_runs_real_updates(sentiment_file, demo_tokenizer):
    # 24 rows in batches of 4 = 6 batches an epoch; 2 epochs, 2 batches an update: 6 updates, 3 of warmup.
    result = run(
        sentiment_file,
        demo_tokenizer,
        batch_size=4,
        gradient_accumulation_steps=2,
        warmup_ratio=0.5,
        schedule="linear",
        seed=1,
    )
    optimizer = result.model.optimizer
    assert int(optimizer.iterations) == 6
    schedule = optimizer._learning_rate.schedule
    assert isinstance(schedule, WarmupDecay)
    assert (schedule.warmup_steps, schedule.total_steps) == (3, 6)
    assert float(optimizer.learning_rate) == 0.0  # decayed to zero at the last update
    assert optimizer.global_clipnorm == 1.0 and optimizer.weight_decay == pytest.approx(0.01)


def test_fine_tuning_defaults_to_linear_decay_from_5e_5(sentiment_file, demo_tokenizer, tmp_path):
    start = tmp_path / "start.keras"
    run(sentiment_file, demo_tokenizer, epochs=1, out=start)
    options = {"epochs": 1, "batch_size": 8, "max_length": 32, "verbose": 0}
    optimizer = train("sentiment", sentiment_file, pretrained=start, **options).model.optimizer
    schedule = optimizer._learning_rate
    assert isinstance(schedule, WarmupDecay) and schedule.decay == "linear"
    assert (schedule.learning_rate, schedule.warmup_steps, schedule.total_steps) == (5e-5, 0, 3)


def accumulation_differences(path: Path) -> dict[str, dict[str, float]]:
    """Per weight, the largest difference from one batch of 8 of batches of 4 with 2 accumulated ("accumulated")
    and of batches of 4 without ("unaccumulated", the control), after 2 epochs of AdamW as trained (decay,
    clipping, warmup and linear decay on) without dropout (its masks depend on the batch shape)."""
    tokenizer = demo_vocab_tokenizer()
    common = {"seed": 3, "warmup_ratio": 0.3, "schedule": "linear", "learning_rate": 1e-3}
    common["head_options"] = {"dropout_rate": 0.0}
    whole = run(path, tokenizer, batch_size=8, **common, **NO_DROPOUT)
    accumulated = run(path, tokenizer, batch_size=4, gradient_accumulation_steps=2, **common, **NO_DROPOUT)
    unaccumulated = run(path, tokenizer, batch_size=4, **common, **NO_DROPOUT)
    assert int(whole.model.optimizer.iterations) == int(accumulated.model.optimizer.iterations) == 6
    return {
        name: {
            variable.path: float(np.abs(a - b).max())
            for variable, a, b in zip(whole.model.weights, weights_of(whole), weights_of(other))
        }
        for name, other in (("accumulated", accumulated), ("unaccumulated", unaccumulated))
    }


def test_accumulating_two_batches_of_4_equals_one_batch_of_8(sentiment_file):
    """Same rows, same order, same updates and learning rates: only float rounding of the gradient sums differs.

    Compared on JAX (in a subprocess when the tests run on TensorFlow): on TensorFlow the word-embedding gradient
    of a batch is a sparse `IndexedSlices`, for which Keras' Adam squares each occurrence of a token rather than
    the token's summed gradient (and the global norm adds those squares), so a batch of 8 and two accumulated
    batches of 4 (a dense sum) take slightly different steps from the first update on.
    """
    if keras.backend.backend() == "tensorflow":
        code = (
            "import json, sys; from pathlib import Path; sys.path.insert(0, sys.argv[1]); "
            "import test_run_controls as t; print(json.dumps(t.accumulation_differences(Path(sys.argv[2]))))"
        )
        env = {**os.environ, "KERAS_BACKEND": "jax", "JAX_PLATFORMS": "cpu"}
        done = subprocess.run(
            [sys.executable, "-c", code, str(Path(__file__).parent), str(sentiment_file)],
            capture_output=True,
            text=True,
            env=env,
            timeout=300,
            check=False,
        )
        assert done.returncode == 0, done.stderr[-3000:]
        differences = json.loads(done.stdout.strip().splitlines()[-1])
    else:
        differences = accumulation_differences(sentiment_file)
    assert max(differences["accumulated"].values()) < 1e-6, differences["accumulated"]
    # The control: batches of 4 without accumulation take 12 smaller steps and end elsewhere.
    assert max(differences["unaccumulated"].values()) > 1e-4


# -- precision, callbacks, TensorBoard ----------------------------------------------------------------------
def test_mixed_bfloat16_trains_saves_and_reloads(sentiment_file, demo_tokenizer, tmp_path):
    out = tmp_path / "bf16.keras"
    result = run(sentiment_file, demo_tokenizer, precision="mixed_bfloat16", out=out, seed=0)
    model = result.model
    assert model.dtype_policy.name == "mixed_bfloat16" and model.encoder.compute_dtype == "bfloat16"
    assert {v.dtype for v in model.trainable_variables} == {"float32"}  # the weights stay float32
    assert all(math.isfinite(loss) for loss in result.history["loss"])
    assert keras.config.dtype_policy().name == "float32"  # the caller's global policy is untouched
    reloaded = keras.saving.load_model(out)
    assert reloaded.dtype_policy.name == "mixed_bfloat16"
    for a, b in zip(weights_of(result), reloaded.get_weights()):
        np.testing.assert_array_equal(a, b)


class Recorder(keras.callbacks.Callback):
    def __init__(self) -> None:
        super().__init__()
        self.epoch_logs: list[dict] = []
        self.batches = 0

    def on_train_batch_end(self, batch, logs=None) -> None:
        self.batches += 1

    def on_epoch_end(self, epoch, logs=None) -> None:
        self.epoch_logs.append(dict(logs or {}))


def test_user_callbacks_run_after_ours_and_tensorboard_writes_events(sentiment_file, demo_tokenizer, tmp_path):
    recorder = Recorder()
    logdir = tmp_path / "logs"
    result = run(
        sentiment_file, demo_tokenizer, eval_file=sentiment_file, callbacks=[recorder], logdir=logdir, patience=0
    )
    # From scratch the default rate is constant (a small random model stalls under decay): no schedule object.
    assert not isinstance(result.model.optimizer._learning_rate, keras.optimizers.schedules.LearningRateSchedule)
    assert recorder.batches == 6 and len(recorder.epoch_logs) == 2
    # Ours ran first: the held-out metrics are already in the logs the user's callback sees.
    assert {"loss", "val_accuracy", "val_macro_f1"} <= set(recorder.epoch_logs[-1])
    assert list((logdir / "train").glob("events.out.tfevents.*"))


# -- validation -----------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("setting", "value", "facts"),
    [
        ("seed", -1, ["--seed", "2**32 - 1"]),
        ("seed", 1.5, ["--seed", "integer"]),
        ("weight_decay", float("nan"), ["--weight-decay", "0 (off)"]),
        ("weight_decay", -0.1, ["--weight-decay", "0.01"]),
        ("warmup_ratio", 1.5, ["--warmup-ratio", "0.0 to 1.0"]),
        ("warmup_steps", -3, ["--warmup-steps", "0 or more"]),
        ("schedule", "step", ["--schedule", "linear, cosine, constant"]),
        ("clip_norm", -1.0, ["--clip-norm", "0 or None"]),
        ("gradient_accumulation_steps", 0, ["--grad-accum", "1 or more"]),
        ("precision", "float16", ["--precision", "float32, mixed_bfloat16"]),
    ],
)
def test_bad_run_controls_name_the_setting_flag_and_range(sentiment_file, setting, value, facts):
    with pytest.raises(TrainingError) as error:
        train("sentiment", sentiment_file, **{setting: value})
    assert_mentions(error, setting, repr(value), *facts)


def test_logdir_without_tensorboard_is_refused_before_training(sentiment_file, tmp_path, monkeypatch):
    find_spec = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name, *a: None if name == "tensorboard" else find_spec(name, *a)
    )
    with pytest.raises(TrainingError) as error:
        train("sentiment", sentiment_file, logdir=tmp_path / "logs")
    assert_mentions(error, "--logdir", "tensorboard", "distilbert-heads[tensorboard]")
    assert not (tmp_path / "logs").exists()


def test_accumulating_more_batches_than_the_run_has_is_refused(sentiment_file, demo_tokenizer):
    with pytest.raises(TrainingError) as error:
        run(sentiment_file, demo_tokenizer, epochs=1, gradient_accumulation_steps=4)
    assert_mentions(error, "--grad-accum", "4", "3 batch(es)", "never be updated")


# -- command line ---------------------------------------------------------------------------------------------
def test_cli_flags_reach_the_optimizer_and_logs(sentiment_file, tmp_path, capsys):
    out, logdir = tmp_path / "cli.keras", tmp_path / "tb"
    flags = ["--seed", "5", "--weight-decay", "0.05", "--warmup-steps", "1", "--schedule", "cosine"]
    flags += ["--clip-norm", "0.5", "--grad-accum", "2", "--precision", "mixed_bfloat16", "--logdir", str(logdir)]
    code = main(
        ["train", "--task", "sentiment", "--train", str(sentiment_file), "--epochs", "1", "--batch-size", "4"]
        + ["--max-length", "32", "--vocab-size", "200", "--out", str(out), *flags]
    )
    assert code == 0, capsys.readouterr().err
    model = keras.saving.load_model(out)
    optimizer = model.optimizer
    assert isinstance(optimizer, keras.optimizers.AdamW)
    assert (optimizer.weight_decay, optimizer.global_clipnorm) == (pytest.approx(0.05), 0.5)
    assert optimizer.gradient_accumulation_steps == 2 and int(optimizer.iterations) == 3
    cosine = optimizer._learning_rate.schedule
    assert isinstance(cosine, keras.optimizers.schedules.CosineDecay)
    assert (cosine.warmup_steps, cosine.decay_steps) == (1, 2)
    assert model.dtype_policy.name == "mixed_bfloat16"
    assert list((logdir / "train").glob("events.out.tfevents.*"))
    # A fresh process finds the schedules too (registered when Keras is imported), with no compile warning.
    code = (
        "import sys, warnings; warnings.simplefilter('error'); import keras, distilbert_heads; "
        "m = keras.saving.load_model(sys.argv[1]); print(type(m.optimizer._learning_rate).__name__)"
    )
    done = subprocess.run([sys.executable, "-c", code, str(out)], capture_output=True, text=True, check=False)
    assert done.returncode == 0 and done.stdout.split()[-1] == "PerOptimizerUpdate", done.stderr[-3000:]

    assert main(["train", "--help"]) == 0
    help_text = capsys.readouterr().out
    for flag in ("--seed", "--weight-decay", "--warmup-ratio", "--schedule", "--clip-norm", "--grad-accum"):
        assert flag in help_text
    assert "--precision {float32,mixed_bfloat16}" in help_text and "--logdir" in help_text


def test_cli_bad_run_control_exits_2_naming_the_flag(sentiment_file, tmp_path, capsys):
    code = main(
        ["train", "--task", "sentiment", "--train", str(sentiment_file), "--out", str(tmp_path / "m.keras")]
        + ["--warmup-ratio", "2"]
    )
    assert code == 2
    assert_mentions(capsys.readouterr().err, "--warmup-ratio", "2.0", "0.0 to 1.0")
