"""Delivery latency of a verdict to the line: from the decision (the ``remember()`` call on the
video thread) to its arrival at a subscriber on loopback, over MQTT (a real Mosquitto broker,
QoS 1) and over OPC UA (an asyncua client's subscription to ``InspectionID``). Also the time
``remember()`` itself takes on the video thread.

    python -m benchmarks.integration_latency [--events 500] [--interval-ms 20]
"""

from __future__ import annotations

import argparse
import json
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
from asyncua.sync import Client

from benchmarks.common import machine, write_section
from core.integrations.mqtt import MqttLink
from core.integrations.opcua import OpcUaLink
from core.records.verdicts import TRIGGER, VerdictRecord
from core.store.settings import MqttSettings, OpcUaSettings
from tests.servers import Mosquitto, MqttSubscriber, free_port, wait_until

TARGET_MS = 50.0
PUBLISHING_INTERVAL_MS = 10  # the OPC UA subscription's


def record(n: int) -> VerdictRecord:
    return VerdictRecord(time.time(), "weld", "PASS" if n % 2 else "FAIL", None, 0.3, 0.5, "v1", TRIGGER,
                         "0", 0.3, 12.0, f"bench-{n}")


def feed(link, events: int, interval_s: float) -> tuple[dict[int, float], list[float]]:
    """Hand ``events`` verdicts to ``link`` at a steady pace; (sent time per number, remember() costs)."""
    sent, costs = {}, []
    for n in range(1, events + 1):
        started = time.perf_counter()
        sent[n] = started
        link.remember([record(n)])
        costs.append(time.perf_counter() - started)
        time.sleep(interval_s)
    return sent, costs


def mqtt_latency(events: int, interval_s: float) -> tuple[np.ndarray, list[float]]:
    broker = Mosquitto(Path(tempfile.mkdtemp(prefix="inspector-bench-mqtt-"))).start()
    arrived: dict[int, float] = {}
    try:
        listener = MqttSubscriber(broker, "bench/st/+/+/verdict")
        def keep(client, userdata, message) -> None:
            arrived[json.loads(message.payload)["seq"]] = time.perf_counter()

        listener.client.on_message = keep
        settings = MqttSettings(enabled=True, host=broker.host, port=broker.port, topic_root="bench")
        link = MqttLink(settings, "st")
        link.start()
        wait_until(lambda: link.status().connected, what="the MQTT link")
        sent, costs = feed(link, events, interval_s)
        wait_until(lambda: len(arrived) == events, what=f"{events} MQTT messages")
        link.stop()
        listener.close()
    finally:
        broker.kill()
    return np.array([arrived[n] - sent[n] for n in sent]) * 1000, costs


def opcua_latency(events: int, interval_s: float) -> tuple[np.ndarray, list[float]]:
    port = free_port()
    settings = OpcUaSettings(enabled=True, endpoint=f"opc.tcp://127.0.0.1:{port}/bench/",
                             namespace="urn:bench", security="none")  # as measured before encryption
    link = OpcUaLink(settings, "st", {"weld": ("good", "crack")})
    assert link.start(), link.status().last_error
    arrived: dict[int, float] = {}
    lock = threading.Lock()

    class Handler:
        def datachange_notification(self, node, value, data) -> None:
            with lock:
                arrived.setdefault(int(value), time.perf_counter())

    client = Client(settings.endpoint)
    client.connect()
    try:
        ns = client.get_namespace_index(settings.namespace)
        subscription = client.create_subscription(PUBLISHING_INTERVAL_MS, Handler())
        subscription.subscribe_data_change(client.get_node(f"ns={ns};s=Station.InspectionID"))
        wait_until(lambda: 0 in arrived, what="the subscription's first value")
        sent, costs = feed(link, events, interval_s)
        wait_until(lambda: len(arrived) == events + 1, what=f"{events} OPC UA changes")
    finally:
        client.disconnect()
        link.stop()
    return np.array([arrived[n] - sent[n] for n in sent]) * 1000, costs


def row(name: str, latency_ms: np.ndarray, costs: list[float]) -> str:
    p50, p95, top = np.percentile(latency_ms, 50), np.percentile(latency_ms, 95), latency_ms.max()
    cost_us = np.array(costs) * 1e6
    verdict = "met" if p95 <= TARGET_MS else "MISSED"
    return (f"| {name} | {len(latency_ms)} | {p50:.1f} | {p95:.1f} | {top:.1f} | "
            f"{np.median(cost_us):.0f} / {cost_us.max():.0f} | <= {TARGET_MS:.0f} ms p95 ({verdict}) |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=500)
    parser.add_argument("--interval-ms", type=float, default=20.0)
    args = parser.parse_args()
    interval = args.interval_ms / 1000
    rows = [row("MQTT (QoS 1, Mosquitto)", *mqtt_latency(args.events, interval)),
            row(f"OPC UA (subscription, {PUBLISHING_INTERVAL_MS} ms publishing interval)",
                *opcua_latency(args.events, interval))]
    print("\n".join(rows), flush=True)
    body = "\n".join([
        "## Line integration latency",
        "",
        f"Machine: {machine()}. From the `remember()` call (the decision, on the video thread) to the "
        f"arrival at a subscriber on loopback; one verdict every {args.interval_ms:.0f} ms. "
        "`remember()` cost: what the video thread pays per event (its maximum is Python's 5 ms thread "
        "switch interval: another thread of the process held the interpreter).",
        "",
        "| channel | events | p50 (ms) | p95 (ms) | max (ms) | remember() cost median / max (us) | target |",
        "|---|---|---|---|---|---|---|",
        *rows,
    ])
    write_section("integration-latency", body)


if __name__ == "__main__":
    main()
