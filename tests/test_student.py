"""Students from teachers (`distilbert_heads.distillation.student`): the layer map, exact copies against
`transformers` models cut to the kept layers, task models with built-in and plugin heads, and every refusal."""

from __future__ import annotations

import copy

import keras
import numpy as np
import pytest
from helpers import assert_mentions
from hf_reference import hf_forward, make_hf_model, random_batch, torch, transformers
from test_bert_checkpoints import make_bert

from distilbert_heads import create_distilbert_with_head
from distilbert_heads.distillation.student import (
    StudentError,
    default_layer_map,
    student_from_teacher,
    student_origin_of,
)
from distilbert_heads.encoder.checkpoints import encoder_state_dict
from distilbert_heads.encoder.distilbert import DistilBERT
from distilbert_heads.model.task_model import DistilBertTaskModel
from distilbert_heads.testing import TINY_ENCODER, sample_inputs

FOUR_LAYERS = {**TINY_ENCODER, "num_layers": 4}


# -- the default layer map ---------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "num_layers, expected",
    [(12, [0, 2, 4, 7, 9, 11]), (6, [0, 2, 5]), (4, [0, 3]), (3, [0]), (2, [0]), (1, [0]), (8, [0, 2, 5, 7])],
)
def test_default_layer_map_is_the_papers(num_layers, expected):
    assert default_layer_map(num_layers) == expected


@pytest.mark.parametrize("num_layers", range(1, 65))
def test_default_layer_map_keeps_half_bottom_and_top_each_once(num_layers):
    kept = default_layer_map(num_layers)
    assert len(kept) == max(1, num_layers // 2)
    assert kept == sorted(set(kept)) and kept[0] == 0 and kept[-1] < num_layers
    if len(kept) > 1:
        assert kept[-1] == num_layers - 1  # the top layer, whose output the teacher's heads read


@pytest.mark.parametrize("bad", [0, -3, True, 2.0, "12", None])
def test_default_layer_map_refuses_what_is_not_a_layer_count(bad):
    with pytest.raises(ValueError) as error:
        default_layer_map(bad)
    assert_mentions(error, "num_layers", repr(bad))


# -- against transformers: the reference model with only the kept layers ------------------------------------
def cut_distilbert(model, kept):
    cut = copy.deepcopy(model)
    cut.transformer.layer = torch.nn.ModuleList([cut.transformer.layer[index] for index in kept])
    cut.config.n_layers = len(kept)
    return cut


def cut_bert(model, kept):
    cut = copy.deepcopy(model)
    cut.encoder.layer = torch.nn.ModuleList([cut.encoder.layer[index] for index in kept])
    cut.config.num_hidden_layers = len(kept)
    return cut


def reference_hidden_states(model, ids, mask):
    if isinstance(model, transformers.BertModel):
        with torch.no_grad():
            out = model(
                input_ids=torch.from_numpy(ids).long(),
                attention_mask=torch.from_numpy(mask).long(),
                token_type_ids=torch.zeros(ids.shape, dtype=torch.long),
                output_hidden_states=True,
            )
    else:
        out = hf_forward(model, ids, mask, output_hidden_states=True)
    return [state.numpy() for state in out.hidden_states]


REFERENCES = {
    "DistilBertModel": lambda: make_hf_model("DistilBertModel", n_layers=6, dim=32, n_heads=4, hidden_dim=37),
    "BertModel": lambda: make_bert("BertModel", num_hidden_layers=6),
}
CUT = {"DistilBertModel": cut_distilbert, "BertModel": cut_bert}


@pytest.mark.parametrize("teacher_form", ["checkpoint directory", "DistilBERT"])
@pytest.mark.parametrize("layers", [None, [1, 3, 4], [5, 0], [0, 1, 2, 3, 4, 5]])
@pytest.mark.parametrize("reference", REFERENCES)
def test_student_equals_transformers_model_with_only_the_kept_layers(tmp_path, reference, layers, teacher_form):
    hf_model = REFERENCES[reference]()
    hf_model.save_pretrained(tmp_path)
    teacher = tmp_path if teacher_form == "checkpoint directory" else DistilBERT.from_pretrained(tmp_path)

    student = student_from_teacher(teacher, layers)

    kept = [0, 2, 5] if layers is None else layers
    assert isinstance(student, DistilBERT) and student.config.num_layers == len(kept)
    assert student.student_origin.layers == kept and student.load_report.layers == kept
    ids, mask = random_batch(97, batch=3, length=13, padding="right")
    ours = student({"input_ids": ids, "attention_mask": mask}, output_hidden_states=True)["hidden_states"]
    theirs = reference_hidden_states(CUT[reference](hf_model, kept), ids, mask)
    assert len(ours) == len(theirs) == len(kept) + 1
    real = mask.astype(bool)
    for index, (mine, reference_state) in enumerate(zip(ours, theirs)):
        np.testing.assert_allclose(
            keras.ops.convert_to_numpy(mine)[real], reference_state[real], atol=1e-5, rtol=0, err_msg=f"state {index}"
        )


def test_checkpoint_student_records_its_teacher(tmp_path):
    make_bert("BertModel", num_hidden_layers=4).save_pretrained(tmp_path)
    student = student_from_teacher(str(tmp_path), config={"dropout_rate": 0.0})
    origin = student.student_origin
    assert (origin.teacher, origin.teacher_num_layers, origin.teacher_hidden_size) == (str(tmp_path), 4, 36)
    assert origin.layers == [0, 3] and not origin.needs_projection
    assert student.config.dropout_rate == 0.0  # a free field: the student trains with it
    assert {"embeddings.word_embeddings", "transformer.layer.0", "transformer.layer.1"} <= set(origin.copied)
    assert "transformer.layer.2" not in origin.copied


# -- task models: same heads, copied weights, saved and reloaded --------------------------------------------
HEADS = {
    "sentiment": dict(task_type="sentiment", labels=["neg", "neutral", "pos"]),
    "foo plugin": dict(task_type="foo", labels=["sports", "politics", "tech"], pooling="mean"),
}


def teacher_model(head: str, tokenizer) -> DistilBertTaskModel:
    pytest.importorskip("distilbert_head_foo", reason="the example plugin is not installed")
    model = create_distilbert_with_head(distilbert_variant="tiny", tokenizer=tokenizer, **HEADS[head], **FOUR_LAYERS)
    model.max_length = 32
    rng = np.random.default_rng(7)  # non-zero biases and LayerNorms, so a weight left behind shows
    for variable in model.weights:
        variable.assign(rng.normal(0.0, 0.3, size=variable.shape).astype("float32"))
    return model


def outputs_of(model, inputs):
    return keras.tree.map_structure(keras.ops.convert_to_numpy, model(inputs))


@pytest.fixture(params=["in memory", ".keras path"])
def teacher_source(request, tmp_path):
    def make(head, tokenizer):
        model = teacher_model(head, tokenizer)
        if request.param == "in memory":
            return model, model
        path = tmp_path / "teacher.keras"
        model.save(path)
        return model, str(path)

    return make


@pytest.mark.parametrize("head", HEADS)
def test_identity_map_student_is_the_teacher(teacher_source, handmade_tokenizer, head, tmp_path):
    teacher, source = teacher_source(head, handmade_tokenizer)
    student = student_from_teacher(source, [0, 1, 2, 3])

    assert isinstance(student, DistilBertTaskModel)
    inputs = sample_inputs(batch_size=4, length=9)
    expected = outputs_of(teacher, inputs)
    keras.tree.map_structure(np.testing.assert_array_equal, outputs_of(student, inputs), expected)
    (name, original), (student_name, copied) = *teacher.heads.items(), *student.heads.items()
    assert (student_name, type(copied), copied.task_type) == (name, type(original), original.task_type)
    assert copied.options == original.options
    for key in ("plugin", "distribution", "version", "head_class"):
        assert student.head_provenance[name][key] == teacher.head_provenance[name][key]
    assert student.tokenizer.get_vocab() == handmade_tokenizer.get_vocab() and student.max_length == 32

    path = tmp_path / "student.keras"
    student.save(path)
    reloaded = keras.models.load_model(path)
    keras.tree.map_structure(np.testing.assert_array_equal, outputs_of(reloaded, inputs), expected)
    assert student_origin_of(reloaded) == student.student_origin
    assert reloaded.training_record["settings"]["made_by"] == "student_from_teacher"


@pytest.mark.parametrize("layers", [None, [3, 1], [2]])
@pytest.mark.parametrize("head", HEADS)
def test_student_takes_the_kept_layers_embeddings_and_head(teacher_source, handmade_tokenizer, head, layers):
    teacher, source = teacher_source(head, handmade_tokenizer)
    student = student_from_teacher(source, layers)

    kept = [0, 3] if layers is None else layers
    assert student.encoder.config.num_layers == len(kept)
    assert student.student_origin.layers == kept
    ours, theirs = encoder_state_dict(student.encoder), encoder_state_dict(teacher.encoder)
    for key, value in ours.items():
        if key.startswith("transformer.layer."):
            index, rest = key.removeprefix("transformer.layer.").split(".", 1)
            np.testing.assert_array_equal(value, theirs[f"transformer.layer.{kept[int(index)]}.{rest}"], err_msg=key)
        else:
            np.testing.assert_array_equal(value, theirs[key], err_msg=key)
    (name, original), (_, copied) = *teacher.heads.items(), *student.heads.items()
    for mine, reference in zip(copied.get_weights(), original.get_weights(), strict=True):
        np.testing.assert_array_equal(mine, reference)
    assert f"head {name}" in student.student_origin.copied


def test_student_of_a_student_keeps_shrinking(handmade_tokenizer):
    teacher = teacher_model("sentiment", handmade_tokenizer)
    grandchild = student_from_teacher(student_from_teacher(teacher))
    assert grandchild.encoder.config.num_layers == 1
    np.testing.assert_array_equal(
        grandchild.encoder.transformer_layers[0].get_weights()[0],
        teacher.encoder.transformer_layers[0].get_weights()[0],
    )


# -- projection: a student of another size, fresh where nothing fits ------------------------------------------
def test_projection_student_of_another_width_starts_fresh_and_records_the_teachers_width(handmade_tokenizer):
    teacher = teacher_model("foo plugin", handmade_tokenizer)
    student = student_from_teacher(teacher, config={"hidden_size": 32, "num_heads": 4}, projection=True)

    origin = student_origin_of(student)
    assert (origin.teacher_hidden_size, origin.hidden_size, origin.needs_projection) == (16, 32, True)
    assert origin.layers is None and origin.copied == []
    assert student.encoder.config.hidden_size == 32 and student.encoder.config.num_layers == 2
    (name, original), (_, head) = *teacher.heads.items(), *student.heads.items()
    assert type(head) is type(original) and head.options == original.options and head.hidden_size == 32
    outputs = outputs_of(student, sample_inputs())
    assert outputs[name]["logits"].shape == (4, 3) and np.isfinite(outputs[name]["logits"]).all()


def test_projection_student_with_other_layers_keeps_embeddings_and_heads(handmade_tokenizer):
    teacher = teacher_model("sentiment", handmade_tokenizer)
    student = student_from_teacher(teacher, config={"intermediate_size": 48, "num_layers": 3}, projection=True)

    origin = student.student_origin
    assert origin.layers is None and not origin.needs_projection
    assert origin.copied == [
        "embeddings.word_embeddings", "embeddings.position_embeddings", "embeddings.LayerNorm", "head sentiment"
    ]  # fmt: skip
    assert student.encoder.config.num_layers == 3 and student.encoder.config.intermediate_size == 48
    np.testing.assert_array_equal(
        keras.ops.convert_to_numpy(student.encoder.embeddings.word_embeddings.embeddings),
        keras.ops.convert_to_numpy(teacher.encoder.embeddings.word_embeddings.embeddings),
    )


def test_projection_with_fewer_positions_copies_the_layers_but_not_the_position_table(tmp_path):
    make_hf_model("DistilBertModel", n_layers=4).save_pretrained(tmp_path)
    student = student_from_teacher(tmp_path, config={"max_position_embeddings": 16}, projection=True)
    copied = student.student_origin.copied
    assert "embeddings.position_embeddings" not in copied
    assert {"embeddings.word_embeddings", "transformer.layer.0", "transformer.layer.1"} <= set(copied)
    assert student.load_report.missing == ["embeddings.position_embeddings.weight"]


# -- every refusal, with its facts ---------------------------------------------------------------------------
REFUSALS = {
    "hidden size": (
        dict(config={"hidden_size": 32, "num_heads": 4}),
        ["hidden_size 16", "32", "projection=True", "hidden_size=16", "can be copied"],
    ),
    "vocabulary": (dict(config={"vocab_size": 120}), ["vocab_size=120", "vocab_size=100", "tokenizer"]),
    "vocabulary, even with projection": (
        dict(config={"vocab_size": 120, "hidden_size": 32}, projection=True),
        ["vocab_size=120", "vocab_size=100", "tokenizer", "projection=True does not change this"],
    ),
    "pad token": (dict(config={"pad_token_id": 3}), ["pad_token_id=3", "pad_token_id=0", "tokenizer"]),
    "layer shape": (
        dict(config={"intermediate_size": 64, "num_heads": 4}),
        ["num_heads=4", "intermediate_size=64", "num_heads=2", "intermediate_size=32", "projection=True"],
    ),
    "activation": (dict(config={"hidden_act": "relu"}), ["hidden_act='relu'", "hidden_act='gelu'", "projection=True"]),
    "positions": (
        dict(config={"max_position_embeddings": 32}),
        ["max_position_embeddings=32", "max_position_embeddings=64", "projection=True"],
    ),
    "layer out of range": (dict(layers=[0, 9]), ["[9]", "4 layers", "0 to 3"]),
    "layer twice": (dict(layers=[1, 1]), ["[1]", "more than once"]),
    "no layers": (dict(layers=[]), ["empty", "4 layers"]),
    "not a list": (dict(layers="02"), ["'02'", "list of checkpoint layer indices"]),
    "depth disagrees with layers": (
        dict(layers=[0, 2], config={"num_layers": 3}),
        ["num_layers=3", "[0, 2]", "2 layers"],
    ),
    "depth without layers": (dict(config={"num_layers": 3}), ["num_layers=3", "[0, 3]", "layers=[0, 2, 3]"]),  # noqa: E501
    "layers that cannot be copied": (
        dict(layers=[0, 1], config={"intermediate_size": 48}, projection=True),
        ["layers=[0, 1]", "none can be copied", "num_layers"],
    ),
    "unknown config field": (dict(config={"hidden": 32}), ["hidden", "not a DistilBERT option"]),
}


@pytest.mark.parametrize("teacher_form", ["task model", "checkpoint directory"])
@pytest.mark.parametrize("rule", REFUSALS)
def test_refusals_say_what_differs_and_the_fix(tmp_path, handmade_tokenizer, rule, teacher_form):
    arguments, facts = REFUSALS[rule]
    if teacher_form == "task model":
        teacher = create_distilbert_with_head(task_type="sentiment", distilbert_variant="tiny", **FOUR_LAYERS)
    else:
        make_hf_model(
            "DistilBertModel", vocab_size=100, dim=16, n_layers=4, n_heads=2, hidden_dim=32, max_position_embeddings=64
        ).save_pretrained(tmp_path)
        teacher = str(tmp_path)
    with pytest.raises(ValueError) as error:
        student_from_teacher(teacher, **arguments)
    assert_mentions(error, *facts)
    if isinstance(error.value, StudentError) and "layers" not in arguments:
        assert_mentions(error, str(tmp_path) if teacher_form == "checkpoint directory" else "task model")


def test_a_teacher_of_another_kind_is_refused():
    with pytest.raises(TypeError) as error:
        student_from_teacher(42)
    assert_mentions(error, "int", "DistilBERT", ".keras", "checkpoint directory")
