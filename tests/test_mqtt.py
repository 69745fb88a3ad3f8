"""The station's MQTT link against a real Mosquitto broker on loopback: verdict messages, triggers
from the line reaching a real live session, the status and its last will, a bounded buffer, and
no event lost when the broker dies and comes back, and TLS with a password read from an owner-only
file."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from dataclasses import replace
from pathlib import Path

import pytest

from core.engine.inference import ToolRunner
from core.errors import InspectorError
from core.integrations.mqtt import MqttLink, parse_trigger
from core.records.verdicts import MAX_EXPECTED_CHARS, TRIGGER, Reading, VerdictRecord
from core.station.live import Fanout, Lineup, LiveSession, RecentVerdicts
from core.store.settings import MQTT_PASSWORD_ENV, MqttSettings, StationSettings
from tests.conftest import load_sample
from tests.readings import code_result
from tests.servers import Mosquitto, MqttSubscriber, self_signed_certificate, wait_until

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def mosquitto(tmp_path):
    broker = Mosquitto(tmp_path / "mosquitto").start()
    yield broker
    broker.kill()


def settings(broker: Mosquitto, **changes) -> MqttSettings:
    return MqttSettings(enabled=True, host=broker.host, port=broker.port, topic_root="plant/line3",
                        **changes)


def record(tool: str = "weld", verdict: str = "PASS", when: float | None = None, **fields) -> VerdictRecord:
    return VerdictRecord(time.time() if when is None else when, tool, verdict,
                         None if verdict == "PASS" else "crack", 0.2 if verdict == "PASS" else 0.9, 0.5,
                         "v2", **fields)


@pytest.fixture
def link_of():
    """Builds started links and stops them all at the end of the test."""
    links = []

    def build(*args, **kwargs) -> MqttLink:
        kwargs.setdefault("reconnect_s", (0.2, 1.0))
        link = MqttLink(*args, **kwargs)
        link.start()
        links.append(link)
        return link

    yield build
    for link in links:
        link.stop(flush_s=0)


def seqs(subscriber: MqttSubscriber) -> list[int]:
    return [json.loads(p)["seq"] for p in subscriber.payloads("/verdict")]


def test_verdicts_arrive_as_json_on_the_documented_topics(mosquitto, link_of):
    listener = MqttSubscriber(mosquitto, "plant/line3/#")
    link = link_of(settings(mosquitto), "press+7/a")  # wildcards and '/' cannot reach the topic
    wait_until(lambda: link.status().connected, what="the link's connection")
    when = time.time()
    link.remember([record("weld", "PASS", when, camera="0", raw_score=0.25, latency_ms=12.345),
                   record("label", "FAIL", when, camera="top", trigger_id="A17", cause=TRIGGER)])
    wait_until(lambda: len(listener.payloads("/verdict")) == 2, what="two verdict messages")

    topics = [t for t, _, _ in listener.messages if t.endswith("/verdict")]
    assert topics == ["plant/line3/press_7_a/0/weld/verdict", "plant/line3/press_7_a/top/label/verdict"]
    weld, label = (json.loads(p) for p in listener.payloads("/verdict"))
    assert weld == {
        "seq": 1, "time": weld["time"], "epoch": round(when, 3), "station": "press+7/a", "camera": "0",
        "tool": "weld", "version": "v2", "verdict": "PASS", "pass": True, "defect_class": None,
        "score": 0.2, "raw_score": 0.25, "threshold": 0.5, "latency_ms": 12.3, "cause": "change",
        "trigger_id": None, "error": None, "reading": None}
    assert abs(time.mktime(time.strptime(weld["time"][:19], "%Y-%m-%dT%H:%M:%S")) - int(when)) <= 1
    assert (label["seq"], label["pass"], label["defect_class"], label["cause"], label["trigger_id"]) == (
        2, False, "crack", "trigger", "A17")
    assert ("plant/line3/press_7_a/status", b"online", False) in listener.messages

    late = MqttSubscriber(mosquitto, "plant/line3/+/status")  # the status is retained
    wait_until(lambda: late.messages, what="the retained status")
    assert late.messages == [("plant/line3/press_7_a/status", b"online", True)]
    status = link.status()
    assert (status.connected, status.sent, status.buffered, status.dropped) == (True, 2, 0, 0)
    link.stop()
    wait_until(lambda: listener.payloads("/status")[-1:] == [b"offline"], what="'offline' at stop")
    listener.close()
    late.close()


def test_trigger_command_parsing():
    assert parse_trigger(b" {} ") == (None, None, None)
    assert parse_trigger(b'{"camera": null, "id": "A1"}') == (None, "A1", None)
    assert parse_trigger(b'{"camera": 1, "id": 42}') == ("1", "42", None)
    assert parse_trigger(b'{"id": "A2", "expected": "0042-SN"}') == (None, "A2", "0042-SN")
    assert parse_trigger(b'{"expected": ""}') == (None, None, None)  # nothing expected
    for bad in (b"go", b"", b"[1]", b'{"cam": "0"}', b'{"camera": ["0"]}', b'{"expected": 42}',
                json.dumps({"expected": "9" * (MAX_EXPECTED_CHARS + 1)}).encode()):
        with pytest.raises(ValueError):
            parse_trigger(bad)
    with pytest.raises(ValueError, match=f"201 characters long: at most {MAX_EXPECTED_CHARS}"):
        parse_trigger(json.dumps({"expected": "9" * 201}).encode())


def test_what_a_reading_tool_read_is_in_its_verdict_message(mosquitto, link_of):
    listener = MqttSubscriber(mosquitto, "plant/line3/st1/+/+/verdict")
    link = link_of(settings(mosquitto), "st1")
    wait_until(lambda: link.status().connected, what="the link's connection")
    code = VerdictRecord.of(code_result(), time.time(), TRIGGER, trigger_id="P1")  # a real EAN-13
    text = replace(code, tool="lot", reading=Reading("LOT 2503-17", "text", 0.912345, "B"))
    wrong = VerdictRecord.of(code_result(expected="4006381333931"), time.time(), TRIGGER)
    link.remember([code, text, wrong])
    wait_until(lambda: len(listener.payloads()) == 3, what="three verdict messages")
    messages = [json.loads(p) for p in listener.payloads()]
    assert [m["reading"] for m in messages] == [
        {"text": "8480010001136", "format": "EAN-13", "confidence": None, "grade": None},
        {"text": "LOT 2503-17", "format": "text", "confidence": 0.9123, "grade": "B"},
        {"text": "8480010001136", "format": "EAN-13", "confidence": None, "grade": None}]
    assert [(m["verdict"], m["defect_class"]) for m in messages] == [
        ("PASS", None), ("PASS", None), ("FAIL", "wrong code")]  # what was read, whatever the verdict
    listener.close()


def test_a_trigger_from_the_line_gives_exactly_one_verdict(mosquitto, link_of, casting_tool):
    good = load_sample("casting", 1, seed=1).images[0]
    sink = RecentVerdicts()
    calls: list[tuple[str | None, str | None, str | None]] = []

    def on_trigger(camera: str | None, trigger_id: str | None, expected: str | None) -> None:
        calls.append((camera, trigger_id, expected))
        live.request_trigger(trigger_id, expected)

    commander = MqttSubscriber(mosquitto, "nothing/here")
    commander.client.publish("plant/line3/st1/cmd/trigger", b'{"id": "stale"}', qos=1, retain=True)
    link = link_of(settings(mosquitto), "st1", on_trigger)  # gets the stale command as retained
    live = LiveSession(Lineup((ToolRunner(casting_tool),)), Fanout(sink, link))
    live.continuous = False
    listener = MqttSubscriber(mosquitto, "plant/line3/st1/+/+/verdict")
    wait_until(lambda: link.status().connected, what="the link's connection")

    stop = threading.Event()

    def camera() -> None:
        while not stop.is_set():
            live.process(good)
            time.sleep(0.03)

    feeder = threading.Thread(target=camera, daemon=True)
    feeder.start()
    try:
        commander.client.publish("plant/line3/st1/cmd/trigger", b"not json", qos=1)
        wait_until(lambda: "not JSON" in (link.status().last_error or ""), what="the bad command's error")
        time.sleep(0.5)
        assert sink.recent() == [] and calls == []  # neither a bad nor a retained command triggers

        commander.client.publish("plant/line3/st1/cmd/trigger", b'{"camera": null, "id": "T-42"}', qos=1)
        wait_until(lambda: sink.recent(), what="the triggered verdict")
        time.sleep(0.6)  # frames keep coming: no second verdict may follow
    finally:
        stop.set()
        feeder.join()
        commander.client.publish("plant/line3/st1/cmd/trigger", b"", qos=1, retain=True)  # clear it
        time.sleep(0.3)  # an empty message (what clearing sends) is no trigger either
        commander.close()
    assert live.error is None
    assert calls == [(None, "T-42", None)]
    events = sink.recent()
    assert [(e.cause, e.trigger_id, e.tool) for e in events] == [(TRIGGER, "T-42", "casting")]
    wait_until(lambda: listener.payloads(), what="the verdict message")
    time.sleep(0.2)
    [message] = [json.loads(p) for p in listener.payloads()]
    assert (message["trigger_id"], message["cause"], message["verdict"], message["pass"]) == (
        "T-42", "trigger", events[0].verdict, events[0].verdict == "PASS")
    listener.close()


def test_no_event_is_lost_when_the_broker_dies_and_comes_back(tmp_path, link_of):
    broker = Mosquitto(tmp_path / "broker").start()
    try:
        counter = MqttSubscriber(broker, "plant/line3/st1/#", client_id="counter", persistent=True)
        subscribed_at = time.time()
        database = broker.directory / "mosquitto.db"
        wait_until(lambda: database.is_file() and database.stat().st_mtime > subscribed_at + 0.1,
                   what="the broker saving the counter's session")
        link = link_of(settings(broker), "st1")
        wait_until(lambda: link.status().connected, what="the link's connection")
        link.remember([record(cause=TRIGGER, trigger_id=str(i)) for i in range(20)])
        wait_until(lambda: len(seqs(counter)) == 20, what="the first 20 events")

        broker.freeze()  # it takes what is sent but acknowledges nothing
        for i in range(20, 40):
            link.remember([record(cause=TRIGGER, trigger_id=str(i))])
        time.sleep(0.5)
        assert link.status().buffered == 20  # sent, never acknowledged: still the station's
        broker.kill()
        wait_until(lambda: not link.status().connected, what="the link noticing the broker's death")
        link.remember([record(cause=TRIGGER, trigger_id=str(i)) for i in range(40, 60)])
        down = link.status()
        assert (down.buffered, down.sent, down.dropped) == (40, 20, 0) and down.last_error

        broker = Mosquitto(broker.directory, broker.port).start()
        wait_until(lambda: link.status().buffered == 0, timeout=20, what="the buffer draining")
        wait_until(lambda: set(seqs(counter)) == set(range(1, 61)), timeout=20,
                   what=f"all 60 events (have {sorted(set(seqs(counter)))})")
        trigger_ids = {json.loads(p)["trigger_id"] for p in counter.payloads("/verdict")}
        assert trigger_ids == {str(i) for i in range(60)}
        assert link.status().sent == 60 and link.status().connected
        counter.close()
    finally:
        broker.kill()


def test_the_buffer_is_bounded_and_drops_the_oldest_while_the_broker_is_away(tmp_path, link_of):
    broker = Mosquitto(tmp_path / "broker").start()
    try:
        counter = MqttSubscriber(broker, "plant/line3/st1/#", client_id="counter", persistent=True)
        counter.close()
        broker.stop()  # a clean stop saves the counter's session
        link = link_of(settings(broker, buffer=5), "st1")
        for i in range(8):
            link.remember([record(trigger_id=str(i))])
        time.sleep(0.5)
        away = link.status()
        assert (away.connected, away.buffered, away.dropped, away.sent) == (False, 5, 3, 0)
        assert "cannot reach" in away.last_error

        broker = Mosquitto(broker.directory, broker.port).start()
        wait_until(lambda: link.status().connected and link.status().buffered == 0, timeout=20,
                   what="the link connecting and draining")
        counter = MqttSubscriber(broker, "plant/line3/st1/#", client_id="counter", persistent=True)
        wait_until(lambda: len(seqs(counter)) >= 5, what="the queued events")
        time.sleep(0.2)
        assert seqs(counter) == [4, 5, 6, 7, 8]  # the oldest three were dropped, the rest in order
        counter.close()
    finally:
        broker.kill()


STATION = """
import sys, time
from core.errors import InspectorError
from core.integrations.mqtt import MqttLink
from core.store.settings import MQTT_PASSWORD_ENV, MqttSettings, StationSettings
link = MqttLink(MqttSettings(enabled=True, host="127.0.0.1", port=int(sys.argv[1]), topic_root="plant"),
                "doomed")
link.start()
while not link.status().connected:
    time.sleep(0.05)
print("connected", flush=True)
time.sleep(60)
"""


def test_the_broker_says_offline_for_a_station_that_dies(mosquitto):
    listener = MqttSubscriber(mosquitto, "plant/doomed/status")
    station = subprocess.Popen([sys.executable, "-c", STATION, str(mosquitto.port)], cwd=ROOT,
                               stdout=subprocess.PIPE, text=True)
    try:
        assert station.stdout.readline().strip() == "connected"
        wait_until(lambda: listener.payloads() == [b"online"], what="'online'")
        os.kill(station.pid, signal.SIGKILL)  # no goodbye: the broker's last will speaks for it
        wait_until(lambda: listener.payloads() == [b"online", b"offline"], timeout=5, what="the last will")
    finally:
        station.kill()
        station.wait()
        listener.close()


def test_over_tls_verdicts_arrive_with_the_right_password_and_are_refused_with_a_wrong_one(
        tmp_path, link_of, monkeypatch):
    cert, key = self_signed_certificate(tmp_path)
    broker = Mosquitto(tmp_path / "tls", users={"station": "s3cret", "mes": "reader"},
                       tls=(cert, key)).start()
    try:
        listener = MqttSubscriber(broker, "plant/line3/#", user=("mes", "reader"), ca_file=cert)
        secret = tmp_path / "mqtt-password"
        secret.write_text("s3cret\n")
        secret.chmod(0o644)
        link = link_of(settings(broker, username="station", password_file=str(secret), tls=True,
                                ca_file=str(cert)), "cell-1")
        assert "chmod 600" in link.status().last_error and not link.status().connected

        secret.chmod(0o600)
        link = link_of(settings(broker, username="station", password_file=str(secret), tls=True,
                                ca_file=str(cert)), "cell-1")
        wait_until(lambda: link.status().connected, what="a TLS connection with the password")
        link.remember([record("weld", "FAIL")])
        wait_until(lambda: len(listener.payloads("/verdict")) == 1, what="the verdict over TLS")

        monkeypatch.setenv(MQTT_PASSWORD_ENV, "wrong")  # the environment wins over the file
        refused = link_of(settings(broker, username="station", password_file=str(secret), tls=True,
                                   ca_file=str(cert)), "cell-2")
        wait_until(lambda: "refused" in (refused.status().last_error or ""), what="a refusal")
        refused.remember([record("weld", "FAIL")])
        time.sleep(0.5)
        assert not refused.status().connected and len(listener.payloads("/verdict")) == 1
        plain = link_of(settings(broker, username="station", password_file=str(secret)), "cell-3")
        time.sleep(1.0)  # no TLS: the broker takes no plain connection
        assert not plain.status().connected
        listener.close()
    finally:
        broker.kill()


def test_a_password_in_station_json_is_refused_with_what_to_do_instead():
    with pytest.raises(InspectorError, match="password_file"):
        StationSettings.from_json({"mqtt": {"username": "station", "password": "in clear"}})
