"""Scoring heads: metrics and baselines of predicted labels (metrics), span scores of BIO
tasks (spans), and the evaluate command, which scores a saved head on a cache (evaluate)."""

# metrics first: pipeline.training imports them while this package may still be loading
from pipeline.evaluation.metrics import (UNKNOWN, accuracies, below_lookup_warnings,
                                         lookup_by_name, lookup_predict, lookup_table,
                                         macro_f1, majority_label, per_class, score,
                                         scored_rows, unknown_labels)
from pipeline.evaluation.spans import is_bio, span_metrics
from pipeline.evaluation.evaluate import evaluate  # noqa: E402

__all__ = ["UNKNOWN", "accuracies", "below_lookup_warnings", "evaluate", "is_bio",
           "lookup_by_name", "span_metrics",
           "lookup_predict", "lookup_table", "macro_f1", "majority_label", "per_class",
           "score", "scored_rows", "unknown_labels"]
