"""Hostile and broken model files: each class of problem is refused early with a clear message.

Sizes are bounded before allocation; the weight files read are exactly those the checkpoint
names; missing encoder weights and non-finite values are errors (with an opt-out for partial
loads); unsafe pickles never run and never suggest ``weights_only=False``; corrupt configs,
safetensors and ``.keras`` archives name the file and the fix.
"""

from __future__ import annotations

import functools
import json
import os
import shlex
import shutil
import sys
import time
import zipfile
from pathlib import Path

import numpy as np
import pytest
from helpers import tiny_vocab
from hf_reference import make_hf_model, save_hf_model  # skips this module without torch or transformers

from distilbert_heads.cli import main
from distilbert_heads.encoder import checkpoints
from distilbert_heads.encoder.checkpoints import CheckpointError
from distilbert_heads.encoder.config import (
    ALLOW_LARGE_ENV,
    HF_FIELD_NAMES,
    ConfigError,
    DistilBertConfig,
)
from distilbert_heads.encoder.distilbert import DistilBERT
from distilbert_heads.model.factory import create_distilbert_with_head
from distilbert_heads.model.loading import load_task_model
from distilbert_heads.testing import TINY_ENCODER
from distilbert_heads.text.tokenizer import DistilBertTokenizer

torch = pytest.importorskip("torch")
safetensors_numpy = pytest.importorskip("safetensors.numpy")

HF_VOCAB = 97


def rewrite_member(source: Path, target: Path, name: str, edit) -> Path:
    """Copy a .keras zip, replacing member ``name`` by ``edit(bytes)`` (dropped when it returns None)."""
    with zipfile.ZipFile(source) as src, zipfile.ZipFile(target, "w") as dst:
        for item in src.infolist():
            data = src.read(item.filename)
            if item.filename == name:
                data = edit(data)
                if data is None:
                    continue
            dst.writestr(item, data)
    return target


def edit_json(edit):
    def apply(data: bytes) -> bytes:
        config = json.loads(data)
        edit(config)
        return json.dumps(config).encode()

    return apply


@pytest.fixture(scope="module")
def hf_dir(tmp_path_factory) -> Path:
    """A tiny random DistilBertForSequenceClassification checkpoint (safetensors) with a vocab.txt."""
    directory = save_hf_model(
        make_hf_model("DistilBertForSequenceClassification", num_labels=3), tmp_path_factory.mktemp("hf") / "ckpt"
    )
    tokens = tiny_vocab(f"w{i}" for i in range(HF_VOCAB - 5))
    (directory / "vocab.txt").write_text("\n".join(tokens) + "\n", encoding="utf-8")
    return directory


@pytest.fixture(scope="module")
def hf_state(hf_dir) -> dict[str, np.ndarray]:
    return safetensors_numpy.load_file(str(hf_dir / "model.safetensors"))


@pytest.fixture(scope="module")
def keras_file(tmp_path_factory) -> Path:
    """A task model with its tokenizer inside (assets/tokenizer/...)."""
    model = create_distilbert_with_head("sentiment", distilbert_variant="tiny", num_classes=2, **TINY_ENCODER)
    model.tokenizer = DistilBertTokenizer.from_vocab(tiny_vocab(["a", "b"]))
    path = tmp_path_factory.mktemp("keras") / "model.keras"
    model.save(path)
    return path


@pytest.fixture(scope="module")
def encoder_keras_file(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("keras") / "encoder.keras"
    DistilBERT(**TINY_ENCODER).save(path)
    return path


@pytest.fixture
def checkpoint(hf_dir, tmp_path) -> Path:
    """A private copy of the tiny checkpoint, free to damage."""
    return Path(shutil.copytree(hf_dir, tmp_path / "ckpt"))


def assert_encoder_matches(encoder: DistilBERT, hf_state: dict[str, np.ndarray]) -> None:
    ours = checkpoints.encoder_state_dict(encoder)
    for key, value in ours.items():
        np.testing.assert_array_equal(value, hf_state["distilbert." + key], err_msg=key)


# -- sizes are bounded before anything is allocated ---------------------------------------------------
OVERSIZED = {
    "vocab": ({"vocab_size": 10**10}, "vocab_size", "1,000,000"),
    "hidden": ({"hidden_size": 10**6, "num_heads": 1}, "hidden_size", "16,384"),
    "layers": ({"num_layers": 100_000}, "num_layers", "128"),
    "heads": ({"num_heads": 512, "hidden_size": 1024}, "num_heads", "256"),
    "ffn": ({"intermediate_size": 10**7}, "intermediate_size", "65,536"),
    "positions": ({"max_position_embeddings": 10**7}, "max_position_embeddings", "131,072"),
    # Every field within its own limit, together about 413 billion parameters.
    "total": (
        {"hidden_size": 16_384, "num_heads": 128, "num_layers": 128, "intermediate_size": 65_536},
        "parameters",
        "20,000,000,000",
    ),
}


@pytest.mark.parametrize("container", ["config.json", "task .keras", "encoder .keras"])
@pytest.mark.parametrize("case", list(OVERSIZED))
def test_oversized_configs_fail_fast_naming_field_limit_and_override(
    case, container, keras_file, encoder_keras_file, tmp_path, monkeypatch
):
    monkeypatch.delenv(ALLOW_LARGE_ENV, raising=False)
    fields, named, limit = OVERSIZED[case]
    if container == "config.json":
        (tmp_path / "config.json").write_text(
            json.dumps({"model_type": "distilbert", **{HF_FIELD_NAMES[key]: value for key, value in fields.items()}})
        )
        load = functools.partial(DistilBERT.from_pretrained, tmp_path)
    elif container == "task .keras":
        path = rewrite_member(
            keras_file,
            tmp_path / "big.keras",
            "config.json",
            edit_json(lambda config: config["config"]["encoder"].update(fields)),
        )
        load = functools.partial(load_task_model, path)
    else:
        path = rewrite_member(
            encoder_keras_file,
            tmp_path / "big.keras",
            "config.json",
            edit_json(lambda config: config["config"].update(fields)),
        )
        load = functools.partial(DistilBERT.from_keras_file, path)
    start = time.perf_counter()
    with pytest.raises(ConfigError) as error:
        load()
    assert time.perf_counter() - start < 5
    message = str(error.value)
    assert named in message and limit in message and f"{ALLOW_LARGE_ENV}=1" in message
    if container == "config.json":
        assert str(tmp_path / "config.json") in message


@pytest.mark.parametrize("case", list(OVERSIZED))
def test_size_limits_lift_with_the_environment_override(case, monkeypatch):
    fields = OVERSIZED[case][0]
    monkeypatch.delenv(ALLOW_LARGE_ENV, raising=False)
    with pytest.raises(ConfigError):
        DistilBertConfig.build(**fields)
    monkeypatch.setenv(ALLOW_LARGE_ENV, "1")
    config = DistilBertConfig.build(**fields)  # validation only: nothing is allocated
    assert all(getattr(config, key) == value for key, value in fields.items())


@pytest.mark.parametrize(
    "options", [{"num_classes": 10**10}, {"labels": [f"c{i}" for i in range(1_000_001)]}], ids=["num_classes", "labels"]
)
def test_oversized_head_options_in_a_keras_file_fail_fast(options, keras_file, tmp_path, monkeypatch):
    monkeypatch.delenv(ALLOW_LARGE_ENV, raising=False)

    def edit(config):
        head_options = config["config"]["heads"][0]["options"]
        head_options.pop("labels", None)
        head_options.pop("num_classes", None)
        head_options.update(options)

    path = rewrite_member(keras_file, tmp_path / "big.keras", "config.json", edit_json(edit))
    start = time.perf_counter()
    with pytest.raises(ValueError) as error:
        load_task_model(path)
    assert time.perf_counter() - start < 5
    message = str(error.value)
    assert "1,000,000" in message and f"{ALLOW_LARGE_ENV}=1" in message and "sentiment" in message


def test_real_model_sizes_are_within_the_limits(monkeypatch):
    monkeypatch.delenv(ALLOW_LARGE_ENV, raising=False)
    # DistilBERT base and a BERT-large-sized multilingual encoder.
    DistilBertConfig.build()
    DistilBertConfig.build(
        vocab_size=250_002,
        hidden_size=1024,
        num_heads=16,
        num_layers=24,
        intermediate_size=4096,
        max_position_embeddings=514,
    )


# -- the weight files read are exactly those the checkpoint names ---------------------------------
def _stray_file(directory: Path, state: dict) -> None:
    safetensors_numpy.save_file(
        {key: np.zeros_like(value) for key, value in state.items()}, str(directory / "zz-extra.safetensors")
    )


def test_stray_weight_files_are_ignored_and_reported(checkpoint, hf_state, caplog):
    _stray_file(checkpoint, hf_state)
    (checkpoint / "old.bin").write_bytes(b"not read")
    (checkpoint / "pytorch_model.bin").write_bytes(b"the same weights for torch, not read")
    with caplog.at_level("WARNING", logger="distilbert_heads"):
        encoder = DistilBERT.from_pretrained(checkpoint)
    assert_encoder_matches(encoder, hf_state)
    assert encoder.load_report.ignored_files == ["old.bin", "pytorch_model.bin", "zz-extra.safetensors"]
    # The stray files are worth a warning; the usual other-format copy is not.
    assert "zz-extra.safetensors" in caplog.text and "old.bin" in caplog.text
    assert "pytorch_model.bin" not in caplog.text


@pytest.fixture
def sharded(hf_dir, tmp_path) -> Path:
    model = make_hf_model("DistilBertForSequenceClassification", num_labels=3)
    directory = tmp_path / "sharded"
    model.save_pretrained(directory, safe_serialization=True, max_shard_size="20KB")
    assert (directory / "model.safetensors.index.json").is_file()
    return directory


def test_sharded_checkpoint_reads_the_index_shards_only(sharded, hf_state):
    _stray_file(sharded, hf_state)
    encoder = DistilBERT.from_pretrained(sharded)
    assert_encoder_matches(encoder, hf_state)
    assert encoder.load_report.ignored_files == ["zz-extra.safetensors"]


def _drop_shard(directory: Path) -> str:
    shard = max(directory.glob("model-*.safetensors"))
    shard.unlink()
    return shard.name


def _escape_folder(directory: Path) -> str:
    index = json.loads((directory / "model.safetensors.index.json").read_text())
    key = next(iter(index["weight_map"]))
    index["weight_map"][key] = "../elsewhere.safetensors"
    (directory / "model.safetensors.index.json").write_text(json.dumps(index))
    return "../elsewhere.safetensors"


def _no_weight_map(directory: Path) -> str:
    (directory / "model.safetensors.index.json").write_text(json.dumps({"metadata": {}}))
    return "weight_map"


def _only_unnamed_weights(directory: Path) -> str:
    (directory / "model.safetensors.index.json").unlink()
    for shard in directory.glob("model-*.safetensors"):
        shard.rename(directory / ("weights-" + shard.name))
    return "rename"


@pytest.mark.parametrize("damage", [_drop_shard, _escape_folder, _no_weight_map, _only_unnamed_weights])
def test_weight_file_set_that_does_not_match_the_checkpoint_is_refused(sharded, damage):
    expected = damage(sharded)
    with pytest.raises(CheckpointError) as error:
        DistilBERT.from_pretrained(sharded)
    assert expected in str(error.value)


# -- missing encoder weights are an error, unless a partial load is asked for ------------------------
PARTIAL = {
    "one layer weight": lambda key: key == "distilbert.transformer.layer.0.attention.q_lin.weight",
    "a whole layer": lambda key: key.startswith("distilbert.transformer.layer.1."),
    "the whole encoder": lambda key: key.startswith("distilbert."),
}


@pytest.mark.parametrize("case", list(PARTIAL))
def test_missing_encoder_weights_are_an_error_with_an_opt_out(case, checkpoint, hf_state):
    dropped = sorted(key for key in hf_state if PARTIAL[case](key))
    safetensors_numpy.save_file(
        {k: v for k, v in hf_state.items() if k not in dropped}, str(checkpoint / "model.safetensors")
    )
    with pytest.raises(CheckpointError) as error:
        create_distilbert_with_head("sentiment", pretrained=checkpoint)
    message = str(error.value)
    named = [key for key in dropped if key.removeprefix("distilbert.") in message]
    assert len(named) == min(5, len(dropped))
    assert f"lacks {len(dropped)} of the encoder's" in message
    assert "allow_partial=True" in message and "--allow-partial" in message

    model = create_distilbert_with_head("sentiment", pretrained=checkpoint, allow_partial=True)
    assert sorted(model.encoder.load_report.missing) == [key.removeprefix("distilbert.") for key in dropped]


def test_convert_refuses_a_partial_checkpoint_unless_allowed(checkpoint, hf_state, tmp_path, capsys):
    safetensors_numpy.save_file(
        {k: v for k, v in hf_state.items() if not k.startswith("distilbert.transformer")},
        str(checkpoint / "model.safetensors"),
    )
    out = tmp_path / "out.keras"
    assert main(["convert", str(checkpoint), "--task", "sentiment", "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "--allow-partial" in err and len(err.strip().splitlines()) == 1
    assert not out.exists()
    assert main(["convert", str(checkpoint), "--task", "sentiment", "--out", str(out), "--allow-partial"]) == 0
    assert out.is_file()


# -- weights that do not fit the checkpoint's own config ------------------------------------------------
def _cast(key: str, dtype):
    return lambda state: state.update({key: state[key].astype(dtype)})


INCONSISTENT = {  # case: (config.json edit, state edit, facts the message must state)
    "fewer layers than the weights": ({"n_layers": 1}, None, ["transformer.layer.1.", "num_layers=1", "n_layers"]),
    "vocab_size not the embeddings'": (
        {"vocab_size": HF_VOCAB + 50},
        None,
        ["word_embeddings", f"({HF_VOCAB}, 32)", f"({HF_VOCAB + 50}, 32)"],
    ),
    "int weights": (
        None,
        _cast("distilbert.transformer.layer.0.ffn.lin1.weight", np.int32),
        ["transformer.layer.0.ffn.lin1.weight (int32)", "non-floating-point"],
    ),
    "bool weights": (
        None,
        _cast("distilbert.embeddings.word_embeddings.weight", np.bool_),
        ["word_embeddings.weight (bool)"],
    ),
    "a weight stored twice": (
        None,
        lambda state: state.update(
            {"embeddings.LayerNorm.weight": np.zeros_like(state["distilbert.embeddings.LayerNorm.weight"])}
        ),
        ["twice", "distilbert.embeddings.LayerNorm.weight", "ambiguous"],
    ),
    "int head weights": (None, _cast("classifier.weight", np.int32), ["classifier.weight (int32)", "SentimentHead"]),
    "head bias of another size": (
        None,
        lambda state: state.update({"classifier.bias": np.zeros(5, np.float32)}),
        ["classifier.bias has shape (5,)", "expects (3, 32) and (3,)"],
    ),
}


@pytest.mark.parametrize("case", list(INCONSISTENT))
def test_weights_that_do_not_fit_their_config_are_refused(case, checkpoint, hf_state, tmp_path, capsys):
    config_edit, state_edit, facts = INCONSISTENT[case]
    if config_edit:
        config = json.loads((checkpoint / "config.json").read_text())
        config.update(config_edit)
        (checkpoint / "config.json").write_text(json.dumps(config))
    if state_edit:
        state = dict(hf_state)
        state_edit(state)
        safetensors_numpy.save_file(state, str(checkpoint / "model.safetensors"))
    with pytest.raises(ValueError) as error:  # CheckpointError, or the head's own ValueError
        create_distilbert_with_head("sentiment", pretrained=checkpoint)
    for fact in facts:
        assert fact in str(error.value), (fact, str(error.value))
    out = tmp_path / "out.keras"
    assert main(["convert", str(checkpoint), "--task", "sentiment", "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and len(err.strip().splitlines()) == 1 and not out.exists()


# -- tokenizer files in a checkpoint folder ---------------------------------------------------------------
def _tokenizer_file(name: str, data):
    def damage(directory: Path) -> None:
        (directory / name).write_bytes(data(directory) if callable(data) else data)

    return damage


def _many_tokens(directory: Path) -> bytes:
    return (directory / "vocab.txt").read_bytes() + b"".join(b"t%d\n" % i for i in range(1_000_001))


BAD_TOKENIZER_FILES = {  # case: (damage, facts)
    "vocab.txt in Latin-1": (
        _tokenizer_file("vocab.txt", lambda d: (d / "vocab.txt").read_bytes() + "caf\u00e9\n".encode("latin-1")),
        ["vocab.txt", "not UTF-8", f"line {HF_VOCAB + 1}"],
    ),
    "vocab.txt in UTF-16": (
        _tokenizer_file("vocab.txt", lambda d: (d / "vocab.txt").read_text().encode("utf-16")),
        ["vocab.txt", "not UTF-8", "iconv"],
    ),
    "vocab.txt with too many tokens": (
        _tokenizer_file("vocab.txt", _many_tokens),
        ["vocab.txt", "1,000,000", "DISTILBERT_HEADS_ALLOW_LARGE=1"],
    ),
    "tokenizer.json not text": (_tokenizer_file("tokenizer.json", b"\xff\xfe\x00{"), ["tokenizer.json", "not UTF-8"]),
    "tokenizer_config.json wrong types": (
        _tokenizer_file("tokenizer_config.json", b'{"do_lower_case": [1], "tokenize_chinese_chars": null}'),
        ["tokenizer_config.json", "do_lower_case", "tokenize_chinese_chars", "None"],
    ),
    "tokenizer_config.json not UTF-8": (
        _tokenizer_file("tokenizer_config.json", b'{"x": "\xe9"}'),
        ["tokenizer_config.json", "not UTF-8"],
    ),
}


@pytest.mark.parametrize("case", list(BAD_TOKENIZER_FILES))
def test_bad_tokenizer_files_are_refused_naming_file_and_fix(case, checkpoint, tmp_path, capsys, monkeypatch):
    monkeypatch.delenv(ALLOW_LARGE_ENV, raising=False)
    damage, facts = BAD_TOKENIZER_FILES[case]
    damage(checkpoint)
    with pytest.raises(ValueError) as error:
        DistilBertTokenizer.from_pretrained(checkpoint)
    for fact in facts:
        assert fact in str(error.value), (fact, str(error.value))
    assert main(["convert", str(checkpoint), "--task", "sentiment", "--out", str(tmp_path / "out.keras")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and len(err.strip().splitlines()) == 1


def test_vocab_size_override_still_skips_word_embeddings_with_a_warning(checkpoint):
    with pytest.warns(UserWarning, match="Word embeddings not loaded"):
        encoder = DistilBERT.from_pretrained(checkpoint, vocab_size=HF_VOCAB + 3)
    assert encoder.load_report.skipped == ["embeddings.word_embeddings.weight"] and not encoder.load_report.missing


# -- non-finite values ---------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("key", "bad"),
    [
        ("distilbert.transformer.layer.0.ffn.lin1.weight", np.nan),
        ("distilbert.embeddings.word_embeddings.weight", np.inf),
        ("classifier.weight", -np.inf),
    ],
)
def test_non_finite_checkpoint_values_are_refused_naming_tensor_and_count(checkpoint, hf_state, key, bad):
    state = dict(hf_state)
    state[key] = state[key].copy()
    state[key].flat[:3] = bad
    safetensors_numpy.save_file(state, str(checkpoint / "model.safetensors"))
    with pytest.raises(CheckpointError) as error:
        create_distilbert_with_head("sentiment", pretrained=checkpoint)
    assert key in str(error.value) and "3 NaN or infinite" in str(error.value)


def test_non_finite_keras_weights_are_refused(tmp_path):
    model = create_distilbert_with_head("sentiment", distilbert_variant="tiny", num_classes=2, **TINY_ENCODER)
    kernel = model.heads["sentiment"].weights[0]
    kernel.assign(np.full(kernel.shape, np.nan, dtype="float32"))
    model.save(tmp_path / "nan.keras")
    with pytest.raises(CheckpointError) as error:
        load_task_model(tmp_path / "nan.keras")
    assert kernel.path in str(error.value) and f"{int(np.prod(kernel.shape))} NaN" in str(error.value)


# -- pickles: refused with our message, code never run ---------------------------------------------------
class _Payload:
    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {shlex.quote(str(self.marker))}",))


def _malicious(path: Path, marker: Path) -> str:
    torch.save({"distilbert.embeddings.word_embeddings.weight": torch.zeros(2), "x": _Payload(marker)}, path)
    return "system"


def _garbage(path: Path, marker: Path) -> str:
    path.write_bytes(os.urandom(64))
    return "not a safe weights-only"


def _truncated(path: Path, marker: Path) -> str:
    torch.save({"a": torch.ones(100)}, path)
    path.write_bytes(path.read_bytes()[:200])
    return "corrupt"


def _not_a_state_dict(path: Path, marker: Path) -> str:
    torch.save([1, 2, 3], path)
    return "not a state dict"


@pytest.mark.parametrize("make", [_malicious, _garbage, _truncated, _not_a_state_dict])
def test_unsafe_or_corrupt_pickles_get_our_message(checkpoint, tmp_path, make):
    (checkpoint / "model.safetensors").unlink()
    marker = tmp_path / "marker"
    expected = make(checkpoint / "pytorch_model.bin", marker)
    assert not marker.exists()
    with pytest.raises(CheckpointError) as error:
        DistilBERT.from_pretrained(checkpoint)
    message = str(error.value)
    assert not marker.exists()
    assert expected in message and "pytorch_model.bin" in message and "safetensors" in message
    assert "weights_only" not in message
    # Nothing chained that a traceback would print (torch's text suggests weights_only=False).
    assert error.value.__cause__ is None
    assert error.value.__context__ is None or error.value.__suppress_context__


def test_pickle_without_torch_says_to_install_it_or_use_safetensors(checkpoint, hf_state, monkeypatch):
    (checkpoint / "model.safetensors").unlink()
    torch.save({key: torch.from_numpy(value) for key, value in hf_state.items()}, checkpoint / "pytorch_model.bin")
    monkeypatch.setitem(sys.modules, "torch", None)
    with pytest.raises(CheckpointError, match=r"(?s)torch is not installed.*pip install torch.*model\.safetensors"):
        DistilBERT.from_pretrained(checkpoint)


# -- corrupt files of every kind ---------------------------------------------------------------------
def _config(text: bytes):
    def damage(directory: Path, keras_path: Path) -> Path:
        (directory / "config.json").write_bytes(text)
        return directory

    return damage


def _config_fields(**fields):
    def damage(directory: Path, keras_path: Path) -> Path:
        config = json.loads((directory / "config.json").read_text())
        config.update(fields)
        (directory / "config.json").write_text(json.dumps(config))
        return directory

    return damage


def _safetensors(edit):
    def damage(directory: Path, keras_path: Path) -> Path:
        path = directory / "model.safetensors"
        path.write_bytes(edit(path.read_bytes()))
        return directory

    return damage


def _keras_bytes(edit, suffix=".keras"):
    def damage(directory: Path, keras_path: Path) -> Path:
        target = directory / f"model{suffix}"
        target.write_bytes(edit(keras_path.read_bytes()))
        return target

    return damage


def _keras_member(name, edit):
    def damage(directory: Path, keras_path: Path) -> Path:
        return rewrite_member(keras_path, directory / "edited.keras", name, edit)

    return damage


def _keras_second_config(directory: Path, keras_path: Path) -> Path:
    target = directory / "edited.keras"
    target.write_bytes(keras_path.read_bytes())
    with zipfile.ZipFile(target, "a") as archive, pytest.warns(UserWarning, match="Duplicate name"):
        archive.writestr("config.json", archive.read("config.json").replace(b'"num_classes": 2', b'"num_classes": 5'))
    return target


def _encoder_only(directory: Path) -> Path:
    path = directory / "encoder.keras"
    DistilBERT(**TINY_ENCODER).save(path)
    return path


def _saved_model(directory: Path, keras_path: Path) -> Path:
    export = directory / "export"
    (export / "variables").mkdir(parents=True)
    (export / "saved_model.pb").write_bytes(b"\x08\x01")
    return export


CORRUPT = {  # case: (damage, loader, facts the message must state)
    "config not UTF-8": (_config('{"dim": "caf\u00e9"}'.encode("latin-1")), "hf", ["config.json", "UTF-8"]),
    "config invalid JSON": (_config(b'{"dim": 32,\n "n_layers": }'), "hf", ["config.json", "line 2", "not valid JSON"]),
    "config too deeply nested": (_config(b"[" * 100_000 + b"]" * 100_000), "hf", ["config.json", "nests"]),
    "config not an object": (_config(b"[1, 2]"), "hf", ["config.json", "JSON list", "object"]),
    "config wrong field type": (_config_fields(dim="large"), "hf", ["dim (hidden_size)", "config.json", "large"]),
    "id2label keys not ids": (_config_fields(id2label={"zero": "neg"}), "hf", ["id2label", "config.json", "zero"]),
    "id2label names not strings": (_config_fields(id2label={"0": 5}), "hf", ["id2label", "config.json"]),
    "id2label a list": (_config_fields(id2label=["neg", "pos"]), "hf", ["id2label", "dictionary"]),
    "safetensors truncated": (
        _safetensors(lambda data: data[: len(data) // 2]),
        "hf",
        ["model.safetensors", "truncated"],
    ),
    "safetensors garbage": (_safetensors(lambda data: os.urandom(len(data))), "hf", ["model.safetensors", "corrupt"]),
    "safetensors empty": (_safetensors(lambda data: b""), "hf", ["model.safetensors", "not a readable"]),
    "keras truncated": (_keras_bytes(lambda data: data[: len(data) // 2]), "keras", ["model.keras", "truncated"]),
    "keras not a zip": (_keras_bytes(lambda data: os.urandom(len(data))), "keras", ["model.keras", "zip"]),
    "h5 garbage": (
        _keras_bytes(lambda data: os.urandom(100), suffix=".h5"),
        "keras",
        ["model.h5", "not a .keras file"],
    ),
    "keras config missing": (
        _keras_member("config.json", lambda data: None),
        "keras",
        ["edited.keras", "no config.json"],
    ),
    "keras config invalid JSON": (
        _keras_member("config.json", lambda data: data[:-5]),
        "keras",
        ["config.json inside", "edited.keras", "not valid JSON"],
    ),
    "keras config not an object": (_keras_member("config.json", lambda data: b'"model"'), "keras", ["JSON str"]),
    "keras config not a model": (
        _keras_member("config.json", lambda data: b"{}"),
        "keras",
        ["not a Keras model config", "class_name"],
    ),
    "keras config unknown class": (
        _keras_member("config.json", edit_json(lambda c: c.update(class_name="Nope", registered_name="Nope"))),
        "keras",
        ["edited.keras", "Nope", "cannot rebuild"],
    ),
    "keras weights missing": (
        _keras_member("model.weights.h5", lambda data: None),
        "keras",
        ["edited.keras", "no weights"],
    ),
    "keras weights damaged": (
        _keras_member("model.weights.h5", lambda data: data[: len(data) // 2]),
        "keras",
        ["edited.keras", "damaged"],
    ),
    "keras member twice": (_keras_second_config, "keras", ["edited.keras", "config.json more than once", "ambiguous"]),
    "keras weights do not fit config": (
        _keras_member("config.json", edit_json(lambda c: c["config"]["heads"][0]["options"].update(num_classes=5))),
        "keras",
        ["edited.keras", "weights do not fit", "classifier"],
    ),
    "keras config of a foreign class": (
        _keras_member(
            "config.json", edit_json(lambda c: c.update(module="keras", class_name="Sequential", registered_name=None))
        ),
        "keras",
        ["edited.keras", "cannot rebuild"],
    ),
    "keras encoder not an object": (
        _keras_member("config.json", edit_json(lambda c: c["config"].update(encoder="x"))),
        "keras",
        ["edited.keras", "'encoder' must be an object", "got str"],
    ),
    "keras head malformed": (
        _keras_member("config.json", edit_json(lambda c: c["config"]["heads"][0].update(provenance=None))),
        "keras",
        ["edited.keras", "heads[0].provenance"],
    ),
    "keras format_version a string": (
        _keras_member("config.json", edit_json(lambda c: c["config"].update(format_version="1"))),
        "keras",
        ["edited.keras", "format '1' (format_version)"],
    ),
    "keras layer_norm_eps infinite": (
        _keras_member("config.json", edit_json(lambda c: c["config"]["encoder"].update(layer_norm_eps=float("inf")))),
        "keras",
        ["layer_norm_eps", "finite"],
    ),
    "keras holds only an encoder": (
        lambda directory, keras_path: _encoder_only(directory),
        "keras",
        ["holds a DistilBERT", "pretrained="],
    ),
    "keras tokenizer not UTF-8": (
        _keras_member("assets/tokenizer/tokenizer.json", lambda data: data.replace(b'"[UNK]"', b'"[UNK\xff]"', 1)),
        "keras",
        ["edited.keras", "assets/tokenizer/tokenizer.json", "not UTF-8", "line 1"],
    ),
    "keras tokenizer config wrong type": (
        _keras_member("assets/tokenizer/tokenizer_config.json", lambda data: b'{"strip_accents": 5}'),
        "keras",
        ["edited.keras", "assets/tokenizer", "strip_accents", "5"],
    ),
    "SavedModel folder": (_saved_model, "keras", ["SavedModel", "serving", ".keras file it was exported from"]),
    "HF checkpoint as model": (lambda directory, keras_path: directory, "keras", ["convert"]),
}


@pytest.mark.parametrize("case", list(CORRUPT))
def test_corrupt_files_are_refused_with_file_and_fix(case, checkpoint, keras_file, capsys):
    damage, loader, facts = CORRUPT[case]
    target = damage(checkpoint, keras_file)
    load = load_task_model if loader == "keras" else DistilBERT.from_pretrained
    with pytest.raises(ValueError) as error:  # CheckpointError, ConfigError: the CLI prints one line
        load(target)
    for fact in facts:
        assert fact in str(error.value), (fact, str(error.value))
    assert "File not found" not in str(error.value)
    if loader == "keras":
        assert main(["predict", "--model", str(target), "--text", "hi"]) == 2
        err = capsys.readouterr().err
        assert err.startswith("error: ") and len(err.strip().splitlines()) == 1


def test_id2label_with_int_like_keys_names_the_classes(checkpoint):
    config = json.loads((checkpoint / "config.json").read_text())
    config["id2label"] = {"0": "neg", "1": "neutral", "2": "pos"}
    (checkpoint / "config.json").write_text(json.dumps(config))
    model = create_distilbert_with_head("sentiment", pretrained=checkpoint)
    assert model.heads["sentiment"].options.labels == ["neg", "neutral", "pos"]


@pytest.mark.parametrize("source", ["checkpoint", ".keras"])
def test_a_file_of_another_shape_than_the_variant_names_the_loader_that_takes_its_shape(
    source, checkpoint, encoder_keras_file
):
    path = os.fspath(checkpoint if source == "checkpoint" else encoder_keras_file)
    with pytest.raises(ValueError) as error:
        DistilBERT.from_variant("small", pretrained=path)
    loader = "from_pretrained" if source == "checkpoint" else "from_keras_file"
    assert f"DistilBERT.{loader}({path!r})" in str(error.value)
