"""Masked language modelling: predict the token under each ``[MASK]``.

The head is Hugging Face's ``DistilBertForMaskedLM`` head, weight for weight: ``vocab_transform``
Dense(D) -> the encoder's activation (GELU) -> ``vocab_layer_norm`` (eps 1e-12) -> ``vocab_projector``,
whose weight IS the encoder's word-embedding matrix (tied, as in Hugging Face) and whose bias is the
head's own. The head reaches the embeddings through `TaskHead.attach_encoder`: it keeps the encoder's
embedding layer without tracking it, so the matrix is one variable, saved once (by the encoder), trained
once, and tied again whenever a ``.keras`` file is loaded. ``DistilBertForMaskedLM`` and ``BertForMaskedLM``
checkpoints load; ``save_pretrained`` writes ``DistilBertForMaskedLM``.

Training rows are plain text: a ``.txt`` file (one example per non-empty line) or JSONL/CSV rows
``{"text": ...}``. Each training batch is masked anew (`prepare_batch`, BERT's 15% / 80-10-10 recipe from
`distilbert_heads.training.masking`), from an rng seeded by the run's seed, the epoch and the batch;
held-out batches get a fixed-seed mask, so their loss and masked-token accuracy are comparable across
epochs and runs.

Inference is fill-mask, as ``transformers.pipeline("fill-mask")``::

    pipe = distilbert_heads.pipeline(model)
    pipe("Paris is the [MASK] of France.", top_k=5)
    # [{"score": 0.41, "token": 3007, "token_str": "capital", "sequence": "paris is the capital of france."}, ...]

One ``[MASK]`` gives a list of ``top_k`` candidates; several give one such list per ``[MASK]``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, ClassVar

import keras
import numpy as np
from keras import ops
from pydantic import BaseModel, Field, field_validator

from distilbert_heads.encoder.layers import activation_fn
from distilbert_heads.heads._common import check_hidden_shape, encoding_field, softmax_np
from distilbert_heads.heads._hf_weights import dense_weights, load_dense_layers, to_numpy
from distilbert_heads.losses import IGNORE_INDEX, MaskedSparseCategoricalAccuracy, MaskedSparseCategoricalCrossentropy
from distilbert_heads.plugins.head import DistillationTarget, HeadOptions, TaskHead
from distilbert_heads.plugins.hookspecs import hookimpl
from distilbert_heads.plugins.input_kinds import TEXT, InputKind
from distilbert_heads.tasks import NLPTaskType
from distilbert_heads.training.masking import MaskingRecipe, mask_tokens
from distilbert_heads.training.streaming import special_token_ids

# Hugging Face's DistilBertForMaskedLM builds vocab_layer_norm with this epsilon, whatever the config says.
VOCAB_LAYER_NORM_EPS = 1e-12

# Where each checkpoint layout keeps the head: (transform dense, LayerNorm, projector bias keys, projector weight).
_LAYOUTS = {
    "DistilBertForMaskedLM": (
        "vocab_transform",
        "vocab_layer_norm",
        ("vocab_projector.bias",),
        "vocab_projector.weight",
    ),
    "BertForMaskedLM": (
        "cls.predictions.transform.dense",
        "cls.predictions.transform.LayerNorm",
        ("cls.predictions.bias", "cls.predictions.decoder.bias"),
        "cls.predictions.decoder.weight",
    ),
}


class MlmOptions(HeadOptions):
    """Options of `MaskedLMHead`.

    masking: how training batches are masked (`MaskingRecipe`: 15% of text tokens chosen; of those 80%
        ``[MASK]``, 10% a random token, 10% kept).
    """

    masking: MaskingRecipe = Field(default_factory=MaskingRecipe)


class MlmExample(BaseModel):
    """One row: the ``text`` to learn from (a ``.txt`` file's line becomes ``{"text": line}``)."""

    text: str

    @field_validator("text")
    @classmethod
    def _not_blank(cls, value: str) -> str:
        if not value.strip():
            raise ValueError("text is empty; every row needs some text to mask and predict")
        return value


@keras.saving.register_keras_serializable(package="distilbert_heads")
class MaskedLMHead(TaskHead):
    """Masked language modelling, Hugging Face ``DistilBertForMaskedLM`` layout, projector tied to the embeddings."""

    task_types: ClassVar[tuple[str, ...]] = (NLPTaskType.MASKED_LANGUAGE_MODELING.value,)
    aliases: ClassVar[tuple[str, ...]] = ("mlm",)
    description: ClassVar[str] = (
        "Masked language modelling and fill-mask (Hugging Face DistilBertForMaskedLM layout, tied embeddings)"
    )
    options_schema: ClassVar[type[HeadOptions]] = MlmOptions
    output_names: ClassVar[tuple[str, ...]] = ("logits",)
    label_format: ClassVar[str] = (
        "logits: the original token id at each masked position, shape (batch, length); -100 everywhere else "
        "(made per batch by the head's prepare_batch from plain text)"
    )
    input_kind: ClassVar[InputKind] = TEXT
    example_schema: ClassVar[type[BaseModel]] = MlmExample
    hf_architecture: ClassVar[str | None] = "DistilBertForMaskedLM"

    def __init__(self, hidden_size: int, task_type: str, options: Any = None, **kwargs: Any) -> None:
        super().__init__(hidden_size, task_type, options, **kwargs)
        self.vocab_transform = keras.layers.Dense(self.hidden_size, name="vocab_transform", dtype=self.dtype_policy)
        self.vocab_layer_norm = keras.layers.LayerNormalization(
            epsilon=VOCAB_LAYER_NORM_EPS, name="vocab_layer_norm", dtype=self.dtype_policy
        )
        self._tie(None, "gelu")

    def _tie(self, word_embeddings: keras.layers.Embedding | None, activation: str) -> None:
        # object.__setattr__: Keras would track the encoder's layer as this head's own, and the embedding
        # matrix would then appear among the head's weights as well as the encoder's.
        object.__setattr__(self, "_word_embeddings", word_embeddings)
        object.__setattr__(self, "_activation_name", activation)
        object.__setattr__(self, "_activation", activation_fn(activation))

    def attach_encoder(self, encoder: Any) -> None:
        """Tie the projector to ``encoder``'s word embeddings and use its activation (see the module docstring)."""
        if (
            self.built
            and self._word_embeddings is not None
            and self._word_embeddings is not encoder.embeddings.word_embeddings
        ):
            raise ValueError(
                f"MaskedLMHead {self.name!r} is already tied to another encoder's word embeddings; a masked-LM head "
                "belongs to one encoder. Make a new head for this model (create_distilbert_with_head('mlm', ...))."
            )
        self._tie(encoder.embeddings.word_embeddings, encoder.config.hidden_act)

    @property
    def word_embeddings(self) -> Any:
        """The tied projector weight: the encoder's word-embedding variable (vocab_size, hidden_size)."""
        if self._word_embeddings is None:
            raise ValueError(
                f"MaskedLMHead {self.name!r} has no encoder: its projector is the encoder's word embeddings, so it "
                "only works inside a model. Build it with distilbert_heads.create_distilbert_with_head('mlm', ...) "
                "(or DistilBertTaskModel(encoder, [head]), which ties it)."
            )
        return self._word_embeddings.embeddings

    @property
    def vocab_size(self) -> int:
        return int(self.word_embeddings.shape[0])

    def build(self, input_shape: Any = None) -> None:
        check_hidden_shape(self, input_shape)
        vocab_size = self.vocab_size  # fails clearly without an encoder
        self.vocab_transform.build((None, None, self.hidden_size))
        self.vocab_layer_norm.build((None, None, self.hidden_size))
        self.vocab_projector_bias = self.add_weight(
            shape=(vocab_size,), initializer="zeros", name="vocab_projector_bias"
        )
        self.built = True

    def call(self, hidden_states: Any, attention_mask: Any = None, training: bool | None = None) -> dict[str, Any]:
        states = self._activation(self.vocab_transform(hidden_states))
        states = self.vocab_layer_norm(states)
        embeddings = ops.cast(self.word_embeddings, states.dtype)
        logits = ops.matmul(states, ops.transpose(embeddings)) + ops.cast(self.vocab_projector_bias, states.dtype)
        return {"logits": logits}

    # -- training -----------------------------------------------------------------------------
    def default_losses(self) -> dict[str, Any]:
        return {"logits": MaskedSparseCategoricalCrossentropy(ignore_index=IGNORE_INDEX)}

    def default_metrics(self) -> dict[str, list[Any]]:
        return {"logits": [MaskedSparseCategoricalAccuracy(ignore_index=IGNORE_INDEX, name="masked_accuracy")]}

    def distillation_targets(self) -> dict[str, DistillationTarget]:
        return {"logits": DistillationTarget(kind="logits", axis=-1, tokens="rows")}

    def encode_examples(
        self, examples: Sequence[BaseModel], tokenizer: Any, max_length: int
    ) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
        """Token ids of each row's ``text`` (truncated to ``max_length``) and ``{"logits": all -100}``: nothing
        is learnt until `prepare_batch` masks the batch and labels the chosen tokens."""
        encoding = self.input_kind.encode_rows(tokenizer, examples, max_length)
        labels = np.full(encoding.input_ids.shape, IGNORE_INDEX, dtype=np.int32)
        return self.input_kind.model_inputs(encoding), {"logits": labels}

    def prepare_batch(
        self, inputs: dict[str, np.ndarray], labels: dict[str, np.ndarray], *, tokenizer: Any, rng: np.random.Generator
    ) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
        """The batch with tokens masked by the options' `MaskingRecipe` and the chosen tokens' ids as labels."""
        masked, targets = mask_tokens(
            inputs,
            mask_id=_mask_id(tokenizer),
            vocab_size=tokenizer.vocab_size,
            special_ids=special_token_ids(tokenizer),
            rng=rng,
            recipe=self.options.masking,
        )
        return {**inputs, "input_ids": masked}, {**labels, "logits": targets.astype(np.int32)}

    # -- inference: fill-mask -----------------------------------------------------------------
    def decode(
        self,
        outputs: Mapping[str, Any],
        encoding: Any = None,
        *,
        texts: Sequence[str] | None = None,
        tokenizer: Any = None,
        top_k: int = 5,
    ) -> list[Any]:
        """Per input, the ``top_k`` likeliest tokens for its ``[MASK]`` as ``{"score", "token", "token_str",
        "sequence"}`` (best first), or one such list per ``[MASK]`` when it has several, exactly as
        ``transformers``' fill-mask pipeline answers. Needs the pipeline's ``tokenizer`` and ``encoding``."""
        if tokenizer is None:
            raise ValueError("MaskedLMHead.decode needs the tokenizer (the pipeline passes it) to name the tokens")
        if isinstance(top_k, bool) or not isinstance(top_k, (int, np.integer)) or top_k < 1:
            raise ValueError(f"top_k must be a positive integer (candidates per [MASK]), got {top_k!r}")
        logits = np.asarray(ops.convert_to_numpy(outputs["logits"]), dtype=np.float32)
        ids = np.asarray(encoding_field(encoding, "input_ids"))
        mask = np.asarray(encoding_field(encoding, "attention_mask"))
        mask_id, pad_id = _mask_id(tokenizer), tokenizer.pad_token_id
        top_k = min(int(top_k), logits.shape[-1])
        answers = []
        for row in range(len(ids)):
            positions = np.flatnonzero((ids[row] == mask_id) & (mask[row] != 0))
            if not len(positions):
                text = f" {texts[row]!r}" if texts is not None and row < len(texts) else ""
                raise ValueError(
                    f"input {row}{text} has no {tokenizer.id_to_token(mask_id)} token to fill. Put "
                    f"{tokenizer.id_to_token(mask_id)} (this tokenizer's mask token) where a word should be "
                    f"predicted, e.g. 'Paris is the {tokenizer.id_to_token(mask_id)} of France.'"
                )
            probs = softmax_np(logits[row, positions])
            single = len(positions) == 1
            per_mask = []
            for position, row_probs in zip(positions, probs):
                best = np.argsort(-row_probs, kind="stable")[:top_k]
                candidates = []
                for token in best:
                    filled = ids[row].copy()
                    filled[position] = token
                    filled = filled[filled != pad_id]
                    candidates.append(
                        {
                            "score": float(row_probs[token]),
                            "token": int(token),
                            "token_str": tokenizer.decode([int(token)]),
                            "sequence": tokenizer.decode(filled, skip_special_tokens=single),
                        }
                    )
                per_mask.append(candidates)
            answers.append(per_mask[0] if single else per_mask)
        return answers

    # -- Hugging Face checkpoints -------------------------------------------------------------
    def load_hf_head_weights(self, state_dict: Mapping[str, Any]) -> bool:
        """``DistilBertForMaskedLM`` (``vocab_transform``, ``vocab_layer_norm``, ``vocab_projector.bias``) or
        ``BertForMaskedLM`` (``cls.predictions.*``) weights; a stored projector weight must equal the word
        embeddings (this head ties them)."""
        layout = next((name for name, keys in _LAYOUTS.items() if f"{keys[0]}.weight" in state_dict), None)
        if layout is None:
            return False
        transform, norm, bias_keys, projector = _LAYOUTS[layout]
        who = f"MaskedLMHead (task type {self.task_type}, {layout} checkpoint)"
        if not self.built:
            self.build((None, None, self.hidden_size))
        gamma, beta = _read_layer_norm(state_dict, norm, self.hidden_size, who)
        bias_key = next((key for key in bias_keys if key in state_dict), None)
        if bias_key is None:
            raise ValueError(
                f"{who}: the checkpoint has {transform}.weight but no projector bias ({' or '.join(bias_keys)}); it "
                "looks truncated. Use a complete checkpoint, or load only the encoder and train the head."
            )
        bias = to_numpy(state_dict[bias_key])
        if bias.shape != (self.vocab_size,):
            raise ValueError(
                f"{who}: {bias_key} has shape {bias.shape}, but the encoder's vocabulary has {self.vocab_size} "
                "tokens; use the checkpoint's own config (vocab_size) for the encoder."
            )
        if projector in state_dict:
            stored = to_numpy(state_dict[projector])
            tied = ops.convert_to_numpy(self.word_embeddings)
            if stored.shape != tied.shape or not np.allclose(stored, tied, rtol=0, atol=1e-6):
                raise ValueError(
                    f"{who}: {projector} differs from the word embeddings, but this head ties the projector to "
                    "them (as Hugging Face does by default); a checkpoint saved with tie_word_embeddings=False "
                    "cannot be loaded into it. Re-save it tied, or use the encoder alone."
                )
        load_dense_layers([(self.vocab_transform, transform)], state_dict, who)
        self.vocab_layer_norm.gamma.assign(gamma)
        self.vocab_layer_norm.beta.assign(beta)
        self.vocab_projector_bias.assign(bias)
        return True

    def hf_head_weights(self) -> dict[str, np.ndarray]:
        """``vocab_transform``, ``vocab_layer_norm`` and ``vocab_projector.bias``; the projector weight is the
        encoder's word embeddings, written with the encoder."""
        if not self.built:
            return {}
        return {
            **dense_weights(self.vocab_transform, "vocab_transform"),
            "vocab_layer_norm.weight": np.asarray(ops.convert_to_numpy(self.vocab_layer_norm.gamma)),
            "vocab_layer_norm.bias": np.asarray(ops.convert_to_numpy(self.vocab_layer_norm.beta)),
            "vocab_projector.bias": np.asarray(ops.convert_to_numpy(self.vocab_projector_bias)),
        }

    def hf_config(self) -> dict[str, Any]:
        return {"tie_word_embeddings": True}


def _read_layer_norm(
    state_dict: Mapping[str, Any], prefix: str, hidden_size: int, who: str
) -> tuple[np.ndarray, np.ndarray]:
    missing = [f"{prefix}.{part}" for part in ("weight", "bias") if f"{prefix}.{part}" not in state_dict]
    if missing:
        raise ValueError(
            f"{who}: the checkpoint has some of this head's weights but not {', '.join(missing)}; it looks truncated "
            "or from another architecture. Use a complete checkpoint, or load only the encoder and train the head."
        )
    gamma, beta = to_numpy(state_dict[f"{prefix}.weight"]), to_numpy(state_dict[f"{prefix}.bias"])
    if gamma.shape != (hidden_size,) or beta.shape != (hidden_size,):
        raise ValueError(
            f"{who}: {prefix}.weight / .bias have shapes {gamma.shape} / {beta.shape}, expected ({hidden_size},) "
            "(the encoder's hidden size); the checkpoint does not fit this encoder."
        )
    return gamma, beta


def _mask_id(tokenizer: Any) -> int:
    mask_id = tokenizer.mask_token_id
    if mask_id is None:
        raise ValueError(
            "the tokenizer has no [MASK] token in its vocabulary, so nothing can be masked or filled; use a BERT "
            "tokenizer whose vocab.txt has [MASK] (every published DistilBERT/BERT one does)."
        )
    return int(mask_id)


@hookimpl
def register_heads(register: Any) -> None:
    register(MaskedLMHead)
