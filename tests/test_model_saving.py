"""Saving and loading task models: plain-data configs, exact reloads (in a fresh process too),
heads rebuilt only through the registry, and clear errors when a head's plugin is missing or blocked."""

from __future__ import annotations

import json
import sys
import textwrap
import uuid
import zipfile
from pathlib import Path

import keras
import numpy as np
import pytest

from distilbert_heads import (
    MissingHeadPluginError,
    NLPTaskConfig,
    create_distilbert_with_head,
    create_distilbert_with_heads,
)
from distilbert_heads.plugins.registry import BLOCK_ENV, LOAD_ENV, reset_registry
from distilbert_heads.testing import TINY_ENCODER, reload_all_in_subprocess, reload_in_subprocess, sample_inputs


def tiny(task_type, **options):
    return create_distilbert_with_head(task_type=task_type, distilbert_variant="tiny", **options, **TINY_ENCODER)


def flat_outputs(model, inputs):
    return {
        f"{h}/{k}": keras.ops.convert_to_numpy(v)
        for h, d in model(inputs, training=False).items()
        for k, v in d.items()
    }


def assert_same_outputs(expected, actual):
    assert set(expected) == set(actual)
    for key in expected:
        np.testing.assert_array_equal(expected[key], actual[key], err_msg=key)


def rewrite_config(source: Path, target: Path, edit) -> Path:
    """Copy a .keras zip, passing its config.json through ``edit(config_dict)``."""
    with zipfile.ZipFile(source) as src, zipfile.ZipFile(target, "w") as dst:
        for item in src.infolist():
            data = src.read(item.filename)
            if item.filename == "config.json":
                config = json.loads(data)
                edit(config)
                data = json.dumps(config).encode()
            dst.writestr(item, data)
    return target


def read_config(path: Path) -> dict:
    with zipfile.ZipFile(path) as archive:
        return json.loads(archive.read("config.json"))


@pytest.fixture
def fresh_registry():
    reset_registry()
    yield
    reset_registry()


# -- the config is plain data ------------------------------------------------------------------
def test_config_is_plain_data_with_encoder_config_and_head_provenance(tmp_path):
    model = tiny("sentiment", num_classes=3)
    path = tmp_path / "m.keras"
    model.save(path)
    saved = read_config(path)
    assert saved["registered_name"] == "distilbert_heads>DistilBertTaskModel"
    config = saved["config"]
    assert config["encoder"] == model.encoder.config.model_dump(mode="json")
    (head,) = config["heads"]
    assert head["name"] == "sentiment" and head["task_type"] == "sentiment_analysis"
    assert head["options"]["num_classes"] == 3 and head["loss_weight"] == 1.0
    assert head["provenance"]["distribution"] == "distilbert-heads"
    assert head["provenance"]["version"] and head["provenance"]["plugin"]
    assert head["provenance"]["head_class"].endswith(":SentimentHead")

    def walk(value, where):
        if isinstance(value, dict):
            assert not {"module", "class_name", "registered_name"} & set(value), f"serialized object at {where}"
            for key, item in value.items():
                walk(item, f"{where}.{key}")
        elif isinstance(value, list):
            for index, item in enumerate(value):
                walk(item, f"{where}[{index}]")

    walk(config, "config")


def test_from_config_rejects_another_format_version():
    model = tiny("sentiment")
    config = model.get_config()
    config["format_version"] = 99
    with pytest.raises(ValueError, match="format 99"):
        type(model).from_config(config)


# -- reloads are exact -------------------------------------------------------------------------
def multi_head():
    return create_distilbert_with_heads(
        [
            NLPTaskConfig(name="sentiment", task_type="sentiment", num_classes=3, loss_weight=2.0),
            NLPTaskConfig(name="tags", task_type="ner", num_labels=4, loss_weight=0.5),
            NLPTaskConfig(name="qa", task_type="qa"),
        ],
        distilbert_variant="tiny",
        **TINY_ENCODER,
    )


def multi_head_labels(inputs):
    rng = np.random.default_rng(0)
    tags = rng.integers(0, 4, size=inputs["input_ids"].shape)
    tags[inputs["attention_mask"] == 0] = -100
    return {
        "sentiment": {"logits": rng.integers(0, 3, size=len(tags))},
        "tags": {"logits": tags},
        "qa": {"start_logits": np.zeros(len(tags), "int32"), "end_logits": np.ones(len(tags), "int32")},
    }


def trained_multi_head_file(tmp_path):
    """A multi-head model compiled and trained for one epoch, saved; returns (model, inputs, path)."""
    model = multi_head()
    model.compile(optimizer="adam")
    inputs = sample_inputs()
    model.fit(inputs, multi_head_labels(inputs), epochs=1, verbose=0)
    path = tmp_path / "multi.keras"
    model.save(path)
    return model, inputs, path


def test_trained_multi_head_model_reloads_exactly_in_process(tmp_path):
    model, inputs, path = trained_multi_head_file(tmp_path)

    loaded = keras.models.load_model(path)
    assert type(loaded) is type(model) and list(loaded.heads) == ["sentiment", "tags", "qa"]
    assert loaded.head_loss_weights == {"sentiment": 2.0, "tags": 0.5, "qa": 1.0}
    assert len(loaded.weights) == len(model.weights)
    for a, b in zip(model.weights, loaded.weights):
        np.testing.assert_array_equal(keras.ops.convert_to_numpy(a), keras.ops.convert_to_numpy(b), err_msg=a.path)
    assert_same_outputs(flat_outputs(model, inputs), flat_outputs(loaded, inputs))
    # compiled with the heads' defaults again, optimizer state restored, and it keeps training
    assert loaded.compiled and int(loaded.optimizer.iterations) == int(model.optimizer.iterations) == 1
    logs = loaded.evaluate(inputs, multi_head_labels(inputs), verbose=0, return_dict=True)
    assert "sentiment/logits_accuracy" in logs
    loaded.fit(inputs, multi_head_labels(inputs), epochs=1, verbose=0)


def test_frozen_encoder_stays_frozen_after_reload(tmp_path):
    model = tiny("sentiment")
    model.encoder.trainable = False
    path = tmp_path / "frozen.keras"
    model.save(path)
    loaded = keras.models.load_model(path)
    assert not loaded.encoder.trainable and loaded.heads["sentiment"].trainable
    assert (
        len(loaded.trainable_weights) == len(model.trainable_weights) == len(model.heads["sentiment"].trainable_weights)
    )


def test_model_compiled_with_user_losses_reloads_compiled(tmp_path):
    model = tiny("sentiment", num_classes=3)
    model.compile(optimizer="adam", loss={"sentiment": keras.losses.SparseCategoricalCrossentropy(from_logits=True)})
    path = tmp_path / "m.keras"
    model.save(path)
    loaded = keras.models.load_model(path)
    assert loaded.compiled
    assert np.isfinite(loaded.evaluate(sample_inputs(), np.array([0, 1, 2, 0]), verbose=0))


BUILTIN = [
    ("sentiment", {"num_classes": 3}),
    ("text_regression", {}),
    ("ner", {"labels": ["O", "B-X", "I-X"]}),
    ("qa", {"max_answer_length": 5}),
    ("natural_language_inference", {}),
    ("text_similarity", {}),
]


@pytest.fixture(scope="module")
def builtin_reloads(tmp_path_factory):
    """Every head of BUILTIN saved, and all the files reloaded in ONE fresh process: (model, outputs, summary)."""
    folder = tmp_path_factory.mktemp("builtin")
    models = {task_type: tiny(task_type, **options) for task_type, options in BUILTIN}
    for task_type, model in models.items():
        model.save(folder / f"{task_type}.keras")
    reloads = reload_all_in_subprocess([folder / f"{task_type}.keras" for task_type in models], sample_inputs())
    return {task_type: (models[task_type], *reload) for task_type, reload in zip(models, reloads)}


@pytest.mark.slow
@pytest.mark.parametrize("task_type", [t for t, _ in BUILTIN])
def test_every_builtin_head_reloads_identically_in_a_fresh_process(builtin_reloads, task_type):
    model, actual, summary = builtin_reloads[task_type]
    assert summary["class"] == "DistilBertTaskModel"
    assert summary["heads"] == {name: type(head).__name__ for name, head in model.heads.items()}
    assert_same_outputs(flat_outputs(model, sample_inputs()), actual)


@pytest.mark.slow
def test_trained_multi_head_model_reloads_identically_in_a_fresh_process(tmp_path):
    model, inputs, path = trained_multi_head_file(tmp_path)
    actual, summary = reload_in_subprocess(path, inputs)
    assert summary["compiled"]
    assert_same_outputs(flat_outputs(model, inputs), actual)


# -- heads come from installed plugins only ------------------------------------------------
PLUGIN_SOURCE = textwrap.dedent(
    """
    import keras
    from distilbert_heads import HeadOptions, TaskHead, hookimpl

    class BarOptions(HeadOptions):
        num_classes: int = 2

    class BarHead(TaskHead):
        task_types = ("{task}",)
        options_schema = BarOptions
        output_names = ("logits",)

        def __init__(self, hidden_size, task_type, options=None, **kwargs):
            super().__init__(hidden_size, task_type, options, **kwargs)
            self.dense = keras.layers.Dense(self.options.num_classes, name="dense")

        def call(self, hidden_states, attention_mask, training=None):
            return {{"logits": self.dense(hidden_states[:, 0])}}

        def default_losses(self):
            return {{"logits": keras.losses.SparseCategoricalCrossentropy(from_logits=True)}}

    @hookimpl
    def register_heads(register):
        register(BarHead)
    """
)


def make_plugin_distribution(root: Path, distribution: str, version: str, task: str) -> str:
    """A throwaway installed plugin: a module plus a ``*.dist-info`` with its entry point."""
    module = f"bar_plugin_{uuid.uuid4().hex[:8]}"
    root.mkdir(parents=True, exist_ok=True)
    (root / f"{module}.py").write_text(PLUGIN_SOURCE.format(task=task))
    info = root / f"{distribution.replace('-', '_')}-{version}.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {distribution}\nVersion: {version}\n")
    (info / "entry_points.txt").write_text(f"[distilbert_heads]\n{task} = {module}\n")
    return module


@pytest.fixture
def saved_bar_model(tmp_path, monkeypatch, fresh_registry):
    """A .keras file whose head comes from the throwaway distribution distilbert-head-bar 1.2.3."""
    site = tmp_path / "site"
    task = f"bar_{uuid.uuid4().hex[:6]}"
    make_plugin_distribution(site, "distilbert-head-bar", "1.2.3", task)
    monkeypatch.syspath_prepend(str(site))
    model = tiny(task, num_classes=3)
    assert model.head_provenance[task]["distribution"] == "distilbert-head-bar"
    path = tmp_path / "bar.keras"
    model.save(path)
    return path, task, site, model


def test_file_whose_plugin_is_not_installed_says_what_to_install(saved_bar_model, monkeypatch):
    path, task, site, _ = saved_bar_model
    monkeypatch.setattr(sys, "path", [p for p in sys.path if p != str(site)])
    reset_registry()
    with pytest.raises(MissingHeadPluginError) as info:
        keras.models.load_model(path)
    message = str(info.value)
    assert repr(task) in message
    assert "distilbert-head-bar 1.2.3" in message
    assert "pip install distilbert-head-bar==1.2.3" in message
    assert isinstance(info.value, ImportError)
    assert (info.value.task_type, info.value.distribution, info.value.version) == (task, "distilbert-head-bar", "1.2.3")


def test_file_whose_plugin_is_installed_but_broken_chains_the_plugins_error(saved_bar_model, monkeypatch):
    path, task, site, _ = saved_bar_model
    (module_file,) = site.glob("bar_plugin_*.py")
    monkeypatch.delitem(sys.modules, module_file.stem, raising=False)
    module_file.write_text("raise RuntimeError('bar plugin is broken')\n")
    reset_registry()
    with pytest.raises(MissingHeadPluginError) as info:
        keras.models.load_model(path)
    message = str(info.value)
    assert "failed to load" in message and "bar plugin is broken" in message
    assert "pip install --force-reinstall distilbert-head-bar==1.2.3" in message
    assert info.value.__cause__ is not None


@pytest.mark.parametrize(
    "env,value",
    [
        (BLOCK_ENV, "distilbert-head-bar"),
        (BLOCK_ENV, "other,Distilbert_Head_Bar"),
        (LOAD_ENV, ""),
        (LOAD_ENV, "something-else"),
    ],
)
def test_file_whose_plugin_is_blocked_names_the_variable(saved_bar_model, monkeypatch, env, value):
    path, task, _, model = saved_bar_model
    monkeypatch.setenv(env, value)
    reset_registry()
    with pytest.raises(MissingHeadPluginError) as info:
        keras.models.load_model(path)
    message = str(info.value)
    assert env in message and "pip install distilbert-head-bar==1.2.3" in message and repr(task) in message
    assert info.value.blocked_by == env

    monkeypatch.delenv(env)
    reset_registry()
    loaded = keras.models.load_model(path)
    inputs = sample_inputs()
    assert_same_outputs(flat_outputs(model, inputs), flat_outputs(loaded, inputs))


# -- a .keras file cannot make us import anything -------------------------------------------
MARKER_MODULE = textwrap.dedent(
    """
    import pathlib
    pathlib.Path({marker!r}).write_text("imported")

    class Evil:
        pass
    """
)


def _name_module_in_head(config, module):
    head = config["config"]["heads"][0]
    head.update(module=module, class_name="Evil", registered_name=f"{module}>Evil")
    head["provenance"]["head_class"] = f"{module}:Evil"


def _module_as_task_type(config, module):
    config["config"]["heads"][0]["task_type"] = module


def _module_as_model_class(config, module):
    config.update(module=module, class_name="Evil", registered_name=f"{module}>Evil")


def _module_as_encoder(config, module):
    config["config"]["encoder"] = {
        "module": module,
        "class_name": "Evil",
        "config": {},
        "registered_name": f"{module}>Evil",
    }


def _module_in_compile_config(config, module):
    config["compile_config"]["loss"] = {
        "module": module,
        "class_name": "Evil",
        "config": {},
        "registered_name": f"{module}>Evil",
    }


@pytest.mark.parametrize(
    "edit,loads",
    [
        (_name_module_in_head, True),  # extra keys are ignored: the head still comes from the registry
        (_module_as_task_type, False),
        (_module_as_model_class, False),
        (_module_as_encoder, False),
        (_module_in_compile_config, None),  # Keras may warn and skip compiling; it must not import
    ],
    ids=lambda v: getattr(v, "__name__", str(v)),
)
def test_a_module_named_in_the_file_is_never_imported(tmp_path, monkeypatch, edit, loads):
    module = f"marker_{uuid.uuid4().hex[:8]}"
    marker = tmp_path / "marker.txt"
    site = tmp_path / "site"
    site.mkdir()
    (site / f"{module}.py").write_text(MARKER_MODULE.format(marker=str(marker)))
    monkeypatch.syspath_prepend(str(site))  # importable, so only our code's restraint keeps it out

    model = tiny("sentiment")
    model.compile(optimizer="adam", loss={"sentiment": "sparse_categorical_crossentropy"})
    original = tmp_path / "original.keras"
    model.save(original)
    edited = rewrite_config(original, tmp_path / "edited.keras", lambda config: edit(config, module))

    try:
        loaded = keras.models.load_model(edited)
    except Exception as error:
        assert loads is not True, f"loading failed: {error!r}"
        if edit is _module_as_task_type:
            assert isinstance(error, MissingHeadPluginError)
    else:
        assert loads is not False, "the edited file loaded"
        inputs = sample_inputs()
        assert_same_outputs(flat_outputs(model, inputs), flat_outputs(loaded, inputs))
    assert module not in sys.modules
    assert not marker.exists()
