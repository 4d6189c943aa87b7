"""Unlearning methods, one file each, registered by name.

Importing this package registers every built-in method: each module of the package is imported
here, so that a new method is one new file with a ``@register_method`` class in it.
"""

import importlib
import pkgutil

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

for _module in pkgutil.iter_modules(__path__):
    if not _module.name.startswith("_"):
        importlib.import_module(f"{__name__}.{_module.name}")

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
