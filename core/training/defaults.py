"""`train`'s default numbers and choices, in a module without dependencies so ``distilbert-heads --help`` can show
them without importing pydantic or Keras. `distilbert_heads.training.settings` validates against them."""

DEFAULT_LEARNING_RATE_PRETRAINED = 5e-5
DEFAULT_LEARNING_RATE_SCRATCH = 1e-3
DEFAULT_VOCAB_SIZE = 2000

# The run controls' defaults: the BERT fine-tuning recipe (Devlin et al.; Google's `optimization.py`), which is
# also transformers' `Trainer` for schedule, warmup and clipping. `Trainer`'s own weight decay default is 0; the
# recipe's 0.01 is what its examples and keras-hub's fine-tuning guides pass.
DEFAULT_WEIGHT_DECAY = 0.01
DEFAULT_SCHEDULE = "linear"
DEFAULT_CLIP_NORM = 1.0
SCHEDULES = ("linear", "cosine", "constant")
PRECISIONS = ("float32", "mixed_bfloat16")
