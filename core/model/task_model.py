"""`DistilBertTaskModel`: one DistilBERT encoder with one or more named task heads.

Outputs are a dict keyed by head name, each a dict of that head's named outputs::

    outputs = model({"input_ids": ids, "attention_mask": mask})
    outputs["sentiment"]["logits"]          # (batch, num_classes)
    outputs["qa"]["start_logits"]           # (batch, length)

Training. Keras' compile machinery is handed a *flat* view of the same outputs, keyed
``"<head>/<output>"`` (``"sentiment/logits"``), because flat dicts are the structure whose
losses, loss weights and metrics Keras matches identically under TensorFlow, JAX and PyTorch
(nested dicts work for losses but not for per-output metrics). The flattening happens in
`compute_loss` / `compute_metrics`, so users write labels in whichever form is natural:
nested like the outputs (``{"qa": {"start_logits": s, "end_logits": e}}``), flat
(``{"qa/start_logits": s, ...}``), or, for a model with a single output, the bare array.
Logged metric names are the flat keys, e.g. ``sentiment/logits_accuracy``.

Saving. `get_config` stores plain data only: the encoder's `DistilBertConfig` fields and,
per head, its name, task type, options (JSON), loss weight and provenance (plugin,
distribution, version, head class, for information). `from_config` rebuilds every head
through `distilbert_heads.registry.get_head(task_type)`, never by importing a module or class
named in the file, so a ``.keras`` file can only instantiate heads of installed, non-blocked
plugins. A head no plugin provides raises `MissingHeadPluginError` saying what to install.

The tokenizer (optional, ``model.tokenizer``) travels as Keras assets: `save_assets` writes its
files under ``assets/tokenizer/`` inside the ``.keras`` archive and `load_assets` reads them
back, so one file is a complete text-in, answers-out model. ``max_length`` (the longest input
the model is meant to see, at most the encoder's ``max_position_embeddings``) is in the config, and
so is ``training_record`` (how `train` made the model: versions, settings, data hashes), or None.
``quantization`` is ``"int8"`` for a model `quantize` ran on (else None): `from_config` quantizes the
rebuilt model the same way, so the saved int8 kernels and their scales load into it."""

from __future__ import annotations

import math
import os
import re
import warnings
from collections.abc import Mapping, Sequence
from typing import Any

import keras
import numpy as np
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from distilbert_heads import atomic
from distilbert_heads.encoder.config import DistilBertConfig
from distilbert_heads.encoder.distilbert import DistilBERT, checked_dtype_policy
from distilbert_heads.encoder.inputs import HostCheckedData, as_input_dict, checked_call_inputs
from distilbert_heads.plugins.head import HeadOptionsError, TaskHead, check_head_outputs, head_code_failed
from distilbert_heads.plugins.input_kinds import input_kind_of
from distilbert_heads.plugins.registry import (
    HeadRecord,
    MissingHeadPluginError,
    get_registry,
    pip_requirement,
)
from distilbert_heads.text.tokenizer import DistilBertTokenizer

# Variable dtypes that suit inference but lose small training updates.
HALF_PRECISION = ("bfloat16", "float16")

# The dtype name that means "the float32 model with its weights quantized to int8" (`with_dtype`).
INT8 = "int8"

# Quantization modes a saved config may name (the ones `from_config` can rebuild and reload).
QUANTIZATION_MODES = (INT8,)


__all__ = [
    "OUTPUT_SEPARATOR",
    "DistilBertTaskModel",
    "MissingHeadPluginError",
    "check_tokenizer_fits_encoder",
    "flat_output_key",
]


CONFIG_FORMAT_VERSION = 1


OUTPUT_SEPARATOR = "/"


# Marker in the compile config: "compiled with the heads' default losses and metrics".
_DEFAULTS_MARKER = "distilbert_heads_head_defaults"


# Marker in the compile config: its loss_weights are per output, before the heads' loss_weight.
_OUTPUT_WEIGHTS_MARKER = "distilbert_heads_output_loss_weights"


_HEAD_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


# Subdirectory of the model's assets directory that holds the tokenizer's files.
TOKENIZER_ASSETS_DIR = "tokenizer"


def flat_output_key(head_name: str, output_name: str) -> str:
    """The key Keras' compile machinery sees for one head output: ``"<head>/<output>"``."""
    return f"{head_name}{OUTPUT_SEPARATOR}{output_name}"


class _Provenance(BaseModel):
    model_config = ConfigDict(extra="ignore")

    plugin: str | None = None
    distribution: str | None = None
    version: str | None = None
    head_class: str | None = None


class _SavedHead(BaseModel):
    """One head as stored in the model config: plain, validated data."""

    model_config = ConfigDict(extra="ignore")

    name: str = Field(pattern=_HEAD_NAME.pattern)
    task_type: str
    options: dict[str, Any] = Field(default_factory=dict)
    loss_weight: float = Field(default=1.0, ge=0.0)
    trainable: bool = True
    provenance: _Provenance = Field(default_factory=_Provenance)


# The batch the model is built on: batch and length differ, so a head's outputs show which axis is which.
_DUMMY_BATCH, _DUMMY_LENGTH = 2, 3


def _dummy_inputs(rows_per_example: int = 1) -> dict[str, np.ndarray]:
    shape = (_DUMMY_BATCH * rows_per_example, _DUMMY_LENGTH)
    return {"input_ids": np.zeros(shape, dtype="int32"), "attention_mask": np.ones(shape, dtype="int32")}


def _stacked_rows(head: TaskHead) -> int:
    """N when the head's input kind feeds it N encoder rows per example as (B, N, L) inputs, else 1."""
    try:
        rows = input_kind_of(head).rows_per_example
    except ValueError:
        return 1  # an unknown kind is reported where inputs are made (pipeline, training), not here
    return rows if isinstance(rows, int) and rows > 1 else 1


@keras.saving.register_keras_serializable(package="distilbert_heads")
class DistilBertTaskModel(HostCheckedData, keras.Model):
    """A DistilBERT encoder plus named task heads; outputs ``{head_name: {output_name: tensor}}``.

    Inputs are ``(batch, sequence_length)`` rows, or ``(batch, N, sequence_length)`` for heads
    whose input kind packs N encoder rows per example (multiple choice, pairs of texts to
    embed): those rows run through the encoder as ``batch * N`` rows and the heads get hidden
    states ``(batch, N, sequence_length, hidden)`` and the mask ``(batch, N, sequence_length)``.

    Build it with `distilbert_heads.create_distilbert_with_head(s)`; construct it directly
    only with already-made parts:

    Args:
        encoder: the `DistilBERT` encoder.
        heads: the heads, each a `TaskHead` whose layer ``name`` is its head name (a Python
            identifier, unique in the model).
        loss_weights: head name -> weight of that head's losses (default 1.0 each).
        provenance: head name -> ``{"plugin", "distribution", "version"}`` of the plugin that
            provided the head; stored in the config and used in error messages on load.
        tokenizer: the `DistilBertTokenizer` that makes this model's inputs (optional); saved
            inside the ``.keras`` file as assets and restored by ``keras.models.load_model``.
        max_length: the longest input, in tokens, pipelines feed the model (default: the
            encoder's ``max_position_embeddings``); stored in the config.
        training_record: how the model was made (JSON data; `distilbert_heads.training.run_record`),
            set by ``train``; stored in the config, None for a model not trained by ``train``.
    """

    def __init__(
        self,
        encoder: DistilBERT,
        heads: Sequence[TaskHead],
        *,
        loss_weights: Mapping[str, float] | None = None,
        provenance: Mapping[str, Mapping[str, Any]] | None = None,
        tokenizer: DistilBertTokenizer | None = None,
        max_length: int | None = None,
        training_record: Mapping[str, Any] | None = None,
        **kwargs: Any,
    ) -> None:
        if kwargs.get("name") is None:
            kwargs["name"] = "distilbert_task_model"
        super().__init__(**kwargs)
        if not isinstance(encoder, DistilBERT):
            raise TypeError(f"encoder must be a distilbert_heads.DistilBERT, got {type(encoder).__name__}")
        heads = list(heads)
        if not heads:
            raise ValueError("A DistilBertTaskModel needs at least one head; got none.")
        seen: set[str] = set()
        for head in heads:
            if not isinstance(head, TaskHead):
                raise TypeError(
                    f"Every head must be a distilbert_heads.TaskHead, got {type(head).__name__} ({head!r})."
                )
            if not _HEAD_NAME.match(head.name):
                raise ValueError(
                    f"Head name {head.name!r} must be a Python identifier (letters, digits, '_'), "
                    "because outputs, labels and saved weights are keyed by it."
                )
            if head.name in seen:
                raise ValueError(
                    f"Two heads are named {head.name!r}; head names key the outputs and must be unique. "
                    "Give each head its own name (NLPTaskConfig(name=...) or name=...)."
                )
            if head.hidden_size != encoder.config.hidden_size:
                raise ValueError(
                    f"Head {head.name!r} was built for hidden_size={head.hidden_size} but the encoder's "
                    f"hidden_size is {encoder.config.hidden_size}; build the head with the encoder's size."
                )
            seen.add(head.name)
        loss_weights = dict(loss_weights or {})
        unknown = set(loss_weights) - seen
        if unknown:
            raise ValueError(f"loss_weights names unknown heads {sorted(unknown)}; heads are {sorted(seen)}.")
        provenance = dict(provenance or {})

        self.encoder = encoder
        self.heads = {head.name: head for head in heads}
        self.head_loss_weights = {name: float(loss_weights.get(name, 1.0)) for name in self.heads}
        self.head_provenance = {
            name: _Provenance(**{**dict(provenance.get(name, {})), "head_class": _class_path(type(head))}).model_dump()
            for name, head in self.heads.items()
        }
        self.max_length = max_length
        self.training_record = training_record
        self._tokenizer: DistilBertTokenizer | None = None
        self.tokenizer = tokenizer
        self._uses_head_defaults = False
        self._output_loss_weights: dict[str, Any] | None = None  # compile()'s loss_weights, flat
        self._head_output_names: dict[str, tuple[str, ...]] = {}
        for name, head in self.heads.items():
            try:
                head.attach_encoder(encoder)
            except Exception as error:
                raise head_code_failed(
                    head, self.head_plugin(name), "attach_encoder", error, "while the model was built"
                ) from error
        # Build now (a forward pass on a tiny dummy batch), so every weight exists before
        # checkpoints or `.keras` files load into it and `load_model` restores them all.
        self.build()

    # -- building and the forward pass -----------------------------------------------------
    def build(self, input_shape: Any = None) -> None:
        if self.built and self._head_output_names:
            return
        outputs = {}
        for name, head in self.heads.items():
            plugin = self.head_plugin(name)
            rows = _stacked_rows(head)
            encoded = self.encoder(_dummy_inputs(rows), training=False)
            hidden_states, attention_mask = encoded["last_hidden_state"], encoded["attention_mask"]
            if rows > 1:
                hidden_states = keras.ops.reshape(hidden_states, (_DUMMY_BATCH, rows, _DUMMY_LENGTH, -1))
                attention_mask = keras.ops.reshape(attention_mask, (_DUMMY_BATCH, rows, _DUMMY_LENGTH))
            try:
                outputs[name] = head(hidden_states, attention_mask, training=False)
            except Exception as error:
                raise head_code_failed(
                    head,
                    plugin,
                    "call",
                    error,
                    f"on a dummy batch (hidden states of shape {tuple(hidden_states.shape)}, attention mask "
                    f"{tuple(attention_mask.shape)}) while the model was built",
                ) from error
            check_head_outputs(head, outputs[name], batch_size=_DUMMY_BATCH, plugin=plugin)
        self._head_output_names = {name: tuple(head_outputs) for name, head_outputs in outputs.items()}
        self.built = True

    @property
    def max_length(self) -> int:
        """The longest input, in tokens, pipelines feed the model; checked by `check_max_length`."""
        return self._max_length

    @max_length.setter
    def max_length(self, value: int | None) -> None:
        self._max_length = check_max_length(value, self.encoder.config)

    @property
    def training_record(self) -> dict[str, Any] | None:
        """How this model was made (versions, settings, data files and their SHA-256), or None; in the config."""
        return self._training_record

    @training_record.setter
    def training_record(self, record: Mapping[str, Any] | None) -> None:
        if record is not None and not isinstance(record, Mapping):
            raise ValueError(
                f"training_record must be a mapping of plain JSON data (or None), got {type(record).__name__}. "
                "Was the .keras file edited? Restore it or save the model again."
            )
        self._training_record = None if record is None else dict(record)

    def select_head(self, name: str | None = None) -> tuple[str, TaskHead]:
        """``(name, head)`` of the head called ``name``, or of the only head when ``name`` is None.

        The one place that chooses a head for pipelines, evaluation and the command line.
        """
        names = list(self.heads)
        described = ", ".join(f"{key!r} ({self.heads[key].task_type})" for key in names)
        if name is None:
            if len(names) == 1:
                return names[0], self.heads[names[0]]
            raise ValueError(
                f"This model has {len(names)} heads: {described}. Say which one answers: head='<name>' "
                f"(--head on the command line), e.g. head={names[0]!r}."
            )
        if name not in self.heads:
            raise ValueError(f"The model has no head named {name!r}; its heads are {described}.")
        return name, self.heads[name]

    def head_plugin(self, name: str) -> str:
        """Where head ``name`` came from, for messages: ``plugin (distribution version)``, what is known of it."""
        provenance = self.head_provenance[name]
        if not provenance.get("plugin"):
            return "unknown"
        release = " ".join(part for part in (provenance.get("distribution"), provenance.get("version")) if part)
        return provenance["plugin"] + (f" ({release})" if release else "")

    def call(self, inputs: Any, training: bool | None = None) -> dict[str, dict[str, Any]]:
        return self.call_with_hidden_states(inputs, training=training)[0]

    def call_with_hidden_states(
        self, inputs: Any, training: bool | None = None
    ) -> tuple[dict[str, dict[str, Any]], Any, Any]:
        """``(outputs, last_hidden_state, attention_mask)`` of one forward pass: what `call` returns plus the
        encoder's output the heads read (rows as the encoder ran them), for distillation's hidden-state loss."""
        inputs = as_input_dict(inputs)
        stacked = len(inputs["input_ids"].shape) == 3
        if stacked:  # (batch, N, length): the encoder runs batch * N rows
            batch_shape = keras.ops.shape(inputs["input_ids"])
            inputs = {
                key: keras.ops.reshape(value, (-1, batch_shape[2]))
                for key, value in inputs.items()
                if value is not None
            }
        encoded = self.encoder(inputs, training=training)
        hidden_states, attention_mask = encoded["last_hidden_state"], encoded["attention_mask"]
        if stacked:
            hidden_states = keras.ops.reshape(
                hidden_states, (-1, batch_shape[1], batch_shape[2], hidden_states.shape[-1])
            )
            attention_mask = keras.ops.reshape(attention_mask, (-1, batch_shape[1], batch_shape[2]))
        outputs: dict[str, dict[str, Any]] = {}
        for name, head in self.heads.items():
            head_outputs = head(hidden_states, attention_mask, training=training)
            # Checked in full once, at build (check_head_outputs); a dict is all the loop needs.
            outputs[name] = dict(head_outputs) if isinstance(head_outputs, Mapping) else head_outputs
        return outputs, encoded["last_hidden_state"], encoded["attention_mask"]

    def __call__(self, inputs: Any, *args: Any, **kwargs: Any) -> Any:
        # Before Keras' layer machinery, so the ValueError is ours, not wrapped in Keras' text.
        return super().__call__(checked_call_inputs(inputs, self.encoder.config, example_rows=True), *args, **kwargs)

    takes_example_rows = True

    def _input_config(self) -> DistilBertConfig:
        return self.encoder.config

    @property
    def output_keys(self) -> dict[str, tuple[str, ...]]:
        """Head name -> the names of that head's outputs."""
        return dict(self._head_output_names)

    @property
    def flat_output_keys(self) -> list[str]:
        """Every ``"<head>/<output>"`` key, the names Keras' losses and metrics are keyed by."""
        return [flat_output_key(h, o) for h, names in self._head_output_names.items() for o in names]

    def decode(self, outputs: Mapping[str, Mapping[str, Any]], encoding: Any = None) -> dict[str, list[Any]]:
        """Each head's `decode` on its outputs: head name -> one answer per example."""
        return {name: head.decode(outputs[name], encoding) for name, head in self.heads.items()}

    @property
    def quantization(self) -> str | None:
        """``"int8"`` (or another Keras quantization mode) once `quantize` ran, else None; saved in the config."""
        layers = self._flatten_layers(include_self=False)
        modes = {getattr(layer, "quantization_mode", None) for layer in layers} - {None}
        return next(iter(modes)) if len(modes) == 1 else (", ".join(sorted(modes)) or None)

    def quantize(self, mode: str | None = None, config: Any = None, filters: Any = None, **kwargs: Any) -> None:
        """`keras.Model.quantize` on every head and the encoder, refusing what cannot work.

        ``model.quantize("int8")`` stores the Dense and EinsumDense kernels as int8 with one float
        scale per output column (embeddings stay float: the masked-LM head reads them as its
        projector); the encoder's projections then run int8 x int8 -> int32 matmuls
        (`layers.int8_dense_2d`). The mode is saved in the config, so a ``.keras`` file reloads
        quantized. The model must be float32 and not yet quantized: quantize the float32 model
        (``model.with_dtype("float32").quantize("int8")``, or ``with_dtype("int8")``).
        """
        if mode not in QUANTIZATION_MODES:
            raise ValueError(
                f"quantize(mode={mode!r}) is not supported on a DistilBertTaskModel; supported: "
                f"{', '.join(map(repr, QUANTIZATION_MODES))} (the mode a saved model reloads in and the encoder's "
                "int8 matmuls run). Use model.quantize('int8')."
            )
        if self.quantization is not None:
            raise ValueError(
                f"This model is already quantized ({self.quantization}); quantizing twice would "
                "round the rounded weights again. Quantize the float32 model it came from instead."
            )
        if self.dtype_policy.name != "float32":
            raise ValueError(
                f"Only a float32 model can be quantized; this one runs under dtype policy {self.dtype_policy.name!r}. "
                f"Quantize a float32 copy: model.with_dtype('float32').quantize({mode!r}), or "
                f"model.with_dtype({INT8!r}) for int8."
            )
        if filters is not None:
            raise ValueError(
                "quantize(filters=...) is not supported on a DistilBertTaskModel: the saved config records one "
                "mode for the whole model, so a partly quantized model would not reload. Quantize the whole model."
            )
        with warnings.catch_warnings():
            # Keras warns once per layer without weights to quantize (LayerNormalization, Dropout, ...).
            warnings.filterwarnings("ignore", message=r".*does not have a `quantize` method", category=UserWarning)
            super().quantize(mode, config=config, filters=is_matmul_layer, **kwargs)

    def with_dtype(self, dtype: str) -> DistilBertTaskModel:
        """This model under another dtype policy: same heads, weights (cast) and tokenizer.

        The way to serve a model trained in float32 or ``mixed_bfloat16`` with bfloat16 weights:
        ``model.with_dtype("bfloat16")``. Returns ``self`` when the policy is already ``dtype``.
        ``"int8"`` (`INT8`) means a float32 copy with its Dense/EinsumDense kernels quantized to
        int8 (`quantize`), for inference.
        """
        if dtype == INT8:
            if self.quantization == INT8:
                return self
            quantized = self._copy("float32")
            quantized.quantize(INT8)
            return quantized
        policy = checked_dtype_policy(dtype)
        if self.quantization is not None:
            raise ValueError(
                f"This model's weights are quantized to {self.quantization}; it cannot run under dtype "
                f"{policy.name!r}. Load the float32 model it was quantized from and pass dtype={policy.name!r} "
                "to that one instead."
            )
        if policy.name == self.dtype_policy.name:
            return self
        return self._copy(policy.name)

    def _copy(self, policy_name: str) -> DistilBertTaskModel:
        """A new model under ``policy_name`` holding this one's weights (cast) and tokenizer."""
        config = {**self.get_config(), "dtype_policy": policy_name}
        copy = type(self).from_config(config)
        copy.set_weights(self.get_weights())
        copy.tokenizer = self.tokenizer
        return copy

    # -- the tokenizer (saved as Keras assets) ------------------------------------------------
    @property
    def tokenizer(self) -> DistilBertTokenizer | None:
        """The tokenizer that makes this model's inputs, or None; saved inside ``.keras`` files."""
        return self._tokenizer

    @tokenizer.setter
    def tokenizer(self, tokenizer: DistilBertTokenizer | None) -> None:
        if tokenizer is not None:
            if not isinstance(tokenizer, DistilBertTokenizer):
                raise TypeError(
                    f"tokenizer must be a distilbert_heads.tokenizer.DistilBertTokenizer (or None), got "
                    f"{type(tokenizer).__name__}. Build one with DistilBertTokenizer.from_pretrained(dir) or "
                    "DistilBertTokenizer.from_vocab('vocab.txt')."
                )
            check_tokenizer_fits_encoder(tokenizer, self.encoder.config)
        self._tokenizer = tokenizer

    def save_assets(self, dir_path: str) -> None:
        """Keras hook: write the tokenizer (if any) into ``dir_path/tokenizer``."""
        if self._tokenizer is not None:
            self._tokenizer.save_assets(os.path.join(dir_path, TOKENIZER_ASSETS_DIR))

    def load_assets(self, dir_path: str) -> None:
        """Keras hook: restore the tokenizer `save_assets` wrote (a file without one leaves None)."""
        directory = os.path.join(dir_path, TOKENIZER_ASSETS_DIR)
        if os.path.isdir(directory):
            try:
                tokenizer = DistilBertTokenizer.load_assets(directory)
            except ValueError as error:
                # Name the member of the .keras archive, not Keras' temporary extraction folder.
                member = f"assets/{TOKENIZER_ASSETS_DIR}"
                message = str(error).replace(directory, member)
                raise ValueError(f"the tokenizer saved inside it ({member}/) is unusable: {message}") from None
            check_tokenizer_fits_encoder(
                tokenizer, self.encoder.config, source="the tokenizer saved in this .keras file"
            )
            self._tokenizer = tokenizer

    # -- training ----------------------------------------------------------------------------
    def compile(
        self,
        optimizer: Any = "rmsprop",
        loss: Any = None,
        loss_weights: Any = None,
        metrics: Any = None,
        weighted_metrics: Any = None,
        **kwargs: Any,
    ) -> None:
        """`keras.Model.compile`; with ``loss=None`` every head's `default_losses` are used.

        ``metrics`` then default to each head's `default_metrics`. Each output's loss is weighted by
        its head's ``loss_weight`` (`NLPTaskConfig`) times its own weight: the one given in
        ``loss_weights``, else the head's `default_loss_weights`, else 1. ``loss``, ``loss_weights``,
        ``metrics`` and ``weighted_metrics`` may be keyed flat (``"qa/start_logits"``), nested
        (``{"qa": {"start_logits": ...}}``), by head for a single-output head
        (``{"sentiment": loss}``), or be one value for every output.
        """
        if self.dtype_policy.variable_dtype in HALF_PRECISION:
            warnings.warn(
                f"This model stores its weights in {self.dtype_policy.variable_dtype} (dtype policy "
                f"{self.dtype_policy.name!r}), which is meant for inference: training updates smaller than "
                "about 1/256 of a weight are rounded away. To train, build the model with "
                "dtype='mixed_bfloat16' (bfloat16 matmuls, float32 weights).",
                stacklevel=2,
            )
        self._uses_head_defaults = loss is None
        if loss is None:
            loss = {
                flat_output_key(name, output): value
                for name, head in self.heads.items()
                for output, value in self._head_defaults(name, head, "default_losses").items()
            }
            if metrics is None:
                metrics = {
                    flat_output_key(name, output): list(value)
                    for name, head in self.heads.items()
                    for output, value in self._head_defaults(name, head, "default_metrics").items()
                }
        flat_loss = self._flatten_setting(loss, "loss")
        self._output_loss_weights = self._flatten_setting(loss_weights, "loss_weights", restrict_to=flat_loss)
        super().compile(
            optimizer=optimizer,
            loss=flat_loss,
            loss_weights=self._effective_loss_weights(flat_loss, self._output_loss_weights),
            metrics=self._flatten_setting(metrics, "metrics"),
            weighted_metrics=self._flatten_setting(weighted_metrics, "weighted_metrics"),
            **kwargs,
        )
        # The model is always built, so build the optimizer now: a model saved after compile()
        # but before fit() then stores the same optimizer variables that loading creates.
        if self.optimizer is not None and not self.optimizer.built:
            self.optimizer.build(self.trainable_variables)

    def _effective_loss_weights(
        self, flat_loss: Mapping[str, Any], given: Mapping[str, Any] | None
    ) -> dict[str, float]:
        """Per flat output key: its head's ``loss_weight`` times its own weight (``given``, the head's
        `default_loss_weights`, or 1)."""
        weights: dict[str, float] = {}
        for name, head in self.heads.items():
            own = self._head_defaults(name, head, "default_loss_weights")
            own.update(
                {
                    key.split(OUTPUT_SEPARATOR, 1)[1]: value
                    for key, value in (given or {}).items()
                    if key.split(OUTPUT_SEPARATOR, 1)[0] == name
                }
            )
            for output, value in own.items():
                if isinstance(value, bool) or not 0 <= _as_float(value) < math.inf:
                    raise ValueError(
                        f"The loss weight of output {flat_output_key(name, output)!r} (head {name!r}, "
                        f"{type(head).__name__}) is {value!r}; a loss weight is a finite number >= 0 "
                        "(0 leaves that output untrained)."
                    )
            for output in self._head_output_names[name]:
                key = flat_output_key(name, output)
                if key in flat_loss:
                    weights[key] = self.head_loss_weights[name] * float(own.get(output, 1.0))
        return weights

    def _head_defaults(self, name: str, head: TaskHead, method: str) -> dict[str, Any]:
        values = dict(getattr(head, method)() or {})
        unknown = set(values) - set(self._head_output_names[name])
        if unknown:
            raise ValueError(
                f"Head {name!r} ({type(head).__name__}).{method}() names outputs {sorted(unknown)} that its "
                f"call() does not return (it returns {list(self._head_output_names[name])})."
            )
        return values

    def _flatten_setting(self, value: Any, what: str, restrict_to: Mapping[str, Any] | None = None) -> Any:
        """A per-output compile setting as a dict keyed ``"<head>/<output>"`` (None stays None)."""
        if value is None:
            return None
        keys = [k for k in self.flat_output_keys if restrict_to is None or k in restrict_to]
        if not isinstance(value, Mapping):
            return {key: value for key in keys}
        flat = self._flatten_structure(value, what)
        if restrict_to is not None:
            flat = {key: item for key, item in flat.items() if key in restrict_to}
        return flat

    def _flatten_structure(self, value: Mapping[str, Any], what: str) -> dict[str, Any]:
        """Flatten a nested/flat/by-head mapping onto the flat output keys, or explain the mismatch."""
        flat_keys = set(self.flat_output_keys)
        flat: dict[str, Any] = {}
        only_head = next(iter(self.heads)) if len(self.heads) == 1 else None
        for key, item in value.items():
            if key in flat_keys:
                flat[key] = item
            elif key in self.heads and isinstance(item, Mapping):
                for output, inner in item.items():
                    full = flat_output_key(key, output)
                    if full not in flat_keys:
                        raise ValueError(self._key_error(what, full))
                    flat[full] = inner
            elif key in self.heads and len(self._head_output_names[key]) == 1:
                flat[flat_output_key(key, self._head_output_names[key][0])] = item
            elif only_head is not None and flat_output_key(only_head, key) in flat_keys:
                flat[flat_output_key(only_head, key)] = item
            else:
                raise ValueError(self._key_error(what, key))
        return flat

    def _key_error(self, what: str, key: str) -> str:
        return (
            f"{what} has an entry for {key!r}, which is not an output of this model. Outputs are "
            f"{self.flat_output_keys} (or nested: {self.output_keys}); key {what} by those names."
        )

    def _flatten_targets(self, y: Any, what: str) -> Any:
        if y is None:
            return None
        if isinstance(y, Mapping):
            return self._flatten_structure(y, what)
        keys = self.flat_output_keys
        if len(keys) == 1:
            return {keys[0]: y}
        raise ValueError(
            f"This model has several outputs {keys}, so {what} must be a dict keyed by them (or nested by "
            f"head: {self.output_keys}); got a single {type(y).__name__}."
        )

    def _flatten_predictions(self, y_pred: Any) -> Any:
        if isinstance(y_pred, Mapping) and all(isinstance(v, Mapping) for v in y_pred.values()):
            return {flat_output_key(h, o): t for h, outputs in y_pred.items() for o, t in outputs.items()}
        return y_pred

    def compute_loss(
        self, x: Any = None, y: Any = None, y_pred: Any = None, sample_weight: Any = None, training: bool = True
    ) -> Any:
        return super().compute_loss(
            x=x,
            y=self._flatten_targets(y, "labels (y)"),
            y_pred=self._flatten_predictions(y_pred),
            sample_weight=self._flatten_sample_weight(sample_weight),
            training=training,
        )

    def compute_metrics(self, x: Any, y: Any, y_pred: Any, sample_weight: Any = None) -> Any:
        return super().compute_metrics(
            x,
            self._flatten_targets(y, "labels (y)"),
            self._flatten_predictions(y_pred),
            sample_weight=self._flatten_sample_weight(sample_weight),
        )

    def _flatten_sample_weight(self, sample_weight: Any) -> Any:
        if isinstance(sample_weight, Mapping):
            return self._flatten_structure(sample_weight, "sample_weight")
        return sample_weight

    def get_compile_config(self) -> dict[str, Any] | None:
        config = super().get_compile_config()
        if config:
            # Store the per-output weights given to compile(), not Keras' products with the heads'
            # loss_weight (saved with the heads): reloading multiplies them again.
            config["loss_weights"] = None if self._output_loss_weights is None else dict(self._output_loss_weights)
            config[_OUTPUT_WEIGHTS_MARKER] = True
        if config and self._uses_head_defaults:
            # Default losses and metrics are rebuilt from the heads on load: nothing custom
            # needs to be deserialized.
            config = {key: value for key, value in config.items() if key not in {"loss", "metrics", "weighted_metrics"}}
            config[_DEFAULTS_MARKER] = True
        return config

    def compile_from_config(self, config: Mapping[str, Any]) -> None:
        config = dict(config)
        use_defaults = bool(config.pop(_DEFAULTS_MARKER, False))
        output_weights = bool(config.pop(_OUTPUT_WEIGHTS_MARKER, False))
        config = keras.saving.deserialize_keras_object(config)
        if use_defaults:
            for key in ("loss", "metrics"):
                config.pop(key, None)
        if not output_weights and config.get("loss_weights"):
            # Saved by 0.1, whose compile config holds the products with the heads' loss_weight.
            config["loss_weights"] = {
                key: (value / weight if (weight := self.head_loss_weights[key.split(OUTPUT_SEPARATOR)[0]]) else 0.0)
                for key, value in config["loss_weights"].items()
            }
        self.compile(**config)

    # -- serialization -----------------------------------------------------------------------
    def save(self, filepath: Any, overwrite: bool = True, zipped: bool | None = None, **kwargs: Any) -> None:
        """Keras' ``Model.save``, written atomically: a failed or interrupted save leaves the old file intact.

        See `distilbert_heads.atomic` (a leftover ``.<name>.tmp-*`` file after a kill is safe to delete).
        """
        atomic.save_keras_model(super().save, filepath, overwrite=overwrite, zipped=zipped, **kwargs)

    def save_pretrained(self, directory: str | os.PathLike, *, head: str | None = None) -> Any:
        """Write a Hugging Face task checkpoint (config, weights, tokenizer, model card) that
        ``transformers``' matching ``AutoModelFor...`` loads: see `distilbert_heads.serving.hf_checkpoint`.

        A model with several heads writes one: pass ``head=<name>``. Returns the folder's `Path`.
        """
        # serving/ sits above model/ in the import order (it imports this module).
        from distilbert_heads.serving.hf_checkpoint import save_pretrained

        return save_pretrained(self, directory, head=head)

    def push_to_hub(
        self,
        repo_id: str,
        *,
        token: str | None = None,
        private: bool | None = None,
        head: str | None = None,
        commit_message: str | None = None,
    ) -> str:
        """Upload `save_pretrained`'s folder to hub repository ``repo_id`` (needs the ``hub`` extra); the commit
        URL. Without network or login it fails before uploading anything: see `hf_checkpoint.push_to_hub`."""
        # serving/ sits above model/ in the import order (it imports this module).
        from distilbert_heads.serving.hf_checkpoint import push_to_hub

        return push_to_hub(self, repo_id, token=token, private=private, head=head, commit_message=commit_message)

    def get_config(self) -> dict[str, Any]:
        """Plain data only (no serialized Keras objects): see the module docstring."""
        return {
            "name": self.name,
            "trainable": self.trainable,
            "format_version": CONFIG_FORMAT_VERSION,
            "dtype_policy": self.dtype_policy.name,
            "quantization": self.quantization,
            "encoder_name": self.encoder.name,
            "encoder_trainable": self.encoder.trainable,
            "encoder": self.encoder.config.model_dump(mode="json"),
            "max_length": self.max_length,
            "training_record": self.training_record,
            "heads": [
                {
                    "name": name,
                    "task_type": head.task_type,
                    "options": head.options.model_dump(mode="json"),
                    "loss_weight": self.head_loss_weights[name],
                    "trainable": head.trainable,
                    "provenance": dict(self.head_provenance[name]),
                }
                for name, head in self.heads.items()
            ],
        }

    @classmethod
    def from_config(cls, config: dict[str, Any], custom_objects: Any = None) -> DistilBertTaskModel:
        """Rebuild the model; every head comes from `registry.get_head(task_type)`."""
        version = config.get("format_version", CONFIG_FORMAT_VERSION)
        if type(version) is not int or version != CONFIG_FORMAT_VERSION:
            raise ValueError(
                f"This model was saved with config format {version!r} (format_version); this distilbert-heads reads "
                f"format {CONFIG_FORMAT_VERSION}. Install the distilbert-heads version that saved it (or, if the file "
                "was "
                "edited, restore it)."
            )
        edited = "Was the .keras file edited or saved by another library? Restore it or save the model again."
        encoder_fields, head_items = config.get("encoder"), config.get("heads")
        if not isinstance(encoder_fields, Mapping) or not isinstance(head_items, list):
            raise ValueError(
                "The model config is not a DistilBertTaskModel config: 'encoder' must be an object of encoder "
                f"settings and 'heads' a list of heads, got {type(encoder_fields).__name__} and "
                f"{type(head_items).__name__}. {edited}"
            )
        encoder_config = DistilBertConfig.build(**encoder_fields)
        saved_heads = []
        for index, item in enumerate(head_items):
            try:
                saved_heads.append(_SavedHead.model_validate(item))
            except ValidationError as error:
                problems = "; ".join(
                    f"heads[{index}]{''.join(f'.{part}' for part in problem['loc'])}: {problem['msg']} "
                    f"(got {problem['input']!r})"
                    for problem in error.errors()
                )
                raise ValueError(f"The model config's head list is malformed: {problems}. {edited}") from None
        # The policy the model was saved with (e.g. mixed_bfloat16), whatever the global policy is now.
        policy = {"dtype": config["dtype_policy"]} if config.get("dtype_policy") else {}
        encoder = DistilBERT.from_config_model(
            encoder_config, name=str(config.get("encoder_name", "distilbert")), **policy
        )
        encoder.trainable = bool(config.get("encoder_trainable", True))
        heads: list[TaskHead] = []
        provenance: dict[str, dict[str, Any]] = {}
        for saved in saved_heads:
            prov = saved.provenance
            record = get_registry().head_for_saved(
                saved.task_type,
                head_name=saved.name,
                distribution=prov.distribution,
                version=prov.version,
                plugin=prov.plugin,
            )
            saved_with = (prov.distribution, prov.version) if prov.distribution else None
            heads.append(
                make_head(
                    record, encoder_config.hidden_size, saved.options, saved.name, saved_with=saved_with, **policy
                )
            )
            heads[-1].trainable = saved.trainable
            provenance[saved.name] = {
                "plugin": record.plugin,
                "distribution": record.distribution,
                "version": record.version,
            }
        model = cls(
            encoder,
            heads,
            loss_weights={saved.name: saved.loss_weight for saved in saved_heads},
            provenance=provenance,
            max_length=config.get("max_length"),
            training_record=config.get("training_record"),
            name=config.get("name"),
            trainable=bool(config.get("trainable", True)),
            **policy,
        )
        quantization_mode = config.get("quantization")
        if quantization_mode is not None:
            if quantization_mode not in QUANTIZATION_MODES:
                raise ValueError(
                    f"The model config's quantization is {quantization_mode!r}; this distilbert-heads reloads "
                    f"{', '.join(map(repr, QUANTIZATION_MODES))}. {edited}"
                )
            # The saved int8 weights and scales then load into the variables this creates.
            model.quantize(quantization_mode)
        return model


def is_matmul_layer(layer: keras.layers.Layer) -> bool:
    """The layers `DistilBertTaskModel.quantize` quantizes: Dense and EinsumDense (not Embedding)."""
    return isinstance(layer, (keras.layers.Dense, keras.layers.EinsumDense))


def _as_float(value: Any) -> float:
    """``float(value)``, or NaN for what is not a number."""
    try:
        return float(value)
    except (TypeError, ValueError):
        return math.nan


def make_head(
    record: HeadRecord,
    hidden_size: int,
    options: Any,
    name: str,
    *,
    saved_with: tuple[str, str | None] | None = None,
    **kwargs: Any,
) -> TaskHead:
    """``record``'s head class built with these options; a failure names the head and its plugin.

    ``saved_with`` (distribution, version) is what provided the head when a model was saved:
    options the installed version rejects then say which version to install.
    """
    plugin = f"{record.plugin} ({record.distribution} {record.version})"
    saved = f"{saved_with[0]} {saved_with[1] or '(version unknown)'}" if saved_with else None
    try:
        return record.head_class(
            hidden_size=hidden_size, task_type=record.task_type, options=options, name=name, **kwargs
        )
    except HeadOptionsError as error:
        if saved_with is None or saved_with == (record.distribution, record.version):
            raise
        raise HeadOptionsError(
            f"Cannot rebuild head {name!r} as it was saved: {error} It was saved with {saved}; the installed "
            f"{record.distribution} {record.version} takes other options. Install the version that saved it "
            f"(pip install {pip_requirement(*saved_with)}), or retrain the model with this one."
        ) from error
    except Exception as error:
        when = "building it" + (f" from a model saved with {saved}" if saved else "")
        raise head_code_failed((record.head_class, name, record.task_type), plugin, "__init__", error, when) from error


def check_max_length(max_length: Any, encoder_config: DistilBertConfig) -> int:
    """``max_length`` as an int in [3, max_position_embeddings]; None means max_position_embeddings.

    The one check of a row length: the task model's ``max_length`` and a pipeline's own use it.
    """
    limit = encoder_config.max_position_embeddings
    if max_length is None:
        return int(limit)
    if isinstance(max_length, bool) or not isinstance(max_length, (int, np.integer)) or not 3 <= max_length <= limit:
        raise ValueError(
            f"max_length must be an integer from 3 (room for [CLS] x [SEP]) to the encoder's "
            f"max_position_embeddings={limit}, got {max_length!r}."
        )
    return int(max_length)


def check_tokenizer_fits_encoder(
    tokenizer: DistilBertTokenizer, encoder_config: DistilBertConfig, *, source: str = "the tokenizer"
) -> None:
    """Raise `ValueError` unless every id ``tokenizer`` can produce has a row in the encoder's embeddings.

    The one owner of this rule: run whenever a tokenizer is attached to a model (the
    ``tokenizer`` setter, `load_assets` when a ``.keras`` file loads) and by pipelines given
    a tokenizer of their own, so ids past the vocabulary never reach the compiled model.
    """
    largest = max(tokenizer.get_vocab().values())
    vocab_size = encoder_config.vocab_size
    if largest >= vocab_size:
        raise ValueError(
            f"{source[0].upper()}{source[1:]} produces token ids up to {largest} ({tokenizer.vocab_size} tokens), but "
            f"the encoder's vocab_size is {vocab_size} (ids 0..{vocab_size - 1}), so some ids would have no "
            "embedding. Use the tokenizer this model was trained with, or build the model with "
            f"vocab_size={largest + 1} (or more)."
        )


def _class_path(cls: type) -> str:
    return f"{cls.__module__}:{cls.__qualname__}"
