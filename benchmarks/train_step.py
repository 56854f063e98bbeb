"""One training step (forward, backward, Adam update) at batch 16 x 128 on a sentiment model:
ours vs keras-hub's `DistilBertTextClassifier` vs transformers' `DistilBertForSequenceClassification`.
Same weights, same inputs and labels, dropout on, Adam with the same learning rate in all three."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from benchmarks import peers, timing
from benchmarks.fixtures import Fixtures, token_batch

BATCH, LENGTH, LR = 16, 128, 1e-5


def _ours(fx: Fixtures, batch: dict[str, np.ndarray], labels: np.ndarray, jit: bool) -> Callable[[], Any]:
    import keras

    import distilbert_heads

    model = distilbert_heads.create_distilbert_with_head(task_type="sentiment", pretrained=fx.classifier_dir)
    model.compile(optimizer=keras.optimizers.Adam(LR), jit_compile=jit)
    return lambda: model.train_on_batch(batch, labels)


def _keras_hub(fx: Fixtures, batch: dict[str, np.ndarray], labels: np.ndarray, jit: bool) -> Any:
    import keras

    try:
        import keras_hub
    except ImportError as error:
        return peers.Skipped(f"keras-hub not installed ({error})")
    model = keras_hub.models.DistilBertTextClassifier(
        backbone=peers.keras_hub_backbone(fx.classifier_dir), num_classes=2, preprocessor=None
    )
    model.compile(
        optimizer=keras.optimizers.Adam(LR),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        jit_compile=jit,
    )
    inputs = peers.keras_hub_inputs(batch)
    return lambda: model.train_on_batch(inputs, labels)


def _hf(fx: Fixtures, batch: dict[str, np.ndarray], labels: np.ndarray) -> Any:
    try:
        import torch
    except ImportError as error:
        return peers.Skipped(f"torch not installed ({error})")
    model = peers.hf_model(fx.classifier_dir, "DistilBertForSequenceClassification")
    model.train()
    optimizer = torch.optim.Adam(model.parameters(), lr=LR)
    ids = torch.from_numpy(batch["input_ids"].astype(np.int64))
    mask = torch.from_numpy(batch["attention_mask"].astype(np.int64))
    y = torch.from_numpy(labels.astype(np.int64))

    def step() -> float:
        optimizer.zero_grad(set_to_none=True)
        loss = model(input_ids=ids, attention_mask=mask, labels=y).loss
        loss.backward()
        optimizer.step()
        return float(loss)

    return step


def run(fx: Fixtures, quick: bool) -> dict[str, Any]:
    batch = token_batch(BATCH, LENGTH, seed=1)
    labels = np.random.default_rng(1).integers(0, 2, BATCH).astype("int32")
    contenders: dict[str, Any] = {
        "ours/xla": _ours(fx, batch, labels, jit=True),
        "ours/graph": _ours(fx, batch, labels, jit=False),
        "peer/keras-hub-xla": _keras_hub(fx, batch, labels, jit=True),
        "peer/keras-hub": _keras_hub(fx, batch, labels, jit=False),
        "peer/transformers-torch": _hf(fx, batch, labels),
    }
    skipped = {name: c.reason for name, c in contenders.items() if isinstance(c, peers.Skipped)}
    runnable = {name: c for name, c in contenders.items() if name not in skipped}
    stats = timing.interleaved(runnable, repeats=2 if quick else 3, warmup=1)
    rows = {
        name: {**stat, "steps_per_s": 1 / stat["median_s"], "seq_per_s": BATCH / stat["median_s"]}
        for name, stat in stats.items()
    }
    ours = min((n for n in rows if n.startswith("ours/")), key=lambda n: rows[n]["median_s"])
    peer = min((n for n in rows if n.startswith("peer/")), key=lambda n: rows[n]["median_s"], default=None)
    return {
        "batch": BATCH,
        "length": LENGTH,
        "rows": rows,
        "skipped": skipped,
        "best_ours": ours,
        "best_peer": peer,
        "ratios": {n: rows[n]["median_s"] / rows[ours]["median_s"] for n in rows if n.startswith("peer/")},
    }
