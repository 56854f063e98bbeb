"""Dynamic masking for masked-language-model training and distillation (BERT's recipe).

Each batch draws its own mask: every text token (not special, not padding) is chosen with
probability ``rate`` (15%); of the chosen, 80% become ``[MASK]``, 10% a random vocabulary id and
10% stay as they are. Labels hold the original id where a token was chosen and `IGNORE_INDEX`
elsewhere, so the loss sees the chosen tokens only. Draws come from the ``rng`` given, so a batch's
mask is a pure function of the seed that made it (resumed runs see the same masks).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, model_validator

from distilbert_heads.losses import IGNORE_INDEX


class MaskingRecipe(BaseModel):
    """How many tokens are chosen, and what becomes of them."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    rate: float = Field(default=0.15, gt=0.0, le=1.0, description="Share of text tokens chosen for prediction.")
    mask_share: float = Field(default=0.8, ge=0.0, le=1.0, description="Share of chosen tokens set to [MASK].")
    random_share: float = Field(default=0.1, ge=0.0, le=1.0, description="Share of chosen tokens set to a random id.")

    @model_validator(mode="after")
    def _shares_fit(self) -> MaskingRecipe:
        if self.mask_share + self.random_share > 1.0 + 1e-9:
            raise ValueError(
                f"mask_share ({self.mask_share}) + random_share ({self.random_share}) is over 1; the rest of the "
                "chosen tokens are kept as they are, so the two shares must add up to at most 1 (BERT: 0.8 + 0.1)"
            )
        return self


def mask_tokens(
    inputs: Mapping[str, Any],
    *,
    mask_id: int,
    vocab_size: int,
    special_ids: np.ndarray,
    rng: np.random.Generator,
    recipe: MaskingRecipe | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """``(masked input_ids, labels)`` for one batch of ``inputs`` (``input_ids``, optional ``attention_mask``).

    Special ids (``special_ids``) and padding (attention mask 0) are never chosen. Random replacements are
    drawn uniformly from ``[0, vocab_size)`` like Hugging Face's ``DataCollatorForLanguageModeling``.
    """
    recipe = recipe or MaskingRecipe()
    ids = np.asarray(inputs["input_ids"])
    maskable = ~np.isin(ids, special_ids)
    if "attention_mask" in inputs:
        maskable &= np.asarray(inputs["attention_mask"]).astype(bool)
    chosen = maskable & (rng.random(ids.shape) < recipe.rate)
    labels = np.where(chosen, ids, IGNORE_INDEX).astype(ids.dtype)
    # One draw per token decides its fate: [0, mask) -> [MASK], [mask, mask + random) -> random id, rest kept.
    fate = rng.random(ids.shape)
    to_mask = chosen & (fate < recipe.mask_share)
    to_random = chosen & (fate >= recipe.mask_share) & (fate < recipe.mask_share + recipe.random_share)
    masked = np.where(to_mask, mask_id, ids)
    masked = np.where(to_random, rng.integers(0, vocab_size, size=ids.shape), masked).astype(ids.dtype)
    return masked, labels
