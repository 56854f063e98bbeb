"""The task model: an encoder plus named heads, how it is built (factory), saved and loaded.

The names below are imported from their modules on first use."""

from distilbert_heads._lazy import lazy_exports

__getattr__, __dir__ = lazy_exports(
    __name__,
    {
        "CONFIG_FORMAT_VERSION": "task_model",
        "DistilBertTaskModel": "task_model",
        "HALF_PRECISION": "task_model",
        "MissingHeadPluginError": "task_model",
        "OUTPUT_SEPARATOR": "task_model",
        "TOKENIZER_ASSETS_DIR": "task_model",
        "check_max_length": "task_model",
        "check_tokenizer_fits_encoder": "task_model",
        "first_non_finite_weight": "loading",
        "flat_output_key": "task_model",
        "load_task_model": "loading",
        "make_head": "task_model",
    },
)
