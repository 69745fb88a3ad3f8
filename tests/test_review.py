"""Reviewing stored photos with the active model: defect scores and hardest-first ordering."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from core.engine.inference import Inspector, ToolRunner
from core.engine.review import OK, UNCERTAIN, UNREADABLE, WRONG, defect_scores, hardest_first, hardness_order
from core.store.datasets import ToolDataset, read_image
from tests.conftest import sample_paths


@pytest.fixture
def reviewed_tool(casting_tool):
    """The trained casting tool holding 4 + 4 of its training photos, one defect photo filed
    under 'good' by mistake, and one file that is not an image."""
    ds = ToolDataset(casting_tool.images_dir, casting_tool.config.classes)
    picks = sample_paths("casting", 12, seed=1)  # the photos the model was trained on
    for cls in ("good", "defect"):
        for path in picks[cls][:4]:
            ds.add_file(cls, path.read_bytes(), path.name)
    mislabelled = ds.add_file("good", picks["defect"][5].read_bytes(), "mislabelled.jpg")
    broken = casting_tool.images_dir / "defect" / "broken.png"
    broken.write_bytes(b"not an image")
    return casting_tool, mislabelled, broken


def test_defect_scores_match_the_live_score_and_mark_unreadable_files(reviewed_tool):
    tool, _, broken = reviewed_tool
    paths = ToolDataset(tool.images_dir, tool.config.classes).files()
    scores = defect_scores(tool, paths)
    assert scores.shape == (len(paths),) and np.isnan(scores[paths.index(broken)])
    runner = ToolRunner(tool)  # full-frame ROI, no TTA: the live score of the same photo
    for path, score in zip(paths, scores):
        if path != broken:
            live = Inspector([runner]).inspect(read_image(path), heatmaps=False)[0].score
            assert 0.0 <= score <= 1.0 and score == pytest.approx(live, abs=1e-4)
    again = defect_scores(tool, paths, version=tool.config.active_version)
    np.testing.assert_allclose(again, scores)


def test_hardest_first_puts_the_unreadable_then_the_mislabelled_photo_first(reviewed_tool):
    tool, mislabelled, broken = reviewed_tool
    paths = ToolDataset(tool.images_dir, tool.config.classes).files()
    ranked = hardest_first(tool, paths)
    assert sorted(r.path for r in ranked) == sorted(paths)
    assert [r.status for r in ranked[:2]] == [UNREADABLE, WRONG]
    assert ranked[0].path == broken and ranked[1].path == mislabelled
    threshold = tool.config.threshold
    assert ranked[1].score >= threshold  # a defect under 'good': the model says FAIL
    margins = [abs(r.score - threshold) for r in ranked if r.status in (OK, UNCERTAIN)]
    assert margins == sorted(margins)  # then the closest to the threshold first


def test_hardness_order_ranks_wrong_side_by_distance_then_closeness():
    paths = [Path("/t/good/a.png"), Path("/t/good/b.png"), Path("/t/defect/c.png"),
             Path("/t/defect/d.png"), Path("/t/good/e.png"), Path("/t/crack/f.png"),
             Path("/t/good/g.png")]
    scores = np.array([0.1, 0.55, 0.4, 0.99, 0.9, np.nan, 0.42], np.float32)
    ranked = hardness_order(paths, scores, 0.5)
    assert [(r.path.name, r.status) for r in ranked] == [
        ("f.png", UNREADABLE), ("e.png", WRONG), ("c.png", WRONG), ("b.png", WRONG),
        ("g.png", UNCERTAIN), ("a.png", OK), ("d.png", OK)]
    assert ranked[1].score == pytest.approx(0.9)
    assert hardness_order([], np.zeros(0), 0.5) == []
