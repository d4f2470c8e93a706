"""API keys and their limits as pure decisions (`ponder.scheduler.auth`), and the gate that
reads them from a file (`ponder.scheduler.access.AccessGate`)."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from ponder.api.service_config import AuthConfig, AuthMode
from ponder.scheduler.access import AccessGate, Admission
from ponder.scheduler.auth import (
    TOKEN_WINDOW_SECONDS,
    Grant,
    KeyLimits,
    TenantLimiter,
    authenticate,
    digest_of,
    parse_keys,
)
from ponder.scheduler.metrics import SchedulerMetrics
from ponder.scheduler.request_bounds import Refusal

KEY_A = "sk-team-a-0123456789abcdef"
KEY_B = "sk-team-b-fedcba9876543210"
DOCUMENT = textwrap.dedent(
    f"""
    keys:
      - key: {KEY_A}
        tenant: team-a
        services: [math]
        limits: {{requestsPerSecond: 2, concurrentQueries: 1, tokensPerMinute: 100}}
      - keySha256: {digest_of(KEY_B)}
        tenant: team-b
    """
)


def test_a_document_gives_each_key_its_tenant_services_and_limits() -> None:
    table = parse_keys(DOCUMENT)
    a, b = table.find(KEY_A), table.find(KEY_B)
    assert a is not None and b is not None
    assert (a.tenant, a.services, a.limits.concurrent_queries) == ("team-a", {"math"}, 1)
    assert (b.tenant, b.services, b.limits) == ("team-b", None, KeyLimits())
    # Held as digests only: no key appears in what the table keeps.
    assert KEY_A not in repr(table) and KEY_B not in repr(table)
    assert a.key_id == digest_of(KEY_A)[:12]
    assert table.find("sk-nobody-0000000000000000") is None


@pytest.mark.parametrize(
    ("text", "words"),
    [
        ("keys: [", "not YAML"),
        ("keys: []", "keys: List should have at least 1 item"),
        ("keys: [{key: short, tenant: a}]", "keys.0.key"),
        ("keys: [{tenant: a}]", "set exactly one of key and keySha256"),
        (f"keys: [{{key: {KEY_A}, keySha256: {digest_of(KEY_A)}, tenant: a}}]", "exactly one"),
        (f"keys: [{{key: {KEY_A}, tenant: Team A}}]", "keys.0.tenant"),
        (f"keys: [{{key: {KEY_A}, tenant: a, limits: {{rps: 1}}}}]", "keys.0.limits.rps"),
        (f"keys: [{{key: {KEY_A}, tenant: a}}, {{key: {KEY_A}, tenant: b}}]", "twice"),
    ],
)
def test_a_bad_document_is_refused_naming_where_and_never_quoting_a_key(
    text: str, words: str
) -> None:
    with pytest.raises(ValueError) as refused:
        parse_keys(text)
    assert words in str(refused.value)
    assert KEY_A not in str(refused.value)


@pytest.mark.parametrize(
    ("authorization", "service", "expected"),
    [
        (None, "math", (401, "invalid_api_key")),
        ("", "math", (401, "invalid_api_key")),
        (KEY_A, "math", (401, "invalid_api_key")),  # no scheme
        ("Basic abc", "math", (401, "invalid_api_key")),
        ("Bearer sk-wrong-0123456789abcdef", "math", (401, "invalid_api_key")),
        (f"Bearer {KEY_A}", "poetry", (403, "permission_denied")),
        (f"Bearer {KEY_A}", "math", "team-a"),
        (f"bearer  {KEY_B} ", "poetry", "team-b"),
    ],
)
def test_authenticate(
    authorization: str | None, service: str, expected: tuple[int, str] | str
) -> None:
    decision = authenticate(authorization, parse_keys(DOCUMENT), service)
    if isinstance(expected, str):
        assert isinstance(decision, Grant) and decision.tenant == expected
    else:
        assert isinstance(decision, Refusal)
        assert (decision.status, decision.code) == expected


def grant(key_id: str = "k", **limits: float) -> Grant:
    return Grant(key_id=key_id, tenant="t", services=None, limits=KeyLimits(**limits))


def test_requests_per_second_is_a_token_bucket_with_a_burst_of_at_least_one() -> None:
    limiter, key = TenantLimiter(), grant(requests_per_second=2)
    assert limiter.admit(key, 0.0) is None and limiter.admit(key, 0.0) is None
    refused = limiter.admit(key, 0.0)
    assert refused is not None and refused.status == 429 and refused.retry_after_seconds == 1
    assert "requestsPerSecond" in refused.message
    assert limiter.admit(key, 0.5) is None  # half a second refills one
    slow = grant("slow", requests_per_second=0.01)
    assert limiter.admit(slow, 0.0) is None
    later = limiter.admit(slow, 1.0)
    assert later is not None and later.retry_after_seconds == 99


def test_concurrent_queries_count_until_each_is_finished() -> None:
    limiter, key = TenantLimiter(), grant(concurrent_queries=2)
    assert limiter.admit(key, 0.0) is None and limiter.admit(key, 0.0) is None
    refused = limiter.admit(key, 0.0)
    assert refused is not None and "at most 2 may run at once" in refused.message
    limiter.finish(key, 0, 1.0)
    assert limiter.admit(key, 1.0) is None


def test_tokens_per_minute_charges_what_was_generated_and_frees_it_a_minute_later() -> None:
    limiter, key = TenantLimiter(), grant(tokens_per_minute=100)
    assert limiter.admit(key, 0.0) is None
    limiter.finish(key, 60, 0.0)
    assert limiter.admit(key, 10.0) is None  # 60 < 100: admitted, whatever it will spend
    limiter.finish(key, 70, 10.0)
    refused = limiter.admit(key, 20.0)
    assert refused is not None and "130 tokens in the last minute" in refused.message
    # Under the limit again once the first 60 tokens leave the window (at 60 s).
    assert refused.retry_after_seconds == TOKEN_WINDOW_SECONDS - 20
    assert limiter.admit(key, 59.0) is not None
    assert limiter.admit(key, 60.0) is None


async def test_the_gate_reloads_a_changed_file_and_keeps_the_last_good_table(
    tmp_path: Path,
) -> None:
    keys = tmp_path / "keys.yaml"
    gate = AccessGate(
        AuthConfig(mode=AuthMode.API_KEYS, keys_file=str(keys)), "math", SchedulerMetrics()
    )
    await gate.reload()  # no file yet: closed, not open
    closed = gate.admit(f"Bearer {KEY_A}", 0.0)
    assert isinstance(closed, Refusal) and (closed.status, closed.code) == (503, "auth_unavailable")
    keys.write_text(DOCUMENT)
    await gate.reload()
    assert isinstance(gate.admit(f"Bearer {KEY_A}", 0.0), Admission)
    keys.write_text("keys: [")  # broken: the old keys stay in force
    await gate.reload()
    assert gate.problem is not None and "not YAML" in gate.problem
    assert isinstance(gate.admit(f"Bearer {KEY_B}", 0.0), Admission)
    keys.write_text(f"keys: [{{key: {KEY_B}, tenant: team-b}}]")  # A rotated out
    await gate.reload()
    assert gate.problem is None
    assert isinstance(gate.admit(f"Bearer {KEY_A}", 0.0), Refusal)
    assert isinstance(gate.admit(f"Bearer {KEY_B}", 0.0), Admission)


def test_an_open_gate_admits_anyone_and_an_admission_releases_once() -> None:
    open_gate = AccessGate(AuthConfig(), "math", SchedulerMetrics())
    admission = open_gate.admit(None, 0.0)
    assert isinstance(admission, Admission) and admission.grant is None
    limiter, key = TenantLimiter(), grant(concurrent_queries=1)
    assert limiter.admit(key, 0.0) is None
    held = Admission(grant=key, limiter=limiter, metrics=SchedulerMetrics())
    held.charge(5)
    held.release(1.0)
    held.release(1.0)  # a second release does not free a slot that another query holds
    assert limiter.admit(key, 1.0) is None
    assert limiter.admit(key, 1.0) is not None
