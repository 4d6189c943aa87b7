"""Accuracies per split, results files, membership-inference audits and distances to the
retrained model."""

from conun.evaluation.accuracy import SplitMetrics, accuracy, evaluate_split, predict
from conun.evaluation.distances import DISTANCE_COLUMNS, output_distances, summary_scores
from conun.evaluation.privacy import AUDIT_COLUMNS, audit_model, membership_scores
from conun.evaluation.results import Results, RunRecord, format_table, validate_results

__all__ = [
    "AUDIT_COLUMNS",
    "DISTANCE_COLUMNS",
    "Results",
    "RunRecord",
    "SplitMetrics",
    "accuracy",
    "audit_model",
    "evaluate_split",
    "format_table",
    "membership_scores",
    "output_distances",
    "predict",
    "summary_scores",
    "validate_results",
]
