"""Batch inference: `BatchPredictor` (a dict of numpy columns in, the same columns plus answers out) gives the
in-process pipeline's answers for every built-in head and a plugin head with its own input kind, and travels as
class + arguments; `distilbert_heads.ray_data.predict` runs it over a Ray Dataset on a local cluster (5,000
texts, answers identical to the pipeline's) and leaves no Ray process behind.
"""

from __future__ import annotations

import importlib.util
import json
import os
import pickle
import shutil
import signal
import subprocess
import sys
import tempfile
import textwrap
import time
import warnings
from pathlib import Path

import numpy as np
import pytest
from helpers import assert_mentions, demo_rows
from plugin_fixtures import installed_plugins

from distilbert_heads import BatchPredictor, create_distilbert_with_head, pipeline
from distilbert_heads.display import jsonable
from distilbert_heads.serving.batch import ANSWER_FORMATS

ENCODER = {"num_layers": 1, "hidden_size": 32, "num_heads": 2, "intermediate_size": 64}
CHOICE_MODULES = ("distilbert_head_choice",)
RAY_MISSING = 'Ray is not installed: pip install "distilbert-heads[ray]" (CI installs it)'

# Per built-in head: a batch of its input kind's columns, with hostile rows (empty, unicode, long) among them.
TEXTS = ["the movie was great", "", "   ", "Zoë Åström visited 東京", "marie curie " * 40, "awful , boring ."]
BATCHES = {
    "sentiment": {"text": TEXTS},
    "ner": {"text": TEXTS},
    "mlm": {"text": [f"[MASK] {text} ." for text in TEXTS]},
    "pairwise": {"text_a": TEXTS, "text_b": TEXTS[::-1]},
    "qa": {"question": ["who visited ?", "what ?", "", "who ?", "why ?", "when"], "context": TEXTS[::-1]},
}


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory, demo_tokenizer) -> dict[str, Path]:
    """Per built-in head: a tiny untrained model with its tokenizer, saved to .keras."""
    folder = tmp_path_factory.mktemp("batch_models")
    paths = {}
    for task in BATCHES:
        model = create_distilbert_with_head(
            task_type=task,
            distilbert_variant="tiny",
            vocab_size=demo_tokenizer.vocab_size,
            tokenizer=demo_tokenizer,
            **ENCODER,
        )
        model.max_length = 48
        paths[task] = folder / f"{task}.keras"
        model.save(paths[task])
    return paths


@pytest.fixture(scope="module")
def choice_model(tmp_path_factory: pytest.TempPathFactory, demo_tokenizer):
    """The multiple-choice plugin (its own input kind: question + choices, (B, N, L) rows) pip-installed for real,
    and a tiny model with its head saved to .keras; yields (path, the folder the plugin is installed in)."""
    target = tmp_path_factory.mktemp("choice_site")
    with installed_plugins(target, "distilbert-head-choice", modules=CHOICE_MODULES):
        model = create_distilbert_with_head(
            task_type="multiple_choice",
            distilbert_variant="tiny",
            vocab_size=demo_tokenizer.vocab_size,
            tokenizer=demo_tokenizer,
            head_options={"num_choices": 3},
            **ENCODER,
        )
        path = target.parent / "choice.keras"
        model.save(path)
        yield path, target


def as_batch(columns: dict[str, list], form: str) -> dict[str, np.ndarray]:
    """Columns as numpy arrays the way engines hand them over: fixed-width unicode or object arrays, and an id."""
    rows = len(next(iter(columns.values())))
    batch = {"id": np.arange(100, 100 + rows)}
    for name, values in columns.items():
        if form == "object" or not isinstance(values[0], str):
            column = np.empty(rows, dtype=object)
            column[:] = [np.array(value) if isinstance(value, list) else value for value in values]
            batch[name] = column
        else:
            batch[name] = np.array(values)
    return batch


def reference_answers(path: Path, columns: dict[str, list]) -> list:
    """The in-process pipeline's answers for the same rows."""
    pipe = pipeline(path)
    fields = pipe.input_kind.fields
    rows = [dict(zip(fields, values)) for values in zip(*(columns[field] for field in fields))]
    return pipe.predict_items([pipe.input_kind.item_from_row(row, f"row {i}") for i, row in enumerate(rows)])


def assert_same_answers(actual: object, expected: object, where: str = "answers") -> None:
    """Equal answers: every label, text, index and key exactly; scores to float rounding (1e-5 relative). The
    grouping of inputs into forward passes differs (on JAX it sets the padded shape) and moves the last bits of a
    score; on TensorFlow the answers came out bitwise equal."""
    if isinstance(expected, (float, np.floating)):
        assert isinstance(actual, (float, np.floating)) and actual == pytest.approx(expected, rel=1e-5, abs=1e-7), (
            f"{where}: {actual!r} != {expected!r}"
        )
    elif isinstance(expected, dict):
        assert isinstance(actual, dict) and list(actual) == list(expected), f"{where}: {actual!r} != {expected!r}"
        for key in expected:
            assert_same_answers(actual[key], expected[key], f"{where}[{key!r}]")
    elif isinstance(expected, (list, tuple)):
        assert type(actual) is type(expected) and len(actual) == len(expected), f"{where}: {actual!r} != {expected!r}"
        for index, (got, want) in enumerate(zip(actual, expected)):
            assert_same_answers(got, want, f"{where}[{index}]")
    else:
        assert actual == expected, f"{where}: {actual!r} != {expected!r}"


# -- the predictor ------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("form", ["unicode", "object"])
@pytest.mark.parametrize("task", BATCHES)
def test_answers_are_the_pipelines_for_every_builtin_head(models, task, form):
    columns = BATCHES[task]
    batch = as_batch(columns, form)
    predictor = BatchPredictor(models[task], batch_size=4)
    expected = reference_answers(models[task], columns)

    result = predictor(batch)

    assert predictor.columns == tuple(columns)
    assert set(result) == {*batch, "answer"}
    for name in batch:
        assert result[name] is batch[name]  # every input column comes back as it was
    assert result["answer"].dtype == object and len(result["answer"]) == len(expected)
    assert_same_answers(list(result["answer"]), expected)


def test_json_answers_are_the_pipelines_answers_as_json(models):
    columns = BATCHES["ner"]
    result = BatchPredictor(models["ner"], answer_format="json", answer_column="entities")(as_batch(columns, "object"))
    expected = jsonable(reference_answers(models["ner"], columns))
    assert_same_answers([json.loads(answer) for answer in result["entities"]], expected)


def test_plugin_head_with_its_own_input_kind(choice_model):
    path, _ = choice_model
    columns = {
        "question": ["which one is an animal", "which one is red", ""],
        "choices": [["a cat", "a table", "a cloud"], ["blood", "grass", "東京"], ["", "a", "b"]],
    }
    predictor = BatchPredictor(path)
    result = predictor(as_batch(columns, "object"))  # list cells arrive as numpy arrays, as Ray hands them over
    assert predictor.columns == ("question", "choices")
    expected = reference_answers(path, columns)
    assert_same_answers(list(result["answer"]), expected)
    assert {answer["choice"] for answer in expected} <= {choice for choices in columns["choices"] for choice in choices}
    with pytest.raises(ValueError) as error:
        predictor({"question": np.array(["which?"])})
    assert_mentions(error, "'choices'", "'question', 'choices'")


@pytest.mark.parametrize("task", BATCHES)
def test_missing_columns_are_named_with_the_columns_the_head_reads(models, task):
    predictor = BatchPredictor(models[task])
    columns = BATCHES[task]
    for dropped in columns:
        batch = {name: values for name, values in as_batch(columns, "object").items() if name != dropped}
        with pytest.raises(ValueError) as error:
            predictor(batch)
        assert_mentions(error, f"no column(s) '{dropped}'", ", ".join(map(repr, columns)), "'id'", "rename_columns")


@pytest.mark.parametrize(
    ("batch", "facts"),
    [
        ({"text": np.array(["a", "b"]), "answer": np.array([1, 2])}, ["'answer'", "answer_column="]),
        ({"text": np.array(["a", None], dtype=object)}, ["row 1 of the batch", "text is null"]),
        ({"text": np.array([3, 4])}, ["row 0 of the batch", "the number 3"]),
        ([{"text": "a"}], ["dict of column name", "batch_format='numpy'"]),
    ],
    ids=["answer-column-taken", "null-text", "numbers", "rows-not-columns"],
)
def test_hostile_batches_are_refused_naming_the_row_or_column(models, batch, facts):
    with pytest.raises((ValueError, TypeError)) as error:
        BatchPredictor(models["sentiment"])(batch)
    assert_mentions(error, *facts)


def test_columns_of_unequal_length_are_refused(models):
    with pytest.raises(ValueError) as error:
        BatchPredictor(models["pairwise"])({"text_a": np.array(["a", "b"]), "text_b": np.array(["c"])})
    assert_mentions(error, "'text_a' has 2", "'text_b' has 1")


def test_empty_batch_gives_an_empty_answer_column(models):
    result = BatchPredictor(models["qa"])({"question": np.array([], dtype=str), "context": np.array([], dtype=str)})
    assert len(result["answer"]) == 0


def test_decode_options_reach_decode_and_unknown_ones_fail_when_built(models):
    batch = as_batch(BATCHES["sentiment"], "unicode")
    result = BatchPredictor(models["sentiment"], decode_options={"top_k": 2})(batch)
    assert all(len(answer) == 2 for answer in result["answer"])
    with pytest.raises(TypeError) as error:
        BatchPredictor(models["sentiment"], decode_options={"topk": 2})
    assert_mentions(error, "'topk'", "top_k")


@pytest.mark.parametrize(
    ("arguments", "facts"),
    [
        ({"answer_format": "arrow"}, ["answer_format", *ANSWER_FORMATS, "'arrow'"]),
        ({"answer_column": ""}, ["answer_column"]),
        ({"head": "nope"}, ["nope"]),
    ],
)
def test_bad_arguments_are_refused_when_built(models, arguments, facts):
    with pytest.raises(ValueError) as error:
        BatchPredictor(models["sentiment"], **arguments)
    assert_mentions(error, *facts)


def test_a_model_object_is_refused_for_a_path(models):
    with pytest.raises(TypeError) as error:
        BatchPredictor(pipeline(models["sentiment"]).model)
    assert_mentions(error, "DistilBertTaskModel", "model.save", "path")


def test_pickles_as_class_and_arguments_and_reloads_where_unpickled(models):
    predictor = BatchPredictor(models["sentiment"], batch_size=2, answer_format="json", decode_options={"top_k": 1})
    data = pickle.dumps(predictor)
    assert len(data) < 2000  # the arguments, not the weights
    copy = pickle.loads(data)
    assert copy is not predictor and copy.pipeline.model is not predictor.pipeline.model
    batch = as_batch(BATCHES["sentiment"], "unicode")
    assert list(copy(batch)["answer"]) == list(predictor(batch)["answer"])
    assert (copy.answer_format, copy.pipeline.batch_size, copy.decode_options) == ("json", 2, {"top_k": 1})


def test_importing_the_predictor_and_the_ray_helper_imports_neither_ray_nor_keras():
    code = (
        "import sys, distilbert_heads.serving.batch, distilbert_heads.ray_data\n"
        "print(sorted({m.split('.')[0] for m in sys.modules} & {'ray', 'keras', 'tensorflow'}))"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"


def test_ray_helper_without_ray_says_what_to_install(models, monkeypatch):
    from distilbert_heads import ray_data

    monkeypatch.setitem(sys.modules, "ray", None)
    monkeypatch.setitem(sys.modules, "ray.data", None)
    with pytest.raises(ModuleNotFoundError) as error:
        ray_data.predict(object(), models["sentiment"])
    assert_mentions(error, 'pip install "distilbert-heads[ray]"', "Ray Data")


@pytest.mark.skipif(importlib.util.find_spec("ray") is None, reason=RAY_MISSING)
def test_ray_helper_refuses_a_missing_model_and_a_foreign_predictor_before_any_actor_starts(models, tmp_path):
    from distilbert_heads import ray_data

    with pytest.raises(FileNotFoundError) as error:
        ray_data.predict(object(), tmp_path / "nowhere.keras")
    assert_mentions(error, "nowhere.keras", str(tmp_path), ".keras file")
    with pytest.raises(TypeError) as error:
        ray_data.predict(object(), models["sentiment"], predictor=dict)
    assert_mentions(error, "BatchPredictor", "dict")


class RecordingDataset:
    """Stands in for a Ray Dataset: records what ``map_batches`` is given."""

    def map_batches(self, fn, **kwargs):
        self.fn, self.kwargs = fn, kwargs
        return self


@pytest.mark.skipif(importlib.util.find_spec("ray") is None, reason=RAY_MISSING)
@pytest.mark.parametrize(("actors", "pool"), [(3, (3, 3)), ((1, 4), (1, 4))])
def test_ray_helper_asks_for_an_actor_pool_of_load_once_predictors(models, monkeypatch, actors, pool):
    from distilbert_heads import ray_data

    monkeypatch.chdir(models["qa"].parent)
    head = pipeline(models["qa"]).head_name
    dataset = ray_data.predict(
        RecordingDataset(),
        models["qa"].name,  # relative: the workers get it absolute
        actors=actors,
        batch_size=64,
        model_batch_size=8,
        head=head,
        decode_options={"max_answer_length": 5},
        ray_options={"memory": 2**30},
    )
    assert dataset.fn is BatchPredictor
    assert (dataset.kwargs["compute"].min_size, dataset.kwargs["compute"].max_size) == pool
    assert dataset.kwargs["fn_constructor_kwargs"] == {
        "model_path": str(models["qa"].resolve()),
        "head": head,
        "batch_size": 8,
        "max_length": None,
        "stride": None,
        "dtype": None,
        "answer_column": "answer",
        "answer_format": "json",
        "decode_options": {"max_answer_length": 5},
    }
    assert dataset.kwargs["batch_size"] == 64 and dataset.kwargs["batch_format"] == "numpy"
    assert dataset.kwargs["num_cpus"] == 1 and dataset.kwargs["memory"] == 2**30
    BatchPredictor(**dataset.kwargs["fn_constructor_kwargs"])  # what each actor builds is a valid predictor


# -- Ray Data on a local cluster -----------------------------------------------------------------------------------
def many_texts(count: int) -> list[str]:
    """``count`` texts of 0 to 40 words from the demo files' words, with empty and unicode ones among them."""
    words = " ".join(row["text"] for row in demo_rows("sentiment")).split()
    rng = np.random.default_rng(0)
    texts = [" ".join(rng.choice(words, size=rng.integers(0, 41))) for _ in range(count)]
    texts[::997] = ["", "   ", "Zoë Åström visited 東京", "!!!", "the movie was great", "a"][: len(texts[::997])]
    return texts


# Runs in a fresh process: a Ray cluster of 2 CPUs on loopback, the helper over the texts (and the plugin's rows),
# answers and (pid, start time) of every process the driver started (Ray's) written to a file before ray.shutdown().
RAY_DRIVER = textwrap.dedent(
    """
    import json, os, sys
    import ray
    from distilbert_heads import ray_data

    with open(sys.argv[1]) as handle:
        spec = json.load(handle)
    ray.init(
        num_cpus=2, include_dashboard=False, _node_ip_address="127.0.0.1", _temp_dir=spec["ray_dir"],
        object_store_memory=256 * 1024**2, log_to_driver=False, configure_logging=False,
    )
    ray.data.DataContext.get_current().enable_progress_bars = False
    results = {}
    for name, job in spec["jobs"].items():
        dataset = ray.data.from_items(job["rows"], override_num_blocks=job["blocks"])
        answered = ray_data.predict(dataset, job["model"], actors=job["actors"], batch_size=job["batch_size"])
        results[name] = {str(row["id"]): row["answer"] for row in answered.take_all()}

    def children(pid):
        found, todo = [], [pid]
        parents, started = {}, {}
        for entry in os.listdir("/proc"):
            if entry.isdigit():
                try:
                    fields = open(f"/proc/{entry}/stat").read().rsplit(")", 1)[1].split()
                except OSError:
                    continue
                parents.setdefault(int(fields[1]), []).append(int(entry))
                started[int(entry)] = int(fields[19])
        while todo:
            for child in parents.get(todo.pop(), []):
                found.append([child, started[child]])
                todo.append(child)
        return found

    started = children(os.getpid())
    ray.shutdown()
    with open(spec["out"], "w") as handle:
        json.dump({"answers": results, "started": started}, handle)
    """
)


def process_state(pid: int) -> tuple[str, int, str] | None:
    """(state letter, start time in clock ticks, command line) of a live process, or None when it is gone."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
        command = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return None
    fields = stat.rsplit(")", 1)[1].split()
    return fields[0], int(fields[19]), command


def ray_leftovers(started: list[list[int]], ray_dir: str) -> dict[int, str]:
    """Processes still running (zombies are dead: exited, waiting to be reaped) that the driver started (the same
    pid and start time: a reused pid is another process) or whose command line names this cluster's folder."""
    left = {}
    for pid in (int(entry) for entry in os.listdir("/proc") if entry.isdigit()):
        state = process_state(pid)
        if state is None or state[0] == "Z":
            continue
        if [pid, state[1]] in started or ray_dir in state[2]:
            left[pid] = state[2]
    return left


@pytest.mark.skipif(importlib.util.find_spec("ray") is None, reason=RAY_MISSING)
@pytest.mark.skipif(sys.platform != "linux", reason="reads /proc to find the processes Ray left behind")
def test_ray_data_answers_5000_texts_as_the_pipeline_does_and_leaves_no_process(
    trained_sentiment, choice_model, tmp_path
):
    texts = many_texts(5000)
    choice_path, choice_site = choice_model
    choice_rows = [
        {"id": i, "question": f"which one is number {i}", "choices": ["a cat", f"{i} tables", "a cloud"]}
        for i in range(40)
    ]
    ray_dir = tempfile.mkdtemp(prefix="ray-")  # short: Ray's socket paths must stay under 107 characters
    spec = {
        "ray_dir": ray_dir,
        "out": str(tmp_path / "ray_answers.json"),
        "jobs": {
            "sentiment": {
                "model": str(trained_sentiment.model_path),
                "rows": [{"id": i, "text": text} for i, text in enumerate(texts)],
                "blocks": 8,
                "batch_size": 256,
                "actors": 2,
            },
            "choice": {"model": str(choice_path), "rows": choice_rows, "blocks": 2, "batch_size": 16, "actors": 1},
        },
    }
    environment = {
        **os.environ,
        "RAY_USAGE_STATS_ENABLED": "0",
        "RAY_AUTH_MODE": "disabled",  # a loopback cluster that lives for one test: no token written under ~/.ray
        "TF_CPP_MIN_LOG_LEVEL": "3",
        "PYTHONPATH": os.pathsep.join(filter(None, [str(choice_site), os.environ.get("PYTHONPATH")])),
    }
    spec_file = tmp_path / "ray_job.json"
    spec_file.write_text(json.dumps(spec))
    report: dict = {}
    try:
        run = subprocess.run(
            [sys.executable, "-c", RAY_DRIVER, str(spec_file)],
            env=environment,
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert run.returncode == 0, run.stderr[-4000:]
        report = json.loads(Path(spec["out"]).read_text())
    finally:
        started = report.get("started", [])
        deadline = time.monotonic() + 15
        while ray_leftovers(started, ray_dir) and time.monotonic() < deadline:
            time.sleep(0.5)
        stragglers = ray_leftovers(started, ray_dir)
        for pid in stragglers:
            os.kill(pid, signal.SIGKILL)
        if stragglers:
            warnings.warn(
                f"ray.shutdown() left {len(stragglers)} process(es) running, killed: {stragglers}", stacklevel=1
            )
        time.sleep(0.5 if stragglers else 0)
        assert not ray_leftovers(started, ray_dir)
        shutil.rmtree(ray_dir, ignore_errors=True)  # the session's logs and sockets

    assert started, "the driver saw no process of Ray's: the check above would have nothing to check"
    expected = jsonable(pipeline(trained_sentiment.model_path)(texts))
    answers = report["answers"]["sentiment"]
    assert sorted(map(int, answers)) == list(range(len(texts)))  # every row answered once, joined back by id
    assert_same_answers([json.loads(answers[str(i)]) for i in range(len(texts))], expected)
    choice_columns = {key: [row[key] for row in choice_rows] for key in ("question", "choices")}
    choice_expected = jsonable(reference_answers(choice_path, choice_columns))
    assert_same_answers(
        [json.loads(report["answers"]["choice"][str(i)]) for i in range(len(choice_rows))], choice_expected
    )
