"""What the station opens to the network on its defaults: the README's start command listens on
this PC only (loopback), never on every interface."""

from __future__ import annotations

from pathlib import Path
from urllib.parse import urlparse

from tests.browser.helpers import streamlit_server

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
