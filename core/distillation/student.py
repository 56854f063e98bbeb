"""A student from a teacher: the teacher's embeddings, some of its layers and its heads, in a smaller model.

As in the DistilBERT paper (transformers' ``scripts/extract_distilbert.py``), the student starts as a copy of
the teacher with fewer layers: the embeddings, and teacher layers picked by a layer map (by default
`default_layer_map`: every other layer, ``[0, 2, 4, 7, 9, 11]`` of 12), become the student's layers
``0, 1, 2, ...``. A task model's student gets the same heads (class, name, task type, options, plugin),
with the teacher's head weights, tokenizer and ``max_length``.

What can be copied is decided in one place, `check_student_config`: a student of another vocabulary is
refused (soft targets need the teacher's tokenizer); one of another width or layer shape is refused too,
unless ``projection=True`` asks for a student started fresh at its own size (only what fits is copied) whose
hidden states the distiller maps onto the teacher's with a learned projection.

How the student was made is recorded in `StudentOrigin`: on the model as ``model.student_origin`` and, for a
task model, in its ``training_record["student"]`` (saved in the ``.keras`` file); `student_origin_of` reads it.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from pydantic import BaseModel, ConfigDict

from distilbert_heads.encoder import checkpoints
from distilbert_heads.encoder.config import DistilBertConfig
from distilbert_heads.encoder.distilbert import DistilBERT
from distilbert_heads.model.loading import load_task_model
from distilbert_heads.model.task_model import DistilBertTaskModel
from distilbert_heads.plugins.head import TaskHead, head_code_failed
from distilbert_heads.training.run_record import plain, training_record

__all__ = [
    "StudentError",
    "StudentOrigin",
    "check_student_config",
    "default_layer_map",
    "student_from_teacher",
    "student_origin_of",
]

# Fields a student may choose freely: they change training, not what the weights mean.
FREE_FIELDS = ("dropout_rate", "attention_dropout_rate", "initializer_range")
# Fields that make the student read other token ids than the teacher: never allowed to differ.
TOKENIZER_FIELDS = ("vocab_size", "pad_token_id")
# Fields that give a transformer layer other weights or another function than the teacher's.
LAYER_FIELDS = ("num_heads", "intermediate_size", "hidden_act", "layer_norm_eps")
# Fields that give the position embeddings another shape.
POSITION_FIELDS = ("max_position_embeddings", "sinusoidal_pos_embds")

Teacher = DistilBERT | DistilBertTaskModel | str | os.PathLike


class StudentError(ValueError):
    """A student that cannot be made from this teacher as asked (sizes, vocabulary, layer map)."""


class StudentOrigin(BaseModel):
    """How a student was made from its teacher; plain JSON data.

    teacher: where the teacher came from (a path, or ``encoder 'name'`` / ``task model 'name'`` when given in memory).
    teacher_hidden_size / teacher_num_layers: the teacher's width and depth.
    hidden_size: the student's width; when it differs from the teacher's, hidden-state matching needs a learned
        projection (`needs_projection`).
    layers: the teacher layers copied into student layers 0, 1, ... in that order; None when none were copied.
    projection: whether ``projection=True`` was asked for.
    copied: what was copied, by the student's Hugging Face key prefixes (``embeddings.word_embeddings``,
        ``transformer.layer.0``)
        and ``head <name>``; the rest of the student starts from its fresh initialisation.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    teacher: str
    teacher_hidden_size: int
    teacher_num_layers: int
    hidden_size: int
    layers: list[int] | None
    projection: bool
    copied: list[str]

    @property
    def needs_projection(self) -> bool:
        """Whether the student's hidden states must be projected to the teacher's width to be compared."""
        return self.hidden_size != self.teacher_hidden_size


def default_layer_map(num_layers: int) -> list[int]:
    """The teacher layers a student keeps by default: half of them (at least one), the lower half every other
    layer from the bottom and the upper half every other layer aligned to the top.

    12 layers give ``[0, 2, 4, 7, 9, 11]`` (the DistilBERT paper's), 6 give ``[0, 2, 5]``.
    """
    if isinstance(num_layers, bool) or not isinstance(num_layers, (int, np.integer)) or num_layers < 1:
        raise ValueError(f"num_layers must be a positive whole number of teacher layers, got {num_layers!r}.")
    keep = max(1, int(num_layers) // 2)
    bottom = [2 * index for index in range((keep + 1) // 2)]
    top = [int(num_layers) - 1 - 2 * index for index in range(keep // 2)]
    return bottom + top[::-1]


def check_student_config(
    teacher: DistilBertConfig, student: DistilBertConfig, *, projection: bool, source: str
) -> bool:
    """Raise `StudentError` unless a student of config ``student`` can be made from a teacher of config
    ``teacher``; return whether the teacher's layers can be copied into it. The one owner of these rules:

    * another vocabulary (``vocab_size``, ``pad_token_id``): always refused, soft targets need the same tokenizer;
    * another ``hidden_size``: refused unless ``projection`` (then nothing of the encoder is copied);
    * other layer shapes (``num_heads``, ``intermediate_size``, ``hidden_act``, ``layer_norm_eps``) or position
      embeddings (``max_position_embeddings``, ``sinusoidal_pos_embds``): refused unless ``projection`` (then
      only the weights that still fit are copied);
    * ``dropout_rate``, ``attention_dropout_rate`` and ``initializer_range`` may differ; ``num_layers`` is the
      student's depth (the layer map's length).
    """
    vocabulary = _differences(teacher, student, TOKENIZER_FIELDS)
    if vocabulary:
        raise StudentError(
            f"The student asks for {vocabulary}, but the teacher ({source}) reads {_values(teacher, TOKENIZER_FIELDS)}"
            ": distillation compares the two models' outputs on the same token ids, so the student must use the "
            f"teacher's tokenizer. Keep vocab_size={teacher.vocab_size} and pad_token_id={teacher.pad_token_id} "
            "(leave them out of config); projection=True does not change this."
        )
    if student.hidden_size != teacher.hidden_size and not projection:
        raise StudentError(
            f"The teacher ({source}) has hidden_size {teacher.hidden_size} and the student asks for "
            f"{student.hidden_size}: the embeddings are hidden_size wide and a layer's weights are hidden_size x "
            "hidden_size matrices, so none of the teacher's can be copied into a student of another width. Keep "
            f"hidden_size={teacher.hidden_size}, or pass projection=True to start the student fresh at "
            f"{student.hidden_size} (the distiller then learns a projection to compare hidden states)."
        )
    shapes = _differences(teacher, student, LAYER_FIELDS + POSITION_FIELDS)
    if shapes and not projection:
        raise StudentError(
            f"The student asks for {shapes} where the teacher ({source}) has "
            f"{_values(teacher, [field for field in LAYER_FIELDS + POSITION_FIELDS if field in shapes])}: the "
            "teacher's weights have other shapes or compute something else, so they cannot be copied. Keep the "
            "teacher's values (leave them out of config), or pass projection=True to start what does not fit "
            "fresh (the weights that fit, e.g. the embeddings, are still copied)."
        )
    return student.hidden_size == teacher.hidden_size and not _differences(teacher, student, LAYER_FIELDS)


def student_from_teacher(
    teacher: Teacher,
    layers: Sequence[int] | None = None,
    *,
    config: DistilBertConfig | Mapping[str, Any] | None = None,
    projection: bool = False,
) -> DistilBERT | DistilBertTaskModel:
    """A smaller student initialised from ``teacher``: its embeddings, the teacher layers ``layers`` (default
    `default_layer_map`) as the student's layers in that order, and, for a task model, the same heads with the
    teacher's head weights, tokenizer and ``max_length``.

    Args:
        teacher: a `DistilBERT` (gives a `DistilBERT`), a `DistilBertTaskModel` or the path of its ``.keras``
            file (gives a `DistilBertTaskModel`), or a Hugging Face DistilBERT or BERT checkpoint directory or
            hub id (gives a `DistilBERT`, loaded by `DistilBERT.from_pretrained` with ``layers``).
        layers: teacher layer indices, each at most once, e.g. ``[0, 2, 4]``; ``list(range(n))`` copies the
            whole teacher.
        config: `DistilBertConfig` fields of the student (a dict or a config) where it differs from the
            teacher; ``num_layers`` must match ``layers``. See `check_student_config` for what may differ.
        projection: allow a student of another width or layer shape: it starts fresh at its own size and only
            the weights that fit are copied (`StudentOrigin.copied`); the distiller projects its hidden states.

    The result's ``student_origin`` (`StudentOrigin`) says how it was made; a task model keeps it in its
    ``training_record["student"]`` too. Raises `StudentError` for a student that cannot be made as asked.
    """
    if not isinstance(projection, bool):
        raise TypeError(f"projection must be True or False, got {projection!r}.")
    if isinstance(teacher, DistilBertTaskModel):
        return _task_model_student(teacher, f"task model {teacher.name!r}", layers, config, projection)
    if isinstance(teacher, DistilBERT):
        return _encoder_student(teacher, f"encoder {teacher.name!r}", layers, config, projection)
    if isinstance(teacher, (str, os.PathLike)):
        source = os.fspath(teacher)
        if checkpoints.is_keras_file(source):
            return _task_model_student(load_task_model(source), source, layers, config, projection)
        return _checkpoint_student(checkpoints.Checkpoint.read(source), source, layers, config, projection)
    raise TypeError(
        f"teacher must be a DistilBERT, a DistilBertTaskModel, the path of a .keras task model or a Hugging Face "
        f"checkpoint directory, got {type(teacher).__name__}."
    )


def student_origin_of(model: Any) -> StudentOrigin | None:
    """How ``model`` was made by `student_from_teacher` (also after a save and reload), or None."""
    origin = getattr(model, "student_origin", None)
    if isinstance(origin, StudentOrigin):
        return origin
    record = getattr(model, "training_record", None)
    if isinstance(record, Mapping) and isinstance(record.get("student"), Mapping):
        return StudentOrigin.model_validate(record["student"])
    return None


# -- the plan: the student's config and which teacher layers it takes ---------------------------------------
def _plan(
    teacher: DistilBertConfig,
    layers: Sequence[int] | None,
    config: DistilBertConfig | Mapping[str, Any] | None,
    projection: bool,
    source: str,
) -> tuple[DistilBertConfig, list[int] | None]:
    """The student's config and the teacher layers it copies (None when its layers start fresh)."""
    if config is not None and not isinstance(config, (DistilBertConfig, Mapping)):
        raise TypeError(f"config must be a dict of DistilBertConfig fields or a DistilBertConfig, got {config!r}.")
    fields = dict(config.model_dump() if isinstance(config, DistilBertConfig) else config or {})
    depth = fields.pop("num_layers", None)
    student = DistilBertConfig.build(**{**teacher.model_dump(), **fields, "num_layers": depth or 1})
    copy_layers = check_student_config(teacher, student, projection=projection, source=source)
    available = teacher.num_layers
    if not copy_layers:
        if layers is not None:
            raise StudentError(
                f"layers={list(layers)!r} picks teacher layers to copy, but this student's layers differ from the "
                f"teacher's ({source}) so none can be copied. Drop layers and give the student's depth as "
                "config={'num_layers': N}."
            )
        return student.model_copy(update={"num_layers": depth or len(default_layer_map(available))}), None
    if layers is None:
        layers = default_layer_map(available)
        if depth is not None and depth != len(layers):
            raise StudentError(
                f"config asks for num_layers={depth}, but the default layer map keeps {len(layers)} of the "
                f"{available} layers of the teacher ({source}): {layers}. Pass layers=[...] with {depth} teacher "
                f"layers, e.g. layers={_spread(available, depth)}."
            )
    layers = checkpoints.check_layer_map(layers, available, source)
    if depth is not None and depth != len(layers):
        raise StudentError(
            f"config asks for num_layers={depth}, but layers={layers} gives the student {len(layers)} layers; "
            "the student has one layer per entry of layers. Drop num_layers from config, or make them agree."
        )
    return student.model_copy(update={"num_layers": len(layers)}), layers


def _spread(available: int, count: int) -> list[int]:
    """``count`` teacher layers spread evenly from the first to the last: a suggestion for error messages."""
    if count > available:
        return list(range(available))
    return sorted({int(round(value)) for value in np.linspace(0, available - 1, count)})


def _differences(teacher: DistilBertConfig, student: DistilBertConfig, fields: Sequence[str]) -> str:
    return ", ".join(
        f"{field}={getattr(student, field)!r}" for field in fields if getattr(student, field) != getattr(teacher, field)
    )


def _values(config: DistilBertConfig, fields: Sequence[str]) -> str:
    return ", ".join(f"{field}={getattr(config, field)!r}" for field in fields)


# -- the three kinds of teacher ------------------------------------------------------------------------------
def _encoder_student(
    teacher: DistilBERT,
    source: str,
    layers: Sequence[int] | None,
    config: DistilBertConfig | Mapping[str, Any] | None,
    projection: bool,
) -> DistilBERT:
    student_config, kept = _plan(teacher.config, layers, config, projection, source)
    student = DistilBERT.from_config_model(student_config, name=teacher.name, dtype=teacher.dtype_policy.name)
    state = checkpoints.to_distilbert_state(
        checkpoints.encoder_state_dict(teacher), teacher.config.to_hf_dict(), source=source, layers=kept
    )
    copied = _load_fitting(student, state, source, copy_layers=kept is not None)
    student.student_origin = _origin(teacher.config, student_config, source, kept, projection, copied)
    return student


def _checkpoint_student(
    checkpoint: checkpoints.Checkpoint,
    source: str,
    layers: Sequence[int] | None,
    config: DistilBertConfig | Mapping[str, Any] | None,
    projection: bool,
) -> DistilBERT:
    teacher_config = DistilBertConfig.from_hf_dict(
        checkpoint.hf_config, source=str(checkpoint.directory / checkpoints.CONFIG_NAME)
    )
    student_config, kept = _plan(teacher_config, layers, config, projection, source)
    if kept is not None and not _differences(teacher_config, student_config, POSITION_FIELDS):
        # Everything fits: the checkpoint loader itself keeps the layers (and reports what it folded and dropped).
        overrides = {
            field: getattr(student_config, field)
            for field in FREE_FIELDS
            if getattr(student_config, field) != getattr(teacher_config, field)
        }
        student = DistilBERT.from_checkpoint(checkpoint, source=source, layers=kept, **overrides)
        copied = _copied_prefixes(student.load_report.loaded)
    else:
        student = DistilBERT.from_config_model(student_config)
        copied = _load_fitting(student, checkpoint.encoder_state(kept), source, copy_layers=kept is not None)
    student.student_origin = _origin(teacher_config, student_config, source, kept, projection, copied)
    return student


def _task_model_student(
    teacher: DistilBertTaskModel,
    source: str,
    layers: Sequence[int] | None,
    config: DistilBertConfig | Mapping[str, Any] | None,
    projection: bool,
) -> DistilBertTaskModel:
    encoder = _encoder_student(teacher.encoder, source, layers, config, projection)
    origin: StudentOrigin = encoder.student_origin
    hidden_size = encoder.config.hidden_size
    heads = [_same_head(teacher, name, head, hidden_size) for name, head in teacher.heads.items()]
    student = DistilBertTaskModel(
        encoder,
        heads,
        loss_weights=teacher.head_loss_weights,
        provenance={
            name: {key: provenance.get(key) for key in ("plugin", "distribution", "version")}
            for name, provenance in teacher.head_provenance.items()
        },
        tokenizer=teacher.tokenizer,
        max_length=min(teacher.max_length, encoder.config.max_position_embeddings),
        name=teacher.name,
        dtype=teacher.dtype_policy.name,
    )
    copied = list(origin.copied)
    for name, head in teacher.heads.items():
        weights = head.get_weights()
        target = student.heads[name]
        if [np.shape(w) for w in weights] == [tuple(w.shape) for w in target.weights]:
            target.set_weights(weights)
            copied.append(f"head {name}")
    origin = origin.model_copy(update={"copied": copied})
    record = training_record(
        settings={
            "made_by": "student_from_teacher",
            "teacher": source,
            "layers": plain(layers),
            "config": plain(config.model_dump() if isinstance(config, DistilBertConfig) else config),
            "projection": projection,
        },
        data={},
    )
    student.training_record = {**record, "student": origin.model_dump(mode="json")}
    student.student_origin = origin
    return student


def _same_head(teacher: DistilBertTaskModel, name: str, head: TaskHead, hidden_size: int) -> TaskHead:
    """A new head of ``head``'s class, task type and options at ``hidden_size``, named ``name``."""
    try:
        return type(head)(
            hidden_size=hidden_size,
            task_type=head.task_type,
            options=head.options.model_dump(mode="json"),
            name=name,
            dtype=head.dtype_policy.name,
        )
    except Exception as error:  # a head's constructor is plugin code
        raise head_code_failed(
            head, teacher.head_plugin(name), "__init__", error, "building the student's copy of the head"
        ) from error


# -- copying weights -----------------------------------------------------------------------------------------
def _load_fitting(student: DistilBERT, state: checkpoints.EncoderState, source: str, *, copy_layers: bool) -> list[str]:
    """Copy into ``student`` the teacher weights of ``state`` that fit it (the layers only when ``copy_layers``);
    the key prefixes copied. All of them must fit unless the student was asked to differ (projection)."""
    expected = {
        key: tuple(variable.shape)[::-1] if transpose else tuple(variable.shape)
        for key, variable, transpose in checkpoints.encoder_weight_map(student)
    }
    fitting: dict[str, np.ndarray] = {}
    for key, value in state.state.items():
        name = key.removeprefix(checkpoints.ENCODER_PREFIX)
        is_layer = name.startswith("transformer.layer.")
        if name in expected and tuple(np.shape(value)) == expected[name] and (copy_layers or not is_layer):
            fitting[name] = value
    report = checkpoints.load_encoder_weights(
        student, fitting, source=source, allow_partial=len(fitting) < len(expected)
    )
    report.folded, report.dropped, report.layers = dict(state.folded), dict(state.dropped), state.layers
    student.load_report = report
    return _copied_prefixes(report.loaded)


def _copied_prefixes(keys: Sequence[str]) -> list[str]:
    """``embeddings.word_embeddings``, ``transformer.layer.0``, ...: the modules some of ``keys`` belong to."""
    prefixes: dict[str, None] = {}
    for key in keys:
        parts = key.split(".")
        prefixes[".".join(parts[:3] if parts[0] == "transformer" else parts[:2])] = None
    return list(prefixes)


def _origin(
    teacher: DistilBertConfig,
    student: DistilBertConfig,
    source: str,
    layers: list[int] | None,
    projection: bool,
    copied: list[str],
) -> StudentOrigin:
    return StudentOrigin(
        teacher=source,
        teacher_hidden_size=teacher.hidden_size,
        teacher_num_layers=teacher.num_layers,
        hidden_size=student.hidden_size,
        layers=layers,
        projection=projection,
        copied=copied,
    )
