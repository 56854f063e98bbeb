"""`DistilBERT`: the encoder, a Keras 3 model whose forward pass is Hugging Face's.

Read top to bottom: ids and positions are embedded, the padding mask becomes an additive key
bias, ``num_layers`` post-LN transformer blocks run, and the result comes back as a dict with
``last_hidden_state`` and the ``attention_mask`` that heads need (plus ``hidden_states`` on
request). Only `keras.ops` is used, so TensorFlow, JAX and PyTorch backends all run it."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import keras
from keras import ops

from distilbert_heads import atomic
from distilbert_heads.encoder import checkpoints
from distilbert_heads.encoder.config import PRETRAINED_IDS, VARIANTS, ConfigError, DistilBertConfig
from distilbert_heads.encoder.inputs import HostCheckedData, as_input_dict, checked_call_inputs, validate_encoder_inputs
from distilbert_heads.encoder.layers import DistilBertEmbeddings, TransformerBlock

# Keyword arguments that belong to the Keras model rather than to the DistilBERT config.
MODEL_KWARGS = ("dtype", "name", "trainable")


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
        source = published_checkpoint(variant) if pretrained is True else os.fspath(pretrained)
        if checkpoints.is_keras_file(source):
            encoder, loader = cls.from_keras_file(source, **overrides), "from_keras_file"
        else:
            encoder, loader = cls.from_pretrained(source, allow_partial=allow_partial, **overrides), "from_pretrained"
        check_variant_shape(encoder.config, variant, source, loader)
        return encoder

    @classmethod
    def from_pretrained(
        cls,
        path_or_hub_id: str | os.PathLike,
        *,
        allow_partial: bool = False,
        layers: Sequence[int] | None = None,
        **overrides: Any,
    ) -> DistilBERT:
        """Load a Hugging Face DistilBERT or BERT checkpoint (directory or hub id).

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

        A BERT checkpoint (``model_type: "bert"``: ``BertModel`` or any ``BertFor*``, keys with or
        without ``bert.``) maps onto DistilBERT exactly: its token-type row 0 is added into the
        position table (inputs here are always token type 0) and its pooler is dropped; sizes come
        from its config.json. ``encoder.load_report.folded`` and ``.dropped`` say what happened to
        each such tensor. ``layers`` (e.g. ``[0, 2, 4]``) picks which checkpoint layers become the
        encoder's, in that order (default: all); the others are listed in ``.dropped``.
        """
        return cls.from_checkpoint(
            checkpoints.Checkpoint.read(path_or_hub_id),
            source=str(path_or_hub_id),
            allow_partial=allow_partial,
            layers=layers,
            **overrides,
        )

    @classmethod
    def from_checkpoint(
        cls,
        checkpoint: checkpoints.Checkpoint,
        *,
        source: str,
        allow_partial: bool = False,
        layers: Sequence[int] | None = None,
        **overrides: Any,
    ) -> DistilBERT:
        """The encoder of a checkpoint already read (`checkpoints.Checkpoint.read`); see `from_pretrained`."""
        overrides, model_kwargs = _split_model_kwargs(overrides)
        if layers is not None and "num_layers" in overrides:
            raise ValueError(
                f"num_layers={overrides['num_layers']!r} and layers={layers!r} both set the encoder's depth; "
                "give only layers (the encoder gets one layer per entry)."
            )
        config = DistilBertConfig.from_hf_dict(
            checkpoint.hf_config, source=str(checkpoint.directory / checkpoints.CONFIG_NAME), **overrides
        )
        state = checkpoint.encoder_state(layers)
        if state.layers is not None:
            config = config.model_copy(update={"num_layers": len(state.layers)})  # fewer layers: still valid
        encoder = cls.from_config_model(config, **model_kwargs)
        encoder.load_report = checkpoints.load_encoder_weights(
            encoder,
            state.state,
            source=source,
            allow_partial=allow_partial,
            vocab_resized="vocab_size" in overrides,
        )
        report = encoder.load_report
        report.folded, report.dropped, report.layers = dict(state.folded), dict(state.dropped), state.layers
        report.ignored_files = checkpoint.weight_files.ignored
        if report.folded or report.dropped:
            checkpoints.logger.info(
                "Converting %s: folded %s; dropped %s", source, report.folded, sorted(report.dropped)
            )
        if checkpoint.weight_files.stray:
            checkpoints.logger.warning(
                "Files in %s that its checkpoint does not name were ignored: %s",
                checkpoint.directory,
                checkpoint.weight_files.stray,
            )
        return encoder

    @classmethod
    def from_keras_file(cls, path: str | os.PathLike, **overrides: Any) -> DistilBERT:
        """The encoder saved in a ``.keras`` file (a DistilBERT or a task model holding one)."""
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
    if dtype == "int8":
        raise ValueError(
            "dtype 'int8' is an inference mode of a trained float32 task model, not a policy to build or train "
            f"under ({expected}): use model.with_dtype('int8'), pipeline(..., dtype='int8') or predict --dtype int8."
        )
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


def published_checkpoint(variant: str) -> str:
    """The hub id of ``variant``'s published weights (`pretrained=True`); an error for variants without any."""
    if variant not in PRETRAINED_IDS:
        raise ValueError(
            f"No published weights exist for the {variant!r} variant (only for "
            f"{', '.join(sorted(PRETRAINED_IDS))}). Use pretrained=False for random weights, or "
            "pretrained='<checkpoint dir or hub id>' for weights you have."
        )
    return PRETRAINED_IDS[variant]


def check_variant_shape(config: DistilBertConfig, variant: str, source: str, loader: str) -> None:
    """Raise unless the encoder loaded from ``source`` (by ``DistilBERT.<loader>``) has ``variant``'s shape."""
    expected = VARIANTS[variant]
    actual = {key: getattr(config, key) for key in expected}
    if actual != expected:
        raise ValueError(
            f"{source!r} holds a DistilBERT with {actual}, not the {variant!r} variant ({expected}). "
            f"Load it with DistilBERT.{loader}({source!r}) to take its own shape."
        )
