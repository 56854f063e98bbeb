"""A joint intent + slot-filling head written from the guide (plugin_fixtures/distilbert-head-intent),
pip-installed for real: found through its entry point, trained from JSONL files through
`distilbert_heads.training.train` and through ``distilbert-heads train``, saved, reloaded in a fresh
process and run through `pipeline` and ``distilbert-heads predict``.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import keras
import numpy as np
import pytest
from plugin_fixtures import installed_plugins

from distilbert_heads import pipeline
from distilbert_heads.plugins.registry import get_head
from distilbert_heads.testing import reload_in_subprocess
from distilbert_heads.training.loop import train

SCRIPT = Path(sys.executable).with_name("distilbert-heads")
ENCODER = {"hidden_size": 32, "num_layers": 1, "num_heads": 2, "intermediate_size": 64, "max_position_embeddings": 32}
CITIES = ["paris", "rome", "oslo", "lima", "cairo", "tokyo", "delhi", "quito"]
GENRES = ["jazz", "rock", "blues", "folk", "pop", "soul", "funk", "disco"]


@pytest.fixture(scope="module")
def intent_plugin(tmp_path_factory):
    target = tmp_path_factory.mktemp("intent")
    with installed_plugins(target, "distilbert-head-intent", modules=("distilbert_head_intent",)) as site:
        yield site


def rows(count, seed):
    """Two intents, told apart by the first word; slots are the city (one or two words) or the genre."""
    rng = np.random.default_rng(seed)
    out = []
    for index in range(count):
        if index % 2:
            city = str(rng.choice(CITIES))
            if rng.random() < 0.5:
                out.append({"text": f"fly to {city}", "intent": "book_flight", "slots": ["O", "O", "B-city"]})
            else:
                slots = ["O", "O", "O", "B-city", "I-city"]
                out.append({"text": f"book flight to new {city}", "intent": "book_flight", "slots": slots})
        else:
            genre = str(rng.choice(GENRES))
            out.append({"text": f"play some {genre} now", "intent": "play_music", "slots": ["O", "O", "B-genre", "O"]})
    return out


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    directory = tmp_path_factory.mktemp("intent-data")
    paths = []
    for name, count, seed in (("train", 64, 0), ("eval", 16, 1)):
        path = directory / f"{name}.jsonl"
        path.write_text("".join(json.dumps(row) + "\n" for row in rows(count, seed)), encoding="utf-8")
        paths.append(path)
    return paths


def check_answers(answers, texts):
    assert len(answers) == len(texts)
    for answer, text in zip(answers, texts):
        assert set(answer) == {"intent", "score", "slots"}
        assert answer["intent"] in {"book_flight", "play_music"} and 0.0 <= answer["score"] <= 1.0
        assert len(answer["slots"]) == len(text.split())  # one tag per word


def test_installed_and_found_through_its_entry_point(intent_plugin):
    record = get_head("intent_slots")
    assert (record.distribution, record.version, record.builtin) == ("distilbert-head-intent", "0.1.0", False)
    assert record.head_class.__module__ == "distilbert_head_intent"
    assert Path(sys.modules["distilbert_head_intent"].__file__).is_relative_to(intent_plugin)


def test_trains_from_files_saves_reloads_and_predicts(intent_plugin, files, tmp_path):
    keras.utils.set_random_seed(0)
    train_file, eval_file = files
    out = tmp_path / "intent.keras"
    result = train(
        "intent_slots", train_file, eval_file=eval_file, epochs=8, batch_size=8, out=out, verbose=0, **ENCODER
    )
    assert list(result.metrics) == ["slot_f1", "intent_accuracy"]
    assert result.metrics["intent_accuracy"] >= 0.9  # the first word decides the intent
    assert result.history["loss"][-1] < result.history["loss"][0]
    assert len(result.history["val_slot_f1"]) == result.epochs_run  # early stopping watched the first metric
    head = result.model.heads["intent_slots"]
    assert head.options.intents == ["play_music", "book_flight"]
    assert head.options.slots == ["O", "B-genre", "B-city", "I-city"]

    texts = ["fly to oslo", "play some jazz now", "book flight to new lima"]
    in_memory = pipeline(result.model)(texts)
    check_answers(in_memory, texts)
    assert pipeline(str(out))(texts) == in_memory
    encoding = result.tokenizer.encode(texts, max_length=32)
    reloaded, summary = reload_in_subprocess(out, encoding.as_model_inputs())
    assert summary == {"class": "DistilBertTaskModel", "heads": {"intent_slots": "IntentSlotsHead"}, "compiled": True}
    expected = result.model.predict(encoding.as_model_inputs(), verbose=0)["intent_slots"]
    for name in ("intent", "slots"):
        np.testing.assert_allclose(reloaded[f"intent_slots/{name}"], expected[name], atol=1e-6)


def test_trains_and_predicts_through_the_command_line(intent_plugin, files, tmp_path):
    train_file, eval_file = files
    out = tmp_path / "cli.keras"
    trained = subprocess.run(
        [str(SCRIPT), "train", "--task", "intent_slots", "--train", str(train_file), "--eval", str(eval_file)]
        + ["--epochs", "2", "--batch-size", "16", "--max-length", "32", "--out", str(out), "--json"],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert trained.returncode == 0, trained.stderr[-3000:]
    report = json.loads(trained.stdout)
    assert set(report["metrics"]) == {"slot_f1", "intent_accuracy"} and report["path"] == str(out)
    texts = ["fly to rome", "play some funk now"]
    predicted = subprocess.run(
        [str(SCRIPT), "predict", "--model", str(out), "--text", *texts, "--json"],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert predicted.returncode == 0, predicted.stderr[-3000:]
    lines = [json.loads(line) for line in predicted.stdout.splitlines()]
    assert [line["input"] for line in lines] == texts
    check_answers([line["prediction"] for line in lines], texts)
