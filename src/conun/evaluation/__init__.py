"""Accuracies per split, results files and (later) membership-inference audits."""

from conun.evaluation.accuracy import SplitMetrics, accuracy, evaluate_split, predict
from conun.evaluation.results import Results, RunRecord, format_table, validate_results

__all__ = [
    "Results",
    "RunRecord",
    "SplitMetrics",
    "accuracy",
    "evaluate_split",
    "format_table",
    "predict",
    "validate_results",
]
