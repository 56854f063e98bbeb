"""The distillation losses against torch implementations of transformers' research distiller formulas, on random
padded batches, and padding never changing a loss."""

import keras
import numpy as np
import pytest
import torch
from torch import nn

from distilbert_heads import DistillationTarget
from distilbert_heads.distillation.losses import hidden_cosine_loss, target_loss

B, L, C, D = 3, 7, 5, 6
T = 2.0


def padded_batch(seed):
    """Random logits and hidden states with rows of different lengths (at least 2 real tokens each)."""
    rng = np.random.default_rng(seed)
    lengths = rng.integers(2, L + 1, size=B)
    lengths[0] = L  # one row without padding
    mask = (np.arange(L)[None, :] < lengths[:, None]).astype("int32")
    return {
        "mask": mask,
        "t_tokens": rng.normal(size=(B, L, C)).astype("float32") * 3,
        "s_tokens": rng.normal(size=(B, L, C)).astype("float32") * 3,
        "t_span": rng.normal(size=(B, L)).astype("float32") * 3,
        "s_span": rng.normal(size=(B, L)).astype("float32") * 3,
        "t_sentence": rng.normal(size=(B, C)).astype("float32") * 3,
        "s_sentence": rng.normal(size=(B, C)).astype("float32") * 3,
        "t_hidden": rng.normal(size=(B, L, D)).astype("float32"),
        "s_hidden": rng.normal(size=(B, L, D)).astype("float32"),
    }


def reference_kl(teacher, student, mask=None):
    """transformers' distiller: KLDivLoss(batchmean) on the mask-selected rows, times T squared."""
    teacher, student = torch.from_numpy(teacher).double(), torch.from_numpy(student).double()
    if mask is not None:
        keep = torch.from_numpy(mask).bool()
        teacher, student = teacher[keep], student[keep]
    loss = nn.KLDivLoss(reduction="batchmean")(
        nn.functional.log_softmax(student / T, dim=-1), nn.functional.softmax(teacher / T, dim=-1)
    )
    return float(loss) * T**2


def reference_span_kl(teacher, student, mask):
    """One distribution per row over its real tokens only (padding dropped), KL batchmean over the rows."""
    total = 0.0
    for row in range(B):
        keep = mask[row].astype(bool)
        total += reference_kl(teacher[row][keep][None], student[row][keep][None])
    return total / B


def reference_cosine(teacher, student, mask):
    keep = torch.from_numpy(mask).bool()
    t, s = torch.from_numpy(teacher).double()[keep], torch.from_numpy(student).double()[keep]
    return float(nn.CosineEmbeddingLoss(reduction="mean")(s, t, torch.ones(len(t), dtype=torch.double)))


CASES = {
    "token rows (NER, masked LM)": (
        DistillationTarget(kind="logits", tokens="rows"),
        "t_tokens",
        "s_tokens",
        lambda b: reference_kl(b["t_tokens"], b["s_tokens"], b["mask"]),
    ),
    "distribution over tokens (answer span)": (
        DistillationTarget(kind="logits", tokens="classes"),
        "t_span",
        "s_span",
        lambda b: reference_span_kl(b["t_span"], b["s_span"], b["mask"]),
    ),
    "one row per example (sentence class)": (
        DistillationTarget(kind="logits"),
        "t_sentence",
        "s_sentence",
        lambda b: reference_kl(b["t_sentence"], b["s_sentence"]),
    ),
    "class axis first": (
        DistillationTarget(kind="logits", axis=1, tokens="rows"),
        "t_tokens",
        "s_tokens",
        None,  # checked against the last-axis case on transposed logits
    ),
    "token regression": (
        DistillationTarget(kind="regression", tokens="rows"),
        "t_tokens",
        "s_tokens",
        lambda b: float(np.mean(((b["s_tokens"] - b["t_tokens"]) ** 2)[b["mask"].astype(bool)])),
    ),
    "sentence regression": (
        DistillationTarget(kind="regression"),
        "t_sentence",
        "s_sentence",
        lambda b: float(np.mean((b["s_sentence"] - b["t_sentence"]) ** 2)),
    ),
}


def loss_of(target, teacher, student, mask):
    return float(keras.ops.convert_to_numpy(target_loss(target, teacher, student, mask, T)))


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("case", list(CASES))
def test_losses_match_the_reference_formulas(case, seed):
    target, teacher_key, student_key, reference = CASES[case]
    batch = padded_batch(seed)
    teacher, student = batch[teacher_key], batch[student_key]
    if case == "class axis first":
        got = loss_of(target, np.swapaxes(teacher, 1, 2), np.swapaxes(student, 1, 2), batch["mask"])
        expected = reference_kl(teacher, student, batch["mask"])
    else:
        got, expected = loss_of(target, teacher, student, batch["mask"]), reference(batch)
    assert got == pytest.approx(expected, rel=1e-6, abs=1e-6)
    assert got > 0


@pytest.mark.parametrize("seed", [0, 1])
def test_hidden_cosine_loss_matches_cosine_embedding_loss_on_real_tokens(seed):
    batch = padded_batch(seed)
    got = float(keras.ops.convert_to_numpy(hidden_cosine_loss(batch["t_hidden"], batch["s_hidden"], batch["mask"])))
    assert got == pytest.approx(reference_cosine(batch["t_hidden"], batch["s_hidden"], batch["mask"]), abs=1e-6)
    same = float(keras.ops.convert_to_numpy(hidden_cosine_loss(batch["t_hidden"], batch["t_hidden"], batch["mask"])))
    assert same == pytest.approx(0.0, abs=1e-6)


def with_padding(array, mask, extra, fill):
    """``array`` with ``extra`` more token positions (axis 1) holding ``fill`` (garbage the mask must hide)."""
    if array.ndim < 2 or array.shape[1] != mask.shape[1]:
        return array
    shape = list(array.shape)
    shape[1] = extra
    return np.concatenate([array, np.full(shape, fill, dtype=array.dtype)], axis=1)


@pytest.mark.parametrize("fill", [0.0, 50.0, -7.0])
@pytest.mark.parametrize("case", [c for c in CASES if c != "class axis first"])
def test_appending_padding_changes_no_loss(case, fill):
    target, teacher_key, student_key, _ = CASES[case]
    batch = padded_batch(3)
    mask = batch["mask"]
    before = loss_of(target, batch[teacher_key], batch[student_key], mask)
    longer_mask = np.concatenate([mask, np.zeros((B, 4), "int32")], axis=1)
    teacher = with_padding(batch[teacher_key], mask, 4, fill)
    student = with_padding(batch[student_key], mask, 4, -fill)
    assert loss_of(target, teacher, student, longer_mask) == pytest.approx(before, rel=1e-6, abs=1e-6)
    hidden = hidden_cosine_loss(
        with_padding(batch["t_hidden"], mask, 4, fill), with_padding(batch["s_hidden"], mask, 4, 1.0), longer_mask
    )
    reference = hidden_cosine_loss(batch["t_hidden"], batch["s_hidden"], mask)
    assert float(keras.ops.convert_to_numpy(hidden)) == pytest.approx(float(keras.ops.convert_to_numpy(reference)))
