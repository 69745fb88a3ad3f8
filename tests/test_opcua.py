"""The station's OPC UA server against a real asyncua client on loopback: the node tree, the
trigger handshake driving a real live session, counters and their reset, a tool that never
answers, clients that come and go, a port that is taken, and tools that change."""

from __future__ import annotations

import contextlib
import math
import shutil
import socket
import threading
import time

import pytest
from asyncua import ua
from asyncua.sync import Client

from core.engine.inference import ToolRunner
from core.integrations.opcua import OpcUaLink
from core.records.verdicts import CHANGE, ERROR, MAX_EXPECTED_CHARS, TRIGGER, VerdictRecord
from core.station.live import Fanout, Lineup, LiveSession, RecentVerdicts
from core.store.settings import OpcUaSettings
from core.store.tools import add_change_listener
from tests.conftest import load_sample
from tests.readings import code_result
from tests.servers import free_port, opcua_client_certificate, wait_until

NAMESPACE = "urn:test-station"
CLASSES = ("good", "crack", "porosity")


def opcua_settings(port: int, security: str = "none") -> OpcUaSettings:
    return OpcUaSettings(enabled=True, endpoint=f"opc.tcp://127.0.0.1:{port}/inspector/", namespace=NAMESPACE,
                         security=security)


class Plc:
    """What a PLC does: read and write the station's nodes by their ids."""

    def __init__(self, link: OpcUaLink, user: str | None = None, password: str | None = None):
        self.client = Client(link.settings.endpoint, timeout=10)
        if user:
            self.client.set_user(user)
            self.client.set_password(password)
        self.client.connect()
        self.ns = self.client.get_namespace_index(NAMESPACE)

    def node(self, path: str):
        return self.client.get_node(f"ns={self.ns};s=Station.{path}")

    def read(self, path: str):
        return self.node(path).read_value()

    def write(self, path: str, value) -> None:
        self.node(path).write_value(value)

    def wait(self, path: str, value, timeout: float = 10) -> None:
        wait_until(lambda: self.read(path) == value, timeout, f"{path} == {value!r}")

    def close(self) -> None:
        self.client.disconnect()


@pytest.fixture
def start_link():
    links = []

    def build(tools, on_trigger=None, port=None, **kwargs) -> OpcUaLink:
        link = OpcUaLink(opcua_settings(port or free_port()), "cell-7", tools, on_trigger, **kwargs)
        links.append(link)
        assert link.start(), link.status().last_error
        return link

    yield build
    for link in links:
        link.stop()


def event(tool: str, verdict: str, trigger_id: str | None, cause: str = TRIGGER,
          defect: str = "porosity") -> VerdictRecord:
    return VerdictRecord(time.time(), tool, verdict, defect if verdict == "FAIL" else None,
                         0.9 if verdict == "FAIL" else 0.1, 0.5, "v3", cause, "0", trigger_id=trigger_id)


def test_the_plc_handshake_drives_one_inspection_per_trigger(start_link, casting_tool):
    photos = load_sample("casting", 1, seed=1)
    sink, calls = RecentVerdicts(), []

    def on_trigger(camera, trigger_id, expected):
        calls.append((camera, trigger_id))
        live.request_trigger(trigger_id, expected)

    link = start_link({"casting": casting_tool.config.classes}, on_trigger)
    live = LiveSession(Lineup((ToolRunner(casting_tool),)), Fanout(sink, link))
    live.continuous = False
    frame = {"image": photos.images[0]}  # the good photo first, then the defect one
    stop = threading.Event()

    def camera():
        while not stop.is_set():
            live.process(frame["image"])
            time.sleep(0.03)

    feeder = threading.Thread(target=camera, daemon=True)
    feeder.start()
    plc = Plc(link)
    try:
        assert plc.read("Name") == "cell-7" and plc.read("Online") and plc.read("Ready")
        assert plc.read("Tools.casting.Classes") == list(casting_tool.config.classes)
        beat = plc.read("Heartbeat")
        plc.wait("Heartbeat", beat + 1, timeout=5)
        for cycle, (image, label) in enumerate(zip(photos.images, photos.labels), start=1):
            frame["image"] = image
            plc.write("Trigger", True)
            plc.wait("TriggerAck", True)
            wait_until(lambda: plc.read("ResultValid"), what="ResultValid")
            # once ResultValid is set, the whole result is there
            assert plc.read("InspectionID") == cycle and plc.read("TriggerID") == f"opcua-{cycle}"
            assert plc.read("Ready")
            plc.write("Trigger", False)
            plc.wait("TriggerAck", False)
            events = sink.recent()
            assert [(e.cause, e.trigger_id) for e in events[cycle - 1:]] == [(TRIGGER, f"opcua-{cycle}")]
            done = events[-1]
            assert done.verdict == ("PASS" if label == 0 else "FAIL")  # photos it was trained on
            assert plc.read("Pass") == (done.verdict == "PASS") == plc.read("Tools.casting.Pass")
            assert plc.read("Verdict") == done.verdict == plc.read("Tools.casting.Verdict")
            assert plc.read("Tools.casting.Score") == pytest.approx(done.score)
            assert plc.read("Tools.casting.Threshold") == pytest.approx(done.threshold)
            shown = done.defect_class if done.verdict == "FAIL" else "good"
            assert plc.read("Tools.casting.ClassIndex") == casting_tool.config.classes.index(shown)
            assert plc.read("Tools.casting.Version") == done.version
        time.sleep(0.5)  # frames keep coming: no more verdicts without a trigger
        assert len(sink.recent()) == 2 and calls == [(None, "opcua-1"), (None, "opcua-2")]
        assert [plc.read(f"Counters.{n}") for n in ("Total", "Pass", "Fail")] == [2, 1, 1]
        assert live.error is None and plc.read("Error") == ""
    finally:
        stop.set()
        feeder.join()
        plc.close()


def test_the_plc_sends_the_expected_value_with_the_trigger_and_reads_what_was_read(start_link):
    calls = []
    link = start_link({"serial": ("good", "wrong code")},
                      lambda camera, trigger_id, expected: calls.append((trigger_id, expected)))
    plc = Plc(link)
    try:
        assert plc.read("Tools.serial.Reading") == "" == plc.read("Tools.serial.ReadingFormat")
        plc.write("Expected", "8480010001136")  # the order's serial, then the trigger
        plc.write("Trigger", True)
        plc.wait("TriggerAck", True)
        assert calls == [("opcua-1", "8480010001136")] and plc.read("Expected") == ""  # taken
        link.remember([VerdictRecord.of(code_result(), time.time(), TRIGGER, trigger_id="opcua-1")])
        plc.wait("ResultValid", True)  # a real EAN-13 photo, read by the decoder
        assert plc.read("Pass") is True and plc.read("Tools.serial.Reading") == "8480010001136"
        assert plc.read("Tools.serial.ReadingFormat") == "EAN-13"
        plc.write("Trigger", False)
        plc.wait("TriggerAck", False)

        plc.write("Expected", "9" * (MAX_EXPECTED_CHARS + 1))
        plc.write("Trigger", True)  # refused, and the PLC is told why
        wait_until(lambda: "trigger ignored" in plc.read("Error"), what="the refusal")
        assert f"at most {MAX_EXPECTED_CHARS}" in plc.read("Error")
        assert not plc.read("TriggerAck") and plc.read("Ready") and len(calls) == 1
        plc.write("Trigger", False)

        plc.client.write_values([plc.node("Trigger"), plc.node("Expected")], [True, "SN-2"])
        plc.wait("TriggerAck", True)  # one write request, the trigger first: its value is taken
        assert calls[-1] == ("opcua-2", "SN-2") and plc.read("Error") == ""
        link.remember([VerdictRecord.of(code_result(), time.time(), TRIGGER, trigger_id="opcua-2")])
        plc.wait("ResultValid", True)
        plc.write("Trigger", False)
        plc.wait("TriggerAck", False)

        plc.write("Trigger", True)  # the PLC wrote no new value: the last one is not reused
        plc.wait("TriggerAck", True)
        assert calls[-1] == ("opcua-3", None)
        link.remember([event("serial", "PASS", "opcua-3")])  # no reading: the nodes are cleared
        plc.wait("ResultValid", True)
        assert plc.read("Tools.serial.Reading") == "" == plc.read("Tools.serial.ReadingFormat")
    finally:
        plc.close()


def test_counters_and_their_reset(start_link):
    link = start_link({"weld": CLASSES})
    plc = Plc(link)
    try:
        link.remember([event("weld", "PASS", "mqtt-1")])  # triggers from elsewhere count too
        link.remember([event("weld", "FAIL", "key-T")])
        link.remember([event("weld", "PASS", None)])
        link.remember([event("weld", "FAIL", None, cause=CHANGE)])  # continuous: no part to count
        wait_until(lambda: link.status().sent == 4, what="the events applied")
        assert [plc.read(f"Counters.{n}") for n in ("Total", "Pass", "Fail")] == [3, 2, 1]
        assert plc.read("InspectionID") == 3 and plc.read("TriggerID") == ""
        assert plc.read("Tools.weld.Verdict") == "FAIL"  # the tool's nodes follow every event
        assert plc.read("Tools.weld.ClassIndex") == 2 and plc.read("Tools.weld.DefectClass") == "porosity"

        changes = []
        stop_listening = add_change_listener(changes.append)
        try:
            plc.write("ResetCounters", True)
            plc.wait("Counters.Total", 0)
        finally:
            stop_listening()
        assert [plc.read(f"Counters.{n}") for n in ("Pass", "Fail")] == [0, 0]
        reset = [c for c in changes if c.action == "counters reset"]  # audited, with who
        assert len(reset) == 1 and reset[0].actor == "opcua:anonymous"
        assert reset[0].details["counters"]["Total"] == 3
        plc.wait("ResetCounters", False)  # ready for the next reset
        link.remember([event("weld", "PASS", "mqtt-2")])
        plc.wait("Counters.Total", 1)
        assert plc.read("Counters.Pass") == 1 and plc.read("InspectionID") == 4  # the id never resets
    finally:
        plc.close()


def test_no_client_can_forge_a_result_or_change_the_node_tree(start_link):
    """asyncua's default users make a client logging in as 'admin' (any password) an
    administrator; on the station it is a plain user like every other client."""
    link = start_link({"weld": CLASSES})
    for user in (None, "admin"):
        plc = Plc(link, user, "not-the-password")
        try:
            link.remember([event("weld", "FAIL", "key-T")])
            wait_until(lambda: plc.read("Tools.weld.Verdict") == "FAIL", what="the FAIL published")
            for path, forged in (("Pass", True), ("Verdict", "PASS"), ("ResultValid", True),
                                 ("Tools.weld.Pass", True), ("Tools.weld.Verdict", "PASS")):
                before = plc.read(path)
                with pytest.raises(ua.UaStatusCodeError, match="BadUserAccessDenied|BadNotWritable"):
                    plc.write(path, forged)
                assert plc.read(path) == before, f"{user or 'anonymous'} changed {path}"
            with pytest.raises(ua.UaStatusCodeError, match="BadUserAccessDenied"):
                plc.client.get_node(f"ns={plc.ns};s=Station").add_variable(plc.ns, "Forged", True)
            with pytest.raises(ua.UaStatusCodeError, match="BadUserAccessDenied"):
                plc.client.delete_nodes([plc.node("Pass")])
            assert plc.read("Pass") is False  # still there, still the station's
            plc.write("ResetCounters", True)  # the handshake's inputs still take writes
            plc.wait("ResetCounters", False)
        finally:
            plc.close()


def test_a_tool_that_never_answers_fails_the_part_and_a_busy_station_ignores_triggers(start_link):
    calls = []
    link = start_link({"weld": CLASSES, "label": ("good", "missing")},
                      lambda camera, trigger_id, expected: calls.append(trigger_id), result_timeout_s=1.0)
    plc = Plc(link)
    try:
        plc.write("Trigger", True)
        plc.wait("TriggerAck", True)
        assert calls == ["opcua-1"] and not plc.read("Ready") and not plc.read("ResultValid")
        link.remember([event("weld", "PASS", "opcua-1")])  # 'label' never answers
        plc.write("Trigger", False)
        plc.write("Trigger", True)  # too early: the station is still busy
        time.sleep(0.3)
        assert calls == ["opcua-1"] and "not ready" in plc.read("Error")
        plc.write("Trigger", False)

        plc.wait("ResultValid", True, timeout=5)
        assert plc.read("Pass") is False and plc.read("Verdict") == "FAIL"  # an incomplete part fails
        assert "label" in plc.read("Error") and plc.read("Ready")
        assert plc.read("Counters.Fail") == 1 and plc.read("Tools.weld.Pass") is True
        link.remember([event("label", "PASS", "opcua-1")])  # too late: not a second part
        time.sleep(0.3)
        assert plc.read("Counters.Total") == 1 and plc.read("InspectionID") == 1

        plc.write("Trigger", True)
        plc.wait("TriggerAck", True)
        assert calls == ["opcua-1", "opcua-2"] and plc.read("Error") == ""
        link.remember([event("weld", "PASS", "opcua-2"), event("label", "PASS", "opcua-2")])
        plc.wait("ResultValid", True)
        assert plc.read("Pass") is True and plc.read("InspectionID") == 2
    finally:
        plc.close()


def test_a_tool_that_cannot_judge_gives_no_valid_result_and_the_next_part_goes_on(start_link):
    link = start_link({"weld": CLASSES, "label": ("good", "missing")},
                      lambda camera, trigger_id, expected: None)
    plc = Plc(link)
    try:
        plc.write("Trigger", True)
        plc.wait("TriggerAck", True)
        error = VerdictRecord(time.time(), "label", ERROR, None, None, 0.5, "v3", TRIGGER, "0",
                              trigger_id="opcua-1", error="the model gave no usable score (nan)")
        link.remember([event("weld", "PASS", "opcua-1"), error])
        plc.wait("InspectionID", 1)
        plc.wait("Ready", True)
        assert plc.read("ResultValid") is False and plc.read("Pass") is False
        assert plc.read("Verdict") == ERROR and "label" in plc.read("Error")
        assert "no usable score" in plc.read("Error")
        assert [plc.read(f"Counters.{n}") for n in ("Total", "Pass", "Fail", "Error")] == [1, 0, 0, 1]
        assert plc.read("Tools.label.Verdict") == ERROR and plc.read("Tools.label.Pass") is False
        assert math.isnan(plc.read("Tools.label.Score")) and "no usable" in plc.read("Tools.label.Error")
        assert plc.read("Tools.weld.Verdict") == "PASS" and plc.read("Tools.weld.Error") == ""
        plc.write("Trigger", False)

        plc.write("Trigger", True)
        plc.wait("TriggerAck", True)
        assert plc.read("Error") == ""
        link.remember([event("weld", "PASS", "opcua-2"), event("label", "PASS", "opcua-2")])
        plc.wait("ResultValid", True)
        assert plc.read("Pass") is True and plc.read("Tools.label.Error") == ""
    finally:
        plc.close()


def test_a_clock_set_back_an_hour_delays_no_handshake(start_link, monkeypatch):
    link = start_link({"weld": CLASSES}, lambda camera, trigger_id, expected: None, result_timeout_s=1.0)
    plc = Plc(link)
    try:
        plc.write("Trigger", True)
        plc.wait("TriggerAck", True)
        wall = time.time
        monkeypatch.setattr(time, "time", lambda: wall() - 3600)  # the weld tool never answers
        plc.wait("ResultValid", True, timeout=5)  # given up after its 1 s, not after an hour
        assert plc.read("Verdict") == "FAIL" and "weld" in plc.read("Error")
    finally:
        plc.close()


def test_by_default_only_a_trusted_client_is_served_and_only_encrypted(tmp_path):
    pki = tmp_path / "pki"
    link = OpcUaLink(opcua_settings(free_port(), security="sign-and-encrypt"), "cell-7",
                     {"weld": CLASSES}, pki=pki)
    trusted = opcua_client_certificate(tmp_path / "plc")
    stranger = opcua_client_certificate(tmp_path / "stranger", "stranger")
    (pki / "trusted").mkdir(parents=True)
    shutil.copy(trusted[0], pki / "trusted" / trusted[0].name)  # the PLC's certificate is trusted
    assert link.start(), link.status().last_error
    try:
        assert (pki / "own" / "cert.der").is_file()  # made at first start
        assert (pki / "own" / "key.pem").stat().st_mode & 0o077 == 0

        def client(certificate=None) -> Client:
            found = Client(link.settings.endpoint, timeout=5)
            if certificate:
                cert, key, uri = certificate
                found.application_uri = uri
                found.set_security_string(f"Basic256Sha256,SignAndEncrypt,{cert},{key}")
            return found

        plc = client(trusted)
        plc.connect()
        try:
            assert plc.aio_obj.security_policy.Mode == ua.MessageSecurityMode.SignAndEncrypt
            ns = plc.get_namespace_index(NAMESPACE)
            assert plc.get_node(f"ns={ns};s=Station.Name").read_value() == "cell-7"
        finally:
            plc.disconnect()
        for refused in (client(stranger), client()):  # an unknown certificate, no encryption
            served = False
            try:
                refused.connect()
                served = refused.get_namespace_index(NAMESPACE) is not None
            except Exception:  # noqa: BLE001 - asyncua refuses with several kinds of error
                pass
            finally:
                with contextlib.suppress(Exception):
                    refused.disconnect()
            assert not served, "a client without a trusted certificate was served"
    finally:
        link.stop()


def test_clients_come_and_go_and_a_subscriber_sees_every_new_result(start_link):
    link = start_link({"weld": CLASSES})
    first = Plc(link)
    wait_until(lambda: link.status().peers == 1, what="one client")
    first.close()
    wait_until(lambda: link.status().peers == 0, what="the client gone")
    link.remember([event("weld", "FAIL", "a")])  # while nobody listens
    wait_until(lambda: link.status().sent == 1, what="the event applied")

    again = Plc(link)
    try:
        assert again.read("InspectionID") == 1 and again.read("Counters.Fail") == 1  # state kept
        seen = []

        class Handler:
            def datachange_notification(self, node, value, data):
                seen.append(value)

        subscription = again.client.create_subscription(20, Handler())
        subscription.subscribe_data_change(again.node("InspectionID"))
        wait_until(lambda: seen == [1], what="the initial value")
        for n in range(3):
            link.remember([event("weld", "PASS", f"b{n}")])
            wait_until(lambda n=n: seen[-1:] == [2 + n], what=f"InspectionID {2 + n}")
        assert seen == [1, 2, 3, 4] and link.status().connected
    finally:
        again.close()


def test_a_taken_port_is_retried_and_events_wait_for_the_server(start_link):
    port = free_port()
    squatter = socket.socket()
    squatter.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    squatter.bind(("127.0.0.1", port))
    squatter.listen()
    link = OpcUaLink(opcua_settings(port), "cell-7", {"weld": CLASSES}, retry_s=(0.5, 1.0))
    try:
        assert link.start(wait_s=20) is False
        down = link.status()
        assert not down.connected and "failed" in down.last_error
        link.remember([event("weld", "PASS", "x1")])
        link.remember([event("weld", "FAIL", "x2")])
        assert link.status().buffered == 2
        squatter.close()
        wait_until(lambda: link.status().connected, timeout=30, what="the server starting")
        wait_until(lambda: link.status().buffered == 0, what="the buffer applied")
        plc = Plc(link)
        assert plc.read("InspectionID") == 2 and plc.read("Counters.Fail") == 1
        plc.close()
    finally:
        squatter.close()
        link.stop()


def test_tools_can_change_while_serving(start_link):
    link = start_link({"weld": CLASSES})
    plc = Plc(link)
    try:
        link.update_tools({"label": ("good", "missing")})
        wait_until(lambda: plc.read("Tools.label.Classes") == ["good", "missing"], what="the new tool")
        tools = plc.client.get_node(f"ns={plc.ns};s=Station.Tools").get_children()
        assert [t.read_browse_name().Name for t in tools] == ["label"]
        link.remember([event("label", "FAIL", "z", defect="missing")])
        plc.wait("Tools.label.ClassIndex", 1)
        link.update_tools({})
        plc.wait("Ready", False)  # nothing to inspect with
    finally:
        plc.close()
