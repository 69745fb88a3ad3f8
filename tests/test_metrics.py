"""Validation figures as a factory reads them: rates of photos with their 95 % ranges."""

import numpy as np
import pytest

from core.engine.metrics import (MIN_DEFECT_SCORES, Rate, escape_rate_threshold, held_out_scores,
                                 pass_fail_metrics, percent, rates_at, rates_of)
from core.errors import InspectorError
from core.records.validation import Validation


def test_a_rate_reads_as_counts_share_and_its_95_percent_range():
    assert Rate(29, 30).describe() == "29 of 30 (97 %, 95 % range 83-99 %)"
    assert Rate(30, 30).describe() == "30 of 30 (100 %, 95 % range 89-100 %)"
    assert Rate(0, 12).describe() == "0 of 12 (0 %, 95 % range 0-24 %)"
    assert Rate(0, 0).describe() == "" and Rate(0, 0).share is None and Rate(0, 0).interval is None
    # one part in 300 that failed is not rounded away into "100 %", nor one in 300 caught into "0 %"
    assert percent(299 / 300) == "99 %" and percent(1 / 300) == "1 %" and percent(0.5) == "50 %"


def test_rates_are_the_complements_of_the_false_fail_and_missed_defect_figures():
    is_defect = np.array([0] * 6 + [1] * 4, bool)
    scores = np.array([0.1, 0.2, 0.3, 0.4, 0.6, 0.7, 0.3, 0.55, 0.8, 0.9])
    figures = pass_fail_metrics(is_defect, scores, 0.5)
    rates = rates_of(Validation.from_json(figures))
    assert rates.threshold == 0.5
    assert rates.good_passed == Rate(4, 6) and rates.defects_caught == Rate(3, 4)
    assert rates.good_passed.share == pytest.approx(1 - figures["false_fail_rate"])
    assert rates.good_passed.interval == pytest.approx(
        tuple(1 - b for b in figures["false_fail_interval"][::-1]))
    assert rates.defects_caught.interval == pytest.approx(
        tuple(1 - b for b in figures["missed_defect_interval"][::-1]))
    assert rates_at(is_defect, scores, 0.35) == (0.35, Rate(3, 6), Rate(3, 4))  # 0.3 passes, FAIL at >=


def test_held_out_scores_of_a_version_with_and_without_defects_or_scores():
    is_defect, scores = held_out_scores(Validation(scores={"good": (0.1, 0.2), "defect": (0.9,)}))
    assert is_defect.tolist() == [False, False, True] and scores.tolist() == [0.1, 0.2, 0.9]
    is_defect, scores = held_out_scores(Validation(scores={"good": (0.1, 0.2)}))  # anomaly, good only
    assert not is_defect.any() and len(scores) == 2
    assert rates_at(is_defect, scores, 0.5).defects_caught == Rate(0, 0)
    assert held_out_scores(Validation.from_json({"n": 3})) is None  # saved before the scores were kept


def test_an_escape_rate_threshold_needs_enough_defect_photos():
    good = [0.05, 0.1, 0.2, 0.3]
    defect = [0.35, 0.6, 0.7, 0.8, 0.9]
    is_defect = np.array([False] * len(good) + [True] * len(defect))
    scores = np.array(good + defect)
    assert MIN_DEFECT_SCORES == len(defect)
    assert escape_rate_threshold(is_defect, scores, 0.0) == pytest.approx(0.35)  # every defect fails
    assert escape_rate_threshold(is_defect, scores, 0.2) == pytest.approx(0.6)  # one in five may pass
    with pytest.raises(InspectorError, match="only 4 defect photo\\(s\\) were validated: .* at least 5"):
        escape_rate_threshold(is_defect[:-1], scores[:-1], 0.05)
    with pytest.raises(InspectorError, match="no defect photo was validated"):
        escape_rate_threshold(np.zeros(4, bool), np.array(good), 0.05)
    with pytest.raises(InspectorError, match="must lie in 0..100 %"):
        escape_rate_threshold(is_defect, scores, 1.5)


@pytest.mark.parametrize("figures", [
    {"n": 2, "balanced_accuracy": None, "auroc": None, "threshold": 0.5,  # anomaly, good photos only
     "confusion": {"labels": ["good", "defect"], "matrix": [[2, 0], [0, 0]], "false_fail": 0,
                   "missed_defect": 0},
     "false_fail_rate": 0.0, "false_fail_interval": [0.0, 0.66], "missed_defect_rate": None,
     "missed_defect_interval": None, "method": "leave-one-out on good photos",
     "scores": {"good": [0.1, 0.2], "defect": []}},
    {"method": "set up, not trained: expects 'A1'", "balanced_accuracy": None,  # a reading kind
     "scores": {"good": [], "defect": []}},
    {"balanced_accuracy": 0.9, "classes": {"labels": ["good", "a", "b"], "matrix": [[1, 0, 0]] * 3},
     "from_a_newer_station": {"kept": True}},
    {}])
def test_validation_figures_round_trip_meta_json_as_written(figures):
    assert Validation.from_json(figures).to_json() == figures


def test_a_version_with_mistyped_validation_figures_is_refused():
    from core.store.tools import version_meta_problem

    sound = {"balanced_accuracy": 0.9, "scores": {"good": [0.1]}}
    assert version_meta_problem({"validation": sound}) is None
    for wrong in ({"balanced_accuracy": "0.9"}, {"confusion": {"matrix": [[1, "2"]]}}, {"n": 2.5},
                  {"scores": {"good": [True]}}, {"false_fail_interval": [0.1]}):
        assert "validation." in version_meta_problem({"validation": wrong})
