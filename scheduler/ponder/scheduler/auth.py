"""API keys, tenants and their limits (pure: the clock is an argument, the file is text).

A service with `spec.auth.type: ApiKeys` names a Secret holding a YAML document of keys:

    keys:
      - key: sk-team-a-0123456789abcdef   # or keySha256: <hex digest of the key>
        tenant: team-a
        services: [math]                  # absent: every service that mounts this Secret
        priority: Critical                # Critical, Standard (absent) or Sheddable
        limits:
          requestsPerSecond: 5            # absent: unlimited
          concurrentQueries: 8
          tokensPerMinute: 200000         # generated tokens, charged as they were spent

Keys are held only as SHA-256 digests, and a presented key is found by its digest and then
compared with `hmac.compare_digest`: the time a lookup takes says nothing about the keys. A
request without a key, or with one not in the document, is a 401; a key the document does not
give this service is a 403; a key over a limit is a 429 with `Retry-After`, refused before
anything is queued. Tokens per minute counts what the key's queries generated in the last 60 s
(their `usage`, cancelled branches included), so a query is admitted while the key is under its
budget and charged what it really spent when it ends.

A key's `priority` is its queries' class (`ponder.api.priority`). Behind a Gateway API
InferencePool the `x-gateway-inference-objective` header names one too (`query_priority`): it may
lower a key's class, never raise it above the key's own.
"""

from __future__ import annotations

import hashlib
import hmac
import math
import re
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass, field

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator
from pydantic.alias_generators import to_camel

from ponder.api.priority import Priority, at_most, parse_priority
from ponder.scheduler.request_bounds import Refusal

TOKEN_WINDOW_SECONDS = 60.0
MIN_KEY_CHARS = 16
_BEARER = re.compile(r"^\s*Bearer\s+(\S+)\s*$", re.IGNORECASE)
_DIGEST = re.compile(r"^[0-9a-f]{64}$")
OBJECTIVE_HEADER = "x-gateway-inference-objective"
"""The header a Gateway API InferencePool's endpoint picker sets to the request's
InferenceObjective; Ponder reads a priority class name from it (`query_priority`)."""


class _Document(BaseModel):
    model_config = ConfigDict(extra="forbid", alias_generator=to_camel, populate_by_name=True)


class KeyLimits(_Document):
    requests_per_second: float | None = Field(default=None, gt=0, le=1_000_000)
    concurrent_queries: int | None = Field(default=None, ge=1, le=1_000_000)
    tokens_per_minute: int | None = Field(default=None, ge=1)


class KeyEntry(_Document):
    key: str | None = Field(default=None, min_length=MIN_KEY_CHARS, max_length=512)
    key_sha256: str | None = Field(default=None, pattern=_DIGEST.pattern)
    tenant: str = Field(pattern=r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$", max_length=63)
    services: list[str] | None = None
    priority: Priority = Priority.STANDARD
    limits: KeyLimits = Field(default_factory=KeyLimits)

    @field_validator("priority", mode="before")
    @classmethod
    def _priority_class(cls, value: object) -> object:
        if isinstance(value, str) and (parsed := parse_priority(value)) is not None:
            return parsed  # any case: `critical`, `CRITICAL`
        if isinstance(value, str):
            raise ValueError(f"{value!r} is no priority class; use Critical, Standard or Sheddable")
        return value

    @model_validator(mode="after")
    def _one_key(self) -> KeyEntry:
        if (self.key is None) == (self.key_sha256 is None):
            raise ValueError("set exactly one of key and keySha256")
        return self

    @property
    def digest(self) -> str:
        return self.key_sha256 or digest_of(self.key or "")


class KeysDocument(_Document):
    keys: list[KeyEntry] = Field(min_length=1)


@dataclass(frozen=True)
class Grant:
    """What one key may do: its tenant, services (None: all), limits and priority class."""

    key_id: str  # the first 12 hex digits of the key's digest: safe to log
    tenant: str
    services: frozenset[str] | None
    limits: KeyLimits
    priority: Priority = Priority.STANDARD


@dataclass(frozen=True)
class KeyTable:
    """The keys of one document, by digest."""

    grants: Mapping[str, Grant]

    def find(self, presented: str) -> Grant | None:
        digest = digest_of(presented)
        for known, grant in self.grants.items():
            if hmac.compare_digest(known, digest):
                return grant
        return None


def digest_of(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


def parse_keys(text: str) -> KeyTable:
    """The key table of a keys document; raises ValueError naming what is wrong (never
    quoting a key)."""
    try:
        loaded = yaml.safe_load(text)
    except yaml.YAMLError as error:
        raise ValueError(f"the keys document is not YAML: {error.__class__.__name__}") from error
    try:
        document = KeysDocument.model_validate(loaded)
    except ValidationError as error:
        first = error.errors()[0]
        where = ".".join(str(part) for part in first["loc"]) or "document"
        raise ValueError(f"keys document, {where}: {first['msg']}") from error
    grants: dict[str, Grant] = {}
    for index, entry in enumerate(document.keys):
        digest = entry.digest
        if digest in grants:
            raise ValueError(f"keys document, keys.{index}: the same key appears twice")
        grants[digest] = Grant(
            key_id=digest[:12],
            tenant=entry.tenant,
            services=frozenset(entry.services) if entry.services is not None else None,
            limits=entry.limits,
            priority=entry.priority,
        )
    return KeyTable(grants=grants)


def query_priority(grant: Grant | None, objective: str | None) -> Priority:
    """A query's class: the one the `x-gateway-inference-objective` header names (any case),
    but never above its key's class (a key's client, or a gateway in front of it, may lower its
    priority, not raise it); the key's class without such a header; Standard on an open service
    without one. A header naming no class (an InferenceObjective's own name) counts as absent."""
    asked = parse_priority(objective)
    if grant is None:
        return asked or Priority.STANDARD
    return grant.priority if asked is None else at_most(asked, grant.priority)


def authenticate(authorization: str | None, table: KeyTable, service: str) -> Grant | Refusal:
    """The grant of the request's `Authorization: Bearer <key>`, or its 401 / 403."""
    match = _BEARER.match(authorization or "")
    if match is None:
        return Refusal(
            401,
            None,
            "this service needs an API key: send `Authorization: Bearer <key>`",
            "invalid_api_key",
        )
    grant = table.find(match.group(1))
    if grant is None:
        return Refusal(401, None, "the API key is not valid for this service", "invalid_api_key")
    if grant.services is not None and service not in grant.services:
        return Refusal(
            403,
            None,
            f"the API key of tenant {grant.tenant} has no access to service {service}",
            "permission_denied",
        )
    return grant


@dataclass
class _Usage:
    allowance: float  # requests left in the token bucket
    refilled_at: float
    in_flight: int = 0
    spent: deque[tuple[float, int]] = field(default_factory=deque)  # (when, tokens)
    spent_total: int = 0


class TenantLimiter:
    """Per-key request rate, concurrency and generated-token budget. Use `admit` before a
    query; a query admitted must be `finish`ed (with what it spent) exactly once."""

    def __init__(self) -> None:
        self._usage: dict[str, _Usage] = {}

    def admit(self, grant: Grant, now: float) -> Refusal | None:
        """None and the query counted in flight, or the 429 of the first limit it is over."""
        limits = grant.limits
        usage = self._usage_of(grant, now)
        self._expire(usage, now)
        if limits.concurrent_queries is not None and usage.in_flight >= limits.concurrent_queries:
            return _too_many(
                f"{usage.in_flight} queries of this key are running; at most "
                f"{limits.concurrent_queries} may run at once (concurrentQueries)",
                1.0,
            )
        if limits.tokens_per_minute is not None and usage.spent_total >= limits.tokens_per_minute:
            return _too_many(
                f"this key generated {usage.spent_total} tokens in the last minute; its limit "
                f"is {limits.tokens_per_minute} (tokensPerMinute)",
                self._tokens_retry_after(usage, limits.tokens_per_minute, now),
            )
        rate = limits.requests_per_second
        if rate is not None:
            burst = max(1.0, rate)  # a key may always send one request
            usage.allowance = min(burst, usage.allowance + (now - usage.refilled_at) * rate)
            usage.refilled_at = now
            if usage.allowance < 1.0:
                return _too_many(
                    f"this key is over its {rate:g} requests per second (requestsPerSecond)",
                    (1.0 - usage.allowance) / rate,
                )
            usage.allowance -= 1.0
        usage.in_flight += 1
        return None

    def finish(self, grant: Grant, tokens: int, now: float) -> None:
        """An admitted query ended, having generated `tokens`."""
        usage = self._usage_of(grant, now)
        usage.in_flight = max(0, usage.in_flight - 1)
        if tokens > 0:
            usage.spent.append((now, tokens))
            usage.spent_total += tokens
        self._expire(usage, now)

    def _usage_of(self, grant: Grant, now: float) -> _Usage:
        usage = self._usage.get(grant.key_id)
        if usage is None:
            burst = max(1.0, grant.limits.requests_per_second or 0.0)
            usage = self._usage[grant.key_id] = _Usage(allowance=burst, refilled_at=now)
        return usage

    @staticmethod
    def _expire(usage: _Usage, now: float) -> None:
        while usage.spent and usage.spent[0][0] <= now - TOKEN_WINDOW_SECONDS:
            usage.spent_total -= usage.spent.popleft()[1]

    @staticmethod
    def _tokens_retry_after(usage: _Usage, limit: int, now: float) -> float:
        """Seconds until enough of the window's tokens expire to be under `limit`."""
        total = usage.spent_total
        for when, tokens in usage.spent:
            total -= tokens
            if total < limit:
                return max(0.0, when + TOKEN_WINDOW_SECONDS - now)
        return TOKEN_WINDOW_SECONDS


def _too_many(message: str, retry_after: float) -> Refusal:
    seconds = max(1, math.ceil(retry_after))
    return Refusal(429, None, message, "rate_limit_exceeded", retry_after_seconds=seconds)
