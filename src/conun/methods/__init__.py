"""Unlearning methods, one file each, registered by name.

Importing this package registers every built-in method.
"""

from conun.methods import contrastive, gradient, reference  # noqa: F401  (registration)
from conun.methods.base import (
    METHODS,
    LoopMethod,
    LossTerms,
    MethodOutcome,
    UnknownMethodError,
    UnlearningBatch,
    UnlearningMethod,
    UnlearningTask,
    UnsupportedScenarioError,
    available_methods,
    get_method,
    register_method,
)

__all__ = [
    "METHODS",
    "LoopMethod",
    "LossTerms",
    "MethodOutcome",
    "UnknownMethodError",
    "UnlearningBatch",
    "UnlearningMethod",
    "UnlearningTask",
    "UnsupportedScenarioError",
    "available_methods",
    "get_method",
    "register_method",
]
