"""A retrain proves itself before it serves, on real casting photos and real training: the new
version and the active one are scored on the same new photos (review corrections among them),
and the new one replaces the active one only when promoted after its trial."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pytest

from core.cli import main
from core.engine.comparison import compare_with_active
from core.engine.inference import TrainedModel
from core.engine.training import TrainingOptions, train_tool
from core.errors import InspectorError
from core.records.verdicts import rejects
from core.station.line import close_lines
from core.station.line_learning import NEAR_THRESHOLD, KeptFrame, ReviewQueue
from core.station.live_station import close_live_stations, live_station
from core.store.datasets import ToolDataset, photo_key, read_image
from core.store.tools import ToolStore
from tests.conftest import load_sample

QUICK = TrainingOptions(views_per_image=1, folds=2)


def add_photos(dataset: ToolDataset, sample) -> list[str]:
    return [photo_key(dataset.add_image(("good", "defect")[label], image))
            for image, label in zip(sample.images, sample.labels)]


def correct(review: ReviewQueue, sample) -> list[str]:
    """The sample's photos kept on the line and labelled by an operator (into the dataset)."""
    labelled = []
    for i, (image, label) in enumerate(zip(sample.images, sample.labels)):
        frame = KeptFrame(f"kept{i}", review.tool.name, 0.5, 0.5, review.tool.config.active_version,
                          time.time(), NEAR_THRESHOLD)
        labelled.append(review.label(review.add(image, frame).id, ("good", "defect")[label], who="ana"))
    return [photo_key(Path(record.dataset_path)) for record in labelled]


@pytest.fixture
def retrained(workspace):
    """A tool trained on 8 + 8 photos (active), then 6 + 6 new photos (half of them operator
    corrections) and a retrain that was not activated."""
    tool = ToolStore().create("casting", allow_flips=True)
    dataset = ToolDataset(tool.images_dir, tool.config.classes)
    add_photos(dataset, load_sample("casting", 8, seed=1))
    active = train_tool(tool, options=QUICK).id
    new = add_photos(dataset, load_sample("casting", 3, seed=2, skip=8))
    new += correct(ReviewQueue(tool), load_sample("casting", 3, seed=3, skip=11))
    candidate = train_tool(tool, options=TrainingOptions(views_per_image=1, folds=2, activate=False)).id
    return ToolStore().get("casting"), active, candidate, new


def test_a_retrain_is_compared_with_the_active_version_on_the_same_new_photos(retrained):
    tool, active, candidate, new = retrained
    comparison = compare_with_active(tool, candidate)
    assert tool.config.active_version == active  # compared, not served
    assert sorted(comparison.photos) == sorted(new)
    assert (comparison.good, comparison.defects, comparison.corrections) == (6, 6, 6)
    images = [read_image(tool.images_dir / key) for key in comparison.photos]
    is_defect = np.array(comparison.is_defect)
    assert is_defect.tolist() == [key.startswith("defect/") for key in comparison.photos]
    held_out = tool.version_meta(candidate).held_out_by_photo
    assert comparison.candidate.scores == pytest.approx([held_out[k] for k in comparison.photos], abs=1e-4)
    active_scores = TrainedModel(tool, active).defect_scores(images)
    assert comparison.active.scores == pytest.approx(active_scores.tolist(), abs=1e-5)
    for figures, version in ((comparison.candidate, candidate), (comparison.active, active)):
        assert (figures.version, figures.threshold) == (version, tool.threshold_of(version))
        failed = rejects(np.array(figures.scores), figures.threshold)
        assert figures.misses == int(np.sum(is_defect & ~failed))
        assert figures.false_rejects == int(np.sum(~is_defect & failed))
        assert figures.balanced_accuracy == pytest.approx(
            (np.mean(failed[is_defect]) + np.mean(~failed[~is_defect])) / 2)
    with pytest.raises(InspectorError, match="is the active version"):
        compare_with_active(tool, active)


def test_the_cli_prints_both_versions_side_by_side(retrained, capsys):
    tool, active, candidate, _ = retrained
    assert main(["compare", "--tool", tool.name, "--version", candidate]) == 0
    header, new, old = capsys.readouterr().out.splitlines()
    assert f"{candidate} against the active {active} on the same 12 photos" in header
    assert "6 operator corrections" in header
    assert new.startswith(f"new\t{candidate}\t") and old.startswith(f"active\t{active}\t")
    assert "misses=" in new and "false_rejects=" in old


def test_the_retrain_serves_only_once_promoted_after_its_trial(retrained, workspace):
    tool, active, candidate, _ = retrained
    station = live_station(workspace)
    try:
        station.start_trial(tool.name, candidate, "ann")
        assert ToolStore().get(tool.name).config.active_version == active
        station.promote(tool.name, "bob")
        assert ToolStore().get(tool.name).config.active_version == candidate
    finally:
        close_live_stations()
        close_lines()
