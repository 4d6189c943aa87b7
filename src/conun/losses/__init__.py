"""Loss functions as pure tensor functions."""

from conun.losses.calibration import (
    calibration_loss,
    logit_confidence,
    logit_scale_for_mean_confidence,
    matched_targets,
    neighbour_targets,
    random_targets,
    rank_quantiles,
    targets_by_rank,
)
from conun.losses.contrastive import (
    class_unlearning_objective,
    contrastive_unlearning_loss,
    release_contrastive_unlearning_loss,
    relu_embedding,
)

__all__ = [
    "calibration_loss",
    "class_unlearning_objective",
    "contrastive_unlearning_loss",
    "logit_confidence",
    "logit_scale_for_mean_confidence",
    "matched_targets",
    "neighbour_targets",
    "random_targets",
    "rank_quantiles",
    "release_contrastive_unlearning_loss",
    "relu_embedding",
    "targets_by_rank",
]
