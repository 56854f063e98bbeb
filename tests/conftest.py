import sys
from pathlib import Path

import pytest

# Test helpers (tiny models and vocabularies, reference checkpoints, plugin fixtures) are plain
# modules beside the tests.
sys.path.insert(0, str(Path(__file__).parent))

from helpers import demo_vocab_tokenizer, tiny_vocab  # noqa: E402  (needs the sys.path entry above)

from distilbert_heads.text.tokenizer import DistilBertTokenizer  # noqa: E402

# The fake plugin distributions (`fake_site`) that registry and CLI tests build.
pytest_plugins = ["plugin_fixtures"]

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
