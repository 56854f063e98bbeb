"""Text in, answers out: `pipeline(model_or_path)` runs a task model on raw text.

::

    from distilbert_heads import pipeline

    classify = pipeline("sentiment.keras")           # the tokenizer travels inside the file
    classify("What a film!")                         # {"label": "positive", "score": 0.97}
    classify(["Great.", "Awful."], top_k=2)          # one answer per text, in input order

    pairs = pipeline("nli.keras")
    pairs(("A man sleeps.", "Nobody sleeps."))       # {"label": "contradiction", "score": ...}

    qa = pipeline("qa.keras", max_length=384, stride=128)
    qa(question="Who wrote it?", context=long_text)  # {"answer", "score", "start", "end"}

Every answer is produced by the head's own ``decode``: the pipeline only packs the text the
way the head's input kind says (`distilbert_heads.plugins.input_kinds`: what a call takes, how it
is packed, the window stride), runs the model and hands ``decode`` the raw outputs of one batch
(numpy), the tokenizer's `BatchEncoding` of that batch and the texts as the kind's keywords
(``texts=``, ``pairs=`` or ``questions=`` / ``contexts=``), the pipeline's tokenizer as ``tokenizer=`` when
``decode`` names that parameter (fill-mask names its tokens), plus any keyword the caller gave
(``top_k=2``). A head whose
``decode`` takes no such keyword simply does not get it, so plugin heads written against the
bare ``decode(outputs, encoding)`` work unchanged.

Batching: inputs are sorted by length (words and punctuation marks, a cheap stand-in for
tokens that ignores word pieces), cut into batches of ``batch_size`` and each batch is padded
only to its own longest row, so short texts never pay for 512 positions; answers come back
in the order of the inputs. Question/context inputs are split into windows of ``max_length``
tokens overlapping by ``stride`` tokens (only the context is cut; the question repeats in
each window; the stride rule is `QuestionContextKind`'s, the same as training's), the model
runs on batches of ``batch_size`` windows, and the head merges each question's windows
(through ``encoding.overflow_to_sample``). A kind with several encoder rows per example
(``(B, N, L)`` inputs) runs ``batch_size`` examples per forward pass.

Edge cases, by design:
- an empty or whitespace-only text is tokenized as ``[CLS] [SEP]`` (a pair as
  ``[CLS] a [SEP] [SEP]``) and gets the head's answer for that, like any other input (a
  classifier still answers with a label; NER returns no entities);
- a text longer than ``max_length`` tokens is truncated to ``max_length`` (pairs: the longer
  text is trimmed first); question/context inputs are never truncated but windowed;
- a question so long that no context fits beside it in ``max_length`` is an error naming
  the input;
- lone surrogates (``"\\ud800"``) become U+FFFD, one for one, so answers' character offsets
  still point into the text as given; control characters are dropped by BERT's normalizer;
- a huge text costs what its kept tokens cost: only a bounded prefix is tokenized (see the
  tokenizer); a question/context text past ``MAX_WHOLE_TEXT_CHARS`` (1,000,000) characters is
  an error naming the input, since every window of it would be run;
- an empty list gives an empty list; inputs go through the same checks as an eager call
  (`predict_on_batch` runs `validate_encoder_inputs` on the host first).
"""

from __future__ import annotations

import inspect
import os
from collections.abc import Callable, Mapping
from typing import Any

import keras
import numpy as np

from distilbert_heads.encoder.inputs import validate_encoder_inputs
from distilbert_heads.model.loading import load_task_model
from distilbert_heads.model.task_model import DistilBertTaskModel, check_max_length, check_tokenizer_fits_encoder
from distilbert_heads.plugins.head import head_code_failed
from distilbert_heads.plugins.input_kinds import BUILTIN_KINDS, InputKind, input_kind_of
from distilbert_heads.text.tokenizer import BatchEncoding, DistilBertTokenizer

__all__ = ["PROGRESS_THRESHOLD", "Pipeline", "pipeline"]

# More inputs than this show a progress bar unless show_progress=False.
PROGRESS_THRESHOLD = 1000
# JAX only: row lengths are padded up to a power of two, at least this (capped at max_length), see
# Pipeline._run_model.
MIN_LENGTH_BUCKET = 16
# The keywords through which pipelines hand texts to decode, whatever the kind: never a caller's option.
_RESERVED_KEYWORDS = frozenset(
    {*(keyword for kind in BUILTIN_KINDS.values() for keyword in kind.decode_keywords), "tokenizer"}
)


def pipeline(
    model_or_path: DistilBertTaskModel | str | os.PathLike,
    *,
    tokenizer: DistilBertTokenizer | None = None,
    head: str | None = None,
    batch_size: int = 32,
    max_length: int | None = None,
    stride: int | None = None,
    show_progress: bool | None = None,
    dtype: str | None = None,
) -> Pipeline:
    """A callable that turns raw text into the head's answers.

    Args:
        model_or_path: a `DistilBertTaskModel` or the path of a ``.keras`` file saved from one.
        tokenizer: the tokenizer to use; default the model's own (``model.tokenizer``, saved
            inside the ``.keras`` file).
        head: which head answers, for a model with several (default: the only head).
        batch_size: inputs (question/context: windows) per forward pass.
        max_length: the longest row in tokens, special tokens included (default: the model's
            ``max_length``, itself at most the encoder's ``max_position_embeddings``).
        stride: question/context only: tokens of overlap between consecutive context windows;
            at most ``max_length // 2`` is used; default: the kind's rule, the one training
            uses (`QuestionContextKind`: ``max_length // 4``, less if a question leaves less room).
        show_progress: show a progress bar (on stderr); default: when there are more than
            `PROGRESS_THRESHOLD` inputs.
        dtype: run under this dtype policy instead of the model's own, e.g. ``"bfloat16"``
            for the fastest CPU inference, or ``"int8"``: the float32 model with its Dense
            kernels quantized to int8 at load (see `DistilBertTaskModel.with_dtype`).

    Raises:
        ValueError: no tokenizer anywhere, an unknown or ambiguous ``head``, or bad settings.
    """
    model = load_task_model(model_or_path, dtype=dtype)
    return Pipeline(
        model,
        tokenizer=tokenizer,
        head=head,
        batch_size=batch_size,
        max_length=max_length,
        stride=stride,
        show_progress=show_progress,
    )


class Pipeline:
    """Runs one head of a `DistilBertTaskModel` on raw text; build it with `pipeline`.

    Call it with what the head's input kind takes (`InputKind.items_from_call`):

    - text: a string (returns one answer) or a list of strings (returns a list);
    - pair: a tuple ``(text_a, text_b)`` or a list of them (dicts with ``text_a`` and
      ``text_b`` work too);
    - question and context: ``pipe(question=..., context=...)`` with two strings or two
      lists of equal length, or a dict ``{"question", "context"}`` or a list of such dicts;
    - a plugin's kind: what it documents.

    Other keywords go to the head's ``decode`` (e.g. ``top_k=3`` for classifiers).
    """

    def __init__(
        self,
        model: DistilBertTaskModel,
        *,
        tokenizer: DistilBertTokenizer | None = None,
        head: str | None = None,
        batch_size: int = 32,
        max_length: int | None = None,
        stride: int | None = None,
        show_progress: bool | None = None,
    ) -> None:
        if not isinstance(model, DistilBertTaskModel):
            raise TypeError(
                f"pipeline() needs a distilbert_heads DistilBertTaskModel or a .keras path, got {type(model).__name__}."
            )
        self.model = model
        self.head_name, self.head = model.select_head(head)
        self.input_kind: InputKind = input_kind_of(self.head)
        self.tokenizer = _choose_tokenizer(model, tokenizer)
        self.batch_size = _positive_int(batch_size, "batch_size", "inputs per forward pass")
        self.max_length = model.max_length if max_length is None else check_max_length(max_length, model.encoder.config)
        if stride is not None and (isinstance(stride, bool) or not isinstance(stride, (int, np.integer)) or stride < 0):
            raise ValueError(
                f"stride must be a non-negative integer (tokens of overlap between windows), got {stride!r}."
            )
        self.stride = self.input_kind.stride(self.max_length, stride)
        # None: the kind's default rule, which may lower the stride for a batch of long questions.
        self._requested_stride = None if stride is None else self.stride
        self.show_progress = show_progress
        self._decode_parameters = _keyword_parameters(self.head.decode)
        # Pad to shape buckets only where every new input shape means a new compilation.
        self._bucketed = keras.backend.backend() == "jax"
        self._per_token: dict[str, bool] | None = None

    def __repr__(self) -> str:
        return (
            f"Pipeline(head={self.head_name!r} ({type(self.head).__name__}, input_kind={self.input_kind.name!r}), "
            f"batch_size={self.batch_size}, max_length={self.max_length}, stride={self.stride})"
        )

    # -- calling ---------------------------------------------------------------------------
    def __call__(
        self,
        inputs: Any = None,
        /,
        **kwargs: Any,
    ) -> Any:
        """Answers for ``inputs``: one answer for a single input, a list for a list of inputs.

        Keywords the input kind takes (``question=``/``context=``) make the inputs; the others go
        to ``decode``.
        """
        kind = self.input_kind
        keywords = {key: kwargs.pop(key) for key in kind.call_keywords if key in kwargs}
        self._check_other_kinds_keywords(kwargs)
        self._check_decode_kwargs(kwargs)
        items, single = kind.items_from_call(inputs, keywords)
        answers = self._run(items, kwargs)
        return answers[0] if single else answers

    def predict_items(self, items: list[Any], **decode_kwargs: Any) -> list[Any]:
        """Answers for items already in the input kind's own form (e.g. from `InputKind.item_from_row`),
        one per item, in their order; keywords go to ``decode``."""
        self._check_decode_kwargs(decode_kwargs)
        return self._run(list(items), decode_kwargs)

    def _run(self, items: list[Any], decode_kwargs: Mapping[str, Any]) -> list[Any]:
        """Answers for ``items`` (strings, pairs or (question, context)), in their order."""
        answers: list[Any] = [None] * len(items)
        order = sorted(range(len(items)), key=lambda i: self.input_kind.length_key(items[i], self.max_length))
        with _progress(len(items), self._wants_progress(len(items))) as advance:
            for start in range(0, len(order), self.batch_size):
                indices = order[start : start + self.batch_size]
                group = [items[i] for i in indices]
                for index, answer in zip(indices, self._answer_group(group, indices, decode_kwargs)):
                    answers[index] = answer
                advance(len(indices))
        return answers

    def _answer_group(self, group: list[Any], indices: list[int], decode_kwargs: Mapping[str, Any]) -> list[Any]:
        encoding = self._encode(group, indices)
        outputs = self._forward_rows(self.input_kind.model_inputs(encoding))
        context = self.input_kind.decode_context(group)
        accepted = {key: value for key, value in context.items() if self._decode_accepts(key)}
        if "tokenizer" in self._decode_parameters[1]:  # a decode that names tokens (fill-mask) asks for it by name
            accepted["tokenizer"] = self.tokenizer
        try:
            answers = list(self.head.decode(outputs, encoding, **accepted, **decode_kwargs))
        except Exception as error:
            raise head_code_failed(
                self.head,
                self.model.head_plugin(self.head_name),
                "decode",
                error,
                f"on the model's outputs for {len(group)} input(s)"
                + (f" with options {dict(decode_kwargs)}" if decode_kwargs else ""),
            ) from error
        if len(answers) != len(group):
            raise RuntimeError(
                f"Head {self.head_name!r} ({type(self.head).__name__}).decode returned {len(answers)} answers for "
                f"{len(group)} inputs ({len(encoding)} tokenized rows). decode must return one answer per input, "
                "merging the rows of one input through encoding.overflow_to_sample."
            )
        return answers

    # -- tokenizing and running the model ----------------------------------------------------
    def _encode(self, group: list[Any], indices: list[int]) -> BatchEncoding:
        try:
            return self._encode_items(group)
        except ValueError:
            self._raise_for_bad_input(group, indices)
            raise

    def _encode_items(self, items: list[Any]) -> BatchEncoding:
        return self.input_kind.encode(self.tokenizer, items, self.max_length, stride=self._requested_stride)

    def _raise_for_bad_input(self, group: list[Any], indices: list[int]) -> None:
        """Find which input the kind's packing refused and say so with its index."""
        for index, item in zip(indices, group):
            try:
                self._encode_items([item])
            except ValueError as error:
                raise ValueError(
                    f"{'/'.join(self.input_kind.fields).capitalize() or 'The'} input {index} cannot be "
                    f"{'windowed' if self.input_kind.rows_per_example is None else 'packed'} with "
                    f"max_length={self.max_length} and stride={self.stride}: {error}"
                ) from error

    def _forward_rows(self, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """The head's outputs (numpy) for every row of ``inputs``, ``batch_size`` rows at a time.

        The rows (question/context windows; or examples of N rows each) share one width, the
        longest row of these inputs, so the slices' outputs concatenate into one batch for ``decode``.
        """
        rows = len(inputs["input_ids"])
        if rows <= self.batch_size:
            return self._run_model(inputs)
        parts = [
            self._run_model({key: value[start : start + self.batch_size] for key, value in inputs.items()})
            for start in range(0, rows, self.batch_size)
        ]
        return {key: np.concatenate([part[key] for part in parts], axis=0) for key in parts[0]}

    def _run_model(self, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """One forward pass; the chosen head's outputs as numpy.

        ``predict_on_batch`` reuses Keras' compiled predict function: on TensorFlow it was
        about 5x faster than an eager ``model(x, training=False)`` for repeated shapes and
        still faster over 20 distinct batch lengths (tiny model, 2 CPU cores). It checks the
        inputs on the host first (`validate_encoder_inputs`), outside the compiled step.

        Retracing: TensorFlow's predict function is traced with ``reduce_retracing``, so after
        the second shape it serves every length from one trace; inputs go in as they are. JAX
        compiles once per input shape, so there rows are padded up to a bucket (lengths and batch
        sizes to powers of two, capped at max_length and batch_size) and the outputs cut
        back: a few compiled shapes in all (at most log2(max_length) x log2(batch_size)) instead of
        one per call, for at most twice the positions of the longest row.
        """
        padded = self._pad_to_bucket(inputs)
        outputs = self.model.predict_on_batch(padded)[self.head_name]
        result = {key: np.asarray(keras.ops.convert_to_numpy(value)) for key, value in outputs.items()}
        if padded is inputs:
            return result
        rows, length = inputs["input_ids"].shape
        per_token = self._per_token_outputs()
        return {key: value[:rows, :length] if per_token.get(key) else value[:rows] for key, value in result.items()}

    def _pad_to_bucket(self, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        ids = inputs.get("input_ids") if isinstance(inputs, Mapping) else None
        if not self._bucketed or getattr(ids, "ndim", None) != 2 or self._per_token_outputs() is None:
            return inputs  # (what is not a 2-D array is left for predict_on_batch's checks to refuse)
        validate_encoder_inputs(inputs, self.model.encoder.config)  # on what was given, before padding hides it
        rows, length = inputs["input_ids"].shape
        width = min(self.max_length, max(MIN_LENGTH_BUCKET, 1 << (length - 1).bit_length()))
        height = min(self.batch_size, 1 << (rows - 1).bit_length())
        if (height, width) == (rows, length):
            return inputs
        ids = np.full((height, width), self.tokenizer.pad_token_id, dtype=inputs["input_ids"].dtype)
        mask = np.zeros((height, width), dtype=inputs["attention_mask"].dtype)
        ids[:rows, :length], mask[:rows, :length] = inputs["input_ids"], inputs["attention_mask"]
        mask[rows:, 0] = 1  # padding rows attend to one [PAD] token, so they stay finite
        return {"input_ids": ids, "attention_mask": mask}

    def _per_token_outputs(self) -> dict[str, bool] | None:
        """Output name -> whether its second axis is the sequence (found symbolically, once); None if unknown."""
        if self._per_token is None:
            symbolic = {
                name: keras.KerasTensor((None, None), dtype="int32") for name in ("input_ids", "attention_mask")
            }
            try:
                spec = self.model.compute_output_spec(symbolic)[self.head_name]
                self._per_token = {key: len(value.shape) > 1 and value.shape[1] is None for key, value in spec.items()}
            except Exception:  # noqa: BLE001  (a head that cannot run symbolically: no buckets, every shape compiles)
                self._per_token = {}
        return self._per_token or None

    # -- decode's keywords ----------------------------------------------------------------------
    def _decode_accepts(self, keyword: str) -> bool:
        accepts_any, names = self._decode_parameters
        return accepts_any or keyword in names

    def _check_decode_kwargs(self, decode_kwargs: Mapping[str, Any]) -> None:
        reserved = sorted(set(decode_kwargs) & (_RESERVED_KEYWORDS | set(self.input_kind.decode_keywords)))
        if reserved:
            raise TypeError(
                f"{', '.join(reserved)} {'is' if len(reserved) == 1 else 'are'} passed to decode by the pipeline "
                "itself; give the inputs as the first argument (or question=/context=) instead."
            )
        unknown = sorted(key for key in decode_kwargs if not self._decode_accepts(key))
        if unknown:
            _, names = self._decode_parameters
            options = sorted(names - _RESERVED_KEYWORDS - set(self.input_kind.decode_keywords))
            raise TypeError(
                f"{type(self.head).__name__}.decode (head {self.head_name!r}) takes no option "
                f"{', '.join(map(repr, unknown))}; the options it takes are: {', '.join(options) or 'none'}."
            )

    def _check_other_kinds_keywords(self, kwargs: dict[str, Any]) -> None:
        """question=/context= given to a head of another kind: say whose keywords they are (None: dropped)."""
        for other in BUILTIN_KINDS.values():
            if other is self.input_kind:
                continue
            given = [key for key in other.call_keywords if key in kwargs]
            if any(kwargs.pop(key) is not None for key in given):
                raise TypeError(
                    f"{'/'.join(key + '=' for key in other.call_keywords)} are for {other.head_family} heads; "
                    f"head {self.head_name!r} takes {self.input_kind.description} per input."
                )

    def _wants_progress(self, count: int) -> bool:
        return self.show_progress if self.show_progress is not None else count > PROGRESS_THRESHOLD


# -- choosing model, head and tokenizer -----------------------------------------------------------
def _choose_tokenizer(model: DistilBertTaskModel, tokenizer: DistilBertTokenizer | None) -> DistilBertTokenizer:
    if tokenizer is None:
        tokenizer = model.tokenizer
    if tokenizer is None:
        raise ValueError(
            "This model has no tokenizer (it was built or saved without one), so the pipeline cannot turn text into "
            "ids. Pass the tokenizer it was trained with: pipeline(model, "
            "tokenizer=DistilBertTokenizer.from_pretrained(dir)) (or DistilBertTokenizer.from_vocab('vocab.txt')); "
            "set model.tokenizer = ... before model.save() to keep it inside the .keras file."
        )
    if not isinstance(tokenizer, DistilBertTokenizer):
        raise TypeError(
            f"tokenizer must be a distilbert_heads.tokenizer.DistilBertTokenizer, got {type(tokenizer).__name__}. "
            "Build one with DistilBertTokenizer.from_pretrained(dir)."
        )
    check_tokenizer_fits_encoder(tokenizer, model.encoder.config, source="the tokenizer given to pipeline()")
    return tokenizer


def _positive_int(value: Any, name: str, meaning: str) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
        raise ValueError(f"{name} must be a positive integer ({meaning}), got {value!r}.")
    return int(value)


def _keyword_parameters(function: Callable[..., Any]) -> tuple[bool, set[str]]:
    """(accepts **kwargs, names it takes by keyword) of a bound ``decode``, past (outputs, encoding)."""
    parameters = list(inspect.signature(function).parameters.values())
    accepts_any = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters)
    names = {
        p.name
        for p in parameters[2:]
        if p.kind in (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY)
    }
    return accepts_any, names


# -- progress -----------------------------------------------------------------------------------------
class _progress:
    """A context manager yielding ``advance(n)``; a rich progress bar on stderr when ``enabled``."""

    def __init__(self, total: int, enabled: bool) -> None:
        self.total, self.enabled = total, enabled
        self._bar: Any = None

    def __enter__(self) -> Callable[[int], None]:
        if not self.enabled:
            return lambda n: None
        from rich.console import Console
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

        self._bar = Progress(
            TextColumn("predicting"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeRemainingColumn(),
            console=Console(stderr=True),
        )
        self._bar.start()
        task = self._bar.add_task("predicting", total=self.total)
        return lambda n: self._bar.advance(task, n)

    def __exit__(self, *exc: Any) -> None:
        if self._bar is not None:
            self._bar.stop()
