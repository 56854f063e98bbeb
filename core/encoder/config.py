"""Encoder configuration: a validated pydantic model, the named variants, and HF config mapping."""

from __future__ import annotations

import os
from typing import Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic_core import PydanticCustomError

# Activations the Hugging Face reference accepts for DistilBERT and that we reproduce exactly.
ACTIVATIONS = ("gelu", "relu", "gelu_new", "gelu_pytorch_tanh", "silu", "swish")

VARIANTS: dict[str, dict[str, Any]] = {
    "tiny": {"hidden_size": 256, "num_layers": 2, "num_heads": 4, "intermediate_size": 1024},
    "small": {"hidden_size": 512, "num_layers": 4, "num_heads": 8, "intermediate_size": 2048},
    "base": {"hidden_size": 768, "num_layers": 6, "num_heads": 12, "intermediate_size": 3072},
}

# Published checkpoints per variant; `pretrained=True` means this hub id.
PRETRAINED_IDS: dict[str, str] = {"base": "distilbert/distilbert-base-uncased"}

# Our field name -> Hugging Face DistilBertConfig field name.
HF_FIELD_NAMES = {
    "vocab_size": "vocab_size",
    "hidden_size": "dim",
    "num_layers": "n_layers",
    "num_heads": "n_heads",
    "intermediate_size": "hidden_dim",
    "hidden_act": "activation",
    "dropout_rate": "dropout",
    "attention_dropout_rate": "attention_dropout",
    "max_position_embeddings": "max_position_embeddings",
    "sinusoidal_pos_embds": "sinusoidal_pos_embds",
    "initializer_range": "initializer_range",
    "pad_token_id": "pad_token_id",
}
# The same for Hugging Face BertConfig, whose encoder maps onto DistilBERT's (see checkpoints.py).
BERT_FIELD_NAMES = {
    "vocab_size": "vocab_size",
    "hidden_size": "hidden_size",
    "num_layers": "num_hidden_layers",
    "num_heads": "num_attention_heads",
    "intermediate_size": "intermediate_size",
    "hidden_act": "hidden_act",
    "dropout_rate": "hidden_dropout_prob",
    "attention_dropout_rate": "attention_probs_dropout_prob",
    "max_position_embeddings": "max_position_embeddings",
    "initializer_range": "initializer_range",
    "layer_norm_eps": "layer_norm_eps",
    "pad_token_id": "pad_token_id",
}
# Field names per config.json model_type, and BertConfig's defaults where they differ from ours.
HF_FIELD_NAMES_BY_TYPE = {"distilbert": HF_FIELD_NAMES, "bert": BERT_FIELD_NAMES}
HF_DEFAULTS_BY_TYPE: dict[str, dict[str, Any]] = {"distilbert": {}, "bert": {"num_layers": 12}}


# Upper bounds on sizes, checked before any weight is allocated so that a hostile or mistyped
# config (a .keras file, a config.json) fails at once instead of trying to allocate terabytes.
# Each is far above any published DistilBERT/BERT-family model (base: vocab 30522, hidden 768,
# 6 layers, 12 heads, FFN 3072, 512 positions, 66M parameters).
SIZE_LIMITS: dict[str, int] = {
    "vocab_size": 1_000_000,
    "hidden_size": 16_384,
    "num_layers": 128,
    "num_heads": 256,
    "intermediate_size": 65_536,
    "max_position_embeddings": 131_072,
}
MAX_PARAMETERS = 20_000_000_000
MAX_CLASSES = 1_000_000  # a head's output classes: the same kind of bound, for head options
# The override is an environment variable, not a config field: a field would be read from the
# very file being checked, so a hostile file could switch its own check off. Only the person
# running the code can set the environment.
ALLOW_LARGE_ENV = "DISTILBERT_HEADS_ALLOW_LARGE"
_OVERRIDE_ADVICE = (
    f"If the model is genuinely this large, set the environment variable {ALLOW_LARGE_ENV}=1 to lift the limits."
)


def check_size_limit(value: int, limit: int) -> int:
    """``value``, or a pydantic error naming ``limit`` and the override: for size fields of any config."""
    if value > limit and not large_models_allowed():
        raise PydanticCustomError(
            "size_limit",
            f"{value:,} is above the limit of {limit:,} (far above any real DistilBERT), so nothing was "
            f"allocated. {_OVERRIDE_ADVICE}",
        )
    return value


def large_models_allowed() -> bool:
    """Whether ``DISTILBERT_HEADS_ALLOW_LARGE`` lifts the size limits (set to 1/true/yes)."""
    return os.environ.get(ALLOW_LARGE_ENV, "").strip().lower() in {"1", "true", "yes"}


def estimate_parameters(
    vocab_size: int, hidden_size: int, num_layers: int, intermediate_size: int, max_position_embeddings: int
) -> int:
    """The encoder's parameter count: embeddings, their LayerNorm, and per layer attention, FFN and 2 LayerNorms."""
    embeddings = (vocab_size + max_position_embeddings) * hidden_size + 2 * hidden_size
    attention = 4 * (hidden_size * hidden_size + hidden_size)
    ffn = 2 * hidden_size * intermediate_size + intermediate_size + hidden_size
    return embeddings + num_layers * (attention + ffn + 4 * hidden_size)


class ConfigError(ValueError):
    """An encoder configuration that cannot describe a DistilBERT."""


class DistilBertConfig(BaseModel):
    """Every hyperparameter of the encoder. Defaults are DistilBERT-base uncased."""

    # allow_inf_nan=False: an infinite layer_norm_eps or initializer_range passes a "> 0" bound but
    # makes every output the same (or every weight NaN), silently.
    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)

    vocab_size: int = Field(30522, ge=1)
    hidden_size: int = Field(768, ge=1)
    num_layers: int = Field(6, ge=1)
    num_heads: int = Field(12, ge=1)
    intermediate_size: int = Field(3072, ge=1)
    hidden_act: Literal["gelu", "relu", "gelu_new", "gelu_pytorch_tanh", "silu", "swish"] = "gelu"
    dropout_rate: float = Field(0.1, ge=0.0, lt=1.0)
    attention_dropout_rate: float = Field(0.1, ge=0.0, lt=1.0)
    max_position_embeddings: int = Field(512, ge=1)
    sinusoidal_pos_embds: bool = False
    initializer_range: float = Field(0.02, gt=0.0)
    layer_norm_eps: float = Field(1e-12, gt=0.0)
    pad_token_id: int | None = Field(0, ge=0)

    @field_validator(*SIZE_LIMITS)
    @classmethod
    def _check_size_limit(cls, value: int, info: Any) -> int:
        return check_size_limit(value, SIZE_LIMITS[info.field_name])

    @model_validator(mode="after")
    def _check_consistency(self) -> DistilBertConfig:
        parameters = estimate_parameters(
            self.vocab_size, self.hidden_size, self.num_layers, self.intermediate_size, self.max_position_embeddings
        )
        if parameters > MAX_PARAMETERS and not large_models_allowed():
            raise PydanticCustomError(
                "size_limit",
                f"these sizes make an encoder of about {parameters:,} parameters ({parameters * 4 / 1e9:,.0f} GB "
                f"in float32), above the limit of {MAX_PARAMETERS:,} parameters, so nothing was allocated. "
                f"{_OVERRIDE_ADVICE}",
            )
        if self.hidden_size % self.num_heads:
            raise ValueError(
                f"hidden_size ({self.hidden_size}) must be divisible by num_heads ({self.num_heads}); "
                f"choose num_heads among the divisors of hidden_size, e.g. "
                f"{[d for d in range(1, min(self.hidden_size, 64) + 1) if self.hidden_size % d == 0][-3:]}"
            )
        if self.pad_token_id is not None and self.pad_token_id >= self.vocab_size:
            raise ValueError(f"pad_token_id ({self.pad_token_id}) must be smaller than vocab_size ({self.vocab_size})")
        return self

    @classmethod
    def build(cls, **fields: Any) -> DistilBertConfig:
        """Validate ``fields`` and raise `ConfigError` whose message names each bad field and the fix."""
        try:
            return cls(**fields)
        except ValidationError as error:
            raise ConfigError(_describe(error)) from None

    @classmethod
    def for_variant(cls, variant: str, **overrides: Any) -> DistilBertConfig:
        if variant not in VARIANTS:
            raise ConfigError(
                f"Unknown DistilBERT variant {variant!r}; expected one of {sorted(VARIANTS)}. "
                "Pass the sizes as keywords to DistilBERT(...) for a custom shape."
            )
        return cls.build(**{**VARIANTS[variant], **overrides})

    @property
    def head_size(self) -> int:
        return self.hidden_size // self.num_heads

    # -- Hugging Face config.json ---------------------------------------------------------
    @classmethod
    def from_hf_dict(cls, hf: dict[str, Any], *, source: str = "config.json", **overrides: Any) -> DistilBertConfig:
        """The config a Hugging Face ``config.json`` describes; errors name ``source`` and its own field names.

        ``model_type`` ``"distilbert"`` (the default) or ``"bert"``: a post-LN BERT encoder with
        absolute positions maps onto DistilBERT exactly (see `checkpoints.bert_to_distilbert`).
        """
        model_type = hf_model_type(hf, source)
        hf_names = HF_FIELD_NAMES_BY_TYPE[model_type]
        fields = {**HF_DEFAULTS_BY_TYPE[model_type]}
        fields.update({ours: hf[theirs] for ours, theirs in hf_names.items() if theirs in hf})
        try:
            return cls(**{**fields, **overrides})
        except ValidationError as error:
            names = {
                ours: f"{theirs} ({ours})"
                for ours, theirs in hf_names.items()
                if theirs != ours and ours not in overrides
            }
            raise ConfigError(_describe(error, names, where=f" in {source}")) from None

    def to_hf_dict(self) -> dict[str, Any]:
        hf: dict[str, Any] = {theirs: getattr(self, ours) for ours, theirs in HF_FIELD_NAMES.items()}
        hf.update(model_type="distilbert", architectures=["DistilBertModel"])
        return hf


def hf_model_type(hf: dict[str, Any], source: str = "config.json") -> str:
    """``"distilbert"`` or ``"bert"``: the config.json ``model_type`` (default distilbert), checked to be readable.

    A BERT variant that does not map onto DistilBERT (relative positions, a decoder) is refused here.
    """
    model_type = hf.get("model_type", "distilbert")
    if model_type not in HF_FIELD_NAMES_BY_TYPE:
        raise ConfigError(
            f"{source} describes a {model_type!r} model, not 'distilbert' or 'bert'; "
            "point at a DistilBERT or BERT checkpoint directory."
        )
    if model_type == "bert":
        position_type = hf.get("position_embedding_type", "absolute")
        if position_type != "absolute":
            raise ConfigError(
                f"{source} describes a BERT with position_embedding_type={position_type!r}; only 'absolute' "
                "positions map onto DistilBERT. Use a checkpoint with absolute position embeddings."
            )
        if hf.get("is_decoder") or hf.get("add_cross_attention"):
            raise ConfigError(
                f"{source} describes a BERT decoder (is_decoder or add_cross_attention is true): its attention is "
                "causal or reads a second sequence, which DistilBERT's encoder does not. Use an encoder checkpoint."
            )
    return model_type


def _describe(error: ValidationError, names: dict[str, str] | None = None, where: str = "") -> str:
    """One line per bad field; ``names`` spells fields as the file does (e.g. ``dim (hidden_size)``)."""
    lines = []
    for item in error.errors():
        field = ".".join(str(part) for part in item["loc"]) or "config"
        field = (names or {}).get(field, field)
        if item["type"] == "size_limit":
            lines.append(f"{field}: {item['msg']}")
        elif item["type"] == "extra_forbidden":
            lines.append(
                f"{field}: not a DistilBERT option; valid options are {', '.join(DistilBertConfig.model_fields)}"
            )
        elif item["type"] == "literal_error":
            lines.append(f"{field}: got {item['input']!r}; use one of {', '.join(ACTIVATIONS)}")
        else:
            lines.append(f"{field}: {item['msg']} (got {item.get('input')!r})")
    return f"Invalid DistilBERT configuration{where}:\n  " + "\n  ".join(lines)
