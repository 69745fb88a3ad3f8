"""What the station opens to the network: on its defaults the README's start command listens on
this PC only (loopback), never on every interface; on the LAN only over HTTPS (a certificate
made by ``inspector cert``; a station exposed without it refusing its pages is
tests/browser/test_exposure_browser.py)."""

from __future__ import annotations

import os
import ssl
import subprocess
import sys
import urllib.request
from pathlib import Path
from urllib.parse import urlparse

import pytest

from core.security.https import exposure_problem
from tests.browser.helpers import APP, streamlit_server

LISTEN = "0A"  # the TCP state of a listening socket in /proc/net/tcp*


def listening_addresses(port: int) -> set[str]:
    """The local addresses (hex, as the kernel writes them) listening on ``port``."""
    found = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for row in Path(table).read_text().splitlines()[1:]:
            local, state = row.split()[1], row.split()[3]
            address, hex_port = local.rsplit(":", 1)
            if state == LISTEN and int(hex_port, 16) == port:
                found.add(address)
    return found


def test_the_app_listens_on_loopback_only(tmp_path):
    with streamlit_server(tmp_path, tmp_path / "streamlit.log") as url:
        addresses = listening_addresses(urlparse(url).port)
    loopback = {"0100007F", "00000000000000000000000001000000"}  # 127.0.0.1, ::1
    assert addresses and addresses <= loopback, f"listening on {addresses}, not only on loopback"


def test_the_lan_is_served_over_https_only_with_a_certificate_made_by_the_cli(tmp_path):
    made = subprocess.run([sys.executable, "-m", "core", "cert", "--out", str(tmp_path / "https"),
                           "--host", "127.0.0.1"], cwd=APP, capture_output=True, text=True,
                          env={**os.environ, "INSPECTOR_HOME": str(tmp_path)})
    assert made.returncode == 0, made.stderr
    cert, key = tmp_path / "https" / "cert.pem", tmp_path / "https" / "key.pem"
    assert key.stat().st_mode & 0o077 == 0 and "--server.sslCertFile" in made.stdout
    with streamlit_server(tmp_path, tmp_path / "streamlit.log", https=(cert, key)) as url:
        trusted = ssl.create_default_context(cafile=str(cert))
        with urllib.request.urlopen(f"{url}/_stcore/health", context=trusted, timeout=5) as reply:
            assert reply.read() == b"ok"  # the certificate checks out for 127.0.0.1
        with pytest.raises(OSError):  # no plain HTTP on the same port
            urllib.request.urlopen(url.replace("https://", "http://") + "/_stcore/health", timeout=5)


def test_what_a_lan_station_lacks_is_said_in_one_line():
    def users(answer: bool):
        return lambda: answer

    assert exposure_problem("127.0.0.1", None, users(False)) is None
    assert "without HTTPS" in exposure_problem("0.0.0.0", None, users(True))
    assert "without HTTPS" in exposure_problem("", None, users(True))  # every interface
    assert "no user yet" in exposure_problem("192.168.1.20", "/etc/cert.pem", users(False))
    assert exposure_problem("192.168.1.20", "/etc/cert.pem", users(True)) is None
