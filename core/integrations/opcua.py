"""The station's OPC UA server: what a PLC or SCADA reads, and the trigger it sets.

The address space (see ``docs/INTEGRATIONS.md``) holds one ``Station`` object with the
station's state (``Online``, ``Ready``, ``Error``, ``Heartbeat``), the trigger handshake
(``Trigger``, ``TriggerAck``, ``ResultValid``, ``InspectionID``, ``TriggerID``, and
``Expected``: the value the PLC sends with the trigger for the reading tools, e.g. the order's
serial), the last inspection's result (``Pass``, ``Verdict``), counters and one object per tool
with its latest verdict (and what a reading tool read: ``Reading``, ``ReadingFormat``). The
handshake is the usual one of vision sensors: the PLC writes ``Expected`` if a reading tool
needs it and sets ``Trigger``; the station takes ``Expected`` (and clears it), sets
``TriggerAck``, clears ``ResultValid`` and ``Ready``, inspects, writes every result and
``InspectionID``, then sets ``ResultValid`` and ``Ready``; the PLC resets ``Trigger`` and the
station resets ``TriggerAck``.

The server runs in its own thread with its own asyncio loop; ``remember`` (the video thread)
only appends to a bounded buffer and wakes the loop. A server that cannot start (port taken)
is retried with back-off and the events meanwhile stay buffered. OPC UA is state, not a log:
a client that was away reads the current values (``Counters`` tell it how many it missed);
the event-by-event channel is MQTT.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections import deque
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime, timezone
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from asyncua import Server, ua
from asyncua.common.callback import CallbackType, ServerItemCallback
from asyncua.crypto.cert_gen import setup_self_signed_certificate
from asyncua.crypto.truststore import TrustStore
from asyncua.crypto.validator import CertificateValidator, CertificateValidatorOptions
from cryptography.x509.oid import ExtendedKeyUsageOID

from core.integrations import LinkStatus, TriggerCallback
from core.records.verdicts import ERROR, FAIL, PASS, TRIGGER, VerdictRecord, expected_value, overall
from core.store.settings import OpcUaSettings
from core.store.tools import STATION, acting_as, announce

LOG = logging.getLogger("shopfloor_inspector.opcua")

V = ua.VariantType
STATION_VARIABLES: dict[str, tuple[Any, ua.VariantType]] = {  # name -> (initial value, type)
    "Name": ("", V.String),
    "Online": (False, V.Boolean),
    "Ready": (False, V.Boolean),
    "Error": ("", V.String),
    "Heartbeat": (0, V.UInt32),
    "Trigger": (False, V.Boolean),  # written by the PLC
    "Expected": ("", V.String),  # written by the PLC before Trigger; taken (and cleared) by it
    "TriggerAck": (False, V.Boolean),
    "TriggerID": ("", V.String),
    "InspectionID": (0, V.UInt32),
    "ResultValid": (False, V.Boolean),
    "Pass": (False, V.Boolean),
    "Verdict": ("", V.String),
    "ResetCounters": (False, V.Boolean),  # written by the PLC
}
COUNTERS = ("Total", "Pass", "Fail", "Error")  # Total = Pass + Fail + Error
TOOL_VARIABLES: dict[str, tuple[Any, ua.VariantType]] = {
    "Pass": (False, V.Boolean),
    "Verdict": ("", V.String),
    "Score": (0.0, V.Double),
    "Threshold": (0.0, V.Double),
    "ClassIndex": (-1, V.Int32),
    "DefectClass": ("", V.String),
    "Classes": ([], V.String),
    "Version": ("", V.String),
    "Camera": ("", V.String),
    "Error": ("", V.String),  # why the tool's verdict is ERROR ("" otherwise)
    "Reading": ("", V.String),  # what a reading tool read ("" when it read nothing, other kinds)
    "ReadingFormat": ("", V.String),  # what it was read as: a symbology ("EAN-13") or "text"
}
WRITABLE = ("Trigger", "Expected", "ResetCounters")


def _client_of(event: ServerItemCallback) -> str:
    """Who wrote, for the audit trail: the client's user name, else its anonymous session."""
    user = getattr(event, "user", None)
    return str(getattr(user, "name", None) or "anonymous")


def node_id(*path: str) -> str:
    """The string identifier of a node, e.g. ``Station.Tools.weld.Pass``."""
    return ".".join(("Station", *path))


@dataclass
class _PendingTrigger:
    """An OPC UA trigger waiting for the results of every tool."""

    trigger_id: str
    waiting: set[str]
    deadline: float  # time.monotonic(): a clock step neither hurries nor delays it
    results: list[VerdictRecord] = field(default_factory=list)


class OpcUaLink:
    """The station's OPC UA server: a verdict sink (``remember``) and a source of triggers.

    ``tools`` maps each running tool to its classes (``ClassIndex`` indexes them); change them
    with ``update_tools``. ``start()`` waits until the server serves (or its first attempt
    failed, then it retries in the background); ``stop()`` ends it. ``report_problem`` shows a
    problem of the station (e.g. a silent camera) in ``Error`` and clears ``Ready``.
    """

    def __init__(self, settings: OpcUaSettings, station: str, tools: Mapping[str, Sequence[str]],
                 on_trigger: TriggerCallback | None = None, *, pki: Path | None = None,
                 result_timeout_s: float = 5.0, heartbeat_s: float = 1.0, buffer: int = 1000,
                 retry_s: tuple[float, float] = (1.0, 30.0)):
        self.settings = settings
        self.pki = pki  # own/ and trusted/ certificates (StationSettings.opcua_pki)
        self.station = station
        self.on_trigger = on_trigger
        self.result_timeout_s = result_timeout_s
        self.heartbeat_s = heartbeat_s
        self.retry_s = retry_s
        self._tools = {name: tuple(classes) for name, classes in tools.items()}
        self._lock = threading.Lock()
        self._buffer: deque[list[VerdictRecord]] = deque(maxlen=max(1, buffer))
        self._dropped = self._sent = 0
        self._wake: asyncio.Event | None = None
        self._stop: asyncio.Event | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._started = threading.Event()
        self._server: Server | None = None
        self._published: dict[str, tuple[str, ...]] = {}  # the tools that have nodes, their classes
        self._ns = 0
        self._serving = False
        self._last_error: str | None = None
        self._problem = ""
        # handshake state, touched only on the loop
        self._pending: _PendingTrigger | None = None
        self._expired: str | None = None  # a trigger given up on: its late results count no more
        self._trigger_high = False
        self._triggers = self._inspection_id = self._beat = 0
        self._counts = dict.fromkeys(COUNTERS, 0)

    # ------------------------------------------------------------ lifecycle (any thread)

    def start(self, wait_s: float = 15.0) -> bool:
        """Start serving in a thread of its own; True once it serves (False: retrying)."""
        self._thread = threading.Thread(target=asyncio.run, args=(self._main(),), name="opcua", daemon=True)
        self._thread.start()
        self._started.wait(wait_s)
        return self._serving

    def stop(self) -> None:
        if self._loop is not None and self._stop is not None:
            self._loop.call_soon_threadsafe(self._stop.set)
        if self._thread is not None:
            self._thread.join(timeout=15)

    def status(self) -> LinkStatus:
        with self._lock:
            buffered = sum(len(records) for records in self._buffer)
            server = self._server
            clients = len(server.bserver.clients) if self._serving and server and server.bserver else 0
            return LinkStatus("OPC UA", self.settings.endpoint, self._serving, buffered, self._sent,
                              self._dropped, self._last_error, clients)

    def update_tools(self, tools: Mapping[str, Sequence[str]]) -> None:
        """The running tools changed: their nodes follow (added, removed, classes updated)."""
        with self._lock:
            self._tools = {name: tuple(classes) for name, classes in tools.items()}
        self._call_soon(self._sync_tools)

    def report_problem(self, message: str | None) -> None:
        """A station problem for ``Error`` (None clears it); ``Ready`` is False while there is one."""
        self._problem = message or ""
        self._call_soon(self._show_problem)

    def remember(self, records: list[VerdictRecord]) -> None:
        """Hand events to the server's loop; never blocks (oldest dropped when the buffer is full)."""
        slim = [replace(r, frame=None) for r in records]  # the PLC gets no images
        with self._lock:
            if len(self._buffer) == self._buffer.maxlen:
                self._dropped += len(self._buffer[0])
            self._buffer.append(slim)
            loop, wake = self._loop, self._wake
        if loop is not None and wake is not None:
            try:
                loop.call_soon_threadsafe(wake.set)
            except RuntimeError:
                pass  # the loop just ended: the events stay buffered

    def _call_soon(self, coroutine_function: Any) -> None:
        loop = self._loop
        if loop is not None and self._serving:
            try:
                asyncio.run_coroutine_threadsafe(coroutine_function(), loop)
            except RuntimeError:
                pass  # the loop just ended; the next start builds from the current state

    # ------------------------------------------------------------ the server's loop

    @property
    def application_uri(self) -> str:
        return f"urn:shopfloor-inspector:{self.station}"

    async def _secure(self, server: Server) -> None:
        """Basic256Sha256 Sign & Encrypt only, with the server's own certificate (made at the
        first start, valid one year, renewed when it expires) and only for clients whose
        certificate is in ``trusted/`` (read at each start of the server)."""
        if self.pki is None:
            raise ValueError("an encrypted OPC UA server needs its certificate folder (pki)")
        own, trusted = self.pki / "own", self.pki / "trusted"
        for folder in (own, trusted):
            folder.mkdir(parents=True, exist_ok=True)
        key, cert = own / "key.pem", own / "cert.der"
        host = urlparse(self.settings.endpoint).hostname or "localhost"
        await setup_self_signed_certificate(
            key, cert, self.application_uri, host, [ExtendedKeyUsageOID.SERVER_AUTH],
            {"commonName": f"Shopfloor Inspector {self.station}", "organizationName": "Shopfloor Inspector"})
        key.chmod(0o600)
        server.set_security_policy([ua.SecurityPolicyType.Basic256Sha256_SignAndEncrypt])
        await server.load_certificate(str(cert))
        await server.load_private_key(str(key))
        trust = TrustStore([trusted], [])
        await trust.load()
        server.set_certificate_validator(CertificateValidator(
            CertificateValidatorOptions.TRUSTED_VALIDATION | CertificateValidatorOptions.PEER_CLIENT,
            trust_store=trust))

    async def _main(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._wake, self._stop = asyncio.Event(), asyncio.Event()
        delay = self.retry_s[0]
        while not self._stop.is_set():
            try:
                await self._serve()
            except Exception as exc:  # noqa: BLE001 - log, retry, never take the station down
                with self._lock:
                    self._serving = False
                    self._last_error = f"OPC UA server on {self.settings.endpoint} failed: {exc}"
                LOG.warning("%s; retrying in %.0f s", self._last_error, delay)
                self._started.set()
                try:
                    await asyncio.wait_for(self._stop.wait(), delay)
                except asyncio.TimeoutError:
                    pass
                delay = min(delay * 2, self.retry_s[1])
        self._loop = None

    async def _serve(self) -> None:
        server = Server()
        await server.init()
        server.set_endpoint(self.settings.endpoint)
        server.set_server_name(f"Shopfloor Inspector {self.station}")
        await server.set_application_uri(self.application_uri)
        if self.settings.security == "none":
            server.set_security_policy([ua.SecurityPolicyType.NoSecurity])
        else:
            await self._secure(server)
        # asyncua's default users make any client that logs in as 'admin', whatever its password,
        # an administrator who may write every node and add or delete nodes: a forged PASS could
        # reach the PLC. Every client is a plain user: only the WRITABLE inputs take writes.
        server.allow_remote_admin(False)
        self._ns = await server.register_namespace(self.settings.namespace)
        station = await server.nodes.objects.add_object(self._id(), "Station")
        for name, (value, kind) in STATION_VARIABLES.items():
            variable = await station.add_variable(self._id(name), name, ua.Variant(value, kind))
            if name in WRITABLE:
                await variable.set_writable()
        counters = await station.add_object(self._id("Counters"), "Counters")
        for name in COUNTERS:
            await counters.add_variable(self._id("Counters", name), name, ua.Variant(0, V.UInt32))
        await station.add_folder(self._id("Tools"), "Tools")
        server.subscribe_server_callback(CallbackType.PostWrite, self._on_write)
        self._server, self._published = server, {}
        await self._sync_tools()
        await server.start()
        try:
            with self._lock:
                self._serving, self._last_error = True, None
            await self._write("Name", self.station)
            await self._write("Online", True)
            await self._write_counters()
            await self._show_problem()
            LOG.info("OPC UA server serving on %s", self.settings.endpoint)
            self._started.set()
            await self._run()
        finally:
            with self._lock:
                self._serving = False
            await server.stop()

    async def _run(self) -> None:
        """Apply buffered events as they come; tick the heartbeat and the trigger timeout."""
        assert self._wake is not None and self._stop is not None
        next_beat = time.monotonic()
        while not self._stop.is_set():
            await self._drain()
            now = time.monotonic()
            if now >= next_beat:
                self._beat += 1
                await self._write("Heartbeat", self._beat % 2**32)
                next_beat = now + self.heartbeat_s
            if self._pending is not None and time.monotonic() > self._pending.deadline:
                await self._give_up()
            try:
                await asyncio.wait_for(self._wake.wait(), max(0.01, min(next_beat - now, 0.2)))
            except asyncio.TimeoutError:
                pass
            self._wake.clear()
        await self._drain()
        await self._write("Online", False)
        await self._write("Ready", False)

    def _id(self, *path: str) -> ua.NodeId:
        return ua.NodeId(node_id(*path), self._ns)

    async def _write(self, name: str, value: Any, *tool: str) -> None:
        """Write a station variable (``*tool``: a tool's) as the server, no client write involved."""
        kind = (TOOL_VARIABLES if tool else STATION_VARIABLES)[name][1]
        path = ("Tools", tool[0], name) if tool else (name,)
        assert self._server is not None
        now = datetime.now(timezone.utc)
        await self._server.write_attribute_value(
            self._id(*path), ua.DataValue(ua.Variant(value, kind), SourceTimestamp=now, ServerTimestamp=now))

    def _read(self, name: str) -> Any:
        """A station variable's value (one a client writes)."""
        assert self._server is not None
        return self._server.read_attribute_value(self._id(name)).Value.Value

    async def _write_counters(self) -> None:
        assert self._server is not None
        for name in COUNTERS:
            await self._server.write_attribute_value(
                self._id("Counters", name), ua.DataValue(ua.Variant(self._counts[name], V.UInt32)))

    def _ready(self) -> bool:
        return self._serving and bool(self._published) and self._pending is None and not self._problem

    async def _show_problem(self) -> None:
        await self._write("Error", self._problem)
        await self._write("Ready", self._ready())

    async def _sync_tools(self) -> None:
        """Nodes for every tool in ``self._tools``, none for the others."""
        assert self._server is not None
        folder = self._server.get_node(self._id("Tools"))
        present = {(await child.read_browse_name()).Name: child for child in await folder.get_children()}
        with self._lock:
            tools = dict(self._tools)
        for name, node in present.items():
            if name not in tools:
                self._published.pop(name, None)
                await self._server.delete_nodes([node], recursive=True)
        for name, classes in tools.items():
            if name not in present:
                tool = await folder.add_object(self._id("Tools", name), name)
                for variable, (value, kind) in TOOL_VARIABLES.items():
                    await tool.add_variable(self._id("Tools", name, variable), variable,
                                            ua.Variant(value, kind))
            await self._write("Classes", list(classes), name)
            self._published[name] = classes
        if self._serving:
            await self._write("Ready", self._ready())

    # ------------------------------------------------------------ results

    async def _drain(self) -> None:
        while True:
            with self._lock:
                if not self._buffer:
                    return
                records = self._buffer.popleft()
            try:
                await self._apply(records)
            except Exception:  # noqa: BLE001 - one bad event must not stop the server
                LOG.exception("OPC UA: could not write a verdict event")
            with self._lock:
                self._sent += len(records)

    async def _apply(self, records: list[VerdictRecord]) -> None:
        for record in records:
            if record.tool in self._published:
                await self._write_tool(record)
        triggered = [r for r in records if r.cause == TRIGGER]
        if not triggered:
            return  # continuous mode: the tools' nodes follow the verdicts, there are no parts
        trigger_id = triggered[0].trigger_id
        pending = self._pending
        if pending is not None and trigger_id == pending.trigger_id:
            pending.results += triggered
            pending.waiting -= {r.tool for r in triggered}
            if not pending.waiting:
                self._pending = None
                await self._complete(pending.results, trigger_id, handshake=True)
        elif trigger_id is None or trigger_id != self._expired:
            await self._complete(triggered, trigger_id, handshake=pending is None)

    async def _write_tool(self, record: VerdictRecord) -> None:
        classes = self._published[record.tool]
        shown = record.defect_class if record.verdict == FAIL and record.defect_class else "good"
        values = {"Pass": record.verdict == PASS, "Verdict": record.verdict,
                  "Score": float("nan") if record.score is None else float(record.score),
                  "Threshold": float(record.threshold),
                  "ClassIndex": classes.index(shown) if shown in classes and record.verdict != ERROR else -1,
                  "DefectClass": record.defect_class if record.verdict == FAIL else "",
                  "Version": record.version, "Camera": record.camera, "Error": record.error,
                  "Reading": record.reading.text if record.reading else "",
                  "ReadingFormat": record.reading.format if record.reading else ""}
        for name, value in values.items():
            await self._write(name, value if value is not None else "", record.tool)

    async def _complete(self, results: list[VerdictRecord], trigger_id: str | None, handshake: bool,
                        complete: bool = True) -> None:
        """One inspection is done: its result, then (when the PLC waits for it) ResultValid.

        An ERROR (a tool could not judge the part) is no valid result: ``ResultValid`` stays
        False, ``Ready`` comes back and ``Error`` says which tool failed and why."""
        verdict = overall([r.verdict for r in results]) if complete and results else FAIL
        self._inspection_id += 1
        self._counts["Total"] += 1
        self._counts[verdict.capitalize()] += 1
        await self._write("Pass", verdict == PASS)
        await self._write("Verdict", verdict)
        await self._write("TriggerID", trigger_id or "")
        await self._write("InspectionID", self._inspection_id % 2**32)
        await self._write_counters()
        if verdict == ERROR:
            await self._write("Error", "; ".join(f"tool {r.tool}: {r.error}" for r in results
                                                 if r.verdict == ERROR))
        if handshake:
            await self._write("ResultValid", verdict != ERROR)
            await self._write("Ready", self._ready())

    async def _give_up(self) -> None:
        """The pending trigger's results did not all come in time: a FAIL, with the reason."""
        pending, self._pending = self._pending, None
        assert pending is not None
        self._expired = pending.trigger_id
        message = (f"no result from tool(s) {sorted(pending.waiting)} within {self.result_timeout_s:.0f} s "
                   f"of trigger {pending.trigger_id}: check the camera")
        LOG.warning("OPC UA: %s", message)
        await self._write("Error", message)
        await self._complete(pending.results, pending.trigger_id, handshake=True, complete=False)

    # ------------------------------------------------------------ writes by clients

    async def _on_write(self, event: ServerItemCallback, dispatcher: Any) -> None:
        if not event.is_external:
            return
        for request, status in zip(event.request_params.NodesToWrite, event.response_params):
            if not status.is_good() or request.AttributeId != ua.AttributeIds.Value:
                continue
            value = bool(request.Value.Value.Value)
            if request.NodeId == self._id("Trigger"):
                await self._trigger_written(value)
            elif request.NodeId == self._id("ResetCounters") and value:
                with acting_as(f"opcua:{_client_of(event)}"):  # audited like any other change
                    announce(STATION, "counters reset", counters=dict(self._counts))
                self._counts = dict.fromkeys(COUNTERS, 0)
                await self._write_counters()
                await self._write("ResetCounters", False)

    async def _trigger_written(self, value: bool) -> None:
        rising, falling = value and not self._trigger_high, not value and self._trigger_high
        self._trigger_high = value
        if falling:
            await self._write("TriggerAck", False)
        if not rising:
            return
        if not self._ready():
            reason = self._problem or ("the previous trigger is still being inspected" if self._pending
                                       else "no tool is running")
            await self._write("Error", f"trigger ignored, station not ready: {reason}")
            return
        try:
            expected = expected_value(self._read("Expected"))
        except ValueError as exc:
            await self._write("Error", f"trigger ignored: {exc}")
            return
        await self._write("Expected", "")  # taken: the next part's serial is the PLC's to write
        self._triggers += 1
        trigger_id = f"opcua-{self._triggers}"
        self._pending = _PendingTrigger(trigger_id, set(self._published),
                                        time.monotonic() + self.result_timeout_s)
        await self._write("ResultValid", False)
        await self._write("Ready", False)
        await self._write("Error", self._problem)
        await self._write("TriggerAck", True)
        if self.on_trigger is not None:
            try:
                self.on_trigger(None, trigger_id, expected)
            except Exception:  # noqa: BLE001 - the server must go on
                LOG.exception("OPC UA: the trigger handler failed")
