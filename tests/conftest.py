import json
import os
import sys
import warnings
from dataclasses import dataclass
from pathlib import Path

import pytest

# Test helpers (tiny models and vocabularies, reference checkpoints, plugin fixtures) are plain
# modules beside the tests.
sys.path.insert(0, str(Path(__file__).parent))

from helpers import TINY_TRAINING, demo_rows, demo_vocab_tokenizer, tiny_vocab  # noqa: E402  (sys.path above)

from distilbert_heads.text.tokenizer import DistilBertTokenizer  # noqa: E402
from distilbert_heads.training.loop import train  # noqa: E402
from distilbert_heads.training.settings import ChanceLevelWarning, TrainResult  # noqa: E402

# The fake plugin distributions (`fake_site`) that registry and CLI tests build.
pytest_plugins = ["plugin_fixtures"]


def pytest_configure(config: pytest.Config) -> None:
    # pytest-xdist starts its workers with COLUMNS=80 (a serial run has none), which would narrow the CLI's tables
    # to 80 columns; the tests expect what any pipe gets.
    if os.environ.get("PYTEST_XDIST_WORKER"):
        os.environ.pop("COLUMNS", None)


# The hand-made vocabulary of `handmade_tokenizer`: "Zoë Åström" is zoe as ##tr ##om, 東京 two
# tokens, and single letters a..h pad out long texts.
HANDMADE_WORDS = [
    *("zoe", "as", "##tr", "##om", "visited", "東", "京", "who", "founded", "hooli", "?", ".", ","),
    *("in", "the", "movie", "was", "great", "marie", "curie", "and"),
    *"abcdefgh",
]


@pytest.fixture(scope="session")
def demo_tokenizer() -> DistilBertTokenizer:
    """A vocabulary over the demo files' words in which a few names split into sub-words."""
    return demo_vocab_tokenizer()


@pytest.fixture(scope="session")
def handmade_tokenizer() -> DistilBertTokenizer:
    """A 34-token vocabulary for tests that spell out the tokens a text becomes."""
    return DistilBertTokenizer.from_vocab(tiny_vocab(HANDMADE_WORDS))


@dataclass(frozen=True)
class TrainedSentiment:
    """A trained model, the ``.keras`` file it was saved to, and the files it was trained and scored on."""

    result: TrainResult
    model_path: Path
    train_file: Path
    eval_file: Path


@pytest.fixture(scope="session")
def trained_sentiment(
    tmp_path_factory: pytest.TempPathFactory, demo_tokenizer: DistilBertTokenizer
) -> TrainedSentiment:
    """A tiny sentiment model trained once per session (1 epoch, 24 demo rows, scored on 12 held-out rows), for
    tests that need some trained model and its files rather than a particular training run. Do not change it."""
    folder = tmp_path_factory.mktemp("trained_sentiment")
    train_file, eval_file = folder / "sentiment.train.jsonl", folder / "sentiment.test.jsonl"
    for path, rows in ((train_file, demo_rows("sentiment", 24)), (eval_file, demo_rows("sentiment", 12, "test"))):
        path.write_text("".join(json.dumps(row) + "\n" for row in rows), "utf-8")
    model_path = folder / "model.keras"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ChanceLevelWarning)  # one tiny epoch stays at chance
        result = train(
            "sentiment",
            train_file,
            eval_file=eval_file,
            tokenizer=demo_tokenizer,
            out=model_path,
            epochs=1,
            batch_size=8,
            max_length=32,
            seed=0,
            verbose=0,
            **TINY_TRAINING,
        )
    return TrainedSentiment(result, model_path, train_file, eval_file)
