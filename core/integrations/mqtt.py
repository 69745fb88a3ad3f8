"""Verdict events to an MQTT broker, trigger commands from it.

Topics (``<base>`` is ``<topic_root>/<station>``; see ``docs/INTEGRATIONS.md``):

- ``<base>/status``: retained ``online`` / ``offline``; the broker publishes ``offline`` itself
  (last will) when the station dies without saying goodbye.
- ``<base>/<camera>/<tool>/verdict``: one JSON message per verdict event (``verdict_payload``).
- ``<base>/cmd/trigger``: a JSON ``{"camera": "0" | null, "id": "...", "expected": "..."}``
  (``{}``: every camera, no id, nothing expected) asks for one triggered inspection;
  ``expected`` is the value a reading tool compares with (the order's serial). An empty message
  is ignored: it is what clearing a retained message sends, and retained commands are ignored
  too (they would fire at every reconnection).

Delivery is *at least once*: an event leaves the station's own bounded outbox only when the
broker has acknowledged it (PUBACK). On every (re)connection each event still in the outbox is
published again, in order, so an event that paho had sent to a broker that died before
acknowledging it is not lost; paho's own copies are dropped at that moment so that the client
does not send them twice (a subscriber may still see a duplicate of an event whose PUBACK was
lost; ``seq`` identifies it). ``remember`` only encodes and queues, on the video thread; a sender
thread publishes, paho's own loop thread reads, acknowledges and reconnects with back-off.
"""

from __future__ import annotations

import json
import logging
import threading
import uuid
from collections import OrderedDict, deque
from datetime import datetime
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion, MQTTErrorCode

from core.errors import InspectorError
from core.integrations import LinkStatus, TriggerCallback
from core.records.verdicts import PASS, VerdictRecord, expected_value, short_error
from core.store.settings import MqttSettings

LOG = logging.getLogger("shopfloor_inspector.mqtt")

ONLINE, OFFLINE = "online", "offline"
_WILDCARDS = str.maketrans({"+": "_", "#": "_", "/": "_"})


def topic_level(name: str) -> str:
    """A name usable as one topic level: MQTT wildcards and separators become '_'."""
    return str(name).translate(_WILDCARDS) or "_"


def station_topics(topic_root: str, station: str) -> dict[str, str]:
    """The station's fixed topics; a verdict topic is ``verdict_topic(base, camera, tool)``."""
    base = f"{topic_root.strip('/').replace('+', '_').replace('#', '_')}/{topic_level(station)}"
    return {"base": base, "status": f"{base}/status", "trigger": f"{base}/cmd/trigger"}


def verdict_topic(base: str, camera: str, tool: str) -> str:
    return f"{base}/{topic_level(camera)}/{topic_level(tool)}/verdict"


def _number(value: float | None, digits: int = 4) -> float | None:
    return None if value is None else round(float(value), digits)


def verdict_payload(record: VerdictRecord, station: str, seq: int) -> dict[str, Any]:
    """The JSON message of one verdict event; ``seq`` counts the station's events since it started."""
    reading = record.reading
    return {
        "seq": seq,
        "time": datetime.fromtimestamp(record.time).astimezone().isoformat(timespec="milliseconds"),
        "epoch": round(record.time, 3),
        "station": station,
        "camera": record.camera,
        "tool": record.tool,
        "version": record.version,
        "verdict": record.verdict,
        "pass": record.verdict == PASS,
        "defect_class": record.defect_class,
        "score": _number(record.score),
        "raw_score": _number(record.raw_score),
        "threshold": _number(record.threshold),
        "latency_ms": _number(record.latency_ms, 1),
        "cause": record.cause,
        "trigger_id": record.trigger_id,
        "error": record.error,  # why the verdict is ERROR (the tool could not judge the part)
        "reading": None if reading is None else {  # what a code or label text tool read
            "text": reading.text, "format": reading.format,
            "confidence": _number(reading.confidence), "grade": reading.grade},
    }


def parse_trigger(payload: bytes) -> tuple[str | None, str | None, str | None]:
    """(camera or None for every camera, trigger id or None, expected value or None) of a
    trigger command, or ValueError."""
    try:
        command = json.loads(payload.decode("utf-8", "replace"))
    except json.JSONDecodeError as exc:
        raise ValueError(f"trigger command is not JSON ({exc}); send {{\"camera\": \"0\", "
                         "\"id\": \"...\"} or {} for every camera") from exc
    if not isinstance(command, dict) or set(command) - {"camera", "id", "expected"}:
        raise ValueError("trigger command must be a JSON object with only 'camera', 'id' and "
                         "'expected'")
    camera, trigger_id = command.get("camera"), command.get("id")
    if camera is not None and not isinstance(camera, str | int):
        raise ValueError("trigger 'camera' must be a camera name or null (every camera)")
    return (None if camera is None else str(camera),
            None if trigger_id is None else str(trigger_id),
            expected_value(command.get("expected")))


class MqttLink:
    """The station's MQTT client: a verdict sink (``remember``) and a source of triggers.

    Start once with ``start()`` (returns at once; paho connects, and reconnects with back-off
    from ``reconnect_s[0]`` to ``reconnect_s[1]`` seconds, in its own thread) and end with
    ``stop()``, which waits a little for the outbox to drain and publishes ``offline``.
    """

    WINDOW = 100  # events published and not yet acknowledged at any one time

    def __init__(self, settings: MqttSettings, station: str, on_trigger: TriggerCallback | None = None,
                 *, reconnect_s: tuple[float, float] = (1.0, 30.0), keepalive_s: int = 15):
        self.settings = settings
        self.station = station
        self.on_trigger = on_trigger
        self.topics = station_topics(settings.topic_root, station)
        self.keepalive_s = keepalive_s
        self._cond = threading.Condition()
        self._outbox: OrderedDict[int, tuple[str, bytes]] = OrderedDict()  # seq -> (topic, payload)
        self._to_send: deque[int] = deque(maxlen=max(1, settings.buffer))  # this connection's queue
        self._inflight: dict[int, mqtt.MQTTMessageInfo] = {}  # seq -> published, not yet acknowledged
        self._generation = 0  # one per connection: a publish of an older one is not waited for
        self._connected = False
        self._stopping = False
        self._seq = self._sent = self._dropped = 0
        self._last_error: str | None = None
        self._sender = threading.Thread(target=self._send_loop, name="mqtt-sender", daemon=True)
        self._client = self._make_client(reconnect_s)

    def _make_client(self, reconnect_s: tuple[float, float]) -> mqtt.Client:
        client = mqtt.Client(CallbackAPIVersion.VERSION2,
                             client_id=f"inspector-{topic_level(self.station)}-{uuid.uuid4().hex[:8]}",
                             protocol=mqtt.MQTTv311, clean_session=True)
        client.will_set(self.topics["status"], OFFLINE, qos=1, retain=True)
        client.reconnect_delay_set(*reconnect_s)
        client.max_inflight_messages_set(self.WINDOW)
        client.on_connect = self._on_connect
        client.on_connect_fail = self._on_connect_fail
        client.on_disconnect = self._on_disconnect
        client.on_publish = self._on_publish
        client.message_callback_add(self.topics["trigger"], self._on_trigger_message)
        return client

    def _secure(self, client: mqtt.Client) -> None:
        """Credentials (read now, never kept in the settings) and TLS, where configured."""
        if self.settings.username:
            client.username_pw_set(self.settings.username, self.settings.password())
        if self.settings.tls:  # the broker's certificate and host name are checked
            client.tls_set(ca_certs=self.settings.ca_file, certfile=self.settings.cert_file,
                           keyfile=self.settings.key_file)

    @property
    def target(self) -> str:
        return f"{self.settings.host}:{self.settings.port}"

    # ------------------------------------------------------------ lifecycle

    def start(self) -> None:
        """Connect in the background (an unreachable broker is retried, never an error). A
        password or certificate that cannot be read leaves the link stopped, with the reason
        in ``status().last_error``: the station runs on without it."""
        try:
            self._secure(self._client)
        except (InspectorError, OSError, ValueError) as exc:  # ssl.SSLError is an OSError
            with self._cond:
                self._last_error = f"MQTT not started: {short_error(exc)}"
            LOG.error("%s", self._last_error)
            return
        self._client.connect_async(self.settings.host, self.settings.port, keepalive=self.keepalive_s)
        self._client.loop_start()
        self._sender.start()

    def stop(self, flush_s: float = 2.0) -> None:
        """Give the outbox ``flush_s`` seconds to drain, say ``offline`` and disconnect."""
        with self._cond:
            self._cond.wait_for(lambda: not self._outbox or not self._connected, timeout=flush_s)
            self._stopping = True
            connected = self._connected
            self._cond.notify_all()
        if self._sender.is_alive():
            self._sender.join(timeout=5)
        if connected:
            info = self._client.publish(self.topics["status"], OFFLINE, qos=1, retain=True)
            try:
                info.wait_for_publish(timeout=2)
            except (RuntimeError, ValueError):
                LOG.warning("MQTT: could not say 'offline' before disconnecting")
        self._client.disconnect()
        self._client.loop_stop()
        if self._outbox:
            LOG.warning("MQTT: %d verdict event(s) not delivered at stop", len(self._outbox))

    def status(self) -> LinkStatus:
        with self._cond:
            return LinkStatus("MQTT", self.target, self._connected, len(self._outbox), self._sent,
                              self._dropped, self._last_error)

    # ------------------------------------------------------------ the sink

    def remember(self, records: list[VerdictRecord]) -> None:
        """Queue the events for the broker; never blocks (the oldest are dropped when full)."""
        with self._cond:
            first = self._seq + 1
            self._seq += len(records)
        events = [(verdict_topic(self.topics["base"], record.camera, record.tool),
                   json.dumps(verdict_payload(record, self.station, seq)).encode())
                  for seq, record in enumerate(records, start=first)]
        with self._cond:
            for seq, event in enumerate(events, start=first):
                if len(self._outbox) >= max(1, self.settings.buffer):
                    self._outbox.popitem(last=False)
                    self._dropped += 1
                self._outbox[seq] = event
                if self._connected:
                    self._to_send.append(seq)
            self._cond.notify_all()

    def _send_loop(self) -> None:
        while True:
            with self._cond:
                ready = self._cond.wait_for(lambda: self._stopping or (
                    self._connected and self._to_send and len(self._inflight) < self.WINDOW), timeout=0.5)
                if self._stopping:
                    return
                self._settle_acknowledged()
                if not ready:
                    continue
                seq = self._to_send.popleft()
                event, generation = self._outbox.get(seq), self._generation
            if event is None:
                continue  # dropped (buffer full) while waiting
            info = self._client.publish(*event, qos=self.settings.qos)
            with self._cond:
                if generation != self._generation:
                    continue  # a new connection began meanwhile: it publishes the outbox again
                if info.rc != MQTTErrorCode.MQTT_ERR_SUCCESS:
                    self._to_send.appendleft(seq)  # the connection is going down; retried on reconnect
                    self._cond.wait(0.2)
                elif self.settings.qos == 0:
                    self._settle(seq)
                else:
                    self._inflight[seq] = info
                    self._settle_acknowledged()  # its PUBACK may have come before it was noted

    def _settle(self, seq: int) -> None:
        """The broker acknowledged an event: it leaves the outbox. Lock held."""
        self._inflight.pop(seq, None)
        if self._outbox.pop(seq, None) is not None:
            self._sent += 1
        self._cond.notify_all()

    def _settle_acknowledged(self, mid: int | None = None) -> None:
        """Settle the events paho marked as acknowledged, and the one of ``mid``. Lock held."""
        for seq, info in list(self._inflight.items()):
            if info.mid == mid or info.is_published():
                self._settle(seq)

    # ------------------------------------------------------------ paho callbacks (its loop thread)

    def _on_connect(self, client: mqtt.Client, userdata: Any, flags: Any, reason: Any,
                    properties: Any) -> None:
        if reason.is_failure:
            with self._cond:
                self._last_error = f"broker {self.target} refused the connection: {reason}"
            LOG.warning("MQTT: %s", self._last_error)
            return
        client.drop_out_messages()  # the outbox below publishes every unacknowledged event again
        client.publish(self.topics["status"], ONLINE, qos=1, retain=True)
        client.subscribe(self.topics["trigger"], qos=1)
        with self._cond:
            self._generation += 1
            self._inflight.clear()
            self._to_send.clear()
            self._to_send.extend(self._outbox)
            self._connected, self._last_error = True, None
            self._cond.notify_all()
        LOG.info("MQTT: connected to %s, %d event(s) to send", self.target, len(self._to_send))

    def _on_connect_fail(self, client: mqtt.Client, userdata: Any) -> None:
        with self._cond:
            self._last_error = f"cannot reach the broker {self.target}; retrying"

    def _on_disconnect(self, client: mqtt.Client, userdata: Any, flags: Any, reason: Any,
                       properties: Any) -> None:
        with self._cond:
            was_connected, self._connected = self._connected, False
            if was_connected and not self._stopping:  # after a refusal its reason stays shown
                self._last_error = f"disconnected from {self.target} ({reason}); reconnecting"
                LOG.warning("MQTT: %s", self._last_error)
            self._cond.notify_all()

    def _on_publish(self, client: mqtt.Client, userdata: Any, mid: int, reason: Any,
                    properties: Any) -> None:
        with self._cond:
            self._settle_acknowledged(mid)  # MQTT 3.1.1: a PUBACK has no reason code to refuse

    def _on_trigger_message(self, client: mqtt.Client, userdata: Any, message: mqtt.MQTTMessage) -> None:
        if not message.payload.strip():
            return  # someone cleared a retained command
        if message.retain:
            LOG.warning("MQTT: ignored a retained trigger on %s (publish triggers without retain)",
                        message.topic)
            return
        try:
            camera, trigger_id, expected = parse_trigger(message.payload)
        except ValueError as exc:
            with self._cond:
                self._last_error = str(exc)
            LOG.warning("MQTT: %s", exc)
            return
        if self.on_trigger is None:
            return
        try:
            self.on_trigger(camera, trigger_id, expected)
        except Exception:  # noqa: BLE001 - paho's thread must go on
            LOG.exception("MQTT: the trigger handler failed")
