"""The station on its line without a browser: a video file as the camera, verdicts into the
history, triggers routed to the camera they name, a camera that cannot be opened, and the
``inspector station`` commands."""

from __future__ import annotations

import json
import threading
import time

import cv2
import pandas as pd
import pytest

from core.cli import main
from core.engine.inference import ToolRunner
from core.errors import InspectorError
from core.records.history import EventFilter
from core.records.verdicts import CHANGE, TRIGGER
from core.station.headless import CameraReader, parse_sources, run_station
from core.station.line import Line, close_lines, station_line
from core.station.live import Lineup, LiveSession, RecentVerdicts
from core.station.live_station import close_live_stations, live_station
from core.store.settings import load_settings
from tests.conftest import load_sample

FPS = 10


@pytest.fixture(scope="module")
def video(tmp_path_factory) -> str:
    """An MJPEG video of real casting parts the tool was trained on: 2 s good, then 2 s defective."""
    sample = load_sample("casting", 12, seed=1)
    good = [im for im, y in zip(sample.images, sample.labels) if y == 0][0]
    defect = [im for im, y in zip(sample.images, sample.labels) if y == 1][0]
    path = tmp_path_factory.mktemp("video") / "line.avi"
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), FPS, good.shape[1::-1])
    for image in [good] * (2 * FPS) + [defect] * (2 * FPS):
        writer.write(image)
    writer.release()
    return str(path)


@pytest.fixture
def line(casting_tool, workspace):
    casting_tool.update(smoothing=1)
    line = station_line(workspace)
    yield line
    close_live_stations()
    close_lines()


def test_sources_name_their_camera():
    assert parse_sources(["/dev/video2"]) == {"0": "/dev/video2"}
    assert parse_sources(["top=rtsp://cam/1", "1=2"]) == {"top": "rtsp://cam/1", "1": "2"}
    with pytest.raises(InspectorError, match="given twice"):
        parse_sources(["0=a", "0=b"])
    with pytest.raises(InspectorError, match="not allowed"):
        parse_sources(["../x=a"])


def test_a_headless_station_records_each_part_change_in_the_history(line, video, workspace):
    stop = threading.Event()

    def watch() -> None:  # until the 4 s video has looped (PASS, FAIL, PASS), 60 s at most
        end = time.monotonic() + 60
        while time.monotonic() < end and not (line.recorder.flush(10) and len(
                line.history.events(EventFilter(tools=("casting",)))) >= 3):
            time.sleep(0.2)
        stop.set()

    watcher = threading.Thread(target=watch)
    watcher.start()
    frames = run_station(live_station(workspace), {"0": video}, stop=stop)
    watcher.join()
    assert frames["0"] >= 4 * FPS
    assert line.recorder.flush(10)
    events = line.history.events(EventFilter(tools=("casting",)), newest_first=False)
    assert list(events["verdict"][:3]) == ["PASS", "FAIL", "PASS"]  # good, defect, loop: good
    assert set(events["cause"]) == {CHANGE}
    assert set(events["station"]) == {line.settings.name} and set(events["camera"]) == {"0"}
    fail = events[events["verdict"] == "FAIL"].iloc[0]
    assert fail["score"] >= fail["threshold"] and fail["latency_ms"] > 0


def test_a_trigger_from_the_line_judges_one_frame_of_the_camera_it_names(line, casting_tool):
    sample = load_sample("casting", 12, seed=1)
    defect = sample.images[sample.labels.index(1)]
    session = LiveSession(Lineup((ToolRunner(casting_tool),)), line.sink, camera="0")
    other = LiveSession(Lineup((ToolRunner(casting_tool),)), line.sink, camera="side")
    session.continuous = other.continuous = False
    line.attach(session)
    line.attach(other)
    assert line.trigger("0", "part-42") == 1 and line.trigger("nowhere", "x") == 0
    for _ in range(5):
        session.process(defect)
        other.process(defect)
    line.detach(other)
    assert line.trigger(None, "part-43") == 1  # every camera: only the attached one is left
    session.process(defect)
    other.process(defect)
    assert line.recorder.flush(10)
    events = line.history.events(newest_first=False)
    assert list(zip(events["trigger_id"], events["cause"], events["camera"], events["verdict"])) == [
        ("part-42", TRIGGER, "0", "FAIL"), ("part-43", TRIGGER, "0", "FAIL")]


def test_tool_changes_reach_the_history_with_who_made_them(line, casting_tool):
    casting_tool.update(threshold=0.61)
    assert line.recorder.flush(10)
    changes = line.history.changes()
    row = changes[changes["action"] == "threshold"].iloc[0]
    assert row["tool"] == "casting" and row["details"]["new"] == 0.61 and row["actor"]


def test_a_camera_that_cannot_be_opened_is_reported_and_retried(casting_tool):
    session = LiveSession(Lineup((ToolRunner(casting_tool),)), RecentVerdicts(), camera="0")
    stop = threading.Event()
    reader = CameraReader("/nonexistent/camera.avi", session, stop)
    reader.RETRY_S = (0.1, 0.2)
    reader.start()
    time.sleep(0.8)
    stop.set()
    reader.join(5)
    assert not reader.is_alive() and reader.frames == 0
    assert "cannot be opened" in reader.problem and "retrying" in reader.problem


def test_a_camera_without_a_tool_is_refused_with_what_to_do(line, video, workspace):
    with pytest.raises(InspectorError, match="no tool on the line watches camera 'side'"):
        run_station(live_station(workspace), {"side": video})


def test_station_commands_set_show_and_run(casting_tool, workspace, video, capsys):
    assert main(["station", "set", "name=line-3", "heartbeat_s=5", "mqtt.host=plc.local"]) == 0
    settings = load_settings()
    assert (settings.name, settings.heartbeat_s, settings.mqtt.host) == ("line-3", 5, "plc.local")
    assert main(["station", "set", "mqtt.colour=red"]) == 2
    assert ("unknown setting(s) colour in mqtt; known: buffer, ca_file, cert_file, enabled, host, "
            "key_file, password_file, port, qos, tls, topic_root, username") in capsys.readouterr().err
    assert load_settings() == settings  # a refused change changes nothing

    assert main(["station", "run", "--camera", f"0={video}", "--duration", "3"]) == 0
    frames = json.loads(capsys.readouterr().out.strip().splitlines()[-1])["frames"]
    assert frames["0"] > FPS
    assert main(["history", "export", "--format", "csv", "--out", str(workspace / "h.csv")]) == 0
    exported = pd.read_csv(workspace / "h.csv")
    assert list(exported["verdict"][:2]) == ["PASS", "FAIL"]


def test_a_line_without_integrations_has_no_link_status(line):
    assert isinstance(line, Line) and line.status() == []


def test_a_trigger_over_mqtt_and_one_over_opcua_each_record_exactly_one_verdict(
        casting_tool, workspace, tmp_path):
    """Each trigger's expected value (an order's serial) reaches the inspection of its frame
    through the line: the value the camera's session judged the part with."""
    from asyncua.sync import Client

    from core.store.settings import MqttSettings, OpcUaSettings, StationSettings, save_settings
    from tests.servers import Mosquitto, MqttSubscriber, free_port, wait_until

    broker = Mosquitto(tmp_path / "broker").start()
    port = free_port()
    save_settings(StationSettings(
        name="cell-9", mqtt=MqttSettings(enabled=True, host=broker.host, port=broker.port),
        opcua=OpcUaSettings(enabled=True, endpoint=f"opc.tcp://127.0.0.1:{port}/inspector/",
                            namespace="urn:cell-9", security="none")))
    subscriber = MqttSubscriber(broker, "shopfloor-inspector/cell-9/#")
    line = station_line(workspace)
    session = LiveSession(Lineup((ToolRunner(casting_tool),)), line.sink, camera="0")
    session.continuous = False
    line.attach(session)
    sample = load_sample("casting", 12, seed=1)
    stop = threading.Event()

    def camera() -> None:  # a part under the camera, 20 frames a second
        while not stop.is_set():
            session.process(sample.images[0])
            time.sleep(0.05)

    feeder = threading.Thread(target=camera)
    feeder.start()
    plc = None
    try:
        wait_until(lambda: all(s.connected for s in line.status()), 20, "MQTT and OPC UA up")
        subscriber.client.publish("shopfloor-inspector/cell-9/cmd/trigger",
                                  json.dumps({"camera": "0", "id": "mqtt-1", "expected": "SN-0001"}),
                                  qos=1)
        wait_until(lambda: subscriber.payloads("/casting/verdict"), 10, "the MQTT verdict")
        assert session.latest.triggered and session.latest.expected == "SN-0001"

        plc = Client(f"opc.tcp://127.0.0.1:{port}/inspector/", timeout=10)
        plc.connect()
        ns = plc.get_namespace_index("urn:cell-9")
        node = lambda path: plc.get_node(f"ns={ns};s=Station.{path}")  # noqa: E731
        node("Expected").write_value("8480010001136")
        node("Trigger").write_value(True)
        wait_until(lambda: node("ResultValid").read_value(), 10, "ResultValid")
        assert session.latest.expected == "8480010001136" and node("Expected").read_value() == ""
        node("Trigger").write_value(False)
        time.sleep(1.0)  # frames keep coming: nothing more may be recorded
    finally:
        stop.set()
        feeder.join()
        if plc is not None:
            plc.disconnect()
        close_lines()  # drains the history writer
        subscriber.close()
        broker.stop()

    events = line.history.events(newest_first=False)
    assert len(events) == 2 and set(events["cause"]) == {TRIGGER}
    assert events["trigger_id"].iloc[0] == "mqtt-1" and events["trigger_id"].iloc[1].startswith("opcua")
    published = [json.loads(p) for p in subscriber.payloads("/casting/verdict")]
    assert [p["trigger_id"] for p in published] == list(events["trigger_id"])
