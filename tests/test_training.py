"""Real few-shot training on real defect photos: accuracy, validation, progress, cancel, rollback."""

import threading
from pathlib import Path

import numpy as np
import pytest

from core.engine.inference import TrainedModel
from core.engine.metrics import (DECISION_POINT, operating_curve, pass_fail_metrics, rate_interval,
                                 threshold_for_escape_rate)
from core.engine.model import pool_features
from core.engine.training import TrainingOptions, train_tool
from core.errors import InspectorError, TrainingCancelled
from core.store.tools import ToolStore
from tests.conftest import load_sample


def held_out_metrics(tool, dataset, skip, per_class=60):
    test = load_sample(dataset, per_class, seed=1, skip=skip)
    model = TrainedModel(tool)
    scores = model.head.defect_scores(model.probabilities(test.images))
    return pass_fail_metrics(np.array(test.labels) == 1, scores, tool.config.threshold)


@pytest.mark.parametrize("dataset", ["casting", "mvtec_bottle"])
def test_few_shot_model_beats_chance_by_a_wide_margin(workspace, dataset):
    tool = ToolStore().create(dataset, allow_flips=True)
    meta = train_tool(tool, load_sample(dataset, 15, seed=1))
    tool = ToolStore().get(dataset)
    assert tool.config.active_version == meta.id
    assert tool.config.threshold == pytest.approx(meta.suggested_threshold)
    figures = held_out_metrics(tool, dataset, skip=15, per_class=100 if dataset == "casting" else 15)
    assert figures["balanced_accuracy"] >= 0.8, figures
    assert figures["auroc"] >= 0.85, figures


def test_validation_estimate_is_cross_validated_and_complete(casting_tool):
    meta = casting_tool.version_meta()
    v = meta.validation
    assert v.method.endswith("fold cross-validation")
    assert v.n == 24 and sum(map(sum, v.confusion.matrix)) == 24
    assert 0 < meta.suggested_threshold < 1
    wrong = v.confusion.false_fail + v.confusion.missed_defect
    assert len(meta.misclassified) == wrong
    assert meta.images == {"good": 12, "defect": 12}


def test_progress_reports_stages_and_eta(workspace):
    tool = ToolStore().create("progress")
    seen = []
    train_tool(tool, load_sample("casting", 6, seed=2), TrainingOptions(views_per_image=2),
               on_progress=seen.append)
    stages = [p.stage for p in seen]
    assert stages[0] == "extracting features" and stages[-1] == "saving"
    assert "validating" in stages
    extraction = [p for p in seen if p.stage == "extracting features"]
    assert [p.done for p in extraction] == sorted(p.done for p in extraction)
    assert extraction[-1].fraction == 1.0 and extraction[-1].eta_s == pytest.approx(0, abs=1e-6)
    assert all(p.eta_s is not None for p in seen if p.done)


def test_cancelled_run_writes_nothing_and_keeps_the_live_model(casting_tool):
    before = casting_tool.config.active_version
    cancel = threading.Event()

    def cancel_midway(progress):
        if progress.stage == "extracting features" and progress.done >= 8:
            cancel.set()

    with pytest.raises(TrainingCancelled, match="active model is unchanged"):
        train_tool(casting_tool, load_sample("casting", 8, seed=4), on_progress=cancel_midway,
                   cancel=cancel)
    tool = ToolStore().get("casting")
    assert tool.config.active_version == before
    assert len(tool.versions()) == 1
    assert not any(p.name.startswith(".") for p in tool.versions_dir.iterdir())


def test_failed_run_keeps_the_previous_version_and_rollback_restores_it(casting_tool):
    v1 = casting_tool.config.active_version
    image = load_sample("casting", 1, seed=9).images[0]
    score_v1 = TrainedModel(casting_tool).probabilities([image])

    one_class = load_sample("casting", 8, seed=5)
    one_class.labels = [0] * len(one_class.labels)
    with pytest.raises(InspectorError, match="two classes"):
        train_tool(casting_tool, one_class)
    assert ToolStore().get("casting").config.active_version == v1

    meta = train_tool(casting_tool, load_sample("casting", 8, seed=6),
                      TrainingOptions(views_per_image=2, seed=3))
    tool = ToolStore().get("casting")
    assert tool.config.active_version == meta.id != v1
    assert not np.allclose(TrainedModel(tool).probabilities([image]), score_v1)

    tool.activate(v1)
    tool = ToolStore().get("casting")
    assert tool.config.active_version == v1
    assert tool.config.threshold == pytest.approx(tool.version_meta(v1).suggested_threshold)
    assert np.allclose(TrainedModel(tool).probabilities([image]), score_v1)


def test_a_half_written_version_from_a_crash_is_ignored(casting_tool):
    staging = casting_tool.versions_dir / ".staging-v999"
    staging.mkdir()
    (staging / "head.safetensors").write_bytes(b"\x00" * 10)
    assert [v.id for v in casting_tool.versions()] == [casting_tool.config.active_version]
    with pytest.raises(InspectorError, match="no model version"):
        casting_tool.activate(".staging-v999")


def test_training_is_reproducible_with_a_fixed_seed(workspace):
    data = load_sample("casting", 6, seed=7)
    scores = []
    for name in ("seeded a", "seeded b"):
        tool = ToolStore().create(name)
        train_tool(tool, data, TrainingOptions(views_per_image=3, seed=11))
        scores.append(TrainedModel(ToolStore().get(name)).probabilities(data.images[:4]))
    np.testing.assert_allclose(scores[0], scores[1], atol=1e-5)


def test_operating_curve_escape_rate_and_intervals():
    is_defect = np.array([0, 0, 0, 0, 1, 1, 1, 1], bool)
    scores = np.array([0.05, 0.1, 0.2, 0.45, 0.3, 0.6, 0.8, 0.9])
    curve = {round(p.threshold, 2): p for p in operating_curve(is_defect, scores)}
    assert (curve[0.5].good_pass, curve[0.5].defect_fail) == (1.0, 0.75)
    assert (curve[0.25].good_pass, curve[0.25].defect_fail) == (0.75, 1.0)
    assert threshold_for_escape_rate(is_defect, scores, 0.0) == pytest.approx(0.3)  # every defect fails
    assert threshold_for_escape_rate(is_defect, scores, 0.25) == pytest.approx(0.6)  # one may pass
    assert threshold_for_escape_rate(~is_defect & False, scores, 0.1) is None  # no defect photo
    low, high = rate_interval(1, 30)
    assert low < 1 / 30 < high and 0.005 < low < 0.01 and 0.16 < high < 0.18
    figures = pass_fail_metrics(is_defect, scores, DECISION_POINT)
    assert figures["missed_defect_rate"] == 0.25 and figures["false_fail_rate"] == 0.0
    assert figures["false_fail_interval"][0] == 0.0 < figures["false_fail_interval"][1]


def test_the_local_part_is_saved_and_a_version_without_it_still_loads(casting_tool):
    """Versions trained before the local evidence map existed keep working with their global part."""
    from safetensors.numpy import save_file

    from core.engine.model import WEIGHTS_FILE, read_model_file, softmax

    model = TrainedModel(casting_tool)
    assert model.head.patch_top > 0 and model.head.patch_weight.shape == (112,)
    images = load_sample("casting", 2, seed=40).images
    maps = model.maps(images)
    evidence = model.head.evidence(maps.mid)
    assert evidence.shape == (len(images), *maps.mid.shape[2:])
    folder = casting_tool.version_dir()
    tensors, meta = read_model_file(folder / WEIGHTS_FILE)
    del tensors["patch_weight"], meta["patch_top"], meta["patch_bias"]
    save_file(tensors, str(folder / WEIGHTS_FILE), metadata=meta)
    older = TrainedModel(ToolStore().get("casting"))
    assert older.head.patch_top == 0 and older.head.evidence(maps.mid) is None
    global_only = softmax(model.head.logits(pool_features(maps), None))
    np.testing.assert_allclose(older.probabilities(images), global_only, atol=1e-5)
    assert not np.allclose(global_only, model.probabilities(images), atol=1e-3)  # the local part counts


def test_retakes_of_one_part_are_validated_together(workspace):
    """A burst of camera photos of one part is one group: validation never judges a re-take by a
    model that saw the part; uploaded photos and photos taken seconds apart stand alone."""
    from core.store.datasets import retake_groups

    names = ["good/20261202-101500-000000-cam-aaaa.png", "good/20261202-101500-500000-cam-bbbb.png",
             "good/20261202-101501-000000-cam-cccc.png", "good/20261202-101510-000000-cam-dddd.png",
             "defect/20261202-101510-400000-cam-eeee.png", "good/upload-ffff.png"]
    groups = retake_groups([Path(n) for n in names])
    assert groups[0] == groups[1] == groups[2]  # a burst, 0.5 s apart
    assert len({groups[0], groups[3], groups[4], groups[5]}) == 4  # later, other class, uploaded

    data = retaken(load_sample("casting", 2, seed=9), 3)  # bursts of 3 re-takes of each part
    meta = train_tool(ToolStore().create("bursts"), data, TrainingOptions(views_per_image=2))
    assert meta.validation.method == "2-fold cross-validation"  # 2 parts of each class


def retaken(sample, takes: int, seconds_apart: float = 0.5):
    """Each photo of a sample re-taken ``takes`` times by the camera, a burst per part (a little
    sensor noise on each re-take), the bursts 10 s apart."""
    from datetime import datetime, timedelta

    from core.store.datasets import LoadedImages

    rng = np.random.default_rng(0)
    data, start = LoadedImages(), datetime(2026, 12, 2, 10, 15)
    for part, (image, label) in enumerate(zip(sample.images, sample.labels)):
        for take in range(takes):
            at = start + timedelta(seconds=10 * part + seconds_apart * take)
            noise = rng.integers(-2, 3, image.shape)
            data.images.append(np.clip(image.astype(int) + noise, 0, 255).astype(np.uint8))
            data.labels.append(label)
            data.paths.append(Path(f"{'good' if label == 0 else 'defect'}/"
                                   f"{at:%Y%m%d-%H%M%S-%f}-cam-{part:02x}{take:02x}.png"))
    return data


def test_a_burst_on_a_moving_conveyor_is_one_part_per_photo(workspace):
    """Photos taken 0.5 s apart of parts passing one after another are parts, not re-takes; a
    class photographed as re-takes of a single part is validated photo by photo, and says so."""
    from core.store.datasets import LoadedImages, retake_groups

    sample = load_sample("casting", 6, seed=9)
    stamps = [f"20261202-1015{i // 2:02d}-{i % 2 * 500000:06d}" for i in range(12)]  # 0.5 s apart
    conveyor = LoadedImages(sample.images, sample.labels,
                            [Path(f"{'good' if y == 0 else 'defect'}/{t}-cam-{i:04x}.png")
                             for i, (t, y) in enumerate(zip(stamps, sample.labels))])
    assert len(set(retake_groups(conveyor.paths))) == 2  # by time alone: a burst per class
    assert len(set(retake_groups(conveyor.paths, conveyor.images))) == 12  # they differ: parts
    meta = train_tool(ToolStore().create("conveyor"), conveyor, TrainingOptions(views_per_image=2))
    assert meta.validation.method == "5-fold cross-validation"

    one_part = retaken(load_sample("casting", 1, seed=9), 6)  # 6 re-takes of one part per class
    meta = train_tool(ToolStore().create("one part"), one_part, TrainingOptions(views_per_image=2))
    assert meta.validation.method.startswith("5-fold cross-validation (photo by photo")