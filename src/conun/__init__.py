"""conun: contrastive unlearning for PyTorch classifiers, with the baselines and audits to judge it.

The practitioner's entry point is :func:`unlearn`; the researcher's is the ``conun`` command.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from conun.version import __version__

if TYPE_CHECKING:
    from conun.api import UnlearnResult, unlearn
    from conun.evaluation.accuracy import accuracy, evaluate_split
    from conun.reproducibility import seed_everything
    from conun.workflows.ledger import Ledger

# The public names load on first use (PEP 562): they pull in torch and every method, which
# `conun --help` and the lower layers' `conun.version` must not pay for.
_LAZY = {
    "Ledger": "conun.workflows.ledger",
    "UnlearnResult": "conun.api",
    "unlearn": "conun.api",
    "accuracy": "conun.evaluation.accuracy",
    "evaluate_split": "conun.evaluation.accuracy",
    "seed_everything": "conun.reproducibility",
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'conun' has no attribute {name!r}")


__all__ = [
    "Ledger",
    "UnlearnResult",
    "__version__",
    "accuracy",
    "evaluate_split",
    "seed_everything",
    "unlearn",
]
