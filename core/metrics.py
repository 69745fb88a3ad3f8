"""Pass/fail figures an engineer can trust: balanced accuracy, ROC AUC, confusion, threshold."""

from __future__ import annotations

import numpy as np
from sklearn.metrics import balanced_accuracy_score, confusion_matrix, roc_auc_score


def pass_fail_metrics(is_defect: np.ndarray, scores: np.ndarray, threshold: float) -> dict:
    """Good-vs-rest figures at a threshold on the defect score (FAIL when score >= threshold)."""
    is_defect = np.asarray(is_defect, bool)
    predicted = np.asarray(scores) >= threshold
    both = len(set(is_defect.tolist())) == 2
    matrix = confusion_matrix(is_defect, predicted, labels=[False, True])
    return {
        "n": int(len(scores)),
        "balanced_accuracy": float(balanced_accuracy_score(is_defect, predicted)) if both else None,
        "auroc": float(roc_auc_score(is_defect, scores)) if both else None,
        "threshold": float(threshold),
        "confusion": {"labels": ["good", "defect"], "matrix": matrix.tolist(),
                      "false_fail": int(matrix[0, 1]), "missed_defect": int(matrix[1, 0])},
    }


def class_confusion(true: np.ndarray, predicted: np.ndarray, classes: tuple[str, ...]) -> dict:
    matrix = confusion_matrix(true, predicted, labels=list(range(len(classes))))
    return {"labels": list(classes), "matrix": matrix.tolist()}


def suggest_threshold(is_defect: np.ndarray, scores: np.ndarray) -> float:
    """The threshold with the best balanced accuracy, placed midway between neighbouring scores.

    Among equally good thresholds the one nearest 0.5 wins, which keeps the margin symmetric.
    """
    is_defect = np.asarray(is_defect, bool)
    if is_defect.all() or not is_defect.any():
        return 0.5
    values = np.unique(np.asarray(scores, float))
    candidates = np.concatenate([[0.0], (values[:-1] + values[1:]) / 2, [1.0]])
    best, best_value = -1.0, 0.5
    for t in candidates:
        predicted = scores >= t
        value = 0.5 * (predicted[is_defect].mean() + (~predicted[~is_defect]).mean())
        if value > best + 1e-12 or (abs(value - best) <= 1e-12 and abs(t - 0.5) < abs(best_value - 0.5)):
            best, best_value = value, t
    return float(np.clip(best_value, 0.01, 0.99))
