"""What a task model is and how it was made, as plain data: ``distilbert-heads info MODEL.keras``."""

from __future__ import annotations

from typing import Any

from distilbert_heads.model.task_model import DistilBertTaskModel


def model_info(model: DistilBertTaskModel) -> dict[str, Any]:
    """The model's heads, encoder size, parameter count, ``max_length``, tokenizer and training record (JSON data).

    ``training_record`` is None for a model `train` did not make (``convert``, a model built in Python, or one
    saved before the record existed).
    """
    config = model.encoder.config
    heads = []
    for name, head in model.heads.items():
        options = head.options.model_dump(mode="json")
        heads.append(
            {
                "name": name,
                "task_type": head.task_type,
                "labels": options.get("labels"),
                "loss_weight": model.head_loss_weights[name],
                "plugin": model.head_plugin(name),
                "options": options,
            }
        )
    tokenizer = model.tokenizer
    return {
        "heads": heads,
        "encoder": {
            "layers": config.num_layers,
            "hidden_size": config.hidden_size,
            "attention_heads": config.num_heads,
            "intermediate_size": config.intermediate_size,
            "vocab_size": config.vocab_size,
            "max_position_embeddings": config.max_position_embeddings,
            "parameters": int(model.encoder.count_params()),
        },
        "parameters": int(model.count_params()),
        "dtype_policy": model.dtype_policy.name,
        "max_length": model.max_length,
        "tokenizer": None
        if tokenizer is None
        else {
            "vocab_size": tokenizer.vocab_size,
            "case": {True: "uncased", False: "cased"}.get(tokenizer.lowercase, "unknown (custom normalizer)"),
        },
        "training_record": model.training_record,
    }
