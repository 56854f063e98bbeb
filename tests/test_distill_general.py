"""General and task distillation end to end with the library's own parts: the masked-LM head, a `.txt` corpus,
students built by `student_from_teacher` (no student given), as a user runs them."""

from __future__ import annotations

import keras
import numpy as np
import pytest

from distilbert_heads import DistillationTarget, distill
from distilbert_heads.distillation.losses import target_loss
from distilbert_heads.text.tokenizer import DistilBertTokenizer
from distilbert_heads.training import masking
from distilbert_heads.training.loop import train
from distilbert_heads.training.streaming import special_token_ids

WORDS = ["the", "cat", "dog", "sat", "ran", "on", "in", "mat", "park", "a", "big", "small", "red"]
TEACHER = {"hidden_size": 16, "num_layers": 4, "num_heads": 2, "intermediate_size": 32, "max_position_embeddings": 32}
RUN = {"batch_size": 8, "seed": 0, "verbose": 0}


@pytest.fixture(scope="module")
def tokenizer():
    from helpers import tiny_vocab

    return DistilBertTokenizer.from_vocab(tiny_vocab(WORDS))


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    rng = np.random.default_rng(0)
    lines = [" ".join(["the", *rng.choice(WORDS[1:], 2 + i % 4), "on", "the", "mat"]) for i in range(48)]
    path = tmp_path_factory.mktemp("corpus") / "corpus.txt"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def mlm_teacher(corpus, tokenizer):
    return train(
        "mlm", corpus, tokenizer=tokenizer, epochs=4, learning_rate=1e-2, max_length=16, **RUN, **TEACHER
    ).model


def masked_batch(corpus, tokenizer, rows=16):
    texts = corpus.read_text(encoding="utf-8").splitlines()[:rows]
    inputs = tokenizer.encode(texts, max_length=16).as_model_inputs()
    ids, _ = masking.mask_tokens(
        inputs,
        mask_id=tokenizer.mask_token_id,
        vocab_size=tokenizer.vocab_size,
        special_ids=special_token_ids(tokenizer),
        rng=np.random.default_rng(5),
    )
    return {**inputs, "input_ids": ids}


def soft_loss(teacher, student, inputs):
    logits = [m(inputs, training=False)[m.select_head()[0]]["logits"] for m in (teacher, student)]
    target = DistillationTarget(kind="logits", tokens="rows")
    return float(keras.ops.convert_to_numpy(target_loss(target, *logits, inputs["attention_mask"], 2.0)))


def test_general_distillation_of_a_masked_lm_teacher_on_a_text_file(mlm_teacher, corpus, tokenizer, tmp_path):
    teacher_weights = [w.copy() for w in mlm_teacher.get_weights()]
    inputs = masked_batch(corpus, tokenizer)

    result = distill(mlm_teacher, corpus, out=tmp_path / "student.keras", epochs=3, learning_rate=5e-3, **RUN)

    student = result.model
    assert student.encoder.config.num_layers == 2  # the default map of 4 layers: [0, 3]
    (_, head), (_, teacher_head) = student.select_head(), mlm_teacher.select_head()
    assert type(head) is type(teacher_head)
    # the student's projector is its own word-embedding matrix (tied), not the teacher's
    assert head.word_embeddings is student.encoder.embeddings.word_embeddings.embeddings
    assert head.word_embeddings is not teacher_head.word_embeddings
    assert result.history["loss"][-1] < result.history["loss"][0]
    assert {"soft_target_loss", "student_loss", "hidden_cosine_loss"} <= set(result.history)
    settings = student.training_record["settings"]
    assert (settings["alpha_soft"], settings["alpha_task"], settings["alpha_cos"]) == (5.0, 2.0, 1.0)
    for kept, now in zip(teacher_weights, mlm_teacher.get_weights()):
        np.testing.assert_array_equal(kept, now)

    # the same student trained on the masked-LM labels alone ends further from the teacher
    alone = distill(mlm_teacher, corpus, epochs=3, learning_rate=5e-3, alpha_soft=0.0, alpha_cos=0.0, **RUN).model
    assert soft_loss(mlm_teacher, student, inputs) < soft_loss(mlm_teacher, alone, inputs)
    saved = keras.saving.load_model(tmp_path / "student.keras")
    name = student.select_head()[0]
    np.testing.assert_allclose(
        keras.ops.convert_to_numpy(saved(inputs)[name]["logits"]),
        keras.ops.convert_to_numpy(student(inputs)[name]["logits"]),
        atol=1e-5,
    )


def test_task_distillation_builds_its_student_from_the_teacher(tmp_path):
    from distilbert_heads.demo.datasets import DATA_DIR

    data = DATA_DIR / "sentiment.train.jsonl"
    teacher = train("sentiment", data, epochs=1, max_length=32, num_layers=2, **RUN).model

    result = distill(teacher, data, layers=[1], epochs=1, **RUN)

    student = result.model
    assert student.encoder.config.num_layers == 1
    assert list(student.heads) == list(teacher.heads)
    assert student.tokenizer.get_vocab() == teacher.tokenizer.get_vocab()
    assert student.training_record["student"]["layers"] == [1]
