"""`distill` and `distilbert-heads distill`: a tiny teacher trained briefly, students built with the factory.

The test heads below are registered as an installed plugin (``distill-test-heads``, entry point to this module)
like tests/test_head_contract.py's: a sentence classifier, a token head over the vocabulary that masks tokens in
``prepare_batch`` (as the masked-LM head does), and a head that declares nothing to distil.
"""

from __future__ import annotations

import importlib
import json
from typing import Any

import keras
import numpy as np
import pytest
from pydantic import BaseModel

from distilbert_heads import DistillationTarget, HeadOptions, TaskHead, hookimpl, losses
from distilbert_heads.cli import main
from distilbert_heads.distillation.distiller import TaskDistiller
from distilbert_heads.distillation.losses import target_loss
from distilbert_heads.distillation.run import distill
from distilbert_heads.model.factory import create_distilbert_with_head
from distilbert_heads.plugins.head import HeadContractError
from distilbert_heads.plugins.registry import reset_registry
from distilbert_heads.text.tokenizer import DistilBertTokenizer
from distilbert_heads.training import masking
from distilbert_heads.training.evaluation import HeldOutFile, evaluate, primary_metric
from distilbert_heads.training.loop import train
from distilbert_heads.training.settings import TrainingError
from distilbert_heads.training.streaming import special_token_ids

WORDS = ["good", "great", "fine", "bad", "awful", "poor", "movie", "film", "plot", "the", "was", "a", "very"]
TEACHER_ENCODER = {"hidden_size": 16, "num_layers": 2, "num_heads": 2, "intermediate_size": 32}
TEACHER_ENCODER |= {"max_position_embeddings": 32, "dropout_rate": 0.3}
STUDENT_ENCODER = {"hidden_size": 8, "num_layers": 1, "num_heads": 2, "intermediate_size": 16}
STUDENT_ENCODER |= {"max_position_embeddings": 32, "dropout_rate": 0.0}


# -- the test heads ---------------------------------------------------------------------------------------
class TextExample(BaseModel):
    text: str
    label: int = 0


class SentenceHead(TaskHead):
    task_types = ("distill_sentence",)
    output_names = ("logits",)
    example_schema = TextExample

    def __init__(self, hidden_size: int, task_type: str, options: Any = None, **kwargs: Any) -> None:
        super().__init__(hidden_size, task_type, options, **kwargs)
        self.dense = keras.layers.Dense(2, name="dense")

    def call(self, hidden_states: Any, attention_mask: Any, training: bool | None = None) -> dict[str, Any]:
        return {"logits": self.dense(hidden_states[:, 0, :])}

    def default_losses(self) -> dict[str, Any]:
        return {"logits": keras.losses.SparseCategoricalCrossentropy(from_logits=True)}

    def encode_examples(self, examples: Any, tokenizer: Any, max_length: int) -> tuple[dict, dict]:
        encoding = tokenizer.encode([example.text for example in examples], max_length=max_length)
        return encoding.as_model_inputs(), {"logits": np.array([example.label for example in examples], "int32")}

    def distillation_targets(self) -> dict[str, DistillationTarget]:
        return {"logits": DistillationTarget(kind="logits", axis=-1)}


class UndeclaredHead(SentenceHead):
    task_types = ("distill_undeclared",)

    def distillation_targets(self) -> None:
        return None


class VocabOptions(HeadOptions):
    tokens_out: int = 32


class MaskedTokenHead(TaskHead):
    """Vocabulary logits per token, masked-LM style: ``prepare_batch`` masks 15% of the tokens."""

    task_types = ("distill_tokens",)
    options_schema = VocabOptions
    output_names = ("logits",)
    example_schema = TextExample

    def __init__(self, hidden_size: int, task_type: str, options: Any = None, **kwargs: Any) -> None:
        super().__init__(hidden_size, task_type, options, **kwargs)
        self.dense = keras.layers.Dense(self.options.tokens_out, name="dense")

    def call(self, hidden_states: Any, attention_mask: Any, training: bool | None = None) -> dict[str, Any]:
        return {"logits": self.dense(hidden_states)}

    def default_losses(self) -> dict[str, Any]:
        return {"logits": losses.MaskedSparseCategoricalCrossentropy()}

    def encode_examples(self, examples: Any, tokenizer: Any, max_length: int) -> tuple[dict, dict]:
        inputs = tokenizer.encode([example.text for example in examples], max_length=max_length).as_model_inputs()
        return inputs, {"logits": np.full(inputs["input_ids"].shape, losses.IGNORE_INDEX, "int32")}

    def prepare_batch(self, inputs: Any, labels: Any, *, tokenizer: Any, rng: np.random.Generator) -> Any:
        ids, chosen = masking.mask_tokens(
            inputs,
            mask_id=tokenizer.mask_token_id,
            vocab_size=self.options.tokens_out,
            special_ids=special_token_ids(tokenizer),
            rng=rng,
        )
        return {**inputs, "input_ids": ids}, {"logits": chosen}

    def distillation_targets(self) -> dict[str, DistillationTarget]:
        return {"logits": DistillationTarget(kind="logits", tokens="rows")}


@hookimpl
def register_heads(register: Any) -> None:
    for head in (SentenceHead, UndeclaredHead, MaskedTokenHead):
        register(head)


# -- fixtures ---------------------------------------------------------------------------------------------
@pytest.fixture
def heads(fake_site):
    fake_site.dist("distill-test-heads", "1.0", {"distill": __name__}, group="distilbert_heads")
    importlib.invalidate_caches()
    reset_registry()
    yield
    reset_registry()


@pytest.fixture(scope="module")
def tokenizer():
    from helpers import tiny_vocab

    return DistilBertTokenizer.from_vocab(tiny_vocab(WORDS))


@pytest.fixture(scope="module")
def data_file(tmp_path_factory):
    """24 short reviews of different lengths (so batches have padding), label 1 when positive."""
    rng = np.random.default_rng(0)
    rows = []
    for index in range(24):
        positive = index % 2 == 0
        words = ["the", "movie", "was"] + list(rng.choice(WORDS[:3] if positive else WORDS[3:6], 1 + index % 5))
        rows.append({"text": " ".join(words), "label": int(positive)})
    path = tmp_path_factory.mktemp("distill") / "reviews.jsonl"
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    return path


_TEACHERS: dict[str, Any] = {}


def trained_teacher(task, data_file, tokenizer, epochs=6, **options):
    """A teacher trained briefly, once per task for the whole file (tests check it is never changed)."""
    if task not in _TEACHERS:
        _TEACHERS[task] = train(
            task,
            data_file,
            tokenizer=tokenizer,
            epochs=epochs,
            batch_size=8,
            learning_rate=1e-2,
            max_length=16,
            seed=0,
            verbose=0,
            **options,
            **TEACHER_ENCODER,
        ).model
    return _TEACHERS[task]


def new_student(task, tokenizer, seed=1, encoder_options=None, **options):
    """A new student; ``encoder_options`` (or, by default, keyword arguments) take `STUDENT_ENCODER`."""
    keras.utils.set_random_seed(seed)
    encoder = {**STUDENT_ENCODER, "vocab_size": tokenizer.vocab_size}
    student = create_distilbert_with_head(
        task_type=task,
        distilbert_variant="tiny",
        **options,
        **({"encoder_options": {**encoder, **encoder_options}} if encoder_options is not None else encoder),
    )
    student.tokenizer = tokenizer
    return student


def batch_of(data_file, tokenizer, rows=8):
    texts = [json.loads(line)["text"] for line in data_file.read_text().splitlines()[:rows]]
    return tokenizer.encode(texts, max_length=16).as_model_inputs()


def soft_loss(teacher, student, inputs):
    target = DistillationTarget(kind="logits")
    outputs = [model(inputs, training=False)["distill_sentence"]["logits"] for model in (teacher, student)]
    return float(keras.ops.convert_to_numpy(target_loss(target, *outputs, inputs["attention_mask"], 2.0)))


RUN = {"epochs": 10, "batch_size": 8, "learning_rate": 2e-2, "seed": 3, "verbose": 0}


# -- tests ------------------------------------------------------------------------------------------------
def test_task_distillation_moves_the_student_toward_a_frozen_teacher(heads, data_file, tokenizer, tmp_path):
    teacher = trained_teacher("distill_sentence", data_file, tokenizer)
    teacher_weights = [w.copy() for w in teacher.get_weights()]
    student = new_student("distill_sentence", tokenizer)
    inputs = batch_of(data_file, tokenizer)
    before = soft_loss(teacher, student, inputs)

    result = distill(teacher, data_file, student=student, out=tmp_path / "student.keras", **RUN)

    assert soft_loss(teacher, result.model, inputs) < 0.5 * before
    history = result.history["soft_target_loss"]
    assert history[-1] < history[0]
    assert {"loss", "student_loss", "soft_target_loss"} <= set(result.metrics)
    # every part counted once per batch (TensorFlow's failed fetch that ends a streamed epoch is not a batch)
    assert result.metrics["total_loss"] == pytest.approx(result.metrics["loss"], rel=1e-5)
    for kept, now in zip(teacher_weights, teacher.get_weights()):  # frozen
        np.testing.assert_array_equal(kept, now)
    saved = keras.saving.load_model(tmp_path / "student.keras")
    logits = [keras.ops.convert_to_numpy(m(inputs)["distill_sentence"]["logits"]) for m in (saved, result.model)]
    np.testing.assert_allclose(*logits, atol=1e-6)
    assert saved.tokenizer is not None and saved.encoder.config.hidden_size == STUDENT_ENCODER["hidden_size"]
    record = saved.training_record
    assert record["settings"]["alpha_soft"] == 0.5 and record["settings"]["teacher_sha256"]
    assert record["data"]["train"]["sha256"]


def test_a_student_that_reads_other_ids_is_refused(heads, data_file, tokenizer):
    teacher = trained_teacher("distill_sentence", data_file, tokenizer)
    student = new_student("distill_sentence", tokenizer)
    from helpers import tiny_vocab

    student.tokenizer = DistilBertTokenizer.from_vocab(tiny_vocab(WORDS[::-1]))
    with pytest.raises(TrainingError, match="teacher's tokenizer"):
        distill(teacher, data_file, student=student, **RUN)


def test_the_teacher_runs_in_inference_mode_and_padding_is_masked(heads, data_file, tokenizer):
    """Token-level soft targets and the hidden cosine through a learned projection (student 8 wide, teacher 16)."""
    options = {"head_options": {"tokens_out": tokenizer.vocab_size}}
    teacher = trained_teacher("distill_tokens", data_file, tokenizer, **options)
    student = new_student("distill_tokens", tokenizer, **options)
    distiller = TaskDistiller(teacher, student, alpha_task=2.0, alpha_soft=5.0, alpha_cos=1.0)
    distiller.compile(optimizer="adam")
    assert distiller.projection is not None
    inputs = batch_of(data_file, tokenizer)
    # The teacher has dropout (rate 0.3): on in training mode, off in the distiller.
    noisy = [keras.ops.convert_to_numpy(teacher(inputs, training=True)["distill_tokens"]["logits"]) for _ in range(2)]
    assert not np.allclose(*noisy)
    first, second = (keras.ops.convert_to_numpy(distiller.teacher_outputs(inputs)[0]["logits"]) for _ in range(2))
    np.testing.assert_array_equal(first, second)

    labels = {"distill_tokens": np.where(inputs["attention_mask"] == 1, inputs["input_ids"], -100)}
    loss = float(keras.ops.convert_to_numpy(distiller.compute_loss(inputs, labels, training=False)))
    padded = {key: np.pad(value, [(0, 0), (0, 5)]) for key, value in inputs.items()}
    padded_labels = {"distill_tokens": np.pad(labels["distill_tokens"], [(0, 0), (0, 5)], constant_values=-100)}
    padded_loss = keras.ops.convert_to_numpy(distiller.compute_loss(padded, padded_labels, training=False))
    assert float(padded_loss) == pytest.approx(loss, rel=1e-5)

    result = distill(teacher, data_file, student=student, alpha_cos=1.0, **RUN)
    assert result.history["hidden_cosine_loss"][-1] < result.history["hidden_cosine_loss"][0]


def test_a_masked_lm_teacher_gets_distilberts_recipe(heads, data_file, tokenizer, monkeypatch):
    """General distillation's defaults, with the token head standing in for the masked-LM head."""
    import distilbert_heads.distillation.run as run_module

    monkeypatch.setattr(run_module, "MASKED_LM", "distill_tokens")
    options = {"head_options": {"tokens_out": tokenizer.vocab_size}}
    teacher = trained_teacher("distill_tokens", data_file, tokenizer, **options)
    seen = {}

    class Record(keras.callbacks.Callback):
        def on_train_begin(self, logs=None):
            distiller, optimizer = self.model, self.model.optimizer
            seen.update(
                alphas=(distiller.alpha_soft, distiller.alpha_task, distiller.alpha_cos),
                temperature=distiller.temperature,
                adam=(optimizer.beta_1, optimizer.beta_2, optimizer.epsilon, optimizer.global_clipnorm),
                schedule=optimizer.get_config()["learning_rate"]["config"],
            )

    distill(
        teacher,
        data_file,
        student=new_student("distill_tokens", tokenizer, **options),
        epochs=1,
        batch_size=8,
        seed=0,
        verbose=0,
        callbacks=[Record()],
    )
    assert seen["alphas"] == (5.0, 2.0, 1.0) and seen["temperature"] == 2.0
    assert seen["adam"] == (0.9, 0.98, 1e-6, 5.0)
    # 3 updates, 5% of them (rounded up) warming up to 5e-4
    assert (seen["schedule"]["learning_rate"], seen["schedule"]["warmup_steps"]) == (5e-4, 1)


def test_a_killed_and_resumed_run_ends_with_the_uninterrupted_runs_weights(heads, data_file, tokenizer, tmp_path):
    teacher = trained_teacher("distill_sentence", data_file, tokenizer)
    run = {**RUN, "checkpoint_every": 2}
    whole = distill(
        teacher, data_file, student=new_student("distill_sentence", tokenizer), checkpoint_dir=tmp_path / "w", **run
    )

    class Crash(keras.callbacks.Callback):  # a crash after step 5, after the step-4 checkpoint
        def on_train_batch_end(self, batch, logs=None):
            if int(self.model.optimizer.iterations.numpy()) == 5:
                raise KeyboardInterrupt("killed")

    with pytest.raises(KeyboardInterrupt):
        distill(
            teacher,
            data_file,
            student=new_student("distill_sentence", tokenizer),
            checkpoint_dir=tmp_path / "ck",
            callbacks=[Crash()],
            **run,
        )
    resumed = distill(
        teacher,
        data_file,
        student=new_student("distill_sentence", tokenizer, seed=9),  # its weights come from the checkpoint
        checkpoint_dir=tmp_path / "ck",
        resume=True,
        **run,
    )
    for expected, got in zip(whole.model.get_weights(), resumed.model.get_weights()):
        np.testing.assert_allclose(got, expected, atol=1e-6)

    other = new_student("distill_sentence", tokenizer)  # another teacher: refused by its fingerprint
    with pytest.raises(TrainingError, match="teacher_sha256"):
        distill(
            other,
            data_file,
            student=new_student("distill_sentence", tokenizer),
            checkpoint_dir=tmp_path / "ck",
            resume=True,
            **run,
        )


def test_cached_teacher_outputs_give_the_uncached_runs_weights(heads, data_file, tokenizer):
    teacher = trained_teacher("distill_sentence", data_file, tokenizer)
    plain = distill(teacher, data_file, student=new_student("distill_sentence", tokenizer), **RUN)
    cached = distill(teacher, data_file, student=new_student("distill_sentence", tokenizer), cache_teacher=True, **RUN)
    # Equal up to float rounding: the cached outputs came from the teacher on other batch widths (padding is masked
    # out, not bit-identical), and Adam turns rounding in near-zero gradients into steps of up to ~1e-4 here.
    for expected, got in zip(plain.model.get_weights(), cached.model.get_weights()):
        np.testing.assert_allclose(got, expected, atol=1e-4)


@pytest.mark.parametrize(
    ("task", "options", "facts"),
    [
        ("distill_tokens", {}, ["prepare_batch", "every batch", "--cache-teacher"]),
        ("distill_sentence", {"token_dropout": 0.1}, ["token_dropout=0.1", "--token-dropout"]),
        ("distill_sentence", {"alpha_cos": 1.0}, ["hidden states", "alpha_cos"]),
    ],
)
def test_a_teacher_cache_that_would_be_wrong_is_refused_saying_why(heads, data_file, tokenizer, task, options, facts):
    head_options = {"head_options": {"tokens_out": tokenizer.vocab_size}} if task == "distill_tokens" else {}
    teacher = new_student(task, tokenizer, **head_options)
    with pytest.raises(TrainingError) as caught:
        distill(
            teacher,
            data_file,
            student=new_student(task, tokenizer, **head_options),
            cache_teacher=True,
            **{**RUN, **options},
        )
    for fact in facts:
        assert fact in str(caught.value)


def test_a_head_that_declares_nothing_gets_the_error_naming_the_hook(heads, data_file, tokenizer):
    teacher = new_student("distill_undeclared", tokenizer)
    with pytest.raises(HeadContractError, match=r"distillation_targets\(\)"):
        distill(teacher, data_file, student=new_student("distill_undeclared", tokenizer), **RUN)
    with pytest.raises(HeadContractError, match=r"distillation_targets\(\)"):
        TaskDistiller(teacher, new_student("distill_undeclared", tokenizer))


def test_cli_distill(heads, data_file, tokenizer, tmp_path, capsys):
    assert main(["distill", "--help"]) == 0
    text = capsys.readouterr().out
    for flag in ("--teacher", "--train", "--alpha-soft", "--temperature", "--cache-teacher", "--resume", "--config"):
        assert flag in text
    assert "--eval-file" in text and "--patience" in text
    teacher = new_student("distill_sentence", tokenizer)
    teacher.save(tmp_path / "teacher.keras")
    student = new_student("distill_sentence", tokenizer)
    student.save(tmp_path / "student_start.keras")
    code = main(
        [
            "distill",
            "--teacher",
            str(tmp_path / "teacher.keras"),
            "--student",
            str(tmp_path / "student_start.keras"),
            "--train",
            str(data_file),
            "--out",
            str(tmp_path / "student.keras"),
            "--epochs",
            "1",
            "--batch-size",
            "8",
            "--seed",
            "0",
            "--temperature",
            "3",
            "--eval-file",
            str(data_file),
            "--patience",
            "1",
            "--json",
        ]
    )
    assert code == 0
    saved = keras.saving.load_model(tmp_path / "student.keras")
    assert saved.encoder.config.hidden_size == 8
    report = json.loads(capsys.readouterr().out)
    assert report["metrics_split"] == "eval" and report["best_epoch"] == 1 and set(report["metrics"]) == {"loss"}
    assert saved.training_record["settings"]["patience"] == 1
    assert saved.training_record["data"]["eval"]["path"] == str(data_file)


def test_cli_distill_refuses_patience_without_an_eval_file(heads, data_file, tokenizer, tmp_path, capsys):
    teacher = new_student("distill_sentence", tokenizer)
    teacher.save(tmp_path / "teacher.keras")
    arguments = ["distill", "--teacher", str(tmp_path / "teacher.keras"), "--train", str(data_file)]
    code = main([*arguments, "--out", str(tmp_path / "student.keras"), "--patience", "2"])
    message = capsys.readouterr().err
    assert code != 0 and not (tmp_path / "student.keras").exists()
    for fact in ("patience=2", "--patience", "--eval-file"):
        assert fact in message


# -- held-out file and early stopping ---------------------------------------------------------------------
class EpochScores(keras.callbacks.Callback):
    """The student's weights after each epoch, and ``reference(student)`` for each, keyed by epoch."""

    def __init__(self, reference=None):
        super().__init__()
        self.reference, self.weights, self.scores, self.epoch = reference, {}, {}, None

    def on_epoch_begin(self, epoch, logs=None):
        self.epoch = epoch

    def on_epoch_end(self, epoch, logs=None):
        self.weights[epoch] = [w.copy() for w in self.model.student.get_weights()]
        if self.reference is not None:
            self.scores[epoch] = self.reference(self.model.student)


def scripted_scores(monkeypatch, epochs: EpochScores, accuracies):
    """Make the held-out score of epoch ``e`` (counted from 0) ``accuracies[e]``, whatever the student does."""
    monkeypatch.setattr(HeldOutFile, "score", lambda self, model: {"accuracy": accuracies[epochs.epoch]})


def assert_same_weights(expected, got):
    assert len(expected) == len(got)
    for one, other in zip(expected, got):
        np.testing.assert_allclose(other, one, atol=1e-6)


@pytest.mark.parametrize(
    ("task", "metric"),
    [("sentiment", "accuracy"), ("distill_tokens", "loss")],  # a head's evaluate; a masked-LM-like head: its loss
)
def test_each_epochs_held_out_score_is_the_students_score_on_the_file(heads, data_file, tokenizer, task, metric):
    # A sentiment teacher that has learnt the task (12 epochs) and a new student: its accuracy moves by epoch 6.
    options = {"head_options": {"tokens_out": tokenizer.vocab_size}} if task == "distill_tokens" else {"epochs": 12}
    teacher = trained_teacher(task, data_file, tokenizer, **options)
    head_options = {"head_options": teacher.heads[task].options.model_dump()}
    student = new_student(task, tokenizer, encoder_options={}, **head_options)
    seen = EpochScores(lambda model: evaluate(model, data_file, batch_size=32, max_length=16))

    result = distill(
        teacher, data_file, student=student, eval_file=data_file, patience=0, callbacks=[seen], **{**RUN, "epochs": 6}
    )

    assert metric == primary_metric(seen.scores[0])
    assert result.history[f"val_{metric}"] == pytest.approx([seen.scores[epoch][metric] for epoch in range(6)])
    best = min if metric == "loss" else max
    best_epoch = result.history[f"val_{metric}"].index(best(result.history[f"val_{metric}"]))
    assert result.best_epoch == best_epoch + 1 and result.metrics_split == "eval"
    assert result.metrics == pytest.approx(seen.scores[best_epoch])
    assert_same_weights(seen.weights[best_epoch], result.model.get_weights())
    assert result.model.training_record["data"]["eval"]["sha256"]


def test_early_stopping_returns_and_saves_the_best_epochs_student(heads, data_file, tokenizer, tmp_path, monkeypatch):
    teacher = trained_teacher("distill_sentence", data_file, tokenizer)
    seen = EpochScores()
    scripted_scores(monkeypatch, seen, [0.5, 0.8, 0.7, 0.6, 0.9, 0.9])

    result = distill(
        teacher,
        data_file,
        student=new_student("distill_sentence", tokenizer),
        eval_file=data_file,
        patience=2,
        out=tmp_path / "student.keras",
        checkpoint_dir=tmp_path / "ck",
        callbacks=[seen],
        **{**RUN, "epochs": 6},
    )

    assert result.epochs_run == 4 and sorted(seen.weights) == [0, 1, 2, 3]  # epochs 3 and 4 no better than 2
    assert result.history["val_accuracy"] == [0.5, 0.8, 0.7, 0.6]
    assert result.best_epoch == 2 and result.metrics == {"accuracy": 0.8}
    assert not np.allclose(seen.weights[1][0], seen.weights[3][0])  # it did train on after the best epoch
    for model in (
        result.model,
        keras.saving.load_model(tmp_path / "student.keras"),
        keras.saving.load_model(tmp_path / "ck" / "best.keras"),
    ):
        assert_same_weights(seen.weights[1], model.get_weights())


def test_a_killed_run_with_an_eval_file_resumes_to_the_best_student(heads, data_file, tokenizer, tmp_path, monkeypatch):
    """The best epoch (2) is before the kill (in epoch 3): its student comes back from the checkpoint's best.keras."""
    teacher = trained_teacher("distill_sentence", data_file, tokenizer)
    seen = EpochScores()
    scripted_scores(monkeypatch, seen, [0.5, 0.8, 0.7, 0.6])
    run = {**RUN, "epochs": 4, "checkpoint_every": 2, "eval_file": data_file, "patience": 0}
    whole = distill(
        teacher,
        data_file,
        student=new_student("distill_sentence", tokenizer),
        checkpoint_dir=tmp_path / "w",
        callbacks=[seen],
        **run,
    )
    assert_same_weights(seen.weights[1], whole.model.get_weights())

    class Crash(keras.callbacks.Callback):  # 3 batches an epoch: step 7 is in epoch 3, after the step-6 checkpoint
        def on_train_batch_end(self, batch, logs=None):
            if int(self.model.optimizer.iterations.numpy()) == 7:
                raise KeyboardInterrupt("killed")

    with pytest.raises(KeyboardInterrupt):
        distill(
            teacher,
            data_file,
            student=new_student("distill_sentence", tokenizer),
            checkpoint_dir=tmp_path / "ck",
            callbacks=[seen, Crash()],
            **run,
        )
    for changed, fact in (({"patience": 1}, "patience"), ({"eval_file": tmp_path / "other.jsonl"}, "eval_file_bytes")):
        (tmp_path / "other.jsonl").write_text(data_file.read_text().split("\n", 1)[1])
        with pytest.raises(TrainingError, match=fact):
            distill(
                teacher,
                data_file,
                student=new_student("distill_sentence", tokenizer),
                checkpoint_dir=tmp_path / "ck",
                resume=True,
                **{**run, **changed},
            )
    resumed = distill(
        teacher,
        data_file,
        student=new_student("distill_sentence", tokenizer, seed=9),
        checkpoint_dir=tmp_path / "ck",
        resume=True,
        callbacks=[seen],
        **run,
    )
    assert resumed.best_epoch == 2 and resumed.history["val_accuracy"] == [0.5, 0.8, 0.7, 0.6]
    assert_same_weights(whole.model.get_weights(), resumed.model.get_weights())


@pytest.mark.parametrize("patience", [0, 3])
def test_patience_without_an_eval_file_is_refused_saying_what_to_do(heads, data_file, tokenizer, patience, capsys):
    teacher = new_student("distill_sentence", tokenizer)
    with pytest.raises(TrainingError) as caught:
        distill(teacher, data_file, student=new_student("distill_sentence", tokenizer), patience=patience, **RUN)
    for fact in (f"patience={patience}", "--patience", "eval_file", "--eval-file"):
        assert fact in str(caught.value)
