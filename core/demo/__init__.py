"""The `distilbert-heads demo` command and its synthetic datasets.

The names below are imported from their modules on first use."""

from distilbert_heads._lazy import lazy_exports

__getattr__, __dir__ = lazy_exports(
    __name__,
    {
        "DEMO_ENCODER": "run",
        "DEMO_FLOORS": "run",
        "DEMO_MAX_LENGTH": "run",
        "DEMO_SHOWN": "run",
        "DEMO_TRAINING": "run",
        "DEMO_VOCABULARY": "run",
        "run_demo": "run",
    },
)
