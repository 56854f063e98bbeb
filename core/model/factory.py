"""Build task models: an encoder (random or from a checkpoint) plus heads from the registry.

Two entry points:

* `create_distilbert_with_head` for one head, in either of two spellings::

      create_distilbert_with_head(task_type="foo", distilbert_variant="tiny", num_classes=3)
      create_distilbert_with_head(distilbert_variant="base", pretrained=False,
                                  task_config=NLPTaskConfig(name="sent", task_type="sentiment", num_classes=3))

* `create_distilbert_with_heads` for several heads on one encoder.

Keyword arguments of `create_distilbert_with_head` are routed by name: the head's own options
(its ``options_schema`` fields) go to the head, `DistilBertConfig` fields (``vocab_size``,
``num_layers``, ...) to the encoder, and the rest to `NLPTaskConfig`. A name that is both a head
option and an encoder or task-level field is ambiguous and an error naming both: give it in
``head_options={...}`` (the head's alone), ``encoder_options={...}`` or ``task_config``.
"""

from __future__ import annotations

import os
import re
import warnings
from collections.abc import Mapping, Sequence
from typing import Any

from distilbert_heads.encoder import checkpoints
from distilbert_heads.encoder.checkpoints import Checkpoint
from distilbert_heads.encoder.config import PRETRAINED_IDS, DistilBertConfig
from distilbert_heads.encoder.distilbert import DistilBERT, check_variant_shape, published_checkpoint
from distilbert_heads.model.task_model import DistilBertTaskModel, make_head
from distilbert_heads.plugins.head import HeadOptionsError, TaskHead
from distilbert_heads.plugins.registry import get_head
from distilbert_heads.tasks import TASK_LEVEL_FIELDS, NLPTaskConfig, NLPTaskType, normalize_task_type
from distilbert_heads.text.tokenizer import DistilBertTokenizer

__all__ = ["ENCODER_FIELDS", "create_distilbert_with_head", "create_distilbert_with_heads"]

ENCODER_FIELDS = frozenset(DistilBertConfig.model_fields)

Pretrained = bool | str | os.PathLike


def create_distilbert_with_head(
    task_type: str | NLPTaskType | None = None,
    *,
    task_config: NLPTaskConfig | Mapping[str, Any] | None = None,
    distilbert_variant: str = "base",
    pretrained: Pretrained = False,
    name: str | None = None,
    head_options: Mapping[str, Any] | None = None,
    encoder_options: Mapping[str, Any] | None = None,
    tokenizer: DistilBertTokenizer | None = None,
    dtype: str | None = None,
    allow_partial: bool = False,
    layers: Sequence[int] | None = None,
    **kwargs: Any,
) -> DistilBertTaskModel:
    """A DistilBERT encoder with one task head; outputs are ``outputs[head_name][output_name]``.

    Args:
        task_type: an `NLPTaskType`, its value, an alias (``"sentiment"``, ``"ner"``, ``"qa"``,
            ``"pairwise"``) or a plugin's task type (``"foo"``). May come from ``task_config``.
        task_config: the original README's form; its fields and ``options`` go to the head.
        distilbert_variant: ``"tiny"``, ``"small"`` or ``"base"`` (ignored when ``pretrained``
            names a checkpoint, whose own shape is used).
        pretrained: False (random weights); True (the variant's published checkpoint); or a
            Hugging Face checkpoint directory or hub id, whose task-head weights (if any)
            are loaded into the head too.
        name: the head's name, keying its outputs and labels; defaults to the task type as
            given (``"sentiment"`` for ``task_type="sentiment"``).
        head_options: options for the head alone, validated by its schema only (never read as
            encoder or `NLPTaskConfig` fields); they win over keyword options.
        encoder_options: `DistilBertConfig` fields for the encoder alone.
        tokenizer: the model's tokenizer, saved inside its ``.keras`` file (``model.tokenizer``).
        dtype: a Keras dtype policy for encoder and heads, saved with the model. On CPUs with
            bfloat16 instructions, ``"bfloat16"`` is the fastest inference mode (weights stored in
            bfloat16; softmax and LayerNorm still computed in float32); ``"mixed_bfloat16"`` keeps
            float32 weights and is the one to train with.
        allow_partial: with a checkpoint ``pretrained``, load it even if it lacks encoder weights
            (they stay random; see ``model.encoder.load_report.missing``). Without it, that is a
            `CheckpointError` listing the missing weights.
        layers: with a checkpoint ``pretrained``, the checkpoint layers that become the encoder's,
            in order (e.g. ``[0, 2, 4]``; default all); see `DistilBERT.from_pretrained`.
        **kwargs: the head's options, `DistilBertConfig` fields (the encoder's) and `NLPTaskConfig`
            fields, routed by name (see the module docstring).

    Raises:
        UnknownTaskTypeError: no installed plugin serves ``task_type``.
        HeadOptionsError: an option the head does not accept, named with the head; or a keyword that is
            both a head option and an encoder or task-level field.
    """
    if task_config is None:
        if task_type is None:
            raise TypeError(
                "create_distilbert_with_head needs a task: pass task_type='sentiment' (or another task type) "
                "or task_config=NLPTaskConfig(task_type=...)."
            )
        given: dict[str, Any] = {"task_type": task_type}
    else:
        config = _task_config(task_config, index=0)
        if task_type is not None and normalize_task_type(task_type) != config.task_type:
            raise ValueError(
                f"task_type={normalize_task_type(task_type)!r} disagrees with task_config.task_type="
                f"{config.task_type!r}; give the task type once."
            )
        if name is not None and config.name is not None and name != config.name:
            raise ValueError(f"name={name!r} disagrees with task_config.name={config.name!r}; give the name once.")
        given = config.model_dump(exclude_unset=True)
    head_class = get_head(given["task_type"]).head_class
    encoder_overrides, head_keywords, config_keywords = _route_keywords(head_class, kwargs)
    encoder_overrides.update(encoder_options or {})
    given.update(config_keywords)
    if name is not None:
        given["name"] = name
    given["options"] = {**given.get("options", {}), **head_keywords, **dict(head_options or {})}
    config = _task_config(given, index=0)
    return create_distilbert_with_heads(
        [config],
        distilbert_variant=distilbert_variant,
        pretrained=pretrained,
        tokenizer=tokenizer,
        dtype=dtype,
        allow_partial=allow_partial,
        layers=layers,
        **encoder_overrides,
    )


def create_distilbert_with_heads(
    task_configs: Sequence[NLPTaskConfig | Mapping[str, Any]],
    *,
    distilbert_variant: str = "base",
    pretrained: Pretrained = False,
    model_name: str | None = None,
    tokenizer: DistilBertTokenizer | None = None,
    dtype: str | None = None,
    allow_partial: bool = False,
    layers: Sequence[int] | None = None,
    **encoder_overrides: Any,
) -> DistilBertTaskModel:
    """One encoder with several heads; outputs are keyed by head name, losses weighted by ``loss_weight``.

    ``task_configs`` are `NLPTaskConfig` objects or dicts of their fields; head names default
    to the task type as given and must be unique. ``encoder_overrides`` must be
    `DistilBertConfig` fields. ``pretrained``, ``tokenizer``, ``dtype``, ``allow_partial`` and ``layers``
    as in `create_distilbert_with_head`.
    """
    unknown = sorted(set(encoder_overrides) - ENCODER_FIELDS)
    if unknown:
        raise TypeError(
            f"{', '.join(unknown)} {'is' if len(unknown) == 1 else 'are'} not DistilBERT encoder options "
            f"(those are {', '.join(sorted(ENCODER_FIELDS))}); put head options in each task config."
        )
    if isinstance(task_configs, (NLPTaskConfig, Mapping)) or not task_configs:
        raise TypeError("task_configs must be a non-empty list of NLPTaskConfig (or dicts of their fields).")
    configs = [_task_config(item, index) for index, item in enumerate(task_configs)]
    names = [config.name or _default_head_name(config.task_type) for config in configs]
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        raise ValueError(
            f"Several heads would be named {', '.join(map(repr, duplicates))}; head names key the outputs and "
            "must be unique. Give each a name: NLPTaskConfig(name='...', task_type=...)."
        )
    records = [get_head(config.task_type) for config in configs]

    model_kwargs = {} if dtype is None else {"dtype": dtype}
    encoder, checkpoint = _make_encoder(
        distilbert_variant,
        pretrained,
        {**encoder_overrides, **model_kwargs},
        allow_partial=allow_partial,
        layers=layers,
    )
    heads = []
    for config, head_name, record in zip(configs, names, records):
        options = config.head_options()
        if checkpoint is not None:
            options = _infer_classes(options, record.head_class, checkpoint)
        heads.append(make_head(record, encoder.config.hidden_size, options, head_name, **model_kwargs))
    model = DistilBertTaskModel(
        encoder,
        heads,
        loss_weights={head_name: config.loss_weight for head_name, config in zip(names, configs)},
        provenance={
            head_name: {"plugin": r.plugin, "distribution": r.distribution, "version": r.version}
            for head_name, r in zip(names, records)
        },
        name=model_name,
        tokenizer=tokenizer,
        **model_kwargs,
    )
    if pretrained is not False and pretrained is not None:
        _load_head_weights(
            model,
            checkpoint,
            source=str(pretrained if pretrained is not True else PRETRAINED_IDS.get(distilbert_variant)),
        )
    return model


# -- helpers -----------------------------------------------------------------------------------
def _route_keywords(
    head_class: type[TaskHead], kwargs: Mapping[str, Any]
) -> tuple[dict[str, Any], dict[str, Any], dict[str, Any]]:
    """Split keywords into (encoder overrides, head options, `NLPTaskConfig` fields) by name.

    The head's own options go to the head directly, so `NLPTaskConfig`'s typing of same-named
    fields (``labels``, ``temperature``, ...) never judges another head's option. A head option
    that is also an encoder or task-level field is ambiguous: a `HeadOptionsError` naming both.
    """
    head_fields = set(head_class.options_schema.model_fields)
    encoder: dict[str, Any] = {}
    head: dict[str, Any] = {}
    config: dict[str, Any] = {}
    for key, value in kwargs.items():
        if key in head_fields:
            _refuse_ambiguous(head_class, key, value)
            head[key] = value
        elif key in ENCODER_FIELDS:
            encoder[key] = value
        else:
            config[key] = value
    return encoder, head, config


def _refuse_ambiguous(head_class: type[TaskHead], key: str, value: Any) -> None:
    """Raise when head option ``key`` is also an encoder or task-level keyword."""
    if key in ENCODER_FIELDS:
        other, fix = "a DistilBertConfig field (the encoder's)", f"encoder_options={{{key!r}: {value!r}}}"
    elif key in TASK_LEVEL_FIELDS:
        other, fix = "a task-level NLPTaskConfig field", f"task_config=NLPTaskConfig(task_type=..., {key}={value!r})"
    else:
        return
    raise HeadOptionsError(
        f"{key}={value!r} is ambiguous: it is an option of {head_class.__name__} (task types: "
        f"{', '.join(head_class.task_types) or '-'}) and {other}. Pass head_options={{{key!r}: {value!r}}} for the "
        f"head's, or {fix} for the other."
    )


def _task_config(item: NLPTaskConfig | Mapping[str, Any], index: int) -> NLPTaskConfig:
    if isinstance(item, NLPTaskConfig):
        return item
    if isinstance(item, Mapping):
        fields = {key: value for key, value in item.items() if not (key == "name" and value is None)}
        if isinstance(fields.get("task_type"), (str, NLPTaskType)):
            # The head's own options skip NLPTaskConfig's typing of same-named fields (see _route_keywords).
            head_class = get_head(fields["task_type"]).head_class
            options = dict(fields.pop("options", None) or {})
            for key in [key for key in fields if key in head_class.options_schema.model_fields]:
                if key in TASK_LEVEL_FIELDS:
                    raise HeadOptionsError(
                        f"task config #{index}: {key!r} is both an option of {head_class.__name__} and a task-level "
                        f"NLPTaskConfig field; put the head's in the config's options={{{key!r}: ...}}."
                    )
                options.setdefault(key, fields.pop(key))
            fields["options"] = options
        return NLPTaskConfig(**fields)
    raise TypeError(
        f"task config #{index} is a {type(item).__name__}; expected NLPTaskConfig(...) or a dict of its fields."
    )


def _default_head_name(task_type: str) -> str:
    """The task type as given (an alias or a key), made into an identifier."""
    return re.sub(r"[^A-Za-z0-9_]", "_", task_type)


def _make_encoder(
    variant: str,
    pretrained: Pretrained,
    overrides: dict[str, Any],
    allow_partial: bool = False,
    layers: Sequence[int] | None = None,
) -> tuple[DistilBERT, Checkpoint | None]:
    source = (
        ""
        if pretrained is False or pretrained is None
        else os.fspath(published_checkpoint(variant) if pretrained is True else pretrained)
    )
    if layers is not None and (not source or checkpoints.is_keras_file(source)):
        raise ValueError(
            f"layers={layers!r} picks layers of a Hugging Face checkpoint, but pretrained={pretrained!r} is "
            f"{'a .keras file' if source else 'no checkpoint'}; pass pretrained='<checkpoint dir>' or drop layers."
        )
    if not source:
        return DistilBERT.from_variant(variant, pretrained=False, **overrides), None
    if checkpoints.is_keras_file(source):
        return DistilBERT.from_keras_file(source, **overrides), None
    checkpoint = checkpoints.Checkpoint.read(source)  # once, for the encoder and the heads
    encoder = DistilBERT.from_checkpoint(
        checkpoint, source=source, allow_partial=allow_partial, layers=layers, **overrides
    )
    if pretrained is True:
        check_variant_shape(encoder.config, variant, source, "from_pretrained")
    return encoder, checkpoint


def _infer_classes(options: dict[str, Any], head_class: type, checkpoint: Checkpoint) -> dict[str, Any]:
    """Take ``num_classes`` (and class names) from the checkpoint's classifier when not given."""
    fields = getattr(head_class.options_schema, "model_fields", {})
    if "num_classes" not in fields or options.get("num_classes") is not None or options.get("labels"):
        return options
    classifier = checkpoint.state_dict.get("classifier.weight")
    if classifier is None or len(getattr(classifier, "shape", ())) != 2:
        return options
    options = {**options, "num_classes": int(classifier.shape[0])}
    id2label = checkpoint.hf_config.get("id2label") or {}
    names = [id2label.get(str(i), id2label.get(i)) for i in range(options["num_classes"])]
    generic = all(n == f"LABEL_{i}" for i, n in enumerate(names))
    if "labels" in fields and all(isinstance(n, str) for n in names) and not generic and len(set(names)) == len(names):
        options["labels"] = names
    return options


def _load_head_weights(model: DistilBertTaskModel, checkpoint: Checkpoint | None, source: str) -> None:
    """Load each head's weights from the checkpoint; say once per head when there are none."""
    for head_name, head in model.heads.items():
        loaded = checkpoint is not None and head.load_hf_head_weights(checkpoint.state_dict)
        if not loaded:
            # Why a checkpoint's own head was not used (a BERT classifier on the pooler), when known.
            why = "".join(f"; {note}" for note in (checkpoint.encoder_state().head_notes if checkpoint else []))
            warnings.warn(
                f"{source} has no weights for head {head_name!r} ({type(head).__name__}, task type "
                f"{head.task_type!r}){why}; the head starts from a random initialisation. Train it before use.",
                UserWarning,
                stacklevel=3,
            )
