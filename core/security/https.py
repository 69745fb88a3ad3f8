"""The station on the plant's network: only over HTTPS and only with logins.

The app listens on this PC only (``server.address`` = 127.0.0.1). A station that serves the LAN
must encrypt (a self-signed certificate made here, or the plant's own, given to Streamlit's
``server.sslCertFile`` and ``server.sslKeyFile``) and must have users: ``exposure_problem`` says
what is missing, and the pages refuse to serve until it is fixed.
"""

from __future__ import annotations

import datetime
import ipaddress
import os
import socket
from collections.abc import Callable
from pathlib import Path

LOOPBACK = ("127.0.0.1", "::1", "localhost")
CERT_FILE, KEY_FILE = "cert.pem", "key.pem"


def exposure_problem(address: str | None, cert_file: str | None,
                     has_users: Callable[[], bool]) -> str | None:
    """Why the app must not serve as started (None: it may). An empty address is every interface;
    ``has_users`` is asked only for a station on the network."""
    if address in LOOPBACK:
        return None
    where = address or "every network interface"
    if not cert_file:
        return (f"This station listens on {where} without HTTPS: passwords would cross the network "
                "in clear. Run `inspector cert`, then start the app with the --server.sslCertFile "
                "and --server.sslKeyFile it prints (see docs/SECURITY.md).")
    if not has_users():
        return (f"This station listens on {where} and has no user yet: anyone on the network could "
                "change it. Create its first admin from the station's shell: "
                "`inspector users add NAME --role admin`.")
    return None


def make_self_signed(folder: Path, hosts: list[str] | None = None, days: int = 825) -> tuple[Path, Path]:
    """A self-signed certificate for the station's names and addresses (``hosts``: the computer's
    name, localhost and 127.0.0.1 by default) and its key (owner-only), in ``folder``. Browsers
    warn once about a self-signed certificate; the plant's own CA avoids that."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    hosts = hosts or [socket.gethostname(), "localhost", "127.0.0.1"]
    names: list[x509.GeneralName] = []
    for host in dict.fromkeys(hosts):
        try:
            names.append(x509.IPAddress(ipaddress.ip_address(host)))
        except ValueError:
            names.append(x509.DNSName(host))
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, hosts[0]),
                         x509.NameAttribute(NameOID.ORGANIZATION_NAME, "Shopfloor Inspector")])
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (x509.CertificateBuilder().subject_name(subject).issuer_name(subject)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=days))
            .add_extension(x509.SubjectAlternativeName(names), critical=False)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
            .sign(key, hashes.SHA256()))
    folder.mkdir(parents=True, exist_ok=True)
    cert_path, key_path = folder / CERT_FILE, folder / KEY_FILE
    descriptor = os.open(key_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(descriptor, "wb") as out:
        out.write(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                    serialization.NoEncryption()))
    key_path.chmod(0o600)
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    return cert_path, key_path
