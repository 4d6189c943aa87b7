"""conun: contrastive unlearning for PyTorch classifiers, with the baselines and audits to judge it.

The practitioner's entry point is :func:`unlearn`; the researcher's is the ``conun`` command.
"""

from __future__ import annotations

__version__ = "0.1.0"

from conun.api import UnlearnResult, unlearn
from conun.evaluation.accuracy import accuracy, evaluate_split
from conun.reproducibility import seed_everything

__all__ = [
    "UnlearnResult",
    "__version__",
    "accuracy",
    "evaluate_split",
    "seed_everything",
    "unlearn",
]
