"""The ``distilbert-heads`` command line: heads, train, evaluate, predict, convert, export, demo.

Each subcommand is a ``_cmd_<name>(args) -> int`` function plus a ``_add_<name>(subparsers)``
that declares its arguments; `main` only parses and dispatches. A user error (a bad file, an
unknown task, a missing model) prints one ``error: ...`` line to stderr and exits 2, without a
traceback (set ``DISTILBERT_HEADS_DEBUG=1`` to see one). Heavy imports (TensorFlow, Keras) happen
inside the commands, after ``TF_CPP_MIN_LOG_LEVEL`` is set, so ``--help`` is fast and quiet.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from distilbert_heads.display import describe_answer, jsonable

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

USER_ERROR_EXIT = 2

_STATUS_STYLE = {"ok": "green", "failed": "bold red", "blocked": "yellow", "overridden": "dim"}


def _cmd_heads(args: argparse.Namespace) -> int:
    from distilbert_heads.registry import PluginConflictError, PluginLoadError, get_registry

    registry = get_registry()
    try:
        rows = registry.list_heads(raise_on_conflict=False)
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


def _print_table(rows: list[dict[str, Any]]) -> None:
    from rich.console import Console
    from rich.table import Table

    # Piped output gets a wide fixed width so names are not folded mid-word.
    width = None if sys.stdout.isatty() or "COLUMNS" in os.environ else 200
    console = Console(width=width)
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


def _user_errors() -> tuple[type[BaseException], ...]:
    """Exception types that mean "the input was wrong", not "the program is broken"."""
    from distilbert_heads.data import DataFileError
    from distilbert_heads.head import HeadOptionsError
    from distilbert_heads.model import MissingHeadPluginError
    from distilbert_heads.registry import PluginLoadError, UnknownTaskTypeError
    from distilbert_heads.training import TrainingError

    return (CLIError, DataFileError, HeadOptionsError, MissingHeadPluginError, PluginLoadError,
            UnknownTaskTypeError, TrainingError, ValueError, OSError)


def _one_line(error: BaseException) -> str:
    text = " ".join(part.strip() for part in str(error).splitlines() if part.strip())
    return text or type(error).__name__


def _check_file(path: str, what: str) -> None:
    if not Path(path).is_file():
        raise CLIError(f"{what} {path!r} does not exist (or is not a file).")


# -- train ---------------------------------------------------------------------------------------------
def _cmd_train(args: argparse.Namespace) -> int:
    from distilbert_heads.training import train

    _check_file(args.train, "--train file")
    if args.eval is not None:
        _check_file(args.eval, "--eval file")
    result = train(
        args.task,
        args.train,
        eval_file=args.eval,
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
        verbose=1 if sys.stdout.isatty() else 2,
    )
    if args.json:
        print(json.dumps({"metrics": result.metrics, "split": result.metrics_split, "path": str(result.path)}))
    return 0


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
            "  sentiment / classification: {\"text\": \"Great film!\", \"label\": \"positive\"}\n"
            "  ner:      {\"tokens\": [\"Ada\", \"lives\", \"in\", \"Paris\"], \"tags\": [\"B-PER\", \"O\", \"O\", \"B-LOC\"]}\n"
            "            or {\"text\": \"...\", \"entities\": [{\"start\": 0, \"end\": 3, \"label\": \"PER\"}]}\n"
            "  qa:       {\"question\": \"...\", \"context\": \"...\", \"answers\": {\"text\": [\"...\"], \"answer_start\": [17]}}\n"
            "  pairwise: {\"text_a\": \"...\", \"text_b\": \"...\", \"label\": \"paraphrase\"}\n"
            "Learning rate: Adam, 5e-5 with --pretrained, 1e-3 from scratch, unless --learning-rate is given."
        ),
        epilog=(
            "examples:\n"
            "  distilbert-heads train --task sentiment --train reviews.csv --eval dev.csv --out sentiment.keras\n"
            "  distilbert-heads train --task ner --train ner.jsonl --pretrained distilbert-base-uncased \\\n"
            "      --epochs 2 --out ner.keras"
        ),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--task", required=True, help="task type or alias: sentiment, ner, qa, pairwise, or a plugin's")
    parser.add_argument("--train", required=True, metavar="FILE", help="training rows (.jsonl or .csv)")
    parser.add_argument("--eval", metavar="FILE", help="held-out rows for early stopping and the final metrics")
    source = parser.add_mutually_exclusive_group()
    source.add_argument("--variant", choices=("tiny", "small", "base"), default="tiny",
                        help="model size when training from scratch (default: tiny)")
    source.add_argument("--pretrained", metavar="DIR_OR_ID",
                        help="fine-tune a Hugging Face checkpoint directory or hub id (uses its tokenizer)")
    parser.add_argument("--epochs", type=_positive_int, default=3, help="at most this many epochs (default: 3)")
    parser.add_argument("--batch-size", type=_positive_int, default=16, help="examples per step (default: 16)")
    parser.add_argument("--learning-rate", type=float, help="Adam learning rate (default: 5e-5 pretrained, 1e-3 scratch)")
    parser.add_argument("--max-length", type=_positive_int, default=128,
                        help="longest input in tokens, special tokens included (default: 128)")
    parser.add_argument("--vocab-size", type=_positive_int, default=2000,
                        help="vocabulary size learnt from the training texts, from scratch only (default: 2000)")
    parser.add_argument("--cased", action="store_true",
                        help="from scratch: keep capitalisation in the learnt vocabulary (default: lowercase)")
    parser.add_argument("--whole-words", action="store_true",
                        help="from scratch: learn whole words, not word pieces; unseen words become [UNK] "
                             "(helps small models generalise to unseen names; use with --token-dropout)")
    parser.add_argument("--token-dropout", type=float, default=0.0, metavar="P",
                        help="while training, replace each token by [UNK] with probability P (default: 0)")
    parser.add_argument("--patience", type=int, default=2,
                        help="epochs without improvement on --eval before stopping; 0 never stops (default: 2)")
    parser.add_argument("--out", required=True, metavar="MODEL.keras", help="where to save the trained model")
    parser.add_argument("--json", action="store_true", help="also print the final metrics as one JSON line")
    parser.set_defaults(handler=_cmd_train)


# -- evaluate -------------------------------------------------------------------------------------------
def _cmd_evaluate(args: argparse.Namespace) -> int:
    from distilbert_heads.training import evaluate, print_metrics_table

    _check_file(args.data, "--data file")
    metrics = evaluate(args.model, args.data, batch_size=args.batch_size, head=args.head)
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
    parser.add_argument("--data", required=True, metavar="FILE", help="labelled rows (.jsonl or .csv)")
    parser.add_argument("--head", help="which head, for a model with several")
    parser.add_argument("--batch-size", type=_positive_int, default=32, help="examples per batch (default: 32)")
    parser.add_argument("--json", action="store_true", help="print the metrics as one JSON object")
    parser.set_defaults(handler=_cmd_evaluate)


# -- predict --------------------------------------------------------------------------------------------
def _predict_inputs(args: argparse.Namespace, kind: str) -> tuple[list[Any], tuple[Any, ...], dict[str, Any]]:
    """(what to show per input, pipeline args, pipeline kwargs) from the command line or --input file."""
    if args.input is not None:
        return _inputs_from_file(args.input, kind)
    if kind == "question_context":
        if args.question is None or args.context is None:
            raise CLIError("This is a question-answering model: pass --question Q --context C (or --input FILE).")
        return [f"Q: {args.question}"], (), {"question": [args.question], "context": [args.context]}
    if kind == "pair":
        if args.text_a is None or args.text_b is None:
            raise CLIError("This model classifies text pairs: pass --text-a A --text-b B (or --input FILE).")
        return [f"{args.text_a} || {args.text_b}"], ([(args.text_a, args.text_b)],), {}
    if not args.text:
        raise CLIError("Pass --text TEXT (several allowed) or --input FILE.")
    return list(args.text), (list(args.text),), {}


def _inputs_from_file(path: str, kind: str) -> tuple[list[Any], tuple[Any, ...], dict[str, Any]]:
    from distilbert_heads.data import read_rows

    columns = {"pair": ("text_a", "text_b"), "question_context": ("question", "context")}.get(kind, ("text",))
    rows = []
    for number, row in read_rows(path):
        missing = [column for column in columns if not isinstance(row.get(column), str)]
        if missing:
            raise CLIError(
                f"{Path(path).name} line {number}: no text in column(s) {', '.join(missing)}; this model reads "
                f"rows with {', '.join(columns)}."
            )
        rows.append(tuple(row[column] for column in columns))
    if not rows:
        raise CLIError(f"{Path(path).name}: no rows to predict; expected rows with {', '.join(columns)}.")
    if kind == "question_context":
        return [f"Q: {q}" for q, _ in rows], (), {"question": [q for q, _ in rows], "context": [c for _, c in rows]}
    if kind == "pair":
        return [f"{a} || {b}" for a, b in rows], (rows,), {}
    return [text for (text,) in rows], ([text for (text,) in rows],), {}


def _cmd_predict(args: argparse.Namespace) -> int:
    from distilbert_heads.pipeline import pipeline
    from distilbert_heads.training import load_model, model_tokenizer, select_head

    if args.input is not None:
        _check_file(args.input, "--input file")
    model = load_model(args.model)
    head_name, head = select_head(model, args.head)
    model_tokenizer(model)
    shown, pipe_args, pipe_kwargs = _predict_inputs(args, getattr(head, "input_kind", "text"))
    pipe = pipeline(model, head=head_name, batch_size=args.batch_size, show_progress=False, dtype=args.dtype)
    answers = pipe(*pipe_args, **pipe_kwargs)  # one answer per input: the inputs are lists
    for text, answer in zip(shown, answers, strict=True):
        if args.json:
            print(json.dumps({"input": text, "prediction": jsonable(answer)}, ensure_ascii=False))
        else:
            print(f"{text}\n  -> {describe_answer(answer)}")
    return 0


def _add_predict(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "predict",
        help="answers from a saved model for texts given on the command line or in a file",
        description=(
            "Load a .keras model (its tokenizer is inside) and print readable answers: label and score for "
            "classification, entities with character spans for NER, the answer span for QA, label and score "
            "for pairs. With --json, one JSON object per input. --input reads a JSONL/CSV file with the "
            "columns text (or text_a and text_b, or question and context)."
        ),
        epilog=(
            "examples:\n"
            "  distilbert-heads predict --model sentiment.keras --text 'What a great film!' --text 'Dull.'\n"
            "  distilbert-heads predict --model qa.keras --question 'Who founded Acme?' \\\n"
            "      --context 'Ada Lovelace founded Acme in 1990.'\n"
            "  distilbert-heads predict --model pairs.keras --text-a 'A cat sat.' --text-b 'A cat was sitting.'\n"
            "  distilbert-heads predict --model ner.keras --input sentences.csv --json"
        ),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--model", required=True, metavar="MODEL.keras", help="a model saved by train (or convert)")
    parser.add_argument("--text", nargs="+", metavar="TEXT", help="one or more texts (text models)")
    parser.add_argument("--input", metavar="FILE", help="a .jsonl or .csv file of inputs")
    parser.add_argument("--question", help="the question (QA models)")
    parser.add_argument("--context", help="the passage holding the answer (QA models)")
    parser.add_argument("--text-a", help="first text of a pair (pair models)")
    parser.add_argument("--text-b", help="second text of a pair (pair models)")
    parser.add_argument("--head", help="which head, for a model with several")
    parser.add_argument("--batch-size", type=_positive_int, default=32, help="inputs per batch (default: 32)")
    parser.add_argument("--json", action="store_true", help="print one JSON object per input")
    parser.add_argument(
        "--dtype", help="run under this Keras dtype policy, e.g. bfloat16 (fastest on CPUs with bf16 instructions)"
    )
    parser.set_defaults(handler=_cmd_predict)


# -- convert --------------------------------------------------------------------------------------------
def _cmd_convert(args: argparse.Namespace) -> int:
    from distilbert_heads.factory import create_distilbert_with_head
    from distilbert_heads.tokenizer import DistilBertTokenizer

    if not args.out.endswith(".keras"):
        raise CLIError(f"--out must name a .keras file (e.g. model.keras), got {args.out!r}.")
    tokenizer = DistilBertTokenizer.from_pretrained(args.checkpoint)
    model = create_distilbert_with_head(task_type=args.task, pretrained=args.checkpoint, tokenizer=tokenizer,
                                        allow_partial=args.allow_partial)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    model.save(args.out)
    heads = ", ".join(f"{name} ({type(head).__name__})" for name, head in model.heads.items())
    print(f"saved {args.out}: encoder {model.encoder.config.num_layers} layers x {model.encoder.config.hidden_size}, "
          f"vocab {tokenizer.vocab_size}, head {heads}, tokenizer inside")
    return 0


def _add_convert(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "convert",
        help="turn a Hugging Face DistilBERT checkpoint directory into a .keras task model",
        description=(
            "Read a Hugging Face checkpoint (config.json + model.safetensors or pytorch_model.bin, and its "
            "vocab.txt or tokenizer.json): a DistilBertModel, or a task checkpoint whose head weights (e.g. "
            "DistilBertForSequenceClassification) are loaded into the task's head. Write one .keras file "
            "with the tokenizer inside. A head the checkpoint has no weights for starts random (a warning "
            "says so): train it before use."
        ),
        epilog=(
            "examples:\n"
            "  distilbert-heads convert ./my-hf-sentiment-checkpoint --task sentiment --out sentiment.keras\n"
            "  distilbert-heads convert distilbert-base-uncased --task qa --out qa-untrained.keras"
        ),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("checkpoint", metavar="DIR", help="Hugging Face checkpoint directory (or hub id)")
    parser.add_argument("--task", required=True, help="task type or alias of the head to put on it")
    parser.add_argument("--out", required=True, metavar="MODEL.keras", help="where to save the model")
    parser.add_argument("--allow-partial", action="store_true",
                        help="convert even if the checkpoint lacks encoder weights (they stay random; train before use)")
    parser.set_defaults(handler=_cmd_convert)


# -- export ---------------------------------------------------------------------------------------------
def _cmd_export(args: argparse.Namespace) -> int:
    import keras

    from distilbert_heads.model import flat_output_key
    from distilbert_heads.training import load_model

    if keras.backend.backend() != "tensorflow":
        raise CLIError(
            f"export writes a TensorFlow SavedModel and needs the TensorFlow backend, but Keras runs on "
            f"{keras.backend.backend()!r}. Run it as: KERAS_BACKEND=tensorflow distilbert-heads export ..."
        )
    import tensorflow as tf

    model = load_model(args.model)
    out = Path(args.out)
    if out.is_file() or (out.is_dir() and any(out.iterdir())):
        raise CLIError(f"{args.out!r} exists and is not an empty directory; choose a new --out directory.")

    def serve(input_ids: Any, attention_mask: Any) -> dict[str, Any]:
        outputs = model({"input_ids": input_ids, "attention_mask": attention_mask}, training=False)
        return {
            signature_output_name(flat_output_key(head, name)): tensor
            for head, named in outputs.items()
            for name, tensor in named.items()
        }

    archive = keras.export.ExportArchive()
    archive.track(model)
    archive.add_endpoint(
        name="serve",
        fn=serve,
        input_signature=[
            tf.TensorSpec((None, None), tf.int32, name="input_ids"),
            tf.TensorSpec((None, None), tf.int32, name="attention_mask"),
        ],
    )
    archive.write_out(os.fspath(out), verbose=False)
    tokenizer = getattr(model, "tokenizer", None)
    if tokenizer is not None:
        tokenizer.save(out / "tokenizer")
    names = ", ".join(signature_output_name(key) for key in model.flat_output_keys)
    print(f"exported {out} (signature 'serving_default': input_ids, attention_mask int32 (batch, length) -> {names})"
          + ("; tokenizer files in tokenizer/" if tokenizer is not None else ""))
    return 0


def signature_output_name(flat_key: str) -> str:
    """A SavedModel output name for a ``"<head>/<output>"`` key (``"/"`` is not allowed there)."""
    return flat_key.replace("/", "__")


def _add_export(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "export",
        help="write a TensorFlow SavedModel for serving (TensorFlow Serving, TFLite converters, tf.saved_model.load)",
        description=(
            "Export a .keras model as a TensorFlow SavedModel whose 'serving_default' signature takes int32 "
            "input_ids and attention_mask of shape (batch, length) and returns every head output, named "
            "'<head>__<output>' (e.g. sentiment__logits). Tokenization is not part of the graph: the "
            "tokenizer's files are written to DIR/tokenizer/. Needs the TensorFlow backend."
        ),
        epilog=(
            "example:\n"
            "  distilbert-heads export --model sentiment.keras --out serving/sentiment/1\n"
            "  python -c \"import tensorflow as tf; m = tf.saved_model.load('serving/sentiment/1'); "
            "print(m.signatures['serving_default'])\""
        ),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--model", required=True, metavar="MODEL.keras", help="the model to export")
    parser.add_argument("--out", required=True, metavar="DIR", help="a new (or empty) directory")
    parser.set_defaults(handler=_cmd_export)


def _cmd_demo(args: argparse.Namespace) -> int:
    from distilbert_heads.demo import run_demo

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
    parser = argparse.ArgumentParser(
        prog="distilbert-heads",
        description="DistilBERT with pluggable task heads: train, evaluate, predict, convert and export models.",
        epilog=(
            "examples:\n"
            "  distilbert-heads demo\n"
            "  distilbert-heads heads\n"
            "  distilbert-heads train --task sentiment --train train.csv --eval dev.csv --out sentiment.keras\n"
            "  distilbert-heads predict --model sentiment.keras --text 'What a great film!'\n"
            "run 'distilbert-heads COMMAND --help' for a command's options and examples."
        ),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    subparsers = parser.add_subparsers(title="commands", dest="command", metavar="COMMAND", required=True)
    _add_heads(subparsers)
    _add_train(subparsers)
    _add_evaluate(subparsers)
    _add_predict(subparsers)
    _add_convert(subparsers)
    _add_export(subparsers)
    _add_demo(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line with ``argv`` (default: ``sys.argv[1:]``) and return the exit code."""
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exit_:  # --help and usage errors: return the code instead of exiting
        return exit_.code if isinstance(exit_.code, int) else 2
    try:
        return int(args.handler(args))
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except Exception as error:
        if os.environ.get("DISTILBERT_HEADS_DEBUG") or not isinstance(error, _user_errors()):
            raise
        print(f"error: {_one_line(error)}", file=sys.stderr)
        return USER_ERROR_EXIT


if __name__ == "__main__":
    raise SystemExit(main())
