"""Text throughput: `distilbert_heads.pipeline` vs `transformers.pipeline`, same sentiment weights.

Both load one Hugging Face `DistilBertForSequenceClassification` checkpoint (our side through
``create_distilbert_with_head(task_type="sentiment", pretrained=dir)``) and its vocabulary,
and classify the same corpus of variable-length sentences with batch size 32. transformers is
also timed once at its default batch size (1) on the first 64 sentences (it is slow). Ours runs
Keras' compiled predict function (``predict_on_batch``; on a CPU-only TensorFlow that is a
oneDNN graph, not XLA), in float32 and with ``dtype="bfloat16"``. The first pass (cold: tracing, XLA compiles per
new shape) is reported apart from the warm median.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from benchmarks import timing
from benchmarks.fixtures import Fixtures

BATCH_SIZE = 32


def _ours(fx: Fixtures) -> tuple[Callable[[list[str]], list[Any]], Callable[[list[str]], list[Any]]]:
    """Our pipeline in float32 and with ``dtype="bfloat16"``, on one model loaded once."""
    import distilbert_heads
    from distilbert_heads.text.tokenizer import DistilBertTokenizer

    tokenizer = DistilBertTokenizer.from_pretrained(fx.classifier_dir)
    model = distilbert_heads.create_distilbert_with_head(task_type="sentiment", pretrained=fx.classifier_dir)
    settings = {"tokenizer": tokenizer, "batch_size": BATCH_SIZE, "max_length": 128}
    return distilbert_heads.pipeline(model, **settings), distilbert_heads.pipeline(model, dtype="bfloat16", **settings)


def _hf(fx: Fixtures, batch_size: int) -> Callable[[list[str]], list[Any]]:
    import transformers

    pipe = transformers.pipeline(
        "text-classification", model=str(fx.classifier_dir), tokenizer=str(fx.classifier_dir), device="cpu"
    )
    return lambda texts: pipe(texts, batch_size=batch_size, truncation=True, max_length=128)


def run(fx: Fixtures, quick: bool) -> dict[str, Any]:
    try:
        ours, ours_bf16 = _ours(fx)
    except Exception as error:  # noqa: BLE001  (reported as skipped, with the error)
        return {"skipped": {"ours": f"{type(error).__name__}: {error}"}}
    texts = fx.corpus
    contenders: dict[str, Callable[[], Any]] = {
        "ours/pipeline": lambda: ours(texts),
        "ours/pipeline(dtype=bfloat16)": lambda: ours_bf16(texts),
    }
    skipped = {}
    hf_default = None
    try:
        hf_batched, hf_default = _hf(fx, BATCH_SIZE), _hf(fx, 1)
        contenders["peer/transformers.pipeline(batch_size=32)"] = lambda: hf_batched(texts)
    except Exception as error:  # noqa: BLE001  (reported as skipped, with the error)
        skipped["transformers"] = f"{type(error).__name__}: {error}"

    cold = {}
    answers = {}
    for name, fn in contenders.items():
        start = time.perf_counter()
        answers[name] = fn()
        cold[name] = time.perf_counter() - start
    stats = timing.interleaved(contenders, repeats=1 if quick else 3, warmup=0)
    rows = {
        name: {**stat, "texts_per_s": len(texts) / stat["median_s"], "cold_s": cold[name]}
        for name, stat in stats.items()
    }
    if hf_default is not None:
        subset = texts[:64]
        hf_default(subset[:4])
        start = time.perf_counter()
        hf_default(subset)
        seconds = time.perf_counter() - start
        rows["peer/transformers.pipeline(batch_size=1), first 64 texts, once"] = {
            "median_s": seconds,
            "texts_per_s": len(subset) / seconds,
            "cold_s": None,
            "n": 1,
        }
    result: dict[str, Any] = {"texts": len(texts), "batch_size": BATCH_SIZE, "rows": rows, "skipped": skipped}
    full, low = answers["ours/pipeline"], answers["ours/pipeline(dtype=bfloat16)"]
    result["bf16_label_agreement"] = sum(a["label"] == b["label"] for a, b in zip(full, low)) / len(texts)
    result["bf16_max_score_diff"] = max(abs(a["score"] - b["score"]) for a, b in zip(full, low))
    peer = "peer/transformers.pipeline(batch_size=32)"
    if peer in rows:
        result["ratio_vs_transformers_batch32"] = rows["ours/pipeline"]["texts_per_s"] / rows[peer]["texts_per_s"]
        ours_labels = [a["label"] for a in answers["ours/pipeline"]]
        hf_labels = [a["label"] for a in answers[peer]]
        result["label_agreement"] = sum(a == b for a, b in zip(ours_labels, hf_labels)) / len(texts)
        result["max_score_diff"] = max(
            abs(a["score"] - b["score"]) for a, b in zip(answers["ours/pipeline"], answers[peer])
        )
    return result
