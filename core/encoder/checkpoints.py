"""Hugging Face checkpoints: finding them, reading and writing their weights, and the name map.

The map between our variables and Hugging Face's state-dict keys lives here and nowhere else.
Keys are Hugging Face's own (``transformer.layer.0.attention.q_lin.weight``); an ``nn.Linear``
weight is (out, in), so it is the transpose of a Keras ``Dense`` kernel.
"""

from __future__ import annotations

import json
import logging
import os
import pickle
import re
import warnings
import zipfile
import zlib
from collections import Counter
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from pydantic import TypeAdapter, ValidationError

from distilbert_heads import atomic
from distilbert_heads.encoder.config import hf_model_type

if TYPE_CHECKING:
    from distilbert_heads.encoder.distilbert import DistilBERT

logger = logging.getLogger("distilbert_heads")

CONFIG_NAME = "config.json"
SAFETENSORS_NAME = "model.safetensors"
SAFETENSORS_INDEX_NAME = "model.safetensors.index.json"
TORCH_BIN_NAME = "pytorch_model.bin"
TORCH_BIN_INDEX_NAME = "pytorch_model.bin.index.json"
# Files that look like weights; those a checkpoint does not name are ignored and reported.
WEIGHT_SUFFIXES = frozenset({".safetensors", ".bin", ".pt", ".pth", ".ckpt", ".h5", ".msgpack", ".npz"})
# The same weights in other frameworks' formats, which hub repositories ship side by side.
OTHER_FORMAT_NAME = re.compile(r"(model|pytorch_model|tf_model|flax_model)(-\d+-of-\d+)?\.(safetensors|bin|h5|msgpack)")
# A config or index file larger than this is not one (the largest real ones are a few MB).
MAX_JSON_BYTES = 64 * 1024 * 1024
SAFETENSORS_ADVICE = (
    "Use the checkpoint's model.safetensors instead (the Hugging Face hub has one for most models: "
    "`huggingface-cli download <id> model.safetensors config.json`), or convert a .bin you trust with "
    "https://huggingface.co/spaces/safetensors/convert."
)
ENCODER_PREFIX = "distilbert."
# Files a hub download needs: config, weights and, for the tokenizer, its vocabulary.
HUB_PATTERNS = [
    "config.json",
    "*.safetensors",
    "model.safetensors.index.json",
    "pytorch_model*.bin",
    "pytorch_model.bin.index.json",
    "vocab.txt",
    "tokenizer.json",
    "tokenizer_config.json",
]
LEGACY_SUFFIXES = {".gamma": ".weight", ".beta": ".bias"}
# Keys (without the prefix) of DistilBertModel's own weights; anything else is a head or a buffer.
_ENCODER_WEIGHT = re.compile(r"(embeddings\.(word_embeddings|position_embeddings|LayerNorm)|transformer\.layer\.\d+)\.")
# A transformer layer's key in DistilBERT names, with or without the prefix: (start, index, rest).
_DISTILBERT_LAYER_KEY = re.compile(r"((?:distilbert\.)?transformer\.layer\.)(\d+)\.(.+)")

# BERT (modeling_bert) onto DistilBERT (modeling_distilbert). Both are post-LN encoders with the
# same blocks; BERT adds a token-type embedding (folded: row 0 goes into the position table, as
# our inputs are always type 0) and a pooler (dropped: DistilBERT has none).
BERT_PREFIX = "bert."
BERT_POSITIONS = "embeddings.position_embeddings.weight"
BERT_TOKEN_TYPES = "embeddings.token_type_embeddings.weight"
BERT_EMBEDDING_NAMES = ("embeddings.word_embeddings.weight", "embeddings.LayerNorm.weight", "embeddings.LayerNorm.bias")
# Within a layer: BERT module path -> DistilBERT module path (each with .weight and .bias).
BERT_LAYER_NAMES = {
    "attention.self.query": "attention.q_lin",
    "attention.self.key": "attention.k_lin",
    "attention.self.value": "attention.v_lin",
    "attention.output.dense": "attention.out_lin",
    "attention.output.LayerNorm": "sa_layer_norm",
    "intermediate.dense": "ffn.lin1",
    "output.dense": "ffn.lin2",
    "output.LayerNorm": "output_layer_norm",
}
_BERT_LAYER_KEY = re.compile(r"encoder\.layer\.(\d+)\.(.+)\.(weight|bias)")
# Parts of a BERT checkpoint DistilBERT has no place for: key prefix (without "bert.") -> why.
BERT_DROPPED = {
    "embeddings.position_ids": "a buffer (the position indices 0..n-1), not a weight",
    "embeddings.token_type_ids": "a buffer (all-zero token types), not a weight",
    "pooler.": "BERT's pooler (dense + tanh over [CLS]); DistilBERT has none",
    "cls.predictions.": "BERT's masked-LM head: not the encoder's (the 'mlm' head loads it)",
    "cls.seq_relationship.": "BERT's next-sentence-prediction head",
}
# BERT's masked-LM head: dropped from the encoder, but kept in the converted state for the 'mlm' head.
BERT_MLM_PREFIX = "cls.predictions."
# BERT task models whose `classifier` reads the pooler's output, not the token vectors.
BERT_POOLED_ARCHITECTURES = frozenset({"BertForSequenceClassification", "BertForMultipleChoice"})


class CheckpointError(ValueError):
    """A checkpoint or model file that is missing, unreadable, unsafe or does not fit the model."""


_ID2LABEL = TypeAdapter(dict[int, str])
_LABEL2ID = TypeAdapter(dict[str, int])
_WEIGHT_MAP = TypeAdapter(dict[str, str])


class WeightsDoNotFitError(CheckpointError):
    """A ``.keras`` file whose weights do not fit the model its own config describes."""

    def __init__(self, path: Path, detail: str, advice: str = "") -> None:
        self.path, self.detail = path, detail
        super().__init__(
            f"{path} is inconsistent: its weights do not fit the model its config.json describes ({detail}). "
            + (advice or "Was config.json inside it edited? Restore the file from a backup or save the model again.")
        )


@dataclass
class LoadReport:
    """What loading a state dict did, for logs and for tests."""

    source: str
    loaded: list[str] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)
    unused: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    ignored_files: list[str] = field(default_factory=list)
    # Checkpoint tensors added into another weight: "<key>[row]" -> the DistilBERT weight they went into.
    folded: dict[str, str] = field(default_factory=dict)
    # Checkpoint keys (or "<key>[rows]") deliberately not loaded -> why (pooler, MLM head, unused layer, ...).
    dropped: dict[str, str] = field(default_factory=dict)
    # The checkpoint layers that became the encoder's, in order (None: all of them).
    layers: list[int] | None = None


# -- locating a checkpoint ------------------------------------------------------------------
def resolve_checkpoint_dir(path_or_hub_id: str | os.PathLike) -> Path:
    """A local directory holding the checkpoint: the path itself, or the hub cache's snapshot.

    A path that exists is used as is. Anything else that looks like a hub id
    (``owner/name``) is resolved through huggingface_hub, from its cache first.
    """
    source = os.fspath(path_or_hub_id)
    path = Path(source).expanduser()
    if path.is_dir():
        return path
    if path.exists():
        raise CheckpointError(
            f"{source!r} is a file; expected a checkpoint directory holding {CONFIG_NAME} and "
            f"{SAFETENSORS_NAME} (or a .keras file passed as pretrained='model.keras')."
        )
    if source.startswith((".", "/", "~")) or os.sep in source.replace("/", "", 1) or source.count("/") > 1:
        raise CheckpointError(f"No checkpoint directory at {source!r}: the path does not exist.")
    return _download_from_hub(source)


def _download_from_hub(hub_id: str) -> Path:
    try:
        from huggingface_hub import snapshot_download
    except ImportError:
        raise CheckpointError(
            f"{hub_id!r} is not a local directory, and huggingface_hub is not installed to fetch it. "
            "Install it with `pip install 'distilbert-heads[hub]'`, or download the checkpoint and pass its directory."
        ) from None
    try:
        return Path(snapshot_download(hub_id, allow_patterns=HUB_PATTERNS, local_files_only=True))
    except Exception:
        pass  # not cached: try the network below
    try:
        return Path(snapshot_download(hub_id, allow_patterns=HUB_PATTERNS))
    except Exception as error:
        raise CheckpointError(
            f"Could not get checkpoint {hub_id!r}: it is not in the local Hugging Face cache and the hub could not "
            f"be reached ({type(error).__name__}: {error}). Point at a local directory instead, e.g. "
            f"from_pretrained('/path/to/{hub_id.split('/')[-1]}') with {CONFIG_NAME} and {SAFETENSORS_NAME} inside."
        ) from error


# -- reading ----------------------------------------------------------------------------------
def is_keras_file(source: str | os.PathLike) -> bool:
    """Whether a model source names a ``.keras`` file; anything else is a checkpoint directory or hub id.

    The one rule every ``pretrained=`` / ``--pretrained`` reader follows.
    """
    return os.fspath(source).endswith(".keras")


class Checkpoint:
    """A Hugging Face checkpoint read once: its folder, ``config.json``, weight files and state dict.

    The encoder and every head take their weights from the same read. ``config.json`` is read at
    once, the weights on first use, so a config that cannot be built fails before any tensor is read.
    """

    def __init__(self, directory: Path, hf_config: dict[str, Any]) -> None:
        self.directory, self.hf_config = directory, hf_config

    @classmethod
    def read(cls, path_or_hub_id: str | os.PathLike) -> Checkpoint:
        directory = resolve_checkpoint_dir(path_or_hub_id)
        return cls(directory, read_hf_config(directory))

    @cached_property
    def weight_files(self) -> WeightFiles:
        return find_weight_files(self.directory)

    @cached_property
    def raw_state_dict(self) -> dict[str, np.ndarray]:
        """The tensors as stored, under the checkpoint's own key names."""
        return read_state_dict(self.directory, self.weight_files)

    @property
    def state_dict(self) -> dict[str, np.ndarray]:
        """The tensors under DistilBertModel key names, all layers (a BERT checkpoint converted): what heads read."""
        return self.encoder_state().state

    def encoder_state(self, layers: Sequence[int] | None = None) -> EncoderState:
        """The weights in DistilBERT key names, keeping ``layers`` (default all); see `to_distilbert_state`."""
        if layers is None:
            return self._all_layers
        return to_distilbert_state(self.raw_state_dict, self.hf_config, source=str(self.directory), layers=layers)

    @cached_property
    def _all_layers(self) -> EncoderState:
        return to_distilbert_state(self.raw_state_dict, self.hf_config, source=str(self.directory))


def read_hf_config(directory: str | os.PathLike) -> dict[str, Any]:
    """``config.json`` as a dict, checked to be an object whose label maps have the right types.

    ``id2label`` comes back with its keys normalised to ``"0"``, ``"1"``, ... .
    """
    path = Path(directory) / CONFIG_NAME
    if not path.is_file():
        raise CheckpointError(
            f"{os.fspath(directory)!r} has no {CONFIG_NAME}; expected a Hugging Face checkpoint directory."
        )
    hf = read_json_file(path, "the checkpoint's configuration")
    if not isinstance(hf, dict):
        raise CheckpointError(
            f"{path} holds a JSON {type(hf).__name__}, but a Hugging Face {CONFIG_NAME} is a JSON object "
            '({"model_type": "distilbert", "dim": 768, ...}). Restore the file from the original checkpoint.'
        )
    for key, adapter, expected in (
        ("id2label", _ID2LABEL, 'class ids to names, e.g. {"0": "negative"}'),
        ("label2id", _LABEL2ID, 'names to class ids, e.g. {"negative": 0}'),
    ):
        if hf.get(key) is None:
            continue
        try:
            labels = adapter.validate_python(hf[key])
        except ValidationError as error:
            problem = "; ".join(
                f"{'.'.join(map(str, item['loc'])) or key}: {item['msg']}" for item in error.errors()[:3]
            )
            raise CheckpointError(
                f"{key} in {path} must map {expected}; {problem}. Fix or remove {key} in the file."
            ) from None
        if key == "id2label":
            hf[key] = {str(index): name for index, name in labels.items()}
    return hf


def read_json_file(path: Path, what: str) -> Any:
    """Parse a JSON file, with errors that name the file, the line and the fix."""
    size = path.stat().st_size
    if size > MAX_JSON_BYTES:
        raise CheckpointError(
            f"{path} is {size:,} bytes, too large for {what} (at most {MAX_JSON_BYTES:,}); is it the right file?"
        )
    return parse_json(path.read_bytes(), str(path), what)


def read_text_file(path: Path, what: str) -> str:
    """A UTF-8 text file of at most `MAX_JSON_BYTES`, with errors that name the file, the line and the fix."""
    size = path.stat().st_size
    if size > MAX_JSON_BYTES:
        raise CheckpointError(
            f"{path} is {size:,} bytes, too large for {what} (at most {MAX_JSON_BYTES:,}); is it the right file?"
        )
    return decode_utf8(path.read_bytes(), str(path), what)


def decode_utf8(data: bytes, where: str, what: str) -> str:
    """``data`` read from ``where`` as text; not UTF-8 is a `CheckpointError` naming the line and byte."""
    try:
        return data.decode("utf-8-sig" if data.startswith(b"\xef\xbb\xbf") else "utf-8")
    except UnicodeDecodeError as error:
        line = data.count(b"\n", 0, error.start) + 1
        raise CheckpointError(
            f"{where} is not UTF-8 text (line {line}, byte {error.start} is {data[error.start : error.start + 1]!r}), "
            f"so it cannot be {what}; convert it to UTF-8 (e.g. `iconv -f latin1 -t utf-8`) or restore the original "
            "file."
        ) from None


def parse_json(data: bytes, where: str, what: str) -> Any:
    """Parse JSON bytes read from ``where`` (a file, or a member of an archive)."""
    text = decode_utf8(data, where, what)
    try:
        return json.loads(text)
    except json.JSONDecodeError as error:
        raise CheckpointError(
            f"{where} is not valid JSON (line {error.lineno}, column {error.colno}: {error.msg}), so it cannot be "
            f"{what}; fix the file or restore the original."
        ) from None
    except RecursionError:
        raise CheckpointError(f"{where} nests JSON too deeply to be {what}; restore the original file.") from None


@dataclass(frozen=True)
class WeightFiles:
    """The weight files a checkpoint names: each file with the tensors to take from it (None: all)."""

    files: dict[Path, list[str] | None]
    ignored: list[str]

    @property
    def stray(self) -> list[str]:
        """Ignored files that are not the same weights in another framework's format (worth a warning)."""
        return [name for name in self.ignored if not OTHER_FORMAT_NAME.fullmatch(name)]


def find_weight_files(directory: str | os.PathLike) -> WeightFiles:
    """Exactly the weight files the checkpoint names; never a glob.

    ``model.safetensors.index.json`` (its ``weight_map`` names every shard), else
    ``model.safetensors``, else ``pytorch_model.bin.index.json``, else ``pytorch_model.bin``.
    Other weight-like files in the folder are listed in ``ignored``.
    """
    directory = Path(directory)
    for index_name, single_name in ((SAFETENSORS_INDEX_NAME, SAFETENSORS_NAME), (TORCH_BIN_INDEX_NAME, TORCH_BIN_NAME)):
        if (directory / index_name).is_file():
            files = _read_index(directory / index_name)
            break
        if (directory / single_name).is_file():
            files = {directory / single_name: None}
            break
    else:
        present = sorted(path.name for path in directory.iterdir() if path.suffix in WEIGHT_SUFFIXES)
        raise CheckpointError(
            f"{os.fspath(directory)!r} has no weights: expected {SAFETENSORS_NAME} (or {SAFETENSORS_INDEX_NAME} with "
            f"its shards), or {TORCH_BIN_NAME}"
            + (
                f". It has {', '.join(present)}, which a Hugging Face checkpoint does not name: rename the weights "
                f"file to {SAFETENSORS_NAME} if it is the model's."
                if present
                else "."
            )
        )
    named = {path.name for path in files} | {SAFETENSORS_INDEX_NAME, TORCH_BIN_INDEX_NAME}
    ignored = sorted(
        path.name for path in directory.iterdir() if path.suffix in WEIGHT_SUFFIXES and path.name not in named
    )
    return WeightFiles(files=files, ignored=ignored)


def _read_index(index: Path) -> dict[Path, list[str] | None]:
    content = read_json_file(index, "a checkpoint shard index")
    try:
        weight_map = _WEIGHT_MAP.validate_python(content.get("weight_map") if isinstance(content, dict) else None)
    except ValidationError:
        raise CheckpointError(
            f'{index} has no valid weight_map: expected a JSON object with "weight_map": '
            '{"<tensor name>": "<shard file name>", ...}. Restore the index from the original checkpoint.'
        ) from None
    files: dict[Path, list[str] | None] = {}
    for key, shard in weight_map.items():
        if Path(shard).name != shard or shard in ("", ".", ".."):
            raise CheckpointError(
                f"{index} maps {key!r} to {shard!r}, which is not a file name in the checkpoint's own folder; "
                "shards must sit beside the index. Restore the index from the original checkpoint."
            )
        files.setdefault(index.parent / shard, []).append(key)  # type: ignore[union-attr]
    missing = [path.name for path in files if not path.is_file()]
    if missing:
        raise CheckpointError(
            f"{index} names shard(s) {', '.join(missing)} that are not in {os.fspath(index.parent)!r}; the "
            "checkpoint is incomplete. Download the missing shard(s) (or the whole checkpoint again)."
        )
    return files


def read_state_dict(directory: str | os.PathLike, weight_files: WeightFiles | None = None) -> dict[str, np.ndarray]:
    """The tensors of the files the checkpoint names, as float32/int numpy arrays under Hugging Face key names.

    Raises `CheckpointError` for a missing, truncated, corrupt or unsafe file, and for a tensor
    holding NaN or infinite values.
    """
    weight_files = weight_files or find_weight_files(directory)
    state: dict[str, np.ndarray] = {}
    origin: dict[str, Path] = {}
    for path, keys in weight_files.files.items():
        tensors = _read_safetensors(path, keys) if path.suffix == ".safetensors" else _read_torch_file(path, keys)
        for key, value in _normalize_keys(tensors).items():
            state[key] = value
            origin[key] = path
    for key, value in state.items():
        if value.dtype.kind == "f":
            bad = int(value.size - np.count_nonzero(np.isfinite(value)))
            if bad:
                raise CheckpointError(
                    f"Tensor {key!r} in {origin[key]} holds {bad:,} NaN or infinite value(s) out of {value.size:,}; "
                    "the checkpoint is corrupt or was saved after training diverged. Use an earlier or the "
                    "original checkpoint."
                )
    return state


def _read_safetensors(path: Path, keys: list[str] | None) -> dict[str, Any]:
    from safetensors import safe_open

    def read(framework: str) -> dict[str, Any]:
        with safe_open(str(path), framework=framework) as handle:
            return {key: handle.get_tensor(key) for key in _wanted_keys(path, set(handle.keys()), keys)}

    try:
        try:
            return read("np")
        except TypeError as error:  # bfloat16: numpy has no such dtype; torch reads it
            if "bfloat16" not in str(error):
                raise
            import torch  # noqa: F401  (ImportError: reported below)

            return {key: value.float().numpy() for key, value in read("pt").items()}
    except CheckpointError:
        raise
    except ImportError:
        raise CheckpointError(
            f"{path} stores bfloat16 tensors, which need torch to read; install torch, or save the checkpoint "
            "in float32 or float16."
        ) from None
    except Exception as error:  # SafetensorError and friends: the header or data is damaged
        raise CheckpointError(
            f"{path} is not a readable safetensors file ({error}); it is truncated, corrupt or not a safetensors "
            "file at all. Download the checkpoint again, or remove the file if it does not belong there."
        ) from error


def _read_torch_file(path: Path, keys: list[str] | None) -> dict[str, Any]:
    try:
        import torch
    except ImportError:
        raise CheckpointError(
            f"{path} is a PyTorch pickle, which needs torch to read, and torch is not installed. Install torch "
            f"(`pip install torch`), or use the checkpoint's {SAFETENSORS_NAME} instead. {SAFETENSORS_ADVICE}"
        ) from None
    try:
        loaded = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # noqa: BLE001  (every failure means "not a safe weights file")
        # Not chained: torch's own message suggests weights_only=False, i.e. running the file's code.
        raise CheckpointError(_unsafe_pickle_message(path, error)) from None
    if not isinstance(loaded, Mapping) or not all(
        isinstance(key, str) and isinstance(value, torch.Tensor) for key, value in loaded.items()
    ):
        raise CheckpointError(
            f"{path} holds a {type(loaded).__name__}, not a state dict (a mapping of tensor names to tensors). "
            f"{SAFETENSORS_ADVICE}"
        )
    return {
        key: loaded[key].float().numpy() if loaded[key].is_floating_point() else loaded[key].numpy()
        for key in _wanted_keys(path, set(loaded), keys)
    }


def _wanted_keys(path: Path, available: set[str], keys: list[str] | None) -> list[str]:
    """The tensors to read from one weights file: all of them, or those its index assigns to it."""
    if keys is None:
        return sorted(available)
    absent = [key for key in keys if key not in available]
    if absent:
        raise CheckpointError(
            f"{path} lacks {len(absent)} tensor(s) its index assigns to it ({_first_few(absent)}); the shard does "
            "not match its index. Download the checkpoint again."
        )
    return keys


def _unsafe_pickle_message(path: Path, error: BaseException) -> str:
    text = str(error)
    blocked = re.search(r"GLOBAL ([\w.]+)", text)
    if blocked:
        reason = (
            f"it asks to run `{blocked.group(1)}`, which a weights file never needs: it may be malicious. "
            "It was refused before anything in it ran"
        )
    elif isinstance(error, pickle.UnpicklingError) or "weights_only" in text:
        reason = "it holds pickle data other than tensors, or is corrupt. It was refused before anything in it ran"
    else:
        reason = f"it is truncated or corrupt ({text.split('. ')[0].strip()})"
    return f"{path} is not a safe weights-only PyTorch checkpoint: {reason}. {SAFETENSORS_ADVICE}"


# -- .keras files ---------------------------------------------------------------------------
KERAS_WEIGHT_MEMBERS = ("model.weights.h5", "model.weights.npz")
# Keras' summary when restoring weights or assets failed; group 1 is the first object's error.
_KERAS_LOADING_FAILURE = re.compile(
    r"A total of \d+ objects could not be loaded\. Example error message for object .*?:\n\n(.*?)"
    r"\n\nList of objects that could not be loaded",
    re.DOTALL,
)


def load_keras_model(path: str | os.PathLike) -> Any:
    """``keras.models.load_model(path)`` after checking that ``path`` is a whole ``.keras`` archive.

    Every way the file can be wrong (missing, a folder, another format, truncated, not a zip,
    no or invalid ``config.json``, damaged weights) raises `CheckpointError` (or
    `FileNotFoundError`) naming the file and what to pass instead.
    """

    import keras  # on first use: the tokenizer reads checkpoint files without Keras

    path = Path(path)
    _check_keras_archive(path)
    try:
        return keras.models.load_model(path)
    except CheckpointError:
        raise
    except (OSError, EOFError, zipfile.BadZipFile, zlib.error) as error:
        raise CheckpointError(
            f"{path} is damaged: its weights could not be read ({type(error).__name__}: {error}). "
            "Restore the file from a backup or save the model again."
        ) from error
    except ValueError as error:
        failure = _KERAS_LOADING_FAILURE.match(str(error))
        if failure is None:
            if type(error) is ValueError:  # the config's own complaint (ours or Keras'): say which file
                raise CheckpointError(f"{path}: {error}") from error
            raise
        detail = " ".join(failure.group(1).split())
        if "variables" in detail and "during loading" in detail:
            raise WeightsDoNotFitError(path, detail) from error
        raise CheckpointError(f"{path} could not be loaded: {detail}") from error
    except (TypeError, KeyError, AttributeError, IndexError) as error:
        if isinstance(error, TypeError) and type(error) is not TypeError:
            raise
        # Keras' words for a config naming a class it cannot find or build, or lacking what it needs.
        raise CheckpointError(
            f"{path} describes a model this installation cannot rebuild ({type(error).__name__}: {error}). Was it "
            "saved by another library, or edited? Load it where it was made, or save the model again."
        ) from error


def _check_keras_archive(path: Path) -> None:

    if path.is_dir():
        if (path / "saved_model.pb").is_file():
            raise CheckpointError(
                f"{os.fspath(path)!r} is a TensorFlow SavedModel export, made for serving "
                "(TensorFlow Serving, tf.saved_model.load); it cannot be loaded as a task model. Pass the .keras "
                "file it was exported from (the one given to `distilbert-heads export --model`)."
            )
        if (path / CONFIG_NAME).is_file():
            raise CheckpointError(
                f"{os.fspath(path)!r} is a folder (a Hugging Face checkpoint?), not a .keras file. Convert it first: "
                f"`distilbert-heads convert {os.fspath(path)} --task <task> --out model.keras`."
            )
        raise CheckpointError(
            f"{os.fspath(path)!r} is a folder, not a .keras file; pass the path of a file written by model.save(...)."
        )
    if not path.is_file():
        raise FileNotFoundError(
            f"No model file at {os.fspath(path)!r}. Pass the path of a .keras file written by model.save(...) "
            "(or `distilbert-heads train ... --out model.keras`)."
        )
    if path.suffix != ".keras":
        raise CheckpointError(
            f"{os.fspath(path)!r} is not a .keras file; pass a model saved with model.save('name.keras') "
            "(legacy .h5 and other formats are not read); for a Hugging Face checkpoint directory, convert it "
            "first (`distilbert-heads convert`)."
        )
    damaged = (
        f"{os.fspath(path)!r} is not a complete .keras file: a .keras model is a zip archive, and this one is "
        "truncated or another kind of file"
    )
    fix = "Restore it from a backup or save the model again."
    if not zipfile.is_zipfile(path):
        raise CheckpointError(f"{damaged}. {fix}")
    try:
        with zipfile.ZipFile(path) as archive:
            infos = archive.infolist()
            members = {info.filename: info for info in infos}
            if len(members) != len(infos):
                twice = sorted(name for name, count in Counter(info.filename for info in infos).items() if count > 1)
                raise CheckpointError(
                    f"{damaged}: it holds {', '.join(twice)} more than once, so which copy is the model is ambiguous "
                    f"(Keras never writes that; the file was edited or tampered with). {fix}"
                )
            if CONFIG_NAME not in members:
                raise CheckpointError(f"{damaged}: it has no {CONFIG_NAME}. {fix}")
            if not any(name in members for name in KERAS_WEIGHT_MEMBERS):
                raise CheckpointError(f"{damaged}: it has no weights ({KERAS_WEIGHT_MEMBERS[0]}). {fix}")
            if members[CONFIG_NAME].file_size > MAX_JSON_BYTES:
                raise CheckpointError(
                    f"{CONFIG_NAME} inside {os.fspath(path)!r} unpacks to {members[CONFIG_NAME].file_size:,} bytes, "
                    f"too large for a model config (at most {MAX_JSON_BYTES:,}). {fix}"
                )
            data = archive.read(CONFIG_NAME)
    except (zipfile.BadZipFile, zlib.error, OSError, EOFError) as error:
        raise CheckpointError(f"{damaged} ({error}). {fix}") from None
    config = parse_json(data, f"{CONFIG_NAME} inside {os.fspath(path)!r}", "a Keras model config")
    if not isinstance(config, dict):
        raise CheckpointError(
            f"{CONFIG_NAME} inside {os.fspath(path)!r} holds a JSON {type(config).__name__}, not the object Keras "
            f"writes. {fix}"
        )
    if not isinstance(config.get("class_name"), str) or not isinstance(config.get("config"), dict):
        raise CheckpointError(
            f'{CONFIG_NAME} inside {os.fspath(path)!r} is not a Keras model config: it lacks "class_name" or its '
            f'"config" object. {fix}'
        )


def _first_few(keys: list[str], count: int = 5) -> str:
    shown = ", ".join(keys[:count])
    return shown + (f", ... ({len(keys)} in all)" if len(keys) > count else "")


def _without_prefix(keys: Iterator[str] | Mapping[str, Any], prefix: str, source: str) -> dict[str, str]:
    """Key without ``prefix`` -> key as stored; a weight stored both with and without it is an error."""
    names: dict[str, str] = {}
    for key in keys:
        name = key.removeprefix(prefix)
        if name in names:
            raise CheckpointError(
                f"{source} holds {name!r} twice, as {names[name]!r} and {key!r}, so which one is the encoder's "
                "is ambiguous. Remove one of them (re-save the checkpoint from the model it belongs to)."
            )
        names[name] = key
    return names


def _normalize_keys(state: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Rename legacy LayerNorm ``gamma``/``beta`` keys to ``weight``/``bias``; cast floats to float32."""
    normalized = {}
    for key, value in state.items():
        for old, new in LEGACY_SUFFIXES.items():
            if key.endswith(old):
                key = key[: -len(old)] + new
        array = np.asarray(value)
        if array.dtype.kind == "f" and array.dtype != np.float32:
            array = array.astype(np.float32)
        normalized[key] = array
    return normalized


# -- BERT and layer maps ----------------------------------------------------------------------
@dataclass(frozen=True)
class EncoderState:
    """A checkpoint's weights under DistilBertModel key names, and what getting there folded and dropped.

    ``head_notes`` say, in words, which task-head weights were kept from the heads and why.
    """

    state: dict[str, np.ndarray]
    folded: dict[str, str] = field(default_factory=dict)
    dropped: dict[str, str] = field(default_factory=dict)
    layers: list[int] | None = None
    head_notes: list[str] = field(default_factory=list)


def to_distilbert_state(
    state: Mapping[str, np.ndarray],
    hf_config: Mapping[str, Any],
    *,
    source: str,
    layers: Sequence[int] | None = None,
) -> EncoderState:
    """``state`` under DistilBertModel key names, keeping checkpoint ``layers`` (default all) in that order.

    A DistilBERT checkpoint keeps its names (and its ``distilbert.`` prefix); a BERT one
    (``config.json`` ``model_type: "bert"``) is converted by `bert_to_distilbert`. Layers not in
    ``layers`` are listed in ``dropped``; the kept ones are renumbered 0, 1, ... .
    """
    if hf_model_type(dict(hf_config), source) == "bert":
        converted = bert_to_distilbert(state, hf_config, source=source)
    else:
        converted = EncoderState(state=dict(state))
    if layers is None:
        return converted
    present = sorted(
        {int(match.group(2)) for key in converted.state if (match := _DISTILBERT_LAYER_KEY.fullmatch(key))}
    )
    layers = check_layer_map(layers, len(present), source)
    new_index = {old: new for new, old in enumerate(layers)}
    kept: dict[str, np.ndarray] = {}
    dropped = dict(converted.dropped)
    for key, value in converted.state.items():
        match = _DISTILBERT_LAYER_KEY.fullmatch(key)
        if match is None:
            kept[key] = value
        elif int(match.group(2)) in new_index:
            kept[f"{match.group(1)}{new_index[int(match.group(2))]}.{match.group(3)}"] = value
        else:
            dropped[key] = f"checkpoint layer {match.group(2)} is not in the layer map {layers}"
    return EncoderState(kept, dict(converted.folded), dropped, layers, list(converted.head_notes))


def check_layer_map(layers: Sequence[int], available: int, source: str) -> list[int]:
    """``layers`` as a list, checked: non-empty whole numbers in ``0..available-1``, each once."""
    fix = f"Pass checkpoint layer indices from 0 to {available - 1}, each at most once, e.g. layers=[0, 2, 4]."
    if isinstance(layers, (str, bytes)) or not isinstance(layers, Sequence):
        raise ValueError(f"layers must be a list of checkpoint layer indices, got {layers!r}. {fix}")
    layers = list(layers)
    if not layers:
        raise ValueError(
            f"layers is empty: the encoder needs at least one of the {available} layers of {source}. {fix}"
        )
    not_int = [layer for layer in layers if isinstance(layer, bool) or not isinstance(layer, (int, np.integer))]
    if not_int:
        raise ValueError(f"layers holds {not_int}, which are not layer indices. {fix}")
    outside = [int(layer) for layer in layers if not 0 <= layer < available]
    if outside:
        raise ValueError(
            f"layers {outside} out of range: {source} has {available} layers (0 to {available - 1}). {fix}"
        )
    twice = sorted({int(layer) for layer in layers if layers.count(layer) > 1})
    if twice:
        raise ValueError(
            f"layers names {twice} more than once; each checkpoint layer can become one encoder layer. {fix}"
        )
    return [int(layer) for layer in layers]


def bert_to_distilbert(state: Mapping[str, np.ndarray], hf_config: Mapping[str, Any], *, source: str) -> EncoderState:
    """A BERT state dict (``BertModel`` or ``BertFor*``, keys with or without ``bert.``) in DistilBERT names.

    Token-type row 0 is added into the position table (`LoadReport.folded`); the other rows, the
    pooler, the masked-LM and next-sentence heads, buffers, and a classifier that reads the pooler
    are dropped with their reason (`LoadReport.dropped`). Heads on the token vectors
    (``classifier`` of ``BertForTokenClassification``, ``qa_outputs``) keep their names. A BERT
    weight inside the encoder that has no DistilBERT place (cross-attention, ...) is an error.
    """
    names = _without_prefix(state, BERT_PREFIX, source)
    architectures = [str(name) for name in hf_config.get("architectures") or []]
    pooled = any(name.startswith("pooler.") for name in names) or bool(BERT_POOLED_ARCHITECTURES & set(architectures))
    converted: dict[str, np.ndarray] = {}
    folded: dict[str, str] = {}
    dropped: dict[str, str] = {}
    head_notes: list[str] = []
    for name, key in names.items():
        layer_key = _BERT_LAYER_KEY.fullmatch(name)
        reason = next((why for prefix, why in BERT_DROPPED.items() if name.startswith(prefix)), None)
        if name in BERT_EMBEDDING_NAMES:
            converted[name] = state[key]
        elif name in (BERT_POSITIONS, BERT_TOKEN_TYPES):
            continue  # folded below
        elif layer_key is not None and layer_key.group(2) in BERT_LAYER_NAMES:
            index, module, part = layer_key.groups()
            converted[f"transformer.layer.{index}.{BERT_LAYER_NAMES[module]}.{part}"] = state[key]
        elif reason is not None:
            dropped[key] = reason
            if name.startswith(BERT_MLM_PREFIX):
                converted[name] = state[key]  # kept for the masked-LM head, under BERT's names
        elif name.startswith("classifier.") and pooled:
            dropped[key] = (
                f"the classifier of {' / '.join(architectures) or 'this BERT'} reads BERT's pooler ([CLS] through "
                "dense + tanh), which DistilBERT has not: its weights would be wrong on the encoder's output"
            )
            if name == "classifier.weight":
                head_notes.append(
                    f"its classifier ({np.shape(state[key])[0]} outputs) sits on BERT's pooler, which DistilBERT "
                    "has not, so it was not loaded"
                )
        elif name.startswith(("embeddings.", "encoder.")):
            raise CheckpointError(
                f"{source} has BERT encoder weight {key!r}, which has no place in DistilBERT's encoder (it "
                "belongs to a BERT variant with cross-attention, relative positions or other extra parts); only "
                "plain BERT encoders (BertModel, BertFor*) convert. Use such a checkpoint."
            )
        else:
            converted[name] = state[key]  # a head on the token vectors (or unknown: reported as unused)
    positions_key, types_key = names.get(BERT_POSITIONS), names.get(BERT_TOKEN_TYPES)
    if positions_key is not None and types_key is None:
        raise CheckpointError(
            f"{source} lacks {BERT_TOKEN_TYPES}, which BERT adds to every position; without it the position "
            "table would be wrong. Check that the checkpoint is complete (every shard, the right folder)."
        )
    if positions_key is not None and types_key is not None:
        positions, types = state[positions_key], state[types_key]
        if positions.dtype.kind != "f" or types.dtype.kind != "f":
            raise CheckpointError(
                f"{source} stores {positions_key} as {positions.dtype} and {types_key} as {types.dtype}; weights "
                "are floating-point, so the file is corrupt or not a model checkpoint. Use the original checkpoint."
            )
        if types.ndim != 2 or positions.ndim != 2 or types.shape[1] != positions.shape[1] or not len(types):
            raise CheckpointError(
                f"{types_key} in {source} has shape {tuple(types.shape)}, which cannot be added to the position "
                f"table {positions_key} of shape {tuple(positions.shape)} (expected (type_vocab_size, "
                f"{positions.shape[-1]})). Use the checkpoint's original weights."
            )
        converted[BERT_POSITIONS] = positions + types[0]
        folded[f"{types_key}[0]"] = BERT_POSITIONS
        if len(types) > 1:
            dropped[f"{types_key}[1:{len(types)}]"] = (
                "token types other than 0: DistilBERT has no token types, and inputs here are always type 0"
            )
    elif types_key is not None:
        dropped[types_key] = f"the checkpoint has no {BERT_POSITIONS} to fold token type 0 into"
    return EncoderState(converted, folded, dropped, None, head_notes)


# -- the name map -----------------------------------------------------------------------------
def encoder_weight_map(encoder: DistilBERT) -> Iterator[tuple[str, Any, bool]]:
    """Yield ``(hf_key, keras_variable, transpose)`` for every encoder weight."""
    embeddings = encoder.embeddings
    yield "embeddings.word_embeddings.weight", embeddings.word_embeddings.embeddings, False
    yield "embeddings.position_embeddings.weight", embeddings.position_embeddings.embeddings, False
    yield from _layer_norm("embeddings.LayerNorm", embeddings.layer_norm)
    for index, block in enumerate(encoder.transformer_layers):
        prefix = f"transformer.layer.{index}"
        for name in ("q_lin", "k_lin", "v_lin", "out_lin"):
            yield from _dense(f"{prefix}.attention.{name}", getattr(block.attention, name))
        yield from _layer_norm(f"{prefix}.sa_layer_norm", block.sa_layer_norm)
        yield from _dense(f"{prefix}.ffn.lin1", block.ffn.lin1)
        yield from _dense(f"{prefix}.ffn.lin2", block.ffn.lin2)
        yield from _layer_norm(f"{prefix}.output_layer_norm", block.output_layer_norm)


def _dense(prefix: str, layer: Any) -> Iterator[tuple[str, Any, bool]]:
    yield f"{prefix}.weight", layer.kernel, True
    yield f"{prefix}.bias", layer.bias, False


def _layer_norm(prefix: str, layer: Any) -> Iterator[tuple[str, Any, bool]]:
    yield f"{prefix}.weight", layer.gamma, False
    yield f"{prefix}.bias", layer.beta, False


def encoder_state_dict(encoder: DistilBERT) -> dict[str, np.ndarray]:
    """The encoder's weights under Hugging Face ``DistilBertModel`` key names (no prefix)."""
    import keras  # on first use: the tokenizer reads checkpoint files without Keras

    state = {}
    for key, variable, transpose in encoder_weight_map(encoder):
        array = np.asarray(keras.ops.convert_to_numpy(variable), dtype=np.float32)
        state[key] = np.ascontiguousarray(array.T if transpose else array)
    return state


def load_encoder_weights(
    encoder: DistilBERT,
    state: Mapping[str, np.ndarray],
    source: str,
    allow_partial: bool = False,
    vocab_resized: bool = False,
) -> LoadReport:
    """Copy an encoder state dict into ``encoder``; report what was loaded, missing, unused, skipped.

    Keys may carry the ``distilbert.`` prefix of task and masked-LM checkpoints. When the caller
    asked for another vocabulary size (``vocab_resized``), a word embedding of the checkpoint's
    size is skipped with one warning; otherwise, as any other shape mismatch, it is an error: the
    checkpoint does not fit its own config. Encoder weights the checkpoint lacks are an error too
    (they would stay random), unless ``allow_partial`` asks for a deliberate partial load; so are
    encoder weights the config has no place for (layers past ``num_layers``), a weight stored
    both with and without the prefix, and integer or boolean values where weights belong.
    """
    report = LoadReport(source=source)
    available = _without_prefix(state, ENCODER_PREFIX, source)
    expected = [hf_key for hf_key, _, _ in encoder_weight_map(encoder)]
    surplus = [key for short, key in available.items() if _ENCODER_WEIGHT.match(short) and short not in expected]
    if surplus:
        raise CheckpointError(
            f"{source} has encoder weights this configuration has no place for ({_first_few(sorted(surplus))}): "
            f"the configuration has num_layers={encoder.config.num_layers}, but the weights are those of a larger "
            "encoder. Make num_layers (n_layers in config.json) match the weights: restore the checkpoint's "
            "original config.json, or drop a num_layers override."
        )
    not_float = [
        f"{key} ({np.asarray(state[key]).dtype})"
        for short, key in available.items()
        if short in expected and np.asarray(state[key]).dtype.kind != "f"
    ]
    if not_float:
        raise CheckpointError(
            f"{source} stores encoder weights as non-floating-point values ({_first_few(not_float)}); weights are "
            "float32, float16 or bfloat16, so the file is corrupt or not a model checkpoint. Use the original "
            "checkpoint."
        )
    missing = [hf_key for hf_key in expected if hf_key not in available]
    if missing and not allow_partial:
        raise CheckpointError(
            f"{source} lacks {len(missing)} of the encoder's {len(expected)} weights ({_first_few(missing)}); "
            "loading it would leave them random. Check that the checkpoint is complete (every shard, the right "
            "folder); to load a partial checkpoint on purpose, pass allow_partial=True "
            "(command line: --allow-partial)."
        )
    used = set()
    for hf_key, variable, transpose in encoder_weight_map(encoder):
        original_key = available.get(hf_key)
        if original_key is None:
            report.missing.append(hf_key)
            continue
        used.add(original_key)
        value = state[original_key]
        value = value.T if transpose else value
        if tuple(value.shape) != tuple(variable.shape):
            if hf_key == "embeddings.word_embeddings.weight" and vocab_resized:
                report.skipped.append(hf_key)
                warnings.warn(
                    f"Word embeddings not loaded from {source}: the checkpoint's vocabulary has {value.shape[0]} "
                    f"tokens, this encoder's {variable.shape[0]}. They keep their fresh initialisation; every other "
                    "weight was loaded. Fine-tune before use.",
                    UserWarning,
                    stacklevel=3,
                )
                continue
            raise CheckpointError(
                f"{hf_key} in {source} has shape {tuple(value.shape)} but this encoder expects "
                f"{tuple(variable.shape)}. "
                "The weights do not fit the configuration: load the checkpoint without overriding its sizes, and "
                "check that its config.json is the one saved with these weights."
            )
        variable.assign(value.astype(np.float32))
        report.loaded.append(hf_key)
    report.unused = sorted(
        key
        for key in state
        if key not in used
        and not key.startswith(ENCODER_PREFIX + "embeddings.position_ids")
        and key != "embeddings.position_ids"
    )
    if report.missing:
        logger.warning("Encoder weights missing from %s (left at their initialisation): %s", source, report.missing)
    if report.unused:
        logger.info("Checkpoint keys from %s not used by the encoder: %s", source, report.unused)
    return report


# -- writing ----------------------------------------------------------------------------------
def write_checkpoint(
    directory: str | os.PathLike, state: Mapping[str, np.ndarray], hf_config: Mapping[str, Any]
) -> Path:
    """Write ``config.json`` and ``model.safetensors`` that ``transformers`` loads.

    The folder is written beside ``directory`` and swapped in whole (`atomic.atomic_directory`),
    so a failure or a kill never leaves a config that does not match its weights. Other files
    already in ``directory`` (a tokenizer, a README) are kept.
    """
    from safetensors.numpy import save_file

    directory = Path(directory)
    with atomic.atomic_directory(directory, keep_other_entries=True) as temp:
        with open(temp / CONFIG_NAME, "w", encoding="utf-8") as handle:
            json.dump(dict(hf_config), handle, indent=2, sort_keys=True)
        save_file(
            {key: np.ascontiguousarray(value) for key, value in state.items()},
            str(temp / SAFETENSORS_NAME),
            metadata={"format": "pt"},
        )
    return directory
