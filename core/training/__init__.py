"""Training and evaluation from data files: rows, examples, the training loop, scoring, reports.

The names below are imported from their modules on first use."""

from distilbert_heads._lazy import lazy_exports

__getattr__, __dir__ = lazy_exports(
    __name__,
    {
        "CHANCE_MARGIN": "evaluation",
        "ChanceLevelWarning": "settings",
        "DEFAULT_LEARNING_RATE_PRETRAINED": "settings",
        "DEFAULT_LEARNING_RATE_SCRATCH": "settings",
        "DEFAULT_VOCAB_SIZE": "settings",
        "HeadEvaluationCallback": "callbacks",
        "LABEL_OPTION_KEYS": "examples",
        "LOWER_IS_BETTER": "evaluation",
        "PRIMARY_METRICS": "evaluation",
        "TokenDropoutBatches": "callbacks",
        "TrainResult": "settings",
        "TrainSettings": "settings",
        "TrainingError": "settings",
        "build_tokenizer": "examples",
        "chance_level_warning": "evaluation",
        "chance_predictions": "evaluation",
        "check_train_settings": "settings",
        "encode_examples": "examples",
        "evaluate": "evaluation",
        "example_items": "examples",
        "example_texts": "examples",
        "head_record": "examples",
        "head_scores_answers": "evaluation",
        "infer_options": "examples",
        "load_model": "examples",
        "loss_on": "evaluation",
        "model_tokenizer": "examples",
        "numeric_class_note": "examples",
        "predict_examples": "evaluation",
        "primary_metric": "evaluation",
        "print_metrics_table": "report",
        "read_task_examples": "examples",
        "score_examples": "evaluation",
        "score_predictions": "evaluation",
        "train": "loop",
    },
)
