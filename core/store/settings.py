"""The station's own settings: its name, where its history goes, who gets in, and its line
integrations.

They live in ``station.json`` in the workspace, beside the tools, so a station is configured by
one readable file. ``INSPECTOR_HISTORY_URL`` overrides the history database (the one setting a
plant changes to make several stations write to one PostgreSQL server).
"""

from __future__ import annotations

import json
import os
import re
import socket
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path
from typing import Any

from core.errors import InspectorError
from core.security.access import ADMINISTER, require
from core.security.secrets import read_secret
from core.store.workspace import atomic_write_json, workspace_root

SETTINGS_FILE = "station.json"
_STATION_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
HISTORY_URL_ENV = "INSPECTOR_HISTORY_URL"
MQTT_PASSWORD_ENV = "INSPECTOR_MQTT_PASSWORD"
OPCUA_SECURITY = ("sign-and-encrypt", "none")


def default_station_name() -> str:
    """The computer's name, made a valid station name."""
    return re.sub(r"[^A-Za-z0-9_.-]", "-", socket.gethostname()).strip("-._")[:64] or "station"


@dataclass(frozen=True)
class MqttSettings:
    """Publishing verdicts to an MQTT broker and taking trigger commands from it."""

    enabled: bool = False
    host: str = "localhost"
    port: int = 1883
    topic_root: str = "shopfloor-inspector"  # topics: <root>/<station>/...
    username: str | None = None
    password_file: str | None = None  # owner-only file with the password (or $INSPECTOR_MQTT_PASSWORD)
    tls: bool = False  # TLS to the broker (port 8883 by convention), its certificate checked
    ca_file: str | None = None  # the CA that signed the broker's certificate (None: the system's)
    cert_file: str | None = None  # a client certificate, where the broker asks for one
    key_file: str | None = None  # its private key (an owner-only file)
    qos: int = 1
    buffer: int = 10_000  # events kept while the broker is unreachable (oldest dropped first)

    def password(self) -> str | None:
        """The broker password, read now from the environment or the password file."""
        return read_secret(MQTT_PASSWORD_ENV, self.password_file, "MQTT password")


@dataclass(frozen=True)
class OpcUaSettings:
    """The station's OPC UA server, for PLCs and SCADA."""

    enabled: bool = False
    endpoint: str = "opc.tcp://127.0.0.1:4840/shopfloor-inspector/"
    namespace: str = "urn:shopfloor-inspector"
    # sign-and-encrypt: Basic256Sha256, the server's certificate made at first start, only
    # clients whose certificates are in the trusted folder; none: open (a closed cell network)
    security: str = "sign-and-encrypt"
    pki_dir: str | None = None  # certificates: None = <workspace>/pki/opcua


@dataclass(frozen=True)
class StationSettings:
    name: str = field(default_factory=default_station_name)
    history_url: str | None = None  # any SQLAlchemy URL; None = SQLite in the workspace
    heartbeat_s: float = 60.0  # continuous mode: one event per tool at least this often
    keep_fail_images: bool = False  # store the ROI image of every FAIL with its event
    fail_image_max_kb: int = 200
    fail_image_days: int = 30  # FAIL images older than this are deleted (rows are kept)
    session_timeout_min: float = 15.0  # a browser idle this long logs out (core.security.users)
    kiosk_operator_view: bool = False  # Live inspection without a login, as operator 'kiosk'
    mqtt: MqttSettings = MqttSettings()
    opcua: OpcUaSettings = OpcUaSettings()

    def __post_init__(self) -> None:
        if not _STATION_NAME.match(self.name):
            raise InspectorError(f"station name '{self.name}' is not allowed: use 1-64 letters, "
                                 "digits, '_', '-' or '.' (e.g. line-3-weld)")
        if self.history_url is not None and "://" not in self.history_url:
            raise InspectorError(f"history database '{self.history_url}' is not a database URL: "
                                 "e.g. postgresql+psycopg://user:password@host/database, or "
                                 "nothing for SQLite in the workspace")
        if (not self.heartbeat_s > 0 or self.fail_image_max_kb < 1 or self.fail_image_days < 1
                or not self.session_timeout_min > 0):
            raise InspectorError("heartbeat, FAIL image size cap, retention and session timeout "
                                 "must be positive")
        if not 0 < self.mqtt.port < 65536 or any(c in self.mqtt.topic_root for c in "#+"):
            raise InspectorError("MQTT: the port must be 1-65535 and the topic root may not "
                                 "contain '#' or '+'")
        if self.opcua.security not in OPCUA_SECURITY:
            raise InspectorError(f"OPC UA security '{self.opcua.security}' is not one of "
                                 f"{', '.join(OPCUA_SECURITY)}")
        if not self.opcua.endpoint.startswith("opc.tcp://"):
            raise InspectorError(f"OPC UA endpoint '{self.opcua.endpoint}' must start with "
                                 "opc.tcp:// (e.g. opc.tcp://127.0.0.1:4840/shopfloor-inspector/)")

    def opcua_pki(self, root: Path | None = None) -> Path:
        """The OPC UA server's certificate folder: ``own/`` (its certificate and key) and
        ``trusted/`` (the certificates of the clients it serves)."""
        if self.opcua.pki_dir:
            return Path(self.opcua.pki_dir).expanduser()
        return (root or workspace_root()) / "pki" / "opcua"

    def database_url(self, root: Path | None = None) -> str:
        """The history database: the environment override, the setting, or the workspace's SQLite."""
        url = os.environ.get(HISTORY_URL_ENV) or self.history_url
        return url or f"sqlite:///{(root or workspace_root()) / 'history.sqlite'}"

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> StationSettings:
        def build(kind: type, values: dict[str, Any], where: str) -> Any:
            known = {f.name for f in fields(kind)}
            unknown = set(values) - known
            if unknown:
                raise InspectorError(f"{SETTINGS_FILE}: unknown setting(s) {', '.join(sorted(unknown))} "
                                     f"in {where}; known: {', '.join(sorted(known))}")
            return kind(**values)

        data = dict(data)
        if "password" in data.get("mqtt", {}):
            raise InspectorError(f"{SETTINGS_FILE}: mqtt.password is no longer read from this file "
                                 "(anyone who can read the workspace would see it): put the password "
                                 "in a file only the station's user can read (chmod 600) and set "
                                 f"mqtt.password_file, or set {MQTT_PASSWORD_ENV}; then remove "
                                 "mqtt.password")
        mqtt = build(MqttSettings, data.pop("mqtt", {}), "mqtt")
        opcua = build(OpcUaSettings, data.pop("opcua", {}), "opcua")
        return replace(build(cls, data, "the station"), mqtt=mqtt, opcua=opcua)


def load_settings(root: Path | None = None) -> StationSettings:
    """The station's settings, defaults when it has no ``station.json`` yet."""
    path = (root or workspace_root()) / SETTINGS_FILE
    if not path.is_file():
        return StationSettings()
    try:
        return StationSettings.from_json(json.loads(path.read_text()))
    except (json.JSONDecodeError, TypeError) as exc:
        raise InspectorError(f"{path} is not a valid station settings file ({exc}): fix it or "
                             "delete it to go back to the defaults") from exc


def save_settings(settings: StationSettings, root: Path | None = None) -> None:
    require(ADMINISTER)
    atomic_write_json((root or workspace_root()) / SETTINGS_FILE, settings.to_json())
