"""Encoder configuration: a validated pydantic model, the named variants, and HF config mapping."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

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


class ConfigError(ValueError):
    """An encoder configuration that cannot describe a DistilBERT."""


class DistilBertConfig(BaseModel):
    """Every hyperparameter of the encoder. Defaults are DistilBERT-base uncased."""

    model_config = ConfigDict(extra="forbid", frozen=True)

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

    @model_validator(mode="after")
    def _check_consistency(self) -> "DistilBertConfig":
        if self.hidden_size % self.num_heads:
            raise ValueError(
                f"hidden_size ({self.hidden_size}) must be divisible by num_heads ({self.num_heads}); "
                f"choose num_heads among the divisors of hidden_size, e.g. "
                f"{[d for d in range(1, min(self.hidden_size, 64) + 1) if self.hidden_size % d == 0][-3:]}"
            )
        if self.pad_token_id is not None and self.pad_token_id >= self.vocab_size:
            raise ValueError(
                f"pad_token_id ({self.pad_token_id}) must be smaller than vocab_size ({self.vocab_size})"
            )
        return self

    @classmethod
    def build(cls, **fields: Any) -> "DistilBertConfig":
        """Validate ``fields`` and raise `ConfigError` whose message names each bad field and the fix."""
        try:
            return cls(**fields)
        except ValidationError as error:
            raise ConfigError(_describe(error)) from None

    @classmethod
    def for_variant(cls, variant: str, **overrides: Any) -> "DistilBertConfig":
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
    def from_hf_dict(cls, hf: dict[str, Any], **overrides: Any) -> "DistilBertConfig":
        model_type = hf.get("model_type", "distilbert")
        if model_type != "distilbert":
            raise ConfigError(
                f"config.json describes a {model_type!r} model, not 'distilbert'; "
                "point at a DistilBERT checkpoint directory."
            )
        fields = {ours: hf[theirs] for ours, theirs in HF_FIELD_NAMES.items() if theirs in hf}
        return cls.build(**{**fields, **overrides})

    def to_hf_dict(self) -> dict[str, Any]:
        hf: dict[str, Any] = {theirs: getattr(self, ours) for ours, theirs in HF_FIELD_NAMES.items()}
        hf.update(model_type="distilbert", architectures=["DistilBertModel"])
        return hf


def _describe(error: ValidationError) -> str:
    lines = []
    for item in error.errors():
        field = ".".join(str(part) for part in item["loc"]) or "config"
        if item["type"] == "extra_forbidden":
            lines.append(
                f"{field}: not a DistilBERT option; valid options are {', '.join(DistilBertConfig.model_fields)}"
            )
        elif item["type"] == "literal_error":
            lines.append(f"{field}: got {item['input']!r}; use one of {', '.join(ACTIVATIONS)}")
        else:
            lines.append(f"{field}: {item['msg']} (got {item.get('input')!r})")
    return "Invalid DistilBERT configuration:\n  " + "\n  ".join(lines)
