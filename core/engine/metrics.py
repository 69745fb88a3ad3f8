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

from core.errors import InspectorError
from core.records.validation import Validation
from core.records.verdicts import rejects

DECISION_POINT = 0.5  # the suggested threshold of every model version, see the module docstring
MIN_DEFECT_SCORES = 5  # defect photos needed to place a threshold by the share that may pass
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
    """Good-vs-rest figures at a threshold on the defect score (``core.records.verdicts.rejects``):
    balanced accuracy, ROC AUC, the confusion matrix, and the false-FAIL and missed-defect rates
    with their 95 % intervals."""
    is_defect = np.asarray(is_defect, bool)
    predicted = rejects(scores, threshold)
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


def percent(share: float) -> str:
    """A share as a factory reads it, '97 %': never '100 %' unless all, nor '0 %' unless none."""
    value = round(100 * share)
    if 0 < share < 1:
        value = min(99, max(1, value))
    return f"{value} %"


class Rate(NamedTuple):
    """``count`` of ``total`` photos (good parts that PASS, defects that FAIL), with its 95 %
    Wilson interval."""

    count: int
    total: int

    @property
    def share(self) -> float | None:
        return self.count / self.total if self.total else None

    @property
    def interval(self) -> tuple[float, float] | None:
        return rate_interval(self.count, self.total)

    def describe(self) -> str:
        """'29 of 30 (97 %, 95 % range 83-99 %)'; '' without any photo."""
        if not self.total:
            return ""
        low, high = self.interval
        return (f"{self.count} of {self.total} ({percent(self.share)}, 95 % range "
                f"{percent(low)[:-2]}-{percent(high)})")


class Rates(NamedTuple):
    """What a threshold does, as a factory reads it: good parts passed and defects caught."""

    threshold: float | None
    good_passed: Rate
    defects_caught: Rate


def rates_of(figures: Validation) -> Rates:
    """Good parts passed and defects caught of a version's validation figures (or
    ``pass_fail_metrics``' read by ``Validation.from_json``): the complements of its false-FAIL
    and missed-defect counts, whose Wilson intervals they mirror."""
    (good_pass, good_fail), (defect_pass, defect_fail) = figures.confusion.matrix
    return Rates(figures.threshold, Rate(int(good_pass), int(good_pass + good_fail)),
                 Rate(int(defect_fail), int(defect_pass + defect_fail)))


def rates_at(is_defect: np.ndarray, scores: np.ndarray, threshold: float) -> Rates:
    """``rates_of`` the photos' figures at ``threshold``."""
    return rates_of(Validation.from_json(pass_fail_metrics(is_defect, scores, threshold)))


def held_out_scores(validation: Validation) -> tuple[np.ndarray, np.ndarray] | None:
    """(is_defect, scores) of the held-out photos a version's validation kept (training stores
    ``validation.scores``: good and defect; an anomaly tool trained on good photos only has no
    defect side), or None for a version saved before they were kept."""
    kept = validation.scores
    if kept is None:
        return None
    good, defect = list(kept.get("good", ())), list(kept.get("defect", ()))
    is_defect = np.r_[np.zeros(len(good), bool), np.ones(len(defect), bool)]
    return is_defect, np.asarray(good + defect, float)


def escape_rate_threshold(is_defect: np.ndarray, scores: np.ndarray, escape_rate: float,
                          minimum: int = MIN_DEFECT_SCORES) -> float:
    """``threshold_for_escape_rate``, refused (``InspectorError``, saying what to do) when fewer
    than ``minimum`` defect photos would place it: with 3, '5 % may pass' means none may."""
    if not 0.0 <= escape_rate < 1.0:
        raise InspectorError(f"the share of defects that may pass must lie in 0..100 % "
                             f"(not {escape_rate:.0%})")
    defects = int(np.sum(np.asarray(is_defect, bool)))
    if defects < minimum:
        have = "no defect photo was" if not defects else f"only {defects} defect photo(s) were"
        raise InspectorError(f"{have} validated: choosing the threshold by the defects that may "
                             f"pass needs at least {minimum}. Add defect photos and train again")
    return threshold_for_escape_rate(is_defect, scores, escape_rate)
