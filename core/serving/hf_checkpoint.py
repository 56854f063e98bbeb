"""Hugging Face task checkpoints out: `save_pretrained`, `export_hf` and `push_to_hub`.

A single-head task model becomes the folder ``transformers`` loads with the matching
``AutoModelFor...``: ``config.json`` (the encoder's fields, ``architectures``, ``id2label`` /
``label2id``, ``problem_type`` for a regression score), ``model.safetensors`` (the encoder under
``distilbert.`` plus the head's own weights), the tokenizer's files and a model card
(``README.md``: task, labels, metrics from training, data files with their SHA-256, versions).

What the head contributes comes from its `TaskHead` hooks: ``hf_architecture`` (the
``transformers`` class), ``hf_head_weights()`` and ``hf_config()``. Built-in heads set all three;
a plugin head that sets them exports the same way, one that does not gets an `ExportError`
naming the head and saying how to add them. A Hugging Face checkpoint holds one head, so a
model with several says which with ``head=``.

The module lives in ``serving/`` beside the other export formats (`export_hf` is one of them);
`DistilBertTaskModel.save_pretrained` and ``push_to_hub`` delegate here.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

import distilbert_heads
from distilbert_heads import atomic
from distilbert_heads.encoder import checkpoints
from distilbert_heads.plugins.head import TaskHead, describe_head
from distilbert_heads.serving.export import ExportError, check_export_folder
from distilbert_heads.text.tokenizer import TOKENIZER_CONFIG_NAME

if TYPE_CHECKING:
    from distilbert_heads.model.task_model import DistilBertTaskModel

__all__ = [
    "MODEL_CARD_NAME",
    "HubError",
    "export_hf",
    "hf_checkpoint_files",
    "push_to_hub",
    "save_pretrained",
    "unsupported_heads_hf",
]

MODEL_CARD_NAME = "README.md"
# The `transformers.pipeline` task of each architecture a head may name (None: no pipeline).
PIPELINE_TASKS = {
    "DistilBertForSequenceClassification": "text-classification",
    "DistilBertForTokenClassification": "token-classification",
    "DistilBertForQuestionAnswering": "question-answering",
    "DistilBertForMaskedLM": "fill-mask",
}
HUB_EXTRA = "pip install 'distilbert-heads[hub]'"
HEAD_HOOK_ADVICE = (
    "give the head class hf_architecture (the transformers class, e.g. 'DistilBertForTokenClassification'), "
    "hf_head_weights() (its weights under that class's key names) and hf_config() (its config.json fields), "
    "see distilbert_heads.TaskHead"
)


class HubError(RuntimeError):
    """Pushing to the Hugging Face hub failed before anything was uploaded (no network, no login, no rights)."""


# -- which heads can be written ------------------------------------------------------------------
def _why_not(head: TaskHead) -> str | None:
    """Why ``head`` has no Hugging Face task checkpoint, or None when it has one."""
    architecture = type(head).hf_architecture
    if not architecture:
        return f"{type(head).__qualname__} has no Hugging Face equivalent (no hf_architecture)"
    if not head.hf_head_weights():
        return f"{type(head).__qualname__} names {architecture} but hf_head_weights() returned no weights"
    return None


def unsupported_heads_hf(model: DistilBertTaskModel) -> dict[str, str]:
    """Head name -> why it cannot be a Hugging Face task checkpoint; heads that can are left out."""
    return {name: why for name, head in model.heads.items() if (why := _why_not(head)) is not None}


def _exportable_head(model: DistilBertTaskModel, head: str | None) -> tuple[str, TaskHead]:
    if head is None and len(model.heads) > 1:
        names = ", ".join(f"{name!r} ({h.task_type})" for name, h in model.heads.items())
        raise ExportError(
            f"A Hugging Face checkpoint holds one head, but this model has {len(model.heads)}: {names}. "
            f"Write one folder per head: save_pretrained(out, head={next(iter(model.heads))!r}) "
            "(the encoder goes into each)."
        )
    try:
        name, chosen = model.select_head(head)
    except ValueError as error:
        raise ExportError(str(error)) from None
    why = _why_not(chosen)
    if why is not None:
        raise ExportError(
            f"{describe_head(chosen, model.head_plugin(name))} cannot be written as a Hugging Face task checkpoint: "
            f"{why}. Export it in a format every head supports instead: model.save('model.keras') or "
            f"export(model, out, format='saved_model'). To give the head a Hugging Face form, {HEAD_HOOK_ADVICE}; "
            "model.encoder.save_pretrained(out) writes the encoder alone."
        )
    if model.tokenizer is None:
        raise ExportError(
            "The model has no tokenizer, so the checkpoint would have no tokenizer files and transformers.pipeline "
            "could not run it. Set one first: model.tokenizer = DistilBertTokenizer.from_pretrained(<its folder>)."
        )
    return name, chosen


# -- the files ------------------------------------------------------------------------------------
def hf_config(model: DistilBertTaskModel, head: TaskHead) -> dict[str, Any]:
    """``config.json`` of the task checkpoint: the encoder's fields, the head's, ``architectures``."""
    config = model.encoder.config.to_hf_dict()
    config.update(head.hf_config())
    config["architectures"] = [type(head).hf_architecture]
    if "id2label" in config:
        config["num_labels"] = len(config["id2label"])
    return config


def hf_state_dict(model: DistilBertTaskModel, head: TaskHead) -> dict[str, np.ndarray]:
    """The encoder under ``distilbert.`` and the head under its own Hugging Face names, all float32."""
    state = {
        checkpoints.ENCODER_PREFIX + key: value for key, value in checkpoints.encoder_state_dict(model.encoder).items()
    }
    for key, value in head.hf_head_weights().items():
        if key in state:
            raise ExportError(
                f"{type(head).__module__}.{type(head).__qualname__}.hf_head_weights() returns {key!r}, the name of an "
                "encoder weight, which it would overwrite; a head returns only its own layers, under the names its "
                "transformers class gives them (e.g. 'classifier.weight'). Fix the head's hf_head_weights()."
            )
        state[key] = np.ascontiguousarray(np.asarray(value, dtype=np.float32))
    return state


def hf_checkpoint_files(model: DistilBertTaskModel, directory: Path, head: str | None = None) -> str:
    """Write the checkpoint's files straight into ``directory`` (the caller makes it atomic); the head's name."""
    from safetensors.numpy import save_file  # a dependency of the encoder's checkpoints, loaded with them

    name, chosen = _exportable_head(model, head)
    config = hf_config(model, chosen)
    (directory / checkpoints.CONFIG_NAME).write_text(json.dumps(config, indent=2, sort_keys=True) + "\n", "utf-8")
    save_file(hf_state_dict(model, chosen), str(directory / checkpoints.SAFETENSORS_NAME), metadata={"format": "pt"})
    model.tokenizer.save_assets(directory)
    # The pipeline truncates at model_max_length: make it the model's, as our pipeline does.
    tokenizer_config = json.loads((directory / TOKENIZER_CONFIG_NAME).read_text("utf-8"))
    tokenizer_config["model_max_length"] = model.max_length
    (directory / TOKENIZER_CONFIG_NAME).write_text(json.dumps(tokenizer_config, indent=2) + "\n", "utf-8")
    (directory / MODEL_CARD_NAME).write_text(model_card(model, name, chosen, config), "utf-8")
    return name


def model_card(model: DistilBertTaskModel, name: str, head: TaskHead, config: dict[str, Any]) -> str:
    """The ``README.md`` of the checkpoint: hub metadata, then task, labels, metrics, data and versions."""
    architecture = config["architectures"][0]
    pipeline_task = PIPELINE_TASKS.get(architecture)
    record = model.training_record or {}
    # JSON strings are YAML strings, so any label or name is safe in the front matter.
    front = ["---", "library_name: transformers", "tags:", "- distilbert", "- distilbert-heads"]
    if pipeline_task:
        front.append(f"pipeline_tag: {json.dumps(pipeline_task)}")
    front.append("---")
    lines = [
        *front,
        "",
        f"# {name}: {head.task_type}",
        "",
        f"A DistilBERT task checkpoint written by distilbert-heads {distilbert_heads.__version__} from head "
        f"`{name}` ({type(head).__module__}.{type(head).__qualname__}, task type `{head.task_type}`). It loads "
        f"with `transformers.{architecture}.from_pretrained` (or the matching `AutoModelFor...`)"
        + (
            f" and runs with `transformers.pipeline({pipeline_task!r}, model=<this folder>)`." if pipeline_task else "."
        ),
        "",
        "## Labels",
        "",
    ]
    id2label = config.get("id2label")
    if config.get("problem_type") == "regression":
        lines.append("One output: a regression score (`problem_type: regression`; the pipeline returns the raw value).")
    elif id2label:
        lines += [
            "| id | label |",
            "| --- | --- |",
            *(f"| {key} | {_cell(value)} |" for key, value in id2label.items()),
        ]
    else:
        lines.append("None: the head predicts spans (start and end logits), not classes.")
    lines += ["", "## Metrics", ""]
    metrics = record.get("metrics")
    if metrics and metrics.get("values"):
        split = {"eval": "the eval file", "train": "the training file (no eval file given)"}.get(
            metrics.get("split"), str(metrics.get("split"))
        )
        lines += [f"Measured at the end of training on {split}.", "", "| metric | value |", "| --- | --- |"]
        lines += [f"| {_cell(key)} | {_number(value)} |" for key, value in metrics["values"].items()]
    else:
        lines.append(
            "Not recorded: this model was not trained by `distilbert_heads.train` (or predates metrics in its record)."
        )
    lines += ["", "## Training data", ""]
    data = record.get("data") or {}
    if data:
        lines += ["| role | file | bytes | sha256 |", "| --- | --- | --- | --- |"]
        lines += [
            f"| {_cell(role)} | {_cell(d.get('name'))} | {d.get('bytes')} | `{d.get('sha256')}` |"
            for role, d in data.items()
        ]
    else:
        lines.append("Not recorded.")
    lines += ["", "## Versions", "", f"- distilbert-heads (export): {distilbert_heads.__version__}"]
    for key, value in (record.get("versions") or {}).items():
        lines.append(f"- {key} (training): {value}")
    if record.get("created"):
        lines.append(f"- trained: {record['created']}")
    settings = record.get("settings") or {}
    if settings:
        lines += ["", "## Training settings", "", "```json", json.dumps(settings, indent=2, sort_keys=True), "```"]
    return "\n".join(lines) + "\n"


def _cell(value: Any) -> str:
    return str(value).replace("|", "\\|").replace("\n", " ")


def _number(value: Any) -> str:
    return f"{value:.4f}" if isinstance(value, float) else _cell(value)


# -- writing folders -------------------------------------------------------------------------------
def save_pretrained(model: DistilBertTaskModel, directory: str | os.PathLike, *, head: str | None = None) -> Path:
    """Write ``model`` (its one head, or ``head``) as a Hugging Face task checkpoint folder ``directory``.

    Like ``transformers``' ``save_pretrained``, files already in ``directory`` that the checkpoint
    does not write are kept; the checkpoint's own files are replaced together (the folder is written
    beside it and swapped in, `atomic.atomic_directory`), so a failure leaves the previous folder.
    """
    _exportable_head(model, head)  # fail before touching the disk
    directory = Path(directory)
    with atomic.atomic_directory(directory, keep_other_entries=True) as temp:
        hf_checkpoint_files(model, temp, head)
    return directory


def export_hf(
    model: DistilBertTaskModel, out: str | os.PathLike, *, overwrite: bool = False, head: str | None = None
) -> Path:
    """The ``format="hf"`` export: `save_pretrained` into a new (or empty) folder ``out``.

    An existing folder with files is an `ExportError` unless ``overwrite=True``, which replaces it
    whole (nothing of the old one is kept). Returns ``out``.
    """
    _exportable_head(model, head)
    out = check_export_folder(out, overwrite)
    with atomic.atomic_directory(out) as temp:
        hf_checkpoint_files(model, temp, head)
    return out


# -- pushing ---------------------------------------------------------------------------------------
def push_to_hub(
    model: DistilBertTaskModel,
    repo_id: str,
    *,
    token: str | None = None,
    private: bool | None = None,
    head: str | None = None,
    commit_message: str | None = None,
    api: Any = None,
) -> str:
    """Upload ``model`` as a Hugging Face task checkpoint to hub repository ``repo_id``; the commit's URL.

    The hub is asked who the token belongs to first: no network, no login or a refused token is a
    `HubError` naming ``repo_id`` and the fix, raised before the repository is created or anything is
    uploaded. Then the folder is written to a temporary directory (`save_pretrained`), the repository
    created if missing (``private`` as given) and the folder uploaded in one commit. ``api`` is an
    ``huggingface_hub.HfApi`` to use (default: a new one with ``token``).
    """
    _exportable_head(model, head)
    if api is None:
        try:
            from huggingface_hub import HfApi  # the optional `hub` extra: only pushing needs it
        except ImportError:
            raise HubError(f"Pushing to the hub needs huggingface_hub: {HUB_EXTRA}.") from None
        api = HfApi(token=token, library_name="distilbert-heads", library_version=distilbert_heads.__version__)
    try:
        api.whoami(token=token)
    except Exception as error:  # noqa: BLE001 - network, auth and offline errors all become one message
        raise HubError(_hub_failure(repo_id, error)) from error
    with tempfile.TemporaryDirectory(prefix="distilbert-heads-hub-") as scratch:
        folder = Path(scratch)
        name = hf_checkpoint_files(model, folder, head)
        api.create_repo(repo_id, token=token, private=private, exist_ok=True)
        commit = api.upload_folder(
            repo_id=repo_id,
            folder_path=folder,
            token=token,
            commit_message=commit_message
            or f"Upload head {name!r} with distilbert-heads {distilbert_heads.__version__}",
        )
    return str(getattr(commit, "commit_url", commit))


def _hub_failure(repo_id: str, error: BaseException) -> str:
    kind = type(error).__name__
    status = getattr(getattr(error, "response", None), "status_code", None)
    if kind == "LocalTokenNotFoundError":
        problem, fix = "no Hugging Face token was found", "log in with `hf auth login`, or pass token='hf_...'"
    elif status in (401, 403):
        problem, fix = f"the hub refused the token (HTTP {status})", "pass a token with write access (token='hf_...')"
    elif kind == "OfflineModeIsEnabled":
        problem, fix = "HF_HUB_OFFLINE is set", "unset HF_HUB_OFFLINE on a machine with network access"
    else:
        problem = "the hub (https://huggingface.co) could not be reached"
        fix = (
            "check the network (and HTTPS_PROXY), or write the folder with save_pretrained(out) and upload it "
            f"later from a connected machine: `hf upload {repo_id} out`"
        )
    return f"Cannot push to {repo_id!r}: {problem} ({kind}: {error}); nothing was uploaded. To fix: {fix}."
