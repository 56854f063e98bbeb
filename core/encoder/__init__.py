"""The DistilBERT encoder: its config, layers, input checks and Hugging Face checkpoints.

The names below are imported from their modules on first use."""

from distilbert_heads._lazy import lazy_exports

__getattr__, __dir__ = lazy_exports(
    __name__,
    {
        "DistilBERT": "distilbert",
        "FLOAT_DTYPES": "distilbert",
        "HostCheckedData": "inputs",
        "INPUT_NAMES": "inputs",
        "MODEL_KWARGS": "distilbert",
        "as_input_dict": "inputs",
        "check_variant_shape": "distilbert",
        "checked_call_inputs": "inputs",
        "checked_dtype_policy": "distilbert",
        "concrete_array": "inputs",
        "flatten_example_rows": "inputs",
        "published_checkpoint": "distilbert",
        "validate_encoder_inputs": "inputs",
        "validate_model_data": "inputs",
    },
)
