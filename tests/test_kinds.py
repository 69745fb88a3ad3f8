"""Kinds of check on real photos: the registry, the code and text kinds through a tool's every
path (setup saved as a version, live judging, a live session, export and import, the CLI), and
the classifier and anomaly kinds behind the same contract."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest

from core.engine.exchange import export_tool, import_tool
from core.engine.inference import Inspector, ToolRunner, TrainedModel
from core.engine.kinds import KINDS, NONE, REQUIRED, Expectation, get_kind, kind_names
from core.engine.training import train_tool
from core.errors import InspectorError
from core.records.verdicts import FAIL, PASS, TRIGGER
from core.station.live import Lineup, LiveSession, RecentVerdicts
from core.store.datasets import read_image
from core.store.tools import ROI, ToolStore, TTASettings
from tests.conftest import DATASETS, load_sample

SET = DATASETS / "zxing_barcodes" / "images"
QR = SET / "good" / "qrcode-3_01.jpg"  # a real photo of a QR code
EAN = SET / "good" / "ean13-1_10.jpg"  # a real photo of an EAN-13 code
EAN_CODE = "8480010001136"
BOOK = SET / "good" / "ean13-2_22.jpg"  # a book's EAN-13, its digits printed under the bars
BOOK_CODE = "9784872348880"
BOOK_DIGITS = (240, 300, 50, 460)  # y0, y1, x0, x1 around the printed digits
NO_CODE = SET / "no_code" / "falsepositives-2_01.jpg"
UPC = SET / "good" / "upca-2_09.jpg"  # a real UPC-A photo of the label-text benchmark's tuned half
UPC_CODE = "181497000879"


def photo(path) -> np.ndarray:
    if not path.is_file():
        pytest.fail(f"the shared datasets are missing: expected {path}")
    return read_image(path)


def qr_text() -> str:
    import csv

    with open(DATASETS / "zxing_barcodes" / "labels.csv", newline="", encoding="utf-8") as handle:
        return next(r["text"] for r in csv.DictReader(handle) if r["file"] == "images/good/qrcode-3_01.jpg")


def reading_tool(name: str, kind: str, mode: str, value: str = "", roi: ROI | None = None):
    """A reading tool whose setup is saved as its first, active version."""
    tool = ToolStore().create(name, kind=kind, roi=roi or ROI(), expect=Expectation(mode, value).to_json())
    meta = train_tool(tool)
    assert meta.kind == kind and meta.profile is None and meta.details["expect"]["mode"] == mode
    return ToolStore().get(name)


def judge(tool, frame: np.ndarray, expected: str | None = None):
    return Inspector([ToolRunner(tool)]).inspect(frame, expected=expected)[0]


def on_background(image: np.ndarray, size=(480, 640)) -> tuple[np.ndarray, ROI]:
    """A grey camera frame with the photo pasted in it, and the ROI around the photo."""
    frame = np.full((*size, 3), 118, np.uint8)
    h, w = image.shape[:2]
    y, x = (size[0] - h) // 2, (size[1] - w) // 2
    frame[y:y + h, x:x + w] = image
    return frame, ROI.from_pixels(x - 4, y - 4, x + w + 4, y + h + 4, size[1], size[0])


def test_every_kind_is_registered_with_what_it_needs():
    assert set(kind_names()) == {"classifier", "anomaly", "code", "text", "digits"}
    assert get_kind("classifier").photos == REQUIRED and get_kind("classifier").onnx
    assert not get_kind("anomaly").onnx and get_kind("anomaly").weights_file == "memory.safetensors"
    for name in ("code", "text", "digits"):
        kind = KINDS[name]
        assert kind.photos == NONE and not kind.learns and not kind.neural and kind.weights_file is None
    with pytest.raises(InspectorError, match="unknown tool kind 'barcode'"):
        get_kind("barcode")


def test_a_reading_tool_refuses_a_bad_expectation_and_a_neural_one_any(workspace):
    with pytest.raises(InspectorError, match="not a valid regular expression"):
        ToolStore().create("bad", kind="code", expect={"mode": "pattern", "value": "SN-(\\d"})
    with pytest.raises(InspectorError, match="expected value is empty"):
        ToolStore().create("empty", kind="text", expect={"mode": "exact", "value": "  "})
    with pytest.raises(InspectorError, match="expects no value"):
        ToolStore().create("weld", expect={"mode": "exact", "value": "x"})
    unset = ToolStore().create("unset", kind="code")  # set up later, on the Training page
    assert unset.config.classes == ("good",) and unset.config.smoothing == 1
    with pytest.raises(InspectorError, match="say what 'unset' must read first"):
        train_tool(unset)


def test_a_code_is_read_and_matched_and_the_reading_recorded(workspace):
    frame, roi = on_background(photo(QR))
    tool = reading_tool("serial", "code", "exact", qr_text(), roi)
    result = judge(tool, frame)
    assert result.verdict == PASS and result.score == 0.0 and result.defect_class is None
    assert result.reading.text == qr_text() and result.reading.format == "QR Code"
    assert result.version == tool.config.active_version and result.features is None
    drawn = Inspector.draw(frame, [result])
    assert drawn.shape == frame.shape and not np.array_equal(drawn, frame)


def test_a_wrong_code_fails_with_what_was_read_and_no_code_fails_no_code_found(workspace):
    tool = reading_tool("serial", "code", "exact", "4006381333931")
    wrong = judge(tool, photo(EAN))
    assert wrong.verdict == FAIL and wrong.score == 1.0
    assert wrong.defect_class == f"read '{EAN_CODE}', expected '4006381333931'"
    assert wrong.reading.text == EAN_CODE and wrong.reading.format == "EAN-13"
    nothing = judge(tool, photo(NO_CODE))
    assert nothing.verdict == FAIL and nothing.defect_class == "no code found" and nothing.reading is None


def test_a_code_tool_compares_with_the_value_sent_with_the_trigger(workspace):
    tool = reading_tool("order", "code", "trigger")
    assert judge(tool, photo(EAN), expected=EAN_CODE).verdict == PASS
    assert judge(tool, photo(EAN), expected="848001000113").verdict == FAIL
    missing = judge(tool, photo(EAN))  # a trigger that sent no value: no verdict can be made
    assert missing.verdict == "ERROR" and "value sent with each trigger" in missing.error


def test_text_is_read_and_matched_and_a_pattern_mismatch_fails_with_what_was_read(workspace):
    image = photo(BOOK)
    y0, y1, x0, x1 = BOOK_DIGITS
    roi = ROI.from_pixels(x0, y0, x1, y1, image.shape[1], image.shape[0])
    matched = judge(reading_tool("label", "text", "exact", BOOK_CODE, roi), image)
    assert matched.verdict == PASS, matched.defect_class
    assert matched.reading.format == "text" and 0 < matched.reading.confidence <= 1
    assert matched.reading.text.replace(" ", "") == BOOK_CODE
    lot = judge(reading_tool("lot", "text", "pattern", r"LOT\d{6}", roi), image)
    assert lot.verdict == FAIL and lot.defect_class.startswith("read '")
    assert lot.defect_class.endswith(r"expected pattern 'LOT\d{6}'")
    assert BOOK_CODE in lot.defect_class.replace(" ", "")


def test_a_code_tool_in_a_live_session_gives_one_event_per_part(workspace):
    frame, roi = on_background(photo(QR))
    blank = np.full_like(frame, 118)
    tool = reading_tool("serial", "code", "exact", qr_text(), roi)
    sink = RecentVerdicts()
    live = LiveSession(Lineup((ToolRunner(tool),)), sink, heartbeat_s=None)
    for image in (frame, frame, blank, blank, frame):  # continuous: an event per change only
        live.process(image)
    events = sink.recent()
    assert [e.verdict for e in events] == [PASS, FAIL, PASS]
    assert events[0].reading.text == qr_text() and events[1].defect_class == "no code found"
    live.continuous = False
    live.request_trigger("part-7")
    live.process(frame)
    live.process(frame)  # no trigger: no new event
    triggered = sink.recent()[3:]
    assert len(triggered) == 1 and triggered[0].cause == TRIGGER and triggered[0].trigger_id == "part-7"
    assert triggered[0].reading.format == "QR Code" and triggered[0].version == tool.config.active_version


def test_a_reading_tool_exports_and_imports_with_its_setup(workspace, tmp_path):
    tool = reading_tool("serial", "code", "pattern", r"\d{13}")
    exported = export_tool(tool, tmp_path / "serial.inspector")
    import zipfile

    with zipfile.ZipFile(exported) as archive:
        assert sorted(archive.namelist()) == ["manifest.json", "model/meta.json"]  # no weights
    station = ToolStore(tmp_path / "other station")
    imported = import_tool(exported, station, name="serial2")
    assert imported.config.kind == "code" and imported.config.expect == tool.config.expect
    assert imported.version_meta().details["expect"] == {"mode": "pattern", "value": r"\d{13}"}
    assert judge(imported, photo(EAN)).verdict == PASS


@pytest.mark.parametrize("expect, message", [
    ({"mode": "pattern", "value": "SN-(\\d"}, "not a valid regular expression"),
    (None, "'expect' must be"),
])
def test_a_reading_version_with_a_damaged_setup_is_refused_on_import(workspace, tmp_path, expect, message):
    from tests.hostile import add_listed, rewrite

    exported = export_tool(reading_tool("serial", "code", "exact", EAN_CODE), tmp_path / "serial.inspector")

    def damage(members: dict[str, bytes]) -> None:
        meta = json.loads(members["model/meta.json"])
        meta["expect"] = expect
        add_listed(members, "model/meta.json", json.dumps(meta).encode())

    station = ToolStore(tmp_path / "other station")
    with pytest.raises(InspectorError, match=message):
        import_tool(rewrite(exported, tmp_path / "bad.inspector", damage), station)
    assert station.names() == []


def test_neural_tools_export_and_import_through_the_registry(casting_tool, tmp_path):
    exported = export_tool(casting_tool, tmp_path / "casting.inspector")
    imported = import_tool(exported, ToolStore(tmp_path / "other"), name="copy")
    images = load_sample("casting", 2, seed=31).images
    np.testing.assert_array_equal(TrainedModel(imported).defect_scores(images),
                                  TrainedModel(casting_tool).defect_scores(images))


def test_neural_results_carry_the_rois_pooled_features(casting_tool):
    from core.engine.model import pool_features

    image = load_sample("casting", 1, seed=32).images[0]
    runner = ToolRunner(casting_tool)
    runner.configure(tta=TTASettings(enabled=True))
    result = Inspector([runner]).inspect(np.ascontiguousarray(image))[0]
    model = runner.model
    own = pool_features(model.maps([image]))[0]
    np.testing.assert_allclose(result.features, own, rtol=1e-4, atol=1e-4)  # row 0: the ROI itself


def test_the_cli_reads_images_with_a_reading_tool(workspace):
    env_home = str(workspace)

    def cli(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "core", *args], capture_output=True, text=True,
                              env={"INSPECTOR_HOME": env_home, "PATH": "/usr/bin:/bin"}, timeout=300)

    created = cli("create", "--tool", "serial", "--kind", "code", "--expect", f"exact:{EAN_CODE}")
    assert created.returncode == 0, created.stderr
    assert "saved its setup as version v001" in created.stdout
    listed = cli("tools")
    assert listed.returncode == 0 and "serial\tcode\t-\tversion=v001" in listed.stdout
    assert f"expects '{EAN_CODE}'" in listed.stdout
    read = cli("read", "--tool", "serial", str(EAN), str(NO_CODE), "--json")
    assert read.returncode == 0, read.stderr
    rows = json.loads(read.stdout)
    assert rows[0]["verdict"] == PASS and rows[0]["text"] == EAN_CODE and rows[0]["format"] == "EAN-13"
    assert rows[1]["verdict"] == FAIL and rows[1]["why"] == "no code found"
    text = cli("read", "--tool", "serial", str(EAN))
    assert text.stdout.strip() == f"{EAN}: PASS (EAN-13 '{EAN_CODE}')"
    refused = cli("predict", "--tool", "serial", str(EAN))
    assert refused.returncode == 2 and "inspector read --tool serial" in refused.stderr
    changed = cli("set", "--tool", "serial", "--expect", "pattern:84\\d{11}")
    assert changed.returncode == 0, changed.stderr
    assert json.loads(changed.stdout)["active_version"].startswith("v002")
    assert "PASS" in cli("read", "--tool", "serial", str(EAN)).stdout


def test_the_tool_store_and_the_kinds_load_without_the_engines():
    engines = ("torch", "zxingcpp", "rapidocr_onnxruntime", "cv2")
    code = ("import sys, core.store.tools, core.engine.kinds, core.cli; "
            f"print([m for m in {engines} if m in sys.modules])")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_guidance_asks_a_reading_tool_for_its_setup_not_for_photos(workspace):
    from core.station.guidance import next_steps

    tool = ToolStore().create("serial", kind="code")
    assert next_steps(tool) == ["Say what it must read on the Training page and save the setup."]


def test_a_new_setup_of_a_reading_tool_runs_as_a_trial_then_is_promoted(workspace):
    from core.engine.training import TrainingOptions
    from core.station.line import close_lines
    from core.station.live_station import close_live_stations, live_station

    frame, roi = on_background(photo(QR))
    tool = reading_tool("serial", "code", "exact", qr_text(), roi)
    first = tool.config.active_version
    tool.update(expect=Expectation("pattern", "nothing like it").to_json())
    second = train_tool(tool, options=TrainingOptions(activate=False)).id
    station = live_station(workspace)  # a first start puts the tool on the line with its version
    try:
        station.start_trial("serial", second, "ann")
        session = station.session("0")
        session.process(frame)
        line, trial = session.latest.results[0], session.latest.trials[0]
        assert (line.version, line.verdict, line.reading.text) == (first, PASS, qr_text())
        assert (trial.version, trial.verdict) == (second, FAIL)  # the new setup, judged beside it
        assert trial.defect_class.endswith("expected text matching 'nothing like it'")
        station.promote("serial", "bob")
        session.process(frame)
        assert ToolStore().get("serial").config.active_version == second
        assert [(r.version, r.verdict) for r in session.latest.results] == [(second, FAIL)]
    finally:
        close_live_stations()
        close_lines()


def test_a_code_tool_checks_the_serial_each_mqtt_trigger_sends(workspace, tmp_path):
    """The order's serial sent with the trigger over MQTT is what the code on that part must say:
    the right serial PASSes, another FAILs with what was read, both recorded with the reading."""
    from core.records.history import EventFilter, open_history
    from core.station.line import close_lines, station_line
    from core.store.settings import MqttSettings, StationSettings, save_settings
    from tests.servers import Mosquitto, MqttSubscriber, wait_until

    broker = Mosquitto(tmp_path / "broker").start()
    save_settings(StationSettings(name="cell-3", mqtt=MqttSettings(enabled=True, host=broker.host,
                                                                   port=broker.port)))
    subscriber = MqttSubscriber(broker, "shopfloor-inspector/cell-3/#")
    frame, roi = on_background(photo(EAN))
    tool = reading_tool("serial", "code", "trigger", roi=roi)
    line = station_line(workspace)
    session = LiveSession(Lineup((ToolRunner(tool),)), line.sink, camera="0")
    session.continuous = False
    line.attach(session)
    try:
        wait_until(lambda: all(s.connected for s in line.status()), 20, "MQTT up")
        for number, serial in enumerate((EAN_CODE, "4006381333931")):
            subscriber.client.publish("shopfloor-inspector/cell-3/cmd/trigger", json.dumps(
                {"camera": "0", "id": f"order-{number}", "expected": serial}), qos=1)
            wait_until(lambda: session.trigger.is_set(), 10, "the trigger")
            session.process(frame)
            wait_until(lambda n=number: len(subscriber.payloads("/serial/verdict")) > n, 10, "the verdict")
        sent = [json.loads(p) for p in subscriber.payloads("/serial/verdict")]
        assert [p["verdict"] for p in sent] == [PASS, FAIL]
        assert all(p["reading"]["text"] == EAN_CODE for p in sent)
    finally:
        close_lines()  # drains the history writer
        subscriber.close()
        broker.stop()
    events = open_history().events(EventFilter(tools=("serial",)), newest_first=False)
    assert list(events["verdict"]) == [PASS, FAIL] and list(events["reading_text"]) == [EAN_CODE] * 2
    assert events["defect_class"].iloc[1] == f"read '{EAN_CODE}', expected '4006381333931'"


def test_a_digits_tool_reads_the_digits_printed_under_the_code(workspace):
    frame, roi = on_background(photo(UPC))
    tool = reading_tool("printed", "digits", "exact", UPC_CODE, roi)
    right = judge(tool, frame)
    assert right.verdict == PASS and right.reading.text == UPC_CODE
    assert right.reading.format == "printed digits" and 0 < right.reading.confidence <= 1
    wrong = judge(reading_tool("misprint", "digits", "exact", "181497000870", roi), frame)
    assert wrong.verdict == FAIL and wrong.defect_class.startswith("read '1 81497 00087 9', expected")
    blank = judge(tool, np.full_like(frame, 118))
    assert blank.verdict == FAIL and blank.defect_class == "no EAN or UPC code found"


def test_the_line_keeps_no_frames_of_a_reading_tool_and_refuses_correcting_it(workspace):
    """A code tool learns from no photos: no keeper on the line, and "this verdict was wrong"
    is refused with what to do instead (nothing lands in its folder)."""
    from core.station.line_keepers import LineKeeping, correct_verdict

    frame, roi = on_background(photo(QR))
    tool = reading_tool("serial", "code", "exact", "not what the QR says", roi)
    runner = ToolRunner(tool)
    keeping = LineKeeping()
    try:
        assert keeping.follow({"serial": runner}) == {}
    finally:
        keeping.close()
    live = LiveSession(Lineup((runner,)), RecentVerdicts(), heartbeat_s=None)
    live.process(frame)
    assert live.latest.results[0].verdict == FAIL
    with pytest.raises(InspectorError, match="learns from no photos"):
        correct_verdict(live, "serial", "good")
    assert not (tool.folder / "review").exists() and not tool.images_dir.exists()
