"""Plugins that define their own input kind, with no change to the library.

Two real plugin projects (tests/plugin_fixtures/distilbert-head-choice and -embed) are
pip-installed once for this module; each is found through its entry point, trains from JSONL
files through `train()` and the CLI, saves, reloads in a fresh process and runs through
`pipeline`:

* multiple choice: N (question, choice) rows per example, inputs (B, N, L), logits (B, N);
* sentence embedding: (a, b) paraphrase pairs as (B, 2, L), trained with in-batch negatives;
  a pipeline call embeds texts as (B, 1, L).
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import keras
import numpy as np
import pytest
from plugin_fixtures import installed_plugins

from distilbert_heads import create_distilbert_with_head, pipeline
from distilbert_heads.plugins.input_kinds import input_kind_of
from distilbert_heads.plugins.registry import get_head
from distilbert_heads.testing import TINY_ENCODER
from distilbert_heads.training.evaluation import evaluate
from distilbert_heads.training.loop import train

# The tiny encoder without its vocabulary size: train() sizes it to the vocabulary it learns.
ENCODER = {key: value for key, value in TINY_ENCODER.items() if key != "vocab_size"}
CLI = Path(sys.executable).parent / "distilbert-heads"

CHOICE_ROWS = [
    {"question": "which one is an animal", "choices": ["a cat", "a table", "a cloud"], "label": 0},
    {"question": "which one is a colour", "choices": ["a spoon", "red", "a horse"], "label": 1},
    {"question": "which one is a fruit", "choices": ["a boat", "a dog", "an apple"], "label": 2},
    {"question": "which one can fly", "choices": ["a bird", "a rock", "a shoe"], "label": 0},
    {"question": "which one is a number", "choices": ["blue", "seven", "a tree"], "label": 1},
    {"question": "which one is a drink", "choices": ["a chair", "a wall", "water"], "label": 2},
]
# Separable paraphrases: a and b of a pair share no word, so only training can make them retrievable.
EMBED_ROWS = [
    {"text_a": a, "text_b": b}
    for a, b in [
        ("cat kitten", "meow purr"),
        ("dog puppy", "bark woof"),
        ("car truck", "wheels engine"),
        ("sun summer", "hot bright"),
        ("snow winter", "cold ice"),
        ("book novel", "pages chapter"),
        ("piano violin", "music melody"),
        ("rain storm", "wet cloud"),
    ]
]
PLUGINS = {
    "choice": {"task": "multiple_choice", "kind": "multiple_choice", "rows": CHOICE_ROWS},
    "embed": {"task": "sentence_embedding", "kind": "texts", "rows": EMBED_ROWS},
}
PLUGIN_MODULES = ("distilbert_head_choice", "distilbert_head_embed")
CALLS = {
    "choice": [{"question": "which one is an animal", "choices": ["a cloud", "a horse", "a spoon"]}],
    "embed": ["cat kitten", "cold ice", "an unseen sentence"],
}


def write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    return path


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory):
    """Both plugins pip-installed into a directory on sys.path (and PYTHONPATH, for subprocesses)."""
    target = tmp_path_factory.mktemp("site")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("TF_CPP_MIN_LOG_LEVEL", "3")
        with installed_plugins(target, "distilbert-head-choice", "distilbert-head-embed", modules=PLUGIN_MODULES):
            yield target


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Per plugin: its training rows as a JSONL file, in a folder of its own."""
    return {
        plugin: write_jsonl(tmp_path_factory.mktemp(plugin) / "train.jsonl", spec["rows"])
        for plugin, spec in PLUGINS.items()
    }


@pytest.fixture(scope="module")
def cli_runs(installed, data):
    """Per plugin: `distilbert-heads train` on its file, started at once (it runs while the other tests do)."""
    runs = {}
    for plugin, path in data.items():
        out = path.with_name("cli.keras")
        command = [str(CLI), "train", "--task", plugin, "--train", str(path), "--out", str(out), "--json"]
        command += ["--epochs", "1", "--batch-size", "8", "--max-length", "32"]
        logs = [open(path.with_name(f"cli.{stream}"), "w+") for stream in ("out", "err")]  # noqa: SIM115
        runs[plugin] = (subprocess.Popen(command, stdout=logs[0], stderr=logs[1], text=True), out, logs)
    yield runs
    for process, _, logs in runs.values():
        if process.poll() is None:
            process.kill()
        process.wait()
        for log in logs:
            log.close()


@pytest.fixture(scope="module")
def trained(installed, data, cli_runs) -> dict:
    """Per plugin: the result of train() on its JSONL rows, saved to .keras."""
    results = {}
    for plugin, path in data.items():
        keras.utils.set_random_seed(0)
        results[plugin] = train(
            PLUGINS[plugin]["task"],
            path,
            epochs=25,
            batch_size=8,
            learning_rate=1e-2,
            out=path.with_name("api.keras"),
            verbose=0,
            **ENCODER,
        )
    return results


@pytest.mark.parametrize("plugin", PLUGINS)
def test_found_through_its_entry_point_with_its_own_input_kind(installed, plugin):
    record = get_head(PLUGINS[plugin]["task"])
    assert (record.distribution, record.version, record.builtin) == (f"distilbert-head-{plugin}", "0.1.0", False)
    assert input_kind_of(record.head_class).name == PLUGINS[plugin]["kind"]
    assert get_head(plugin).task_type == PLUGINS[plugin]["task"]  # its alias


@pytest.mark.parametrize("plugin", PLUGINS)
def test_trains_from_a_file_through_train_and_saves(trained, plugin):
    result = trained[plugin]
    losses = result.history["loss"]
    assert all(np.isfinite(losses)) and losses[-1] < losses[0], losses
    assert 0.0 <= result.metrics["accuracy"] <= 1.0 and result.metrics_split == "train"
    assert result.path.is_file()


def test_multiple_choice_logits_have_one_score_per_choice_and_decode_names_the_choice(trained):
    model = trained["choice"].model
    pipe = pipeline(model, show_progress=False)
    item = {"question": "which one is a fruit", "choices": ["a boat", "a dog", "an apple"]}
    answer = pipe(item)
    assert set(answer) == {"label", "choice", "score"} and answer["choice"] == item["choices"][answer["label"]]
    assert 1 / 3 < answer["score"] <= 1.0
    kind = model.heads["multiple_choice"].input_kind
    inputs = kind.model_inputs(kind.encode(model.tokenizer, kind.items_from_call(item, {})[0], 16))
    assert inputs["input_ids"].shape[:2] == (1, 3)
    assert keras.ops.convert_to_numpy(model(inputs)["multiple_choice"]["logits"]).shape == (1, 3)
    # a list gives one answer per item, in order; the training rows are memorised
    answers = pipe([{k: row[k] for k in ("question", "choices")} for row in CHOICE_ROWS])
    assert [a["label"] for a in answers] == [row["label"] for row in CHOICE_ROWS]


def test_embedding_pipeline_gives_unit_vectors_one_per_text(trained):
    pipe = pipeline(trained["embed"].model, show_progress=False)
    vectors = np.array(pipe(["cat kitten", "meow purr", "cold ice"]))
    assert vectors.shape == (3, 32)
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, rtol=1e-5)
    np.testing.assert_allclose(pipe("cat kitten"), vectors[0], atol=1e-5)  # alone or in a batch: the same
    assert vectors[0] @ vectors[1] > vectors[0] @ vectors[2]  # a trained pair is nearer than another text


def test_contrastive_training_makes_pairs_retrievable(trained, data):
    """After training, a_i's nearest b is b_i far more often than with the same model untrained."""
    result = trained["embed"]
    keras.utils.set_random_seed(0)
    untrained = create_distilbert_with_head(
        task_type="sentence_embedding", distilbert_variant="tiny", vocab_size=result.tokenizer.vocab_size, **ENCODER
    )
    untrained.tokenizer = result.tokenizer
    before = evaluate(untrained, data["embed"])["accuracy"]
    after = evaluate(result.model, data["embed"])["accuracy"]
    assert after == result.metrics["accuracy"]
    assert after >= 0.75 and after > before + 0.25, (before, after)


@pytest.mark.parametrize(
    ("plugin", "bad", "expected"),
    [
        ("choice", "just a string", "question"),
        ("choice", {"question": "q", "choices": "one string"}, "choices"),
        ("choice", {"question": "q", "choices": ["only one"]}, "at least 2"),
        ("choice", [{"question": "q", "choices": ["a", "b"]}], "built for 3"),
        ("embed", 42, "a text or a list of texts"),
        ("embed", ["a text", ("a", "pair")], "separate calls"),
        ("embed", [None], "a text or a list of texts"),
    ],
)
def test_bad_pipeline_inputs_are_refused_saying_what_the_kind_takes(trained, plugin, bad, expected):
    pipe = pipeline(trained[plugin].model, show_progress=False)
    with pytest.raises((TypeError, ValueError), match=expected):
        pipe(bad)


@pytest.fixture(scope="module")
def cli_trained(cli_runs) -> dict[str, Path]:
    """Per plugin: the model `distilbert-heads train` saved, once it has finished."""
    for plugin, (process, out, (stdout, stderr)) in cli_runs.items():
        process.wait(timeout=300)
        stdout.seek(0), stderr.seek(0)
        assert process.returncode == 0, f"distilbert-heads train --task {plugin} failed:\n{stderr.read()[-3000:]}"
        report = json.loads(stdout.read().strip().splitlines()[-1])
        assert report["path"] == str(out) and 0.0 <= report["metrics"]["accuracy"] <= 1.0, report
    return {plugin: out for plugin, (_, out, _) in cli_runs.items()}


FRESH_PROCESS = textwrap.dedent(
    """
    import json, sys
    import distilbert_heads

    jobs = json.loads(sys.argv[1])
    answers = [distilbert_heads.pipeline(path, show_progress=False)(call) for path, call in jobs]
    loaded = sorted(name for name in sys.modules if name.startswith("distilbert_head_"))
    print(json.dumps({"answers": answers, "plugins": loaded}))
    """
)


def test_saved_models_reload_in_a_fresh_process_with_the_same_answers(trained, cli_trained):
    """Both the train() and the CLI model of each plugin, in one fresh process that imports only distilbert_heads."""
    jobs = [(str(trained[p].path), CALLS[p]) for p in PLUGINS]
    jobs += [(str(cli_trained[p]), CALLS[p]) for p in PLUGINS]
    expected = [pipeline(trained[p].model, show_progress=False)(CALLS[p]) for p in PLUGINS]
    expected += [pipeline(str(cli_trained[p]), show_progress=False)(CALLS[p]) for p in PLUGINS]
    done = subprocess.run(
        [sys.executable, "-c", FRESH_PROCESS, json.dumps(jobs)], capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stderr[-3000:]
    fresh = json.loads(done.stdout.strip().splitlines()[-1])
    assert set(PLUGIN_MODULES) <= set(fresh["plugins"])  # imported by the registry, through the entry points
    for (path, _), want, got in zip(jobs, expected, fresh["answers"], strict=True):
        if isinstance(want[0], dict):  # multiple choice: the same choice, the same probability
            assert [a["label"] for a in got] == [a["label"] for a in want], path
            np.testing.assert_allclose([a["score"] for a in got], [a["score"] for a in want], rtol=1e-6)
        else:
            np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-7, err_msg=path)
