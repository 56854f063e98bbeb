"""The plugin author's kit: checks that a head plugin works with the rest of the library.

Plain functions, usable from any test suite; each raises `AssertionError` with a message that
says what went wrong and what to fix. They use a tiny random encoder, so each takes seconds::

    from distilbert_heads.testing import check_plugin

    def test_my_head():
        check_plugin("foo", num_classes=4)

* `check_head_builds`: the registry finds the head, the factory builds it, outputs are a dict.
* `check_head_trains`: one `fit` epoch with the head's default losses gives a finite loss
  and changes the head's weights.
* `check_head_roundtrip`: save to ``.keras``, reload in a fresh Python process with only
  ``import distilbert_heads; keras.models.load_model(path)``, outputs identical.
* `check_head_decodes`: `decode` gives one answer per example (skipped if not implemented).
* `check_plugin`: all of the above plus provenance and options round-trip.

Labels for training are guessed from each output's default loss (sparse/categorical
cross-entropy, binary cross-entropy, regression losses); pass ``sample_labels=`` or
``labels_fn=`` for anything else.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import keras
import numpy as np

from distilbert_heads.model.factory import create_distilbert_with_head
from distilbert_heads.plugins.registry import get_head

__all__ = [
    "TINY_ENCODER",
    "check_head_builds",
    "check_head_decodes",
    "check_head_roundtrip",
    "check_head_trains",
    "check_plugin",
    "guess_labels",
    "sample_inputs",
    "tiny_model",
]

# A DistilBERT small enough that building and one training step take well under a second.
TINY_ENCODER: dict[str, Any] = {
    "vocab_size": 100,
    "hidden_size": 16,
    "num_layers": 1,
    "num_heads": 2,
    "intermediate_size": 32,
    "max_position_embeddings": 64,
}

LabelsFn = Callable[[Mapping[str, np.ndarray], Mapping[str, np.ndarray]], Any]


def tiny_model(task_type: str, *, name: str | None = None, **options: Any) -> Any:
    """A `DistilBertTaskModel` with `TINY_ENCODER` and one head of ``task_type`` with ``options``."""
    return create_distilbert_with_head(
        task_type=task_type, name=name, distilbert_variant="tiny", head_options=options, **TINY_ENCODER
    )


def sample_inputs(batch_size: int = 4, length: int = 8, *, padded: bool = True, seed: int = 0) -> dict[str, np.ndarray]:
    """Random ``input_ids`` / ``attention_mask`` for `TINY_ENCODER`; with ``padded`` rows have different lengths."""
    rng = np.random.default_rng(seed)
    ids = rng.integers(1, TINY_ENCODER["vocab_size"], size=(batch_size, length)).astype("int32")
    mask = np.ones((batch_size, length), dtype="int32")
    if padded:
        for row in range(1, batch_size):
            keep = max(2, length - row)
            mask[row, keep:] = 0
        ids[mask == 0] = 0
    return {"input_ids": ids, "attention_mask": mask}


def _numpy(tree: Any) -> Any:
    if isinstance(tree, Mapping):
        return {key: _numpy(value) for key, value in tree.items()}
    return np.asarray(keras.ops.convert_to_numpy(tree))


def _describe(task_type: str, options: Mapping[str, Any]) -> str:
    shown = ", ".join(f"{k}={v!r}" for k, v in options.items())
    return f"head for task type {task_type!r}" + (f" (options: {shown})" if shown else "")


# -- builds ----------------------------------------------------------------------------------
def check_head_builds(task_type: str, **options: Any) -> Any:
    """Look the head up, build a tiny model with it and run it; return the model."""
    what = _describe(task_type, options)
    try:
        record = get_head(task_type)
    except Exception as error:
        raise AssertionError(
            f"The registry has no head for task type {task_type!r}: {error}\n"
            "Is the plugin installed (pip install -e .) and does its pyproject.toml declare "
            '[project.entry-points.distilbert_heads] <name> = "<your_module>"?'
        ) from error
    try:
        model = tiny_model(task_type, **options)
    except Exception as error:
        raise AssertionError(
            f"Building a model with the {what} ({record.head_class.__qualname__}) failed: "
            f"{type(error).__name__}: {error}"
        ) from error
    inputs = sample_inputs()
    outputs = model(inputs, training=False)
    head_name = next(iter(model.heads))
    head_outputs = outputs[head_name]
    assert isinstance(head_outputs, Mapping) and head_outputs, (
        f"The {what} returned {type(head_outputs).__name__}; call() must return a non-empty dict of named outputs."
    )
    declared = tuple(record.head_class.output_names)
    if declared:
        assert set(head_outputs) == set(declared), (
            f"The {what} returned outputs {sorted(head_outputs)} but declares output_names={declared}; make them agree."
        )
    batch = inputs["input_ids"].shape[0]
    for key, value in _numpy(head_outputs).items():
        assert value.shape[:1] == (batch,), (
            f"Output {key!r} of the {what} has shape {value.shape}; its first axis must be the batch ({batch})."
        )
        assert np.all(np.isfinite(value)), f"Output {key!r} of the {what} has non-finite values: {value}"
    return model


# -- trains ----------------------------------------------------------------------------------
def guess_labels(model: Any, inputs: Mapping[str, np.ndarray], seed: int = 0) -> dict[str, dict[str, np.ndarray]]:
    """Random labels for every head output, shaped from the outputs and typed from the default losses.

    Works for sparse / categorical / binary cross-entropy and regression losses; raises
    `AssertionError` naming the output otherwise (pass ``sample_labels=`` or ``labels_fn=``).
    """
    rng = np.random.default_rng(seed)
    outputs = _numpy(model(dict(inputs), training=False))
    labels: dict[str, dict[str, np.ndarray]] = {}
    for head_name, head in model.heads.items():
        losses = head.default_losses()
        labels[head_name] = {}
        for output_name, value in outputs[head_name].items():
            if output_name not in losses:
                continue
            loss = losses[output_name]
            kind = (loss if isinstance(loss, str) else type(loss).__name__).lower()
            if "sparse" in kind:
                labels[head_name][output_name] = rng.integers(0, value.shape[-1], size=value.shape[:-1]).astype("int32")
            elif "categorical" in kind:
                ids = rng.integers(0, value.shape[-1], size=value.shape[:-1])
                labels[head_name][output_name] = np.eye(value.shape[-1], dtype="float32")[ids]
            elif "binary" in kind:
                labels[head_name][output_name] = rng.integers(0, 2, size=value.shape).astype("float32")
            elif any(word in kind for word in ("squared", "absolute", "huber", "mse", "mae", "logcosh")):
                labels[head_name][output_name] = rng.normal(size=value.shape).astype("float32")
            else:
                raise AssertionError(
                    f"Cannot guess labels for output {output_name!r} of head {head_name!r}: its default loss is "
                    f"{kind!r}. Pass sample_labels={{'{output_name}': ...}} or labels_fn=lambda inputs, outputs: ..."
                )
    return labels


def check_head_trains(
    task_type: str,
    sample_labels: Any = None,
    *,
    labels_fn: LabelsFn | None = None,
    jit_compile: bool | str = "auto",
    **options: Any,
) -> dict[str, list[float]]:
    """Compile with the head's defaults, `fit` one epoch; assert a finite loss and changed head weights.

    ``sample_labels``: the head's labels in its label format (a dict keyed by output name,
    or one array for a single-output head), for `sample_inputs(padded=False)` (4 examples
    of 8 tokens). (Not ``labels``: that is a common head option, the class names.) ``labels_fn(inputs,
    outputs)`` computes them from the inputs and the head's raw numpy outputs instead.
    Without either, labels are guessed from the default losses (`guess_labels`).
    Returns the `fit` history.
    """
    what = _describe(task_type, options)
    model = tiny_model(task_type, **options)
    head_name = next(iter(model.heads))
    head = model.heads[head_name]
    inputs = sample_inputs(padded=False)
    if labels_fn is not None:
        sample_labels = labels_fn(inputs, _numpy(model(inputs, training=False))[head_name])
    if sample_labels is None:
        y: Any = guess_labels(model, inputs)
    else:
        y = {head_name: sample_labels} if isinstance(sample_labels, Mapping) else sample_labels

    before = {variable.path: np.array(keras.ops.convert_to_numpy(variable)) for variable in head.trainable_variables}
    assert before, f"The {what} has no trainable weights; a head needs at least one layer to learn."
    try:
        model.compile(optimizer=keras.optimizers.Adam(learning_rate=1e-2), jit_compile=jit_compile)
    except Exception as error:
        raise AssertionError(f"compile() with the default losses of the {what} failed: {error}") from error
    try:
        history = model.fit(inputs, y, batch_size=len(inputs["input_ids"]), epochs=1, verbose=0).history
    except Exception as error:
        raise AssertionError(
            f"fit() of the {what} failed: {type(error).__name__}: {error}\n"
            f"Its label format: {head.label_format or '(not documented: set label_format)'}"
        ) from error
    losses = history.get("loss", [])
    assert losses and all(np.isfinite(losses)), f"fit() of the {what} gave a non-finite loss: {losses}"
    changed = [
        path
        for path, value in before.items()
        if not np.array_equal(value, keras.ops.convert_to_numpy(_variable(head, path)))
    ]
    assert changed, (
        f"One fit() step did not change any weight of the {what}: is its output connected to its layers, "
        "and does its default loss depend on the output?"
    )
    return history


def _variable(layer: Any, path: str) -> Any:
    return next(v for v in layer.trainable_variables if v.path == path)


# -- survives save / reload -----------------------------------------------------------------
_RELOAD_SCRIPT = r"""
import json, sys
import numpy as np
import distilbert_heads
import keras

data = np.load(sys.argv[1])
summaries = []
for path, outputs_file in json.loads(sys.argv[2]):
    model = keras.models.load_model(path)
    outputs = model({"input_ids": data["input_ids"], "attention_mask": data["attention_mask"]}, training=False)
    np.savez(outputs_file, **{f"{head}/{key}": keras.ops.convert_to_numpy(value)
                              for head, values in outputs.items() for key, value in values.items()})
    summaries.append({
        "class": type(model).__name__,
        "heads": {name: type(head).__name__ for name, head in model.heads.items()},
        "compiled": bool(model.compiled),
    })
print(json.dumps(summaries))
"""


def reload_in_subprocess(
    path: str | os.PathLike, inputs: Mapping[str, np.ndarray], timeout: float = 300
) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    """Load ``path`` in a fresh Python (only ``import distilbert_heads``), run it on ``inputs``.

    Returns the outputs keyed ``"<head>/<output>"`` and a summary (model class, head classes,
    compiled). Raises `AssertionError` with the subprocess's stderr if loading fails.
    """
    return reload_all_in_subprocess([path], inputs, timeout=timeout)[0]


def reload_all_in_subprocess(
    paths: Sequence[str | os.PathLike], inputs: Mapping[str, np.ndarray], timeout: float = 300
) -> list[tuple[dict[str, np.ndarray], dict[str, Any]]]:
    """`reload_in_subprocess` for several files in one fresh Python, loaded one after another: each file's
    outputs and summary, in order. One process start instead of one per file."""
    with tempfile.TemporaryDirectory() as scratch:
        inputs_file = Path(scratch) / "inputs.npz"
        outputs_files = [Path(scratch) / f"outputs{index}.npz" for index in range(len(paths))]
        np.savez(inputs_file, **{key: np.asarray(value) for key, value in inputs.items()})
        jobs = json.dumps([[os.fspath(path), os.fspath(out)] for path, out in zip(paths, outputs_files)])
        env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}
        result = subprocess.run(
            [sys.executable, "-c", _RELOAD_SCRIPT, str(inputs_file), jobs],
            capture_output=True,
            text=True,
            env=env,
            timeout=timeout,
        )
        if result.returncode != 0:
            raise AssertionError(
                f"Loading {[os.fspath(path) for path in paths]} in a fresh Python process with only "
                f"`import distilbert_heads; keras.models.load_model(path)` failed (exit {result.returncode}):\n"
                f"{result.stderr[-4000:]}"
            )
        outputs = []
        for outputs_file in outputs_files:
            with np.load(outputs_file) as data:
                outputs.append({key: data[key] for key in data.files})
    summaries = json.loads(result.stdout.strip().splitlines()[-1])
    return list(zip(outputs, summaries))


def check_head_roundtrip(task_type: str, *, directory: str | os.PathLike | None = None, **options: Any) -> Path:
    """Save a tiny model with this head to ``.keras``, reload it in a fresh process, compare outputs exactly.

    The model is compiled with the head's defaults before saving, so the reload also proves
    it comes back compiled. Returns the path of the saved file (in ``directory`` if given,
    else a temporary directory that is removed afterwards, in which case the path is gone).
    """
    what = _describe(task_type, options)
    model = tiny_model(task_type, **options)
    model.compile(optimizer="adam")
    inputs = sample_inputs()
    expected = {
        f"{head}/{key}": value
        for head, values in _numpy(model(inputs, training=False)).items()
        for key, value in values.items()
    }
    with tempfile.TemporaryDirectory() as scratch:
        path = Path(directory or scratch) / f"{_safe(task_type)}.keras"
        model.save(path)
        actual, summary = reload_in_subprocess(path, inputs)
    assert summary["class"] == type(model).__name__, (
        f"Reloading gave a {summary['class']}, not a {type(model).__name__}"
    )
    head_classes = {name: type(head).__name__ for name, head in model.heads.items()}
    assert summary["heads"] == head_classes, (
        f"Reloading rebuilt heads {summary['heads']}, expected {head_classes}: is another plugin serving "
        f"task type {task_type!r} in a fresh process?"
    )
    assert summary["compiled"], f"The reloaded model with the {what} is not compiled; compile_from_config failed."
    assert set(actual) == set(expected), f"Reloaded outputs {sorted(actual)} differ from saved {sorted(expected)}"
    for key, value in expected.items():
        if not np.array_equal(value, actual[key]):
            raise AssertionError(
                f"Output {key!r} of the {what} differs after save and reload (max abs diff "
                f"{np.max(np.abs(value - actual[key]))}): are all of the head's weights created in build() "
                "or __init__ and tracked as layer attributes, and does call() depend only on them and its options?"
            )
    return path


def _safe(task_type: str) -> str:
    return "".join(c if c.isalnum() else "_" for c in task_type)


# -- decodes ---------------------------------------------------------------------------------
def check_head_decodes(task_type: str, **options: Any) -> list[Any] | None:
    """`decode` on a batch of raw outputs gives one answer per example; None if not implemented."""
    model = tiny_model(task_type, **options)
    head_name = next(iter(model.heads))
    inputs = sample_inputs()
    outputs = _numpy(model(inputs, training=False))[head_name]
    try:
        decoded = model.heads[head_name].decode(outputs)
    except NotImplementedError:
        return None
    assert isinstance(decoded, list) and len(decoded) == len(inputs["input_ids"]), (
        f"decode() of the {_describe(task_type, options)} must return a list with one answer per example "
        f"({len(inputs['input_ids'])}), got {type(decoded).__name__} of length "
        f"{len(decoded) if hasattr(decoded, '__len__') else '?'}."
    )
    return decoded


# -- everything --------------------------------------------------------------------------------
def check_plugin(
    task_type: str,
    sample_labels: Any = None,
    *,
    labels_fn: LabelsFn | None = None,
    roundtrip: bool = True,
    **options: Any,
) -> None:
    """Run every check on the head serving ``task_type`` with ``options``.

    Also checks that the registry records where the head comes from (distribution and
    version) and that its options survive a JSON round trip.
    """
    model = check_head_builds(task_type, **options)
    record = get_head(task_type)
    assert record.distribution and record.version and record.version != "unknown", (
        f"The registry does not know which distribution provides task type {task_type!r} "
        f"(distribution={record.distribution!r}, version={record.version!r}); install the plugin as a package "
        "(pip install -e .) so its metadata exists."
    )
    head = next(iter(model.heads.values()))
    dumped = json.loads(json.dumps(head.options.model_dump(mode="json")))
    again = type(head).validate_options(dumped)
    assert again == head.options, (
        f"The options of {type(head).__name__} do not survive JSON: {head.options!r} became {again!r}; "
        "use JSON-friendly types (str, int, float, bool, lists, dicts) in the options schema."
    )
    check_head_trains(task_type, sample_labels, labels_fn=labels_fn, **options)
    check_head_decodes(task_type, **options)
    if roundtrip:
        check_head_roundtrip(task_type, **options)
