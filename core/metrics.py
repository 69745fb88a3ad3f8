"""Pass/fail figures an engineer can trust, and the one home of a tool's threshold.

The threshold rule (``DECISION_POINT``): every kind of model is calibrated so that a defect score
of 0.5 is its natural decision point (a class-balanced head's even odds; an anomaly tool's "more
unusual than good parts almost ever are"), so 0.5 is the suggested threshold of every version. It
is the same from one training to the next on the same photos, and the validation figures measured
at it carry no optimism from having been picked on those very photos (a threshold placed at the
best balanced accuracy of 60 held-out scores swung 0.24-0.73 between trainings and promised 0.04
more than unseen photos gave). An engineer who wants another trade-off picks it on the operating
curve: good parts passed against defects caught, or the threshold that lets through at most a
chosen share of the defect photos.

Rates come with a 95 % Wilson interval: 1 false FAIL in 30 good photos is "3 %, between 0.6 and
17 %", which is what 30 photos can tell.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
from sklearn.metrics import balanced_accuracy_score, confusion_matrix, roc_auc_score

DECISION_POINT = 0.5  # the suggested threshold of every model version, see the module docstring
_Z95 = 1.959964


def rate_interval(count: int, total: int) -> tuple[float, float] | None:
    """The 95 % Wilson interval of ``count`` out of ``total`` (None without any)."""
    if total <= 0:
        return None
    p = count / total
    centre = (p + _Z95 ** 2 / (2 * total)) / (1 + _Z95 ** 2 / total)
    half = _Z95 * np.sqrt(p * (1 - p) / total + _Z95 ** 2 / (4 * total ** 2)) / (1 + _Z95 ** 2 / total)
    return float(max(0.0, centre - half)), float(min(1.0, centre + half))


def pass_fail_metrics(is_defect: np.ndarray, scores: np.ndarray, threshold: float) -> dict:
    """Good-vs-rest figures at a threshold on the defect score (FAIL when score >= threshold):
    balanced accuracy, ROC AUC, the confusion matrix, and the false-FAIL and missed-defect rates
    with their 95 % intervals."""
    is_defect = np.asarray(is_defect, bool)
    predicted = np.asarray(scores) >= threshold
    both = len(set(is_defect.tolist())) == 2
    matrix = confusion_matrix(is_defect, predicted, labels=[False, True])
    good, defect = int(matrix[0].sum()), int(matrix[1].sum())
    false_fail, missed = int(matrix[0, 1]), int(matrix[1, 0])
    return {
        "n": int(len(scores)),
        "balanced_accuracy": float(balanced_accuracy_score(is_defect, predicted)) if both else None,
        "auroc": float(roc_auc_score(is_defect, scores)) if both else None,
        "threshold": float(threshold),
        "confusion": {"labels": ["good", "defect"], "matrix": matrix.tolist(),
                      "false_fail": false_fail, "missed_defect": missed},
        "false_fail_rate": false_fail / good if good else None,
        "false_fail_interval": rate_interval(false_fail, good),
        "missed_defect_rate": missed / defect if defect else None,
        "missed_defect_interval": rate_interval(missed, defect),
    }


def class_confusion(true: np.ndarray, predicted: np.ndarray, classes: tuple[str, ...]) -> dict:
    matrix = confusion_matrix(true, predicted, labels=list(range(len(classes))))
    return {"labels": list(classes), "matrix": matrix.tolist()}


def named_defect_share(true: np.ndarray, predicted: np.ndarray, failed: np.ndarray,
                       good_index: int) -> float | None:
    """Among defect photos that FAIL, the share whose defect class is named right (None: none)."""
    true, predicted, failed = np.asarray(true), np.asarray(predicted), np.asarray(failed, bool)
    caught = failed & (true != good_index)
    return float((predicted[caught] == true[caught]).mean()) if caught.any() else None


class OperatingPoint(NamedTuple):
    """One threshold and what it does to the photos the figures were measured on."""

    threshold: float
    good_pass: float | None  # share of good photos that PASS
    defect_fail: float | None  # share of defect photos that FAIL (defects caught)


def operating_curve(is_defect: np.ndarray, scores: np.ndarray, steps: int = 101) -> list[OperatingPoint]:
    """Good parts passed and defects caught at thresholds 0..1 (``steps`` of them)."""
    is_defect, scores = np.asarray(is_defect, bool), np.asarray(scores, float)
    good, defect = scores[~is_defect], scores[is_defect]
    return [OperatingPoint(float(t), float((good < t).mean()) if len(good) else None,
                           float((defect >= t).mean()) if len(defect) else None)
            for t in np.linspace(0.0, 1.0, steps)]


def threshold_for_escape_rate(is_defect: np.ndarray, scores: np.ndarray, escape_rate: float) -> float | None:
    """The highest threshold (most good parts passed) at which at most ``escape_rate`` of the
    defect photos PASS: the score of the lowest defect photo that must still FAIL. None without
    defect photos."""
    defect = np.sort(np.asarray(scores, float)[np.asarray(is_defect, bool)])
    if not len(defect):
        return None
    allowed = int(np.floor(escape_rate * len(defect) + 1e-9))  # defect photos that may pass
    return 1.0 if allowed >= len(defect) else float(defect[allowed])
