"""`train`'s default numbers and choices, in a module without dependencies so ``distilbert-heads --help`` can show
them without importing pydantic or Keras. `distilbert_heads.training.settings` validates against them."""

DEFAULT_LEARNING_RATE_PRETRAINED = 5e-5
DEFAULT_LEARNING_RATE_SCRATCH = 1e-3
DEFAULT_VOCAB_SIZE = 2000

# The run controls' defaults: the BERT fine-tuning recipe (Devlin et al.; Google's `optimization.py`), which is
# also transformers' `Trainer` for schedule, warmup and clipping. `Trainer`'s own weight decay default is 0; the
# recipe's 0.01 is what its examples and keras-hub's fine-tuning guides pass.
DEFAULT_WEIGHT_DECAY = 0.01
# Like the learning rate, the schedule depends on where the weights start. A pretrained checkpoint is fine-tuned
# with linear decay to 0; a small random model needs its full rate to the end (measured: 240 sentiment rows,
# 3 epochs, a 1-layer 64-wide model reaches 1.0 held-out accuracy at a constant 1e-3 and 0.59 with linear decay).
DEFAULT_SCHEDULE_PRETRAINED = "linear"
DEFAULT_SCHEDULE_SCRATCH = "constant"
DEFAULT_CLIP_NORM = 1.0
# Epochs without a better held-out score before `train` and `distill` stop early.
DEFAULT_PATIENCE = 2
SCHEDULES = ("linear", "cosine", "constant")
PRECISIONS = ("float32", "mixed_bfloat16")

# Streaming training files (`distilbert_heads.training.streaming`): rows read before training starts (the label
# names and a vocabulary learnt from scratch come from them), and rows held for shuffling.
SAMPLE_ROWS = 50_000
SHUFFLE_BUFFER_ROWS = 10_000
