"""Model registry; every model exposes ``features(x) -> (N, D)`` and ``classify(z) -> (N, C)``."""

from conun.models.base import Classifier, ModelOutput
from conun.models.registry import (
    MODELS,
    UnknownModelError,
    available_models,
    build_model,
    register_model,
)
from conun.models.wrap import wrap_model

__all__ = [
    "MODELS",
    "Classifier",
    "ModelOutput",
    "UnknownModelError",
    "available_models",
    "build_model",
    "register_model",
    "wrap_model",
]
