"""distilbert_heads: a Keras 3 DistilBERT encoder with task heads as plugins.

Importing this package registers its Keras classes (so ``keras.models.load_model`` needs no
``custom_objects``) and imports no third-party plugin: those load on first lookup.
"""

from distilbert_heads.config import VARIANTS, DistilBertConfig
from distilbert_heads.encoder import DistilBERT
from distilbert_heads.factory import create_distilbert_with_head, create_distilbert_with_heads
from distilbert_heads.head import HeadOptions, HeadOptionsError, TaskHead
from distilbert_heads.hookspecs import hookimpl
from distilbert_heads.model import DistilBertTaskModel, MissingHeadPluginError
from distilbert_heads.pipeline import Pipeline, pipeline
from distilbert_heads.tasks import NLPTaskConfig, NLPTaskType

__version__ = "0.1.0"

__all__ = [
    "VARIANTS",
    "DistilBERT",
    "DistilBertConfig",
    "DistilBertTaskModel",
    "HeadOptions",
    "HeadOptionsError",
    "MissingHeadPluginError",
    "NLPTaskConfig",
    "NLPTaskType",
    "Pipeline",
    "TaskHead",
    "create_distilbert_with_head",
    "create_distilbert_with_heads",
    "hookimpl",
    "pipeline",
    "__version__",
]
