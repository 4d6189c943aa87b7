"""The workflows' names as the command line imports them.

Their definitions live in the modules below; new code imports from those. This module keeps
``conun.cli`` working and goes once the CLI imports from them too.

- :mod:`conun.workflows.outputs`: ``describe``;
- :mod:`conun.workflows.requests`: ``ForgetSpec``;
- :mod:`conun.workflows.training`: ``train_original``;
- :mod:`conun.workflows.unlearning`: ``unlearn_checkpoint``;
- :mod:`conun.workflows.evaluation`: ``evaluate_checkpoint``, ``audit_checkpoint``.
"""

from __future__ import annotations

from conun.workflows.evaluation import audit_checkpoint, evaluate_checkpoint
from conun.workflows.outputs import describe
from conun.workflows.requests import ForgetSpec
from conun.workflows.training import train_original
from conun.workflows.unlearning import unlearn_checkpoint

__all__ = [
    "ForgetSpec",
    "audit_checkpoint",
    "describe",
    "evaluate_checkpoint",
    "train_original",
    "unlearn_checkpoint",
]
