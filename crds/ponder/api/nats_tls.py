"""TLS to NATS, as every client of it (scheduler, workers, operator) does it: `--nats-ca`.

A program given a CA bundle verifies the NATS server's certificate against it, and the host name
of its URL against the certificate's names (`ssl.create_default_context`: TLS 1.2 or later,
CERT_REQUIRED, check_hostname). nats-py upgrades the connection when the server requires TLS
(its INFO says `tls_required`) whether the URL says `nats://` or `tls://`. Without a bundle nats-py
falls back to the system's CAs, which do not know a cluster's own CA: such a client is refused
with "certificate verify failed".
"""

from __future__ import annotations

import ssl
from pathlib import Path

NATS_CA_FILE = "nats-ca.crt"
"""The CA bundle's file name where the operator hands it to a service's pods (their ConfigMap)."""


def client_tls(ca_file: Path | None) -> ssl.SSLContext | None:
    """The context a NATS client verifies the server with, trusting only the PEM bundle at
    `ca_file`; None without one. Raises ValueError naming the file when it cannot be loaded."""
    if ca_file is None:
        return None
    try:
        return ssl.create_default_context(cafile=str(ca_file))
    except (OSError, ssl.SSLError) as error:
        raise ValueError(
            f"--nats-ca {ca_file}: cannot load a PEM CA bundle from it ({error}); point it at "
            "the CA certificate that signed the NATS server's certificate"
        ) from None
