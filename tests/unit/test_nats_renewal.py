"""NATS credentials that expire (pure): when the operator renews them, when a client moves to the
renewed ones, what the JWTs and the Secret say, and the operator's bounds on their lifetime.

On a real nats-server: tests/integration/test_nats_credentials_renewal.py.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from ponder.api.nats_renewal import (
    UserJwt,
    follow_renewed_credentials,
    needs_renewal,
    reconnect_due,
    user_jwt,
)
from ponder.api.subjects import ServiceSubjects
from ponder.operator import __main__ as operator_main
from ponder.operator.nats_credentials import (
    EXPIRES_AT_ANNOTATION,
    ISSUED_AT_ANNOTATION,
    IssuedCredentials,
    service_secret,
)
from ponder.operator.nats_jwt import decode_claims
from ponder.operator.nats_trust import SCHEDULER_CREDS, WORKER_CREDS, NatsTrust
from ponder.operator.render import Owner

NOW = 1_800_000_000
DAY = 24 * 3600
A = ServiceSubjects("team-a", "solver")


@pytest.mark.parametrize(
    ("case", "issued_at", "expires_at", "now", "due"),
    [
        ("just issued", NOW, NOW + DAY, NOW, False),
        ("half its life left", NOW, NOW + DAY, NOW + DAY // 2, False),
        ("a third left, to the second", NOW, NOW + 3 * 3600, NOW + 2 * 3600, True),
        ("a second before the last third", NOW, NOW + 3 * 3600, NOW + 2 * 3600 - 1, False),
        ("in the last third", NOW, NOW + DAY, NOW + 20 * 3600, True),
        ("expired", NOW, NOW + DAY, NOW + 2 * DAY, True),
        ("never expires", NOW, None, NOW + 365 * DAY, False),
        ("no lifetime at all", NOW, NOW, NOW, True),
    ],
)
def test_credentials_are_renewed_when_less_than_a_third_of_their_lifetime_is_left(
    case: str, issued_at: int, expires_at: int | None, now: int, due: bool
) -> None:
    assert needs_renewal(issued_at, expires_at, now) is due, case


OLD = UserJwt("old", issued_at=NOW, expires_at=NOW + 3 * 3600)
NEW = UserJwt("new", issued_at=NOW + 2 * 3600, expires_at=NOW + 5 * 3600)
LATE = NOW + 2 * 3600  # OLD's last third starts here


@pytest.mark.parametrize(
    ("case", "connected", "on_file", "now", "due"),
    [
        ("renewed, connected in its last third", OLD, NEW, LATE, True),
        ("renewed, connected past its expiry", OLD, NEW, NOW + 4 * 3600, True),
        ("renewed early (an operator restart)", OLD, NEW, LATE - 1, False),
        ("the file holds what is connected", OLD, OLD, LATE, False),
        ("connected one never expires", UserJwt("old", NOW, None), NEW, LATE, False),
        ("the file's ends sooner", OLD, UserJwt("new", NOW, NOW + 3600), LATE, False),
        ("the file's never expires", OLD, UserJwt("new", NOW, None), LATE, True),
    ],
)
def test_a_client_moves_to_renewed_credentials_in_the_last_third_of_its_own(
    case: str, connected: UserJwt, on_file: UserJwt, now: int, due: bool
) -> None:
    assert reconnect_due(connected, on_file, now) is due, case


def test_service_users_expire_after_the_lifetime_and_the_secret_says_when() -> None:
    trust = NatsTrust.generate(NOW)
    issued = IssuedCredentials.issue(trust, A, NOW, DAY)
    assert (issued.issued_at, issued.expires_at) == (NOW, NOW + DAY)
    for key in (SCHEDULER_CREDS, WORKER_CREDS):
        read = user_jwt(issued.data[key])
        assert (read.issued_at, read.expires_at) == (NOW, NOW + DAY)
        assert decode_claims(read.token)["exp"] == NOW + DAY
    secret = service_secret(Owner("team-a", "solver", "uid-1"), issued)
    assert secret.metadata is not None and secret.metadata.annotations == {
        ISSUED_AT_ANNOTATION: "2027-01-15T08:00:00Z",
        EXPIRES_AT_ANNOTATION: "2027-01-16T08:00:00Z",
    }
    assert secret.metadata.name == "solver-nats"
    assert secret.stringData == dict(issued.data)


def test_users_without_a_lifetime_never_expire_and_bad_creds_are_named() -> None:
    trust = NatsTrust.generate(NOW)
    assert user_jwt(trust.admin_creds(NOW)).expires_at is None
    assert "exp" not in decode_claims(user_jwt(trust.service_creds(A, NOW)[WORKER_CREDS]).token)
    with pytest.raises(ValueError, match="no NATS user JWT"):
        user_jwt("SUAxxx\n")


class Connection:
    """What `follow_renewed_credentials` sees of a nats-py client: reconnects are counted."""

    def __init__(self) -> None:
        self.reconnects = 0
        self.is_closed = False

    async def force_reconnect(self) -> None:
        self.reconnects += 1


def test_the_follower_reconnects_once_per_renewal_and_stops_with_the_client(
    tmp_path: Path,
) -> None:
    trust = NatsTrust.generate(NOW)
    creds = tmp_path / "worker.creds"
    creds.write_text(trust.service_creds(A, NOW, 3 * 3600)[WORKER_CREDS])
    client = Connection()
    clock = [float(NOW)]
    # What each check finds: (the clock then, the file's text or None to leave it).
    renewed = trust.service_creds(A, LATE, 3 * 3600)[WORKER_CREDS]
    steps: list[tuple[float, str | None]] = [
        (NOW + 3600, None),  # nothing new
        (NOW + 3600, renewed),  # renewed early: no move yet
        (LATE, None),  # the connected one entered its last third: move
        (LATE + 60, None),  # moved already
        (LATE + 120, "half-written"),  # a broken file is skipped
    ]

    async def sleep(_: float) -> None:
        if not steps:
            client.is_closed = True
            return
        clock[0], text = steps.pop(0)
        if text is not None:
            creds.write_text(text)

    async def follow() -> None:
        async with asyncio.timeout(10):
            await follow_renewed_credentials(client, creds, clock=lambda: clock[0], sleep=sleep)

    asyncio.run(follow())
    assert client.reconnects == 1


@pytest.mark.parametrize(
    ("hours", "error"),
    [("1", None), ("720", None), ("0", "must be 1 to 720"), ("721", "must be 1 to 720")],
)
def test_the_credentials_lifetime_is_bounded(
    hours: str, error: str | None, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = ["--nats-creds-lifetime-hours", hours]
    if error is None:
        assert operator_main.parse_args(argv, {}).nats_creds_lifetime_hours == int(hours)
        return
    with pytest.raises(SystemExit):
        operator_main.parse_args(argv, {})
    assert error in capsys.readouterr().err


def test_credentials_last_a_day_by_default() -> None:
    assert operator_main.parse_args([], {}).nats_creds_lifetime_hours == 24
