"""The ``distilbert-heads`` command line: heads, train, evaluate, predict, convert, export, info, demo.

Each subcommand is a ``_cmd_<name>(args) -> int`` function plus a ``_add_<name>(subparsers)``
that declares its arguments; `main` parses, starts Keras quietly and dispatches. A user error (a
bad argument or file, an unknown task, a missing model) prints one ``error: ...`` line to stderr
and exits 2, without a traceback or a usage block (set ``DISTILBERT_HEADS_DEBUG=1`` to see the
traceback). Nothing heavy is imported at module level and arguments (files included) are checked
before Keras and TensorFlow are, so ``--help`` and argument errors answer at once; TensorFlow's
C++ start-up lines are hidden unless ``DISTILBERT_HEADS_TF_LOGS=1``.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.util
import json
import os
import re
import sys
import tempfile
import warnings
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from distilbert_heads.display import describe_answer, jsonable
from distilbert_heads.training.defaults import (
    DEFAULT_CLIP_NORM,
    DEFAULT_PATIENCE,
    DEFAULT_SCHEDULE_PRETRAINED,
    DEFAULT_SCHEDULE_SCRATCH,
    DEFAULT_WEIGHT_DECAY,
    PRECISIONS,
    SAMPLE_ROWS,
    SCHEDULES,
    SHUFFLE_BUFFER_ROWS,
)

USER_ERROR_EXIT = 2
TF_LOGS_VARIABLE = "DISTILBERT_HEADS_TF_LOGS"
DEBUG_VARIABLE = "DISTILBERT_HEADS_DEBUG"

_STATUS_STYLE = {"ok": "green", "failed": "bold red", "conflict": "bold red", "blocked": "yellow", "overridden": "dim"}


def _cmd_heads(args: argparse.Namespace) -> int:
    from distilbert_heads.plugins.registry import (  # pluggy and pydantic: not needed for --help
        PluginConflictError,
        PluginLoadError,
        get_registry,
    )

    registry = get_registry()
    try:
        rows = [row.as_dict() for row in registry.list_heads(raise_on_conflict=False)]
    except PluginLoadError as error:  # strict mode
        print(f"error: {error}", file=sys.stderr)
        return 1
    if args.json:
        print(json.dumps(rows, indent=2))
    else:
        _print_table(rows)
    try:
        registry.list_heads()
    except PluginConflictError as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    return 0


def _console() -> Any:
    from rich.console import Console  # rich: only for commands that print tables

    # Piped output gets a wide fixed width so names are not folded mid-word.
    width = None if sys.stdout.isatty() or "COLUMNS" in os.environ else 200
    return Console(width=width)


def _print_table(rows: list[dict[str, Any]]) -> None:
    from rich.table import Table

    console = _console()
    table = Table(title="distilbert-heads: installed task heads")
    for header in ("Task type", "Aliases", "Head class", "Plugin", "Distribution", "Version", "Status"):
        table.add_column(header, no_wrap=header != "Head class")
    table.add_column("Error", overflow="fold")
    for row in rows:
        status = row["status"]
        table.add_row(
            row["task_type"] or "-",
            ", ".join(row["aliases"]) or "-",
            row["head_class"] or "-",
            row["plugin"],
            row["distribution"],
            row["version"],
            f"[{_STATUS_STYLE.get(status, '')}]{status}[/]",
            row["error"] or "",
        )
    console.print(table)


def _add_heads(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "heads",
        help="list the installed task heads and the plugins that provide them",
        description=(
            "Load every head plugin (built-in and third-party) and list each task type with its aliases, "
            "head class, plugin, distribution, version and status (ok, failed, blocked, overridden). "
            "Failed plugins are listed with their error. Exits 1 on a plugin conflict, or in strict mode "
            "(DISTILBERT_HEADS_STRICT_PLUGINS=1) when a plugin failed."
        ),
        epilog=(
            "examples:\n"
            "  distilbert-heads heads\n"
            "  distilbert-heads heads --json | jq '.[] | select(.status != \"ok\")'\n"
            "  DISTILBERT_HEADS_BLOCK_PLUGINS=distilbert-head-foo distilbert-heads heads"
        ),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--json", action="store_true", help="print a JSON list of rows instead of a table")
    parser.set_defaults(handler=_cmd_heads)


# -- shared helpers -----------------------------------------------------------------------------
class CLIError(Exception):
    """A user error: printed as one line on stderr, exit code 2."""


class _Parser(argparse.ArgumentParser):
    """An argument parser whose errors are one line with a pointer to --help, not a usage block."""

    takes_run_file = False  # True for a subcommand with --config RUN.toml (see training.run_config)

    def error(self, message: str) -> Any:  # argparse's contract: print and exit
        print(f"error: {message} (see {self.prog} --help)", file=sys.stderr)
        raise SystemExit(USER_ERROR_EXIT)

    def parse_known_args(self, args: Any = None, namespace: Any = None) -> Any:
        if not self.takes_run_file:
            return super().parse_known_args(args, namespace)
        from distilbert_heads.training.run_config import (  # pydantic: only for a command that takes a run file
            RunConfigError,
            parse_with_run_file,
        )

        argv = sys.argv[1:] if args is None else list(args)
        try:
            return parse_with_run_file(
                self, argv, lambda given: super(_Parser, self).parse_known_args(given, namespace)
            )
        except RunConfigError as error:
            self.error(str(error))


def _user_errors() -> tuple[type[BaseException], ...]:
    """Exception types that mean "the input was wrong", not "the program is broken".

    `DataFileError`, `HeadOptionsError`, `TrainingError` and `UnknownTaskTypeError` are `ValueError`s.
    """
    from distilbert_heads.plugins.plugin_errors import (  # pluggy and pydantic: not needed for --help
        MissingHeadPluginError,
        PluginConflictError,
        PluginLoadError,
    )

    errors: tuple[type[BaseException], ...] = (
        CLIError,
        MissingHeadPluginError,
        PluginConflictError,
        PluginLoadError,
        ValueError,
        OSError,
        MemoryError,
        RecursionError,  # a huge or deeply nested input file
    )
    tensorflow = sys.modules.get("tensorflow")
    if tensorflow is not None:  # raw op errors from inputs the checks did not catch (bad ids, too large)
        errors += (tensorflow.errors.InvalidArgumentError, tensorflow.errors.ResourceExhaustedError)
    return errors


_ANSI_ESCAPE = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")
_KERAS_WRAPPER = re.compile(
    r"^Exception encountered when calling .*?\n\s*\n(.*?)(?:\n\s*\nArguments received by |\Z)", re.DOTALL
)


def _unwrap(error: BaseException) -> BaseException:
    """The error Keras wrapped in "Exception encountered when calling ...", when it kept it."""
    from distilbert_heads.plugins.head import unwrap_keras_error  # an error after Keras ran: it is imported

    return unwrap_keras_error(error)


_FILE_ARGUMENTS = ("train", "eval", "data", "input", "model", "checkpoint")


def _one_line(error: BaseException, args: argparse.Namespace | None = None) -> str:
    """The error's message as one line: Keras' call wrapper and ANSI codes removed."""
    text = _ANSI_ESCAPE.sub("", str(_unwrap(error)))
    wrapped = _KERAS_WRAPPER.match(text)
    if wrapped:
        text = wrapped.group(1)
    if isinstance(error, (MemoryError, RecursionError)):
        files = [str(value) for name in _FILE_ARGUMENTS if (value := getattr(args, name, None)) is not None]
        text = (
            f"{type(error).__name__} while reading {' or '.join(files) or 'the input'}: the input is too large or too "
            f"deeply nested for this machine" + (f" ({text})" if text.strip() else "")
        )
    text = " ".join(part.strip() for part in text.splitlines() if part.strip())
    return text or type(error).__name__


def _existing_file(text: str) -> str:
    """argparse type: a path to an existing file, checked before anything heavy is imported."""
    path = Path(text)
    if path.is_dir():
        raise argparse.ArgumentTypeError(f"{text!r} is a directory; expected a file")
    if not path.exists():
        raise argparse.ArgumentTypeError(f"file {text!r} does not exist")
    if not path.is_file():  # a device, FIFO or socket: reading could block or never end
        raise argparse.ArgumentTypeError(
            f"{text!r} exists but is not a regular file (a device, pipe or socket); save the rows to a .jsonl or "
            ".csv file and pass that"
        )
    return text


def _keras_file_out(text: str) -> str:
    """argparse type: a .keras path a file can be written to, checked before anything heavy runs."""
    from distilbert_heads import atomic  # standard library only: no Keras

    if not text.endswith(".keras"):
        raise argparse.ArgumentTypeError(f"must name a .keras file (e.g. model.keras), got {text!r}")
    try:
        atomic.check_file_target(text)
    except OSError as error:
        raise argparse.ArgumentTypeError(str(error)) from None
    return text


# absl/glog lines ("I0000 00:00:1796.28 12169 port.cc:153] ...") and the lines that go with them
_TF_NOISE = re.compile(
    r"^([IWE]\d{4} [\d:.]+ +\d+ \S+:\d+\] |WARNING: All log messages before absl::"
    r"InitializeLog\(\)|To enable the following instructions: )"
)


def _start_keras_quietly() -> None:
    """Import Keras (and TensorFlow) with TensorFlow's C++ start-up lines hidden.

    Those lines ("oneDNN custom operations are on", cpu_feature_guard, cudart_stub) are written to
    file descriptor 2 by TensorFlow's C++ before absl logging starts, so TF_CPP_MIN_LOG_LEVEL cannot
    stop them: stderr is pointed at a temporary file while TensorFlow is first imported, and only
    what is not such a line is copied back. ``DISTILBERT_HEADS_TF_LOGS=1`` leaves it all alone.
    """
    if os.environ.get(TF_LOGS_VARIABLE) or "keras" in sys.modules:
        return
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")  # later C++ lines (e.g. "failed call to cuInit")
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile(mode="w+b") as captured:
        os.dup2(captured.fileno(), 2)
        try:
            import keras

            if keras.backend.backend() != "tensorflow" and importlib.util.find_spec("tensorflow") is not None:
                import tensorflow  # noqa: F401  (other backends still import it for data pipelines)
        finally:
            sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)
            captured.seek(0)
            kept = [
                line
                for line in captured.read().decode("utf-8", "replace").splitlines(keepends=True)
                if not _TF_NOISE.match(line)
            ]
            sys.stderr.write("".join(kept))


# -- train ---------------------------------------------------------------------------------------------
def _distribution(args: argparse.Namespace) -> dict[str, Any] | None:
    """The data-parallel flags as `train`'s ``distribution``; the others without --distribution are refused."""
    given = {
        key: value
        for key, value in (
            ("devices", args.devices),
            ("coordinator", args.coordinator),
            ("num_processes", args.num_processes),
            ("process_id", args.process_id),
        )
        if value is not None
    }
    if args.distribution is None:
        if given:
            flags = ", ".join("--" + key.replace("_", "-") for key in given)
            raise CLIError(f"{flags} set how a data-parallel run is spread: add --distribution data-parallel.")
        return None
    return {"strategy": args.distribution, **given}


def _cmd_train(args: argparse.Namespace) -> int:
    heads = _head_list(args)
    from distilbert_heads.training.loop import train  # imports Keras: only once the arguments are good
    from distilbert_heads.training.settings import ChanceLevelWarning

    checkpoint_dir = args.checkpoint_dir or default_checkpoint_dir(args.out)  # one head or several
    # With --json, stdout holds the JSON alone; progress, tables and notes go to stderr.
    with warnings.catch_warnings(), contextlib.redirect_stdout(sys.stderr) if args.json else contextlib.nullcontext():
        warnings.simplefilter("ignore", ChanceLevelWarning)  # train prints it as one "warning:" line already
        result = train(
            heads if heads is not None else args.task,
            args.train if heads is None else None,
            eval_file=args.eval,
            eval_files=dict(args.head_eval) if heads is not None and args.head_eval else None,
            loss_weights=dict(args.loss_weight) if args.loss_weight else None,
            monitor_head=args.monitor_head,
            variant=args.variant,
            pretrained=args.pretrained,
            epochs=args.epochs,
            batch_size=args.batch_size,
            learning_rate=args.learning_rate,
            max_length=args.max_length,
            out=args.out,
            vocab_size=args.vocab_size,
            lowercase=not args.cased,
            whole_words=args.whole_words,
            token_dropout=args.token_dropout,
            patience=args.patience,
            seed=args.seed,
            weight_decay=args.weight_decay,
            warmup_ratio=args.warmup_ratio,
            warmup_steps=args.warmup_steps,
            schedule=args.schedule,
            clip_norm=args.clip_norm,
            gradient_accumulation_steps=args.grad_accum,
            precision=args.precision,
            logdir=args.logdir,
            skip_invalid=args.skip_invalid,
            skipped_file=args.skipped,
            shuffle_buffer=args.shuffle_buffer,
            head_options={"labels": args.labels} if args.labels else None,
            checkpoint_dir=checkpoint_dir,
            checkpoint_every=args.checkpoint_every,
            resume=args.resume,
            verbose=1 if sys.stdout.isatty() else 2,
            run=getattr(args, "run_file", None),
            distribution=_distribution(args),
        )
    if args.json:
        print(
            json.dumps(
                {
                    "metrics": result.metrics,
                    "split": result.metrics_split,
                    "path": str(result.path),
                    "checkpoint_dir": str(result.checkpoint_dir),
                    "warnings": result.warnings,
                    "epoch_seconds": result.epoch_seconds,
                    "skipped_rows": result.skipped_rows,
                    "skipped_file": None if result.skipped_file is None else str(result.skipped_file),
                }
            )
        )
    return 0


def _head_file(text: str) -> dict[str, str]:
    """``--head TASK=FILE`` or ``--head NAME:TASK=FILE``."""
    spec, sep, path = text.partition("=")
    name, colon, task = spec.rpartition(":")
    if not sep or not path or not task or (colon and not name):
        raise argparse.ArgumentTypeError(
            f"expected TASK=FILE or NAME:TASK=FILE (e.g. ner=entities.jsonl, tags:ner=tags.jsonl), got {text!r}"
        )
    return {"task": task, "train_file": path, **({"name": name} if name else {})}


def _named_file(text: str) -> tuple[str, str]:
    """``--head-eval NAME=FILE``."""
    name, sep, path = text.partition("=")
    if not sep or not name or not path:
        raise argparse.ArgumentTypeError(f"expected NAME=FILE (e.g. ner=dev.jsonl), got {text!r}")
    return name, path


def _named_weight(text: str) -> tuple[str, float]:
    """``--loss-weight NAME=WEIGHT``."""
    name, sep, value = text.partition("=")
    try:
        if sep and name:
            return name, float(value)
    except ValueError:
        pass
    raise argparse.ArgumentTypeError(f"expected NAME=WEIGHT (e.g. ner=0.5), got {text!r}")


def _add_head_flags(parser: argparse.ArgumentParser) -> None:
    heads = parser.add_argument_group(
        "several heads on one encoder",
        "one training file per head instead of --task/--train/--eval; one model file with every head",
    )
    heads.add_argument(
        "--head",
        action="append",
        type=_head_file,
        metavar="[NAME:]TASK=FILE",
        help="a head and its training rows, repeated per head (e.g. --head sentiment=reviews.jsonl --head "
        "ner=entities.jsonl); the head is named after its task unless NAME: is given (two heads of one task need it)",
    )
    heads.add_argument(
        "--head-eval",
        action="append",
        type=_named_file,
        metavar="NAME=FILE",
        help="a head's held-out rows, repeated per head: every head or none",
    )
    heads.add_argument(
        "--loss-weight",
        action="append",
        type=_named_weight,
        metavar="NAME=WEIGHT",
        help="weight of a head's loss (default 1; 0 leaves the head untrained)",
    )
    heads.add_argument(
        "--monitor-head",
        metavar="NAME",
        help="early-stop on this head's held-out metric (default: the mean of every head's main metric)",
    )


def _head_list(args: argparse.Namespace) -> list[dict[str, str]] | None:
    """The ``--head`` list, or None for a single-head run (``--task``/``--train``); a mix of the two is refused."""
    if args.head:
        given = [
            flag
            for flag, value in (
                ("--task", args.task),
                ("--train", args.train),
                ("--eval", args.eval),
                ("--labels", args.labels),
            )
            if value
        ]
        if given:
            raise CLIError(
                f"--head gives each head its task and file; leave out {', '.join(given)} (or use --task "
                "--train for one head)"
            )
        try:
            return [{**head, "train_file": _existing_file(head["train_file"])} for head in args.head]
        except argparse.ArgumentTypeError as error:
            raise CLIError(f"--head: {error}") from None
    single_only = [
        flag for flag, value in (("--head-eval", args.head_eval), ("--monitor-head", args.monitor_head)) if value
    ]
    if single_only:
        raise CLIError(f"{', '.join(single_only)} go with --head (several heads); one head takes --task --train --eval")
    if args.task is None or args.train is None:
        raise CLIError("give --task and --train (one head), or --head TASK=FILE per head (several heads)")
    return None


def default_checkpoint_dir(out: str) -> str:
    """Where ``train --out MODEL.keras`` keeps its checkpoints without --checkpoint-dir: ``MODEL.checkpoints``."""
    return os.fspath(Path(out).with_suffix(".checkpoints"))


def _layer_map(text: str) -> list[int]:
    """``--layers 0,2,4``: checkpoint layer indices (range and duplicates are checked against the checkpoint)."""
    try:
        return [int(part) for part in text.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected comma-separated checkpoint layer indices such as 0,2,4, got {text!r}"
        ) from None


def _add_progress_flag(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--progress",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="show a progress bar on stderr (rows, rows per second, time left) while the file is read "
        "(default: when stderr is a terminal)",
    )


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def _add_train(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "train",
        help="train a model for a task on a JSONL/CSV file and save it as one .keras file",
        description=(
            "Train a DistilBERT model with the task's head on labelled rows and save it, tokenizer inside, "
            "as one .keras file. Without --pretrained a small model is trained from scratch and its WordPiece "
            "vocabulary is learnt from the training texts. With --eval the head's own metric is measured on "
            "the held-out rows after each epoch, training stops early when it stops improving (--patience) "
            "and the best epoch's weights are kept.\n\n"
            "Row formats (JSONL, or CSV with a header; lists in CSV cells are space-separated):\n"
            '  sentiment / classification: {"text": "Great film!", "label": "positive"}\n'
            '  ner:      {"tokens": ["Ada", "lives", "in", "Paris"], "tags": ["B-PER", "O", "O", "B-LOC"]}\n'
            '            or {"text": "...", "entities": [{"start": 0, "end": 3, "label": "PER"}]}\n'
            '  qa:       {"question": "...", "context": "...", "answers": {"text": ["..."], "answer_start": [17]}}\n'
            '  pairwise: {"text_a": "...", "text_b": "...", "label": "paraphrase"}\n'
            "Optimizer: AdamW with a peak learning rate of 5e-5 with --pretrained and 1e-3 from scratch "
            "(--learning-rate), warmup from 0 (--warmup-ratio/--warmup-steps, default none), then linear decay to 0 "
            "with --pretrained and a constant rate from scratch (--schedule), weight decay 0.01 except on LayerNorm "
            "weights and biases, gradients clipped to global norm 1.0: the BERT fine-tuning recipe, as in "
            "transformers' Trainer. See 'run controls' below."
        ),
        epilog=(
            "examples:\n"
            "  distilbert-heads train --task sentiment --train reviews.csv --eval dev.csv --out sentiment.keras\n"
            "  distilbert-heads train --task ner --train ner.jsonl --pretrained distilbert-base-uncased \\\n"
            "      --epochs 2 --out ner.keras\n"
            "  distilbert-heads train --head sentiment=reviews.jsonl --head ner=entities.jsonl \\\n"
            "      --head-eval sentiment=reviews_dev.jsonl --head-eval ner=entities_dev.jsonl \\\n"
            "      --loss-weight ner=0.5 --out multi.keras\n"
            "  distilbert-heads train --config run.toml --epochs 5   # the file's settings, 5 epochs\n\n"
            "run files (--config): TOML whose keys are the flags above without the dashes, e.g.\n"
            '  task = "sentiment"\n'
            '  train = "data/train.jsonl"      # relative paths are relative to the run file\n'
            '  out = "models/sentiment.keras"\n'
            "  batch-size = 32\n"
            "  cased = true\n"
            "Flags given on the command line override the file. The saved model records the resolved settings: "
            "see distilbert-heads info MODEL.keras."
        ),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.takes_run_file = True
    parser.add_argument(
        "--config",
        type=_existing_file,
        metavar="RUN.toml",
        help="read any of these options from a TOML file (keys: flag names without the dashes; relative paths are "
        "relative to the file); flags given here override it",
    )
    parser.add_argument("--task", help="task type or alias: sentiment, ner, qa, pairwise, mlm, or a plugin's")
    parser.add_argument(
        "--train",
        type=_existing_file,
        metavar="FILE",
        help="training rows (.jsonl or .csv; .txt: one text per line, for mlm)",
    )
    parser.add_argument(
        "--eval", type=_existing_file, metavar="FILE", help="held-out rows for early stopping and the final metrics"
    )
    _add_head_flags(parser)
    source = parser.add_mutually_exclusive_group()
    source.add_argument(
        "--variant",
        choices=("tiny", "small", "base"),
        default="tiny",
        help="model size when training from scratch (default: tiny)",
    )
    source.add_argument(
        "--pretrained",
        metavar="DIR_OR_ID",
        help="fine-tune a Hugging Face checkpoint directory or hub id (uses its tokenizer)",
    )
    parser.add_argument("--epochs", type=_positive_int, default=3, help="at most this many epochs (default: 3)")
    parser.add_argument("--batch-size", type=_positive_int, default=16, help="examples per step (default: 16)")
    parser.add_argument(
        "--learning-rate", type=float, help="AdamW peak learning rate (default: 5e-5 pretrained, 1e-3 scratch)"
    )
    parser.add_argument(
        "--max-length",
        type=_positive_int,
        default=128,
        help="longest input in tokens, special tokens included (default: 128)",
    )
    parser.add_argument(
        "--vocab-size",
        type=_positive_int,
        default=2000,
        help="vocabulary size learnt from the training texts, from scratch only (default: 2000)",
    )
    parser.add_argument(
        "--cased",
        action="store_true",
        help="from scratch: keep capitalisation in the learnt vocabulary (default: lowercase)",
    )
    parser.add_argument(
        "--whole-words",
        action="store_true",
        help="from scratch: learn whole words, not word pieces; unseen words become [UNK] "
        "(helps small models generalise to unseen names; use with --token-dropout)",
    )
    parser.add_argument(
        "--token-dropout",
        type=float,
        default=0.0,
        metavar="P",
        help="while training, replace each token by [UNK] with probability P (default: 0)",
    )
    parser.add_argument(
        "--patience",
        type=int,
        default=DEFAULT_PATIENCE,
        help=f"epochs without improvement on --eval before stopping; 0 never stops (default: {DEFAULT_PATIENCE})",
    )
    parser.add_argument(
        "--labels",
        nargs="+",
        metavar="LABEL",
        help=f"the label names, in order (default: those in the first {SAMPLE_ROWS:,} training rows); a row "
        "with another label fails with its line, or is skipped with --skip-invalid",
    )
    data = parser.add_argument_group("data files of any size")
    data.add_argument(
        "--skip-invalid",
        action="store_true",
        help="leave out rows that are broken or that the head rejects, instead of stopping at the first; each "
        "is written with its file, line and reason to --skipped, and the count is reported",
    )
    data.add_argument(
        "--skipped",
        metavar="FILE.jsonl",
        help="where --skip-invalid writes the rows it leaves out (default: <out name>.skipped.jsonl beside --out)",
    )
    data.add_argument(
        "--shuffle-buffer",
        type=_positive_int,
        default=SHUFFLE_BUFFER_ROWS,
        metavar="N",
        help="rows held for shuffling: a file of at most N rows is shuffled whole each epoch, a larger one "
        f"through the buffer (default: {SHUFFLE_BUFFER_ROWS})",
    )
    controls = parser.add_argument_group("run controls")
    controls.add_argument(
        "--seed",
        type=int,
        metavar="N",
        help="seed weights, dropout, shuffling and token dropout: the same seed gives the same weights on CPU "
        "(a vocabulary learnt from scratch is not reproducible; use --pretrained for bit-equal runs) "
        "(default: unseeded)",
    )
    controls.add_argument(
        "--weight-decay",
        type=float,
        default=DEFAULT_WEIGHT_DECAY,
        metavar="W",
        help="AdamW decoupled weight decay, never applied to LayerNorm weights and biases; 0 turns it off "
        f"(default: {DEFAULT_WEIGHT_DECAY})",
    )
    warmup = controls.add_mutually_exclusive_group()
    warmup.add_argument(
        "--warmup-ratio",
        type=float,
        default=0.0,
        metavar="R",
        help="fraction of the optimizer steps over which the learning rate rises from 0, 0.0-1.0 (default: 0.0)",
    )
    warmup.add_argument(
        "--warmup-steps", type=int, metavar="N", help="optimizer steps of warmup, instead of --warmup-ratio"
    )
    controls.add_argument(
        "--schedule",
        choices=SCHEDULES,
        help="learning rate after warmup: linear decay to 0, cosine decay to 0, or constant "
        f"(default: {DEFAULT_SCHEDULE_PRETRAINED} with --pretrained, {DEFAULT_SCHEDULE_SCRATCH} from scratch)",
    )
    controls.add_argument(
        "--clip-norm",
        type=float,
        default=DEFAULT_CLIP_NORM,
        metavar="N",
        help=f"clip the gradients to this global norm; 0 turns clipping off (default: {DEFAULT_CLIP_NORM})",
    )
    controls.add_argument(
        "--grad-accum",
        type=int,
        default=1,
        metavar="K",
        help="average the gradients of K batches into one optimizer step: an effective batch of "
        "--batch-size x K rows (default: 1)",
    )
    controls.add_argument(
        "--precision",
        choices=PRECISIONS,
        default="float32",
        help="mixed_bfloat16 computes in bfloat16 with float32 weights, saved with the model (default: float32)",
    )
    controls.add_argument(
        "--logdir", metavar="DIR", help="write TensorBoard logs here (losses, metrics and learning rate per epoch)"
    )
    parser.add_argument(
        "--out", required=True, type=_keras_file_out, metavar="MODEL.keras", help="where to save the trained model"
    )
    parser.add_argument(
        "--json",
        action="store_true",
        help="print the final metrics as one JSON object, alone on stdout (progress and tables go to stderr)",
    )
    checkpoints = parser.add_argument_group(
        "checkpoints",
        "A checkpoint (weights, optimizer state, random state, data position) is written at each epoch end and "
        "every --checkpoint-every steps, and best.keras (the best model by the --eval metric, or the --head-eval "
        "files' for several heads) whenever it improves; each replaces the previous one atomically, and the folder "
        "is kept after the run.",
    )
    checkpoints.add_argument(
        "--checkpoint-dir",
        metavar="DIR",
        help="where checkpoints go (default: MODEL.checkpoints beside --out MODEL.keras)",
    )
    checkpoints.add_argument(
        "--checkpoint-every",
        type=_positive_int,
        metavar="N",
        help="also checkpoint every N training steps (batches) (default: at epoch ends only)",
    )
    checkpoints.add_argument(
        "--resume",
        action="store_true",
        help="continue the interrupted run from its last checkpoint in --checkpoint-dir, at the same step and data "
        "position; pass the same arguments as that run (a different setting is refused)",
    )
    distributed = parser.add_argument_group(
        "data-parallel training",
        "Train on several devices and processes (KERAS_BACKEND=jax): --batch-size is the global batch, split across "
        "them; the run trains the weights one device would on the same batches. Start the same command in every "
        "process with its --process-id; only process 0 writes files. --coordinator, --num-processes and "
        "--process-id default to $KERAS_DISTRIBUTION_JOB_ADDRESSES, $KERAS_DISTRIBUTION_NUM_PROCESSES and "
        "$KERAS_DISTRIBUTION_PROCESS_ID.",
    )
    distributed.add_argument(
        "--distribution",
        choices=["data-parallel", "mirrored"],
        help="data-parallel: keras.distribution on the JAX backend; mirrored: tf.distribute.MirroredStrategy over "
        "this machine's devices on the TensorFlow backend (default: one device)",
    )
    distributed.add_argument(
        "--devices",
        metavar="N_OR_NAMES",
        help="devices per process: a count (the first N) or names such as cpu:0,cpu:1 (default: all)",
    )
    distributed.add_argument(
        "--coordinator", metavar="HOST:PORT", help="process 0's address, the same in every process"
    )
    distributed.add_argument("--num-processes", type=_positive_int, metavar="N", help="processes in the run")
    distributed.add_argument("--process-id", type=int, metavar="I", help="this process's id, 0 to N-1 (0 writes files)")
    parser.set_defaults(handler=_cmd_train)


# -- distill --------------------------------------------------------------------------------------------
def _cmd_distill(args: argparse.Namespace) -> int:
    from distilbert_heads.distillation.run import distill  # imports Keras: only once the arguments are good
    from distilbert_heads.training.examples import load_model
    from distilbert_heads.training.report import print_metrics_table

    missing = [flag for flag, value in (("--teacher", args.teacher), ("--train", args.train)) if not value]
    if missing:
        raise CLIError(f"distill needs {' and '.join(missing)} (as flags or keys of the --config run file).")
    student = load_model(args.student) if args.student else None
    with contextlib.redirect_stdout(sys.stderr) if args.json else contextlib.nullcontext():
        result = distill(
            args.teacher,
            args.train,
            eval_file=args.eval_file,
            patience=args.patience,
            student=student,
            layers=args.layers,
            head=args.head,
            out=args.out,
            temperature=args.temperature,
            alpha_task=args.alpha_task,
            alpha_soft=args.alpha_soft,
            alpha_cos=args.alpha_cos,
            epochs=args.epochs,
            batch_size=args.batch_size,
            learning_rate=args.learning_rate,
            warmup_ratio=args.warmup_ratio,
            clip_norm=args.clip_norm,
            weight_decay=args.weight_decay,
            max_length=args.max_length,
            token_dropout=args.token_dropout,
            seed=args.seed,
            cache_teacher=args.cache_teacher,
            checkpoint_dir=args.checkpoint_dir or default_checkpoint_dir(args.out),
            checkpoint_every=args.checkpoint_every,
            resume=args.resume,
            verbose=1 if sys.stdout.isatty() else 2,
        )
        if not args.json:
            title = (
                f"distillation: the best epoch's ({result.best_epoch}) metrics on the eval file"
                if result.metrics_split == "eval"
                else "distillation: last epoch's losses"
            )
            print_metrics_table({Path(args.out).name: result.metrics}, title=title)
    if args.json:
        print(
            json.dumps(
                {
                    "metrics": result.metrics,
                    "metrics_split": result.metrics_split,
                    "best_epoch": result.best_epoch,
                    "path": str(result.path),
                    "epoch_seconds": result.epoch_seconds,
                }
            )
        )
    return 0


def _layer_list(text: str) -> list[int]:
    try:
        return [int(part) for part in text.replace(",", " ").split()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected teacher layer numbers like 0,2,4, got {text!r}") from None


def _add_distill(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "distill",
        help="train a smaller student from a teacher model (knowledge distillation) and save it as one .keras file",
        description=(
            "Distil a teacher into a smaller student, as DistilBERT was made. The student is built from the "
            "teacher (embeddings, every other layer or --layers, the head) unless --student gives one; it learns "
            "the teacher's outputs (soft targets at --temperature, padding masked out) besides the head's own "
            "loss on the labels. The teacher is frozen and runs in inference mode.\n\n"
            "General distillation (a masked-LM teacher): text rows, masked anew every batch; loss 5 x soft targets "
            "+ 2 x masked-LM + 1 x hidden-state cosine, T=2; Adam lr 5e-4, eps 1e-6, betas (0.9, 0.98), 5% warmup, "
            "gradients clipped at 5.0.\n"
            "Task-specific distillation (any other head, built-in or plugin): the teacher is a fine-tuned .keras "
            "task model and the data its usual labelled file; loss 0.5 x the head's loss + 0.5 x soft targets, "
            "T=2 (--alpha-cos adds the hidden-state cosine); AdamW lr 5e-5, clipping at 1.0. A head must declare "
            "what to distil (TaskHead.distillation_targets()).\n\n"
            "With --eval-file the student is scored on held-out rows after every epoch, as train scores its model "
            "(the head's metric; for a masked-LM teacher the masked-LM loss), stops early after --patience epochs "
            "without improvement, and the best epoch's student is the one saved."
        ),
        epilog=(
            "examples:\n"
            "  distilbert-heads distill --teacher sentiment.keras --train reviews.jsonl --out small.keras\n"
            "  distilbert-heads distill --teacher sentiment.keras --train reviews.jsonl --eval-file dev.jsonl \\\n"
            "      --patience 2 --out small.keras\n"
            "  distilbert-heads distill --teacher mlm.keras --train corpus.txt --layers 0,2,4,7,9,11 \\\n"
            "      --out distilled.keras --checkpoint-every 1000\n"
            "  distilbert-heads distill --config distill.toml --resume\n\n"
            "run files (--config): TOML whose keys are the flags above without the dashes, as for train."
        ),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.takes_run_file = True
    parser.add_argument(
        "--config",
        type=_existing_file,
        metavar="RUN.toml",
        help="read any of these options from a TOML file (keys: flag names without the dashes); flags override it",
    )
    parser.add_argument("--teacher", type=_existing_file, metavar="FILE", help="the teacher .keras task model")
    parser.add_argument("--train", type=_existing_file, metavar="FILE", help="training rows in the head's format")
    parser.add_argument(
        "--eval-file",
        type=_existing_file,
        metavar="FILE",
        help="held-out rows in the same format: the student is scored after every epoch with the head's metric "
        "(a masked-LM teacher: the masked-LM loss), and the best epoch's student is kept and saved",
    )
    parser.add_argument(
        "--patience",
        type=int,
        metavar="N",
        help=f"stop after N epochs without a better --eval-file score; 0 never stops (default: {DEFAULT_PATIENCE}; "
        "needs --eval-file)",
    )
    parser.add_argument(
        "--student",
        type=_existing_file,
        metavar="FILE",
        help="a .keras student to train (default: built from --teacher)",
    )
    parser.add_argument(
        "--layers", type=_layer_list, metavar="0,2,4", help="teacher layers the student keeps (default: every other)"
    )
    parser.add_argument("--head", metavar="NAME", help="the teacher's head to distil (default: its only one)")
    loss = parser.add_argument_group("the loss (defaults: see above)")
    loss.add_argument("--temperature", type=float, default=2.0, metavar="T", help="soft-target temperature (2)")
    loss.add_argument("--alpha-soft", type=float, metavar="W", help="weight of the soft targets")
    loss.add_argument("--alpha-task", type=float, metavar="W", help="weight of the head's own loss on the labels")
    loss.add_argument("--alpha-cos", type=float, metavar="W", help="weight of the hidden-state cosine loss")
    parser.add_argument("--epochs", type=_positive_int, default=3, help="epochs (default: 3)")
    parser.add_argument("--batch-size", type=_positive_int, default=16, help="examples per step (default: 16)")
    parser.add_argument("--learning-rate", type=float, help="peak learning rate (default: see above)")
    parser.add_argument("--warmup-ratio", type=float, metavar="R", help="fraction of steps warming up")
    parser.add_argument("--clip-norm", type=float, metavar="N", help="gradient clipping global norm")
    parser.add_argument("--weight-decay", type=float, metavar="W", help="AdamW weight decay")
    parser.add_argument(
        "--max-length", type=_positive_int, help="longest input in tokens (default: the teacher's max_length)"
    )
    parser.add_argument(
        "--token-dropout", type=float, default=0.0, metavar="P", help="replace tokens by [UNK] with probability P"
    )
    parser.add_argument("--seed", type=int, metavar="N", help="seed: the same seed gives the same student on CPU")
    parser.add_argument(
        "--cache-teacher",
        action="store_true",
        help="compute the teacher's outputs once per row and reuse them every epoch (task distillation without "
        "token dropout or --alpha-cos; refused where the teacher's input changes between epochs)",
    )
    parser.add_argument(
        "--out", required=True, type=_keras_file_out, metavar="MODEL.keras", help="where to save the student"
    )
    parser.add_argument("--json", action="store_true", help="print the final losses as one JSON object on stdout")
    checkpoints = parser.add_argument_group("checkpoints", "As for train: the student, its optimizer and position.")
    checkpoints.add_argument(
        "--checkpoint-dir", metavar="DIR", help="default: MODEL.checkpoints beside --out MODEL.keras"
    )
    checkpoints.add_argument(
        "--checkpoint-every", type=_positive_int, metavar="N", help="also checkpoint every N steps"
    )
    checkpoints.add_argument(
        "--resume", action="store_true", help="continue the interrupted run from its last checkpoint"
    )
    parser.set_defaults(handler=_cmd_distill)


# -- evaluate -------------------------------------------------------------------------------------------
def _cmd_evaluate(args: argparse.Namespace) -> int:
    from distilbert_heads.training.evaluation import evaluate  # imports Keras: only once the arguments are good
    from distilbert_heads.training.report import print_metrics_table

    metrics = evaluate(args.model, args.data, batch_size=args.batch_size, head=args.head, show_progress=args.progress)
    if args.json:
        print(json.dumps(metrics))
    else:
        print_metrics_table({Path(args.model).name: metrics}, title=f"metrics on {Path(args.data).name}")
    return 0


def _add_evaluate(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "evaluate",
        help="score a saved model on a labelled JSONL/CSV file",
        description=(
            "Run a saved .keras model on labelled rows (the same format as for train) and print the metrics "
            "people expect for its task: accuracy and macro-F1 for classification, entity precision/recall/F1 "
            "for NER, exact match and token F1 for QA, accuracy (or Pearson/Spearman) for pairs."
        ),
        epilog="examples:\n  distilbert-heads evaluate --model sentiment.keras --data test.csv\n"
        "  distilbert-heads evaluate --model qa.keras --data dev.jsonl --json",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--model", required=True, metavar="MODEL.keras", help="a model saved by train (or convert)")
    parser.add_argument(
        "--data", required=True, type=_existing_file, metavar="FILE", help="labelled rows (.jsonl or .csv)"
    )
    parser.add_argument("--head", help="which head, for a model with several")
    parser.add_argument("--batch-size", type=_positive_int, default=32, help="examples per batch (default: 32)")
    parser.add_argument("--json", action="store_true", help="print the metrics as one JSON object")
    _add_progress_flag(parser)
    parser.set_defaults(handler=_cmd_evaluate)


# -- predict --------------------------------------------------------------------------------------------
# The parser declares the flags of the built-in kinds' fields (for --help); a plugin kind's fields get
# theirs from main(), which hands predict every other --flag VALUE... it was given (args.field_flags).
_DECLARED_FIELD_FLAGS = ("--text", "--text-a", "--text-b", "--question", "--context")


def field_flag(field: str) -> str:
    """The command-line flag of an input kind's row field: ``text_a`` -> ``--text-a``."""
    return "--" + field.replace("_", "-")


def _given_texts(args: argparse.Namespace) -> dict[str, list[str]]:
    given = {flag: getattr(args, flag[2:].replace("-", "_"), None) for flag in _DECLARED_FIELD_FLAGS}
    given.update(getattr(args, "field_flags", None) or {})
    return {flag: values for flag, values in given.items() if values}


def _predict_items(args: argparse.Namespace, kind: Any, head_label: str) -> list[Any]:
    """The inputs, as the head's input kind defines its items, from the command line or --input file."""
    given = _given_texts(args)
    if not kind.fields:
        raise CLIError(
            f"this model's head {head_label} takes input_kind {kind.name!r}, which the command line cannot build; "
            "use the Python API (distilbert_heads.pipeline)."
        )
    flags = [field_flag(field) for field in kind.fields]
    takes = " ".join(f"{flag} {flag.lstrip('-').upper().replace('-', '_')}" for flag in flags)
    wrong = [flag for flag in given if flag not in flags]
    missing = [flag for flag in flags if flag not in given]
    if wrong or missing:
        problem = (
            f"{' and '.join(wrong)} {'do' if len(wrong) > 1 else 'does'} not apply to it"
            if wrong
            else f"{' and '.join(missing)} {'are' if len(missing) > 1 else 'is'} missing"
        )
        raise CLIError(
            f"this model's head {head_label} takes {kind.description} per input (input_kind {kind.name!r}), so pass "
            f"{takes} (each repeatable) or --input FILE; {problem}."
        )
    counts = {flag: len(given[flag]) for flag in flags}
    if len(set(counts.values())) > 1:
        first, *others = flags
        second = next(flag for flag in others if counts[flag] != counts[first])
        raise CLIError(
            f"{first} was given {counts[first]} time(s) but {second} {counts[second]} time(s); "
            f"pass one {second} per {first}, in the same order."
        )
    rows = [dict(zip(kind.fields, values, strict=True)) for values in zip(*(given[flag] for flag in flags))]
    try:
        return [kind.item_from_row(row, f"input {number}") for number, row in enumerate(rows, 1)]
    except ValueError as error:
        raise CLIError(str(error)) from None


# Input rows read and answered together by `predict --input`: answers are printed chunk by chunk as the file is read.
PREDICT_CHUNK_ROWS = 1024


def _input_rows(path: str, kind: Any, reader: Any) -> Iterator[tuple[int, dict[str, Any]]]:
    """The file's ``(line, row)`` pairs as read; a file without rows is an error once it is read to its end."""
    count = 0
    for numbered in reader:
        count += 1
        yield numbered
    if not count:
        raise CLIError(f"{Path(path).name}: no rows to predict; expected rows with {', '.join(kind.fields)}.")


def _items_of(path: str, kind: Any, rows: list[tuple[int, dict[str, Any]]]) -> list[Any]:
    try:
        return [kind.item_from_row(row, f"{Path(path).name} line {number}") for number, row in rows]
    except ValueError as error:
        raise CLIError(str(error)) from None


def _check_predict_output(args: argparse.Namespace) -> None:
    """--output and --resume go with --input, and the output is not the input (checked before Keras starts)."""
    from distilbert_heads.training import answer_files  # standard library only: no Keras

    if args.output is None:
        if args.resume:
            raise CLIError("--resume continues an interrupted --output file; pass the --output of that run")
        return
    if args.input is None:
        raise CLIError("--output writes the answers of an --input file; pass --input FILE (or leave out --output)")
    if Path(args.output).resolve() == Path(args.input).resolve():
        raise CLIError(f"--output {args.output!r} is the --input file; write the answers to another file")
    answer_files.partial_path(args.output)  # a folder in the way: refused now, not after the model is loaded
    if args.resume:
        answer_files.check_resumable(args.output)


def _cmd_predict(args: argparse.Namespace) -> int:
    _check_predict_output(args)
    # these import Keras: only once the arguments are known good
    from distilbert_heads.plugins.input_kinds import input_kind_of
    from distilbert_heads.text.pipeline import pipeline
    from distilbert_heads.training import answer_files
    from distilbert_heads.training.data_files import RowReader
    from distilbert_heads.training.evaluation import file_progress
    from distilbert_heads.training.examples import load_model, model_tokenizer

    model = load_model(args.model)
    head_name, head = model.select_head(args.head)
    model_tokenizer(model)
    head_label = f"{head_name!r} ({type(head).__name__})"
    kind = input_kind_of(head)
    pipe = pipeline(model, head=head_name, batch_size=args.batch_size, show_progress=False, dtype=args.dtype)
    if args.input is None:
        _print_answers(args, kind, _predict_items(args, kind, head_label), pipe)
        return 0
    if _given_texts(args):
        raise CLIError(f"pass inputs either with --input or with {', '.join(_given_texts(args))}, not both.")
    reader = RowReader(args.input, fields=kind.fields)
    rows = _input_rows(args.input, kind, reader)
    if args.output is None:
        with file_progress(args.input, "predicting", args.progress) as progress:
            for chunk in answer_files.row_chunks(rows, args.chunk_rows):
                _print_answers(args, kind, _items_of(args.input, kind, chunk), pipe)
                progress.bytes_read(reader.bytes_read)
                progress.rows(len(chunk))
        return 0

    def answer_chunk(chunk: list[tuple[int, dict[str, Any]]]) -> list[dict[str, Any]]:
        items = _items_of(args.input, kind, chunk)
        return [_answer_json(kind, item, answer) for item, answer in zip(items, pipe.predict_items(items), strict=True)]

    identity = answer_files.run_identity(args.input, args.model, head=head_name, dtype=args.dtype)
    partial = answer_files.partial_path(args.output)
    if not args.resume and partial.is_file():
        print(
            f"note: starting over; {partial} from an earlier run is replaced (--resume continues it)", file=sys.stderr
        )
    with file_progress(args.input, "predicting", args.progress) as progress:
        run = answer_files.stream_answers(
            args.output,
            rows,
            answer_chunk,
            identity=identity,
            resume=args.resume,
            chunk_rows=args.chunk_rows,
            on_resumed=lambda _: progress.resume_at(reader.bytes_read),
            on_chunk=lambda count: (progress.bytes_read(reader.bytes_read), progress.rows(count)),
        )
    resumed = f" ({run.resumed:,} of them from the interrupted run)" if run.resumed else ""
    print(f"wrote {run.rows:,} answers to {args.output}{resumed}")
    return 0


def _answer_json(kind: Any, item: Any, answer: Any) -> dict[str, Any]:
    return {"input": kind.show(item), "prediction": jsonable(answer)}


def _print_answers(args: argparse.Namespace, kind: Any, items: list[Any], pipe: Any) -> None:
    answers = pipe.predict_items(items)
    for item, answer in zip(items, answers, strict=True):
        if args.json:
            print(json.dumps(_answer_json(kind, item, answer), ensure_ascii=False))
        else:
            print(f"{kind.show(item)}\n  -> {describe_answer(answer)}")
    sys.stdout.flush()


def _add_predict(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "predict",
        help="answers from a saved model for texts given on the command line or in a file",
        description=(
            "Load a .keras model (its tokenizer is inside) and print readable answers: label and score for "
            "classification, entities with character spans for NER, the answer span for QA, label and score "
            "for pairs, one answer per input, in order. Text flags repeat (--text A --text B, or --text A B); "
            "paired flags (--question/--context, --text-a/--text-b) must be given the same number of times. "
            "With --json, one JSON object per input. --input reads a JSONL/CSV file with the "
            "columns text (or text_a and text_b, or question and context)."
        ),
        epilog=(
            "examples:\n"
            "  distilbert-heads predict --model sentiment.keras --text 'What a great film!' --text 'Dull.'\n"
            "  distilbert-heads predict --model qa.keras --question 'Who founded Acme?' \\\n"
            "      --context 'Ada Lovelace founded Acme in 1990.'\n"
            "  distilbert-heads predict --model pairs.keras --text-a 'A cat sat.' --text-b 'A cat was sitting.'\n"
            "  distilbert-heads predict --model ner.keras --input sentences.csv --json\n"
            "  distilbert-heads predict --model sentiment.keras --input big.jsonl --output answers.jsonl\n"
            "  distilbert-heads predict --model sentiment.keras --input big.jsonl --output answers.jsonl --resume"
        ),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--model", required=True, metavar="MODEL.keras", help="a model saved by train (or convert)")
    # Every text flag collects: `--text A --text B` and `--text A B` both answer A, then B.
    repeatable = {"action": "extend", "nargs": "+"}
    parser.add_argument("--text", **repeatable, metavar="TEXT", help="one or more texts (text models)")
    parser.add_argument("--input", type=_existing_file, metavar="FILE", help="a .jsonl or .csv file of inputs")
    parser.add_argument("--question", **repeatable, metavar="Q", help="questions (QA models), one per --context")
    parser.add_argument(
        "--context", **repeatable, metavar="C", help="the passages holding the answers (QA models), one per --question"
    )
    parser.add_argument("--text-a", **repeatable, metavar="A", help="first texts of pairs (pair models)")
    parser.add_argument(
        "--text-b", **repeatable, metavar="B", help="second texts of pairs (pair models), one per --text-a"
    )
    parser.add_argument("--head", help="which head, for a model with several")
    parser.add_argument("--batch-size", type=_positive_int, default=32, help="inputs per batch (default: 32)")
    parser.add_argument("--json", action="store_true", help="print one JSON object per input")
    parser.add_argument(
        "--dtype",
        help="run under this Keras dtype policy, e.g. bfloat16 (fastest on CPUs with bf16 instructions), or int8: "
        "the float32 model with its Dense weights quantized to int8 at load",
    )
    _add_progress_flag(parser)
    files = parser.add_argument_group(
        "answer files",
        "With --output, the answers of an --input file go to a JSON Lines file, one per input row, in\n"
        'input order: {"line": N, "id": ..., "input": ..., "prediction": ...} (line: the row\'s line in\n'
        "--input; id: copied from rows that have one). They are written to OUT.partial, flushed after\n"
        "every chunk, and renamed to OUT only when the whole input is answered (an existing OUT is\n"
        "replaced then, not before).",
    )
    files.add_argument("--output", metavar="OUT.jsonl", help="write the answers to this JSON Lines file")
    files.add_argument(
        "--resume",
        action="store_true",
        help="continue an interrupted --output run from OUT.partial, after its last complete line; pass the same "
        "--input, --model, --head and --dtype (another is refused, naming what differs)",
    )
    files.add_argument(
        "--chunk-rows",
        type=_positive_int,
        default=PREDICT_CHUNK_ROWS,
        metavar="N",
        help=f"input rows read, answered and written together; a kill loses at most one chunk "
        f"(default: {PREDICT_CHUNK_ROWS})",
    )
    parser.set_defaults(handler=_cmd_predict)


# -- convert --------------------------------------------------------------------------------------------
def _cmd_convert(args: argparse.Namespace) -> int:
    # these import Keras: only once the arguments are known good
    from distilbert_heads.model.factory import create_distilbert_with_head  # imports Keras: arguments are good
    from distilbert_heads.text.tokenizer import DistilBertTokenizer

    tokenizer = DistilBertTokenizer.from_pretrained(args.checkpoint)
    model = create_distilbert_with_head(
        task_type=args.task,
        pretrained=args.checkpoint,
        tokenizer=tokenizer,
        allow_partial=args.allow_partial,
        layers=args.layers,
    )
    model.save(args.out)  # atomic: creates missing parent folders, replaces an old file only when complete
    report = model.encoder.load_report
    for what, into in report.folded.items():
        print(f"folded {what} into {into}")
    if report.dropped:
        reasons: dict[str, list[str]] = {}
        for key, why in report.dropped.items():
            reasons.setdefault(why, []).append(key)
        for why, keys in reasons.items():
            print(f"dropped {len(keys)} tensor(s) ({why}): {', '.join(keys[:3])}{', ...' if len(keys) > 3 else ''}")
    heads = ", ".join(f"{name} ({type(head).__name__})" for name, head in model.heads.items())
    print(
        f"saved {args.out}: encoder {model.encoder.config.num_layers} layers x {model.encoder.config.hidden_size}, "
        f"vocab {tokenizer.vocab_size}, head {heads}, tokenizer inside"
    )
    return 0


def _add_convert(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "convert",
        help="turn a Hugging Face DistilBERT or BERT checkpoint directory into a .keras task model",
        description=(
            "Read a Hugging Face checkpoint (config.json + model.safetensors or pytorch_model.bin, and its "
            "vocab.txt or tokenizer.json): a DistilBertModel, or a task checkpoint whose head weights (e.g. "
            "DistilBertForSequenceClassification) are loaded into the task's head. A BERT checkpoint "
            "(BertModel, BertFor*) converts too: token type 0 is folded into the positions, the pooler is "
            "dropped (so is a classifier that reads it), and --layers picks which of its layers to keep. "
            "Write one .keras file with the tokenizer inside. A head the checkpoint has no weights for "
            "starts random (a warning says so): train it before use."
        ),
        epilog=(
            "examples:\n"
            "  distilbert-heads convert ./my-hf-sentiment-checkpoint --task sentiment --out sentiment.keras\n"
            "  distilbert-heads convert distilbert-base-uncased --task qa --out qa-untrained.keras\n"
            "  distilbert-heads convert ./all-MiniLM-L6-v2 --task sentiment --layers 0,2,4 --out small.keras"
        ),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("checkpoint", metavar="DIR", help="Hugging Face checkpoint directory (or hub id)")
    parser.add_argument("--task", required=True, help="task type or alias of the head to put on it")
    parser.add_argument(
        "--out", required=True, type=_keras_file_out, metavar="MODEL.keras", help="where to save the model"
    )
    parser.add_argument(
        "--allow-partial",
        action="store_true",
        help="convert even if the checkpoint lacks encoder weights (they stay random; train before use)",
    )
    parser.add_argument(
        "--layers",
        type=_layer_map,
        metavar="I,J,...",
        help="keep only these checkpoint layers, in this order (e.g. 0,2,4); default all",
    )
    parser.set_defaults(handler=_cmd_convert)


# -- export ---------------------------------------------------------------------------------------------
def _cmd_export(args: argparse.Namespace) -> int:
    from distilbert_heads.serving.export import FORMATS, export  # imports Keras: only once the arguments are good
    from distilbert_heads.training.examples import load_model

    model = load_model(args.model)
    options: dict[str, Any] = {"overwrite": args.overwrite}
    if args.head is not None:
        if args.format != "hf":
            raise CLIError(f"--head picks one head for --format hf; --format {args.format} exports every head.")
        options["head"] = args.head
    if args.quantize is not None:
        if args.format != "onnx":
            raise CLIError(f"--quantize applies to --format onnx; --format {args.format} exports float weights.")
        options["quantize"] = args.quantize
    out = export(model, args.out, format=args.format, **options)
    print(f"exported {out} ({FORMATS[args.format][3]}; heads: {', '.join(model.heads)})")
    return 0


def _add_export(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "export",
        help="write a model for serving: a strings-in SavedModel, an ids-in SavedModel, ONNX or a Hugging Face folder",
        description=(
            "Export a .keras model for serving elsewhere. --format saved_model (default): a TensorFlow SavedModel "
            "whose 'serving_default' takes strings (text; text and text_pair; question and context) and returns "
            "answers, tokenizing in the graph with TensorFlow Text (pip install 'distilbert-heads[serving]'; "
            "built-in heads). --format saved_model_ids: int32 input_ids and attention_mask in, every head output "
            "out as '<head>__<output>' (any head). --format onnx: the same ids-in graph as model.onnx "
            "(pip install 'distilbert-heads[onnx]'); --quantize int8 adds ONNX Runtime's dynamic int8 "
            "quantization (int8 weights, about a quarter of the size). --format hf: a Hugging Face task checkpoint "
            "folder that transformers' AutoModelFor... and pipeline load. The SavedModel and ONNX formats need the "
            "TensorFlow backend. The folder is written beside --out and moved into place only when complete."
        ),
        epilog=(
            "examples:\n"
            "  distilbert-heads export --model sentiment.keras --out serving/sentiment/1\n"
            "  distilbert-heads export --model sentiment.keras --format onnx --out onnx/sentiment\n"
            "  distilbert-heads export --model sentiment.keras --format onnx --quantize int8 --out onnx/int8\n"
            "  distilbert-heads export --model ner.keras --format hf --out hf/ner\n"
            "  python -c \"import tensorflow as tf; m = tf.saved_model.load('serving/sentiment/1'); "
            "print(m.signatures['serving_default'])\""
        ),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--model", required=True, metavar="MODEL.keras", help="the model to export")
    parser.add_argument("--out", required=True, metavar="DIR", help="a new (or empty) directory")
    parser.add_argument(
        "--format",
        choices=("saved_model", "saved_model_ids", "onnx", "hf"),
        default="saved_model",
        help="what to write (default: saved_model, strings in and answers out)",
    )
    parser.add_argument("--head", help="with --format hf: the head to write, for a model with several")
    parser.add_argument(
        "--quantize",
        choices=("int8",),
        help="with --format onnx: quantize the graph's weights to int8 (ONNX Runtime dynamic quantization)",
    )
    parser.add_argument(
        "--overwrite",
        action="store_true",
        help="replace an existing --out folder whole (swapped in only once the export is complete)",
    )
    parser.set_defaults(handler=_cmd_export)


# -- info -----------------------------------------------------------------------------------------------
def _cmd_info(args: argparse.Namespace) -> int:
    from distilbert_heads.model.info import model_info  # imports Keras: only once the arguments are good
    from distilbert_heads.training.examples import load_model

    info = model_info(load_model(args.model))
    if args.json:
        print(json.dumps({"path": args.model, **info}, indent=2))
    else:
        _print_info(args.model, info)
    return 0


def _print_info(path: str, info: dict[str, Any]) -> None:
    from rich.table import Table

    def pairs(title: str, rows: dict[str, Any]) -> Table:
        table = Table(title=title, show_header=False, title_justify="left")
        table.add_column(style="bold", no_wrap=True)
        table.add_column(overflow="fold")
        for key, value in rows.items():
            table.add_row(key, value if isinstance(value, str) else json.dumps(value))
        return table

    console = _console()
    encoder, tokenizer = info["encoder"], info["tokenizer"]
    console.print(
        pairs(
            f"{path}",
            {
                "parameters": f"{info['parameters']:,} (encoder {encoder['parameters']:,})",
                "encoder": f"{encoder['layers']} layers, hidden {encoder['hidden_size']}, "
                f"{encoder['attention_heads']} attention heads, feed-forward {encoder['intermediate_size']}",
                "vocabulary": f"{encoder['vocab_size']:,} rows, {encoder['max_position_embeddings']} positions",
                "max_length": f"{info['max_length']} tokens",
                "dtype policy": info["dtype_policy"],
                "tokenizer": "none saved (pass one to use the model on text)"
                if tokenizer is None
                else f"{tokenizer['vocab_size']:,} tokens, {tokenizer['case']}",
            },
        )
    )
    heads = Table(title="heads", title_justify="left")
    for header in ("Name", "Task type", "Labels", "Loss weight", "Plugin"):
        heads.add_column(header, overflow="fold")
    for head in info["heads"]:
        labels = ", ".join(map(str, head["labels"])) if head["labels"] else "-"
        heads.add_row(head["name"], head["task_type"], labels, f"{head['loss_weight']:g}", head["plugin"])
    console.print(heads)
    record = info["training_record"]
    if record is None:
        console.print(
            "training record: none. This model was not made by 'distilbert-heads train' of this version (e.g. by "
            "convert, in Python, or by an older version), so how it was trained is not known."
        )
        return
    versions = record.get("versions", {})
    made = {"saved (UTC)": record.get("created", "?")}
    made.update({name: str(version) for name, version in versions.items()})
    console.print(pairs("how it was made", made))
    data = Table(title="data", title_justify="left")
    for header in ("Role", "File", "Bytes", "SHA-256"):
        data.add_column(header, overflow="fold")
    for role, described in record.get("data", {}).items():
        data.add_row(role, described.get("path", "?"), f"{described.get('bytes', 0):,}", described.get("sha256", "?"))
    console.print(data)
    console.print(pairs("settings", record.get("settings", {})))
    run = record.get("run")
    if run:
        console.print(
            pairs(
                "run file",
                {
                    "file": run.get("path", "?"),
                    "sha256": run.get("sha256", "?"),
                    "keys from the file": ", ".join(run.get("from_file", [])) or "-",
                    "flags on the command line": ", ".join(run.get("from_flags", [])) or "-",
                },
            )
        )


def _add_info(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "info",
        help="show what a saved model is and how it was trained (settings, data hashes, versions)",
        description=(
            "Load a .keras model (through the installed head plugins, like predict) and print its heads (task type, "
            "labels), its encoder's size and parameter count, max_length, its tokenizer, and the training record "
            "train saved in it: the library, Keras and Python versions and backend, when it was saved, every "
            "setting the run used, the data files with their SHA-256, and the run file (--config) if there was one. "
            "A model made by convert (or an older version) has no training record; info says so."
        ),
        epilog=(
            "examples:\n"
            "  distilbert-heads info sentiment.keras\n"
            "  distilbert-heads info sentiment.keras --json | jq .training_record.settings"
        ),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("model", metavar="MODEL.keras", help="a model saved by train (or convert)")
    parser.add_argument("--json", action="store_true", help="print everything as one JSON object")
    parser.set_defaults(handler=_cmd_info)


def _cmd_demo(args: argparse.Namespace) -> int:
    from distilbert_heads.demo.run import run_demo  # imports Keras

    return run_demo(quick=args.quick, out=args.out, seed=args.seed, verbose=args.verbose)


def _add_demo(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "demo",
        help="train, evaluate, save and reload a tiny model for every built-in head (a few minutes on a laptop)",
        description=(
            "For each built-in head (sentiment, ner, qa, pairwise), on the small datasets shipped in the package: "
            "learn a vocabulary and train a tiny DistilBERT from scratch for a fixed number of epochs, "
            "score it on the held-out test split (names and places the training split never shows), save it as .keras, "
            "reload every model in a fresh Python process and check its predictions match, then print example "
            "predictions and a metrics table with the chance level beside each metric. Exits 1 when a metric is "
            "below its floor (sentiment accuracy 0.9, NER entity F1 0.6, QA exact match 0.5, pairwise accuracy "
            "0.75) or the reloaded models disagree. --quick runs the same steps on a few rows for one epoch "
            "(the floors are not checked)."
        ),
        epilog="examples:\n  distilbert-heads demo\n  distilbert-heads demo --quick --out /tmp/demo",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--quick", action="store_true", help="a few rows and one epoch: checks the plumbing only")
    parser.add_argument("--out", metavar="DIR", help="where to write the models and data (default: a new temp dir)")
    parser.add_argument("--seed", type=int, default=0, help="random seed (default: 0)")
    parser.add_argument("--verbose", action="store_true", help="show per-epoch training logs")
    parser.set_defaults(handler=_cmd_demo)


def build_parser() -> argparse.ArgumentParser:
    """The argument parser with every subcommand."""
    parser = _Parser(
        prog="distilbert-heads",
        description="DistilBERT with pluggable task heads: train, evaluate, predict, convert and export models.",
        epilog=(
            "examples:\n"
            "  distilbert-heads demo\n"
            "  distilbert-heads heads\n"
            "  distilbert-heads train --task sentiment --train train.csv --eval dev.csv --out sentiment.keras\n"
            "  distilbert-heads predict --model sentiment.keras --text 'What a great film!'\n"
            "  distilbert-heads info sentiment.keras\n"
            "run 'distilbert-heads COMMAND --help' for a command's options and examples.\n\n"
            "environment:\n"
            f"  {TF_LOGS_VARIABLE}=1   show TensorFlow's own start-up and C++ log lines (hidden by default)\n"
            f"  {DEBUG_VARIABLE}=1     show the full traceback instead of the one-line error\n"
            "  NO_COLOR=1                   no colours, even on a terminal (never any in a pipe or file)"
        ),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    subparsers = parser.add_subparsers(title="commands", dest="command", metavar="COMMAND", required=True)
    _add_heads(subparsers)
    _add_train(subparsers)
    _add_distill(subparsers)
    _add_evaluate(subparsers)
    _add_predict(subparsers)
    _add_convert(subparsers)
    _add_export(subparsers)
    _add_info(subparsers)
    _add_demo(subparsers)
    return parser


def _show_warning_in_one_line(message: Warning | str, category: type[Warning], *_: Any, **__: Any) -> None:
    """`warnings.showwarning` for the command line: ``warning: ...`` on one line, no source location."""
    print(f"warning: {' '.join(str(message).split())}", file=sys.stderr)


def _field_flags(extra: Sequence[str]) -> dict[str, list[str]] | None:
    """``--flag VALUE...`` groups (or ``--flag=VALUE``) that predict was given beyond its declared flags:
    the row fields of a plugin's input kind. None when something else is left over."""
    flags: dict[str, list[str]] = {}
    current: list[str] | None = None
    for token in extra:
        if re.fullmatch(r"--[a-z0-9][a-z0-9-]*(=.*)?", token, flags=re.S):
            flag, _, value = token.partition("=")
            current = flags.setdefault(flag, [])
            if value:
                current.append(value)
        elif current is None:
            return None
        else:
            current.append(token)
    return flags if all(flags.values()) else None


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line with ``argv`` (default: ``sys.argv[1:]``) and return the exit code."""
    parser = build_parser()
    try:
        args, extra = parser.parse_known_args(argv)
        if extra:
            args.field_flags = _field_flags(extra) if args.handler is _cmd_predict else None
            if args.field_flags is None:
                parser.parse_args(argv)  # argparse's own error for what it does not know
    except SystemExit as exit_:  # --help and usage errors: return the code instead of exiting
        return exit_.code if isinstance(exit_.code, int) else USER_ERROR_EXIT
    try:
        with warnings.catch_warnings():
            if not os.environ.get(DEBUG_VARIABLE):
                warnings.showwarning = _show_warning_in_one_line
            _start_keras_quietly()
            return int(args.handler(args))
    except KeyboardInterrupt as interrupt:  # notes say what was running (e.g. which plugin was loading)
        print(" ".join(["interrupted", *getattr(interrupt, "__notes__", ())]), file=sys.stderr)
        return 130
    except Exception as error:
        if os.environ.get(DEBUG_VARIABLE) or not isinstance(error, _user_errors()):
            raise
        print(f"error: {_one_line(error, args)}", file=sys.stderr)
        return USER_ERROR_EXIT


if __name__ == "__main__":
    raise SystemExit(main())
