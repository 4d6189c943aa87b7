"""Figures from saved results: results.json files and loaded models (never the engine).

Every figure is a matplotlib figure on an Agg canvas, written as ``<out_stem>.png`` and
``<out_stem>.pdf``; each ``*_figure`` builder returns the :class:`~matplotlib.figure.Figure`
before saving (for inspection or further styling) and each plain function builds, saves and
returns the :class:`FigurePaths`.

* :func:`forgetting_curve`: the paper's Figure 2, forget-set accuracy against forget batches.
* :func:`time_per_method`: seconds per method on a log scale, retraining as the reference.
* :func:`tradeoff`: forgetting gap to retrain against utility, coloured by time.
* :func:`embedding_projection`: the paper's Figure 1, t-SNE of features per model.
"""

from conun.viz.costs import (
    UTILITY_METRICS,
    time_per_method,
    time_per_method_figure,
    tradeoff,
    tradeoff_figure,
)
from conun.viz.curves import forgetting_curve, forgetting_curve_figure, history_series
from conun.viz.embeddings import (
    embedding_projection,
    embedding_projection_figure,
    extract_features,
    model_embedding_figure,
    project_features,
)
from conun.viz.figure import FigurePaths, method_colours, new_figure, save_figure
from conun.viz.results import (
    Panel,
    ResultsInput,
    ResultsSource,
    collect_panels,
    read_results,
    request_label,
)

__all__ = [
    "UTILITY_METRICS",
    "FigurePaths",
    "Panel",
    "ResultsInput",
    "ResultsSource",
    "collect_panels",
    "embedding_projection",
    "embedding_projection_figure",
    "extract_features",
    "forgetting_curve",
    "forgetting_curve_figure",
    "history_series",
    "method_colours",
    "model_embedding_figure",
    "new_figure",
    "project_features",
    "read_results",
    "request_label",
    "save_figure",
    "time_per_method",
    "time_per_method_figure",
    "tradeoff",
    "tradeoff_figure",
]
