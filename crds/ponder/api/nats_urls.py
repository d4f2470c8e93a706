"""A NATS URL setting as the list of servers a client connects to.

`--nats-url` (and a ServiceConfig's `nats_url`) may name one server or, comma-separated, the
servers of a NATS cluster: `nats://127.0.0.1:4222,nats://127.0.0.1:4223`. nats-py takes a list
for a cluster but reads a comma-separated string as one URL, so every client of Ponder splits it
here first. A client needs only one reachable server: the servers tell it the rest of the
cluster (their INFO `connect_urls`), and it reconnects to another when its own one dies.
"""

from __future__ import annotations

from urllib.parse import urlsplit

SCHEMES = ("nats", "tls", "ws", "wss")


def nats_servers(url: str) -> list[str]:
    """The servers of `url`, one or several comma-separated, in order; raises ValueError
    naming the item that is no NATS URL with a host."""
    servers = [item.strip() for item in url.split(",") if item.strip()]
    if not servers:
        raise ValueError("the NATS URL is empty; give nats://host:4222 (or several, by commas)")
    for server in servers:
        # nats-py reads a bare `host:port` as nats://host:port; so does this.
        parts = urlsplit(server if "://" in server else f"nats://{server}")
        if parts.scheme not in SCHEMES or not parts.hostname:
            raise ValueError(
                f"{server!r} is not a NATS URL with a host; give nats://host:4222, or several "
                "comma-separated for a cluster"
            )
    return servers
