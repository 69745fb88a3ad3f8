"""Line integration: the station tells the machines around it what it decided, and takes
triggers from them.

``mqtt.MqttLink`` publishes every verdict event to a broker (at least once, buffered while the
broker is away) and takes trigger commands from it; ``opcua.OpcUaLink`` runs an OPC UA server
whose nodes a PLC reads and whose ``Trigger`` it sets, with the usual vision-sensor handshake.
Both are verdict sinks (``remember(records)``, called on the video thread, never blocking) and
hand triggers to an ``on_trigger(camera, trigger_id, expected)`` callback (camera None = every
camera; ``expected``: the value the line sent for the part, e.g. the order's serial, that a
reading tool compares what it reads with, already checked by ``core.records.verdicts.expected_value``).
The topic tree, the node tree and the handshake are described in ``docs/INTEGRATIONS.md``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

# (camera or None for all, trigger id, expected value or None)
TriggerCallback = Callable[[str | None, str | None, str | None], None]


@dataclass(frozen=True)
class LinkStatus:
    """What an operator needs to know about one integration, for the Live inspection page."""

    name: str  # "MQTT" or "OPC UA"
    target: str  # the broker (host:port) or the server's endpoint
    connected: bool  # MQTT: connected to the broker; OPC UA: the server is serving
    buffered: int  # events waiting to be delivered
    sent: int  # events delivered (MQTT: acknowledged by the broker; OPC UA: written to the nodes)
    dropped: int  # events dropped because the buffer was full (oldest first)
    last_error: str | None  # the latest problem, None when there was none
    peers: int | None = None  # OPC UA: clients connected now (MQTT: None, the broker knows)

    def summary(self) -> str:
        """One line for the operator."""
        state = "connected" if self.connected else "NOT connected"
        line = f"{self.name} {self.target}: {state}, {self.sent} sent, {self.buffered} waiting"
        if self.peers is not None:
            line += f", {self.peers} client(s)"
        if self.dropped:
            line += f", {self.dropped} dropped"
        if self.last_error and not self.connected:
            line += f" ({self.last_error})"
        return line
