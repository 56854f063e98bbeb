"""The example third-party plugin, pip-installed for real: found through its entry point, trains,
saves, reloads in a fresh process, and fails clearly when blocked.

`.ci/run` installs it (``pip install ./plugins_example/distilbert-head-foo``); without it these
tests skip.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import keras
import numpy as np
import pytest

pytest.importorskip(
    "distilbert_head_foo",
    reason="the example plugin is not installed: pip install ./plugins_example/distilbert-head-foo",
)

from distilbert_heads import create_distilbert_with_head  # noqa: E402
from distilbert_heads.plugins.registry import BLOCK_ENV, get_head  # noqa: E402
from distilbert_heads.testing import TINY_ENCODER, check_plugin, reload_in_subprocess, sample_inputs  # noqa: E402

MULTI_HOT = np.array([[1, 0, 1], [0, 0, 0], [1, 1, 1], [0, 1, 0]], dtype="float32")


def foo_model(**options):
    return create_distilbert_with_head(
        task_type="foo", distilbert_variant="tiny", **{"num_classes": 3, **options}, **TINY_ENCODER
    )


def test_found_through_its_entry_point_with_provenance():
    from distilbert_head_foo import FooHead

    record = get_head("foo")
    assert record.head_class is FooHead
    assert (record.distribution, record.version, record.builtin) == ("distilbert-head-foo", "0.1.0", False)
    assert get_head("multi_label").task_type == "foo"


def test_issue_call_form_builds_and_outputs_logits_per_label():
    model = create_distilbert_with_head(task_type="foo", distilbert_variant="tiny", num_classes=3, **TINY_ENCODER)
    outputs = model(sample_inputs())
    assert keras.ops.convert_to_numpy(outputs["foo"]["logits"]).shape == (4, 3)
    assert model.head_provenance["foo"]["distribution"] == "distilbert-head-foo"


def test_trains_with_its_default_binary_crossentropy_and_decodes_above_threshold():
    keras.utils.set_random_seed(0)
    model = foo_model(labels=["a", "b", "c"], threshold=0.3)
    model.compile(optimizer=keras.optimizers.Adam(5e-2))
    inputs = sample_inputs(padded=False)
    history = model.fit(inputs, MULTI_HOT, epochs=30, verbose=0).history
    assert history["loss"][-1] < history["loss"][0]
    assert "binary_accuracy" in history
    decoded = model.heads["foo"].decode(model.predict(inputs, verbose=0)["foo"])
    assert len(decoded) == 4
    for row in decoded:
        assert all(item["score"] >= 0.3 for item in row)
        assert [item["score"] for item in row] == sorted((item["score"] for item in row), reverse=True)
    # four examples are memorised: every example decodes to exactly its label set
    names = np.array(["a", "b", "c"])
    assert [{item["label"] for item in row} for row in decoded] == [set(names[row == 1]) for row in MULTI_HOT]


def test_unknown_option_names_the_head():
    from distilbert_heads import HeadOptionsError

    with pytest.raises(HeadOptionsError, match="FooHead"):
        foo_model(use_crf=True)


@pytest.mark.slow
def test_plugin_kit_passes_for_the_foo_head():
    check_plugin("foo", MULTI_HOT, labels=["x", "y", "z"], pooling="mean")


@pytest.mark.slow
def test_trained_foo_model_reloads_identically_in_a_fresh_process(tmp_path):
    model = foo_model(pooling="mean")
    model.compile(optimizer="adam")
    inputs = sample_inputs()
    model.fit(inputs, MULTI_HOT, epochs=1, verbose=0)
    path = tmp_path / "foo.keras"
    model.save(path)
    actual, summary = reload_in_subprocess(path, inputs)
    assert summary == {"class": "DistilBertTaskModel", "heads": {"foo": "FooHead"}, "compiled": True}
    expected = keras.ops.convert_to_numpy(model(inputs, training=False)["foo"]["logits"])
    np.testing.assert_array_equal(expected, actual["foo/logits"])


@pytest.mark.slow
def test_blocked_plugin_fails_in_a_fresh_process_with_what_to_do(tmp_path):
    model = foo_model()
    path = tmp_path / "foo.keras"
    model.save(path)
    script = textwrap.dedent(
        """
        import sys
        import distilbert_heads, keras
        try:
            keras.models.load_model(sys.argv[1])
        except distilbert_heads.MissingHeadPluginError as error:
            print("MISSING:", error)
            sys.exit(3)
        """
    )
    env = {**os.environ, BLOCK_ENV: "distilbert-head-foo", "TF_CPP_MIN_LOG_LEVEL": "3"}
    result = subprocess.run(
        [sys.executable, "-c", script, str(path)], capture_output=True, text=True, env=env, timeout=300
    )
    assert result.returncode == 3, result.stderr[-3000:]
    assert "'foo'" in result.stdout and BLOCK_ENV in result.stdout
    assert "pip install distilbert-head-foo==0.1.0" in result.stdout
