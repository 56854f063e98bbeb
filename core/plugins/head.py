"""The `TaskHead` contract: what every head, built-in or third-party, provides.

A head is a Keras layer that turns the encoder's ``last_hidden_state`` (B, L, D) and
``attention_mask`` (B, L) into a dict of named outputs. Around that call it declares, as
class attributes and methods, everything the rest of the library needs without knowing the
head: which task types it serves, its options (a pydantic model), its default losses and
metrics, the label format it trains on, how to decode outputs for people, and optionally how
to take its weights from a Hugging Face task checkpoint.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any, ClassVar, Literal

import keras
import numpy as np
from pydantic import BaseModel, ConfigDict, ValidationError

from distilbert_heads.plugins.input_kinds import TEXT, InputKind


class HeadOptions(BaseModel):
    """Base of every head's options schema. Unknown options are errors, never ignored."""

    model_config = ConfigDict(extra="forbid", frozen=True)


class DistillationTarget(BaseModel):
    """How a student learns one of a head's outputs from a teacher's (task-specific distillation).

    ``kind="logits"``: soft targets, the KL divergence between ``softmax(teacher / T)`` and
    ``log_softmax(student / T)`` over ``axis``, times T squared. ``kind="regression"``: the mean
    squared error between the two outputs. ``tokens`` says how the attention mask applies:
    ``"none"`` (one target per example, e.g. a sentence's class logits), ``"rows"`` (axis 1 is the
    token axis and each real token is its own target, averaged over tokens whose attention mask is
    set, e.g. NER tags or masked-LM logits) or ``"classes"`` (the distribution runs over the token
    axis itself, e.g. an answer span's start logits: padding gets no probability).
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    kind: Literal["logits", "regression"] = "logits"
    axis: int = -1
    tokens: Literal["none", "rows", "classes"] = "none"


class HeadOptionsError(ValueError):
    """Options that the chosen head does not accept, or accepts with other values."""


class HeadContractError(ValueError):
    """A head's outputs or options break the `TaskHead` contract (found when the model is built)."""


class TaskHead(keras.layers.Layer):
    """Base class for task heads. Subclass it, set the class attributes, implement `call`.

    Class attributes a head sets:
        task_types: the task types it serves (`NLPTaskType` members or plain strings).
        aliases: short names that resolve to its first task type (e.g. ``"sentiment"``).
        description: one line shown by ``distilbert-heads heads``.
        options_schema: a `HeadOptions` subclass validating its options.
        output_names: the keys of the dict `call` returns.
        label_format: how training labels look, in words, for docs and error messages.
        input_kind: the `distilbert_heads.input_kinds.InputKind` that owns how its examples
            become encoder rows: `TEXT` (``[CLS] a [SEP]``), `PAIR` (``[CLS] a [SEP] b [SEP]``),
            `QUESTION_CONTEXT` (a pair whose second part, the context, is split into windows
            with a stride) or a plugin's own kind. A 0.1 head's string (a built-in kind's
            ``name``) still works: `input_kind_of` resolves it.
        example_schema: a pydantic model of one training example as a JSONL/CSV row, for
            training and evaluating from files.
        hf_architecture: the ``transformers`` class (``"DistilBertForSequenceClassification"``,
            ...) whose head `hf_head_weights` fills, or None when the head has no Hugging Face
            equivalent; with `hf_config`, what ``save_pretrained`` needs to write a task checkpoint.
    """

    task_types: ClassVar[tuple[str, ...]] = ()
    aliases: ClassVar[tuple[str, ...]] = ()
    description: ClassVar[str] = ""
    options_schema: ClassVar[type[HeadOptions]] = HeadOptions
    output_names: ClassVar[tuple[str, ...]] = ()
    label_format: ClassVar[str] = ""
    input_kind: ClassVar[InputKind | str] = TEXT
    example_schema: ClassVar[type[BaseModel] | None] = None
    hf_architecture: ClassVar[str | None] = None

    def __init__(
        self,
        hidden_size: int,
        task_type: str,
        options: HeadOptions | Mapping[str, Any] | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.hidden_size = int(hidden_size)
        self.task_type = str(getattr(task_type, "value", task_type))
        self.options = self.validate_options(options)

    @classmethod
    def validate_options(cls, options: HeadOptions | Mapping[str, Any] | None) -> HeadOptions:
        """Validate ``options`` against `options_schema`, with an error naming this head."""
        if isinstance(options, cls.options_schema):
            return options
        raw = dict(options.model_dump() if isinstance(options, BaseModel) else (options or {}))
        try:
            return cls.options_schema(**raw)
        except ValidationError as error:
            accepted = ", ".join(sorted(cls.options_schema.model_fields)) or "none"
            problems = "; ".join(
                f"{'.'.join(str(part) for part in item['loc']) or 'options'}: {item['msg']}" for item in error.errors()
            )
            raise HeadOptionsError(
                f"{cls.__name__} (task types: {', '.join(cls.task_types) or '-'}) rejected its options: "
                f"{problems}. Options it accepts: {accepted}."
            ) from error
        except Exception as error:  # a validator that raises TypeError & co. escapes pydantic: still this head's
            raise HeadOptionsError(
                f"{cls.__module__}:{cls.__qualname__} (task types: {', '.join(cls.task_types) or '-'}) failed to "
                f"validate its options {_short(raw)}: {type(error).__name__}: {error}. This is a bug in the head's "
                "options_schema; report it to the plugin's authors."
            ) from error

    # -- the encoder ---------------------------------------------------------------------
    def attach_encoder(self, encoder: Any) -> None:
        """Called by `DistilBertTaskModel` with its `DistilBERT` encoder before the head is built (and again when
        a saved model is rebuilt), for heads that share encoder weights, e.g. a masked-LM projector tied to the
        word embeddings. Keep a reference without tracking it as the head's own weight (the encoder owns and
        saves it; see the masked-LM head). Does nothing by default."""

    # -- the forward pass ---------------------------------------------------------------
    def call(self, hidden_states: Any, attention_mask: Any, training: bool | None = None) -> dict[str, Any]:
        raise NotImplementedError(f"{type(self).__name__} must implement call(hidden_states, attention_mask)")

    # -- training -----------------------------------------------------------------------
    def default_losses(self) -> dict[str, Any]:
        """Loss per output name, used when the user compiles without one."""
        raise NotImplementedError(f"{type(self).__name__} must implement default_losses()")

    def default_metrics(self) -> dict[str, list[Any]]:
        """Metrics per output name, used when the user compiles without any."""
        return {}

    def default_loss_weights(self) -> dict[str, float]:
        """Weight per output name of that output's loss (outputs left out weigh 1).

        ``model.compile(loss_weights=...)`` overrides them per output; either is multiplied by the
        head's ``loss_weight`` (`NLPTaskConfig`). A weight of 0 leaves that output untrained.
        """
        return {}

    # -- inference ----------------------------------------------------------------------
    def decode(self, outputs: Mapping[str, np.ndarray], encoding: Any = None) -> list[Any]:
        """Turn one batch of raw outputs (numpy) into answers for people, one per example."""
        raise NotImplementedError(f"{type(self).__name__} does not implement decode()")

    # -- data from files ----------------------------------------------------------------
    @classmethod
    def options_from_examples(cls, examples: Sequence[BaseModel]) -> dict[str, Any]:
        """Options the training data implies (e.g. ``labels`` in order of first appearance)."""
        return {}

    def encode_examples(
        self, examples: Sequence[BaseModel], tokenizer: Any, max_length: int
    ) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
        """Tokenize validated examples; return model inputs and labels keyed by output name."""
        raise NotImplementedError(
            f"{type(self).__name__} does not implement encode_examples(): it cannot train from files"
        )

    def prepare_batch(
        self, inputs: dict[str, np.ndarray], labels: dict[str, np.ndarray], *, tokenizer: Any, rng: np.random.Generator
    ) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
        """One padded training batch as the model sees it, drawn anew every epoch: the identity unless a head
        makes its inputs or labels per batch (the masked-LM head masks tokens here). ``rng`` is seeded by the
        run's seed, the epoch and the batch, so a resumed run sees the same batches."""
        return inputs, labels

    def evaluate(self, examples: Sequence[BaseModel], predictions: Sequence[Any]) -> dict[str, float]:
        """The metrics people expect for this task, from `decode`'s answers against the gold examples."""
        raise NotImplementedError(f"{type(self).__name__} does not implement evaluate()")

    # -- distillation -------------------------------------------------------------------
    def distillation_targets(self) -> dict[str, DistillationTarget] | None:
        """Which outputs a student distils from a teacher with this head, and how; None when undeclared.

        Keyed by output name; outputs left out are learnt from the labels alone. A head that returns
        None cannot be distilled task-specifically: `distillation_targets_of` says so, naming this hook.
        """
        return None

    # -- Hugging Face task checkpoints --------------------------------------------------
    def load_hf_head_weights(self, state_dict: Mapping[str, np.ndarray]) -> bool:
        """Copy this head's weights from a Hugging Face task checkpoint's state dict.

        Returns True when weights were found and loaded, False when the checkpoint has no
        weights for this head (the head then keeps its fresh initialisation).
        """
        return False

    def hf_head_weights(self) -> dict[str, np.ndarray]:
        """This head's weights under Hugging Face names, for `save_pretrained`; empty if none."""
        return {}

    def hf_config(self) -> dict[str, Any]:
        """What this head adds to a task checkpoint's ``config.json`` (``id2label``, ``label2id``,
        ``problem_type``, its dropout field), for `save_pretrained`; only read when `hf_architecture` is set."""
        return {}

    # -- serialization ------------------------------------------------------------------
    def get_config(self) -> dict[str, Any]:
        config = super().get_config()
        config.update(
            hidden_size=self.hidden_size,
            task_type=self.task_type,
            options=self.options.model_dump(mode="json"),
        )
        return config


def check_head_class(cls: type[TaskHead]) -> None:
    """Raise `HeadContractError` unless the class attributes the library reads have usable types.

    Run when a plugin registers the class, so a typo there fails that plugin alone, with its name,
    instead of a confusing error the first time a model is built or a pipeline decodes.
    """
    schema = cls.options_schema
    if not (isinstance(schema, type) and issubclass(schema, BaseModel)):
        raise HeadContractError(
            f"options_schema is {_short(schema)} ({cls.__module__}:{cls.__qualname__}); it must be a subclass of "
            "distilbert_heads.HeadOptions (a pydantic model of the head's options)."
        )
    names = cls.output_names
    if isinstance(names, str) or not isinstance(names, (tuple, list)) or not all(isinstance(n, str) for n in names):
        raise HeadContractError(
            f"output_names is {_short(names)} ({cls.__module__}:{cls.__qualname__}); it must be a tuple of output "
            'names, e.g. output_names = ("logits",) (note the comma).'
        )


def check_head_outputs(head: TaskHead, outputs: Any, *, batch_size: int, plugin: str | None = None) -> None:
    """Raise `HeadContractError` unless ``head``'s outputs and options keep the contract.

    Run once, when a task model is built on a dummy batch of ``batch_size`` rows: ``call``
    returns a non-empty dict whose keys are the declared ``output_names`` (when the head
    declares them), every output is a tensor whose first axis is the batch, and the options
    survive a JSON round trip (they are saved in the ``.keras`` config as JSON).
    """
    cls = type(head)
    who = describe_head(head, plugin)
    if not isinstance(outputs, Mapping) or not outputs:
        raise HeadContractError(
            f"{who}: call() returned {type(outputs).__name__} ({_short(outputs)}); a head's call must return a "
            f"non-empty dict of named outputs, e.g. {{'logits': logits}}"
            + (f" with the keys it declares, {list(cls.output_names)}." if cls.output_names else ".")
        )
    declared = tuple(cls.output_names)
    if declared and set(outputs) != set(declared):
        raise HeadContractError(
            f"{who}: call() returned outputs {sorted(map(str, outputs))} but the head declares "
            f"output_names={list(declared)}; make call() return exactly those keys (or fix output_names)."
        )
    for key, value in outputs.items():
        shape = getattr(value, "shape", None)
        if shape is None or len(shape) == 0 or (shape[0] is not None and int(shape[0]) != batch_size):
            raise HeadContractError(
                f"{who}: output {key!r} has shape {None if shape is None else tuple(shape)} for a batch of "
                f"{batch_size} sequences; every output must be a tensor whose first axis is the batch "
                f"({batch_size}, ...). Index per example along axis 0 (e.g. hidden_states[:, 0, :] for [CLS])."
            )
    try:
        dumped = json.dumps(head.options.model_dump(mode="json"))
        again = cls.validate_options(json.loads(dumped))
    except Exception as error:  # pydantic serialization, json or validation: all mean "not JSON-safe"
        raise HeadContractError(
            f"{who}: its options {head.options!r} cannot be saved as JSON ({type(error).__name__}: {error}). "
            "Use JSON types (str, int, float, bool, lists, dicts) in its options_schema."
        ) from error
    if again != head.options:
        raise HeadContractError(
            f"{who}: its options do not survive a JSON round trip ({head.options!r} came back as {again!r}), so a "
            "saved model would reload different. Use JSON types (str, int, float, bool, lists, dicts) in its "
            "options_schema."
        )


def distillation_targets_of(head: TaskHead, plugin: str | None = None) -> dict[str, DistillationTarget]:
    """``head``'s declared `DistillationTarget` per output, checked; `HeadContractError` when it declares none
    or declares them wrongly (an output it does not have, a value that is not a `DistillationTarget`)."""
    who = describe_head(head, plugin)
    try:
        declared = head.distillation_targets()
    except Exception as error:  # noqa: BLE001 - a head's code is plugin code
        raise head_code_failed(head, plugin, "distillation_targets", error, "when a distillation started") from error
    if not declared:
        raise HeadContractError(
            f"{who} declares no outputs to distil, so a student cannot learn it from a teacher. Implement "
            "distillation_targets() on the head, returning {output_name: DistillationTarget(...)}, e.g. "
            "{'logits': DistillationTarget(kind='logits', axis=-1)} (see distilbert_heads.DistillationTarget)."
        )
    if not isinstance(declared, Mapping):
        raise HeadContractError(
            f"{who}: distillation_targets() returned {_short(declared)}; it must return a dict "
            "{output_name: DistillationTarget(...)}."
        )
    outputs = tuple(type(head).output_names)
    for name, target in declared.items():
        if outputs and name not in outputs:
            raise HeadContractError(
                f"{who}: distillation_targets() names output {name!r}, which the head does not have; its outputs "
                f"are {list(outputs)}."
            )
        if not isinstance(target, DistillationTarget):
            raise HeadContractError(
                f"{who}: distillation_targets()[{name!r}] is {_short(target)}; it must be a "
                "distilbert_heads.DistillationTarget."
            )
    return dict(declared)


def describe_head(head: TaskHead | tuple[type[TaskHead], str, str], plugin: str | None = None) -> str:
    """``Head 'name' (module:Class, task type 't', plugin p)``: how errors about one head start.

    ``head`` is the head, or ``(head class, head name, task type)`` before it exists.
    """
    cls, name, task_type = head if isinstance(head, tuple) else (type(head), head.name, head.task_type)
    return f"Head {name!r} ({cls.__module__}:{cls.__qualname__}, task type {task_type!r}, plugin {plugin or 'unknown'})"


def head_code_failed(
    head: TaskHead | tuple[type[TaskHead], str, str], plugin: str | None, method: str, error: BaseException, when: str
) -> HeadContractError:
    """The error for a head's own code (``__init__``, ``call``, ``decode``) raising: names the head, its plugin and
    the cause (chain it: ``raise head_code_failed(...) from error``)."""
    original = unwrap_keras_error(error)
    text = " ".join(line.strip() for line in str(original).splitlines() if line.strip())
    return HeadContractError(
        f"{describe_head(head, plugin)}: {method}() raised {type(original).__name__}"
        + (f": {text if len(text) <= 300 else text[:297] + '...'}" if text else "")
        + f" {when}. Unless the input was invalid, this is a bug in the head's code: report it to the authors of "
        "the plugin that provides it, or use another head."
    )


def unwrap_keras_error(error: BaseException) -> BaseException:
    """The exception Keras re-raised as "Exception encountered when calling ...", when it kept it."""
    while getattr(error, "_keras_call_info_injected", False) and error.__context__ is not None:
        error = error.__context__
    return error


def _short(value: Any, limit: int = 120) -> str:
    try:
        text = repr(value)
    except Exception:  # noqa: BLE001 - a head's objects are plugin code
        text = f"<{type(value).__qualname__} object>"
    return text if len(text) <= limit else text[: limit - 3] + "..."
