"""`DistilBERT`: the encoder, a Keras 3 model whose forward pass is Hugging Face's.

Read top to bottom: ids and positions are embedded, the padding mask becomes an additive key
bias, ``num_layers`` post-LN transformer blocks run, and the result comes back as a dict with
``last_hidden_state`` and the ``attention_mask`` that heads need (plus ``hidden_states`` on
request). Only `keras.ops` is used, so TensorFlow, JAX and PyTorch backends all run it.
"""

from __future__ import annotations

import os
import reprlib
from collections.abc import Mapping
from pathlib import Path
from typing import Any, ClassVar

import keras
import numpy as np
from keras import ops

from distilbert_heads import atomic
from distilbert_heads.config import PRETRAINED_IDS, VARIANTS, ConfigError, DistilBertConfig
from distilbert_heads.layers import DistilBertEmbeddings, TransformerBlock

INPUT_NAMES = ("input_ids", "attention_mask", "position_ids", "token_type_ids")
# Keyword arguments that belong to the Keras model rather than to the DistilBERT config.
MODEL_KWARGS = ("dtype", "name", "trainable")


class HostCheckedData:
    """Mixin for a `keras.Model` fed DistilBERT inputs: every data entry point checks arrays first.

    ``predict``, ``predict_on_batch``, ``fit`` (and its ``validation_data``), ``evaluate``,
    ``train_on_batch`` and ``test_on_batch`` run `validate_model_data` on the host before Keras'
    compiled step, which would otherwise gather garbage for a bad id or fail with a raw backend
    error. Datasets and generators are not read ahead. A model with ``takes_example_rows`` also
    takes ``(batch, rows per example, sequence_length)`` inputs, checked as the rows they hold.
    """

    takes_example_rows: ClassVar[bool] = False

    def _input_config(self) -> DistilBertConfig:
        raise NotImplementedError

    def _check_data(self, x: Any) -> None:
        validate_model_data(x, self._input_config(), example_rows=self.takes_example_rows)

    def predict(self, x: Any, *args: Any, **kwargs: Any) -> Any:
        """`keras.Model.predict`, after checking array inputs against the encoder config on the host."""
        self._check_data(x)
        return super().predict(x, *args, **kwargs)  # type: ignore[misc]

    def predict_on_batch(self, x: Any) -> Any:
        """`keras.Model.predict_on_batch`, after the same host-side checks as `predict`."""
        self._check_data(x)
        return super().predict_on_batch(x)  # type: ignore[misc]

    def fit(self, x: Any = None, *args: Any, **kwargs: Any) -> Any:
        """`keras.Model.fit`, after the same host-side checks on ``x`` and ``validation_data``'s inputs."""
        self._check_data(x)
        validation = kwargs.get("validation_data")
        if validation is not None:
            self._check_data(validation[0] if isinstance(validation, (tuple, list)) else validation)
        return super().fit(x, *args, **kwargs)  # type: ignore[misc]

    def evaluate(self, x: Any = None, *args: Any, **kwargs: Any) -> Any:
        """`keras.Model.evaluate`, after the same host-side checks as `predict`."""
        self._check_data(x)
        return super().evaluate(x, *args, **kwargs)  # type: ignore[misc]

    def train_on_batch(self, x: Any, *args: Any, **kwargs: Any) -> Any:
        """`keras.Model.train_on_batch`, after the same host-side checks as `predict`."""
        self._check_data(x)
        return super().train_on_batch(x, *args, **kwargs)  # type: ignore[misc]

    def test_on_batch(self, x: Any, *args: Any, **kwargs: Any) -> Any:
        """`keras.Model.test_on_batch`, after the same host-side checks as `predict`."""
        self._check_data(x)
        return super().test_on_batch(x, *args, **kwargs)  # type: ignore[misc]


@keras.saving.register_keras_serializable(package="distilbert_heads")
class DistilBERT(HostCheckedData, keras.Model):
    """The DistilBERT encoder: token ids in, contextual vectors out. No pooler, no task head.

    Construct it from keywords (validated, see `DistilBertConfig`), from a named variant
    (`from_variant`), or from a Hugging Face checkpoint (`from_pretrained`).
    """

    def __init__(
        self,
        vocab_size: int = 30522,
        hidden_size: int = 768,
        num_layers: int = 6,
        num_heads: int = 12,
        intermediate_size: int = 3072,
        hidden_act: str = "gelu",
        dropout_rate: float = 0.1,
        attention_dropout_rate: float = 0.1,
        max_position_embeddings: int = 512,
        sinusoidal_pos_embds: bool = False,
        initializer_range: float = 0.02,
        layer_norm_eps: float = 1e-12,
        pad_token_id: int | None = 0,
        **kwargs: Any,
    ) -> None:
        self.config = DistilBertConfig.build(
            vocab_size=vocab_size,
            hidden_size=hidden_size,
            num_layers=num_layers,
            num_heads=num_heads,
            intermediate_size=intermediate_size,
            hidden_act=hidden_act,
            dropout_rate=dropout_rate,
            attention_dropout_rate=attention_dropout_rate,
            max_position_embeddings=max_position_embeddings,
            sinusoidal_pos_embds=sinusoidal_pos_embds,
            initializer_range=initializer_range,
            layer_norm_eps=layer_norm_eps,
            pad_token_id=pad_token_id,
        )
        kwargs.setdefault("name", "distilbert")
        if kwargs.get("dtype") is not None:
            kwargs["dtype"] = checked_dtype_policy(kwargs["dtype"])
        super().__init__(**kwargs)
        cfg = self.config
        self.embeddings = DistilBertEmbeddings(
            vocab_size=cfg.vocab_size,
            hidden_size=cfg.hidden_size,
            max_position_embeddings=cfg.max_position_embeddings,
            sinusoidal_pos_embds=cfg.sinusoidal_pos_embds,
            initializer_range=cfg.initializer_range,
            layer_norm_eps=cfg.layer_norm_eps,
            dropout_rate=cfg.dropout_rate,
            dtype=self.dtype_policy,
            name="embeddings",
        )
        self.transformer_layers = [
            TransformerBlock(
                hidden_size=cfg.hidden_size,
                num_heads=cfg.num_heads,
                intermediate_size=cfg.intermediate_size,
                hidden_act=cfg.hidden_act,
                dropout_rate=cfg.dropout_rate,
                attention_dropout_rate=cfg.attention_dropout_rate,
                initializer_range=cfg.initializer_range,
                layer_norm_eps=cfg.layer_norm_eps,
                dtype=self.dtype_policy,
                name=f"layer_{index}",
            )
            for index in range(cfg.num_layers)
        ]
        # Weights exist from construction on, so checkpoints load before any call.
        self.build()
        self.load_report: Any = None

    def build(self, input_shape: Any = None) -> None:
        self.embeddings.build()
        for block in self.transformer_layers:
            block.build()
        self.built = True

    @property
    def hidden_size(self) -> int:
        return self.config.hidden_size

    # -- forward ------------------------------------------------------------------------------
    def __call__(self, inputs: Any, *args: Any, **kwargs: Any) -> Any:
        # Checked before Keras' layer machinery, which would wrap our ValueError in its own
        # "Exception encountered when calling ..." text.
        return super().__call__(checked_call_inputs(inputs, self.config), *args, **kwargs)

    def call(
        self,
        inputs: Any,
        training: bool | None = None,
        output_hidden_states: bool = False,
    ) -> dict[str, Any]:
        inputs = as_input_dict(inputs)
        validate_encoder_inputs(inputs, self.config)
        input_ids = inputs["input_ids"]
        batch, length = ops.shape(input_ids)[0], ops.shape(input_ids)[1]

        attention_mask = inputs.get("attention_mask")
        if attention_mask is None:
            attention_mask = ops.ones((batch, length), dtype="int32")
        position_ids = inputs.get("position_ids")
        if position_ids is None:
            position_ids = ops.expand_dims(ops.arange(length, dtype="int32"), 0)

        hidden_states = self.embeddings(input_ids, position_ids, training=training)
        all_hidden_states = [hidden_states]
        for block in self.transformer_layers:
            hidden_states = block(hidden_states, attention_mask, training=training)
            all_hidden_states.append(hidden_states)

        outputs = {"last_hidden_state": hidden_states, "attention_mask": attention_mask}
        if output_hidden_states:
            outputs["hidden_states"] = tuple(all_hidden_states)
        return outputs

    def compute_output_spec(
        self, inputs: Any, training: bool | None = None, output_hidden_states: bool = False
    ) -> dict[str, Any]:
        # Declared rather than traced: tracing with unknown sizes trips backends that substitute
        # placeholder lengths (torch) or symbolic ones (jax) into the length checks.
        inputs = as_input_dict(inputs)
        batch, length = tuple(inputs["input_ids"].shape)[:2]
        hidden = keras.KerasTensor((batch, length, self.config.hidden_size), dtype=self.compute_dtype)
        outputs = {
            "last_hidden_state": hidden,
            "attention_mask": keras.KerasTensor(
                (batch, length), dtype=getattr(inputs.get("attention_mask"), "dtype", None) or "int32"
            ),
        }
        if output_hidden_states:
            outputs["hidden_states"] = tuple(
                keras.KerasTensor(hidden.shape, dtype=hidden.dtype) for _ in range(self.config.num_layers + 1)
            )
        return outputs

    def _input_config(self) -> DistilBertConfig:
        return self.config

    # -- construction -------------------------------------------------------------------------
    @classmethod
    def from_config_model(cls, config: DistilBertConfig, **kwargs: Any) -> DistilBERT:
        return cls(**config.model_dump(), **kwargs)

    @classmethod
    def from_variant(
        cls,
        variant: str,
        pretrained: bool | str | os.PathLike = False,
        *,
        allow_partial: bool = False,
        **overrides: Any,
    ) -> DistilBERT:
        """Build the ``tiny``, ``small`` or ``base`` encoder, optionally with weights.

        ``pretrained``: False for random weights; True for the published checkpoint of the
        variant (only ``base`` has one: ``distilbert/distilbert-base-uncased``); a checkpoint
        directory or hub id; or a ``.keras`` file holding a DistilBERT or a task model.
        ``allow_partial`` as in `from_pretrained`.
        """
        if variant not in VARIANTS:
            raise ConfigError(
                f"Unknown DistilBERT variant {variant!r}; expected one of {sorted(VARIANTS)}. "
                "Pass the sizes as keywords to DistilBERT(...) for a custom shape."
            )
        if pretrained is False or pretrained is None:
            overrides, model_kwargs = _split_model_kwargs(overrides)
            return cls.from_config_model(DistilBertConfig.for_variant(variant, **overrides), **model_kwargs)
        if pretrained is True:
            if variant not in PRETRAINED_IDS:
                raise ValueError(
                    f"No published weights exist for the {variant!r} variant (only for "
                    f"{', '.join(sorted(PRETRAINED_IDS))}). Use pretrained=False for random weights, or "
                    "pretrained='<checkpoint dir or hub id>' for weights you have."
                )
            pretrained = PRETRAINED_IDS[variant]
        source = os.fspath(pretrained)
        if source.endswith(".keras"):
            encoder = cls.from_keras_file(source, **overrides)
        else:
            encoder = cls.from_pretrained(source, allow_partial=allow_partial, **overrides)
        _check_variant_shape(encoder.config, variant, source)
        return encoder

    @classmethod
    def from_pretrained(
        cls, path_or_hub_id: str | os.PathLike, *, allow_partial: bool = False, **overrides: Any
    ) -> DistilBERT:
        """Load a Hugging Face DistilBERT checkpoint (directory or hub id).

        Reads ``config.json`` and exactly the weight files the checkpoint names:
        ``model.safetensors.index.json`` and its shards, else ``model.safetensors``, else
        ``pytorch_model.bin`` (or its index; needs torch). Other files are ignored and listed in
        ``encoder.load_report.ignored_files``. Keys may carry the ``distilbert.`` prefix, so
        base, masked-LM and task checkpoints all give their encoder. ``overrides`` change config
        fields; a different ``vocab_size`` keeps the fresh word embeddings and loads everything
        else. Sizes are checked against `DistilBertConfig`'s limits before anything is allocated.

        Raises `CheckpointError` when an encoder weight is missing (unless ``allow_partial=True``,
        for a deliberate partial load: the missing weights stay random and are listed in
        ``encoder.load_report.missing``), when a tensor holds NaN or infinite values, and for
        unreadable, corrupt or unsafe files.
        """
        from distilbert_heads import checkpoints

        overrides, model_kwargs = _split_model_kwargs(overrides)
        directory = checkpoints.resolve_checkpoint_dir(path_or_hub_id)
        config = DistilBertConfig.from_hf_dict(
            checkpoints.read_hf_config(directory), source=str(directory / checkpoints.CONFIG_NAME), **overrides
        )
        weight_files = checkpoints.find_weight_files(directory)
        state = checkpoints.read_state_dict(directory, weight_files)
        encoder = cls.from_config_model(config, **model_kwargs)
        encoder.load_report = checkpoints.load_encoder_weights(
            encoder,
            state,
            source=str(path_or_hub_id),
            allow_partial=allow_partial,
            vocab_resized="vocab_size" in overrides,
        )
        encoder.load_report.ignored_files = weight_files.ignored
        if weight_files.stray:
            checkpoints.logger.warning(
                "Files in %s that its checkpoint does not name were ignored: %s", directory, weight_files.stray
            )
        return encoder

    @classmethod
    def from_keras_file(cls, path: str | os.PathLike, **overrides: Any) -> DistilBERT:
        """The encoder saved in a ``.keras`` file (a DistilBERT or a task model holding one)."""
        from distilbert_heads import checkpoints

        loaded = checkpoints.load_keras_model(path)
        encoder = loaded if isinstance(loaded, DistilBERT) else getattr(loaded, "encoder", None)
        if not isinstance(encoder, DistilBERT):
            raise ValueError(
                f"{os.fspath(path)!r} holds a {type(loaded).__name__}, which has no DistilBERT encoder; "
                "expected a file saved from DistilBERT or from create_distilbert_with_head(...)."
            )
        if not overrides:
            return encoder
        overrides, model_kwargs = _split_model_kwargs(overrides)
        fresh = cls.from_config_model(
            DistilBertConfig.build(**{**encoder.config.model_dump(), **overrides}), **model_kwargs
        )
        fresh.load_report = checkpoints.load_encoder_weights(
            fresh,
            checkpoints.encoder_state_dict(encoder),
            source=os.fspath(path),
            vocab_resized="vocab_size" in overrides,
        )
        return fresh

    def save_pretrained(self, directory: str | os.PathLike) -> Path:
        """Write ``config.json`` and ``model.safetensors`` in the Hugging Face DistilBertModel layout.

        The folder is replaced atomically (other files already in it are kept): see
        `distilbert_heads.checkpoints.write_checkpoint`.
        """
        from distilbert_heads import checkpoints

        return checkpoints.write_checkpoint(directory, checkpoints.encoder_state_dict(self), self.config.to_hf_dict())

    # -- serialization ------------------------------------------------------------------------
    def save(self, filepath: Any, overwrite: bool = True, zipped: bool | None = None, **kwargs: Any) -> None:
        """Keras' ``Model.save``, written atomically: a failed or interrupted save leaves the old file intact.

        See `distilbert_heads.atomic` (a leftover ``.<name>.tmp-*`` file after a kill is safe to delete).
        """
        atomic.save_keras_model(super().save, filepath, overwrite=overwrite, zipped=zipped, **kwargs)

    def get_config(self) -> dict[str, Any]:
        base = super().get_config()
        return {
            "name": base.get("name"),
            "trainable": base.get("trainable", True),
            "dtype": base.get("dtype"),
            **self.config.model_dump(),
        }

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> DistilBERT:
        config = dict(config)
        if isinstance(config.get("dtype"), dict):
            config["dtype"] = keras.dtype_policies.deserialize(config["dtype"])
        return cls(**config)


FLOAT_DTYPES = ("float16", "bfloat16", "float32", "float64")


def checked_dtype_policy(dtype: Any) -> keras.DTypePolicy:
    """The Keras dtype policy ``dtype`` names, refusing unknown names and non-float policies.

    The one check behind ``dtype=`` on the encoder, the factory, `DistilBertTaskModel.with_dtype`,
    ``pipeline(dtype=...)`` and ``predict --dtype``; Keras itself would fail later with a
    conversion error (``int32``) or a message about quantized policies (``float8``).
    """
    expected = "e.g. 'float32', 'mixed_bfloat16', 'mixed_float16' or 'bfloat16'"
    try:
        policy = keras.dtype_policies.get(dtype)
    except (ValueError, TypeError) as error:
        raise ValueError(f"Unknown dtype policy {dtype!r}; expected {expected}.") from error
    if policy.compute_dtype not in FLOAT_DTYPES or policy.variable_dtype not in FLOAT_DTYPES:
        raise ValueError(
            f"dtype policy {policy.name!r} computes in {policy.compute_dtype} with {policy.variable_dtype} weights; "
            f"the encoder needs floating-point weights and activations: {expected}."
        )
    return policy


def _split_model_kwargs(overrides: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    config_fields = {key: value for key, value in overrides.items() if key not in MODEL_KWARGS}
    return config_fields, {key: value for key, value in overrides.items() if key in MODEL_KWARGS}


def as_input_dict(inputs: Any) -> dict[str, Any]:
    """Accept a dict of named inputs, or a bare ``input_ids`` tensor or array."""
    if (
        inputs is None
        or isinstance(inputs, (str, bytes))
        or (isinstance(inputs, Mapping) and "input_ids" in inputs and inputs["input_ids"] is None)
    ):
        got = (
            "None"
            if inputs is None or isinstance(inputs, Mapping)
            else f"a {type(inputs).__name__} ({reprlib.repr(inputs)})"
        )
        raise ValueError(
            f"DistilBERT takes token ids, got {got} for input_ids. Pass {{'input_ids': ids, 'attention_mask': mask}} "
            "with integer (batch, sequence_length) arrays; turn text into ids with the model's tokenizer (or use "
            "distilbert_heads.pipeline for text in, answers out)."
        )
    if isinstance(inputs, Mapping):
        if "input_ids" not in inputs:
            raise ValueError(
                f"DistilBERT inputs must include 'input_ids'; got keys {sorted(inputs)}. "
                "Pass {'input_ids': ids, 'attention_mask': mask}."
            )
        unknown = set(inputs) - set(INPUT_NAMES)
        if unknown:
            raise ValueError(
                f"Unknown DistilBERT inputs {sorted(unknown)}; accepted inputs are {', '.join(INPUT_NAMES)}."
            )
        return {key: value for key, value in inputs.items() if key != "token_type_ids"}
    return {"input_ids": inputs}


def checked_call_inputs(inputs: Any, config: DistilBertConfig, *, example_rows: bool = False) -> Any:
    """``inputs`` after `validate_encoder_inputs`, with bare nested lists of ids made an array.

    What a direct call (``encoder(x)``, ``model(x)``) hands to Keras: Keras takes only tensors
    positionally, so ``[[101, 102]]`` would otherwise fail with its own message. With
    ``example_rows``, rank-3 inputs are checked as the rows they hold (`flatten_example_rows`).
    """
    checked = as_input_dict(inputs)
    validate_encoder_inputs(flatten_example_rows(checked) if example_rows else checked, config)
    if isinstance(inputs, (list, tuple)):
        return _as_array("input_ids", inputs)
    return inputs


def validate_model_data(x: Any, config: DistilBertConfig, *, example_rows: bool = False) -> None:
    """`validate_encoder_inputs` on the data a `HostCheckedData` entry point was given, when it is arrays.

    A dict of arrays or a bare ids array is checked whole, on the host, before Keras' compiled
    step runs. Datasets and generators are not read ahead (that would consume them); their
    batches are checked where a step runs eagerly.
    """
    if x is None or isinstance(x, (Mapping, list, tuple, str, bytes)) or _static_shape(x) is not None:
        inputs = as_input_dict(x)
        validate_encoder_inputs(flatten_example_rows(inputs) if example_rows else inputs, config)


def flatten_example_rows(inputs: Mapping[str, Any]) -> dict[str, Any]:
    """Rank-3 inputs ``(batch, rows per example, sequence_length)`` as the ``(batch * rows,
    sequence_length)`` encoder rows they hold, for checking; other inputs as they are.

    Concrete arrays are reshaped (numpy); symbolic ones become a `keras.KerasTensor` of the
    flattened shape and the same dtype, so shape and dtype checks still run while tracing.
    """
    ids = inputs.get("input_ids")
    if isinstance(ids, (list, tuple)):
        ids = _as_array("input_ids", ids)
    ids_shape = _static_shape(ids)
    if ids_shape is None or len(ids_shape) != 3:
        return dict(inputs)
    flat: dict[str, Any] = {}
    for name, value in inputs.items():
        if isinstance(value, (list, tuple)):
            value = _as_array(name, value)
        shape = _static_shape(value)
        if shape is None or len(shape) != 3:
            flat[name] = value
            continue
        batch, rows, length = shape
        array = concrete_array(value)
        if array is not None:
            flat[name] = array.reshape(array.shape[0] * array.shape[1], array.shape[2])
        else:
            flat_rows = batch * rows if batch is not None and rows is not None else None
            flat[name] = keras.KerasTensor((flat_rows, length), dtype=keras.backend.standardize_dtype(value.dtype))
    return flat


def validate_encoder_inputs(inputs: Mapping[str, Any], config: DistilBertConfig) -> None:
    """Raise `ValueError` for inputs the encoder would silently turn into garbage or crash on.

    The one owner of the encoder's input rules; every input path (eager call, ``predict``,
    ``predict_on_batch``, pipelines) goes through it. Shape and dtype checks run whenever they
    are known (also while tracing): ``input_ids`` of rank 2 with at least one row and one
    token, at most ``max_position_embeddings`` long, of an integer dtype; ``attention_mask``
    and ``position_ids`` of the ids' shape. Value checks (ids in ``[0, vocab_size)``, mask
    only 0 and 1, positions below ``max_position_embeddings``) run on concrete arrays only
    (eager calls and the data given to ``predict``), as vectorised numpy, never in a graph.
    """
    ids_value = inputs["input_ids"]
    if isinstance(ids_value, (list, tuple)):
        ids_value = _as_array("input_ids", ids_value)
    ids_shape = _static_shape(ids_value)
    if ids_shape is not None and len(ids_shape) != 2:
        raise ValueError(
            f"input_ids must have shape (batch, sequence_length); got shape {tuple(ids_shape)}. "
            "Add a batch dimension for a single sequence, e.g. ids[None, :]."
        )
    if ids_shape is not None:
        batch, length = ids_shape
        if batch == 0:
            raise ValueError(
                f"input_ids is an empty batch (shape {tuple(ids_shape)}); pass at least one sequence, "
                "or skip the call when there is nothing to encode."
            )
        if length == 0:
            raise ValueError(
                f"input_ids has sequences of length 0 (shape {tuple(ids_shape)}); every sequence needs at least "
                "one token. Tokenize even an empty text with the model's tokenizer: it gives [CLS] [SEP]."
            )
        if length is not None and length > config.max_position_embeddings:
            raise ValueError(
                f"Sequence length {length} exceeds max_position_embeddings={config.max_position_embeddings}. "
                f"Truncate inputs to at most {config.max_position_embeddings} tokens (or split them with a stride)."
            )
    _check_dtype(
        "input_ids",
        ids_value,
        allowed=("int", "uint"),
        fix="Token ids are integers: pass an int32 or int64 array (tokenize text with the model's tokenizer).",
    )
    others = {name: inputs.get(name) for name in ("attention_mask", "position_ids")}
    for name, other in others.items():
        if other is None:
            continue
        if isinstance(other, (list, tuple)):
            other = others[name] = _as_array(name, other)
        other_shape = _static_shape(other)
        if ids_shape is not None and other_shape is not None and not _shapes_compatible(ids_shape, other_shape):
            raise ValueError(
                f"{name} has shape {tuple(other_shape)} but input_ids has shape {tuple(ids_shape)}; "
                f"{name} must have the same (batch, sequence_length) shape as input_ids."
            )
    if others["attention_mask"] is not None:
        _check_dtype(
            "attention_mask",
            others["attention_mask"],
            allowed=("int", "uint", "bool", "float"),
            fix="Pass 1 for tokens to attend to and 0 for padding.",
        )
    if others["position_ids"] is not None:
        _check_dtype(
            "position_ids",
            others["position_ids"],
            allowed=("int", "uint"),
            fix="Positions are integers 0, 1, 2, ...; pass an int32 array or leave position_ids out.",
        )

    ids = concrete_array(ids_value)
    if ids is not None and ids.size:
        _check_range(
            "input_ids",
            ids,
            config.vocab_size,
            "vocab_size",
            "Tokenize with the vocabulary this model was built for, or build the encoder with a larger vocab_size.",
        )
    mask = concrete_array(others["attention_mask"])
    if mask is not None and mask.size:
        _check_binary_mask(mask)
    positions = concrete_array(others["position_ids"])
    if positions is not None and positions.size:
        _check_range(
            "position_ids",
            positions,
            config.max_position_embeddings,
            "max_position_embeddings",
            "Positions count from 0 and must stay below the model's maximum length.",
        )


def _as_array(name: str, value: Any) -> np.ndarray:
    try:
        return np.asarray(value)
    except ValueError as error:  # ragged nested lists
        raise ValueError(
            f"{name} must be a rectangular (batch, sequence_length) array; got nested lists of different lengths "
            f"({error}). Pad the rows to one length (the tokenizer's encode does) and pass a numpy array."
        ) from error


def _dtype_name(value: Any) -> str | None:
    dtype = getattr(value, "dtype", None)
    if dtype is None:
        return None
    if isinstance(dtype, np.dtype):
        return dtype.name  # the host-array case, without keras' (slow) general conversion
    try:
        return keras.backend.standardize_dtype(dtype)
    except ValueError:
        return str(dtype)


def _check_dtype(name: str, value: Any, allowed: tuple[str, ...], fix: str) -> None:
    dtype = _dtype_name(value)
    if dtype is None:
        return
    kind = (
        "bool"
        if dtype == "bool"
        else next((k for k in ("uint", "int", "float", "bfloat") if dtype.startswith(k)), dtype)
    )
    kind = "float" if kind == "bfloat" else kind
    if kind not in allowed:
        expected = "an integer, bool or float dtype holding 0 and 1" if "float" in allowed else "an integer dtype"
        raise ValueError(f"{name} has dtype {dtype}; expected {expected} (it is never cast silently). {fix}")


def _check_range(name: str, values: np.ndarray, limit: int, limit_name: str, advice: str) -> None:
    low, high = values.min(), values.max()
    if low < 0 or high >= limit:
        bad = low if low < 0 else high
        where = tuple(int(i) for i in np.argwhere(values == bad)[0])
        raise ValueError(
            f"{name} contains {bad}, outside [0, {limit}) where {limit_name}={limit} (first at index {where}). {advice}"
        )


def _check_binary_mask(mask: np.ndarray) -> None:
    if mask.dtype.kind in "biu" and mask.min() >= 0 and mask.max() <= 1:
        return  # the common case, in two reductions
    bad = (mask != 0) & (mask != 1)
    if bad.any():
        where = tuple(int(i) for i in np.argwhere(bad)[0])
        values = np.unique(mask[bad])[:5].tolist()
        raise ValueError(
            f"attention_mask holds {mask[where].item()!r} at index {where} (values other than 0 and 1: {values}); the mask "
            "must be 1 for tokens to attend to and 0 for padding, as other values silently change the outputs. "
            "Build it as (input_ids != pad_id).astype('int32') or take it from the tokenizer."
        )


def _static_shape(value: Any) -> tuple[int | None, ...] | None:
    shape = getattr(value, "shape", None)
    if shape is None:
        return None
    return tuple(dim if isinstance(dim, int) else None for dim in shape)


def _shapes_compatible(a: tuple[int | None, ...], b: tuple[int | None, ...]) -> bool:
    if len(a) != len(b):
        return False
    return all(x is None or y is None or x == y for x, y in zip(a, b))


def concrete_array(value: Any) -> np.ndarray | None:
    """``value`` as a numpy array if it holds concrete data now, None if symbolic or traced."""
    if value is None or isinstance(value, keras.KerasTensor):
        return None
    if isinstance(value, (np.ndarray, list, tuple, int)):
        return np.asarray(value)
    backend = keras.backend.backend()
    try:
        if backend == "tensorflow":
            import tensorflow as tf

            if not tf.executing_eagerly() or not hasattr(value, "numpy"):
                return None
            return value.numpy()
        if backend == "jax":
            import jax

            if isinstance(value, jax.core.Tracer):
                return None
            return np.asarray(value)
        if backend == "torch":
            if getattr(value, "device", None) is not None and value.device.type == "meta":
                return None
            return value.detach().cpu().numpy()
    except Exception:  # an exotic tensor type: leave the value checks to the backend
        return None
    return None


def _check_variant_shape(config: DistilBertConfig, variant: str, source: str) -> None:
    expected = VARIANTS[variant]
    actual = {key: getattr(config, key) for key in expected}
    if actual != expected:
        raise ValueError(
            f"{source!r} holds a DistilBERT with {actual}, not the {variant!r} variant ({expected}). "
            + (
                f"Load it with DistilBERT.from_keras_file({source!r})"
                if source.endswith(".keras")
                else f"Load it with DistilBERT.from_pretrained({source!r})"
            )
            + " to take its own shape."
        )
