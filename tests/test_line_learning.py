"""Learning on the line: what the station keeps, labels and their undo, and the move of labelled
crops into the tool's dataset, on real casting photos judged by a real trained tool."""

from __future__ import annotations

import math
import time

import numpy as np
import pytest

from core.engine.inference import Inspector, ToolRunner, TrainedModel
from core.engine.model import pool_features
from core.errors import InspectorError
from core.records.verdicts import rejects
from core.station.line_learning import (DISCARD, NEAR_THRESHOLD, NOVEL, KeepPolicy, LineKeeper,
                                        NoveltyReference, ReviewQueue)
from core.store.datasets import ToolDataset, read_image
from tests.conftest import load_sample


@pytest.fixture
def judged(casting_tool):
    """16 casting photos the tool never saw, each with its live result."""
    photos = load_sample("casting", 8, seed=1, skip=12).images
    runner = ToolRunner(casting_tool)
    return casting_tool, photos, [Inspector([runner]).inspect(p, heatmaps=False)[0] for p in photos]


def keeper_of(tool, policy: KeepPolicy, novelty: NoveltyReference | None = None) -> LineKeeper:
    return LineKeeper(ReviewQueue(tool, policy), novelty)


def queue_of_first(judged, count: int) -> ReviewQueue:
    """The tool's review queue once its first ``count`` judged photos were all kept."""
    tool, photos, results = judged
    keeper = keeper_of(tool, KeepPolicy(margin=1.0))
    for photo, result in zip(photos[:count], results[:count]):
        keeper.offer(photo, result)
    keeper.close()
    return ReviewQueue(tool)


def test_uncertain_frames_are_kept_up_to_the_hourly_bound_and_no_further(judged):
    tool, photos, results = judged
    distances = np.array([abs(r.score - r.threshold) for r in results])
    policy = KeepPolicy(margin=float(np.median(distances)), per_hour=3)
    uncertain = [i for i, d in enumerate(distances) if d <= policy.margin]
    assert len(uncertain) > policy.per_hour
    keeper = keeper_of(tool, policy)
    start = time.time()
    reasons = [keeper.offer(photo, result, camera="top", now=start + i)
               for i, (photo, result) in enumerate(zip(photos, results))]
    assert [i for i, r in enumerate(reasons) if r] == uncertain[:3]
    assert {reasons[i] for i in uncertain[:3]} == {NEAR_THRESHOLD}
    later = uncertain[3]  # an hour after the first kept frame, the bound has room again
    assert keeper.offer(photos[later], results[later], now=start + uncertain[0] + 3600) == NEAR_THRESHOLD
    keeper.close()
    pending = ReviewQueue(tool, policy).pending()
    assert len(pending) == 4
    assert pending == policy.review_order(pending)
    first = next(p for p in pending if p.camera == "top")
    assert (first.version, first.threshold) == (tool.config.active_version, tool.config.threshold)


def test_a_part_unlike_the_training_photos_is_kept_as_novel(casting_tool):
    model = TrainedModel(casting_tool)
    trained = load_sample("casting", 12, seed=1).images  # the tool's own training photos
    reference = NoveltyReference(pool_features(model.maps(trained)), model.head.mean, model.head.std)
    def novelty(photos: list[np.ndarray]) -> np.ndarray:
        return reference.novelty(pool_features(model.maps(photos)))

    unseen_casting = novelty(load_sample("casting", 4, seed=1, skip=12).images)
    solar_novelty = novelty(load_sample("elpv", 4, seed=0).images)
    assert solar_novelty.min() > unseen_casting.max()
    policy = KeepPolicy(margin=0.0, novelty=float(unseen_casting.max()) + 1e-3)
    assert policy.reason(0.02, 0.5, float(solar_novelty[0])) == NOVEL
    assert policy.reason(0.02, 0.5, float(unseen_casting[0])) is None
    assert policy.reason(float("nan"), 0.5, float(solar_novelty[0])) is None


def test_a_label_and_its_undo(judged):
    review = queue_of_first(judged, 3)
    frame = review.pending()[0]
    review.label(frame.id, "defect", who="ana")
    assert frame.id not in [p.id for p in review.pending()]
    assert review.label(frame.id, "good", who="bo").labelled_by == "bo"
    restored = review.undo(frame.id)
    assert (restored.label, restored.labelled_by) == ("defect", "ana")
    assert review.undo(frame.id).label is None and frame.id in [p.id for p in review.pending()]
    with pytest.raises(InspectorError, match="no label to undo"):
        review.undo(frame.id)
    with pytest.raises(InspectorError, match="unknown label 'scratch'"):
        review.label(frame.id, "scratch")


def test_a_label_puts_the_crop_in_the_dataset_and_its_undo_takes_it_out(judged):
    tool = judged[0]
    review = queue_of_first(judged, 4)
    frames = review.pending()
    crops = {f.id: review.crop(f.id) for f in frames}
    review.label(frames[0].id, "good", who="ana")
    review.label(frames[1].id, "defect", who="bo")
    review.label(frames[2].id, DISCARD, who="ana")
    assert review.labelled_since_active() == 2
    data = ToolDataset(tool.images_dir, tool.config.classes).load()  # what the next training loads
    in_dataset = {str(p.relative_to(tool.images_dir)): tool.config.classes[y]
                  for p, y in zip(data.paths, data.labels)}
    labelled = {r.id: r for r in review.labelled()}
    assert sorted(in_dataset.values()) == ["defect", "good"]  # the discarded crop is not trained on
    for frame_id, label in ((frames[0].id, "good"), (frames[1].id, "defect")):
        record = labelled[frame_id]
        assert in_dataset[record.dataset_path] == label
        assert np.array_equal(read_image(tool.images_dir / record.dataset_path), crops[frame_id])
    assert (labelled[frames[1].id].labelled_by, labelled[frames[2].id].label) == ("bo", DISCARD)
    assert [p.id for p in review.pending()] == [frames[3].id]

    relabelled = review.label(frames[1].id, "good", who="ana")  # moved to the other class
    assert relabelled.dataset_path.startswith("good/")
    assert ToolDataset(tool.images_dir, tool.config.classes).counts() == {"good": 2, "defect": 0}
    review.undo(frames[1].id)
    review.undo(frames[1].id)  # back to waiting: out of the dataset
    assert ToolDataset(tool.images_dir, tool.config.classes).counts() == {"good": 1, "defect": 0}
    assert frames[1].id in [p.id for p in review.pending()]
    assert review.labelled_since_active() == 1


def test_the_disk_keeps_the_hardest_waiting_crops_only(judged):
    tool, photos, results = judged
    policy = KeepPolicy(margin=1.0, max_pending=2)
    keeper = keeper_of(tool, policy)
    for photo, result in zip(photos[:5], results[:5]):
        keeper.offer(photo, result)
    keeper.close()
    hardest = sorted(policy.hardness(r.score, r.threshold) for r in results[:5])[:2]
    assert [p.hardness for p in ReviewQueue(tool, policy).pending()] == pytest.approx(hardest)


def test_the_review_order_alternates_the_hardest_of_each_side(judged):
    review = queue_of_first(judged, 8)
    pending = review.pending()
    failed = [p.score >= p.threshold for p in pending]
    assert True in failed and False in failed
    alternating = min(failed.count(True), failed.count(False)) * 2
    assert all(failed[i] != failed[i + 1] for i in range(alternating - 1))
    for side in (True, False):
        hardness = [p.hardness for p, f in zip(pending, failed) if f == side]
        assert hardness == sorted(hardness)
    one_sided = ReviewQueue(review.tool, KeepPolicy(both_sides=False)).pending()
    assert [p.hardness for p in one_sided] == sorted(p.hardness for p in pending)


def test_the_line_s_boundary_follows_its_fail_share_by_bayes_rule():
    policy = KeepPolicy()
    assert policy.centre(0.5, 0.3) == pytest.approx(0.7)  # 30 % FAIL: unsure where the score is 0.7
    assert policy.centre(0.5, None) == 0.5 and KeepPolicy(line_prior=False).centre(0.5, 0.3) == 0.5
    assert policy.centre(0.5, 0.0) == pytest.approx(0.98)  # no FAIL yet: bounded, still a boundary
    assert policy.centre(0.5, 0.75, trained_share=0.75) == pytest.approx(0.5)  # the share it assumes
    odds = 0.8 / 0.2 * 0.7 / 0.3  # an engineer's threshold of 0.8 is moved by the same odds
    assert policy.centre(0.8, 0.3) == pytest.approx(odds / (1 + odds))
    assert policy.hardness(0.55, 0.5) < 1 < policy.hardness(0.95, 0.5, novelty=3.0) <= 2  # novel ones last


def test_a_classifier_s_keeper_keeps_near_the_line_s_boundary(judged):
    tool, photos, results = judged
    stream = results * 2  # 32 judged frames: the share is known from the 20th
    failed = [bool(rejects([r.score], r.threshold)[0]) for r in stream]  # each frame's own score
    policy = KeepPolicy(margin=0.2, novelty=math.inf)
    keeper = LineKeeper(ReviewQueue(tool, policy), trained_share=0.5)
    start = time.time()
    for i, (photo, result) in enumerate(zip(photos * 2, stream)):
        kept = keeper.offer(photo, result, now=start + i)
        share = sum(failed[:i + 1]) / (i + 1) if i >= 19 else None
        centre = policy.centre(result.threshold, share)
        assert kept == policy.reason(result.score, centre), i
    keeper.close()
    fails = sum(failed) / len(stream)
    assert keeper.fail_share.value() == pytest.approx(fails)
    centres = {round(policy.centre(tool.config.threshold, sum(failed[:i + 1]) / (i + 1)), 6)
               for i in range(19, len(stream))}  # what the running share gave
    moved = [p for p in ReviewQueue(tool, policy).pending() if p.centre is not None]
    assert moved and {round(p.boundary, 6) for p in moved} <= centres
