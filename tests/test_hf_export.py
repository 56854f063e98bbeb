"""Hugging Face task checkpoints out (`save_pretrained`, `export_hf`) and `push_to_hub`.

Every built-in head is written, loaded back by `transformers`' matching ``AutoModelFor...`` (no
missing or unexpected keys), and run side by side with ours: logits to 1e-5, and
`transformers.pipeline` on the folder gives our pipeline's answers.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any, ClassVar

import keras
import numpy as np
import pytest
from helpers import TINY_ENCODER, assert_mentions, demo_vocab_tokenizer

import distilbert_heads
from distilbert_heads import create_distilbert_with_head, create_distilbert_with_heads
from distilbert_heads.encoder.distilbert import DistilBERT
from distilbert_heads.heads._hf_weights import dense_weights, hf_label_maps
from distilbert_heads.model.task_model import DistilBertTaskModel
from distilbert_heads.plugins.head import TaskHead
from distilbert_heads.serving import hf_checkpoint
from distilbert_heads.serving.export import ExportError
from distilbert_heads.serving.hf_checkpoint import HubError, export_hf, push_to_hub, unsupported_heads_hf
from distilbert_heads.text.pipeline import pipeline as our_pipeline

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

TEXTS = [
    "Marie Curie moved to Paris to join Hooli.",
    "The movie was great",
    "Barbara McClintock visited Somerville and Lovelace in New York .",
    "awful",
]
PAIRS = [
    ("Our team found a wooden boat.", "A wooden boat was found by our team."),
    ("The company bought an old guitar.", "The company discovered the broken radio."),
    ("Barbara McClintock left.", "McClintock left Somerville."),
]
QUESTIONS = [
    ("Who started Vandelay Industries?", "Katherine Johnson founded Vandelay Industries in 1985 in Paris."),
    ("Where is Tyrell Corporation based?", "The headquarters of Tyrell Corporation are in Lima."),
]

# task, options, transformers class, pipeline task (None: transformers has none, see test_qa)
CASES = {
    "sentiment": ("sentiment", {"labels": ["negative", "neutral", "positive"]}, "AutoModelForSequenceClassification"),
    "regression": ("sentiment", {"num_classes": 1}, "AutoModelForSequenceClassification"),
    "pairwise": ("pairwise", {"labels": ["paraphrase", "different"]}, "AutoModelForSequenceClassification"),
    "ner": (
        "ner",
        {"labels": ["O", "B-PER", "I-PER", "B-LOC", "I-LOC", "B-ORG", "I-ORG"]},
        "AutoModelForTokenClassification",
    ),
    "qa": ("qa", {}, "AutoModelForQuestionAnswering"),
}


@pytest.fixture(scope="module")
def tokenizer():
    return demo_vocab_tokenizer()


def decisive_model(tokenizer, task: str, options: dict[str, Any], seed: int = 0):
    """A tiny model whose weights are spread wide, so answers differ clearly between labels and positions
    (fresh weights give near-ties that would make a label comparison a coin toss)."""
    model = create_distilbert_with_head(
        task,
        distilbert_variant="tiny",
        encoder_options={**TINY_ENCODER, "vocab_size": tokenizer.vocab_size},
        tokenizer=tokenizer,
        max_length=48,
        **options,
    )
    rng = np.random.default_rng(seed)
    for variable in model.weights:
        variable.assign(rng.normal(0.0, 0.5, tuple(variable.shape)).astype("float32"))
    return model


@pytest.fixture(scope="module", params=list(CASES))
def exported(request, tokenizer, tmp_path_factory):
    task, options, auto_class = CASES[request.param]
    model = decisive_model(tokenizer, task, options)
    folder = model.save_pretrained(tmp_path_factory.mktemp(request.param) / "checkpoint")
    hf_model, info = getattr(transformers, auto_class).from_pretrained(folder, output_loading_info=True)
    return request.param, model, folder, hf_model.eval(), info


def hf_logits(hf_model, ids: np.ndarray, mask: np.ndarray) -> dict[str, np.ndarray]:
    with torch.no_grad():
        out = hf_model(input_ids=torch.from_numpy(ids).long(), attention_mask=torch.from_numpy(mask).long())
    names = ("start_logits", "end_logits") if hasattr(out, "start_logits") else ("logits",)
    return {name: getattr(out, name).numpy() for name in names}


def test_transformers_loads_every_weight_and_computes_our_logits(exported):
    case, model, folder, hf_model, info = exported
    assert {key: sorted(value) for key, value in info.items() if key != "error_msgs"} == {
        "missing_keys": [],
        "unexpected_keys": [],
        "mismatched_keys": [],
    }
    config = json.loads((folder / "config.json").read_text())
    ((name, head),) = model.heads.items()
    assert config["architectures"] == [type(head).hf_architecture]
    if case != "qa":
        assert hf_model.config.id2label == dict(enumerate(head.class_names))
        assert hf_model.config.label2id == {label: i for i, label in enumerate(head.class_names)}
    assert (config.get("problem_type") == "regression") == (case == "regression")
    rng = np.random.default_rng(3)
    ids = rng.integers(5, model.encoder.config.vocab_size, size=(3, 13)).astype("int32")
    mask = np.ones_like(ids)
    mask[1, 9:] = 0
    mask[2, 4:] = 0
    ids[mask == 0] = 0
    ours = model({"input_ids": ids, "attention_mask": mask})[name]
    theirs = hf_logits(hf_model, ids, mask)
    assert set(theirs) == set(ours)
    for key, value in theirs.items():
        ours_value = keras.ops.convert_to_numpy(ours[key])
        if key == "logits" and ours_value.ndim == 2:
            np.testing.assert_allclose(value, ours_value, atol=1e-5, rtol=0)
        else:  # per token: padding positions are masked differently (ours to a large negative), compare the rest
            np.testing.assert_allclose(value[mask == 1], ours_value[mask == 1], atol=1e-5, rtol=0)


def test_transformers_pipeline_gives_our_answers(exported):
    case, model, folder, _, _ = exported
    if case == "qa":
        pytest.skip("transformers 5 has no question-answering pipeline: test_qa_answers_from_transformers_logits")
    ours = our_pipeline(model)
    if case in ("sentiment", "regression"):
        theirs = transformers.pipeline("text-classification", model=str(folder))(TEXTS)
        expected = ours(TEXTS)
        if case == "regression":
            assert [t["label"] for t in theirs] == ["LABEL_0"] * len(TEXTS)
        else:
            assert [t["label"] for t in theirs] == [e["label"] for e in expected]
        np.testing.assert_allclose([t["score"] for t in theirs], [e["score"] for e in expected], atol=1e-4)
        # The texts reach the head: their answers differ (a constant answer would compare nothing).
        assert len({round(e["score"], 4) for e in expected}) > 1
    elif case == "pairwise":
        hf_pipe = transformers.pipeline("text-classification", model=str(folder))
        # Our pair packing is transformers' tokenizer(text_a, text_b): the same ids, special tokens and all.
        hf_ids = hf_pipe.tokenizer([a for a, _ in PAIRS], [b for _, b in PAIRS], padding=True)["input_ids"]
        assert hf_ids == model.tokenizer.encode([a for a, _ in PAIRS], [b for _, b in PAIRS]).input_ids.tolist()
        theirs = hf_pipe([{"text": a, "text_pair": b} for a, b in PAIRS])
        expected = ours(PAIRS)
        assert [t["label"] for t in theirs] == [e["label"] for e in expected]
        np.testing.assert_allclose([t["score"] for t in theirs], [e["score"] for e in expected], atol=1e-4)
    else:  # ner: "first" is our rule, a word takes its first sub-token's tag
        hf_pipe = transformers.pipeline("token-classification", model=str(folder), aggregation_strategy="first")
        theirs, expected = hf_pipe(TEXTS), ours(TEXTS)
        assert sum(map(len, expected)) >= 3, "the texts should hold entities"
        for text, hf_entities, our_entities in zip(TEXTS, theirs, expected):
            assert [(e["entity_group"], e["start"], e["end"]) for e in hf_entities] == [
                (e["entity"], e["start"], e["end"]) for e in our_entities
            ], text
            np.testing.assert_allclose([e["score"] for e in hf_entities], [e["score"] for e in our_entities], atol=1e-4)


def test_qa_answers_from_transformers_logits(tokenizer, tmp_path):
    """transformers 5 dropped its question-answering pipeline: its tokenizer (read from the folder) and model
    stand in for it, and our span decoding on its logits gives our pipeline's answers."""
    model = decisive_model(tokenizer, "qa", {})
    folder = model.save_pretrained(tmp_path / "qa")
    hf_tokenizer = transformers.AutoTokenizer.from_pretrained(folder)
    hf_model = transformers.AutoModelForQuestionAnswering.from_pretrained(folder).eval()
    questions, contexts = [q for q, _ in QUESTIONS], [c for _, c in QUESTIONS]
    encoding = model.tokenizer.encode(questions, contexts)
    hf_encoding = hf_tokenizer(questions, contexts, padding=True, return_offsets_mapping=True)
    assert hf_encoding["input_ids"] == encoding.input_ids.tolist()
    assert [[tuple(pair) for pair in row] for row in hf_encoding["offset_mapping"]] == [
        [tuple(pair) for pair in row] for row in np.asarray(encoding.offsets).tolist()
    ]
    logits = hf_logits(hf_model, encoding.input_ids, encoding.attention_mask)
    theirs = model.heads["qa"].decode(logits, encoding, questions=questions, contexts=contexts)
    expected = our_pipeline(model)(question=questions, context=contexts)
    assert [(t["answer"], t["start"], t["end"]) for t in theirs] == [
        (e["answer"], e["start"], e["end"]) for e in expected
    ]
    assert all(e["answer"] for e in expected)
    np.testing.assert_allclose([t["score"] for t in theirs], [e["score"] for e in expected], atol=1e-4)


# -- the model card ---------------------------------------------------------------------------------
def test_model_card_names_task_labels_metrics_data_and_versions(trained_sentiment, tmp_path):
    result, train_file, eval_file = trained_sentiment.result, trained_sentiment.train_file, trained_sentiment.eval_file
    record = result.model.training_record
    assert record["metrics"] == {"split": "eval", "values": pytest.approx(result.metrics)}
    folder = result.model.save_pretrained(tmp_path / "card")
    card = (folder / "README.md").read_text("utf-8")
    assert card.startswith("---\nlibrary_name: transformers\n")
    assert 'pipeline_tag: "text-classification"' in card
    head = result.model.heads["sentiment"]
    assert_mentions(
        card, "sentiment", head.task_type, "DistilBertForSequenceClassification", distilbert_heads.__version__
    )
    for label in head.class_names:
        assert f"| {label} |" in card
    for metric, value in result.metrics.items():
        assert f"| {metric} | {value:.4f} |" in card
    for path in (train_file, eval_file):
        digest = hashlib.sha256(path.read_bytes()).hexdigest()
        assert f"| {path.name} | {path.stat().st_size} | `{digest}` |" in card
    assert "the eval file" in card
    # The tokenizer the pipeline reads truncates where ours does.
    assert json.loads((folder / "tokenizer_config.json").read_text())["model_max_length"] == result.model.max_length
    assert {"config.json", "model.safetensors", "vocab.txt", "tokenizer.json", "README.md"} <= {
        entry.name for entry in folder.iterdir()
    }


def test_model_card_of_an_untrained_model_says_what_is_not_recorded(tokenizer, tmp_path):
    model = decisive_model(tokenizer, "qa", {})
    card = (model.save_pretrained(tmp_path / "qa") / "README.md").read_text("utf-8")
    assert_mentions(card, "question-answering", "Not recorded", "spans", distilbert_heads.__version__)


# -- what cannot be written -----------------------------------------------------------------------------
def test_a_head_without_a_hugging_face_equivalent_is_refused_by_name(tmp_path):
    pytest.importorskip("distilbert_head_foo", reason="the example plugin is not installed")
    model = create_distilbert_with_head("foo", distilbert_variant="tiny", num_classes=3, **TINY_ENCODER)
    assert set(unsupported_heads_hf(model)) == {"foo"}
    for write in (model.save_pretrained, lambda out: export_hf(model, out)):
        with pytest.raises(ExportError) as error:
            write(tmp_path / "foo")
        assert_mentions(error, "'foo'", "FooHead", "hf_architecture", "hf_head_weights", "hf_config", "saved_model")
    assert not (tmp_path / "foo").exists()


class KeywordHead(TaskHead):
    """A plugin-style head (not registered) that names a transformers architecture through the hooks."""

    task_types: ClassVar[tuple[str, ...]] = ("keywords",)
    output_names: ClassVar[tuple[str, ...]] = ("logits",)
    hf_architecture: ClassVar[str | None] = "DistilBertForTokenClassification"

    def __init__(self, hidden_size: int, task_type: str = "keywords", options: Any = None, **kwargs: Any) -> None:
        super().__init__(hidden_size, task_type, options, **kwargs)
        self.classifier = keras.layers.Dense(2, name="classifier")

    def build(self, input_shape: Any = None) -> None:
        self.classifier.build((None, None, self.hidden_size))
        self.built = True

    def call(self, hidden_states: Any, attention_mask: Any = None, training: bool | None = None) -> dict[str, Any]:
        return {"logits": self.classifier(hidden_states)}

    def default_losses(self) -> dict[str, Any]:
        return {"logits": keras.losses.SparseCategoricalCrossentropy(from_logits=True)}

    def hf_head_weights(self) -> dict[str, np.ndarray]:
        return dense_weights(self.classifier, "classifier")

    def hf_config(self) -> dict[str, Any]:
        return hf_label_maps(["other", "keyword"])


def test_a_plugin_head_that_sets_the_hooks_is_written(tokenizer, tmp_path):
    """The hooks are the plugin contract: a head naming a transformers architecture exports like a built-in."""
    encoder = DistilBERT(**{**TINY_ENCODER, "vocab_size": tokenizer.vocab_size})
    model = DistilBertTaskModel(
        encoder, [KeywordHead(encoder.config.hidden_size, name="keywords")], tokenizer=tokenizer
    )
    assert unsupported_heads_hf(model) == {}
    folder = model.save_pretrained(tmp_path / "keywords")
    hf_model, info = transformers.AutoModelForTokenClassification.from_pretrained(folder, output_loading_info=True)
    assert not info["missing_keys"] and not info["unexpected_keys"]
    assert hf_model.config.id2label == {0: "other", 1: "keyword"}
    ids = model.tokenizer.encode(TEXTS[:2])
    ours = keras.ops.convert_to_numpy(model(ids.as_model_inputs())["keywords"]["logits"])
    theirs = hf_logits(hf_model.eval(), ids.input_ids, ids.attention_mask)["logits"]
    np.testing.assert_allclose(theirs[ids.attention_mask == 1], ours[ids.attention_mask == 1], atol=1e-5)


def test_a_model_with_several_heads_needs_head(tokenizer, tmp_path):
    model = create_distilbert_with_heads(
        [{"task_type": "sentiment", "name": "mood"}, {"task_type": "ner", "name": "tags"}],
        distilbert_variant="tiny",
        tokenizer=tokenizer,
        **{**TINY_ENCODER, "vocab_size": tokenizer.vocab_size},
    )
    with pytest.raises(ExportError) as error:
        model.save_pretrained(tmp_path / "both")
    assert_mentions(error, "2", "'mood'", "'tags'", "head='mood'")
    assert not (tmp_path / "both").exists()
    folder = model.save_pretrained(tmp_path / "tags", head="tags")
    _, info = transformers.AutoModelForTokenClassification.from_pretrained(folder, output_loading_info=True)
    assert not info["missing_keys"] and not info["unexpected_keys"]
    with pytest.raises(ExportError) as error:
        model.save_pretrained(tmp_path / "x", head="nope")
    assert_mentions(error, "'nope'", "'mood'", "'tags'")


def test_a_model_without_tokenizer_is_refused(tmp_path):
    model = create_distilbert_with_head("sentiment", distilbert_variant="tiny", **TINY_ENCODER)
    with pytest.raises(ExportError) as error:
        model.save_pretrained(tmp_path / "x")
    assert_mentions(error, "no tokenizer", "model.tokenizer =")


# -- writing folders ----------------------------------------------------------------------------------
def test_a_failed_write_leaves_the_previous_folder(tokenizer, tmp_path, monkeypatch):
    model = decisive_model(tokenizer, "sentiment", {"labels": ["a", "b"]})
    folder = model.save_pretrained(tmp_path / "out")
    before = {entry.name: entry.read_bytes() for entry in folder.iterdir()}
    other = decisive_model(tokenizer, "sentiment", {"labels": ["c", "d"]}, seed=1)

    def disk_full(*args: Any, **kwargs: Any) -> str:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(hf_checkpoint, "model_card", disk_full)
    with pytest.raises(OSError, match="No space"):
        other.save_pretrained(folder)
    with pytest.raises(OSError, match="No space"):
        export_hf(other, folder, overwrite=True)
    assert {entry.name: entry.read_bytes() for entry in folder.iterdir()} == before
    assert [entry.name for entry in tmp_path.iterdir()] == ["out"]  # no temporary left beside it


def test_save_pretrained_keeps_other_files_and_export_hf_needs_overwrite(tokenizer, tmp_path):
    model = decisive_model(tokenizer, "sentiment", {"labels": ["a", "b"]})
    folder = tmp_path / "out"
    folder.mkdir()
    (folder / "notes.txt").write_text("mine")
    model.save_pretrained(folder)
    assert (folder / "notes.txt").read_text() == "mine" and (folder / "config.json").is_file()
    with pytest.raises(ExportError) as error:
        export_hf(model, folder)
    assert_mentions(error, str(folder), "overwrite=True")
    assert export_hf(model, folder, overwrite=True) == folder
    assert not (folder / "notes.txt").exists()  # replaced whole


# -- pushing ----------------------------------------------------------------------------------------
class RecordingApi:
    """An HfApi stand-in: records every call; ``whoami`` raises ``failure`` when given one."""

    def __init__(self, failure: BaseException | None = None) -> None:
        self.failure, self.calls, self.uploaded = failure, [], {}

    def whoami(self, token: Any = None) -> dict[str, Any]:
        self.calls.append("whoami")
        if self.failure is not None:
            raise self.failure
        return {"name": "someone"}

    def create_repo(self, repo_id: str, **kwargs: Any) -> str:
        self.calls.append(("create_repo", repo_id, kwargs.get("private")))
        return f"https://huggingface.co/{repo_id}"

    def upload_folder(self, *, repo_id: str, folder_path: Any, **kwargs: Any) -> Any:
        self.calls.append(("upload_folder", repo_id))
        self.uploaded = {path.name: path.read_bytes() for path in Path(folder_path).iterdir()}
        return type("CommitInfo", (), {"commit_url": f"https://huggingface.co/{repo_id}/commit/abc"})()


def test_push_without_network_fails_before_uploading(tokenizer, monkeypatch):
    """The real HfApi with the hub unreachable: a HubError, and no repository call at all."""
    huggingface_hub = pytest.importorskip("huggingface_hub")
    # Port 9 refuses connections: the hub is unreachable even on a machine with network.
    monkeypatch.setattr(huggingface_hub.constants, "ENDPOINT", "http://127.0.0.1:9")
    calls = []
    for method in ("create_repo", "upload_folder", "upload_file", "create_commit"):
        monkeypatch.setattr(huggingface_hub.HfApi, method, lambda *a, _m=method, **k: calls.append(_m))
    model = decisive_model(tokenizer, "sentiment", {"labels": ["a", "b"]})
    with pytest.raises(HubError) as error:
        model.push_to_hub("someone/tiny-sentiment", token="hf_not_a_real_token")
    assert_mentions(error, "'someone/tiny-sentiment'", "nothing was uploaded", "save_pretrained")
    assert calls == []


@pytest.mark.parametrize(
    ("failure", "facts"),
    [
        (ConnectionError("Name or service not known"), ["could not be reached", "hf upload someone/x"]),
        (type("LocalTokenNotFoundError", (Exception,), {})("no token"), ["no Hugging Face token", "hf auth login"]),
        (
            type("HfHubHTTPError", (Exception,), {"response": type("R", (), {"status_code": 401})()})("401"),
            ["refused the token (HTTP 401)", "write access"],
        ),
        (type("OfflineModeIsEnabled", (Exception,), {})("offline"), ["HF_HUB_OFFLINE"]),
    ],
)
def test_push_failures_say_what_to_do_and_upload_nothing(tokenizer, failure, facts):
    api = RecordingApi(failure)
    model = decisive_model(tokenizer, "sentiment", {"labels": ["a", "b"]})
    with pytest.raises(HubError) as error:
        push_to_hub(model, "someone/x", api=api)
    assert_mentions(error, "'someone/x'", "nothing was uploaded", *facts)
    assert api.calls == ["whoami"]


def test_push_uploads_the_checkpoint_folder(tokenizer, tmp_path):
    api = RecordingApi()
    model = decisive_model(tokenizer, "ner", {"labels": ["O", "B-PER", "I-PER"]})
    url = push_to_hub(model, "someone/tags", api=api, private=True)
    assert url == "https://huggingface.co/someone/tags/commit/abc"
    assert api.calls == ["whoami", ("create_repo", "someone/tags", True), ("upload_folder", "someone/tags")]
    saved = model.save_pretrained(tmp_path / "local")
    local = {entry.name: entry.read_bytes() for entry in saved.iterdir()}
    assert set(api.uploaded) == set(local) >= {"config.json", "model.safetensors", "README.md", "tokenizer.json"}
    assert {name: api.uploaded[name] for name in ("config.json", "model.safetensors")} == {
        name: local[name] for name in ("config.json", "model.safetensors")
    }
