"""Real servers for the tests, on loopback and free ports: a Mosquitto broker that a test can
kill, freeze and restart, a PostgreSQL server that a test can stop and start, and helpers to
wait for things to happen."""

from __future__ import annotations

import os
import pwd
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest

MOSQUITTO = Path("/usr/sbin/mosquitto")
PG_BIN = next(iter(sorted(Path("/usr/lib/postgresql").glob("*/bin"), reverse=True)), None)


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def wait_until(condition: Callable[[], object], timeout: float = 10.0, what: str = "the condition") -> None:
    end = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > end:
            raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(0.02)


def port_open(port: int) -> bool:
    with socket.socket() as probe:
        probe.settimeout(0.2)
        return probe.connect_ex(("127.0.0.1", port)) == 0


class Mosquitto:
    """A Mosquitto broker on 127.0.0.1; its database (sessions, retained and queued messages)
    is saved every second in ``directory``, so a broker killed and restarted keeps them. With
    ``users`` it takes only those user names and passwords, and with ``tls`` only TLS (its
    certificate: ``self_signed_certificate``)."""

    def __init__(self, directory: Path, port: int | None = None, users: dict[str, str] | None = None,
                 tls: tuple[Path, Path] | None = None):
        if not MOSQUITTO.is_file():
            pytest.fail(f"Mosquitto is missing ({MOSQUITTO}): run ./scripts/setup.sh --test")
        self.port = port or free_port()
        self.host = "127.0.0.1"
        self.directory = directory
        directory.mkdir(parents=True, exist_ok=True)
        self.config = directory / "mosquitto.conf"
        access = ["allow_anonymous true"]
        if users:
            passwords = directory / "passwords"
            for number, (user, password) in enumerate(users.items()):
                subprocess.run(["mosquitto_passwd", "-b", *(["-c"] if number == 0 else []),
                                str(passwords), user, password], check=True, capture_output=True)
            access = ["allow_anonymous false", f"password_file {passwords}"]
        if tls:
            access += [f"certfile {tls[0]}", f"keyfile {tls[1]}"]
        self.config.write_text("\n".join([
            f"listener {self.port} 127.0.0.1",
            *access,
            f"user {pwd.getpwuid(os.getuid()).pw_name}",  # as root it would become 'mosquitto'
            "persistence true",
            f"persistence_location {directory}/",
            "autosave_interval 1",
            "max_queued_messages 100000",
            "log_dest stderr",
            "",
        ]))
        self.process: subprocess.Popen | None = None

    def start(self) -> Mosquitto:
        with open(self.directory / "mosquitto.log", "ab") as output:
            self.process = subprocess.Popen([str(MOSQUITTO), "-c", str(self.config)],
                                            stdout=output, stderr=output)
        end = time.monotonic() + 10
        while not port_open(self.port):
            if self.process.poll() is not None or time.monotonic() > end:
                self.kill()
                raise AssertionError(f"Mosquitto did not start on port {self.port}: "
                                     f"{self.log()[-2000:]}")
            time.sleep(0.05)
        return self

    def kill(self) -> None:
        """Die at once, as a crashed or unplugged broker would (nothing saved at exit)."""
        if self.process and self.process.poll() is None:
            os.kill(self.process.pid, signal.SIGKILL)
            self.process.wait(timeout=10)

    def freeze(self) -> None:
        """Stop answering without closing connections (published messages get no PUBACK)."""
        assert self.process is not None
        os.kill(self.process.pid, signal.SIGSTOP)

    def stop(self) -> None:
        if self.process and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.kill()

    def log(self) -> str:
        path = self.directory / "mosquitto.log"
        return path.read_text(errors="replace") if path.is_file() else ""


class MqttSubscriber:
    """A paho client on a broker that keeps every message it receives (topic, payload, retain).

    ``client_id`` with ``persistent=True`` makes a persistent session (QoS 1 messages published
    while it is away are queued for it by the broker); it reconnects by itself."""

    def __init__(self, broker: Mosquitto, topic: str, client_id: str | None = None,
                 persistent: bool = False, user: tuple[str, str] | None = None,
                 ca_file: Path | None = None):
        import paho.mqtt.client as mqtt
        from paho.mqtt.enums import CallbackAPIVersion

        self.messages: list[tuple[str, bytes, bool]] = []
        self.subscribed = False
        self._lock = threading.Lock()
        self.client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=client_id or "",
                                  clean_session=not persistent)
        self.client.reconnect_delay_set(0.2, 1)
        self.client.on_connect = lambda client, *_: client.subscribe(topic, qos=1)
        self.client.on_subscribe = lambda *_: setattr(self, "subscribed", True)
        self.client.on_message = self._keep
        if user:
            self.client.username_pw_set(*user)
        if ca_file:
            self.client.tls_set(ca_certs=str(ca_file))
        self.client.connect(broker.host, broker.port, keepalive=5)
        self.client.loop_start()
        wait_until(lambda: self.subscribed, what=f"a subscription to {topic}")

    def _keep(self, client, userdata, message) -> None:
        with self._lock:
            self.messages.append((message.topic, bytes(message.payload), bool(message.retain)))

    def payloads(self, suffix: str = "") -> list[bytes]:
        with self._lock:
            return [payload for topic, payload, _ in self.messages if topic.endswith(suffix)]

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


class Postgres:
    """A throw-away PostgreSQL server on a free loopback port with an empty database 'history';
    ``stop`` and ``start`` again keep its data (a database server going away and coming back)."""

    def __init__(self) -> None:
        if PG_BIN is None or not (PG_BIN / "initdb").exists():
            pytest.fail("PostgreSQL server binaries are missing (/usr/lib/postgresql/*/bin): run "
                        "./scripts/setup.sh --test")
        import tempfile

        self.root = Path(tempfile.mkdtemp(prefix="inspector-pg-"))
        if os.geteuid() == 0:
            os.chown(self.root, pwd.getpwnam("postgres").pw_uid, pwd.getpwnam("postgres").pw_gid)
        self.data, self.port = self.root / "data", free_port()
        self.url = f"postgresql+psycopg://postgres@127.0.0.1:{self.port}/history"
        self._run("initdb", "-D", str(self.data), "-A", "trust", "-U", "postgres", "--no-sync")
        self.start()
        self._run("createdb", "-h", "127.0.0.1", "-p", str(self.port), "-U", "postgres", "history")

    def _run(self, program: str, *args: str, check: bool = True) -> None:
        command = [str(PG_BIN / program), *args]
        if os.geteuid() == 0:
            command = ["runuser", "-u", "postgres", "--", *command]
        subprocess.run(command, check=check, capture_output=True)

    def start(self) -> Postgres:
        options = f"-p {self.port} -k {self.root} -c listen_addresses=127.0.0.1 -c fsync=off"
        self._run("pg_ctl", "-D", str(self.data), "-o", options, "-l", str(self.root / "log"), "-w",
                  "start")
        return self

    def stop(self) -> None:
        self._run("pg_ctl", "-D", str(self.data), "-m", "fast", "stop", check=False)

    def remove(self) -> None:
        import shutil

        self.stop()
        shutil.rmtree(self.root, ignore_errors=True)


def self_signed_certificate(directory: Path, host: str = "127.0.0.1") -> tuple[Path, Path]:
    """A self-signed certificate for ``host`` (an IP address) and its key, made by OpenSSL:
    a server's certificate and, given to its clients, the CA they check it with."""
    cert, key = directory / "server-cert.pem", directory / "server-key.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
                    "-keyout", str(key), "-out", str(cert), "-subj", f"/CN={host}",
                    "-addext", f"subjectAltName=IP:{host}"], check=True, capture_output=True)
    return cert, key


def opcua_client_certificate(directory: Path, name: str = "plc") -> tuple[Path, Path, str]:
    """An OPC UA client application's certificate (DER), key (PEM) and application URI, as a
    PLC or SCADA would present; copy the certificate into a server's trusted folder to trust it."""
    from asyncua.crypto.cert_gen import (
        dump_private_key_as_pem,
        generate_private_key,
        generate_self_signed_app_certificate,
    )
    from cryptography import x509
    from cryptography.hazmat.primitives.serialization import Encoding
    from cryptography.x509.oid import ExtendedKeyUsageOID

    uri = f"urn:test:{name}"
    key = generate_private_key()
    cert = generate_self_signed_app_certificate(
        key, name, {"organizationName": "test"},
        [x509.UniformResourceIdentifier(uri), x509.DNSName("localhost")],
        extended=[ExtendedKeyUsageOID.CLIENT_AUTH], days=2)
    directory.mkdir(parents=True, exist_ok=True)
    cert_path, key_path = directory / f"{name}.der", directory / f"{name}.pem"
    cert_path.write_bytes(cert.public_bytes(Encoding.DER))
    key_path.write_bytes(dump_private_key_as_pem(key))
    return cert_path, key_path, uri
