"""NATS credentials that expire, on a real nats-server in operator mode (the trust of
`ponder.operator.nats_trust`, users issued with a lifetime of seconds instead of hours).

- The server closes the connection of a user whose JWT expired, and nats-py does not reconnect
  (it treats "User Authentication Expired" as fatal); the same credentials are refused from then
  on: a deleted service's credentials end by themselves.
- A client that follows its credentials file (`following_renewed_credentials`, as the scheduler
  and the worker loop do), connected as a worker is, moves to the renewed credentials written
  into the file before its own expire, and keeps publishing and receiving past their expiry.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import nats
import nats.errors
import pytest
import pytest_asyncio
from nats.aio.msg import Msg

from ponder.api.nats_renewal import following_renewed_credentials, user_jwt
from ponder.api.subjects import ServiceSubjects
from ponder.local.nats import NatsServer, nats_server
from ponder.operator.nats_trust import WORKER_CREDS, NatsTrust

SERVICE = ServiceSubjects("team-a", "solver")
SHORT_LIFETIME_SECONDS = 6
"""The server checks expiry to the second."""
RENEWED_LIFETIME_SECONDS = 15
"""The follower moves in the last third: five seconds to read the file, every 0.2 s."""
SETTLE_SECONDS = 30.0


@pytest_asyncio.fixture(scope="module")
async def secured_nats(stack_log_dir: Path) -> AsyncIterator[tuple[NatsServer, NatsTrust]]:
    trust = NatsTrust.generate(int(time.time()))
    async with nats_server(stack_log_dir, trust=trust) as server:
        yield server, trust


def issue_worker_creds(trust: NatsTrust, path: Path, lifetime_seconds: int) -> int:
    """Write a worker user of SERVICE expiring in `lifetime_seconds` to `path`; its expiry."""
    now = int(time.time())
    path.write_text(trust.service_creds(SERVICE, now, lifetime_seconds)[WORKER_CREDS])
    return now + lifetime_seconds


async def connect_as_worker(url: str, creds: Path, errors: list[str]) -> nats.NATS:
    """The connect options of the worker loop (`ponder.workers.app.worker_app`) that matter."""

    async def record(error: Exception) -> None:
        errors.append(str(error))

    return await nats.connect(
        url,
        max_reconnect_attempts=-1,
        reconnect_time_wait=0.2,
        error_cb=record,
        user_credentials=str(creds),
        inbox_prefix=SERVICE.inbox_prefix,
    )


async def until(condition: str, check: Callable[[], object]) -> None:
    async def wait() -> None:
        while True:  # polled: nats-py has no event for most of these
            if check():
                return
            await asyncio.sleep(0.1)

    try:
        await asyncio.wait_for(wait(), SETTLE_SECONDS)
    except TimeoutError:
        pytest.fail(f"not within {SETTLE_SECONDS:g} s: {condition}")


async def test_an_expired_user_is_disconnected_and_refused_from_then_on(
    secured_nats: tuple[NatsServer, NatsTrust], tmp_path: Path
) -> None:
    server, trust = secured_nats
    creds = tmp_path / WORKER_CREDS
    expires_at = issue_worker_creds(trust, creds, SHORT_LIFETIME_SECONDS)
    errors: list[str] = []
    client = await connect_as_worker(server.url, creds, errors)
    try:
        assert client.is_connected
        await until("the server closes the expired user's connection", lambda: client.is_closed)
        assert time.time() >= expires_at - 1
        # nats-py hands the -ERR to no callback: it closes the client and keeps the error.
        assert "expired" in str(client.last_error).lower(), (client.last_error, errors)
    finally:
        await client.close()
    # The server may close the user a little before the second its JWT expires, and accepts it
    # again until that second has passed: "from then on" starts past the expiry.
    await asyncio.sleep(max(0.0, expires_at + 1 - time.time()))
    with pytest.raises(nats.errors.Error, match=r"(?i)authorization|expired"):
        await nats.connect(
            server.url,
            user_credentials=str(creds),
            allow_reconnect=False,
            max_reconnect_attempts=0,
        )


async def test_a_client_following_its_file_moves_to_renewed_credentials_before_expiry(
    secured_nats: tuple[NatsServer, NatsTrust], tmp_path: Path
) -> None:
    server, trust = secured_nats
    creds = tmp_path / WORKER_CREDS
    first_expiry = issue_worker_creds(trust, creds, RENEWED_LIFETIME_SECONDS)
    first = user_jwt(creds.read_text()).token
    errors: list[str] = []
    assert server.auth is not None
    admin = await nats.connect(server.url, user_credentials=str(server.auth.admin_creds))
    worker = await connect_as_worker(server.url, creds, errors)
    try:
        cancels: asyncio.Queue[bytes] = asyncio.Queue()

        async def on_cancel(msg: Msg) -> None:
            await cancels.put(msg.data)

        await worker.subscribe(SERVICE.cancel, cb=on_cancel)
        results = await admin.subscribe(SERVICE.results("scheduler-1"))
        async with following_renewed_credentials(worker, creds, check_seconds=0.2):
            # The operator renews at once (its Secret, the kubelet the file): a longer life.
            issue_worker_creds(trust, creds, 600)
            await until("the worker moves to the renewed user", lambda: worker.stats["reconnects"])
            wait = first_expiry + 2 - time.time()
            await asyncio.sleep(max(wait, 0))  # past the first user's expiry
            assert worker.is_connected and not worker.is_closed
            assert user_jwt(creds.read_text()).token != first
            # Both ways still work: a result out, a cancel in (its subscription came back).
            await worker.publish(SERVICE.results("scheduler-1"), b"result")
            await worker.flush()
            message = await results.next_msg(timeout=SETTLE_SECONDS)
            assert message.data == b"result"
            await admin.publish(SERVICE.cancel, b"cancel")
            await admin.flush()
            assert await asyncio.wait_for(cancels.get(), SETTLE_SECONDS) == b"cancel"
        assert worker.stats["reconnects"] == 1
        assert worker.last_error is None or "expired" not in str(worker.last_error).lower()
        assert not any("expired" in error.lower() for error in errors), errors
    finally:
        await worker.close()
        await admin.close()
