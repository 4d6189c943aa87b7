"""Run experiments/sample_unlearning_study.py with contrastive's matched-anchor terms averaged
over the active anchors instead of the whole forget batch (a study, not a conun option).

    MODE=both python experiments/results/sample-unlearning-study/j-active-mean/active_mean.py \
        experiments/sample_unlearning_study.py --seeds 0 1 2 --samples 100 500 1000 3000 \
        --originals /tmp/ctr --variants default --out DIR

MODE: ``both`` (the calibration term and L_UL's anchor weights) or ``cal`` (calibration only).
"""

import os
import runpy
import sys
from typing import Any

import torch

import conun.methods.contrastive as contrastive

MODE = os.environ.get("MODE", "both")
_calibration, _unlearning = contrastive.calibration_loss, contrastive.contrastive_unlearning_loss


def calibration_over_active(scores: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    value = _calibration(scores, targets)
    if MODE in ("both", "cal"):
        active = (scores.detach() > targets.detach()).sum().clamp(min=1)
        value = value * (scores.numel() / active)
    return value


def unlearning_over_active(
    *args: Any, anchor_weights: torch.Tensor | None = None, **kwargs: Any
) -> torch.Tensor:
    if anchor_weights is not None and MODE in ("both", "ul"):
        active = anchor_weights.sum().clamp(min=1)
        anchor_weights = anchor_weights * (anchor_weights.numel() / active)
    return _unlearning(*args, anchor_weights=anchor_weights, **kwargs)


contrastive.calibration_loss = calibration_over_active
contrastive.contrastive_unlearning_loss = unlearning_over_active
sys.argv = sys.argv[1:]
sys.path.insert(0, os.path.dirname(sys.argv[0]))
runpy.run_path(sys.argv[0], run_name="__main__")
