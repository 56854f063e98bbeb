"""Hugging Face checkpoints: finding them, reading and writing their weights, and the name map.

The map between our variables and Hugging Face's state-dict keys lives here and nowhere else.
Keys are Hugging Face's own (``transformer.layer.0.attention.q_lin.weight``); an ``nn.Linear``
weight is (out, in), so it is the transpose of a Keras ``Dense`` kernel.
"""

from __future__ import annotations

import json
import logging
import os
import warnings
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from distilbert_heads import atomic

if TYPE_CHECKING:
    from distilbert_heads.encoder import DistilBERT

logger = logging.getLogger("distilbert_heads")

CONFIG_NAME = "config.json"
SAFETENSORS_NAME = "model.safetensors"
TORCH_BIN_NAME = "pytorch_model.bin"
ENCODER_PREFIX = "distilbert."
# Files a hub download needs: config, weights and, for the tokenizer, its vocabulary.
HUB_PATTERNS = ["config.json", "*.safetensors", "pytorch_model.bin", "vocab.txt", "tokenizer.json", "tokenizer_config.json"]
LEGACY_SUFFIXES = {".gamma": ".weight", ".beta": ".bias"}


class CheckpointError(ValueError):
    """A checkpoint that is missing, unreadable or does not fit the model."""


@dataclass
class LoadReport:
    """What loading a state dict did, for logs and for tests."""

    source: str
    loaded: list[str] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)
    unused: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)


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
def read_hf_config(directory: str | os.PathLike) -> dict[str, Any]:
    path = Path(directory) / CONFIG_NAME
    if not path.is_file():
        raise CheckpointError(f"{os.fspath(directory)!r} has no {CONFIG_NAME}; expected a Hugging Face checkpoint directory.")
    with open(path, encoding="utf-8") as handle:
        return json.load(handle)


def read_state_dict(directory: str | os.PathLike) -> dict[str, np.ndarray]:
    """All tensors of the checkpoint as float32/int numpy arrays, under Hugging Face key names."""
    directory = Path(directory)
    safetensors_files = sorted(directory.glob("*.safetensors"))
    if safetensors_files:
        from safetensors.numpy import load_file

        state: dict[str, np.ndarray] = {}
        for file in safetensors_files:
            state.update(load_file(str(file)))
        return _normalize_keys(state)
    if (directory / TORCH_BIN_NAME).is_file():
        try:
            import torch
        except ImportError:
            raise CheckpointError(
                f"{os.fspath(directory)!r} has only {TORCH_BIN_NAME}, which needs torch to read. "
                "Install torch, or convert the checkpoint to model.safetensors."
            ) from None
        tensors = torch.load(directory / TORCH_BIN_NAME, map_location="cpu", weights_only=True)
        return _normalize_keys({key: value.float().numpy() if value.is_floating_point() else value.numpy()
                                for key, value in tensors.items()})
    raise CheckpointError(
        f"{os.fspath(directory)!r} has no weights: expected {SAFETENSORS_NAME} or {TORCH_BIN_NAME}."
    )


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


# -- the name map -----------------------------------------------------------------------------
def encoder_weight_map(encoder: "DistilBERT") -> Iterator[tuple[str, Any, bool]]:
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


def encoder_state_dict(encoder: "DistilBERT") -> dict[str, np.ndarray]:
    """The encoder's weights under Hugging Face ``DistilBertModel`` key names (no prefix)."""
    import keras

    state = {}
    for key, variable, transpose in encoder_weight_map(encoder):
        array = np.asarray(keras.ops.convert_to_numpy(variable), dtype=np.float32)
        state[key] = np.ascontiguousarray(array.T if transpose else array)
    return state


def load_encoder_weights(encoder: "DistilBERT", state: Mapping[str, np.ndarray], source: str) -> LoadReport:
    """Copy an encoder state dict into ``encoder``; report what was loaded, missing, unused, skipped.

    Keys may carry the ``distilbert.`` prefix of task and masked-LM checkpoints. A word
    embedding whose vocabulary size differs from the encoder's is skipped with one warning.
    Any other shape mismatch is an error: the checkpoint does not fit this config.
    """
    report = LoadReport(source=source)
    available = {key.removeprefix(ENCODER_PREFIX): key for key in state}
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
            if hf_key == "embeddings.word_embeddings.weight":
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
                f"{hf_key} in {source} has shape {tuple(value.shape)} but this encoder expects {tuple(variable.shape)}. "
                "The checkpoint was made for another configuration: load it without overriding its sizes."
            )
        variable.assign(value.astype(np.float32))
        report.loaded.append(hf_key)
    report.unused = sorted(
        key for key in state if key not in used and not key.startswith(ENCODER_PREFIX + "embeddings.position_ids")
        and key != "embeddings.position_ids"
    )
    if report.missing:
        logger.warning("Encoder weights missing from %s (left at their initialisation): %s", source, report.missing)
    if report.unused:
        logger.info("Checkpoint keys from %s not used by the encoder: %s", source, report.unused)
    return report


# -- writing ----------------------------------------------------------------------------------
def write_checkpoint(directory: str | os.PathLike, state: Mapping[str, np.ndarray], hf_config: Mapping[str, Any]) -> Path:
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
        save_file({key: np.ascontiguousarray(value) for key, value in state.items()},
                  str(temp / SAFETENSORS_NAME), metadata={"format": "pt"})
    return directory
