"""Classification metrics with scikit-learn, as percentages (the way papers report them)."""

from __future__ import annotations

from collections.abc import Sequence

from sklearn.metrics import accuracy_score, f1_score, matthews_corrcoef


def classification_metrics(
    golds: Sequence[int], predictions: Sequence[int], num_labels: int
) -> dict[str, float]:
    """accuracy, macro_f1 and mcc always; f1 (of class 1, the positive class) for binary tasks."""
    if len(golds) != len(predictions):
        raise ValueError(f"{len(golds)} gold labels but {len(predictions)} predictions")
    labels = list(range(num_labels))
    metrics = {
        "accuracy": 100.0 * accuracy_score(golds, predictions),
        "macro_f1": 100.0
        * f1_score(golds, predictions, labels=labels, average="macro", zero_division=0),
        "mcc": 100.0 * matthews_corrcoef(golds, predictions),
    }
    if num_labels == 2:
        metrics["f1"] = 100.0 * f1_score(golds, predictions, pos_label=1, zero_division=0)
    return {k: float(v) for k, v in metrics.items()}
