"""Anomaly tools: trained on real good photos only, they score unusual parts high and show where."""

from __future__ import annotations

import json
import shutil
from dataclasses import replace
from pathlib import Path

import cv2
import numpy as np
import pytest
from safetensors.numpy import save_file
from sklearn.metrics import roc_auc_score

from core.cli import main as cli
from core.engine.anomaly import MEMORY_FILE, AnomalyModel, AnomalySettings
from core.engine.exchange import export_onnx, export_tool, import_tool
from core.engine.inference import Inspector, ToolRunner, TrainedModel
from core.engine.metrics import threshold_for_escape_rate
from core.engine.model import read_model_file
from core.engine.training import TrainingOptions, train_tool
from core.errors import InspectorError
from core.store.datasets import LoadedImages, check_trainable, image_files, read_image
from core.store.tools import ROI, ToolStore
from tests.conftest import DATASETS, sample_paths

SMALL = TrainingOptions(views_per_image=2, anomaly=AnomalySettings(memory_size=2048, local_memory_size=2048))


def good_only(paths: list[Path]) -> LoadedImages:
    return LoadedImages([read_image(p) for p in paths], [0] * len(paths), list(paths))


@pytest.fixture(scope="session")
def anomaly_workspace(tmp_path_factory) -> Path:
    """A workspace with anomaly tool 'bottle' trained on 10 real good bottle photos only."""
    home = tmp_path_factory.mktemp("anomaly")
    tool = ToolStore(home).create("bottle", kind="anomaly", classes=("good",), allow_flips=True)
    train_tool(tool, good_only(sample_paths("mvtec_bottle", 10, seed=3)["good"]), SMALL)
    return home


@pytest.fixture
def bottle_tool(anomaly_workspace, workspace):
    shutil.copytree(anomaly_workspace / "tools", workspace / "tools")
    return ToolStore(workspace).get("bottle")


def held_out_bottles(n: int) -> tuple[list[np.ndarray], np.ndarray]:
    picks = sample_paths("mvtec_bottle", n, seed=3, skip=10)
    images = [read_image(p) for p in picks["good"] + picks["defect"]]
    return images, np.array([0] * n + [1] * n)


def test_defects_score_far_above_good_parts_and_the_good_threshold_holds(bottle_tool):
    meta = bottle_tool.version_meta()
    assert meta.kind == "anomaly" and meta.suggested_threshold == 0.5
    assert meta.images == {"good": 10} and meta.details["memory_patches"] <= 2 * 2048
    assert meta.validation.balanced_accuracy is None  # no defect photo to estimate it
    assert meta.validation.confusion.false_fail <= 1  # held-out good photos pass
    images, is_defect = held_out_bottles(8)
    scores = TrainedModel(bottle_tool).defect_scores(images)
    assert ((scores >= 0) & (scores <= 1)).all()
    assert roc_auc_score(is_defect, scores) >= 0.95
    assert np.median(scores[is_defect == 1]) - np.median(scores[is_defect == 0]) > 0.4
    assert (scores[is_defect == 0] < bottle_tool.config.threshold).mean() >= 0.75


def test_a_change_of_light_is_not_an_anomaly(bottle_tool, workspace):
    """Darker, flatter photos of good parts pass; without the lighting normalisation they fail.

    70 % of the contrast: further down, the 8-bit steps of a synthetic dimming, stretched back by
    the normalisation, become bands the stride-8 memory rightly sees as local change."""
    images, is_defect = held_out_bottles(6)
    dim = [cv2.convertScaleAbs(im, alpha=0.7, beta=8) for im in images]
    scores = TrainedModel(bottle_tool).defect_scores(dim)
    assert (scores[is_defect == 0] < 0.5).all() and roc_auc_score(is_defect, scores) >= 0.95
    raw = ToolStore(workspace).create("raw", kind="anomaly", classes=("good",), allow_flips=True)
    unnormalised = TrainingOptions(views_per_image=2, anomaly=replace(SMALL.anomaly,
                                                                      normalise_lighting=False))
    train_tool(raw, good_only(sample_paths("mvtec_bottle", 10, seed=3)["good"]), unnormalised)
    assert (TrainedModel(ToolStore(workspace).get("raw")).defect_scores(dim)[is_defect == 0] >= 0.5).all()


def test_a_version_saved_before_the_current_settings_keeps_its_method(bottle_tool):
    """Older memory files do not name the lighting, fine-map and last-map settings: off, on, off."""
    folder = bottle_tool.version_dir()
    tensors, meta = read_model_file(folder / MEMORY_FILE)
    settings = json.loads(meta["settings"])
    del settings["normalise_lighting"], settings["fine_features"], settings["last_features"]
    del tensors["last_projection"]
    save_file(tensors, str(folder / MEMORY_FILE), metadata={**meta, "settings": json.dumps(settings)})
    loaded = AnomalyModel.load(folder).settings
    assert not loaded.normalise_lighting and loaded.fine_features and not loaded.last_features


def test_anomaly_map_lights_up_the_masked_defect(workspace):
    tool = ToolStore().create("tile", kind="anomaly", classes=("good",))
    train_tool(tool, good_only(sample_paths("magnetic_tile", 12, seed=4)["good"]), SMALL)
    model = TrainedModel(ToolStore().get("tile"))
    ratios = []
    for path in image_files(DATASETS / "magnetic_tile" / "images" / "break")[:6]:
        mask = cv2.imread(str(DATASETS / "magnetic_tile" / "masks" / "break" / f"{path.stem}.png"),
                          cv2.IMREAD_GRAYSCALE) > 127
        heat = cv2.resize(model.explain([read_image(path)])[0].heat, mask.shape[::-1])
        ratios.append(heat[mask].mean() / max(heat[~mask].mean(), 1e-6))
    assert np.median(ratios) > 2, f"map inside / outside the defect masks: {np.round(ratios, 2)}"


def test_an_anomaly_tool_needs_good_photos_only(workspace):
    check_trainable({"good": 5, "defect": 0}, kind="anomaly")
    tool = ToolStore().create("no good", kind="anomaly")
    defects = sample_paths("mvtec_bottle", 6, seed=5)["defect"]
    data = LoadedImages([read_image(p) for p in defects], [1] * 6, defects)
    with pytest.raises(InspectorError, match="learns from good photos only: capture 5 more 'good'"):
        train_tool(tool, data, SMALL)
    assert tool.versions() == []


def test_defect_photos_report_accuracy_and_suggest_a_threshold_for_an_escape_rate(workspace):
    picks = sample_paths("mvtec_bottle", 8, seed=6)
    data = good_only(picks["good"])
    for path in picks["defect"][:5]:
        data.images.append(read_image(path))
        data.labels.append(1)
        data.paths.append(path)
    tool = ToolStore().create("with defects", kind="anomaly")
    meta = train_tool(tool, data, SMALL)
    v = meta.validation
    assert v.n == 13 and v.balanced_accuracy >= 0.8 and v.auroc >= 0.8
    assert meta.suggested_threshold == 0.5  # the calibrated decision point, defects or not
    assert ToolStore().get("with defects").config.threshold == 0.5
    assert len(v.scores["good"]) == 8 and len(v.scores["defect"]) == 5
    scores = np.array(v.scores["good"] + v.scores["defect"])
    is_defect = np.array([False] * 8 + [True] * 5)
    catch_all = threshold_for_escape_rate(is_defect, scores, 0.0)
    assert (scores[is_defect] >= catch_all).all() and catch_all == min(v.scores["defect"])


def test_versions_roll_back_and_export_import_keeps_scores(bottle_tool, workspace, tmp_path):
    images, _ = held_out_bottles(3)
    first = bottle_tool.config.active_version
    v1 = TrainedModel(bottle_tool).defect_scores(images)
    train_tool(bottle_tool, good_only(sample_paths("mvtec_bottle", 10, seed=7)["good"]), SMALL)
    tool = ToolStore().get("bottle")
    assert tool.config.active_version != first
    assert not np.allclose(TrainedModel(tool).defect_scores(images), v1)
    tool.activate(first)
    np.testing.assert_array_equal(TrainedModel(tool).defect_scores(images), v1)

    exported = export_tool(tool, tmp_path / "bottle.inspector")
    imported = import_tool(exported, name="bottle copy")
    assert imported.config.kind == "anomaly"
    np.testing.assert_array_equal(TrainedModel(imported).defect_scores(images), v1)
    with pytest.raises(InspectorError, match="anomaly tool: ONNX export covers classifier"):
        export_onnx(tool, tmp_path / "bottle.onnx")


def test_import_refuses_a_model_of_the_other_kind(bottle_tool, tmp_path):
    import zipfile

    exported = export_tool(bottle_tool, tmp_path / "bottle.inspector")
    with zipfile.ZipFile(exported) as archive:
        members = {name: archive.read(name) for name in archive.namelist()}
    manifest = json.loads(members["manifest.json"])
    manifest["tool"]["kind"] = "classifier"
    members["manifest.json"] = json.dumps(manifest).encode()
    forged = tmp_path / "forged.inspector"
    with zipfile.ZipFile(forged, "w") as archive:
        for name, data in members.items():
            archive.writestr(name, data)
    with pytest.raises(InspectorError, match="is a anomaly model but the tool is a classifier|"
                                             "an anomaly model but the tool is a classifier"):
        import_tool(forged, name="forged")


def test_cli_trains_on_good_only_then_evaluates_and_writes_the_anomaly_map(workspace, tmp_path, capsys):
    picks = sample_paths("mvtec_bottle", 8, seed=8)
    data = tmp_path / "data"
    for name in ("good", "broken"):
        (data / name).mkdir(parents=True)
    for path in picks["good"]:
        shutil.copy(path, data / "good" / path.name)
    for i, path in enumerate(picks["defect"][:4]):  # ignored by training, scored by evaluate
        shutil.copy(path, data / "broken" / f"{i}-{path.name}")
    assert cli(["train", "--tool", "cap", "--kind", "anomaly", "--data", str(data)]) == 0
    assert "good photos above the threshold" in capsys.readouterr().out
    assert ToolStore().get("cap").version_meta().images == {"good": 8}
    test = tmp_path / "test"
    held = sample_paths("mvtec_bottle", 6, seed=8, skip=8)
    for name, paths in (("good", held["good"]), ("broken", held["defect"])):
        (test / name).mkdir(parents=True)
        for i, path in enumerate(paths):  # defect classes reuse file names
            shutil.copy(path, test / name / f"{i}-{path.name}")
    assert cli(["evaluate", "--tool", "cap", "--data", str(test), "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert {"n", "balanced_accuracy", "auroc", "threshold", "confusion"} <= set(result)
    assert result["n"] == 12 and result["auroc"] >= 0.9 and result["balanced_accuracy"] >= 0.75
    out = tmp_path / "maps"
    assert cli(["predict", "--tool", "cap", str(held["defect"][0]), "--heatmap", str(out), "--json"]) == 0
    row = json.loads(capsys.readouterr().out)
    assert row["class"] in ("anomaly", "good") and "probabilities" not in row
    assert read_image(Path(row["heatmap"])).shape[:2] == read_image(held["defect"][0]).shape[:2]


def test_one_inspector_runs_a_classifier_and_an_anomaly_tool_on_one_frame(casting_tool, anomaly_workspace,
                                                                         workspace):
    shutil.copytree(anomaly_workspace / "tools" / "bottle", workspace / "tools" / "bottle")
    bottle = ToolStore().get("bottle")
    bottle.update(roi=ROI(0.5, 0.0, 0.5, 1.0))
    casting_tool.update(roi=ROI(0.0, 0.0, 0.5, 1.0))
    images, _ = held_out_bottles(1)
    part = cv2.resize(load_casting(), (320, 480))
    frame = np.hstack([part, cv2.resize(images[1], (320, 480))])  # a broken bottle on the right
    runners = [ToolRunner(ToolStore().get("casting")), ToolRunner(ToolStore().get("bottle"))]
    results = Inspector(runners).inspect(frame)
    assert [r.tool for r in results] == ["casting", "bottle"]
    classifier, anomaly = results
    assert classifier.heatmap.shape == (12, 12) and anomaly.heatmap.shape == (24, 24)  # mid, fine grid
    alone = TrainedModel(bottle).defect_scores([frame[:, 320:]])[0]
    assert anomaly.score == pytest.approx(alone, abs=1e-4)
    assert anomaly.verdict == "FAIL" and anomaly.defect_class == "anomaly"
    drawn = Inspector.draw(frame, results)
    assert drawn.shape == frame.shape and not np.array_equal(drawn, frame)


def load_casting() -> np.ndarray:
    return read_image(sample_paths("casting", 1, seed=9)["good"][0])
