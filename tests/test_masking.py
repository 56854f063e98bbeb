"""Dynamic masking: BERT's 15% / 80-10-10 recipe, never special tokens or padding, reproducible per seed."""

import numpy as np
import pytest
from pydantic import ValidationError

from distilbert_heads.losses import IGNORE_INDEX
from distilbert_heads.training.masking import MaskingRecipe, mask_tokens

CLS, SEP, PAD, MASK, VOCAB = 101, 102, 0, 103, 1000


def _batch(rows: int = 400, length: int = 64) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(0)
    ids = rng.integers(200, VOCAB, size=(rows, length))
    lengths = rng.integers(8, length, size=rows)
    mask = np.arange(length)[None, :] < lengths[:, None]
    ids[:, 0] = CLS
    ids[np.arange(rows), lengths - 1] = SEP
    ids[~mask] = PAD
    return {"input_ids": ids.astype("int32"), "attention_mask": mask.astype("int32")}


def _mask(batch, seed=1, recipe=None):
    return mask_tokens(
        batch,
        mask_id=MASK,
        vocab_size=VOCAB,
        special_ids=np.array([PAD, CLS, SEP, MASK]),
        rng=np.random.default_rng(seed),
        recipe=recipe,
    )


def test_recipe_shares_match_bert_and_labels_hold_the_originals():
    batch = _batch()
    masked, labels = _mask(batch)
    ids = batch["input_ids"]
    text = (batch["attention_mask"] == 1) & ~np.isin(ids, [CLS, SEP])
    chosen = labels != IGNORE_INDEX
    assert not chosen[~text].any(), "a special token or padding was chosen"
    assert np.array_equal(labels[chosen], ids[chosen])
    assert chosen.sum() / text.sum() == pytest.approx(0.15, abs=0.01)
    to_mask = (masked == MASK) & chosen
    kept = (masked == ids) & chosen
    assert to_mask.sum() / chosen.sum() == pytest.approx(0.8, abs=0.03)
    # kept = the 10% kept plus random draws that hit the original id (1 in ~1000)
    assert kept.sum() / chosen.sum() == pytest.approx(0.1, abs=0.02)
    assert np.array_equal(masked[~chosen], ids[~chosen]), "a token that was not chosen changed"
    assert masked.dtype == ids.dtype and labels.dtype == ids.dtype


def test_masks_are_a_pure_function_of_the_seed():
    batch = _batch(rows=20)
    first, again, other = _mask(batch, seed=7), _mask(batch, seed=7), _mask(batch, seed=8)
    assert all(np.array_equal(a, b) for a, b in zip(first, again))
    assert not np.array_equal(first[1], other[1])


@pytest.mark.parametrize(
    ("fields", "fact"),
    [({"rate": 0.0}, "rate"), ({"rate": 1.5}, "rate"), ({"mask_share": 0.9, "random_share": 0.2}, "at most 1")],
)
def test_bad_recipes_are_refused(fields, fact):
    with pytest.raises(ValidationError, match=fact):
        MaskingRecipe(**fields)
