"""NATS user credentials that expire: when they are renewed, and when a client moves to them.

The operator issues each service's users with an expiry (the JWT's `exp`) and writes renewed
ones into the service's Secret once less than a third of their lifetime remains
(`needs_renewal`); Kubernetes refreshes the mounted file. nats-server closes a connection whose
JWT expired ("User Authentication Expired"), and nats-py treats that `-ERR` as fatal: it
closes the client for good instead of reconnecting (`Client._process_err`). So a program must
move to the renewed file before its JWT expires: `follow_renewed_credentials` reads the file
now and then and, once it holds another JWT and the connected one is in its last third, forces
a reconnect, at which nats-py reads the file again (`user_credentials` is read at every
connect). In the last third only: an operator restart renews every Secret early, and its
clients need not all reconnect at once for that.

Pure but for `follow_renewed_credentials` (a file read and a reconnect, both injected).
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

RENEW_WHEN_LEFT = 1 / 3
"""Credentials are renewed, and clients move to the renewed ones, when less than this share of
their lifetime remains."""

CHECK_SECONDS = 30.0
"""How often a program reads its credentials file for a renewed JWT: small beside the hours
between renewal and expiry (the lifetime is an hour at least), large beside a file read."""

_JWT_BEGIN = "-----BEGIN NATS USER JWT-----"

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class UserJwt:
    """What a client needs to know of its user JWT: which one it is and when it ends."""

    token: str
    issued_at: int
    expires_at: int | None
    """Unix seconds; None: the JWT never expires."""


def needs_renewal(issued_at: int, expires_at: int | None, now: float) -> bool:
    """Whether credentials issued at `issued_at` that expire at `expires_at` are due for
    renewal at `now`: less than a third of their lifetime is left (or none was ever given)."""
    if expires_at is None:
        return False
    lifetime = expires_at - issued_at
    return now >= expires_at - lifetime * RENEW_WHEN_LEFT


def user_jwt(creds_text: str) -> UserJwt:
    """The user JWT of a `.creds` file's text, its claims read unverified (the server verifies
    them); raises ValueError when there is none."""
    lines = creds_text.splitlines()
    try:
        token = lines[lines.index(_JWT_BEGIN) + 1].strip()
        payload = token.split(".")[1]
        claims = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
        expires_at = claims.get("exp")
        return UserJwt(
            token=token,
            issued_at=int(claims["iat"]),
            expires_at=None if expires_at is None else int(expires_at),
        )
    except (ValueError, IndexError, KeyError, TypeError) as error:
        raise ValueError(f"no NATS user JWT in the credentials: {error}") from error


def reconnect_due(connected: UserJwt, on_file: UserJwt, now: float) -> bool:
    """Whether a client connected with `connected` should reconnect to pick up `on_file`: the
    file holds another JWT, one that ends later, and `connected` is in its last third."""
    if on_file.token == connected.token or connected.expires_at is None:
        return False
    if on_file.expires_at is not None and on_file.expires_at <= connected.expires_at:
        return False
    return needs_renewal(connected.issued_at, connected.expires_at, now)


async def _read_user_jwt(creds_file: Path) -> UserJwt:
    # A small file; a thread all the same, so that a slow volume never stalls the loop.
    return user_jwt(await asyncio.to_thread(creds_file.read_text))


class Reconnectable(Protocol):
    """The part of a nats-py client the renewal follower uses."""

    @property
    def is_closed(self) -> bool: ...

    async def force_reconnect(self) -> None: ...


async def follow_renewed_credentials(
    client: Reconnectable,
    creds_file: Path,
    *,
    connected: UserJwt | None = None,
    check_seconds: float = CHECK_SECONDS,
    clock: Callable[[], float] | None = None,
    sleep: Callable[[float], Awaitable[object]] = asyncio.sleep,
) -> None:
    """Until `client` is closed, reconnect it when `creds_file` holds renewed credentials and
    the connected ones (`connected`, read from the file now when None) are in their last third
    (`reconnect_due`). Run it as a task of the program's and cancel it on the way out; an
    unreadable file is logged and tried again."""
    now = clock or time.time
    if connected is None:
        try:
            connected = await _read_user_jwt(creds_file)
        except (OSError, ValueError) as error:
            log.warning("not following renewals of %s: %s", creds_file, error)
            return
    while not client.is_closed:
        await sleep(check_seconds)
        try:
            on_file = await _read_user_jwt(creds_file)
        except (OSError, ValueError) as error:  # a refresh half-way, or a broken Secret
            log.warning("cannot read the NATS credentials in %s: %s", creds_file, error)
            continue
        if reconnect_due(connected, on_file, now()):
            log.info(
                "reconnecting to NATS with the renewed credentials in %s (they expire at %s)",
                creds_file,
                on_file.expires_at,
            )
            try:
                await client.force_reconnect()
            except Exception as error:  # tried again at the next check
                log.warning("could not reconnect to NATS: %r", error)
                continue
            connected = on_file
    # Closed with an error (a drain or close on the way out leaves none): expired, say.
    last_error = getattr(client, "last_error", None)
    if last_error is not None:
        log.error("the NATS connection is closed for good: %r; restart the program", last_error)


@contextlib.asynccontextmanager
async def following_renewed_credentials(
    client: Reconnectable, creds_file: Path | None, *, check_seconds: float = CHECK_SECONDS
) -> AsyncIterator[None]:
    """`follow_renewed_credentials` as a task for the duration of the block (nothing without
    a credentials file), cancelled on the way out."""
    if creds_file is None:
        yield
        return
    try:
        # What the client has just connected with: read before the block goes on.
        connected = await _read_user_jwt(creds_file)
    except (OSError, ValueError) as error:
        log.warning("not following renewals of %s: %s", creds_file, error)
        yield
        return
    task = asyncio.create_task(
        follow_renewed_credentials(
            client, creds_file, connected=connected, check_seconds=check_seconds
        ),
        name="follow-renewed-nats-credentials",
    )
    try:
        yield
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
