"""Shared inputs: one set of random-init DistilBERT-base weights, the checkpoints every
contender loads them from, a tokenizer and a corpus of variable-length sentences."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

VOCAB_SIZE = 30522
SEED = 0
# A 2-layer encoder small enough for a test: the dry runs of run.py (--tiny) and gpu.py (--dry-run).
TINY_ENCODER = {
    "vocab_size": 120,
    "hidden_size": 32,
    "num_layers": 2,
    "num_heads": 2,
    "intermediate_size": 64,
    "max_position_embeddings": 32,
}

# Words the synthetic corpus is made of: common English plus rarer words that split into pieces.
_WORDS = [
    "the",
    "a",
    "an",
    "and",
    "or",
    "but",
    "if",
    "then",
    "because",
    "while",
    "of",
    "to",
    "in",
    "on",
    "at",
    "by",
    "for",
    "with",
    "from",
    "about",
    "into",
    "over",
    "after",
    "movie",
    "film",
    "show",
    "book",
    "album",
    "meal",
    "service",
    "concert",
    "class",
    "story",
    "plot",
    "actor",
    "music",
    "song",
    "screen",
    "ending",
    "was",
    "is",
    "were",
    "be",
    "been",
    "being",
    "felt",
    "seemed",
    "looked",
    "sounded",
    "became",
    "remained",
    "stayed",
    "good",
    "great",
    "wonderful",
    "lovely",
    "delightful",
    "excellent",
    "brilliant",
    "charming",
    "moving",
    "superb",
    "fine",
    "decent",
    "bad",
    "awful",
    "horrible",
    "dull",
    "boring",
    "mediocre",
    "annoying",
    "terrible",
    "weak",
    "tedious",
    "bland",
    "clumsy",
    "really",
    "very",
    "quite",
    "rather",
    "truly",
    "honestly",
    "frankly",
    "surprisingly",
    "completely",
    "utterly",
    "barely",
    "hardly",
    "i",
    "we",
    "you",
    "they",
    "he",
    "she",
    "it",
    "my",
    "our",
    "your",
    "their",
    "his",
    "her",
    "its",
    "this",
    "that",
    "these",
    "those",
    "found",
    "thought",
    "said",
    "watched",
    "read",
    "heard",
    "saw",
    "liked",
    "loved",
    "hated",
    "enjoyed",
    "expected",
    "wanted",
    "time",
    "day",
    "night",
    "evening",
    "week",
    "year",
    "friend",
    "family",
    "audience",
    "critic",
    "director",
    "writer",
    "people",
    "although",
    "however",
    "therefore",
    "meanwhile",
    "nevertheless",
    "overall",
    "unfortunately",
    "fortunately",
    "cinematography",
    "screenplay",
    "soundtrack",
    "choreography",
    "performances",
    "characterization",
    "pacing",
    "underwhelming",
    "overwrought",
    "breathtaking",
    "unforgettable",
    "forgettable",
    "predictable",
    "unpredictable",
]


@dataclass
class Fixtures:
    workdir: Path
    encoder_dir: Path  # DistilBertModel layout, written by our save_pretrained
    classifier_dir: Path  # DistilBertForSequenceClassification: the same encoder plus a head, and the vocab
    corpus: list[str]


def sentences(count: int, seed: int = SEED) -> list[str]:
    """Variable-length sentences: mostly 5-60 word pieces, a few longer (up to ~120)."""
    rng = np.random.default_rng(seed)
    lengths = np.clip(rng.lognormal(mean=np.log(18), sigma=0.6, size=count), 3, 110).astype(int)
    out = []
    for length in lengths:
        words = rng.choice(_WORDS, size=length)
        text = " ".join(words)
        out.append(text[0].upper() + text[1:] + rng.choice([".", "!", "?", "."]))
    return out


def prepare(workdir: Path, corpus_size: int, encoder_settings: dict[str, int] | None = None) -> Fixtures:
    """Random-init base weights (seeded) written by our encoder; every contender loads these.

    ``encoder_settings`` (DistilBERT's constructor arguments) replace the base variant: the tests'
    tiny model, which runs every code path in seconds."""
    import keras
    import transformers

    from distilbert_heads import DistilBERT
    from distilbert_heads.text.tokenizer import DistilBertTokenizer

    workdir.mkdir(parents=True, exist_ok=True)
    encoder_dir, classifier_dir = workdir / "encoder", workdir / "classifier"
    corpus = sentences(corpus_size)
    if not (classifier_dir / "config.json").exists():
        keras.utils.set_random_seed(SEED)
        encoder = DistilBERT(**encoder_settings) if encoder_settings else DistilBERT.from_variant("base")
        encoder.save_pretrained(encoder_dir)
        transformers.logging.set_verbosity_error()
        transformers.utils.logging.disable_progress_bar()
        hf = transformers.DistilBertForSequenceClassification.from_pretrained(
            encoder_dir, num_labels=2, id2label={0: "negative", 1: "positive"}, label2id={"negative": 0, "positive": 1}
        )
        hf.save_pretrained(classifier_dir)
        tokenizer = DistilBertTokenizer.train_from_texts(sentences(2000, seed=SEED + 1), vocab_size=2000)
        tokenizer.save(classifier_dir)
    check_weights_are_distinct(encoder_dir)
    return Fixtures(workdir, encoder_dir, classifier_dir, corpus)


def check_weights_are_distinct(checkpoint_dir: Path) -> None:
    """Refuse weights in which two matrices are equal: ONNX Runtime merges equal initializers and
    then skips the duplicate matmuls, which would time a smaller model than the others run."""
    from safetensors.numpy import load_file

    state = load_file(checkpoint_dir / "model.safetensors")
    first_seen: dict[bytes, str] = {}
    for key, value in state.items():
        if value.ndim == 2:
            digest = value.ravel()[:1024].tobytes()  # the first values, without copying the whole matrix
            if digest in first_seen:
                raise RuntimeError(f"{key} equals {first_seen[digest]} in {checkpoint_dir}; delete it and rerun.")
            first_seen[digest] = key


def token_batch(batch: int, length: int, seed: int = SEED, vocab_size: int = VOCAB_SIZE) -> dict[str, np.ndarray]:
    """Random ids (no padding): the fixed-shape input of the encoder benchmarks."""
    rng = np.random.default_rng(seed)
    return {
        "input_ids": rng.integers(min(1000, vocab_size // 2), vocab_size, (batch, length)).astype("int32"),
        "attention_mask": np.ones((batch, length), "int32"),
    }
