"""Tool files between stations and ONNX export: same scores after the trip, bad files refused."""

import json

import numpy as np
import pytest

from core.engine.exchange import export_onnx, export_tool, import_tool
from core.engine.inference import TrainedModel
from core.errors import InspectorError
from core.store.tools import ToolStore
from tests.conftest import load_sample
from tests.hostile import add_listed, rewrite


def test_export_import_round_trip_gives_the_same_scores(casting_tool, tmp_path):
    casting_tool.update(threshold=0.42)
    file = export_tool(casting_tool, tmp_path / "casting.inspector", include_images=False)
    other_station = ToolStore(tmp_path / "other station")
    imported = import_tool(file, other_station)
    assert imported.config == casting_tool.config
    images = load_sample("casting", 4, seed=40).images
    np.testing.assert_array_equal(TrainedModel(imported).probabilities(images),
                                  TrainedModel(casting_tool).probabilities(images))
    assert imported.versions()[0].validation == casting_tool.versions()[0].validation


def test_images_travel_when_asked(casting_tool, tmp_path):
    from core.store.datasets import ToolDataset

    dataset = ToolDataset(casting_tool.images_dir, casting_tool.config.classes)
    for label, image in zip([0, 1], load_sample("casting", 1, seed=41).images):
        dataset.add_image(casting_tool.config.classes[label], image)
    file = export_tool(casting_tool, tmp_path / "with-images.inspector", include_images=True)
    imported = import_tool(file, ToolStore(tmp_path / "b"), name="casting line 2")
    assert imported.name == "casting line 2"
    assert ToolDataset(imported.images_dir, imported.config.classes).counts() == {"good": 1, "defect": 1}


@pytest.mark.parametrize("change, message", [
    (lambda m: add_listed(m, "../../evil.sh", b"#!/bin/sh"), "unsafe path"),
    (lambda m: add_listed(m, "model/payload.pkl", b"\x80\x04pickle"), "unexpected member"),
    (lambda m: add_listed(m, "images/good/x.png", b"not a png"), "not a readable image"),
    (lambda m: m.update({"model/head.safetensors": m["model/head.safetensors"][:-8]}), "checksum"),
    (lambda m: m.pop("manifest.json"), "no manifest"),
    (lambda m: m.update({"manifest.json": b'{"format": "something else"}'}), "does not describe"),
    (lambda m: m.update({"manifest.json": m["manifest.json"].replace(b'"threshold"', b'"thresh"')}),
     "unknown field"),
    (lambda m: m.pop("model/meta.json"), r"lacks 'model/meta\.json', listed in its manifest$"),
    (lambda m: add_listed(m, "model/memory.safetensors", b"\0" * 8),
     r"classifier model must hold exactly meta\.json and head\.safetensors; it holds head\.safetensors, "
     r"memory\.safetensors, meta\.json$"),
])
def test_bad_tool_files_are_refused_and_nothing_is_installed(casting_tool, tmp_path, change, message):
    good = export_tool(casting_tool, tmp_path / "good.inspector")
    bad = rewrite(good, tmp_path / "bad.inspector", change)
    station = ToolStore(tmp_path / "receiving station")
    with pytest.raises(InspectorError, match=message):
        import_tool(bad, station)
    assert station.names() == []
    assert not station.root.exists() or not any(station.root.glob(".import-*"))


def test_a_file_that_is_not_a_tool_file_is_refused(tmp_path):
    photo = tmp_path / "photo.inspector"
    photo.write_bytes(b"\x89PNG\r\n\x1a\n not a zip")
    with pytest.raises(InspectorError, match="not a Shopfloor Inspector tool file"):
        import_tool(photo, ToolStore(tmp_path / "s"))


def test_import_does_not_overwrite_an_existing_tool_unless_asked(casting_tool, tmp_path):
    file = export_tool(casting_tool, tmp_path / "c.inspector")
    with pytest.raises(InspectorError, match="already exists"):
        import_tool(file, ToolStore())
    import_tool(file, ToolStore(), replace_existing=True)
    assert ToolStore().get("casting").config.active_version == casting_tool.config.active_version


def test_onnx_export_matches_the_engine_on_real_photos(casting_tool, tmp_path):
    import onnx
    import onnxruntime as ort

    from core.engine.preprocessing import InputShape, to_tensor

    images = load_sample("casting", 3, seed=42).images
    report = export_onnx(casting_tool, tmp_path / "casting.onnx", check_images=images)
    assert report["max_score_difference"] < 1e-4
    graph = onnx.load(str(tmp_path / "casting.onnx"))
    meta = {p.key: p.value for p in graph.metadata_props}
    assert json.loads(meta["classes"]) == ["good", "defect"] and (meta["input_height"], meta["input_width"]) == ("192", "192")
    session = ort.InferenceSession(str(tmp_path / "casting.onnx"), providers=["CPUExecutionProvider"])
    batch = to_tensor(images, InputShape(192, 192), json.loads(meta["mean"]), json.loads(meta["std"]))
    scores = session.run(["defect_score"], {"image": batch})[0]
    engine = TrainedModel(casting_tool)
    np.testing.assert_allclose(scores, 1 - engine.probabilities(images)[:, 0], atol=1e-4)
