"""Scoring heads: metrics and baselines of predicted labels (metrics), and the evaluate
command, which scores a saved head on a cache (evaluate)."""

# metrics first: pipeline.training imports them while this package may still be loading
from pipeline.evaluation.metrics import (UNKNOWN, accuracies, below_lookup_warnings,
                                         lookup_by_name, lookup_predict, lookup_table,
                                         macro_f1, majority_label, per_class, score,
                                         scored_rows, unknown_labels)
from pipeline.evaluation.evaluate import evaluate  # noqa: E402

__all__ = ["UNKNOWN", "accuracies", "below_lookup_warnings", "evaluate", "lookup_by_name",
           "lookup_predict", "lookup_table", "macro_f1", "majority_label", "per_class",
           "score", "scored_rows", "unknown_labels"]
